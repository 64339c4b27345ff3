//! Wire compatibility: the real third-party client (`rocketmq-client-rust`) against
//! `mq-broker` processes.

mod support;

use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQProducer,
    DefaultMQPushConsumer, MQPushConsumer, MessageListenerConcurrently,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Client, TempDir, eventually};

/// Bodies received, per consumer.
#[derive(Default)]
struct Received {
    by_consumer: Mutex<HashMap<String, Vec<(String, String)>>>,
}

impl Received {
    fn all(&self) -> Vec<(String, String)> {
        self.by_consumer
            .lock()
            .unwrap()
            .values()
            .flatten()
            .cloned()
            .collect()
    }
    fn consumers(&self) -> usize {
        self.by_consumer
            .lock()
            .unwrap()
            .values()
            .filter(|v| !v.is_empty())
            .count()
    }
}

/// Records (body, tag) of every message, acknowledging it.
struct Recorder {
    name: String,
    received: Arc<Received>,
}

impl MessageListenerConcurrently for Recorder {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        let mut map = self.received.by_consumer.lock().unwrap();
        let mine = map.entry(self.name.clone()).or_default();
        for m in msgs {
            let body = support::body_text(m);
            let tag = m.get_tags().map(|t| t.to_string()).unwrap_or_default();
            mine.push((body, tag));
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

fn message(topic: &str, tag: &str, body: String) -> Message {
    Message::builder()
        .topic(topic)
        .tags(tag)
        .key(format!("key-{body}"))
        .body_slice(body.as_bytes())
        .build_unchecked()
}

const TAGS: [&str; 3] = ["TagA", "TagB", "TagC"];

#[test]
fn clustering_consumers_get_every_message_once_and_tag_filters_hold() {
    let dir = TempDir::new("compat-clustering");
    let broker = support::standalone(&dir.0, &[]);
    let namesrv = broker.namesrv();
    let topic = "CompatTopic";
    let received = Arc::new(Received::default());

    let expected = Client::new().run(|rt| {
        let received = received.clone();
        async move {
            let mut producer = DefaultMQProducer::builder(rt.clone())
                .client_config(support::client_config(&namesrv, "producer"))
                .producer_group("GID_compat_producer".to_string())
                .build();
            producer.start().await.expect("producer starts");
            // The first send auto-creates the topic (standalone), so consumers find a route.
            producer
                .send(message(topic, "warmup", "warmup".into()))
                .await
                .expect("warm-up send");

            let mut consumers = vec![];
            for name in ["c1", "c2"] {
                let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
                    .client_config(support::client_config(&namesrv, name))
                    .consumer_group("GID_compat".to_string())
                    .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                    .consume_thread_min(4)
                    .consume_thread_max(4)
                    .build();
                consumer
                    .subscribe(topic, "TagA || TagB")
                    .await
                    .expect("subscribe");
                consumer.register_message_listener_concurrently(Recorder {
                    name: name.into(),
                    received: received.clone(),
                });
                consumer.start().await.expect("consumer starts");
                consumers.push(consumer);
            }

            let mut expected = vec![];
            let mut sent = |i: usize, kind: &str| {
                let tag = TAGS[i % 3];
                let body = format!("{kind}-{i}");
                if tag != "TagC" {
                    expected.push((body.clone(), tag.to_owned()));
                }
                message(topic, tag, body)
            };
            for i in 0..4000 {
                producer
                    .send(sent(i, "sync"))
                    .await
                    .expect("sync send")
                    .expect("a send result");
            }
            for i in 0..2000 {
                producer
                    .send_oneway(sent(i, "oneway"))
                    .await
                    .expect("oneway send");
            }
            // 10,000 messages in all: 4,000 sync, 2,000 oneway, 2,000 async, 100 batches of 20.
            let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let settled = |a: &std::sync::atomic::AtomicUsize,
                           f: &std::sync::atomic::AtomicUsize| {
                a.load(std::sync::atomic::Ordering::SeqCst)
                    + f.load(std::sync::atomic::Ordering::SeqCst)
            };
            for i in 0..2000 {
                // The client refuses more than a bounded number of sends in flight
                // (`transport.admission.queue_saturated`): keep a window, as apps must.
                eventually("room in the async window", Duration::from_secs(30), || {
                    i - settled(&acked, &failed) < 64
                })
                .await;
                let (acked, failed) = (acked.clone(), failed.clone());
                producer
                    .send_with_callback(sent(i, "async"), move |result, error| {
                        let ok = error.is_none() && result.is_some();
                        let counter = if ok { &acked } else { &failed };
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    })
                    .await
                    .expect("async send");
            }
            for b in 0..100 {
                let batch: Vec<Message> = (0..20)
                    .map(|i| sent(b * 20 + i, &format!("batch{b}")))
                    .collect();
                producer.send_batch(batch).await.expect("batch send");
            }
            eventually("async send callbacks", Duration::from_secs(60), || {
                acked.load(std::sync::atomic::Ordering::SeqCst)
                    + failed.load(std::sync::atomic::Ordering::SeqCst)
                    == 2000
            })
            .await;
            assert_eq!(
                failed.load(std::sync::atomic::Ordering::SeqCst),
                0,
                "async sends failed"
            );
            eventually("every TagA/TagB message", Duration::from_secs(180), || {
                received.all().len() >= expected.len()
            })
            .await;
            for mut c in consumers {
                c.shutdown().await;
            }
            producer.shutdown().await;
            expected
        }
    });

    let got = received.all();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (body, tag) in &got {
        assert_ne!(
            tag, "TagC",
            "TagC is not subscribed, yet {body} was delivered"
        );
        assert_ne!(tag, "warmup");
        *counts.entry(body.as_str()).or_default() += 1;
    }
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "duplicates: {dupes:?}");
    for (body, _) in &expected {
        assert_eq!(
            counts.get(body.as_str()),
            Some(&1),
            "{body} not received exactly once"
        );
    }
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        received.consumers(),
        2,
        "both consumers of the group receive messages"
    );
}

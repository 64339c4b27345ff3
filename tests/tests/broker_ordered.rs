//! Ordered consumption with the real third-party client: sharding keys over 8 queues, two
//! orderly consumers (queue locks), SUSPEND answers and a consumer restart mid-stream.

mod support;

use rocketmq_client_rust::{
    ClientResult, ConsumeOrderlyContext, ConsumeOrderlyStatus, DefaultMQProducer,
    DefaultMQPushConsumer, MQPushConsumer, MessageListenerOrderly,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Client, TempDir, eventually};

const KEYS: usize = 16;
const PER_KEY: usize = 40;
const TOPIC: &str = "OrderedTopic";

/// Successful consumptions `(consumer, key, seq)` in the order they happened, and the
/// messages already suspended once.
#[derive(Default)]
struct Seen {
    done: Mutex<Vec<(String, usize, usize)>>,
    suspended: Mutex<HashSet<(usize, usize)>>,
}

struct Orderly {
    name: String,
    seen: Arc<Seen>,
}

impl MessageListenerOrderly for Orderly {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _: &mut ConsumeOrderlyContext,
    ) -> ClientResult<ConsumeOrderlyStatus> {
        let parsed: Vec<(usize, usize)> = msgs
            .iter()
            .filter_map(|m| {
                let body = support::body_text(m);
                let (k, s) = body.split_once('-')?;
                Some((k.parse().ok()?, s.parse().ok()?))
            })
            .collect();
        // Now and then refuse a message once: the queue must pause and redeliver it in place.
        if let Some(first) = parsed.iter().find(|(k, s)| (k + s) % 9 == 4)
            && self.seen.suspended.lock().unwrap().insert(*first)
        {
            return Ok(ConsumeOrderlyStatus::SuspendCurrentQueueAMoment);
        }
        let mut done = self.seen.done.lock().unwrap();
        done.extend(parsed.into_iter().map(|(k, s)| (self.name.clone(), k, s)));
        Ok(ConsumeOrderlyStatus::Success)
    }
}

async fn orderly_consumer(
    rt: Arc<rocketmq_client_rust::ClientRuntime>,
    namesrv: &str,
    name: &str,
    seen: &Arc<Seen>,
) -> DefaultMQPushConsumer {
    let mut consumer = DefaultMQPushConsumer::builder(rt)
        .client_config(support::client_config(namesrv, name))
        .consumer_group("GID_ordered".to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .suspend_current_queue_time_millis(100)
        .consume_thread_min(4)
        .consume_thread_max(4)
        .build();
    consumer.subscribe(TOPIC, "*").await.expect("subscribe");
    consumer.register_message_listener_orderly(Orderly {
        name: name.into(),
        seen: seen.clone(),
    });
    consumer.start().await.expect("consumer starts");
    consumer
}

fn by_key(queues: &[MessageQueue], _: &Message, key: &usize) -> Option<MessageQueue> {
    queues.get(key % queues.len()).cloned()
}

#[test]
fn per_key_order_holds_through_suspends_and_a_consumer_restart() {
    let dir = TempDir::new("ordered");
    let broker = support::standalone(&dir.0, &[]);
    let namesrv = broker.namesrv();
    let seen = Arc::new(Seen::default());
    let rounds = Client::new().run(|rt| {
        let seen = seen.clone();
        async move {
            let mut producer = DefaultMQProducer::builder(rt.clone())
                .client_config(support::client_config(&namesrv, "producer"))
                .producer_group("GID_ordered_producer")
                .default_topic_queue_nums(8)
                .build();
            producer.start().await.expect("producer starts");
            let warmup = Message::builder()
                .topic(TOPIC)
                .body_slice(b"warmup")
                .build_unchecked();
            producer
                .send_with_selector(warmup, by_key, 0usize)
                .await
                .expect("warm-up send");
            support::wait_for_route(&namesrv, TOPIC).await;

            let mut o1 = orderly_consumer(rt.clone(), &namesrv, "o1", &seen).await;
            let mut o2 = orderly_consumer(rt.clone(), &namesrv, "o2", &seen).await;
            let consumers = || {
                let done = seen.done.lock().unwrap();
                done.iter()
                    .map(|(c, _, _)| c.clone())
                    .collect::<HashSet<_>>()
                    .len()
            };
            // PER_KEY rounds, then more while only one consumer has had a message: on a
            // loaded machine the rebalance that hands the second consumer its queues can
            // come after a quick producer is done, and "both consume" is what is tested.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut seq = 0;
            while seq < PER_KEY || (consumers() < 2 && std::time::Instant::now() < deadline) {
                if seq == PER_KEY / 2 {
                    // Restart one consumer mid-stream: its queues move and come back.
                    o2.shutdown().await;
                    o2 = orderly_consumer(rt.clone(), &namesrv, "o2", &seen).await;
                }
                if seq >= PER_KEY {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                for key in 0..KEYS {
                    let msg = Message::builder()
                        .topic(TOPIC)
                        .body_slice(format!("{key}-{seq}").as_bytes())
                        .build_unchecked();
                    producer
                        .send_with_selector(msg, by_key, key)
                        .await
                        .expect("ordered send");
                }
                seq += 1;
            }
            let rounds = seq;
            let complete = || {
                let done = seen.done.lock().unwrap();
                done.iter()
                    .map(|(_, k, s)| (*k, *s))
                    .collect::<HashSet<_>>()
                    .len()
                    >= KEYS * rounds
            };
            eventually("every ordered message", Duration::from_secs(120), complete).await;
            o1.shutdown().await;
            o2.shutdown().await;
            producer.shutdown().await;
            rounds
        }
    });

    let done = seen.done.lock().unwrap();
    let mut first_seen: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut counted = HashSet::new();
    for (_, key, seq) in done.iter() {
        if counted.insert((*key, *seq)) {
            first_seen.entry(*key).or_default().push(*seq);
        }
    }
    for key in 0..KEYS {
        let seqs = &first_seen[&key];
        assert_eq!(
            seqs,
            &(0..rounds).collect::<Vec<_>>(),
            "key {key}: messages consumed out of order"
        );
    }
    assert!(
        !seen.suspended.lock().unwrap().is_empty(),
        "some messages were suspended once"
    );
    let consumers: HashSet<&str> = done.iter().map(|(c, _, _)| c.as_str()).collect();
    assert_eq!(consumers.len(), 2, "both consumers consumed");
}

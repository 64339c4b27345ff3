//! Instance namespaces with the real third-party client: a namespaced client
//! (`<instanceId>%topic`) and a bare one share a group through retries and the DLQ, and
//! both see plain names.

mod support;

use rocketmq_client_rust::{
    ClientConfig, ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer, MessageListenerConcurrently,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Client, TempDir, eventually};

const INSTANCE: &str = "MQ_INST_1380156306793859_BaUm1AoX";
const TOPIC: &str = "NsTopic";
const GROUP: &str = "GID_ns";

/// `(consumer, topic as the app sees it, body, reconsumeTimes)`.
type Log = Arc<Mutex<Vec<(String, String, String, i32)>>>;

struct Listener {
    name: String,
    log: Log,
}

impl MessageListenerConcurrently for Listener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        let mut failed = false;
        for m in msgs {
            let body = support::body_text(m);
            failed |= body == "poison";
            self.log.lock().unwrap().push((
                self.name.clone(),
                m.topic().to_string(),
                body,
                m.reconsume_times(),
            ));
        }
        Ok(if failed {
            ConsumeConcurrentlyStatus::ReconsumeLater
        } else {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
    }
}

fn config(namesrv: &str, instance: &str, namespaced: bool) -> ClientConfig {
    ClientConfig {
        namespace: namespaced.then(|| INSTANCE.into()),
        ..support::client_config(namesrv, instance)
    }
}

async fn consumer(
    rt: Arc<rocketmq_client_rust::ClientRuntime>,
    cfg: ClientConfig,
    group: &str,
    topic: &str,
    name: &str,
    log: &Log,
) -> DefaultMQPushConsumer {
    let mut c = DefaultMQPushConsumer::builder(rt)
        .client_config(cfg)
        .consumer_group(group.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .max_reconsume_times(2)
        .consume_thread_min(4)
        .consume_thread_max(4)
        .build();
    c.subscribe(topic, "*").await.expect("subscribe");
    c.register_message_listener_concurrently(Listener {
        name: name.into(),
        log: log.clone(),
    });
    c.start().await.expect("consumer starts");
    c
}

fn message(body: &str) -> Message {
    Message::builder()
        .topic(TOPIC)
        .tags("T")
        .body_slice(body.as_bytes())
        .build_unchecked()
}

#[test]
fn namespaced_and_bare_clients_share_topics_groups_retries_and_the_dlq() {
    let dir = TempDir::new("namespaces");
    let levels = "100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms";
    let broker = support::standalone(
        &dir.0,
        &["--instance-id", INSTANCE, "--delay-levels", levels],
    );
    let namesrv = broker.namesrv();
    let log = Log::default();
    Client::new().run(|rt| {
        let log = log.clone();
        async move {
            let mut namespaced = DefaultMQProducer::builder(rt.clone())
                .client_config(config(&namesrv, "p-ns", true))
                .producer_group("GID_ns_producer")
                .build();
            let mut bare = DefaultMQProducer::builder(rt.clone())
                .client_config(config(&namesrv, "p-bare", false))
                .producer_group("GID_ns_producer")
                .build();
            namespaced.start().await.expect("producer starts");
            bare.start().await.expect("producer starts");
            namespaced
                .send(message("warmup"))
                .await
                .expect("warm-up send");
            // The route answers under both names.
            support::wait_for_route(&namesrv, TOPIC).await;
            support::wait_for_route(&namesrv, &format!("{INSTANCE}%{TOPIC}")).await;

            let a = consumer(
                rt.clone(),
                config(&namesrv, "ns", true),
                GROUP,
                TOPIC,
                "ns",
                &log,
            )
            .await;
            let b = consumer(
                rt.clone(),
                config(&namesrv, "bare", false),
                GROUP,
                TOPIC,
                "bare",
                &log,
            )
            .await;
            for i in 0..20 {
                namespaced
                    .send(message(&format!("from-ns-{i}")))
                    .await
                    .expect("namespaced send");
                bare.send(message(&format!("from-bare-{i}")))
                    .await
                    .expect("bare send");
            }
            bare.send(message("poison")).await.expect("send");
            let count = |prefix: &str| {
                log.lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, _, body, _)| body.starts_with(prefix))
                    .count()
            };
            eventually(
                "every message and three poison attempts",
                Duration::from_secs(60),
                || count("from-") >= 40 && count("poison") >= 3,
            )
            .await;

            support::wait_for_route(&namesrv, &format!("%DLQ%{GROUP}")).await;
            let dlq = consumer(
                rt.clone(),
                config(&namesrv, "dlq", true),
                "GID_ns_dlq",
                &format!("%DLQ%{GROUP}"),
                "dlq",
                &log,
            )
            .await;
            eventually(
                "the poison message in the DLQ",
                Duration::from_secs(60),
                || log.lock().unwrap().iter().any(|(c, ..)| c == "dlq"),
            )
            .await;
            for mut c in [a, b, dlq] {
                c.shutdown().await;
            }
            namespaced.shutdown().await;
            bare.shutdown().await;
        }
    });
    let log = log.lock().unwrap();
    let mut once: HashMap<&str, usize> = HashMap::new();
    for (consumer, topic, body, _) in log.iter() {
        assert!(
            !topic.contains(INSTANCE),
            "{consumer} saw a namespaced topic {topic} for {body}"
        );
        if consumer != "dlq" {
            assert_eq!(
                topic, TOPIC,
                "{consumer} sees the topic as named, retries included ({body})"
            );
        }
        if body.starts_with("from-") {
            *once.entry(body).or_default() += 1;
        }
    }
    assert_eq!(once.len(), 40);
    assert!(
        once.values().all(|n| *n == 1),
        "each message once: {once:?}"
    );
    let attempts: Vec<i32> = log
        .iter()
        .filter(|(c, _, body, _)| c != "dlq" && body == "poison")
        .map(|(.., r)| *r)
        .collect();
    assert_eq!(attempts, [0, 1, 2]);
    let dead: Vec<_> = log.iter().filter(|(c, ..)| c == "dlq").collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].2, "poison");
    let consumers: std::collections::HashSet<&str> = log
        .iter()
        .filter(|(c, ..)| c != "dlq")
        .map(|(c, ..)| c.as_str())
        .collect();
    assert_eq!(
        consumers.len(),
        2,
        "the namespaced and the bare consumer both consumed"
    );
}

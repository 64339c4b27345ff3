//! Delivery semantics with the real third-party client: broadcasting, retries into the
//! dead-letter queue, delay levels.

mod support;

use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQPushConsumer,
    MQPushConsumer, MessageListenerConcurrently,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_protocol::protocol::heartbeat::message_model::MessageModel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Client, TempDir, eventually};

/// One delivery as a listener saw it.
#[derive(Clone, Debug)]
struct Delivery {
    consumer: String,
    body: String,
    topic: String,
    reconsume_times: i32,
    at: Instant,
    retry_topic: Option<String>,
}

type Log = Arc<Mutex<Vec<Delivery>>>;

/// Records deliveries; fails every message whose body starts with `poison`.
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
            failed |= body.starts_with("poison");
            self.log.lock().unwrap().push(Delivery {
                consumer: self.name.clone(),
                topic: m.topic().to_string(),
                reconsume_times: m.reconsume_times(),
                at: Instant::now(),
                retry_topic: m.properties().get("RETRY_TOPIC").map(|v| v.to_string()),
                body,
            });
        }
        Ok(if failed {
            ConsumeConcurrentlyStatus::ReconsumeLater
        } else {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
    }
}

struct ConsumerSpec<'a> {
    instance: &'a str,
    group: &'a str,
    topic: &'a str,
    model: MessageModel,
    max_reconsume_times: i32,
}

async fn start_consumer(
    rt: Arc<rocketmq_client_rust::ClientRuntime>,
    namesrv: &str,
    spec: ConsumerSpec<'_>,
    log: &Log,
) -> DefaultMQPushConsumer {
    let mut consumer = DefaultMQPushConsumer::builder(rt)
        .client_config(support::client_config(namesrv, spec.instance))
        .consumer_group(spec.group.to_string())
        .message_model(spec.model)
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .max_reconsume_times(spec.max_reconsume_times)
        .consume_thread_min(4)
        .consume_thread_max(4)
        .build();
    consumer
        .subscribe(spec.topic, "*")
        .await
        .expect("subscribe");
    consumer.register_message_listener_concurrently(Listener {
        name: spec.instance.into(),
        log: log.clone(),
    });
    consumer.start().await.expect("consumer starts");
    consumer
}

#[test]
fn broadcasting_consumers_each_get_every_message() {
    let dir = TempDir::new("broadcast");
    let broker = support::standalone(&dir.0, &[]);
    let namesrv = broker.namesrv();
    let log = Log::default();
    Client::new().run(|rt| {
        let log = log.clone();
        async move {
            let mut producer = support::warmed_producer(
                rt.clone(),
                &namesrv,
                "BroadcastTopic",
                "GID_delivery_producer",
            )
            .await;
            let mut consumers = vec![];
            for name in ["b1", "b2"] {
                let spec = ConsumerSpec {
                    instance: name,
                    group: "GID_broadcast",
                    topic: "BroadcastTopic",
                    model: MessageModel::Broadcasting,
                    max_reconsume_times: 16,
                };
                consumers.push(start_consumer(rt.clone(), &namesrv, spec, &log).await);
            }
            for i in 0..50 {
                producer
                    .send(support::message("BroadcastTopic", &format!("m{i}")))
                    .await
                    .expect("send");
            }
            let count = |name: &str| {
                log.lock()
                    .unwrap()
                    .iter()
                    .filter(|d| d.consumer == name && d.body.starts_with('m'))
                    .count()
            };
            eventually(
                "both consumers to get all 50",
                Duration::from_secs(60),
                || count("b1") >= 50 && count("b2") >= 50,
            )
            .await;
            for mut c in consumers {
                c.shutdown().await;
            }
            producer.shutdown().await;
        }
    });
    for name in ["b1", "b2"] {
        let mut bodies: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.consumer == name && d.body.starts_with('m'))
            .map(|d| d.body.clone())
            .collect();
        bodies.sort();
        bodies.dedup();
        assert_eq!(bodies.len(), 50, "{name} got every message");
    }
}

#[test]
fn a_failing_message_is_retried_with_counts_then_lands_in_the_dlq() {
    let dir = TempDir::new("retry-dlq");
    // A short level table, so retries take milliseconds (the n-th retry uses level 3 + n).
    let levels = "100ms 100ms 100ms 100ms 100ms 100ms 100ms 100ms";
    let broker = support::standalone(&dir.0, &["--delay-levels", levels]);
    let namesrv = broker.namesrv();
    let log = Log::default();
    let started = Instant::now();
    Client::new().run(|rt| {
        let log = log.clone();
        async move {
            let mut producer = support::warmed_producer(
                rt.clone(),
                &namesrv,
                "RetryTopic",
                "GID_delivery_producer",
            )
            .await;
            let spec = ConsumerSpec {
                instance: "r1",
                group: "GID_retry",
                topic: "RetryTopic",
                model: MessageModel::Clustering,
                max_reconsume_times: 2,
            };
            let mut consumer = start_consumer(rt.clone(), &namesrv, spec, &log).await;
            producer
                .send(support::message("RetryTopic", "poison-1"))
                .await
                .expect("send");
            producer
                .send(support::message("RetryTopic", "fine-1"))
                .await
                .expect("send");
            let poison = |log: &Log| {
                log.lock()
                    .unwrap()
                    .iter()
                    .filter(|d| d.consumer == "r1" && d.body == "poison-1")
                    .count()
            };
            eventually(
                "three deliveries of the failing message",
                Duration::from_secs(60),
                || poison(&log) >= 3,
            )
            .await;

            support::wait_for_route(&namesrv, "%DLQ%GID_retry").await;
            let spec = ConsumerSpec {
                instance: "dlq",
                group: "GID_dlq_reader",
                topic: "%DLQ%GID_retry",
                model: MessageModel::Clustering,
                max_reconsume_times: 16,
            };
            let mut dlq_reader = start_consumer(rt.clone(), &namesrv, spec, &log).await;
            eventually(
                "the failed message in the DLQ",
                Duration::from_secs(60),
                || log.lock().unwrap().iter().any(|d| d.consumer == "dlq"),
            )
            .await;
            dlq_reader.shutdown().await;
            consumer.shutdown().await;
            producer.shutdown().await;
        }
    });
    let log = log.lock().unwrap();
    let attempts: Vec<i32> = log
        .iter()
        .filter(|d| d.consumer == "r1" && d.body == "poison-1")
        .map(|d| d.reconsume_times)
        .collect();
    assert_eq!(
        attempts,
        [0, 1, 2],
        "first delivery plus maxReconsumeTimes=2 retries, counted"
    );
    assert_eq!(
        log.iter().filter(|d| d.body == "fine-1").count(),
        1,
        "a good message is delivered once"
    );
    let dead: Vec<&Delivery> = log.iter().filter(|d| d.consumer == "dlq").collect();
    assert_eq!(dead.len(), 1, "one copy in the DLQ: {dead:?}");
    assert_eq!(dead[0].body, "poison-1");
    assert_eq!(
        dead[0].retry_topic.as_deref(),
        Some("RetryTopic"),
        "the DLQ copy names its original topic"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "with a short level table the DLQ is reached in seconds"
    );
}

#[test]
fn a_delay_level_message_arrives_on_time() {
    let dir = TempDir::new("delay");
    let broker = support::standalone(&dir.0, &["--delay-levels", "1s 2s 3s"]);
    let namesrv = broker.namesrv();
    let log = Log::default();
    let sent_at = Client::new().run(|rt| {
        let log = log.clone();
        async move {
            let mut producer = support::warmed_producer(
                rt.clone(),
                &namesrv,
                "DelayTopic",
                "GID_delivery_producer",
            )
            .await;
            let spec = ConsumerSpec {
                instance: "d1",
                group: "GID_delay",
                topic: "DelayTopic",
                model: MessageModel::Clustering,
                max_reconsume_times: 16,
            };
            let mut consumer = start_consumer(rt.clone(), &namesrv, spec, &log).await;
            // Let the consumer take its queues, so "on time" measures the broker only.
            producer
                .send(support::message("DelayTopic", "ready"))
                .await
                .expect("send");
            eventually("the consumer to run", Duration::from_secs(30), || {
                log.lock().unwrap().iter().any(|d| d.body == "ready")
            })
            .await;
            let delayed = Message::builder()
                .topic("DelayTopic")
                .tags("T")
                .body_slice(b"late")
                .delay_level(2)
                .build_unchecked();
            let sent_at = Instant::now();
            producer.send(delayed).await.expect("send");
            eventually("the delayed message", Duration::from_secs(30), || {
                log.lock().unwrap().iter().any(|d| d.body == "late")
            })
            .await;
            consumer.shutdown().await;
            producer.shutdown().await;
            sent_at
        }
    });
    let log = log.lock().unwrap();
    let arrived = log.iter().find(|d| d.body == "late").expect("delivered");
    let waited = arrived.at.duration_since(sent_at);
    assert!(
        waited >= Duration::from_millis(1900),
        "level 2 (2 s) must not arrive early: {waited:?}"
    );
    assert!(
        waited <= Duration::from_secs(5),
        "level 2 (2 s) arrived far too late: {waited:?}"
    );
    assert_eq!(arrived.topic, "DelayTopic", "delivered on its real topic");
}

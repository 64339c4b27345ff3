//! Scheduled messages with the real third-party client: the 5.x timer properties it sends
//! (`TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`), the 4.x `__STARTDELIVERTIME`,
//! the 40-day limit, a kill -9 in between, the commit log's retention, and the classic
//! delay levels.

mod support;

use mq_broker::client::AdminClient;
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQProducer,
    DefaultMQPushConsumer, MQPushConsumer, MessageListenerConcurrently,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{Client, TempDir, eventually};

/// One delivery as the listener saw it.
#[derive(Clone, Debug)]
struct Delivery {
    body: String,
    /// Wall-clock receive time, epoch ms (scheduled times are wall-clock too).
    at_ms: i64,
    topic: String,
    msg_id: String,
    keys: Option<String>,
    tags: Option<String>,
    timer_properties: Vec<String>,
}

type Log = Arc<Mutex<Vec<Delivery>>>;

struct Listener(Log);

impl MessageListenerConcurrently for Listener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        let at_ms = now_ms();
        let mut log = self.0.lock().unwrap();
        for m in msgs {
            let props = m.properties();
            log.push(Delivery {
                body: support::body_text(m),
                at_ms,
                topic: m.topic().to_string(),
                msg_id: props
                    .get("UNIQ_KEY")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                keys: props.get("KEYS").map(|v| v.to_string()),
                tags: m.get_tags().map(|v| v.to_string()),
                timer_properties: props
                    .keys()
                    .filter(|k| k.starts_with("TIMER_") || k.as_str() == "__STARTDELIVERTIME")
                    .map(|k| k.to_string())
                    .collect(),
            });
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// A push consumer of `topic` that has taken its queues (it received a `ready` message
/// sent through `producer`), so arrival times measure the broker only.
async fn ready_consumer(
    rt: Arc<rocketmq_client_rust::ClientRuntime>,
    namesrv: &str,
    topic: &str,
    producer: &DefaultMQProducer,
    log: &Log,
) -> DefaultMQPushConsumer {
    let mut consumer = DefaultMQPushConsumer::builder(rt)
        .client_config(support::client_config(namesrv, "consumer"))
        .consumer_group("GID_scheduled".to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .consume_thread_min(4)
        .consume_thread_max(4)
        .build();
    consumer.subscribe(topic, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(Listener(log.clone()));
    consumer.start().await.expect("consumer starts");
    producer
        .send(support::message(topic, "ready"))
        .await
        .expect("send");
    eventually("the consumer to run", Duration::from_secs(30), || {
        delivered(log, "ready").is_some()
    })
    .await;
    consumer
}

fn delivered(log: &Log, body: &str) -> Option<Delivery> {
    log.lock().unwrap().iter().find(|d| d.body == body).cloned()
}

/// The broker's `timerPending` (GET_BROKER_RUNTIME_INFO).
async fn timer_pending(broker: &str) -> u64 {
    let admin = AdminClient::connect(broker, Duration::from_secs(5))
        .await
        .expect("admin connects");
    let info = admin.runtime_info().await.expect("runtime info");
    info.get("timerPending")
        .expect("timerPending in the runtime info")
        .parse()
        .expect("a number")
}

/// Asserts `body` arrived no earlier than `due_ms` and at most `late_ms` after it.
fn assert_on_time(log: &Log, body: &str, due_ms: i64, late_ms: i64) -> Delivery {
    let d = delivered(log, body).unwrap_or_else(|| panic!("{body} was delivered"));
    println!("{body}: received {} ms after its time", d.at_ms - due_ms);
    assert!(
        d.at_ms >= due_ms,
        "{body} arrived {} ms early",
        due_ms - d.at_ms
    );
    assert!(
        d.at_ms - due_ms <= late_ms,
        "{body} arrived {} ms late (limit {late_ms} ms)",
        d.at_ms - due_ms
    );
    d
}

/// A SEND_MESSAGE with one property, as a 4.x client sends it.
async fn raw_send(broker: &str, topic: &str, key: &str, value: &str) -> RemotingCommand {
    let req = RemotingCommand::new_request(request_code::SEND_MESSAGE)
        .with_ext("producerGroup", "GID_raw")
        .with_ext("topic", topic)
        .with_ext("defaultTopic", "TBW102")
        .with_ext("defaultTopicQueueNums", "4")
        .with_ext("queueId", "0")
        .with_ext("sysFlag", "0")
        .with_ext("bornTimestamp", now_ms().to_string())
        .with_ext("flag", "0")
        .with_ext("properties", format!("{key}\u{1}{value}\u{2}"))
        .with_body(&b"raw"[..]);
    support::raw_request(broker, req).await
}

#[test]
fn timer_messages_arrive_on_time_keeping_their_id_keys_and_tags() {
    let dir = TempDir::new("timer-on-time");
    let broker = support::standalone(&dir.0, &[]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    let log = Log::default();
    let topic = "TimerTopic";
    let (ids, sent) = Client::new().run(|rt| {
        let log = log.clone();
        async move {
            let producer =
                support::warmed_producer(rt.clone(), &namesrv, topic, "GID_scheduled_producer")
                    .await;
            let mut consumer = ready_consumer(rt, &namesrv, topic, &producer, &log).await;
            let before = now_ms();
            let mut at3 = Message::builder()
                .topic(topic)
                .tags("TagA")
                .keys(vec!["order-3".to_owned()])
                .body_slice(b"at+3s")
                .build_unchecked();
            at3.set_deliver_time_ms((before + 3_000) as u64);
            let mut in10 = support::message(topic, "in+10s");
            in10.set_delay_time_sec(10);
            let mut in4 = support::message(topic, "in+4000ms");
            in4.set_delay_time_ms(4_000);
            let mut ids = vec![];
            for m in [at3, in10, in4] {
                let r = producer.send(m).await.expect("send").expect("a result");
                ids.push(r.msg_id.expect("a msg id").to_string());
            }
            let after = now_ms();
            assert_eq!(timer_pending(&addr).await, 3, "all three wait");
            eventually("the +10 s message", Duration::from_secs(20), || {
                delivered(&log, "in+10s").is_some()
            })
            .await;
            assert_eq!(timer_pending(&addr).await, 0, "none waits any more");
            consumer.shutdown().await;
            (ids, (before, after))
        }
    });
    let (before, after) = sent;
    // The relative delays count from the broker's receipt: between `before` and `after`.
    let slack = after - before;
    let at3 = assert_on_time(&log, "at+3s", before + 3_000, 1_000);
    assert_on_time(&log, "in+4000ms", before + 4_000, 1_000 + slack);
    assert_on_time(&log, "in+10s", before + 10_000, 1_000 + slack);
    assert_eq!(at3.topic, topic, "delivered on its real topic");
    assert_eq!(
        at3.msg_id, ids[0],
        "the unique key (the client's msgId) is kept"
    );
    assert_eq!(at3.keys.as_deref(), Some("order-3"));
    assert_eq!(at3.tags.as_deref(), Some("TagA"));
    let log = log.lock().unwrap();
    for d in log.iter() {
        assert!(
            d.timer_properties.is_empty(),
            "{} still carries {:?}",
            d.body,
            d.timer_properties
        );
    }
    for body in ["at+3s", "in+10s", "in+4000ms"] {
        assert_eq!(
            log.iter().filter(|d| d.body == body).count(),
            1,
            "{body} delivered once"
        );
    }
}

#[test]
fn start_deliver_time_of_4x_clients_works_the_same() {
    let dir = TempDir::new("timer-4x");
    let broker = support::standalone(&dir.0, &[]);
    let namesrv = broker.namesrv();
    let log = Log::default();
    let topic = "StartDeliverTopic";
    let due = Client::new().run(|rt| {
        let log = log.clone();
        async move {
            let producer =
                support::warmed_producer(rt.clone(), &namesrv, topic, "GID_scheduled_producer")
                    .await;
            let mut consumer = ready_consumer(rt, &namesrv, topic, &producer, &log).await;
            let due = now_ms() + 3_000;
            let mut m = support::message(topic, "4x");
            m.put_property("__STARTDELIVERTIME".into(), due.to_string().into());
            producer.send(m).await.expect("send");
            // A time already past is delivered at once.
            let mut past = support::message(topic, "past");
            past.put_property("__STARTDELIVERTIME".into(), "1000".into());
            producer.send(past).await.expect("send");
            eventually("the 4.x message", Duration::from_secs(20), || {
                delivered(&log, "4x").is_some()
            })
            .await;
            consumer.shutdown().await;
            due
        }
    });
    assert_on_time(&log, "4x", due, 1_000);
    let past = delivered(&log, "past").expect("the past one came");
    assert!(
        past.at_ms < due - 1_000,
        "a time in the past is not waited for"
    );
}

#[test]
fn a_scheduled_message_survives_a_kill9_of_the_broker() {
    let dir = TempDir::new("timer-kill9");
    let broker = support::standalone(&dir.0, &[]);
    let namesrv = broker.namesrv();
    let topic = "TimerCrashTopic";
    let due = Client::new().run(|rt| async move {
        let producer =
            support::warmed_producer(rt, &namesrv, topic, "GID_scheduled_producer").await;
        let due = now_ms() + 5_000;
        let mut m = support::message(topic, "survivor");
        m.set_deliver_time_ms(due as u64);
        producer.send(m).await.expect("send");
        due
    });
    broker.kill9();

    let broker = support::standalone(&dir.0, &[]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    let log = Log::default();
    Client::new().run(|rt| {
        let log = log.clone();
        async move {
            // Read before the due time, the message must still be waiting.
            let pending = timer_pending(&addr).await;
            if now_ms() < due {
                assert_eq!(pending, 1, "still waiting after the crash");
            }
            let producer =
                support::warmed_producer(rt.clone(), &namesrv, topic, "GID_scheduled_producer")
                    .await;
            let mut consumer = ready_consumer(rt, &namesrv, topic, &producer, &log).await;
            eventually("the scheduled message", Duration::from_secs(30), || {
                delivered(&log, "survivor").is_some()
            })
            .await;
            consumer.shutdown().await;
        }
    });
    let d = delivered(&log, "survivor").expect("delivered");
    assert!(d.at_ms >= due, "not early: {} ms", due - d.at_ms);
    assert_eq!(d.topic, topic);
}

#[test]
fn more_than_40_days_ahead_is_refused_with_the_limit_in_the_error() {
    let dir = TempDir::new("timer-limit");
    let broker = support::standalone(&dir.0, &[]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    let topic = "TimerLimitTopic";
    Client::new().run(|rt| async move {
        let producer =
            support::warmed_producer(rt, &namesrv, topic, "GID_scheduled_producer").await;
        let day = 86_400_000;
        let mut far = support::message(topic, "41 days");
        far.set_deliver_time_ms((now_ms() + 41 * day) as u64);
        let err = producer
            .send(far)
            .await
            .expect_err("41 days ahead is refused");
        assert_eq!(err.broker_response_code(), Some(13), "MESSAGE_ILLEGAL");
        // That client keeps no broker text; a raw send shows what a Java client prints.
        let answer = raw_send(&addr, topic, "TIMER_DELAY_SEC", &(41 * 86_400).to_string()).await;
        assert_eq!(answer.code, response_code::MESSAGE_ILLEGAL);
        assert_eq!(
            answer.remark.as_deref(),
            Some("the delivery time is more than 40 days ahead (limit 40 days)")
        );
        let garbage = raw_send(&addr, topic, "TIMER_DELIVER_MS", "tomorrow").await;
        assert_eq!(garbage.code, response_code::MESSAGE_ILLEGAL);
        assert!(
            garbage
                .remark
                .as_deref()
                .unwrap_or("")
                .contains("TIMER_DELIVER_MS"),
            "{:?}",
            garbage.remark
        );
        let mut ok = support::message(topic, "39 days");
        ok.set_deliver_time_ms((now_ms() + 39 * day) as u64);
        producer.send(ok).await.expect("39 days ahead is fine");
        assert_eq!(timer_pending(&addr).await, 1, "only the 39-day one waits");
    });
}

#[test]
fn delay_levels_1_to_3_keep_their_default_times() {
    let dir = TempDir::new("timer-levels");
    let broker = support::standalone(&dir.0, &[]);
    let namesrv = broker.namesrv();
    let log = Log::default();
    let topic = "LevelTopic";
    let sent = Client::new().run(|rt| {
        let log = log.clone();
        async move {
            let producer =
                support::warmed_producer(rt.clone(), &namesrv, topic, "GID_scheduled_producer")
                    .await;
            let mut consumer = ready_consumer(rt, &namesrv, topic, &producer, &log).await;
            let mut sent = vec![];
            for level in 1..=3 {
                let m = Message::builder()
                    .topic(topic)
                    .tags("T")
                    .body_slice(format!("level-{level}").as_bytes())
                    .delay_level(level)
                    .build_unchecked();
                let before = now_ms();
                producer.send(m).await.expect("send");
                sent.push((before, now_ms()));
            }
            eventually("level 3", Duration::from_secs(30), || {
                delivered(&log, "level-3").is_some()
            })
            .await;
            consumer.shutdown().await;
            sent
        }
    });
    for (level, (before, after), secs) in [(1, sent[0], 1), (2, sent[1], 5), (3, sent[2], 10)] {
        let d = delivered(&log, &format!("level-{level}")).expect("delivered");
        assert!(
            d.at_ms >= before + secs * 1_000,
            "level {level} ({secs} s) early by {} ms",
            before + secs * 1_000 - d.at_ms
        );
        assert!(
            d.at_ms <= after + secs * 1_000 + 1_000,
            "level {level} ({secs} s) late by {} ms",
            d.at_ms - after - secs * 1_000
        );
        assert_eq!(d.topic, topic);
    }
}

#[test]
fn a_message_scheduled_beyond_the_retention_still_arrives() {
    let dir = TempDir::new("timer-retention");
    // 2 s retention, 64 KiB segments: old segments go while the message waits.
    let broker = support::standalone(
        &dir.0,
        &["--retention-secs", "2", "--segment-size", "65536"],
    );
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    let log = Log::default();
    let topic = "RetentionTopic";
    let due = Client::new().run(|rt| {
        let log = log.clone();
        async move {
            let producer =
                support::warmed_producer(rt.clone(), &namesrv, topic, "GID_scheduled_producer")
                    .await;
            let due = now_ms() + 9_000;
            let mut m = support::message(topic, "patient");
            m.set_deliver_time_ms(due as u64);
            producer.send(m).await.expect("send");
            let admin = AdminClient::connect(&addr, Duration::from_secs(5))
                .await
                .expect("admin connects");
            // Under the client's 4 KiB compression threshold, so it fills segments.
            let filler = "f".repeat(3_500);
            let min_offset = || async {
                admin.runtime_info().await.expect("runtime info")["commitLogMinOffset"]
                    .parse::<u64>()
                    .expect("a number")
            };
            // Fill segments until retention deletes the first ones.
            let deadline = std::time::Instant::now() + Duration::from_secs(8);
            while min_offset().await == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "retention never deleted a segment"
                );
                for _ in 0..20 {
                    producer
                        .send(support::message(topic, &filler))
                        .await
                        .expect("filler send");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(now_ms() < due, "retention ran before the message was due");
            let mut consumer = ready_consumer(rt, &namesrv, topic, &producer, &log).await;
            eventually("the scheduled message", Duration::from_secs(20), || {
                delivered(&log, "patient").is_some()
            })
            .await;
            consumer.shutdown().await;
            due
        }
    });
    let d = delivered(&log, "patient").expect("delivered");
    assert!(d.at_ms >= due, "not early: {} ms", due - d.at_ms);
}

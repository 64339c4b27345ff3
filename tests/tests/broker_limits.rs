//! Instance TPS limits with the real third-party client (`rocketmq-client-rust`): sends
//! over `maxSendTps` are refused (SYSTEM_BUSY) or slowed, every acknowledged message is
//! consumed exactly once, raising the limit in the config file applies live; pulls over
//! `maxReceiveTps` are slowed down, not refused. Bounds are loose: a slow machine must
//! not fail them.

mod support;

use mq_broker::broker::groups::group_config;
use mq_broker::broker::topics::topic_config;
use mq_broker::client::AdminClient;
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use rocketmq_client_rust::{
    ClientRuntime, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{BrokerProcess, Client, TempDir, eventually};

/// How long a config-file change may take to apply (polled every second).
const RELOAD: Duration = Duration::from_secs(20);

/// A standalone broker started with a config file.
struct LimitedBroker {
    process: BrokerProcess,
    conf: PathBuf,
    _dir: TempDir,
}

impl LimitedBroker {
    fn start(name: &str, conf_text: &str) -> Self {
        let dir = TempDir::new(name);
        let conf = dir.0.join("broker.conf");
        replace(&conf, conf_text);
        let arg = conf.to_str().expect("UTF-8 temp path");
        let process = support::standalone(&dir.0.join("store"), &["--config", arg]);
        Self {
            process,
            conf,
            _dir: dir,
        }
    }

    /// Creates `topic` and `group` and waits for the topic's route.
    async fn create(&self, topic: &str, group: &str) {
        let admin = AdminClient::connect(&self.process.broker(), Duration::from_secs(5))
            .await
            .expect("broker reachable");
        admin
            .create_topic(&topic_config(topic, 4))
            .await
            .expect("create topic");
        admin
            .create_group(&group_config(group))
            .await
            .expect("create group");
        support::wait_for_route(&self.process.namesrv(), topic).await;
    }
}

/// Replaces a file atomically (a new inode, as a ConfigMap update does).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

async fn producer(rt: &Arc<ClientRuntime>, namesrv: &str) -> DefaultMQProducer {
    let mut producer = DefaultMQProducer::builder(rt.clone())
        .client_config(support::client_config(namesrv, "producer"))
        .producer_group("GID_limits_producer")
        .build();
    producer.start().await.expect("producer starts");
    producer
}

/// A started consumer of `topic` in `group`; bodies land in the returned list.
async fn consumer(
    rt: &Arc<ClientRuntime>,
    namesrv: &str,
    group: &str,
    topic: &str,
) -> (DefaultMQPushConsumer, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(vec![]));
    let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
        .client_config(support::client_config(namesrv, "consumer"))
        .consumer_group(group.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .consume_thread_min(4)
        .consume_thread_max(4)
        .build();
    consumer.subscribe(topic, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(support::Collect(got.clone()));
    consumer.start().await.expect("consumer starts");
    (consumer, got)
}

/// Sends `bodies` one after the other as fast as the client goes; the acknowledged ones.
async fn send_all(producer: &DefaultMQProducer, topic: &str, bodies: &[String]) -> Vec<String> {
    let mut acked = vec![];
    for body in bodies {
        let msg = Message::builder()
            .topic(topic)
            .body_slice(body.as_bytes())
            .build_unchecked();
        if matches!(producer.send(msg).await, Ok(Some(_))) {
            acked.push(body.clone());
        }
    }
    acked
}

fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[test]
fn sends_over_the_limit_are_refused_or_slowed_and_a_raised_limit_applies_live() {
    let broker = LimitedBroker::start("limits-send", "maxSendTps=50\n");
    let namesrv = broker.process.namesrv();
    Client::new().run(|rt| async move {
        broker.create("limited", "GID_limited").await;
        let mut producer = producer(&rt, &namesrv).await;

        // 200 messages as fast as possible against 50/s (a burst of 50).
        let started = Instant::now();
        let mut acked = send_all(&producer, "limited", &bodies("capped", 200)).await;
        let took = started.elapsed();
        let refused = 200 - acked.len();
        assert!(
            refused > 0 || took >= Duration::from_secs(3),
            "200 sends at 50/s: {refused} refused in {took:?}"
        );
        assert!(!acked.is_empty(), "the burst is accepted");

        // Raising the limit in the config file applies without a restart: a round of
        // 100 sends goes through without one refusal.
        replace(&broker.conf, "maxSendTps=100000\n");
        let deadline = Instant::now() + RELOAD;
        for round in 0.. {
            let batch = bodies(&format!("raised{round}"), 100);
            let ok = send_all(&producer, "limited", &batch).await;
            let all = ok.len() == batch.len();
            acked.extend(ok);
            if all {
                break;
            }
            assert!(Instant::now() < deadline, "the raised limit applies");
        }

        // Every acknowledged message is consumed, exactly once.
        let (mut consumer, got) = consumer(&rt, &namesrv, "GID_limited", "limited").await;
        eventually(
            "every acknowledged message",
            Duration::from_secs(60),
            || got.lock().unwrap().len() >= acked.len(),
        )
        .await;
        let mut received = got.lock().unwrap().clone();
        received.sort();
        acked.sort();
        assert_eq!(received, acked, "acknowledged = consumed, once each");
        consumer.shutdown().await;
        producer.shutdown().await;
    });
}

#[test]
fn pulls_over_the_receive_limit_are_slowed_not_refused() {
    let broker = LimitedBroker::start("limits-receive", "maxReceiveTps=20\n");
    let namesrv = broker.process.namesrv();
    Client::new().run(|rt| async move {
        broker.create("slow", "GID_slow").await;
        let mut producer = producer(&rt, &namesrv).await;
        let mut sent = send_all(&producer, "slow", &bodies("slow", 100)).await;
        assert_eq!(sent.len(), 100, "sends are not limited");

        // 100 messages at 20/s (a burst of 20) take about 4 s to hand out.
        let (mut consumer, got) = consumer(&rt, &namesrv, "GID_slow", "slow").await;
        eventually("the first message", Duration::from_secs(60), || {
            !got.lock().unwrap().is_empty()
        })
        .await;
        let first = Instant::now();
        eventually("every message", Duration::from_secs(60), || {
            got.lock().unwrap().len() >= 100
        })
        .await;
        let took = first.elapsed();
        assert!(
            took >= Duration::from_secs(3),
            "100 messages at 20/s arrived within {took:?}"
        );
        let mut received = got.lock().unwrap().clone();
        received.sort();
        sent.sort();
        assert_eq!(received, sent, "every message once, none refused");
        consumer.shutdown().await;
        producer.shutdown().await;
    });
}

/// A message of `len` bytes to `topic`.
fn sized(topic: &str, len: usize) -> Message {
    Message::builder()
        .topic(topic)
        .body_slice(&vec![b'x'; len])
        .build_unchecked()
}

/// Announces a frame of `len` bytes on a fresh connection and keeps it open: whether the
/// server closed it within 10 s (rather than waiting for the rest of the frame).
fn closes_at_once(addr: &str, len: u32) -> bool {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(&len.to_be_bytes())
        .expect("write the length");
    conn.write_all(&[0, 0, 0, 2, b'{', b'}']).expect("write");
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn messages_over_the_size_limit_are_refused_with_the_limit_and_the_frame_limit_follows_it() {
    let env = LimitedBroker::start("size-limit", "maxMessageSize=2048\n");
    let namesrv = env.process.namesrv();
    let broker = env.process.broker();
    Client::new().run(|rt| async move {
        env.create("Sized", "GID_sized").await;
        let mut producer = producer(&rt, &namesrv).await;
        producer
            .send(sized("Sized", 2048))
            .await
            .expect("a message of the limit is stored");
        let err = producer
            .send(sized("Sized", 2049))
            .await
            .expect_err("one byte more is refused");
        assert_eq!(
            err.broker_response_code(),
            Some(response_code::MESSAGE_ILLEGAL),
            "{err:?}"
        );
        let batch: Vec<Message> = (0..3).map(|_| sized("Sized", 1000)).collect();
        let err = producer
            .send_batch(batch)
            .await
            .expect_err("a batch over the limit together is refused");
        assert_eq!(
            err.broker_response_code(),
            Some(response_code::MESSAGE_ILLEGAL),
            "{err:?}"
        );
        // The client does not show the broker's remark; a raw send does: it names the limit.
        let raw = RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
            .with_ext("a", "GID_raw")
            .with_ext("b", "Sized")
            .with_ext("c", "TBW102")
            .with_ext("d", "4")
            .with_ext("e", "0")
            .with_ext("f", "0")
            .with_ext("g", "0")
            .with_ext("h", "0")
            .with_body(vec![b'x'; 4096]);
        let answer = support::raw_request(&broker, raw).await;
        assert_eq!(answer.code, response_code::MESSAGE_ILLEGAL);
        assert!(
            answer
                .remark
                .as_deref()
                .unwrap_or_default()
                .contains("the maximum is 2048"),
            "the refusal says the limit: {:?}",
            answer.remark
        );

        // A frame far over the limit closes its own connection at once (it would have
        // been buffered up to 16 MiB before); the broker keeps serving.
        let announced = 2048 + (1 << 20) + 64;
        let addr = broker.clone();
        let closed = tokio::task::spawn_blocking(move || closes_at_once(&addr, announced))
            .await
            .expect("join");
        assert!(closed, "a frame over the limit closes its connection");
        let admin = AdminClient::connect(&broker, Duration::from_secs(5))
            .await
            .expect("broker reachable");
        let stats = admin.topic_stats("Sized").await.expect("topic stats");
        let stored: i64 = stats
            .offset_table
            .0
            .values()
            .map(|o| o.max_offset - o.min_offset)
            .sum();
        assert_eq!(stored, 1, "only the message within the limit was stored");
        producer
            .send(sized("Sized", 100))
            .await
            .expect("the broker still serves");
        producer.shutdown().await;
    });
}

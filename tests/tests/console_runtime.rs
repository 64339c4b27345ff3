//! The console's runtime reads against a real `mq-broker` (namespaced, as an instance with
//! independent naming), with messages sent and consumed by the real third-party client
//! (`rocketmq-client-rust`; the producer namespaced, the consumers bare): lookups by id and key, stable pages of a
//! time range, a group's progress, clients, running info and time span, the trace, the
//! minute counts, offset resets and the dead-letter queue, every name shown bare.
//! No Kubernetes: the runtime is given the name server's address (`Target`).

mod support;

use mq_broker::names::{Namespace, dlq_topic};
use mq_console::envelope::ErrorCode;
use mq_console::runtime::view::{BodyBudget, view};
use mq_console::runtime::{Runtime, Target};
use mq_console::task::Snapshot;
use rocketmq_client_rust::{
    ClientConfig, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use support::{Client, TempDir, eventually};

const INSTANCE: &str = "MQ_INST_1380156306793859_CoNsole1";
const TOPIC: &str = "ConsoleTopic";
const READER: &str = "GID_console_reader";
const DEAD: &str = "GID_console_dead";

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    mq_console::runtime::now_ms()
}

/// Deliveries; poison bodies fail into the dead-letter queue.
type Log = support::FailPoison;

/// What one send returned.
struct Sent {
    uniq: String,
    offset_id: String,
}

async fn send(p: &DefaultMQProducer, body: &[u8], keys: &[&str]) -> Sent {
    let m = Message::builder()
        .topic(TOPIC)
        .tags("TagA")
        .keys(keys.iter().map(|k| (*k).to_owned()).collect())
        .body_slice(body)
        .build_unchecked();
    let r = p
        .send(m)
        .await
        .expect("send acknowledged")
        .expect("a send result");
    Sent {
        uniq: r.msg_id.expect("a unique key").to_string(),
        offset_id: r.offset_msg_id.expect("an offset id"),
    }
}

fn config(namesrv: &str, name: &str) -> ClientConfig {
    ClientConfig {
        namespace: Some(INSTANCE.into()),
        ..support::client_config(namesrv, name)
    }
}

async fn consumer(
    rt: Arc<rocketmq_client_rust::ClientRuntime>,
    namesrv: &str,
    group: &str,
    log: &Log,
) -> DefaultMQPushConsumer {
    // Bare names: the broker forwards running-info requests to a namespaced
    // `rocketmq-client-rust` consumer with the bare group, which it does not know.
    let mut c = DefaultMQPushConsumer::builder(rt)
        .client_config(support::client_config(namesrv, group))
        .consumer_group(group.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .max_reconsume_times(0)
        .consume_thread_min(4)
        .consume_thread_max(4)
        .build();
    c.subscribe(TOPIC, "*").await.expect("subscribe");
    c.register_message_listener_concurrently(log.clone());
    c.start().await.expect("consumer starts");
    c
}

/// Every body of a snapshot, page by page of `size`.
async fn pages(
    rt: &Runtime,
    brokers: &[mq_console::runtime::Broker],
    topic: &str,
    snap: &Snapshot,
    size: i64,
) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut skip = 0;
    while skip < snap.total() {
        let got = rt
            .read_segments(brokers, topic, &snap.slice(skip, size))
            .await
            .expect("page read");
        out.push(
            got.iter()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned())
                .collect(),
        );
        skip += size;
    }
    out
}

#[test]
fn runtime_reads_answer_what_the_real_client_did_with_bare_names() {
    let dir = TempDir::new("console-runtime");
    let broker = support::standalone(&dir.0, &["--instance-id", INSTANCE]);
    let namesrv = broker.namesrv();
    Client::new().run(|rt| async move {
        let mut producer = DefaultMQProducer::builder(rt.clone())
            .client_config(config(&namesrv, "console-producer"))
            .producer_group("GID_console_producer".to_owned())
            .build();
        producer.start().await.expect("producer starts");
        send(&producer, b"warm-up", &[]).await;
        support::wait_for_route(&namesrv, &format!("{INSTANCE}%{TOPIC}")).await;
        let t0 = now_ms();
        eventually("the clock ticks", Duration::from_secs(2), || now_ms() > t0).await;

        let mut sent = Vec::new();
        for i in 0..10 {
            let key = if i % 2 == 0 { "k-even" } else { "k-odd" };
            sent.push(send(&producer, format!("m-{i}").as_bytes(), &[key]).await);
        }
        let big = "a compressible body ".repeat(1000);
        let big_sent = send(&producer, big.as_bytes(), &["k-big"]).await;
        let binary_sent = send(&producer, &[0xff, 0x00, 0xfe], &["k-bin"]).await;
        let t1 = now_ms();
        eventually("the clock ticks", Duration::from_secs(2), || now_ms() > t1).await;

        let runtime = Runtime::new(Duration::from_secs(5));
        let target = Target {
            instance_id: INSTANCE.into(),
            name_servers: vec![namesrv.clone()],
            credentials: None,
            names: Namespace::new(Some(INSTANCE)),
        };
        let brokers = runtime.brokers(&target).await.expect("the broker is found");
        assert_eq!(brokers.len(), 1);
        let nowhere = Target {
            name_servers: vec!["127.0.0.1:1".into()],
            ..target.clone()
        };
        let e = runtime.brokers(&nowhere).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvokeError, "{e:?}");
        assert!(e.detail.contains("not ready"), "{e:?}");

        // One message by unique key and by offset id; bare topic; nothing in another topic.
        for id in [&sent[3].uniq, &sent[3].offset_id] {
            let found = runtime
                .find(&target, &brokers, TOPIC, id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{id} found"));
            let v = view(&target, &found.message, &mut BodyBudget::page());
            assert_eq!((v.body.as_str(), v.body_encoding), ("m-3", "text"));
            assert_eq!(v.topic, TOPIC, "bare, never {INSTANCE}%{TOPIC}");
            assert_eq!(v.msg_id, sent[3].uniq);
            assert_eq!(
                v.offset_msg_id.to_uppercase(),
                sent[3].offset_id.to_uppercase()
            );
        }
        for (topic, id) in [
            ("OtherTopic", sent[3].uniq.as_str()),
            (TOPIC, "0A0000000000000000000000"),
        ] {
            let none = runtime.find(&target, &brokers, topic, id).await.unwrap();
            assert!(none.is_none(), "{topic}/{id} names nothing");
        }
        let big_found = runtime
            .find(&target, &brokers, TOPIC, &big_sent.uniq)
            .await
            .unwrap()
            .expect("the big message");
        let v = view(&target, &big_found.message, &mut BodyBudget::page());
        assert_eq!(v.body, big, "inflated when stored compressed");
        assert_eq!(v.body_encoding, "text");
        let mut small = BodyBudget::new(100);
        let cut = view(&target, &big_found.message, &mut small);
        assert!(cut.body_truncated && cut.body.len() == 100);
        let bin = runtime
            .find(&target, &brokers, TOPIC, &binary_sent.uniq)
            .await
            .unwrap()
            .expect("the binary message");
        let v = view(&target, &bin.message, &mut BodyBudget::page());
        assert_eq!((v.body.as_str(), v.body_encoding), ("/wD+", "base64"));

        // By key: every message with the key, newest first; no key, empty.
        let even = runtime.by_key(&brokers, TOPIC, "k-even").await.unwrap();
        let bodies: Vec<String> = even
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        assert_eq!(bodies, vec!["m-8", "m-6", "m-4", "m-2", "m-0"]);
        assert!(
            runtime
                .by_key(&brokers, TOPIC, "k-none")
                .await
                .unwrap()
                .is_empty()
        );

        // A time range's snapshot pages through exactly the range, stably.
        let snap = runtime.snapshot(&brokers, TOPIC, t0, t1).await.unwrap();
        assert_eq!(snap.total(), 12, "the ten, the big and the binary one");
        let first = pages(&runtime, &brokers, TOPIC, &snap, 5).await;
        assert_eq!(first.len(), 3);
        let all: Vec<&String> = first.iter().flatten().collect();
        assert_eq!(all.len(), 12, "no message twice: {all:?}");
        let expected: BTreeSet<String> = (0..10).map(|i| format!("m-{i}")).collect();
        let got: BTreeSet<String> = all
            .iter()
            .filter(|b| b.starts_with("m-"))
            .map(|b| b.to_string())
            .collect();
        assert_eq!(got, expected);
        send(&producer, b"later", &[]).await;
        assert_eq!(
            pages(&runtime, &brokers, TOPIC, &snap, 5).await,
            first,
            "later messages do not move the pages"
        );

        // A consumer reads everything: progress, clients, running info, span, trace, minutes.
        let log = Log::default();
        let mut reader = consumer(rt.clone(), &namesrv, READER, &log).await;
        eventually("everything consumed", Duration::from_secs(60), || {
            log.len() >= 14
        })
        .await;
        let online = runtime.online(&brokers, READER).await.unwrap();
        assert!(online.online());
        assert_eq!(online.model(), "CLUSTERING");
        let conns = online.connections();
        assert_eq!(conns.len(), 1, "{conns:?}");
        assert_eq!(conns[0].remote_ip, "127.0.0.1");
        let mut progress = runtime
            .progress(&target, &brokers, READER, None)
            .await
            .unwrap();
        for _ in 0..100 {
            if progress.total_diff() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            progress = runtime
                .progress(&target, &brokers, READER, None)
                .await
                .unwrap();
        }
        assert_eq!(progress.total_diff(), 0, "{progress:?}");
        let detail = progress.detail();
        assert_eq!(detail.len(), 1, "{detail:?}");
        assert_eq!(detail[0].topic, TOPIC);
        assert!(progress.last_timestamp() >= t0);
        let (client_id, (_, b)) = online.clients.iter().next().unwrap();
        let info = runtime
            .running_info(&brokers[*b], READER, client_id, true)
            .await
            .expect("the client reports its running info");
        assert!(
            info.subscription_set
                .iter()
                .any(|s| target.bare(&s.topic) == TOPIC),
            "{info:?}"
        );
        let span = runtime.time_span(&brokers, TOPIC, READER).await.unwrap();
        assert!(
            span.min_time_stamp > 0 && span.min_time_stamp <= t0,
            "{span:?}"
        );
        assert!(span.max_time_stamp > t1, "the later message: {span:?}");
        assert!(span.consume_time_stamp >= span.max_time_stamp, "{span:?}");
        assert!(
            runtime
                .consumers_of(&target, &brokers, TOPIC)
                .await
                .unwrap()
                .contains(READER)
        );
        let found = runtime
            .find(&target, &brokers, TOPIC, &sent[0].uniq)
            .await
            .unwrap()
            .unwrap();
        let tracks = runtime.trace(&target, &brokers, &found).await.unwrap();
        let mine = tracks
            .iter()
            .find(|t| t.consumer_group == READER)
            .unwrap_or_else(|| panic!("{READER} in {tracks:?}"));
        assert_eq!(
            serde_json::to_value(mine.track_type).unwrap(),
            serde_json::json!("CONSUMED")
        );
        let put = runtime
            .minutes(&brokers, TOPIC, None, now_ms() - 3_600_000, now_ms())
            .await
            .unwrap();
        assert_eq!(
            put.values().sum::<u64>(),
            14,
            "warm-up, 12 and the later one"
        );
        let taken = runtime
            .minutes(
                &brokers,
                TOPIC,
                Some(READER),
                now_ms() - 3_600_000,
                now_ms(),
            )
            .await
            .unwrap();
        assert_eq!(taken.values().sum::<u64>(), log.len() as u64);
        reader.shutdown().await;

        // Reset to t0: the twelve and the later one wait again; skip-all: nothing waits.
        runtime
            .reset_offset(&brokers, TOPIC, READER, Some(t0))
            .await
            .unwrap();
        let waiting = runtime
            .progress(&target, &brokers, READER, None)
            .await
            .unwrap();
        assert_eq!(waiting.total_diff(), 13, "{waiting:?}");
        runtime
            .reset_offset(&brokers, TOPIC, READER, None)
            .await
            .unwrap();
        let none = runtime
            .progress(&target, &brokers, READER, None)
            .await
            .unwrap();
        assert_eq!(none.total_diff(), 0, "{none:?}");
        let e = runtime
            .reset_offset(&brokers, "NoSuchTopic", READER, None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvokeError);
        assert!(
            !runtime.online(&brokers, READER).await.unwrap().online(),
            "offline is no error"
        );

        // Dead letters: a failing message lands in the DLQ, is found there, paged, resent.
        let dead_log = Log::default();
        let mut dead = consumer(rt.clone(), &namesrv, DEAD, &dead_log).await;
        let poison = send(&producer, b"poison-1", &[]).await;
        eventually("the poison delivered", Duration::from_secs(60), || {
            dead_log.count("poison-1") >= 1
        })
        .await;
        let dlq = dlq_topic(DEAD);
        let mut in_dlq = None;
        for _ in 0..100 {
            in_dlq = runtime
                .find(&target, &brokers, &dlq, &poison.uniq)
                .await
                .unwrap();
            if in_dlq.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let in_dlq = in_dlq.expect("the poison in the DLQ");
        let v = view(&target, &in_dlq.message, &mut BodyBudget::page());
        assert_eq!(v.topic, dlq, "bare: %DLQ%{DEAD}");
        let dlq_snap = runtime
            .snapshot(&brokers, &dlq, t0, now_ms())
            .await
            .unwrap();
        assert_eq!(dlq_snap.total(), 1);
        assert_eq!(
            pages(&runtime, &brokers, &dlq, &dlq_snap, 5).await,
            vec![vec!["poison-1".to_owned()]]
        );
        runtime
            .resend_dlq(&brokers, DEAD, &poison.uniq)
            .await
            .expect("resent");
        eventually(
            "the poison delivered again",
            Duration::from_secs(60),
            || dead_log.count("poison-1") >= 2,
        )
        .await;
        let e = runtime
            .resend_dlq(&brokers, DEAD, "0A0000000000000000000000")
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NoMessage, "{e:?}");
        dead.shutdown().await;
        producer.shutdown().await;
    });
}

const ACCOUNTS: &str = r#"{"accounts": [
  {"accessKey": "tenant", "secretKey": "tenant-secret", "topicPerms": ["SignedTopic=PUB|SUB"]},
  {"accessKey": "console", "secretKey": "console-secret", "admin": true}]}"#;

#[test]
fn under_acl_the_runtime_reads_with_its_key_and_unsigned_calls_are_refused() {
    let dir = TempDir::new("console-runtime-acl");
    let broker = support::standalone_with_acl(&dir.0, ACCOUNTS, &[]);
    let namesrv = broker.namesrv();
    Client::new().run(|_| async move {
        let runtime = Runtime::new(Duration::from_secs(5));
        let signed = Target {
            instance_id: "MQ_INST_acl".into(),
            name_servers: vec![namesrv.clone()],
            credentials: Some(mq_broker::client::Credentials::new(
                "console",
                "console-secret",
            )),
            names: Namespace::new(None),
        };
        let brokers = runtime.brokers(&signed).await.expect("brokers listed");
        brokers[0]
            .client
            .create_topic(&mq_broker::broker::topics::topic_config("SignedTopic", 2))
            .await
            .expect("an admin key creates the topic");
        let snap = runtime
            .snapshot(&brokers, "SignedTopic", 0, now_ms())
            .await
            .unwrap();
        assert_eq!(snap.total(), 0, "nothing sent: an empty result, no error");
        assert!(
            runtime
                .by_key(&brokers, "SignedTopic", "k")
                .await
                .unwrap()
                .is_empty()
        );
        runtime
            .minutes(&brokers, "SignedTopic", None, 0, now_ms())
            .await
            .expect("signed statistics");

        // The same runtime unsigned: its own connections, refused by the broker.
        let unsigned = Target {
            credentials: None,
            ..signed.clone()
        };
        let e = match runtime.brokers(&unsigned).await {
            Err(e) => e,
            Ok(b) => runtime
                .snapshot(&b, "SignedTopic", 0, now_ms())
                .await
                .expect_err("an unsigned read is refused"),
        };
        assert_eq!(e.code, ErrorCode::InvokeError, "{e:?}");
    });
}

//! Faults with the real third-party client: garbage on the wire, and a broker killed
//! with SIGKILL that comes back with every message and the group's committed offsets.

mod support;

use rocketmq_client_rust::{DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Client, TempDir, eventually};

type Bodies = Arc<Mutex<Vec<String>>>;

/// Produces `bodies` to `topic` and consumes them back with a fresh consumer of `group`;
/// returns what the consumer got once it has them all (or panics after the deadline).
async fn round_trip(
    rt: Arc<rocketmq_client_rust::ClientRuntime>,
    namesrv: &str,
    topic: &str,
    group: &str,
    bodies: &[String],
    expect: usize,
) -> Vec<String> {
    let mut producer = DefaultMQProducer::builder(rt.clone())
        .client_config(support::client_config(namesrv, &format!("p-{group}")))
        .producer_group("GID_faults_producer")
        .build();
    producer.start().await.expect("producer starts");
    for body in bodies {
        producer
            .send(support::message(topic, body))
            .await
            .expect("send")
            .expect("send result");
    }
    support::wait_for_route(namesrv, topic).await;
    let got = Bodies::default();
    let mut consumer = DefaultMQPushConsumer::builder(rt)
        .client_config(support::client_config(namesrv, &format!("c-{group}")))
        .consumer_group(group.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .consume_thread_min(4)
        .consume_thread_max(4)
        .build();
    consumer.subscribe(topic, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(support::Collect(got.clone()));
    consumer.start().await.expect("consumer starts");
    eventually("every message", Duration::from_secs(60), || {
        got.lock().unwrap().len() >= expect
    })
    .await;
    // A clean consumer shutdown commits its offsets to the broker.
    consumer.shutdown().await;
    producer.shutdown().await;
    got.lock().unwrap().clone()
}

/// Writes `bytes` on a fresh connection and reports whether the server closed it.
fn send_raw(addr: &str, bytes: &[u8]) -> bool {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = conn.write_all(bytes);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 64];
    matches!(conn.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn garbage_and_truncated_frames_do_not_stop_the_broker() {
    let dir = TempDir::new("garbage");
    let broker = support::standalone(&dir.0, &[]);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut garbage = vec![0u8; 4096];
    for b in garbage.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    // A valid-looking length with a header length far past the frame's end.
    let lying_header = [
        0, 0, 0, 12, 0, 0xff, 0xff, 0xff, b'{', b'}', 0, 0, 0, 0, 0, 0,
    ];
    // A frame announcing 1 KiB and stopping after 10 bytes.
    let truncated = [0, 0, 4, 0, 0, 0, 0, 2, b'{', b'}'];
    let oversized = [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    for addr in [broker.broker(), broker.namesrv()] {
        for bytes in [&garbage[..], &lying_header, &truncated, &oversized] {
            assert!(
                send_raw(&addr, bytes),
                "{addr} closes a connection that sent garbage"
            );
        }
    }
    let namesrv = broker.namesrv();
    let bodies: Vec<String> = (0..5).map(|i| format!("after-garbage-{i}")).collect();
    let got = Client::new().run(|rt| async move {
        round_trip(rt, &namesrv, "GarbageTopic", "GID_garbage", &bodies, 5).await
    });
    assert_eq!(
        got.len(),
        5,
        "a real client works after the garbage: {got:?}"
    );
}

/// Waits until the broker has written the group's offsets on `topic` (summing its queues
/// to `total`) to its offsets file: a SIGKILL after that loses none of them.
fn wait_for_persisted_offsets(store: &std::path::Path, group: &str, topic: &str, total: i64) {
    let path = store.join("config/consumerOffset.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let persisted = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["offsetTable"][format!("{topic}@{group}")]
                    .as_object()
                    .map(|q| q.values().filter_map(|o| o.as_i64()).sum::<i64>())
            });
        if persisted == Some(total) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "offsets of {group} not persisted within 30 s: {persisted:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_broker_keeps_every_message_and_the_groups_committed_offsets() {
    let dir = TempDir::new("kill9");
    let broker = support::standalone(&dir.0, &[]);
    let namesrv = broker.namesrv();
    let first: Vec<String> = (0..60).map(|i| format!("before-{i}")).collect();
    let got = Client::new().run(|rt| {
        let first = first.clone();
        async move { round_trip(rt, &namesrv, "CrashTopic", "GID_crash", &first, 60).await }
    });
    assert_eq!(got.len(), 60);
    wait_for_persisted_offsets(&dir.0, "GID_crash", "CrashTopic", 60);
    broker.kill9();

    let broker = support::standalone(&dir.0, &[]);
    let namesrv = broker.namesrv();
    let second: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    let namesrv2 = namesrv.clone();
    let resumed = Client::new().run(|rt| {
        let second = second.clone();
        async move { round_trip(rt, &namesrv2, "CrashTopic", "GID_crash", &second, 20).await }
    });
    let mut resumed_sorted = resumed.clone();
    resumed_sorted.sort();
    let mut expected = second.clone();
    expected.sort();
    assert_eq!(
        resumed_sorted, expected,
        "the group resumes at its committed offset: only the new messages"
    );

    // Nothing acknowledged before the crash is gone: a new group reads everything.
    let everything = Client::new().run(|rt| async move {
        round_trip(rt, &namesrv, "CrashTopic", "GID_crash_audit", &[], 80).await
    });
    for body in first.iter().chain(&second) {
        assert!(everything.contains(body), "{body} survived the SIGKILL");
    }
}

//! Records the client-traffic part of the fuzz seed corpus (`fuzz/corpus/`): the real
//! third-party client (`rocketmq-client-rust`) talks to an `mq-broker` through a TCP proxy
//! that cuts both directions into frames. Run by hand when the protocol changes:
//!
//! ```text
//! cargo build -p mq-broker --bins
//! cargo test -p mq-testbed --test fuzz_capture -- --ignored --nocapture
//! ```
//!
//! It rewrites the `cap-*` files of `frame/`, `header/`, `batch/` and `fastjson/`, a few
//! per request code, so the corpus stays small. Hand-made seeds are written by
//! `broker/tests/fuzz_corpus.rs` (`write_hand_made_seeds`).

mod support;

use rocketmq_client_rust::{
    ClientResult, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, DefaultMQProducer,
    DefaultMQPushConsumer, MQPushConsumer, MessageListenerConcurrently,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::{Client, TempDir, eventually};

/// One captured frame: whether the client sent it, and its bytes (length prefix included).
type Frame = (bool, Vec<u8>);

/// A loopback TCP proxy to an upstream set once it is known, recording every frame.
struct Proxy {
    addr: String,
    upstream: Arc<OnceLock<String>>,
}

impl Proxy {
    fn start(frames: Arc<Mutex<Vec<Frame>>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let addr = listener.local_addr().expect("bound").to_string();
        let upstream = Arc::new(OnceLock::<String>::new());
        let target = upstream.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let target = target.wait().clone();
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                for (from, to, from_client) in [
                    (client.try_clone(), server.try_clone(), true),
                    (server.try_clone(), client.try_clone(), false),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let frames = frames.clone();
                    std::thread::spawn(move || pump(from, to, from_client, &frames));
                }
            }
        });
        Self { addr, upstream }
    }
}

/// Copies `from` to `to`, cutting what passes into frames.
fn pump(mut from: TcpStream, mut to: TcpStream, from_client: bool, frames: &Mutex<Vec<Frame>>) {
    let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
    while let Ok(n) = from.read(&mut chunk) {
        if n == 0 || to.write_all(&chunk[..n]).is_err() {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(prefix) = buf.first_chunk::<4>() {
            let total = 4 + usize::try_from(i32::from_be_bytes(*prefix)).unwrap_or(0);
            if buf.len() < total {
                break;
            }
            let frame: Vec<u8> = buf.drain(..total).collect();
            frames.lock().unwrap().push((from_client, frame));
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

struct Ack(Arc<AtomicUsize>);

impl MessageListenerConcurrently for Ack {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        self.0.fetch_add(msgs.len(), Ordering::SeqCst);
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

fn message(topic: &str, tag: &str, i: usize) -> Message {
    Message::builder()
        .topic(topic)
        .tags(tag)
        .key(format!("order-{i}"))
        .body_slice(format!("{{\"order\":{i},\"note\":\"héllo\"}}").as_bytes())
        .build_unchecked()
}

/// Sends single, oneway and batch messages and consumes them with a tag filter.
fn traffic(namesrv: &str, topic: &str) {
    let consumed = Arc::new(AtomicUsize::new(0));
    Client::new().run(|rt| {
        let consumed = consumed.clone();
        async move {
            let mut producer = DefaultMQProducer::builder(rt.clone())
                .client_config(support::client_config(namesrv, "capture-producer"))
                .producer_group("GID_capture_producer".to_string())
                .build();
            producer.start().await.expect("producer starts");
            producer
                .send(message(topic, "TagA", 0))
                .await
                .expect("send")
                .expect("a send result");
            let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
                .client_config(support::client_config(namesrv, "capture-consumer"))
                .consumer_group("GID_capture".to_string())
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .consume_thread_min(4)
                .consume_thread_max(4)
                .build();
            consumer
                .subscribe(topic, "TagA || TagB")
                .await
                .expect("subscribe");
            consumer.register_message_listener_concurrently(Ack(consumed.clone()));
            consumer.start().await.expect("consumer starts");
            for i in 1..4 {
                producer
                    .send(message(topic, "TagB", i))
                    .await
                    .expect("send")
                    .expect("a send result");
            }
            producer
                .send_oneway(message(topic, "TagC", 4))
                .await
                .expect("oneway");
            let batch: Vec<Message> = (5..9).map(|i| message(topic, "TagA", i)).collect();
            producer.send_batch(batch).await.expect("batch");
            eventually("TagA/TagB messages", Duration::from_secs(60), || {
                consumed.load(Ordering::SeqCst) >= 8
            })
            .await;
            consumer.shutdown().await;
            producer.shutdown().await;
        }
    });
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

/// Replaces the `cap-*` files of `fuzz/corpus/<target>/` with `seeds`.
fn write_seeds(target: &str, seeds: &BTreeMap<String, Vec<u8>>) {
    let dir = corpus().join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for entry in std::fs::read_dir(&dir).expect("corpus dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("cap-") {
            std::fs::remove_file(entry.path()).expect("old seed removed");
        }
    }
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).expect("seed written");
    }
    println!("{target}: {} captured seeds", seeds.len());
}

/// One client session, in the serialize type `ROCKETMQ_SERIALIZE_TYPE` picks (the client
/// fixes it once per process): its frames go to `MQ_CAPTURE_FILE`, each as a direction
/// byte (1 = from the client) and the frame. Does nothing unless run by
/// `capture_client_frames`.
#[test]
#[ignore = "a child process of capture_client_frames"]
fn capture_one_session() {
    let Ok(out) = std::env::var("MQ_CAPTURE_FILE") else {
        return;
    };
    let frames = Arc::new(Mutex::new(Vec::new()));
    let (ns_proxy, broker_proxy) = (Proxy::start(frames.clone()), Proxy::start(frames.clone()));
    let dir = TempDir::new("fuzz-capture");
    let advertise = ["--advertise-addr", broker_proxy.addr.as_str()];
    let broker = support::standalone(&dir.0, &advertise);
    ns_proxy.upstream.set(broker.namesrv()).expect("set once");
    broker_proxy
        .upstream
        .set(broker.broker())
        .expect("set once");
    let topic = std::env::var("MQ_CAPTURE_TOPIC").unwrap_or_else(|_| "Capture".into());
    traffic(&ns_proxy.addr, &topic);
    drop(broker);
    let mut bytes = Vec::new();
    for (from_client, frame) in frames.lock().unwrap().iter() {
        bytes.push(u8::from(*from_client));
        bytes.extend_from_slice(frame);
    }
    std::fs::write(out, bytes).expect("capture written");
}

#[test]
#[ignore = "writes fuzz/corpus from live client traffic; run by hand (see the module doc)"]
fn capture_client_frames() {
    let dir = TempDir::new("fuzz-capture-out");
    let mut frames: Vec<Frame> = Vec::new();
    for (serialize, topic) in [(None, "CaptureJson"), (Some("ROCKETMQ"), "CaptureBinary")] {
        let out = dir.0.join(topic);
        let mut child = std::process::Command::new(std::env::current_exe().expect("own path"));
        child
            .args(["--ignored", "--exact", "capture_one_session", "--nocapture"])
            .env("MQ_CAPTURE_FILE", &out)
            .env("MQ_CAPTURE_TOPIC", topic)
            .env_remove("ROCKETMQ_SERIALIZE_TYPE");
        if let Some(kind) = serialize {
            child.env("ROCKETMQ_SERIALIZE_TYPE", kind);
        }
        assert!(
            child.status().expect("child runs").success(),
            "{topic} session"
        );
        let bytes = std::fs::read(&out).expect("capture file");
        let mut rest = bytes.as_slice();
        while let Some((&dir, tail)) = rest.split_first() {
            let len = 4 + i32::from_be_bytes(*tail.first_chunk::<4>().expect("prefix")) as usize;
            frames.push((dir == 1, tail[..len].to_vec()));
            rest = &tail[len..];
        }
    }
    let (mut frame, mut header, mut batch, mut json) = Default::default();
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for (from_client, bytes) in frames.iter() {
        let Some(&[kind, h1, h2, h3]) = bytes.get(4..8).map(|w| <&[u8; 4]>::try_from(w).unwrap())
        else {
            continue;
        };
        let header_len = usize::from(h1) << 16 | usize::from(h2) << 8 | usize::from(h3);
        let Some(head) = bytes.get(8..8 + header_len) else {
            continue;
        };
        let body = &bytes[8 + header_len..];
        let cmd = mq_broker::remoting::frame::decode(&mut bytes.as_slice().into(), usize::MAX)
            .expect("the client's frames decode")
            .expect("whole frames");
        let dir = if *from_client { "req" } else { "resp" };
        let key = format!("{dir}-{}-{kind}", cmd.code);
        let n = per_key.entry(key.clone()).or_default();
        *n += 1;
        // Requests: two of each code and encoding; responses: one.
        if *n > if *from_client { 2 } else { 1 } {
            continue;
        }
        let name = format!("cap-{key}-{n}");
        insert(&mut frame, &name, bytes.clone());
        if *from_client {
            insert(&mut header, &name, [&[kind & 1][..], head].concat());
        }
        if *from_client && cmd.code == 320 && !body.is_empty() {
            insert(&mut batch, &name, body.to_vec());
        }
        if body.first() == Some(&b'{') {
            insert(&mut json, &name, body.to_vec());
        }
    }
    write_seeds("frame", &frame);
    write_seeds("header", &header);
    write_seeds("batch", &batch);
    write_seeds("fastjson", &json);
    assert!(!batch.is_empty(), "a batch send was captured");
}

fn insert(seeds: &mut BTreeMap<String, Vec<u8>>, name: &str, bytes: Vec<u8>) {
    seeds.insert(name.to_owned(), bytes);
}

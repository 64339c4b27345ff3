//! Operations of the real `mq-broker` binary: the HTTP port (`/healthz`, `/metrics`),
//! the config file re-read on change, and the clean stop on SIGTERM.
//!
//! Every process listens on ephemeral loopback ports and prints one JSON ready line;
//! waits are bounded polls of an observable condition, never fixed sleeps.

#[path = "common/process.rs"]
mod process;
use mq_broker::net::NoRequests;
use mq_broker::net::{Channel, connect};
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use process::{BrokerProcess as Proc, TempDir};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an asynchronous effect (registration, a file change) may take to show.
const EFFECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one remoting request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary under test.
fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mq-broker"))
}

/// `GET path` on the ops port: status and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("ops port accepts");
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request written");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of an unlabelled (or exactly labelled) sample in a metrics page.
fn metric(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `check` until it gives a value, at most `bound`.
fn wait_for<T>(what: &str, bound: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `/healthz` answers 200.
fn wait_ready(http: &str) {
    wait_for("/healthz 200", EFFECT_TIMEOUT, || {
        (http_get(http, "/healthz").0 == 200).then_some(())
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn dial(addr: &str) -> Channel {
    connect(addr, REQUEST_TIMEOUT, Arc::new(NoRequests))
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

async fn call(ch: &Channel, req: RemotingCommand) -> RemotingCommand {
    ch.request(req, REQUEST_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("request to {}: {e}", ch.peer_addr()))
}

/// SEND_MESSAGE_V2 with the fields a Java producer sends.
fn send_request(topic: &str, queue: i32, body: &[u8]) -> RemotingCommand {
    RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
        .with_ext("producerGroup", "ops_producer")
        .with_ext("topic", topic)
        .with_ext("defaultTopic", "TBW102")
        .with_ext("defaultTopicQueueNums", "4")
        .with_ext("queueId", queue.to_string())
        .with_ext("sysFlag", "0")
        .with_ext("bornTimestamp", "1700000000000")
        .with_ext("flag", "0")
        .with_ext("properties", "TAGS\u{1}ops\u{2}WAIT\u{1}true\u{2}")
        .with_body(body.to_vec())
}

async fn send(ch: &Channel, topic: &str, queue: i32, body: &[u8]) {
    let answer = call(ch, send_request(topic, queue, body)).await;
    assert_eq!(
        answer.code,
        response_code::SUCCESS,
        "send refused: {:?}",
        answer.remark
    );
}

fn queue_request(code: i32, topic: &str, queue: i32) -> RemotingCommand {
    RemotingCommand::new_request(code)
        .with_ext("topic", topic)
        .with_ext("queueId", queue.to_string())
}

fn offset_of(answer: &RemotingCommand) -> i64 {
    assert_eq!(answer.code, response_code::SUCCESS, "{:?}", answer.remark);
    answer
        .ext("offset")
        .and_then(|o| o.parse().ok())
        .expect("an offset in the answer")
}

fn pull_request(
    group: &str,
    topic: &str,
    queue: i32,
    offset: i64,
    hold_ms: i64,
) -> RemotingCommand {
    // 0x4: the subscription is in the header; 0x2: hold the pull when nothing is new.
    let sys_flag = if hold_ms > 0 { 0x4 | 0x2 } else { 0x4 };
    RemotingCommand::new_request(request_code::PULL_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue.to_string())
        .with_ext("queueOffset", offset.to_string())
        .with_ext("maxMsgNums", "32")
        .with_ext("sysFlag", sys_flag.to_string())
        .with_ext("commitOffset", "0")
        .with_ext("suspendTimeoutMillis", hold_ms.to_string())
        .with_ext("subscription", "*")
        .with_ext("subVersion", "0")
        .with_ext("expressionType", "TAG")
}

/// Stored messages in a pull body (each led by its i32 total size).
fn count_messages(mut body: &[u8]) -> usize {
    let mut n = 0;
    while let Some(size) = body
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .and_then(|s| usize::try_from(s).ok())
        .filter(|s| *s >= 4 && *s <= body.len())
    {
        body = &body[size..];
        n += 1;
    }
    n
}

/// The GET_BROKER_CLUSTER_INFO body of a name server, as text.
async fn cluster_info(namesrv: &str) -> String {
    let ch = dial(namesrv).await;
    let answer = call(
        &ch,
        RemotingCommand::new_request(request_code::GET_BROKER_CLUSTER_INFO),
    )
    .await;
    assert_eq!(answer.code, response_code::SUCCESS);
    String::from_utf8_lossy(&answer.body.unwrap_or_default()).into_owned()
}

#[test]
fn healthz_turns_ready_once_registered_and_metrics_count_sends() {
    let dir = TempDir::new("metrics");
    let broker = Proc::standalone(bin(), &dir.0.join("store"), &[]);
    let http = broker.addr("http");
    wait_ready(&http);
    let (_, page) = http_get(&http, "/metrics");
    assert_eq!(metric(&page, "mq_broker_registered"), Some(1), "{page}");
    assert_eq!(metric(&page, "mq_ready"), Some(1));
    assert_eq!(metric(&page, "mq_broker_messages_in_total"), Some(0));

    let body = b"0123456789abcdef";
    runtime().block_on(async {
        let ch = dial(&broker.addr("broker")).await;
        for i in 0..5 {
            send(&ch, "OpsMetrics", i % 2, body).await;
        }
        let pulled = call(&ch, pull_request("ops_group", "OpsMetrics", 0, 0, 0)).await;
        assert_eq!(pulled.code, response_code::SUCCESS);
        assert_eq!(count_messages(&pulled.body.unwrap_or_default()), 3);
    });

    let (status, page) = http_get(&http, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&page, "mq_broker_messages_in_total"),
        Some(5),
        "{page}"
    );
    assert_eq!(
        metric(&page, "mq_broker_bytes_in_total"),
        Some(5 * body.len() as u64)
    );
    assert_eq!(metric(&page, "mq_broker_messages_out_total"), Some(3));
    assert!(metric(&page, "mq_broker_bytes_out_total").is_some_and(|b| b > 3 * body.len() as u64));
    assert!(metric(&page, "mq_broker_store_size_bytes").is_some_and(|b| b > 5 * body.len() as u64));
    assert!(
        metric(&page, "mq_remoting_connections_total{server=\"broker\"}").is_some_and(|n| n >= 1),
        "{page}"
    );
    assert_eq!(
        metric(&page, "mq_remoting_bad_frames_total{server=\"broker\"}"),
        Some(0)
    );
    assert_eq!(metric(&page, "mq_broker_send_busy_total"), Some(0));
    assert!(metric(&page, "process_resident_memory_bytes").is_some_and(|b| b > 1 << 20));
    assert!(page.contains("mq_info{mode=\"standalone\""));
}

#[test]
fn a_broker_without_a_reachable_name_server_is_not_ready() {
    let dir = TempDir::new("unready");
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let store = dir.0.join("store");
    let broker = Proc::start(
        bin(),
        &[
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--no-vip",
            "--http-listen",
            "127.0.0.1:0",
            "--namesrv-addr",
            &dead,
            "--store-dir",
            store.to_str().expect("utf-8"),
        ],
    );
    let http = broker.addr("http");
    let (status, body) = http_get(&http, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not registered"), "{body}");
    assert_eq!(http_get(&http, "/livez").0, 200);
    let (_, page) = http_get(&http, "/metrics");
    assert_eq!(metric(&page, "mq_broker_registered"), Some(0), "{page}");
    assert!(page.contains("mq_info{mode=\"broker\""));
}

#[test]
fn sigterm_answers_held_pulls_exits_zero_and_a_restart_keeps_messages_and_offsets() {
    let dir = TempDir::new("sigterm");
    let store = dir.0.join("store");
    let topic = "OpsDurable";
    let group = "ops_durable_group";
    let broker = Proc::standalone(bin(), &store, &[]);
    let rt = runtime();
    let held = rt.block_on(async {
        let ch = dial(&broker.addr("broker")).await;
        for i in 0..10u8 {
            send(&ch, topic, 0, &[b'm', i]).await;
        }
        let commit = RemotingCommand::new_request(request_code::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", "0")
            .with_ext("commitOffset", "7");
        assert_eq!(call(&ch, commit).await.code, response_code::SUCCESS);
        // A long poll past the end, held by the broker when SIGTERM comes.
        let held = tokio::spawn({
            let ch = ch.clone();
            async move {
                ch.request(
                    pull_request(group, topic, 0, 10, 60_000),
                    Duration::from_secs(60),
                )
                .await
            }
        });
        let http = broker.addr("http");
        // The pull is in flight once the broker counts it (this connection's only request).
        tokio::task::spawn_blocking(move || {
            wait_for("the held pull in flight", EFFECT_TIMEOUT, || {
                let (_, page) = http_get(&http, "/metrics");
                (metric(&page, "mq_broker_requests_in_flight")? >= 1).then_some(())
            })
        })
        .await
        .expect("poll ran");
        (ch, held)
    });
    let (status, took) = broker.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}");
    // The drain bound is 10 s: a stop held up by the 60 s pull would take that long.
    assert!(took < Duration::from_secs(8), "the stop took {took:?}");
    let (_ch, held) = held;
    let answer = rt
        .block_on(held)
        .expect("task ran")
        .expect("the held pull was answered before the broker exited");
    assert_eq!(
        answer.code,
        response_code::PULL_NOT_FOUND,
        "{:?}",
        answer.remark
    );

    let broker = Proc::standalone(bin(), &store, &[]);
    rt.block_on(async {
        let ch = dial(&broker.addr("broker")).await;
        let max = call(&ch, queue_request(request_code::GET_MAX_OFFSET, topic, 0)).await;
        assert_eq!(offset_of(&max), 10);
        let query = RemotingCommand::new_request(request_code::QUERY_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", "0");
        assert_eq!(
            offset_of(&call(&ch, query).await),
            7,
            "the committed offset survived"
        );
        let pulled = call(&ch, pull_request(group, topic, 0, 7, 0)).await;
        assert_eq!(pulled.code, response_code::SUCCESS, "{:?}", pulled.remark);
        let body = pulled.body.unwrap_or_default();
        assert_eq!(count_messages(&body), 3);
        assert!(
            body.windows(2).any(|w| w == [b'm', 9]),
            "the last message is there"
        );
    });
}

#[test]
fn a_config_file_change_moves_registration_to_another_name_server() {
    let dir = TempDir::new("config");
    // Laid out the way the kubelet mounts a ConfigMap: broker.conf → ..data/broker.conf,
    // ..data → ..v1; an update swaps ..data to a new directory.
    let conf = dir.0.join("conf");
    std::fs::create_dir_all(conf.join("..v1")).expect("dir");
    std::fs::write(
        conf.join("..v1/broker.conf"),
        "# no namesrvAddr yet\nbrokerName=broker-conf\n",
    )
    .expect("write");
    std::os::unix::fs::symlink("..v1", conf.join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/broker.conf", conf.join("broker.conf")).expect("link");
    let conf_file = conf.join("broker.conf");

    let broker = Proc::standalone(
        bin(),
        &dir.0.join("store"),
        &["--config", conf_file.to_str().expect("utf-8")],
    );
    wait_ready(&broker.addr("http"));
    let second = Proc::start(
        bin(),
        &[
            "namesrv",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
    );
    let rt = runtime();
    let embedded = broker.addr("namesrv");
    assert!(
        rt.block_on(cluster_info(&embedded))
            .contains("\"broker-conf\""),
        "brokerName from the file"
    );
    assert!(
        !rt.block_on(cluster_info(&second.addr("namesrv")))
            .contains("broker-conf")
    );

    std::fs::create_dir_all(conf.join("..v2")).expect("dir");
    std::fs::write(
        conf.join("..v2/broker.conf"),
        format!(
            "brokerName=broker-conf\nnamesrvAddr={}\n",
            second.addr("namesrv")
        ),
    )
    .expect("write");
    std::os::unix::fs::symlink("..v2", conf.join("..data_tmp")).expect("link");
    std::fs::rename(conf.join("..data_tmp"), conf.join("..data")).expect("swap");

    wait_for(
        "registration with the second name server",
        EFFECT_TIMEOUT,
        || {
            rt.block_on(cluster_info(&second.addr("namesrv")))
                .contains("\"broker-conf\"")
                .then_some(())
        },
    );
    // (The embedded name server forgets the broker when it expires, as Java's does.)
    assert_eq!(http_get(&broker.addr("http"), "/healthz").0, 200);
    let (_, page) = http_get(&second.addr("http"), "/metrics");
    assert_eq!(metric(&page, "mq_namesrv_brokers"), Some(1), "{page}");
    assert!(page.contains("mq_info{mode=\"namesrv\""));
}

#[test]
fn sends_that_waited_past_the_bound_are_answered_system_busy() {
    let dir = TempDir::new("busy");
    // A bound of 0: every send has waited "too long", so each is refused, not stored.
    let broker = Proc::standalone(bin(), &dir.0.join("store"), &["--max-send-wait-ms", "0"]);
    let http = broker.addr("http");
    runtime().block_on(async {
        let ch = dial(&broker.addr("broker")).await;
        for _ in 0..3 {
            let answer = call(&ch, send_request("OpsBusy", 0, b"x")).await;
            assert_eq!(answer.code, response_code::SYSTEM_BUSY);
            let remark = answer.remark.unwrap_or_default();
            assert!(
                remark.starts_with("[TIMEOUT_CLEAN_QUEUE]broker busy"),
                "{remark}"
            );
        }
        let max = call(
            &ch,
            queue_request(request_code::GET_MAX_OFFSET, "OpsBusy", 0),
        )
        .await;
        assert_eq!(offset_of(&max), 0, "nothing was stored");
    });
    let (_, page) = http_get(&http, "/metrics");
    assert_eq!(
        metric(&page, "mq_broker_send_busy_total"),
        Some(3),
        "{page}"
    );
    assert_eq!(metric(&page, "mq_broker_messages_in_total"), Some(0));
}

//! A hostile network against a real broker process: 2,000 idle connections from one
//! address against a per-IP limit of 1,000, while the real third-party client
//! (`rocketmq-client-rust`) from another address produces and consumes; the excess is
//! refused at once and the idle ones are closed after the (test-sized) idle timeout. A
//! peer that sends pulls and never reads their answers pins at most the byte budget, and
//! is let go after the write timeout.

mod support;

use mq_broker::broker::groups::group_config;
use mq_broker::broker::topics::topic_config;
use mq_broker::client::{AdminClient, pull_request};
use mq_broker::remoting::Connection;
use std::time::{Duration, Instant};
use support::{BrokerProcess, TempDir};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const PER_IP: usize = 1_000;
const FLOOD: usize = 2_000;
const IDLE_SECS: u64 = 10;
const BUDGET: u64 = 1 << 20;
const DEADLINE: Duration = Duration::from_secs(30);

/// The value of the metric line `name{labels}` (0 when absent).
fn metric(broker: &BrokerProcess, series: &str) -> u64 {
    let page = broker.metrics();
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Polls `check` until it holds, for at most [`DEADLINE`].
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A connection to `addr` from the loopback address `from` (all of 127/8 is local).
async fn connect_from(from: [u8; 4], addr: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((from, 0).into())
        .expect("bind a loopback source");
    let addr = addr.parse().expect("broker address");
    socket.connect(addr).await.expect("the kernel accepts")
}

/// Whether the server ended `stream` (EOF or reset) within 5 s.
async fn ended(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await;
    matches!(read, Ok(Ok(0) | Err(_)))
}

fn start_broker(dir: &TempDir) -> BrokerProcess {
    let (idle, budget) = (IDLE_SECS.to_string(), BUDGET.to_string());
    support::standalone(
        &dir.0.join("store"),
        &[
            "--max-connections-per-ip",
            &PER_IP.to_string(),
            "--idle-timeout-secs",
            &idle,
            "--max-buffered-bytes",
            &budget,
            "--write-timeout-secs",
            "3",
        ],
    )
}

#[test]
fn a_connection_flood_is_refused_and_closed_while_a_real_client_is_served() {
    let dir = TempDir::new("conn-flood");
    let broker = start_broker(&dir);
    let addr = broker.broker();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let series = |name: &str| format!("{name}{{server=\"broker\"}}");
    let refused = "mq_remoting_connections_refused_total{server=\"broker\",reason=\"per_ip\"}";

    rt.block_on(async {
        let admin = AdminClient::connect(&addr, Duration::from_secs(5))
            .await
            .expect("broker");
        admin
            .create_topic(&topic_config("FLOOD_TOPIC", 4))
            .await
            .expect("topic");
        admin
            .create_group(&group_config("GID_FLOOD"))
            .await
            .expect("group");
        support::wait_for_route(&broker.namesrv(), "FLOOD_TOPIC").await;
    });

    // 2,000 connections from 127.0.0.2; the broker keeps 1,000 and closes the rest.
    let mut flood = rt.block_on(async {
        let mut flood = Vec::with_capacity(FLOOD);
        for _ in 0..FLOOD {
            flood.push(connect_from([127, 0, 0, 2], &addr).await);
        }
        flood
    });
    eventually("1,000 refusals counted", || {
        metric(&broker, refused) == (FLOOD - PER_IP) as u64
    });
    let closed_early = rt.block_on(async {
        let mut n = 0;
        for stream in flood.iter_mut().skip(PER_IP) {
            n += usize::from(ended(stream).await);
        }
        n
    });
    assert_eq!(
        closed_early,
        FLOOD - PER_IP,
        "the excess is closed at accept"
    );

    // The real client, from 127.0.0.1, is served while the flood holds its 1,000.
    let got = support::round_trip(
        &broker.namesrv(),
        None,
        "FLOOD_TOPIC",
        "GID_FLOOD",
        "flood",
        20,
    );
    assert_eq!(got.len(), 20, "{got:?}");

    // Idle ones are closed after the idle timeout; each is told so by EOF.
    eventually("the idle flood closed", || {
        metric(&broker, &series("mq_remoting_idle_closed_total")) >= PER_IP as u64
    });
    let still_open = rt.block_on(async {
        let mut n = 0;
        for stream in flood.iter_mut().take(PER_IP) {
            n += usize::from(!ended(stream).await);
        }
        n
    });
    assert_eq!(still_open, 0, "idle connections left open");
    println!(
        "flood: {} refused, {} closed idle; broker RSS {} KiB",
        metric(&broker, refused),
        metric(&broker, &series("mq_remoting_idle_closed_total")),
        metric(&broker, "process_resident_memory_bytes") / 1024
    );
}

#[test]
fn a_peer_that_pulls_and_never_reads_holds_only_the_budget() {
    let dir = TempDir::new("conn-noread");
    let broker = start_broker(&dir);
    let addr = broker.broker();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let buffered = "mq_remoting_buffered_bytes{server=\"broker\"}";
    let rss_before = metric(&broker, "process_resident_memory_bytes");

    let peer = rt.block_on(async {
        let admin = AdminClient::connect(&addr, Duration::from_secs(5))
            .await
            .expect("broker");
        admin
            .create_topic(&topic_config("NOREAD_TOPIC", 1))
            .await
            .expect("topic");
        // 64 messages of 64 KiB: every pull answer is a full 256 KiB.
        for n in 0..64 {
            let body = vec![b'a' + (n % 26) as u8; 64 << 10];
            admin
                .send_message("PID_NOREAD", "NOREAD_TOPIC", 0, "t", body)
                .await
                .expect("send");
        }
        // 400 pulls (100 MiB of answers) from a peer that reads none of them.
        let mut peer = Connection::new(connect_from([127, 0, 0, 3], &addr).await);
        for opaque in 0..400 {
            let pull = pull_request("GID_NOREAD", "NOREAD_TOPIC", 0, 0, 32).with_opaque(opaque);
            if peer.write_command(&pull).await.is_err() {
                break; // the broker stopped reading us: the point is made
            }
        }
        peer
    });

    let mut peak = 0;
    eventually("the stalled peer let go", || {
        peak = peak.max(metric(&broker, buffered));
        metric(
            &broker,
            "mq_remoting_write_failures_total{server=\"broker\"}",
        ) >= 1
    });
    assert!(peak > 0, "nothing was ever queued for the peer");
    assert!(
        peak <= BUDGET,
        "{peak} bytes queued over a {BUDGET}-byte budget"
    );
    eventually("its queued bytes released", || {
        metric(&broker, buffered) == 0
    });
    eventually("its connection closed", || {
        metric(&broker, "mq_remoting_connections_open{server=\"broker\"}") == 0
    });
    drop(peer);
    println!(
        "never-reading peer: peak {peak} bytes queued (budget {BUDGET}); broker RSS {} KiB before, {} KiB after",
        rss_before / 1024,
        metric(&broker, "process_resident_memory_bytes") / 1024
    );
}

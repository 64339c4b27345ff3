//! The operations HTTP port: `/healthz`, `/livez` and `/metrics` (Prometheus text).
//!
//! A tiny hand-written HTTP/1.1 responder rather than axum: the port serves three fixed
//! `GET` routes with no request bodies, so a router, hyper and tower would add
//! dependencies to a library the operator and the console link, for nothing they would
//! do here. Each connection reads one request head (at most [`MAX_HEAD`] bytes, within
//! [`READ_TIMEOUT`]), gets one response with `Connection: close`, and is closed — which
//! is what kubelet probes and Prometheus scrapes need.
//!
//! - `GET /healthz`: `200 ok` when ready (name server: serving; broker: store recovered
//!   and registered with at least one name server), else `503` with the reason.
//! - `GET /livez`: `200 ok` while the process answers (a liveness probe that does not
//!   fail during a long store recovery).
//! - `GET /metrics`: counters and gauges of the broker, the remoting servers and the
//!   process.

use crate::acl::Acl;
use crate::broker::Broker;
use crate::namesrv::NameServer;
use crate::net::ServerStats;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Longest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once (more wait to be accepted).
const MAX_CONNECTIONS: usize = 64;

/// What the ops port reports on: set up as the process's parts start.
#[derive(Default)]
pub struct OpsState {
    mode: String,
    expects_broker: bool,
    broker: OnceLock<Arc<Broker>>,
    namesrv: OnceLock<Arc<NameServer>>,
    acl: OnceLock<Acl>,
    servers: Mutex<Vec<(String, Arc<ServerStats>)>>,
    stopping: AtomicBool,
}

impl OpsState {
    /// State for a process running `mode` (`namesrv`, `broker`, `standalone`); when
    /// `expects_broker`, the process is not ready until [`OpsState::set_broker`].
    pub fn new(mode: &str, expects_broker: bool) -> Self {
        Self {
            mode: mode.to_owned(),
            expects_broker,
            ..Self::default()
        }
    }

    /// The broker, once its store is open.
    pub fn set_broker(&self, broker: Arc<Broker>) {
        let _ = self.broker.set(broker);
    }

    /// The name server, once serving.
    pub fn set_namesrv(&self, namesrv: Arc<NameServer>) {
        let _ = self.namesrv.set(namesrv);
    }

    /// The process's ACL (one for both servers of a standalone process).
    pub fn set_acl(&self, acl: Acl) {
        let _ = self.acl.set(acl);
    }

    /// A remoting server's counters, labelled `server="<name>"` in the metrics.
    pub fn add_server(&self, name: &str, stats: Arc<ServerStats>) {
        self.servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name.to_owned(), stats));
    }

    /// The process is stopping: not ready any more.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Ready, or why not.
    pub fn health(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".to_owned());
        }
        match self.broker.get() {
            Some(broker) => broker.health(),
            None if self.expects_broker => Err("starting: opening the store".to_owned()),
            None if self.namesrv.get().is_none() => Err("starting".to_owned()),
            None => Ok(()),
        }
    }

    /// Alive, or why the process must be restarted (its broker's store failed).
    pub fn liveness(&self) -> Result<(), String> {
        self.broker.get().map_or(Ok(()), |b| b.liveness())
    }

    /// The Prometheus text exposition of every metric.
    pub fn metrics(&self) -> String {
        let mut m = Exposition::default();
        m.gauge(
            "mq_info",
            "What this process runs (mode label) and its version.",
            &[(
                format!(
                    "mode=\"{}\",version=\"{}\"",
                    self.mode,
                    env!("CARGO_PKG_VERSION")
                ),
                1,
            )],
        );
        m.gauge(
            "mq_ready",
            "1 when /healthz answers 200.",
            &[(String::new(), u64::from(self.health().is_ok()))],
        );
        m.gauge(
            "mq_alive",
            "0 once the message store failed a write or an fsync (/livez answers 503).",
            &[(String::new(), u64::from(self.liveness().is_ok()))],
        );
        if let Some(b) = self.broker.get() {
            broker_metrics(&mut m, b);
        }
        if let Some(acl) = self.acl.get() {
            m.gauge(
                "mq_acl_enabled",
                "1 when client requests are checked against the ACL (aclEnable).",
                &[(String::new(), u64::from(acl.is_enabled()))],
            );
            m.gauge(
                "mq_acl_admin_key",
                "1 when the server has an instance admin key: admin requests and registrations always need its signature.",
                &[(String::new(), u64::from(acl.has_admin_key()))],
            );
            m.counter(
                "mq_acl_refusals_total",
                "Requests refused by the ACL (unknown account, bad signature, no permission).",
                &[(String::new(), acl.refused())],
            );
        }
        if let Some(ns) = self.namesrv.get() {
            m.gauge(
                "mq_namesrv_brokers",
                "Brokers registered with this name server.",
                &[(
                    String::new(),
                    ns.routes().cluster_info().broker_addr_table.len() as u64,
                )],
            );
        }
        let servers = self
            .servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let per_server = |f: fn(&ServerStats) -> u64| -> Vec<(String, u64)> {
            servers
                .iter()
                .map(|(name, s)| (format!("server=\"{name}\""), f(s)))
                .collect()
        };
        m.gauge(
            "mq_remoting_connections_open",
            "Client connections open now.",
            &per_server(|s| s.connections_open.load(Ordering::Relaxed)),
        );
        m.counter(
            "mq_remoting_connections_total",
            "Client connections accepted since start.",
            &per_server(|s| s.connections_total.load(Ordering::Relaxed)),
        );
        m.counter(
            "mq_remoting_bad_frames_total",
            "Connections closed because of a malformed or oversized frame.",
            &per_server(|s| s.bad_frames.load(Ordering::Relaxed)),
        );
        m.counter(
            "mq_remoting_tls_connections_total",
            "Connections that completed a TLS handshake.",
            &per_server(|s| s.tls_connections.load(Ordering::Relaxed)),
        );
        m.counter(
            "mq_remoting_tls_handshake_failures_total",
            "Connections closed before their first frame: no first byte or TLS handshake in time, or a failed handshake.",
            &per_server(|s| s.tls_handshake_failures.load(Ordering::Relaxed)),
        );
        m.counter(
            "mq_remoting_connections_refused_total",
            "Connections closed at accept: the port's or the client IP's connection limit was reached.",
            &servers
                .iter()
                .flat_map(|(name, s)| {
                    [
                        (format!("server=\"{name}\",reason=\"total\""), s.refused_total_limit.load(Ordering::Relaxed)),
                        (format!("server=\"{name}\",reason=\"per_ip\""), s.refused_per_ip.load(Ordering::Relaxed)),
                    ]
                })
                .collect::<Vec<_>>(),
        );
        m.counter(
            "mq_remoting_idle_closed_total",
            "Connections closed after the idle timeout (no frame, nothing in flight).",
            &per_server(|s| s.idle_closed.load(Ordering::Relaxed)),
        );
        m.counter(
            "mq_remoting_write_failures_total",
            "Connections closed because the peer read none of our output for the write timeout, or writing failed.",
            &per_server(|s| s.write_failures.load(Ordering::Relaxed)),
        );
        m.gauge(
            "mq_remoting_buffered_bytes",
            "Bytes of responses queued for peers and not yet taken by them.",
            &per_server(|s| s.buffered_bytes.load(Ordering::Relaxed)),
        );
        if let Some(rss) = resident_bytes() {
            m.gauge(
                "process_resident_memory_bytes",
                "Resident memory of this process (from /proc/self/statm).",
                &[(String::new(), rss)],
            );
        }
        m.0
    }
}

fn broker_metrics(m: &mut Exposition, b: &Broker) {
    m.gauge(
        "mq_store_disk_full",
        "1 while sends are refused because the store's disk is full (readiness fails too).",
        &[(String::new(), u64::from(b.disk_full().is_some()))],
    );
    m.counter(
        "mq_store_segments_deleted_for_space_total",
        "Commit-log segments deleted above the hard disk threshold (95 % used and under half the reserve free), consumed or not.",
        &[(String::new(), b.store().segments_deleted_for_space())],
    );
    let s = b.stats();
    let get = |c: &std::sync::atomic::AtomicU64| vec![(String::new(), c.load(Ordering::Relaxed))];
    m.counter(
        "mq_broker_messages_in_total",
        "Messages stored.",
        &get(&s.messages_in),
    );
    m.counter(
        "mq_broker_messages_out_total",
        "Messages returned by pulls.",
        &get(&s.messages_out),
    );
    m.counter(
        "mq_broker_bytes_in_total",
        "Bytes of message bodies stored.",
        &get(&s.bytes_in),
    );
    m.counter(
        "mq_broker_bytes_out_total",
        "Bytes returned by pulls.",
        &get(&s.bytes_out),
    );
    m.counter(
        "mq_broker_request_errors_total",
        "Requests answered with an error code.",
        &get(&s.errors),
    );
    m.counter(
        "mq_broker_send_busy_total",
        "Sends answered SYSTEM_BUSY because they waited too long for the store.",
        &[(String::new(), b.send_queue().refused())],
    );
    let limits = b.limits();
    m.counter(
        "mq_broker_send_throttled_total",
        "Sends answered SYSTEM_BUSY because of the send TPS limit.",
        &[(String::new(), limits.sends_refused())],
    );
    m.counter(
        "mq_broker_pull_throttled_total",
        "Pulls held because of the receive TPS limit.",
        &[(String::new(), limits.pulls_held())],
    );
    m.gauge(
        "mq_broker_tps_limit",
        "Messages per second this broker accepts (send) or hands out (receive); 0 is unlimited.",
        &[
            ("direction=\"send\"".to_owned(), limits.send_tps()),
            ("direction=\"receive\"".to_owned(), limits.receive_tps()),
        ],
    );
    m.gauge(
        "mq_broker_send_queue",
        "Sends waiting for the store now.",
        &[(String::new(), b.send_queue().waiting() as u64)],
    );
    m.gauge(
        "mq_broker_requests_in_flight",
        "Requests being handled now.",
        &[(String::new(), b.in_flight() as u64)],
    );
    transaction_metrics(m, b);
    let store = b.store();
    let (min, max) = (store.commitlog_min_offset(), store.commitlog_max_offset());
    m.gauge(
        "mq_broker_store_size_bytes",
        "Bytes in the commit log (max − min offset).",
        &[(String::new(), max.saturating_sub(min))],
    );
    m.gauge(
        "mq_broker_store_unflushed_bytes",
        "Bytes written but not yet fsynced.",
        &[(String::new(), max.saturating_sub(store.flushed_offset()))],
    );
    minute_stats_metrics(m, b);
    m.gauge(
        "mq_broker_timer_pending",
        "Scheduled messages (TIMER_DELIVER_MS and kin) waiting for their time.",
        &[(String::new(), b.timer().pending())],
    );
    m.counter(
        "mq_broker_timer_delivered_total",
        "Scheduled messages re-put to their topic since start.",
        &[(String::new(), b.timer().delivered())],
    );
    m.gauge(
        "mq_broker_registered",
        "1 when at least one name server accepted the last registration.",
        &[(String::new(), u64::from(b.is_registered()))],
    );
}

/// The per-minute statistics' totals (`broker/minute_stats.rs`).
fn minute_stats_metrics(m: &mut Exposition, b: &Broker) {
    use crate::broker::minute_stats::StatsKind;
    let stats = b.minute_stats();
    let (mut put, mut consumed) = (Vec::new(), Vec::new());
    for (key, total) in stats.totals() {
        let topic = label_value(&key.topic);
        match key.kind {
            StatsKind::Topic => put.push((format!("topic=\"{topic}\""), total)),
            StatsKind::Group => consumed.push((
                format!("group=\"{}\",topic=\"{topic}\"", label_value(&key.group)),
                total,
            )),
        }
    }
    m.counter(
        "mqfleet_topic_messages_put_total",
        "Messages put into each topic (kept across clean restarts).",
        &put,
    );
    m.counter(
        "mqfleet_group_messages_consumed_total",
        "Messages of each topic handed to each consumer group by pulls (kept across clean restarts).",
        &consumed,
    );
    m.counter(
        "mq_broker_stats_untracked_total",
        "Messages not counted per minute because the series cap was reached.",
        &[(String::new(), stats.untracked())],
    );
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The transaction counters (`broker/transaction.rs`).
fn transaction_metrics(m: &mut Exposition, b: &Broker) {
    let t = b.transactions();
    let s = t.stats();
    let get = |c: &std::sync::atomic::AtomicU64| vec![(String::new(), c.load(Ordering::Relaxed))];
    m.gauge(
        "mq_broker_transaction_half_pending",
        "Half messages waiting for a commit or rollback.",
        &[(String::new(), t.pending() as u64)],
    );
    m.counter(
        "mq_broker_transaction_checks_total",
        "Transaction check-backs sent to producers.",
        &get(&s.checks),
    );
    m.counter(
        "mq_broker_transaction_commits_total",
        "Half messages committed.",
        &get(&s.commits),
    );
    m.counter(
        "mq_broker_transaction_rollbacks_total",
        "Half messages rolled back (by producers or after the check limit).",
        &get(&s.rollbacks),
    );
    m.counter(
        "mq_broker_transaction_check_limit_rollbacks_total",
        "Half messages rolled back because they reached the check limit.",
        &get(&s.check_limit_rollbacks),
    );
}

/// Prometheus text format 0.0.4 being written.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn counter(&mut self, name: &str, help: &str, samples: &[(String, u64)]) {
        self.family(name, help, "counter", samples);
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[(String, u64)]) {
        self.family(name, help, "gauge", samples);
    }

    fn family(&mut self, name: &str, help: &str, kind: &str, samples: &[(String, u64)]) {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.0, "{name} {value}");
            } else {
                let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
            }
        }
    }
}

/// This process's resident set size: `/proc/self/statm`'s second field, in pages.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0)?)
}

/// What an ops port answers: the status, content type and body for a `GET` path.
/// The broker's [`OpsState`] is one; the operator brings its own.
pub trait Routes: Send + Sync + 'static {
    /// The response to `GET path`.
    fn route(&self, path: &str) -> (u16, &'static str, String);
}

impl Routes for OpsState {
    fn route(&self, path: &str) -> (u16, &'static str, String) {
        route(self, path)
    }
}

/// The listening ops port.
pub struct OpsServer {
    listener: TcpListener,
}

impl OpsServer {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers requests from `state` until `shutdown` resolves.
    pub async fn serve<R: Routes>(self, state: Arc<R>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let state = state.clone();
                        tokio::spawn(async move {
                            answer(stream, state.as_ref()).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ops port: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}

/// Reads one request head and writes one response.
async fn answer<R: Routes>(mut stream: TcpStream, state: &R) {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => {
            let _ = respond(&mut stream, 400, "text/plain", "bad request\n", false).await;
            return;
        }
    };
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        let _ = respond(
            &mut stream,
            405,
            "text/plain",
            "method not allowed\n",
            with_body,
        )
        .await;
        return;
    }
    let (status, kind, body) = state.route(path);
    let _ = respond(&mut stream, status, kind, &body, with_body).await;
}

/// The status, content type and body for `path`.
pub fn route(state: &OpsState, path: &str) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/healthz" | "/readyz" => match state.health() {
            Ok(()) => (200, TEXT, "ok\n".to_owned()),
            Err(reason) => (503, TEXT, format!("{reason}\n")),
        },
        "/livez" => match state.liveness() {
            Ok(()) => (200, TEXT, "ok\n".to_owned()),
            Err(reason) => (503, TEXT, format!("{reason}\n")),
        },
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics(),
        ),
        _ => (
            404,
            TEXT,
            "not found: try /healthz, /livez or /metrics\n".to_owned(),
        ),
    }
}

/// The request line of a request head, once the head is complete.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD {
            return None;
        }
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .or_else(|| buf.windows(2).position(|w| w == b"\n\n"));
        if end.is_some() {
            let line = buf.split(|b| *b == b'\n').next()?;
            return Some(String::from_utf8_lossy(line).trim().to_owned());
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    kind: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if with_body {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_ops_port_answers_health_liveness_metrics_and_refuses_the_rest() {
        let state = Arc::new(OpsState::new("broker", true));
        let server = OpsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(state.clone(), async {
            let _ = stop_rx.await;
        }));

        let health = get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 503 "), "{health}");
        assert!(
            health.ends_with("starting: opening the store\n"),
            "{health}"
        );
        let live = get(addr, "GET /livez HTTP/1.0\r\n\r\n").await;
        assert!(live.starts_with("HTTP/1.1 200 OK\r\n"), "{live}");

        state.add_server("broker", Arc::default());
        let metrics = get(addr, "GET /metrics?x=1 HTTP/1.1\r\n\r\n").await;
        assert!(metrics.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(metrics.contains("mq_info{mode=\"broker\""), "{metrics}");
        assert!(metrics.contains("mq_ready 0\n"), "{metrics}");
        assert!(metrics.contains("mq_remoting_connections_open{server=\"broker\"} 0\n"));
        assert!(metrics.contains("# TYPE mq_remoting_bad_frames_total counter\n"));
        assert!(metrics.contains("process_resident_memory_bytes "));

        let head = get(addr, "HEAD /livez HTTP/1.1\r\n\r\n").await;
        assert!(head.ends_with("\r\n\r\n"), "no body for HEAD: {head}");
        assert!(
            get(addr, "POST /healthz HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );
        assert!(
            get(addr, "GET /nope HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        // One byte over the limit and no end of head: all of it is read, then refused.
        let mut huge = "GET /healthz HTTP/1.1\r\nX: ".to_owned();
        huge.push_str(&"a".repeat(MAX_HEAD + 1 - huge.len()));
        assert!(get(addr, &huge).await.starts_with("HTTP/1.1 400"));

        state.begin_shutdown();
        let stopping = get(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(stopping.ends_with("shutting down\n"), "{stopping}");
        let _ = stop_tx.send(());
        serving.await.unwrap();
    }

    #[test]
    fn a_broker_whose_store_failed_an_fsync_is_not_alive() {
        use crate::broker::{Broker, BrokerConfig};
        use crate::store::io::SimFs;
        use crate::store::{FlushPolicy, MessageStore, MessageToStore, StoreConfig};
        let dir = std::env::temp_dir().join(format!("mq-ops-live-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fs = SimFs::new();
        let mut store_cfg = StoreConfig::new("/store");
        store_cfg.fs = Arc::new(fs.clone());
        store_cfg.background = false;
        store_cfg.flush = FlushPolicy::Sync;
        let store = Arc::new(MessageStore::open(store_cfg).expect("store"));
        let broker = Arc::new(Broker::new(BrokerConfig::new(&dir), store.clone()).expect("broker"));
        let state = OpsState::new("broker", true);
        state.set_broker(broker);
        assert_eq!(route(&state, "/livez").0, 200);
        assert!(state.metrics().contains("mq_alive 1\n"));

        fs.fail_next_syncs(1);
        assert!(
            store
                .put(&MessageToStore::new("T", 0, vec![1u8; 10]))
                .is_err()
        );
        let (status, _, why) = route(&state, "/livez");
        assert_eq!(status, 503, "{why}");
        assert!(
            why.contains("message store failed") && why.contains("fsync"),
            "{why}"
        );
        assert_eq!(route(&state, "/readyz").0, 503);
        assert!(state.metrics().contains("mq_alive 0\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_broker_on_a_full_disk_is_alive_but_not_ready() {
        use crate::broker::{Broker, BrokerConfig};
        use crate::store::io::SimFs;
        use crate::store::{MessageStore, MessageToStore, StoreConfig};
        let dir = std::env::temp_dir().join(format!("mq-ops-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fs = SimFs::new();
        let mut store_cfg = StoreConfig::new("/store");
        store_cfg.fs = Arc::new(fs.clone());
        store_cfg.background = false;
        let store = Arc::new(MessageStore::open(store_cfg).expect("store"));
        let broker = Arc::new(Broker::new(BrokerConfig::new(&dir), store.clone()).expect("broker"));
        let state = OpsState::new("broker", true);
        state.set_broker(broker);
        fs.set_capacity(Some(1));
        assert!(
            store
                .put(&MessageToStore::new("T", 0, vec![1u8; 10]))
                .is_err()
        );
        let (status, _, why) = route(&state, "/readyz");
        assert_eq!(status, 503);
        assert!(why.starts_with("disk full"), "{why}");
        assert_eq!(
            route(&state, "/livez").0,
            200,
            "a full disk is no reason to restart"
        );
        assert!(state.metrics().contains("mq_store_disk_full 1\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_name_server_alone_is_ready_once_serving() {
        let state = OpsState::new("namesrv", false);
        assert!(state.health().is_err());
        state.set_namesrv(Arc::new(NameServer::new(
            crate::names::Namespace::default(),
            Duration::from_secs(120),
        )));
        assert_eq!(state.health(), Ok(()));
        assert!(state.metrics().contains("mq_namesrv_brokers 0\n"));
    }
}

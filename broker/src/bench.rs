//! `mq-broker bench`: a load generator that measures the broker, not a client.
//!
//! Requests are pipelined over a few connections (each sender keeps one request in
//! flight; many senders share a connection), with no client library in between: a send
//! is one SEND_MESSAGE_V2 frame, a pull one PULL_MESSAGE frame. With `--standalone` the
//! broker is a real `mq-broker standalone` child process on a fresh temp store, so the
//! broker's memory (VmRSS of the child) is measured apart from the generator's.
//!
//! Phases, each reported:
//! 1. peak send rate: `--senders` senders for `--duration-secs` (or `--messages`);
//! 2. half the peak rate, paced: the latency a broker not at its limit gives;
//! 3. consume: every stored message read back with pipelined pulls of `--pull-batch`;
//! 4. overload: `--overload-in-flight` sends in flight; the share answered SYSTEM_BUSY
//!    and the latency of the accepted ones (the broker sheds load instead of queueing);
//! 5. queries: `--query-samples` QUERY_MESSAGE lookups by unique key of random messages
//!    of the peak phase, one at a time, with everything stored (the key index's latency;
//!    a lookup by KEYS takes the same index path, only the final match differs);
//! 6. transactions: `--transaction-secs` of half + commit per sender (`bench_tx.rs`);
//! 7. the child's RSS, then a SIGTERM and the time its clean stop took.
//!
//! With `--scheduled N` it measures scheduled messages instead (`bench_timer.rs`).

#[path = "bench_tx.rs"]
mod tx;

use crate::cli::Flush;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use mq_broker::net::NoRequests;
use mq_broker::net::{Channel, connect};
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

#[path = "bench_timer.rs"]
mod timer;

/// Load-generator settings.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Broker to load (`host:port`, a standalone broker: it must auto-create the topic
    /// and the consumer group).
    #[arg(long, conflicts_with = "standalone")]
    pub broker: Option<String>,
    /// Start a real `mq-broker standalone` child on a temp store and load it.
    #[arg(long)]
    pub standalone: bool,
    /// Flush policy of the child broker.
    #[arg(long, value_enum, default_value = "async")]
    pub flush: Flush,
    /// SYSTEM_BUSY bound of the child broker (`--max-send-wait-ms`).
    #[arg(long, default_value_t = 200)]
    pub max_send_wait_ms: u64,
    /// Store directory of the child (default: a fresh temp dir, removed afterwards).
    #[arg(long)]
    pub store_dir: Option<PathBuf>,
    /// Connections the senders (and pullers) share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Concurrent senders, each with one send in flight.
    #[arg(long, default_value_t = 16)]
    pub senders: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Seconds of the peak-rate send phase (0 skips it and the paced phase).
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Ends the peak phase after this many messages, if sooner.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Seconds of the paced phase at half the peak rate (0 skips it).
    #[arg(long, default_value_t = 5)]
    pub paced_secs: u64,
    /// Pulls in flight in the consume phase.
    #[arg(long, default_value_t = 16)]
    pub pullers: usize,
    /// Messages per pull.
    #[arg(long, default_value_t = 32)]
    pub pull_batch: i32,
    /// Sends in flight in the overload phase (0 skips it).
    #[arg(long, default_value_t = 512)]
    pub overload_in_flight: usize,
    /// Seconds of the overload phase.
    #[arg(long, default_value_t = 5)]
    pub overload_secs: u64,
    /// Seconds of the transactional phase (half + commit per sender; 0 skips it).
    #[arg(long, default_value_t = 5)]
    pub transaction_secs: u64,
    /// Topic (auto-created with `--queues` queues).
    #[arg(long, default_value = "BenchTopic")]
    pub topic: String,
    /// Queues of the topic (at most the broker's default of 8 when auto-created).
    #[arg(long, default_value_t = 8)]
    pub queues: i32,
    /// Lookups by unique key in the query phase (0 skips it).
    #[arg(long, default_value_t = 200)]
    pub query_samples: usize,
    /// Scheduled-message mode: N messages scheduled 1 h ahead (sends/s into the timer
    /// store, broker RSS with them pending), then `--scheduled-due` more due together
    /// (deliveries/s); replaces the other phases.
    #[arg(long, default_value_t = 0)]
    pub scheduled: u64,
    /// Messages of the scheduled mode's delivery phase.
    #[arg(long, default_value_t = 200_000)]
    pub scheduled_due: u64,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// How long one request may take before the generator gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Consumer group of the consume phase.
const GROUP: &str = "bench_consumer";

/// Runs the benchmark and prints its figures.
pub async fn run(args: BenchArgs) -> Result<()> {
    if args.senders == 0 || args.connections == 0 || args.pullers == 0 || args.queues < 1 {
        bail!("--senders, --connections, --pullers and --queues must be at least 1");
    }
    let mut child = match (&args.broker, args.standalone) {
        (Some(_), _) => None,
        (None, true) => Some(ChildBroker::start(&args).await?),
        (None, false) => bail!("give --broker <host:port> or --standalone"),
    };
    let addr = match (&args.broker, &child) {
        (Some(addr), _) => addr.clone(),
        (None, Some(c)) => c.broker.clone(),
        (None, None) => unreachable!("one of them is set above"),
    };
    let result = measure(&args, &addr, child.as_ref()).await;
    let stop = match child.take() {
        Some(c) => Some(c.stop().await),
        None => None,
    };
    let mut report = result?;
    if let Some(stop) = stop {
        let (status, took) = stop?;
        println!(
            "clean stop (SIGTERM): exit {}, {} ms",
            status.code().map_or("signal".to_owned(), |c| c.to_string()),
            took.as_millis()
        );
        report.insert("stop_ms".into(), (took.as_millis() as u64).into());
        report.insert("stop_exit".into(), status.code().unwrap_or(-1).into());
    }
    if args.json {
        println!("{}", serde_json::Value::Object(report));
    }
    Ok(())
}

type Report = serde_json::Map<String, serde_json::Value>;

async fn measure(args: &BenchArgs, addr: &str, child: Option<&ChildBroker>) -> Result<Report> {
    let channels = connect_all(addr, args.connections).await?;
    let body = Bytes::from(vec![b'x'; args.size]);
    let sender = Arc::new(Sender {
        topic: args.topic.clone(),
        queues: args.queues,
        body,
        seq: AtomicU64::new(0),
    });
    let mut report = Report::new();
    report.insert(
        "flush".into(),
        format!("{:?}", args.flush).to_lowercase().into(),
    );
    report.insert("size".into(), args.size.into());
    report.insert("senders".into(), args.senders.into());
    report.insert("connections".into(), args.connections.into());
    println!(
        "mq-broker bench: broker {addr}{}, {}-byte messages, {} senders pipelining over {} connections",
        child.map_or(String::new(), |_| format!(
            " (standalone child, {:?} flush)",
            args.flush
        )),
        args.size,
        args.senders,
        args.connections
    );

    // Creates the topic on every queue, then a short unmeasured warm-up.
    for q in 0..args.queues {
        let answer = sender.send(&channels[0], Some(q)).await?;
        if answer.code != response_code::SUCCESS {
            bail!(
                "the first send failed ({}): {}",
                answer.code,
                answer.remark.unwrap_or_default()
            );
        }
    }
    if args.scheduled > 0 {
        return timer::measure(args, addr, child, &channels[0], report).await;
    }
    let template = FrameTemplate::new(&args.topic, args.queues, args.size, "")?;
    let _ = load(
        addr,
        &template,
        args.senders,
        args.connections,
        Limit::time(1),
        None,
    )
    .await;

    let limit = Limit {
        duration: Duration::from_secs(args.duration_secs),
        messages: args.messages,
    };
    let mut peak_rate = 0.0;
    let mut peak_sent = 0;
    if args.duration_secs > 0 {
        let peak = load(addr, &template, args.senders, args.connections, limit, None).await;
        peak.print("send, peak", args.size);
        peak.report(&mut report, "peak", args.size);
        if peak.ok == 0 {
            bail!("no send succeeded");
        }
        peak_rate = peak.rate();
        peak_sent = peak.ok;
    }

    if args.paced_secs > 0 && peak_rate > 0.0 {
        let rate = peak_rate / 2.0;
        let paced = load(
            addr,
            &template,
            args.senders,
            args.connections,
            Limit::time(args.paced_secs),
            Some(rate),
        )
        .await;
        paced.print(&format!("send, paced at {rate:.0}/s"), args.size);
        paced.report(&mut report, "half_peak", args.size);
    }
    if let Some(c) = child {
        let rss = c.rss();
        println!("broker RSS after sends: {}", fmt_rss(rss));
        report.insert("rss_after_send_kib".into(), rss.map(|r| r.0).into());
    }

    let consume = consume(args, &channels).await?;
    println!(
        "consume, pulls of {} ({} in flight): {:>9.0} msgs/s {:>7.1} MB/s   ({} messages in {:.2} s)",
        args.pull_batch,
        args.pullers,
        consume.rate(),
        consume.rate() * args.size as f64 / 1e6,
        consume.messages,
        consume.elapsed.as_secs_f64()
    );
    report.insert("consume_msgs_per_s".into(), round(consume.rate()).into());
    report.insert(
        "consume_mb_per_s".into(),
        round(consume.rate() * args.size as f64 / 1e6).into(),
    );
    if let Some(c) = child {
        let rss = c.rss();
        println!(
            "broker RSS after consume: {} with {:.2} GB stored",
            fmt_rss(rss),
            consume.stored_bytes as f64 / 1e9
        );
        report.insert("rss_kib".into(), rss.map(|r| r.0).into());
        report.insert("rss_peak_kib".into(), rss.map(|r| r.1).into());
    }

    if args.query_samples > 0 && peak_sent > 0 {
        let (mut lat, found) = query_phase(
            &channels[0],
            &args.topic,
            &template.marker,
            peak_sent,
            args.query_samples,
        )
        .await?;
        lat.sort();
        println!(
            "query by key, {} lookups over {:.2} GB stored: p50 {} p99 {} max {}   ({} found)",
            args.query_samples,
            consume.stored_bytes as f64 / 1e9,
            ms(lat.quantile(0.5)),
            ms(lat.quantile(0.99)),
            ms(lat.max()),
            found
        );
        report.insert(
            "query_p50_ms".into(),
            round(millis(lat.quantile(0.5))).into(),
        );
        report.insert(
            "query_p99_ms".into(),
            round(millis(lat.quantile(0.99))).into(),
        );
        report.insert("query_found".into(), found.into());
    }

    if args.overload_in_flight > 0 {
        let over = load(
            addr,
            &template,
            args.overload_in_flight,
            args.connections,
            Limit::time(args.overload_secs),
            None,
        )
        .await;
        let answered = (over.ok + over.busy + over.errors).max(1);
        let busy_share = over.busy as f64 / answered as f64;
        println!(
            "overload, {} sends in flight: {:.1}% SYSTEM_BUSY, accepted {:.0} msgs/s, accepted p50 {} p99 {} p99.9 {} max {}   ({} ok, {} busy, {} other)",
            args.overload_in_flight,
            busy_share * 100.0,
            over.rate(),
            ms(over.latency.quantile(0.5)),
            ms(over.latency.quantile(0.99)),
            ms(over.latency.quantile(0.999)),
            ms(over.latency.max()),
            over.ok,
            over.busy,
            over.errors
        );
        report.insert("overload_in_flight".into(), args.overload_in_flight.into());
        report.insert("overload_busy_share".into(), round(busy_share).into());
        report.insert(
            "overload_accepted_p99_ms".into(),
            round(millis(over.latency.quantile(0.99))).into(),
        );
        report.insert(
            "overload_accepted_msgs_per_s".into(),
            round(over.rate()).into(),
        );
    }
    if args.transaction_secs > 0 {
        let topic = format!("{}Tx", args.topic);
        tx::measure(
            &channels,
            &topic,
            args.size,
            args.senders,
            args.transaction_secs,
            &mut report,
        )
        .await?;
    }
    if let Some(c) = child {
        let rss = c.rss();
        println!("broker RSS at the end: {}", fmt_rss(rss));
        report.insert("rss_end_kib".into(), rss.map(|r| r.0).into());
    }
    Ok(report)
}

async fn connect_all(addr: &str, n: usize) -> Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(
            connect(addr, Duration::from_secs(5), Arc::new(NoRequests))
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    Ok(channels)
}

/// Builds and sends SEND_MESSAGE_V2 requests.
struct Sender {
    topic: String,
    queues: i32,
    body: Bytes,
    seq: AtomicU64,
}

impl Sender {
    /// Sends one message (to `queue`, or round robin) and waits for the answer.
    async fn send(
        &self,
        channel: &Channel,
        queue: Option<i32>,
    ) -> Result<RemotingCommand, mq_broker::net::ChannelError> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let queue = queue.unwrap_or((seq % self.queues as u64) as i32);
        let now = mq_broker::broker::table::now_millis();
        // What a Java producer sends: V2 short header names, a unique key, tags.
        let properties = format!(
            "UNIQ_KEY\u{1}BENCH{:08X}{seq:016X}\u{2}WAIT\u{1}true\u{2}TAGS\u{1}bench\u{2}",
            std::process::id()
        );
        let req = RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
            .with_ext("a", "bench_producer")
            .with_ext("b", self.topic.as_str())
            .with_ext("c", "TBW102")
            .with_ext("d", self.queues.to_string())
            .with_ext("e", queue.to_string())
            .with_ext("f", "0")
            .with_ext("g", now.to_string())
            .with_ext("h", "0")
            .with_ext("i", properties)
            .with_ext("j", "0")
            .with_ext("k", "false")
            .with_ext("m", "false")
            .with_body(self.body.clone());
        channel.request(req, REQUEST_TIMEOUT).await
    }
}

/// When a load phase ends.
#[derive(Clone, Copy)]
struct Limit {
    duration: Duration,
    messages: Option<u64>,
}

impl Limit {
    fn time(secs: u64) -> Self {
        Self {
            duration: Duration::from_secs(secs),
            messages: None,
        }
    }
}

/// What a load phase measured.
#[derive(Default)]
struct LoadResult {
    ok: u64,
    busy: u64,
    errors: u64,
    elapsed: Duration,
    /// Latency of accepted sends.
    latency: Latencies,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, other: LoadResult) {
        self.ok += other.ok;
        self.busy += other.busy;
        self.errors += other.errors;
        self.latency.merge(other.latency);
    }

    fn print(&self, what: &str, size: usize) {
        println!(
            "{what:<28} {:>9.0} msgs/s {:>7.1} MB/s   p50 {} p99 {} p99.9 {}   ({} ok, {} busy, {} errors in {:.1} s)",
            self.rate(),
            self.rate() * size as f64 / 1e6,
            ms(self.latency.quantile(0.5)),
            ms(self.latency.quantile(0.99)),
            ms(self.latency.quantile(0.999)),
            self.ok,
            self.busy,
            self.errors,
            self.elapsed.as_secs_f64()
        );
    }

    fn report(&self, r: &mut Report, name: &str, size: usize) {
        r.insert(format!("{name}_msgs_per_s"), round(self.rate()).into());
        r.insert(
            format!("{name}_mb_per_s"),
            round(self.rate() * size as f64 / 1e6).into(),
        );
        for (q, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
            r.insert(
                format!("{name}_{label}_ms"),
                round(millis(self.latency.quantile(q))).into(),
            );
        }
        r.insert(format!("{name}_busy"), self.busy.into());
        r.insert(format!("{name}_errors"), self.errors.into());
    }
}

/// Opaques carry the send time: `OPAQUE_BASE` + µs since the phase began, always ten
/// digits, so a pre-encoded frame is patched in place and a response tells its latency
/// without any bookkeeping.
const OPAQUE_BASE: i32 = 1_000_000_000;
/// Longest load phase the opaque clock covers.
const MAX_PHASE: Duration = Duration::from_secs(15 * 60);

/// One SEND_MESSAGE_V2 frame, encoded once; each send patches its opaque and UNIQ_KEY.
#[derive(Clone)]
struct FrameTemplate {
    /// The UNIQ_KEY prefix of this run (the 16 hex digits of the sequence follow).
    marker: String,
    frame: Vec<u8>,
    opaque_at: usize,
    uniq_at: usize,
}

impl FrameTemplate {
    /// Digits of the UNIQ_KEY that change per send.
    const UNIQ_DIGITS: usize = 16;

    /// `extra`: more properties (`name\u{1}value\u{2}` pairs) every send carries.
    fn new(topic: &str, queues: i32, size: usize, extra: &str) -> Result<Self> {
        let marker = format!("BENCH{:08X}", std::process::id());
        let born = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        // What a Java producer sends (V2 short header names); queueId -1: the broker
        // spreads the sends over the queues.
        let cmd = RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
            .with_opaque(OPAQUE_BASE)
            .with_ext("a", "bench_producer")
            .with_ext("b", topic)
            .with_ext("c", "TBW102")
            .with_ext("d", queues.to_string())
            .with_ext("e", "-1")
            .with_ext("f", "0")
            .with_ext("g", born.to_string())
            .with_ext("h", "0")
            .with_ext(
                "i",
                format!(
                    "UNIQ_KEY\u{1}{marker}{}\u{2}WAIT\u{1}true\u{2}TAGS\u{1}bench\u{2}{extra}",
                    "0".repeat(Self::UNIQ_DIGITS)
                ),
            )
            .with_ext("j", "0")
            .with_ext("k", "false")
            .with_ext("m", "false")
            .with_body(vec![b'x'; size]);
        let mut buf = bytes::BytesMut::new();
        mq_broker::remoting::frame::encode(&cmd, &mut buf)
            .map_err(|e| anyhow::anyhow!("encoding the send frame: {e}"))?;
        let frame = buf.to_vec();
        let find = |needle: &[u8]| {
            frame
                .windows(needle.len())
                .position(|w| w == needle)
                .map(|at| at + needle.len())
        };
        let opaque_at = find(format!("\"opaque\":{OPAQUE_BASE}").as_bytes())
            .context("no opaque in the encoded header")?
            - 10;
        let uniq_at = find(marker.as_bytes()).context("no UNIQ_KEY in the encoded header")?;
        Ok(Self {
            marker,
            frame,
            opaque_at,
            uniq_at,
        })
    }

    /// Appends the frame of send `seq`, sent `since_start` into the phase.
    fn write(&self, out: &mut Vec<u8>, seq: u64, since_start: Duration) {
        let at = out.len();
        out.extend_from_slice(&self.frame);
        let us = (since_start.as_micros() as u64).min(MAX_PHASE.as_micros() as u64);
        let opaque = format!("{}", OPAQUE_BASE as u64 + us);
        out[at + self.opaque_at..at + self.opaque_at + 10].copy_from_slice(opaque.as_bytes());
        let uniq = format!("{seq:016X}");
        out[at + self.uniq_at..at + self.uniq_at + Self::UNIQ_DIGITS]
            .copy_from_slice(uniq.as_bytes());
    }
}

/// `senders` sends kept in flight over `connections` fresh connections until the limit;
/// paced to `rate` sends/s in total when given. Each connection has a writer (frames
/// from the template, several per write when the window allows) and a reader (answers,
/// their latency from the opaque), so the generator costs little next to the broker.
async fn load(
    addr: &str,
    template: &FrameTemplate,
    senders: usize,
    connections: usize,
    limit: Limit,
    rate: Option<f64>,
) -> LoadResult {
    let connections = connections.clamp(1, senders.max(1));
    let start = Instant::now();
    let deadline = start + limit.duration.min(MAX_PHASE);
    let budget = Arc::new(AtomicU64::new(limit.messages.unwrap_or(u64::MAX)));
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        // This connection's share of the senders and of the rate.
        let window = senders / connections + usize::from(c < senders % connections);
        let interval = rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(connections as f64 / r));
        let (addr, template) = (addr.to_owned(), template.clone());
        let (budget, seq) = (budget.clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let conn = Conn {
                start,
                deadline,
                window,
                interval,
                budget,
                seq,
            };
            conn.run(&addr, &template).await
        }));
    }
    let mut total = LoadResult::default();
    for task in tasks {
        match task.await {
            Ok(Ok(r)) => total.add(r),
            Ok(Err(e)) => eprintln!("a load connection failed: {e:#}"),
            Err(e) => eprintln!("a load connection panicked: {e}"),
        }
    }
    total.elapsed = start.elapsed();
    total.latency.sort();
    total
}

/// One load connection.
struct Conn {
    start: Instant,
    deadline: Instant,
    window: usize,
    interval: Option<Duration>,
    budget: Arc<AtomicU64>,
    seq: Arc<AtomicU64>,
}

impl Conn {
    async fn run(self, addr: &str, template: &FrameTemplate) -> Result<LoadResult> {
        use tokio::io::AsyncWriteExt;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let slots = Arc::new(tokio::sync::Semaphore::new(self.window));
        let start = self.start;
        let reader = tokio::spawn({
            let slots = slots.clone();
            async move {
                let mut reader = mq_broker::remoting::CommandReader::new(
                    read,
                    mq_broker::remoting::DEFAULT_MAX_FRAME,
                );
                let mut r = LoadResult::default();
                while let Ok(Some(answer)) = reader.read_command().await {
                    let sent = u64::try_from(answer.opaque - OPAQUE_BASE).unwrap_or(0);
                    let now = start.elapsed().as_micros() as u64;
                    match answer.code {
                        response_code::SUCCESS => {
                            r.ok += 1;
                            r.latency
                                .record(Duration::from_micros(now.saturating_sub(sent)));
                        }
                        response_code::SYSTEM_BUSY => r.busy += 1,
                        code => {
                            if r.errors == 0 {
                                eprintln!(
                                    "send answered {code}: {}",
                                    answer.remark.unwrap_or_default()
                                );
                            }
                            r.errors += 1;
                        }
                    }
                    slots.add_permits(1);
                }
                r
            }
        });
        let mut next = self
            .interval
            .map(|iv| Instant::now() + iv.mul_f64(rand_fraction()));
        let mut out = Vec::with_capacity(64 * 1024);
        let mut sent = 0u64;
        loop {
            if let (Some(at), Some(iv)) = (next.as_mut(), self.interval) {
                tokio::time::sleep_until((*at).into()).await;
                *at += iv;
            }
            let Ok(slot) = slots.acquire().await else {
                break;
            };
            slot.forget();
            let mut frames = 1;
            // Unpaced: every free slot now, in one write.
            while self.interval.is_none() && out.len() < 60 * 1024 {
                match slots.try_acquire() {
                    Ok(slot) => {
                        slot.forget();
                        frames += 1;
                    }
                    Err(_) => break,
                }
            }
            let (mut built, mut done) = (0, false);
            for _ in 0..frames {
                let took = self
                    .budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_ok();
                if !took || Instant::now() >= self.deadline {
                    done = true;
                    break;
                }
                let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                template.write(&mut out, seq, self.start.elapsed());
                built += 1;
            }
            slots.add_permits(frames - built);
            if built > 0 {
                write.write_all(&out).await?;
                out.clear();
                sent += built as u64;
            }
            if done {
                break;
            }
        }
        // Every answer in (all slots back), then close; the broker closes its side.
        let drained = tokio::time::timeout(
            REQUEST_TIMEOUT,
            slots.acquire_many(u32::try_from(self.window).unwrap_or(u32::MAX)),
        )
        .await;
        let _ = write.shutdown().await;
        drop(write);
        let mut r = match tokio::time::timeout(REQUEST_TIMEOUT, reader).await {
            Ok(r) => r.context("the reader failed")?,
            Err(_) => LoadResult::default(),
        };
        if drained.is_err() {
            let answered = r.ok + r.busy + r.errors;
            r.errors += sent.saturating_sub(answered);
        }
        Ok(r)
    }
}

/// A fraction in [0, 1) that differs between connections (spreads paced starts).
fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() % 1_000_000) as f64 / 1e6
}

/// What the consume phase measured.
struct ConsumeResult {
    messages: u64,
    elapsed: Duration,
    stored_bytes: u64,
}

impl ConsumeResult {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Reads every message of the topic back with pipelined pulls: the queues are cut into
/// ranges of one pull each, and `--pullers` pulls are in flight at a time.
async fn consume(args: &BenchArgs, channels: &[Channel]) -> Result<ConsumeResult> {
    let mut ranges = vec![];
    for q in 0..args.queues {
        let req = RemotingCommand::new_request(request_code::GET_MAX_OFFSET)
            .with_ext("topic", args.topic.as_str())
            .with_ext("queueId", q.to_string());
        let answer = channels[0].request(req, REQUEST_TIMEOUT).await?;
        let max: i64 = answer
            .ext("offset")
            .and_then(|o| o.parse().ok())
            .with_context(|| format!("GET_MAX_OFFSET of queue {q} answered {}", answer.code))?;
        let step = i64::from(args.pull_batch.max(1));
        let mut from = 0;
        while from < max {
            ranges.push((q, from, (from + step).min(max)));
            from += step;
        }
    }
    let ranges = Arc::new(ranges);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = vec![];
    for i in 0..args.pullers {
        let channel = channels[i % channels.len()].clone();
        let (ranges, next) = (ranges.clone(), next.clone());
        let (topic, batch) = (args.topic.clone(), args.pull_batch);
        tasks.push(tokio::spawn(async move {
            let (mut messages, mut bytes) = (0u64, 0u64);
            while let Some(&(queue, mut from, to)) =
                ranges.get(next.fetch_add(1, Ordering::Relaxed))
            {
                while from < to {
                    let (n, size, next_offset) = pull(&channel, &topic, queue, from, batch).await?;
                    messages += n;
                    bytes += size;
                    if next_offset <= from {
                        break;
                    }
                    from = next_offset;
                }
            }
            Ok::<_, anyhow::Error>((messages, bytes))
        }));
    }
    let (mut messages, mut stored_bytes) = (0, 0);
    for task in tasks {
        let (n, b) = task.await.context("a puller failed")??;
        messages += n;
        stored_bytes += b;
    }
    Ok(ConsumeResult {
        messages,
        elapsed: start.elapsed(),
        stored_bytes,
    })
}

/// One pull: messages and bytes received, and the next offset.
/// `samples` QUERY_MESSAGE lookups by unique key of random sends among the first `sent`
/// of a phase, one at a time: their latencies and how many found their message.
async fn query_phase(
    channel: &Channel,
    topic: &str,
    marker: &str,
    sent: u64,
    samples: usize,
) -> Result<(Latencies, u64)> {
    let mut lat = Latencies::default();
    let mut found = 0;
    for _ in 0..samples {
        let seq = ((rand_fraction() * sent as f64) as u64).min(sent.saturating_sub(1));
        let req = RemotingCommand::new_request(request_code::QUERY_MESSAGE)
            .with_ext("topic", topic)
            .with_ext("key", format!("{marker}{seq:016X}"))
            .with_ext("maxNum", "32")
            .with_ext("beginTimestamp", "0")
            .with_ext("endTimestamp", i64::MAX.to_string())
            .with_ext("_UNIQUE_KEY_QUERY", "true");
        let started = Instant::now();
        let answer = channel.request(req, REQUEST_TIMEOUT).await?;
        lat.record(started.elapsed());
        match answer.code {
            response_code::SUCCESS => found += 1,
            response_code::QUERY_NOT_FOUND => {}
            code => bail!(
                "query answered {code}: {}",
                answer.remark.unwrap_or_default()
            ),
        }
    }
    Ok((lat, found))
}

async fn pull(
    channel: &Channel,
    topic: &str,
    queue: i32,
    offset: i64,
    batch: i32,
) -> Result<(u64, u64, i64)> {
    let req = mq_broker::client::pull_request(GROUP, topic, queue, offset, batch);
    let answer = channel.request(req, REQUEST_TIMEOUT).await?;
    if answer.code != response_code::SUCCESS {
        bail!(
            "pull of queue {queue} at {offset} answered {}: {}",
            answer.code,
            answer.remark.unwrap_or_default()
        );
    }
    let next: i64 = answer
        .ext("nextBeginOffset")
        .and_then(|o| o.parse().ok())
        .context("pull answer without nextBeginOffset")?;
    let body = answer.body.unwrap_or_default();
    Ok((count_messages(&body), body.len() as u64, next))
}

/// Messages in a pull body: stored messages back to back, each led by its i32 size.
fn count_messages(mut body: &[u8]) -> u64 {
    let mut n = 0;
    while body.len() >= 4 {
        let size = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        let Ok(size) = usize::try_from(size) else {
            break;
        };
        if size < 4 || size > body.len() {
            break;
        }
        body = &body[size..];
        n += 1;
    }
    n
}

/// A `mq-broker standalone` child on a temp store, killed if the bench fails.
struct ChildBroker {
    child: tokio::process::Child,
    pid: u32,
    broker: String,
    store_dir: PathBuf,
    remove_store: bool,
}

impl ChildBroker {
    async fn start(args: &BenchArgs) -> Result<Self> {
        let (store_dir, remove_store) = match &args.store_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "mq-bench-{}-{:?}",
                    std::process::id(),
                    args.flush
                )),
                true,
            ),
        };
        if remove_store {
            let _ = std::fs::remove_dir_all(&store_dir);
        }
        let exe = std::env::current_exe().context("finding the mq-broker binary")?;
        let flush = match args.flush {
            Flush::Async => "async",
            Flush::Sync => "sync",
        };
        let mut child = tokio::process::Command::new(exe)
            .args([
                "standalone",
                "--namesrv-listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--no-vip",
                "--flush",
                flush,
            ])
            .arg("--max-send-wait-ms")
            .arg(args.max_send_wait_ms.to_string())
            .arg("--store-dir")
            .arg(&store_dir)
            .env(
                "RUST_LOG",
                std::env::var("MQ_BENCH_BROKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting mq-broker standalone")?;
        let pid = child.id().context("the child has a pid")?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(60),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .context("the broker did not print its ready line within 60 s")??;
        let ready: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("the broker's ready line {line:?}"))?;
        let broker = ready["broker"]
            .as_str()
            .context("no broker address in the ready line")?
            .to_owned();
        Ok(Self {
            child,
            pid,
            broker,
            store_dir,
            remove_store,
        })
    }

    /// VmRSS and VmHWM of the child, in KiB.
    fn rss(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, then waits (bounded) for the clean stop; returns its status and duration.
    async fn stop(mut self) -> Result<(std::process::ExitStatus, Duration)> {
        let start = Instant::now();
        let pid = i32::try_from(self.pid).context("pid out of range")?;
        // SAFETY: signalling our own child by its pid (still ours: not yet waited for).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("the broker did not stop within 60 s of SIGTERM")??;
        let took = start.elapsed();
        if self.remove_store {
            let _ = std::fs::remove_dir_all(&self.store_dir);
        }
        Ok((status, took))
    }
}

/// Latencies in microseconds, sorted for exact quantiles (4 bytes a send: a minute at
/// 100,000 sends/s is 24 MB).
#[derive(Clone, Default)]
struct Latencies {
    us: Vec<u32>,
    sorted: bool,
}

impl Latencies {
    fn record(&mut self, d: Duration) {
        self.us
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        self.sorted = false;
    }

    fn merge(&mut self, other: Latencies) {
        self.us.extend(other.us);
        self.sorted = false;
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.us.sort_unstable();
            self.sorted = true;
        }
    }

    /// The `q` quantile (nearest rank); call [`Latencies::sort`] first.
    fn quantile(&self, q: f64) -> Duration {
        debug_assert!(self.sorted || self.us.len() < 2);
        if self.us.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * self.us.len() as f64).ceil() as usize).clamp(1, self.us.len());
        Duration::from_micros(u64::from(self.us[rank - 1]))
    }

    fn max(&self) -> Duration {
        Duration::from_micros(u64::from(self.us.iter().copied().max().unwrap_or(0)))
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", millis(d))
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn fmt_rss(rss: Option<(u64, u64)>) -> String {
    match rss {
        Some((now, peak)) => format!(
            "{:.1} MiB (peak {:.1} MiB)",
            now as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
        None => "n/a".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut l = Latencies::default();
        for us in (1..=1000u64).rev() {
            l.record(Duration::from_micros(us));
        }
        let mut other = Latencies::default();
        other.record(Duration::from_millis(50));
        l.merge(other);
        l.sort();
        assert_eq!(l.quantile(0.5), Duration::from_micros(501));
        assert_eq!(l.quantile(0.99), Duration::from_micros(991));
        assert_eq!(l.quantile(1.0), Duration::from_millis(50));
        assert_eq!(l.max(), Duration::from_millis(50));
        assert_eq!(Latencies::default().quantile(0.99), Duration::ZERO);
    }

    #[test]
    fn a_patched_template_is_a_valid_send_with_its_opaque_and_unique_key() {
        let t = FrameTemplate::new("BenchTopic", 8, 100, "").expect("template");
        let mut out = vec![];
        t.write(&mut out, 0xABC, Duration::from_micros(123_456));
        t.write(&mut out, 0xABD, Duration::from_micros(7));
        let mut buf = bytes::BytesMut::from(&out[..]);
        let max = mq_broker::remoting::DEFAULT_MAX_FRAME;
        let first = mq_broker::remoting::frame::decode(&mut buf, max)
            .expect("decodes")
            .expect("a whole frame");
        let second = mq_broker::remoting::frame::decode(&mut buf, max)
            .expect("decodes")
            .expect("a whole frame");
        assert!(buf.is_empty());
        assert_eq!(first.code, request_code::SEND_MESSAGE_V2);
        assert_eq!(first.opaque, OPAQUE_BASE + 123_456);
        assert_eq!(second.opaque, OPAQUE_BASE + 7);
        assert!(
            first
                .ext("i")
                .is_some_and(|p| p.contains("0000000000000ABC\u{2}"))
        );
        assert!(
            second
                .ext("i")
                .is_some_and(|p| p.contains("0000000000000ABD\u{2}"))
        );
        assert_eq!(first.ext("e"), Some("-1"));
        assert_eq!(first.body.as_deref().map(<[u8]>::len), Some(100));
    }

    #[test]
    fn pull_bodies_are_counted_message_by_message() {
        let mut body = vec![];
        for size in [20u32, 35, 4] {
            body.extend_from_slice(&size.to_be_bytes());
            body.resize(body.len() + size as usize - 4, 0);
        }
        assert_eq!(count_messages(&body), 3);
        assert_eq!(count_messages(&body[..body.len() - 1]), 2);
        assert_eq!(count_messages(&[]), 0);
    }
}

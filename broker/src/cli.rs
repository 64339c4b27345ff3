//! Command line of `mq-broker`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A RocketMQ-compatible name server and broker.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    /// Log output format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "MQ_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// On a fatal startup or store error, write one line saying why to this file before
    /// exiting (Kubernetes' `terminationMessagePath`; format:
    /// `mq_broker::store::termination`).
    #[arg(long, global = true, env = "MQ_TERMINATION_LOG")]
    pub termination_log: Option<PathBuf>,
    #[command(subcommand)]
    pub mode: Mode,
}

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What this process runs.
#[derive(Subcommand, Debug)]
pub enum Mode {
    /// A name server.
    Namesrv(NamesrvArgs),
    /// A broker registering with name servers (topics come from the operator).
    Broker(BrokerArgs),
    /// A name server and a broker in one process, auto-creating topics (local use).
    Standalone(StandaloneArgs),
    /// Admin commands against running name servers and brokers (the mqadmin habit); they
    /// need the instance's admin key (`--access-key`/`--secret-key`) wherever the servers
    /// have one.
    Admin(crate::admin_cli::AdminArgs),
    /// Load generator: pipelined sends and pulls against a broker (`make bench`).
    Bench(crate::bench::BenchArgs),
    /// Send messages to a topic through an instance's name servers (a quick check).
    Produce(crate::messaging_cli::ProduceArgs),
    /// Read a topic's messages as a consumer group and print them (a quick check).
    Consume(crate::messaging_cli::ConsumeArgs),
}

/// `--external-addr`: `host:port`.
fn external_addr(s: &str) -> Result<String, String> {
    mq_broker::conf::check_host_port(s).map(|()| s.to_owned())
}

/// Name-server settings.
#[derive(Args, Debug, Clone)]
pub struct NamesrvArgs {
    /// Address to serve on.
    #[arg(
        long = "listen",
        env = "MQ_NAMESRV_LISTEN",
        default_value = "0.0.0.0:9876"
    )]
    pub listen: SocketAddr,
    /// A second address to serve on, for clients outside the cluster: its route and
    /// cluster answers carry the brokers' external addresses, and it answers queries
    /// only (no registrations) [default: none].
    #[arg(long, env = "MQ_NAMESRV_EXTERNAL_LISTEN")]
    pub external_listen: Option<SocketAddr>,
    /// Seconds of silence after which a broker leaves the routes.
    #[arg(long, env = "MQ_BROKER_EXPIRY_SECS", default_value_t = 120)]
    pub broker_expiry_secs: u64,
    /// Instance id bare route queries are mapped into (instances with their own namespace).
    #[arg(long, env = "MQ_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Operations HTTP port (`/healthz`, `/livez`, `/metrics`); port 0 picks a free one
    /// [default: the `--listen` IP, port 9879 (0 when `--listen` uses port 0)].
    #[arg(long, env = "MQ_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// A `key=value` file with `aclEnable` and `aclFile` (as in broker.conf); a change of
    /// its `aclEnable` applies at once.
    #[arg(long, env = "MQ_NAMESRV_CONFIG")]
    pub config: Option<PathBuf>,
    /// ACL: registrations and other writes need the admin key's (or an admin account's)
    /// signature.
    #[command(flatten)]
    pub acl: AclArgs,
    /// TLS beside plaintext on the same ports (RocketMQ's `tls.server.mode=permissive`).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Connection limits of every port.
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// What peers can hold of each remoting port (name server, broker, VIP, TLS alike).
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Connections open at once on one port; more are closed at accept (logged, and
    /// counted in `mq_remoting_connections_refused_total`).
    #[arg(long, env = "MQ_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Connections open at once from one client IP on one port.
    #[arg(long, env = "MQ_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: usize,
    /// Seconds without a frame (and with nothing in flight, so a held long poll keeps
    /// it) after which a connection is closed, as RocketMQ does after 120 s; 0 = never.
    #[arg(long, env = "MQ_IDLE_TIMEOUT_SECS", default_value_t = 120)]
    pub idle_timeout_secs: u64,
    /// Seconds of silence before TCP keepalive probes a peer; 0 = keepalive off.
    #[arg(long, env = "MQ_TCP_KEEPALIVE_SECS", default_value_t = 30)]
    pub tcp_keepalive_secs: u64,
    /// Seconds a peer may read none of our output before its connection is closed.
    #[arg(long, env = "MQ_WRITE_TIMEOUT_SECS", default_value_t = 30)]
    pub write_timeout_secs: u64,
    /// Bytes of responses queued for one peer; past it, its requests wait (a peer that
    /// never reads pins at most this; gauge `mq_remoting_buffered_bytes`).
    #[arg(long, env = "MQ_MAX_BUFFERED_BYTES", default_value_t = 8 << 20)]
    pub max_buffered_bytes: usize,
    /// Bytes of requests one peer may have being handled at once (one frame of the
    /// largest size always fits).
    #[arg(long, env = "MQ_MAX_IN_FLIGHT_BYTES", default_value_t = 32 << 20)]
    pub max_in_flight_bytes: usize,
    /// Requests one peer may have being handled at once (long polls count).
    #[arg(long, env = "MQ_MAX_IN_FLIGHT_REQUESTS", default_value_t = 1024)]
    pub max_in_flight_requests: usize,
}

impl ConnectionArgs {
    /// The limits these flags describe.
    pub fn limits(&self) -> mq_broker::net::ConnectionLimits {
        let secs = |s: u64| (s > 0).then(|| std::time::Duration::from_secs(s));
        mq_broker::net::ConnectionLimits {
            max_connections: self.max_connections.max(1),
            max_per_ip: self.max_connections_per_ip.max(1),
            idle_timeout: secs(self.idle_timeout_secs),
            keepalive: secs(self.tcp_keepalive_secs),
            write_timeout: std::time::Duration::from_secs(self.write_timeout_secs.max(1)),
            max_buffered_bytes: self.max_buffered_bytes,
            max_in_flight_bytes: self.max_in_flight_bytes,
            max_in_flight_requests: self.max_in_flight_requests,
        }
    }
}

/// ACL settings of a name server or broker (see `mq_broker::acl`).
#[derive(Args, Clone, Default)]
pub struct AclArgs {
    /// Check requests against the ACL file (`--acl-enable` or `--acl-enable=false`)
    /// [default: the config file's `aclEnable`, else off]; a change of the config file's
    /// `aclEnable` applies at once, whatever this flag said (a file without it leaves ACL
    /// as it is). Admin requests are checked regardless when there is an admin key.
    #[arg(
        long = "acl-enable",
        env = "MQ_ACL_ENABLE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub enable: Option<bool>,
    /// The ACL file: Java's plain_acl.yml (YAML or its JSON form), re-read when it changes
    /// [default: the config file's `aclFile`].
    #[arg(long = "acl-file", env = "MQ_ACL_FILE")]
    pub file: Option<PathBuf>,
    /// Access key of this instance's admin key. With it (and `--admin-secret-key`), admin
    /// requests and broker registrations must be signed by this key (or an admin account
    /// of the ACL file) whether or not ACL is on; `--acl-enable` then only decides whether
    /// clients must sign. Give both or neither; without them admin requests and
    /// registrations are open to anyone while ACL is off.
    #[arg(long = "admin-access-key", env = "MQ_ADMIN_ACCESS_KEY")]
    pub admin_access_key: Option<String>,
    /// Secret key of this instance's admin key (see `--admin-access-key`).
    #[arg(
        long = "admin-secret-key",
        env = "MQ_ADMIN_SECRET_KEY",
        hide_env_values = true
    )]
    pub admin_secret_key: Option<String>,
}

impl AclArgs {
    /// The admin key: both halves or neither; one alone, or an empty one, is an error.
    pub fn admin_key(&self) -> Result<Option<mq_broker::acl::Credentials>, String> {
        match (&self.admin_access_key, &self.admin_secret_key) {
            (None, None) => Ok(None),
            (Some(ak), Some(sk)) if !ak.trim().is_empty() && !sk.is_empty() => Ok(Some(
                mq_broker::acl::Credentials::new(ak.trim(), sk.as_str()),
            )),
            (Some(_), Some(_)) => Err(
                "the admin key is empty: --admin-access-key (MQ_ADMIN_ACCESS_KEY) and \
                 --admin-secret-key (MQ_ADMIN_SECRET_KEY) must both be non-empty"
                    .into(),
            ),
            (Some(_), None) => Err("--admin-access-key (MQ_ADMIN_ACCESS_KEY) is given without \
                 --admin-secret-key (MQ_ADMIN_SECRET_KEY): give both or neither"
                .into()),
            (None, Some(_)) => Err("--admin-secret-key (MQ_ADMIN_SECRET_KEY) is given without \
                 --admin-access-key (MQ_ADMIN_ACCESS_KEY): give both or neither"
                .into()),
        }
    }
}

impl std::fmt::Debug for AclArgs {
    // The admin secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclArgs")
            .field("enable", &self.enable)
            .field("file", &self.file)
            .field("admin_access_key", &self.admin_access_key)
            .field(
                "admin_secret_key",
                &self.admin_secret_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// TLS settings of a name server or broker (see `mq_broker::net::tls`).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM certificate chain: with `--tls-key`, every remoting port (name server, broker,
    /// VIP channel) also accepts TLS clients; plaintext clients keep working. The files
    /// are re-read when they change (a renewed Secret applies without a restart).
    #[arg(long = "tls-cert", env = "MQ_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long = "tls-key", env = "MQ_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A new connection that sends no byte, or does not finish its TLS handshake, within
    /// this many milliseconds is closed (with TLS on).
    #[arg(
        long = "tls-handshake-timeout-ms",
        env = "MQ_TLS_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub tls_handshake_timeout_ms: u64,
}

/// Flush policy.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Flush {
    /// Acknowledge after the write; fsync periodically.
    Async,
    /// Acknowledge after fsync.
    Sync,
}

/// Broker settings.
#[derive(Args, Debug, Clone)]
pub struct BrokerArgs {
    /// Address to serve clients on (the VIP channel is served on port − 2 too).
    #[arg(long, env = "MQ_BROKER_LISTEN", default_value = "0.0.0.0:10911")]
    pub listen: SocketAddr,
    /// Address registered with the name servers (default: the listen address, or this
    /// host's first non-loopback IPv4 when listening on all interfaces).
    #[arg(long, env = "MQ_ADVERTISE_ADDR")]
    pub advertise_addr: Option<SocketAddr>,
    /// `host:port` clients outside the cluster reach this broker on, registered beside
    /// the advertised address (name servers give it on their external port) [default:
    /// the config file's `externalAddr.<brokerName>`, else none].
    #[arg(long, env = "MQ_EXTERNAL_ADDR", value_parser = external_addr)]
    pub external_addr: Option<String>,
    /// Name servers, `host:port;host:port` [default: the config file's `namesrvAddr`,
    /// else 127.0.0.1:9876, or the embedded name server in standalone mode].
    #[arg(long, env = "NAMESRV_ADDR")]
    pub namesrv_addr: Option<String>,
    /// Store directory [default: the config file's `storePathRootDir`, else `$HOME/store`].
    #[arg(long, env = "MQ_STORE_DIR")]
    pub store_dir: Option<PathBuf>,
    /// When a send is acknowledged [default: the config file's `flushDiskType`, else async].
    #[arg(long, value_enum, env = "MQ_FLUSH")]
    pub flush: Option<Flush>,
    /// Broker name [default: the config file's `brokerName`, else broker-a]; `{ordinal}`
    /// in it becomes the StatefulSet ordinal ending $HOSTNAME.
    #[arg(long, env = "MQ_BROKER_NAME")]
    pub broker_name: Option<String>,
    /// Cluster name [default: the config file's `brokerClusterName`, else DefaultCluster].
    #[arg(long, env = "MQ_CLUSTER")]
    pub cluster: Option<String>,
    /// Instance id whose namespace names are canonicalised into.
    #[arg(long, env = "MQ_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Delay levels (RocketMQ's `messageDelayLevel`).
    #[arg(long, env = "MQ_DELAY_LEVELS", default_value = mq_broker::broker::DEFAULT_DELAY_LEVELS)]
    pub delay_levels: String,
    /// Scheduled messages (`TIMER_DELIVER_MS`, `__STARTDELIVERTIME`, ...) may be at most
    /// this many seconds ahead (RocketMQ's `timerMaxDelaySec`; default 40 days).
    #[arg(long, env = "MQ_TIMER_MAX_DELAY_SECS", default_value_t = 40 * 86_400)]
    pub timer_max_delay_secs: u64,
    /// Commit-log segments whose messages are all older than this are deleted
    /// (RocketMQ's `fileReservedTime`, 72 h); checked every 10 s, or as often as this.
    #[arg(long, env = "MQ_RETENTION_SECS", default_value_t = 72 * 3600)]
    pub retention_secs: u64,
    /// Commit-log segment size in bytes.
    #[arg(long, env = "MQ_SEGMENT_SIZE", default_value_t = 1 << 30)]
    pub segment_size: u64,
    /// Disk blocks reserved ahead of the commit log's write position at a time
    /// (`fallocate`), so that a full disk refuses a send before anything is written
    /// instead of failing an fsync later; 0 turns it off. At most one segment.
    #[arg(long, env = "MQ_PREALLOCATE_BYTES", default_value_t = 16 << 20)]
    pub preallocate_bytes: u64,
    /// Sends are refused ("disk full") while the store's volume is at least 90 % used and
    /// has fewer than this many bytes available (256 MiB).
    #[arg(long, env = "MQ_DISK_RESERVE_BYTES", default_value_t = 256 << 20)]
    pub disk_reserve_bytes: u64,
    /// Let recovery cut a damaged commit log it would otherwise refuse to start with
    /// (damage below what was fsynced, before valid messages, or a missing segment),
    /// dropping everything after the damage. Use once, after reading why it refused.
    #[arg(long, env = "MQ_RECOVER_TRUNCATE")]
    pub recover_truncate: bool,
    /// Seconds between registrations with the name servers.
    #[arg(long, env = "MQ_REGISTER_INTERVAL_SECS", default_value_t = 30)]
    pub register_interval_secs: u64,
    /// Do not serve the VIP channel (port − 2).
    #[arg(long, env = "MQ_NO_VIP")]
    pub no_vip: bool,
    /// A `broker.conf`-style `key=value` file (namesrvAddr, brokerName, brokerClusterName,
    /// storePathRootDir, flushDiskType, waitTimeMillsInSendQueue, aclEnable, aclFile,
    /// maxSendTps, maxReceiveTps, transactionTimeOut, transactionCheckInterval,
    /// transactionCheckMax). Flags and their env variables win over it at start;
    /// its `namesrvAddr`, `aclEnable`, `maxSendTps` and `maxReceiveTps` are re-read every
    /// second and a change applies at once; a re-read file without `aclEnable`,
    /// `maxSendTps` or `maxReceiveTps` leaves that setting as it is (see `mq_broker::conf`).
    #[arg(long, env = "MQ_BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Operations HTTP port (`/healthz`, `/livez`, `/metrics`); port 0 picks a free one
    /// [default: the `--listen` IP, port 10912 (0 when `--listen` uses port 0)].
    #[arg(long, env = "MQ_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// A send that waited this long for the store is answered SYSTEM_BUSY (0 refuses
    /// every send) [default: the config file's `waitTimeMillsInSendQueue`, else 200].
    #[arg(long, env = "MQ_MAX_SEND_WAIT_MS")]
    pub max_send_wait_ms: Option<u64>,
    /// Largest message body in bytes (a batch: its bodies together); larger sends are
    /// refused with MESSAGE_ILLEGAL, and a frame larger than this plus 1 MiB of headers
    /// closes its connection [default: the config file's `maxMessageSize`, else 4 MiB].
    #[arg(long, env = "MQ_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// On SIGTERM, how long requests already received may take to be answered before
    /// the store is flushed and closed anyway.
    #[arg(long, env = "MQ_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,
    /// Messages per second this broker accepts from producers; more are refused with
    /// SYSTEM_BUSY (0: unlimited) [default: the config file's `maxSendTps`, else 0].
    #[arg(long, env = "MQ_MAX_SEND_TPS")]
    pub max_send_tps: Option<u64>,
    /// Messages per second this broker hands to consumers; pulls beyond wait (0:
    /// unlimited) [default: the config file's `maxReceiveTps`, else 0].
    #[arg(long, env = "MQ_MAX_RECEIVE_TPS")]
    pub max_receive_tps: Option<u64>,
    /// Milliseconds the broker waits for a consumer client it relays an admin call to
    /// (running info, consume directly) before answering that it timed out.
    #[arg(long, env = "MQ_CLIENT_CALL_TIMEOUT_MS", default_value_t = 5000)]
    pub client_call_timeout_ms: u64,
    /// After an offset reset, at most this many seconds during which a group's commits
    /// that would undo it are ignored (until its client pulls from the reset offset).
    #[arg(long, env = "MQ_RESET_GUARD_SECS", default_value_t = 30)]
    pub reset_guard_secs: u64,
    /// Most statistics series (topics, group × topic pairs) counted per minute; beyond it
    /// new series are not tracked (a log line and `mq_broker_stats_untracked_total` say so).
    #[arg(long, env = "MQ_STATS_MAX_SERIES", default_value_t = 10_000)]
    pub stats_max_series: usize,
    /// Width of a statistics bucket in ms: one minute; tests shorten it.
    #[arg(
        long,
        env = "MQ_STATS_BUCKET_MS",
        default_value_t = 60_000,
        hide = true
    )]
    pub stats_bucket_ms: i64,
    /// A half message without `CHECK_IMMUNITY_TIME_IN_SECONDS` is first checked back this
    /// long after it was stored [default: the config file's `transactionTimeOut`, else
    /// 6000].
    #[arg(long, env = "MQ_TRANSACTION_TIMEOUT_MS")]
    pub transaction_timeout_ms: Option<u64>,
    /// Time between check-backs of a pending half [default: the config file's
    /// `transactionCheckInterval`, else 60000].
    #[arg(long, env = "MQ_TRANSACTION_CHECK_INTERVAL_MS")]
    pub transaction_check_interval_ms: Option<u64>,
    /// Check-backs before a pending half is rolled back [default: the config file's
    /// `transactionCheckMax`, else 15].
    #[arg(long, env = "MQ_TRANSACTION_CHECK_MAX")]
    pub transaction_check_max: Option<u32>,
    /// ACL: admin requests need the admin key's signature; with ACL on, every client
    /// request must be signed and granted too.
    #[command(flatten)]
    pub acl: AclArgs,
    /// TLS beside plaintext on the same ports (RocketMQ's `tls.server.mode=permissive`).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Connection limits of every port.
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// Standalone settings: a broker plus its own name server.
#[derive(Args, Debug, Clone)]
pub struct StandaloneArgs {
    /// Address of the embedded name server.
    #[arg(long, env = "MQ_NAMESRV_LISTEN", default_value = "0.0.0.0:9876")]
    pub namesrv_listen: SocketAddr,
    /// Broker settings (`--namesrv-addr` defaults to the embedded name server).
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Sets up logging to stderr (stdout carries the ready line).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

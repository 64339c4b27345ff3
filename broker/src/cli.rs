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
    /// Seconds of silence after which a broker leaves the routes.
    #[arg(long, env = "MQ_BROKER_EXPIRY_SECS", default_value_t = 120)]
    pub broker_expiry_secs: u64,
    /// Instance id bare route queries are mapped into (instances with their own namespace).
    #[arg(long, env = "MQ_INSTANCE_ID")]
    pub instance_id: Option<String>,
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
    /// Name servers, `host:port;host:port`.
    #[arg(long, env = "NAMESRV_ADDR", default_value = "127.0.0.1:9876")]
    pub namesrv_addr: String,
    /// Store directory (default `$HOME/store`).
    #[arg(long, env = "MQ_STORE_DIR")]
    pub store_dir: Option<PathBuf>,
    /// When a send is acknowledged.
    #[arg(long, value_enum, env = "MQ_FLUSH", default_value = "async")]
    pub flush: Flush,
    /// Broker name.
    #[arg(long, env = "MQ_BROKER_NAME", default_value = "broker-a")]
    pub broker_name: String,
    /// Cluster name.
    #[arg(long, env = "MQ_CLUSTER", default_value = "DefaultCluster")]
    pub cluster: String,
    /// Instance id whose namespace names are canonicalised into.
    #[arg(long, env = "MQ_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Delay levels (RocketMQ's `messageDelayLevel`).
    #[arg(long, env = "MQ_DELAY_LEVELS", default_value = mq_broker::broker::DEFAULT_DELAY_LEVELS)]
    pub delay_levels: String,
    /// Commit-log segment size in bytes.
    #[arg(long, env = "MQ_SEGMENT_SIZE", default_value_t = 1 << 30)]
    pub segment_size: u64,
    /// Seconds between registrations with the name servers.
    #[arg(long, env = "MQ_REGISTER_INTERVAL_SECS", default_value_t = 30)]
    pub register_interval_secs: u64,
    /// Do not serve the VIP channel (port − 2).
    #[arg(long, env = "MQ_NO_VIP")]
    pub no_vip: bool,
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

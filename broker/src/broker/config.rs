//! How a broker is set up.

use crate::acl::Acl;
use crate::names::Namespace;
use std::path::PathBuf;
use std::time::Duration;

/// RocketMQ's default delay levels (`messageDelayLevel`), levels 1–18.
pub const DEFAULT_DELAY_LEVELS: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

/// Broker settings; [`BrokerConfig::new`] gives Apache RocketMQ's defaults.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Broker (group) name, e.g. `broker-0`.
    pub broker_name: String,
    /// Cluster name.
    pub cluster: String,
    /// 0: this broker is its group's master (the only kind we run).
    pub broker_id: i64,
    /// `ip:port` registered with the name servers (what clients connect to).
    pub advertised_addr: String,
    /// `host:port` clients outside the cluster reach this broker on, registered beside
    /// `advertised_addr` (none: not reachable from outside); changes at run time.
    pub external_addr: crate::conf::Live<Option<String>>,
    /// Name servers to register with.
    pub namesrv_addrs: Vec<String>,
    /// The instance namespace names are canonicalised into.
    pub namespace: Namespace,
    /// Where topics, groups and offsets are kept.
    pub data_dir: PathBuf,
    /// Create unknown topics on first send (standalone mode); off when an operator owns topics.
    pub auto_create_topics: bool,
    /// Create unknown consumer groups on first use (standalone mode).
    pub auto_create_groups: bool,
    /// Queues of an auto-created topic.
    pub default_topic_queues: i32,
    /// Time between registrations with the name servers (Java: 30 s).
    pub register_interval: Duration,
    /// Clients silent this long are dropped (Java: 120 s).
    pub client_idle_timeout: Duration,
    /// Ordered-consumption queue locks expire after this (Java: 60 s).
    pub lock_expiry: Duration,
    /// Longest a pull is held waiting for messages, whatever the client asks.
    pub max_pull_hold: Duration,
    /// Delay of each level (`DELAY` property, retries), level 1 first.
    pub delay_levels: Vec<Duration>,
    /// Time between writes of consumer offsets to disk.
    pub offset_persist_interval: Duration,
    /// A send that waited this long for the store is answered `SYSTEM_BUSY`
    /// (Java's `waitTimeMillsInSendQueue`, 200 ms; see `gate.rs`).
    pub max_send_wait: Duration,
    /// The ACL requests are checked against (off by default; live, shared).
    pub acl: Acl,
    /// Send and receive TPS limits (unlimited by default; live, shared).
    pub limits: super::limits::Limits,
    /// Longest the broker waits for a client it relays a call to (307, 309).
    pub client_call_timeout: Duration,
    /// After an offset reset, how long stale commits of the group are ignored at most.
    pub reset_offset_guard: Duration,
    /// Width of a statistics bucket in ms (one minute; shorter only in tests).
    pub stats_bucket_ms: i64,
    /// Most statistics series (topics + group × topic pairs) tracked.
    pub stats_max_series: usize,
    /// Transaction check timing and limit.
    pub transactions: super::transaction::TransactionConfig,
    /// How far ahead a message may be scheduled (`TIMER_DELIVER_MS` and kin; 40 days).
    pub timer_max_delay: Duration,
}

impl BrokerConfig {
    /// Defaults for a broker keeping its state under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            broker_name: "broker-a".to_owned(),
            cluster: "DefaultCluster".to_owned(),
            broker_id: 0,
            advertised_addr: "127.0.0.1:10911".to_owned(),
            external_addr: crate::conf::Live::new(None, None, None),
            namesrv_addrs: vec![],
            namespace: Namespace::default(),
            data_dir: data_dir.into(),
            auto_create_topics: false,
            auto_create_groups: false,
            default_topic_queues: 8,
            register_interval: Duration::from_secs(30),
            client_idle_timeout: Duration::from_secs(120),
            lock_expiry: Duration::from_secs(60),
            max_pull_hold: Duration::from_secs(30),
            delay_levels: parse_delay_levels(DEFAULT_DELAY_LEVELS).unwrap_or_default(),
            offset_persist_interval: Duration::from_secs(5),
            max_send_wait: super::gate::DEFAULT_MAX_SEND_WAIT,
            acl: Acl::default(),
            limits: super::limits::Limits::default(),
            client_call_timeout: Duration::from_secs(5),
            reset_offset_guard: Duration::from_secs(30),
            stats_bucket_ms: super::minute_stats::DEFAULT_BUCKET_MS,
            stats_max_series: super::minute_stats::DEFAULT_MAX_SERIES,
            transactions: super::transaction::TransactionConfig::default(),
            timer_max_delay: super::timer::DEFAULT_TIMER_MAX_DELAY,
        }
    }
}

/// Parses a delay table like `1s 5s 10s 1m 2h` (units ms, s, m, h, d).
pub fn parse_delay_levels(table: &str) -> Result<Vec<Duration>, String> {
    table
        .split_whitespace()
        .map(|level| {
            let split = level
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(level.len());
            let (n, unit) = level.split_at(split);
            let n: u64 = n
                .parse()
                .map_err(|_| format!("bad delay level {level:?}"))?;
            let millis = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(format!("bad unit in delay level {level:?}")),
            };
            Ok(Duration::from_millis(n * millis))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_delay_table_has_rocketmqs_18_levels() {
        let levels = parse_delay_levels(DEFAULT_DELAY_LEVELS).unwrap();
        assert_eq!(levels.len(), 18);
        assert_eq!(levels[0], Duration::from_secs(1));
        assert_eq!(levels[17], Duration::from_secs(7200));
        assert_eq!(
            parse_delay_levels("100ms 1s").unwrap()[0],
            Duration::from_millis(100)
        );
        assert!(parse_delay_levels("5x").is_err());
    }
}

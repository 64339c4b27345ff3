//! Broker settings from flags, env and the config file, in that order of precedence
//! (a flag or its environment variable, then the file, then the built-in default).
//! The file format and what is re-read at run time: `mq_broker::conf`.

use crate::cli::{AclArgs, BrokerArgs, Flush};
use anyhow::{Context, Result};
use mq_broker::acl::watch::AclWatch;
use mq_broker::acl::{Acl, AclTable};
use mq_broker::broker::limits::Limits;
use mq_broker::broker::transaction::TransactionConfig;
use mq_broker::conf::{self, FileWatch, Live, NamesrvList, Properties};
use mq_broker::names::Namespace;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name server a broker registers with when nothing else says.
const DEFAULT_NAMESRV: &str = "127.0.0.1:9876";

/// The config file as read at start, and its watch.
pub struct FileSettings {
    props: Properties,
    /// Polls the file for changes of the live keys (when there is a file).
    pub watch: Option<FileWatch>,
}

impl FileSettings {
    /// Reads `path`, or nothing when there is no config file.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self {
                props: Properties::default(),
                watch: None,
            });
        };
        let (watch, props) = FileWatch::open(path)?;
        tracing::info!(file = %path.display(), "read the config file");
        Ok(Self {
            props,
            watch: Some(watch),
        })
    }

    /// The store directory.
    pub fn store_dir(&self, args: &BrokerArgs) -> PathBuf {
        args.store_dir
            .clone()
            .or_else(|| self.props.get(conf::STORE_PATH_ROOT_DIR).map(PathBuf::from))
            .unwrap_or_else(crate::run::default_store_dir)
    }

    /// The flush policy (`flushDiskType` is `ASYNC_FLUSH` or `SYNC_FLUSH`).
    pub fn flush(&self, args: &BrokerArgs) -> Result<Flush> {
        if let Some(flush) = args.flush {
            return Ok(flush);
        }
        match self.props.get(conf::FLUSH_DISK_TYPE) {
            None => Ok(Flush::Async),
            Some(v) if v.eq_ignore_ascii_case("SYNC_FLUSH") => Ok(Flush::Sync),
            Some(v) if v.eq_ignore_ascii_case("ASYNC_FLUSH") => Ok(Flush::Async),
            Some(v) => anyhow::bail!(
                "config file: {} must be ASYNC_FLUSH or SYNC_FLUSH, not {v:?}",
                conf::FLUSH_DISK_TYPE
            ),
        }
    }

    /// The broker name. `{ordinal}` in it becomes the StatefulSet ordinal of this pod
    /// (the number ending `$HOSTNAME`), so one pod template names every broker
    /// `broker-0`, `broker-1`, ...
    pub fn broker_name(&self, args: &BrokerArgs) -> String {
        let name = args
            .broker_name
            .clone()
            .or_else(|| self.props.get(conf::BROKER_NAME).map(str::to_owned))
            .unwrap_or_else(|| "broker-a".to_owned());
        let hostname = std::env::var("HOSTNAME").unwrap_or_default();
        expand_ordinal(&name, &hostname)
    }

    /// The one offset recovery may cut this broker's damaged commit log at
    /// (`recoverTruncateAt.<brokerName>`), if the file names one.
    pub fn recover_truncate_at(&self, broker_name: &str) -> Result<Option<u64>> {
        let key = format!("{}{broker_name}", conf::RECOVER_TRUNCATE_AT_PREFIX);
        self.props
            .u64(&key)
            .map_err(|e| anyhow::anyhow!("config file: {key}: {e}"))
    }

    /// The cluster name.
    pub fn cluster(&self, args: &BrokerArgs) -> String {
        args.cluster
            .clone()
            .or_else(|| self.props.get(conf::BROKER_CLUSTER_NAME).map(str::to_owned))
            .unwrap_or_else(|| "DefaultCluster".to_owned())
    }

    /// How long a send may wait for the store.
    pub fn max_send_wait(&self, args: &BrokerArgs) -> Result<Duration> {
        let millis = match (
            args.max_send_wait_ms,
            self.props.get(conf::WAIT_TIME_MILLS_IN_SEND_QUEUE),
        ) {
            (Some(ms), _) => ms,
            (None, Some(v)) => v.parse().with_context(|| {
                format!(
                    "config file: {} must be milliseconds, not {v:?}",
                    conf::WAIT_TIME_MILLS_IN_SEND_QUEUE
                )
            })?,
            (None, None) => return Ok(mq_broker::broker::gate::DEFAULT_MAX_SEND_WAIT),
        };
        Ok(Duration::from_millis(millis))
    }

    /// The largest message body (bytes), checked against the commit-log segment it must
    /// fit in.
    pub fn max_message_size(&self, args: &BrokerArgs) -> Result<usize> {
        let size = match (
            args.max_message_size,
            self.props.get(conf::MAX_MESSAGE_SIZE),
        ) {
            (Some(size), _) => size,
            (None, Some(v)) => v.trim().parse().with_context(|| {
                format!(
                    "config file: {} must be a number of bytes, not {v:?}",
                    conf::MAX_MESSAGE_SIZE
                )
            })?,
            // The default shrinks with a small segment (tests, tiny volumes).
            (None, None) => mq_broker::store::DEFAULT_MAX_BODY_BYTES
                .min((args.segment_size / 4) as usize)
                .max(1024),
        };
        let most = (args.segment_size / 4).min(256 << 20) as usize;
        if !(1024..=most).contains(&size) {
            anyhow::bail!(
                "the maximum message size must be between 1024 bytes and {most} (a quarter of a commit-log segment, at most 256 MiB), not {size}"
            );
        }
        Ok(size)
    }

    /// Transaction check timing: flags, else the file's `transactionTimeOut`,
    /// `transactionCheckInterval` (ms) and `transactionCheckMax`, else Java's defaults.
    pub fn transactions(&self, args: &BrokerArgs) -> Result<TransactionConfig> {
        use mq_broker::broker::transaction::{CONF_CHECK_INTERVAL, CONF_CHECK_MAX, CONF_TIMEOUT};
        let default = TransactionConfig::default();
        let number = |flag: Option<u64>, key: &str, default: u64| -> Result<u64> {
            match (flag, self.props.get(key)) {
                (Some(v), _) => Ok(v),
                (None, Some(v)) => v.trim().parse().with_context(|| {
                    format!("config file: {key} must be a whole number, not {v:?}")
                }),
                (None, None) => Ok(default),
            }
        };
        let millis = |d: Duration| d.as_millis() as u64;
        Ok(TransactionConfig {
            timeout: Duration::from_millis(number(
                args.transaction_timeout_ms,
                CONF_TIMEOUT,
                millis(default.timeout),
            )?),
            check_interval: Duration::from_millis(
                number(
                    args.transaction_check_interval_ms,
                    CONF_CHECK_INTERVAL,
                    millis(default.check_interval),
                )?
                .max(1),
            ),
            check_max: u32::try_from(number(
                args.transaction_check_max.map(u64::from),
                CONF_CHECK_MAX,
                u64::from(default.check_max),
            )?)
            .context("transactionCheckMax is too large")?,
        })
    }

    /// The file's external address of broker `broker_name` (`externalAddr.<name>`).
    pub fn external_addr(&self, broker_name: &str) -> Option<String> {
        self.props.external_addr(broker_name)
    }

    /// The name servers, live: flag/env, else the file, else the embedded name server
    /// (standalone) or 127.0.0.1:9876; later changes of the file's `namesrvAddr` apply.
    pub fn namesrv_list(&self, args: &BrokerArgs, embedded: Option<SocketAddr>) -> NamesrvList {
        let default = match embedded {
            Some(addr) => vec![addr.to_string()],
            None => vec![DEFAULT_NAMESRV.to_owned()],
        };
        let flag = args
            .namesrv_addr
            .as_deref()
            .map(conf::parse_addr_list)
            .filter(|l| !l.is_empty());
        NamesrvList::new(flag, self.props.namesrv_addrs(), default)
    }
}

/// A process's ACL and the setting that switches it on and off.
pub struct AclSettings {
    /// The live ACL the servers check requests against.
    pub acl: Acl,
    /// `aclEnable`: flag/env, else the config file, else off; the file's changes apply.
    pub enable: Live<bool>,
    /// Watches the ACL file (when there is one).
    pub watch: Option<AclWatch>,
}

impl FileSettings {
    /// The ACL: on when `--acl-enable` or the file's `aclEnable` says so, with the
    /// accounts of `--acl-file` or the file's `aclFile`, and the admin key of
    /// `--admin-access-key`/`--admin-secret-key` (both or neither). A missing or bad ACL
    /// file stops the start when ACL is on and there is no admin key; with an admin key
    /// (the accounts may still be on their way to the pod) or with ACL off it is only
    /// logged, and re-read until valid.
    pub fn acl(&self, args: &AclArgs, ns: &Namespace) -> Result<AclSettings> {
        let admin_key = args.admin_key().map_err(anyhow::Error::msg)?;
        let from_file = self
            .props
            .bool(conf::ACL_ENABLE)
            .map_err(|e| anyhow::anyhow!("config file: {e}"))?;
        let enable = Live::new(args.enable, from_file, false);
        let on = enable.get();
        let path = args
            .file
            .clone()
            .or_else(|| self.props.get(conf::ACL_FILE).map(PathBuf::from));
        let Some(path) = path else {
            anyhow::ensure!(
                !on,
                "ACL is on but no ACL file is given (--acl-file, or {} in the config file)",
                conf::ACL_FILE
            );
            return Ok(AclSettings {
                acl: Acl::with_admin_key(false, AclTable::default(), admin_key),
                enable,
                watch: None,
            });
        };
        let has_key = admin_key.is_some();
        let (table, watch) = match AclWatch::open(&path, ns.clone()) {
            Ok((watch, table)) => {
                tracing::info!(file = %path.display(), accounts = table.len(), enabled = on, admin_key = has_key, "ACL");
                if table.signer().is_none() && !has_key {
                    tracing::warn!(
                        "the ACL file has no admin account and there is no admin key: registrations go unsigned, and name servers with ACL on refuse them"
                    );
                }
                (table, watch)
            }
            Err(e) if on && !has_key => return Err(e).context("ACL is on"),
            Err(e) => {
                if on {
                    tracing::warn!(error = %e, "ACL is on but the ACL file cannot be used yet (missing, unreadable or invalid): client requests are refused and only the admin key is accepted until it can; it is re-read until valid");
                } else {
                    tracing::warn!(error = %e, "ACL is off; the ACL file is re-read until it is valid");
                }
                (AclTable::default(), AclWatch::unread(&path, ns.clone()))
            }
        };
        Ok(AclSettings {
            acl: Acl::with_admin_key(on, table, admin_key),
            enable,
            watch: Some(watch),
        })
    }
}

/// A broker's TPS limits and the settings that change them.
pub struct TpsSettings {
    /// The live limits the broker enforces.
    pub limits: Limits,
    /// `maxSendTps`: flag/env, else the config file, else 0 (unlimited).
    pub send: Live<u64>,
    /// `maxReceiveTps`: likewise.
    pub receive: Live<u64>,
}

impl FileSettings {
    /// The TPS limits: flag/env, else the file's `maxSendTps`/`maxReceiveTps`, else none.
    pub fn tps(&self, args: &BrokerArgs) -> Result<TpsSettings> {
        let file = |key| {
            self.props
                .u64(key)
                .map_err(|e| anyhow::anyhow!("config file: {e}"))
        };
        let send = Live::new(args.max_send_tps, file(conf::MAX_SEND_TPS)?, 0);
        let receive = Live::new(args.max_receive_tps, file(conf::MAX_RECEIVE_TPS)?, 0);
        Ok(TpsSettings {
            limits: Limits::new(send.get(), receive.get()),
            send,
            receive,
        })
    }
}

/// What a re-read config file changes while the process runs.
pub struct LiveSettings {
    /// The name servers a broker registers with (brokers only).
    pub namesrvs: Option<NamesrvList>,
    /// The ACL switch.
    pub acl: Acl,
    /// `aclEnable` as flags and file say.
    pub acl_enable: Live<bool>,
    /// The TPS limits (brokers only).
    pub tps: Option<TpsSettings>,
    /// The broker's name and external address (brokers only).
    pub external: Option<(String, Live<Option<String>>)>,
}

impl LiveSettings {
    /// Applies a changed version of the config file at `path`. A key that is absent
    /// leaves `aclEnable`, `maxSendTps` and `maxReceiveTps` as they are, as a bad value
    /// does; a changed value applies.
    pub fn apply(&self, path: &Path, props: &Properties) {
        let file = path.display();
        match props.bool(conf::ACL_ENABLE) {
            // A file without the key leaves ACL as it is (never off by omission).
            Ok(None) => {}
            Ok(value) => {
                if let Some(on) = self.acl_enable.file_changed(value) {
                    self.acl.set_enabled(on);
                    tracing::info!(%file, enabled = on, "ACL switched");
                    if on && self.acl.table().is_empty() {
                        tracing::error!(
                            admin_key = self.acl.has_admin_key(),
                            "ACL is on with no accounts: every client request is refused (only the admin key, if any, is accepted)"
                        );
                    }
                }
            }
            // A bad value changes nothing: the ACL stays as it is.
            Err(e) => tracing::error!(%file, error = %e, "config file: ACL unchanged"),
        }
        if let Some(tps) = &self.tps {
            let limits = &tps.limits;
            apply_tps(props, conf::MAX_SEND_TPS, &tps.send, |v| {
                limits.set_send_tps(v)
            });
            apply_tps(props, conf::MAX_RECEIVE_TPS, &tps.receive, |v| {
                limits.set_receive_tps(v)
            });
        }
        if let Some((name, live)) = &self.external
            && let Some(addr) = live.file_changed(Some(props.external_addr(name)))
        {
            tracing::info!(%file, external = ?addr, "external address changed");
        }
        // Last, so a registration that follows a new list shows the rest is in force.
        // (A file without `namesrvAddr` falls back to the flag or the default.)
        if let Some(list) = &self.namesrvs
            && let Some(addrs) = list.file_changed(props.namesrv_addrs())
        {
            tracing::info!(%file, namesrv = %addrs.join(";"), "name servers changed");
        }
    }
}

/// Applies one re-read TPS key; a bad value or a missing key changes nothing (a file
/// without the key never lifts the limit).
fn apply_tps(props: &Properties, key: &str, live: &Live<u64>, set: impl Fn(u64)) {
    match props.u64(key) {
        Ok(None) => {}
        Ok(value) => {
            if let Some(tps) = live.file_changed(value) {
                set(tps);
                tracing::info!(key, tps, "TPS limit changed (0: unlimited)");
            }
        }
        Err(e) => tracing::error!(error = %e, "config file: TPS limit unchanged"),
    }
}

/// Replaces `{ordinal}` in `name` with the digits ending `hostname` (`x-broker-3` → `3`);
/// without such digits the placeholder becomes `0`.
pub fn expand_ordinal(name: &str, hostname: &str) -> String {
    let digits = hostname.len()
        - hostname
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .len();
    let ordinal = &hostname[hostname.len() - digits..];
    name.replace("{ordinal}", if ordinal.is_empty() { "0" } else { ordinal })
}

#[cfg(test)]
mod live_tests {
    use super::*;

    fn live(acl_on: bool, send: u64, receive: u64) -> LiveSettings {
        let file = Properties::parse(&format!(
            "aclEnable={acl_on}\nmaxSendTps={send}\nmaxReceiveTps={receive}\n"
        ));
        let enable = Live::new(None, file.bool(conf::ACL_ENABLE).unwrap(), false);
        let send = Live::new(None, file.u64(conf::MAX_SEND_TPS).unwrap(), 0);
        let receive = Live::new(None, file.u64(conf::MAX_RECEIVE_TPS).unwrap(), 0);
        LiveSettings {
            namesrvs: None,
            acl: Acl::new(enable.get(), AclTable::default()),
            acl_enable: enable,
            tps: Some(TpsSettings {
                limits: Limits::new(send.get(), receive.get()),
                send,
                receive,
            }),
            external: None,
        }
    }

    fn state(live: &LiveSettings) -> (bool, u64, u64) {
        let limits = &live.tps.as_ref().unwrap().limits;
        (
            live.acl.is_enabled(),
            limits.send_tps(),
            limits.receive_tps(),
        )
    }

    fn apply(live: &LiveSettings, text: &str) {
        live.apply(Path::new("broker.conf"), &Properties::parse(text));
    }

    #[test]
    fn a_file_without_the_keys_leaves_acl_and_limits_as_they_are() {
        let live = live(true, 100, 50);
        assert_eq!(state(&live), (true, 100, 50));
        apply(&live, "brokerName=broker-a\n");
        assert_eq!(state(&live), (true, 100, 50), "absent keys change nothing");
        apply(&live, "aclEnable=\nmaxSendTps=\n");
        assert_eq!(state(&live), (true, 100, 50), "empty values change nothing");
        apply(&live, "aclEnable=maybe\nmaxSendTps=-1\nmaxReceiveTps=x\n");
        assert_eq!(state(&live), (true, 100, 50), "bad values change nothing");
        // Present values still apply, one key at a time.
        apply(&live, "maxSendTps=10\n");
        assert_eq!(state(&live), (true, 10, 50));
        apply(&live, "aclEnable=false\n");
        assert_eq!(state(&live), (false, 10, 50));
        apply(&live, "");
        assert_eq!(state(&live), (false, 10, 50), "off stays off too");
        apply(&live, "aclEnable=true\nmaxSendTps=0\nmaxReceiveTps=7\n");
        assert_eq!(state(&live), (true, 0, 7));
    }
}

#[cfg(test)]
mod ordinal_tests {
    use super::expand_ordinal;

    #[test]
    fn the_placeholder_takes_the_pods_ordinal() {
        assert_eq!(
            expand_ordinal("broker-{ordinal}", "mq-inst-1-broker-12"),
            "broker-12"
        );
        assert_eq!(expand_ordinal("broker-{ordinal}", "laptop"), "broker-0");
        assert_eq!(expand_ordinal("broker-a", "x-3"), "broker-a");
    }
}

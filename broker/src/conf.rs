//! The broker's config file: RocketMQ's `broker.conf` habit, re-read on change.
//!
//! The file is a small properties file, one `key=value` per line (`key: value` works too;
//! blank lines and lines starting with `#` or `!` are ignored; keys and values are
//! trimmed). Keys are Java's: `namesrvAddr` (`a:9876;b:9876`), `brokerName`,
//! `brokerClusterName`, `storePathRootDir`, `flushDiskType` (`ASYNC_FLUSH`/`SYNC_FLUSH`),
//! `waitTimeMillsInSendQueue`, `aclEnable` (`true`/`false`), `aclFile` (path of the ACL
//! file, see `crate::acl`), `maxSendTps` and `maxReceiveTps` (messages per second of this
//! broker, 0 unlimited), `externalAddr.<brokerName>` (`host:port`: the address
//! clients outside the cluster reach that broker on, registered beside the broker's own
//! address; mqfleet's key, see `crate::broker::register`) and
//! `recoverTruncateAt.<brokerName>` (a commit-log offset: recovery may cut that broker's
//! damaged log there and only there; mqfleet's key, read at start). Others are ignored (a Java
//! broker.conf has many).
//!
//! Precedence at start: command-line flag or its environment variable, then the file,
//! then the built-in default. While running, `namesrvAddr`, `aclEnable`, `maxSendTps`,
//! `maxReceiveTps` and the broker's `externalAddr.<brokerName>` are live
//! ([`Live`]): when the file changes and the key's value differs from what the file said
//! before, the new value replaces the current one, whatever the flags said (the operator
//! rewrote the file on purpose). When `namesrvAddr` disappears, the list falls back to the
//! flag or the default; when `aclEnable`, `maxSendTps` or `maxReceiveTps` disappears (or
//! has a bad value), that setting stays as it is — a file written without them never
//! turns ACL off or lifts a limit (the broker's `LiveSettings::apply`). The other keys
//! apply at start only.
//!
//! Kubernetes mounts a ConfigMap key as a symlink (`broker.conf → ..data/broker.conf`,
//! `..data → ..2024_…/`) and updates it by swapping `..data`, so the file's inode changes
//! while the path stays. [`FileWatch`] polls the *resolved* file's identity (canonical
//! path, device, inode, size, mtime), which catches that swap as well as an in-place
//! edit; a file that is briefly missing keeps the last values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Key of the name-server list.
pub const NAMESRV_ADDR: &str = "namesrvAddr";
/// Key of the broker name.
pub const BROKER_NAME: &str = "brokerName";
/// Key of the cluster name.
pub const BROKER_CLUSTER_NAME: &str = "brokerClusterName";
/// Key of the store directory.
pub const STORE_PATH_ROOT_DIR: &str = "storePathRootDir";
/// Key of the flush policy (`ASYNC_FLUSH` or `SYNC_FLUSH`).
pub const FLUSH_DISK_TYPE: &str = "flushDiskType";
/// Key of the longest wait of a send for the store, in ms.
pub const WAIT_TIME_MILLS_IN_SEND_QUEUE: &str = "waitTimeMillsInSendQueue";
/// Prefix of the keys allowing one broker's recovery to cut its damaged commit log at
/// exactly one offset (`recoverTruncateAt.<brokerName>=<offset>`, read at start; see
/// `crate::store::StoreConfig::recover_truncate_at`): the operator writes it for the
/// damage a broker reported, outside the part of the file whose change restarts brokers.
pub const RECOVER_TRUNCATE_AT_PREFIX: &str = "recoverTruncateAt.";
/// Key of the largest message body in bytes (a batch: all its bodies together).
pub const MAX_MESSAGE_SIZE: &str = "maxMessageSize";
/// Key of the ACL switch (`true`/`false`, Java's key).
pub const ACL_ENABLE: &str = "aclEnable";
/// Key of the ACL file's path (see `crate::acl`).
pub const ACL_FILE: &str = "aclFile";
/// Key of this broker's send limit, messages per second (0: unlimited).
pub const MAX_SEND_TPS: &str = "maxSendTps";
/// Key of this broker's receive limit, messages per second (0: unlimited).
pub const MAX_RECEIVE_TPS: &str = "maxReceiveTps";
/// Prefix of the keys naming a broker's external address (`externalAddr.<brokerName>`):
/// one file serves every broker of an instance, each reads its own line.
pub const EXTERNAL_ADDR_PREFIX: &str = "externalAddr.";

/// A config file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading config file {path}: {source}")]
pub struct ConfigFileError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Parsed `key=value` lines; a later line wins over an earlier one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    /// Parses properties text (see the module docs); malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let mut map = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some(split) = line.find(['=', ':']) else {
                continue;
            };
            let (key, value) = (line[..split].trim(), line[split + 1..].trim());
            if !key.is_empty() {
                map.insert(key.to_owned(), value.to_owned());
            }
        }
        Self(map)
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        std::fs::read_to_string(path)
            .map(|text| Self::parse(&text))
            .map_err(|source| ConfigFileError {
                path: path.to_owned(),
                source,
            })
    }

    /// A non-empty value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A `true`/`false` value (any case); `None` when absent or empty.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(format!("{key} must be true or false, not {v:?}")),
        }
    }

    /// A non-negative integer; `None` when absent or empty.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("{key} must be a non-negative integer, not {v:?}"))
            })
            .transpose()
    }

    /// The external address the file gives broker `broker_name`, if any (a value that is
    /// not `host:port` counts as none: clients could not use it).
    pub fn external_addr(&self, broker_name: &str) -> Option<String> {
        let key = format!("{EXTERNAL_ADDR_PREFIX}{broker_name}");
        let value = self.get(&key)?;
        match check_host_port(value) {
            Ok(()) => Some(value.to_owned()),
            Err(e) => {
                tracing::error!(%key, error = %e, "config file: external address ignored");
                None
            }
        }
    }

    /// The name servers the file lists, if it lists any.
    pub fn namesrv_addrs(&self) -> Option<Vec<String>> {
        self.get(NAMESRV_ADDR)
            .map(parse_addr_list)
            .filter(|l| !l.is_empty())
    }
}

/// Checks that `addr` is `host:port` as RocketMQ clients take it (a DNS name or IPv4
/// address, a port 1–65535).
pub fn check_host_port(addr: &str) -> Result<(), String> {
    let bad = || format!("{addr:?} is not host:port");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(bad()),
    }
}

/// Splits a `NAMESRV_ADDR`-style list (`a:9876;b:9876`; commas accepted too).
pub fn parse_addr_list(list: &str) -> Vec<String> {
    list.split([';', ','])
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What identifies one version of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    resolved: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let resolved = std::fs::canonicalize(path)?;
        let meta = std::fs::metadata(&resolved)?;
        Ok(Self {
            resolved,
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// Polls a config file for changes (see the module docs for what counts).
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    stamp: Option<Stamp>,
}

impl FileWatch {
    /// Reads `path` now: the watch and the file's current properties.
    pub fn open(path: impl Into<PathBuf>) -> Result<(Self, Properties), ConfigFileError> {
        let path = path.into();
        let stamp = Stamp::of(&path).map_err(|source| ConfigFileError {
            path: path.clone(),
            source,
        })?;
        let props = Properties::load(&path)?;
        Ok((
            Self {
                path,
                stamp: Some(stamp),
            },
            props,
        ))
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's properties if it changed since the last look, `None` if it did not.
    /// A missing or unreadable file is an error and leaves the last version in place.
    pub fn poll(&mut self) -> Result<Option<Properties>, ConfigFileError> {
        let err = |source| ConfigFileError {
            path: self.path.clone(),
            source,
        };
        let stamp = Stamp::of(&self.path).map_err(err)?;
        if self.stamp.as_ref() == Some(&stamp) {
            return Ok(None);
        }
        let props = Properties::load(&self.path)?;
        // Read after stamping: a write racing the read shows up as another change later.
        self.stamp = Some(stamp);
        Ok(Some(props))
    }
}

/// A setting that a re-read config file can change at run time (see the module docs for
/// the precedence rules). Cheap to clone; all clones share the value.
#[derive(Debug, Clone)]
pub struct Live<T> {
    inner: Arc<RwLock<LiveState<T>>>,
}

#[derive(Debug)]
struct LiveState<T> {
    /// From the flag/env, or the mode's default.
    fallback: T,
    /// Whether the flag/env set it (then it wins over the file at start).
    flag_given: bool,
    /// What the file said last.
    from_file: Option<T>,
    current: T,
}

impl<T: Clone + PartialEq> Live<T> {
    /// The value at start: `flag` if given, else the file's, else `default`.
    pub fn new(flag: Option<T>, file: Option<T>, default: T) -> Self {
        let flag_given = flag.is_some();
        let fallback = flag.unwrap_or(default);
        let current = if flag_given {
            fallback.clone()
        } else {
            file.clone().unwrap_or_else(|| fallback.clone())
        };
        Self {
            inner: Arc::new(RwLock::new(LiveState {
                fallback,
                flag_given,
                from_file: file,
                current,
            })),
        }
    }

    /// The value now.
    pub fn get(&self) -> T {
        self.read().current.clone()
    }

    /// Applies a re-read file's value (`None`: the key is gone); returns the new value
    /// when it changed.
    pub fn file_changed(&self, file: Option<T>) -> Option<T> {
        let mut state = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.from_file == file {
            return None;
        }
        state.from_file = file.clone();
        let next = file.unwrap_or_else(|| state.fallback.clone());
        if next == state.current {
            return None;
        }
        state.current = next.clone();
        Some(next)
    }

    /// Whether the flag/env set the value.
    pub fn flag_given(&self) -> bool {
        self.read().flag_given
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LiveState<T>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The name servers a broker registers with, changeable at run time.
pub type NamesrvList = Live<Vec<String>>;

/// Polls `watch` every `interval` forever (spawn it), handing each changed version of
/// the file to `apply`. An unreadable file is logged once and keeps the last values.
pub async fn watch_file(
    mut watch: FileWatch,
    interval: Duration,
    mut apply: impl FnMut(&Path, Properties) + Send + 'static,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        // A stat and a small read, off the async threads (the file may be on a slow mount).
        let (back, polled) = match tokio::task::spawn_blocking(move || {
            let polled = watch.poll();
            (watch, polled)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "config file watcher failed; settings stay as they are");
                return;
            }
        };
        watch = back;
        match polled {
            Ok(Some(props)) => {
                failing = false;
                apply(watch.path(), props);
            }
            Ok(None) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "config file unreadable; keeping the last settings");
            }
            Err(_) => {}
        }
    }
}

/// Polls `watch` every `interval` forever (spawn it), feeding each changed file's
/// `namesrvAddr` into `list`.
pub async fn watch_namesrv_addrs(watch: FileWatch, list: NamesrvList, interval: Duration) {
    watch_file(watch, interval, move |path, props| {
        if let Some(addrs) = list.file_changed(props.namesrv_addrs()) {
            tracing::info!(file = %path.display(), namesrv = %addrs.join(";"), "name servers changed");
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn external_addresses_must_be_host_and_port() {
        let props = Properties::parse(
            "externalAddr.broker-0=127.0.0.1:30001\nexternalAddr.broker-1=nonsense\nexternalAddr.broker-2=lb.example:0\n",
        );
        assert_eq!(
            props.external_addr("broker-0").as_deref(),
            Some("127.0.0.1:30001")
        );
        assert_eq!(props.external_addr("broker-1"), None);
        assert_eq!(props.external_addr("broker-2"), None);
        assert_eq!(props.external_addr("broker-3"), None);
        assert!(check_host_port("lb.example.com:9876").is_ok());
        assert!(check_host_port(":9876").is_err());
        assert!(check_host_port("a b:1").is_err());
    }

    use super::*;

    fn list(s: &str) -> Vec<String> {
        parse_addr_list(s)
    }

    #[test]
    fn properties_parse_like_broker_conf() {
        let p = Properties::parse(
            "# broker.conf\n\
             brokerClusterName = DefaultCluster\n\
             ! another comment\n\
             namesrvAddr=10.0.0.1:9876; 10.0.0.2:9876\n\
             brokerName: broker-b\n\
             garbage line\n\
             empty=\n\
             brokerName=broker-c\n",
        );
        assert_eq!(p.get(BROKER_CLUSTER_NAME), Some("DefaultCluster"));
        assert_eq!(p.get(BROKER_NAME), Some("broker-c"), "the last line wins");
        assert_eq!(p.get("empty"), None);
        assert_eq!(
            p.namesrv_addrs(),
            Some(vec!["10.0.0.1:9876".to_owned(), "10.0.0.2:9876".to_owned()])
        );
        assert_eq!(Properties::parse("namesrvAddr= ; ").namesrv_addrs(), None);
    }

    #[test]
    fn booleans_and_numbers_are_read_strictly() {
        let p = Properties::parse("aclEnable=TRUE\nmaxSendTps=50\nbad=yes\nneg=-1\n");
        assert_eq!(p.bool(ACL_ENABLE), Ok(Some(true)));
        assert_eq!(p.bool("missing"), Ok(None));
        assert!(p.bool("bad").is_err());
        assert_eq!(p.u64("maxSendTps"), Ok(Some(50)));
        assert!(p.u64("neg").is_err());
    }

    #[test]
    fn a_live_switch_follows_the_file_and_falls_back_to_the_flag() {
        let on = Live::new(Some(false), Some(true), false);
        assert!(!on.get(), "the flag wins at start");
        assert_eq!(on.file_changed(Some(true)), None, "the file did not change");
        assert_eq!(
            on.file_changed(Some(false)),
            None,
            "changed, but already off"
        );
        assert_eq!(on.file_changed(Some(true)), Some(true));
        assert_eq!(
            on.file_changed(None),
            Some(false),
            "key removed: the flag again"
        );
    }

    #[test]
    fn the_flag_wins_at_start_and_a_file_change_wins_later() {
        let l = NamesrvList::new(Some(list("flag:1")), Some(list("file:1")), list("def:1"));
        assert_eq!(l.get(), list("flag:1"));
        assert_eq!(l.file_changed(Some(list("file:1"))), None, "unchanged file");
        assert_eq!(l.file_changed(Some(list("file:2"))), Some(list("file:2")));
        assert_eq!(l.get(), list("file:2"));
        assert_eq!(l.file_changed(None), Some(list("flag:1")), "key removed");
        assert!(l.flag_given());
    }

    #[test]
    fn without_a_flag_the_file_then_the_default_apply() {
        let l = NamesrvList::new(None, Some(list("file:1")), list("def:1"));
        assert_eq!(l.get(), list("file:1"));
        assert_eq!(l.file_changed(None), Some(list("def:1")));
        let l = NamesrvList::new(None, None, list("def:1"));
        assert_eq!(l.get(), list("def:1"));
        assert_eq!(l.file_changed(Some(list("a:1;b:2"))), Some(list("a:1;b:2")));
        assert!(!l.flag_given());
    }

    #[test]
    fn a_configmap_style_symlink_swap_is_seen_as_a_change() {
        let dir = std::env::temp_dir().join(format!("mq-conf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("..v1")).unwrap();
        std::fs::create_dir_all(dir.join("..v2")).unwrap();
        std::fs::write(dir.join("..v1/broker.conf"), "namesrvAddr=a:1\n").unwrap();
        std::fs::write(dir.join("..v2/broker.conf"), "namesrvAddr=b:2\n").unwrap();
        std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/broker.conf", dir.join("broker.conf")).unwrap();

        let (mut watch, props) = FileWatch::open(dir.join("broker.conf")).unwrap();
        assert_eq!(props.namesrv_addrs(), Some(list("a:1")));
        assert_eq!(watch.poll().unwrap(), None);
        // The kubelet's update: a new `..data` link renamed over the old one.
        std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        let changed = watch.poll().unwrap().expect("a change");
        assert_eq!(changed.namesrv_addrs(), Some(list("b:2")));
        assert_eq!(watch.poll().unwrap(), None);
        // Briefly missing: an error, and the next version is still seen afterwards.
        std::fs::remove_file(dir.join("..data")).unwrap();
        assert!(watch.poll().is_err());
        std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
        let back = watch.poll().unwrap().expect("a change");
        assert_eq!(back.namesrv_addrs(), Some(list("a:1")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

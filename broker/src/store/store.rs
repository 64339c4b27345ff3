//! `MessageStore`: the commit log, consume queues, index and checkpoint behind one API.
//!
//! Put path (one writer at a time): encode and CRC outside the lock; under the writer
//! lock take the store timestamp (never going backwards), the queue offset (= the
//! consume queue's length: PREPARED/ROLLBACK transaction messages get 0 and no entry),
//! append to the commit log, then append the consume-queue entry and index the keys.
//! Dispatch is synchronous, so a message is pullable when `put` returns. With
//! [`FlushPolicy::Sync`] `put` then waits for the fsync that covers it; concurrent puts
//! share fsyncs (group commit). With [`FlushPolicy::Async`] a background thread fsyncs
//! the log at the configured interval.
//!
//! The background thread also writes a checkpoint every `checkpoint_interval`: it notes
//! how far messages are dispatched, fsyncs the log, writes out and fsyncs the consume
//! queues, seals a full index buffer, and records those offsets (see `recovery.rs`
//! for how they are used). An `abort` file exists while the store is open; a clean
//! [`MessageStore::shutdown`] flushes everything and removes it.
//!
//! Memory does not grow with the store: the in-memory state is per queue (a ≤ 4 KiB
//! tail) and the index buffer (bounded); every read goes to the files.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::checkpoint::{Checkpoint, CheckpointFile};
use super::commitlog::{Appended, CommitLog, DEFAULT_PREALLOCATE, DEFAULT_SEGMENT_SIZE, lock};
use super::consumequeue::{ConsumeQueue, CqEntry, DEFAULT_SEGMENT_ENTRIES};
use super::error::{IoContext, Result, StoreError};
use super::index::{DEFAULT_RUN_ENTRIES, MessageIndex, key_hash};
use super::io::{FileSystem, LockGuard, Locked, RealFs};
use super::message::{
    self, DEFAULT_MAX_BODY_BYTES, DecodedMessage, MESSAGE_MAGIC, MessageToStore, decode,
    decode_offset_msg_id, is_invisible_transaction, offset_msg_id, patch_for_append,
    peek_store_timestamp, property, property_value, read_i32, split_keys, sysflag,
};

/// Consume-queue entries examined per `get` when a filter rejects messages
/// (RocketMQ's `maxFilterMessageCount` of 16,000 bytes / 20).
const MIN_SCAN_ENTRIES: u64 = 800;
/// What a full disk's reason (`MessageStore::disk_full`) ends with, after "; ": the
/// advice for whoever runs the broker (the operator replaces it with its own).
pub const DISK_FULL_ADVICE: &str = "free space or grow the volume";
/// Default `StoreConfig::disk_reserve_bytes` (256 MiB).
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 256 << 20;
/// Largest single read when fetching physically adjacent messages.
const MAX_COALESCED_READ: u64 = 1 << 20;

/// Source of store timestamps (ms since the epoch).
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `millis`.
    pub fn new(millis: i64) -> Self {
        Self(AtomicI64::new(millis))
    }
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// When an acknowledged message is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// `put` returns after the write; a background thread fsyncs every `interval`. A
    /// power cut loses at most the last interval (a process kill loses nothing).
    Async {
        /// Time between fsyncs (RocketMQ's `flushIntervalCommitLog` is 500 ms).
        interval: Duration,
    },
    /// `put` returns after the fsync that covers it (group commit).
    Sync,
}

/// Computes a consume-queue tag code from `(topic, properties, store_timestamp)`;
/// `None` means the default (hash of TAGS). Used on put and when rebuilding queues, so
/// e.g. scheduled-message topics can store a delivery time instead.
pub type TagsCodeFn = Arc<dyn Fn(&str, &str, i64) -> Option<i64> + Send + Sync>;

/// Store configuration; [`StoreConfig::new`] gives RocketMQ's defaults.
#[derive(Clone)]
pub struct StoreConfig {
    /// Store directory (`commitlog/`, `consumequeue/`, `index/`, `checkpoint`, `abort`).
    pub root: PathBuf,
    /// File system (real, or simulated in tests).
    pub fs: Arc<dyn FileSystem>,
    /// Clock for store timestamps and retention.
    pub clock: Arc<dyn Clock>,
    /// This broker's address, written as STOREHOST and into message ids.
    pub store_host: SocketAddr,
    /// Commit-log segment size (1 GiB).
    pub commitlog_segment_size: u64,
    /// Entries per consume-queue file (300,000).
    pub consume_queue_segment_entries: u64,
    /// Index entries buffered in memory before a run is written (1 Mi).
    pub index_run_entries: usize,
    /// Largest body accepted (4 MiB).
    pub max_body_bytes: usize,
    /// Flush policy (async, 500 ms).
    pub flush: FlushPolicy,
    /// Disk blocks reserved ahead of the commit log's write position at a time
    /// (16 MiB; 0: none), so a full disk refuses an append before it is written.
    pub commitlog_preallocate: u64,
    /// Time between checkpoints (1 s).
    pub checkpoint_interval: Duration,
    /// Time between retention passes (10 s).
    pub clean_interval: Duration,
    /// Commit-log segments whose messages are all older than this are deleted (72 h).
    pub retention: Duration,
    /// The hard threshold: only while the disk is at least this full (0.95) *and* has
    /// less than half of `disk_reserve_bytes` available are the oldest segments deleted
    /// for space, consumed or not (logged, and counted in
    /// `segments_deleted_for_space`). Sends are refused well before that, so this only
    /// happens when something else keeps filling the disk.
    pub disk_force_clean_ratio: f64,
    /// Writes are refused (`DiskFull`) while the disk is at least this full (0.90, as
    /// RocketMQ's `diskSpaceWarningLevelRatio`) and has less than `disk_reserve_bytes`
    /// available, so a full disk is a clear answer to the sender, never a failed write or
    /// fsync that would poison the store.
    pub disk_full_ratio: f64,
    /// Bytes kept free below which (with `disk_full_ratio`) writes are refused (256 MiB:
    /// room for what is written between two flushes plus the queues and index). The
    /// ratio alone would make a large disk shared with other data, such as a node's,
    /// refuse while gigabytes are free; the reserve alone would let a small dedicated
    /// volume fill to its last bytes.
    pub disk_reserve_bytes: u64,
    /// How often a put looks at the free space while the disk is not full (200 ms); a
    /// full one is looked at on every put, so writing resumes as soon as space returns.
    pub space_check_interval: Duration,
    /// Let recovery cut the commit log at damage it would otherwise refuse to repair
    /// (below the flushed offset, before valid messages, a missing segment), dropping
    /// what follows (`mq-broker --recover-truncate`; off by default).
    pub recover_truncate: bool,
    /// Let recovery cut the commit log only when the damage it finds is exactly at this
    /// offset (what an earlier refusal reported): an instruction given for one damage
    /// can never cut more than that damage (`recoverTruncateAt.<brokerName>` in
    /// broker.conf). Any other damage is still refused.
    pub recover_truncate_at: Option<u64>,
    /// Run the background flush/checkpoint/retention thread (tests turn it off).
    pub background: bool,
    /// Optional tag-code hook.
    pub tags_code: Option<TagsCodeFn>,
}

impl StoreConfig {
    /// Defaults for a store in `root` on the real file system.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            fs: Arc::new(RealFs),
            clock: Arc::new(SystemClock),
            store_host: SocketAddr::from(([127, 0, 0, 1], 10911)),
            commitlog_segment_size: DEFAULT_SEGMENT_SIZE,
            commitlog_preallocate: DEFAULT_PREALLOCATE,
            consume_queue_segment_entries: DEFAULT_SEGMENT_ENTRIES,
            index_run_entries: DEFAULT_RUN_ENTRIES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            flush: FlushPolicy::Async {
                interval: Duration::from_millis(500),
            },
            checkpoint_interval: Duration::from_secs(1),
            clean_interval: Duration::from_secs(10),
            retention: Duration::from_secs(72 * 3600),
            disk_force_clean_ratio: 0.95,
            disk_full_ratio: 0.90,
            disk_reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
            space_check_interval: Duration::from_millis(200),
            recover_truncate: false,
            recover_truncate_at: None,
            background: true,
            tags_code: None,
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("root", &self.root)
            .field("store_host", &self.store_host)
            .field("commitlog_segment_size", &self.commitlog_segment_size)
            .field("commitlog_preallocate", &self.commitlog_preallocate)
            .field(
                "consume_queue_segment_entries",
                &self.consume_queue_segment_entries,
            )
            .field("index_run_entries", &self.index_run_entries)
            .field("flush", &self.flush)
            .field("retention", &self.retention)
            .field("disk_force_clean_ratio", &self.disk_force_clean_ratio)
            .field("disk_full_ratio", &self.disk_full_ratio)
            .field("disk_reserve_bytes", &self.disk_reserve_bytes)
            .finish_non_exhaustive()
    }
}

/// Outcome of a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// Offset message id (store host + physical offset).
    pub msg_id: String,
    /// Queue id.
    pub queue_id: i32,
    /// Queue offset (0 for PREPARED/ROLLBACK transaction messages).
    pub queue_offset: u64,
    /// Commit-log offset.
    pub phys_offset: u64,
    /// Stored size in bytes.
    pub size: u32,
    /// STORETIMESTAMP.
    pub store_timestamp: i64,
}

/// Outcome class of a [`MessageStore::get`] (RocketMQ's `GetMessageStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetStatus {
    /// Messages were found.
    Found,
    /// Entries exist but none passed the filter (or their messages are gone).
    NoMatchedMessage,
    /// No such topic/queue in this store.
    NoMatchedLogicQueue,
    /// The queue exists but has never had a message.
    NoMessageInQueue,
    /// `offset` is below the minimum (retention deleted it).
    OffsetTooSmall,
    /// `offset` is exactly the maximum (nothing new yet).
    OffsetOverflowOne,
    /// `offset` is beyond the maximum.
    OffsetOverflowBadly,
}

/// A message read from the store: the stored bytes as they go into a pull response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Queue offset.
    pub queue_offset: u64,
    /// Commit-log offset.
    pub phys_offset: u64,
    /// Tag code from the consume queue.
    pub tags_code: i64,
    /// The stored entry (decode with `message::decode`).
    pub data: Bytes,
}

/// Outcome of a [`MessageStore::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    /// What happened.
    pub status: GetStatus,
    /// Messages, in queue order.
    pub messages: Vec<StoredMessage>,
    /// Where the consumer should continue.
    pub next_begin_offset: u64,
    /// Queue minimum at the time of the read.
    pub min_offset: u64,
    /// Queue maximum at the time of the read.
    pub max_offset: u64,
}

impl GetResult {
    fn empty(status: GetStatus, next: u64, min: u64, max: u64) -> Self {
        Self {
            status,
            messages: Vec::new(),
            next_begin_offset: next,
            min_offset: min,
            max_offset: max,
        }
    }

    /// Sum of the stored sizes.
    pub fn total_bytes(&self) -> usize {
        self.messages.iter().map(|m| m.data.len()).sum()
    }
}

/// A message found by key, unique key, time or offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMessage {
    /// Commit-log offset.
    pub phys_offset: u64,
    /// The stored entry.
    pub data: Bytes,
}

/// Bounds of one `get`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_msgs: usize,
    max_bytes: usize,
    /// Commit-log offset messages must end before.
    readable_end: u64,
}

/// Accumulates the entries of one `get`.
struct Picker {
    picked: Vec<(u64, CqEntry)>,
    bytes: usize,
    next: u64,
    log_min: u64,
}

impl Picker {
    /// Takes entries starting at `self.next`; true once a limit is reached.
    fn take(&mut self, entries: &[CqEntry], limits: Limits, filter: &dyn Fn(i64) -> bool) -> bool {
        for e in entries {
            let size = e.size.max(0) as usize;
            let over_bytes = !self.picked.is_empty() && self.bytes + size > limits.max_bytes;
            let unreadable = e.is_valid() && e.phys() + size as u64 > limits.readable_end;
            if self.picked.len() >= limits.max_msgs || over_bytes || unreadable {
                return true;
            }
            if e.is_valid() && e.phys() >= self.log_min && filter(e.tags_code) {
                self.bytes += size;
                self.picked.push((self.next, *e));
            }
            self.next += 1;
        }
        self.picked.len() >= limits.max_msgs
    }
}

/// State only the writer touches.
#[derive(Debug, Default)]
pub(super) struct WriterState {
    pub(super) last_store_timestamp: i64,
}

impl WriterState {
    /// A store timestamp that never goes backwards (so queues stay sorted by time).
    fn next_timestamp(&mut self, now: i64) -> i64 {
        self.last_store_timestamp = self.last_store_timestamp.max(now);
        self.last_store_timestamp
    }
}

type QueueMap = HashMap<String, HashMap<i32, Arc<ConsumeQueue>>>;

/// Everything the store and its background thread share.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) cfg: StoreConfig,
    pub(super) commitlog: CommitLog,
    pub(super) index: MessageIndex,
    pub(super) queues: RwLock<QueueMap>,
    pub(super) writer: Mutex<WriterState>,
    checkpoint: Mutex<CheckpointFile>,
    failure: Mutex<Option<String>>,
    closed: AtomicBool,
    /// This process's exclusive hold on the store (file `lock`), for as long as it runs.
    _lock: LockGuard,
    /// The last look at the disk's free space.
    space: Mutex<SpaceCheck>,
    /// Commit-log segments deleted above the hard disk threshold, not for age.
    deleted_for_space: AtomicU64,
    /// What a forced recovery cut at this open, if it cut anything.
    pub(super) recovery_cut: Mutex<Option<RecoveryCut>>,
}

/// What recovery dropped when it was allowed to cut a damaged commit log
/// ([`StoreConfig::recover_truncate`] or [`StoreConfig::recover_truncate_at`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryCut {
    /// Where the log now ends: everything from here on was dropped.
    pub offset: u64,
    /// The segment file holding that offset.
    pub segment: String,
    /// Bytes of log files dropped after `offset`.
    pub dropped_bytes: u64,
}

impl fmt::Display for RecoveryCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cut at offset {} (segment {}), dropping {} bytes",
            self.offset, self.segment, self.dropped_bytes
        )
    }
}

/// Refuses a new store on a volume that cannot hold two commit-log segments: the one
/// being written and the next. Unknown sizes (a file system that does not say) pass. A
/// store that already holds segments only gets a warning: it was serving before (an
/// upgrade added this check, or the segment size grew), and refusing it would turn a
/// working broker into an outage; the disk-full rule guards its writes.
fn check_volume(cfg: &StoreConfig) -> Result<()> {
    let root = &cfg.root;
    let Some(usage) = cfg.fs.disk_usage(root).at(root)? else {
        return Ok(());
    };
    let minimum = cfg.commitlog_segment_size.saturating_mul(2);
    if usage.total < minimum {
        let commitlog = root.join("commitlog");
        if !cfg.fs.list(&commitlog).at(&commitlog)?.is_empty() {
            tracing::warn!(
                path = %root.display(),
                total = usage.total,
                minimum,
                "the volume is smaller than two commit-log segments; this existing store starts, but a segment rotation may find the disk full: grow the volume or lower --segment-size"
            );
            return Ok(());
        }
        return Err(StoreError::VolumeTooSmall {
            path: root.clone(),
            total: usage.total,
            minimum,
        });
    }
    Ok(())
}

/// When the free space was last looked at, and whether the disk was full then.
#[derive(Debug, Default)]
struct SpaceCheck {
    checked: Option<Instant>,
    full: Option<String>,
}

/// Stop signal for the background thread.
type StopSignal = Arc<(Mutex<bool>, Condvar)>;

#[derive(Debug)]
struct Background {
    stop: StopSignal,
    handle: JoinHandle<()>,
}

/// The message store. Share it with `Arc`; all methods take `&self`. Methods block on
/// file I/O (call them from blocking threads in async code).
///
/// Dropping the store without [`MessageStore::shutdown`] stops the background thread
/// without flushing, like a killed process: the next open runs crash recovery.
#[derive(Debug)]
pub struct MessageStore {
    inner: Arc<Inner>,
    background: Mutex<Option<Background>>,
}

/// Takes the store's lock file before anything is read or repaired: a second process on
/// the same directory (two pods on one volume, a stale process after a restart) would
/// append to the same commit log.
fn lock_store(fs: &dyn FileSystem, root: &Path) -> Result<LockGuard> {
    let path = root.join("lock");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let holder = format!("pid {} on host {}", std::process::id(), host.trim());
    match fs.try_lock(&path, &holder).at(&path)? {
        Locked::Held(guard) => Ok(guard),
        Locked::Busy(holder) => Err(StoreError::Locked { path, holder }),
    }
}

impl MessageStore {
    /// Opens the store in `cfg.root`, recovering after a clean stop or a crash, and
    /// starts the background thread.
    pub fn open(cfg: StoreConfig) -> Result<Self> {
        let fs = cfg.fs.clone();
        let root = cfg.root.clone();
        for dir in [
            root.clone(),
            root.join("commitlog"),
            root.join("consumequeue"),
            root.join("index"),
        ] {
            fs.create_dir_all(&dir).at(&dir)?;
        }
        check_volume(&cfg)?;
        let lock = lock_store(fs.as_ref(), &root)?;
        let commitlog = CommitLog::open(
            fs.clone(),
            &root.join("commitlog"),
            cfg.commitlog_segment_size,
        )?
        .with_preallocation(cfg.commitlog_preallocate);
        let (checkpoint, saved) = CheckpointFile::open(fs.as_ref(), &root.join("checkpoint"))?;
        let crashed = fs.exists(&root.join("abort"));
        create_abort_marker(fs.as_ref(), &root)?;
        let queues = load_queues(&cfg)?;
        let index = MessageIndex::open(
            fs,
            &root.join("index"),
            cfg.index_run_entries,
            commitlog.min_offset(),
        )?;
        let inner = Arc::new(Inner {
            cfg,
            commitlog,
            index,
            queues: RwLock::new(queues),
            writer: Mutex::new(WriterState::default()),
            checkpoint: Mutex::new(checkpoint),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            _lock: lock,
            space: Mutex::new(SpaceCheck::default()),
            deleted_for_space: AtomicU64::new(0),
            recovery_cut: Mutex::new(None),
        });
        inner.recover(crashed, saved)?;
        let store = Self {
            inner,
            background: Mutex::new(None),
        };
        if store.inner.cfg.background {
            store.start_background();
        }
        Ok(store)
    }

    fn start_background(&self) {
        let stop: StopSignal = Arc::new((Mutex::new(false), Condvar::new()));
        let inner = self.inner.clone();
        let signal = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("mq-store-flush".into())
            .spawn(move || run_background(&inner, &signal));
        match spawned {
            Ok(handle) => *lock(&self.background) = Some(Background { stop, handle }),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the store's flush thread; call flush() by hand")
            }
        }
    }

    fn stop_background(&self) {
        let Some(bg) = lock(&self.background).take() else {
            return;
        };
        *lock(&bg.stop.0) = true;
        bg.stop.1.notify_all();
        if bg.handle.join().is_err() {
            tracing::error!("the store's flush thread panicked");
        }
    }

    /// Stores one message.
    pub fn put(&self, msg: &MessageToStore) -> Result<PutResult> {
        let mut results = self.put_batch(std::slice::from_ref(msg))?;
        results.pop().ok_or(StoreError::ShutDown)
    }

    /// Stores messages one after the other (a batch send); all are validated before
    /// any is written.
    pub fn put_batch(&self, msgs: &[MessageToStore]) -> Result<Vec<PutResult>> {
        self.inner.check_writable()?;
        self.inner.check_space()?;
        let mut entries = self.inner.encode_all(msgs)?;
        let (results, end) = self.inner.append_all(msgs, &mut entries)?;
        if self.inner.cfg.flush == FlushPolicy::Sync {
            self.inner
                .commitlog
                .flush_until(end)
                .map_err(|e| self.inner.fail(e))?;
        }
        self.inner.seal_index_if_urgent();
        Ok(results)
    }

    /// Stores messages like [`MessageStore::put_batch`] but returns before any fsync,
    /// whatever the flush policy, with the commit-log end the caller passes to
    /// [`MessageStore::flush_until`] before acknowledging under sync flush. Lets a caller
    /// that appends many puts in a row group their fsync (the broker's send queue).
    pub fn put_batch_unflushed(&self, msgs: &[MessageToStore]) -> Result<(Vec<PutResult>, u64)> {
        self.inner.check_writable()?;
        self.inner.check_space()?;
        let mut entries = self.inner.encode_all(msgs)?;
        let (results, end) = self.inner.append_all(msgs, &mut entries)?;
        self.inner.seal_index_if_urgent();
        Ok((results, end))
    }

    /// Returns once the commit log is fsynced up to `end` (one fsync serves every
    /// caller waiting at the time: group commit).
    pub fn flush_until(&self, end: u64) -> Result<()> {
        self.inner
            .commitlog
            .flush_until(end)
            .map_err(|e| self.inner.fail(e))
    }

    /// The flush policy.
    pub fn flush_policy(&self) -> FlushPolicy {
        self.inner.cfg.flush
    }

    /// The largest message body accepted.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.cfg.max_body_bytes
    }

    /// Reads up to `max_msgs` messages (and about `max_bytes`, at least one) from
    /// `topic`/`queue_id` starting at queue offset `offset`, skipping entries whose tag
    /// code `filter` rejects. The data is the stored bytes, ready for a pull response.
    pub fn get(
        &self,
        topic: &str,
        queue_id: i32,
        offset: u64,
        max_msgs: usize,
        max_bytes: usize,
        filter: &dyn Fn(i64) -> bool,
    ) -> Result<GetResult> {
        let Some(cq) = self.inner.queue(topic, queue_id) else {
            return Ok(GetResult::empty(GetStatus::NoMatchedLogicQueue, 0, 0, 0));
        };
        let (min, max) = (cq.min_offset(), cq.max_offset());
        let status = match offset {
            _ if max == 0 => Some((GetStatus::NoMessageInQueue, 0)),
            o if o < min => Some((GetStatus::OffsetTooSmall, min)),
            o if o == max => Some((GetStatus::OffsetOverflowOne, o)),
            o if o > max => Some((GetStatus::OffsetOverflowBadly, max)),
            _ => None,
        };
        if let Some((status, next)) = status {
            return Ok(GetResult::empty(status, next, min, max));
        }
        let limits = Limits {
            max_msgs,
            max_bytes,
            readable_end: self.inner.readable_end(),
        };
        let (picked, next) = self.inner.pick(&cq, offset, limits, filter)?;
        let messages = self.inner.read_messages(&picked)?;
        let status = match (messages.is_empty(), next == offset) {
            (false, _) => GetStatus::Found,
            // The next message is written but not yet fsynced (sync flush).
            (true, true) => GetStatus::OffsetOverflowOne,
            (true, false) => GetStatus::NoMatchedMessage,
        };
        Ok(GetResult {
            status,
            messages,
            next_begin_offset: next,
            min_offset: min,
            max_offset: max,
        })
    }

    /// Next queue offset of a queue (0 if unknown).
    pub fn max_offset(&self, topic: &str, queue_id: i32) -> u64 {
        self.inner
            .queue(topic, queue_id)
            .map_or(0, |q| q.max_offset())
    }

    /// Smallest readable queue offset of a queue (0 if unknown).
    pub fn min_offset(&self, topic: &str, queue_id: i32) -> u64 {
        self.inner
            .queue(topic, queue_id)
            .map_or(0, |q| q.min_offset())
    }

    /// Queue ids that have a consume queue for `topic`, sorted.
    pub fn queue_ids(&self, topic: &str) -> Vec<i32> {
        let queues = self
            .inner
            .queues
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ids: Vec<i32> = queues
            .get(topic)
            .map(|q| q.keys().copied().collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// First commit-log offset still stored.
    pub fn commitlog_min_offset(&self) -> u64 {
        self.inner.commitlog.min_offset()
    }

    /// Commit-log offset of the next message.
    pub fn commitlog_max_offset(&self) -> u64 {
        self.inner.commitlog.max_offset()
    }

    /// Commit-log offset up to which everything is fsynced.
    pub fn flushed_offset(&self) -> u64 {
        self.inner.commitlog.flushed_offset()
    }

    /// STORETIMESTAMP of the message at a queue offset.
    pub fn store_timestamp_at(
        &self,
        topic: &str,
        queue_id: i32,
        offset: u64,
    ) -> Result<Option<i64>> {
        let Some(cq) = self.inner.queue(topic, queue_id) else {
            return Ok(None);
        };
        match cq.entry(offset)? {
            Some(e) if e.is_valid() => self.inner.store_timestamp_of(e),
            _ => Ok(None),
        }
    }

    /// First queue offset whose message was stored at or after `timestamp` (the max
    /// offset if none): "reset consumer offset to a time".
    pub fn search_offset_by_time(&self, topic: &str, queue_id: i32, timestamp: i64) -> Result<u64> {
        let Some(cq) = self.inner.queue(topic, queue_id) else {
            return Ok(0);
        };
        cq.search_by_time(timestamp, |e| self.inner.store_timestamp_of(e))
    }

    /// The stored message at a commit-log offset, if a valid one starts there.
    pub fn view_by_physical_offset(&self, phys_offset: u64) -> Result<Option<Bytes>> {
        self.inner.view(phys_offset)
    }

    /// The stored message named by an offset message id.
    pub fn view_by_msg_id(&self, msg_id: &str) -> Result<Option<Bytes>> {
        let Ok((_, offset)) = decode_offset_msg_id(msg_id) else {
            return Ok(None);
        };
        match u64::try_from(offset) {
            Ok(offset) => self.inner.view(offset),
            Err(_) => Ok(None),
        }
    }

    /// Messages of `topic` whose KEYS contain `key`, stored within `[begin, end]` ms,
    /// newest first, at most `max`.
    pub fn lookup_by_key(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        begin: i64,
        end: i64,
    ) -> Result<Vec<FoundMessage>> {
        self.inner.lookup(topic, key, max, |m| {
            (begin..=end).contains(&m.store_timestamp) && m.keys().any(|k| k == key)
        })
    }

    /// Messages of `topic` whose UNIQ_KEY is `uniq_key` (normally one), newest first.
    pub fn lookup_by_uniq_key(
        &self,
        topic: &str,
        uniq_key: &str,
        max: usize,
    ) -> Result<Vec<FoundMessage>> {
        self.inner
            .lookup(topic, uniq_key, max, |m| m.uniq_key() == Some(uniq_key))
    }

    /// Messages of `topic` stored within `[begin, end]` ms, in queue order per queue
    /// (queues in id order), at most `max`. PREPARED/ROLLBACK messages are not listed.
    pub fn lookup_by_time(
        &self,
        topic: &str,
        begin: i64,
        end: i64,
        max: usize,
    ) -> Result<Vec<FoundMessage>> {
        let mut found = Vec::new();
        for queue_id in self.queue_ids(topic) {
            if found.len() >= max {
                break;
            }
            let start = self.search_offset_by_time(topic, queue_id, begin)?;
            self.inner
                .collect_until(topic, queue_id, start, end, max, &mut found)?;
        }
        Ok(found)
    }

    /// What recovery cut from a damaged commit log when this store was opened (only when
    /// a cut was allowed), else `None`.
    pub fn recovery_cut(&self) -> Option<RecoveryCut> {
        lock(&self.inner.recovery_cut).clone()
    }

    /// Why writes are refused for lack of space, if they are. Looked at again when the
    /// last look (by a put or by this) is stale, so readiness and the runtime info follow
    /// a disk that filled or emptied while nothing was sent; before, a broker whose disk
    /// was freed stayed unready (and its instance `DiskFull`) until some client sent.
    pub fn disk_full(&self) -> Option<String> {
        let mut space = lock(&self.inner.space);
        if let Err(e) = self.inner.look_at_space(&mut space) {
            tracing::warn!(error = %e, "looking at the free space failed");
        }
        space.full.clone()
    }

    /// Why the store refuses writes (a failed write or fsync), if it does. Only a
    /// restart recovers: the broker reports it as not alive.
    pub fn failure(&self) -> Option<String> {
        self.inner
            .commitlog
            .poisoned()
            .or_else(|| lock(&self.inner.failure).clone())
    }

    /// Fsyncs the commit log now; returns the flushed offset.
    pub fn flush(&self) -> Result<u64> {
        self.inner.commitlog.flush().map_err(|e| self.inner.fail(e))
    }

    /// Flushes everything and writes a checkpoint now (what the background thread does
    /// every `checkpoint_interval`).
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    /// Commit-log segments deleted for space above the hard threshold (their messages
    /// may not all have been consumed) since the store opened.
    pub fn segments_deleted_for_space(&self) -> u64 {
        self.inner.deleted_for_space.load(Ordering::Relaxed)
    }

    /// Runs a retention pass now; returns the number of commit-log segments deleted.
    pub fn clean_expired(&self) -> Result<usize> {
        self.inner.clean_expired()
    }

    /// Index entries held in memory (bounded by twice `index_run_entries`).
    pub fn index_memory_entries(&self) -> usize {
        self.inner.index.memory_entries()
    }

    /// Stops the background thread, flushes and fsyncs everything, writes the final
    /// checkpoint and removes the abort marker, so the next open trusts the files.
    pub fn shutdown(&self) -> Result<()> {
        self.stop_background();
        self.inner.shutdown()
    }
}

impl Drop for MessageStore {
    fn drop(&mut self) {
        self.stop_background();
    }
}

fn create_abort_marker(fs: &dyn FileSystem, root: &Path) -> Result<()> {
    let path = root.join("abort");
    let file = fs.open(&path, true).at(&path)?;
    file.sync().at(&path)?;
    fs.sync_dir(root).at(root)
}

/// Opens every `consumequeue/<topic>/<queueId>` directory.
fn load_queues(cfg: &StoreConfig) -> Result<QueueMap> {
    let root = cfg.root.join("consumequeue");
    let fs = cfg.fs.as_ref();
    let mut map = QueueMap::new();
    for topic in fs.list(&root).at(&root)? {
        if message::validate_topic(&topic).is_err() {
            continue;
        }
        let topic_dir = root.join(&topic);
        for name in fs.list(&topic_dir).at(&topic_dir)? {
            let Ok(queue_id) = name.parse::<i32>() else {
                continue;
            };
            let cq = ConsumeQueue::open(
                cfg.fs.clone(),
                &root,
                &topic,
                queue_id,
                cfg.consume_queue_segment_entries,
            )?;
            map.entry(topic.clone())
                .or_default()
                .insert(queue_id, Arc::new(cq));
        }
    }
    Ok(map)
}

fn run_background(inner: &Inner, stop: &StopSignal) {
    let flush_every = match inner.cfg.flush {
        FlushPolicy::Async { interval } => Some(interval),
        FlushPolicy::Sync => None,
    };
    let tick = flush_every
        .unwrap_or(inner.cfg.checkpoint_interval)
        .min(inner.cfg.checkpoint_interval);
    let (mut last_checkpoint, mut last_clean) = (Instant::now(), Instant::now());
    while !wait_stopped(stop, tick) {
        if flush_every.is_some()
            && let Err(e) = inner.commitlog.flush()
        {
            tracing::error!(error = %inner.fail(e), "commit-log flush failed");
        }
        if last_checkpoint.elapsed() >= inner.cfg.checkpoint_interval {
            last_checkpoint = Instant::now();
            if let Err(e) = inner.checkpoint() {
                tracing::error!(error = %e, "checkpoint failed");
            }
        }
        if last_clean.elapsed() >= inner.cfg.clean_interval {
            last_clean = Instant::now();
            if let Err(e) = inner.clean_expired() {
                tracing::error!(error = %e, "retention pass failed");
            }
        }
    }
}

/// Waits up to `timeout`; true once stop was requested.
fn wait_stopped(stop: &StopSignal, timeout: Duration) -> bool {
    let (flag, cv) = &**stop;
    let guard = lock(flag);
    let (guard, _) = cv
        .wait_timeout_while(guard, timeout, |stopped| !*stopped)
        .unwrap_or_else(PoisonError::into_inner);
    *guard
}

impl Inner {
    /// Refuses writes after a failure or shutdown.
    fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        match lock(&self.failure).as_ref() {
            Some(reason) => Err(StoreError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Refuses a put while the disk is full (see `StoreConfig::disk_full_ratio`).
    /// Seals the key index when its buffer is far over size. A failure is logged, not
    /// returned: the messages are already in the commit log (and fsynced under sync
    /// flush), so failing the put would make the client resend a stored message; the
    /// seal job stays pending and the next seal (a later put, the background thread, a
    /// checkpoint) retries it, and recovery rebuilds the index from the commit log.
    fn seal_index_if_urgent(&self) {
        if self.index.needs_urgent_seal()
            && let Err(e) = self.index.seal(false)
        {
            tracing::warn!(error = %e, "sealing the key index failed; the put stands, the seal is retried");
        }
    }

    fn check_space(&self) -> Result<()> {
        let mut space = lock(&self.space);
        self.look_at_space(&mut space)?;
        match &space.full {
            Some(reason) => Err(StoreError::DiskFull {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Looks at the free space again when the last look is older than
    /// `space_check_interval`, and always while the disk is full (so writing resumes as
    /// soon as space returns).
    fn look_at_space(&self, space: &mut SpaceCheck) -> Result<()> {
        let stale = space
            .checked
            .is_none_or(|at| at.elapsed() >= self.cfg.space_check_interval);
        if stale || space.full.is_some() {
            let was_full = space.full.is_some();
            space.full = self.space_shortage()?;
            space.checked = Some(Instant::now());
            match (&space.full, was_full) {
                (Some(reason), false) => tracing::warn!(%reason, "refusing writes: disk full"),
                (None, true) => tracing::info!("disk space is back: writes resume"),
                _ => {}
            }
        }
        Ok(())
    }

    /// Why the disk counts as full, if it does.
    fn space_shortage(&self) -> Result<Option<String>> {
        let root = &self.cfg.root;
        let Some(usage) = self.cfg.fs.disk_usage(root).at(root)? else {
            return Ok(None);
        };
        let ratio = usage.used_ratio();
        let short = usage.available < self.cfg.disk_reserve_bytes;
        Ok((ratio >= self.cfg.disk_full_ratio && short).then(|| {
            format!(
                "{:.1} % of the volume holding {} is used (limit {:.0} %), {} bytes free (reserve {}); {DISK_FULL_ADVICE}",
                ratio * 100.0,
                root.display(),
                self.cfg.disk_full_ratio * 100.0,
                usage.available,
                self.cfg.disk_reserve_bytes
            )
        }))
    }

    /// A write the disk had no room for is a refusal, not a failure: nothing was
    /// appended, and the next put looks at the space again.
    fn out_of_space(&self, e: StoreError) -> StoreError {
        match &e {
            StoreError::Io { path, source } if source.raw_os_error() == Some(libc::ENOSPC) => {
                let reason = format!("no space left writing {}", path.display());
                lock(&self.space).full = Some(reason.clone());
                StoreError::DiskFull { reason }
            }
            _ => e,
        }
    }

    /// A consume queue's write-out failed after its entry was recorded: the message is
    /// in the commit log and in the queue (whose unwritten tail the next append or flush
    /// writes again, and which recovery rebuilds from the log), so the put stands:
    /// failing it would make the client send a stored message twice. No space refuses
    /// later puts until it returns, as the log's own ENOSPC does; any other error stops
    /// writes until a restart.
    fn queue_write_failed(&self, e: StoreError) {
        match self.out_of_space(e) {
            StoreError::DiskFull { reason } => {
                tracing::warn!(%reason, "writing a consume queue ran out of space; the put stands, later ones are refused until space returns");
            }
            e => {
                let e = self.fail(e);
                tracing::error!(error = %e, "writing a consume queue failed; the put stands, later ones are refused");
            }
        }
    }

    /// Remembers a write-path failure (later writes are refused) and passes it on.
    pub(super) fn fail(&self, e: StoreError) -> StoreError {
        lock(&self.failure).get_or_insert_with(|| e.to_string());
        e
    }

    fn encode_all(&self, msgs: &[MessageToStore]) -> Result<Vec<Vec<u8>>> {
        let segment = self.cfg.commitlog_segment_size;
        msgs.iter()
            .map(|m| {
                let entry = message::encode(m, self.cfg.store_host, self.cfg.max_body_bytes)?;
                if entry.len() as u64 + message::BLANK_LEN as u64 > segment {
                    return Err(super::error::EncodeError::EntryTooLarge {
                        len: entry.len(),
                        segment,
                    }
                    .into());
                }
                Ok(entry)
            })
            .collect()
    }

    /// Appends and dispatches under the writer lock; returns the results and the log
    /// offset the last one ends at.
    fn append_all(
        &self,
        msgs: &[MessageToStore],
        entries: &mut [Vec<u8>],
    ) -> Result<(Vec<PutResult>, u64)> {
        let mut writer = lock(&self.writer);
        self.check_writable()?;
        let mut results = Vec::with_capacity(msgs.len());
        for (msg, entry) in msgs.iter().zip(entries.iter_mut()) {
            results.push(self.append_one(&mut writer, msg, entry)?);
        }
        Ok((results, self.commitlog.max_offset()))
    }

    fn append_one(
        &self,
        writer: &mut WriterState,
        msg: &MessageToStore,
        entry: &mut [u8],
    ) -> Result<PutResult> {
        let ts = writer.next_timestamp(self.cfg.clock.now_millis());
        let cq = match is_invisible_transaction(msg.sys_flag) {
            true => None,
            false => Some(
                self.queue_or_create(&msg.topic, msg.queue_id)
                    .map_err(|e| self.out_of_space(e))?,
            ),
        };
        let queue_offset = cq.as_ref().map_or(0, |q| q.max_offset());
        let appended = self
            .commitlog
            .append(entry, |buf, phys| {
                patch_for_append(buf, queue_offset as i64, phys as i64, ts)
            })
            .map_err(|e| self.out_of_space(e))?;
        let dispatched = self.dispatch(
            cq.as_deref(),
            msg.sys_flag,
            &msg.topic,
            &msg.properties,
            ts,
            appended,
        );
        if let Err(e) = dispatched {
            self.queue_write_failed(e);
        }
        Ok(PutResult {
            msg_id: offset_msg_id(self.cfg.store_host, appended.offset as i64),
            queue_id: msg.queue_id,
            queue_offset,
            phys_offset: appended.offset,
            size: appended.size,
            store_timestamp: ts,
        })
    }

    /// Adds a stored message to its consume queue (if visible) and the index. An error is
    /// the queue failing to write out its tail: the entry is recorded all the same.
    pub(super) fn dispatch(
        &self,
        cq: Option<&ConsumeQueue>,
        sys_flag: i32,
        topic: &str,
        properties: &str,
        store_timestamp: i64,
        at: Appended,
    ) -> Result<()> {
        if let Some(cq) = cq {
            let tags_code = self.tags_code(topic, properties, store_timestamp);
            cq.append(CqEntry {
                phys_offset: at.offset as i64,
                size: at.size as i32,
                tags_code,
            })?;
        }
        let end = at.offset + u64::from(at.size);
        if sys_flag & sysflag::TRANSACTION_MASK == sysflag::TRANSACTION_ROLLBACK {
            self.index.advance(end);
            return Ok(());
        }
        let keys = split_keys(property_value(properties, property::KEYS).unwrap_or(""));
        let uniq = property_value(properties, property::UNIQ_KEY);
        let hashes = keys.chain(uniq).map(|k| key_hash(topic, k));
        self.index.add(at.offset, end, hashes);
        Ok(())
    }

    /// The consume-queue tag code of a message.
    pub(super) fn tags_code(&self, topic: &str, properties: &str, store_timestamp: i64) -> i64 {
        let hooked = self
            .cfg
            .tags_code
            .as_ref()
            .and_then(|f| f(topic, properties, store_timestamp));
        hooked.unwrap_or_else(|| {
            property_value(properties, property::TAGS).map_or(0, message::tags_code)
        })
    }

    /// The consume queue of `topic`/`queue_id`, if it exists.
    pub(super) fn queue(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        queues.get(topic)?.get(&queue_id).cloned()
    }

    /// The consume queue of `topic`/`queue_id`, created if needed.
    pub(super) fn queue_or_create(&self, topic: &str, queue_id: i32) -> Result<Arc<ConsumeQueue>> {
        if let Some(cq) = self.queue(topic, queue_id) {
            return Ok(cq);
        }
        let mut queues = self.queues.write().unwrap_or_else(PoisonError::into_inner);
        let by_id = queues.entry(topic.to_owned()).or_default();
        if let Some(cq) = by_id.get(&queue_id) {
            return Ok(cq.clone());
        }
        let root = self.cfg.root.join("consumequeue");
        let segment_entries = self.cfg.consume_queue_segment_entries;
        let cq = Arc::new(ConsumeQueue::open(
            self.cfg.fs.clone(),
            &root,
            topic,
            queue_id,
            segment_entries,
        )?);
        by_id.insert(queue_id, cq.clone());
        Ok(cq)
    }

    /// Every consume queue.
    pub(super) fn all_queues(&self) -> Vec<Arc<ConsumeQueue>> {
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        queues.values().flat_map(|q| q.values().cloned()).collect()
    }

    /// Chooses the entries a get returns, reading the queue in chunks (at least
    /// `MIN_SCAN_ENTRIES` entries are examined when the filter rejects); also returns
    /// the next offset.
    fn pick(
        &self,
        cq: &ConsumeQueue,
        offset: u64,
        limits: Limits,
        filter: &dyn Fn(i64) -> bool,
    ) -> Result<(Vec<(u64, CqEntry)>, u64)> {
        let budget_end = offset.saturating_add((limits.max_msgs as u64).max(MIN_SCAN_ENTRIES));
        let chunk = (limits.max_msgs as u64).clamp(16, MIN_SCAN_ENTRIES);
        let mut picker = Picker {
            picked: Vec::new(),
            bytes: 0,
            next: offset,
            log_min: self.commitlog.min_offset(),
        };
        while picker.next < budget_end {
            let entries = cq.read(picker.next, chunk.min(budget_end - picker.next))?;
            if entries.is_empty() || picker.take(&entries, limits, filter) {
                break;
            }
        }
        Ok((picker.picked, picker.next))
    }

    /// Where reads stop: with sync flush, at the fsynced offset, so no consumer sees
    /// (and commits an offset past) a message a power cut could still take back.
    fn readable_end(&self) -> u64 {
        match self.cfg.flush {
            FlushPolicy::Sync => self.commitlog.flushed_offset(),
            FlushPolicy::Async { .. } => u64::MAX,
        }
    }

    /// Reads the picked messages, one read per run of physically adjacent entries.
    fn read_messages(&self, picked: &[(u64, CqEntry)]) -> Result<Vec<StoredMessage>> {
        let segment = self.commitlog.segment_size();
        let mut out = Vec::with_capacity(picked.len());
        let mut i = 0;
        while i < picked.len() {
            let start = picked[i].1.phys();
            let mut end = start + picked[i].1.size as u64;
            let mut j = i + 1;
            while let Some((_, next)) = picked.get(j) {
                let next_end = end + next.size as u64;
                let adjacent = next.phys() == end && (next_end - 1) / segment == start / segment;
                if !adjacent || next_end - start > MAX_COALESCED_READ {
                    break;
                }
                end = next_end;
                j += 1;
            }
            if let Some(data) = self.commitlog.read(start, (end - start) as usize)? {
                out.extend(split_run(&picked[i..j], start, &data));
            }
            i = j;
        }
        Ok(out)
    }

    /// STORETIMESTAMP of the message an entry points at.
    pub(super) fn store_timestamp_of(&self, e: CqEntry) -> Result<Option<i64>> {
        let len = (e.size.max(0) as usize).min(128);
        Ok(self
            .commitlog
            .read(e.phys(), len)?
            .and_then(|head| peek_store_timestamp(&head)))
    }

    /// The valid message at `offset`, if any.
    fn view(&self, offset: u64) -> Result<Option<Bytes>> {
        if offset < self.commitlog.min_offset() {
            return Ok(None);
        }
        let Some(data) = self.commitlog.read_entry(offset)? else {
            return Ok(None);
        };
        let valid = decode(&data).is_ok_and(|m| m.phys_offset == offset as i64);
        Ok(valid.then_some(data))
    }

    fn lookup(
        &self,
        topic: &str,
        key: &str,
        max: usize,
        matches: impl Fn(&DecodedMessage<'_>) -> bool,
    ) -> Result<Vec<FoundMessage>> {
        let candidates = self.index.lookup(
            key_hash(topic, key),
            max.saturating_mul(4).saturating_add(32),
        )?;
        let mut found: Vec<FoundMessage> = Vec::new();
        for phys in candidates {
            if found.len() >= max || found.iter().any(|f| f.phys_offset == phys) {
                continue;
            }
            let Some(data) = self.view(phys)? else {
                continue;
            };
            let hit = decode(&data).is_ok_and(|m| m.topic == topic && matches(&m));
            if hit {
                found.push(FoundMessage {
                    phys_offset: phys,
                    data,
                });
            }
        }
        Ok(found)
    }

    /// Appends messages of one queue from `start` until one is stored after `end`.
    fn collect_until(
        &self,
        topic: &str,
        queue_id: i32,
        start: u64,
        end: i64,
        max: usize,
        found: &mut Vec<FoundMessage>,
    ) -> Result<()> {
        let Some(cq) = self.queue(topic, queue_id) else {
            return Ok(());
        };
        let mut offset = start.max(cq.min_offset());
        while found.len() < max && offset < cq.max_offset() {
            let entries = cq.read(offset, 64)?;
            for e in entries.iter().filter(|e| e.is_valid()) {
                let Some(data) = self.view(e.phys())? else {
                    continue;
                };
                if peek_store_timestamp(&data).is_some_and(|t| t > end) || found.len() >= max {
                    return Ok(());
                }
                found.push(FoundMessage {
                    phys_offset: e.phys(),
                    data,
                });
            }
            offset += entries.len().max(1) as u64;
        }
        Ok(())
    }

    /// Flushes log, queues and index and records how far each is durable.
    pub(super) fn checkpoint(&self) -> Result<()> {
        let (dispatched, ts) = {
            let writer = lock(&self.writer);
            (self.commitlog.max_offset(), writer.last_store_timestamp)
        };
        self.write_checkpoint(dispatched, ts, false)
    }

    /// The checkpoint protocol: `dispatched` was read under the writer lock, so every
    /// message before it is in the queues; fsync the log (to at least `dispatched`),
    /// then the queues, then record `dispatched` as the consume-queue offset.
    fn write_checkpoint(&self, dispatched: u64, ts: i64, seal_all: bool) -> Result<()> {
        let flushed = self.commitlog.flush().map_err(|e| self.fail(e))?;
        for cq in self.all_queues() {
            cq.flush()?;
        }
        self.index.seal(seal_all)?;
        let log_min = self.commitlog.min_offset();
        let cp = Checkpoint {
            phys_flushed: flushed,
            cq_offset: dispatched,
            index_offset: self.index.sealed_end().unwrap_or(log_min),
            phys_timestamp: ts,
            cq_timestamp: ts,
            index_timestamp: ts,
        };
        lock(&self.checkpoint).write(&cp)
    }

    /// Retention: deletes the oldest commit-log segments whose messages are all older
    /// than the retention period, and more above the hard disk threshold, then the
    /// consume-queue and index entries they covered.
    pub(super) fn clean_expired(&self) -> Result<usize> {
        let starts = self.commitlog.segment_starts();
        let by_age = self.expired_by_age(&starts)?;
        let mut deleted = match starts.get(by_age).filter(|_| by_age > 0) {
            Some(&new_min) => self.delete_before(new_min)?,
            None => 0,
        };
        let mut forced = 0;
        // One segment at a time, measuring again after each: segment files may be
        // shorter than the segment size, and other writers move the free space too.
        while self.over_hard_threshold()? {
            let Some(&next) = self.commitlog.segment_starts().get(1) else {
                break;
            };
            forced += self.delete_before(next)?;
        }
        if forced > 0 {
            self.deleted_for_space
                .fetch_add(forced as u64, Ordering::Relaxed);
            tracing::warn!(
                segments = forced,
                "disk nearly exhausted: deleted the oldest commit-log segments, whose messages may not all have been consumed; free space or grow the volume"
            );
        }
        deleted += forced;
        Ok(deleted)
    }

    /// Deletes the commit-log segments before `new_min` and the queue and index entries
    /// that pointed into them; returns the number of segments deleted.
    fn delete_before(&self, new_min: u64) -> Result<usize> {
        let deleted = self.commitlog.delete_segments_before(new_min)?;
        for cq in self.all_queues() {
            cq.delete_expired(new_min)?;
        }
        self.index.delete_before(new_min)?;
        tracing::info!(deleted, new_min, "retention deleted commit-log segments");
        Ok(deleted)
    }

    /// Index of the first segment to keep by age: segment *i* is expired when the first
    /// message of segment *i + 1* is older than the retention period.
    fn expired_by_age(&self, starts: &[u64]) -> Result<usize> {
        let cutoff = self.cfg.clock.now_millis() - self.cfg.retention.as_millis() as i64;
        let mut keep_from = 0;
        while keep_from + 1 < starts.len() {
            match self
                .commitlog
                .first_store_timestamp(starts[keep_from + 1])?
            {
                Some(ts) if ts < cutoff => keep_from += 1,
                _ => break,
            }
        }
        Ok(keep_from)
    }

    /// Whether the disk is over the hard threshold: at least `disk_force_clean_ratio`
    /// full and less than half the reserve available.
    fn over_hard_threshold(&self) -> Result<bool> {
        let root = &self.cfg.root;
        let Some(usage) = self.cfg.fs.disk_usage(root).at(root)? else {
            return Ok(false);
        };
        Ok(usage.total > 0
            && usage.used_ratio() >= self.cfg.disk_force_clean_ratio
            && usage.available < self.cfg.disk_reserve_bytes / 2)
    }

    /// Clean shutdown: flush and seal everything, then remove the abort marker.
    fn shutdown(&self) -> Result<()> {
        let writer = lock(&self.writer);
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let dispatched = self.commitlog.max_offset();
        self.index.advance(dispatched);
        self.write_checkpoint(dispatched, writer.last_store_timestamp, true)?;
        let root = &self.cfg.root;
        let abort = root.join("abort");
        self.cfg.fs.remove_file(&abort).at(&abort)?;
        self.cfg.fs.sync_dir(root).at(root)
    }
}

/// Splits one coalesced read into its messages, skipping any whose header does not
/// match its consume-queue entry.
fn split_run(picked: &[(u64, CqEntry)], start: u64, data: &Bytes) -> Vec<StoredMessage> {
    let mut out = Vec::with_capacity(picked.len());
    for (queue_offset, e) in picked {
        let at = (e.phys() - start) as usize;
        let bytes = data.slice(at..at + e.size as usize);
        let sane = read_i32(&bytes, 0) == Some(e.size)
            && read_i32(&bytes, 4) == Some(MESSAGE_MAGIC as i32);
        if !sane {
            tracing::warn!(
                queue_offset,
                phys = e.phys(),
                "consume-queue entry does not match the commit log"
            );
            continue;
        }
        out.push(StoredMessage {
            queue_offset: *queue_offset,
            phys_offset: e.phys(),
            tags_code: e.tags_code,
            data: bytes,
        });
    }
    out
}

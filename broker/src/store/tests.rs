//! Store-level tests: put/get, restarts, simulated power cuts at arbitrary points,
//! rebuilt queues and index, retention. All on the simulated disk except one test on
//! real files; all seeded and fast.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::io::{FileSystem, RealFs, SimFs, XorShift64};
use super::message::{MessageToStore, decode, encode_properties, sysflag};
use super::{
    FlushPolicy, GetStatus, ManualClock, MessageStore, PutResult, StoreConfig, StoreError,
};

const T0: i64 = 1_700_000_000_000;
const ALL: &dyn Fn(i64) -> bool = &|_| true;

fn config(fs: &SimFs, flush: FlushPolicy, clock: &Arc<ManualClock>) -> StoreConfig {
    let mut cfg = StoreConfig::new("/store");
    cfg.fs = Arc::new(fs.clone());
    cfg.clock = clock.clone();
    cfg.commitlog_segment_size = 4096;
    cfg.consume_queue_segment_entries = 8;
    cfg.index_run_entries = 16;
    cfg.disk_reserve_bytes = 8192;
    cfg.flush = flush;
    cfg.background = false;
    cfg
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

fn open(fs: &SimFs, flush: FlushPolicy, clock: &Arc<ManualClock>) -> MessageStore {
    MessageStore::open(config(fs, flush, clock)).expect("open store")
}

const TOPICS: [&str; 3] = ["TopicA", "TopicB", "MQ_INST_1_x%TopicC"];

/// Message number `i` with random body, tag and keys.
fn message(i: usize, rng: &mut XorShift64) -> MessageToStore {
    let mut body = vec![0u8; rng.below(400) as usize];
    rng.fill(&mut body);
    let tag = format!("Tag{}", i % 3);
    let keys = format!("k{i} shared{}", i % 5);
    let uniq = format!("U{i:08}");
    let topic = TOPICS[rng.below(3) as usize];
    let props = encode_properties([
        ("TAGS", tag.as_str()),
        ("KEYS", keys.as_str()),
        ("UNIQ_KEY", uniq.as_str()),
    ]);
    let mut msg = MessageToStore::new(topic, rng.below(3) as i32, body);
    msg.properties = props;
    msg.born_timestamp = T0 + i as i64;
    msg
}

/// Checks that `get` at the result's queue offset returns exactly `msg`.
fn assert_stored(store: &MessageStore, msg: &MessageToStore, res: &PutResult) {
    let got = store
        .get(
            &msg.topic,
            msg.queue_id,
            res.queue_offset,
            1,
            usize::MAX,
            ALL,
        )
        .expect("get");
    assert_eq!(
        got.status,
        GetStatus::Found,
        "{} q{} @{}",
        msg.topic,
        msg.queue_id,
        res.queue_offset
    );
    let stored = &got.messages[0];
    assert_eq!(stored.phys_offset, res.phys_offset);
    let d = decode(&stored.data).expect("decode");
    assert_eq!(
        (d.body, d.topic.as_ref(), d.queue_id),
        (&msg.body[..], msg.topic.as_str(), msg.queue_id)
    );
    assert_eq!(d.queue_offset as u64, res.queue_offset);
    assert_eq!(d.properties, msg.properties.as_str());
}

/// Every queue is dense from min to max and every message in it is intact.
fn assert_queues_dense(store: &MessageStore) -> usize {
    let mut total = 0;
    for topic in TOPICS {
        for queue_id in store.queue_ids(topic) {
            let (min, max) = (
                store.min_offset(topic, queue_id),
                store.max_offset(topic, queue_id),
            );
            let got = store
                .get(topic, queue_id, min, usize::MAX, usize::MAX, ALL)
                .expect("get");
            assert_eq!(
                got.messages.len() as u64,
                max - min,
                "{topic}/{queue_id} not dense"
            );
            for (i, m) in got.messages.iter().enumerate() {
                let d = decode(&m.data).expect("recovery served a damaged message");
                assert_eq!(
                    (d.queue_offset as u64, d.topic.as_ref(), d.queue_id),
                    (min + i as u64, topic, queue_id)
                );
                assert_eq!(d.phys_offset as u64, m.phys_offset);
            }
            total += got.messages.len();
        }
    }
    total
}

#[test]
fn put_then_get_with_filters_limits_and_statuses() {
    let fs = SimFs::new();
    let clock = clock();
    let store = open(&fs, FlushPolicy::Sync, &clock);
    let mut rng = XorShift64::new(1);
    let mut results = Vec::new();
    for i in 0..30 {
        let mut msg = message(i, &mut rng);
        msg.topic = "TopicA".into();
        msg.queue_id = 1;
        let res = store.put(&msg).expect("put");
        assert_eq!(res.queue_offset, i as u64);
        assert_eq!(
            res.msg_id,
            super::message::offset_msg_id(
                SocketAddr::from(([127, 0, 0, 1], 10911)),
                res.phys_offset as i64
            )
        );
        results.push((msg, res));
    }
    for (msg, res) in &results {
        assert_stored(&store, msg, res);
    }
    let tag1 = super::message::tags_code("Tag1");
    let only_tag1 = |code: i64| code == tag1;
    let got = store
        .get("TopicA", 1, 0, 32, usize::MAX, &only_tag1)
        .expect("get");
    assert_eq!(
        got.messages
            .iter()
            .map(|m| m.queue_offset)
            .collect::<Vec<_>>(),
        (1..30).step_by(3).collect::<Vec<_>>()
    );
    assert_eq!(got.next_begin_offset, 30);
    let limited = store.get("TopicA", 1, 5, 3, usize::MAX, ALL).expect("get");
    assert_eq!((limited.messages.len(), limited.next_begin_offset), (3, 8));
    let one_byte = store.get("TopicA", 1, 5, 10, 1, ALL).expect("get");
    assert_eq!(
        (one_byte.messages.len(), one_byte.next_begin_offset),
        (1, 6),
        "at least one message"
    );
    let statuses = [
        (
            store.get("TopicA", 1, 30, 1, 1, ALL),
            GetStatus::OffsetOverflowOne,
            30,
        ),
        (
            store.get("TopicA", 1, 99, 1, 1, ALL),
            GetStatus::OffsetOverflowBadly,
            30,
        ),
        (
            store.get("TopicA", 7, 0, 1, 1, ALL),
            GetStatus::NoMatchedLogicQueue,
            0,
        ),
        (
            store.get("TopicA", 1, 0, 1, 1, &|_| false),
            GetStatus::NoMatchedMessage,
            30,
        ),
    ];
    for (got, status, next) in statuses {
        let got = got.expect("get");
        assert_eq!((got.status, got.next_begin_offset), (status, next));
    }
}

#[test]
fn transaction_half_and_rollback_messages_get_no_queue_entry() {
    let fs = SimFs::new();
    let clock = clock();
    let store = open(&fs, FlushPolicy::Sync, &clock);
    let mut half = MessageToStore::new("TopicA", 0, &b"half"[..])
        .with_properties([("UNIQ_KEY", "H1"), ("KEYS", "order-1")]);
    half.sys_flag = sysflag::TRANSACTION_PREPARED;
    let mut rollback = half.clone().with_properties([("UNIQ_KEY", "R1")]);
    rollback.sys_flag = sysflag::TRANSACTION_ROLLBACK;
    let normal = MessageToStore::new("TopicA", 0, &b"normal"[..]);
    let h = store.put(&half).expect("put half");
    let r = store.put(&rollback).expect("put rollback");
    let n = store.put(&normal).expect("put normal");
    assert_eq!((h.queue_offset, r.queue_offset, n.queue_offset), (0, 0, 0));
    assert_eq!(store.max_offset("TopicA", 0), 1);
    let got = store.get("TopicA", 0, 0, 10, usize::MAX, ALL).expect("get");
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].phys_offset, n.phys_offset);
    let found = store.lookup_by_uniq_key("TopicA", "H1", 5).expect("lookup");
    assert_eq!(
        found.iter().map(|f| f.phys_offset).collect::<Vec<_>>(),
        vec![h.phys_offset]
    );
    assert!(
        store
            .lookup_by_uniq_key("TopicA", "R1", 5)
            .expect("lookup")
            .is_empty(),
        "rollbacks are not indexed"
    );
    let view = store
        .view_by_msg_id(&h.msg_id)
        .expect("view")
        .expect("found");
    assert_eq!(decode(&view).expect("decode").body, b"half");
}

#[test]
fn invalid_messages_are_refused_with_clear_errors() {
    let fs = SimFs::new();
    let clock = clock();
    let mut cfg = config(&fs, FlushPolicy::Sync, &clock);
    cfg.max_body_bytes = 1000;
    let store = MessageStore::open(cfg).expect("open");
    let too_big = MessageToStore::new("TopicA", 0, vec![0u8; 1001]);
    let err = store.put(&too_big).expect_err("body too big");
    assert!(
        matches!(err, StoreError::Encode(_)) && err.to_string().contains("1001"),
        "{err}"
    );
    let long_topic = MessageToStore::new("x".repeat(128), 0, &b""[..]);
    assert!(
        store
            .put(&long_topic)
            .expect_err("topic")
            .to_string()
            .contains("127")
    );
    let fits_body_not_segment = MessageToStore::new("TopicA", 0, vec![0u8; 1000])
        .with_properties([("P", &"v".repeat(3500)[..])]);
    assert!(
        store
            .put(&fits_body_not_segment)
            .expect_err("entry")
            .to_string()
            .contains("segment")
    );
    let batch = [MessageToStore::new("TopicA", 0, &b"ok"[..]), too_big];
    assert!(store.put_batch(&batch).is_err());
    assert_eq!(
        store.max_offset("TopicA", 0),
        0,
        "a batch is validated before anything is written"
    );
}

#[test]
fn clean_restart_on_real_files_keeps_everything() {
    let dir = std::env::temp_dir().join(format!("mq-store-clean-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let clock = clock();
    let mut cfg = config(
        &SimFs::new(),
        FlushPolicy::Async {
            interval: Duration::from_millis(20),
        },
        &clock,
    );
    cfg.root = PathBuf::from(&dir);
    cfg.fs = Arc::new(RealFs);
    cfg.background = true;
    cfg.checkpoint_interval = Duration::from_millis(30);
    let store = MessageStore::open(cfg.clone()).expect("open");
    let mut rng = XorShift64::new(2);
    let acked: Vec<_> = (0..200)
        .map(|i| {
            let msg = message(i, &mut rng);
            let res = store.put(&msg).expect("put");
            (msg, res)
        })
        .collect();
    store.shutdown().expect("shutdown");
    assert!(!RealFs.exists(&dir.join("abort")));
    assert!(
        RealFs.list(&dir.join("commitlog")).expect("list").len() > 5,
        "segments rolled"
    );
    drop(store);
    let store = MessageStore::open(cfg).expect("reopen");
    for (msg, res) in &acked {
        assert_stored(&store, msg, res);
        assert_eq!(
            store
                .lookup_by_uniq_key(&msg.topic, &res_uniq(msg), 3)
                .expect("lookup")
                .len(),
            1
        );
    }
    assert_eq!(assert_queues_dense(&store), 200);
    store.shutdown().expect("shutdown");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

fn res_uniq(msg: &MessageToStore) -> String {
    super::message::property_value(&msg.properties, "UNIQ_KEY")
        .unwrap_or_default()
        .to_owned()
}

/// What a crash run produced: acknowledged puts, and how many of them (a prefix) were
/// covered by a completed flush.
struct Run {
    acked: Vec<(MessageToStore, PutResult)>,
    flushed_prefix: usize,
}

/// A disk fault a power-cut trial injects at put `at` of its stream, before the cut (if
/// the cut comes first, the fault never fires).
#[derive(Debug, Clone, Copy)]
struct Fault {
    at: usize,
    kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// Put `at`'s write stores only `keep` bytes, then fails with EIO: that put fails
    /// with an I/O error, and the next put overwrites the partial entry.
    ShortWrite { keep: usize },
    /// The first fsync from put `at` on fails with EIO and drops what it should have
    /// synced, while a later fsync would succeed: the store must acknowledge nothing
    /// more until it is reopened.
    SyncFails,
    /// From put `at` on, the disk has `room` bytes left and writes beyond fail with
    /// ENOSPC: puts are refused (`DiskFull`) and nothing acknowledged is damaged.
    DiskFills { room: u64 },
}

impl FaultKind {
    const NAMES: [&str; 3] = ["short write", "failed fsync", "full disk"];

    fn index(self) -> usize {
        match self {
            Self::ShortWrite { .. } => 0,
            Self::SyncFails => 1,
            Self::DiskFills { .. } => 2,
        }
    }
}

impl Fault {
    /// The fault of trial `seed`, or none on about a third of the seeds (the plain
    /// power-cut trials). Drawn from a generator of its own, so that every trial streams
    /// the same messages and arms the same cut as it would without faults.
    fn draw(seed: u64) -> Option<Self> {
        let mut rng = XorShift64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xFA17);
        rng.next_u64();
        if rng.one_in(3) {
            return None;
        }
        // Early in the stream: the cut (after up to 1500 disk operations, two or so per
        // put) mostly comes after it, so most faults fire.
        let at = rng.below(200) as usize;
        // The kind rotates with the seed, so that each gets about a third of the faults.
        let kind = match seed % 3 {
            // Up to whole entries: a write that fails after storing all its bytes is
            // as unacknowledged as a torn one.
            0 => FaultKind::ShortWrite {
                keep: rng.below(600) as usize,
            },
            1 => FaultKind::SyncFails,
            // Room for a few to a few dozen messages.
            _ => FaultKind::DiskFills {
                room: rng.below(8192),
            },
        };
        Some(Self { at, kind })
    }
}

/// What a trial's fault has done so far, to tell the errors it explains from others.
struct FaultCheck {
    fault: Option<Fault>,
    armed: bool,
    fired: bool,
}

impl FaultCheck {
    /// True once a failed fsync poisoned the store: it may acknowledge nothing more.
    fn poisoned(&self) -> bool {
        self.fired && self.fault.is_some_and(|f| f.kind == FaultKind::SyncFails)
    }

    /// Accepts `e` (from a put or flush that the power cut did not stop) only if it is
    /// what the injected fault causes; `trigger` tells that the fault was armed for
    /// exactly this operation. A store that fails for another reason fails the test.
    fn refused(&mut self, what: &str, trigger: bool, e: &StoreError, store: &MessageStore) {
        let os_error = |code| match e {
            StoreError::Io { source, .. } => source.raw_os_error() == Some(code),
            _ => false,
        };
        let expected = match self.fault.map(|f| f.kind) {
            Some(FaultKind::ShortWrite { .. }) => trigger && os_error(libc::EIO),
            // The failed fsync itself, then refusals: the poison names the fsync.
            Some(FaultKind::SyncFails) if trigger => os_error(libc::EIO),
            Some(FaultKind::SyncFails) => {
                self.fired
                    && matches!(e, StoreError::Failed(_))
                    && store.failure().is_some_and(|f| f.contains("fsync"))
            }
            // A put is refused as `DiskFull` (whichever of its writes found no room); a
            // flush writing out a queue or the index fails with ENOSPC as I/O.
            Some(FaultKind::DiskFills { .. }) => {
                self.armed
                    && match e {
                        StoreError::DiskFull { .. } => true,
                        _ => os_error(libc::ENOSPC),
                    }
            }
            None => false,
        };
        assert!(
            expected,
            "{what} failed with {:?} injected: {e:?}",
            self.fault
        );
        self.fired = true;
    }
}

/// Puts a random stream until the armed power cut stops the store (or the stream ends
/// and the plug is pulled by hand), injecting `fault` on the way; also returns whether
/// the fault fired before the cut.
fn stream_until_cut(
    fs: &SimFs,
    store: &MessageStore,
    rng: &mut XorShift64,
    sync: bool,
    fault: Option<Fault>,
) -> (Run, bool) {
    let mut run = Run {
        acked: Vec::new(),
        flushed_prefix: 0,
    };
    let mut check = FaultCheck {
        fault,
        armed: false,
        fired: false,
    };
    for i in 0..400 {
        let msg = message(i, rng);
        let due = fault.filter(|f| f.at == i).map(|f| f.kind);
        match due {
            Some(FaultKind::ShortWrite { keep }) => fs.cut_next_write(keep),
            Some(FaultKind::SyncFails) if sync => fs.fail_next_syncs(1),
            Some(FaultKind::DiskFills { room }) => fs.set_capacity(Some(used_bytes(fs) + room)),
            _ => {}
        }
        check.armed |= due.is_some();
        // The put's first write is its log entry's, and under sync flush its first fsync
        // is the log's: a short write or failed fsync armed for it must fail it.
        let put_trigger = matches!(due, Some(FaultKind::ShortWrite { .. }))
            || (sync && due == Some(FaultKind::SyncFails));
        match store.put(&msg) {
            Err(_) if fs.power_cuts() > 0 => return (run, check.fired),
            Err(e) => check.refused(&format!("put {i}"), put_trigger, &e, store),
            Ok(res) => {
                assert!(!put_trigger, "put {i} acknowledged through {due:?}");
                assert!(
                    !check.poisoned(),
                    "put {i} acknowledged after a failed fsync"
                );
                run.acked.push((msg, res));
                if sync {
                    run.flushed_prefix = run.acked.len();
                }
            }
        }
        let mut op = rng.below(12);
        // Under async flush a put does not fsync: the failing fsync is a flush's, forced
        // here (its first fsync is the log's, which this put made dirty).
        let flush_trigger = !sync && due == Some(FaultKind::SyncFails);
        if flush_trigger {
            op %= 2;
            fs.fail_next_syncs(1);
        }
        let flushed = match op {
            0 => Some(store.flush().map(|_| ())),
            1 => Some(store.checkpoint()),
            _ => None,
        };
        match flushed {
            Some(Err(_)) if fs.power_cuts() > 0 => return (run, check.fired),
            Some(Err(e)) => check.refused(&format!("flush {i}"), flush_trigger, &e, store),
            Some(Ok(())) => {
                assert!(!flush_trigger, "flush {i} succeeded through a failed fsync");
                // A later fsync succeeds on the disk, but what the failed one dropped is
                // gone: a flush reporting success now would be a lie.
                assert!(
                    !check.poisoned(),
                    "flush {i} succeeded after a failed fsync"
                );
                run.flushed_prefix = run.acked.len();
            }
            None => {}
        }
    }
    fs.power_cut(rng);
    (run, check.fired)
}

/// Reopens after a cut; sometimes a second cut hits recovery itself first.
fn reopen_after_cut(
    fs: &SimFs,
    flush: FlushPolicy,
    clock: &Arc<ManualClock>,
    rng: &mut XorShift64,
) -> MessageStore {
    if rng.one_in(3) {
        fs.arm_power_cut(rng.below(40), rng.next_u64(), rng.one_in(2));
        if let Ok(store) = MessageStore::open(config(fs, flush, clock)) {
            drop(store);
            fs.power_cut(rng);
        }
        fs.disarm();
    }
    open(fs, flush, clock)
}

fn check_recovered(store: &MessageStore, run: &Run, must_survive: usize) {
    let mut by_phys: HashMap<u64, &MessageToStore> = HashMap::new();
    for (msg, res) in &run.acked {
        by_phys.insert(res.phys_offset, msg);
    }
    for (msg, res) in &run.acked[..must_survive] {
        assert_stored(store, msg, res);
        let found = store
            .lookup_by_uniq_key(&msg.topic, &res_uniq(msg), 2)
            .expect("lookup");
        assert_eq!(found.len(), 1, "index lost {}", res_uniq(msg));
    }
    assert_queues_dense(store);
    // Whatever survived beyond that is what was put at that offset, never garbage.
    for topic in TOPICS {
        for queue_id in store.queue_ids(topic) {
            let got = store
                .get(topic, queue_id, 0, usize::MAX, usize::MAX, ALL)
                .expect("get");
            for m in &got.messages {
                if let Some(original) = by_phys.get(&m.phys_offset) {
                    assert_eq!(decode(&m.data).expect("decode").body, &original.body[..]);
                }
            }
        }
    }
}

fn after_recovery_the_store_works(
    fs: &SimFs,
    store: MessageStore,
    flush: FlushPolicy,
    clock: &Arc<ManualClock>,
) {
    let msg = MessageToStore::new("TopicA", 0, &b"after"[..]);
    let expected = store.max_offset("TopicA", 0);
    let res = store.put(&msg).expect("put after recovery");
    assert_eq!(res.queue_offset, expected);
    store.shutdown().expect("shutdown");
    drop(store);
    let store = open(fs, flush, clock);
    assert_stored(&store, &msg, &res);
}

/// One power-cut trial; returns the kind of the fault that fired before the cut, if any.
fn power_cut_trial(seed: u64, flush: FlushPolicy) -> Option<FaultKind> {
    let fs = SimFs::new();
    let clock = clock();
    let mut rng = XorShift64::new(seed);
    let sync = flush == FlushPolicy::Sync;
    let fault = Fault::draw(seed);
    let store = open(&fs, flush, &clock);
    fs.arm_power_cut(rng.below(1500), rng.next_u64(), rng.one_in(2));
    let (run, fired) = stream_until_cut(&fs, &store, &mut rng, sync, fault);
    fs.disarm();
    // The faults were the old machine's: the disk works (and has room) after the cut.
    fs.clear_faults();
    drop(store);
    let store = reopen_after_cut(&fs, flush, &clock, &mut rng);
    // The poison of a failed fsync is the dead process's; recovery starts afresh.
    assert!(
        store.failure().is_none(),
        "seed {seed}: {:?}",
        store.failure()
    );
    let must_survive = if sync {
        run.acked.len()
    } else {
        run.flushed_prefix
    };
    check_recovered(&store, &run, must_survive);
    after_recovery_the_store_works(&fs, store, flush, &clock);
    fault.filter(|_| fired).map(|f| f.kind)
}

/// Runs the trials of `seeds`. Each fault kind must fire in some of them: a change that
/// kept the faults from firing (say, a cut that always comes first) would otherwise
/// pass unnoticed, testing nothing.
fn power_cut_trials(seeds: std::ops::RangeInclusive<u64>, flush: FlushPolicy) {
    let mut fired = [0; 3];
    for seed in seeds {
        if let Some(kind) = power_cut_trial(seed, flush) {
            fired[kind.index()] += 1;
        }
    }
    for (name, n) in FaultKind::NAMES.iter().zip(fired) {
        assert!(n > 0, "no {name} fired before a cut: {fired:?}");
    }
}

#[test]
fn power_cut_with_sync_flush_loses_no_acknowledged_message() {
    power_cut_trials(1..=40, FlushPolicy::Sync);
}

#[test]
fn power_cut_with_async_flush_keeps_everything_up_to_the_last_flush() {
    power_cut_trials(
        100..=140,
        FlushPolicy::Async {
            interval: Duration::from_secs(3600),
        },
    );
}

#[test]
fn power_cut_during_concurrent_sync_puts_loses_no_acknowledged_message() {
    for seed in 200..=210 {
        let fs = SimFs::new();
        let clock = clock();
        let store = Arc::new(open(&fs, FlushPolicy::Sync, &clock));
        let mut rng = XorShift64::new(seed);
        fs.arm_power_cut(50 + rng.below(400), rng.next_u64(), rng.one_in(2));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut rng = XorShift64::new(seed * 10 + t);
                    let mut acked = Vec::new();
                    for i in 0..200 {
                        let msg = message(i * 4 + t as usize, &mut rng);
                        match store.put(&msg) {
                            Ok(res) => acked.push((msg, res)),
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        let mut acked = Vec::new();
        for t in threads {
            acked.extend(t.join().expect("thread"));
        }
        fs.disarm();
        if fs.power_cuts() == 0 {
            fs.power_cut(&mut rng);
        }
        drop(store);
        let store = open(&fs, FlushPolicy::Sync, &clock);
        let n = acked.len();
        check_recovered(
            &store,
            &Run {
                acked,
                flushed_prefix: n,
            },
            n,
        );
    }
}

#[test]
fn concurrent_sync_puts_share_fsyncs() {
    let fs = SimFs::new();
    let clock = clock();
    let mut cfg = config(&fs, FlushPolicy::Sync, &clock);
    cfg.commitlog_segment_size = 1 << 20;
    let store = Arc::new(MessageStore::open(cfg).expect("open"));
    fs.set_sync_delay(Duration::from_millis(10));
    let before = fs.sync_count();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    store
                        .put(&MessageToStore::new("TopicA", t, vec![i as u8; 100]))
                        .expect("put");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let syncs = fs.sync_count() - before;
    assert!(
        syncs < 100,
        "200 sync puts took {syncs} fsyncs; group commit should share them"
    );
}

#[test]
fn kill_without_power_loss_keeps_even_unflushed_async_puts() {
    let fs = SimFs::new();
    let clock = clock();
    let flush = FlushPolicy::Async {
        interval: Duration::from_secs(3600),
    };
    let store = open(&fs, flush, &clock);
    let mut rng = XorShift64::new(3);
    let acked: Vec<_> = (0..150)
        .map(|i| (message(i, &mut rng), i))
        .map(|(m, _)| {
            let r = store.put(&m).expect("put");
            (m, r)
        })
        .collect();
    drop(store); // like kill -9: the page cache (here: SimFs) keeps the writes
    let store = open(&fs, flush, &clock);
    for (msg, res) in &acked {
        assert_stored(&store, msg, res);
    }
}

#[test]
fn queues_and_index_are_rebuilt_from_the_log_after_losing_them() {
    let fs = SimFs::new();
    let clock = clock();
    let store = open(&fs, FlushPolicy::Sync, &clock);
    let mut rng = XorShift64::new(4);
    let acked: Vec<_> = (0..120)
        .map(|i| {
            let m = message(i, &mut rng);
            let r = store.put(&m).expect("put");
            (m, r)
        })
        .collect();
    let before_key = store
        .lookup_by_key("TopicA", "shared1", 100, 0, i64::MAX)
        .expect("lookup");
    drop(store);
    // Lose every derived file and the checkpoint; only the commit log remains.
    for dir in ["/store/consumequeue", "/store/index"] {
        remove_tree(&fs, &PathBuf::from(dir));
    }
    fs.remove_file(&PathBuf::from("/store/checkpoint"))
        .expect("remove checkpoint");
    let store = open(&fs, FlushPolicy::Sync, &clock);
    for (msg, res) in &acked {
        assert_stored(&store, msg, res);
    }
    let after_key = store
        .lookup_by_key("TopicA", "shared1", 100, 0, i64::MAX)
        .expect("lookup");
    assert!(!before_key.is_empty());
    assert_eq!(before_key, after_key);
}

fn remove_tree(fs: &SimFs, dir: &std::path::Path) {
    for name in fs.list(dir).expect("list") {
        let path = dir.join(&name);
        if fs.remove_file(&path).is_err() {
            remove_tree(fs, &path);
        }
    }
}

#[test]
fn retention_by_age_deletes_old_segments_and_moves_min_offsets() {
    let fs = SimFs::new();
    let clock = clock();
    let store = open(&fs, FlushPolicy::Sync, &clock);
    let old: Vec<_> = (0..40)
        .map(|i| {
            store
                .put(
                    &MessageToStore::new("TopicA", 0, vec![1u8; 300])
                        .with_properties([("KEYS", &format!("old{i}")[..])]),
                )
                .expect("put")
        })
        .collect();
    clock.advance(Duration::from_secs(73 * 3600));
    let segments = fs
        .list(&PathBuf::from("/store/commitlog"))
        .expect("list")
        .len();
    // Every segment but the one being written holds only expired messages.
    assert_eq!(store.clean_expired().expect("clean"), segments - 1);
    assert!(
        store
            .get("TopicA", 0, old[39].queue_offset, 1, usize::MAX, ALL)
            .expect("get")
            .status
            == GetStatus::Found
    );
    let fresh: Vec<_> = (0..20)
        .map(|_| {
            store
                .put(&MessageToStore::new("TopicA", 0, vec![2u8; 300]))
                .expect("put")
        })
        .collect();
    // The last old segment goes once the segment after it starts with an expired message.
    assert_eq!(store.clean_expired().expect("clean"), 0);
    clock.advance(Duration::from_secs(73 * 3600));
    store
        .put(&MessageToStore::new("TopicA", 0, vec![4u8; 300]))
        .expect("put");
    assert!(store.clean_expired().expect("clean") >= 1);
    let min = store.min_offset("TopicA", 0);
    assert!(min > 40, "min {min}");
    let got = store.get("TopicA", 0, 0, 10, usize::MAX, ALL).expect("get");
    assert_eq!(
        (got.status, got.next_begin_offset),
        (GetStatus::OffsetTooSmall, min)
    );
    assert!(
        store
            .lookup_by_key("TopicA", "old0", 5, 0, i64::MAX)
            .expect("lookup")
            .is_empty()
    );
    assert!(
        store
            .view_by_physical_offset(old[0].phys_offset)
            .expect("view")
            .is_none()
    );
    for r in fresh.iter().filter(|r| r.queue_offset >= min) {
        let got = store
            .get("TopicA", 0, r.queue_offset, 1, usize::MAX, ALL)
            .expect("get");
        assert_eq!(got.status, GetStatus::Found);
    }
    assert_queues_dense(&store);
    store.shutdown().expect("shutdown");
    drop(store);
    let store = open(&fs, FlushPolicy::Sync, &clock);
    assert_eq!(
        store.min_offset("TopicA", 0),
        min,
        "min offset survives a restart"
    );
}

#[test]
fn retention_deletes_for_space_only_above_the_hard_threshold() {
    let fs = SimFs::new();
    let clock = clock();
    let store = open(&fs, FlushPolicy::Sync, &clock);
    for _ in 0..60 {
        store
            .put(&MessageToStore::new("TopicB", 1, vec![3u8; 300]))
            .expect("put");
    }
    let used = used_bytes(&fs);
    // 80 % used: far over what a shared disk sits at, but no reason to drop messages.
    fs.set_capacity(Some(used * 5 / 4));
    assert_eq!(store.clean_expired().expect("clean"), 0);
    assert_eq!(store.min_offset("TopicB", 1), 0);
    // Over 95 % and less than half the 8 KiB reserve free: the oldest go, and say so.
    fs.set_capacity(Some(used + 1000));
    let deleted = store.clean_expired().expect("clean");
    assert!(deleted > 0);
    assert_eq!(store.segments_deleted_for_space(), deleted as u64);
    let usage = fs
        .disk_usage(&PathBuf::from("/store"))
        .expect("usage")
        .expect("known");
    assert!(
        usage.used_ratio() < 0.95 || usage.available >= 4096,
        "still over the hard threshold: {usage:?}"
    );
    assert!(store.min_offset("TopicB", 1) > 0);
    assert_queues_dense(&store);
}

#[test]
fn time_searches_use_store_timestamps() {
    let fs = SimFs::new();
    let clock = clock();
    let store = open(&fs, FlushPolicy::Sync, &clock);
    for i in 0..20 {
        store
            .put(&MessageToStore::new("TopicC", 2, vec![i as u8; 10]))
            .expect("put");
        clock.advance(Duration::from_millis(100));
    }
    assert_eq!(
        store
            .search_offset_by_time("TopicC", 2, T0 + 550)
            .expect("search"),
        6
    );
    assert_eq!(
        store.search_offset_by_time("TopicC", 2, 0).expect("search"),
        0
    );
    assert_eq!(
        store
            .search_offset_by_time("TopicC", 2, T0 + 99_999)
            .expect("search"),
        20
    );
    assert_eq!(
        store.store_timestamp_at("TopicC", 2, 3).expect("ts"),
        Some(T0 + 300)
    );
    let found = store
        .lookup_by_time("TopicC", T0 + 500, T0 + 800, 100)
        .expect("lookup");
    let bodies: Vec<u8> = found
        .iter()
        .map(|f| decode(&f.data).expect("decode").body[0])
        .collect();
    assert_eq!(bodies, vec![5, 6, 7, 8]);
}

#[test]
fn index_memory_stays_bounded() {
    let fs = SimFs::new();
    let clock = clock();
    let store = open(
        &fs,
        FlushPolicy::Async {
            interval: Duration::from_secs(3600),
        },
        &clock,
    );
    let mut rng = XorShift64::new(5);
    for i in 0..600 {
        store.put(&message(i, &mut rng)).expect("put");
        assert!(
            store.index_memory_entries() <= 2 * 16 + 3,
            "index buffer grew to {}",
            store.index_memory_entries()
        );
    }
    let found = store
        .lookup_by_key("TopicB", "shared2", 1000, 0, i64::MAX)
        .expect("lookup");
    assert!(found.len() > 10);
    let _ = Bytes::new();
}

#[test]
fn with_sync_flush_consumers_only_see_fsynced_messages() {
    let fs = SimFs::new();
    let clock = clock();
    let store = Arc::new(open(&fs, FlushPolicy::Sync, &clock));
    fs.set_sync_delay(Duration::from_millis(300));
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || store.put(&MessageToStore::new("TopicA", 0, &b"slow"[..])))
    };
    while store.max_offset("TopicA", 0) == 0 {
        std::thread::yield_now();
    }
    let got = store.get("TopicA", 0, 0, 10, usize::MAX, ALL).expect("get");
    if store.flushed_offset() < store.commitlog_max_offset() {
        assert_eq!(
            (got.status, got.next_begin_offset),
            (GetStatus::OffsetOverflowOne, 0)
        );
    }
    writer.join().expect("thread").expect("put");
    let got = store.get("TopicA", 0, 0, 10, usize::MAX, ALL).expect("get");
    assert_eq!(got.status, GetStatus::Found);
}

/// Rough throughput on real files (`cargo test --release -p mq-broker store_throughput
/// -- --ignored --nocapture`); not part of the regular run.
#[test]
#[ignore = "measurement, not a check"]
fn store_throughput() {
    let dir = std::env::temp_dir().join(format!("mq-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for flush in [
        FlushPolicy::Async {
            interval: Duration::from_millis(500),
        },
        FlushPolicy::Sync,
    ] {
        let mut cfg = StoreConfig::new(&dir);
        cfg.flush = flush;
        let store = Arc::new(MessageStore::open(cfg).expect("open"));
        let n = 200_000 / if flush == FlushPolicy::Sync { 10 } else { 1 };
        let start = std::time::Instant::now();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..n / 16 {
                        let msg = MessageToStore::new("Bench", t % 8, vec![7u8; 1024])
                            .with_properties([
                                ("TAGS", "TagA"),
                                ("KEYS", &format!("k{t}-{i}")[..]),
                            ]);
                        store.put(&msg).expect("put");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let put_rate = n as f64 / start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let mut read = 0;
        for q in 0..8 {
            let mut offset = store.min_offset("Bench", q);
            while offset < store.max_offset("Bench", q) {
                let got = store
                    .get("Bench", q, offset, 32, 256 * 1024, ALL)
                    .expect("get");
                read += got.messages.len();
                offset = got.next_begin_offset;
            }
        }
        let get_rate = read as f64 / start.elapsed().as_secs_f64();
        eprintln!("{flush:?}: put {put_rate:.0} msg/s, get {get_rate:.0} msg/s ({read} read)");
        store.shutdown().expect("shutdown");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_second_open_of_one_store_is_refused_until_the_first_ends() {
    let fs = SimFs::new();
    let clock = clock();
    let first = open(&fs, FlushPolicy::Sync, &clock);
    match MessageStore::open(config(&fs, FlushPolicy::Sync, &clock)) {
        Err(StoreError::Locked { path, holder }) => {
            assert_eq!(path, PathBuf::from("/store/lock"));
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("a second open of a store in use: {other:?}"),
    }
    drop(first);
    let second = open(&fs, FlushPolicy::Sync, &clock);
    // A power cut is a dead process: its lock ends with it.
    fs.power_cut(&mut XorShift64::new(7));
    drop(open(&fs, FlushPolicy::Sync, &clock));
    drop(second);
}

#[test]
fn the_real_lock_file_refuses_a_second_holder_and_names_the_first() {
    let dir = std::env::temp_dir().join(format!("mq-store-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("lock");
    let held = match RealFs.try_lock(&path, "pid 1 on host a").expect("lock") {
        super::io::Locked::Held(guard) => guard,
        busy => panic!("a fresh lock is busy: {busy:?}"),
    };
    match RealFs.try_lock(&path, "pid 2 on host b").expect("lock") {
        super::io::Locked::Busy(holder) => assert_eq!(holder, "pid 1 on host a"),
        held => panic!("two holders at once: {held:?}"),
    }
    drop(held);
    assert!(matches!(
        RealFs.try_lock(&path, "pid 2 on host b").expect("lock"),
        super::io::Locked::Held(_)
    ));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn after_a_failed_fsync_nothing_is_acknowledged_and_a_restart_keeps_what_was() {
    let fs = SimFs::new();
    let clock = clock();
    let mut rng = XorShift64::new(11);
    let store = open(&fs, FlushPolicy::Sync, &clock);
    let acked: Vec<_> = (0..5)
        .map(|i| {
            let m = message(i, &mut rng);
            let r = store.put(&m).expect("put before the failure");
            (m, r)
        })
        .collect();
    fs.fail_next_syncs(1);
    assert!(
        store.put(&message(5, &mut rng)).is_err(),
        "acknowledged across a failed fsync"
    );
    // The disk works again, yet nothing more is acknowledged: only recovery can tell
    // what reached it.
    for i in 6..9 {
        match store.put(&message(i, &mut rng)) {
            Err(StoreError::Failed(_)) => {}
            other => panic!("put {i} after a failed fsync: {other:?}"),
        }
    }
    assert!(store.failure().is_some_and(|f| f.contains("fsync")));
    // The process dies (the broker fails liveness and is restarted).
    fs.power_cut(&mut rng);
    drop(store);
    let store = open(&fs, FlushPolicy::Sync, &clock);
    assert!(store.failure().is_none());
    for (m, r) in &acked {
        let entry = store
            .view_by_physical_offset(r.phys_offset)
            .expect("read")
            .unwrap_or_else(|| panic!("acknowledged message at {} lost", r.phys_offset));
        assert_eq!(decode(&entry).expect("decodes").body, &m.body[..]);
    }
    assert!(
        store.put(&message(9, &mut rng)).is_ok(),
        "the restarted store writes again"
    );
}

#[test]
fn a_full_disk_refuses_puts_damages_nothing_and_writing_resumes_with_space() {
    let fs = SimFs::new();
    let clock = clock();
    let mut rng = XorShift64::new(21);
    let store = open(&fs, FlushPolicy::Sync, &clock);
    let acked: Vec<_> = (0..10)
        .map(|i| {
            let m = message(i, &mut rng);
            let r = store.put(&m).expect("put with room");
            (m, r)
        })
        .collect();
    // Room for nothing more: the write itself would fail with ENOSPC.
    let used = used_bytes(&fs);
    fs.set_capacity(Some(used));
    for i in 10..13 {
        match store.put(&message(i, &mut rng)) {
            Err(StoreError::DiskFull { reason }) => assert!(!reason.is_empty()),
            other => panic!("put {i} on a full disk: {other:?}"),
        }
    }
    assert!(store.disk_full().is_some());
    assert!(
        store.failure().is_none(),
        "a full disk must not poison the store"
    );
    // Over the refusal ratio (90 %) but not out of bytes: refused before writing.
    fs.set_capacity(Some(used + used / 20));
    assert!(matches!(
        store.put(&message(13, &mut rng)),
        Err(StoreError::DiskFull { .. })
    ));
    // Space returns: the very next put is taken, and everything acknowledged is intact.
    fs.set_capacity(Some(used * 4));
    let m = message(14, &mut rng);
    let r = store.put(&m).expect("put once space is back");
    assert!(store.disk_full().is_none());
    for (m, r) in acked.iter().chain(std::iter::once(&(m, r))) {
        let entry = store
            .view_by_physical_offset(r.phys_offset)
            .expect("read")
            .expect("stored");
        assert_eq!(decode(&entry).expect("decodes").body, &m.body[..]);
    }
}

#[test]
fn a_queue_write_out_finding_no_room_keeps_its_put_and_refuses_the_next_until_space_returns() {
    let fs = SimFs::new();
    let clock = clock();
    let mut cfg = config(&fs, FlushPolicy::Sync, &clock);
    // One log segment, reserved whole by the first put, so that only the queue's
    // write-out needs new blocks; and a space check that does not run again before that
    // write-out, as when something else fills the disk between two checks.
    cfg.commitlog_segment_size = 1 << 20;
    cfg.commitlog_preallocate = 1 << 20;
    cfg.space_check_interval = Duration::from_secs(3600);
    let store = MessageStore::open(cfg.clone()).expect("open");
    let put = |i: usize| {
        let mut msg = MessageToStore::new("TopicA", 0, format!("m{i}").into_bytes());
        msg.born_timestamp = T0 + i as i64;
        store.put(&msg)
    };
    // A queue writes its tail out every 204 entries: the 204th put's write-out is the
    // first to need space.
    for i in 0..203 {
        put(i).expect("put with room");
    }
    fs.set_capacity(Some(used_bytes(&fs)));
    let kept = put(203).expect("the put whose queue write-out found no room stands");
    assert_eq!(kept.queue_offset, 203);
    assert!(store.disk_full().is_some(), "no room is reported");
    assert!(store.failure().is_none(), "no room must not stop the store");
    assert!(matches!(put(204), Err(StoreError::DiskFull { .. })));
    fs.set_capacity(Some(u64::MAX / 2));
    let next = put(205).expect("writing resumes once space returns");
    assert_eq!(
        next.queue_offset, 204,
        "the refused put took no queue offset"
    );
    let check = |store: &MessageStore| {
        let mut bodies = Vec::new();
        loop {
            let got = store
                .get("TopicA", 0, bodies.len() as u64, 64, 1 << 20, ALL)
                .expect("get");
            if got.messages.is_empty() {
                break;
            }
            for m in &got.messages {
                assert_eq!(m.queue_offset, bodies.len() as u64);
                let body = decode(&m.data).expect("decodes").body.to_vec();
                bodies.push(String::from_utf8(body).expect("utf-8"));
            }
        }
        let want: Vec<String> = (0..204).chain([205]).map(|i| format!("m{i}")).collect();
        assert_eq!(bodies, want);
    };
    check(&store);
    store.shutdown().expect("shutdown");
    drop(store);
    check(&MessageStore::open(cfg).expect("reopen"));
}

#[test]
fn the_disk_full_report_follows_the_disk_without_puts() {
    let fs = SimFs::new();
    let clock = clock();
    let mut rng = XorShift64::new(23);
    let mut cfg = config(&fs, FlushPolicy::Sync, &clock);
    cfg.space_check_interval = Duration::ZERO;
    let store = MessageStore::open(cfg).expect("open");
    let m = message(0, &mut rng);
    let first = store.put(&m).expect("put with room");
    assert!(store.disk_full().is_none());
    // Someone else fills the disk: reported without any put (readiness, runtime info).
    let used = used_bytes(&fs);
    fs.set_capacity(Some(used + used / 20));
    let reason = store.disk_full().expect("full without a put");
    assert!(reason.contains("used"), "{reason}");
    // They free it again: no longer reported, still without a put.
    fs.set_capacity(Some(used * 4));
    assert_eq!(store.disk_full(), None, "space came back without a put");
    let entry = store
        .view_by_physical_offset(first.phys_offset)
        .expect("read")
        .expect("stored");
    assert_eq!(decode(&entry).expect("decodes").body, &m.body[..]);
}

/// Bytes the simulated disk holds now.
fn used_bytes(fs: &SimFs) -> u64 {
    fs.set_capacity(Some(u64::MAX / 2));
    let usage = fs
        .disk_usage(Path::new("/store"))
        .expect("usage")
        .expect("a capacity is set");
    usage.total - usage.available
}

/// A store on the real disk in a fresh directory, sync flush, no background thread.
fn real_store_config(name: &str) -> (StoreConfig, PathBuf) {
    let dir = std::env::temp_dir().join(format!("mq-damage-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let clock = clock();
    let mut cfg = config(&SimFs::new(), FlushPolicy::Sync, &clock);
    cfg.root = dir.clone();
    cfg.fs = Arc::new(RealFs);
    // No index run is sealed, so recovery scans the log from its start and meets the
    // damage the tests make (damage behind the safe point is never read at recovery).
    cfg.index_run_entries = 1 << 20;
    (cfg, dir)
}

/// Puts `n` messages, then "crashes" (drops the store without a clean stop).
fn put_and_crash(cfg: &StoreConfig, n: usize) -> Vec<PutResult> {
    let store = MessageStore::open(cfg.clone()).expect("open");
    let mut rng = XorShift64::new(5);
    let results = (0..n)
        .map(|i| store.put(&message(i, &mut rng)).expect("put"))
        .collect();
    drop(store);
    results
}

/// Flips one byte of the commit log at absolute `offset`.
fn flip(dir: &std::path::Path, segment_size: u64, offset: u64) {
    use std::os::unix::fs::FileExt;
    let start = offset - offset % segment_size;
    let path = dir.join("commitlog").join(format!("{start:020}"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("segment");
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset - start).expect("read");
    file.write_all_at(&[b[0] ^ 0xff], offset - start)
        .expect("write");
}

fn log_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("commitlog"))
        .expect("commitlog")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum()
}

#[test]
fn damage_before_valid_messages_stops_recovery_until_truncation_is_asked_for() {
    let (cfg, dir) = real_store_config("middle");
    let put = put_and_crash(&cfg, 12);
    // A flipped MAGICCODE byte in message 3 of the first segment; 4.. are intact.
    let victim = put[3].phys_offset;
    assert!(
        put[4].phys_offset < cfg.commitlog_segment_size,
        "message 4 shares the file"
    );
    flip(&dir, cfg.commitlog_segment_size, victim + 4);
    let before = log_bytes(&dir);
    match MessageStore::open(cfg.clone()) {
        Err(StoreError::Damaged {
            offset,
            segment,
            detail,
            ..
        }) => {
            assert_eq!(offset, victim);
            assert_eq!(segment, format!("{:020}", 0));
            assert!(detail.contains("valid message follows"), "{detail}");
        }
        other => panic!("opened a store damaged in the middle: {other:?}"),
    }
    assert_eq!(
        log_bytes(&dir),
        before,
        "a refused recovery changed the files"
    );
    let mut forced = cfg.clone();
    forced.recover_truncate = true;
    let store = MessageStore::open(forced).expect("--recover-truncate starts");
    assert!(
        store
            .view_by_physical_offset(put[2].phys_offset)
            .expect("read")
            .is_some()
    );
    assert!(
        store
            .view_by_physical_offset(victim)
            .expect("read")
            .is_none()
    );
    drop(store);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn damage_below_the_checkpointed_flush_stops_recovery() {
    let (cfg, dir) = real_store_config("flushed");
    let store = MessageStore::open(cfg.clone()).expect("open");
    let mut rng = XorShift64::new(6);
    let put: Vec<_> = (0..20)
        .map(|i| store.put(&message(i, &mut rng)).expect("put"))
        .collect();
    store
        .checkpoint()
        .expect("checkpoint records everything as fsynced");
    drop(store);
    // The last message's MAGICCODE rots (recovery scans it: no index run is sealed).
    let last = put.last().expect("puts");
    flip(&dir, cfg.commitlog_segment_size, last.phys_offset + 4);
    match MessageStore::open(cfg.clone()) {
        Err(StoreError::Damaged { offset, detail, .. }) => {
            assert_eq!(offset, last.phys_offset);
            assert!(detail.contains("fsynced"), "{detail}");
        }
        other => panic!("opened with damage below the flushed offset: {other:?}"),
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_missing_segment_in_the_middle_stops_recovery() {
    let (cfg, dir) = real_store_config("missing");
    let put = put_and_crash(&cfg, 60);
    let segment = cfg.commitlog_segment_size;
    let last_start = put.last().expect("puts").phys_offset / segment * segment;
    assert!(
        last_start >= 3 * segment,
        "want 4 segments, have up to {last_start}"
    );
    std::fs::remove_file(dir.join("commitlog").join(format!("{segment:020}"))).expect("rm");
    match MessageStore::open(cfg.clone()) {
        Err(e @ StoreError::Damaged { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("segment file in the middle of the log is missing"),
                "{text}"
            );
            assert!(text.contains("--recover-truncate"), "{text}");
        }
        other => panic!("opened with a missing segment: {other:?}"),
    }
    assert!(
        dir.join("commitlog")
            .join(format!("{last_start:020}"))
            .exists(),
        "files changed"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_write_cut_short_fails_that_put_only_and_nothing_else_is_lost() {
    let fs = SimFs::new();
    let clock = clock();
    let mut rng = XorShift64::new(31);
    let store = open(&fs, FlushPolicy::Sync, &clock);
    let before = store.put(&message(0, &mut rng)).expect("put");
    fs.cut_next_write(40);
    assert!(
        store.put(&message(1, &mut rng)).is_err(),
        "a short write was acknowledged"
    );
    let m2 = message(2, &mut rng);
    let after = store
        .put(&m2)
        .expect("the next put overwrites the partial entry");
    assert_eq!(
        after.phys_offset,
        before.phys_offset + u64::from(before.size)
    );
    fs.power_cut(&mut rng);
    drop(store);
    let store = open(&fs, FlushPolicy::Sync, &clock);
    for r in [&before, &after] {
        assert!(
            store
                .view_by_physical_offset(r.phys_offset)
                .expect("read")
                .is_some()
        );
    }
    let entry = store
        .view_by_physical_offset(after.phys_offset)
        .expect("read")
        .expect("m2");
    assert_eq!(decode(&entry).expect("decodes").body, &m2.body[..]);
}

#[test]
fn a_big_disk_over_the_ratio_with_more_than_the_reserve_free_still_takes_puts() {
    let fs = SimFs::new();
    let clock = clock();
    let mut rng = XorShift64::new(41);
    let mut cfg = config(&fs, FlushPolicy::Sync, &clock);
    cfg.space_check_interval = Duration::ZERO;
    let store = MessageStore::open(cfg).expect("open");
    let mut i = 0;
    while used_bytes(&fs) < 150_000 && i < 10_000 {
        store.put(&message(i, &mut rng)).expect("put");
        i += 1;
    }
    let used = used_bytes(&fs);
    // Over 90 % used, yet more than the 8 KiB reserve free: not full.
    fs.set_capacity(Some(used + 3 * 4096));
    assert!(
        store.put(&message(i, &mut rng)).is_ok(),
        "refused with more than the reserve free"
    );
    assert!(store.disk_full().is_none());
    // Less than the reserve left: full.
    let used = used_bytes(&fs);
    fs.set_capacity(Some(used + 4096));
    assert!(matches!(
        store.put(&message(i + 1, &mut rng)),
        Err(StoreError::DiskFull { .. })
    ));
}

#[test]
fn a_targeted_cut_repairs_only_the_damage_it_names() {
    let (cfg, dir) = real_store_config("targeted");
    let put = put_and_crash(&cfg, 12);
    let victim = put[3].phys_offset;
    flip(&dir, cfg.commitlog_segment_size, victim + 4);
    let before = log_bytes(&dir);
    // An instruction for another offset (a stale one, or one for more than the damage)
    // cuts nothing.
    for wrong in [victim - 1, put[1].phys_offset, victim + 1] {
        let mut aimed = cfg.clone();
        aimed.recover_truncate_at = Some(wrong);
        match MessageStore::open(aimed) {
            Err(StoreError::Damaged { offset, detail, .. }) => {
                assert_eq!(offset, victim);
                assert!(
                    detail.contains(&format!("allows a cut at {wrong} only")),
                    "{detail}"
                );
            }
            other => panic!("cut at {wrong} for damage at {victim}: {other:?}"),
        }
        assert_eq!(log_bytes(&dir), before, "a refused recovery changed files");
    }
    let mut aimed = cfg.clone();
    aimed.recover_truncate_at = Some(victim);
    let store = MessageStore::open(aimed).expect("the named damage is cut");
    let cut = store.recovery_cut().expect("the cut is reported");
    assert_eq!(cut.offset, victim);
    assert_eq!(cut.segment, format!("{:020}", 0));
    assert_eq!(cut.dropped_bytes, before - victim);
    assert!(
        cut.to_string().contains(&format!("offset {victim}")),
        "{cut}"
    );
    assert!(
        store
            .view_by_physical_offset(put[2].phys_offset)
            .expect("read")
            .is_some()
    );
    assert_eq!(store.commitlog_max_offset(), victim);
    drop(store);
    // Opened again with nothing damaged, nothing is cut (and nothing said).
    let store = MessageStore::open(cfg.clone()).expect("reopen");
    assert_eq!(store.recovery_cut(), None);
    drop(store);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_volume_too_small_for_two_segments_is_refused_at_open() {
    let dir = std::env::temp_dir().join(format!("mq-small-volume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let total = RealFs
        .disk_usage(&dir)
        .expect("statvfs")
        .expect("known")
        .total;
    let mut cfg = StoreConfig::new(&dir);
    cfg.background = false;
    cfg.commitlog_segment_size = total / 2 + 1;
    match MessageStore::open(cfg.clone()) {
        Err(e @ StoreError::VolumeTooSmall { .. }) => {
            let StoreError::VolumeTooSmall {
                total: seen,
                minimum,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*minimum, 2 * (total / 2 + 1));
            assert!(*seen < *minimum);
            let text = e.to_string();
            assert!(
                text.contains(&super::error::human_bytes(*minimum)),
                "{text}"
            );
            assert!(text.contains("bigger volume"), "{text}");
            assert!(text.contains("--segment-size"), "{text}");
        }
        other => panic!("opened on a volume too small: {other:?}"),
    }
    assert!(
        !dir.join("commitlog").join(format!("{:020}", 0)).exists(),
        "nothing written"
    );
    // Half of it per segment fits.
    let mut small = cfg.clone();
    small.commitlog_segment_size = 4096;
    let store = MessageStore::open(small).expect("two segments fit");
    let msg = message(0, &mut XorShift64::new(7));
    store.put(&msg).expect("put");
    drop(store);
    // A store that already holds segments was serving: it starts (with a warning) even
    // when the segment size grew past half the volume, so an upgrade loses no broker.
    let store = MessageStore::open(cfg).expect("an existing store is not refused");
    assert_eq!(
        store.max_offset(&msg.topic, msg.queue_id),
        1,
        "its message is there"
    );
    drop(store);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn sizes_are_named_in_kubernetes_units() {
    use super::error::human_bytes;
    assert_eq!(human_bytes(512), "512 bytes");
    assert_eq!(human_bytes(2 << 30), "2Gi");
    assert_eq!(human_bytes(512 << 20), "512Mi");
    assert_eq!(human_bytes(3 << 29), "1.5Gi");
}

#[test]
fn a_failed_index_seal_does_not_fail_a_stored_put() {
    // Async flush: a put fsyncs nothing of the commit log, so the index run's fsync is the
    // first one and the injected failure hits only the seal.
    let fs = SimFs::new();
    let clock = clock();
    let mut cfg = config(
        &fs,
        FlushPolicy::Async {
            interval: Duration::from_secs(3600),
        },
        &clock,
    );
    cfg.index_run_entries = 4;
    let store = MessageStore::open(cfg).expect("open");
    let mut rng = XorShift64::new(11);
    let mut stored = Vec::new();
    // Each message carries three index keys (two KEYS, UNIQ_KEY): the third put takes
    // the buffer past twice a run, so it seals urgently.
    for i in 0..2 {
        let msg = message(i, &mut rng);
        stored.push((store.put(&msg).expect("put"), msg));
    }
    let syncs = fs.sync_count();
    fs.fail_next_syncs(1);
    let msg = message(2, &mut rng);
    let res = store.put(&msg).expect(
        "the message is in the commit log: its put must not fail (a resend would duplicate it)",
    );
    assert!(fs.sync_count() > syncs, "the urgent seal was tried");
    assert_stored(&store, &msg, &res);
    stored.push((res, msg));
    // The seal is retried and every message is found by key.
    store.checkpoint().expect("a later seal succeeds");
    for (_, msg) in &stored {
        let uniq = super::message::property_value(&msg.properties, "UNIQ_KEY").expect("uniq");
        let found = store
            .lookup_by_uniq_key(&msg.topic, uniq, 4)
            .expect("lookup");
        assert_eq!(found.len(), 1, "{uniq} found once");
    }
}

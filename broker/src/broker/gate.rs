//! The send queue: client sends go to the store through one writer thread, and a send
//! that waited too long is answered `SYSTEM_BUSY` (Java's `BrokerFastFailure`).
//!
//! Sends are queued in arrival order for a dedicated writer thread, which takes every
//! queued send at once and appends them one after the other without waiting for fsync.
//! Under sync flush a flusher thread then fsyncs once for all sends appended so far
//! (group commit) and acknowledges them, while the writer already appends the next ones.
//! One thread wake-up serves a whole batch, instead of a blocking-pool hand-off and a
//! lock convoy per send.
//!
//! The time bound: a send whose request arrived `max_wait` (Java's
//! `waitTimeMillsInSendQueue`, 200 ms) or longer before the store takes it is not
//! stored; it is answered `SYSTEM_BUSY` with Java's `[TIMEOUT_CLEAN_QUEUE]broker busy…`
//! remark, which clients treat as "try again or elsewhere". The answer comes at the
//! bound even when the writer is stuck (a slow disk): the send's task and the writer
//! race for it with one compare-and-swap, so a send is either stored or refused, never
//! both. So under overload the broker sheds load instead of queueing without bound, and
//! the latency of the sends it accepts stays bounded.

use super::core::Broker;
use super::refusal::Refusal;
use crate::remoting::response_code;
use crate::store::{FlushPolicy, MessageStore, MessageToStore, PutResult, StoreError};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Java's `waitTimeMillsInSendQueue`.
pub const DEFAULT_MAX_SEND_WAIT: Duration = Duration::from_millis(200);

/// Most sends the writer takes in one go.
const MAX_BATCH: usize = 1024;

/// A send refused because it waited too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// How long the send had waited when it was refused.
    pub waited: Duration,
    /// Sends waiting for the store at that moment.
    pub queued: usize,
}

impl From<Busy> for Refusal {
    fn from(b: Busy) -> Self {
        Refusal::new(
            response_code::SYSTEM_BUSY,
            format!(
                "[TIMEOUT_CLEAN_QUEUE]broker busy, start flow control for a while, period in queue: {}ms, size of queue: {}",
                b.waited.as_millis(),
                b.queued
            ),
        )
    }
}

/// What a stored send gets back: its messages (for the broker's bookkeeping) and results.
pub(super) type Stored = (Vec<MessageToStore>, Vec<PutResult>);

/// A job's state; whoever moves it out of `QUEUED` decides its fate.
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

struct Job {
    arrived: Instant,
    state: Arc<AtomicU8>,
    msgs: Vec<MessageToStore>,
    done: oneshot::Sender<Result<Stored, Refusal>>,
}

/// Sends appended but not yet fsynced (sync flush).
struct Appended {
    end: u64,
    done: Vec<(oneshot::Sender<Result<Stored, Refusal>>, Stored)>,
}

/// Counters shared by the queue and its threads.
#[derive(Debug, Default)]
struct Counters {
    waiting: AtomicUsize,
    refused: AtomicU64,
}

impl Counters {
    fn busy(&self, arrived: Instant) -> Busy {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Busy {
            waited: arrived.elapsed(),
            queued: self.waiting.load(Ordering::Relaxed),
        }
    }
}

/// The queue of client sends in front of the store (see the module docs).
pub struct SendQueue {
    max_wait: Duration,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    counters: Arc<Counters>,
    /// The writer's side until [`SendQueue::start`] (tests start late).
    unstarted: Mutex<Option<(mpsc::Receiver<Job>, Weak<MessageStore>)>>,
}

impl std::fmt::Debug for SendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendQueue")
            .field("max_wait", &self.max_wait)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl SendQueue {
    /// A queue in front of `store` with its writer running; a send refused once it has
    /// waited `max_wait`. The threads hold the store only while writing, and end when
    /// the queue is dropped.
    pub fn new(store: &Arc<MessageStore>, max_wait: Duration) -> Self {
        let queue = Self::unstarted(store, max_wait);
        queue.start();
        queue
    }

    fn unstarted(store: &Arc<MessageStore>, max_wait: Duration) -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            max_wait,
            jobs: Mutex::new(Some(tx)),
            counters: Arc::default(),
            unstarted: Mutex::new(Some((rx, Arc::downgrade(store)))),
        }
    }

    /// Starts the writer (and, under sync flush, the flusher) thread.
    fn start(&self) {
        let Some((rx, store)) = lock(&self.unstarted).take() else {
            return;
        };
        let sync = store
            .upgrade()
            .is_some_and(|s| s.flush_policy() == FlushPolicy::Sync);
        let flusher = if sync {
            let (tx, rx) = mpsc::channel();
            let store = store.clone();
            match std::thread::Builder::new()
                .name("mq-send-flush".into())
                .spawn(move || run_flusher(&rx, &store))
            {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the send flusher; sends will be refused");
                    *lock(&self.jobs) = None;
                    return;
                }
            }
        } else {
            None
        };
        let (max_wait, counters) = (self.max_wait, self.counters.clone());
        let spawned = std::thread::Builder::new()
            .name("mq-send-writer".into())
            .spawn(move || run_writer(&rx, &store, max_wait, &counters, flusher.as_ref()));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the send writer; sends will be refused");
            *lock(&self.jobs) = None;
        }
    }

    /// The longest a send may wait.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Sends refused as busy since start.
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Sends waiting for the store now.
    pub fn waiting(&self) -> usize {
        self.counters.waiting.load(Ordering::Relaxed)
    }

    /// Stores the messages of one send whose request arrived at `arrived`, or refuses
    /// them: [`Busy`] (as a `SYSTEM_BUSY` refusal) once the send has waited `max_wait`
    /// before the store took it, a store error otherwise.
    pub(super) async fn store(
        &self,
        arrived: Instant,
        msgs: Vec<MessageToStore>,
    ) -> Result<Stored, Refusal> {
        // Java's rule: waited >= the bound (so a bound of 0 refuses every send).
        let left = self.max_wait.saturating_sub(arrived.elapsed());
        if left.is_zero() {
            return Err(self.counters.busy(arrived).into());
        }
        let state = Arc::new(AtomicU8::new(QUEUED));
        let (done, answer) = oneshot::channel();
        let job = Job {
            arrived,
            state: state.clone(),
            msgs,
            done,
        };
        self.counters.waiting.fetch_add(1, Ordering::Relaxed);
        let queued = lock(&self.jobs).as_ref().map(|jobs| jobs.send(job));
        if !matches!(queued, Some(Ok(()))) {
            self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                "the store writer is not running",
            ));
        }
        tokio::pin!(answer);
        let answer = match tokio::time::timeout(left, &mut answer).await {
            Ok(answer) => answer,
            // Still queued at the bound: refuse it, unless the writer took it just now.
            Err(_) => {
                if state
                    .compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
                    return Err(self.counters.busy(arrived).into());
                }
                answer.await
            }
        };
        answer.unwrap_or_else(|_| {
            Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                "the store writer stopped",
            ))
        })
    }
}

/// Takes every queued send, appends the ones still wanted, and acknowledges them (after
/// the flusher's fsync under sync flush).
fn run_writer(
    rx: &mpsc::Receiver<Job>,
    store: &Weak<MessageStore>,
    max_wait: Duration,
    counters: &Counters,
    flusher: Option<&mpsc::Sender<Appended>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let Some(store) = store.upgrade() else {
            for job in batch {
                if take(&job, counters) {
                    let _ = job.done.send(Err(Refusal::new(
                        response_code::SYSTEM_ERROR,
                        "the store is closed",
                    )));
                }
            }
            continue;
        };
        let mut appended = Appended {
            end: 0,
            done: Vec::with_capacity(batch.len()),
        };
        for job in batch {
            if !take(&job, counters) {
                continue; // answered busy by its own task already
            }
            if job.arrived.elapsed() >= max_wait {
                let _ = job.done.send(Err(counters.busy(job.arrived).into()));
                continue;
            }
            match store.put_batch_unflushed(&job.msgs) {
                Ok((results, end)) => {
                    appended.end = appended.end.max(end);
                    appended.done.push((job.done, (job.msgs, results)));
                }
                Err(e) => {
                    let _ = job.done.send(Err(store_refusal(e)));
                }
            }
        }
        drop(store);
        match flusher {
            Some(flusher) if !appended.done.is_empty() => {
                if let Err(mpsc::SendError(lost)) = flusher.send(appended) {
                    answer_all(lost, Err(flush_refusal("the flusher stopped")));
                }
            }
            _ => {
                for (done, stored) in appended.done {
                    let _ = done.send(Ok(stored));
                }
            }
        }
    }
}

/// Fsyncs once for everything appended so far, then acknowledges it (group commit).
fn run_flusher(rx: &mpsc::Receiver<Appended>, store: &Weak<MessageStore>) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        while let Ok(more) = rx.try_recv() {
            batches.push(more);
        }
        let end = batches.iter().map(|b| b.end).max().unwrap_or(0);
        let flushed = match store.upgrade() {
            Some(store) => store
                .flush_until(end)
                .map_err(|e| flush_refusal(&e.to_string())),
            None => Err(flush_refusal("the store is closed")),
        };
        for batch in batches {
            answer_all(batch, flushed.clone());
        }
    }
}

fn answer_all(batch: Appended, result: Result<(), Refusal>) {
    for (done, stored) in batch.done {
        let _ = done.send(result.clone().map(|()| stored));
    }
}

/// Moves a queued job to the writer; false when its task abandoned it.
fn take(job: &Job, counters: &Counters) -> bool {
    let taken = job
        .state
        .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if taken {
        counters.waiting.fetch_sub(1, Ordering::Relaxed);
    }
    taken
}

/// A store error as the sender sees it.
fn store_refusal(e: StoreError) -> Refusal {
    match e {
        StoreError::Encode(e) => Refusal::new(response_code::MESSAGE_ILLEGAL, e.to_string()),
        other => Refusal::from(other),
    }
}

fn flush_refusal(why: &str) -> Refusal {
    Refusal::new(
        response_code::SYSTEM_ERROR,
        format!("store: the flush failed: {why}"),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Broker {
    /// Stores the messages of a client send that arrived at `arrived` through the send
    /// queue; refused while the broker shuts down (clients retry elsewhere), over the
    /// send TPS limit (`limits.rs`) or when it waited too long.
    pub(super) async fn put_send(
        &self,
        arrived: Instant,
        msgs: Vec<MessageToStore>,
    ) -> Result<Vec<PutResult>, Refusal> {
        if self.is_stopping() {
            return Err(Refusal::new(
                response_code::SERVICE_NOT_AVAILABLE,
                "the broker is shutting down; send to another broker",
            ));
        }
        self.cfg.limits.admit_send(msgs.len())?;
        let (msgs, results) = self.gate.store(arrived, msgs).await?;
        self.after_put(&msgs);
        Ok(results)
    }

    /// The send queue (its counters are exported at `/metrics`).
    pub fn send_queue(&self) -> &SendQueue {
        &self.gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use std::net::SocketAddr;

    const WAIT: Duration = Duration::from_millis(50);

    fn store(name: &str, flush: FlushPolicy) -> (Arc<MessageStore>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mq-gate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = StoreConfig::new(&dir);
        cfg.background = false;
        cfg.flush = flush;
        (Arc::new(MessageStore::open(cfg).expect("store opens")), dir)
    }

    fn msg(body: &str) -> Vec<MessageToStore> {
        vec![MessageToStore {
            topic: "GateTopic".to_owned(),
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            properties: String::new(),
            born_timestamp: 0,
            born_host: SocketAddr::from(([127, 0, 0, 1], 1)),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
        }]
    }

    #[tokio::test]
    async fn a_send_is_stored_when_the_writer_is_free() {
        let (store, dir) = store(
            "free",
            FlushPolicy::Async {
                interval: Duration::from_secs(1),
            },
        );
        let queue = SendQueue::new(&store, WAIT);
        let (msgs, results) = queue.store(Instant::now(), msg("a")).await.expect("stored");
        assert_eq!((msgs.len(), results.len()), (1, 1));
        assert_eq!(store.max_offset("GateTopic", 0), 1);
        assert_eq!(queue.refused(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_send_that_already_waited_the_bound_is_busy_and_not_stored() {
        let (store, dir) = store("late", FlushPolicy::Sync);
        let queue = SendQueue::new(&store, WAIT);
        let Some(arrived) = Instant::now().checked_sub(WAIT * 3) else {
            return; // a clock too young to go back; nothing to test
        };
        let refusal = queue
            .store(arrived, msg("late"))
            .await
            .expect_err("refused");
        assert_eq!(refusal.code, response_code::SYSTEM_BUSY);
        assert_eq!(refusal.code, 2);
        assert!(
            refusal.remark.starts_with(
                "[TIMEOUT_CLEAN_QUEUE]broker busy, start flow control for a while, period in queue: "
            ),
            "{}",
            refusal.remark
        );
        assert_eq!(queue.refused(), 1);
        assert_eq!(store.max_offset("GateTopic", 0), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_send_queued_behind_a_stuck_writer_is_busy_at_the_bound_and_never_stored() {
        let (store, dir) = store(
            "stuck",
            FlushPolicy::Async {
                interval: Duration::from_secs(1),
            },
        );
        // The writer is not running: as stuck as a writer gets.
        let queue = SendQueue::unstarted(&store, WAIT);
        let arrived = Instant::now();
        let refusal = queue
            .store(arrived, msg("queued"))
            .await
            .expect_err("refused");
        let waited = arrived.elapsed();
        assert_eq!(refusal.code, response_code::SYSTEM_BUSY);
        assert!(waited >= WAIT, "refused after {waited:?}, before the bound");
        assert!(
            waited < WAIT + Duration::from_secs(1),
            "refused after {waited:?}"
        );
        assert_eq!(queue.waiting(), 0, "it left the queue when refused");
        // Once the writer runs, the refused send is skipped; the next one is stored.
        queue.start();
        queue
            .store(Instant::now(), msg("next"))
            .await
            .expect("stored");
        assert_eq!(store.max_offset("GateTopic", 0), 1, "only the second send");
        assert_eq!(queue.refused(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_queued_send_is_stored_when_the_writer_frees_in_time() {
        let (store, dir) = store(
            "in-time",
            FlushPolicy::Async {
                interval: Duration::from_secs(1),
            },
        );
        let queue = Arc::new(SendQueue::unstarted(&store, Duration::from_secs(30)));
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.store(Instant::now(), msg("a")).await.map(drop) })
        };
        while queue.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        queue.start();
        assert_eq!(waiter.await.expect("task ran"), Ok(()));
        assert_eq!(store.max_offset("GateTopic", 0), 1);
        assert_eq!(queue.refused(), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn under_sync_flush_a_send_is_acknowledged_after_its_fsync() {
        let (store, dir) = store("sync", FlushPolicy::Sync);
        let queue = Arc::new(SendQueue::new(&store, Duration::from_secs(30)));
        let sends: Vec<_> = (0..32)
            .map(|i| {
                let queue = queue.clone();
                tokio::spawn(
                    async move { queue.store(Instant::now(), msg(&format!("m{i}"))).await },
                )
            })
            .collect();
        for send in sends {
            let (_, results) = send.await.expect("task ran").expect("stored");
            let end = results[0].phys_offset + u64::from(results[0].size);
            assert!(
                store.flushed_offset() >= end,
                "acknowledged before its fsync"
            );
        }
        assert_eq!(store.max_offset("GateTopic", 0), 32);
        let _ = std::fs::remove_dir_all(dir);
    }
}

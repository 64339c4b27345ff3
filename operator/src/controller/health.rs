//! What the operator's `/livez`, `/readyz` and `/healthz` say, decided from what the
//! controllers and a background check of the API server report.
//!
//! - Live: a non-leader (waiting for the lease) is live. The leader is not live when one
//!   of its controllers' streams ended while the process keeps running (nothing would
//!   reconcile that kind again), or when a kind has reconciles in flight and none of them
//!   finished for [`Health::stall_after`] (a reconcile hangs). A restart fixes both.
//! - Ready: the API server answered within the last [`NOT_READY_AFTER`]. A replica that
//!   cannot reach it serves no useful webhook answers and could not lead.
//!
//! The decisions take the time as an argument, so tests need no clock and no sleeps.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::metrics::{KINDS, Metrics};

/// Default bound on a kind's reconciles making no progress while some are in flight.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(300);
/// How often the API server is checked.
pub const API_CHECK_EVERY: Duration = Duration::from_secs(10);
/// Bound on one check of the API server.
pub const API_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Not ready once the API server has not answered for this long (three missed checks).
pub const NOT_READY_AFTER: Duration = Duration::from_secs(30);

/// Progress of one kind's reconciles.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    in_flight: u64,
    /// The last completion, or when the kind went from idle to busy if later.
    since: Option<Instant>,
    /// The controller's stream ended.
    ended: bool,
}

#[derive(Debug)]
struct State {
    kinds: [Progress; 4],
    /// The last time the API server answered (the start counts as one).
    api_ok: Instant,
    api_error: Option<String>,
}

/// The operator's health, as the controllers and the API server check report it.
#[derive(Debug)]
pub struct Health {
    stall_after: Duration,
    leader: AtomicBool,
    state: Mutex<State>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(DEFAULT_STALL_AFTER, Instant::now())
    }
}

impl Health {
    /// Health starting at `now`, failing liveness after `stall_after` without progress.
    pub fn new(stall_after: Duration, now: Instant) -> Self {
        Self {
            stall_after,
            leader: AtomicBool::new(false),
            state: Mutex::new(State {
                kinds: [Progress::default(); 4],
                api_ok: now,
                api_error: None,
            }),
        }
    }

    /// The bound on reconciles making no progress.
    pub fn stall_after(&self) -> Duration {
        self.stall_after
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn progress<'a>(state: &'a mut State, kind: &str) -> Option<&'a mut Progress> {
        let i = KINDS.iter().position(|k| *k == kind)?;
        Some(&mut state.kinds[i])
    }

    /// This replica holds the lease (or not).
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// A reconcile of `kind` began at `now`.
    pub fn began(&self, kind: &str, now: Instant) {
        if let Some(p) = Self::progress(&mut self.lock(), kind) {
            if p.in_flight == 0 {
                // Idle time before this is not a stall.
                p.since = Some(now);
            }
            p.in_flight += 1;
        }
    }

    /// A reconcile of `kind` finished at `now` (successfully or not: either is progress).
    pub fn finished(&self, kind: &str, now: Instant) {
        if let Some(p) = Self::progress(&mut self.lock(), kind) {
            p.in_flight = p.in_flight.saturating_sub(1);
            p.since = Some(now);
        }
    }

    /// The controller of `kind` stopped: its stream ended.
    pub fn ended(&self, kind: &str) {
        if let Some(p) = Self::progress(&mut self.lock(), kind) {
            p.ended = true;
        }
    }

    /// Runs `controller` (the stream of `kind`'s controller) and records that it ended.
    /// At SIGTERM every controller ends on purpose; otherwise nothing would reconcile the
    /// kind again, and failing `/livez` gets the process restarted.
    pub async fn until_ended(&self, kind: &str, controller: impl Future<Output = ()>) {
        controller.await;
        tracing::warn!(
            kind,
            "controller stopped (expected only at shutdown; /livez now fails)"
        );
        self.ended(kind);
    }

    /// The API server answered at `now`.
    pub fn api_answered(&self, now: Instant) {
        let mut state = self.lock();
        state.api_ok = now;
        state.api_error = None;
    }

    /// The API server did not answer at `now` (why).
    pub fn api_failed(&self, error: String) {
        self.lock().api_error = Some(error);
    }

    /// Live at `now`, or why not.
    pub fn liveness(&self, now: Instant) -> Result<(), String> {
        if !self.leader.load(Ordering::Relaxed) {
            // Waiting for the lease: nothing runs that could be stuck.
            return Ok(());
        }
        let state = self.lock();
        let mut why = String::new();
        for (kind, p) in KINDS.iter().zip(&state.kinds) {
            if p.ended {
                let _ = write!(why, "the {kind} controller stopped; ");
            } else if let Some(idle) = self.stalled(p, now) {
                let _ = write!(
                    why,
                    "{kind}: {} reconciles in flight and none finished for {} s; ",
                    p.in_flight,
                    idle.as_secs()
                );
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.trim_end_matches("; ").to_owned())
        }
    }

    /// How long `p` has made no progress while busy, if longer than allowed.
    fn stalled(&self, p: &Progress, now: Instant) -> Option<Duration> {
        let idle = now.saturating_duration_since(p.since?);
        (p.in_flight > 0 && idle >= self.stall_after).then_some(idle)
    }

    /// Ready at `now`, or why not.
    pub fn readiness(&self, now: Instant) -> Result<(), String> {
        let state = self.lock();
        let silent = now.saturating_duration_since(state.api_ok);
        if silent < NOT_READY_AFTER {
            return Ok(());
        }
        Err(format!(
            "the API server has not answered for {} s: {}",
            silent.as_secs(),
            state.api_error.as_deref().unwrap_or("no answer")
        ))
    }

    /// Whether the API server answered recently (the readiness check's view).
    pub fn api_reachable(&self, now: Instant) -> bool {
        self.readiness(now).is_ok()
    }

    /// Per kind: whether its controller stopped, and whether its reconciles stall.
    pub fn kinds(&self, now: Instant) -> [(bool, bool); 4] {
        let leader = self.leader.load(Ordering::Relaxed);
        let state = self.lock();
        state
            .kinds
            .map(|p| (leader && p.ended, leader && self.stalled(&p, now).is_some()))
    }
}

/// Checks the API server (`GET /version`) every [`API_CHECK_EVERY`], forever.
pub async fn watch_api_server(client: kube::Client, metrics: Arc<Metrics>) {
    let mut every = tokio::time::interval(API_CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match tokio::time::timeout(API_CHECK_TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(_)) => metrics.health.api_answered(Instant::now()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "checking the API server");
                metrics.health.api_failed(e.to_string());
            }
            Err(_) => metrics
                .health
                .api_failed(format!("no answer within {API_CHECK_TIMEOUT:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_leader_with_a_hanging_reconcile_is_not_live_after_the_bound() {
        let t0 = Instant::now();
        let h = Health::new(5 * MIN, t0);
        h.set_leader(true);
        // Idle for an hour: nothing queued, nothing stalls.
        assert_eq!(h.liveness(t0 + 60 * MIN), Ok(()));
        h.began("MQTopic", t0 + 60 * MIN);
        h.began("MQTopic", t0 + 61 * MIN);
        assert_eq!(h.liveness(t0 + 62 * MIN), Ok(()), "within the bound");
        // Another reconcile of the kind finishing is progress.
        h.finished("MQTopic", t0 + 63 * MIN);
        assert_eq!(h.liveness(t0 + 67 * MIN), Ok(()));
        let why = h.liveness(t0 + 68 * MIN).unwrap_err();
        assert!(
            why.contains("MQTopic: 1 reconciles in flight and none finished for 300 s"),
            "{why}"
        );
        assert_eq!(h.kinds(t0 + 68 * MIN)[1], (false, true));
        // It finishes: live again.
        h.finished("MQTopic", t0 + 69 * MIN);
        assert_eq!(h.liveness(t0 + 80 * MIN), Ok(()));
    }

    #[test]
    fn a_stopped_controller_fails_liveness_on_the_leader_only() {
        let t0 = Instant::now();
        let h = Health::new(5 * MIN, t0);
        h.ended("MQGroup");
        assert_eq!(
            h.liveness(t0),
            Ok(()),
            "a replica waiting for the lease is live"
        );
        h.began("MQInstance", t0);
        assert_eq!(h.liveness(t0 + 10 * MIN), Ok(()));
        h.set_leader(true);
        let why = h.liveness(t0 + 10 * MIN).unwrap_err();
        assert!(why.contains("the MQGroup controller stopped"), "{why}");
        assert!(why.contains("MQInstance: 1 reconciles in flight"), "{why}");
        assert_eq!(h.kinds(t0)[2], (true, false));
    }

    #[test]
    fn not_ready_once_the_api_server_has_not_answered_for_thirty_seconds() {
        let t0 = Instant::now();
        let h = Health::new(5 * MIN, t0);
        assert_eq!(h.readiness(t0 + Duration::from_secs(5)), Ok(()), "starting");
        h.api_answered(t0 + Duration::from_secs(10));
        h.api_failed("connection refused".into());
        h.api_failed("connection refused".into());
        assert_eq!(h.readiness(t0 + Duration::from_secs(39)), Ok(()));
        let why = h.readiness(t0 + Duration::from_secs(40)).unwrap_err();
        assert_eq!(
            why,
            "the API server has not answered for 30 s: connection refused"
        );
        assert!(!h.api_reachable(t0 + Duration::from_secs(40)));
        // Readiness does not touch liveness: restarting would not bring the server back.
        h.set_leader(true);
        assert_eq!(h.liveness(t0 + Duration::from_secs(40)), Ok(()));
        h.api_answered(t0 + Duration::from_secs(50));
        assert_eq!(h.readiness(t0 + Duration::from_secs(51)), Ok(()));
    }
}

//! Reconciles that kube-runtime drops while a controller's cache re-lists, run again.
//!
//! After a watch expires (an API server restart does that), the watcher lists again and
//! each listed object triggers a reconcile at once, while the cache only takes the new
//! list when it is complete. A reconcile that runs in between finds no object and is
//! dropped (`ObjectNotFound`, kube-rs#1167). An object created in that moment would then
//! wait for its next change, which may never come. So each dropped reconcile asks for one
//! reconcile of everything, a moment later, once the list is in.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use kube::runtime::controller::Error as ControllerError;

/// How long after a dropped reconcile everything is reconciled again.
const AFTER: Duration = Duration::from_secs(2);

/// Requests a reconcile of everything after a dropped one (at most one pending).
#[derive(Clone)]
pub struct Relisted {
    tx: UnboundedSender<()>,
    pending: Arc<AtomicBool>,
}

impl Relisted {
    /// The requester, and the stream to hand to `Controller::reconcile_all_on`.
    pub fn new() -> (Self, UnboundedReceiver<()>) {
        let (tx, rx) = unbounded();
        let pending = Arc::new(AtomicBool::new(false));
        (Self { tx, pending }, rx)
    }

    /// Looks at one controller result; a reconcile dropped for want of the object in the
    /// cache schedules the catch-up (other errors are the error policy's business).
    pub fn note<T, E1, E2>(&self, result: &Result<T, ControllerError<E1, E2>>, what: &str)
    where
        E1: std::error::Error + 'static,
        E2: std::error::Error + 'static,
    {
        let Err(error) = result else { return };
        tracing::debug!(%error, controller = what, "controller");
        if !matches!(error, ControllerError::ObjectNotFound(_))
            || self.pending.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(AFTER).await;
            this.pending.store(false, Ordering::Release);
            let _ = this.tx.unbounded_send(());
        });
    }
}

/// Back-off between a watch's retries: 0.5 s doubling to 5 s.
///
/// kube-runtime's default grows to 30 s plus jitter. Right after an API server restart a
/// re-list can return a version older than the new server's watch cache, which starts
/// at a later version (leases move the revision on every renewal), so the following watch
/// expires again, several times until the cache is up. With the default, those retries
/// spread over more than a minute in which no new object was reconciled.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

/// The first delay of [`WatchBackoff`].
const FIRST: Duration = Duration::from_millis(500);
/// The longest delay of [`WatchBackoff`].
const LONGEST: Duration = Duration::from_secs(5);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(LONGEST);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn watch_retries_double_up_to_five_seconds_and_reset() {
        let mut b = WatchBackoff::default();
        let delays: Vec<u64> = b.by_ref().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST));
    }
}

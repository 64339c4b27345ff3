//! Readiness and graceful shutdown: requests in flight, the stopping flag, draining.
//!
//! A clean stop goes: stop accepting connections (the servers), [`Broker::begin_shutdown`]
//! (new sends are refused with `SERVICE_NOT_AVAILABLE` so clients go elsewhere, pulls
//! held by long polling are answered at once), [`Broker::drain`] (wait, bounded, until
//! every request already received is answered), then [`Broker::shutdown`] (persist
//! consumer offsets, flush and close the store).

use super::core::Broker;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Shared shutdown state of a broker.
#[derive(Debug, Default)]
pub(super) struct Lifecycle {
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    /// Woken when the broker begins to stop (held pulls listen).
    stop: Notify,
    /// Woken when the last request in flight is answered (drain listens).
    idle: Notify,
}

/// One request being handled; dropping it marks it answered.
pub(super) struct InFlight<'a>(&'a Lifecycle);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    /// Counts a request in flight until the guard drops.
    pub(super) fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    /// Resolves once the broker begins to stop (at once if it already has).
    pub(super) async fn stopped(&self) {
        let notified = self.stop.notified();
        tokio::pin!(notified);
        // Registered before the check, so a stop in between still wakes us.
        notified.as_mut().enable();
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

impl Broker {
    /// Whether the broker is ready to serve: its store is open (recovery done, or this
    /// broker would not exist), it is not stopping, and at least one name server has
    /// accepted its registration. The error says why not.
    pub fn health(&self) -> Result<(), String> {
        if self.is_stopping() {
            return Err("shutting down".to_owned());
        }
        self.liveness()?;
        if let Some(reason) = self.disk_full() {
            return Err(format!("disk full, sends are refused: {reason}"));
        }
        if !self.is_registered() {
            return Err("not registered with any name server yet".to_owned());
        }
        Ok(())
    }

    /// Alive, or why the process must be restarted: a store that failed a write or an
    /// fsync refuses every write until a restart's recovery finds what is on disk.
    pub fn liveness(&self) -> Result<(), String> {
        match self.store.failure() {
            Some(reason) => Err(format!(
                "the message store failed ({reason}); restart to recover"
            )),
            None => Ok(()),
        }
    }

    /// Why sends are refused for lack of disk space, if they are.
    pub fn disk_full(&self) -> Option<String> {
        self.store.disk_full()
    }

    /// Whether [`Broker::begin_shutdown`] was called.
    pub fn is_stopping(&self) -> bool {
        self.lifecycle.stopping.load(Ordering::Acquire)
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.lifecycle.in_flight.load(Ordering::Acquire)
    }

    /// Starts a clean stop: from now on sends are refused and held pulls are answered at
    /// once; everything else is still served.
    pub fn begin_shutdown(&self) {
        self.lifecycle.stopping.store(true, Ordering::Release);
        self.lifecycle.stop.notify_waiters();
    }

    /// Waits until no request is in flight, at most `bound`; returns whether it got there.
    pub async fn drain(&self, bound: Duration) -> bool {
        let waited = tokio::time::timeout(bound, async {
            loop {
                let idle = self.lifecycle.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await;
        waited.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stopped_resolves_for_waiters_before_and_after_the_stop() {
        let life = std::sync::Arc::new(Lifecycle::default());
        let early = {
            let life = life.clone();
            tokio::spawn(async move { life.stopped().await })
        };
        tokio::task::yield_now().await;
        life.stopping.store(true, Ordering::Release);
        life.stop.notify_waiters();
        early.await.expect("woken");
        life.stopped().await;
    }

    #[tokio::test]
    async fn the_in_flight_count_follows_the_guards() {
        let life = Lifecycle::default();
        let a = life.enter();
        let b = life.enter();
        assert_eq!(life.in_flight.load(Ordering::Acquire), 2);
        drop(a);
        drop(b);
        assert_eq!(life.in_flight.load(Ordering::Acquire), 0);
    }
}

//! Instance TPS limits (spec/messaging.md, "Instance limits"): `maxSendTps` and
//! `maxReceiveTps` of this broker (the operator divides the instance's limits by its
//! brokers), counted in messages (a batch counts each message), live.
//!
//! A send over the limit is refused with SYSTEM_BUSY and a flow-control remark
//! (`[TPSLIMIT] ...`), which clients treat as "back off and retry"; nothing is stored.
//!
//! A pull over the limit is not refused — an error would make the consumer log and pull
//! again after its own back-off, and PULL_NOT_FOUND would make it pull again at once, a
//! busy loop. It is held instead, like a long poll, until the budget has room for at
//! least one message (bounded by the pull's own suspend timeout, or [`MAX_THROTTLE`] for
//! a pull that may not be held), and then returns no more messages than the budget
//! allows. A pull still without room at its bound takes one message anyway: the budget
//! goes into debt and later pulls wait for it, so the rate holds over time and no
//! consumer is starved.

use super::bucket::TokenBucket;
use super::core::Broker;
use super::refusal::Refusal;
use crate::remoting::response_code;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a throttled pull that asked not to be held is held anyway.
pub const MAX_THROTTLE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Shared {
    send: Mutex<TokenBucket>,
    receive: Mutex<TokenBucket>,
    sends_refused: AtomicU64,
    pulls_held: AtomicU64,
}

/// The send and receive limits of a broker. Cheap to clone; clones share them. The
/// default is unlimited.
#[derive(Debug, Clone)]
pub struct Limits {
    inner: Arc<Shared>,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(0, 0)
    }
}

impl Limits {
    /// Limits of `send_tps` and `receive_tps` messages per second (0: unlimited).
    pub fn new(send_tps: u64, receive_tps: u64) -> Self {
        let at = now();
        Self {
            inner: Arc::new(Shared {
                send: Mutex::new(TokenBucket::new(send_tps, at)),
                receive: Mutex::new(TokenBucket::new(receive_tps, at)),
                sends_refused: AtomicU64::new(0),
                pulls_held: AtomicU64::new(0),
            }),
        }
    }

    /// Changes the send limit (`maxSendTps` re-read).
    pub fn set_send_tps(&self, tps: u64) {
        lock(&self.inner.send).set_rate(tps, now());
    }

    /// Changes the receive limit (`maxReceiveTps` re-read).
    pub fn set_receive_tps(&self, tps: u64) {
        lock(&self.inner.receive).set_rate(tps, now());
    }

    /// The send limit now (0: unlimited).
    pub fn send_tps(&self) -> u64 {
        lock(&self.inner.send).rate()
    }

    /// The receive limit now (0: unlimited).
    pub fn receive_tps(&self) -> u64 {
        lock(&self.inner.receive).rate()
    }

    /// Sends refused for the send limit since start.
    pub fn sends_refused(&self) -> u64 {
        self.inner.sends_refused.load(Ordering::Relaxed)
    }

    /// Pulls held for the receive limit since start.
    pub fn pulls_held(&self) -> u64 {
        self.inner.pulls_held.load(Ordering::Relaxed)
    }

    /// Admits a send of `messages`, or refuses it with SYSTEM_BUSY.
    pub fn admit_send(&self, messages: usize) -> Result<(), Refusal> {
        let mut bucket = lock(&self.inner.send);
        if bucket.try_take(messages as u64, now()) {
            return Ok(());
        }
        let tps = bucket.rate();
        drop(bucket);
        self.inner.sends_refused.fetch_add(1, Ordering::Relaxed);
        Err(Refusal::new(
            response_code::SYSTEM_BUSY,
            format!("[TPSLIMIT] instance send TPS limit {tps} exceeded, try later"),
        ))
    }

    /// How many of `wanted` messages a pull may return, waiting (at most `bound`, or
    /// until `stopped` resolves) for room; at least one.
    pub async fn receive_allowance(
        &self,
        wanted: usize,
        bound: Duration,
        stopped: impl std::future::Future<Output = ()>,
    ) -> usize {
        tokio::pin!(stopped);
        let deadline = now() + bound;
        let mut held = false;
        loop {
            let at = now();
            let reserved = lock(&self.inner.receive).reserve(wanted as u64, at);
            let wait = match reserved {
                Ok(granted) => return granted as usize,
                Err(wait) => wait,
            };
            if !held {
                held = true;
                self.inner.pulls_held.fetch_add(1, Ordering::Relaxed);
            }
            if at >= deadline {
                lock(&self.inner.receive).force_take(1, at);
                return 1;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.min(deadline - at)) => {}
                _ = &mut stopped => {
                    lock(&self.inner.receive).force_take(1, now());
                    return 1;
                }
            }
        }
    }

    /// Gives back what a pull reserved but did not return.
    pub fn unused_receive(&self, messages: usize) {
        if messages > 0 {
            lock(&self.inner.receive).give_back(messages as u64);
        }
    }
}

/// Now, on Tokio's clock (the real one, except in tests that pause it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn lock(bucket: &Mutex<TokenBucket>) -> std::sync::MutexGuard<'_, TokenBucket> {
    bucket
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Broker {
    /// The broker's TPS limits (live).
    pub fn limits(&self) -> &Limits {
        &self.cfg.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_over_the_limit_are_system_busy_and_counted() {
        let limits = Limits::new(5, 0);
        assert!(limits.admit_send(5).is_ok());
        let refusal = limits.admit_send(1).unwrap_err();
        assert_eq!(refusal.code, response_code::SYSTEM_BUSY);
        assert_eq!(
            refusal.remark,
            "[TPSLIMIT] instance send TPS limit 5 exceeded, try later"
        );
        assert_eq!(limits.sends_refused(), 1);
        limits.set_send_tps(0);
        assert!(
            (0..1000).all(|_| limits.admit_send(1).is_ok()),
            "0 lifts it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pull_over_the_limit_waits_for_room_within_its_bound() {
        let limits = Limits::new(0, 10);
        let never = std::future::pending::<()>();
        assert_eq!(
            limits.receive_allowance(32, Duration::ZERO, never).await,
            10
        );
        // Empty: held until one token is there (100 ms on the paused clock).
        let started = tokio::time::Instant::now();
        let got = limits
            .receive_allowance(32, Duration::from_secs(5), std::future::pending())
            .await;
        assert_eq!(got, 1);
        assert!(started.elapsed() >= Duration::from_millis(90));
        assert_eq!(limits.pulls_held(), 1);
        // A bound of zero still returns one message (debt), never starving the consumer.
        assert_eq!(
            limits
                .receive_allowance(32, Duration::ZERO, std::future::pending())
                .await,
            1
        );
        limits.unused_receive(1);
    }
}

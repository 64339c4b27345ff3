//! A token bucket counting messages per second, with the clock passed in (so it is
//! tested without sleeping).
//!
//! The bucket holds at most one second's worth of tokens (the burst) and refills
//! continuously at the rate. A rate of 0 means unlimited. Taking more than is there may
//! leave the bucket in debt (a batch larger than the burst, a pull that waited its
//! longest): later takers wait until the debt is repaid, so the long-run rate holds.

use std::time::{Duration, Instant};

/// Slack for float rounding: 20 ms at 50/s must be one whole token.
const SLACK: f64 = 1e-9;

/// A message-rate limit (see the module docs).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` messages per second (0: unlimited) at `now`.
    pub fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate as f64,
            last: now,
        }
    }

    /// Messages per second; 0 is unlimited.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Changes the rate at `now`, keeping the tokens there (capped at the new burst).
    pub fn set_rate(&mut self, rate: u64, now: Instant) {
        self.refill(now);
        if self.rate == 0 {
            // Unlimited until now: start the limit with a full burst.
            self.tokens = rate as f64;
        }
        self.rate = rate;
        self.tokens = self.tokens.min(rate as f64);
    }

    /// Takes `n` tokens if the bucket holds them (or is full, for a batch larger than the
    /// burst, which leaves it in debt); all or nothing.
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        let needed = (n as f64).min(self.rate as f64);
        if self.tokens + SLACK < needed {
            return false;
        }
        self.tokens -= n as f64;
        true
    }

    /// Takes up to `wanted` whole tokens, at least one: how many, or how long until one
    /// is there.
    pub fn reserve(&mut self, wanted: u64, now: Instant) -> Result<u64, Duration> {
        if self.rate == 0 {
            return Ok(wanted);
        }
        self.refill(now);
        if self.tokens + SLACK < 1.0 {
            return Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.rate as f64,
            ));
        }
        let granted = wanted.min(self.tokens.floor() as u64).max(1);
        self.tokens -= granted as f64;
        Ok(granted)
    }

    /// Takes `n` tokens whatever is there (the bucket may go into debt).
    pub fn force_take(&mut self, n: u64, now: Instant) {
        if self.rate != 0 {
            self.refill(now);
            self.tokens -= n as f64;
        }
    }

    /// Gives back `n` reserved tokens that were not used.
    pub fn give_back(&mut self, n: u64) {
        if self.rate != 0 {
            self.tokens = (self.tokens + n as f64).min(self.rate as f64);
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50, t0);
        let taken = (0..200).filter(|_| b.try_take(1, t0)).count();
        assert_eq!(taken, 50, "one second's worth at once");
        assert!(!b.try_take(1, t0 + ms(10)), "half a token after 10 ms");
        assert!(b.try_take(1, t0 + ms(20)), "one token after 20 ms");
        // Over the next second: 50 more, not 51.
        let later = (1..=1000u64)
            .filter(|i| b.try_take(1, t0 + ms(20 + i)))
            .count();
        assert_eq!(later, 50);
    }

    #[test]
    fn a_batch_counts_each_message_and_a_huge_one_leaves_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert!(b.try_take(8, t0));
        assert!(!b.try_take(3, t0), "all or nothing");
        assert!(b.try_take(2, t0));
        assert!(
            !b.try_take(20, t0 + ms(500)),
            "a batch over the burst waits for a full bucket"
        );
        assert!(b.try_take(20, t0 + ms(1000)));
        assert!(!b.try_take(1, t0 + ms(1900)), "the debt is repaid first");
        assert!(b.try_take(1, t0 + ms(2100)));
    }

    #[test]
    fn reservations_take_what_is_there_or_say_how_long_to_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert_eq!(b.reserve(32, t0), Ok(10));
        let wait = b.reserve(32, t0).unwrap_err();
        assert!(wait.abs_diff(ms(100)) < ms(1), "{wait:?}");
        assert_eq!(b.reserve(32, t0 + ms(250)), Ok(2));
        b.give_back(2);
        assert_eq!(b.reserve(1, t0 + ms(250)), Ok(1));
        b.force_take(5, t0 + ms(250));
        let wait = b.reserve(1, t0 + ms(250)).unwrap_err();
        // 1.5 − 5 = −3.5 tokens: 4.5 tokens to go at 10/s.
        assert!(
            wait.abs_diff(ms(450)) < ms(1),
            "debt lengthens the wait: {wait:?}"
        );
    }

    #[test]
    fn zero_is_unlimited_and_the_rate_changes_live() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, t0);
        assert!((0..10_000).all(|_| b.try_take(1, t0)));
        assert_eq!(b.reserve(32, t0), Ok(32));
        b.set_rate(5, t0);
        assert_eq!((0..10).filter(|_| b.try_take(1, t0)).count(), 5);
        b.set_rate(1000, t0);
        assert!(
            b.try_take(1, t0 + ms(1)),
            "a raised limit refills at the new rate"
        );
        b.set_rate(0, t0 + ms(1));
        assert!((0..10_000).all(|_| b.try_take(1, t0 + ms(1))));
        assert_eq!(b.rate(), 0);
    }
}

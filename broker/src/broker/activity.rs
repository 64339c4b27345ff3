//! Recent rates for the admin answers: how fast each group consumes each topic
//! (`consumeTps`) and the broker's put/get rates (`putTps`, `getTransferedTps`), plus
//! when the broker started.
//!
//! Rates are approximations over short windows, not Java's per-minute statistics: a
//! group's rate is counted over 10 s windows (the last complete window, or the current one
//! while it is the first); the broker's rates compare its counters with a sample taken up
//! to a minute before the question.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Length of one counting window.
const WINDOW: Duration = Duration::from_secs(10);
/// Oldest counter sample the broker rates look back to.
const LOOKBACK: Duration = Duration::from_secs(60);
/// Counted group/topic pairs above which idle ones are dropped.
const MAX_TRACKED: usize = 4096;

/// Messages counted in the current window and the rate of the last one.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u64,
    previous: f64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            count: 0,
            previous: 0.0,
        }
    }

    /// Starts a new window when the current one is over.
    fn roll(&mut self, now: Instant) {
        let age = now.duration_since(self.started);
        if age >= WINDOW {
            self.previous = if age >= 2 * WINDOW {
                0.0
            } else {
                self.count as f64 / age.as_secs_f64()
            };
            self.started = now;
            self.count = 0;
        }
    }

    /// Messages per second, recently.
    fn rate(&self, now: Instant) -> f64 {
        let age = now.duration_since(self.started);
        if age >= 2 * WINDOW {
            0.0
        } else if age >= WINDOW || self.previous == 0.0 {
            self.count as f64 / age.max(Duration::from_secs(1)).as_secs_f64()
        } else {
            self.previous
        }
    }
}

/// Counter values at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    put: u64,
    get: u64,
}

/// Start time and recent rates of a broker.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    started_ms: i64,
    consumed: Mutex<HashMap<(String, String), Window>>,
    samples: Mutex<VecDeque<Sample>>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// Starts counting now.
    pub fn new() -> Self {
        let started = Instant::now();
        Self {
            started,
            started_ms: super::table::now_millis(),
            consumed: Mutex::default(),
            samples: Mutex::new(VecDeque::from([Sample {
                at: started,
                put: 0,
                get: 0,
            }])),
        }
    }

    /// When the broker started (ms since the epoch).
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    /// How long the broker has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts `n` messages a group pulled from a topic (canonical names).
    pub fn record_consumed(&self, group: &str, topic: &str, n: u64) {
        let now = Instant::now();
        let mut consumed = lock(&self.consumed);
        if consumed.len() >= MAX_TRACKED {
            consumed.retain(|_, w| now.duration_since(w.started) < 2 * WINDOW);
        }
        let window = consumed
            .entry((group.to_owned(), topic.to_owned()))
            .or_insert_with(|| Window::new(now));
        window.roll(now);
        window.count += n;
    }

    /// Messages per second the group pulled from the topic recently.
    pub fn consume_tps(&self, group: &str, topic: &str) -> f64 {
        lock(&self.consumed)
            .get(&(group.to_owned(), topic.to_owned()))
            .map_or(0.0, |w| w.rate(Instant::now()))
    }

    /// Put and get rates (messages per second) given the counters' values now.
    pub fn broker_tps(&self, put: u64, get: u64) -> (f64, f64) {
        let now = Instant::now();
        let mut samples = lock(&self.samples);
        while samples.len() > 1 && samples[1].at + LOOKBACK <= now {
            samples.pop_front();
        }
        let oldest = samples
            .front()
            .copied()
            .unwrap_or(Sample { at: now, put, get });
        if samples
            .back()
            .is_none_or(|s| now.duration_since(s.at) >= Duration::from_secs(1))
        {
            samples.push_back(Sample { at: now, put, get });
        }
        let secs = now.duration_since(oldest.at).as_secs_f64().max(1.0);
        (
            put.saturating_sub(oldest.put) as f64 / secs,
            get.saturating_sub(oldest.get) as f64 / secs,
        )
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_rates_follow_the_windows() {
        let t0 = Instant::now();
        let mut w = Window::new(t0);
        w.count = 50;
        assert_eq!(
            w.rate(t0 + Duration::from_secs(5)),
            10.0,
            "first window so far"
        );
        w.roll(t0 + WINDOW);
        assert_eq!(w.previous, 5.0);
        assert_eq!(w.rate(t0 + WINDOW + Duration::from_secs(1)), 5.0);
        assert_eq!(w.rate(t0 + 3 * WINDOW), 0.0, "idle groups consume nothing");
    }

    #[test]
    fn counted_pulls_show_up_per_group_and_topic() {
        let a = Activity::new();
        a.record_consumed("G", "T", 4);
        assert!(a.consume_tps("G", "T") > 0.0);
        assert_eq!(a.consume_tps("G", "U"), 0.0);
        let (put, get) = a.broker_tps(10, 0);
        assert!(put > 0.0 && get == 0.0);
    }
}

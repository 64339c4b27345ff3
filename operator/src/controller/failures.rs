//! Consecutive reconcile failures per object, for the error policy's back-off.
//!
//! An entry goes when its object reconciles successfully (which includes a finished
//! finalizer cleanup, the last reconcile of a deleted object). An object that vanishes
//! after a failure without another reconcile (deleted by someone who removed the
//! finalizer, or a resource without one) would keep its entry forever, so entries not
//! touched for [`FORGET_AFTER`] are dropped: a failing object is retried at least every
//! the longest retry delay (5 minutes), so an older entry belongs to no object still being retried.
//! The map is also capped at [`MAX_TRACKED`] entries, dropping the stalest.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Entries untouched this long are forgotten (twice the longest retry delay).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Most objects tracked at once.
pub const MAX_TRACKED: usize = 10_000;

/// Consecutive failures per object key, and when the last one happened.
#[derive(Debug)]
pub struct Failures {
    entries: Mutex<HashMap<String, (u32, Instant)>>,
    cap: usize,
}

impl Default for Failures {
    fn default() -> Self {
        Self::with_cap(MAX_TRACKED)
    }
}

impl Failures {
    /// Failures tracking at most `cap` objects.
    pub fn with_cap(cap: usize) -> Self {
        Self {
            entries: Mutex::default(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one more failure of `key` at `now`; how many in a row, this one included.
    pub fn failed(&self, key: String, now: Instant) -> u32 {
        let mut entries = self.lock();
        entries.retain(|_, (_, at)| now.saturating_duration_since(*at) < FORGET_AFTER);
        if entries.len() >= self.cap && !entries.contains_key(&key) {
            let stalest = entries
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(stalest) = stalest {
                entries.remove(&stalest);
            }
        }
        let entry = entries.entry(key).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        entry.0
    }

    /// The failures in a row of `key` so far.
    pub fn count(&self, key: &str) -> u32 {
        self.lock().get(key).map_or(0, |(n, _)| *n)
    }

    /// `key` reconciled (or is gone): its back-off starts over.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// How many objects are tracked.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no object is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_count_up_and_go_on_success() {
        let f = Failures::default();
        let t0 = Instant::now();
        assert_eq!(f.failed("MQTopic/n/a".into(), t0), 1);
        assert_eq!(f.failed("MQTopic/n/a".into(), t0 + FORGET_AFTER / 2), 2);
        f.forget("MQTopic/n/a");
        assert!(f.is_empty());
        assert_eq!(f.failed("MQTopic/n/a".into(), t0), 1);
    }

    #[test]
    fn entries_of_vanished_objects_are_dropped_and_the_map_is_bounded() {
        let f = Failures::with_cap(100);
        let t0 = Instant::now();
        // An object that failed, then vanished: never reconciled again.
        f.failed("MQGroup/n/gone".into(), t0);
        // One still failing, retried every 5 minutes.
        for i in 0..4u32 {
            f.failed(
                "MQGroup/n/failing".into(),
                t0 + Duration::from_secs(300) * i,
            );
        }
        assert_eq!(f.len(), 1, "the vanished object's entry is gone");
        assert_eq!(
            f.failed("MQGroup/n/failing".into(), t0 + Duration::from_secs(1200)),
            5,
            "a still-failing object keeps its count"
        );
        // Many distinct failing objects at once: never more than the cap.
        let t1 = t0 + Duration::from_secs(1300);
        for i in 0..110 {
            f.failed(
                format!("MQTopic/n/t{i}"),
                t1 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(f.len(), 100);
        assert_eq!(
            f.failed("MQTopic/n/t109".into(), t1 + Duration::from_secs(60)),
            2,
            "the newest entries stay"
        );
    }
}

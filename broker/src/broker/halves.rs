//! The pending half messages of transactions: which halves still wait for a commit or a
//! rollback, how often their producers were asked, and when to ask next.
//!
//! Only commit-log offsets and two numbers per half are held here, never bodies: the
//! half itself stays in the half topic and is read from the store when needed. The set
//! is derived on startup from durable data (`transaction.rs`): every half still stored,
//! minus those the op log says ended, with the checks the op log recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One half still waiting for its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Check-backs sent so far.
    pub checks: u32,
    /// When (epoch ms) the next check-back is due.
    pub next_check_ms: i64,
}

/// What an op-log entry says about a half (by its commit-log offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A check-back was sent for the half.
    Checked(u64),
    /// The half was committed or rolled back: it is no longer pending.
    Ended(u64),
}

/// Rebuilds the pending set: `halves` are (commit-log offset, first check time) of every
/// half still stored, in any order; `ops` the op log. A half with recorded checks is due
/// at its first check time again (when the last check was sent is not recorded), which
/// after a restart means at once for most.
pub fn recover(
    halves: impl IntoIterator<Item = (u64, i64)>,
    ops: impl IntoIterator<Item = Op>,
) -> BTreeMap<u64, Pending> {
    // Ops are folded first so only halves still pending are ever kept.
    let mut told: HashMap<u64, Option<u32>> = HashMap::new();
    for op in ops {
        match op {
            Op::Checked(at) => {
                if let Some(checks) = told.entry(at).or_insert(Some(0)) {
                    *checks += 1;
                }
            }
            Op::Ended(at) => {
                told.insert(at, None);
            }
        }
    }
    halves
        .into_iter()
        .filter_map(|(at, first_check_ms)| {
            let checks = match told.get(&at) {
                Some(None) => return None,
                Some(Some(n)) => *n,
                None => 0,
            };
            Some((
                at,
                Pending {
                    checks,
                    next_check_ms: first_check_ms,
                },
            ))
        })
        .collect()
}

/// The pending halves, by commit-log offset.
#[derive(Debug, Default)]
pub struct PendingHalves {
    map: Mutex<BTreeMap<u64, Pending>>,
}

impl PendingHalves {
    /// A set holding `recovered`.
    pub fn new(recovered: BTreeMap<u64, Pending>) -> Self {
        Self {
            map: Mutex::new(recovered),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Pending>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a new half, first checked at `first_check_ms`.
    pub fn insert(&self, at: u64, first_check_ms: i64) {
        self.lock().insert(
            at,
            Pending {
                checks: 0,
                next_check_ms: first_check_ms,
            },
        );
    }

    /// Takes a half out of the set to end it: `None` when it is not pending (never was,
    /// or already ended), so only one of two racing ends acts.
    pub fn claim(&self, at: u64) -> Option<Pending> {
        self.lock().remove(&at)
    }

    /// Puts back a claimed half whose end could not be recorded.
    pub fn restore(&self, at: u64, pending: Pending) {
        self.lock().insert(at, pending);
    }

    /// Up to `max` halves due at `now_ms`, oldest first.
    pub fn due(&self, now_ms: i64, max: usize) -> Vec<(u64, Pending)> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.next_check_ms <= now_ms)
            .take(max)
            .map(|(at, p)| (*at, *p))
            .collect()
    }

    /// Records a check-back sent (counted) and when the next is due.
    pub fn checked(&self, at: u64, next_check_ms: i64) {
        if let Some(p) = self.lock().get_mut(&at) {
            p.checks += 1;
            p.next_check_ms = next_check_ms;
        }
    }

    /// Moves a half's next check without counting one (no producer was online).
    pub fn postpone(&self, at: u64, next_check_ms: i64) {
        if let Some(p) = self.lock().get_mut(&at) {
            p.next_check_ms = next_check_ms;
        }
    }

    /// How many halves are pending.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_halves_are_not_recovered_and_checks_are_counted() {
        let halves = [(100, 1_000), (200, 2_000), (300, 3_000), (400, 4_000)];
        let ops = [
            Op::Checked(100),
            Op::Ended(200),
            Op::Checked(100),
            Op::Checked(300),
            Op::Ended(300),
            // An op for a half retention already removed changes nothing.
            Op::Ended(50),
        ];
        let pending = recover(halves, ops);
        assert_eq!(pending.keys().copied().collect::<Vec<_>>(), [100, 400]);
        assert_eq!(
            pending[&100],
            Pending {
                checks: 2,
                next_check_ms: 1_000
            }
        );
        assert_eq!(pending[&400].checks, 0);
    }

    #[test]
    fn an_end_is_final_even_if_a_check_was_logged_after_it() {
        // A check sent just before the commit can be logged after the commit's op.
        let pending = recover([(7, 0)], [Op::Ended(7), Op::Checked(7)]);
        assert!(pending.is_empty());
    }

    #[test]
    fn only_one_of_two_ends_claims_a_half() {
        let set = PendingHalves::default();
        set.insert(10, 5);
        let first = set.claim(10);
        assert!(first.is_some());
        assert_eq!(set.claim(10), None, "a repeated end finds nothing to do");
        set.restore(
            10,
            first.unwrap_or(Pending {
                checks: 0,
                next_check_ms: 5,
            }),
        );
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn due_halves_come_oldest_first_and_checks_move_them_on() {
        let set = PendingHalves::default();
        set.insert(30, 100);
        set.insert(10, 100);
        set.insert(20, 900);
        assert_eq!(
            set.due(500, 10).iter().map(|d| d.0).collect::<Vec<_>>(),
            [10, 30]
        );
        set.checked(10, 1_500);
        set.postpone(30, 1_500);
        assert!(set.due(500, 10).is_empty());
        let due = set.due(2_000, 1);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, 10);
        assert_eq!(due[0].1.checks, 1);
        assert_eq!(
            set.due(2_000, 10)[2].1.checks,
            0,
            "a postponed check is not counted"
        );
        assert_eq!(set.len(), 3);
    }
}

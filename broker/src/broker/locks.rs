//! Queue locks for ordered consumption (`RebalanceLockManager`): one client of a group
//! owns a queue at a time; a lock not renewed within the expiry is free again.

use crate::remoting::body::MessageQueue;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Holder {
    client_id: String,
    renewed: Instant,
}

/// Locks of every group's queues.
pub struct QueueLocks {
    locks: Mutex<HashMap<(String, MessageQueue), Holder>>,
    expiry: Duration,
}

impl QueueLocks {
    /// Locks that expire `expiry` after their last renewal (Java: 60 s).
    pub fn new(expiry: Duration) -> Self {
        Self {
            locks: Mutex::default(),
            expiry,
        }
    }

    /// Locks (or renews) what is free or already the client's; returns what it now holds.
    pub fn lock_batch(
        &self,
        group: &str,
        client_id: &str,
        queues: &BTreeSet<MessageQueue>,
        now: Instant,
    ) -> BTreeSet<MessageQueue> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut held = BTreeSet::new();
        for mq in queues {
            let key = (group.to_owned(), mq.clone());
            let free = locks.get(&key).is_none_or(|h| {
                h.client_id == client_id || now.duration_since(h.renewed) > self.expiry
            });
            if free {
                locks.insert(
                    key,
                    Holder {
                        client_id: client_id.to_owned(),
                        renewed: now,
                    },
                );
                held.insert(mq.clone());
            }
        }
        held
    }

    /// Releases the client's locks on `queues`.
    pub fn unlock_batch(&self, group: &str, client_id: &str, queues: &BTreeSet<MessageQueue>) {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for mq in queues {
            let key = (group.to_owned(), mq.clone());
            if locks.get(&key).is_some_and(|h| h.client_id == client_id) {
                locks.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_holds_a_queue_until_it_unlocks_or_the_lock_expires() {
        let locks = QueueLocks::new(Duration::from_secs(60));
        let q: BTreeSet<MessageQueue> = [MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id: 0,
        }]
        .into();
        let t0 = Instant::now();
        assert_eq!(locks.lock_batch("G", "a", &q, t0), q);
        assert!(locks.lock_batch("G", "b", &q, t0).is_empty(), "held by a");
        assert_eq!(
            locks.lock_batch("OTHER", "b", &q, t0),
            q,
            "groups lock independently"
        );
        assert_eq!(
            locks.lock_batch("G", "b", &q, t0 + Duration::from_secs(61)),
            q,
            "a's lock expired"
        );
        locks.unlock_batch("G", "a", &q);
        assert!(
            locks
                .lock_batch("G", "a", &q, t0 + Duration::from_secs(62))
                .is_empty(),
            "a cannot unlock b's lock"
        );
        locks.unlock_batch("G", "b", &q);
        assert_eq!(
            locks.lock_batch("G", "a", &q, t0 + Duration::from_secs(63)),
            q
        );
    }
}

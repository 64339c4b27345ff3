//! Wakes long-polling pulls when a message arrives in their queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// One [`Notify`] per queue that ever had a waiter (bounded by the number of queues).
#[derive(Default)]
pub struct Arrivals {
    queues: Mutex<HashMap<(String, i32), Arc<Notify>>>,
}

impl Arrivals {
    /// The notifier of a queue.
    pub fn of(&self, topic: &str, queue_id: i32) -> Arc<Notify> {
        let mut q = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.entry((topic.to_owned(), queue_id)).or_default().clone()
    }

    /// Wakes every pull waiting on a queue.
    pub fn notify(&self, topic: &str, queue_id: i32) {
        let q = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = q.get(&(topic.to_owned(), queue_id)) {
            n.notify_waiters();
        }
    }
}

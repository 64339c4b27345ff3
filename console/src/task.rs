//! Stateless paged message queries: a task id carries the query, its snapshot and its
//! expiry, signed with a key every replica shares.

/// The key task ids are signed with.
pub struct TaskKey {
    key: Vec<u8>,
}

impl TaskKey {
    /// A key from its bytes.
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// Whether a key is set.
    pub fn is_set(&self) -> bool {
        !self.key.is_empty()
    }
}

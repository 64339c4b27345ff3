//! Runtime reads from an instance's brokers, found through its name servers, each call
//! bounded by a timeout and signed with the instance's console key.

use std::time::Duration;

/// Broker reads for the console's runtime endpoints.
pub struct Runtime {
    /// Bound on each call.
    pub timeout: Duration,
}

impl Runtime {
    /// Reads bounded by `timeout` per call.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

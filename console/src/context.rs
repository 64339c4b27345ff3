//! What every handler gets: the API client, the caches, the settings, the replay cache,
//! the broker reads and the task key (kube-rs controller-rs's `Context` idea).

use std::time::Duration;

use kube::Client;

use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::sign::ReplayCache;
use crate::state::Caches;
use crate::task::TaskKey;

/// Settings from flags and env.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The region this console serves (`_regionId`).
    pub region: String,
    /// Platform namespace (accounts, profiles, console keys).
    pub platform: String,
    /// `__preventCache` window, either way (ms).
    pub window_ms: i64,
    /// Answer HTTP 200 whatever `code` is.
    pub always_200: bool,
    /// Bound on a write's wait for this replica's cache.
    pub write_wait: Duration,
    /// Bound on each broker or name-server call.
    pub call_timeout: Duration,
    /// Bound on `tunnelSwitch`'s wait for the operator's endpoint.
    pub exposure_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            region: mq_operator::domain::profiles::DEFAULT_REGION.into(),
            platform: "mqfleet-system".into(),
            window_ms: 15 * 60 * 1000,
            always_200: false,
            write_wait: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            exposure_wait: Duration::from_secs(30),
        }
    }
}

/// The console's shared state.
pub struct Console {
    /// Kubernetes API client (writes).
    pub client: Client,
    /// Watch caches (reads).
    pub caches: Caches,
    /// Settings.
    pub settings: Settings,
    /// Requests seen inside the window.
    pub replay: ReplayCache,
    /// Broker and name-server reads.
    pub runtime: Runtime,
    /// Signs paged-query task ids.
    pub tasks: TaskKey,
    /// Request counters and latency.
    pub metrics: Metrics,
}

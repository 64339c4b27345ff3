//! What the console reads the platform from: watch caches of the four kinds (all
//! namespaces), the account Secrets and the cluster profiles of the platform namespace.
//! Reads never go to the API server; a write waits (bounded) until this replica's cache
//! holds it, so create-then-get on one replica is consistent ([`Caches::until_cached`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use mq_operator::crd::{MQEmpower, MQGroup, MQInstance, MQTopic};
use mq_operator::domain::accounts::ACCOUNT_LABEL;
use mq_operator::watch::profiles::ProfileCache;
use mq_operator::watch::{cache, watch_config};

/// How often a write's wait looks at the cache again.
const POLL: Duration = Duration::from_millis(10);

/// The watch caches.
#[derive(Clone)]
pub struct Caches {
    /// Every `MQInstance`.
    pub instances: Store<MQInstance>,
    /// Every `MQTopic`.
    pub topics: Store<MQTopic>,
    /// Every `MQGroup`.
    pub groups: Store<MQGroup>,
    /// Every `MQEmpower`.
    pub empowers: Store<MQEmpower>,
    /// The account Secrets of the platform namespace.
    pub accounts: Store<Secret>,
    /// The cluster profiles.
    pub profiles: ProfileCache,
}

impl Caches {
    /// Starts the watches (for the life of the process).
    pub fn start(client: &Client, platform: &str, profiles_configmap: &str) -> Self {
        let all = || watch_config();
        let (profiles, _changes) =
            ProfileCache::start(client.clone(), platform, profiles_configmap);
        Self {
            instances: cache(Api::all(client.clone()), all()),
            topics: cache(Api::all(client.clone()), all()),
            groups: cache(Api::all(client.clone()), all()),
            empowers: cache(Api::all(client.clone()), all()),
            accounts: cache(
                Api::namespaced(client.clone(), platform),
                watch_config().labels(ACCOUNT_LABEL),
            ),
            profiles,
        }
    }

    /// Waits (at most `timeout`) until every cache holds its first list.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let all = async {
            let (a, b, c, d, e) = futures::join!(
                self.instances.wait_until_ready(),
                self.topics.wait_until_ready(),
                self.groups.wait_until_ready(),
                self.empowers.wait_until_ready(),
                self.accounts.wait_until_ready(),
            );
            a.is_ok() && b.is_ok() && c.is_ok() && d.is_ok() && e.is_ok()
        };
        let loaded = self.profiles.wait_loaded(timeout);
        matches!(
            tokio::time::timeout(timeout, async { futures::join!(all, loaded) }).await,
            Ok((true, true))
        )
    }

    /// Waits (at most `timeout`) until `store` holds `written` at its resourceVersion or a
    /// later one; whether it does.
    pub async fn until_cached<K>(store: &Store<K>, written: &K, timeout: Duration) -> bool
    where
        K: Resource<DynamicType = ()> + Clone,
    {
        let key = ObjectRef::from_obj(written);
        let wanted = version(written.meta().resource_version.as_deref());
        poll(timeout, || {
            store
                .get(&key)
                .is_some_and(|k| version(k.meta().resource_version.as_deref()) >= wanted)
        })
        .await
    }

    /// Waits (at most `timeout`) until `store` no longer holds `namespace/name`, or holds
    /// it marked for deletion; whether that happened.
    pub async fn until_deleting<K>(
        store: &Store<K>,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> bool
    where
        K: Resource<DynamicType = ()> + Clone,
    {
        let key = ObjectRef::new(name).within(namespace);
        poll(timeout, || {
            store
                .get(&key)
                .is_none_or(|k| k.meta().deletion_timestamp.is_some())
        })
        .await
    }
}

/// A resourceVersion as a number (etcd's revisions are; an unreadable one counts as 0,
/// so the wait then only asks for presence).
fn version(rv: Option<&str>) -> u64 {
    rv.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Polls `done` until it holds or `timeout` passes.
async fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

//! The watches the operator keeps: one configuration for all of them, caches (reflector
//! stores) kept current for the life of the process, the re-list back-off, and the cluster
//! profiles ConfigMap. Shared by the controllers and the admission webhook, which import
//! this and [`crate::domain`], never each other.

pub mod profiles;
pub mod relist;

use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

/// How every watch of the operator is set up.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default()
}

/// A store of `api` kept current by a watch for the life of the process (managed fields
/// dropped: nothing reads them, and they would double what is kept).
pub fn cache<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::WatchStreamExt;
    let (store, writer) = kube::runtime::reflector::store();
    let stream = watcher(api, config)
        .backoff(relist::WatchBackoff::default())
        .modify(|obj| obj.meta_mut().managed_fields = None)
        .reflect(writer)
        .for_each(|_| async {});
    tokio::spawn(stream);
    store
}

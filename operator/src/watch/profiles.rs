//! The cluster profiles as the operator and the webhook know them: a watch of the one
//! profiles ConfigMap in the platform namespace (never a GET per reconcile), parsed once
//! per change. Every change also names the profiles it changed, so the instance
//! controller reconciles exactly the instances using them.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

use crate::crd::MQInstanceSpec;
use crate::domain::profiles::{Effective, Known, PROFILES_KEY, Profile, Unresolved};

/// The profiles in force, kept current by a watch.
#[derive(Clone, Debug)]
pub struct ProfileCache {
    known: Arc<RwLock<Known>>,
    loaded: tokio::sync::watch::Receiver<bool>,
    /// `<namespace>/<name>` of the ConfigMap, for messages.
    configmap: String,
}

impl ProfileCache {
    /// Watches ConfigMap `name` of `namespace` for the life of the process. The receiver
    /// gets the names of the profiles each change added, removed or edited (it may be
    /// dropped by callers that only read).
    pub fn start(
        client: Client,
        namespace: &str,
        name: &str,
    ) -> (ProfileCache, mpsc::UnboundedReceiver<Vec<String>>) {
        let (changes, receiver) = mpsc::unbounded_channel();
        let (loaded_tx, loaded) = tokio::sync::watch::channel(false);
        let cache = ProfileCache {
            known: Arc::new(RwLock::new(Known::Loading)),
            loaded,
            configmap: format!("{namespace}/{name}"),
        };
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let config = super::watch_config().fields(&format!("metadata.name={name}"));
        let known = cache.known.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, config)
                .backoff(super::relist::WatchBackoff::default())
                .boxed();
            // Whether the relist under way has seen the ConfigMap.
            let mut listed = false;
            while let Some(event) = events.next().await {
                let text =
                    |cm: &ConfigMap| cm.data.as_ref().and_then(|d| d.get(PROFILES_KEY)).cloned();
                let update = match event {
                    Ok(watcher::Event::Init) => {
                        listed = false;
                        continue;
                    }
                    Ok(watcher::Event::InitApply(cm)) => {
                        listed = true;
                        Some(text(&cm))
                    }
                    Ok(watcher::Event::InitDone) => (!listed).then_some(None),
                    Ok(watcher::Event::Apply(cm)) => Some(text(&cm)),
                    Ok(watcher::Event::Delete(_)) => Some(None),
                    Err(e) => {
                        tracing::debug!(error = %e, "watching the cluster profiles");
                        continue;
                    }
                };
                if let Some(text) = update {
                    let changed = apply(&known, text.as_deref());
                    let _ = loaded_tx.send(true);
                    if !changed.is_empty() {
                        let _ = changes.send(changed);
                    }
                }
            }
        });
        (cache, receiver)
    }

    /// A cache holding `known` (tests, and callers without a cluster).
    pub fn fixed(known: Known, configmap: &str) -> ProfileCache {
        let loaded = !matches!(known, Known::Loading);
        let (_, receiver) = tokio::sync::watch::channel(loaded);
        ProfileCache {
            known: Arc::new(RwLock::new(known)),
            loaded: receiver,
            configmap: configmap.to_owned(),
        }
    }

    /// What is known now.
    pub fn known(&self) -> Known {
        self.known
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The profile `name`, or why it cannot be had.
    pub fn resolve(&self, name: &str) -> Result<Profile, Unresolved> {
        self.known().resolve(name, &self.configmap).cloned()
    }

    /// What an instance with `spec` runs, or why that cannot be said.
    pub fn effective(&self, spec: &MQInstanceSpec) -> Result<Effective, Unresolved> {
        self.resolve(&spec.cluster)
            .map(|profile| Effective::of(spec, &profile))
    }

    /// Waits (at most `timeout`) until the ConfigMap was read once; whether it was.
    pub async fn wait_loaded(&self, timeout: Duration) -> bool {
        let mut loaded = self.loaded.clone();
        tokio::time::timeout(timeout, loaded.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Moves `known` to the ConfigMap text `text`; the names of the profiles that changed.
fn apply(known: &RwLock<Known>, text: Option<&str>) -> Vec<String> {
    let mut known = known.write().unwrap_or_else(|p| p.into_inner());
    let next = known.after(text);
    if let Known::Read(_, Some(problem)) = &next {
        tracing::warn!(%problem, "the cluster profiles could not be read; the last good ones stay in force");
    }
    let changed = next.profiles().changed_names(&known.profiles());
    if next != *known {
        tracing::info!(profiles = ?next.profiles().names(), ?changed, "cluster profiles changed");
    }
    *known = next;
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_names_the_profiles_it_touched() {
        let known = RwLock::new(Known::Loading);
        let one = "a:\n  brokers: {image: x}\n  nameServers: {image: x}\n";
        assert_eq!(apply(&known, Some(one)), ["a"]);
        assert!(
            apply(&known, Some(one)).is_empty(),
            "no change, no reconcile"
        );
        let two = format!("{one}b:\n  brokers: {{image: y}}\n  nameServers: {{image: y}}\n");
        assert_eq!(apply(&known, Some(&two)), ["b"]);
        assert!(
            apply(&known, Some("a: [")).is_empty(),
            "a broken edit changes nothing"
        );
        assert_eq!(apply(&known, None), ["a", "b"]);
        assert_eq!(*known.read().unwrap(), Known::Missing);
    }
}

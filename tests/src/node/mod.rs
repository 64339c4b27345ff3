//! The process kubelet: a node agent that makes the testbed run Pods.
//!
//! One `mq-testbed node` process registers the testbed's Nodes and keeps their Leases
//! fresh, runs each Pod bound to them as local processes (each Pod on its own loopback
//! address, each container in a private mount namespace holding its volumes), probes
//! them and reports Pod status like a kubelet. It is also the node's kube-proxy
//! (userspace, on the slot's service range), the cluster DNS and the storage
//! provisioner. Everything it starts dies with it: containers are forked by the
//! permanent spawner thread with `PDEATHSIG`, and on SIGTERM it stops every Pod first.
//! The agent runs in a mount namespace of its own (see [`mounts`]), where the volumes of
//! the `sized` StorageClass are tmpfs mounts of their claim's size.

pub mod credentials;
pub mod dns;
pub mod events;
pub mod expand;
pub mod fsgroup;
pub mod ipam;
pub mod launch;
pub mod mounts;
pub mod nodes;
pub mod pods;
pub mod probes;
pub mod provisioner;
pub mod proxy;
pub mod sandbox;
pub mod services;
pub mod spec;
pub mod status;
pub mod termination;
pub mod volumes;
pub mod worker;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret, Service,
};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::slot;

/// Field manager name for everything the node agent writes.
pub const MANAGER: &str = "mq-testbed-node";
/// Bound on waiting for the caches to fill at start.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run the node agent.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The testbed directory (`node/` below it holds Pod and volume data).
    pub dir: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The testbed's slot, which fixes every address range.
    pub slot: u8,
    /// How many Nodes to register.
    pub nodes: usize,
    /// Where `mqfleet/<binary>` images are found (the workspace's `target/debug`).
    pub bin_dir: PathBuf,
}

impl NodeConfig {
    /// Directory of Pod sandboxes (`<uid>/`).
    pub fn pods_dir(&self) -> PathBuf {
        self.dir.join("node").join("pods")
    }

    /// Directory of provisioned persistent volumes.
    pub fn volumes_dir(&self) -> PathBuf {
        self.dir.join("node").join("volumes")
    }

    /// Directory of container logs (`<ns>_<pod>_<uid>/<container>/<restart>.log`).
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs").join("pods")
    }

    /// The names of the Nodes this agent runs.
    pub fn node_names(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| format!("node-{i}")).collect()
    }

    /// The address of node `i` (0-based), `127.<128+slot>.0.<i+1>`.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        let [a, b] = slot::pod_prefix(self.slot);
        Ipv4Addr::new(a, b, 0, u8::try_from(i + 1).unwrap_or(u8::MAX))
    }

    /// The `kubernetes` Service's ClusterIP, which containers use to reach the API.
    pub fn service_ip(&self) -> Ipv4Addr {
        slot::service_ip(self.slot)
    }

    /// The cluster DNS address.
    pub fn dns_ip(&self) -> Ipv4Addr {
        slot::dns_ip(self.slot)
    }
}

/// Watch caches of the objects Pods depend on, so volume refreshes and env resolution
/// cost no API calls.
#[derive(Clone)]
pub struct Stores {
    /// Every ConfigMap.
    pub config_maps: Store<ConfigMap>,
    /// Every Secret.
    pub secrets: Store<Secret>,
    /// Every PersistentVolumeClaim.
    pub claims: Store<PersistentVolumeClaim>,
    /// Every PersistentVolume.
    pub volumes: Store<PersistentVolume>,
    /// Every Service.
    pub services: Store<Service>,
    /// Every EndpointSlice (`discovery.k8s.io/v1beta1`, the version 1.20 serves).
    /// Endpoints objects cannot be used: their validation refuses loopback addresses,
    /// so the endpoints controller never manages to write them for our Pods.
    pub slices: Store<DynamicObject>,
}

/// What every part of the agent shares.
pub struct Ctx {
    /// The API client.
    pub client: Client,
    /// The configuration.
    pub config: NodeConfig,
    /// Watch caches.
    pub stores: Stores,
    /// Pod address allocation.
    pub ipam: std::sync::Mutex<ipam::Ipam>,
    /// The API server's address, the backend of the `kubernetes` Service (whose
    /// endpoints the API server cannot publish: 127.0.0.1 fails their validation).
    pub api_addr: std::net::SocketAddr,
    /// The tmpfs mounts of sized volumes, in the agent's mount namespace.
    pub mounts: mounts::Mounts,
}

impl Ctx {
    /// The address of the Node called `name`, if it is one of ours.
    pub fn node_ip_of(&self, name: &str) -> Option<Ipv4Addr> {
        let names = self.config.node_names();
        names
            .iter()
            .position(|n| n == name)
            .map(|i| self.config.node_ip(i))
    }
}

/// Runs the node agent until SIGTERM/SIGINT, then stops every Pod and returns. The
/// process must have called [`mounts::enter_private_namespace`] first (before any thread
/// started), or sized volumes would be mounted in the host's namespace.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let kube_config = crate::kubeconfig::load(&config.kubeconfig).await?;
    let api_addr = api_address(&kube_config)?;
    let client = crate::kubeclient::client(kube_config)?;
    for dir in [config.pods_dir(), config.volumes_dir(), config.logs_dir()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let stores = start_stores(&client).await?;
    let ctx = Arc::new(Ctx {
        ipam: std::sync::Mutex::new(ipam::Ipam::new(config.slot)),
        api_addr,
        client,
        config,
        stores,
        mounts: mounts::Mounts::default(),
    });
    let _network = services::start(ctx.clone()).await?;
    let _provisioner = provisioner::start(ctx.clone()).await?;
    let _nodes = nodes::start(ctx.clone()).await?;
    let manager = pods::PodManager::start(ctx.clone());
    tracing::info!(
        nodes = ctx.config.nodes,
        slot = ctx.config.slot,
        "node agent running"
    );
    wait_for_shutdown().await;
    tracing::info!("stopping every Pod");
    manager.shutdown().await;
    Ok(())
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; PDEATHSIG still
        // takes the containers with it.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn start_stores(client: &Client) -> anyhow::Result<Stores> {
    let stores = Stores {
        config_maps: cache_of::<ConfigMap>(client),
        secrets: cache_of::<Secret>(client),
        claims: cache_of::<PersistentVolumeClaim>(client),
        volumes: cache_of::<PersistentVolume>(client),
        services: cache_of::<Service>(client),
        slices: slice_cache(client),
    };
    let synced = async {
        stores.config_maps.wait_until_ready().await?;
        stores.secrets.wait_until_ready().await?;
        stores.claims.wait_until_ready().await?;
        stores.volumes.wait_until_ready().await?;
        stores.services.wait_until_ready().await?;
        stores.slices.wait_until_ready().await
    };
    tokio::time::timeout(CACHE_SYNC_TIMEOUT, synced)
        .await
        .context("the watch caches did not fill in time")?
        .context("a watch cache closed")?;
    Ok(stores)
}

/// A cluster-wide watch cache of `K`, kept by a background task for the process' life.
pub fn cache_of<K>(client: &Client) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    spawn_reflector(Api::<K>::all(client.clone()), writer);
    store
}

/// Keeps `writer` filled from a cluster-wide watch of `api` for the process' life.
fn spawn_reflector<K>(api: Api<K>, writer: reflector::store::Writer<K>)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::debug!(error = %e, "watch error (retrying)");
            }
        }
    });
}

/// The API server's `ip:port` from the client configuration.
fn api_address(config: &kube::Config) -> anyhow::Result<std::net::SocketAddr> {
    let url = &config.cluster_url;
    let host = url
        .host()
        .context("the kubeconfig's server URL has no host")?;
    let port = url.port_u16().unwrap_or(443);
    format!("{host}:{port}")
        .parse()
        .with_context(|| format!("the API server {url} is not an ip:port"))
}

/// The EndpointSlice resource 1.20 serves.
pub fn slice_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "discovery.k8s.io",
        "v1beta1",
        "EndpointSlice",
    ))
}

fn slice_cache(client: &Client) -> Store<DynamicObject> {
    let resource = slice_resource();
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    spawn_reflector(
        Api::<DynamicObject>::all_with(client.clone(), &resource),
        writer,
    );
    store
}

/// Creates `path`'s directory (the pod and volume trees are made lazily).
pub(crate) fn ensure_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))
}

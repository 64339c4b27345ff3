//! The Pod manager: watches Pods bound to this agent's Nodes and gives each its own
//! [`Worker`] task.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::Ctx;
use super::worker::{PodMsg, Worker};

/// Bound on stopping every Pod when the agent stops.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// Handle of the running manager.
pub struct PodManager {
    shutdown: oneshot::Sender<oneshot::Sender<()>>,
}

impl PodManager {
    /// Starts watching Pods.
    pub fn start(ctx: Arc<Ctx>) -> PodManager {
        let (shutdown, rx) = oneshot::channel();
        tokio::spawn(manage(ctx, rx));
        PodManager { shutdown }
    }

    /// Stops every Pod's containers (the Pod objects stay) and waits, bounded.
    pub async fn shutdown(self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.shutdown.send(done_tx).is_ok() {
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, done_rx).await;
        }
    }
}

struct Workers {
    ctx: Arc<Ctx>,
    running: HashMap<String, mpsc::Sender<PodMsg>>,
    /// Uids whose worker has ended; later events about them are echoes.
    finished: HashSet<String>,
    tasks: JoinSet<String>,
    /// Uids seen since the last (re)list, to find Pods deleted while not watching.
    listed: HashSet<String>,
}

async fn manage(ctx: Arc<Ctx>, mut shutdown: oneshot::Receiver<oneshot::Sender<()>>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut workers = Workers {
        ctx,
        running: HashMap::new(),
        finished: HashSet::new(),
        tasks: JoinSet::new(),
        listed: HashSet::new(),
    };
    loop {
        tokio::select! {
            done = &mut shutdown => {
                workers.stop_all().await;
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
            Some(ended) = workers.tasks.join_next() => {
                if let Ok(uid) = ended {
                    workers.running.remove(&uid);
                    workers.finished.insert(uid);
                }
            }
            event = stream.next() => match event {
                Some(Ok(event)) => workers.on_event(event).await,
                Some(Err(e)) => tracing::debug!(error = %e, "pod watch error (retrying)"),
                None => return,
            },
        }
    }
}

impl Workers {
    async fn on_event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.listed.clear(),
            watcher::Event::InitApply(pod) => {
                self.listed.insert(pod.uid().unwrap_or_default());
                self.on_pod(pod).await;
            }
            watcher::Event::InitDone => {
                let gone: Vec<String> = self
                    .running
                    .keys()
                    .filter(|uid| !self.listed.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.send(&uid, PodMsg::Gone).await;
                }
            }
            watcher::Event::Apply(pod) => self.on_pod(pod).await,
            watcher::Event::Delete(pod) => {
                let uid = pod.uid().unwrap_or_default();
                self.send(&uid, PodMsg::Gone).await;
                self.finished.remove(&uid);
            }
        }
    }

    async fn on_pod(&mut self, pod: Pod) {
        let Some(host_ip) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| self.ctx.node_ip_of(n))
        else {
            return;
        };
        let uid = pod.uid().unwrap_or_default();
        if self.running.contains_key(&uid) {
            self.send(&uid, PodMsg::Updated(Arc::new(pod))).await;
            return;
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if deleting {
            // No container of ours runs for it (any more): finish the deletion.
            if !self.finished.contains(&uid) {
                self.force_delete(&pod).await;
            }
            return;
        }
        if self.finished.contains(&uid) {
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return;
        }
        self.spawn(pod, host_ip);
    }

    fn spawn(&mut self, pod: Pod, host_ip: std::net::Ipv4Addr) {
        let uid = pod.uid().unwrap_or_default();
        let pod_ip = if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            Some(host_ip)
        } else {
            self.ctx
                .ipam
                .lock()
                .ok()
                .and_then(|mut ipam| ipam.allocate())
        };
        let Some(pod_ip) = pod_ip else {
            tracing::error!(pod = %pod.name_any(), "no free pod address");
            return;
        };
        let (tx, rx) = mpsc::channel(16);
        let worker = Worker::new(self.ctx.clone(), Arc::new(pod), host_ip, pod_ip);
        let task_uid = uid.clone();
        self.tasks.spawn(async move {
            worker.run(rx).await;
            task_uid
        });
        self.running.insert(uid, tx);
    }

    async fn send(&mut self, uid: &str, msg: PodMsg) {
        if let Some(tx) = self.running.get(uid)
            && tx.send(msg).await.is_err()
        {
            self.running.remove(uid);
        }
    }

    async fn force_delete(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = api.delete(&pod.name_any(), &params).await {
            tracing::debug!(pod = %pod.name_any(), error = %e, "finishing a deletion failed");
        }
    }

    async fn stop_all(&mut self) {
        for tx in self.running.values() {
            let _ = tx.send(PodMsg::Shutdown).await;
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

//! The operator process: the ops port, the platform namespace, the admission webhook
//! (every replica) and, under the leader lease, the controllers.
//!
//! This is the only module that starts both the controllers and the webhook, so neither
//! imports the other.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::json;

use crate::controller::metrics::Metrics;
use crate::controller::workloads::{MANAGED_BY, OPERATOR};
use crate::controller::{self, ControllerOptions, Error, Settings, health};
use crate::webhook::{self, WebhookOptions};

/// How to run the operator.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Workload settings.
    pub settings: Settings,
    /// Full resync period (drift correction).
    pub resync: Duration,
    /// Take the `mq-operator` Lease in the platform namespace before reconciling, so
    /// several replicas are safe (one works, the others wait to take over).
    pub leader_elect: bool,
    /// This replica's name in the Lease.
    pub identity: String,
    /// Where to serve `/healthz` and `/metrics`.
    pub http_listen: Option<std::net::SocketAddr>,
    /// Bound on a broker scale-down's drain.
    pub drain_timeout: Duration,
    /// Serve the admission webhook (every replica, leader or not).
    pub webhook: Option<WebhookOptions>,
    /// The leader fails liveness when a kind's reconciles make no progress this long.
    pub stall_after: Duration,
}

impl RunOptions {
    /// What the controllers need of these options.
    fn controllers(&self) -> ControllerOptions {
        ControllerOptions {
            settings: self.settings.clone(),
            resync: self.resync,
            drain_timeout: self.drain_timeout,
        }
    }
}

/// Creates the platform namespace if it is missing (installed operators find it made by
/// their manifests and need only `get` on namespaces).
async fn ensure_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
        "labels": {MANAGED_BY: OPERATOR}}});
    api.patch(name, &PatchParams::apply(OPERATOR), &Patch::Apply(&ns))
        .await?;
    Ok(())
}

/// Serves the ops port, takes the leader lease (if asked), then runs the controllers
/// until SIGTERM/SIGINT or until the lease is lost.
pub async fn run(client: Client, opts: RunOptions) -> Result<(), Error> {
    let health = health::Health::new(opts.stall_after, std::time::Instant::now());
    let metrics = Arc::new(Metrics::with_health(health));
    tokio::spawn(health::watch_api_server(client.clone(), metrics.clone()));
    if let Some(addr) = opts.http_listen {
        let server = mq_broker::ops::OpsServer::bind(addr)
            .await
            .map_err(|source| Error::OpsPort { addr, source })?;
        tokio::spawn(server.serve(metrics.clone(), std::future::pending()));
    }
    ensure_namespace(&client, &opts.settings.namespace).await?;
    if let Some(webhook) = opts.webhook.clone() {
        tokio::spawn(serve_webhook(client.clone(), webhook));
    }
    if !opts.leader_elect {
        metrics.set_leader(true);
        return controller::run_controllers(client, opts.controllers(), metrics).await;
    }
    let manager = LeaseManagerBuilder::new(client.clone(), OPERATOR)
        .with_namespace(&opts.settings.namespace)
        .with_identity(&opts.identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .with_field_manager(OPERATOR)
        .build()
        .await
        .map_err(|e| Error::Leadership(e.to_string()))?;
    let (mut leader, lease_task) = manager.watch().await;
    tracing::info!(identity = %opts.identity, "waiting for the leader lease");
    let result = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        acquired = wait_for(&mut leader, true) => match acquired {
            Err(e) => Err(e),
            Ok(()) => {
                tracing::info!(identity = %opts.identity, "leading");
                metrics.set_leader(true);
                tokio::select! {
                    done = controller::run_controllers(client, opts.controllers(), metrics.clone()) => done,
                    lost = wait_for(&mut leader, false) => {
                        lost.and(Err(Error::Leadership("the lease was lost; exiting so a new leader works alone".into())))
                    }
                }
            }
        },
    };
    metrics.set_leader(false);
    // Dropping the receiver makes the lease task release the lease: a successor takes
    // over at once instead of after the lease expires.
    drop(leader);
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    result
}

/// Runs the webhook, retrying its start (certificates, port) until it works.
async fn serve_webhook(client: Client, opts: WebhookOptions) {
    loop {
        match webhook::run(client.clone(), opts.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, "the admission webhook could not start; retrying in 10 s")
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Lease duration: a crashed leader is replaced within this.
const LEASE_SECONDS: u64 = 15;
/// The leader renews this long before its lease would expire.
const LEASE_GRACE_SECONDS: u64 = 5;

async fn wait_for(
    leader: &mut tokio::sync::watch::Receiver<bool>,
    wanted: bool,
) -> Result<(), Error> {
    while *leader.borrow_and_update() != wanted {
        leader
            .changed()
            .await
            .map_err(|_| Error::Leadership("the lease task ended".into()))?;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

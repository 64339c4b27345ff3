//! Node registration and heartbeats: each Node object with capacity, addresses and a
//! Ready condition, its Lease in `kube-node-lease` renewed every 10 s (which alone keeps
//! the node lifecycle controller from marking it NotReady), and its status refreshed
//! every minute, as kubelet does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::spec::{NODE_CPU, NODE_MEMORY};
use super::{Ctx, MANAGER};

/// Lease renewal period (kubelet's default).
const LEASE_PERIOD: Duration = Duration::from_secs(10);
/// Lease duration the node lifecycle controller judges by.
const LEASE_SECONDS: i32 = 40;
/// Node status refresh period.
const STATUS_PERIOD: Duration = Duration::from_secs(60);

/// Registers every Node and keeps them alive in the background. The returned handle
/// stops the heartbeats when dropped.
pub async fn start(ctx: Arc<Ctx>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let names = ctx.config.node_names();
    for (i, name) in names.iter().enumerate() {
        register(&ctx, name, i)
            .await
            .with_context(|| format!("registering node {name}"))?;
        renew_lease(&ctx.client, name).await?;
    }
    Ok(tokio::spawn(heartbeat(ctx)))
}

async fn heartbeat(ctx: Arc<Ctx>) {
    let names = ctx.config.node_names();
    let mut lease = tokio::time::interval(LEASE_PERIOD);
    let mut status = tokio::time::interval(STATUS_PERIOD);
    loop {
        tokio::select! {
            _ = lease.tick() => {
                for name in &names {
                    if let Err(e) = renew_lease(&ctx.client, name).await {
                        tracing::warn!(node = %name, error = %e, "renewing the node lease failed");
                    }
                }
            }
            _ = status.tick() => {
                for (i, name) in names.iter().enumerate() {
                    if let Err(e) = patch_status(&ctx, name, i).await {
                        tracing::warn!(node = %name, error = %e, "updating node status failed");
                    }
                }
            }
        }
    }
}

fn node_status(ctx: &Ctx, name: &str, i: usize) -> serde_json::Value {
    let now = Timestamp::now().to_string();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let resources = json!({"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": "110", "ephemeral-storage": "100Gi"});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "mq-testbed process kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": ctx.config.node_ip(i).to_string()},
            {"type": "Hostname", "address": name},
        ],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "", "osImage": "mq-testbed process kubelet",
            "containerRuntimeVersion": "process://1", "kubeletVersion": crate::paths::K8S_VERSION,
            "kubeProxyVersion": crate::paths::K8S_VERSION, "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH,
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    })
}

async fn register(ctx: &Ctx, name: &str, i: usize) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH,
                "node.mqfleet.io/testbed": "true",
            },
        },
        "status": node_status(ctx, name, i),
    }))?;
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => patch_status(ctx, name, i).await,
        Err(e) => Err(e.into()),
    }
}

async fn patch_status(ctx: &Ctx, name: &str, i: usize) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = json!({"status": node_status(ctx, name, i)});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn renew_lease(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": MicroTime(Timestamp::now()),
        },
    });
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&lease),
    )
    .await
    .with_context(|| format!("renewing lease {name}"))?;
    Ok(())
}

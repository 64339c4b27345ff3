//! Reaching an instance's brokers: their ready pods, and admin connections to them.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use mq_broker::client::AdminClient;

use super::workloads::{BROKER_PORT, COMPONENT_LABEL, INSTANCE_ID_LABEL};

/// Bound on connecting to a broker's admin port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A broker pod that is Ready: its broker name and remoting address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPod {
    /// `broker-<ordinal>`.
    pub name: String,
    /// `podIP:10911`.
    pub addr: String,
}

/// The Ready broker pods of instance `instance_id`, by ordinal.
pub async fn ready_brokers(
    client: &Client,
    namespace: &str,
    instance_id: &str,
) -> Result<Vec<BrokerPod>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{INSTANCE_ID_LABEL}={instance_id},{COMPONENT_LABEL}=broker");
    let pods = api.list(&ListParams::default().labels(&selector)).await?;
    let mut out: Vec<BrokerPod> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            let ordinal = p.name_any().rsplit('-').next()?.to_owned();
            Some(BrokerPod {
                name: format!("broker-{ordinal}"),
                addr: format!("{ip}:{BROKER_PORT}"),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// An admin connection to `broker`.
pub async fn connect(broker: &BrokerPod) -> Result<AdminClient, super::Error> {
    AdminClient::connect(&broker.addr, CONNECT_TIMEOUT)
        .await
        .map_err(|e| super::Error::Broker {
            broker: broker.name.clone(),
            message: e.to_string(),
        })
}

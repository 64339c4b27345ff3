//! Reaching an instance's brokers: their ready pods, and admin connections to them.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use mq_broker::acl::Credentials;
use mq_broker::client::AdminClient;

use super::workloads::{BROKER_PORT, COMPONENT_LABEL, INSTANCE_ID_LABEL, NAMESRV_PORT};

/// The broker a globally ordered topic lives on: one fixed broker, so its one queue
/// orders everything; while it is down the topic waits rather than move.
pub const GLOBAL_ORDER_BROKER: &str = "broker-0";

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
    let pods = broker_pods(client, namespace, instance_id).await?;
    Ok(ready_of(&pods))
}

/// The Ready ones among an instance's broker pods, by ordinal.
pub fn ready_of(pods: &[Pod]) -> Vec<BrokerPod> {
    let mut out: Vec<BrokerPod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .filter_map(broker_of)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The broker name and remoting address of a pod that has an IP.
fn broker_of(pod: &Pod) -> Option<BrokerPod> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let ordinal = pod.name_any().rsplit('-').next()?.to_owned();
    Some(BrokerPod {
        name: format!("broker-{ordinal}"),
        addr: format!("{ip}:{BROKER_PORT}"),
    })
}

/// Every broker pod of instance `instance_id` (any state), by name.
pub async fn broker_pods(
    client: &Client,
    namespace: &str,
    instance_id: &str,
) -> Result<Vec<Pod>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{INSTANCE_ID_LABEL}={instance_id},{COMPONENT_LABEL}=broker");
    let mut pods = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    pods.sort_by_key(|p| p.name_any());
    Ok(pods)
}

/// A broker pod whose process runs (phase Running, not being deleted, with an address),
/// ready or not: its broker name and remoting address.
pub fn running_broker(pod: &Pod) -> Option<BrokerPod> {
    let status = pod.status.as_ref()?;
    if pod.metadata.deletion_timestamp.is_some() || status.phase.as_deref() != Some("Running") {
        return None;
    }
    broker_of(pod)
}

/// The addresses (`podIP:9876`) of the Ready name servers of instance `instance_id`.
pub async fn ready_name_servers(
    client: &Client,
    namespace: &str,
    instance_id: &str,
) -> Result<Vec<String>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{INSTANCE_ID_LABEL}={instance_id},{COMPONENT_LABEL}=namesrv");
    let pods = api.list(&ListParams::default().labels(&selector)).await?;
    Ok(pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .filter_map(|p| {
            Some(format!(
                "{}:{NAMESRV_PORT}",
                p.status.as_ref()?.pod_ip.as_ref()?
            ))
        })
        .collect())
}

/// Brokers of `wanted` missing from `topic`'s route on any of `name_servers` (a name
/// server that cannot be asked counts as missing them all).
pub async fn missing_from_route(
    admin: &Credentials,
    name_servers: &[String],
    topic: &str,
    wanted: &[BrokerPod],
) -> Vec<String> {
    let mut missing = std::collections::BTreeSet::new();
    for addr in name_servers {
        let route = match AdminClient::connect(addr, CONNECT_TIMEOUT).await {
            Ok(c) => c
                .with_credentials(admin.clone())
                .route(topic)
                .await
                .ok()
                .flatten(),
            Err(_) => None,
        };
        let listed: Vec<&str> = route
            .as_ref()
            .map(|r| {
                r.queue_datas
                    .iter()
                    .map(|q| q.broker_name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        missing.extend(
            wanted
                .iter()
                .filter(|b| !listed.contains(&b.name.as_str()))
                .map(|b| b.name.clone()),
        );
    }
    missing.into_iter().collect()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// An admin connection to `broker`, signing with its instance's admin key (brokers refuse
/// admin requests signed by anyone else).
pub async fn connect(admin: &Credentials, broker: &BrokerPod) -> Result<AdminClient, super::Error> {
    AdminClient::connect(&broker.addr, CONNECT_TIMEOUT)
        .await
        .map(|c| c.with_credentials(admin.clone()))
        .map_err(|e| super::Error::Broker {
            broker: broker.name.clone(),
            message: e.to_string(),
        })
}

/// Runs `call` on an admin connection to each of `brokers` in turn; the first failure
/// stops and names its broker.
pub async fn on_each<F, Fut>(
    admin: &Credentials,
    brokers: &[BrokerPod],
    call: F,
) -> Result<(), super::Error>
where
    F: Fn(AdminClient) -> Fut,
    Fut: Future<Output = Result<(), mq_broker::client::AdminError>>,
{
    for broker in brokers {
        call(connect(admin, broker).await?)
            .await
            .map_err(|e| super::Error::Broker {
                broker: broker.name.clone(),
                message: e.to_string(),
            })?;
    }
    Ok(())
}

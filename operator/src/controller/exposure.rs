//! `spec.exposure`: the Services that let clients outside the cluster in, and the
//! external addresses they give.
//!
//! For `nodePort`/`loadBalancer` the instance gets, in the platform namespace, a Service
//! of that type for its name servers (port 9876 → the name servers' external port
//! [`NAMESRV_EXTERNAL_PORT`], where route answers carry the brokers' external addresses)
//! and one per broker pod (selector `statefulset.kubernetes.io/pod-name`, publishing
//! not-ready addresses so a draining broker stays reachable). Each Service's node port is
//! allocated by the API server once and then pinned: the operator reads it back and
//! applies it with every later reconcile, so a broker's external address never moves.
//! The brokers learn their external address from `broker.conf`
//! (`externalAddr.broker-<ordinal>=host:port`, re-read live) and register it beside their
//! pod address. `cluster` (or ACL off, refused in status) deletes these Services.
//!
//! The VIP channel (broker port − 2, Java's `vipChannelEnabled`) is not exposed: node
//! ports are allocated one by one, so "port − 2" of an external address is nobody's.
//! Clients outside the cluster turn it off (`setVipChannelEnabled(false)`, the default of
//! recent Java clients).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::apply::{apply_object, delete_owned};
use super::workloads::{self, BROKER_PORT, NAMESRV_PORT, Names, Settings};
use super::{Context, Error};
use crate::crd::{Exposure, MQInstance};
use crate::domain::exposure::{
    ACL_REQUIRED_REASON, acl_refusal, load_balancer_addr, needs_external_host, node_port_addr,
};
use crate::domain::profiles::Effective;

/// The name servers' port for clients outside the cluster (`--external-listen`).
pub const NAMESRV_EXTERNAL_PORT: u16 = 9877;
/// Label on the external Services (value: `namesrv` or `broker`).
pub const EXTERNAL_LABEL: &str = "mqfleet.io/external";
/// The `broker.conf` key prefix of a broker's external address (`externalAddr.<brokerName>`).
pub const EXTERNAL_ADDR_PREFIX: &str = mq_broker::conf::EXTERNAL_ADDR_PREFIX;
/// The `Ready=False` reason while load balancers have no address yet.
pub const WAITING_FOR_LB: &str = "WaitingForLoadBalancer";
/// The label Kubernetes puts on each StatefulSet pod with its name.
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";

/// What the exposure gives the instance now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct External {
    /// `status.externalEndpoint`, once known.
    pub endpoint: Option<String>,
    /// Broker name (`broker-<ordinal>`) → its external address, once known.
    pub brokers: BTreeMap<String, String>,
    /// Why the instance is not (yet) reachable from outside as its spec asks: a
    /// `Ready=False` reason and message.
    pub problem: Option<(&'static str, String)>,
}

impl External {
    /// Adds the brokers' external addresses to `broker.conf` of `cm`.
    pub fn write_config(&self, cm: &mut ConfigMap) {
        let Some(conf) = cm.data.as_mut().and_then(|d| d.get_mut("broker.conf")) else {
            return;
        };
        for (broker, addr) in &self.brokers {
            conf.push_str(&format!("{EXTERNAL_ADDR_PREFIX}{broker}={addr}\n"));
        }
    }
}

/// Name of the external Service of the name servers.
pub fn namesrv_service_name(names: &Names) -> String {
    format!("{}-ext", names.namesrv())
}

/// Name of the external Service of broker `ordinal`.
pub fn broker_service_name(names: &Names, ordinal: i32) -> String {
    format!("{}-{ordinal}-ext", names.broker())
}

/// The external Service of the name servers (`node_port`: the one pinned earlier).
pub fn namesrv_service(
    instance: &MQInstance,
    names: &Names,
    settings: &Settings,
    service_type: &str,
    node_port: Option<i32>,
) -> Service {
    let mut port = json!({"name": "namesrv", "port": NAMESRV_PORT, "targetPort": NAMESRV_EXTERNAL_PORT, "protocol": "TCP"});
    if let Some(p) = node_port {
        port["nodePort"] = json!(p);
    }
    service(
        instance,
        names,
        settings,
        &namesrv_service_name(names),
        "namesrv",
        json!({"type": service_type, "ports": [port],
               "selector": {workloads::INSTANCE_ID_LABEL: names.instance_id, workloads::COMPONENT_LABEL: "namesrv"}}),
    )
}

/// The external Service of broker `ordinal`: that pod only, ready or not.
pub fn broker_service(
    instance: &MQInstance,
    names: &Names,
    settings: &Settings,
    service_type: &str,
    ordinal: i32,
    node_port: Option<i32>,
) -> Service {
    let mut port = json!({"name": "remoting", "port": BROKER_PORT, "targetPort": BROKER_PORT, "protocol": "TCP"});
    if let Some(p) = node_port {
        port["nodePort"] = json!(p);
    }
    service(
        instance,
        names,
        settings,
        &broker_service_name(names, ordinal),
        "broker",
        json!({"type": service_type, "ports": [port], "publishNotReadyAddresses": true,
               "selector": {POD_NAME_LABEL: format!("{}-{ordinal}", names.broker())}}),
    )
}

fn service(
    instance: &MQInstance,
    names: &Names,
    settings: &Settings,
    name: &str,
    component: &str,
    spec: serde_json::Value,
) -> Service {
    let mut labels = workloads::labels(instance, names, Some(component));
    labels.insert(EXTERNAL_LABEL.to_owned(), component.to_owned());
    let value = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
        "spec": spec,
    });
    match serde_json::from_value(value) {
        Ok(svc) => svc,
        Err(e) => panic!("external Service builder produced an invalid object: {e}"),
    }
}

/// The node port of the first port of `svc`.
fn node_port(svc: &Service) -> Option<i32> {
    svc.spec.as_ref()?.ports.as_ref()?.first()?.node_port
}

/// The external address `svc` gives: the profile's host and its node port (nodePort), or
/// its load balancer's ingress with the Service port (loadBalancer).
fn address(svc: &Service, exposure: Exposure, host: Option<&str>, port: u16) -> Option<String> {
    match exposure {
        Exposure::Cluster => None,
        Exposure::NodePort => Some(node_port_addr(host?, node_port(svc)?)),
        Exposure::LoadBalancer => {
            let ingress: Vec<(Option<String>, Option<String>)> = svc
                .status
                .as_ref()?
                .load_balancer
                .as_ref()?
                .ingress
                .iter()
                .flatten()
                .map(|i| (i.ip.clone(), i.hostname.clone()))
                .collect();
            load_balancer_addr(&ingress, i32::from(port))
        }
    }
}

/// Applies (or removes) the external Services `instance` asks for and returns what they
/// give. Brokers beyond the spec's count that still run (draining) keep theirs.
pub async fn reconcile(
    ctx: &Context,
    instance: &MQInstance,
    names: &Names,
    effective: &Effective,
) -> Result<External, Error> {
    let exposure = instance.spec.exposure;
    let refusal = acl_refusal(&instance.spec);
    let host = effective.external_host.as_deref();
    let no_host = needs_external_host(exposure) && host.is_none();
    let Some(service_type) = exposure
        .service_type()
        .filter(|_| refusal.is_none() && !no_host)
    else {
        remove(ctx, instance, names, 0).await?;
        let problem = match (refusal, no_host) {
            (Some(message), _) => Some((ACL_REQUIRED_REASON, message)),
            (None, true) => Some((
                "NoExternalHost",
                format!(
                    "spec.exposure nodePort needs the host clients outside the cluster reach node ports on, and cluster profile {:?} has no externalHost; the platform admin must set it (or use exposure: cluster)",
                    effective.cluster
                ),
            )),
            (None, false) => None,
        };
        return Ok(External {
            problem,
            ..External::default()
        });
    };
    let platform = &ctx.settings.namespace;
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), platform);
    let pinned = |svc: Option<Service>| svc.as_ref().and_then(node_port);
    let current = pinned(api.get_opt(&namesrv_service_name(names)).await?);
    let svc = namesrv_service(instance, names, &ctx.settings, service_type, current);
    let applied = apply_object(ctx, platform, &svc).await?;
    let mut external = External {
        endpoint: address(&applied, exposure, host, NAMESRV_PORT),
        ..External::default()
    };
    let count = broker_count(ctx, names, effective).await?;
    for ordinal in 0..count {
        let current = pinned(api.get_opt(&broker_service_name(names, ordinal)).await?);
        let svc = broker_service(
            instance,
            names,
            &ctx.settings,
            service_type,
            ordinal,
            current,
        );
        let applied = apply_object(ctx, platform, &svc).await?;
        if let Some(addr) = address(&applied, exposure, host, BROKER_PORT) {
            external.brokers.insert(format!("broker-{ordinal}"), addr);
        }
    }
    remove(ctx, instance, names, count).await?;
    if external.endpoint.is_none() || external.brokers.len() < usize::try_from(count).unwrap_or(0) {
        external.problem = Some((
            WAITING_FOR_LB,
            format!(
                "spec.exposure {}: waiting for the load balancers of the instance's Services (kubectl -n {platform} get svc -l {EXTERNAL_LABEL},{}={}); a cloud controller fills in their addresses",
                exposure.as_str(),
                workloads::INSTANCE_ID_LABEL,
                names.instance_id
            ),
        ));
    }
    Ok(external)
}

/// Brokers that run or will run: the spec's count, or more while some drain.
async fn broker_count(ctx: &Context, names: &Names, effective: &Effective) -> Result<i32, Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let running = api
        .get_opt(&names.broker())
        .await?
        .and_then(|s| s.spec?.replicas)
        .unwrap_or(0);
    Ok(running.max(effective.broker_replicas))
}

/// Deletes the instance's external Services, except the brokers' below `keep_brokers`
/// and (when `keep_brokers > 0`) the name servers'.
pub async fn remove(
    ctx: &Context,
    instance: &MQInstance,
    names: &Names,
    keep_brokers: i32,
) -> Result<(), Error> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let selector = format!(
        "{EXTERNAL_LABEL},{}={}",
        workloads::INSTANCE_ID_LABEL,
        names.instance_id
    );
    let keep: Vec<String> = (0..keep_brokers)
        .map(|o| broker_service_name(names, o))
        .chain((keep_brokers > 0).then(|| namesrv_service_name(names)))
        .collect();
    for svc in api.list(&ListParams::default().labels(&selector)).await? {
        let name = svc.name_any();
        if !keep.contains(&name) {
            delete_owned(&api, &name, instance).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};

    fn instance() -> MQInstance {
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {"instanceName": "orders", "aclEnabled": true, "exposure": "nodePort"},
        }))
        .unwrap()
    }

    fn settings() -> Settings {
        Settings {
            namespace: "mqfleet-system".into(),
            profiles_configmap: "mqfleet-cluster-profiles".into(),
        }
    }

    #[test]
    fn each_broker_gets_its_own_service_that_keeps_a_draining_broker_reachable() {
        let (i, s) = (instance(), settings());
        let names = Names::of(&i);
        let svc = broker_service(&i, &names, &s, "NodePort", 1, None);
        let spec = svc.spec.clone().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let selector = spec.selector.unwrap();
        assert_eq!(
            selector.get(POD_NAME_LABEL),
            Some(&format!("{}-1", names.broker()))
        );
        assert_eq!(selector.len(), 1, "that pod only");
        let port = &spec.ports.unwrap()[0];
        assert_eq!((port.port, port.node_port), (i32::from(BROKER_PORT), None));
        assert!(svc.metadata.name.unwrap().len() <= 63);
        let pinned = broker_service(&i, &names, &s, "NodePort", 1, Some(30123));
        assert_eq!(
            pinned.spec.unwrap().ports.unwrap()[0].node_port,
            Some(30123)
        );
    }

    #[test]
    fn the_name_servers_external_service_targets_their_external_port() {
        let (i, s) = (instance(), settings());
        let names = Names::of(&i);
        let svc = namesrv_service(&i, &names, &s, "LoadBalancer", Some(30001));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.port, i32::from(NAMESRV_PORT));
        assert_eq!(
            port.target_port,
            Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i32::from(
                    NAMESRV_EXTERNAL_PORT
                ))
            )
        );
        assert_eq!(port.node_port, Some(30001));
    }

    #[test]
    fn addresses_come_from_the_node_port_or_the_load_balancer() {
        let (i, s) = (instance(), settings());
        let names = Names::of(&i);
        let mut svc = namesrv_service(&i, &names, &s, "NodePort", Some(30001));
        assert_eq!(
            address(&svc, Exposure::NodePort, Some("127.0.0.1"), NAMESRV_PORT).as_deref(),
            Some("127.0.0.1:30001")
        );
        assert_eq!(address(&svc, Exposure::NodePort, None, NAMESRV_PORT), None);
        assert_eq!(
            address(&svc, Exposure::LoadBalancer, None, NAMESRV_PORT),
            None
        );
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("198.51.100.9".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        assert_eq!(
            address(&svc, Exposure::LoadBalancer, None, NAMESRV_PORT).as_deref(),
            Some("198.51.100.9:9876")
        );
    }

    #[test]
    fn brokers_read_their_external_address_from_broker_conf() {
        let external = External {
            brokers: BTreeMap::from([("broker-0".into(), "127.0.0.1:30002".into())]),
            ..External::default()
        };
        let mut cm = ConfigMap {
            data: Some(BTreeMap::from([(
                "broker.conf".into(),
                "namesrvAddr=a:9876\n".into(),
            )])),
            ..Default::default()
        };
        external.write_config(&mut cm);
        let conf = mq_broker::conf::Properties::parse(&cm.data.unwrap()["broker.conf"]);
        assert_eq!(
            conf.external_addr("broker-0").as_deref(),
            Some("127.0.0.1:30002")
        );
        assert_eq!(conf.external_addr("broker-1"), None);
    }
}

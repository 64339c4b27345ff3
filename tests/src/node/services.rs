//! The node's Service networking: the userspace proxy's routes (every ClusterIP port
//! and NodePort to the ready endpoints) and the cluster DNS zone, both read from the
//! watch caches.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde_json::json;

use super::dns::{DnsServer, Lookup, Zone};
use super::proxy::{Proxy, Routes};
use super::{Ctx, MANAGER, Stores};

/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// How often the caches are compared with the proxy's routes.
const SYNC: Duration = Duration::from_millis(200);

/// The running proxy and DNS server; dropping it stops both.
pub struct Network {
    _dns: DnsServer,
    _sync: tokio::task::JoinHandle<()>,
}

/// Reserves the DNS address with a `kube-dns` Service, starts the DNS server and keeps
/// the proxy's routes equal to the Services and Endpoints.
pub async fn start(ctx: Arc<Ctx>) -> anyhow::Result<Network> {
    let dns_ip = ctx.config.dns_ip();
    reserve_dns_service(&ctx, dns_ip).await?;
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstreams = super::dns::parse_resolv_conf(&host)
        .into_iter()
        .filter(|a| a.ip() != IpAddr::V4(dns_ip))
        .collect();
    let zone = Arc::new(ClusterZone {
        stores: ctx.stores.clone(),
    });
    let dns = DnsServer::start(SocketAddr::new(dns_ip.into(), 53), zone, upstreams)
        .await
        .with_context(|| format!("starting the cluster DNS on {dns_ip}:53"))?;
    let sync = tokio::spawn(async move {
        let proxy = Proxy::new();
        let mut current = Routes::new();
        loop {
            let wanted = routes(&ctx.stores, ctx.api_addr);
            if wanted != current {
                for (addr, e) in proxy.apply(wanted.clone()).await {
                    tracing::warn!(%addr, error = %e, "cannot listen for a Service");
                }
                current = wanted;
            }
            tokio::time::sleep(SYNC).await;
        }
    });
    Ok(Network {
        _dns: dns,
        _sync: sync,
    })
}

async fn reserve_dns_service(ctx: &Ctx, ip: Ipv4Addr) -> anyhow::Result<()> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), "kube-system");
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "KubeDNS"}},
        "spec": {
            "clusterIP": ip.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        },
    });
    api.patch(
        "kube-dns",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&svc),
    )
    .await
    .with_context(|| format!("reserving {ip} with the kube-dns Service"))?;
    Ok(())
}

/// Listen address → backends for every TCP Service port (and NodePort on 127.0.0.1);
/// `default/kubernetes` goes to `api`.
pub fn routes(stores: &Stores, api: SocketAddr) -> Routes {
    let mut routes = Routes::new();
    for svc in stores.services.state() {
        let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
        // The DNS server itself serves this address.
        if ns == "kube-system" && name == "kube-dns" {
            continue;
        }
        let Some(spec) = &svc.spec else { continue };
        let ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        let slices = slices_of(stores, &ns, &name);
        let kubernetes = ns == "default" && name == "kubernetes";
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
                continue;
            }
            let backends = if kubernetes {
                vec![api]
            } else {
                backends(&slices, port)
            };
            if let (Some(ip), Ok(p)) = (ip, u16::try_from(port.port)) {
                routes.insert(SocketAddr::new(ip.into(), p), backends.clone());
            }
            if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                routes.insert(
                    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), node_port),
                    backends,
                );
            }
        }
    }
    routes
}

/// The parts of a `discovery.k8s.io/v1beta1` EndpointSlice the node uses.
#[derive(Debug, Default, Deserialize)]
pub struct Slice {
    /// The endpoints.
    #[serde(default)]
    pub endpoints: Vec<SliceEndpoint>,
    /// The ports.
    #[serde(default)]
    pub ports: Option<Vec<SlicePort>>,
}

/// One endpoint of a slice.
#[derive(Debug, Default, Deserialize)]
pub struct SliceEndpoint {
    /// Its addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Readiness (absent means ready, per the API).
    #[serde(default)]
    pub conditions: SliceConditions,
    /// The Pod's hostname (StatefulSet Pods behind their governing Service).
    pub hostname: Option<String>,
}

/// Endpoint conditions.
#[derive(Debug, Default, Deserialize)]
pub struct SliceConditions {
    /// Ready (the controller already folds in `publishNotReadyAddresses`).
    pub ready: Option<bool>,
}

/// A port of a slice.
#[derive(Debug, Default, Deserialize)]
pub struct SlicePort {
    /// Its name (the Service port's name).
    pub name: Option<String>,
    /// Its number.
    pub port: Option<i32>,
}

/// The EndpointSlices of Service `ns/name`.
pub fn slices_of(stores: &Stores, ns: &str, name: &str) -> Vec<Slice> {
    stores
        .slices
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| {
            s.labels()
                .get("kubernetes.io/service-name")
                .is_some_and(|n| n == name)
        })
        .filter_map(|s| serde_json::from_value(s.data.clone()).ok())
        .collect()
}

/// Ready addresses of the slice port matching the Service port by name.
fn backends(slices: &[Slice], port: &ServicePort) -> Vec<SocketAddr> {
    let wanted = port.name.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for slice in slices {
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == wanted)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.ready != Some(false))
        {
            for ip in &endpoint.addresses {
                if let Ok(ip) = ip.parse::<IpAddr>() {
                    out.push(SocketAddr::new(ip, number));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `cluster.local` answered from the Service and Endpoints caches.
struct ClusterZone {
    stores: Stores,
}

impl Zone for ClusterZone {
    fn lookup(&self, name: &str) -> Lookup {
        let Some(local) = name
            .strip_suffix(CLUSTER_DOMAIN)
            .and_then(|n| n.strip_suffix('.'))
        else {
            return if name == CLUSTER_DOMAIN {
                Lookup::NoData
            } else {
                Lookup::NotOurs
            };
        };
        let labels: Vec<&str> = local.split('.').collect();
        let found = match labels.as_slice() {
            [svc, ns, "svc"] => self.service(ns, svc),
            [host, svc, ns, "svc"] => self.endpoint_host(ns, svc, host),
            [ip, _ns, "pod"] => ip
                .replace('-', ".")
                .parse::<Ipv4Addr>()
                .ok()
                .map(|ip| vec![ip]),
            ["svc"] | [_, "svc"] | ["pod"] | [_, "pod"] => return Lookup::NoData,
            _ => None,
        };
        match found {
            Some(ips) if !ips.is_empty() => Lookup::A(ips),
            _ => Lookup::NxDomain,
        }
    }
}

impl ClusterZone {
    fn service(&self, ns: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let svc = self.stores.services.get(&ObjectRef::new(name).within(ns))?;
        let cluster_ip = svc.spec.as_ref()?.cluster_ip.as_deref();
        match cluster_ip.and_then(|ip| ip.parse::<Ipv4Addr>().ok()) {
            Some(ip) => Some(vec![ip]),
            // Headless: the ready endpoints themselves.
            None => Some(self.addresses(ns, name, |_| true)),
        }
    }

    fn endpoint_host(&self, ns: &str, svc: &str, host: &str) -> Option<Vec<Ipv4Addr>> {
        Some(self.addresses(ns, svc, |h| h == Some(host)))
    }

    fn addresses(&self, ns: &str, svc: &str, keep: impl Fn(Option<&str>) -> bool) -> Vec<Ipv4Addr> {
        let mut ips: Vec<Ipv4Addr> = slices_of(&self.stores, ns, svc)
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.ready != Some(false) && keep(e.hostname.as_deref()))
            .flat_map(|e| e.addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

//! Cluster profiles: what the platform offers an instance to run on (`spec.cluster`, the
//! console's `/json/cluster/list`). The platform admin keeps them in the ConfigMap
//! `mqfleet-cluster-profiles` of the platform namespace, key `profiles.yaml`, one entry
//! per profile name (the Helm chart renders it from values):
//!
//! ```yaml
//! default:
//!   regionId: mq-private          # optional, the console's region (default mq-private)
//!   createTime: 1735689600000     # optional, epoch milliseconds (console cluster/list)
//!   modifyTime: 1735689600000
//!   brokers:
//!     image: mqfleet/mq-broker:dev
//!     replicas: 2                 # optional, default 2
//!     storage: {size: 1Gi, storageClassName: standard}   # size default 10Gi
//!                                 # segmentSize: commit-log segment, default 1Gi; a
//!                                 # volume must hold two (the webhook refuses less)
//!     flushMode: async            # optional, default async
//!     resources: {requests: {cpu: 100m, memory: 128Mi}}
//!   nameServers:
//!     image: mqfleet/mq-broker:dev
//!     replicas: 2                 # optional, default 2
//!     resources: {requests: {cpu: 50m, memory: 64Mi}}
//!   nodeSelector: {}              # optional placement of both components' pods
//!   tolerations: []
//!   affinity: {}
//!   tls:                          # optional: TLS beside plaintext on every remoting port
//!     secretName: mq-tls          # a kubernetes.io/tls Secret of the platform namespace
//!   externalHost: 203.0.113.10    # optional: the host clients outside the cluster reach
//!                                 # node ports on (spec.exposure nodePort needs it)
//!   externalExposure: nodePort    # optional: what the console's tunnelSwitch anyTunnel
//!                                 # asks for (nodePort, the default, or loadBalancer)
//!   imagePullSecrets: [regcred]   # optional: kubernetes.io/dockerconfigjson Secrets of the
//!                                 # platform namespace the server pods pull images with
//! ```
//!
//! An instance takes its profile's values for whatever its spec leaves unset
//! ([`Effective`]); images and placement always come from the profile (tenants never
//! choose images). This module is pure: parsing, lookup and the merge.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

use mq_broker::store::error::human_bytes;

use crate::crd::{EffectiveSettings, Exposure, FlushMode, MQInstanceSpec, OBJECT_NAME_PATTERN};

/// Default name of the profiles ConfigMap (in the platform namespace).
pub const DEFAULT_CONFIGMAP: &str = "mqfleet-cluster-profiles";
/// The ConfigMap key holding the profiles.
pub const PROFILES_KEY: &str = "profiles.yaml";
/// The console's region of a private deployment.
pub const DEFAULT_REGION: &str = "mq-private";

/// One cluster profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// Region the profile belongs to (console `regionId`); default `mq-private`.
    #[serde(default = "default_region")]
    pub region_id: String,
    /// When the profile was created, epoch milliseconds (console `createTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    /// When the profile last changed, epoch milliseconds (console `modifyTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modify_time: Option<i64>,
    /// Brokers: image and the defaults of `spec.brokers`.
    pub brokers: BrokerProfile,
    /// Name servers: image and the defaults of `spec.nameServers`.
    pub name_servers: NameServerProfile,
    /// Node labels the instance's pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the instance's pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node and pod affinity of the instance's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// TLS on the name servers' and brokers' ports (plaintext clients keep working).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsProfile>,
    /// Host (name or address) on which clients outside the cluster reach the node ports
    /// of instances with `exposure: nodePort` (e.g. a node's public address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_host: Option<String>,
    /// The exposure the console's `tunnelSwitch anyTunnel` asks for: `nodePort`
    /// (default) or `loadBalancer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_exposure: Option<Exposure>,
    /// Secrets of the platform namespace (`kubernetes.io/dockerconfigjson`) the brokers
    /// and name servers pull their images with, for a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,
}

impl Profile {
    /// The external exposure of this profile (`nodePort` unless it says `loadBalancer`).
    pub fn external_exposure(&self) -> Exposure {
        self.external_exposure
            .filter(|e| e.is_external())
            .unwrap_or(Exposure::NodePort)
    }
}

/// The server certificate of a profile's name servers and brokers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsProfile {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) in the platform namespace,
    /// e.g. kept by cert-manager: a renewal applies to new connections without restarts.
    pub secret_name: String,
}

/// The brokers of a profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerProfile {
    /// Image the brokers run.
    pub image: String,
    /// Brokers of an instance that does not say (1–32); default 2.
    #[serde(default = "default_replicas")]
    pub replicas: i32,
    /// Store volumes of an instance that does not say.
    #[serde(default)]
    pub storage: StorageProfile,
    /// Flush mode of an instance that does not say; default `async`.
    #[serde(default)]
    pub flush_mode: FlushMode,
    /// CPU and memory of each broker container, unless the instance sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The name servers of a profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NameServerProfile {
    /// Image the name servers run.
    pub image: String,
    /// Name servers of an instance that does not say (1–5); default 2.
    #[serde(default = "default_replicas")]
    pub replicas: i32,
    /// CPU and memory of each name-server container, unless the instance sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The store volumes of a profile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageProfile {
    /// Size of each broker's volume; default `10Gi`.
    #[serde(default = "default_size")]
    pub size: Quantity,
    /// StorageClass of the volumes; unset: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Commit-log segment size of the brokers (`mq-broker --segment-size`); default
    /// `1Gi`. A broker volume must hold two segments: smaller storage is refused.
    #[serde(default = "default_segment_size")]
    pub segment_size: Quantity,
}

impl Default for StorageProfile {
    fn default() -> Self {
        Self {
            size: default_size(),
            storage_class_name: None,
            segment_size: default_segment_size(),
        }
    }
}

fn default_segment_size() -> Quantity {
    Quantity("1Gi".to_owned())
}

/// Smallest commit-log segment a profile may set (the broker needs room for a 1 KiB
/// message in a quarter of one).
pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;

/// The bytes of a Kubernetes quantity (`10Gi`, `500M`, `1e9`, `1.5Gi`), rounded up;
/// `None` when it is not one or is negative or too large.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    if !is_quantity(q) || q.starts_with('-') {
        return None;
    }
    let q = q.strip_prefix('+').unwrap_or(q);
    let end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(end);
    let value: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exp => 10f64.powi(exp[1..].parse().ok()?),
    };
    let bytes = (value * factor).ceil();
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn default_region() -> String {
    DEFAULT_REGION.to_owned()
}
fn default_replicas() -> i32 {
    2
}
fn default_size() -> Quantity {
    Quantity("10Gi".to_owned())
}

/// Why the profiles cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    /// Not YAML of the expected shape (the message names the place).
    #[error("{PROFILES_KEY}: {0}")]
    Yaml(String),
    /// A profile's value is out of range.
    #[error("{PROFILES_KEY}: profile {profile:?}: {field}: {message}")]
    Invalid {
        /// The profile.
        profile: String,
        /// The field, e.g. `brokers.replicas`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Every profile the platform offers, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profiles(BTreeMap<String, Profile>);

impl Profiles {
    /// Parses and checks the `profiles.yaml` text. An empty document means no profiles.
    pub fn parse(yaml: &str) -> Result<Profiles, ProfileError> {
        let parsed: Option<BTreeMap<String, Profile>> =
            serde_yaml::from_str(yaml).map_err(|e| ProfileError::Yaml(e.to_string()))?;
        let profiles = Profiles(parsed.unwrap_or_default());
        for (name, profile) in &profiles.0 {
            check(name, profile)?;
        }
        Ok(profiles)
    }

    /// The profile `name`.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.0.get(name)
    }

    /// The profile names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// Every profile with its name, sorted by name (the console's cluster list).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Profile)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The names whose profile differs between `self` and `other` (added, removed or
    /// changed): the instances using them must be reconciled.
    pub fn changed_names(&self, other: &Profiles) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .iter()
            .filter(|(name, p)| other.0.get(*name) != Some(*p))
            .map(|(name, _)| name.clone())
            .collect();
        names.extend(
            other
                .0
                .keys()
                .filter(|name| !self.0.contains_key(*name))
                .cloned(),
        );
        names.sort();
        names
    }
}

fn check(name: &str, p: &Profile) -> Result<(), ProfileError> {
    let invalid = |field: &'static str, message: String| ProfileError::Invalid {
        profile: name.to_owned(),
        field,
        message,
    };
    if !is_object_name(name) || name.len() > 64 {
        return Err(invalid(
            "name",
            format!(
                "must match {OBJECT_NAME_PATTERN} and have at most 64 characters (it is what spec.cluster names)"
            ),
        ));
    }
    if p.brokers.image.trim().is_empty() {
        return Err(invalid("brokers.image", "must not be empty".into()));
    }
    if p.name_servers.image.trim().is_empty() {
        return Err(invalid("nameServers.image", "must not be empty".into()));
    }
    if !(1..=32).contains(&p.brokers.replicas) {
        return Err(invalid(
            "brokers.replicas",
            format!("{} is not within 1–32", p.brokers.replicas),
        ));
    }
    if !(1..=5).contains(&p.name_servers.replicas) {
        return Err(invalid(
            "nameServers.replicas",
            format!("{} is not within 1–5", p.name_servers.replicas),
        ));
    }
    if p.external_exposure == Some(Exposure::Cluster) {
        return Err(invalid(
            "externalExposure",
            "must be nodePort or loadBalancer (cluster is no external exposure)".into(),
        ));
    }
    if p.external_host.as_ref().is_some_and(|h| !is_host(h)) {
        return Err(invalid(
            "externalHost",
            "must be a host name or an IP address (no port, no spaces)".into(),
        ));
    }
    if let Some(bad) = p.image_pull_secrets.iter().find(|n| !is_secret_name(n)) {
        return Err(invalid(
            "imagePullSecrets",
            format!(
                "{bad:?} is not a Secret name (lowercase DNS subdomain, at most 253 characters)"
            ),
        ));
    }
    if quantity_bytes(&p.brokers.storage.segment_size.0).is_none_or(|b| b < MIN_SEGMENT_BYTES) {
        return Err(invalid(
            "brokers.storage.segmentSize",
            format!(
                "{:?} is not a Kubernetes quantity of at least 1Mi (e.g. 1Gi)",
                p.brokers.storage.segment_size.0
            ),
        ));
    }
    if !is_quantity(&p.brokers.storage.size.0) {
        return Err(invalid(
            "brokers.storage.size",
            format!(
                "{:?} is not a Kubernetes quantity (e.g. 20Gi)",
                p.brokers.storage.size.0
            ),
        ));
    }
    Ok(())
}

/// Whether `s` can be the host of a `host:port` address: a DNS name or an IPv4 address
/// (what RocketMQ clients accept in `NAMESRV_ADDR`).
fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Whether `s` matches [`OBJECT_NAME_PATTERN`] (a DNS label), without a regex engine.
fn is_object_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    let inner = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => edge(first) && edge(last) && bytes.iter().all(inner),
        _ => false,
    }
}

/// Whether `s` can name a Secret: a DNS subdomain (DNS labels joined by dots, at most
/// 253 characters), as the API server requires.
fn is_secret_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_object_name)
}

/// Whether `s` is a Kubernetes quantity ([`crate::crd::QUANTITY_PATTERN`], the schema's
/// rule for `spec.brokers.storage.size`): a decimal number and an optional binary or
/// decimal suffix or exponent.
fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number_ok = {
        let mut parts = number.splitn(2, '.');
        let whole = parts.next().unwrap_or_default();
        let frac = parts.next();
        !number.is_empty()
            && number.matches('.').count() <= 1
            && whole.bytes().all(|b| b.is_ascii_digit())
            && (!whole.is_empty() || frac.is_some_and(|f| !f.is_empty()))
    };
    let suffix_ok = match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T"
        | "P" | "E" => true,
        exp => exp
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())),
    };
    number_ok && suffix_ok
}

/// Where the instance's pods may run (from the profile).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// Node labels to match.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerated taints.
    pub tolerations: Vec<Toleration>,
    /// Affinity rules.
    pub affinity: Option<Affinity>,
}

/// What an instance runs: its spec, with its profile's values where the spec is silent.
/// The workloads are built from this.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// The profile's name (`spec.cluster`).
    pub cluster: String,
    /// Brokers.
    pub broker_replicas: i32,
    /// Name servers.
    pub name_server_replicas: i32,
    /// Size of each broker volume.
    pub storage_size: Quantity,
    /// StorageClass of the broker volumes (unset: the cluster's default).
    pub storage_class_name: Option<String>,
    /// Commit-log segment size of the brokers, in bytes (the profile's).
    pub segment_size: u64,
    /// Flush mode of the brokers.
    pub flush_mode: FlushMode,
    /// Image of the brokers.
    pub broker_image: String,
    /// Image of the name servers.
    pub name_server_image: String,
    /// Broker container resources.
    pub broker_resources: Option<ResourceRequirements>,
    /// Name-server container resources.
    pub name_server_resources: Option<ResourceRequirements>,
    /// Placement of every pod of the instance.
    pub placement: Placement,
    /// The TLS Secret mounted into every server pod, if the profile turns TLS on.
    pub tls_secret: Option<String>,
    /// The host of node-port addresses clients outside the cluster use (the profile's).
    pub external_host: Option<String>,
    /// Secrets every server pod pulls its image with (the profile's).
    pub image_pull_secrets: Vec<String>,
}

impl Effective {
    /// `spec` over `profile`: spec values win where set; images and placement are the
    /// profile's; resources are the spec's as a whole when it sets them.
    pub fn of(spec: &MQInstanceSpec, profile: &Profile) -> Effective {
        let (brokers, ns) = (&spec.brokers, &spec.name_servers);
        Effective {
            cluster: spec.cluster.clone(),
            broker_replicas: brokers.replicas.unwrap_or(profile.brokers.replicas),
            name_server_replicas: ns.replicas.unwrap_or(profile.name_servers.replicas),
            storage_size: brokers
                .storage
                .size
                .clone()
                .unwrap_or_else(|| profile.brokers.storage.size.clone()),
            storage_class_name: brokers
                .storage
                .storage_class_name
                .clone()
                .or_else(|| profile.brokers.storage.storage_class_name.clone()),
            segment_size: quantity_bytes(&profile.brokers.storage.segment_size.0)
                .unwrap_or(1 << 30),
            flush_mode: brokers.flush_mode.unwrap_or(profile.brokers.flush_mode),
            broker_image: profile.brokers.image.clone(),
            name_server_image: profile.name_servers.image.clone(),
            broker_resources: brokers
                .resources
                .clone()
                .or_else(|| profile.brokers.resources.clone()),
            name_server_resources: ns
                .resources
                .clone()
                .or_else(|| profile.name_servers.resources.clone()),
            placement: Placement {
                node_selector: profile.node_selector.clone(),
                tolerations: profile.tolerations.clone(),
                affinity: profile.affinity.clone(),
            },
            tls_secret: profile.tls.as_ref().map(|t| t.secret_name.clone()),
            external_host: profile.external_host.clone(),
            image_pull_secrets: profile.image_pull_secrets.clone(),
        }
    }

    /// Keeps the storage the brokers were created with (volume claim templates cannot
    /// change): `size` and `class` as in the existing StatefulSet.
    pub fn pin_storage(&mut self, size: Quantity, class: Option<String>) {
        self.storage_size = size;
        self.storage_class_name = class;
    }

    /// Why the broker volumes are too small for the brokers' store, if they are: a
    /// volume must hold two commit-log segments (`StorageTooSmall`).
    pub fn storage_refusal(&self) -> Option<String> {
        let minimum = self.segment_size.saturating_mul(2);
        let size = quantity_bytes(&self.storage_size.0)?;
        (size < minimum).then(|| {
            format!(
                "storage size {} is below the minimum of {} for cluster profile {:?}: a broker volume must hold two commit-log segments of {}; set spec.brokers.storage.size to at least {}",
                self.storage_size.0,
                human_bytes(minimum),
                self.cluster,
                human_bytes(self.segment_size),
                human_bytes(minimum)
            )
        })
    }

    /// The part shown in `status.effective`.
    pub fn status(&self) -> EffectiveSettings {
        EffectiveSettings {
            name_servers: self.name_server_replicas,
            flush_mode: self.flush_mode,
            storage_size: Some(self.storage_size.clone()),
            storage_class_name: self.storage_class_name.clone(),
            broker_image: self.broker_image.clone(),
            name_server_image: self.name_server_image.clone(),
            broker_resources: self.broker_resources.clone(),
            name_server_resources: self.name_server_resources.clone(),
        }
    }
}

/// What the operator knows of the profiles at a moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// The ConfigMap has not been read yet.
    Loading,
    /// The ConfigMap (or its key) does not exist: no profiles.
    Missing,
    /// The profiles in force, and the problem of a later edit that could not be parsed
    /// (the last good profiles stay in force until it is fixed).
    Read(Profiles, Option<String>),
}

/// Why an instance's profile cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// The profiles are still loading (retry shortly).
    Loading,
    /// No such profile; the message says which exist, or what the admin must do.
    Unknown(String),
}

impl Known {
    /// The profile `name`, or why it cannot be had. `configmap` names the ConfigMap
    /// (`<namespace>/<name>`) in messages.
    pub fn resolve(&self, name: &str, configmap: &str) -> Result<&Profile, Unresolved> {
        let profiles = match self {
            Known::Loading => return Err(Unresolved::Loading),
            Known::Missing => {
                return Err(Unresolved::Unknown(format!(
                    "spec.cluster {name:?} is not a cluster profile of this platform: there are no profiles; the platform admin must create ConfigMap {configmap} with key {PROFILES_KEY}"
                )));
            }
            Known::Read(profiles, _) => profiles,
        };
        profiles.get(name).ok_or_else(|| {
            let names = profiles.names();
            let offered = if names.is_empty() {
                format!("there are none; the platform admin must add them to ConfigMap {configmap}")
            } else {
                format!("profiles: {}", names.join(", "))
            };
            let problem = match self {
                Known::Read(_, Some(p)) => format!(" (the latest edit of {configmap} is not in force: {p})"),
                _ => String::new(),
            };
            Unresolved::Unknown(format!(
                "spec.cluster {name:?} is not a cluster profile of this platform; {offered}{problem}"
            ))
        })
    }

    /// `Known` after the ConfigMap's `profiles.yaml` became `text` (`None`: the
    /// ConfigMap or its key is gone). An unparsable edit keeps the profiles in force.
    pub fn after(&self, text: Option<&str>) -> Known {
        let Some(text) = text else {
            return Known::Missing;
        };
        match (Profiles::parse(text), self) {
            (Ok(profiles), _) => Known::Read(profiles, None),
            (Err(e), Known::Read(profiles, _)) => {
                Known::Read(profiles.clone(), Some(e.to_string()))
            }
            (Err(e), _) => Known::Read(Profiles::default(), Some(e.to_string())),
        }
    }

    /// The profiles in force (none while loading or missing).
    pub fn profiles(&self) -> Profiles {
        match self {
            Known::Read(p, _) => p.clone(),
            _ => Profiles::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MQInstanceSpec;

    const GOOD: &str = r#"
default:
  createTime: 1735689600000
  modifyTime: 1735689600000
  brokers:
    image: mqfleet/mq-broker:dev
    storage: {size: 1Gi, storageClassName: standard}
    resources: {requests: {cpu: 100m, memory: 128Mi}}
  nameServers:
    image: mqfleet/mq-namesrv:dev
    replicas: 1
    resources: {requests: {cpu: 50m, memory: 64Mi}}
  nodeSelector: {disk: ssd}
  tolerations: [{key: dedicated, operator: Equal, value: mq, effect: NoSchedule}]
large:
  regionId: cn-test
  brokers: {image: "registry.example/mq-broker:1.2", replicas: 4, flushMode: sync, storage: {size: 200Gi}}
  nameServers: {image: "registry.example/mq-broker:1.2"}
"#;

    fn spec(json: serde_json::Value) -> MQInstanceSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_profile_names_its_external_host_and_exposure_and_refuses_bad_ones() {
        let with = format!("{GOOD}  externalHost: 127.0.0.1\n  externalExposure: loadBalancer\n");
        let p = Profiles::parse(&with).unwrap();
        let large = p.get("large").unwrap();
        assert_eq!(large.external_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(large.external_exposure(), Exposure::LoadBalancer);
        let e = Effective::of(&spec(serde_json::json!({"instanceName": "o"})), large);
        assert_eq!(e.external_host.as_deref(), Some("127.0.0.1"));
        let default = p.get("default").unwrap();
        assert_eq!(default.external_exposure(), Exposure::NodePort);
        assert_eq!(default.external_host, None);
        let bad = format!("{GOOD}  externalHost: \"1.2.3.4:80\"\n");
        let err = Profiles::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("externalHost"), "{err}");
        let bad = format!("{GOOD}  externalExposure: cluster\n");
        let err = Profiles::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("externalExposure"), "{err}");
    }

    #[test]
    fn image_pull_secrets_must_be_secret_names() {
        let with = format!("{GOOD}  imagePullSecrets: [regcred, mirror.example-creds]\n");
        let p = Profiles::parse(&with).unwrap();
        let e = Effective::of(
            &spec(serde_json::json!({"instanceName": "o"})),
            p.get("large").unwrap(),
        );
        assert_eq!(e.image_pull_secrets, ["regcred", "mirror.example-creds"]);
        let none = Profiles::parse(GOOD).unwrap();
        assert!(none.get("large").unwrap().image_pull_secrets.is_empty());
        for bad in ["Reg_Cred", "", "a..b", ".a", "-a"] {
            let yaml = format!("{GOOD}  imagePullSecrets: [ok, {bad:?}]\n");
            let err = Profiles::parse(&yaml).unwrap_err().to_string();
            assert!(
                err.contains("profile \"large\": imagePullSecrets")
                    && err.contains("not a Secret name"),
                "{bad:?}: {err}"
            );
        }
        let long = format!("{GOOD}  imagePullSecrets: [{}]\n", "a".repeat(254));
        assert!(Profiles::parse(&long).is_err(), "254 characters");
    }

    #[test]
    fn profiles_parse_with_documented_defaults() {
        let p = Profiles::parse(GOOD).unwrap();
        assert_eq!(p.names(), ["default", "large"]);
        let d = p.get("default").unwrap();
        assert_eq!(d.region_id, "mq-private");
        assert_eq!(d.create_time, Some(1_735_689_600_000));
        assert_eq!(d.brokers.replicas, 2);
        assert_eq!(d.brokers.flush_mode, FlushMode::Async);
        assert_eq!(d.brokers.storage.size.0, "1Gi");
        assert_eq!(d.name_servers.replicas, 1);
        assert_eq!(d.node_selector["disk"], "ssd");
        assert_eq!(d.tolerations[0].key.as_deref(), Some("dedicated"));
        let l = p.get("large").unwrap();
        assert_eq!(l.region_id, "cn-test");
        assert_eq!(l.brokers.flush_mode, FlushMode::Sync);
        assert!(p.get("nope").is_none());
        assert_eq!(Profiles::parse("").unwrap(), Profiles::default());
    }

    #[test]
    fn bad_profiles_are_refused_with_the_place_named() {
        let err = Profiles::parse("default: [1, 2").unwrap_err().to_string();
        assert!(err.starts_with("profiles.yaml: "), "{err}");
        let unknown = "default:\n  brokers: {image: x, imag: y}\n  nameServers: {image: x}\n";
        let err = Profiles::parse(unknown).unwrap_err().to_string();
        assert!(err.contains("unknown field `imag`"), "{err}");
        assert!(err.contains("default.brokers"), "{err}");
        let missing = "default:\n  brokers: {replicas: 2}\n  nameServers: {image: x}\n";
        let err = Profiles::parse(missing).unwrap_err().to_string();
        assert!(err.contains("missing field `image`"), "{err}");
        let top = "default:\n  brokers: {image: x}\n  nameServers: {image: x}\n  image: evil\n";
        assert!(Profiles::parse(top).is_err());
        let range = "default:\n  brokers: {image: x, replicas: 0}\n  nameServers: {image: x}\n";
        let err = Profiles::parse(range).unwrap_err().to_string();
        assert!(
            err.contains("profile \"default\": brokers.replicas: 0 is not within 1–32"),
            "{err}"
        );
        let size =
            "default:\n  brokers: {image: x, storage: {size: 10 GB}}\n  nameServers: {image: x}\n";
        let err = Profiles::parse(size).unwrap_err().to_string();
        assert!(err.contains("brokers.storage.size"), "{err}");
        let name = "Big_One:\n  brokers: {image: x}\n  nameServers: {image: x}\n";
        let err = Profiles::parse(name).unwrap_err().to_string();
        assert!(err.contains("profile \"Big_One\": name"), "{err}");
    }

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for ok in [
            "10Gi", "1", "0.5", ".5", "500m", "1e3", "1E+3", "2T", "+1Ki",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "10 GB", "Gi", "1.2.3", "1e", "1Gb", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
        // The same answers as the schema's pattern.
        let pattern = regex::Regex::new(crate::crd::QUANTITY_PATTERN).unwrap();
        for s in [
            "10Gi", "0.5", ".5", "1e3", "+1Ki", "", "10 GB", "1.2.3", "1e", "1Gb", ".",
        ] {
            assert_eq!(is_quantity(s), pattern.is_match(s), "{s}");
        }
    }

    #[test]
    fn storage_must_hold_two_segments_of_the_profile() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("256Mi"), Some(256 << 20));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("2G"), Some(2_000_000_000));
        assert_eq!(quantity_bytes("1e3"), Some(1000));
        assert_eq!(quantity_bytes("10 GB"), None);
        assert_eq!(quantity_bytes("-1Gi"), None);
        let p = Profiles::parse(GOOD).unwrap();
        let profile = p.get("default").unwrap();
        assert_eq!(profile.brokers.storage.segment_size.0, "1Gi", "the default");
        let small = Effective::of(
            &spec(serde_json::json!({"instanceName": "o",
            "brokers": {"storage": {"size": "1536Mi"}}})),
            profile,
        );
        assert_eq!(small.segment_size, 1 << 30);
        let refusal = small.storage_refusal().expect("below two segments");
        assert!(refusal.contains("1536Mi"), "{refusal}");
        assert!(refusal.contains("minimum of 2Gi"), "{refusal}");
        let enough = Effective::of(
            &spec(serde_json::json!({"instanceName": "o",
            "brokers": {"storage": {"size": "2Gi"}}})),
            profile,
        );
        assert_eq!(enough.storage_refusal(), None);
        let testbed = Profiles::parse(
            "default:\n  brokers: {image: x, storage: {size: 1Gi, segmentSize: 256Mi}}\n  nameServers: {image: x}\n",
        )
        .unwrap();
        let e = Effective::of(
            &spec(serde_json::json!({"instanceName": "o"})),
            testbed.get("default").unwrap(),
        );
        assert_eq!((e.segment_size, e.storage_refusal()), (256 << 20, None));
        let err = Profiles::parse(
            "default:\n  brokers: {image: x, storage: {segmentSize: 1Ki}}\n  nameServers: {image: x}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("brokers.storage.segmentSize"), "{err}");
    }

    #[test]
    fn the_spec_wins_over_the_profile_where_it_speaks() {
        let p = Profiles::parse(GOOD).unwrap();
        let profile = p.get("default").unwrap();
        let bare = Effective::of(&spec(serde_json::json!({"instanceName": "o"})), profile);
        assert_eq!(bare.cluster, "default");
        assert_eq!(bare.broker_replicas, 2);
        assert_eq!(bare.name_server_replicas, 1);
        assert_eq!(bare.storage_size.0, "1Gi");
        assert_eq!(bare.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(bare.flush_mode, FlushMode::Async);
        assert_eq!(bare.broker_image, "mqfleet/mq-broker:dev");
        assert_eq!(bare.name_server_image, "mqfleet/mq-namesrv:dev");
        let requests = |r: &Option<ResourceRequirements>| {
            r.as_ref().unwrap().requests.as_ref().unwrap()["cpu"]
                .0
                .clone()
        };
        assert_eq!(requests(&bare.broker_resources), "100m");
        assert_eq!(requests(&bare.name_server_resources), "50m");
        assert_eq!(bare.placement.node_selector["disk"], "ssd");

        let own = Effective::of(
            &spec(serde_json::json!({"instanceName": "o",
                "brokers": {"replicas": 3, "flushMode": "sync",
                            "storage": {"size": "5Gi", "storageClassName": "fast"},
                            "resources": {"limits": {"memory": "1Gi"}}},
                "nameServers": {"replicas": 3, "resources": {"requests": {"cpu": "1"}}}})),
            profile,
        );
        assert_eq!(own.broker_replicas, 3);
        assert_eq!(own.name_server_replicas, 3);
        assert_eq!(own.storage_size.0, "5Gi");
        assert_eq!(own.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(own.flush_mode, FlushMode::Sync);
        // The spec's resources replace the profile's as a whole.
        let broker = own.broker_resources.as_ref().unwrap();
        assert!(broker.requests.is_none());
        assert_eq!(broker.limits.as_ref().unwrap()["memory"].0, "1Gi");
        assert_eq!(requests(&own.name_server_resources), "1");
        // Images and placement are never the tenant's.
        assert_eq!(own.broker_image, "mqfleet/mq-broker:dev");
        assert_eq!(own.placement, bare.placement);

        let mut pinned = bare.clone();
        pinned.pin_storage(Quantity("3Gi".into()), None);
        assert_eq!(pinned.status().storage_size, Some(Quantity("3Gi".into())));
        assert_eq!(pinned.status().storage_class_name, None);
    }

    #[test]
    fn unknown_profiles_are_explained() {
        let cm = "mqfleet-system/mqfleet-cluster-profiles";
        assert_eq!(
            Known::Loading.resolve("default", cm),
            Err(Unresolved::Loading)
        );
        let Err(Unresolved::Unknown(missing)) = Known::Missing.resolve("default", cm) else {
            panic!("a missing ConfigMap resolves nothing");
        };
        assert!(missing.contains("spec.cluster \"default\""), "{missing}");
        assert!(missing.contains("create ConfigMap mqfleet-system/mqfleet-cluster-profiles"));
        let known = Known::Loading.after(Some(GOOD));
        assert!(known.resolve("large", cm).is_ok());
        let Err(Unresolved::Unknown(message)) = known.resolve("huge", cm) else {
            panic!("huge is no profile");
        };
        assert!(
            message.ends_with("spec.cluster \"huge\" is not a cluster profile of this platform; profiles: default, large"),
            "{message}"
        );
        // A broken edit keeps the profiles in force and is named.
        let broken = known.after(Some("default: [oops"));
        assert!(broken.resolve("default", cm).is_ok());
        let Err(Unresolved::Unknown(message)) = broken.resolve("huge", cm) else {
            panic!("huge is no profile");
        };
        assert!(message.contains("latest edit"), "{message}");
        assert_eq!(broken.after(None), Known::Missing);
    }

    #[test]
    fn an_edit_names_the_profiles_it_changed() {
        let before = Profiles::parse(GOOD).unwrap();
        let edited = GOOD
            .replace("cpu: 100m", "cpu: 200m")
            .replace("large:", "huge:");
        let after = Profiles::parse(&edited).unwrap();
        assert_eq!(after.changed_names(&before), ["default", "huge", "large"]);
        assert!(after.changed_names(&after).is_empty());
    }
}

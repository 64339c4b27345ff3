//! `MQInstance`: a message queue instance (name servers + brokers + its namespace).

use super::common::{
    ImmutableFields, OBJECT_NAME_PATTERN, Phase, USER_ID_PATTERN, impl_common_status,
};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Instance ids: what clients send as `INSTANCE_ID`, and the `<instanceId>%` prefix of
/// namespaced names (see [`crate::domain::ids`] for the rules and their reasons).
pub const INSTANCE_ID_PATTERN: &str = crate::domain::ids::PATTERN;

/// A RocketMQ instance: its own name servers and brokers, and (with independent naming)
/// its own namespace for topic and group names.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mqfleet.io",
    version = "v1alpha1",
    kind = "MQInstance",
    plural = "mqinstances",
    namespaced,
    status = "MQInstanceStatus",
    shortname = "mqi",
    category = "mqfleet",
    derive = "PartialEq",
    printcolumn = r#"{"name":"InstanceId","type":"string","jsonPath":".status.instanceId","description":"Instance id clients use as INSTANCE_ID"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Ready Brokers","type":"integer","jsonPath":".status.readyBrokers","description":"Brokers serving every topic and group of the instance"}"#,
    printcolumn = r#"{"name":"Brokers","type":"integer","jsonPath":".status.brokers","description":"Desired brokers (the spec's, else the cluster profile's)"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint","description":"NAMESRV_ADDR for clients"}"#,
    printcolumn = r#"{"name":"External","type":"string","jsonPath":".status.externalEndpoint","priority":1,"description":"NAMESRV_ADDR for clients outside the cluster (spec.exposure)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MQInstanceSpec {
    /// Display name of the instance (console `instanceName`), 3–64 characters; unique per region.
    #[schemars(length(min = 3, max = 64))]
    pub instance_name: String,

    /// Instance id clients send as `INSTANCE_ID`. Leave empty to derive a stable one from the
    /// resource's namespace and name (the same after delete and re-create). Immutable;
    /// belongs to one instance cluster-wide (ids differing only in case or `_`/`-` are one
    /// id); ids starting with `MQ_INST_` are reserved for derived ones. At most 44
    /// characters: it names the instance's StatefulSets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 44), pattern(INSTANCE_ID_PATTERN))]
    pub instance_id: Option<String>,

    /// Cluster profile the instance runs on (console `/json/cluster/list`): the platform's
    /// images, placement and defaults for whatever `brokers` and `nameServers` leave unset.
    /// It must be a profile the platform offers (ConfigMap `mqfleet-cluster-profiles` in
    /// the platform namespace). Immutable (the brokers' volumes are made from it).
    #[serde(default = "default_cluster")]
    #[schemars(length(min = 1, max = 64), pattern(OBJECT_NAME_PATTERN))]
    pub cluster: String,

    /// With independent naming the instance has its own namespace: topic and group names
    /// are unique within it and may repeat in other instances. Immutable.
    #[serde(default = "default_true")]
    pub independent_naming: bool,

    /// Require signed requests (RocketMQ ACL: AccessKey/SecretKey) from every client. The
    /// keys are the accounts' (Secrets labelled `mqfleet.io/account`); a tenant may use
    /// every topic and group of its instances, sub-accounts what they own, others what an
    /// `MQEmpower` grants them. Switching it applies without restarting the brokers.
    #[serde(default)]
    pub acl_enabled: bool,

    /// Who can reach the instance: `cluster` (default) only clients inside the cluster;
    /// `nodePort` or `loadBalancer` also clients outside it, through a Service of that
    /// type for the name servers and one per broker (`status.externalEndpoint`).
    /// External exposure requires `aclEnabled: true`. It may change back and forth.
    #[serde(default)]
    pub exposure: Exposure,

    /// Send TPS limit the brokers enforce for the whole instance.
    #[serde(default = "default_tps")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_send_tps: i64,

    /// Receive TPS limit the brokers enforce for the whole instance.
    #[serde(default = "default_tps")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_receive_tps: i64,

    /// Most topics the instance may hold.
    #[serde(default = "default_topic_capacity")]
    #[schemars(range(min = 1, max = 10_000))]
    pub topic_capacity: i32,

    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub remark: Option<String>,

    /// User id of the account that created the instance (set by the console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(USER_ID_PATTERN))]
    pub owner: Option<String>,

    /// The brokers: how many, their storage and flush policy. What is left unset comes
    /// from the cluster profile.
    #[serde(default)]
    pub brokers: BrokerSpec,

    /// The name servers clients and brokers meet at. What is left unset comes from the
    /// cluster profile.
    #[serde(default)]
    pub name_servers: NameServerSpec,
}

/// The brokers of an instance. Unset fields take the cluster profile's values.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// Number of brokers (`broker-<ordinal>`); scaling down drains the leaving brokers
    /// first. Unset: the cluster profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub replicas: Option<i32>,

    /// Persistent volume for each broker's store.
    #[serde(default)]
    pub storage: StorageSpec,

    /// `async` acknowledges once the message is in the page cache (flushed periodically);
    /// `sync` acknowledges only after fsync. Changing it restarts the brokers one at a
    /// time. Unset: the cluster profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_mode: Option<FlushMode>,

    /// CPU and memory for each broker container; when set it replaces the cluster
    /// profile's as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The name servers of an instance. Unset fields take the cluster profile's values.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameServerSpec {
    /// Number of name servers. Unset: the cluster profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub replicas: Option<i32>,

    /// CPU and memory for each name-server container; when set it replaces the cluster
    /// profile's as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Store volume of each broker. Size and class apply when the brokers are created
/// (volume claims cannot change afterwards).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each broker's volume (a Kubernetes quantity, e.g. `20Gi`). At least two
    /// commit-log segments of the cluster profile (`2Gi` with the default `1Gi`
    /// segments): the webhook refuses less, naming the minimum. Unset: the cluster
    /// profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "storage_size_schema")]
    pub size: Option<Quantity>,

    /// StorageClass of the volumes. Unset: the cluster profile's, else the cluster's
    /// default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// Keep the brokers' volumes (and so their messages) when the instance is deleted.
    #[serde(default = "default_true")]
    pub retain_on_delete: bool,
}

/// Who can reach an instance (`spec.exposure`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Exposure {
    /// Clients inside the cluster only.
    #[default]
    Cluster,
    /// Also clients outside, through node ports on the profile's `externalHost`.
    NodePort,
    /// Also clients outside, through load balancers a cloud controller provides.
    LoadBalancer,
}

impl Exposure {
    /// Whether clients outside the cluster can reach the instance.
    pub fn is_external(self) -> bool {
        self != Exposure::Cluster
    }

    /// The Kubernetes Service type of the external Services (`None` for `cluster`).
    pub fn service_type(self) -> Option<&'static str> {
        match self {
            Exposure::Cluster => None,
            Exposure::NodePort => Some("NodePort"),
            Exposure::LoadBalancer => Some("LoadBalancer"),
        }
    }

    /// The spec's spelling (`cluster`, `nodePort`, `loadBalancer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Exposure::Cluster => "cluster",
            Exposure::NodePort => "nodePort",
            Exposure::LoadBalancer => "loadBalancer",
        }
    }
}

/// When a broker acknowledges a send: `async` once the message is in the page cache
/// (flushed periodically), `sync` only after fsync. Unset in an instance: its cluster
/// profile's.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// Acknowledge after the write; flush periodically.
    #[default]
    Async,
    /// Acknowledge only after fsync (group commit).
    Sync,
}

/// What an instance runs: its spec, with the cluster profile's values for what the spec
/// leaves unset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveSettings {
    /// Name servers.
    pub name_servers: i32,
    /// Flush mode of the brokers.
    pub flush_mode: FlushMode,
    /// Size of each broker's volume (fixed when the brokers were created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<Quantity>,
    /// StorageClass of the brokers' volumes (fixed when the brokers were created; unset:
    /// the cluster's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Image of the brokers.
    pub broker_image: String,
    /// Image of the name servers.
    pub name_server_image: String,
    /// CPU and memory of each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker_resources: Option<ResourceRequirements>,
    /// CPU and memory of each name-server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_server_resources: Option<ResourceRequirements>,
}

/// Observed state of an `MQInstance`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MQInstanceStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and other conditions, each with a reason and a message saying what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Short state for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The instance id in effect (given or derived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// What clients put in `NAMESRV_ADDR` (`host:port[;host:port]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The same name servers by the Service's DNS name (`host:port`), for clients inside
    /// the cluster that prefer a name to an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_endpoint: Option<String>,
    /// What clients outside the cluster put in `NAMESRV_ADDR` (`spec.exposure` nodePort:
    /// the profile's external host and the name servers' node port; loadBalancer: the
    /// load balancer's address once a cloud controller gave one). Absent with `cluster`.
    /// Always serialized (`null` when absent), so the operator's merge patch of the
    /// status removes an endpoint that went away.
    #[serde(default)]
    pub external_endpoint: Option<String>,
    /// Brokers that are up and hold every topic and group of the instance.
    #[serde(default)]
    pub ready_brokers: i32,
    /// Brokers the instance runs: `spec.brokers.replicas`, else its cluster profile's.
    #[serde(default)]
    pub brokers: i32,
    /// The rest of what the instance runs (spec over cluster profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectiveSettings>,
    /// Topics of the instance.
    #[serde(default)]
    pub topics: i32,
    /// Consumer groups of the instance.
    #[serde(default)]
    pub groups: i32,
    /// A cut of a damaged commit log the operator is making, as asked by the annotation
    /// `mqfleet.io/recover-truncate` (until that broker is Ready again). Always
    /// serialized (`null` when none), so the merge patch of the status removes it.
    #[serde(default)]
    pub store_recovery: Option<StoreRecovery>,
}

/// A cut of one broker's damaged commit log at the offset its pod reported.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreRecovery {
    /// The broker pod that reported the damage.
    pub pod: String,
    /// Its broker name (`broker-<ordinal>`).
    pub broker: String,
    /// The segment file holding the damage.
    pub segment: String,
    /// Where the log is cut: everything stored from this offset on is dropped.
    pub offset: u64,
}

impl_common_status!(MQInstanceStatus);

impl ImmutableFields for MQInstanceSpec {
    fn immutable_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "spec.instanceId",
                self.instance_id.clone().unwrap_or_default(),
            ),
            (
                "spec.independentNaming",
                self.independent_naming.to_string(),
            ),
            ("spec.cluster", self.cluster.clone()),
        ]
    }
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: None,
            storage_class_name: None,
            retain_on_delete: true,
        }
    }
}

/// Kubernetes' quantity grammar (also checked in cluster profiles), so a size like `10 GB` is refused at admission rather than
/// when the operator creates the PVC.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

fn storage_size_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Size of each broker's volume (a Kubernetes quantity, e.g. `20Gi`). At least two commit-log segments of the cluster profile (`2Gi` with the default `1Gi` segments): the webhook refuses less, naming the minimum.",
        "x-kubernetes-int-or-string": true,
        "pattern": QUANTITY_PATTERN,
    })
}

fn default_cluster() -> String {
    "default".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_tps() -> i64 {
    5000
}
fn default_topic_capacity() -> i32 {
    100
}

/// Derives the instance id of a resource that does not set one, in Aliyun's
/// `MQ_INST_<16 digits>_<8 letters/digits>` style. A pure function of namespace and
/// name, so deleting and re-creating the resource (GitOps, restore) keeps the id and
/// clients keep their namespace.
pub fn derive_instance_id(namespace: &str, name: &str) -> String {
    use sha1::{Digest, Sha1};
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let digest = Sha1::digest(format!("{namespace}/{name}").as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let digits = u64::from_be_bytes(head) % 10_000_000_000_000_000;
    let suffix: String = digest[8..16]
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("MQ_INST_{digits:016}_{suffix}")
}

impl MQInstance {
    /// The instance id in effect: `spec.instanceId`, else the derived one.
    pub fn effective_instance_id(&self) -> String {
        self.spec.instance_id.clone().unwrap_or_else(|| {
            derive_instance_id(
                self.metadata.namespace.as_deref().unwrap_or("default"),
                self.metadata.name.as_deref().unwrap_or_default(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_instance_ids_are_stable_distinct_and_fit_the_namespace_budget() {
        let a = derive_instance_id("team-a", "orders");
        assert_eq!(a, derive_instance_id("team-a", "orders"));
        assert_ne!(a, derive_instance_id("team-b", "orders"));
        assert_ne!(a, derive_instance_id("team-a", "orders2"));
        assert!(a.starts_with("MQ_INST_"), "{a}");
        assert_eq!(a.len(), "MQ_INST_".len() + 16 + 1 + 8);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        // `<instanceId>%<topic>` with the longest topic (64) must fit 127 bytes.
        assert!(a.len() + 1 + 64 <= 127);
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults_and_leaves_the_rest_to_the_profile() {
        let spec: MQInstanceSpec = serde_json::from_str(r#"{"instanceName":"orders"}"#).unwrap();
        assert_eq!(spec.cluster, "default");
        assert!(spec.independent_naming);
        assert_eq!(spec.brokers.replicas, None);
        assert_eq!(spec.brokers.flush_mode, None);
        assert_eq!(spec.brokers.storage.size, None);
        assert!(spec.brokers.storage.retain_on_delete);
        assert_eq!(spec.name_servers.replicas, None);
    }

    #[test]
    fn exposure_defaults_to_cluster_and_the_schema_names_the_three_values() {
        let spec: MQInstanceSpec = serde_json::from_str(r#"{"instanceName":"orders"}"#).unwrap();
        assert_eq!(spec.exposure, Exposure::Cluster);
        let spec: MQInstanceSpec =
            serde_json::from_str(r#"{"instanceName":"orders","exposure":"nodePort"}"#).unwrap();
        assert_eq!(spec.exposure, Exposure::NodePort);
        assert!(
            serde_json::from_str::<MQInstanceSpec>(r#"{"instanceName":"o","exposure":"public"}"#)
                .is_err()
        );
        let crd = serde_json::to_value(<MQInstance as kube::CustomResourceExt>::crd()).unwrap();
        let exposure = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["exposure"];
        assert_eq!(
            exposure["enum"],
            serde_json::json!(["cluster", "nodePort", "loadBalancer"]),
            "{exposure}"
        );
        assert!(
            !spec
                .immutable_fields()
                .iter()
                .any(|(f, _)| *f == "spec.exposure"),
            "exposure may change back and forth"
        );
    }

    #[test]
    fn the_cluster_is_immutable() {
        let spec: MQInstanceSpec = serde_json::from_str(r#"{"instanceName":"orders"}"#).unwrap();
        assert!(
            spec.immutable_fields()
                .contains(&("spec.cluster", "default".to_owned()))
        );
    }

    #[test]
    fn the_schema_has_no_image_and_no_profile_defaults() {
        let crd = serde_json::to_value(<MQInstance as kube::CustomResourceExt>::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert!(spec["properties"].get("image").is_none(), "{spec}");
        let brokers = &spec["properties"]["brokers"]["properties"];
        assert!(brokers["replicas"].get("default").is_none(), "{brokers}");
        assert!(brokers["flushMode"].get("default").is_none(), "{brokers}");
        assert!(
            brokers["storage"]["properties"]["size"]
                .get("default")
                .is_none()
        );
        let ns = &spec["properties"]["nameServers"]["properties"];
        assert!(ns["replicas"].get("default").is_none(), "{ns}");
    }
}

//! `MQTopic`: a topic of an instance.

use super::common::{
    DeletionPolicy, ImmutableFields, OBJECT_NAME_PATTERN, OrderType, Perm, Phase, TOPIC_PATTERN,
    USER_ID_PATTERN, impl_common_status,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A topic on every broker of its instance, with its route registered at the name servers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mqfleet.io",
    version = "v1alpha1",
    kind = "MQTopic",
    plural = "mqtopics",
    namespaced,
    status = "MQTopicStatus",
    shortname = "mqt",
    category = "mqfleet",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.instance"}"#,
    printcolumn = r#"{"name":"Topic","type":"string","jsonPath":".spec.topic"}"#,
    printcolumn = r#"{"name":"Type","type":"integer","jsonPath":".spec.orderType","description":"0 normal, 1 partition order, 2 global order, 4 transaction, 5 delay"}"#,
    printcolumn = r#"{"name":"Perm","type":"integer","jsonPath":".spec.perm","priority":1,"description":"6 read+write, 4 read-only, 2 write-only"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MQTopicSpec {
    /// Name of the `MQInstance` (same namespace) the topic belongs to. Immutable.
    #[schemars(length(min = 1, max = 63), pattern(OBJECT_NAME_PATTERN))]
    pub instance: String,

    /// Topic name as clients use it: 3–64 letters, digits, `-` or `_`, not starting with
    /// `CID` or `GID`. Unique in the instance's namespace. Immutable.
    #[schemars(length(min = 3, max = 64), pattern(TOPIC_PATTERN))]
    pub topic: String,

    /// Message type. Immutable.
    pub order_type: OrderType,

    /// Read/write permission; 4 stops producers, 2 stops consumers.
    #[serde(default)]
    pub perm: Perm,

    /// Queues per broker (a globally ordered topic always has exactly one queue).
    #[serde(default = "default_queues")]
    #[schemars(range(min = 1, max = 256))]
    pub queues: i32,

    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub remark: Option<String>,

    /// User id of the account that created the topic (set by the console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(USER_ID_PATTERN))]
    pub owner: Option<String>,

    /// `delete` removes the topic from the brokers with the resource; `retain` keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Observed state of an `MQTopic`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MQTopicStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and other conditions, each with a reason and a message saying what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Short state for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Brokers (`broker-<ordinal>`) the topic exists on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<String>,
}

impl_common_status!(MQTopicStatus);

impl ImmutableFields for MQTopicSpec {
    fn immutable_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("spec.instance", self.instance.clone()),
            ("spec.topic", self.topic.clone()),
            ("spec.orderType", self.order_type.code().to_string()),
        ]
    }
}

impl MQTopicSpec {
    /// Queues per broker in effect: a globally ordered topic has one.
    pub fn effective_queues(&self) -> i32 {
        if self.order_type == OrderType::GlobalOrder {
            1
        } else {
            self.queues
        }
    }
}

fn default_queues() -> i32 {
    8
}

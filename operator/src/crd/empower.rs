//! `MQEmpower`: a grant letting another account publish to or subscribe to a topic.

use super::common::{
    ImmutableFields, OBJECT_NAME_PATTERN, Phase, Relation, TOPIC_PATTERN, impl_common_status,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An access grant on a topic, enforced by the instance's brokers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mqfleet.io",
    version = "v1alpha1",
    kind = "MQEmpower",
    plural = "mqempowers",
    namespaced,
    status = "MQEmpowerStatus",
    shortname = "mqe",
    category = "mqfleet",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.instance"}"#,
    printcolumn = r#"{"name":"Topic","type":"string","jsonPath":".spec.topic"}"#,
    printcolumn = r#"{"name":"User","type":"integer","jsonPath":".spec.empowerUser","description":"Grantee user id"}"#,
    printcolumn = r#"{"name":"Relation","type":"integer","jsonPath":".spec.relation","description":"2 publish, 4 subscribe, 6 both"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MQEmpowerSpec {
    /// Name of the `MQInstance` (same namespace) the topic belongs to. Immutable.
    #[schemars(length(min = 1, max = 63), pattern(OBJECT_NAME_PATTERN))]
    pub instance: String,

    /// The topic being shared (as clients name it). Immutable.
    #[schemars(length(min = 3, max = 64), pattern(TOPIC_PATTERN))]
    pub topic: String,

    /// User id of the grantee: a tenant account, or a sub-account when `subAccount` is true.
    /// Immutable.
    #[schemars(range(min = 1))]
    pub empower_user: i64,

    /// What the grantee may do.
    pub relation: Relation,

    /// The grantee is a sub-account (console `empower/createBySub`). Immutable.
    #[serde(default)]
    pub sub_account: bool,
}

/// Observed state of an `MQEmpower`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MQEmpowerStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and other conditions, each with a reason and a message saying what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Short state for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Since when the brokers enforce this grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_since: Option<Time>,
}

impl_common_status!(MQEmpowerStatus);

impl ImmutableFields for MQEmpowerSpec {
    fn immutable_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("spec.instance", self.instance.clone()),
            ("spec.topic", self.topic.clone()),
            ("spec.empowerUser", self.empower_user.to_string()),
            ("spec.subAccount", self.sub_account.to_string()),
        ]
    }
}

//! `MQGroup`: a consumer (or producer) group id of an instance.

use super::common::{
    DeletionPolicy, GROUP_ID_PATTERN, ImmutableFields, OBJECT_NAME_PATTERN, Phase, USER_ID_PATTERN,
    impl_common_status,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A group: its subscription config on every broker of the instance, plus retry/DLQ topics.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "mqfleet.io",
    version = "v1alpha1",
    kind = "MQGroup",
    plural = "mqgroups",
    namespaced,
    status = "MQGroupStatus",
    shortname = "mqg",
    category = "mqfleet",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.instance"}"#,
    printcolumn = r#"{"name":"GroupId","type":"string","jsonPath":".spec.groupId"}"#,
    printcolumn = r#"{"name":"ReadEnable","type":"boolean","jsonPath":".spec.readEnable"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MQGroupSpec {
    /// Name of the `MQInstance` (same namespace) the group belongs to. Immutable.
    #[schemars(length(min = 1, max = 63), pattern(OBJECT_NAME_PATTERN))]
    pub instance: String,

    /// Group id as clients use it (`GROUP_ID`): 5–64 characters including the `GID_` or
    /// `GID-` prefix (legacy `CID`/`PID` ids stay valid); letters, digits, `-`, `_`.
    /// Cannot be renamed (immutable).
    #[schemars(length(min = 5, max = 64), pattern(GROUP_ID_PATTERN))]
    pub group_id: String,

    /// `false` stops delivery to this group.
    #[serde(default = "default_true")]
    pub read_enable: bool,

    /// Failed deliveries before a message goes to the group's dead-letter queue
    /// (clients that send their own value win).
    #[serde(default = "default_max_reconsume_times")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_reconsume_times: i32,

    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub remark: Option<String>,

    /// User id of the account that created the group (set by the console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(USER_ID_PATTERN))]
    pub owner: Option<String>,

    /// `delete` removes the group from the brokers with the resource; `retain` keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Observed state of an `MQGroup`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MQGroupStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and other conditions, each with a reason and a message saying what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Short state for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The group's retry topic on the brokers (`%RETRY%<group>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_topic: Option<String>,
    /// The group's dead-letter topic on the brokers (`%DLQ%<group>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_topic: Option<String>,
    /// Brokers (`broker-<ordinal>`) the group is configured on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<String>,
}

impl_common_status!(MQGroupStatus);

impl ImmutableFields for MQGroupSpec {
    fn immutable_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("spec.instance", self.instance.clone()),
            ("spec.groupId", self.group_id.clone()),
        ]
    }
}

fn default_true() -> bool {
    true
}
fn default_max_reconsume_times() -> i32 {
    16
}

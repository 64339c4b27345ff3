//! Pieces every mqfleet resource shares: status conditions, phases, small enums
//! and the OpenAPI fragments that let the API server itself reject bad input.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// API group of every mqfleet resource.
pub const GROUP: &str = "mqfleet.io";
/// API version of every mqfleet resource.
pub const VERSION: &str = "v1alpha1";

/// Annotation that lets an instance be deleted while it still has topics or groups.
pub const FORCE_DELETE_ANNOTATION: &str = "mqfleet.io/force-delete";
/// Annotation that stops the operator from reconciling an object.
pub const PAUSE_ANNOTATION: &str = "mqfleet.io/pause-reconciliation";

/// Condition type that says whether a resource is fully in effect.
pub const READY: &str = "Ready";

/// Pattern of a Kubernetes object name (DNS-1123 label) used to refer to an `MQInstance`.
pub const OBJECT_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Topic names: letters, digits, `-` and `_`, not starting with `CID` or `GID`
/// (reserved for groups). RE2 has no look-ahead, so the prefix rule is spelled out:
/// a first letter other than C/G; or C/G followed by nothing or a non-`I`; or
/// `CI`/`GI` followed by nothing or a non-`D`.
pub const TOPIC_PATTERN: &str = r"^([ABD-FH-Za-z0-9_-][A-Za-z0-9_-]*|[CG]([A-HJ-Za-z0-9_-][A-Za-z0-9_-]*|I([A-CE-Za-z0-9_-][A-Za-z0-9_-]*)?)?)$";

/// Group ids start with `GID_`/`GID-`; legacy `CID`/`PID` ids that already exist stay valid.
pub const GROUP_ID_PATTERN: &str = r"^(GID|CID|PID)[_-][A-Za-z0-9_-]*$";

/// Account user ids are decimal numbers.
pub const USER_ID_PATTERN: &str = r"^[0-9]{1,20}$";

/// What happens to the broker-side object when its resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeletionPolicy {
    /// Remove the topic or group from every broker (the default).
    #[default]
    Delete,
    /// Keep it on the brokers; only the resource goes away.
    Retain,
}

/// The short state shown in `kubectl get`; conditions carry the detail.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, not yet in effect.
    #[default]
    Creating,
    /// In effect everywhere it should be.
    Running,
    /// In effect, but some part is not (e.g. a broker is down).
    Degraded,
    /// Not in effect; the Ready condition says why and what to do.
    Failed,
    /// Being removed.
    Deleting,
}

/// Generates the `enum` schema of an integer code, so the API server rejects other values.
fn integer_enum_schema(values: &[i64], description: &str) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int32",
        "enum": values,
        "description": description,
    })
}

/// Declares an integer-coded enum as the console API spells it (`orderType`, `perm`,
/// `relation`): serialized as the bare number, schema'd as an integer `enum`.
macro_rules! integer_code {
    ($(#[$doc:meta])* $name:ident, $description:literal, { $($(#[$vdoc:meta])* $variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[serde(try_from = "i64", into = "i64")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The number the console API and RocketMQ use for this value.
            pub fn code(self) -> i64 {
                match self { $(Self::$variant => $code),+ }
            }
        }

        impl From<$name> for i64 {
            fn from(value: $name) -> i64 {
                value.code()
            }
        }

        impl TryFrom<i64> for $name {
            type Error = String;
            fn try_from(code: i64) -> Result<Self, String> {
                match code {
                    $($code => Ok(Self::$variant),)+
                    other => Err(format!(
                        "{} must be one of {:?}, got {other}",
                        stringify!($name),
                        [$($code),+]
                    )),
                }
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                integer_enum_schema(&[$($code),+], $description)
            }
        }
    };
}

integer_code!(
    /// Message type of a topic (console `orderType`).
    OrderType,
    "Message type: 0 normal, 1 partitionally ordered, 2 globally ordered, 4 transactional, 5 scheduled/delayed. Immutable.",
    {
        /// Normal messages.
        Normal = 0,
        /// FIFO per queue (sharding key).
        PartitionOrder = 1,
        /// FIFO for the whole topic (one queue).
        GlobalOrder = 2,
        /// Transactional (half) messages.
        Transaction = 4,
        /// Scheduled and delayed messages.
        Delay = 5,
    }
);

integer_code!(
    /// RocketMQ permission bits of a topic (read = 4, write = 2).
    #[derive(Default)]
    Perm,
    "Permission: 6 read and write, 4 read-only (writes prohibited), 2 write-only (reads prohibited).",
    {
        /// Reads prohibited.
        WriteOnly = 2,
        /// Writes prohibited.
        ReadOnly = 4,
        /// Read and write.
        #[default]
        ReadWrite = 6,
    }
);

integer_code!(
    /// What a grant allows (console `relation`).
    Relation,
    "Granted right: 2 publish, 4 subscribe, 6 both.",
    {
        /// May publish.
        Publish = 2,
        /// May subscribe.
        Subscribe = 4,
        /// May publish and subscribe.
        PublishSubscribe = 6,
    }
);

/// Status fields every mqfleet resource carries (Strimzi/Kubernetes conventions).
pub trait CommonStatus {
    /// The generation the status describes.
    fn observed_generation(&self) -> Option<i64>;
    /// The conditions, `Ready` among them.
    fn conditions(&self) -> &[Condition];
    /// Mutable conditions, for [`set_condition`].
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// Records the generation the status now describes.
    fn set_observed_generation(&mut self, generation: Option<i64>);
    /// Sets the short phase.
    fn set_phase(&mut self, phase: Phase);
}

/// Implements [`CommonStatus`] for status structs with `observed_generation` and
/// `conditions` fields (every mqfleet status has both).
macro_rules! impl_common_status {
    ($($status:ty),+ $(,)?) => {
        $(impl $crate::crd::CommonStatus for $status {
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
            fn conditions(&self) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
                &mut self.conditions
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
            fn set_phase(&mut self, phase: $crate::crd::Phase) {
                self.phase = Some(phase);
            }
        })+
    };
}
pub(crate) use impl_common_status;

/// Whether a resource is in effect: status describes the current generation and `Ready=True`.
pub fn is_ready(generation: Option<i64>, status: Option<&impl CommonStatus>) -> bool {
    status.is_some_and(|s| {
        s.observed_generation() == generation
            && s.conditions()
                .iter()
                .any(|c| c.type_ == READY && c.status == "True")
    })
}

/// Sets condition `new.type_`, keeping `lastTransitionTime` while its status does not flip,
/// so an unchanged status stays byte-for-byte equal and the operator need not write it.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// Builds a condition stamped with the current time.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

/// A change to a field that cannot change after creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImmutableFieldChange {
    /// JSON path of the field, e.g. `spec.topic`.
    pub field: &'static str,
    /// Value the resource was created with.
    pub accepted: String,
    /// Value now asked for.
    pub requested: String,
}

impl std::fmt::Display for ImmutableFieldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is immutable: it was {:?} and cannot become {:?}; delete and re-create the resource to change it",
            self.field, self.accepted, self.requested
        )
    }
}

/// Specs with fields that may not change once the resource exists.
///
/// Kubernetes 1.20 cannot express this in a CRD schema (no CEL), so the admission
/// webhook and, as a backstop, the operator compare the accepted spec with the new one.
pub trait ImmutableFields {
    /// `(field path, value)` of every immutable field.
    fn immutable_fields(&self) -> Vec<(&'static str, String)>;

    /// Every immutable field whose value differs between `accepted` and `self`.
    fn immutable_changes(&self, accepted: &Self) -> Vec<ImmutableFieldChange> {
        accepted
            .immutable_fields()
            .into_iter()
            .zip(self.immutable_fields())
            .filter(|((_, old), (_, new))| old != new)
            .map(|((field, old), (_, new))| ImmutableFieldChange {
                field,
                accepted: old,
                requested: new,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, value: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(value)
    }

    #[test]
    fn topic_pattern_accepts_names_and_refuses_group_prefixes() {
        for ok in [
            "ORDERS",
            "orders_v2",
            "order-events",
            "C1",
            "CI",
            "CIX",
            "G",
            "GI",
            "GIx",
            "cid_lower",
            "Ci_D",
            "-_-",
            "Gx",
        ] {
            assert!(matches(TOPIC_PATTERN, ok), "{ok} should be a valid topic");
        }
        for bad in [
            "CID_orders",
            "GID_orders",
            "GID",
            "CID",
            "GID-x",
            "has space",
            "dot.topic",
            "per%cent",
            "",
        ] {
            assert!(!matches(TOPIC_PATTERN, bad), "{bad} should be refused");
        }
    }

    #[test]
    fn group_id_pattern_accepts_gid_and_legacy_prefixes_only() {
        for ok in [
            "GID_orders",
            "GID-orders",
            "CID_legacy",
            "PID-legacy",
            "GID_",
        ] {
            assert!(
                matches(GROUP_ID_PATTERN, ok),
                "{ok} should be a valid group id"
            );
        }
        for bad in ["orders", "GIDorders", "gid_orders", "GID_a.b", "XID_a"] {
            assert!(!matches(GROUP_ID_PATTERN, bad), "{bad} should be refused");
        }
    }

    #[test]
    fn integer_codes_round_trip_and_reject_unknown_values() {
        assert_eq!(serde_json::to_string(&OrderType::Transaction).unwrap(), "4");
        assert_eq!(serde_json::from_str::<Perm>("2").unwrap(), Perm::WriteOnly);
        let err = serde_json::from_str::<Relation>("3")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Relation must be one of [2, 4, 6], got 3"),
            "{err}"
        );
    }

    #[test]
    fn set_condition_keeps_transition_time_while_status_is_unchanged() {
        let mut conditions = vec![];
        let first = condition(READY, false, "Creating", "waiting", Some(1));
        set_condition(&mut conditions, first.clone());
        let mut later = condition(READY, false, "InstanceNotReady", "still waiting", Some(2));
        later.last_transition_time = Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap());
        set_condition(&mut conditions, later);
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "InstanceNotReady");
        assert_eq!(
            conditions[0].last_transition_time,
            first.last_transition_time
        );

        let mut flipped = condition(READY, true, "Ready", "ok", Some(2));
        flipped.last_transition_time = Time(k8s_openapi::jiff::Timestamp::from_second(2).unwrap());
        set_condition(&mut conditions, flipped.clone());
        assert_eq!(
            conditions[0].last_transition_time,
            flipped.last_transition_time
        );
    }

    #[test]
    fn ready_means_current_generation_and_ready_true() {
        use crate::crd::MQTopicStatus;
        let mut status = MQTopicStatus {
            observed_generation: Some(2),
            ..Default::default()
        };
        set_condition(
            &mut status.conditions,
            condition(READY, true, "Ready", "ok", Some(2)),
        );
        assert!(is_ready(Some(2), Some(&status)));
        assert!(
            !is_ready(Some(3), Some(&status)),
            "a newer spec is not in effect yet"
        );
        set_condition(
            &mut status.conditions,
            condition(READY, false, "InstanceNotReady", "wait", Some(2)),
        );
        assert!(!is_ready(Some(2), Some(&status)));
        assert!(!is_ready(Some(2), None::<&MQTopicStatus>));
    }

    #[test]
    fn immutable_changes_name_the_field_and_both_values() {
        use crate::crd::MQTopicSpec;
        let spec = |topic: &str, order: OrderType, perm: Perm| MQTopicSpec {
            instance: "orders".into(),
            topic: topic.into(),
            order_type: order,
            perm,
            queues: 8,
            remark: None,
            owner: None,
            deletion_policy: DeletionPolicy::Delete,
        };
        let accepted = spec("ORDERS", OrderType::Normal, Perm::ReadWrite);
        assert!(
            spec("ORDERS", OrderType::Normal, Perm::ReadOnly)
                .immutable_changes(&accepted)
                .is_empty(),
            "perm may change"
        );
        let changes =
            spec("ORDERS2", OrderType::Transaction, Perm::ReadWrite).immutable_changes(&accepted);
        let fields: Vec<&str> = changes.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["spec.topic", "spec.orderType"]);
        assert!(
            changes[0]
                .to_string()
                .contains("\"ORDERS\" and cannot become \"ORDERS2\""),
            "{}",
            changes[0]
        );
    }
}

//! The resource conventions every reconciler follows (DESIGN.md "Resource model"):
//! immutable fields checked against what was applied, the oldest resource winning a
//! broker-side name, and the pause annotation.

use std::collections::BTreeMap;

use kube::{Resource, ResourceExt};

use crate::crd::{ImmutableFieldChange, PAUSE_ANNOTATION};

/// Annotation recording a topic's, group's or grant's immutable fields as first applied,
/// so a changed field is reported (`NotSupported`) where no webhook refused it, and which
/// of an instance's own topics and groups count as applied (readiness, drains). It is
/// tenant metadata, so it never decides anything beyond the tenant's own instance: which
/// broker-side object a deletion may remove is decided from the caches (another live
/// claimant keeps it), and an instance's applied fields live in its ownership record
/// ([`super::ownership`]).
/// Instances from before ownership records carry it too; it is read once, to migrate.
pub const APPLIED_ANNOTATION: &str = "mqfleet.io/applied";

/// Condition type shown while reconciliation is paused.
pub const PAUSED: &str = "ReconciliationPaused";

/// Whether reconciliation of `obj` is paused by annotation.
pub fn paused<K: Resource>(obj: &K) -> bool {
    obj.annotations()
        .get(PAUSE_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// The annotation value recording `fields`.
pub fn applied_value(fields: &[(&'static str, String)]) -> String {
    let map: BTreeMap<&str, &str> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    serde_json::to_string(&map).unwrap_or_default()
}

/// Immutable fields whose requested value differs from the applied one (none when
/// nothing was applied yet, or the annotation is unreadable).
pub fn changes<K: Resource>(
    obj: &K,
    requested: Vec<(&'static str, String)>,
) -> Vec<ImmutableFieldChange> {
    let Some(applied) = obj
        .annotations()
        .get(APPLIED_ANNOTATION)
        .and_then(|a| serde_json::from_str::<BTreeMap<String, String>>(a).ok())
    else {
        return Vec::new();
    };
    crate::domain::immutable::changes_from(&applied, requested)
}

/// Records `identity` (the immutable fields as applied) on `obj` once: the only metadata
/// write the operator makes to a resource.
pub async fn mark_applied<K>(
    ctx: &super::Context,
    obj: &K,
    identity: &[(&'static str, String)],
) -> Result<(), super::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    if owns_broker_object(obj) {
        return Ok(());
    }
    let api: kube::Api<K> =
        kube::Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({"metadata": {"annotations": {APPLIED_ANNOTATION: applied_value(identity)}}});
    api.patch(
        &obj.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    ctx.metrics.wrote();
    Ok(())
}

/// The value `field` had when `obj` was first applied.
pub fn applied_field<K: Resource>(obj: &K, field: &str) -> Option<String> {
    let applied: BTreeMap<String, String> =
        serde_json::from_str(obj.annotations().get(APPLIED_ANNOTATION)?).ok()?;
    applied.get(field).cloned()
}

/// Whether `obj` owns the broker-side object it names.
pub fn owns_broker_object<K: Resource>(obj: &K) -> bool {
    obj.annotations().contains_key(APPLIED_ANNOTATION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MQTopic;
    use serde_json::json;

    fn topic(name: &str, created: &str, annotations: serde_json::Value) -> MQTopic {
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQTopic",
            "metadata": {"name": name, "namespace": "t", "creationTimestamp": created, "annotations": annotations},
            "spec": {"instance": "i", "topic": "ORDERS", "orderType": 0},
        }))
        .unwrap()
    }

    #[test]
    fn changes_compare_with_what_was_applied() {
        use crate::crd::ImmutableFields;
        let fresh = topic("a", "2026-01-01T00:00:00Z", json!({}));
        assert!(changes(&fresh, fresh.spec.immutable_fields()).is_empty());
        let applied = applied_value(&fresh.spec.immutable_fields());
        let mut renamed = topic(
            "a",
            "2026-01-01T00:00:00Z",
            json!({APPLIED_ANNOTATION: applied}),
        );
        assert!(owns_broker_object(&renamed));
        assert!(changes(&renamed, renamed.spec.immutable_fields()).is_empty());
        renamed.spec.topic = "PAYMENTS".into();
        let found = changes(&renamed, renamed.spec.immutable_fields());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "spec.topic");
        assert!(
            found[0]
                .to_string()
                .contains("\"ORDERS\" and cannot become \"PAYMENTS\"")
        );
    }

    #[test]
    fn pause_needs_the_exact_value() {
        assert!(paused(&topic(
            "a",
            "2026-01-01T00:00:00Z",
            json!({PAUSE_ANNOTATION: "true"})
        )));
        assert!(!paused(&topic(
            "a",
            "2026-01-01T00:00:00Z",
            json!({PAUSE_ANNOTATION: "yes"})
        )));
    }
}

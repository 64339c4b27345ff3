//! Writing the objects of the platform namespace: server-side apply that sends nothing
//! while the stored object already holds what is desired (an idle operator writes
//! nothing), never over an object whose owner labels name another resource, and deletion
//! of owned objects only.

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::workloads::{self, OPERATOR};
use super::{Context, Error, ownership};
use crate::crd::MQInstance;

/// Server-side applies `obj` (the operator owns every field it sets) and returns it.
pub(super) async fn apply_object<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    apply_with(ctx, &api, obj).await
}

/// [`apply_object`] through a given `api` (also for dynamic kinds such as the
/// PodDisruptionBudget, whose version depends on the server).
pub(super) async fn apply_with<K>(ctx: &Context, api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    // The desired object's hash rides along as an annotation: when the stored object
    // carries the same hash nothing is sent, so an idle operator writes nothing.
    let hash = desired_hash(obj);
    let existing = api.get_opt(&name).await?;
    if let Some(existing) = &existing
        && let Some(holder) = foreign_owner(existing.labels(), obj.labels())
    {
        return Err(Error::NotOurs(format!(
            "{name} in the platform namespace belongs to {holder}; not applying over it"
        )));
    }
    if let Some(existing) = existing
        && existing.annotations().get(HASH_ANNOTATION) == Some(&hash)
        // Someone may have edited it (`kubectl scale`): then it is applied again.
        && holds(
            &serde_json::to_value(&existing).unwrap_or_default(),
            &serde_json::to_value(obj).unwrap_or_default(),
        )
    {
        return Ok(existing);
    }
    let mut obj = obj.clone();
    obj.meta_mut()
        .annotations
        .get_or_insert_default()
        .insert(HASH_ANNOTATION.to_owned(), hash);
    let obj = &obj;
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(OPERATOR).force(),
            &Patch::Apply(obj),
        )
        .await
        .inspect(|_| ctx.metrics.wrote())?)
}

/// The owner (`namespace/name`) the `live` object's labels name, when it is not the one
/// the `desired` object's labels name.
fn foreign_owner(
    live: &std::collections::BTreeMap<String, String>,
    desired: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let owner = |l: &std::collections::BTreeMap<String, String>| {
        Some((
            l.get(workloads::OWNER_NAMESPACE_LABEL)?.clone(),
            l.get(workloads::OWNER_NAME_LABEL)?.clone(),
        ))
    };
    let live = owner(live)?;
    (Some(&live) != owner(desired).as_ref()).then(|| format!("{}/{}", live.0, live.1))
}

/// Annotation holding the hash of what the operator last applied to an object.
pub const HASH_ANNOTATION: &str = "mqfleet.io/desired-hash";

/// A stable hash of the desired object (serde_json keeps field order, maps are sorted).
fn desired_hash<K: Serialize>(obj: &K) -> String {
    workloads::content_hash(&serde_json::to_vec(obj).unwrap_or_default())
}

/// Whether `live` still holds every value `desired` sets (the server adds defaults and
/// status; lists are compared element by element over what `desired` lists). Resource
/// quantities are skipped (the server rewrites them canonically, `1000m` → `1`), and so
/// are empty values (the server drops them).
fn holds(live: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match (live, desired) {
        (_, Value::Null) => true,
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, v)| k == "resources" || empty(v) || l.get(k).is_some_and(|lv| holds(lv, v))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() >= d.len() && l.iter().zip(d).all(|(lv, dv)| holds(lv, dv))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        (l, d) => l == d,
    }
}

/// Deletes `name` if its owner labels name `instance` (the exact version read, so an
/// object re-created meanwhile is not hit).
pub(super) async fn delete_owned<K>(
    api: &Api<K>,
    name: &str,
    instance: &MQInstance,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(());
    };
    if !ownership::owner_labels_match(obj.labels(), instance) {
        tracing::warn!(
            object = name,
            "not deleting an object of the platform namespace that names another owner"
        );
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: obj.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    ignore_missing(api.delete(name, &params).await)
}

pub(super) fn ignore_missing<T>(result: Result<T, kube::Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod drift_tests {
    use super::{foreign_owner, holds};
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn objects_labelled_for_another_owner_are_foreign() {
        let labels = |ns: &str, name: &str| {
            BTreeMap::from([
                ("mqfleet.io/owner-namespace".to_owned(), ns.to_owned()),
                ("mqfleet.io/owner-name".to_owned(), name.to_owned()),
            ])
        };
        assert_eq!(foreign_owner(&labels("a", "x"), &labels("a", "x")), None);
        assert_eq!(
            foreign_owner(&labels("a", "x"), &labels("b", "x")).as_deref(),
            Some("a/x")
        );
        assert_eq!(foreign_owner(&BTreeMap::new(), &labels("b", "x")), None);
    }

    #[test]
    fn server_defaults_are_no_drift_but_edits_of_our_fields_are() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}], "x": null}});
        let live = json!({"spec": {"replicas": 2.0, "ports": [{"port": 80, "protocol": "TCP"}], "revisionHistoryLimit": 10}, "status": {}});
        assert!(holds(&live, &desired));
        let scaled = json!({"spec": {"replicas": 0, "ports": [{"port": 80}]}});
        assert!(!holds(&scaled, &desired));
        let no_ports = json!({"spec": {"replicas": 2, "ports": []}});
        assert!(!holds(&no_ports, &desired));
    }
}

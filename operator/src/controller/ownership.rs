//! Instance ids are owned: an id belongs to exactly one `MQInstance` cluster-wide, recorded
//! in an ownership record in the platform namespace (ConfigMap `mqfleet-id-<base>`) that
//! only the operator writes.
//!
//! - The record is created with POST, so a 409 means the id is taken; ids with one base
//!   (`a_b`, `A-B`) share one record name, so they are one id.
//! - It is keyed by the owner's namespace and name (not its uid), so a GitOps re-create of
//!   the same resource gets its id, and its retained data, back.
//! - It also holds what the operator applied (the instance's immutable fields as they took
//!   effect). Tenants can edit their resources' metadata and, with `*/status` rights,
//!   their status; they cannot write here, so an edited annotation changes nothing.
//! - It outlives the instance while claims of the id are retained, so the next claimant of
//!   a freed id never mounts the old owner's data.
//! - Of two instances asking for one id, the oldest wins; the other is `ResourceConflict`
//!   and nothing of the winner is touched. Who holds an id goes to the operator's log and
//!   an Event in the platform namespace, never to the loser's status.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};

use super::conventions;
use super::workloads::INSTANCE_ID_LABEL;
use super::{Context, Error};
use crate::crd::MQInstance;
use crate::domain::ids;
pub use crate::domain::records::{IdRecord, RECORD_LABEL, owner_labels_match, record_name};

/// The record `instance` holds, from the cache of records.
pub fn held_by(records: &Store<ConfigMap>, instance: &MQInstance) -> Option<IdRecord> {
    let records = records.state();
    crate::domain::records::held(
        records
            .iter()
            .filter_map(|cm| IdRecord::from_config_map(cm)),
        instance,
    )
}

/// The outcome of claiming an id.
#[derive(Debug)]
pub enum Claim {
    /// The instance holds the record.
    Held(IdRecord),
    /// Another instance holds it (or an older one asks for it); the message names no one.
    Taken(String),
    /// The id is not allowed at all.
    Invalid(String),
}

/// The id `instance` should hold, and the fields as applied: its effective id and
/// immutable fields, except for an instance from before ownership records, whose old
/// `mqfleet.io/applied` annotation says what was applied. That annotation is believed only
/// when the workloads of the id it names carry this instance's owner labels, which only
/// the operator writes; fields it lacks are taken from the spec.
async fn wanted(
    ctx: &Context,
    instance: &MQInstance,
    identity: &[(&'static str, String)],
) -> Result<(String, BTreeMap<String, String>), Error> {
    let mut applied: BTreeMap<String, String> = identity
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let annotation: Option<BTreeMap<String, String>> = instance
        .annotations()
        .get(conventions::APPLIED_ANNOTATION)
        .and_then(|a| serde_json::from_str(a).ok());
    if let Some(old) = annotation
        && let Some(old_id) = old
            .get("spec.instanceId")
            .filter(|id| !id.is_empty())
            .cloned()
        && owns_workloads(ctx, instance, &old_id).await?
    {
        applied.extend(old);
        return Ok((old_id, applied));
    }
    Ok((instance.effective_instance_id(), applied))
}

/// Whether the StatefulSets of id `id` exist and are labelled as `instance`'s.
async fn owns_workloads(ctx: &Context, instance: &MQInstance, id: &str) -> Result<bool, Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let names = super::workloads::Names::for_id(id.to_owned());
    let Some(sts) = api.get_opt(&names.broker()).await? else {
        return Ok(false);
    };
    Ok(owner_labels_match(sts.labels(), instance))
}

/// The live instance (other than `instance`) that asks for an id with the same base and
/// is older, if any: it wins the id.
fn older_claimant(ctx: &Context, instance: &MQInstance, id: &str) -> Option<String> {
    let base = ids::base(id);
    let key = |i: &MQInstance| {
        (
            i.metadata.creation_timestamp.as_ref().map(|t| t.0),
            i.namespace(),
            i.name_any(),
        )
    };
    ctx.instances
        .state()
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| !(i.namespace() == instance.namespace() && i.name_any() == instance.name_any()))
        .filter(|i| ids::base(&i.effective_instance_id()) == base)
        .filter(|i| key(i) < key(instance))
        .map(|i| format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any()))
        .next()
}

/// Claims the id of `instance` (or confirms it holds it). Never writes anything of another
/// owner's; a taken id is logged with its holder and reported in a platform Event.
pub async fn claim(
    ctx: &Context,
    instance: &MQInstance,
    identity: &[(&'static str, String)],
) -> Result<Claim, Error> {
    if let Some(record) = held_by(&ctx.records, instance) {
        return Ok(Claim::Held(record));
    }
    let (id, applied) = wanted(ctx, instance, identity).await?;
    let derived = crate::crd::derive_instance_id(
        instance.metadata.namespace.as_deref().unwrap_or("default"),
        &instance.name_any(),
    );
    if let Some(message) = ids::refusal(&id, &derived) {
        return Ok(Claim::Invalid(message));
    }
    if let Some(holder) = older_claimant(ctx, instance, &id) {
        return Ok(taken(ctx, instance, &id, &holder).await);
    }
    let platform = &ctx.settings.namespace;
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), platform);
    let name = record_name(&ids::base(&id));
    let mine = IdRecord {
        instance_id: id.clone(),
        owner_namespace: instance.namespace().unwrap_or_default(),
        owner_name: instance.name_any(),
        owner_uid: instance.uid(),
        applied,
    };
    // Two rounds: a freed record is removed in the first and created in the second.
    for _ in 0..2 {
        match api
            .create(&PostParams::default(), &mine.to_config_map(platform))
            .await
        {
            Ok(_) => {
                ctx.metrics.wrote();
                tracing::info!(instance = %mine.holder(), id = %id, "claimed the instance id");
                return Ok(Claim::Held(mine));
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let Some(existing) = api.get_opt(&name).await? else {
            continue;
        };
        match IdRecord::from_config_map(&existing) {
            // The same resource re-created (GitOps) gets its id and retained data back.
            Some(record) if record.owned_by(instance) => return Ok(Claim::Held(record)),
            Some(record) if !freed(ctx, &record).await? => {
                return Ok(taken(ctx, instance, &id, &record.holder()).await);
            }
            // Freed (its owner is gone and so is its data), or unreadable: start afresh,
            // but only from the version just read.
            _ => {
                let precondition = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: existing.resource_version(),
                        uid: existing.uid(),
                    }),
                    ..DeleteParams::background()
                };
                match api.delete(&name, &precondition).await {
                    Ok(_) => ctx.metrics.wrote(),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(Error::Ownership(format!(
        "the ownership record {name} keeps changing; retrying"
    )))
}

/// Whether `record`'s owner is gone (or its name now belongs to a resource holding
/// another id) and left no retained claims behind.
async fn freed(ctx: &Context, record: &IdRecord) -> Result<bool, Error> {
    let owner: Api<MQInstance> = Api::namespaced(ctx.client.clone(), &record.owner_namespace);
    if let Some(owner) = owner.get_opt(&record.owner_name).await?
        && crate::domain::records::held([record.clone()], &owner).is_some()
    {
        return Ok(false);
    }
    Ok(retained_claims(ctx, &record.instance_id).await? == 0)
}

/// How many store claims of id `id` remain in the platform namespace (claims being
/// deleted do not count: no pod can mount them again, and they go once their pods are
/// gone).
async fn retained_claims(ctx: &Context, id: &str) -> Result<usize, Error> {
    let api: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let selector = format!("{INSTANCE_ID_LABEL}={id}");
    Ok(api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .count())
}

/// Logs who holds `id` and says so in a platform-namespace Event; the claimant learns only
/// that the id is taken.
async fn taken(ctx: &Context, instance: &MQInstance, id: &str, holder: &str) -> Claim {
    let claimant = format!(
        "{}/{}",
        instance.namespace().unwrap_or_default(),
        instance.name_any()
    );
    tracing::warn!(%claimant, %holder, id, "instance id already taken; the claimant gets ResourceConflict");
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some(record_name(&ids::base(id))),
        namespace: Some(ctx.settings.namespace.clone()),
        ..Default::default()
    };
    let key = format!(
        "taken:{}:{}",
        instance.uid().unwrap_or_default(),
        ids::base(id)
    );
    let note = format!("MQInstance {claimant} asked for instance id {id:?}, which {holder} holds");
    ctx.warn_once(key, reference, "InstanceIdTaken", note).await;
    Claim::Taken(format!(
        "instance id {id:?} is already taken by another instance (ids differing only in case or '_'/'-' are the same id); choose another spec.instanceId, or leave it empty to get a derived one"
    ))
}

/// Adds the identity fields the record lacks (fields that became immutable after it was
/// written), so they are compared from now on.
pub async fn complete(
    ctx: &Context,
    record: &IdRecord,
    identity: &[(&'static str, String)],
) -> Result<(), Error> {
    let missing: BTreeMap<String, String> = identity
        .iter()
        .filter(|(k, _)| !record.applied.contains_key(*k))
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut applied = record.applied.clone();
    applied.extend(missing);
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let patch = IdRecord::applied_patch(&applied);
    api.patch(
        &record_name(&ids::base(&record.instance_id)),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    ctx.metrics.wrote();
    Ok(())
}

/// Gives the id up after `instance`'s workloads are gone, unless claims of it are retained
/// (then the record stays, so only the same resource re-created gets that data back).
pub async fn release(ctx: &Context, record: &IdRecord) -> Result<(), Error> {
    if retained_claims(ctx, &record.instance_id).await? > 0 {
        tracing::info!(id = %record.instance_id, owner = %record.holder(), "keeping the id's record: its store claims are retained");
        return Ok(());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    match api
        .delete(
            &record_name(&ids::base(&record.instance_id)),
            &DeleteParams::background(),
        )
        .await
    {
        Ok(_) => {
            ctx.metrics.wrote();
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    mod reconcile {
        use super::super::super::fixtures::{Expect, cache, instance};
        use super::*;
        use std::sync::Arc;

        const STATUS_B: &str =
            "/apis/mqfleet.io/v1alpha1/namespaces/tenant-b/mqinstances/thief/status";

        fn holder_record() -> ConfigMap {
            IdRecord {
                instance_id: "SHARED".into(),
                owner_namespace: "tenant-a".into(),
                owner_name: "orders".into(),
                owner_uid: Some("uid-tenant-a-orders".into()),
                applied: BTreeMap::new(),
            }
            .to_config_map("mqfleet-system")
        }

        /// What a refused claimant writes: an Event in the platform namespace (naming the
        /// holder, for the platform admin), its own status (not naming the holder), and the
        /// Event of its own Ready change. Nothing else: no workload of the id is applied.
        fn refusal_writes(thief: &MQInstance) -> Vec<Expect> {
            let answer = serde_json::to_value(thief).unwrap();
            vec![
                Expect::ok(
                    "POST",
                    "/apis/events.k8s.io/v1/namespaces/mqfleet-system/events",
                    json!({}),
                )
                .with_body("tenant-a/orders"),
                Expect::ok("PATCH", STATUS_B, answer)
                    .with_body("ResourceConflict")
                    .without("tenant-a"),
                Expect::ok(
                    "POST",
                    "/apis/events.k8s.io/v1/namespaces/tenant-b/events",
                    json!({}),
                )
                .with_body("ResourceConflict")
                .without("tenant-a"),
            ]
        }

        #[tokio::test]
        async fn a_younger_instance_asking_for_a_held_id_touches_nothing_of_the_holder() {
            let (ctx, server, mut caches) = Context::test();
            let holder = instance("tenant-a", "orders", "SHARED", "2026-01-01T00:00:00Z");
            // Same base as the holder's id: the same StatefulSets, claims and Secrets.
            let thief = instance("tenant-b", "thief", "shared", "2026-02-01T00:00:00Z");
            cache(&mut caches.instances, holder);
            cache(&mut caches.instances, thief.clone());
            cache(&mut caches.records, holder_record());
            let served = server.run(refusal_writes(&thief));
            let action = super::super::super::instance::reconcile(Arc::new(thief), ctx.clone())
                .await
                .expect("the refusal is a status, not an error");
            assert_eq!(
                action,
                kube::runtime::controller::Action::requeue(ctx.resync)
            );
            served
                .await
                .expect("the API server saw exactly the refusal");
        }

        #[tokio::test]
        async fn a_taken_record_found_by_post_is_not_taken_over_while_its_owner_lives() {
            let (ctx, server, mut caches) = Context::test();
            let thief = instance("tenant-b", "thief", "Shared", "2026-02-01T00:00:00Z");
            // The holder is not in this replica's cache yet: the POST decides.
            cache(&mut caches.instances, thief.clone());
            let holder = instance("tenant-a", "orders", "SHARED", "2026-01-01T00:00:00Z");
            let mut script = vec![
                Expect::error(
                    "POST",
                    "/api/v1/namespaces/mqfleet-system/configmaps",
                    409,
                    "AlreadyExists",
                )
                .with_body("\"ownerName\":\"thief\""),
                Expect::ok(
                    "GET",
                    "/api/v1/namespaces/mqfleet-system/configmaps/mqfleet-id-shared",
                    serde_json::to_value(holder_record()).unwrap(),
                ),
                Expect::ok(
                    "GET",
                    "/apis/mqfleet.io/v1alpha1/namespaces/tenant-a/mqinstances/orders",
                    serde_json::to_value(holder).unwrap(),
                ),
            ];
            script.extend(refusal_writes(&thief));
            let served = server.run(script);
            super::super::super::instance::reconcile(Arc::new(thief), ctx)
                .await
                .expect("the refusal is a status, not an error");
            served
                .await
                .expect("the API server saw exactly the claim and the refusal");
        }

        #[tokio::test]
        async fn an_instance_from_before_records_keeps_the_id_its_workloads_carry() {
            let (ctx, server, mut caches) = Context::test();
            // Applied as OLD_ID (the old annotation), spec since changed to NEW_ID.
            let mut old = instance("tenant-a", "orders", "NEW_ID", "2026-01-01T00:00:00Z");
            old.metadata.annotations.get_or_insert_default().insert(
                conventions::APPLIED_ANNOTATION.into(),
                r#"{"spec.instanceId":"OLD_ID","spec.independentNaming":"true"}"#.into(),
            );
            cache(&mut caches.instances, old.clone());
            let owned_sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "old-id-broker", "namespace": "mqfleet-system",
                    "labels": {"mqfleet.io/owner-namespace": "tenant-a", "mqfleet.io/owner-name": "orders"}}});
            let served = server.run(vec![
                // The old id is believed only because its workloads name this instance.
                Expect::ok(
                    "GET",
                    "/apis/apps/v1/namespaces/mqfleet-system/statefulsets/old-id-broker",
                    owned_sts,
                ),
                Expect::ok(
                    "POST",
                    "/api/v1/namespaces/mqfleet-system/configmaps",
                    json!({}),
                )
                .with_body("\"instanceId\":\"OLD_ID\""),
                Expect::ok(
                    "PATCH",
                    "/apis/mqfleet.io/v1alpha1/namespaces/tenant-a/mqinstances/orders/status",
                    serde_json::to_value(&old).unwrap(),
                )
                .with_body("NotSupported"),
                Expect::ok(
                    "POST",
                    "/apis/events.k8s.io/v1/namespaces/tenant-a/events",
                    json!({}),
                )
                .with_body("OLD_ID"),
            ]);
            super::super::super::instance::reconcile(Arc::new(old), ctx)
                .await
                .expect("a refused change is a status, not an error");
            served
                .await
                .expect("the API server saw the migration and the refusal only");
        }

        #[tokio::test]
        async fn a_malformed_master_key_leaves_the_instance_untouched_and_says_so() {
            let (ctx, server, _caches) = Context::test();
            let ctx = Arc::new(Context {
                admin_problem: Some(
                    "the Secret mqfleet-system/mq-operator-admin lacks accessKey".into(),
                ),
                ..Arc::try_unwrap(ctx).unwrap_or_else(|_| panic!("one owner"))
            });
            let orders = instance("tenant-a", "orders", "ORDERS", "2026-01-01T00:00:00Z");
            let served = server.run(vec![
                Expect::ok(
                    "PATCH",
                    "/apis/mqfleet.io/v1alpha1/namespaces/tenant-a/mqinstances/orders/status",
                    serde_json::to_value(&orders).unwrap(),
                )
                .with_body("PlatformKeyInvalid"),
                Expect::ok(
                    "POST",
                    "/apis/events.k8s.io/v1/namespaces/tenant-a/events",
                    json!({}),
                )
                .with_body("mq-operator-admin"),
            ]);
            super::super::super::instance::reconcile(Arc::new(orders), ctx)
                .await
                .expect("a platform problem is a status, not an error");
            served
                .await
                .expect("no record, no workload, only the status");
        }

        #[tokio::test]
        async fn deleting_an_instance_that_holds_no_id_deletes_nothing_but_its_finalizer() {
            let (ctx, server, mut caches) = Context::test();
            cache(&mut caches.records, holder_record());
            let mut thief = instance("tenant-b", "thief", "SHARED", "2026-02-01T00:00:00Z");
            thief.metadata.deletion_timestamp = thief.metadata.creation_timestamp.clone();
            thief
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(crate::crd::FORCE_DELETE_ANNOTATION.into(), "true".into());
            let served = server.run(vec![
                Expect::ok(
                    "PATCH",
                    "/apis/mqfleet.io/v1alpha1/namespaces/tenant-b/mqinstances/thief",
                    serde_json::to_value(&thief).unwrap(),
                )
                .with_body("finalizers"),
            ]);
            super::super::super::instance::reconcile(Arc::new(thief), ctx)
                .await
                .expect("cleanup succeeds");
            served.await.expect("only the finalizer was removed");
        }
    }
}

//! What the admission webhook refuses before it is stored (DESIGN.md "Resource model"):
//! a change to an immutable field, a second topic or group claiming a name its instance
//! already gave out, and deleting an instance that still has topics or groups (unless
//! annotated `mqfleet.io/force-delete: "true"`), and an instance naming a cluster profile
//! the platform does not offer, and what breaks a limit of spec §4
//! ([`crate::domain::quotas`]: topic capacity, instance names and counts, one instance
//! without independent naming per owner, names shared across such instances). The
//! operator reports the same cases in status for clusters without the webhook.

use crate::crd::{
    FORCE_DELETE_ANNOTATION, ImmutableFields, MQEmpower, MQGroup, MQInstance, MQTopic,
};
use crate::domain::claims::{Claim, children_of, duplicate_grant, taken_by};
use crate::domain::ids;
use crate::domain::immutable::{changes_between, describe_changes, instance_identity};
use crate::domain::profiles::{Effective, Profile, Unresolved};
use crate::domain::quotas;
use crate::domain::records as ownership;
use crate::watch::profiles::ProfileCache;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// Why a request cannot be decided (it is then let through).
pub type ReviewError = Box<dyn std::error::Error + Send + Sync>;

/// What the checks read: caches of the kinds whose names every create checks (a list
/// per create would cost the square of the number of topics), and the API for the rare
/// instance deletion.
#[derive(Clone)]
pub struct Lookup {
    client: Client,
    /// The platform namespace (where the ownership records of instance ids live).
    platform: String,
    recorder: Recorder,
    topics: Store<MQTopic>,
    groups: Store<MQGroup>,
    empowers: Store<MQEmpower>,
    instances: Store<MQInstance>,
    profiles: ProfileCache,
}

impl Lookup {
    /// Starts the caches (watches of every namespace, and of the profiles ConfigMap
    /// `profiles_configmap` in the platform namespace `platform`).
    pub fn start(client: Client, platform: &str, profiles_configmap: &str) -> Self {
        let (profiles, _) = ProfileCache::start(client.clone(), platform, profiles_configmap);
        let reporter = Reporter {
            controller: "mq-operator-webhook".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            topics: cache(&client),
            groups: cache(&client),
            empowers: cache(&client),
            instances: cache(&client),
            recorder: Recorder::new(client.clone(), reporter),
            platform: platform.to_owned(),
            profiles,
            client,
        }
    }
}

/// A store of every `K` of the cluster, kept current by a watch.
fn cache<K>(client: &Client) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    crate::watch::cache(Api::<K>::all(client.clone()), crate::watch::watch_config())
}

/// The cached objects of namespace `ns` (an error until the first list arrived).
async fn cached<K>(store: &Store<K>, ns: &Option<String>) -> Result<Vec<Arc<K>>, ReviewError>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    tokio::time::timeout(Duration::from_secs(2), store.wait_until_ready())
        .await
        .map_err(|_| "the webhook's cache is still loading")??;
    Ok(store
        .state()
        .into_iter()
        .filter(|k| k.namespace() == *ns)
        .collect())
}

/// The refusal message for `req`, or `None` when it may go ahead.
pub async fn review(
    lookup: &Lookup,
    req: &AdmissionRequest<DynamicObject>,
) -> Result<Option<String>, ReviewError> {
    let kind = req.kind.kind.as_str();
    match (kind, &req.operation) {
        ("MQInstance", Operation::Create) => {
            let instance: MQInstance = new(req)?;
            if let Some(refusal) = exposure_refusal(None, &instance) {
                return Ok(Some(refusal));
            }
            if let Some(refusal) = unknown_cluster(&lookup.profiles, None, &instance).await? {
                return Ok(Some(refusal));
            }
            let peers = cached(&lookup.instances, &instance.namespace()).await?;
            let peers = peers.iter().map(AsRef::as_ref);
            match quotas::instance_refusal(&newcomer(&instance), peers) {
                Some((_, refusal)) => Ok(Some(format!("MQInstance: {refusal}"))),
                None => instance_create(lookup, &instance).await,
            }
        }
        ("MQInstance", Operation::Update) => {
            let (old, new): (MQInstance, MQInstance) = (old(req)?, new(req)?);
            if let Some(refusal) = changed(kind, instance_identity(&old), instance_identity(&new)) {
                return Ok(Some(refusal));
            }
            if let Some(refusal) = exposure_refusal(Some(&old), &new) {
                return Ok(Some(refusal));
            }
            if old.spec.instance_name != new.spec.instance_name {
                let peers = cached(&lookup.instances, &new.namespace()).await?;
                let peers = peers.iter().map(AsRef::as_ref);
                if let Some((_, refusal)) = quotas::instance_name_taken(&new, peers) {
                    return Ok(Some(format!("MQInstance: {refusal}")));
                }
            }
            unknown_cluster(&lookup.profiles, Some(&old), &new).await
        }
        ("MQInstance", Operation::Delete) => {
            let instance: MQInstance = old(req)?;
            // Both caches loaded, so "no children" is not "not listed yet".
            cached(&lookup.topics, &instance.namespace()).await?;
            cached(&lookup.groups, &instance.namespace()).await?;
            instance_delete(&lookup.topics, &lookup.groups, &instance).await
        }
        ("MQTopic", Operation::Create | Operation::Update) => {
            let refusal = child(&lookup.topics, req, |t: &MQTopic| t.spec.immutable_fields());
            match refusal.await? {
                None if matches!(req.operation, Operation::Create) => {
                    topic_limits(lookup, &newcomer(&new(req)?)).await
                }
                other => Ok(other),
            }
        }
        ("MQGroup", Operation::Create | Operation::Update) => {
            let refusal = child(&lookup.groups, req, |g: &MQGroup| g.spec.immutable_fields());
            match refusal.await? {
                None if matches!(req.operation, Operation::Create) => {
                    let group: MQGroup = new(req)?;
                    let instances = cached(&lookup.instances, &group.namespace()).await?;
                    let groups = cached(&lookup.groups, &group.namespace()).await?;
                    Ok(quotas::name_conflict(
                        &newcomer(&group),
                        instances.iter().map(AsRef::as_ref),
                        groups.iter().map(AsRef::as_ref),
                    )
                    .map(|(_, refusal)| format!("MQGroup: {refusal}")))
                }
                other => Ok(other),
            }
        }
        ("MQEmpower", Operation::Create) => {
            let grant: MQEmpower = new(req)?;
            let others = cached(&lookup.empowers, &req.namespace).await?;
            let others = others.iter().map(AsRef::as_ref);
            Ok(duplicate_grant(&grant, others).map(|holder| {
                format!(
                    "spec.empowerUser {} already has a grant on topic {:?} of instance {:?} (MQEmpower/{}); change that grant's relation instead",
                    grant.spec.empower_user,
                    grant.spec.topic,
                    grant.spec.instance,
                    holder.name_any()
                )
            }))
        }
        ("MQEmpower", Operation::Update) => {
            let (old, new): (MQEmpower, MQEmpower) = (old(req)?, new(req)?);
            Ok(changed(
                kind,
                old.spec.immutable_fields(),
                new.spec.immutable_fields(),
            ))
        }
        _ => Ok(None),
    }
}

/// `obj` as the youngest of its kind: a create is checked as coming after everything
/// stored, even one stored within the same second (creation times have seconds only).
fn newcomer<K: Resource + Clone>(obj: &K) -> K {
    let mut obj = obj.clone();
    obj.meta_mut().creation_timestamp = None;
    obj
}

fn typed<K: DeserializeOwned>(obj: Option<&DynamicObject>) -> Result<K, ReviewError> {
    let obj = obj.ok_or("the review carries no object")?;
    Ok(serde_json::from_value(serde_json::to_value(obj)?)?)
}

fn old<K: DeserializeOwned>(req: &AdmissionRequest<DynamicObject>) -> Result<K, ReviewError> {
    typed(req.old_object.as_ref())
}

fn new<K: DeserializeOwned>(req: &AdmissionRequest<DynamicObject>) -> Result<K, ReviewError> {
    typed(req.object.as_ref())
}

/// The refusal for immutable fields that differ between `old` and `new`.
fn changed(
    kind: &str,
    old: Vec<(&'static str, String)>,
    new: Vec<(&'static str, String)>,
) -> Option<String> {
    let changes = changes_between(old, new);
    (!changes.is_empty()).then(|| format!("{kind}: {}", describe_changes(&changes)))
}

/// A topic or group: immutable fields on update, and its name not taken in its instance.
async fn child<K>(
    store: &Store<K>,
    req: &AdmissionRequest<DynamicObject>,
    fields: impl Fn(&K) -> Vec<(&'static str, String)>,
) -> Result<Option<String>, ReviewError>
where
    K: Claim + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let new: K = new(req)?;
    if matches!(req.operation, Operation::Update) {
        let old: K = old(req)?;
        if let Some(refusal) = changed(K::KIND, fields(&old), fields(&new)) {
            return Ok(Some(refusal));
        }
        // The name cannot have changed, so it is as taken (or not) as it was.
        return Ok(None);
    }
    let others = cached(store, &req.namespace).await?;
    Ok(
        taken_by(&new, others.iter().map(AsRef::as_ref)).map(|holder| {
            format!(
                "{} {:?} is already used in instance {:?} by {}/{}; choose another name",
                K::NAME_FIELD,
                new.broker_name(),
                new.instance(),
                K::KIND,
                holder.name_any()
            )
        }),
    )
}

/// A new topic: within its instance's capacity, and (without independent naming) its name
/// not used by another such instance of the namespace. A topic naming an instance that
/// does not exist (yet) is let through: its status says so.
async fn topic_limits(lookup: &Lookup, topic: &MQTopic) -> Result<Option<String>, ReviewError> {
    let instances = cached(&lookup.instances, &topic.namespace()).await?;
    let topics = cached(&lookup.topics, &topic.namespace()).await?;
    let instances = instances.iter().map(AsRef::as_ref);
    let topics = topics.iter().map(AsRef::as_ref);
    let capacity = instances
        .clone()
        .find(|i| i.name_any() == topic.spec.instance)
        .and_then(|i| quotas::topic_capacity(topic, i, topics.clone()));
    Ok(capacity
        .or_else(|| quotas::name_conflict(topic, instances, topics))
        .map(|(_, refusal)| format!("MQTopic: {refusal}")))
}

/// A new instance: its id must be allowed, and not held by another instance (ids with one
/// base are one id). The refusal does not say who holds it; the operator's log and an
/// Event in the platform namespace do.
async fn instance_create(
    lookup: &Lookup,
    instance: &MQInstance,
) -> Result<Option<String>, ReviewError> {
    let (ns, name) = (
        instance.namespace().unwrap_or_default(),
        instance.name_any(),
    );
    let id = instance.effective_instance_id();
    if let Some(refusal) = ids::refusal(&id, &crate::crd::derive_instance_id(&ns, &name)) {
        return Ok(Some(format!("MQInstance: {refusal}")));
    }
    let base = ids::base(&id);
    let records: Api<ConfigMap> = Api::namespaced(lookup.client.clone(), &lookup.platform);
    let mut holder = records
        .get_opt(&ownership::record_name(&base))
        .await?
        .and_then(|cm| ownership::IdRecord::from_config_map(&cm))
        .filter(|r| !r.owned_by(instance))
        .map(|r| r.holder());
    if holder.is_none() {
        // Claimed but not reconciled yet: the record is not there, the instance is.
        let all: Api<MQInstance> = Api::all(lookup.client.clone());
        holder = all
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .filter(|i| !(i.namespace().as_deref() == Some(ns.as_str()) && i.name_any() == name))
            .find(|i| ids::base(&i.effective_instance_id()) == base)
            .map(|i| format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any()));
    }
    let Some(holder) = holder else {
        return Ok(None);
    };
    tracing::warn!(claimant = %format!("{ns}/{name}"), %holder, id, "refused an instance asking for a taken id");
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: Some(ownership::record_name(&base)),
        namespace: Some(lookup.platform.clone()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "InstanceIdTaken".into(),
        note: Some(format!(
            "refused MQInstance {ns}/{name}: it asked for instance id {id:?}, which {holder} holds"
        )),
        action: "Admission".into(),
        secondary: None,
    };
    if let Err(e) = lookup.recorder.publish(&event, &reference).await {
        tracing::debug!(error = %e, "publishing an event failed");
    }
    Ok(Some(format!(
        "MQInstance: spec.instanceId {id:?} is not available: another instance already holds it (ids differing only in case or '_'/'-' are the same id); choose another, or leave spec.instanceId empty to get a derived one"
    )))
}

/// The refusal of an instance exposed outside the cluster with ACL off. Like the profile
/// check, an update is checked only when it changes the spec of a live instance (removing
/// a finalizer always passes).
fn exposure_refusal(old: Option<&MQInstance>, new: &MQInstance) -> Option<String> {
    if old.is_some_and(|old| old.spec == new.spec) || new.metadata.deletion_timestamp.is_some() {
        return None;
    }
    crate::domain::exposure::acl_refusal(&new.spec).map(|r| format!("MQInstance: {r}"))
}

/// The refusal of an instance naming a cluster profile the platform does not offer. An
/// update is checked only when it changes the spec of an instance not being deleted
/// (metadata updates such as removing the finalizer always pass, even after its profile
/// was withdrawn).
async fn unknown_cluster(
    profiles: &ProfileCache,
    old: Option<&MQInstance>,
    new: &MQInstance,
) -> Result<Option<String>, ReviewError> {
    if old.is_some_and(|old| old.spec == new.spec) || new.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    if !profiles.wait_loaded(Duration::from_secs(2)).await {
        return Err("the webhook's cluster profiles are still loading".into());
    }
    Ok(match profiles.resolve(&new.spec.cluster) {
        Ok(profile) => storage_refusal(old, new, &profile),
        Err(Unresolved::Loading) => return Err("the cluster profiles are still loading".into()),
        Err(Unresolved::Unknown(message)) => Some(format!("MQInstance: {message}")),
    })
}

/// The refusal of an instance whose broker volumes cannot hold two commit-log segments
/// of its profile. An update is checked only when it changes the storage size or the
/// profile (an instance created before its profile's segments grew keeps working).
fn storage_refusal(
    old: Option<&MQInstance>,
    new: &MQInstance,
    profile: &Profile,
) -> Option<String> {
    if old.is_some_and(|old| {
        old.spec.brokers.storage.size == new.spec.brokers.storage.size
            && old.spec.cluster == new.spec.cluster
    }) {
        return None;
    }
    Effective::of(&new.spec, profile)
        .storage_refusal()
        .map(|r| format!("MQInstance: {r}"))
}

async fn instance_delete(
    topics: &Store<MQTopic>,
    groups: &Store<MQGroup>,
    instance: &MQInstance,
) -> Result<Option<String>, ReviewError> {
    let forced = instance
        .annotations()
        .get(FORCE_DELETE_ANNOTATION)
        .is_some_and(|v| v == "true");
    if forced {
        return Ok(None);
    }
    let (topics, groups) = (topics.state(), groups.state());
    let (topics, groups) = children_of(
        topics.iter().map(AsRef::as_ref),
        groups.iter().map(AsRef::as_ref),
        instance,
    );
    let children = [topics, groups].concat();
    Ok((!children.is_empty()).then(|| {
        format!(
            "MQInstance {:?} still has {}: delete them first, or annotate the instance {FORCE_DELETE_ANNOTATION}=\"true\"",
            instance.name_any(),
            children.join(", ")
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topic(name: &str, topic: &str, deleting: bool) -> MQTopic {
        let mut meta = json!({"name": name, "namespace": "t"});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQTopic", "metadata": meta,
            "spec": {"instance": "i", "topic": topic, "orderType": 0},
        }))
        .unwrap()
    }

    #[test]
    fn a_create_is_checked_as_younger_than_a_topic_stored_in_the_same_second() {
        let instance: MQInstance = serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
            "metadata": {"name": "i", "namespace": "t"},
            "spec": {"instanceName": "i", "cluster": "c", "topicCapacity": 1},
        }))
        .unwrap();
        let stamp = json!("2026-01-01T00:00:00Z");
        let mut stored = topic("b", "STORED", false);
        let mut incoming = topic("a", "INCOMING", false);
        stored.metadata.creation_timestamp = serde_json::from_value(stamp.clone()).unwrap();
        incoming.metadata.creation_timestamp = serde_json::from_value(stamp).unwrap();
        // By name alone "a" would be older and take the only place.
        assert!(quotas::topic_capacity(&incoming, &instance, [&stored]).is_none());
        assert!(quotas::topic_capacity(&newcomer(&incoming), &instance, [&stored]).is_some());
    }

    #[test]
    fn exposure_with_acl_off_is_refused_on_create_and_on_a_spec_change_only() {
        let mut exposed: MQInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {"instanceName": "orders", "exposure": "nodePort"},
        }))
        .unwrap();
        let refusal = exposure_refusal(None, &exposed).expect("refused");
        assert!(refusal.contains("aclEnabled: true"), "{refusal}");
        // An instance stored before the rule (no webhook then) may still lose its finalizer.
        assert_eq!(exposure_refusal(Some(&exposed), &exposed), None);
        let mut cluster = exposed.clone();
        cluster.spec.exposure = crate::crd::Exposure::Cluster;
        assert!(exposure_refusal(Some(&cluster), &exposed).is_some());
        exposed.spec.acl_enabled = true;
        assert_eq!(exposure_refusal(Some(&cluster), &exposed), None);
        // Back to cluster is always allowed.
        assert_eq!(exposure_refusal(Some(&exposed), &cluster), None);
    }

    #[test]
    fn storage_below_two_segments_of_the_profile_is_refused_naming_the_minimum() {
        let profiles = crate::domain::profiles::Profiles::parse(
            "default:\n  brokers: {image: x, storage: {size: 1Gi, segmentSize: 256Mi}}\n  nameServers: {image: x}\n",
        )
        .unwrap();
        let profile = profiles.get("default").unwrap();
        let with_size = |size: Option<&str>| -> MQInstance {
            let mut storage = serde_json::json!({});
            if let Some(size) = size {
                storage["size"] = size.into();
            }
            serde_json::from_value(serde_json::json!({
                "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
                "metadata": {"name": "o", "namespace": "shop"},
                "spec": {"instanceName": "o", "cluster": "default", "brokers": {"storage": storage}},
            }))
            .unwrap()
        };
        let refusal = storage_refusal(None, &with_size(Some("300Mi")), profile).expect("refused");
        assert!(refusal.contains("minimum of 512Mi"), "{refusal}");
        assert!(refusal.contains("300Mi"), "{refusal}");
        assert_eq!(
            storage_refusal(None, &with_size(Some("512Mi")), profile),
            None
        );
        assert_eq!(
            storage_refusal(None, &with_size(None), profile),
            None,
            "the profile's 1Gi"
        );
        // An update that leaves size and profile alone passes.
        let old = with_size(Some("300Mi"));
        assert_eq!(
            storage_refusal(Some(&old), &with_size(Some("300Mi")), profile),
            None
        );
        assert!(storage_refusal(Some(&old), &with_size(Some("400Mi")), profile).is_some());
    }

    #[test]
    fn immutable_changes_name_the_field() {
        let (a, b) = (topic("a", "ORDERS", false), topic("a", "RENAMED", false));
        assert!(
            changed(
                "MQTopic",
                a.spec.immutable_fields(),
                a.spec.immutable_fields()
            )
            .is_none()
        );
        let refusal = changed(
            "MQTopic",
            a.spec.immutable_fields(),
            b.spec.immutable_fields(),
        )
        .unwrap();
        assert!(refusal.contains("spec.topic is immutable"), "{refusal}");
        assert!(refusal.contains("\"ORDERS\""), "{refusal}");
    }
}

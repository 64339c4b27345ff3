//! The limits of spec §4 ("Accounts, ownership and namespaces") as pure functions over the
//! caches' objects, so the webhook (refusing a create), the controllers (reporting what got
//! past it in status) and the console decide alike:
//! - an instance holds at most `spec.topicCapacity` topics ([`topic_capacity`]);
//! - an owner account has at most one instance without independent naming
//!   ([`one_shared_namespace`]);
//! - `spec.instanceName` is unique among a namespace's instances ([`instance_name_taken`]);
//! - a namespace (a tenant) has at most [`MAX_INSTANCES_PER_TENANT`] instances
//!   ([`too_many_instances`]);
//! - a topic name or group id is unique across the instances of a namespace that have no
//!   independent naming ([`name_conflict`]).
//!
//! In every rule the oldest (creation time, then name) keeps its place and the younger
//! ones break it, so a rule never takes anything away from what already worked. Objects
//! being deleted do not count. Each function returns the refusal, a message saying what to
//! do; all rules are per namespace, so no message names another tenant's objects.

use kube::{Resource, ResourceExt};

use super::claims::Claim;
use crate::crd::{MQInstance, MQTopic};

/// The most `MQInstance`s one namespace (one tenant) may hold (spec §4: 500 per tenant in
/// a region).
pub const MAX_INSTANCES_PER_TENANT: usize = 500;

/// Condition reason: the topic is beyond its instance's `topicCapacity`.
pub const TOPIC_CAPACITY_EXCEEDED: &str = "TopicCapacityExceeded";
/// Condition reason: an older instance of the namespace has the same `instanceName`.
pub const INSTANCE_NAME_TAKEN: &str = "InstanceNameTaken";
/// Condition reason: the namespace already holds [`MAX_INSTANCES_PER_TENANT`] instances.
pub const TOO_MANY_INSTANCES: &str = "TooManyInstances";
/// Condition reason: the owner already has an instance without independent naming.
pub const NAMESPACE_INSTANCE_LIMIT: &str = "NamespaceInstanceLimit";
/// Condition reason: an older topic or group of another shared-naming instance holds the name.
pub const NAME_CONFLICT: &str = "NameConflict";

/// A refusal: the condition reason and the message.
pub type Refusal = (&'static str, String);

/// Whether `a` was created before `b` (creation time, then name). An object without a
/// creation time (one under admission) is the youngest.
fn older<K: Resource>(a: &K, b: &K) -> bool {
    let key = |k: &K| {
        let created = k.meta().creation_timestamp.as_ref().map(|t| t.0);
        (created.is_none(), created, k.meta().name.clone())
    };
    key(a) < key(b)
}

/// Whether `k` counts: not being deleted.
fn live<K: Resource>(k: &K) -> bool {
    k.meta().deletion_timestamp.is_none()
}

/// The live peers of `obj` (other objects, by name) that are older than it.
fn older_peers<'a, K: Resource + 'a>(
    obj: &K,
    peers: impl IntoIterator<Item = &'a K>,
) -> Vec<&'a K> {
    peers
        .into_iter()
        .filter(|k| live(*k) && k.meta().name != obj.meta().name && older(*k, obj))
        .collect()
}

/// The oldest of `items`.
fn oldest<K: Resource>(items: Vec<&K>) -> Option<&K> {
    items
        .into_iter()
        .reduce(|a, b| if older(b, a) { b } else { a })
}

/// The refusal of `topic` when `instance` already holds `spec.topicCapacity` older topics.
pub fn topic_capacity<'a>(
    topic: &MQTopic,
    instance: &MQInstance,
    topics: impl IntoIterator<Item = &'a MQTopic>,
) -> Option<Refusal> {
    let mine = topics
        .into_iter()
        .filter(|t| t.namespace() == topic.namespace() && t.spec.instance == topic.spec.instance);
    let before = older_peers(topic, mine).len();
    let capacity = usize::try_from(instance.spec.topic_capacity).unwrap_or(0);
    (before >= capacity).then(|| {
        (
            TOPIC_CAPACITY_EXCEEDED,
            format!(
                "MQInstance {:?} holds at most {capacity} topic(s) (spec.topicCapacity) and {before} older topic(s) already use them; delete a topic of the instance or raise its spec.topicCapacity",
                instance.name_any()
            ),
        )
    })
}

/// The refusal of `instance` when an older instance of its namespace has its
/// `spec.instanceName`.
pub fn instance_name_taken<'a>(
    instance: &MQInstance,
    instances: impl IntoIterator<Item = &'a MQInstance>,
) -> Option<Refusal> {
    let same = instances.into_iter().filter(|i| {
        i.namespace() == instance.namespace() && i.spec.instance_name == instance.spec.instance_name
    });
    let holder = oldest(older_peers(instance, same))?;
    Some((
        INSTANCE_NAME_TAKEN,
        format!(
            "spec.instanceName {:?} is already used by MQInstance/{} in this namespace; choose another instanceName",
            instance.spec.instance_name,
            holder.name_any()
        ),
    ))
}

/// The refusal of `instance` when its namespace already holds
/// [`MAX_INSTANCES_PER_TENANT`] older instances.
pub fn too_many_instances<'a>(
    instance: &MQInstance,
    instances: impl IntoIterator<Item = &'a MQInstance>,
) -> Option<Refusal> {
    let ns = instances
        .into_iter()
        .filter(|i| i.namespace() == instance.namespace());
    (older_peers(instance, ns).len() >= MAX_INSTANCES_PER_TENANT).then(|| {
        (
            TOO_MANY_INSTANCES,
            format!(
                "this namespace already holds {MAX_INSTANCES_PER_TENANT} MQInstances, the most one tenant may have; delete an instance first"
            ),
        )
    })
}

/// The owner an instance counts for: `spec.owner`, or "" (the namespace's tenant) when
/// unset.
fn owner(instance: &MQInstance) -> &str {
    instance.spec.owner.as_deref().unwrap_or("")
}

/// The refusal of an instance without independent naming when its owner already has an
/// older one.
pub fn one_shared_namespace<'a>(
    instance: &MQInstance,
    instances: impl IntoIterator<Item = &'a MQInstance>,
) -> Option<Refusal> {
    if instance.spec.independent_naming {
        return None;
    }
    let shared = instances.into_iter().filter(|i| {
        i.namespace() == instance.namespace()
            && !i.spec.independent_naming
            && owner(i) == owner(instance)
    });
    let holder = oldest(older_peers(instance, shared))?;
    let who = match instance.spec.owner.as_deref() {
        Some(user) => format!("account {user}"),
        None => "the namespace's tenant".to_owned(),
    };
    Some((
        NAMESPACE_INSTANCE_LIMIT,
        format!(
            "{who} already has an instance without independent naming (MQInstance/{}), and may have only one; set spec.independentNaming: true, or delete that instance first",
            holder.name_any()
        ),
    ))
}

/// Every instance rule for `instance` (the count first, then the shared namespace, then
/// the name): the first it breaks.
pub fn instance_refusal<'a>(
    instance: &MQInstance,
    instances: impl IntoIterator<Item = &'a MQInstance> + Clone,
) -> Option<Refusal> {
    too_many_instances(instance, instances.clone())
        .or_else(|| one_shared_namespace(instance, instances.clone()))
        .or_else(|| instance_name_taken(instance, instances))
}

/// The instance `name` of namespace `ns` among `instances`.
fn find<'a>(
    instances: impl IntoIterator<Item = &'a MQInstance>,
    ns: &Option<String>,
    name: &str,
) -> Option<&'a MQInstance> {
    instances
        .into_iter()
        .find(|i| i.namespace() == *ns && i.name_any() == name)
}

/// The refusal of a topic or group of an instance without independent naming whose name
/// an older topic or group of another such instance of the namespace already uses.
pub fn name_conflict<'a, K: Claim + 'a>(
    obj: &K,
    instances: impl IntoIterator<Item = &'a MQInstance> + Clone,
    siblings: impl IntoIterator<Item = &'a K>,
) -> Option<Refusal> {
    let ns = obj.namespace();
    let shared =
        |name: &str| find(instances.clone(), &ns, name).is_some_and(|i| !i.spec.independent_naming);
    if !shared(obj.instance()) {
        return None;
    }
    let rivals = siblings.into_iter().filter(|k| {
        k.namespace() == ns
            && k.instance() != obj.instance()
            && k.broker_name() == obj.broker_name()
            && shared(k.instance())
    });
    let holder = oldest(older_peers(obj, rivals))?;
    Some((
        NAME_CONFLICT,
        format!(
            "{} {:?} is already used by instance {:?} ({}/{}) of this namespace; instances without independent naming share their names: choose another name, or use an instance with independent naming",
            K::NAME_FIELD,
            obj.broker_name(),
            holder.instance(),
            K::KIND,
            holder.name_any()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MQGroup;
    use serde_json::{Value, json};

    fn meta(name: &str, ns: &str, created: Option<&str>, deleting: bool) -> Value {
        let mut m = json!({"name": name, "namespace": ns});
        if let Some(c) = created {
            m["creationTimestamp"] = json!(c);
        }
        if deleting {
            m["deletionTimestamp"] = json!("2026-06-01T00:00:00Z");
        }
        m
    }

    fn day(d: u32) -> String {
        format!("2026-01-{d:02}T00:00:00Z")
    }

    fn instance(name: &str, ns: &str, d: u32, spec: Value) -> MQInstance {
        let mut s = json!({"instanceName": name, "cluster": "c"});
        if let (Some(s), Value::Object(extra)) = (s.as_object_mut(), spec) {
            s.extend(extra);
        }
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
            "metadata": meta(name, ns, Some(&day(d)), false), "spec": s,
        }))
        .unwrap()
    }

    fn topic(name: &str, instance: &str, topic: &str, created: Option<&str>) -> MQTopic {
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQTopic",
            "metadata": meta(name, "t", created, false),
            "spec": {"instance": instance, "topic": topic, "orderType": 0},
        }))
        .unwrap()
    }

    fn group(name: &str, instance: &str, id: &str, d: u32) -> MQGroup {
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQGroup",
            "metadata": meta(name, "t", Some(&day(d)), false),
            "spec": {"instance": instance, "groupId": id},
        }))
        .unwrap()
    }

    #[test]
    fn the_oldest_topics_keep_the_capacity_and_the_extras_are_over() {
        let i = instance("i", "t", 1, json!({"topicCapacity": 2}));
        let (d1, d2, d3) = (day(1), day(2), day(3));
        let topics = [
            topic("c", "i", "C", Some(&d3)),
            topic("a", "i", "A", Some(&d1)),
            topic("b", "i", "B", Some(&d2)),
            topic("other", "j", "O", Some(&d1)),
        ];
        assert!(topic_capacity(&topics[1], &i, &topics).is_none());
        assert!(topic_capacity(&topics[2], &i, &topics).is_none());
        let (reason, message) = topic_capacity(&topics[0], &i, &topics).unwrap();
        assert_eq!(reason, TOPIC_CAPACITY_EXCEEDED);
        assert!(message.contains("spec.topicCapacity"), "{message}");
        assert!(message.contains("at most 2"), "{message}");
        // Under admission the new topic has no creation time yet: it is the youngest.
        let new = topic("aaa", "i", "NEW", None);
        assert!(topic_capacity(&new, &i, &topics).is_some());
        // A topic being deleted frees its place.
        let mut deleting = topics.clone();
        deleting[1].metadata.deletion_timestamp = deleting[1].metadata.creation_timestamp.clone();
        assert!(topic_capacity(&deleting[0], &i, &deleting).is_none());
        // Same creation time: the name decides.
        let same = [
            topic("x", "i", "X", Some(&d1)),
            topic("y", "i", "Y", Some(&d1)),
        ];
        let one = instance("i", "t", 1, json!({"topicCapacity": 1}));
        assert!(topic_capacity(&same[0], &one, &same).is_none());
        assert!(topic_capacity(&same[1], &one, &same).is_some());
    }

    #[test]
    fn an_instance_name_is_the_oldest_instances_in_its_namespace() {
        let mut first = instance("first", "t", 1, json!({}));
        let mut second = instance("second", "t", 2, json!({}));
        let elsewhere = instance("third", "u", 1, json!({}));
        for i in [&mut first, &mut second] {
            i.spec.instance_name = "shop".into();
        }
        let mut third = elsewhere.clone();
        third.spec.instance_name = "shop".into();
        let all = [first.clone(), second.clone(), third];
        assert!(instance_name_taken(&first, &all).is_none());
        let (reason, message) = instance_name_taken(&second, &all).unwrap();
        assert_eq!(reason, INSTANCE_NAME_TAKEN);
        assert!(message.contains("MQInstance/first"), "{message}");
        assert!(
            !message.contains("third"),
            "another namespace is never named"
        );
    }

    #[test]
    fn a_namespace_holds_at_most_the_limit_of_instances() {
        let all: Vec<MQInstance> = (0..MAX_INSTANCES_PER_TENANT + 1)
            .map(|n| {
                let mut i = instance(&format!("i{n:04}"), "t", 1, json!({}));
                i.spec.instance_name = format!("name-{n}");
                i
            })
            .collect();
        assert!(too_many_instances(&all[MAX_INSTANCES_PER_TENANT - 1], &all).is_none());
        let (reason, message) = too_many_instances(&all[MAX_INSTANCES_PER_TENANT], &all).unwrap();
        assert_eq!(reason, TOO_MANY_INSTANCES);
        assert!(message.contains("500"), "{message}");
        let mut elsewhere = all[0].clone();
        elsewhere.metadata.namespace = Some("u".into());
        assert!(too_many_instances(&elsewhere, &all).is_none());
    }

    #[test]
    fn an_owner_has_one_instance_without_independent_naming() {
        let shared = json!({"independentNaming": false});
        let first = instance("a", "t", 1, shared.clone());
        let second = instance("b", "t", 2, shared.clone());
        let independent = instance("c", "t", 3, json!({}));
        let other_owner = instance(
            "d",
            "t",
            4,
            json!({"independentNaming": false, "owner": "7"}),
        );
        let all = [
            first.clone(),
            second.clone(),
            independent.clone(),
            other_owner.clone(),
        ];
        assert!(one_shared_namespace(&first, &all).is_none());
        let (reason, message) = one_shared_namespace(&second, &all).unwrap();
        assert_eq!(reason, NAMESPACE_INSTANCE_LIMIT);
        assert!(message.contains("MQInstance/a"), "{message}");
        assert!(one_shared_namespace(&independent, &all).is_none());
        assert!(one_shared_namespace(&other_owner, &all).is_none());
        assert_eq!(
            instance_refusal(&second, &all).map(|r| r.0),
            Some(NAMESPACE_INSTANCE_LIMIT)
        );
        assert!(instance_refusal(&first, &all).is_none());
    }

    #[test]
    fn names_are_shared_across_instances_without_independent_naming() {
        let shared = json!({"independentNaming": false});
        let instances = [
            instance("a", "t", 1, shared.clone()),
            instance(
                "b",
                "t",
                1,
                json!({"independentNaming": false, "owner": "7"}),
            ),
            instance("own", "t", 1, json!({})),
        ];
        let (d1, d2) = (day(1), day(2));
        let topics = [
            topic("ta", "a", "ORDERS", Some(&d1)),
            topic("tb", "b", "ORDERS", Some(&d2)),
            topic("town", "own", "ORDERS", Some(&d1)),
        ];
        assert!(name_conflict(&topics[0], &instances, &topics).is_none());
        let (reason, message) = name_conflict(&topics[1], &instances, &topics).unwrap();
        assert_eq!(reason, NAME_CONFLICT);
        assert!(message.contains("instance \"a\""), "{message}");
        assert!(message.contains("spec.topic"), "{message}");
        assert!(
            name_conflict(&topics[2], &instances, &topics).is_none(),
            "an instance with independent naming has its own names"
        );
        let groups = [group("ga", "a", "GID_X", 2), group("gb", "b", "GID_X", 1)];
        assert!(name_conflict(&groups[1], &instances, &groups).is_none());
        let (_, message) = name_conflict(&groups[0], &instances, &groups).unwrap();
        assert!(message.contains("spec.groupId"), "{message}");
        // A new topic under admission (no creation time) loses to the existing holder.
        let new = topic("tnew", "b", "ORDERS", None);
        assert!(name_conflict(&new, &instances, &topics[..1]).is_some());
    }
}

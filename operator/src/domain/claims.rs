//! Who holds a broker-side name: topics and groups claim a name within their instance, the
//! oldest live claimant keeps it, and a grant is one user's rights on one topic (a second
//! grant to the same user on the same topic is a duplicate). The webhook refuses what the
//! controllers would report as `ResourceConflict`, because both decide here.

use kube::{Resource, ResourceExt};

use crate::crd::{ImmutableFields, MQEmpower, MQGroup, MQInstance, MQTopic};

/// A resource claiming a name on its instance's brokers (a topic or a group).
pub trait Claim: Resource<DynamicType = ()> {
    /// `MQTopic` or `MQGroup`.
    const KIND: &'static str;
    /// The spec field holding its broker-side name.
    const NAME_FIELD: &'static str;
    /// The `MQInstance` it belongs to.
    fn instance(&self) -> &str;
    /// Its name on the brokers (topic name or group id).
    fn broker_name(&self) -> &str;
    /// Its immutable fields.
    fn identity(&self) -> Vec<(&'static str, String)>;
}

impl Claim for MQTopic {
    const KIND: &'static str = "MQTopic";
    const NAME_FIELD: &'static str = "spec.topic";
    fn instance(&self) -> &str {
        &self.spec.instance
    }
    fn broker_name(&self) -> &str {
        &self.spec.topic
    }
    fn identity(&self) -> Vec<(&'static str, String)> {
        self.spec.immutable_fields()
    }
}

impl Claim for MQGroup {
    const KIND: &'static str = "MQGroup";
    const NAME_FIELD: &'static str = "spec.groupId";
    fn instance(&self) -> &str {
        &self.spec.instance
    }
    fn broker_name(&self) -> &str {
        &self.spec.group_id
    }
    fn identity(&self) -> Vec<(&'static str, String)> {
        self.spec.immutable_fields()
    }
}

/// Whether `a` and `b` claim the same broker-side object (same namespace, instance, name).
pub fn same_claim<K: Claim>(a: &K, b: &K) -> bool {
    a.namespace() == b.namespace()
        && a.instance() == b.instance()
        && a.broker_name() == b.broker_name()
}

/// Of the resources claiming one broker-side name, the one that keeps it: the oldest
/// (creation time, then name), ignoring those being deleted.
pub fn winner<'a, K: Resource + 'a>(claimants: impl IntoIterator<Item = &'a K>) -> Option<&'a K> {
    claimants
        .into_iter()
        .filter(|k| k.meta().deletion_timestamp.is_none())
        .min_by(|a, b| {
            let key = |k: &K| {
                (
                    k.meta().creation_timestamp.as_ref().map(|t| t.0),
                    k.meta().name.clone(),
                )
            };
            key(a).cmp(&key(b))
        })
}

/// Whether a live resource other than `obj` is among `claimants` (then deleting `obj`
/// must not remove the broker-side object: the other holds it or takes it over).
pub fn shared_with_another<'a, K: Resource + 'a>(
    obj: &K,
    claimants: impl IntoIterator<Item = &'a K>,
) -> bool {
    claimants
        .into_iter()
        .any(|k| k.meta().deletion_timestamp.is_none() && k.meta().name != obj.meta().name)
}

/// The existing resource (not being deleted, not `obj` itself) holding `obj`'s name.
pub fn taken_by<'a, K: Claim>(obj: &K, others: impl IntoIterator<Item = &'a K>) -> Option<&'a K> {
    others.into_iter().find(|k| {
        k.name_any() != obj.name_any()
            && k.meta().deletion_timestamp.is_none()
            && same_claim(*k, obj)
    })
}

/// Whether two grants give the same user rights on the same topic.
pub fn same_grantee(a: &MQEmpower, b: &MQEmpower) -> bool {
    a.namespace() == b.namespace()
        && a.spec.instance == b.spec.instance
        && a.spec.topic == b.spec.topic
        && a.spec.empower_user == b.spec.empower_user
        && a.spec.sub_account == b.spec.sub_account
}

/// The existing grant (not being deleted, not `grant` itself) to the same user on the
/// same topic.
pub fn duplicate_grant<'a>(
    grant: &MQEmpower,
    others: impl IntoIterator<Item = &'a MQEmpower>,
) -> Option<&'a MQEmpower> {
    others.into_iter().find(|g| {
        g.name_any() != grant.name_any()
            && g.metadata.deletion_timestamp.is_none()
            && same_grantee(g, grant)
    })
}

/// Of `grants` (one instance's), those that stand: of grants to one user on one topic
/// only the oldest counts, so a later duplicate cannot widen the rights.
pub fn standing_grants<'a>(grants: &[&'a MQEmpower]) -> Vec<&'a MQEmpower> {
    grants
        .iter()
        .filter(|g| {
            let rivals = grants.iter().copied().filter(|o| same_grantee(o, g));
            winner(rivals).map(ResourceExt::name_any) == Some(g.name_any())
        })
        .copied()
        .collect()
}

/// The topics and groups of `instance` among `topics` and `groups`, as `MQTopic/<name>`
/// and `MQGroup/<name>`, sorted.
pub fn children_of<'a>(
    topics: impl IntoIterator<Item = &'a MQTopic>,
    groups: impl IntoIterator<Item = &'a MQGroup>,
    instance: &MQInstance,
) -> (Vec<String>, Vec<String>) {
    fn of<'a, K: Claim + 'a>(
        items: impl IntoIterator<Item = &'a K>,
        instance: &MQInstance,
    ) -> Vec<String> {
        let mut names: Vec<String> = items
            .into_iter()
            .filter(|k| {
                k.namespace() == instance.namespace() && k.instance() == instance.name_any()
            })
            .map(|k| format!("{}/{}", K::KIND, k.name_any()))
            .collect();
        names.sort();
        names
    }
    (of(topics, instance), of(groups, instance))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topic(name: &str, topic: &str, created: &str, deleting: bool) -> MQTopic {
        let mut meta = json!({"name": name, "namespace": "t", "creationTimestamp": created});
        if deleting {
            meta["deletionTimestamp"] = json!("2026-03-01T00:00:00Z");
        }
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQTopic", "metadata": meta,
            "spec": {"instance": "i", "topic": topic, "orderType": 0},
        }))
        .unwrap()
    }

    fn grant(name: &str, user: i64, created: &str) -> MQEmpower {
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQEmpower",
            "metadata": {"name": name, "namespace": "t", "creationTimestamp": created},
            "spec": {"instance": "i", "topic": "ORDERS", "empowerUser": user, "relation": 2},
        }))
        .unwrap()
    }

    #[test]
    fn the_oldest_claimant_wins_and_deleting_ones_do_not_count() {
        let old = topic("zeta", "ORDERS", "2026-01-01T00:00:00Z", false);
        let new = topic("alpha", "ORDERS", "2026-02-01T00:00:00Z", false);
        let same_time = topic("beta", "ORDERS", "2026-01-01T00:00:00Z", false);
        assert_eq!(winner([&new, &old]).unwrap().name_any(), "zeta");
        assert_eq!(winner([&old, &same_time]).unwrap().name_any(), "beta");
        let deleting = topic("zeta", "ORDERS", "2026-01-01T00:00:00Z", true);
        assert_eq!(winner([&deleting, &new]).unwrap().name_any(), "alpha");
        assert!(shared_with_another(&deleting, [&deleting, &new]));
        assert!(!shared_with_another(&new, [&new, &deleting]));
    }

    #[test]
    fn a_name_is_taken_by_another_live_resource_of_the_instance() {
        let new = topic("b", "ORDERS", "2026-01-01T00:00:00Z", false);
        let others = [
            topic("b", "ORDERS", "2026-01-01T00:00:00Z", false),
            topic("c", "OTHER", "2026-01-01T00:00:00Z", false),
        ];
        assert!(taken_by(&new, &others).is_none(), "itself or another name");
        let others = [topic("a", "ORDERS", "2026-01-01T00:00:00Z", true)];
        assert!(taken_by(&new, &others).is_none(), "one being deleted");
        let others = [topic("a", "ORDERS", "2026-01-01T00:00:00Z", false)];
        assert_eq!(taken_by(&new, &others).unwrap().name_any(), "a");
    }

    #[test]
    fn only_the_oldest_of_duplicate_grants_stands() {
        let (first, second) = (
            grant("a", 7, "2026-01-01T00:00:00Z"),
            grant("b", 7, "2026-02-01T00:00:00Z"),
        );
        let other_user = grant("c", 8, "2026-02-01T00:00:00Z");
        assert_eq!(
            duplicate_grant(&second, [&first]).map(|g| g.name_any()),
            Some("a".to_owned())
        );
        assert!(duplicate_grant(&other_user, [&first]).is_none());
        assert!(duplicate_grant(&first, [&first]).is_none());
        let standing: Vec<String> = standing_grants(&[&second, &first, &other_user])
            .iter()
            .map(|g| g.name_any())
            .collect();
        assert_eq!(standing, ["a", "c"]);
    }
}

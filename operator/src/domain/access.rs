//! Who may use what: the one rule the brokers' ACL ([`crate::controller::acl`]) and the
//! console apply, so they can never disagree (spec/console-api.md §4).
//!
//! - The tenant account of a namespace owns everything of the instances there: every
//!   topic and group, whoever created it (a resource made with kubectl and no
//!   `spec.owner` belongs to it).
//! - A sub-account works in its parent's namespace and owns the topics and groups it
//!   created (`spec.owner`), plus what a grant with `subAccount: true` gives it.
//! - Any other account has what a standing `MQEmpower` gives it on a topic, and the groups
//!   it created in that instance (a grantee consumes with its own group ids).

use kube::ResourceExt;

use super::accounts::Account;
use crate::crd::{MQEmpower, MQGroup, MQInstance, MQTopic};

/// Console relation code: the caller owns the topic.
pub const OWNER: u8 = 1;
/// Permission bit (and relation code): may publish.
pub const PUBLISH: u8 = 2;
/// Permission bit (and relation code): may subscribe.
pub const SUBSCRIBE: u8 = 4;

/// What an account may do with one topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TopicRights {
    /// It owns the topic (may change, delete and grant it; publishes and subscribes).
    pub owner: bool,
    /// What grants give it: [`PUBLISH`] and/or [`SUBSCRIBE`].
    pub granted: u8,
}

impl TopicRights {
    /// The permission bits the brokers enforce (`PUBLISH | SUBSCRIBE` for an owner).
    pub fn bits(&self) -> u8 {
        if self.owner {
            PUBLISH | SUBSCRIBE
        } else {
            self.granted & (PUBLISH | SUBSCRIBE)
        }
    }

    /// The console's `relation`: 1 owner, else the granted bits; `None` without any right.
    pub fn relation(&self) -> Option<u8> {
        match (self.owner, self.bits()) {
            (true, _) => Some(OWNER),
            (false, 0) => None,
            (false, bits) => Some(bits),
        }
    }

    /// Whether the account may see the topic at all.
    pub fn any(&self) -> bool {
        self.relation().is_some()
    }
}

/// Whether `account` is the tenant (primary) account of namespace `ns`.
pub fn is_tenant_of(account: &Account, ns: &str) -> bool {
    account.namespace == ns && !account.is_sub()
}

/// Whether `account` works in namespace `ns` (its tenant or one of its sub-accounts).
pub fn works_in(account: &Account, ns: &str) -> bool {
    account.namespace == ns
}

/// Whether `owner` (a resource's `spec.owner`) names `account`.
fn owned_by(owner: &Option<String>, account: &Account) -> bool {
    owner.as_deref() == Some(account.user_id.as_str())
}

/// Whether `grant` is for `account` (same user id, and a sub-account grant only for a
/// sub-account: user ids of tenants and sub-accounts are separate spaces in the API).
pub fn grant_applies(grant: &MQEmpower, account: &Account) -> bool {
    grant.spec.empower_user.to_string() == account.user_id
        && grant.spec.sub_account == account.is_sub()
}

/// Whether `account` owns `topic`: the namespace's tenant owns every topic there, a
/// sub-account those it created.
pub fn owns_topic(account: &Account, topic: &MQTopic) -> bool {
    let ns = topic.namespace().unwrap_or_default();
    is_tenant_of(account, &ns) || (works_in(account, &ns) && owned_by(&topic.spec.owner, account))
}

/// What `account` may do with `topic`, given `grants` (the standing grants of the
/// topic's instance, see [`super::claims::standing_grants`]).
pub fn topic_rights(account: &Account, topic: &MQTopic, grants: &[&MQEmpower]) -> TopicRights {
    let granted = grants
        .iter()
        .filter(|g| {
            g.namespace() == topic.namespace()
                && g.spec.instance == topic.spec.instance
                && g.spec.topic == topic.spec.topic
                && grant_applies(g, account)
        })
        .fold(0, |bits, g| bits | relation_bits(g));
    TopicRights {
        owner: owns_topic(account, topic),
        granted,
    }
}

/// The permission bits of a grant's relation.
pub fn relation_bits(grant: &MQEmpower) -> u8 {
    u8::try_from(grant.spec.relation.code()).unwrap_or(0) & (PUBLISH | SUBSCRIBE)
}

/// Whether `account` may use (consume with, see, delete) `group`: the namespace's tenant
/// any group there, anyone else the groups it created.
pub fn uses_group(account: &Account, group: &MQGroup) -> bool {
    let ns = group.namespace().unwrap_or_default();
    is_tenant_of(account, &ns) || owned_by(&group.spec.owner, account)
}

/// Whether `account` may see `instance`: it works in the instance's namespace, or a grant
/// among `grants` (the instance's) is for it.
pub fn sees_instance(account: &Account, instance: &MQInstance, grants: &[&MQEmpower]) -> bool {
    let ns = instance.namespace().unwrap_or_default();
    works_in(account, &ns)
        || grants.iter().any(|g| {
            g.namespace().as_deref() == Some(ns.as_str())
                && g.spec.instance == instance.name_any()
                && grant_applies(g, account)
        })
}

/// Whether `account` may change or delete `instance` (and create one in its namespace).
pub fn writes_instance(account: &Account, ns: &str) -> bool {
    works_in(account, ns) && account.may_write_instances()
}

/// Whether `account` may create topics in the instances of namespace `ns`.
pub fn creates_topics(account: &Account, ns: &str) -> bool {
    works_in(account, ns) && account.may_write_topics()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_broker::acl::Credentials;
    use serde_json::{Value, json};

    fn obj<K: serde::de::DeserializeOwned>(kind: &str, ns: &str, spec: Value) -> K {
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": kind,
            "metadata": {"name": "x", "namespace": ns}, "spec": spec,
        }))
        .unwrap()
    }

    fn account(user: &str, ns: &str, parent: Option<&str>) -> Account {
        Account {
            user_id: user.into(),
            namespace: ns.into(),
            parent_user_id: parent.map(Into::into),
            credentials: Credentials::new(format!("AK{user}"), "SK"),
            allow_instance_write: false,
            allow_topic_write: false,
        }
    }

    #[test]
    fn owners_grantees_and_strangers_get_what_the_rules_say() {
        let topic: MQTopic = obj(
            "MQTopic",
            "shop",
            json!({"instance": "i", "topic": "ORDERS", "orderType": 0, "owner": "11"}),
        );
        let grant = |user: i64, sub: bool, relation: i64| -> MQEmpower {
            obj(
                "MQEmpower",
                "shop",
                json!({"instance": "i", "topic": "ORDERS", "empowerUser": user,
                       "relation": relation, "subAccount": sub}),
            )
        };
        let (to_b, to_sub) = (grant(20, false, 4), grant(12, true, 2));
        let grants = [&to_b, &to_sub];
        let rights = |a: &Account| topic_rights(a, &topic, &grants);
        let tenant = account("10", "shop", None);
        assert_eq!(rights(&tenant).relation(), Some(OWNER));
        assert_eq!(rights(&tenant).bits(), 6);
        assert_eq!(
            rights(&account("11", "shop", Some("10"))).relation(),
            Some(OWNER)
        );
        assert_eq!(
            rights(&account("12", "shop", Some("10"))).relation(),
            Some(2)
        );
        assert_eq!(rights(&account("13", "shop", Some("10"))).relation(), None);
        assert_eq!(rights(&account("20", "other", None)).relation(), Some(4));
        // A sub-account grant does not open the tenant with the same number, nor back.
        assert!(!rights(&account("12", "other", None)).any());
        assert!(!rights(&account("20", "other", Some("19"))).any());
        assert!(!rights(&account("30", "third", None)).any());
    }

    #[test]
    fn groups_belong_to_the_namespace_tenant_and_their_creator() {
        let group: MQGroup = obj(
            "MQGroup",
            "shop",
            json!({"instance": "i", "groupId": "GID_B", "owner": "20"}),
        );
        assert!(uses_group(&account("10", "shop", None), &group));
        assert!(uses_group(&account("20", "other", None), &group));
        assert!(!uses_group(&account("11", "shop", Some("10")), &group));
        assert!(!uses_group(&account("30", "third", None), &group));
    }

    #[test]
    fn instances_are_seen_by_their_namespace_and_grantees_only() {
        let instance: MQInstance = obj("MQInstance", "shop", json!({"instanceName": "orders"}));
        let grant: MQEmpower = obj(
            "MQEmpower",
            "shop",
            json!({"instance": "x", "topic": "ORDERS", "empowerUser": 20, "relation": 2}),
        );
        assert!(sees_instance(
            &account("11", "shop", Some("10")),
            &instance,
            &[]
        ));
        assert!(sees_instance(
            &account("20", "other", None),
            &instance,
            &[&grant]
        ));
        assert!(!sees_instance(
            &account("20", "other", None),
            &instance,
            &[]
        ));
        assert!(!sees_instance(
            &account("30", "third", None),
            &instance,
            &[&grant]
        ));
        let mut sub = account("11", "shop", Some("10"));
        assert!(!writes_instance(&sub, "shop") && !creates_topics(&sub, "shop"));
        sub.allow_topic_write = true;
        assert!(creates_topics(&sub, "shop") && !creates_topics(&sub, "other"));
        assert!(writes_instance(&account("10", "shop", None), "shop"));
    }
}

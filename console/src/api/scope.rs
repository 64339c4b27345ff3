//! What the caller may see, looked up in the caches with the shared access rules
//! (`mq_operator::domain::access`). Anything the caller may not see answers exactly as a
//! missing one (spec §7), so ids and names cannot be probed.

use std::sync::Arc;

use kube::ResourceExt;
use mq_operator::crd::{MQEmpower, MQGroup, MQInstance, MQTopic};
use mq_operator::domain::access::{self, TopicRights};
use mq_operator::domain::accounts::Account;
use mq_operator::domain::{claims, ids};

use crate::accounts::Caller;
use crate::context::Console;
use crate::envelope::{ApiError, ErrorCode};
use crate::params::Params;

/// One request's view of the platform.
pub struct Scope<'a> {
    /// The console.
    pub cx: &'a Console,
    /// Who asks.
    pub caller: &'a Caller,
}

/// The instance id of `instance` (what clients and the API call it).
pub fn instance_id(instance: &MQInstance) -> String {
    instance.effective_instance_id()
}

/// Whether `k` (a topic, group or grant) belongs to `instance` (borrowed: this runs for
/// every cached object on every list request).
fn in_instance(k_ns: Option<&str>, k_instance: &str, instance: &MQInstance) -> bool {
    k_ns == instance.metadata.namespace.as_deref()
        && Some(k_instance) == instance.metadata.name.as_deref()
}

/// Oldest first (creation time, then object name), without copying either.
fn by_age<K: kube::Resource>(a: &Arc<K>, b: &Arc<K>) -> std::cmp::Ordering {
    let created = |k: &K| k.meta().creation_timestamp.as_ref().map(|t| t.0);
    created(a)
        .cmp(&created(b))
        .then_with(|| a.meta().name.cmp(&b.meta().name))
}

impl<'a> Scope<'a> {
    /// A scope for `caller`.
    pub fn new(cx: &'a Console, caller: &'a Caller) -> Self {
        Self { cx, caller }
    }

    /// The caller's account.
    pub fn account(&self) -> &Account {
        &self.caller.account
    }

    /// The standing grants of `instance` (of duplicates only the oldest counts).
    pub fn grants_of(&self, instance: &MQInstance) -> Vec<Arc<MQEmpower>> {
        let all = self.cx.caches.empowers.state_filter(|e| {
            e.metadata.deletion_timestamp.is_none()
                && in_instance(e.metadata.namespace.as_deref(), &e.spec.instance, instance)
        });
        let refs: Vec<&MQEmpower> = all.iter().map(AsRef::as_ref).collect();
        let standing: Vec<String> = claims::standing_grants(&refs)
            .iter()
            .map(|g| g.name_any())
            .collect();
        all.into_iter()
            .filter(|g| standing.contains(&g.name_any()))
            .collect()
    }

    /// Every grant on `topic` of `instance` (duplicates and those being deleted too).
    pub fn grants_on(&self, instance: &MQInstance, topic: &str) -> Vec<Arc<MQEmpower>> {
        self.cx.caches.empowers.state_filter(|e| {
            in_instance(e.metadata.namespace.as_deref(), &e.spec.instance, instance)
                && e.spec.topic == topic
        })
    }

    /// Whether the caller may see `instance`.
    pub fn sees(&self, instance: &MQInstance) -> bool {
        let grants = self.grants_of(instance);
        let refs: Vec<&MQEmpower> = grants.iter().map(AsRef::as_ref).collect();
        access::sees_instance(self.account(), instance, &refs)
    }

    /// The instances the caller may see, oldest first.
    pub fn visible_instances(&self) -> Vec<Arc<MQInstance>> {
        let mut list = self.cx.caches.instances.state_filter(|i| self.sees(i));
        list.sort_by(by_age);
        list
    }

    /// The instance with id `id` that the caller may see.
    pub fn instance_by_id(&self, id: &str) -> Result<Arc<MQInstance>, ApiError> {
        let base = ids::base(id);
        self.cx
            .caches
            .instances
            .find(|i| ids::base(&instance_id(i)) == base && self.sees(i))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InstanceNotFound,
                    format!("instance {id:?} does not exist"),
                )
            })
    }

    /// The instance parameter `field` names; when it is omitted, the caller's one instance
    /// without a namespace (spec §6).
    pub fn instance(&self, p: &Params, field: &str) -> Result<Arc<MQInstance>, ApiError> {
        if let Some(id) = p.opt_str(field) {
            return self.instance_by_id(id);
        }
        let ns = &self.account().namespace;
        let shared: Vec<Arc<MQInstance>> = self
            .visible_instances()
            .into_iter()
            .filter(|i| i.namespace().as_deref() == Some(ns) && !i.spec.independent_naming)
            .collect();
        match shared.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(ApiError::field(
                field,
                "is required (it may be omitted only when you have exactly one instance without a namespace)",
            )),
        }
    }

    /// Every topic of `instance`, oldest first.
    pub fn topics_of(&self, instance: &MQInstance) -> Vec<Arc<MQTopic>> {
        let mut list = self.cx.caches.topics.state_filter(|t| {
            in_instance(t.metadata.namespace.as_deref(), &t.spec.instance, instance)
        });
        list.sort_by(by_age);
        list
    }

    /// The caller's rights on `topic`.
    pub fn rights(&self, topic: &MQTopic, grants: &[Arc<MQEmpower>]) -> TopicRights {
        let refs: Vec<&MQEmpower> = grants.iter().map(AsRef::as_ref).collect();
        access::topic_rights(self.account(), topic, &refs)
    }

    /// The topics of `instance` the caller may see, with its rights, by name (stable
    /// pages; of resources claiming one name, the oldest, which holds it).
    pub fn visible_topics(&self, instance: &MQInstance) -> Vec<(Arc<MQTopic>, TopicRights)> {
        let grants = self.grants_of(instance);
        let mut topics = self.cx.caches.topics.state_filter(|t| {
            in_instance(t.metadata.namespace.as_deref(), &t.spec.instance, instance)
        });
        // By name, the oldest claimant of a name first (it holds the name): one sort.
        topics.sort_by(|a, b| a.spec.topic.cmp(&b.spec.topic).then_with(|| by_age(a, b)));
        topics.dedup_by(|later, first| later.spec.topic == first.spec.topic);
        // The namespace's tenant owns every topic there: no per-topic work for it.
        let ns = instance.metadata.namespace.as_deref().unwrap_or_default();
        let tenant = access::is_tenant_of(self.account(), ns);
        topics
            .into_iter()
            .map(|t| {
                let rights = if tenant {
                    TopicRights {
                        owner: true,
                        granted: 0,
                    }
                } else {
                    self.rights(&t, &grants)
                };
                (t, rights)
            })
            .filter(|(_, r)| r.any())
            .collect()
    }

    /// Topic `name` of `instance`, when the caller may see it, with its rights.
    pub fn topic(
        &self,
        instance: &MQInstance,
        name: &str,
    ) -> Result<(Arc<MQTopic>, TopicRights), ApiError> {
        self.visible_topics(instance)
            .into_iter()
            .find(|(t, _)| t.spec.topic == name)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::TopicNotFound,
                    format!(
                        "topic {name:?} does not exist in instance {}",
                        instance_id(instance)
                    ),
                )
            })
    }

    /// Every group of `instance`, oldest first.
    pub fn groups_of(&self, instance: &MQInstance) -> Vec<Arc<MQGroup>> {
        let mut list = self.cx.caches.groups.state_filter(|g| {
            in_instance(g.metadata.namespace.as_deref(), &g.spec.instance, instance)
        });
        list.sort_by(by_age);
        list
    }

    /// The groups of `instance` the caller may use, by id.
    pub fn visible_groups(&self, instance: &MQInstance) -> Vec<Arc<MQGroup>> {
        let mut groups = self.cx.caches.groups.state_filter(|g| {
            in_instance(g.metadata.namespace.as_deref(), &g.spec.instance, instance)
        });
        groups.sort_by(|a, b| {
            a.spec
                .group_id
                .cmp(&b.spec.group_id)
                .then_with(|| by_age(a, b))
        });
        groups.dedup_by(|later, first| later.spec.group_id == first.spec.group_id);
        groups.retain(|g| access::uses_group(self.account(), g));
        groups
    }

    /// Group `group_id` of `instance`, when the caller may use it.
    pub fn group(&self, instance: &MQInstance, group_id: &str) -> Result<Arc<MQGroup>, ApiError> {
        self.visible_groups(instance)
            .into_iter()
            .find(|g| g.spec.group_id == group_id)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::SubscriptionNotFound,
                    format!(
                        "group {group_id:?} does not exist in instance {}",
                        instance_id(instance)
                    ),
                )
            })
    }
}

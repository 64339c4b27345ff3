//! The limits of spec §4 ([`crate::domain::quotas`]) as the controllers see them, from
//! their caches: what got past the webhook (absent, or two creates raced) is reported in
//! status instead, and a topic beyond its instance's capacity is not created on the
//! brokers.

use std::time::Duration;

use kube::ResourceExt;

use super::Context;
use crate::crd::{MQGroup, MQInstance, MQTopic};
use crate::domain::quotas::{self, Refusal};

/// How soon a resource refused by a limit looks again: another resource's deletion (which
/// frees its place) does not reconcile it, and the check only reads the caches.
pub const RECHECK: Duration = Duration::from_secs(30);

/// The limit `topic` breaks: its instance's capacity, or a name another instance without
/// independent naming holds.
pub fn topic_refusal(ctx: &Context, topic: &MQTopic) -> Option<Refusal> {
    let (instances, topics) = (ctx.instances.state(), ctx.topics.state());
    let instances = instances.iter().map(AsRef::as_ref);
    let topics = topics.iter().map(AsRef::as_ref);
    instances
        .clone()
        .find(|i| i.namespace() == topic.namespace() && i.name_any() == topic.spec.instance)
        .and_then(|i| quotas::topic_capacity(topic, i, topics.clone()))
        .or_else(|| quotas::name_conflict(topic, instances, topics))
}

/// The limit `group` breaks: a group id another instance without independent naming holds.
pub fn group_refusal(ctx: &Context, group: &MQGroup) -> Option<Refusal> {
    let (instances, groups) = (ctx.instances.state(), ctx.groups.state());
    quotas::name_conflict(
        group,
        instances.iter().map(AsRef::as_ref),
        groups.iter().map(AsRef::as_ref),
    )
}

/// The limit `instance` breaks among its namespace's instances.
pub fn instance_refusal(ctx: &Context, instance: &MQInstance) -> Option<Refusal> {
    let instances = ctx.instances.state();
    quotas::instance_refusal(instance, instances.iter().map(AsRef::as_ref))
}

//! Broker scale-down that loses nothing: the leaving brokers (the highest ordinals) first
//! turn every topic read-only, so producers move to the staying brokers; the StatefulSet
//! keeps them until every consumer group has consumed their backlog, or until the drain
//! times out (reported in the `Draining` condition; their volumes are kept, as
//! StatefulSets keep claims on scale-down).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use std::collections::{BTreeMap, BTreeSet};

use mq_broker::broker::schedule::SCHEDULE_GROUP;
use mq_broker::broker::timer::RUNTIME_TIMER_PENDING;
use mq_broker::broker::transaction::RUNTIME_HALF_PENDING;
use mq_broker::names::SCHEDULE_TOPIC;
use mq_broker::remoting::body::PERM_READ;

use super::brokers::{self, BrokerPod};
use super::{Context, Error, children, conventions};
use crate::crd::{MQInstance, MQTopic};
use kube::ResourceExt;

/// Condition type reported while brokers drain.
pub const DRAINING: &str = "Draining";
/// Annotation on an instance: `remove` lets a timed-out drain remove the brokers.
pub const DRAIN_OVERRIDE_ANNOTATION: &str = "mqfleet.io/drain-override";

/// Where a drain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drain {
    /// Nothing left on the leaving brokers: they may go.
    Done,
    /// Backlog remains; the brokers stay.
    Waiting(String),
    /// The bound passed with backlog left; the brokers stay, read-only, until
    /// [`DRAIN_OVERRIDE_ANNOTATION`] says `remove`.
    TimedOut(String),
    /// The bound passed with backlog left and the override asks for removal: the brokers
    /// go (their claims stay, so the messages come back with a scale-up).
    Overridden(String),
}

/// The ordinal of `broker-<n>`.
pub fn ordinal(broker: &BrokerPod) -> Option<i32> {
    broker.name.strip_prefix("broker-")?.parse().ok()
}

/// Drains the brokers with ordinals `staying..` of `instance`; `since` is when the drain
/// began (the Draining condition's transition time).
pub async fn drain(
    ctx: &Context,
    instance: &MQInstance,
    instance_id: &str,
    staying: i32,
    since: Option<Timestamp>,
) -> Result<Drain, Error> {
    let all = brokers::ready_brokers(&ctx.client, &ctx.settings.namespace, instance_id).await?;
    let key = ctx.instance_admin(&super::workloads::Names::for_id(instance_id.to_owned()));
    let (leaving, others): (Vec<BrokerPod>, Vec<BrokerPod>) = all
        .into_iter()
        .partition(|b| ordinal(b).is_some_and(|o| o >= staying));
    let (ns, name) = (instance.namespace(), instance.name_any());
    let topics: Vec<std::sync::Arc<MQTopic>> = ctx
        .topics
        .state()
        .into_iter()
        .filter(|t| {
            t.namespace() == ns
                && t.spec.instance == name
                && conventions::owns_broker_object(t.as_ref())
        })
        .collect();
    let groups: Vec<String> = ctx
        .groups
        .state()
        .into_iter()
        .filter(|g| {
            g.namespace() == ns
                && g.spec.instance == name
                && conventions::owns_broker_object(g.as_ref())
        })
        .map(|g| g.spec.group_id.clone())
        .collect();
    // What each group consumes, from every broker: the topics it has offsets for and
    // those it subscribes to now. A group that never consumed anywhere counts for every
    // topic of the instance: it will consume them from the first offset once it starts.
    let mut consumed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for broker in leaving.iter().chain(&others) {
        let admin = brokers::connect(&key, broker).await?;
        for group in &groups {
            let topics = consumed.entry(group.clone()).or_default();
            if let Ok(stats) = admin.consume_stats(group, None).await {
                topics.extend(stats.offset_table.0.keys().map(|q| q.topic.clone()));
            }
        }
    }
    for topics_of_group in consumed.values_mut() {
        if topics_of_group.is_empty() {
            topics_of_group.extend(topics.iter().map(|t| t.spec.topic.clone()));
        }
    }
    let mut waiting = Vec::new();
    for broker in &leaving {
        let admin = brokers::connect(&key, broker).await?;
        let broker_err = |e: mq_broker::client::AdminError| Error::Broker {
            broker: broker.name.clone(),
            message: e.to_string(),
        };
        // Read-only first, so nothing new arrives while the backlog is measured.
        for topic in &topics {
            let mut config = children::topic_config(topic);
            config.perm = PERM_READ;
            admin.create_topic(&config).await.map_err(broker_err)?;
        }
        for group in &groups {
            let mut backlog = 0;
            for topic in consumed.get(group).into_iter().flatten() {
                backlog += admin
                    .consume_stats(group, Some(topic))
                    .await
                    .map_err(broker_err)?
                    .total_diff();
            }
            if backlog > 0 {
                waiting.push(format!(
                    "{}: {backlog} message(s) of {group} not consumed yet",
                    broker.name
                ));
            }
        }
        // Scheduled messages still waiting there are delivered there, to these groups, and
        // half messages pending there are committed (or rolled back) only there. A broker
        // that cannot tell is not drained.
        let info = admin.runtime_info().await.map_err(broker_err)?;
        let pending = |key: &str| {
            info.get(key)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let scheduled = admin
            .consume_stats(SCHEDULE_GROUP, Some(SCHEDULE_TOPIC))
            .await
            .map(|s| s.total_diff())
            .unwrap_or(0)
            + pending(RUNTIME_TIMER_PENDING);
        if scheduled > 0 {
            waiting.push(format!(
                "{}: {scheduled} scheduled message(s) not delivered yet",
                broker.name
            ));
        }
        let halves = pending(RUNTIME_HALF_PENDING);
        if halves > 0 {
            waiting.push(format!(
                "{}: {halves} transaction half message(s) not committed or rolled back yet",
                broker.name
            ));
        }
    }
    if waiting.is_empty() {
        return Ok(Drain::Done);
    }
    let message = format!(
        "{}; producers already write to the other brokers; the broker pods go once this is consumed",
        waiting.join(", ")
    );
    let elapsed = since.map(|t| Timestamp::now().duration_since(t).unsigned_abs());
    if elapsed.is_some_and(|e| e >= ctx.drain_timeout) {
        let overridden = instance
            .annotations()
            .get(DRAIN_OVERRIDE_ANNOTATION)
            .is_some_and(|v| v == "remove");
        let secs = ctx.drain_timeout.as_secs();
        return Ok(if overridden {
            Drain::Overridden(format!(
                "drain timed out after {secs} s with backlog left ({message}); removed by {DRAIN_OVERRIDE_ANNOTATION}=remove, their volumes stay (scale up again to reach those messages)"
            ))
        } else {
            Drain::TimedOut(format!(
                "drain timed out after {secs} s with backlog left ({message}); the brokers stay, read-only: start the groups' consumers, or annotate the instance {DRAIN_OVERRIDE_ANNOTATION}=remove to remove them anyway (their volumes stay)"
            ))
        });
    }
    Ok(Drain::Waiting(message))
}

/// When the current drain began, from the Draining condition.
pub fn started(conditions: &[Condition]) -> Option<Timestamp> {
    conditions
        .iter()
        .find(|c| c.type_ == DRAINING && c.status == "True")
        .map(|c| c.last_transition_time.0)
}

/// The default drain bound.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

//! `MQTopic` and `MQGroup` onto every broker of their instance, removed again by their
//! finalizers (unless `deletionPolicy: retain`).

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Api, Resource, ResourceExt};
use mq_broker::broker::groups::SubscriptionGroupConfig;
use mq_broker::remoting::body::TopicConfig;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::brokers::{self, BrokerPod};
use super::workloads::Names;
use super::{Context, Error};
use crate::crd::{
    CommonStatus, DeletionPolicy, MQGroup, MQInstance, MQTopic, OrderType, Phase, READY, condition,
    set_condition,
};

/// Finalizer of topics.
pub const TOPIC_FINALIZER: &str = "mqfleet.io/topic";
/// Finalizer of groups.
pub const GROUP_FINALIZER: &str = "mqfleet.io/group";
/// Retry period while the instance is not ready.
const WAIT_FOR_INSTANCE: Duration = Duration::from_secs(3);

/// What a child resource needs from its instance.
struct Target {
    names: Names,
    brokers: Vec<BrokerPod>,
}

/// The child's instance, Running (unless `any_phase`: cleanup must reach the brokers of
/// an instance that is itself being deleted), with its Ready brokers; `Err(message)`
/// says why not.
async fn target(
    ctx: &Context,
    ns: &str,
    instance: &str,
    any_phase: bool,
) -> Result<Result<Target, String>, Error> {
    let api: Api<MQInstance> = Api::namespaced(ctx.client.clone(), ns);
    let Some(instance) = api.get_opt(instance).await? else {
        return Ok(Err(format!(
            "MQInstance {instance:?} does not exist in namespace {ns}; create it or fix spec.instance"
        )));
    };
    let running = instance.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running);
    if !running && !any_phase {
        return Ok(Err(format!(
            "MQInstance {:?} is not Running yet; this resource is applied once it is",
            instance.name_any()
        )));
    }
    let names = Names::of(&instance);
    let brokers =
        brokers::ready_brokers(&ctx.client, &ctx.settings.namespace, &names.instance_id).await?;
    if brokers.is_empty() {
        return Ok(Err(format!(
            "MQInstance {:?} has no ready broker",
            instance.name_any()
        )));
    }
    Ok(Ok(Target { names, brokers }))
}

/// Reconciles one topic.
pub async fn reconcile_topic(topic: Arc<MQTopic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<MQTopic> =
        Api::namespaced(ctx.client.clone(), &topic.namespace().unwrap_or_default());
    finalizer(&api, TOPIC_FINALIZER, topic, |event| async {
        match event {
            Event::Apply(t) => apply_topic(&t, &ctx).await,
            Event::Cleanup(t) => cleanup_topic(&t, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn topic_config(topic: &MQTopic) -> TopicConfig {
    let queues = topic.spec.effective_queues();
    TopicConfig {
        topic_name: topic.spec.topic.clone(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: i32::try_from(topic.spec.perm.code()).unwrap_or(6),
        order: matches!(
            topic.spec.order_type,
            OrderType::PartitionOrder | OrderType::GlobalOrder
        ),
        ..TopicConfig::default()
    }
}

async fn apply_topic(topic: &MQTopic, ctx: &Context) -> Result<Action, Error> {
    let ns = topic.namespace().unwrap_or_default();
    let target = match target(ctx, &ns, &topic.spec.instance, false).await? {
        Ok(t) => t,
        Err(message) => return not_ready(ctx, topic, message).await,
    };
    // A globally ordered topic lives on one broker only, so one queue orders everything.
    let brokers = if topic.spec.order_type == OrderType::GlobalOrder {
        &target.brokers[..1]
    } else {
        &target.brokers[..]
    };
    let config = topic_config(topic);
    for broker in brokers {
        let admin = brokers::connect(broker).await?;
        admin
            .create_topic(&config)
            .await
            .map_err(|e| Error::Broker {
                broker: broker.name.clone(),
                message: e.to_string(),
            })?;
    }
    let mut status = topic.status.clone().unwrap_or_default();
    status.brokers = brokers.iter().map(|b| b.name.clone()).collect();
    let message = format!(
        "on {} of instance {}",
        status.brokers.join(", "),
        target.names.instance_id
    );
    ready(ctx, topic, status, message).await
}

async fn cleanup_topic(topic: &MQTopic, ctx: &Context) -> Result<Action, Error> {
    if topic.spec.deletion_policy == DeletionPolicy::Retain {
        return Ok(Action::await_change());
    }
    let ns = topic.namespace().unwrap_or_default();
    // No instance (or no broker) means nothing holds the topic any more.
    let Ok(target) = target(ctx, &ns, &topic.spec.instance, true).await? else {
        return Ok(Action::await_change());
    };
    for broker in &target.brokers {
        let admin = brokers::connect(broker).await?;
        match admin.delete_topic(&topic.spec.topic).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                return Err(Error::Broker {
                    broker: broker.name.clone(),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(Action::await_change())
}

/// Reconciles one group.
pub async fn reconcile_group(group: Arc<MQGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<MQGroup> =
        Api::namespaced(ctx.client.clone(), &group.namespace().unwrap_or_default());
    finalizer(&api, GROUP_FINALIZER, group, |event| async {
        match event {
            Event::Apply(g) => apply_group(&g, &ctx).await,
            Event::Cleanup(g) => cleanup_group(&g, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply_group(group: &MQGroup, ctx: &Context) -> Result<Action, Error> {
    let ns = group.namespace().unwrap_or_default();
    let target = match target(ctx, &ns, &group.spec.instance, false).await? {
        Ok(t) => t,
        Err(message) => return not_ready(ctx, group, message).await,
    };
    let config = SubscriptionGroupConfig {
        group_name: group.spec.group_id.clone(),
        consume_enable: group.spec.read_enable,
        retry_max_times: group.spec.max_reconsume_times,
        ..SubscriptionGroupConfig::default()
    };
    for broker in &target.brokers {
        let admin = brokers::connect(broker).await?;
        admin
            .create_group(&config)
            .await
            .map_err(|e| Error::Broker {
                broker: broker.name.clone(),
                message: e.to_string(),
            })?;
    }
    let mut status = group.status.clone().unwrap_or_default();
    status.brokers = target.brokers.iter().map(|b| b.name.clone()).collect();
    status.retry_topic = Some(format!("%RETRY%{}", group.spec.group_id));
    status.dlq_topic = Some(format!("%DLQ%{}", group.spec.group_id));
    let message = format!(
        "on {} of instance {}",
        status.brokers.join(", "),
        target.names.instance_id
    );
    ready(ctx, group, status, message).await
}

async fn cleanup_group(group: &MQGroup, ctx: &Context) -> Result<Action, Error> {
    if group.spec.deletion_policy == DeletionPolicy::Retain {
        return Ok(Action::await_change());
    }
    let ns = group.namespace().unwrap_or_default();
    let Ok(target) = target(ctx, &ns, &group.spec.instance, true).await? else {
        return Ok(Action::await_change());
    };
    for broker in &target.brokers {
        let admin = brokers::connect(broker).await?;
        match admin.delete_group(&group.spec.group_id).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                return Err(Error::Broker {
                    broker: broker.name.clone(),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(Action::await_change())
}

/// A child resource with a status the helpers below can write.
trait Child:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
{
    /// Its status type.
    type Status: CommonStatus + Default + Clone + PartialEq + Serialize;
    /// Its current status.
    fn status(&self) -> Option<&Self::Status>;
}

impl Child for MQTopic {
    type Status = crate::crd::MQTopicStatus;
    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
}

impl Child for MQGroup {
    type Status = crate::crd::MQGroupStatus;
    fn status(&self) -> Option<&Self::Status> {
        self.status.as_ref()
    }
}

async fn ready<K: Child>(
    ctx: &Context,
    obj: &K,
    mut status: K::Status,
    message: String,
) -> Result<Action, Error> {
    let generation = obj.meta().generation;
    status.set_observed_generation(generation);
    status.set_phase(Phase::Running);
    set_condition(
        status.conditions_mut(),
        condition(READY, true, "Applied", message, generation),
    );
    write_status(ctx, obj, status).await?;
    Ok(Action::requeue(ctx.resync))
}

async fn not_ready<K: Child>(ctx: &Context, obj: &K, message: String) -> Result<Action, Error> {
    let generation = obj.meta().generation;
    let mut status = obj.status().cloned().unwrap_or_default();
    status.set_observed_generation(generation);
    status.set_phase(Phase::Creating);
    set_condition(
        status.conditions_mut(),
        condition(READY, false, "InstanceNotReady", message, generation),
    );
    write_status(ctx, obj, status).await?;
    Ok(Action::requeue(WAIT_FOR_INSTANCE))
}

async fn write_status<K: Child>(ctx: &Context, obj: &K, status: K::Status) -> Result<(), Error> {
    if obj.status() == Some(&status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

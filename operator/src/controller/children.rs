//! `MQTopic` and `MQGroup` onto every broker of their instance, removed again by their
//! finalizers (unless `deletionPolicy: retain`), with the conventions of
//! [`super::conventions`]: pause, immutable fields, the oldest claimant of a name wins.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use mq_broker::broker::groups::SubscriptionGroupConfig;
use mq_broker::remoting::body::TopicConfig;

use super::brokers::{self, BrokerPod};
use super::status::{Reported, set_ready, write_status};
use super::workloads::Names;
use super::{Context, Error};
use super::{conventions, kit};
use crate::crd::{
    CommonStatus, DeletionPolicy, FORCE_DELETE_ANNOTATION, MQGroup, MQInstance, MQTopic, OrderType,
    Phase, READY, condition, set_condition,
};
use crate::domain::claims::{self, Claim, same_claim};

/// Finalizer of topics.
pub const TOPIC_FINALIZER: &str = "mqfleet.io/topic";
/// Finalizer of groups.
pub const GROUP_FINALIZER: &str = "mqfleet.io/group";
/// Retry period while the instance is not ready.
const WAIT_FOR_INSTANCE: Duration = Duration::from_secs(3);

/// A topic or group: what the shared steps need to know about it beyond its claim.
pub trait Child: Reported + Claim {
    /// The deletion policy.
    fn deletion_policy(&self) -> DeletionPolicy;
    /// The limit of spec §4 it breaks, if any ([`super::limits`]).
    fn limits(&self, ctx: &Context) -> Option<crate::domain::quotas::Refusal>;
}

impl Child for MQTopic {
    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }
    fn limits(&self, ctx: &Context) -> Option<crate::domain::quotas::Refusal> {
        super::limits::topic_refusal(ctx, self)
    }
}

impl Child for MQGroup {
    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }
    fn limits(&self, ctx: &Context) -> Option<crate::domain::quotas::Refusal> {
        super::limits::group_refusal(ctx, self)
    }
}

/// What a child resource needs from its instance.
struct Target {
    names: Names,
    /// The instance's admin key (signs every admin call to its brokers).
    admin: mq_broker::acl::Credentials,
    brokers: Vec<BrokerPod>,
    /// The name under which brokers and name servers know a topic or group.
    namespaced: bool,
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
    // Degraded still serves: a new or emptied broker must get its topics and groups
    // from here before the instance counts it, so only Creating waits.
    let phase = instance.status.as_ref().and_then(|s| s.phase);
    let running = matches!(phase, Some(Phase::Running | Phase::Degraded));
    if !running && !any_phase {
        return Ok(Err(format!(
            "MQInstance {:?} is not Running yet; this resource is applied once it is",
            instance.name_any()
        )));
    }
    let Some(names) = super::instance::names_in_effect(ctx, &instance) else {
        return Ok(Err(format!(
            "MQInstance {:?} holds no instance id yet (see its status); this resource is applied once it does",
            instance.name_any()
        )));
    };
    let mut brokers =
        brokers::ready_brokers(&ctx.client, &ctx.settings.namespace, &names.instance_id).await?;
    if !any_phase {
        // Brokers beyond the instance's count are draining: the instance controller
        // keeps them read-only, so they must not get writable topics from here.
        let staying = staying_brokers(ctx, &instance);
        brokers.retain(|b| super::drain::ordinal(b).is_none_or(|o| o < staying));
    }
    if brokers.is_empty() {
        return Ok(Err(format!(
            "MQInstance {:?} has no ready broker",
            instance.name_any()
        )));
    }
    let namespaced = instance.spec.independent_naming;
    Ok(Ok(Target {
        admin: ctx.instance_admin(&names),
        names,
        brokers,
        namespaced,
    }))
}

/// The brokers the instance keeps: its spec's count, else its profile's (while the
/// profile is unknown, the count last reported in status; none reported: all).
fn staying_brokers(ctx: &Context, instance: &MQInstance) -> i32 {
    ctx.profiles
        .effective(&instance.spec)
        .map(|e| e.broker_replicas)
        .unwrap_or_else(|_| {
            instance
                .status
                .as_ref()
                .map(|s| s.brokers)
                .filter(|b| *b > 0)
                .unwrap_or(i32::MAX)
        })
}

/// The conventions checked before any broker is touched; `Some(action)` ends the
/// reconcile with the condition written.
async fn gate<K: Child>(
    ctx: &Context,
    obj: &K,
    siblings: &Store<K>,
) -> Result<Option<Action>, Error> {
    if let Some(action) = kit::pause_gate(ctx, obj).await? {
        return Ok(Some(action));
    }
    let changes = conventions::changes(obj, obj.identity());
    if let Some(action) = kit::immutable_gate(ctx, obj, &changes, Some(Phase::Failed)).await? {
        return Ok(Some(action));
    }
    let state = siblings.state();
    let claimants = state
        .iter()
        .map(AsRef::as_ref)
        .filter(|k: &&K| same_claim(*k, obj));
    if let Some(winner) = claims::winner(claimants)
        && winner.name_any() != obj.name_any()
    {
        let message = format!(
            "{} {:?} of instance {:?} already belongs to {}/{} (created earlier); choose another name",
            K::KIND,
            obj.broker_name(),
            obj.instance(),
            K::KIND,
            winner.name_any()
        );
        set_ready(
            ctx,
            obj,
            Some(Phase::Failed),
            false,
            "ResourceConflict",
            message,
        )
        .await?;
        return Ok(Some(Action::requeue(ctx.resync)));
    }
    // Beyond the instance's capacity, or a name another shared-naming instance holds:
    // reported, and nothing is created on the brokers.
    if let Some((reason, message)) = obj.limits(ctx) {
        set_ready(ctx, obj, Some(Phase::Failed), false, reason, message).await?;
        return Ok(Some(Action::requeue(
            super::limits::RECHECK.min(ctx.resync),
        )));
    }
    Ok(None)
}

/// Reconciles one topic.
pub async fn reconcile_topic(topic: Arc<MQTopic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let c = &ctx;
    kit::finalized(
        c,
        topic,
        TOPIC_FINALIZER,
        |t| async move { apply_topic(&t, c).await },
        |t| async move {
            cleanup(t.as_ref(), c, &c.topics, |admin, name| async move {
                admin.delete_topic(&name).await
            })
            .await
        },
    )
    .await
}

/// The broker-side config of `topic`.
pub fn topic_config(topic: &MQTopic) -> TopicConfig {
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
    if let Some(action) = gate(ctx, topic, &ctx.topics).await? {
        return Ok(action);
    }
    let ns = topic.namespace().unwrap_or_default();
    let target = match target(ctx, &ns, &topic.spec.instance, false).await? {
        Ok(t) => t,
        Err(message) => return not_ready(ctx, topic, message).await,
    };
    // A globally ordered topic lives on one fixed broker only, so one queue orders
    // everything; while that broker is not ready the topic waits rather than move.
    let brokers = if topic.spec.order_type == OrderType::GlobalOrder {
        let fixed = target
            .brokers
            .iter()
            .position(|b| b.name == brokers::GLOBAL_ORDER_BROKER);
        match fixed {
            Some(i) => &target.brokers[i..=i],
            None => {
                let message = format!(
                    "a globally ordered topic lives on {} only, which is not ready; waiting for it",
                    brokers::GLOBAL_ORDER_BROKER
                );
                return not_ready(ctx, topic, message).await;
            }
        }
    } else {
        &target.brokers[..]
    };
    let config = topic_config(topic);
    brokers::on_each(&target.admin, brokers, |admin| {
        let config = &config;
        async move { admin.create_topic(config).await }
    })
    .await?;
    // Ready means clients can use it: the name servers route it to every broker.
    let missing = route_pending(ctx, &target, &config.topic_name, brokers).await?;
    if !missing.is_empty() {
        let message = format!(
            "created on the brokers, but the name servers do not route it to {} yet; retrying",
            missing.join(", ")
        );
        set_ready(ctx, topic, None, false, "RoutePending", message).await?;
        return Ok(Action::requeue(WAIT_FOR_INSTANCE));
    }
    mark_applied(ctx, topic).await?;
    let mut status = topic.status.clone().unwrap_or_default();
    status.brokers = brokers.iter().map(|b| b.name.clone()).collect();
    let message = format!(
        "on {} of instance {}",
        status.brokers.join(", "),
        target.names.instance_id
    );
    ready(ctx, topic, status, message).await
}

/// How long a topic's route may take to reach the name servers before the reconcile
/// gives up for now (brokers register a changed topic table at once).
const ROUTE_WAIT: Duration = Duration::from_secs(5);

/// Brokers the name servers do not route `topic` to yet, after waiting up to
/// [`ROUTE_WAIT`] for them.
async fn route_pending(
    ctx: &Context,
    target: &Target,
    topic: &str,
    brokers: &[BrokerPod],
) -> Result<Vec<String>, Error> {
    let platform = &ctx.settings.namespace;
    let name_servers =
        brokers::ready_name_servers(&ctx.client, platform, &target.names.instance_id).await?;
    let routed = if target.namespaced {
        format!("{}%{topic}", target.names.instance_id)
    } else {
        topic.to_owned()
    };
    let deadline = tokio::time::Instant::now() + ROUTE_WAIT;
    loop {
        let missing =
            brokers::missing_from_route(&target.admin, &name_servers, &routed, brokers).await;
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(missing);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reconciles one group.
pub async fn reconcile_group(group: Arc<MQGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let c = &ctx;
    kit::finalized(
        c,
        group,
        GROUP_FINALIZER,
        |g| async move { apply_group(&g, c).await },
        |g| async move {
            cleanup(g.as_ref(), c, &c.groups, |admin, name| async move {
                admin.delete_group(&name).await
            })
            .await
        },
    )
    .await
}

async fn apply_group(group: &MQGroup, ctx: &Context) -> Result<Action, Error> {
    if let Some(action) = gate(ctx, group, &ctx.groups).await? {
        return Ok(action);
    }
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
    brokers::on_each(&target.admin, &target.brokers, |admin| {
        let config = &config;
        async move { admin.create_group(config).await }
    })
    .await?;
    mark_applied(ctx, group).await?;
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

/// Removes the broker-side object, unless retained or claimed by another live resource.
/// A broker that keeps refusing is reported in a `DeletionBlocked` condition after a few
/// attempts (the retries slow down to every 5 minutes); `mqfleet.io/force-delete`
/// removes the resource and leaves the object on the brokers.
async fn cleanup<K, F, Fut>(
    obj: &K,
    ctx: &Context,
    siblings: &Store<K>,
    delete: F,
) -> Result<Action, Error>
where
    K: Child,
    F: Fn(mq_broker::client::AdminClient, String) -> Fut,
    Fut: Future<Output = Result<(), mq_broker::client::AdminError>>,
{
    // The broker-side object it stands for: the name as applied, even if the spec was
    // renamed since (refused as NotSupported).
    let name = conventions::applied_field(obj, K::NAME_FIELD)
        .unwrap_or_else(|| obj.broker_name().to_owned());
    // Another live resource claiming that name (the winner, or the one taking over) keeps
    // it. Decided from the cache: at worst an edited annotation keeps an object on the
    // brokers, it never removes another resource's.
    let state = siblings.state();
    let claimants = state.iter().map(AsRef::as_ref).filter(|k: &&K| {
        k.namespace() == obj.namespace()
            && k.instance() == obj.instance()
            && (k.broker_name() == name
                || conventions::applied_field(*k, K::NAME_FIELD).as_deref() == Some(name.as_str()))
    });
    if obj.deletion_policy() == DeletionPolicy::Retain
        || claims::shared_with_another(obj, claimants)
    {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    // No instance (or no broker) means nothing holds the object any more.
    let Ok(target) = target(ctx, &ns, obj.instance(), true).await? else {
        return Ok(Action::await_change());
    };
    let forced = obj
        .annotations()
        .get(FORCE_DELETE_ANNOTATION)
        .is_some_and(|v| v == "true");
    for broker in &target.brokers {
        let result = match brokers::connect(&target.admin, broker).await {
            Ok(admin) => delete(admin, name.clone()).await.or_else(|e| {
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e.to_string())
                }
            }),
            Err(e) => Err(e.to_string()),
        };
        let Err(message) = result else { continue };
        if forced {
            let note = format!(
                "{FORCE_DELETE_ANNOTATION}: removing the resource; {name:?} stays on {} ({message})",
                broker.name
            );
            super::record(ctx, obj.object_ref(&()), false, "ForceDeleted", note).await;
            continue;
        }
        if ctx.failures_of(obj) + 1 >= DELETE_ATTEMPTS_BEFORE_REPORT {
            let message = format!(
                "{} refuses to delete {name:?} ({message}); fix the broker, or annotate this resource {FORCE_DELETE_ANNOTATION}=\"true\" to remove it and leave the {} on the brokers",
                broker.name,
                K::KIND
            );
            set_ready(
                ctx,
                obj,
                Some(Phase::Failed),
                false,
                "DeletionBlocked",
                message,
            )
            .await?;
        }
        return Err(Error::Broker {
            broker: broker.name.clone(),
            message,
        });
    }
    super::record(
        ctx,
        obj.object_ref(&()),
        true,
        "Deleted",
        format!("removed {name:?} from the brokers"),
    )
    .await;
    Ok(Action::await_change())
}

/// Failed deletion attempts after which the resource's status says what to do.
const DELETE_ATTEMPTS_BEFORE_REPORT: u32 = 3;

/// Records the applied immutable fields once.
async fn mark_applied<K: Child>(ctx: &Context, obj: &K) -> Result<(), Error> {
    conventions::mark_applied(ctx, obj, &obj.identity()).await
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
    status
        .conditions_mut()
        .retain(|c| c.type_ != conventions::PAUSED);
    write_status(ctx, obj, status).await?;
    Ok(Action::requeue(ctx.resync))
}

async fn not_ready<K: Child>(ctx: &Context, obj: &K, message: String) -> Result<Action, Error> {
    set_ready(
        ctx,
        obj,
        Some(Phase::Creating),
        false,
        "InstanceNotReady",
        message,
    )
    .await?;
    Ok(Action::requeue(WAIT_FOR_INSTANCE))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{Expect, cache};
    use super::*;
    use serde_json::json;

    fn topic(name: &str, created: &str) -> MQTopic {
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQTopic",
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                         "creationTimestamp": created, "generation": 1, "resourceVersion": "1",
                         "finalizers": [TOPIC_FINALIZER]},
            "spec": {"instance": "orders", "topic": "LEDGER", "orderType": 0},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_younger_topic_claiming_a_taken_name_only_reports_the_conflict() {
        let (ctx, server, mut caches) = Context::test();
        let (first, second) = (
            topic("first", "2026-01-01T00:00:00Z"),
            topic("second", "2026-02-01T00:00:00Z"),
        );
        cache(&mut caches.topics, first);
        cache(&mut caches.topics, second.clone());
        // No broker, no instance lookup: only the loser's status and its Event.
        let served = server.run(vec![
            Expect::ok(
                "PATCH",
                "/apis/mqfleet.io/v1alpha1/namespaces/shop/mqtopics/second/status",
                serde_json::to_value(&second).unwrap(),
            )
            .with_body("ResourceConflict"),
            Expect::ok(
                "POST",
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                json!({}),
            )
            .with_body("MQTopic/first"),
        ]);
        let action = reconcile_topic(Arc::new(second), ctx.clone())
            .await
            .expect("a conflict is a status, not an error");
        assert_eq!(action, Action::requeue(ctx.resync));
        served
            .await
            .expect("the API server saw exactly the conflict report");
    }

    #[tokio::test]
    async fn a_topic_beyond_the_capacity_only_reports_it() {
        let (ctx, server, mut caches) = Context::test();
        let instance: MQInstance = serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
            "metadata": {"name": "orders", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"instanceName": "orders", "cluster": "c", "topicCapacity": 1},
        }))
        .unwrap();
        cache(&mut caches.instances, instance);
        let first = topic("first", "2026-01-01T00:00:00Z");
        let mut second = topic("second", "2026-02-01T00:00:00Z");
        second.spec.topic = "OTHER".into();
        cache(&mut caches.topics, first);
        cache(&mut caches.topics, second.clone());
        // No instance lookup, no broker: only the status and its Event.
        let served = server.run(vec![
            Expect::ok(
                "PATCH",
                "/apis/mqfleet.io/v1alpha1/namespaces/shop/mqtopics/second/status",
                serde_json::to_value(&second).unwrap(),
            )
            .with_body("TopicCapacityExceeded"),
            Expect::ok(
                "POST",
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                json!({}),
            ),
        ]);
        let action = reconcile_topic(Arc::new(second), ctx.clone())
            .await
            .expect("over capacity is a status, not an error");
        assert_eq!(action, Action::requeue(super::super::limits::RECHECK));
        served.await.expect("the API server saw only the report");
    }

    #[tokio::test]
    async fn deleting_a_conflict_loser_leaves_the_winners_topic_on_the_brokers() {
        let (ctx, server, mut caches) = Context::test();
        let mut second = topic("second", "2026-02-01T00:00:00Z");
        second.metadata.deletion_timestamp = second.metadata.creation_timestamp.clone();
        cache(&mut caches.topics, topic("first", "2026-01-01T00:00:00Z"));
        cache(&mut caches.topics, second.clone());
        // Another live claimant holds LEDGER: no instance lookup, no broker call, only the
        // finalizer goes.
        let served = server.run(vec![
            Expect::ok(
                "PATCH",
                "/apis/mqfleet.io/v1alpha1/namespaces/shop/mqtopics/second",
                serde_json::to_value(&second).unwrap(),
            )
            .with_body("finalizers"),
        ]);
        reconcile_topic(Arc::new(second), ctx)
            .await
            .expect("cleanup succeeds");
        served.await.expect("only the finalizer was removed");
    }
}

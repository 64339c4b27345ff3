//! End-to-end: `mq-operator` on the testbed turns `MQInstance`, `MQTopic` and `MQGroup`
//! resources into running name-server and broker Pods with the topic and group on them;
//! a real RocketMQ client (`rocketmq-client-rust`) produces and consumes through the
//! instance's `status.endpoint`; deletion is refused while children exist and cleans up
//! after.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use mq_broker::client::AdminClient;
use mq_operator::crd::{MQGroup, MQInstance, MQTopic, Phase, is_ready};
use mq_testbed::Testbed;
use mq_testbed::operator::{create, instance_running};
use rocketmq_client_rust::{DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use serde_json::json;

use mq_testbed::operator::PLATFORM;
/// Bound on an instance becoming Running (the target is 60 s).
const RUNNING: Duration = Duration::from_secs(60);
const TOPIC: &str = "ORDERS";
/// The operator's resync period in this suite (the default is 10 minutes).
const RESYNC_SECS: u64 = 5;
const GROUP: &str = "GID_SHOP";

/// The suites share one operator and measure it, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The admission webhook's refusal of `result`: its message, which must name `needle`.
fn refused<T: std::fmt::Debug>(result: kube::Result<T>, needle: &str) -> Result<String> {
    match result {
        Err(kube::Error::Api(e)) if e.message.contains("denied the request") => {
            ensure!(
                e.message.contains(needle),
                "refusal without {needle:?}: {}",
                e.message
            );
            Ok(e.message)
        }
        other => anyhow::bail!("expected the webhook to refuse (naming {needle:?}), got {other:?}"),
    }
}

/// Creates the resources and waits until all three are Ready; returns the instance.
async fn set_up(tb: &Testbed, client: &Client, ns: &str) -> Result<MQInstance> {
    tb.create_namespace(client, ns).await?;
    let began = std::time::Instant::now();
    let mut instance = mq_testbed::operator::instance("shop", 1);
    instance["spec"]["independentNaming"] = json!(true);
    create::<MQInstance>(client, ns, instance).await?;
    let mut topic = mq_testbed::operator::topic("orders", "shop", TOPIC);
    topic["spec"]["queues"] = json!(4);
    create::<MQTopic>(client, ns, topic).await?;
    create::<MQGroup>(
        client,
        ns,
        mq_testbed::operator::group("shop", "shop", GROUP),
    )
    .await?;
    let instance = instance_running(tb, client, ns, "shop", None, RUNNING).await?;
    println!(
        "MQInstance apply → Running: {:.1} s",
        began.elapsed().as_secs_f64()
    );
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    let groups: Api<MQGroup> = Api::namespaced(client.clone(), ns);
    tb.until(
        client,
        PLATFORM,
        "the topic and group Ready",
        RUNNING,
        || {
            let (topics, groups) = (topics.clone(), groups.clone());
            async move {
                let t = topics.get("orders").await.map_err(|e| e.to_string())?;
                let g = groups.get("shop").await.map_err(|e| e.to_string())?;
                Ok((is_ready(t.metadata.generation, t.status.as_ref())
                    && is_ready(g.metadata.generation, g.status.as_ref()))
                .then_some(()))
            }
        },
    )
    .await?;
    // 1.20 serves PodDisruptionBudgets only as policy/v1beta1; the operator found it.
    let id = instance
        .status
        .as_ref()
        .and_then(|s| s.instance_id.clone())
        .context("no id")?;
    let pdbs = kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "policy",
        "v1beta1",
        "PodDisruptionBudget",
    ));
    let api: Api<kube::core::DynamicObject> = Api::namespaced_with(client.clone(), PLATFORM, &pdbs);
    let selector = format!("mqfleet.io/instance-id={id}");
    let found = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .len();
    ensure!(
        found == 2,
        "{found} PodDisruptionBudgets for the instance, expected broker and namesrv"
    );
    Ok(instance)
}

/// Produces `count` messages and consumes them all with a push consumer, through
/// `endpoint` with the instance's namespace, as an application would.
fn produce_and_consume(
    endpoint: &str,
    namespace: &str,
    prefix: &str,
    count: usize,
) -> HashSet<String> {
    support::round_trip(endpoint, Some(namespace), TOPIC, GROUP, prefix, count)
}

/// The broker pod `broker-<ordinal>` of the instance (not being deleted).
async fn broker_pod(client: &Client, instance_id: &str, ordinal: usize) -> Result<Pod> {
    mq_testbed::operator::server_pod(client, instance_id, "broker", ordinal)
        .await
        .map(|(pod, _)| pod)
        .map_err(anyhow::Error::msg)
}

/// An admin connection to a broker, the way an administrator would reach behind the
/// operator's back (signed with the instance's admin key, which every admin call needs).
async fn broker_admin(client: &Client, instance_id: &str, ordinal: usize) -> Result<AdminClient> {
    let (_, ip) = mq_testbed::operator::server_pod(client, instance_id, "broker", ordinal)
        .await
        .map_err(anyhow::Error::msg)?;
    let key = mq_testbed::operator::instance_admin_key(client, instance_id).await?;
    Ok(
        AdminClient::connect(&format!("{ip}:10911"), Duration::from_secs(5))
            .await?
            .with_credentials(key),
    )
}

/// The topics on broker `broker-<ordinal>` of the instance.
async fn broker_topics_on(
    client: &Client,
    instance_id: &str,
    ordinal: usize,
) -> Result<Vec<String>> {
    let admin = broker_admin(client, instance_id, ordinal).await?;
    Ok(admin
        .topics()
        .await?
        .into_iter()
        .map(|t| t.topic_name)
        .collect())
}

/// The topics on the instance's first broker.
async fn broker_topics(client: &Client, instance_id: &str) -> Result<Vec<String>> {
    broker_topics_on(client, instance_id, 0).await
}

/// Drift correction (a topic deleted on the broker, a killed broker pod), then a
/// scale-up from 1 to 2 brokers: the new broker gets the topic before it counts.
async fn drift_and_scale_up(
    tb: &Testbed,
    client: &Client,
    ns: &str,
    instance_id: &str,
) -> Result<()> {
    let canonical = format!("{instance_id}%{TOPIC}");
    ensure!(
        broker_topics(client, instance_id)
            .await?
            .contains(&canonical),
        "{canonical} not on the broker"
    );

    // A topic deleted behind the operator's back comes back within a resync.
    broker_admin(client, instance_id, 0)
        .await?
        .delete_topic(TOPIC)
        .await?;
    ensure!(
        !broker_topics(client, instance_id)
            .await?
            .contains(&canonical),
        "the delete behind the operator's back did not take"
    );
    tb.until(
        client,
        PLATFORM,
        "the topic restored on the broker",
        RUNNING,
        || {
            let (client, canonical) = (client.clone(), canonical.clone());
            async move {
                let topics = broker_topics(&client, instance_id)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(topics.contains(&canonical).then_some(()))
            }
        },
    )
    .await?;

    // A killed broker pod comes back Ready and the instance Running again.
    let old = broker_pod(client, instance_id, 0).await?;
    Api::<Pod>::namespaced(client.clone(), PLATFORM)
        .delete(&old.name_any(), &DeleteParams::default())
        .await?;
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
    tb.until(
        client,
        PLATFORM,
        "a new broker pod Ready and the instance Running",
        RUNNING,
        || {
            let (client, instances, old_uid) = (client.clone(), instances.clone(), old.uid());
            async move {
                let pod = broker_pod(&client, instance_id, 0)
                    .await
                    .map_err(|e| e.to_string())?;
                let i = instances.get("shop").await.map_err(|e| e.to_string())?;
                let s = i.status.unwrap_or_default();
                let back = pod.uid() != old_uid && mq_testbed::wait::is_ready(&pod);
                if back && s.phase == Some(Phase::Running) && s.ready_brokers == 1 {
                    Ok(Some(()))
                } else {
                    Err(format!(
                        "new pod ready: {back}; instance {:?} with {} ready broker(s)",
                        s.phase, s.ready_brokers
                    ))
                }
            }
        },
    )
    .await?;
    empty_store_restart(tb, client, &instances, instance_id).await?;

    // Scale up: the new broker gets the topic before the instance counts it.
    instances
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"brokers": {"replicas": 2}}})),
        )
        .await?;
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    tb.until(
        client,
        PLATFORM,
        "2 serving brokers and the topic on both",
        RUNNING,
        || {
            let (instances, topics) = (instances.clone(), topics.clone());
            async move {
                let s = instances
                    .get("shop")
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .unwrap_or_default();
                let on = topics
                    .get("orders")
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .map(|s| s.brokers)
                    .unwrap_or_default();
                if s.phase == Some(Phase::Running)
                    && s.ready_brokers == 2
                    && on == ["broker-0", "broker-1"]
                {
                    Ok(Some(()))
                } else {
                    Err(format!(
                        "instance {:?} with {}/2 brokers; topic on {on:?}",
                        s.phase, s.ready_brokers
                    ))
                }
            }
        },
    )
    .await?;
    ensure!(
        broker_topics_on(client, instance_id, 1)
            .await?
            .contains(&canonical),
        "the new broker lacks the topic although the instance counts it"
    );
    rolling_setting_change(tb, client, instances, instance_id).await
}

/// A broker that comes back with an empty store (a lost volume) gets every topic and group
/// again, and only then counts as ready. The instance is paused so the test can stop
/// the broker and wipe its volume; resuming brings it back.
async fn empty_store_restart(
    tb: &Testbed,
    client: &Client,
    instances: &Api<MQInstance>,
    instance_id: &str,
) -> Result<()> {
    let pause = |on: bool| {
        let value = if on { json!("true") } else { json!(null) };
        Patch::Merge(
            json!({"metadata": {"annotations": {"mqfleet.io/pause-reconciliation": value}}}),
        )
    };
    instances
        .patch("shop", &PatchParams::default(), &pause(true))
        .await?;
    // Only once the operator shows the pause can no reconcile still in flight (one that
    // began before it) apply the StatefulSet again and undo the scale-down below.
    tb.until(client, PLATFORM, "the pause shown", RUNNING, || async {
        let paused = instances
            .get("shop")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default()
            .conditions
            .iter()
            .any(|c| c.type_ == "ReconciliationPaused" && c.status == "True");
        Ok(paused.then_some(()))
    })
    .await?;
    let pod = broker_pod(client, instance_id, 0).await?;
    let claim = format!("store-{}", pod.name_any());
    let sts_name = pod.name_any().trim_end_matches("-0").to_owned();
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(client.clone(), PLATFORM);
    let zero = Patch::Merge(json!({"spec": {"replicas": 0}}));
    sets.patch(&sts_name, &PatchParams::default(), &zero)
        .await?;
    tb.until(client, PLATFORM, "the broker stopped", RUNNING, || async {
        Ok(broker_pod(client, instance_id, 0)
            .await
            .is_err()
            .then_some(()))
    })
    .await?;
    let pvc: PersistentVolumeClaim = Api::namespaced(client.clone(), PLATFORM)
        .get(&claim)
        .await?;
    let volume = pvc
        .spec
        .and_then(|s| s.volume_name)
        .context("claim not bound")?;
    let pv: k8s_openapi::api::core::v1::PersistentVolume =
        Api::all(client.clone()).get(&volume).await?;
    let dir = pv
        .spec
        .and_then(|s| s.host_path)
        .map(|h| std::path::PathBuf::from(h.path))
        .context("the testbed's volumes are host paths")?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    instances
        .patch("shop", &PatchParams::default(), &pause(false))
        .await?;
    let canonical = format!("{instance_id}%{TOPIC}");
    tb.until(
        client,
        PLATFORM,
        "the emptied broker back with its topic, and counted",
        RUNNING,
        || {
            let (instances, canonical) = (instances.clone(), canonical.clone());
            async move {
                let s = instances
                    .get("shop")
                    .await
                    .map_err(|e| e.to_string())?
                    .status
                    .unwrap_or_default();
                let topics = broker_topics(client, instance_id).await.unwrap_or_default();
                let back = topics.contains(&canonical);
                if back && s.phase == Some(Phase::Running) && s.ready_brokers == 1 {
                    Ok(Some(()))
                } else {
                    Err(format!(
                        "topic back: {back}; instance {:?}, {} ready",
                        s.phase, s.ready_brokers
                    ))
                }
            }
        },
    )
    .await?;
    Ok(())
}

/// A setting brokers read only at start (the flush mode) rolls them one at a time:
/// never are both brokers down, and both end up Ready on the new template.
async fn rolling_setting_change(
    tb: &Testbed,
    client: &Client,
    instances: Api<MQInstance>,
    instance_id: &str,
) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    let selector = format!("mqfleet.io/instance-id={instance_id},mqfleet.io/component=broker");
    let hash_of = |p: &Pod| p.annotations().get("mqfleet.io/config-hash").cloned();
    let before: HashSet<_> = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .filter_map(hash_of)
        .collect();
    instances
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"brokers": {"flushMode": "sync"}}})),
        )
        .await?;
    let most_down = Arc::new(Mutex::new(0usize));
    let what = "both brokers rolled to the new settings and Ready";
    tb.until(client, PLATFORM, what, Duration::from_secs(120), || {
        let (pods, selector, before, most_down) = (
            pods.clone(),
            selector.clone(),
            before.clone(),
            most_down.clone(),
        );
        async move {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| e.to_string())?
                .items;
            let serving = list
                .iter()
                .filter(|p| {
                    mq_testbed::wait::is_ready(p) && p.metadata.deletion_timestamp.is_none()
                })
                .count();
            let mut most = most_down.lock().map_err(|e| e.to_string())?;
            *most = (*most).max(2usize.saturating_sub(serving));
            let rolled = list
                .iter()
                .filter(|p| mq_testbed::wait::is_ready(p))
                .filter(|p| hash_of(p).is_some_and(|h| !before.contains(&h)))
                .count();
            if rolled == 2 && list.len() == 2 {
                Ok(Some(()))
            } else {
                Err(format!("{rolled} of 2 brokers rolled; {serving} serving"))
            }
        }
    })
    .await?;
    let most = *most_down.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(
        most <= 1,
        "{most} brokers were down at once during the roll"
    );
    Ok(())
}

#[test]
fn resources_become_a_working_instance_and_are_cleaned_up() -> Result<()> {
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new()?;
    let ns = "op-shop";
    let (tb, client, _operator, instance) = runtime.block_on(async {
        let tb = Testbed::shared().await?;
        let client = tb.client();
        mq_testbed::operator::install(tb, &client, Some(RESYNC_SECS)).await?;
        let instance = set_up(tb, &client, ns).await?;
        anyhow::Ok((tb, client, (), instance))
    })?;
    let status = instance.status.clone().context("no status")?;
    let endpoint = status.endpoint.clone().context("no endpoint")?;
    let instance_id = status.instance_id.clone().context("no instance id")?;
    let dns = status.dns_endpoint.clone().context("no DNS endpoint")?;
    ensure!(
        dns.ends_with(".mqfleet-system.svc:9876")
            && dns.starts_with(&instance_id.to_lowercase().replace('_', "-")),
        "DNS endpoint {dns}"
    );
    ensure!(
        status.ready_brokers == 1 && status.topics == 1 && status.groups == 1,
        "{status:?}"
    );

    // The data path: a real client through status.endpoint (the name-server ClusterIP).
    let received = produce_and_consume(&endpoint, &instance_id, "first", 50);
    ensure!(received.len() == 50, "consumed {} of 50", received.len());
    runtime.block_on(drift_and_scale_up(tb, &client, ns, &instance_id))?;
    // After the scale-up the topic has queues on both brokers; clients keep working.
    let received = produce_and_consume(&endpoint, &instance_id, "second", 50);
    let second = received.iter().filter(|b| b.starts_with("second-")).count();
    ensure!(second == 50, "consumed {second} of 50 after the scale-up");

    runtime.block_on(async {
        let topics = broker_topics(&client, &instance_id).await?;
        let canonical = format!("{instance_id}%{TOPIC}");
        ensure!(
            topics.contains(&canonical),
            "{canonical} not on the broker: {topics:?}"
        );

        // Deleting the instance while it has a topic and a group is refused by the
        // webhook, naming them (the status backstop is in the conflicts test).
        let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
        mq_testbed::operator::webhook_in_force(tb, &client, ns, "orders").await?;
        let message = refused(
            instances.delete("shop", &DeleteParams::default()).await,
            "MQTopic/orders",
        )?;
        ensure!(
            message.contains("MQGroup/shop") && message.contains("mqfleet.io/force-delete"),
            "{message}"
        );

        // Deleting the topic removes it from the broker; then the instance can go.
        Api::<MQTopic>::namespaced(client.clone(), ns)
            .delete("orders", &DeleteParams::default())
            .await?;
        Api::<MQGroup>::namespaced(client.clone(), ns)
            .delete("shop", &DeleteParams::default())
            .await?;
        let topics_api: Api<MQTopic> = Api::namespaced(client.clone(), ns);
        tb.until(
            &client,
            PLATFORM,
            "the topic gone from the API",
            RUNNING,
            || {
                let api = topics_api.clone();
                async move {
                    Ok(api
                        .get_opt("orders")
                        .await
                        .map_err(|e| e.to_string())?
                        .is_none()
                        .then_some(()))
                }
            },
        )
        .await?;
        ensure!(
            !broker_topics(&client, &instance_id)
                .await
                .unwrap_or_default()
                .contains(&canonical),
            "the deleted topic is still on the broker"
        );
        // Once its group is gone too, the webhook lets the instance's deletion through.
        tb.until(
            &client,
            ns,
            "the instance's deletion accepted",
            RUNNING,
            || {
                let api = instances.clone();
                async move {
                    match api.delete("shop", &DeleteParams::default()).await {
                        Ok(_) => Ok(Some(())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await?;
        tb.until(
            &client,
            PLATFORM,
            "the instance, its pods and claims gone",
            Duration::from_secs(90),
            || {
                let (api, client, id) = (instances.clone(), client.clone(), instance_id.clone());
                async move {
                    if api
                        .get_opt("shop")
                        .await
                        .map_err(|e| e.to_string())?
                        .is_some()
                    {
                        return Err("the MQInstance still exists".into());
                    }
                    let selector =
                        ListParams::default().labels(&format!("mqfleet.io/instance-id={id}"));
                    let pods = Api::<Pod>::namespaced(client.clone(), PLATFORM)
                        .list(&selector)
                        .await
                        .map_err(|e| e.to_string())?;
                    let claims = Api::<PersistentVolumeClaim>::namespaced(client, PLATFORM)
                        .list(&selector)
                        .await
                        .map_err(|e| e.to_string())?;
                    if !pods.items.is_empty() || !claims.items.is_empty() {
                        let names: Vec<String> = pods
                            .items
                            .iter()
                            .map(|p| p.name_any())
                            .chain(claims.items.iter().map(|c| c.name_any()))
                            .collect();
                        return Err(format!("still there: {names:?}"));
                    }
                    Ok(Some(()))
                }
            },
        )
        .await?;
        anyhow::Ok(())
    })?;
    Ok(())
}

async fn ready_reason<K>(
    api: &Api<K>,
    name: &str,
) -> std::result::Result<(String, String, String), String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: HasConditions,
{
    let obj = api.get(name).await.map_err(|e| e.to_string())?;
    obj.ready()
        .ok_or_else(|| "no Ready condition yet".to_owned())
}

/// The Ready condition of a resource: (status, reason, message).
trait HasConditions {
    fn ready(&self) -> Option<(String, String, String)>;
}

impl HasConditions for MQTopic {
    fn ready(&self) -> Option<(String, String, String)> {
        let c = self
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?;
        Some((c.status.clone(), c.reason.clone(), c.message.clone()))
    }
}

#[test]
fn conflicts_immutable_changes_and_pause_show_in_status() -> Result<()> {
    let _serial = serial();
    tokio::runtime::Runtime::new()?.block_on(conflicts())
}

/// What the webhook refuses before anything is stored, each refusal naming the field.
async fn webhook_refusals(
    tb: &Testbed,
    client: &Client,
    ns: &str,
    topics: &Api<MQTopic>,
    instances: &Api<MQInstance>,
) -> Result<()> {
    mq_testbed::operator::webhook_in_force(tb, client, ns, "first").await?;
    let duplicate = mq_testbed::operator::topic("second", "rules", "LEDGER");
    let message = refused(
        topics
            .create(&PostParams::default(), &serde_json::from_value(duplicate)?)
            .await,
        "spec.topic",
    )?;
    ensure!(message.contains("MQTopic/first"), "{message}");
    let rename = Patch::Merge(json!({"spec": {"topic": "RENAMED"}}));
    refused(
        topics
            .patch("first", &PatchParams::default(), &rename)
            .await,
        "spec.topic is immutable",
    )?;
    let move_id = Patch::Merge(json!({"spec": {"instanceId": "MQ_INST_0000000000000001_moved"}}));
    refused(
        instances
            .patch("rules", &PatchParams::default(), &move_id)
            .await,
        "spec.instanceId is immutable",
    )?;
    refused(
        instances.delete("rules", &DeleteParams::default()).await,
        "MQTopic/first",
    )?;
    ensure!(
        topics.get_opt("second").await?.is_none(),
        "a refused resource was stored"
    );
    Ok(())
}

async fn conflicts() -> Result<()> {
    let tb = Testbed::shared().await?;
    let client = tb.client();
    mq_testbed::operator::install(tb, &client, Some(RESYNC_SECS)).await?;
    let ns = "op-rules";
    tb.create_namespace(&client, ns).await?;
    create::<MQInstance>(&client, ns, mq_testbed::operator::instance("rules", 1)).await?;
    let topic = |name: &str| mq_testbed::operator::topic(name, "rules", "LEDGER");
    create::<MQTopic>(&client, ns, topic("first")).await?;
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    let wait_reason = |name: &'static str, reason: &'static str| {
        let topics = topics.clone();
        let what = format!("MQTopic {name} with reason {reason}");
        async move {
            tb.until(&client_of(tb), "op-rules", &what, RUNNING, || {
                let topics = topics.clone();
                async move {
                    let (_, r, message) = ready_reason(&topics, name).await?;
                    if r == reason {
                        Ok(Some(message))
                    } else {
                        Err(format!("Ready reason {r}: {message}"))
                    }
                }
            })
            .await
        }
    };
    wait_reason("first", "Applied").await?;
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
    webhook_refusals(tb, &client, ns, &topics, &instances).await?;

    // Without the webhook the operator reports the same cases in status.
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    hooks
        .delete("mq-operator", &DeleteParams::default())
        .await?;
    mq_testbed::operator::webhook_off(tb, &client, ns, "first").await?;

    // The same topic name again: the younger resource loses and says to whom.
    create::<MQTopic>(&client, ns, topic("second")).await?;
    let message = wait_reason("second", "ResourceConflict").await?;
    ensure!(
        message.contains("MQTopic/first"),
        "conflict message: {message}"
    );

    // An immutable field changed: refused in status, the broker keeps the old topic.
    topics
        .patch(
            "first",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"topic": "RENAMED"}})),
        )
        .await?;
    let message = wait_reason("first", "NotSupported").await?;
    ensure!(
        message.contains("spec.topic") && message.contains("re-create"),
        "{message}"
    );

    // Paused resources are left alone and say so.
    topics
        .patch(
            "second",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mqfleet.io/pause-reconciliation": "true"}}}),
            ),
        )
        .await?;
    tb.until(
        &client,
        ns,
        "MQTopic second showing ReconciliationPaused",
        RUNNING,
        || {
            let topics = topics.clone();
            async move {
                let t = topics.get("second").await.map_err(|e| e.to_string())?;
                let paused = t
                    .status
                    .iter()
                    .flat_map(|s| s.conditions.iter())
                    .any(|c| c.type_ == "ReconciliationPaused" && c.status == "True");
                Ok(paused.then_some(()))
            }
        },
    )
    .await?;

    // Deleting the loser must not delete the winner's topic from the broker.
    let instance: MQInstance = Api::namespaced(client.clone(), ns).get("rules").await?;
    let id = instance
        .status
        .and_then(|s| s.instance_id)
        .context("no instance id")?;
    topics.delete("second", &DeleteParams::default()).await?;
    tb.until(
        &client,
        PLATFORM,
        "the losing MQTopic gone",
        RUNNING,
        || {
            let topics = topics.clone();
            async move {
                Ok(topics
                    .get_opt("second")
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none()
                    .then_some(()))
            }
        },
    )
    .await?;
    let on_broker = broker_topics(&client, &id).await?;
    ensure!(
        // Independent naming is the default, so the broker holds the namespaced name.
        on_broker.contains(&format!("{id}%LEDGER")),
        "the winner's topic went with the loser: {on_broker:?}"
    );

    // The instance id cannot move: refused in status, and the workloads keep theirs.
    instances
        .patch(
            "rules",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"instanceId": "MQ_INST_0000000000000001_moved"}})),
        )
        .await?;
    tb.until(&client, ns, "NotSupported on the instance", RUNNING, || {
        let instances = instances.clone();
        async move {
            let i = instances.get("rules").await.map_err(|e| e.to_string())?;
            let refused = i
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .any(|c| c.reason == "NotSupported" && c.message.contains("spec.instanceId"));
            Ok(refused.then_some(()))
        }
    })
    .await?;
    ensure!(
        broker_pod(&client, &id, 0).await.is_ok(),
        "the instance's broker went away"
    );

    // deletionPolicy retain: the resource goes, the topic stays on the broker.
    let mut kept = mq_testbed::operator::topic("kept", "rules", "KEPT");
    kept["spec"]["deletionPolicy"] = json!("retain");
    create::<MQTopic>(&client, ns, kept).await?;
    wait_reason("kept", "Applied").await?;
    topics.delete("kept", &DeleteParams::default()).await?;
    tb.until(&client, ns, "the retained MQTopic gone", RUNNING, || {
        let topics = topics.clone();
        async move {
            let gone = topics
                .get_opt("kept")
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            Ok(gone.then_some(()))
        }
    })
    .await?;
    let on_broker = broker_topics(&client, &id).await?;
    ensure!(
        on_broker.contains(&format!("{id}%KEPT")),
        "a retained topic was deleted from the broker: {on_broker:?}"
    );

    // Deleting the instance with a topic left is held back in status.
    instances.delete("rules", &DeleteParams::default()).await?;
    tb.until(
        &client,
        ns,
        "InstanceNotEmpty on the instance",
        RUNNING,
        || {
            let instances = instances.clone();
            async move {
                let i = instances.get("rules").await.map_err(|e| e.to_string())?;
                let held =
                    i.status.iter().flat_map(|s| s.conditions.iter()).any(|c| {
                        c.reason == "InstanceNotEmpty" && c.message.contains("MQTopic/first")
                    });
                Ok(held.then_some(()))
            }
        },
    )
    .await?;

    // The webhook comes back with its configuration: the operator writes its CA again.
    let workspace = mq_testbed::paths::workspace_dir();
    mq_testbed::apply_manifests(&client, &workspace.join("deploy")).await?;
    mq_testbed::operator::webhook_in_force(tb, &client, ns, "first").await?;

    // A forced instance delete goes through despite the remaining topic, and removes
    // the workloads of the id that was applied.
    instances
        .patch(
            "rules",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mqfleet.io/force-delete": "true"}}}),
            ),
        )
        .await?;
    instances.delete("rules", &DeleteParams::default()).await?;
    tb.until(
        &client,
        PLATFORM,
        "the force-deleted instance gone",
        RUNNING,
        || {
            let instances = instances.clone();
            async move {
                Ok(instances
                    .get_opt("rules")
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none()
                    .then_some(()))
            }
        },
    )
    .await?;
    tb.until(
        &client,
        PLATFORM,
        "the deleted instance's pods gone",
        RUNNING,
        || {
            let (client, id) = (client.clone(), id.clone());
            async move {
                let pods: Api<Pod> = Api::namespaced(client, PLATFORM);
                let selector = format!("mqfleet.io/instance-id={id}");
                let left = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(left.items.is_empty().then_some(()))
            }
        },
    )
    .await?;
    // The orphaned topic can still be deleted (its finalizer finds no instance).
    topics.delete("first", &DeleteParams::default()).await?;
    tb.until(
        &client,
        PLATFORM,
        "the orphaned MQTopic gone",
        RUNNING,
        || {
            let topics = topics.clone();
            async move {
                Ok(topics
                    .get_opt("first")
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none()
                    .then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}

fn client_of(tb: &Testbed) -> Client {
    tb.client()
}

async fn metric(pod: &Pod, name: &str) -> Result<f64> {
    mq_testbed::operator::metric(pod, name)
        .await
        .map_err(anyhow::Error::msg)
}

#[test]
fn an_idle_operator_writes_nothing_and_a_new_leader_takes_over() -> Result<()> {
    let _serial = serial();
    tokio::runtime::Runtime::new()?.block_on(idle_and_failover())
}

async fn idle_and_failover() -> Result<()> {
    let tb = Testbed::shared().await?;
    let client = tb.client();
    mq_testbed::operator::install(tb, &client, Some(RESYNC_SECS)).await?;
    let ns = "op-idle";
    tb.create_namespace(&client, ns).await?;
    create::<MQInstance>(&client, ns, mq_testbed::operator::instance("idle", 1)).await?;
    const TOPICS: usize = 20;
    for i in 0..TOPICS {
        let topic = mq_testbed::operator::topic(&format!("t{i}"), "idle", &format!("IDLE_{i}"));
        create::<MQTopic>(&client, ns, topic).await?;
    }
    mq_testbed::operator::topics_ready(tb, &client, ns, TOPICS, RUNNING).await?;
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    // The instance's status counts its topics at its next resync: idle starts after it.
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
    tb.until(
        &client,
        ns,
        "the instance counting every topic",
        RUNNING,
        || {
            let instances = instances.clone();
            async move {
                let i = instances.get("idle").await.map_err(|e| e.to_string())?;
                let counted = i.status.map(|s| s.topics).unwrap_or_default();
                if counted == TOPICS as i32 {
                    Ok(Some(()))
                } else {
                    Err(format!("{counted} counted"))
                }
            }
        },
    )
    .await?;

    // Idle: resyncs (every 5 s here) reconcile everything and write nothing.
    let lead = tb
        .until(&client, PLATFORM, "a lease holder", RUNNING, || {
            let client = client.clone();
            async move { mq_testbed::operator::leader(&client).await.map(Some) }
        })
        .await?;
    ensure!(
        metric(&lead, "mq_operator_leader").await? == 1.0,
        "the holder does not say it leads"
    );
    // Idle begins once the operator has converged: a whole resync period without a write
    // (the instance's last status update can land just after its topics are counted). A
    // resync that keeps writing never gets here and fails below the deadline.
    let settle_deadline = std::time::Instant::now() + RUNNING;
    let mut writes = metric(&lead, "mq_operator_api_writes_total").await?;
    loop {
        tokio::time::sleep(Duration::from_secs(RESYNC_SECS + 1)).await;
        let now = metric(&lead, "mq_operator_api_writes_total").await?;
        if now == writes {
            break;
        }
        ensure!(
            std::time::Instant::now() < settle_deadline,
            "the operator kept writing ({writes} → {now}) for {RUNNING:?} after converging"
        );
        writes = now;
    }
    let reconciles = metric(&lead, "mq_operator_reconciles_total{kind=\"MQTopic\"}").await?;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let reconciled =
        metric(&lead, "mq_operator_reconciles_total{kind=\"MQTopic\"}").await? - reconciles;
    ensure!(
        reconciled >= TOPICS as f64,
        "no resync ran while idle ({reconciled} reconciles)"
    );
    let wrote = metric(&lead, "mq_operator_api_writes_total").await? - writes;
    ensure!(
        wrote == 0.0,
        "an idle operator wrote {wrote} times during {reconciled} reconciles"
    );

    // The leader goes; the other replica takes the lease and works.
    Api::<Pod>::namespaced(client.clone(), PLATFORM)
        .delete(&lead.name_any(), &DeleteParams::default())
        .await?;
    let old = lead.name_any();
    let successor = tb
        .until(
            &client,
            PLATFORM,
            "another replica holding the lease",
            RUNNING,
            || {
                let (client, old) = (client.clone(), old.clone());
                async move {
                    let pod = mq_testbed::operator::leader(&client).await?;
                    Ok((pod.name_any() != old).then_some(pod))
                }
            },
        )
        .await?;
    // The lease names the successor as soon as its lease task wrote it; the process says
    // it leads a moment later (a loaded machine stretches that moment).
    tb.until(
        &client,
        PLATFORM,
        "the successor saying it leads",
        RUNNING,
        || {
            let successor = successor.clone();
            async move {
                let leads = metric(&successor, "mq_operator_leader")
                    .await
                    .map_err(|e| e.to_string())?;
                if leads == 1.0 {
                    Ok(Some(()))
                } else {
                    Err(format!("mq_operator_leader {leads}"))
                }
            }
        },
    )
    .await?;
    let after = mq_testbed::operator::topic("after", "idle", "AFTER_FAILOVER");
    create::<MQTopic>(&client, ns, after).await?;
    tb.until(
        &client,
        ns,
        "a topic made after the failover Ready",
        RUNNING,
        || {
            let topics = topics.clone();
            async move {
                let t = topics.get("after").await.map_err(|e| e.to_string())?;
                Ok(is_ready(t.metadata.generation, t.status.as_ref()).then_some(()))
            }
        },
    )
    .await?;

    // Clean up so the platform namespace is left as found.
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
    instances
        .patch(
            "idle",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mqfleet.io/force-delete": "true"}}}),
            ),
        )
        .await?;
    instances.delete("idle", &DeleteParams::default()).await?;
    Ok(())
}

/// Sends `bodies` until each is acknowledged (a send may fail while routes move); returns
/// how many attempts failed.
async fn send_all(producer: &mut DefaultMQProducer, topic: &str, bodies: &[String]) -> usize {
    let mut failures = 0;
    for body in bodies {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let message = Message::builder()
                .topic(topic)
                .tags("T")
                .body_slice(body.as_bytes())
                .build_unchecked();
            match producer.send(message).await {
                Ok(_) => break,
                Err(e) => {
                    failures += 1;
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{body} never acknowledged: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    failures
}

#[test]
fn scaling_down_drains_the_leaving_broker_first() -> Result<()> {
    let _serial = serial();
    const DRAIN_TOPIC: &str = "DRAINED";
    const DRAIN_GROUP: &str = "GID_DRAIN";
    const LATE_GROUP: &str = "GID_LATE";
    let ns = "op-drain";
    let runtime = tokio::runtime::Runtime::new()?;
    let (endpoint, id) = runtime.block_on(async {
        let tb = Testbed::shared().await?;
        let client = tb.client();
        mq_testbed::operator::install(tb, &client, Some(RESYNC_SECS)).await?;
        tb.create_namespace(&client, ns).await?;
        create::<MQInstance>(&client, ns, mq_testbed::operator::instance("drain", 2)).await?;
        let mut topic = mq_testbed::operator::topic("drained", "drain", DRAIN_TOPIC);
        topic["spec"]["queues"] = json!(4);
        create::<MQTopic>(&client, ns, topic).await?;
        let group = mq_testbed::operator::group("drain", "drain", DRAIN_GROUP);
        create::<MQGroup>(&client, ns, group).await?;
        // A declared group that has not consumed yet: the drain must wait for it too.
        let late = mq_testbed::operator::group("late", "drain", LATE_GROUP);
        create::<MQGroup>(&client, ns, late).await?;
        let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
        let instance = tb
            .until(
                &client,
                PLATFORM,
                "2 brokers serving the topic",
                RUNNING,
                || {
                    let (client, topics) = (client.clone(), topics.clone());
                    async move {
                        let i: MQInstance = Api::namespaced(client, ns)
                            .get("drain")
                            .await
                            .map_err(|e| e.to_string())?;
                        let t = topics.get("drained").await.map_err(|e| e.to_string())?;
                        let on = t.status.map(|s| s.brokers).unwrap_or_default();
                        let ready = i.status.as_ref().is_some_and(|s| s.ready_brokers == 2);
                        Ok((ready && on.len() == 2).then_some(i))
                    }
                },
            )
            .await?;
        let status = instance.status.context("no status")?;
        anyhow::Ok((
            status.endpoint.context("no endpoint")?,
            status.instance_id.context("no id")?,
        ))
    })?;

    let received = Arc::new(Mutex::new(HashSet::new()));
    let late_received = Arc::new(Mutex::new(HashSet::new()));
    let namespace = id.clone();
    let config = move |name: &str| rocketmq_client_rust::ClientConfig {
        namespace: Some(namespace.clone().into()),
        ..support::client_config(&endpoint, name)
    };
    let acked: Vec<String> = support::Client::new().run(|rt| {
        let received = received.clone();
        let late_received = late_received.clone();
        let id = id.clone();
        async move {
            let tb = Testbed::shared().await.expect("testbed");
            let client = tb.client();
            let consumer_of = |name: &str, group: &str, into: &Arc<Mutex<HashSet<String>>>| {
                let mut c = DefaultMQPushConsumer::builder(rt.clone())
                    .client_config(config(name))
                    .consumer_group(group.to_string())
                    .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                    .consume_thread_min(4)
                    .consume_thread_max(4)
                    .build();
                c.register_message_listener_concurrently(support::Collect(into.clone()));
                c
            };
            let consumer = |name: &str| consumer_of(name, DRAIN_GROUP, &received);
            let mut producer = DefaultMQProducer::builder(rt.clone())
                .client_config(config("drain-producer"))
                .producer_group("GID_DRAIN_PRODUCER")
                .build();
            producer.start().await.expect("producer starts");
            let count = |prefix: &str| {
                received
                    .lock()
                    .map(|r| r.iter().filter(|b| b.starts_with(prefix)).count())
                    .unwrap_or(0)
            };

            // The group consumes for a while (offsets on both brokers), then goes away.
            let mut first = consumer("drain-c1");
            first.subscribe(DRAIN_TOPIC, "*").await.expect("subscribe");
            first.start().await.expect("consumer starts");
            let warm: Vec<String> = (0..40).map(|i| format!("warm-{i}")).collect();
            send_all(&mut producer, DRAIN_TOPIC, &warm).await;
            support::eventually("the warm-up consumed", Duration::from_secs(60), || {
                count("warm-") == 40
            })
            .await;
            first.shutdown().await;

            // A backlog on both brokers, then the scale-down.
            let backlog: Vec<String> = (0..200).map(|i| format!("backlog-{i}")).collect();
            send_all(&mut producer, DRAIN_TOPIC, &backlog).await;
            let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
            instances
                .patch(
                    "drain",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"brokers": {"replicas": 1}}})),
                )
                .await
                .expect("scale down");
            let draining = tb
                .until(
                    &client,
                    PLATFORM,
                    "the Draining condition naming broker-1",
                    RUNNING,
                    || {
                        let instances = instances.clone();
                        async move {
                            let i = instances.get("drain").await.map_err(|e| e.to_string())?;
                            let c = i
                                .status
                                .iter()
                                .flat_map(|s| s.conditions.iter())
                                .find(|c| c.type_ == "Draining")
                                .cloned();
                            Ok(
                                c.filter(|c| c.status == "True" && c.message.contains("broker-1"))
                                    .map(|c| c.message),
                            )
                        }
                    },
                )
                .await
                .expect("draining");
            assert!(draining.contains(DRAIN_GROUP), "{draining}");
            broker_pod(&client, &id, 1)
                .await
                .expect("broker-1 stays while it drains");

            // The producer keeps going: every acknowledged message must arrive.
            let during: Vec<String> = (0..100).map(|i| format!("during-{i}")).collect();
            let failed = send_all(&mut producer, DRAIN_TOPIC, &during).await;
            println!("sends refused while routes moved: {failed}");
            let mut second = consumer("drain-c2");
            second.subscribe(DRAIN_TOPIC, "*").await.expect("subscribe");
            second.start().await.expect("consumer starts");
            support::eventually(
                "the backlog and later messages consumed",
                Duration::from_secs(90),
                || count("backlog-") == 200 && count("during-") == 100,
            )
            .await;
            // The group that never consumed still has all of it on broker-1: it stays.
            let instance = instances.get("drain").await.expect("instance");
            let waiting = instance
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .find(|c| c.type_ == "Draining")
                .map(|c| (c.status.clone(), c.message.clone()))
                .unwrap_or_default();
            assert!(
                waiting.0 == "True" && waiting.1.contains(LATE_GROUP),
                "the drain ended while {LATE_GROUP} had not consumed: {waiting:?}"
            );
            broker_pod(&client, &id, 1)
                .await
                .expect("broker-1 stays while a group that never consumed has a backlog there");
            let mut late = consumer_of("drain-late", LATE_GROUP, &late_received);
            late.subscribe(DRAIN_TOPIC, "*").await.expect("subscribe");
            late.start().await.expect("late consumer starts");
            let late_count = |prefix: &str| {
                late_received
                    .lock()
                    .map(|r| r.iter().filter(|b| b.starts_with(prefix)).count())
                    .unwrap_or(0)
            };
            support::eventually(
                "the late group consuming everything",
                Duration::from_secs(90),
                || {
                    late_count("warm-") == 40
                        && late_count("backlog-") == 200
                        && late_count("during-") == 100
                },
            )
            .await;
            tb.until(
                &client,
                PLATFORM,
                "broker-1 gone and the instance at 1 broker",
                RUNNING,
                || {
                    let (client, instances, id) = (client.clone(), instances.clone(), id.clone());
                    async move {
                        let gone = broker_pod(&client, &id, 1).await.is_err();
                        let i = instances.get("drain").await.map_err(|e| e.to_string())?;
                        let s = i.status.unwrap_or_default();
                        let drained = s
                            .conditions
                            .iter()
                            .any(|c| c.type_ == "Draining" && c.reason == "Drained");
                        if gone
                            && drained
                            && s.ready_brokers == 1
                            && s.phase == Some(Phase::Running)
                        {
                            Ok(Some(()))
                        } else {
                            Err(format!(
                                "broker-1 gone: {gone}, drained: {drained}, {} ready broker(s)",
                                s.ready_brokers
                            ))
                        }
                    }
                },
            )
            .await
            .expect("scale-down finished");
            second.shutdown().await;
            late.shutdown().await;
            producer.shutdown().await;
            backlog.into_iter().chain(during).collect()
        }
    });
    let received = received.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let lost: Vec<&String> = acked.iter().filter(|b| !received.contains(*b)).collect();
    ensure!(lost.is_empty(), "acknowledged but never consumed: {lost:?}");
    let late = late_received
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let lost: Vec<&String> = acked.iter().filter(|b| !late.contains(*b)).collect();
    ensure!(
        lost.is_empty(),
        "acknowledged but never consumed by {LATE_GROUP}: {lost:?}"
    );
    runtime.block_on(async {
        let tb = Testbed::shared().await?;
        let client = tb.client();
        let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
        instances
            .patch(
                "drain",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"mqfleet.io/force-delete": "true"}}}),
                ),
            )
            .await?;
        instances.delete("drain", &DeleteParams::default()).await?;
        anyhow::Ok(())
    })
}

#[test]
fn everything_converges_after_an_api_server_restart() -> Result<()> {
    let _serial = serial();
    tokio::runtime::Runtime::new()?.block_on(api_server_restart())
}

async fn api_server_restart() -> Result<()> {
    let tb = Testbed::shared().await?;
    let client = tb.client();
    mq_testbed::operator::install(tb, &client, Some(RESYNC_SECS)).await?;
    let ns = "op-restart";
    tb.create_namespace(&client, ns).await?;
    create::<MQInstance>(&client, ns, mq_testbed::operator::instance("restart", 1)).await?;
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
    let running = |instances: Api<MQInstance>| async move {
        let i = instances.get("restart").await.map_err(|e| e.to_string())?;
        let ok = i.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
            && is_ready(i.metadata.generation, i.status.as_ref());
        Ok(ok.then_some(i))
    };
    let before = tb
        .until(&client, PLATFORM, "the instance Running", RUNNING, || {
            running(instances.clone())
        })
        .await?;
    let id = before.status.and_then(|s| s.instance_id).context("no id")?;
    let broker = broker_pod(&client, &id, 0).await?;

    tb.restart_apiserver().await?;

    // Watches reconnect: a topic made after the restart is applied, the instance is
    // still Running, and the node kept the broker running all along.
    let client = tb.client();
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    topics
        .create(
            &PostParams::default(),
            &serde_json::from_value(mq_testbed::operator::topic(
                "late",
                "restart",
                "AFTER_RESTART",
            ))?,
        )
        .await?;
    tb.until(
        &client,
        PLATFORM,
        "a topic made after the restart Ready",
        RUNNING,
        || {
            let topics = topics.clone();
            async move {
                let t = topics.get("late").await.map_err(|e| e.to_string())?;
                Ok(is_ready(t.metadata.generation, t.status.as_ref()).then_some(()))
            }
        },
    )
    .await?;
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
    tb.until(
        &client,
        PLATFORM,
        "the instance still Running",
        RUNNING,
        || running(instances.clone()),
    )
    .await?;
    let after = broker_pod(&client, &id, 0).await?;
    ensure!(after.uid() == broker.uid(), "the broker pod was replaced");
    let restarts = after
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().map(|c| c.restart_count))
        .unwrap_or(-1);
    ensure!(
        restarts == 0,
        "the broker restarted {restarts} times across the API server restart"
    );
    instances
        .patch(
            "restart",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mqfleet.io/force-delete": "true"}}}),
            ),
        )
        .await?;
    instances
        .delete("restart", &DeleteParams::default())
        .await?;
    Ok(())
}

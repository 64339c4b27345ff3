//! End-to-end: the operator defects fixed in issue 10 (item 6), each as a user notices it.
//! A globally ordered topic waits for its fixed broker instead of moving to another one; a
//! refused instance deletion is retried every few seconds and says why, so the instance
//! goes soon after its last child; a topic whose broker refuses its deletion says so
//! (`DeletionBlocked`) and `mqfleet.io/force-delete` removes it anyway; `/readyz` follows
//! the API server's reachability; a renewed webhook certificate keeps its CA, so the API
//! server keeps trusting the webhook. Each test says what the old behaviour was.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use mq_broker::client::AdminClient;
use mq_operator::crd::{MQInstance, MQTopic, is_ready};
use mq_testbed::Testbed;
use mq_testbed::operator::create;
use mq_testbed::operator::{PLATFORM, instance_admin_key, instance_running, server_pod};
use serde_json::json;

/// Bound on an instance becoming Running, and on most other waits.
const RUNNING: Duration = Duration::from_secs(90);

/// The tests share one operator (and some restart it or its API server): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The shared testbed with the operator installed from `deploy/`.
async fn start() -> Result<(&'static Testbed, Client)> {
    let tb = Testbed::shared().await?;
    let client = tb.client();
    mq_testbed::operator::install(tb, &client, None).await?;
    Ok((tb, client))
}

fn annotate(key: &str, value: Option<&str>) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"annotations": {key: value}}}))
}

/// Waits until instance `name` is Running with `brokers` ready brokers; its id.
async fn running(
    tb: &Testbed,
    client: &Client,
    ns: &str,
    name: &str,
    brokers: i32,
) -> Result<String> {
    instance_running(tb, client, ns, name, Some(brokers), RUNNING)
        .await?
        .status
        .and_then(|s| s.instance_id)
        .context("no instance id")
}

/// Waits until MQTopic `name` is Ready for its generation; its status.
async fn topic_ready(
    tb: &Testbed,
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<mq_operator::crd::MQTopicStatus> {
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    let what = format!("MQTopic {name} Ready");
    Ok(tb
        .until(client, ns, &what, RUNNING, || {
            let topics = topics.clone();
            async move {
                let t = topics.get(name).await.map_err(|e| e.to_string())?;
                let ready = is_ready(t.metadata.generation, t.status.as_ref());
                Ok(ready.then(|| t.status.unwrap_or_default()))
            }
        })
        .await?)
}

/// Waits until `name` of `api` is gone.
async fn gone<K>(
    tb: &Testbed,
    client: &Client,
    api: &Api<K>,
    name: &str,
    bound: Duration,
) -> Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let what = format!("{} {name} gone", K::kind(&()));
    tb.until(client, PLATFORM, &what, bound, || {
        let api = api.clone();
        async move {
            let left = api.get_opt(name).await.map_err(|e| e.to_string())?;
            Ok(left.is_none().then_some(()))
        }
    })
    .await?;
    Ok(())
}

/// Removes instance `name` (forced: whatever children are left) and waits until it is
/// gone, so the next test has the cores to itself.
async fn remove_instance(tb: &Testbed, client: &Client, ns: &str, name: &str) -> Result<()> {
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
    instances
        .patch(
            name,
            &PatchParams::default(),
            &annotate("mqfleet.io/force-delete", Some("true")),
        )
        .await?;
    instances.delete(name, &DeleteParams::default()).await?;
    gone(tb, client, &instances, name, RUNNING).await
}

/// The topics on broker `broker-<ordinal>` of the instance, asked with `key` (the
/// instance's admin key unless a test changed what the brokers hold).
async fn broker_topics(
    client: &Client,
    instance_id: &str,
    ordinal: usize,
    key: &mq_broker::acl::Credentials,
) -> std::result::Result<Vec<String>, String> {
    let (_, ip) = server_pod(client, instance_id, "broker", ordinal).await?;
    let admin = AdminClient::connect(&format!("{ip}:10911"), Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?
        .with_credentials(key.clone());
    Ok(admin
        .topics()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|t| t.topic_name)
        .collect())
}

/// The Ready condition of `topic`: (status, reason, message), for its generation only.
fn ready_condition(topic: &MQTopic) -> Option<(String, String, String)> {
    let status = topic.status.as_ref()?;
    if status.observed_generation != topic.metadata.generation {
        return None;
    }
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

// ---------------------------------------------------------------------------------------
// 1. A globally ordered topic stays on its fixed broker.
// ---------------------------------------------------------------------------------------

#[test]
fn a_globally_ordered_topic_waits_for_broker_0_and_never_moves() -> Result<()> {
    let _serial = serial();
    tokio::runtime::Runtime::new()?.block_on(global_order())
}

/// Before the fix the topic went to the first *ready* broker (`brokers[..1]`): with
/// broker-0 not ready, a reconcile created it on broker-1, so the one queue that orders
/// everything existed twice and clients' order was lost.
async fn global_order() -> Result<()> {
    let (tb, client) = start().await?;
    let ns = "def-order";
    tb.create_namespace(&client, ns).await?;
    create::<MQInstance>(&client, ns, mq_testbed::operator::instance("order", 2)).await?;
    let mut topic = mq_testbed::operator::topic("ledger", "order", "LEDGER");
    topic["spec"]["orderType"] = json!(2);
    topic["spec"]["remark"] = json!("first");
    create::<MQTopic>(&client, ns, topic).await?;
    let id = running(tb, &client, ns, "order", 2).await?;
    let status = topic_ready(tb, &client, ns, "ledger").await?;
    ensure!(
        status.brokers == [mq_operator::controller::brokers::GLOBAL_ORDER_BROKER],
        "a globally ordered topic on {:?}",
        status.brokers
    );
    // Independent naming is the default: the brokers hold the namespaced name.
    let canonical = format!("{id}%LEDGER");
    let key = instance_admin_key(&client, &id).await?;
    let on = |ordinal| {
        let (client, id, key, canonical) =
            (client.clone(), id.clone(), key.clone(), canonical.clone());
        async move {
            broker_topics(&client, &id, ordinal, &key)
                .await
                .map(|t| t.contains(&canonical))
        }
    };
    ensure!(on(0).await.map_err(anyhow::Error::msg)?, "not on broker-0");
    ensure!(
        !on(1).await.map_err(anyhow::Error::msg)?,
        "on broker-1 as well"
    );

    // broker-0 hangs (SIGSTOP): its readiness probe fails and the pod turns not Ready,
    // while broker-1 serves on.
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    let (broker0, _) = server_pod(&client, &id, "broker", 0)
        .await
        .map_err(anyhow::Error::msg)?;
    let process = mq_testbed::wait::container_process(&broker0, "broker")
        .context("broker-0 has no running process")?;
    let frozen = mq_testbed::process::Frozen::new(process).context("freezing broker-0")?;
    tb.until(&client, PLATFORM, "broker-0 not Ready", RUNNING, || {
        let (pods, name) = (pods.clone(), broker0.name_any());
        async move {
            let pod = pods.get(&name).await.map_err(|e| e.to_string())?;
            Ok((!mq_testbed::wait::is_ready(&pod)).then_some(()))
        }
    })
    .await?;

    // The topic changes meanwhile, so it is reconciled while only broker-1 is ready.
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    let touched = topics
        .patch(
            "ledger",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"remark": "touched while broker-0 is down"}})),
        )
        .await?;
    let message = tb
        .until(
            &client,
            ns,
            "the topic waiting for broker-0 (not Ready, naming it)",
            RUNNING,
            || {
                let topics = topics.clone();
                async move {
                    if on(1).await? {
                        return Ok(Some(Err("the topic was created on broker-1".to_owned())));
                    }
                    let t = topics.get("ledger").await.map_err(|e| e.to_string())?;
                    match ready_condition(&t) {
                        Some((s, _, m)) if s == "False" && m.contains("broker-0") => {
                            Ok(Some(Ok(m)))
                        }
                        other => Err(format!("Ready condition for this generation: {other:?}")),
                    }
                }
            },
        )
        .await?
        .map_err(anyhow::Error::msg)?;
    println!("while broker-0 is down: {message}");
    ensure!(
        touched.metadata.generation
            == topics
                .get("ledger")
                .await?
                .status
                .and_then(|s| s.observed_generation),
        "the waiting status is not for the touched generation"
    );
    ensure!(
        !on(1).await.map_err(anyhow::Error::msg)?,
        "the topic moved to broker-1"
    );

    // broker-0 is back: the topic is Ready on it again, and still only there.
    frozen.thaw();
    let status = topic_ready(tb, &client, ns, "ledger").await?;
    ensure!(
        status.brokers == ["broker-0"],
        "after broker-0 came back: on {:?}",
        status.brokers
    );
    ensure!(
        on(0).await.map_err(anyhow::Error::msg)?,
        "not on broker-0 any more"
    );
    ensure!(
        !on(1).await.map_err(anyhow::Error::msg)?,
        "on broker-1 after broker-0 came back"
    );
    let after = pods.get(&broker0.name_any()).await?;
    ensure!(
        after.uid() == broker0.uid(),
        "broker-0 was replaced (the test meant it to hang, not to go)"
    );

    topics.delete("ledger", &DeleteParams::default()).await?;
    gone(tb, &client, &topics, "ledger", RUNNING).await?;
    remove_instance(tb, &client, ns, "order").await
}

// ---------------------------------------------------------------------------------------
// 2. A refused instance deletion retries quickly and says so.
// ---------------------------------------------------------------------------------------

#[test]
fn a_refused_instance_deletion_retries_quickly_and_says_why() -> Result<()> {
    let _serial = serial();
    tokio::runtime::Runtime::new()?.block_on(refused_deletion())
}

/// Before the fix the refusal came out of the finalizer wrapped: it was reported as
/// `ReconcileFailed` and retried with the full back-off (5, 10, 20, 40 s … up to 5 min),
/// so an instance whose last topic went waited minutes to go.
async fn refused_deletion() -> Result<()> {
    let (tb, client) = start().await?;
    let ns = "def-empty";
    tb.create_namespace(&client, ns).await?;
    create::<MQInstance>(&client, ns, mq_testbed::operator::instance("empty", 1)).await?;
    create::<MQTopic>(
        &client,
        ns,
        mq_testbed::operator::topic("keep", "empty", "KEEP"),
    )
    .await?;
    running(tb, &client, ns, "empty", 1).await?;
    topic_ready(tb, &client, ns, "keep").await?;

    // Without the webhook (which would refuse the delete), the operator refuses it.
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    hooks
        .delete("mq-operator", &DeleteParams::default())
        .await?;
    mq_testbed::operator::webhook_off(tb, &client, ns, "keep").await?;
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
    instances.delete("empty", &DeleteParams::default()).await?;

    // Every retry (5 s apart) says why: one Event on the instance, repeated. With the old
    // back-off the fourth attempt came after 35 s, under another reason.
    let began = Instant::now();
    let (count, note) = tb
        .until(
            &client,
            ns,
            "the InstanceNotEmpty Event repeated 4 times within 30 s",
            Duration::from_secs(30),
            || {
                let client = client.clone();
                async move {
                    let events = mq_testbed::operator::events(
                        &client,
                        ns,
                        "MQInstance",
                        "empty",
                        "InstanceNotEmpty",
                    )
                    .await?;
                    match events.into_iter().max_by_key(|(count, _)| *count) {
                        Some((count, note)) if count >= 4 => Ok(Some((count, note))),
                        other => Err(format!("so far: {other:?}")),
                    }
                }
            },
        )
        .await?;
    println!(
        "InstanceNotEmpty recorded {count} times in {:.1} s: {note}",
        began.elapsed().as_secs_f64()
    );
    ensure!(
        note.contains("MQTopic/keep"),
        "the Event does not name the topic: {note}"
    );
    let i = instances.get("empty").await?;
    let held = i
        .status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .any(|c| c.reason == "InstanceNotEmpty" && c.message.contains("MQTopic/keep"));
    ensure!(held, "the status does not say why: {:?}", i.status);

    // The webhook comes back (its configuration re-applied; the operator fills its CA in).
    let workspace = mq_testbed::paths::workspace_dir();
    mq_testbed::apply_manifests(&client, &workspace.join("deploy")).await?;
    mq_testbed::operator::webhook_in_force(tb, &client, ns, "keep").await?;

    // Once the topic is gone, the next retry removes the instance: within seconds.
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    topics.delete("keep", &DeleteParams::default()).await?;
    gone(tb, &client, &topics, "keep", RUNNING).await?;
    let since = Instant::now();
    gone(tb, &client, &instances, "empty", Duration::from_secs(20)).await?;
    println!(
        "instance gone {:.1} s after its last topic",
        since.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. A broker refusing a topic's deletion: DeletionBlocked, and force-delete.
// ---------------------------------------------------------------------------------------

#[test]
fn a_refused_topic_deletion_is_reported_and_force_delete_removes_it() -> Result<()> {
    let _serial = serial();
    tokio::runtime::Runtime::new()?.block_on(blocked_deletion())
}

/// Before the fix a broker refusing the delete kept the MQTopic in deletion for ever:
/// retried with back-off, nothing in its status, and `mqfleet.io/force-delete` on a topic
/// was ignored.
///
/// A Ready broker that refuses the operator's admin calls: the instance is paused (so the
/// operator does not write its Secrets back), the admin account of its ACL file and its
/// admin key Secret get another key, and name server and broker restart with them. They
/// accept each other (same key), the broker is Ready, and every call the operator signs
/// with the real key is refused.
async fn blocked_deletion() -> Result<()> {
    let (tb, client) = start().await?;
    let ns = "def-blocked";
    tb.create_namespace(&client, ns).await?;
    // With tenant ACL on, the brokers of this base check every request's signature.
    let mut instance = mq_testbed::operator::instance("blocked", 1);
    instance["spec"]["aclEnabled"] = json!(true);
    create::<MQInstance>(&client, ns, instance).await?;
    create::<MQTopic>(
        &client,
        ns,
        mq_testbed::operator::topic("stuck", "blocked", "STUCK"),
    )
    .await?;
    let id = running(tb, &client, ns, "blocked", 1).await?;
    topic_ready(tb, &client, ns, "stuck").await?;
    let canonical = format!("{id}%STUCK");

    let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
    instances
        .patch(
            "blocked",
            &PatchParams::default(),
            &annotate("mqfleet.io/pause-reconciliation", Some("true")),
        )
        .await?;
    tb.until(&client, ns, "the instance paused", RUNNING, || {
        let instances = instances.clone();
        async move {
            let i = instances.get("blocked").await.map_err(|e| e.to_string())?;
            let paused = i
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .any(|c| c.type_ == "ReconciliationPaused" && c.status == "True");
            Ok(paused.then_some(()))
        }
    })
    .await?;
    // The brokers take their admin account from the ACL file (Secret `<base>-acl`,
    // mounted, reloaded live); with the instance paused the operator leaves it as it is.
    let names = mq_operator::controller::workloads::Names::for_id(id.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), PLATFORM);
    let acl = secrets.get(&names.acl()).await?;
    let file = secret_text(&acl, "plain_acl.yml");
    let mut parsed: serde_json::Value = serde_json::from_str(&file)?;
    let real = instance_admin_key(&client, &id).await?;
    let mut wrong = real.clone();
    wrong.secret_key = "not-the-operators-key".into();
    let mut changed = 0;
    for account in parsed["accounts"].as_array_mut().into_iter().flatten() {
        if account["admin"] == json!(true) && account["accessKey"] == json!(real.access_key) {
            account["secretKey"] = json!(wrong.secret_key);
            changed += 1;
        }
    }
    ensure!(changed == 1, "no admin account in the ACL file: {file}");
    secrets
        .patch(
            &names.acl(),
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"plain_acl.yml": parsed.to_string()}})),
        )
        .await?;
    // The pods' own admin key (Secret `<base>-admin`, read at start) changes too, and
    // name server and broker restart with it.
    secrets
        .patch(
            &names.admin(),
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"secretKey": wrong.secret_key}})),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    let mut old = Vec::new();
    for component in ["namesrv", "broker"] {
        let (pod, _) = server_pod(&client, &id, component, 0)
            .await
            .map_err(anyhow::Error::msg)?;
        pods.delete(&pod.name_any(), &DeleteParams::default())
            .await?;
        old.push((component, pod.uid()));
    }
    let refuses = |key: mq_broker::acl::Credentials| {
        let (client, id) = (client.clone(), id.clone());
        async move {
            let (_, ip) = server_pod(&client, &id, "broker", 0).await?;
            let admin = AdminClient::connect(&format!("{ip}:10911"), Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?
                .with_credentials(key);
            Ok::<_, String>(match admin.delete_topic("NO_SUCH_TOPIC").await {
                Ok(()) => false,
                Err(e) => !e.is_not_found(),
            })
        }
    };
    tb.until(
        &client,
        PLATFORM,
        "the Ready broker refusing the operator's key and taking the other",
        RUNNING,
        || {
            let (client, id, real, wrong) =
                (client.clone(), id.clone(), real.clone(), wrong.clone());
            let old = old.clone();
            async move {
                for (component, uid) in &old {
                    let (pod, _) = server_pod(&client, &id, component, 0).await?;
                    if pod.uid() == *uid || !mq_testbed::wait::is_ready(&pod) {
                        return Err(format!("{component}-0 not back yet"));
                    }
                }
                let ok = refuses(real).await? && !refuses(wrong).await?;
                Ok(ok.then_some(()))
            }
        },
    )
    .await?;
    ensure!(
        broker_topics(&client, &id, 0, &wrong)
            .await
            .map_err(anyhow::Error::msg)?
            .contains(&canonical),
        "the topic is not on the broker"
    );

    // Deleting the topic: the broker refuses, and after a few attempts the status says so.
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    topics.delete("stuck", &DeleteParams::default()).await?;
    let message = tb
        .until(&client, ns, "DeletionBlocked on the topic", RUNNING, || {
            let topics = topics.clone();
            async move {
                let t = topics.get("stuck").await.map_err(|e| e.to_string())?;
                match ready_condition(&t) {
                    Some((_, r, m)) if r == "DeletionBlocked" => Ok(Some(m)),
                    other => Err(format!("{other:?}")),
                }
            }
        })
        .await?;
    println!("blocked: {message}");
    ensure!(
        message.contains("broker-0") && message.contains("mqfleet.io/force-delete"),
        "{message}"
    );
    let t = topics.get("stuck").await?;
    ensure!(
        t.metadata.deletion_timestamp.is_some(),
        "the blocked topic is not in deletion"
    );
    ensure!(
        broker_topics(&client, &id, 0, &wrong)
            .await
            .map_err(anyhow::Error::msg)?
            .contains(&canonical),
        "the topic left the broker although its deletion was refused"
    );

    // Forced: the resource goes, the topic stays on the broker, and an Event says so.
    topics
        .patch(
            "stuck",
            &PatchParams::default(),
            &annotate("mqfleet.io/force-delete", Some("true")),
        )
        .await?;
    gone(tb, &client, &topics, "stuck", Duration::from_secs(30)).await?;
    let notes: Vec<String> =
        mq_testbed::operator::events(&client, ns, "MQTopic", "stuck", "ForceDeleted")
            .await
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|(_, note)| note)
            .collect();
    ensure!(
        notes
            .iter()
            .any(|n| n.contains("STUCK") && n.contains("broker-0")),
        "no ForceDeleted Event naming the topic and broker: {notes:?}"
    );
    ensure!(
        broker_topics(&client, &id, 0, &wrong)
            .await
            .map_err(anyhow::Error::msg)?
            .contains(&canonical),
        "a force-deleted topic was removed from the refusing broker"
    );
    remove_instance(tb, &client, ns, "blocked").await
}

// ---------------------------------------------------------------------------------------
// 4. /livez and /readyz.
// ---------------------------------------------------------------------------------------

#[test]
fn readyz_fails_while_the_api_server_does_not_answer() -> Result<()> {
    let _serial = serial();
    tokio::runtime::Runtime::new()?.block_on(health())
}

/// `GET path` on `pod`: the status code (any failure to get one counts as 0).
async fn probe(pod: &Pod, path: &str) -> (u16, String) {
    mq_testbed::operator::ops_get(pod, path)
        .await
        .unwrap_or_else(|e| (0, e))
}

/// Before the fix `/healthz`, `/readyz` and `/livez` answered 200 whatever happened: a
/// replica cut off from the API server stayed Ready (and kept its webhook endpoint).
///
/// The API server is frozen (SIGSTOP), so requests hang as in a real outage. The leader
/// may lose its lease meanwhile (it cannot renew) and restart, so the replica asserted on
/// during the outage is the one waiting for the lease, whose process keeps running.
async fn health() -> Result<()> {
    let (tb, client) = start().await?;
    let leader = tb
        .until(&client, PLATFORM, "a lease holder", RUNNING, || {
            let client = client.clone();
            async move { mq_testbed::operator::leader(&client).await.map(Some) }
        })
        .await?;
    for path in ["/livez", "/readyz", "/healthz"] {
        let (code, body) = probe(&leader, path).await;
        ensure!(code == 200, "the leader's {path}: {code} {body}");
    }
    let pods = mq_testbed::operator::operator_pods(&client)
        .await
        .map_err(anyhow::Error::msg)?;
    let follower = pods
        .iter()
        .find(|p| p.name_any() != leader.name_any())
        .cloned()
        .context("no second replica")?;
    let (code, body) = probe(&follower, "/readyz").await;
    ensure!(code == 200, "the waiting replica's /readyz: {code} {body}");

    // No API calls from here until the server is back: they would hang.
    let frozen = tb.freeze_apiserver()?;
    let froze = Instant::now();
    let bound = Duration::from_secs(45);
    let body = loop {
        let (code, body) = probe(&follower, "/readyz").await;
        if code == 503 {
            break body;
        }
        if froze.elapsed() > bound {
            drop(frozen);
            anyhow::bail!("/readyz still {code} ({body}) {bound:?} into the outage");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let outage = froze.elapsed();
    let (live, live_body) = probe(&follower, "/livez").await;
    let (healthz, _) = probe(&follower, "/healthz").await;
    frozen.thaw();
    println!(
        "/readyz 503 after {:.1} s without the API server: {}",
        outage.as_secs_f64(),
        body.trim()
    );
    ensure!(
        body.contains("API server has not answered"),
        "/readyz does not say why: {body}"
    );
    ensure!(
        outage >= Duration::from_secs(15),
        "/readyz failed after only {outage:?}: one missed check must not make it fail"
    );
    ensure!(
        live == 200,
        "/livez failed with the API server gone ({live} {live_body}): a restart would not help"
    );
    ensure!(
        healthz == 503,
        "/healthz answered {healthz} while not ready"
    );

    // Back: every replica is ready again (a leader that lost its lease restarted), and
    // one leads.
    let thawed = Instant::now();
    tb.until(
        &client,
        PLATFORM,
        "every operator replica answering /readyz 200 and a live leader",
        Duration::from_secs(90),
        || {
            let client = client.clone();
            async move {
                let pods = mq_testbed::operator::operator_pods(&client).await?;
                for pod in &pods {
                    let (code, body) = probe(pod, "/readyz").await;
                    if code != 200 {
                        return Err(format!("{}: /readyz {code} {body}", pod.name_any()));
                    }
                }
                let leader = mq_testbed::operator::leader(&client).await?;
                let (code, body) = probe(&leader, "/livez").await;
                if pods.len() == mq_testbed::operator::REPLICAS && code == 200 {
                    Ok(Some(()))
                } else {
                    Err(format!(
                        "{} replicas; leader /livez {code} {body}",
                        pods.len()
                    ))
                }
            }
        },
    )
    .await?;
    println!(
        "/readyz 200 again {:.1} s after the API server came back",
        thawed.elapsed().as_secs_f64()
    );
    let (code, body) = probe(&follower, "/readyz").await;
    ensure!(
        code == 200,
        "the waiting replica's /readyz after: {code} {body}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. Webhook certificate renewal.
// ---------------------------------------------------------------------------------------

#[test]
fn a_renewed_webhook_certificate_keeps_its_ca() -> Result<()> {
    let _serial = serial();
    tokio::runtime::Runtime::new()?.block_on(renewal())
}

fn secret_text(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap_or_default()
}

fn ca_bundles(hook: &ValidatingWebhookConfiguration) -> Vec<Vec<u8>> {
    hook.webhooks
        .iter()
        .flatten()
        .map(|w| {
            w.client_config
                .ca_bundle
                .clone()
                .map(|b| b.0)
                .unwrap_or_default()
        })
        .collect()
}

/// Before the fix a renewal issued a new CA with the certificate: the `caBundle` changed,
/// and until every replica had re-published it the API server distrusted the replicas
/// serving the other generation (replicas even overwrote each other's bundle).
///
/// Replicas re-check the Secret hourly and at start; the test marks the certificate as
/// expiring soon and restarts the replicas, so the renewal runs at their start.
async fn renewal() -> Result<()> {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    const TLS: &str = "mq-operator-webhook-tls";
    let (tb, client) = start().await?;
    let ns = "def-certs";
    tb.create_namespace(&client, ns).await?;
    // A topic to probe the webhook with (its instance need not exist for that).
    create::<MQTopic>(
        &client,
        ns,
        mq_testbed::operator::topic("probe", "nowhere", "PROBE"),
    )
    .await?;
    mq_testbed::operator::webhook_in_force(tb, &client, ns, "probe").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), PLATFORM);
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let before = secrets.get(TLS).await?;
    let bundles_before = ca_bundles(&hooks.get("mq-operator").await?);
    ensure!(
        bundles_before
            .iter()
            .all(|b| *b == secret_text(&before, "ca-bundle.crt").into_bytes()),
        "the configuration does not hold the Secret's bundle before the test"
    );

    // Due for renewal: the certificate "expires" in a day (renewal is 30 days ahead).
    let soon = Timestamp::now() + SignedDuration::from_hours(24);
    secrets
        .patch(
            TLS,
            &PatchParams::default(),
            &annotate("mqfleet.io/not-after", Some(&soon.to_string())),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    for pod in mq_testbed::operator::operator_pods(&client)
        .await
        .map_err(anyhow::Error::msg)?
    {
        pods.delete(&pod.name_any(), &DeleteParams::default())
            .await?;
    }
    mq_testbed::operator::install(tb, &client, None).await?;
    let after = tb
        .until(
            &client,
            PLATFORM,
            "a renewed serving certificate",
            RUNNING,
            || {
                let (secrets, old) = (secrets.clone(), secret_text(&before, "tls.crt"));
                async move {
                    let s = secrets.get(TLS).await.map_err(|e| e.to_string())?;
                    Ok((secret_text(&s, "tls.crt") != old).then_some(s))
                }
            },
        )
        .await?;
    let not_after: Timestamp = after
        .annotations()
        .get("mqfleet.io/not-after")
        .context("no not-after")?
        .parse()?;
    ensure!(
        not_after > Timestamp::now() + SignedDuration::from_hours(300 * 24),
        "the renewed certificate expires {not_after}"
    );
    for key in ["ca.crt", "ca.key", "ca-bundle.crt"] {
        ensure!(
            secret_text(&after, key) == secret_text(&before, key),
            "{key} changed with the serving certificate"
        );
    }
    ensure!(
        secret_text(&after, "tls.key") != secret_text(&before, "tls.key"),
        "the renewed certificate kept the old key"
    );
    ensure!(
        ca_bundles(&hooks.get("mq-operator").await?) == bundles_before,
        "the webhook configuration's caBundle changed"
    );
    // The replicas serve the new certificate, which the unchanged bundle trusts.
    mq_testbed::operator::webhook_in_force(tb, &client, ns, "probe").await?;
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    topics.delete("probe", &DeleteParams::default()).await?;
    gone(tb, &client, &topics, "probe", RUNNING).await
}

//! End-to-end: many tenants on one platform. Tenant B cannot take tenant A's instance id
//! (not the same id, not one that names the same objects, not a reserved derived-looking
//! one): the webhook refuses it without naming A, and with the webhook removed B's
//! instance is `ResourceConflict` while A's workloads, claims, config and keys stay
//! exactly as they were and A's clients keep working. Editing annotations changes
//! nothing; B's forced deletion leaves A alone. The admin plane is signed whatever the
//! tenant ACL says: with ACL off an unsigned pod can neither create nor delete a topic nor
//! register a broker, clients still send and consume unsigned, and instance A's admin key
//! does not open instance B's brokers, and neither does A's console key, which reads A's
//! broker with ACL off but creates nothing. The limits of spec §4 meet kubectl users too: the
//! webhook refuses a topic beyond its instance's `topicCapacity` and a second instance
//! with a namespace's taken `instanceName`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use mq_broker::client::AdminClient;
use mq_broker::remoting::body::TopicConfig;
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use mq_operator::crd::{MQGroup, MQInstance, MQTopic, Phase};
use mq_testbed::Testbed;
use mq_testbed::operator::create;
use mq_testbed::operator::{PLATFORM, instance_admin_key, server_pod};
use serde_json::json;

/// Bound on an instance becoming Running.
const RUNNING: Duration = Duration::from_secs(90);
/// The operator's resync period here, so "nothing changed" covers several resyncs.
const RESYNC_SECS: u64 = 5;
/// Tenant A's chosen instance id.
const A_ID: &str = "SHARED_ORDERS";
/// Tenant B's own (second) instance id.
const B_ID: &str = "B_ORDERS";

#[test]
fn one_tenant_cannot_take_or_reach_another_tenants_instance() -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(tenancy())
}

/// An instance manifest with one broker and one name server and an explicit id.
fn instance(name: &str, id: &str) -> serde_json::Value {
    let mut i = mq_testbed::operator::instance(name, 1);
    i["spec"]["instanceId"] = json!(id);
    i
}

/// The Ready condition's (reason, message) of instance `name`.
async fn ready_reason(
    api: &Api<MQInstance>,
    name: &str,
) -> std::result::Result<(String, String), String> {
    let i = api.get(name).await.map_err(|e| e.to_string())?;
    i.status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.reason.clone(), c.message.clone()))
        .ok_or_else(|| format!("{name} has no Ready condition yet"))
}

/// Waits until instance `name` shows Ready reason `reason`; returns the message.
async fn wait_reason(
    tb: &Testbed,
    api: &Api<MQInstance>,
    name: &str,
    reason: &str,
) -> Result<String> {
    let what = format!("MQInstance {name} with reason {reason}");
    tb.until(&tb.client(), PLATFORM, &what, RUNNING, || async move {
        let (r, message) = ready_reason(api, name).await?;
        if r == reason {
            Ok(Some(message))
        } else {
            Err(format!("reason {r}: {message}"))
        }
    })
    .await
    .map_err(Into::into)
}

/// Waits until instance `name` is Running; returns its endpoint.
async fn wait_running(tb: &Testbed, api: &Api<MQInstance>, name: &str) -> Result<String> {
    let what = format!("MQInstance {name} Running");
    tb.until(&tb.client(), PLATFORM, &what, RUNNING, || async move {
        let i = api.get(name).await.map_err(|e| e.to_string())?;
        let status = i.status.unwrap_or_default();
        match (status.phase, status.endpoint) {
            (Some(Phase::Running), Some(endpoint)) => Ok(Some(endpoint)),
            (phase, _) => Err(format!("phase {phase:?}")),
        }
    })
    .await
    .map_err(Into::into)
}

/// The admission webhook's refusal of `result` (its message).
fn refused<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<String> {
    match result {
        Err(kube::Error::Api(e)) if e.message.contains("denied the request") => Ok(e.message),
        other => anyhow::bail!("expected the webhook to refuse, got {other:?}"),
    }
}

/// Tenant B's instance `mine` (topicCapacity 1) takes one topic and the webhook refuses a
/// second; a second instance named like `mine` is refused too. Leaves no topic behind.
async fn limits_refused(tb: &Testbed, client: &Client, ns_b: &str) -> Result<()> {
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns_b);
    let one = mq_testbed::operator::topic("one", "mine", "ONE");
    create::<MQTopic>(client, ns_b, one).await?;
    mq_testbed::operator::topics_ready(tb, client, ns_b, 1, RUNNING).await?;
    let two = mq_testbed::operator::topic("two", "mine", "TWO");
    let message = refused(create::<MQTopic>(client, ns_b, two).await)?;
    ensure!(
        message.contains("spec.topicCapacity") && message.contains("at most 1"),
        "{message}"
    );
    let mut twin = instance("mine-twin", "B_TWIN");
    twin["spec"]["instanceName"] = json!("mine");
    let message = refused(create::<MQInstance>(client, ns_b, twin).await)?;
    ensure!(
        message.contains("spec.instanceName") && message.contains("MQInstance/mine"),
        "{message}"
    );
    topics.delete("one", &DeleteParams::default()).await?;
    tb.until(client, ns_b, "topic one gone", RUNNING, || {
        let topics = topics.clone();
        async move {
            let left = topics.get_opt("one").await.map_err(|e| e.to_string())?;
            Ok(left.is_none().then_some(()))
        }
    })
    .await?;
    Ok(())
}

/// The operator made the console's task key at start: Secret `mq-console-task-key` of the
/// platform namespace, 64 hex digits under `key`.
async fn task_key_made(client: &Client) -> Result<()> {
    let name = mq_operator::domain::keys::CONSOLE_TASK_KEY_SECRET;
    let secret = Api::<Secret>::namespaced(client.clone(), PLATFORM)
        .get(name)
        .await
        .with_context(|| format!("Secret {PLATFORM}/{name}"))?;
    let key = secret
        .data
        .unwrap_or_default()
        .remove("key")
        .unwrap_or_default()
        .0;
    ensure!(
        key.len() == 64 && key.iter().all(u8::is_ascii_hexdigit),
        "the task key is {:?}",
        String::from_utf8_lossy(&key)
    );
    Ok(())
}

/// The API server's schema refusal of `result` (its message).
fn invalid<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<String> {
    match result {
        Err(kube::Error::Api(e)) if e.code == 422 => Ok(e.message),
        other => anyhow::bail!("expected the schema to refuse, got {other:?}"),
    }
}

/// What of an instance's platform objects must not change: each object's name with its
/// resourceVersion (uid for claims, whose status the volume controller may touch).
async fn snapshot(client: &Client, id: &str) -> Result<BTreeMap<String, String>> {
    let selector = ListParams::default().labels(&format!("mqfleet.io/instance-id={id}"));
    let mut out = BTreeMap::new();
    for s in Api::<StatefulSet>::namespaced(client.clone(), PLATFORM)
        .list(&selector)
        .await?
    {
        out.insert(
            format!("StatefulSet/{}", s.name_any()),
            s.resource_version().unwrap_or_default(),
        );
    }
    for c in Api::<PersistentVolumeClaim>::namespaced(client.clone(), PLATFORM)
        .list(&selector)
        .await?
    {
        out.insert(format!("PVC/{}", c.name_any()), c.uid().unwrap_or_default());
    }
    for c in Api::<ConfigMap>::namespaced(client.clone(), PLATFORM)
        .list(&selector)
        .await?
    {
        out.insert(
            format!("ConfigMap/{}", c.name_any()),
            c.resource_version().unwrap_or_default(),
        );
    }
    for s in Api::<Secret>::namespaced(client.clone(), PLATFORM)
        .list(&selector)
        .await?
    {
        out.insert(
            format!("Secret/{}", s.name_any()),
            s.resource_version().unwrap_or_default(),
        );
    }
    ensure!(
        out.keys().filter(|k| k.starts_with("StatefulSet/")).count() == 2
            && out.keys().any(|k| k.starts_with("PVC/"))
            && out.keys().any(|k| k.ends_with("-acl"))
            && out.keys().any(|k| k.ends_with("-admin"))
            && out.keys().any(|k| k.starts_with("ConfigMap/mqfleet-id-")),
        "instance {id} lacks some of its objects: {out:?}"
    );
    Ok(out)
}

/// The leader's count of MQInstance reconciles.
async fn instance_reconciles(client: &Client) -> std::result::Result<f64, String> {
    let leader = mq_testbed::operator::leader(client).await?;
    mq_testbed::operator::metric(&leader, "mq_operator_reconciles_total{kind=\"MQInstance\"}").await
}

/// Waits until the operator has reconciled instances `n` more times (a synchronisation on
/// the operator's own progress, not on time).
async fn reconciles_pass(tb: &Testbed, client: &Client, n: f64) -> Result<()> {
    let start = instance_reconciles(client)
        .await
        .map_err(anyhow::Error::msg)?;
    tb.until(
        client,
        PLATFORM,
        "the operator reconciling the instances again",
        RUNNING,
        || async move {
            let now = instance_reconciles(client).await?;
            if now >= start + n {
                Ok(Some(()))
            } else {
                Err(format!("{} of {n} reconciles", now - start))
            }
        },
    )
    .await
    .map_err(Into::into)
}

/// An admin connection to `addr`, signed with `key` (or unsigned).
async fn admin_at(addr: &str, key: Option<mq_broker::acl::Credentials>) -> Result<AdminClient> {
    let admin = AdminClient::connect(addr, Duration::from_secs(5)).await?;
    Ok(match key {
        Some(key) => admin.with_credentials(key),
        None => admin,
    })
}

async fn topic_names(admin: &AdminClient) -> Result<Vec<String>> {
    Ok(admin
        .topics()
        .await?
        .into_iter()
        .map(|t| t.topic_name)
        .collect())
}

/// Ten messages through A's instance with the real client, unsigned (it runs its own
/// runtime, so on a thread of its own); the bodies received.
async fn round_trip(endpoint: &str, prefix: &'static str) -> std::collections::HashSet<String> {
    let endpoint = endpoint.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let got = support::round_trip(&endpoint, Some(A_ID), "ORDERS", "GID_TENANCY", prefix, 10);
        let _ = tx.send(got);
    });
    rx.await
        .expect("the client round trip panicked (see above)")
}

/// A REGISTER_BROKER request for a broker `name` with no topics, signed with `key`.
fn registration(name: &str, key: Option<&mq_broker::acl::Credentials>) -> RemotingCommand {
    let body = mq_broker::remoting::body::RegisterBrokerBody::default();
    let mut req = RemotingCommand::new_request(request_code::REGISTER_BROKER)
        .with_ext("brokerName", name)
        .with_ext("brokerAddr", "127.0.0.1:1")
        .with_ext("clusterName", "default")
        .with_ext("brokerId", "0")
        .with_ext("compressed", "false")
        .with_body(mq_broker::remoting::body::to_json(&body));
    if let Some(key) = key {
        mq_broker::acl::sign::sign(&mut req, key);
    }
    req
}

async fn tenancy() -> Result<()> {
    let tb = Testbed::shared().await?;
    let client = tb.client();
    mq_testbed::operator::install(tb, &client, Some(RESYNC_SECS)).await?;
    let (ns_a, ns_b) = ("tenant-a", "tenant-b");
    tb.create_namespace(&client, ns_a).await?;
    tb.create_namespace(&client, ns_b).await?;
    let a_api: Api<MQInstance> = Api::namespaced(client.clone(), ns_a);
    let b_api: Api<MQInstance> = Api::namespaced(client.clone(), ns_b);

    // Tenant A's instance with a chosen id and a topic; tenant B's own instance beside it.
    create::<MQInstance>(&client, ns_a, instance("orders", A_ID)).await?;
    create::<MQTopic>(
        &client,
        ns_a,
        mq_testbed::operator::topic("orders", "orders", "ORDERS"),
    )
    .await?;
    let group = mq_testbed::operator::group("tenancy", "orders", "GID_TENANCY");
    create::<MQGroup>(&client, ns_a, group).await?;
    let mut mine = instance("mine", B_ID);
    mine["spec"]["topicCapacity"] = json!(1);
    create::<MQInstance>(&client, ns_b, mine).await?;
    let endpoint = wait_running(tb, &a_api, "orders").await?;
    wait_running(tb, &b_api, "mine").await?;
    mq_testbed::operator::topics_ready(tb, &client, ns_a, 1, RUNNING).await?;
    let groups: Api<MQGroup> = Api::namespaced(client.clone(), ns_a);
    tb.until(&client, ns_a, "the group Ready", RUNNING, || {
        let groups = groups.clone();
        async move {
            let g = groups.get("tenancy").await.map_err(|e| e.to_string())?;
            Ok(mq_operator::crd::is_ready(g.metadata.generation, g.status.as_ref()).then_some(()))
        }
    })
    .await?;
    mq_testbed::operator::webhook_in_force(tb, &client, ns_a, "orders").await?;
    limits_refused(tb, &client, ns_b).await?;
    task_key_made(&client).await?;

    // Clients send and consume unsigned (tenant ACL is off).
    let got = round_trip(&endpoint, "before").await;
    ensure!(got.len() >= 10, "A's client received {got:?}");

    // The admin plane is signed whatever the tenant ACL says.
    let (_, a_broker) = server_pod(&client, A_ID, "broker", 0)
        .await
        .map_err(anyhow::Error::msg)?;
    let (_, b_broker) = server_pod(&client, B_ID, "broker", 0)
        .await
        .map_err(anyhow::Error::msg)?;
    let (_, a_namesrv) = server_pod(&client, A_ID, "namesrv", 0)
        .await
        .map_err(anyhow::Error::msg)?;
    let (a_broker, b_broker) = (format!("{a_broker}:10911"), format!("{b_broker}:10911"));
    let (a_key, b_key) = (
        instance_admin_key(&client, A_ID).await?,
        instance_admin_key(&client, B_ID).await?,
    );
    ensure!(a_key.access_key != b_key.access_key && a_key.secret_key != b_key.secret_key);
    let intruder = TopicConfig {
        topic_name: format!("{A_ID}%INTRUDER"),
        read_queue_nums: 1,
        write_queue_nums: 1,
        perm: 6,
        ..TopicConfig::default()
    };
    let unsigned = admin_at(&a_broker, None).await?;
    ensure!(
        unsigned.create_topic(&intruder).await.is_err(),
        "an unsigned pod created a topic on A's broker"
    );
    ensure!(
        unsigned
            .delete_topic(&format!("{A_ID}%ORDERS"))
            .await
            .is_err(),
        "an unsigned pod deleted A's topic"
    );
    let with_b_key = admin_at(&a_broker, Some(b_key.clone())).await?;
    ensure!(
        with_b_key.create_topic(&intruder).await.is_err(),
        "instance B's admin key opened instance A's broker"
    );
    let with_a_key = admin_at(&a_broker, Some(a_key.clone())).await?;
    let on_a = topic_names(&with_a_key).await?;
    ensure!(
        on_a.contains(&format!("{A_ID}%ORDERS")) && !on_a.contains(&intruder.topic_name),
        "A's broker holds {on_a:?}"
    );
    ensure!(
        admin_at(&b_broker, Some(a_key.clone()))
            .await?
            .topics()
            .await
            .is_err(),
        "instance A's admin key opened instance B's broker"
    );
    ensure!(
        admin_at(&b_broker, Some(b_key.clone()))
            .await?
            .topics()
            .await
            .is_ok(),
        "B's own key must open B's broker"
    );
    // The console key (ACL off here) reads A's broker, creates nothing, and opens only A's.
    support::console_key_reads_only(tb, &client, A_ID, "ORDERS", Some(B_ID)).await?;
    // A forged broker registration is refused unless signed with A's key, and the
    // refused ones register nothing (the signed one proves the request itself is valid).
    let namesrv = format!("{a_namesrv}:9876");
    for (name, key) in [("broker-evil", None), ("broker-evil-b", Some(&b_key))] {
        let answer = support::raw_request(&namesrv, registration(name, key)).await;
        ensure!(
            answer.code != response_code::SUCCESS,
            "the name server accepted {name}'s registration"
        );
    }
    let answer = support::raw_request(&namesrv, registration("broker-probe", Some(&a_key))).await;
    ensure!(
        answer.code == response_code::SUCCESS,
        "a registration signed with A's key was refused: {:?}",
        answer.remark
    );
    let cluster = format!(
        "{:?}",
        admin_at(&namesrv, None).await?.cluster_info().await?
    );
    ensure!(
        cluster.contains("broker-probe") && !cluster.contains("broker-evil"),
        "registered brokers: {cluster}"
    );

    // The webhook refuses B's instance asking for A's id, or one naming A's objects, or a
    // derived-looking id, without naming A; the schema refuses malformed ids.
    for id in [A_ID, "shared-orders", "Shared_Orders"] {
        let message = refused(create::<MQInstance>(&client, ns_b, instance("thief", id)).await)?;
        ensure!(
            message.contains("spec.instanceId") && message.contains("not available"),
            "{message}"
        );
        ensure!(
            !message.contains(ns_a) && !message.contains("tenant-a/orders"),
            "the refusal names the holder: {message}"
        );
    }
    let message = refused(
        create::<MQInstance>(
            &client,
            ns_b,
            instance("thief", "MQ_INST_0000000000000009_abcdefgh"),
        )
        .await,
    )?;
    ensure!(message.contains("derived"), "{message}");
    for bad in ["-leading-dash", "_leading_underscore", &"x".repeat(45)] {
        invalid(create::<MQInstance>(&client, ns_b, instance("thief", bad)).await)?;
    }

    // Annotations are tenants' to edit: none of them changes anything of A's.
    let before = snapshot(&client, A_ID).await?;
    let edit = json!({"metadata": {"annotations": {
        "mqfleet.io/applied": format!("{{\"spec.instanceId\":\"{B_ID}\"}}"),
        "mqfleet.io/desired-hash": "forged",
    }}});
    a_api
        .patch("orders", &PatchParams::default(), &Patch::Merge(&edit))
        .await?;
    Api::<MQTopic>::namespaced(client.clone(), ns_a)
        .patch("orders", &PatchParams::default(), &Patch::Merge(&edit))
        .await?;

    // Without the webhook, B's claims are ResourceConflict and touch nothing of A's.
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete("mq-operator", &DeleteParams::default())
        .await?;
    mq_testbed::operator::webhook_off(tb, &client, ns_a, "orders").await?;
    create::<MQInstance>(&client, ns_b, instance("thief", A_ID)).await?;
    create::<MQInstance>(&client, ns_b, instance("twin", "shared-orders")).await?;
    for name in ["thief", "twin"] {
        let message = wait_reason(tb, &b_api, name, "ResourceConflict").await?;
        ensure!(
            message.contains("already taken") && !message.contains(ns_a),
            "{name}: {message}"
        );
    }
    // Several resyncs of every instance pass; A's objects are exactly as they were.
    reconciles_pass(tb, &client, 12.0).await?;
    let after = snapshot(&client, A_ID).await?;
    ensure!(
        before == after,
        "A's objects changed:\nbefore {before:?}\nafter  {after:?}"
    );
    let on_b = topic_names(&admin_at(&b_broker, Some(b_key.clone())).await?).await?;
    ensure!(
        !on_b
            .iter()
            .any(|t| t.contains("ORDERS") && t.starts_with(A_ID)),
        "A's topic reached B's broker after the annotation edit: {on_b:?}"
    );

    // B's forced deletion (claims not retained) leaves A's StatefulSets and claims alone.
    for name in ["thief", "twin"] {
        b_api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"mqfleet.io/force-delete": "true"}}}),
                ),
            )
            .await?;
        b_api.delete(name, &DeleteParams::default()).await?;
    }
    tb.until(&client, ns_b, "B's claimants gone", RUNNING, || {
        let b_api = b_api.clone();
        async move {
            let left = b_api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = left.items.iter().map(|i| i.name_any()).collect();
            Ok((names == ["mine"]).then_some(()))
        }
    })
    .await?;
    let after_delete = snapshot(&client, A_ID).await?;
    ensure!(
        before == after_delete,
        "B's forced deletion changed A's objects:\nbefore {before:?}\nafter  {after_delete:?}"
    );

    // A's clients keep working.
    let got = round_trip(&endpoint, "after").await;
    ensure!(
        got.iter().filter(|b| b.starts_with("after-")).count() >= 10,
        "A's client after the attack received {got:?}"
    );

    // Leave the platform as found: the webhook back, the instances gone.
    let workspace = mq_testbed::paths::workspace_dir();
    mq_testbed::apply_manifests(&client, &workspace.join("deploy")).await?;
    mq_testbed::operator::webhook_in_force(tb, &client, ns_a, "orders").await?;
    Api::<MQTopic>::namespaced(client.clone(), ns_a)
        .delete("orders", &DeleteParams::default())
        .await?;
    groups.delete("tenancy", &DeleteParams::default()).await?;
    for (api, name) in [(&a_api, "orders"), (&b_api, "mine")] {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mqfleet.io/force-delete": "true"}}}),
            ),
        )
        .await?;
        api.delete(name, &DeleteParams::default()).await?;
    }
    let records: Api<ConfigMap> = Api::namespaced(client.clone(), PLATFORM);
    tb.until(
        &client,
        PLATFORM,
        "the ids' records released",
        RUNNING,
        || {
            let records = records.clone();
            async move {
                let left = records
                    .list(&ListParams::default().labels("mqfleet.io/id-record"))
                    .await
                    .map_err(|e| e.to_string())?;
                let ours: Vec<String> = left
                    .items
                    .iter()
                    .map(|c| c.name_any())
                    .filter(|n| n.contains("shared-orders") || n.contains("b-orders"))
                    .collect();
                if ours.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(format!("left: {ours:?}"))
                }
            }
        },
    )
    .await
    .context("the ids' records")?;
    Ok(())
}

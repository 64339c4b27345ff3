//! MQEmpower and ACL end to end on the testbed: an instance with `aclEnabled` gets an ACL
//! Secret from the accounts, its topics and groups and its grants; its brokers enforce it
//! against the real `rocketmq-client-rust` with `AclClientRPCHook`. And the quickstart:
//! `examples/` becomes a running instance that clients use, and its grant takes effect
//! once its account exists. The console's per-instance key reads the brokers (with ACL
//! on) but cannot create a topic.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use mq_operator::crd::{MQEmpower, MQGroup, MQInstance, MQTopic, Phase, is_ready};
use mq_testbed::Testbed;
use mq_testbed::operator::PLATFORM;
use mq_testbed::operator::create;
use rocketmq_client_rust::{
    AclClientRPCHook, ClientRuntime, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
    SessionCredentials,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use serde_json::json;

const NS: &str = "op-acl";
const TOPIC: &str = "SECURE";
const GROUP: &str = "GID_SECURE";
const WAIT: Duration = Duration::from_secs(60);
/// The tenant owning namespace `op-acl`, and a tenant of another namespace.
const TENANT: (&str, &str) = ("AK_TENANT_100", "SK_TENANT_100");
const GUEST: (&str, &str) = ("AK_GUEST_200", "SK_GUEST_200");

/// An account Secret in the platform namespace, as the console will write them.
async fn account(client: &Client, user: &str, ns: &str, keys: (&str, &str)) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("account-{user}"), "labels": {"mqfleet.io/account": "true"}},
        "stringData": {"userId": user, "namespace": ns, "accessKey": keys.0, "secretKey": keys.1},
    }))?;
    Api::<Secret>::namespaced(client.clone(), PLATFORM)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

/// A Secret labelled as an account with `data` as it is (possibly malformed).
async fn raw_account(client: &Client, name: &str, data: serde_json::Value) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"mqfleet.io/account": "true"}},
        "stringData": data,
    }))?;
    Api::<Secret>::namespaced(client.clone(), PLATFORM)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

/// The instance's endpoint and id once it runs with its topic and group Ready.
async fn set_up(tb: &Testbed, client: &Client) -> Result<(String, String)> {
    tb.create_namespace(client, NS).await?;
    account(client, "100", NS, TENANT).await?;
    account(client, "200", "op-guest", GUEST).await?;
    // Bad platform data beside them: one account without a secretKey, two sharing an
    // accessKey. They are reported; every other account keeps working.
    raw_account(
        client,
        "account-300",
        json!({"userId": "300", "namespace": NS, "accessKey": "AK_300"}),
    )
    .await?;
    for user in ["301", "302"] {
        let data = json!({"userId": user, "namespace": NS, "accessKey": "AK_SHARED", "secretKey": format!("SK_{user}")});
        raw_account(client, &format!("account-{user}"), data).await?;
    }
    let mut instance = mq_testbed::operator::instance("secure", 1);
    instance["spec"]["aclEnabled"] = json!(true);
    create::<MQInstance>(client, NS, instance).await?;
    create::<MQTopic>(
        client,
        NS,
        mq_testbed::operator::topic("secure", "secure", TOPIC),
    )
    .await?;
    create::<MQGroup>(
        client,
        NS,
        mq_testbed::operator::group("secure", "secure", GROUP),
    )
    .await?;
    mq_testbed::operator::topics_ready(tb, client, NS, 1, WAIT).await?;
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), NS);
    let groups: Api<MQGroup> = Api::namespaced(client.clone(), NS);
    tb.until(
        client,
        NS,
        "the instance Running and its group Ready",
        WAIT,
        || {
            let (instances, groups) = (instances.clone(), groups.clone());
            async move {
                let i = instances.get("secure").await.map_err(|e| e.to_string())?;
                let g = groups.get("secure").await.map_err(|e| e.to_string())?;
                let s = i.status.clone().unwrap_or_default();
                match (s.phase, s.endpoint, s.instance_id) {
                    (Some(Phase::Running), Some(e), Some(id))
                        if is_ready(g.metadata.generation, g.status.as_ref()) =>
                    {
                        Ok(Some((e, id)))
                    }
                    (phase, ..) => Err(format!("instance {phase:?}; group {:?}", g.status)),
                }
            }
        },
    )
    .await
    .map_err(Into::into)
}

/// The Ready condition's reason and message of grant `name` once it has `reason`.
async fn grant_reason(
    tb: &Testbed,
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Result<String> {
    let api: Api<MQEmpower> = Api::namespaced(client.clone(), ns);
    let what = format!("MQEmpower {name} with reason {reason}");
    tb.until(client, ns, &what, WAIT, || {
        let api = api.clone();
        async move {
            let e = api.get(name).await.map_err(|e| e.to_string())?;
            let ready = e
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .find(|c| c.type_ == "Ready")
                .cloned();
            match ready {
                Some(c) if c.reason == reason => Ok(Some(c.message)),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await
    .map_err(Into::into)
}

fn hook(keys: (&str, &str)) -> Arc<AclClientRPCHook> {
    Arc::new(AclClientRPCHook::new(SessionCredentials::with_keys(
        keys.0, keys.1,
    )))
}

fn config(endpoint: &str, id: &str, name: &str) -> rocketmq_client_rust::ClientConfig {
    rocketmq_client_rust::ClientConfig {
        namespace: Some(id.to_owned().into()),
        ..support::client_config(endpoint, name)
    }
}

async fn producer(
    rt: &Arc<ClientRuntime>,
    config: rocketmq_client_rust::ClientConfig,
    keys: Option<(&str, &str)>,
) -> DefaultMQProducer {
    let mut builder = DefaultMQProducer::builder(rt.clone())
        .client_config(config)
        .producer_group("GID_ACL_PRODUCER");
    if let Some(keys) = keys {
        builder = builder.rpc_hook(hook(keys));
    }
    let mut producer = builder.build();
    producer.start().await.expect("producer starts");
    producer
}

async fn sends(producer: &DefaultMQProducer, body: &str) -> bool {
    sends_to(producer, TOPIC, body).await
}

async fn sends_to(producer: &DefaultMQProducer, topic: &str, body: &str) -> bool {
    let message = Message::builder()
        .topic(topic)
        .body_slice(body.as_bytes())
        .build_unchecked();
    matches!(producer.send(message).await, Ok(Some(_)))
}

/// The tests share one operator on one testbed; one at a time keeps them within their
/// bounds on 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn the_brokers_enforce_keys_and_grants_from_the_resources() -> Result<()> {
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new()?;
    let (tb, client) = runtime.block_on(async {
        let tb = Testbed::shared().await?;
        let client = tb.client();
        mq_testbed::operator::install(tb, &client, None).await?;
        anyhow::Ok((tb, client))
    })?;
    let (endpoint, id) = runtime.block_on(set_up(tb, &client))?;
    let acl: Api<Secret> = Api::namespaced(client.clone(), PLATFORM);
    let secret_name = format!("{}-acl", id.to_lowercase().replace('_', "-"));
    ensure!(
        runtime.block_on(acl.get_opt(&secret_name))?.is_some(),
        "no ACL Secret {secret_name} in the platform namespace"
    );
    runtime.block_on(bad_accounts_reported(tb, &client))?;
    // The console's key (Secret <base>-console) reads the brokers and changes nothing.
    runtime.block_on(support::console_key_reads_only(
        tb, &client, &id, TOPIC, None,
    ))?;

    // The tenant's keys produce and consume; no keys, or another tenant's, store nothing.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let outcome = support::Client::new().run(|rt| {
        let (received, endpoint, id) = (received.clone(), endpoint.clone(), id.clone());
        async move {
            let tenant = producer(&rt, config(&endpoint, &id, "acl-tenant"), Some(TENANT)).await;
            let mut acked = 0;
            for i in 0..10 {
                acked += usize::from(sends(&tenant, &format!("tenant-{i}")).await);
            }
            let unsigned = producer(&rt, config(&endpoint, &id, "acl-anon"), None).await;
            let anon = sends(&unsigned, "anonymous").await;
            let guest = producer(&rt, config(&endpoint, &id, "acl-guest"), Some(GUEST)).await;
            let guest_sent = sends(&guest, "guest-before-grant").await;
            let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
                .client_config(config(&endpoint, &id, "acl-consumer"))
                .consumer_group(GROUP.to_string())
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .consume_thread_min(4)
                .consume_thread_max(4)
                .rpc_hook(Some(hook(TENANT)))
                .build();
            consumer.subscribe(TOPIC, "*").await.expect("subscribe");
            consumer.register_message_listener_concurrently(support::Collect(received.clone()));
            consumer.start().await.expect("consumer starts");
            support::eventually("the tenant's messages consumed", WAIT, || {
                received.lock().map(|r| r.len() >= acked).unwrap_or(false)
            })
            .await;
            consumer.shutdown().await;
            for p in [tenant, unsigned, guest] {
                let mut p = p;
                p.shutdown().await;
            }
            (acked, anon, guest_sent)
        }
    });
    let (acked, anon, guest_sent) = outcome;
    ensure!(
        acked == 10,
        "the tenant's producer got {acked} of 10 sends acknowledged"
    );
    ensure!(!anon, "an unsigned producer was let in");
    ensure!(!guest_sent, "another tenant sent without a grant");
    let got: BTreeMap<String, ()> = received
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .map(|b| (b.clone(), ()))
        .collect();
    ensure!(
        got.len() == 10 && got.keys().all(|b| b.starts_with("tenant-")),
        "the tenant consumed {got:?}"
    );

    // A grant lets the other tenant publish; one for a user without an account says so.
    runtime.block_on(async {
        let grant = |name: &str, user: i64| {
            json!({"apiVersion": "mqfleet.io/v1alpha1", "kind": "MQEmpower", "metadata": {"name": name},
                   "spec": {"instance": "secure", "topic": TOPIC, "empowerUser": user, "relation": 2}})
        };
        create::<MQEmpower>(&client, NS, grant("guest-publishes", 200)).await?;
        create::<MQEmpower>(&client, NS, grant("nobody", 999)).await?;
        grant_reason(tb, &client, NS, "guest-publishes", "Granted").await?;
        // A second grant for the same user and topic is refused, naming the field.
        mq_testbed::operator::webhook_in_force(tb, &client, NS, "secure").await?;
        let duplicate = create::<MQEmpower>(&client, NS, grant("guest-again", 200)).await;
        let refusal = format!("{:?}", duplicate.err());
        ensure!(
            refusal.contains("denied the request") && refusal.contains("spec.empowerUser"),
            "duplicate grant: {refusal}"
        );
        let message = grant_reason(tb, &client, NS, "nobody", "UnknownUser").await?;
        ensure!(message.contains("999") && message.contains("spec.empowerUser"), "{message}");
        anyhow::Ok(())
    })?;
    let allowed_in = support::Client::new().run(|rt| async move {
        let guest = producer(&rt, config(&endpoint, &id, "acl-guest-2"), Some(GUEST)).await;
        // The brokers reload the ACL file within seconds of the Secret changing.
        let started = Instant::now();
        let mut allowed = false;
        while !allowed && started.elapsed() < WAIT {
            allowed = sends(&guest, "guest-after-grant").await;
            if !allowed {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let mut guest = guest;
        guest.shutdown().await;
        allowed.then(|| started.elapsed())
    });
    let took = allowed_in.context("the granted tenant still cannot publish")?;
    println!("grant → publish allowed: {:.1} s", took.as_secs_f64());
    Ok(())
}

/// The malformed account and the two sharing an accessKey: a `BadAccount` Event on each
/// Secret, and `AccountsValid=False` on the instance naming them.
async fn bad_accounts_reported(tb: &Testbed, client: &Client) -> Result<()> {
    for (secret, why) in [
        ("account-300", "secretKey is missing"),
        ("account-301", "account-302"),
        ("account-302", "account-301"),
    ] {
        let what = format!("a BadAccount Event on {secret}");
        let note = tb
            .until(client, PLATFORM, &what, WAIT, || async move {
                let events =
                    mq_testbed::operator::events(client, PLATFORM, "Secret", secret, "BadAccount")
                        .await?;
                Ok(events.into_iter().next().map(|(_, note)| note))
            })
            .await?;
        ensure!(note.contains(why), "{secret}: {note}");
    }
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), NS);
    let message = tb
        .until(
            client,
            NS,
            "AccountsValid=False on the instance",
            WAIT,
            || {
                let instances = instances.clone();
                async move {
                    let i = instances.get("secure").await.map_err(|e| e.to_string())?;
                    Ok(i.status
                        .iter()
                        .flat_map(|s| s.conditions.iter())
                        .find(|c| c.type_ == "AccountsValid" && c.status == "False")
                        .map(|c| c.message.clone()))
                }
            },
        )
        .await?;
    ensure!(
        ["account-300", "account-301", "account-302"]
            .iter()
            .all(|s| message.contains(s))
            && !message.contains("account-100"),
        "{message}"
    );
    Ok(())
}

/// `kubectl apply -f examples/` (the README's quickstart): the instance (2 name servers,
/// 2 brokers) runs within a minute, a client produces and consumes through its endpoint,
/// and the example grant waits for its account, then takes effect.
#[test]
fn the_examples_become_a_running_instance_clients_use() -> Result<()> {
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new()?;
    let ns = "default";
    let (tb, client) = runtime.block_on(async {
        let tb = Testbed::shared().await?;
        let client = tb.client();
        mq_testbed::operator::install(tb, &client, None).await?;
        anyhow::Ok((tb, client))
    })?;
    let (endpoint, id, took) = runtime.block_on(async {
        let began = Instant::now();
        let examples = mq_testbed::paths::workspace_dir().join("examples");
        mq_testbed::apply_manifests(&client, &examples).await?;
        let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
        let running = tb
            .until(&client, ns, "the example instance Running", WAIT, || {
                let instances = instances.clone();
                async move {
                    let s = instances
                        .get("orders")
                        .await
                        .map_err(|e| e.to_string())?
                        .status
                        .unwrap_or_default();
                    match (s.phase, s.ready_brokers, s.endpoint, s.instance_id) {
                        (Some(Phase::Running), 2, Some(e), Some(id)) => Ok(Some((e, id))),
                        (phase, ready, ..) => Err(format!("{phase:?} with {ready}/2 brokers")),
                    }
                }
            })
            .await?;
        let took = began.elapsed();
        mq_testbed::operator::topics_ready(tb, &client, ns, 2, WAIT).await?;
        anyhow::Ok((running.0, running.1, took))
    })?;
    println!(
        "kubectl apply -f examples/ → Running: {:.1} s",
        took.as_secs_f64()
    );
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked = support::Client::new().run(|rt| {
        let (received, endpoint, id) = (received.clone(), endpoint.clone(), id.clone());
        async move {
            let p = producer(&rt, config(&endpoint, &id, "example-producer"), None).await;
            let mut acked = 0;
            for i in 0..20 {
                acked += usize::from(sends_to(&p, "ORDER_CREATED", &format!("order-{i}")).await);
            }
            let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
                .client_config(config(&endpoint, &id, "example-consumer"))
                .consumer_group("GID_order_processor".to_string())
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .consume_thread_min(4)
                .consume_thread_max(4)
                .build();
            consumer
                .subscribe("ORDER_CREATED", "*")
                .await
                .expect("subscribe");
            consumer.register_message_listener_concurrently(support::Collect(received.clone()));
            consumer.start().await.expect("consumer starts");
            support::eventually("the example's messages consumed", WAIT, || {
                received.lock().map(|r| r.len() >= acked).unwrap_or(false)
            })
            .await;
            consumer.shutdown().await;
            let mut p = p;
            p.shutdown().await;
            acked
        }
    });
    ensure!(acked == 20, "{acked} of 20 sends acknowledged");
    let got = received.lock().map_err(|e| anyhow::anyhow!("{e}"))?.len();
    ensure!(got >= 20, "consumed {got} of 20");

    // The example grant names a user without an account until one is made.
    runtime.block_on(async {
        let grant = "analytics-reads-order-created";
        grant_reason(tb, &client, ns, grant, "UnknownUser").await?;
        let keys = ("AK_ANALYTICS", "SK_ANALYTICS");
        account(&client, "1380156306793859", "analytics", keys).await?;
        grant_reason(tb, &client, ns, grant, "Granted").await?;
        anyhow::Ok(())
    })?;
    Ok(())
}

//! `spec.exposure` end to end on the testbed (whose NodePorts answer on 127.0.0.1, the
//! `default` profile's `externalHost`): an ACL-on instance with `exposure: nodePort`
//! becomes Ready with `status.externalEndpoint` on 127.0.0.1; the real
//! `rocketmq-client-rust` produces and consumes through it with the tenant's keys, while
//! another tenant's keys are refused; routes from the external endpoint name external
//! addresses and routes from the in-cluster endpoint pod addresses; node ports stay
//! pinned across reconciles; an ACL-off instance asking for nodePort is refused by the
//! webhook (and, without the webhook, reported as `ExposureRequiresAcl` with nothing
//! exposed); `loadBalancer` follows the Service status a cloud controller would write;
//! back to `cluster` removes the external Services. `mq-broker produce|consume` work
//! through the external endpoint with the tenant's keys.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mq_broker::remoting::body::{self, TopicRouteData};
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use mq_operator::crd::{MQGroup, MQInstance, MQTopic, is_ready};
use mq_testbed::Testbed;
use mq_testbed::operator::{PLATFORM, create};
use rocketmq_client_rust::{
    AclClientRPCHook, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer, SessionCredentials,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use serde_json::json;

const NS: &str = "op-exposure";
const TOPIC: &str = "OUTSIDE";
const GROUP: &str = "GID_OUTSIDE";
const CLI_GROUP: &str = "GID_OUTSIDE_CLI";
const WAIT: Duration = Duration::from_secs(90);
const TENANT: (&str, &str) = ("AK_EXPOSED_100", "SK_EXPOSED_100");
const GUEST: (&str, &str) = ("AK_STRANGER_200", "SK_STRANGER_200");

async fn account(client: &Client, user: &str, ns: &str, keys: (&str, &str)) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": format!("account-exp-{user}"), "labels": {"mqfleet.io/account": "true"}},
        "stringData": {"userId": user, "namespace": ns, "accessKey": keys.0, "secretKey": keys.1},
    }))?;
    Api::<Secret>::namespaced(client.clone(), PLATFORM)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

/// The instance's status once `check` accepts it.
async fn instance_until(
    tb: &Testbed,
    client: &Client,
    what: &str,
    check: impl Fn(&MQInstance) -> bool + Clone,
) -> Result<MQInstance> {
    let api: Api<MQInstance> = Api::namespaced(client.clone(), NS);
    tb.until(client, NS, what, WAIT, || {
        let (api, check) = (api.clone(), check.clone());
        async move {
            let i = api.get("exposed").await.map_err(|e| e.to_string())?;
            if check(&i) {
                Ok(Some(i))
            } else {
                Err(format!("{:?}", i.status))
            }
        }
    })
    .await
    .map_err(Into::into)
}

fn ready_reason(i: &MQInstance) -> Option<(String, String)> {
    let s = i.status.as_ref()?;
    let c = s.conditions.iter().find(|c| c.type_ == "Ready")?;
    (s.observed_generation == i.metadata.generation).then(|| (c.reason.clone(), c.status.clone()))
}

fn external(i: &MQInstance) -> Option<String> {
    i.status.as_ref()?.external_endpoint.clone()
}

/// The external Services of the instance, name → (type, node port).
async fn external_services(client: &Client, id: &str) -> Result<Vec<(String, String, i32)>> {
    let api: Api<Service> = Api::namespaced(client.clone(), PLATFORM);
    let selector = format!("mqfleet.io/external,mqfleet.io/instance-id={id}");
    let mut out: Vec<(String, String, i32)> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .map(|s| {
            let spec = s.spec.unwrap_or_default();
            let port = spec
                .ports
                .unwrap_or_default()
                .first()
                .and_then(|p| p.node_port)
                .unwrap_or(0);
            (
                s.metadata.name.unwrap_or_default(),
                spec.type_.unwrap_or_default(),
                port,
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The master address of each broker in the route of `topic` from name server `addr`.
async fn route_addrs(addr: &str, topic: &str) -> Result<Vec<String>> {
    let req =
        RemotingCommand::new_request(request_code::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic);
    let answer = support::raw_request(addr, req).await;
    ensure!(
        answer.code == response_code::SUCCESS,
        "route of {topic} at {addr}: {answer:?}"
    );
    let route: TopicRouteData = body::from_json(answer.body.as_deref())?;
    Ok(route
        .broker_datas
        .iter()
        .filter_map(|b| b.broker_addrs.get(&0).cloned())
        .collect())
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

async fn sends(producer: &DefaultMQProducer, body: &str) -> bool {
    let message = Message::builder()
        .topic(TOPIC)
        .body_slice(body.as_bytes())
        .build_unchecked();
    matches!(producer.send(message).await, Ok(Some(_)))
}

/// Produces 10 messages with the tenant's keys and one with a stranger's through
/// `endpoint`, consumes with the tenant's keys: (acked, stranger's acked, consumed).
fn round_trip(endpoint: &str, id: &str) -> (usize, bool, Vec<String>) {
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let (acked, stranger) = support::Client::new().run(|rt| {
        let (received, endpoint, id) = (received.clone(), endpoint.to_owned(), id.to_owned());
        async move {
            let mut tenant = DefaultMQProducer::builder(rt.clone())
                .client_config(config(&endpoint, &id, "exposed-tenant"))
                .producer_group("GID_EXPOSED_PRODUCER")
                .rpc_hook(hook(TENANT))
                .build();
            tenant.start().await.expect("producer starts");
            let mut acked = 0;
            for i in 0..10 {
                acked += usize::from(sends(&tenant, &format!("outside-{i}")).await);
            }
            let mut guest = DefaultMQProducer::builder(rt.clone())
                .client_config(config(&endpoint, &id, "exposed-stranger"))
                .producer_group("GID_EXPOSED_STRANGER")
                .rpc_hook(hook(GUEST))
                .build();
            guest.start().await.expect("producer starts");
            let stranger = sends(&guest, "stranger").await;
            let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
                .client_config(config(&endpoint, &id, "exposed-consumer"))
                .consumer_group(GROUP.to_string())
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .consume_thread_min(4)
                .consume_thread_max(4)
                .rpc_hook(Some(hook(TENANT)))
                .build();
            consumer.subscribe(TOPIC, "*").await.expect("subscribe");
            consumer.register_message_listener_concurrently(support::Collect(received.clone()));
            consumer.start().await.expect("consumer starts");
            support::eventually("the messages consumed from outside", WAIT, || {
                received.lock().map(|r| r.len() >= acked).unwrap_or(false)
            })
            .await;
            consumer.shutdown().await;
            tenant.shutdown().await;
            guest.shutdown().await;
            (acked, stranger)
        }
    });
    let got = received.lock().map(|r| r.clone()).unwrap_or_default();
    (acked, stranger, got)
}

async fn set_exposure(client: &Client, exposure: &str) -> Result<()> {
    Api::<MQInstance>::namespaced(client.clone(), NS)
        .patch(
            "exposed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"exposure": exposure}})),
        )
        .await?;
    Ok(())
}

#[test]
fn clients_outside_the_cluster_reach_an_exposed_instance_and_only_with_its_keys() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let (tb, client) = runtime.block_on(async {
        let tb = Testbed::shared().await?;
        let client = tb.client();
        mq_testbed::operator::install(tb, &client, None).await?;
        tb.create_namespace(&client, NS).await?;
        account(&client, "100", NS, TENANT).await?;
        account(&client, "200", "op-exposure-other", GUEST).await?;
        let mut instance = mq_testbed::operator::instance("exposed", 1);
        instance["spec"]["aclEnabled"] = json!(true);
        instance["spec"]["exposure"] = json!("nodePort");
        create::<MQInstance>(&client, NS, instance).await?;
        create::<MQTopic>(
            &client,
            NS,
            mq_testbed::operator::topic("outside", "exposed", TOPIC),
        )
        .await?;
        create::<MQGroup>(
            &client,
            NS,
            mq_testbed::operator::group("outside", "exposed", GROUP),
        )
        .await?;
        create::<MQGroup>(
            &client,
            NS,
            mq_testbed::operator::group("cli", "exposed", CLI_GROUP),
        )
        .await?;
        anyhow::Ok((tb, client))
    })?;

    // Ready, with the external endpoint on the profile's host.
    let i = runtime.block_on(async {
        mq_testbed::operator::topics_ready(tb, &client, NS, 1, WAIT).await?;
        let groups: Api<MQGroup> = Api::namespaced(client.clone(), NS);
        tb.until(&client, NS, "the group Ready", WAIT, || {
            let groups = groups.clone();
            async move {
                let a = groups.get("outside").await.map_err(|e| e.to_string())?;
                let b = groups.get("cli").await.map_err(|e| e.to_string())?;
                Ok((is_ready(a.metadata.generation, a.status.as_ref())
                    && is_ready(b.metadata.generation, b.status.as_ref()))
                .then_some(()))
            }
        })
        .await?;
        instance_until(tb, &client, "Ready with an external endpoint", |i| {
            ready_reason(i).is_some_and(|(_, s)| s == "True") && external(i).is_some()
        })
        .await
    })?;
    let status = i.status.clone().unwrap_or_default();
    let (outside, inside) = (
        external(&i).unwrap_or_default(),
        status.endpoint.clone().unwrap_or_default(),
    );
    let id = status.instance_id.clone().unwrap_or_default();
    ensure!(
        outside.starts_with("127.0.0.1:"),
        "externalEndpoint {outside}"
    );
    ensure!(inside != outside, "the in-cluster endpoint stays {inside}");
    let services = runtime.block_on(external_services(&client, &id))?;
    ensure!(
        services.len() == 2 && services.iter().all(|(_, t, p)| t == "NodePort" && *p > 0),
        "one name-server and one broker Service of type NodePort: {services:?}"
    );

    // Routes: external addresses from outside, pod addresses from inside.
    runtime.block_on(async {
        let canonical = format!("{id}%{TOPIC}");
        let (_, pod_ip) = mq_testbed::operator::server_pod(&client, &id, "broker", 0)
            .await
            .map_err(anyhow::Error::msg)?;
        let broker_port = services
            .iter()
            .find(|(n, ..)| n.ends_with("-broker-0-ext"))
            .map(|(.., p)| *p)
            .unwrap_or_default();
        let want_outside = vec![format!("127.0.0.1:{broker_port}")];
        tb.until(&client, NS, "the external route", WAIT, || {
            let (canonical, outside, want) =
                (canonical.clone(), outside.clone(), want_outside.clone());
            async move {
                let got = route_addrs(&outside, &canonical)
                    .await
                    .map_err(|e| e.to_string())?;
                if got == want {
                    Ok(Some(()))
                } else {
                    Err(format!("{got:?}, want {want:?}"))
                }
            }
        })
        .await?;
        let got = route_addrs(&inside, &canonical).await?;
        ensure!(
            got == vec![format!("{pod_ip}:10911")],
            "the in-cluster route names {got:?}, not the pod address {pod_ip}"
        );
        anyhow::Ok(())
    })?;

    // The third-party client through the external endpoint, signed; a stranger is refused.
    let (acked, stranger, got) = round_trip(&outside, &id);
    ensure!(acked == 10, "{acked} of 10 sends from outside acknowledged");
    ensure!(
        !stranger,
        "another tenant's keys sent through the external endpoint"
    );
    ensure!(
        got.len() >= 10 && got.iter().all(|b| b.starts_with("outside-")),
        "consumed from outside: {got:?}"
    );

    cli_round_trip(&outside)?;

    runtime.block_on(async {
        // The node ports stay pinned when the instance is reconciled again.
        Api::<MQInstance>::namespaced(client.clone(), NS)
            .patch(
                "exposed",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"remark": "reconcile me"}})),
            )
            .await?;
        instance_until(tb, &client, "the remark reconciled", |i| {
            ready_reason(i).is_some_and(|(_, s)| s == "True")
        })
        .await?;
        let again = external_services(&client, &id).await?;
        ensure!(
            again == services,
            "node ports moved: {services:?} → {again:?}"
        );

        // An ACL-off instance asking for nodePort is refused, saying to enable ACL.
        mq_testbed::operator::webhook_in_force(tb, &client, NS, "outside").await?;
        let mut open = mq_testbed::operator::instance("open-exposed", 1);
        open["spec"]["exposure"] = json!("nodePort");
        let refusal = format!("{:?}", create::<MQInstance>(&client, NS, open).await.err());
        ensure!(
            refusal.contains("denied the request") && refusal.contains("aclEnabled: true"),
            "{refusal}"
        );

        // loadBalancer: waits for the load balancer, then follows the Service status.
        set_exposure(&client, "loadBalancer").await?;
        let waiting = instance_until(tb, &client, "waiting for the load balancer", |i| {
            ready_reason(i).is_some_and(|(r, s)| r == "WaitingForLoadBalancer" && s == "False")
        })
        .await?;
        ensure!(external(&waiting).is_none(), "{:?}", waiting.status);
        let lb = external_services(&client, &id).await?;
        ensure!(
            lb.iter().all(|(_, t, _)| t == "LoadBalancer")
                && lb.iter().zip(&services).all(|(a, b)| a.2 == b.2),
            "LoadBalancer Services keeping their node ports: {lb:?}"
        );
        let api: Api<Service> = Api::namespaced(client.clone(), PLATFORM);
        for (name, ip) in [
            (
                format!("{}-ext", services_name(&services, "-namesrv-ext")),
                "198.51.100.10",
            ),
            (
                format!("{}-ext", services_name(&services, "-broker-0-ext")),
                "198.51.100.11",
            ),
        ] {
            let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await?;
        }
        instance_until(tb, &client, "the load balancer's address", |i| {
            external(i).as_deref() == Some("198.51.100.10:9876")
                && ready_reason(i).is_some_and(|(_, s)| s == "True")
        })
        .await?;
        // The broker now registers the load balancer's address (seen through the name
        // servers' node port, which a LoadBalancer Service keeps).
        let ns_port = services
            .iter()
            .find(|(n, ..)| n.ends_with("-namesrv-ext"))
            .map(|(.., p)| *p)
            .unwrap_or_default();
        let canonical = format!("{id}%{TOPIC}");
        tb.until(
            &client,
            NS,
            "the broker's load balancer address routed",
            WAIT,
            || {
                let canonical = canonical.clone();
                async move {
                    let got = route_addrs(&format!("127.0.0.1:{ns_port}"), &canonical)
                        .await
                        .map_err(|e| e.to_string())?;
                    if got == vec!["198.51.100.11:10911".to_owned()] {
                        Ok(Some(()))
                    } else {
                        Err(format!("{got:?}"))
                    }
                }
            },
        )
        .await?;

        // Back to cluster: the external Services go, the endpoint stays in-cluster.
        set_exposure(&client, "cluster").await?;
        let back = instance_until(tb, &client, "back to cluster", |i| {
            ready_reason(i).is_some_and(|(_, s)| s == "True") && external(i).is_none()
        })
        .await?;
        ensure!(
            back.status
                .as_ref()
                .and_then(|s| s.endpoint.clone())
                .as_deref()
                == Some(inside.as_str()),
            "{:?}",
            back.status
        );
        let client2 = client.clone();
        let id2 = id.clone();
        tb.until(&client, NS, "the external Services removed", WAIT, || {
            let (client, id) = (client2.clone(), id2.clone());
            async move {
                let left = external_services(&client, &id)
                    .await
                    .map_err(|e| e.to_string())?;
                if left.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(format!("{left:?}"))
                }
            }
        })
        .await?;

        // Without the webhook, ACL off with nodePort is reported in status and exposes
        // nothing (last: the webhook configuration is gone for the rest of this testbed).
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .delete("mq-operator", &DeleteParams::default())
            .await?;
        mq_testbed::operator::webhook_off(tb, &client, NS, "outside").await?;
        Api::<MQInstance>::namespaced(client.clone(), NS)
            .patch(
                "exposed",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"aclEnabled": false, "exposure": "nodePort"}})),
            )
            .await?;
        let refused = instance_until(tb, &client, "ExposureRequiresAcl in status", |i| {
            ready_reason(i).is_some_and(|(r, s)| r == "ExposureRequiresAcl" && s == "False")
        })
        .await?;
        let message = refused
            .status
            .iter()
            .flat_map(|s| s.conditions.iter())
            .find(|c| c.type_ == "Ready")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ensure!(message.contains("aclEnabled: true"), "{message}");
        ensure!(external(&refused).is_none(), "{:?}", refused.status);
        let left = external_services(&client, &id).await?;
        ensure!(left.is_empty(), "exposed with ACL off: {left:?}");
        anyhow::Ok(())
    })?;
    Ok(())
}

/// `mq-broker produce` and `consume` (what `make up` prints) through the external
/// endpoint with the tenant's keys; a stranger's keys are refused.
fn cli_round_trip(outside: &str) -> Result<()> {
    let run = |args: &[&str], keys: (&str, &str)| {
        std::process::Command::new(support::broker_binary())
            .args(args)
            .args(["--namesrv-addr", outside, "--topic", TOPIC])
            .args(["--access-key", keys.0, "--secret-key", keys.1])
            .env("RUST_LOG", "warn")
            .output()
    };
    let out = run(&["produce", "--count", "2", "--body", "via-cli"], TENANT)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && stdout.lines().count() == 2,
        "mq-broker produce: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["produce", "--body", "stranger"], GUEST)?;
    ensure!(
        !out.status.success(),
        "a stranger produced with mq-broker produce"
    );
    let args = [
        "consume",
        "--group",
        CLI_GROUP,
        "--count",
        "12",
        "--timeout-secs",
        "30",
    ];
    let out = run(&args, TENANT)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Each line is `<broker> queue <q> offset <n>: <body>`.
    let bodies: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(_, body)| body))
        .collect();
    ensure!(
        out.status.success()
            && bodies.iter().filter(|b| **b == "via-cli").count() == 2
            && bodies.iter().filter(|b| b.starts_with("outside-")).count() == 10,
        "mq-broker consume: {bodies:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The name (without its `-ext` suffix) of the Service ending in `suffix`.
fn services_name(services: &[(String, String, i32)], suffix: &str) -> String {
    services
        .iter()
        .find(|(n, ..)| n.ends_with(suffix))
        .map(|(n, ..)| n.trim_end_matches("-ext").to_owned())
        .unwrap_or_default()
}

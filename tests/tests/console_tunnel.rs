//! `/json/vpcTunnel/tunnelSwitch` through `api::dispatch` against a real broker (the
//! instance's target pinned to a namespaced standalone `mq-broker`, caches in memory, an
//! API server that is never reached): an ACL-off instance is refused saying to turn ACL
//! on; another tenant's instance answers as missing; a quiet instance passes the TPS
//! rule (and goes on to the API server), a busy one (more than 10 send+receive TPS on a
//! broker) is refused unless `force=true`.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::store;
use kube::runtime::watcher::Event;
use mq_broker::client::Credentials;
use mq_broker::names::Namespace;
use mq_console::accounts::Caller;
use mq_console::api::{Scope, dispatch};
use mq_console::context::{Console, Settings};
use mq_console::envelope::{ApiResult, ErrorCode};
use mq_console::metrics::Metrics;
use mq_console::params::Params;
use mq_console::runtime::{Runtime, Target};
use mq_console::sign::ReplayCache;
use mq_console::state::Caches;
use mq_console::task::TaskKey;
use mq_operator::crd::{MQEmpower, MQGroup, MQInstance, MQTopic};
use mq_operator::domain::accounts::Account;
use mq_operator::domain::profiles::Known;
use mq_operator::watch::profiles::ProfileCache;
use rocketmq_client_rust::DefaultMQProducer;
use rocketmq_model::common::message::message_single::Message;
use serde_json::json;
use support::{Client, TempDir};

const INSTANCE: &str = "MQ_INST_1380156306793859_TuNnel01";
const OPEN: &str = "MQ_INST_1380156306793859_TuNnel02";
const TOPIC: &str = "TunnelTopic";

fn cached<K>(objects: Vec<K>) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = store::<K>();
    writer.apply_watcher_event(&Event::Init);
    for o in objects {
        writer.apply_watcher_event(&Event::InitApply(o));
    }
    writer.apply_watcher_event(&Event::InitDone);
    reader
}

fn instance(name: &str, id: &str, acl: bool) -> MQInstance {
    serde_json::from_value(json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
        "metadata": {"name": name, "namespace": "tenant-a", "uid": format!("u-{name}"), "generation": 1},
        "spec": {"instanceName": name, "instanceId": id, "independentNaming": true, "aclEnabled": acl},
        "status": {"phase": "Running", "observedGeneration": 1, "readyBrokers": 1, "brokers": 1,
                   "endpoint": "10.0.0.1:9876"},
    }))
    .expect("a valid instance")
}

fn caller(user: &str, namespace: &str) -> Caller {
    Caller {
        account: Account {
            user_id: user.into(),
            namespace: namespace.into(),
            parent_user_id: None,
            credentials: Credentials::new(format!("ak-{user}"), "sk"),
            allow_instance_write: false,
            allow_topic_write: false,
        },
        request_id: "r".into(),
    }
}

async fn call(cx: &Console, who: &Caller, params: &[(&str, &str)]) -> ApiResult {
    let p = Params::from_pairs(params.iter().copied());
    dispatch("/json/vpcTunnel/tunnelSwitch", &Scope::new(cx, who), &p).await
}

fn refusal(r: &ApiResult) -> (Option<ErrorCode>, String) {
    match r {
        Ok(reply) => (None, format!("{:?}", reply.data)),
        Err(e) => (Some(e.code), format!("{e:?}")),
    }
}

#[test]
fn tunnel_switch_refuses_acl_off_and_busy_instances_and_hides_other_tenants() {
    let dir = TempDir::new("console-tunnel");
    let broker = support::standalone(&dir.0, &["--instance-id", INSTANCE]);
    let namesrv = broker.namesrv();
    Client::new().run(|rt| async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().expect("a URL"),
        ))
        .expect("a client whose calls fail");
        let cx = Console {
            client,
            caches: Caches {
                instances: cached(vec![
                    instance("tunnel", INSTANCE, true),
                    instance("open", OPEN, false),
                ]),
                topics: cached(Vec::<MQTopic>::new()),
                groups: cached(Vec::<MQGroup>::new()),
                empowers: cached(Vec::<MQEmpower>::new()),
                accounts: cached(Vec::<Secret>::new()),
                profiles: ProfileCache::fixed(Known::Missing, "profiles"),
            },
            settings: Settings::default(),
            replay: ReplayCache::new(16),
            runtime: Runtime::new(Duration::from_secs(5)),
            tasks: TaskKey::new(b"shared by every replica".to_vec()),
            metrics: Metrics::default(),
        };
        cx.runtime.remember_target(&Target {
            instance_id: INSTANCE.into(),
            name_servers: vec![namesrv.clone()],
            credentials: None,
            names: Namespace::new(Some(INSTANCE)),
        });
        let (a, b) = (caller("1001", "tenant-a"), caller("2002", "tenant-b"));
        let any = |id: &'static str| [("tunnelType", "anyTunnel"), ("instanceId", id)];

        let (code, why) = refusal(&call(&cx, &a, &any(OPEN)).await);
        assert_eq!(code, Some(ErrorCode::FieldCheckInvalid), "{why}");
        assert!(why.contains("ACL") && why.contains(OPEN), "{why}");
        let (code, why) = refusal(&call(&cx, &b, &any(INSTANCE)).await);
        assert_eq!(code, Some(ErrorCode::InstanceNotFound), "{why}");
        let bad = [("tunnelType", "everyTunnel"), ("instanceId", INSTANCE)];
        let (code, why) = refusal(&call(&cx, &a, &bad).await);
        assert_eq!(code, Some(ErrorCode::FieldCheckInvalid), "{why}");

        // Quiet: the TPS rule passes; the write then fails at the (absent) API server.
        let (code, why) = refusal(&call(&cx, &a, &any(INSTANCE)).await);
        assert_eq!(code, Some(ErrorCode::InvokeError), "{why}");
        assert!(!why.contains("force=true"), "{why}");

        // Busy: well over 10 messages a second on the broker.
        let mut producer = DefaultMQProducer::builder(rt.clone())
            .client_config(support::client_config(&namesrv, "tunnel-producer"))
            .producer_group("GID_tunnel_producer".to_owned())
            .build();
        producer.start().await.expect("producer starts");
        let started = std::time::Instant::now();
        let mut sent = 0;
        while sent < 200 || started.elapsed() < Duration::from_millis(1100) {
            let m = Message::builder()
                .topic(TOPIC)
                .body_slice(b"busy")
                .build_unchecked();
            producer.send(m).await.expect("sent").expect("a result");
            sent += 1;
        }
        let (code, why) = refusal(&call(&cx, &a, &any(INSTANCE)).await);
        assert_eq!(code, Some(ErrorCode::FieldCheckInvalid), "{why}");
        assert!(why.contains("force=true") && why.contains("TPS"), "{why}");
        let forced = [
            ("tunnelType", "anyTunnel"),
            ("instanceId", INSTANCE),
            ("force", "true"),
        ];
        let (code, why) = refusal(&call(&cx, &a, &forced).await);
        assert_eq!(
            code,
            Some(ErrorCode::InvokeError),
            "forced past the rule: {why}"
        );
        assert!(!why.contains("force=true"), "{why}");
        producer.shutdown().await;
    });
}

//! The console's runtime endpoints through `api::dispatch`, as a signed request reaches
//! them: two tenants' accounts, the platform's resources in in-memory caches (no API
//! server), the instance's target pinned to a real namespaced `mq-broker`, messages
//! sent and consumed by the real third-party client. Shapes and codes as spec §6/§7
//! (offline and online group, running info, trace, time span, paged and DLQ queries,
//! resend, reset); tenant B gets tenant A's instance (and so its topics, groups, task ids
//! and offsets) answered as missing.

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
use rocketmq_client_rust::{DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use serde_json::{Value, json};
use support::{Client, TempDir};

const INSTANCE: &str = "MQ_INST_1380156306793859_HaNdler1";
const TOPIC: &str = "HandlerTopic";
const GROUP: &str = "GID_handler";

/// A store holding `objects`.
fn cached<K>(objects: Vec<K>) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = store::<K>();
    // A first list, as the watcher delivers it (the store swaps it in at InitDone).
    writer.apply_watcher_event(&Event::Init);
    for o in objects {
        writer.apply_watcher_event(&Event::InitApply(o));
    }
    writer.apply_watcher_event(&Event::InitDone);
    reader
}

fn object<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("a valid object")
}

/// Tenant A's instance (Running, independent naming), topic and group.
fn caches() -> Caches {
    let instance: MQInstance = object(json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
        "metadata": {"name": "handlers", "namespace": "tenant-a", "uid": "u1"},
        "spec": {"instanceName": "handlers", "instanceId": INSTANCE, "independentNaming": true},
        "status": {"phase": "Running"},
    }));
    let topic: MQTopic = object(json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQTopic",
        "metadata": {"name": "handler-topic", "namespace": "tenant-a", "uid": "u2"},
        "spec": {"instance": "handlers", "topic": TOPIC, "orderType": 0},
    }));
    let group: MQGroup = object(json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQGroup",
        "metadata": {"name": "gid-handler", "namespace": "tenant-a", "uid": "u3"},
        "spec": {"instance": "handlers", "groupId": GROUP},
    }));
    // Tenant C may publish to the topic, nothing more.
    let publish_grant: MQEmpower = object(json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQEmpower",
        "metadata": {"name": "grant-c", "namespace": "tenant-a", "uid": "u4",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"instance": "handlers", "topic": TOPIC, "empowerUser": 3003, "relation": 2},
    }));
    // Tenant D may subscribe to it.
    let subscribe_grant: MQEmpower = object(json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQEmpower",
        "metadata": {"name": "grant-d", "namespace": "tenant-a", "uid": "u5",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"instance": "handlers", "topic": TOPIC, "empowerUser": 4004, "relation": 4},
    }));
    Caches {
        instances: cached(vec![instance]),
        topics: cached(vec![topic]),
        groups: cached(vec![group]),
        empowers: cached(vec![publish_grant, subscribe_grant]),
        accounts: cached(Vec::<Secret>::new()),
        profiles: ProfileCache::fixed(Known::Missing, "profiles"),
    }
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

async fn call(cx: &Console, who: &Caller, path: &str, params: &[(&str, &str)]) -> ApiResult {
    let p = Params::from_pairs(params.iter().copied());
    dispatch(path, &Scope::new(cx, who), &p).await
}

fn code(r: &ApiResult) -> Option<ErrorCode> {
    r.as_ref().err().map(|e| e.code)
}

#[test]
fn runtime_endpoints_answer_the_tenant_with_spec_shapes_and_another_tenant_as_missing() {
    let dir = TempDir::new("console-handlers");
    let broker = support::standalone(&dir.0, &["--instance-id", INSTANCE]);
    let namesrv = broker.namesrv();
    Client::new().run(|rt| async move {
        let mut producer = DefaultMQProducer::builder(rt.clone())
            .client_config(support::client_config(&namesrv, "handler-producer"))
            .producer_group("GID_handler_producer".to_owned())
            .build();
        producer.start().await.expect("producer starts");
        let begin = mq_console::runtime::now_ms();
        let mut ids = Vec::new();
        for i in 0..7 {
            let m = Message::builder()
                .topic(TOPIC)
                .tags("T")
                .keys(vec!["hk".to_owned()])
                .body_slice(format!("h-{i}").as_bytes())
                .build_unchecked();
            let r = producer.send(m).await.expect("sent").expect("a result");
            ids.push(r.msg_id.expect("a unique key").to_string());
        }
        let end = mq_console::runtime::now_ms() + 1;
        // kube builds its TLS config even for plain HTTP: pick the provider the binaries do.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().expect("a URL"),
        ))
        .expect("a client that is never called");
        let cx = Console {
            client,
            caches: caches(),
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
        let a = caller("1001", "tenant-a");
        let b = caller("2002", "tenant-b");
        let inst = ("instanceId", INSTANCE);
        let (begin_s, end_s) = (begin.to_string(), end.to_string());

        // getById / getByKey / an unknown id.
        let one = call(&cx, &a, "/json/message/getById", &[inst, ("topic", TOPIC), ("msgId", &ids[2])])
            .await
            .expect("found");
        assert_eq!(one.data["body"], "h-2");
        assert_eq!(one.data["bodyEncoding"], "text");
        assert_eq!(one.data["topic"], TOPIC);
        for field in ["propertyList", "storeSize", "bornTimestamp", "bornHost", "storeTimestamp",
                      "storeHost", "msgId", "bodyCRC", "reconsumeTimes"] {
            assert!(one.data.get(field).is_some(), "{field} in {}", one.data);
        }
        let none = call(&cx, &a, "/json/message/getById", &[inst, ("topic", TOPIC), ("msgId", "0A0000000000000000000000")]).await;
        assert_eq!(code(&none), Some(ErrorCode::NoMessage));
        let by_key = call(&cx, &a, "/json/message/getByKey", &[inst, ("topic", TOPIC), ("key", "hk")]).await.unwrap();
        assert_eq!(by_key.data.as_array().map(Vec::len), Some(7));
        let empty = call(&cx, &a, "/json/message/getByKey", &[inst, ("topic", TOPIC), ("key", "nope")]).await.unwrap();
        assert_eq!(empty.data, json!([]), "no match is an empty success");

        // Paged: a task id, stable pages, the page cap, forged and foreign task ids.
        let paged = [inst, ("topic", TOPIC), ("beginTime", begin_s.as_str()), ("endTime", end_s.as_str()), ("pageSize", "5")];
        let first = call(&cx, &a, "/json/message/getByPagedTopic", &paged).await.unwrap();
        assert_eq!(first.data["maxPageCount"], 2);
        assert_eq!(first.data["currentPage"], 1);
        assert_eq!(first.page.map(|p| (p.current, p.size, p.total)), Some((1, 5, 7)));
        let task = first.data["taskId"].as_str().expect("a task id").to_owned();
        let page2 = [inst, ("topic", TOPIC), ("taskId", task.as_str()), ("currentPage", "2")];
        let second = call(&cx, &a, "/json/message/getByPagedTopic", &page2).await.unwrap();
        let mut bodies: Vec<Value> = first.data["data"].as_array().unwrap().iter().map(|m| m["body"].clone()).collect();
        bodies.extend(second.data["data"].as_array().unwrap().iter().map(|m| m["body"].clone()));
        bodies.sort_by_key(|v| v.to_string());
        assert_eq!(bodies, (0..7).map(|i| json!(format!("h-{i}"))).collect::<Vec<_>>());
        let again = call(&cx, &a, "/json/message/getByPagedTopic", &page2).await.unwrap();
        assert_eq!(again.data, second.data, "the same page again");
        let forged = format!("{}x", task);
        let r = call(&cx, &a, "/json/message/getByPagedTopic", &[inst, ("topic", TOPIC), ("taskId", &forged)]).await;
        assert_eq!(code(&r), Some(ErrorCode::FieldCheckInvalid));
        let r = call(&cx, &a, "/json/message/getByPagedTopic", &[inst, ("topic", TOPIC), ("taskId", &task), ("currentPage", "51")]).await;
        assert_eq!(code(&r), Some(ErrorCode::FieldCheckInvalid));
        let r = call(&cx, &a, "/json/message/getByPagedTopic", &[inst, ("topic", TOPIC), ("taskId", &task), ("pageSize", "4")]).await;
        assert_eq!(code(&r), Some(ErrorCode::FieldCheckInvalid));

        // An offline group: success, online false, empty lists.
        let acc = call(&cx, &a, "/json/consumer/accumulate", &[inst, ("groupId", GROUP), ("detail", "true")]).await.unwrap();
        assert_eq!(acc.data["onLine"], false);
        assert!(acc.data["consumeTps"].is_f64());
        let st = call(&cx, &a, "/json/consumer/status", &[inst, ("groupId", GROUP)]).await.unwrap();
        assert_eq!((st.data["online"].clone(), st.data["consumeModel"].clone()), (json!(false), json!("CLUSTERING")));
        let r = call(&cx, &a, "/json/consumer/status", &[inst, ("groupId", GROUP), ("needJstack", "true")]).await;
        assert_eq!(code(&r), Some(ErrorCode::FieldCheckInvalid), "needJstack needs detail");
        let conns = call(&cx, &a, "/json/consumer/getConnection", &[inst, ("groupId", GROUP)]).await.unwrap();
        assert_eq!(conns.data, json!([]));
        let sub = call(&cx, &a, "/json/group/subDetail", &[inst, ("groupId", GROUP)]).await.unwrap();
        assert_eq!(sub.data, json!({"groupId": GROUP, "online": false, "messageModel": "CLUSTERING", "SubscriptionDataList": []}));
        let tsub = call(&cx, &a, "/json/topic/subDetail", &[inst, ("topic", TOPIC)]).await.unwrap();
        assert_eq!(tsub.data, json!({"topic": TOPIC, "SubscriptionDataList": []}));

        // Trend: the seven sends, per minute.
        let now = mq_console::runtime::now_ms();
        let (from, to) = ((now - 600_000).to_string(), now.to_string());
        let trend = call(&cx, &a, "/json/trend/topicInputTps", &[inst, ("topic", TOPIC), ("beginTime", &from), ("endTime", &to), ("period", "1"), ("type", "0")]).await.unwrap();
        let sum: f64 = trend.data["records"].as_array().unwrap().iter().map(|r| r["y"].as_f64().unwrap()).sum();
        assert_eq!(sum, 7.0, "{}", trend.data);
        let r = call(&cx, &a, "/json/trend/topicInputTps", &[inst, ("topic", TOPIC), ("beginTime", &from), ("endTime", &to), ("period", "2"), ("type", "0")]).await;
        assert_eq!(code(&r), Some(ErrorCode::FieldCheckInvalid));

        // DLQ spellings: an empty DLQ pages as success with capitalised fields.
        let dlq = call(&cx, &a, "/json/message/getByPagedDLQ", &[("InstanceId", INSTANCE), ("GroupId", GROUP), ("BeginTime", begin_s.as_str()), ("EndTime", end_s.as_str())]).await.unwrap();
        assert_eq!(dlq.data["Data"], json!([]));
        assert_eq!(dlq.data["MaxPageCount"], 0);
        assert!(dlq.data["TaskId"].is_string());
        let r = call(&cx, &a, "/json/message/resendByIdInDLQ", &[("InstanceId", INSTANCE), ("GroupId", GROUP), ("MsgId", &ids[0])]).await;
        assert_eq!(code(&r), Some(ErrorCode::NoMessage), "not a dead letter");

        // Tenant B: A's instance, and A's task id, answer as missing / invalid.
        for (path, params) in [
            ("/json/message/getById", vec![inst, ("topic", TOPIC), ("msgId", ids[2].as_str())]),
            ("/json/consumer/accumulate", vec![inst, ("groupId", GROUP)]),
            ("/json/message/getByPagedTopic", vec![inst, ("topic", TOPIC), ("taskId", task.as_str())]),
            ("/json/trend/topicInputTps", vec![inst, ("topic", TOPIC), ("beginTime", &from), ("endTime", &to), ("period", "1"), ("type", "0")]),
        ] {
            let r = call(&cx, &b, path, &params).await;
            assert_eq!(code(&r), Some(ErrorCode::InstanceNotFound), "{path}: {r:?}");
        }
        let r = call(&cx, &b, "/json/message/getByIdInDLQ", &[("InstanceId", INSTANCE), ("GroupId", GROUP), ("MsgId", &ids[0])]).await;
        assert_eq!(code(&r), Some(ErrorCode::InstanceNotFound));
        // Tenant C, a publisher by grant: sees the topic's trend, not its messages, and
        // not A's group.
        let c = caller("3003", "tenant-c");
        let trend_c = [inst, ("topic", TOPIC), ("beginTime", &from), ("endTime", &to), ("period", "5"), ("type", "1")];
        call(&cx, &c, "/json/trend/topicInputTps", &trend_c).await.expect("a grantee sees the trend");
        for path in ["/json/message/getById", "/json/message/trace"] {
            let r = call(&cx, &c, path, &[inst, ("topic", TOPIC), ("msgId", ids[2].as_str())]).await;
            assert_eq!(code(&r), Some(ErrorCode::PermissionDenied), "{path}: {r:?}");
        }
        let r = call(&cx, &c, "/json/message/getByPagedTopic", &[inst, ("topic", TOPIC), ("taskId", task.as_str())]).await;
        assert_eq!(code(&r), Some(ErrorCode::PermissionDenied));
        let r = call(&cx, &c, "/json/consumer/accumulate", &[inst, ("groupId", GROUP)]).await;
        assert_eq!(code(&r), Some(ErrorCode::SubscriptionNotFound));
        // Tenant D, a subscriber by grant: reads the messages, but not through A's task id,
        // and A's group stays out of its trace.
        let d = caller("4004", "tenant-d");
        let got = call(&cx, &d, "/json/message/getById", &[inst, ("topic", TOPIC), ("msgId", ids[2].as_str())]).await;
        assert_eq!(got.expect("a subscriber reads").data["body"], "h-2");
        let r = call(&cx, &d, "/json/message/getByPagedTopic", &[inst, ("topic", TOPIC), ("taskId", task.as_str())]).await;
        assert_eq!(code(&r), Some(ErrorCode::FieldCheckInvalid), "A's task id is A's");
        // A's own unknown group and topic are 404s of their kind.
        let r = call(&cx, &a, "/json/consumer/accumulate", &[inst, ("groupId", "GID_other")]).await;
        assert_eq!(code(&r), Some(ErrorCode::SubscriptionNotFound));
        let r = call(&cx, &a, "/json/message/getByKey", &[inst, ("topic", "OtherTopic"), ("key", "hk")]).await;
        assert_eq!(code(&r), Some(ErrorCode::TopicNotFound));

        // Online: a consumer of the group that fails `poison` bodies (no retries).
        let log = support::FailPoison::default();
        let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
            .client_config(support::client_config(&namesrv, GROUP))
            .consumer_group(GROUP.to_string())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .max_reconsume_times(0)
            .consume_thread_min(4)
            .consume_thread_max(4)
            .build();
        consumer.subscribe(TOPIC, "*").await.expect("subscribe");
        consumer.register_message_listener_concurrently(log.clone());
        consumer.start().await.expect("consumer starts");
        let m = Message::builder()
            .topic(TOPIC)
            .tags("T")
            .body_slice(b"poison-h")
            .build_unchecked();
        let poison = producer.send(m).await.expect("sent").expect("a result");
        let poison = poison.msg_id.expect("a unique key").to_string();
        support::eventually("all eight delivered", Duration::from_secs(60), || {
            log.0.lock().unwrap().len() >= 8
        })
        .await;
        let status = [inst, ("groupId", GROUP), ("detail", "true"), ("needJstack", "true")];
        let st = call(&cx, &a, "/json/consumer/status", &status).await.unwrap();
        assert_eq!(st.data["online"], true, "{}", st.data);
        assert_eq!(st.data["ConnectionSet"].as_array().map(Vec::len), Some(1));
        let info = &st.data["ConsumerConnectionInfoList"][0];
        assert_eq!(info["consumeType"], "PUSH", "{info}");
        assert!(info.get("runningInfoError").is_none(), "{info}");
        assert_eq!(info["threadCount"], 4, "{info}");
        assert!(info["startTimeStamp"].as_i64().unwrap() >= begin, "{info}");
        let threads = info["Jstack"].as_array().expect("a thread dump was asked for");
        assert!(
            threads.iter().any(|t| t["trackList"].as_array().is_some_and(|f| !f.is_empty())),
            "threads with their frames: {threads:?}"
        );
        assert_eq!(info["SubscriptionSet"][0]["topic"], TOPIC, "{info}");
        let sub = call(&cx, &a, "/json/group/subDetail", &[inst, ("groupId", GROUP)]).await.unwrap();
        assert_eq!(sub.data["online"], true);
        assert_eq!(sub.data["SubscriptionDataList"], json!([{"topic": TOPIC, "subString": "*"}]));
        let tsub = call(&cx, &a, "/json/topic/subDetail", &[inst, ("topic", TOPIC)]).await.unwrap();
        assert_eq!(
            tsub.data["SubscriptionDataList"],
            json!([{"groupId": GROUP, "subString": "*", "messageModel": "CLUSTERING"}])
        );
        let trace = call(&cx, &a, "/json/message/trace", &[inst, ("topic", TOPIC), ("msgId", &ids[1])]).await.unwrap();
        let d = caller("4004", "tenant-d");
        let theirs = call(&cx, &d, "/json/message/trace", &[inst, ("topic", TOPIC), ("msgId", &ids[1])]).await.unwrap();
        assert_eq!(theirs.data, json!([]), "a grantee does not learn the owner's groups");
        let mine: Vec<&Value> = trace.data.as_array().unwrap().iter().filter(|t| t["consumerGroup"] == GROUP).collect();
        assert_eq!(mine.len(), 1, "{}", trace.data);
        assert_eq!(mine[0]["instanceId"], INSTANCE);
        let span = call(&cx, &a, "/json/consumer/timespan", &[inst, ("groupId", GROUP), ("topic", TOPIC)]).await.unwrap();
        assert!(span.data["minTimeStamp"].as_i64().unwrap() >= begin, "{}", span.data);

        // The poison lands in the DLQ: found there, paged with capitalised fields, resent.
        let dlq_id = [("InstanceId", INSTANCE), ("GroupId", GROUP), ("MsgId", poison.as_str())];
        let mut dead = call(&cx, &a, "/json/message/getByIdInDLQ", &dlq_id).await;
        for _ in 0..100 {
            if dead.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            dead = call(&cx, &a, "/json/message/getByIdInDLQ", &dlq_id).await;
        }
        let dead = dead.expect("the poison in the DLQ");
        assert_eq!(dead.data["Body"], "poison-h");
        assert_eq!(dead.data["MsgId"], poison);
        let now_s = (mq_console::runtime::now_ms() + 1).to_string();
        let dlq_page = [("InstanceId", INSTANCE), ("GroupId", GROUP), ("BeginTime", begin_s.as_str()), ("EndTime", now_s.as_str())];
        let page = call(&cx, &a, "/json/message/getByPagedDLQ", &dlq_page).await.unwrap();
        assert_eq!(page.data["Data"][0]["Body"], "poison-h", "{}", page.data);
        assert_eq!(page.data["Data"][0]["BodyEncoding"], "text");
        call(&cx, &a, "/json/message/resendByIdInDLQ", &dlq_id).await.expect("resent");
        support::eventually("the poison delivered again", Duration::from_secs(60), || {
            log.0.lock().unwrap().iter().filter(|b| *b == "poison-h").count() >= 2
        })
        .await;
        consumer.shutdown().await;

        // Reset to the first send: the seven and the poison wait again.
        let reset = [inst, ("groupId", GROUP), ("topic", TOPIC), ("type", "1"), ("resetTime", begin_s.as_str())];
        call(&cx, &a, "/json/consumer/resetoffset", &reset).await.expect("reset");
        let acc = call(&cx, &a, "/json/consumer/accumulate", &[inst, ("groupId", GROUP), ("detail", "true")]).await.unwrap();
        assert_eq!(acc.data["DetailInTopicList"][0]["topic"], TOPIC, "{}", acc.data);
        assert_eq!(acc.data["DetailInTopicList"][0]["totalDiff"], 8, "{}", acc.data);
        let r = call(&cx, &a, "/json/consumer/resetoffset", &[inst, ("groupId", GROUP), ("topic", TOPIC), ("type", "1")]).await;
        assert_eq!(code(&r), Some(ErrorCode::FieldCheckInvalid), "type 1 needs resetTime");
        let r = call(&cx, &b, "/json/consumer/resetoffset", &[inst, ("groupId", GROUP), ("topic", TOPIC), ("type", "0")]).await;
        assert_eq!(code(&r), Some(ErrorCode::InstanceNotFound), "B cannot move A's offsets");
        producer.shutdown().await;
    });
}

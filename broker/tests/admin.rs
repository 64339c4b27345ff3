//! The admin processors and the admin client against a real `mq-broker standalone`
//! process: topics and groups through their whole life (broker tables and name-server
//! routes), stats after real sends, connection lists, runtime info, and the
//! `mq-broker admin` command line.

#[path = "common/process.rs"]
mod process;
use mq_broker::broker::groups::group_config;
use mq_broker::client::{AdminClient, AdminError};
use mq_broker::net::NoRequests;
use mq_broker::net::{Channel, connect};
use mq_broker::remoting::body::{MessageQueue, TopicConfig};
use mq_broker::remoting::{RemotingCommand, SendMessageRequestHeader, request_code, response_code};
use process::{BrokerProcess, TempDir};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a process may take to start, or a route to follow a change.
const DEADLINE: Duration = Duration::from_secs(20);
/// Longest one admin call may take.
const CALL: Duration = Duration::from_secs(5);

/// `mq-broker standalone` on ephemeral loopback ports with its own store.
struct Standalone {
    // Declared first so the process stops before its store directory goes.
    _process: BrokerProcess,
    namesrv: String,
    broker: String,
    _dir: TempDir,
}

impl Standalone {
    fn start(name: &str) -> Self {
        let dir = TempDir::new(&format!("admin-{name}"));
        let process =
            BrokerProcess::standalone(Path::new(env!("CARGO_BIN_EXE_mq-broker")), &dir.0, &[]);
        Self {
            namesrv: process.namesrv(),
            broker: process.broker(),
            _process: process,
            _dir: dir,
        }
    }

    async fn broker_client(&self) -> AdminClient {
        AdminClient::connect(&self.broker, CALL)
            .await
            .expect("broker answers")
    }

    async fn namesrv_client(&self) -> AdminClient {
        AdminClient::connect(&self.namesrv, CALL)
            .await
            .expect("name server answers")
    }
}

/// Polls `check` until it holds, failing the test after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the name server routes `topic` with `queues` write queues (`None`: no route).
async fn routed(namesrv: &AdminClient, topic: &str, queues: Option<i32>) -> bool {
    let route = namesrv.route(topic).await.expect("route query answered");
    match (route, queues) {
        (None, None) => true,
        (Some(r), Some(n)) => r.queue_datas.iter().any(|q| q.write_queue_nums == n),
        _ => false,
    }
}

fn topic(name: &str, queues: i32) -> TopicConfig {
    TopicConfig {
        topic_name: name.into(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        ..TopicConfig::default()
    }
}

async fn has_topic(broker: &AdminClient, name: &str) -> bool {
    let topics = broker.topics().await.expect("topics listed");
    topics.iter().any(|t| t.topic_name == name)
}

async fn raw(addr: &str) -> Channel {
    connect(addr, CALL, Arc::new(NoRequests))
        .await
        .expect("raw connection")
}

async fn call_ok(channel: &Channel, req: RemotingCommand) {
    let response = channel.request(req, CALL).await.expect("answered");
    assert_eq!(
        response.code,
        response_code::SUCCESS,
        "{:?}",
        response.remark
    );
}

/// Sends one message with SEND_MESSAGE_V2 to a queue.
async fn send(channel: &Channel, topic: &str, queue_id: i32, body: &str) {
    let mut req =
        RemotingCommand::new_request(request_code::SEND_MESSAGE_V2).with_body(body.to_owned());
    req.set_header(&SendMessageRequestHeader {
        producer_group: "PG_admin".into(),
        topic: topic.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id,
        born_timestamp: 1_700_000_000_000,
        properties: Some("TAGS\u{1}a\u{2}".into()),
        ..Default::default()
    });
    call_ok(channel, req).await;
}

/// Commits a group's offset on a queue with UPDATE_CONSUMER_OFFSET.
async fn commit(channel: &Channel, group: &str, topic: &str, queue_id: i32, offset: i64) {
    let req = RemotingCommand::new_request(request_code::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue_id.to_string())
        .with_ext("commitOffset", offset.to_string());
    call_ok(channel, req).await;
}

/// A heartbeat of one producer group and one consumer group subscribed to `topic`.
async fn heartbeat(channel: &Channel, producer: &str, consumer: &str, topic: &str) {
    let body = serde_json::json!({
        "clientID": "127.0.0.1@admin-test",
        "producerDataSet": [{"groupName": producer}],
        "consumerDataSet": [{
            "groupName": consumer,
            "consumeType": "CONSUME_PASSIVELY",
            "messageModel": "CLUSTERING",
            "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET",
            "subscriptionDataSet": [{"topic": topic, "subString": "*"}],
            "unitMode": false
        }]
    });
    let req = RemotingCommand::new_request(request_code::HEART_BEAT).with_body(body.to_string());
    call_ok(channel, req).await;
}

fn queue(broker: &str, topic: &str, queue_id: i32) -> MessageQueue {
    MessageQueue {
        topic: topic.into(),
        broker_name: broker.into(),
        queue_id,
    }
}

#[tokio::test]
async fn topics_are_created_routed_updated_and_deleted_idempotently() {
    let mq = Standalone::start("topics");
    let (broker, namesrv) = (mq.broker_client().await, mq.namesrv_client().await);

    broker
        .create_topic(&topic("AdminTopic", 4))
        .await
        .expect("created");
    assert!(has_topic(&broker, "AdminTopic").await);
    eventually("the name server routes the new topic", || {
        routed(&namesrv, "AdminTopic", Some(4))
    })
    .await;

    broker
        .create_topic(&topic("AdminTopic", 4))
        .await
        .expect("creating again is no error");
    let listed: Vec<_> = broker
        .topics()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.topic_name == "AdminTopic")
        .collect();
    assert_eq!(listed, [topic("AdminTopic", 4)], "one topic, unchanged");

    broker
        .create_topic(&topic("AdminTopic", 6))
        .await
        .expect("updated");
    eventually("the route shows the update", || {
        routed(&namesrv, "AdminTopic", Some(6))
    })
    .await;

    broker.delete_topic("AdminTopic").await.expect("deleted");
    assert!(
        !has_topic(&broker, "AdminTopic").await,
        "gone from the broker at once"
    );
    eventually("the route is gone after re-registration", || {
        routed(&namesrv, "AdminTopic", None)
    })
    .await;
    broker
        .delete_topic("AdminTopic")
        .await
        .expect("deleting again is no error");

    let err = broker
        .topic_stats("AdminTopic")
        .await
        .expect_err("no stats for a deleted topic");
    assert!(err.is_not_found(), "{err}");
    let err = broker
        .create_topic(&topic("bad topic", 1))
        .await
        .expect_err("illegal name refused");
    assert_eq!(
        err.response_code(),
        Some(response_code::SYSTEM_ERROR),
        "{err}"
    );
    namesrv
        .delete_topic_in_namesrv("AdminTopic")
        .await
        .expect("absent topics delete fine");
}

#[tokio::test]
async fn groups_bring_their_retry_topic_and_delete_idempotently() {
    let mq = Standalone::start("groups");
    let broker = mq.broker_client().await;
    let mut config = group_config("GID_admin");
    config.retry_max_times = 3;

    broker.create_group(&config).await.expect("created");
    broker
        .create_group(&config)
        .await
        .expect("creating again is no error");
    let groups = broker.groups().await.unwrap();
    assert_eq!(
        groups.iter().filter(|g| **g == config).count(),
        1,
        "{groups:?}"
    );
    assert!(
        has_topic(&broker, "%RETRY%GID_admin").await,
        "the retry topic exists"
    );

    broker.delete_group("GID_admin").await.expect("deleted");
    assert!(
        !broker
            .groups()
            .await
            .unwrap()
            .iter()
            .any(|g| g.group_name == "GID_admin")
    );
    assert!(
        !has_topic(&broker, "%RETRY%GID_admin").await,
        "its retry topic goes too"
    );
    broker
        .delete_group("GID_admin")
        .await
        .expect("deleting again is no error");
}

#[tokio::test]
async fn stats_connections_and_runtime_follow_real_traffic() {
    let mq = Standalone::start("stats");
    let broker = mq.broker_client().await;
    broker.create_topic(&topic("StatsTopic", 2)).await.unwrap();
    let channel = raw(&mq.broker).await;
    for n in 0..3 {
        send(&channel, "StatsTopic", 0, &format!("message {n}")).await;
    }
    commit(&channel, "GID_stats", "StatsTopic", 0, 1).await;

    let stats = broker.topic_stats("StatsTopic").await.unwrap();
    let q0 = stats.offset_table.0[&queue("broker-a", "StatsTopic", 0)];
    assert_eq!((q0.min_offset, q0.max_offset), (0, 3));
    assert!(q0.last_update_timestamp > 0);
    assert_eq!(
        stats.offset_table.0[&queue("broker-a", "StatsTopic", 1)].max_offset,
        0
    );

    let consumed = broker
        .consume_stats("GID_stats", Some("StatsTopic"))
        .await
        .unwrap();
    let q0 = consumed.offset_table.0[&queue("broker-a", "StatsTopic", 0)];
    assert_eq!((q0.broker_offset, q0.consumer_offset), (3, 1));
    assert!(
        q0.last_timestamp > 0,
        "store time of the last consumed message"
    );
    assert_eq!(consumed.total_diff(), 2);
    let all = broker.consume_stats("GID_stats", None).await.unwrap();
    assert_eq!(
        all, consumed,
        "without a topic: every topic the group has offsets on"
    );

    assert_connections(&broker, &channel).await;
    let runtime = broker.runtime_info().await.unwrap();
    let figure = |k: &str| {
        runtime
            .get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(-1)
    };
    assert!(figure("msgPutTotalTodayNow") >= 3, "{runtime:?}");
    assert!(
        figure("commitLogMaxOffset") > figure("commitLogMinOffset"),
        "{runtime:?}"
    );
    assert!(runtime.contains_key("brokerVersionDesc") && runtime.contains_key("runtime"));
}

/// Connection lists: refused while nobody is online, listing the client after a heartbeat.
async fn assert_connections(broker: &AdminClient, channel: &Channel) {
    let err: AdminError = broker
        .consumer_connections("GID_stats")
        .await
        .expect_err("offline");
    assert_eq!(
        err.response_code(),
        Some(response_code::CONSUMER_NOT_ONLINE),
        "{err}"
    );
    assert!(
        broker.producer_connections("PG_admin").await.is_err(),
        "no producer yet"
    );
    heartbeat(channel, "PG_admin", "GID_stats", "StatsTopic").await;
    let consumers = broker.consumer_connections("GID_stats").await.unwrap();
    assert_eq!(
        consumers.connection_set[0].client_id,
        "127.0.0.1@admin-test"
    );
    assert!(consumers.subscription_table.contains_key("StatsTopic"));
    let producers = broker.producer_connections("PG_admin").await.unwrap();
    assert_eq!(producers.connection_set.len(), 1);
}

/// Runs `mq-broker admin …` and returns its stdout, failing on a non-zero exit.
async fn admin_cli(namesrv: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mq-broker"))
        .args(["admin", "--namesrv-addr", namesrv])
        .args(args)
        .env("RUST_LOG", "warn")
        .output();
    let output = tokio::time::timeout(DEADLINE, output)
        .await
        .expect("mq-broker admin finishes")
        .expect("mq-broker admin runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "mq-broker admin {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_admin_command_line_creates_and_lists_topics() {
    let mq = Standalone::start("cli");
    let namesrv = mq.namesrv_client().await;
    eventually("the broker has registered", || async {
        !namesrv
            .cluster_info()
            .await
            .unwrap()
            .broker_addr_table
            .is_empty()
    })
    .await;

    let created = admin_cli(
        &mq.namesrv,
        &["topic", "create", "CliTopic", "--queues", "2"],
    )
    .await;
    assert!(created.contains("ok"), "{created}");
    let listed = admin_cli(&mq.namesrv, &["topic", "list"]).await;
    assert!(
        listed.lines().any(|l| l.starts_with("CliTopic ")),
        "{listed}"
    );
    let json = admin_cli(&mq.namesrv, &["topic", "list", "--output", "json"]).await;
    let topics: serde_json::Value = serde_json::from_str(&json).expect("JSON output");
    let entry = topics
        .as_array()
        .and_then(|a| a.iter().find(|t| t["topic"]["topicName"] == "CliTopic"))
        .unwrap_or_else(|| panic!("CliTopic in {json}"));
    assert_eq!(entry["topic"]["writeQueueNums"], 2);
    let clusters = admin_cli(&mq.namesrv, &["cluster", "list"]).await;
    assert!(clusters.contains("broker-a"), "{clusters}");
}

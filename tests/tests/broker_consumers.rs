//! Who consumes what, with real `rocketmq-client-rust` push consumers online and its
//! admin client (`DefaultMQAdminExt`) beside ours: QUERY_TOPIC_CONSUME_BY_WHO (300),
//! GET_CONSUMER_RUNNING_INFO (307) relayed to clients, offset resets with consumers
//! online and offline (222 → 220), dead-letter resend (30002) and consume-directly (309),
//! message trace, and the admin key these need under ACL.

#![allow(deprecated)] // rocketmq-client-rust's MessageTrack/TrackType carry a moved-type note.

mod support;

use mq_broker::client::{AdminClient, Credentials, DlqMessageRef, TrackedMessage};
use mq_broker::net::{RequestContext, RequestHandler};
use mq_broker::remoting::body::{self, ConsumerData, HeartbeatData, SubscriptionData};
use mq_broker::remoting::consume::TrackType;
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use rocketmq_client_rust::{
    ClientResult, ClientRuntime, ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus,
    ConsumerAdmin, DefaultMQAdminExt, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
    MessageListenerConcurrently, OffsetAdmin, TopicAdmin,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{Client, TempDir, eventually};

/// Long enough for a consumer's first rebalance and the client's 10 s reset pause.
const DELIVERY: Duration = Duration::from_secs(60);

/// Waits (polling, bounded by [`DELIVERY`]) until the condition, which may `.await`, holds.
macro_rules! wait_for {
    ($what:expr, $cond:expr) => {{
        let deadline = std::time::Instant::now() + DELIVERY;
        while !$cond {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }};
}

/// One delivery as a listener saw it.
#[derive(Clone, Debug)]
struct Delivery {
    body: String,
    uniq_key: Option<String>,
    reconsume_times: i32,
    msg: MessageExt,
}

type Log = Arc<Mutex<Vec<Delivery>>>;

/// Records deliveries; fails bodies starting with `poison` until `healed`; while `gate`
/// is closed, waits (bounded) for it to open before answering.
#[derive(Clone, Default)]
struct Listener {
    log: Log,
    healed: Arc<AtomicBool>,
    gate: Option<Arc<AtomicBool>>,
}

impl MessageListenerConcurrently for Listener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _: &ConsumeConcurrentlyContext,
    ) -> ClientResult<ConsumeConcurrentlyStatus> {
        if let Some(gate) = &self.gate {
            // A held consumer: its offset cannot pass these messages until released.
            let deadline = std::time::Instant::now() + DELIVERY;
            while !gate.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let mut failed = false;
        for m in msgs {
            let body = support::body_text(m);
            failed |= body.starts_with("poison") && !self.healed.load(Ordering::Acquire);
            self.log.lock().unwrap().push(Delivery {
                body,
                uniq_key: m.properties().get("UNIQ_KEY").map(|v| v.to_string()),
                reconsume_times: m.reconsume_times(),
                msg: (*m).clone(),
            });
        }
        Ok(if failed {
            ConsumeConcurrentlyStatus::ReconsumeLater
        } else {
            ConsumeConcurrentlyStatus::ConsumeSuccess
        })
    }
}

fn count(log: &Log, body: &str) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|d| d.body == body)
        .count()
}

fn message(topic: &str, tags: &str, body: &str) -> Message {
    Message::builder()
        .topic(topic)
        .tags(tags)
        .body_slice(body.as_bytes())
        .build_unchecked()
}

async fn producer(rt: &Arc<ClientRuntime>, namesrv: &str, topic: &str) -> DefaultMQProducer {
    let mut producer = DefaultMQProducer::builder(rt.clone())
        .client_config(support::client_config(namesrv, "producer"))
        .producer_group("GID_consumers_producer".to_string())
        .build();
    producer.start().await.expect("producer starts");
    producer
        .send(message(topic, "Warm", "warmup"))
        .await
        .expect("warm-up send creates the topic");
    support::wait_for_route(namesrv, topic).await;
    producer
}

async fn send(producer: &DefaultMQProducer, topic: &str, tags: &str, body: &str) -> String {
    let result = producer
        .send(message(topic, tags, body))
        .await
        .expect("send")
        .expect("a sync send has a result");
    result
        .msg_id
        .expect("the send result names the message")
        .to_string()
}

/// A started push consumer of `group` on `topic` with `expression`, from the first offset.
async fn consumer(
    rt: &Arc<ClientRuntime>,
    namesrv: &str,
    group: &str,
    (topic, expression): (&str, &str),
    listener: Listener,
) -> DefaultMQPushConsumer {
    let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
        .client_config(support::client_config(namesrv, group))
        .consumer_group(group.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .max_reconsume_times(1)
        .consume_thread_min(4)
        .consume_thread_max(4)
        .build();
    consumer
        .subscribe(topic, expression)
        .await
        .expect("subscribe");
    consumer.register_message_listener_concurrently(listener);
    consumer.start().await.expect("consumer starts");
    consumer
}

/// The third-party admin client, on the name server.
async fn third_party_admin(rt: &Arc<ClientRuntime>, namesrv: &str) -> DefaultMQAdminExt {
    let mut admin = DefaultMQAdminExt::new(rt.clone());
    admin.set_namesrv_addr(namesrv);
    admin.client_config_mut().vip_channel_enabled = false;
    admin.client_config_mut().instance_name = "third-party-admin".into();
    admin.start().await.expect("admin starts");
    admin
}

async fn admin(broker: &str) -> AdminClient {
    AdminClient::connect(broker, Duration::from_secs(10))
        .await
        .expect("broker reachable")
}

/// The one online client id of `group`.
async fn client_id(admin: &AdminClient, group: &str) -> String {
    let mut id = None;
    for _ in 0..200 {
        if let Ok(c) = admin.consumer_connections(group).await
            && let Some(conn) = c.connection_set.first()
        {
            id = Some(conn.client_id.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    id.unwrap_or_else(|| panic!("{group} never came online"))
}

/// Commits `offset` for `group` on queue 0 of `topic` (a group with offsets, no client).
async fn commit_offset(broker: &str, group: &str, topic: &str, queue_id: i32, offset: i64) {
    let req = RemotingCommand::new_request(request_code::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue_id.to_string())
        .with_ext("commitOffset", offset.to_string());
    let answer = support::raw_request(broker, req).await;
    assert_eq!(answer.code, response_code::SUCCESS, "{:?}", answer.remark);
}

/// A connection that heartbeats as a consumer of `group` and answers calls with `H`.
async fn fake_consumer<H: RequestHandler>(
    broker: &str,
    group: &str,
    client_id: &str,
    handler: H,
) -> mq_broker::net::Channel {
    let channel = mq_broker::net::connect(broker, Duration::from_secs(5), Arc::new(handler))
        .await
        .expect("connect");
    let data = HeartbeatData {
        client_id: client_id.into(),
        consumer_data_set: vec![ConsumerData {
            group_name: group.into(),
            subscription_data_set: vec![SubscriptionData {
                topic: "WhoTopic".into(),
                sub_string: "*".into(),
                ..SubscriptionData::default()
            }],
            ..ConsumerData::default()
        }],
        ..HeartbeatData::default()
    };
    let req =
        RemotingCommand::new_request(request_code::HEART_BEAT).with_body(body::to_json(&data));
    let answer = channel
        .request(req, Duration::from_secs(5))
        .await
        .expect("heartbeat");
    assert_eq!(answer.code, response_code::SUCCESS);
    channel
}

/// A client that never answers the broker's calls.
struct Silent;

impl RequestHandler for Silent {
    async fn handle(&self, _: RequestContext, _: RemotingCommand) -> Option<RemotingCommand> {
        std::future::pending().await
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[test]
fn who_consumes_a_topic_and_running_info_is_relayed_to_the_client() {
    let dir = TempDir::new("who");
    let broker = support::standalone(&dir.0, &["--client-call-timeout-ms", "1000"]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    Client::new().run(|rt| async move {
        let producer = producer(&rt, &namesrv, "WhoTopic").await;
        let log = Log::default();
        let listener = Listener {
            log: log.clone(),
            ..Listener::default()
        };
        let mut online = consumer(&rt, &namesrv, "GID_who", ("WhoTopic", "*"), listener).await;
        commit_offset(&addr, "GID_who_offsets", "WhoTopic", 0, 0).await;
        let admin = admin(&addr).await;
        let id = client_id(&admin, "GID_who").await;
        let groups = admin.topic_consumed_by("WhoTopic").await.expect("300");
        assert_eq!(
            groups,
            BTreeSet::from(["GID_who".to_owned(), "GID_who_offsets".to_owned()]),
            "the online subscriber and the group with offsets"
        );
        assert!(
            admin
                .topic_consumed_by("NobodysTopic")
                .await
                .unwrap()
                .is_empty()
        );

        let info = admin
            .consumer_running_info("GID_who", &id, true)
            .await
            .expect("307 relayed to the online client");
        assert!(
            info.subscription_set.iter().any(|s| s.topic == "WhoTopic"),
            "the client's own subscriptions: {:?}",
            info.subscription_set
        );
        assert!(!info.properties.is_empty());
        assert!(
            info.jstack.is_some_and(|j| !j.is_empty()),
            "asked for its stack"
        );

        // The same through the third-party admin client.
        let mut ext = third_party_admin(&rt, &namesrv).await;
        let list = ext
            .query_topic_consume_by_who("WhoTopic".into())
            .await
            .expect("300");
        let listed: BTreeSet<String> = list
            .get_group_list()
            .iter()
            .map(|g| g.to_string())
            .collect();
        assert_eq!(listed, groups);
        support::wait_for_route(&namesrv, "%RETRY%GID_who").await;
        let info = ext
            .get_consumer_running_info("GID_who".into(), id.clone().into(), false, None)
            .await
            .expect("307 through the third-party admin");
        assert!(
            info.subscription_set
                .iter()
                .any(|s| s.topic.as_str() == "WhoTopic")
        );

        // A client id nobody uses, a client that never answers, one that cannot.
        let offline = admin
            .consumer_running_info("GID_who", "10.9.9.9@gone", false)
            .await
            .expect_err("no such client");
        assert_eq!(
            offline.response_code(),
            Some(response_code::CONSUMER_NOT_ONLINE)
        );
        assert!(
            offline.remark().unwrap_or("").contains("not online"),
            "{offline}"
        );
        let _silent = fake_consumer(&addr, "GID_silent", "127.0.0.1@silent", Silent).await;
        let started = std::time::Instant::now();
        let timed_out = admin
            .consumer_running_info("GID_silent", "127.0.0.1@silent", false)
            .await
            .expect_err("the client never answers");
        assert_eq!(
            timed_out.response_code(),
            Some(response_code::CONSUME_MSG_TIMEOUT)
        );
        assert!(
            timed_out.remark().unwrap_or("").contains("timed out"),
            "{timed_out}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded by the broker's timeout"
        );
        let _unable = fake_consumer(
            &addr,
            "GID_unable",
            "127.0.0.1@unable",
            mq_broker::net::NoRequests,
        )
        .await;
        let unsupported = admin
            .consumer_running_info("GID_unable", "127.0.0.1@unable", false)
            .await
            .expect_err("the client does not support it");
        assert_eq!(
            unsupported.response_code(),
            Some(response_code::REQUEST_CODE_NOT_SUPPORTED),
            "the client's own answer is passed on"
        );
        ext.shutdown().await;
        online.shutdown().await;
        let mut producer = producer;
        producer.shutdown().await;
    });
}

#[test]
fn reset_to_a_time_with_a_consumer_online_redelivers_exactly_what_was_stored_since() {
    let dir = TempDir::new("reset-time");
    let broker = support::standalone(&dir.0, &[]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    Client::new().run(|rt| async move {
        let mut producer = producer(&rt, &namesrv, "ResetTopic").await;
        for i in 0..10 {
            send(&producer, "ResetTopic", "T", &format!("old-{i}")).await;
        }
        let cut = now_ms() + 1;
        // Every later message is stored strictly after `cut`.
        eventually("the clock passes the cut", Duration::from_secs(2), || {
            now_ms() > cut
        })
        .await;
        for i in 0..10 {
            send(&producer, "ResetTopic", "T", &format!("new-{i}")).await;
        }
        let log = Log::default();
        let listener = Listener {
            log: log.clone(),
            ..Listener::default()
        };
        let mut online = consumer(&rt, &namesrv, "GID_reset", ("ResetTopic", "*"), listener).await;
        let admin = admin(&addr).await;
        let everything = || {
            (0..10)
                .all(|i| count(&log, &format!("old-{i}")) + count(&log, &format!("new-{i}")) >= 2)
        };
        eventually("everything consumed once", DELIVERY, everything).await;
        eventually_caught_up(&admin, "GID_reset", "ResetTopic").await;

        let offsets = admin
            .reset_offset("ResetTopic", "GID_reset", Some(cut), true)
            .await
            .expect("222");
        let reset_to: i64 = offsets.values().sum();
        assert_eq!(
            stored(&admin, "ResetTopic").await - reset_to,
            10,
            "the reset offsets leave exactly the 10 new messages: {offsets:?}"
        );
        assert_eq!(backlog(&admin, "GID_reset", "ResetTopic").await, 10);

        let all_new_twice = || (0..10).all(|i| count(&log, &format!("new-{i}")) >= 2);
        eventually(
            "every message stored since the time arrives again",
            DELIVERY,
            all_new_twice,
        )
        .await;
        eventually_caught_up(&admin, "GID_reset", "ResetTopic").await;
        for i in 0..10 {
            assert_eq!(
                count(&log, &format!("old-{i}")),
                1,
                "old-{i} is older than the reset"
            );
        }
        online.shutdown().await;
        producer.shutdown().await;
    });
}

/// Waits until `group` has committed everything in `topic`.
async fn eventually_caught_up(admin: &AdminClient, group: &str, topic: &str) {
    let deadline = std::time::Instant::now() + DELIVERY;
    loop {
        let stats = admin.consume_stats(group, Some(topic)).await.expect("208");
        if stats.total_diff() == 0 && !stats.offset_table.0.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{group} never caught up: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn skip_all_accumulated_empties_the_backlog_online_and_offline() {
    let dir = TempDir::new("reset-skip");
    let broker = support::standalone(&dir.0, &[]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    Client::new().run(|rt| async move {
        let mut producer = producer(&rt, &namesrv, "SkipTopic").await;
        let admin = admin(&addr).await;
        // Offline: a group with offsets at the start and no client.
        for queue in 0..8 {
            commit_offset(&addr, "GID_skip_offline", "SkipTopic", queue, 0).await;
        }
        // Online: a consumer held inside its listener, so its backlog stays.
        let gate = Arc::new(AtomicBool::new(false));
        let log = Log::default();
        let listener = Listener {
            log: log.clone(),
            gate: Some(gate.clone()),
            ..Listener::default()
        };
        let mut held = consumer(&rt, &namesrv, "GID_skip", ("SkipTopic", "*"), listener).await;
        let _ = client_id(&admin, "GID_skip").await;
        for i in 0..40 {
            send(&producer, "SkipTopic", "T", &format!("backlog-{i}")).await;
        }
        assert!(backlog(&admin, "GID_skip_offline", "SkipTopic").await > 0);
        wait_for!(
            "the held consumer has a backlog",
            backlog(&admin, "GID_skip", "SkipTopic").await > 0
        );

        // Offline group: our admin client, to the end of each queue.
        let offsets = admin
            .reset_offset("SkipTopic", "GID_skip_offline", None, true)
            .await
            .expect("222 for an offline group");
        assert!(!offsets.is_empty());
        assert_eq!(
            backlog(&admin, "GID_skip_offline", "SkipTopic").await,
            0,
            "committed at once"
        );
        // A client that has not adopted the reset commits its old position: ignored,
        // until it commits the reset offset itself (it adopted it).
        let (q0, end) = offsets
            .iter()
            .find(|(mq, _)| mq.queue_id == 0)
            .map(|(mq, &o)| (mq.queue_id, o))
            .expect("queue 0 reset");
        assert!(end > 0, "queue 0 has messages");
        commit_offset(&addr, "GID_skip_offline", "SkipTopic", q0, 0).await;
        assert_eq!(
            backlog(&admin, "GID_skip_offline", "SkipTopic").await,
            0,
            "a stale commit does not undo the reset"
        );
        commit_offset(&addr, "GID_skip_offline", "SkipTopic", q0, end).await;
        commit_offset(&addr, "GID_skip_offline", "SkipTopic", q0, end - 1).await;
        assert_eq!(
            backlog(&admin, "GID_skip_offline", "SkipTopic").await,
            1,
            "once the reset offset is committed, commits count again"
        );

        // Online group: the third-party admin, resetting to now (what a console's
        // "skip accumulation" also sends as a time).
        let mut ext = third_party_admin(&rt, &namesrv).await;
        let now = now_ms() as u64 + 1;
        eventually(
            "the clock passes the last send",
            Duration::from_secs(2),
            || now_ms() as u64 > now,
        )
        .await;
        let reset = ext
            .reset_offset_by_timestamp(None, "SkipTopic".into(), "GID_skip".into(), now, true)
            .await
            .expect("222 through the third-party admin");
        assert!(!reset.is_empty());
        assert_eq!(
            backlog(&admin, "GID_skip", "SkipTopic").await,
            0,
            "accumulation 0 once reset"
        );
        gate.store(true, Ordering::Release);
        // The client drops what it held and commits the reset offsets, not older ones.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            assert_eq!(
                backlog(&admin, "GID_skip", "SkipTopic").await,
                0,
                "nothing undoes the reset"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ext.shutdown().await;
        held.shutdown().await;
        producer.shutdown().await;
    });
}

/// Messages `group` has not consumed in `topic` (GET_CONSUME_STATS).
async fn backlog(admin: &AdminClient, group: &str, topic: &str) -> i64 {
    admin
        .consume_stats(group, Some(topic))
        .await
        .expect("208")
        .total_diff()
}

/// Messages stored in `topic`.
async fn stored(admin: &AdminClient, topic: &str) -> i64 {
    admin
        .topic_stats(topic)
        .await
        .map(|s| s.offset_table.0.values().map(|o| o.max_offset).sum())
        .unwrap_or(0)
}

#[test]
fn a_dead_letter_message_is_delivered_to_its_group_again() {
    let dir = TempDir::new("dlq-resend");
    let broker = support::standalone(&dir.0, &["--delay-levels", "100ms 100ms 100ms 100ms 100ms"]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    Client::new().run(|rt| async move {
        let mut producer = producer(&rt, &namesrv, "DlqTopic").await;
        let log = Log::default();
        let healed = Arc::new(AtomicBool::new(false));
        let listener = Listener {
            log: log.clone(),
            healed: healed.clone(),
            gate: None,
        };
        let mut online = consumer(&rt, &namesrv, "GID_dlq", ("DlqTopic", "*"), listener).await;
        let uniq = send(&producer, "DlqTopic", "T", "poison-1").await;
        let admin = admin(&addr).await;
        wait_for!(
            "the failing message in the DLQ",
            stored(&admin, "%DLQ%GID_dlq").await == 1
        );
        assert_eq!(count(&log, "poison-1"), 2, "first delivery plus one retry");

        healed.store(true, Ordering::Release);
        let copy = admin
            .resend_dlq("GID_dlq", DlqMessageRef::Id(&uniq))
            .await
            .expect("30002 by unique key");
        assert!(!copy.msg_id.is_empty());
        eventually("the resent message delivered", DELIVERY, || {
            count(&log, "poison-1") == 3
        })
        .await;
        let again = log.lock().unwrap().last().cloned().expect("a delivery");
        assert_eq!(again.body, "poison-1");
        assert_eq!(
            again.uniq_key.as_deref(),
            Some(uniq.as_str()),
            "same unique key"
        );
        assert_eq!(
            again.msg.topic().as_str(),
            "DlqTopic",
            "delivered as its own topic"
        );
        assert_eq!(again.reconsume_times, 0, "as a fresh delivery");
        assert_eq!(
            stored(&admin, "%DLQ%GID_dlq").await,
            1,
            "the DLQ copy stays"
        );

        // By queue offset too, and straight to one client (309) by the DLQ copy's id.
        admin
            .resend_dlq("GID_dlq", DlqMessageRef::Offset(0))
            .await
            .expect("30002 by offset");
        eventually("resent by offset", DELIVERY, || {
            count(&log, "poison-1") == 4
        })
        .await;
        let missing = admin
            .resend_dlq("GID_dlq", DlqMessageRef::Offset(5))
            .await
            .expect_err("nothing at offset 5");
        assert_eq!(
            missing.response_code(),
            Some(response_code::QUERY_NOT_FOUND)
        );
        let id = client_id(&admin, "GID_dlq").await;
        let result = admin
            .consume_message_directly("GID_dlq", &id, &uniq)
            .await
            .expect("309 relayed to the client");
        assert_eq!(result.consume_result, "CR_SUCCESS", "{result:?}");
        assert_eq!(
            count(&log, "poison-1"),
            5,
            "the listener consumed it directly"
        );
        online.shutdown().await;
        producer.shutdown().await;
    });
}

#[test]
fn trace_tells_each_group_where_a_message_stands() {
    let dir = TempDir::new("trace");
    let broker = support::standalone(&dir.0, &[]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    Client::new().run(|rt| async move {
        let mut producer = producer(&rt, &namesrv, "TraceTopic").await;
        let admin = admin(&addr).await;
        let all = Log::default();
        let gate = Arc::new(AtomicBool::new(false));
        let listen = |log: &Log, gate: Option<Arc<AtomicBool>>| Listener {
            log: log.clone(),
            gate,
            ..Listener::default()
        };
        let mut consumers = vec![
            consumer(
                &rt,
                &namesrv,
                "GID_trace_all",
                ("TraceTopic", "*"),
                listen(&all, None),
            )
            .await,
            consumer(
                &rt,
                &namesrv,
                "GID_trace_b",
                ("TraceTopic", "TagB"),
                listen(&Log::default(), None),
            )
            .await,
            consumer(
                &rt,
                &namesrv,
                "GID_trace_held",
                ("TraceTopic", "*"),
                listen(&Log::default(), Some(gate.clone())),
            )
            .await,
        ];
        for group in ["GID_trace_all", "GID_trace_b", "GID_trace_held"] {
            let _ = client_id(&admin, group).await;
        }
        commit_offset(&addr, "GID_trace_gone", "TraceTopic", 0, 0).await;
        admin
            .create_group(&mq_broker::broker::groups::group_config("GID_trace_gone"))
            .await
            .expect("the offline group exists");
        send(&producer, "TraceTopic", "TagA", "traced").await;
        eventually("the traced message consumed", DELIVERY, || {
            all.lock().unwrap().iter().any(|d| d.body == "traced")
        })
        .await;
        let msg = all
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.body == "traced")
            .map(|d| d.msg.clone())
            .expect("delivered");
        let tracked = TrackedMessage {
            topic: "TraceTopic".into(),
            queue_id: msg.queue_id(),
            queue_offset: msg.queue_offset(),
            tags: msg.get_tags().map(|t| t.to_string()),
        };
        let expected = [
            ("GID_trace_all", TrackType::Consumed),
            ("GID_trace_b", TrackType::ConsumedButFiltered),
            ("GID_trace_gone", TrackType::NotOnline),
            ("GID_trace_held", TrackType::NotConsumeYet),
        ];
        let expected: Vec<(String, TrackType)> =
            expected.iter().map(|(g, t)| (g.to_string(), *t)).collect();
        let answered = || async {
            let tracks = admin.message_track(&tracked).await.expect("trace");
            tracks
                .into_iter()
                .map(|t| (t.consumer_group, t.track_type))
                .collect::<Vec<_>>()
        };
        wait_for!(
            "the consumers' offsets committed past the message",
            answered().await == expected
        );
        let tracks = admin.message_track(&tracked).await.expect("trace");
        assert!(
            tracks
                .iter()
                .find(|t| t.consumer_group == "GID_trace_gone")
                .and_then(|t| t.exception_desc.as_deref())
                .is_some_and(|d| d.contains("not online")),
            "NOT_ONLINE says why: {tracks:?}"
        );

        // The third-party admin reads the same from 300, 203 and 208.
        for group in [
            "GID_trace_all",
            "GID_trace_b",
            "GID_trace_held",
            "GID_trace_gone",
        ] {
            support::wait_for_route(&namesrv, &format!("%RETRY%{group}")).await;
        }
        let ext = third_party_admin(&rt, &namesrv).await;
        let theirs = ext
            .message_track_detail(msg)
            .await
            .expect("message_track_detail");
        let theirs: Vec<(String, String)> = theirs
            .iter()
            .map(|t| (t.consumer_group.clone(), format!("{:?}", t.track_type)))
            .collect();
        assert_eq!(
            theirs,
            [
                ("GID_trace_all".to_owned(), "Some(Consumed)".to_owned()),
                (
                    "GID_trace_b".to_owned(),
                    "Some(ConsumedButFiltered)".to_owned()
                ),
                ("GID_trace_gone".to_owned(), "Some(NotOnline)".to_owned()),
                (
                    "GID_trace_held".to_owned(),
                    "Some(NotConsumedYet)".to_owned()
                ),
            ]
        );
        let mut ext = ext;
        ext.shutdown().await;
        gate.store(true, Ordering::Release);
        for mut c in consumers.drain(..) {
            c.shutdown().await;
        }
        producer.shutdown().await;
    });
}

#[test]
fn consumer_admin_codes_need_the_admin_key_under_acl() {
    let dir = TempDir::new("consumers-acl");
    let accounts = r#"{"accounts": [
      {"accessKey": "user", "secretKey": "user-secret", "topicPerms": ["T=PUB|SUB"]},
      {"accessKey": "platform", "secretKey": "platform-secret", "admin": true}]}"#;
    let broker = support::standalone_with_acl(&dir.0, accounts, &[]);
    let addr = broker.broker();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let connect = || AdminClient::connect(&addr, Duration::from_secs(5));
        let user = connect()
            .await
            .unwrap()
            .with_credentials(Credentials::new("user", "user-secret"));
        let unsigned = connect().await.unwrap();
        let platform = connect()
            .await
            .unwrap()
            .with_credentials(Credentials::new("platform", "platform-secret"));
        for client in [&user, &unsigned] {
            let refused = [
                client.topic_consumed_by("T").await.map(drop),
                client
                    .consumer_running_info("G", "c", false)
                    .await
                    .map(drop),
                client
                    .consume_message_directly("G", "c", "x")
                    .await
                    .map(drop),
                client.reset_offset("T", "G", None, true).await.map(drop),
                client
                    .resend_dlq("G", DlqMessageRef::Offset(0))
                    .await
                    .map(drop),
            ];
            for (n, answer) in refused.into_iter().enumerate() {
                let e = answer.expect_err("refused without the admin key");
                assert_eq!(
                    e.response_code(),
                    Some(mq_broker::acl::Denied::CODE),
                    "call {n}: {e}"
                );
            }
        }
        // The admin gets past the ACL to each handler's own answer.
        assert!(
            platform
                .topic_consumed_by("T")
                .await
                .expect("the admin may")
                .is_empty()
        );
        let answers = [
            platform
                .consumer_running_info("G", "c", false)
                .await
                .map(drop),
            platform
                .consume_message_directly("G", "c", "x")
                .await
                .map(drop),
            platform.reset_offset("T", "G", None, true).await.map(drop),
            platform
                .resend_dlq("G", DlqMessageRef::Offset(0))
                .await
                .map(drop),
        ];
        let codes: Vec<Option<i32>> = answers
            .iter()
            .map(|a| a.as_ref().err().and_then(|e| e.response_code()))
            .collect();
        assert_eq!(
            codes,
            [
                Some(response_code::CONSUMER_NOT_ONLINE),
                Some(response_code::QUERY_NOT_FOUND),
                Some(response_code::TOPIC_NOT_EXIST),
                Some(response_code::QUERY_NOT_FOUND),
            ],
            "{answers:?}"
        );
    });
}

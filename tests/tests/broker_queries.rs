//! Message queries, browse and per-minute statistics against `mq-broker` processes,
//! with messages sent by the real third-party client (`rocketmq-client-rust`): by key,
//! by unique key (`SendResult.msg_id`), by offset id (`offset_msg_id`) and by time range
//! (browse from offsets found by SEARCH_OFFSET_BY_TIMESTAMP) the broker finds exactly
//! the sent messages, nothing of another topic or namespace; the third-party admin
//! finds them too; browse reads write-only topics past the receive TPS limit; under ACL
//! SUB on a topic lets an account query it and nothing else; the minute buckets add up
//! to what was sent and consumed, also after a clean restart.

mod support;

use mq_broker::broker::topics::topic_config;
use mq_broker::client::{AdminClient, Credentials, QueriedMessage};
use mq_broker::remoting::body::PERM_WRITE;
use mq_broker::remoting::response_code;
use rocketmq_client_rust::{
    AclClientRPCHook, ClientConfig, ClientRuntime, DefaultMQAdminExt, DefaultMQProducer,
    DefaultMQPushConsumer, MQAdminMessageReadExt, MQPushConsumer, OffsetAdmin, SessionCredentials,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Client, TempDir, eventually};

const INSTANCE: &str = "MQ_INST_1380156306793859_QuEry01";
const OTHER_INSTANCE: &str = "MQ_INST_9999999999999999_OtHer01";
const TOPIC: &str = "QueryTopic";
const OTHER_TOPIC: &str = "QueryOther";

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Waits until the clock is past `t` (store times are in ms: a boundary needs a tick).
async fn clock_past(t: i64) {
    eventually("the clock ticks", Duration::from_secs(2), || now_ms() > t).await;
}

/// Waits until the wall clock has passed `t`, at most a minute away.
async fn next_minute(t: i64) {
    eventually("the next minute", Duration::from_secs(62), || now_ms() > t).await;
}

/// What one send returned: body, unique key (`msg_id`) and offset id.
#[derive(Debug, Clone)]
struct Sent {
    body: String,
    uniq: String,
    offset_id: String,
}

/// A started producer; `namespace` as `ClientConfig.namespace`; signing as `account`.
async fn producer(
    rt: &Arc<ClientRuntime>,
    namesrv: &str,
    name: &str,
    namespace: Option<&str>,
    account: Option<(&str, &str)>,
) -> DefaultMQProducer {
    let mut builder = DefaultMQProducer::builder(rt.clone())
        .client_config(ClientConfig {
            namespace: namespace.map(Into::into),
            ..support::client_config(namesrv, name)
        })
        .producer_group(format!("GID_{name}"));
    if let Some((ak, sk)) = account {
        builder = builder.rpc_hook(Arc::new(AclClientRPCHook::new(
            SessionCredentials::with_keys(ak, sk),
        )));
    }
    let mut producer = builder.build();
    producer.start().await.expect("producer starts");
    producer
}

/// Sends `body` to `topic` with `keys` and tag `TagA`; panics when not acknowledged.
async fn send(producer: &DefaultMQProducer, topic: &str, body: &str, keys: &[&str]) -> Sent {
    let message = Message::builder()
        .topic(topic)
        .tags("TagA")
        .keys(keys.iter().map(|k| (*k).to_owned()).collect())
        .body_slice(body.as_bytes())
        .build_unchecked();
    let result = producer
        .send(message)
        .await
        .unwrap_or_else(|e| panic!("send {body} to {topic}: {e}"))
        .unwrap_or_else(|| panic!("send {body} to {topic}: no result"));
    Sent {
        body: body.to_owned(),
        uniq: result.msg_id.expect("a unique key").to_string(),
        offset_id: result.offset_msg_id.expect("an offset id"),
    }
}

fn bodies(messages: &[QueriedMessage]) -> BTreeSet<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

fn bodies_of(sent: &[Sent]) -> BTreeSet<String> {
    sent.iter().map(|s| s.body.clone()).collect()
}

async fn admin(addr: &str, account: Option<(&str, &str)>) -> AdminClient {
    let client = AdminClient::connect(addr, Duration::from_secs(5))
        .await
        .expect("broker reachable");
    match account {
        Some((ak, sk)) => client.with_credentials(Credentials::new(ak, sk)),
        None => client,
    }
}

/// The queue ids of `topic` on the broker.
async fn queue_ids(admin: &AdminClient, topic: &str) -> Vec<i32> {
    let stats = admin.topic_stats(topic).await.expect("topic stats");
    stats.offset_table.0.keys().map(|mq| mq.queue_id).collect()
}

/// Every message of `topic` stored within `[begin, end]` ms: per queue, browse from the
/// offset of `begin` up to (excluding) the offset of `end + 1`, page by page.
async fn browse_time_range(
    admin: &AdminClient,
    topic: &str,
    begin: i64,
    end: i64,
) -> Vec<QueriedMessage> {
    let mut found = Vec::new();
    for queue_id in queue_ids(admin, topic).await {
        let mut offset = admin
            .search_offset(topic, queue_id, begin)
            .await
            .expect("search offset");
        let stop = admin
            .search_offset(topic, queue_id, end + 1)
            .await
            .expect("search offset");
        loop {
            let page = admin
                .browse(topic, queue_id, offset, Some(stop), 4)
                .await
                .expect("browse");
            if page.messages.is_empty() {
                break;
            }
            assert!(page.next_offset > offset, "browse moves on");
            offset = page.next_offset;
            found.extend(page.messages);
        }
    }
    found
}

#[test]
fn queries_find_exactly_the_sent_messages_and_nothing_of_another_topic_or_namespace() {
    let dir = TempDir::new("queries");
    let broker = support::standalone(&dir.0, &["--instance-id", INSTANCE]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    Client::new().run(|rt| async move {
        let namespaced = producer(&rt, &namesrv, "q-ns", Some(INSTANCE), None).await;
        let bare = producer(&rt, &namesrv, "q-bare", None, None).await;
        let foreign = producer(&rt, &namesrv, "q-foreign", Some(OTHER_INSTANCE), None).await;

        // Before the time window: keyed messages of both clients, and the same key on
        // another topic and in another instance's namespace.
        let mut before = Vec::new();
        for i in 0..6 {
            let key = format!("order-{i}");
            before.push(send(&namespaced, TOPIC, &format!("ns-{i}"), &[&key, "batch-A"]).await);
            before.push(send(&bare, TOPIC, &format!("bare-{i}"), &[&key, "batch-A"]).await);
        }
        let other = send(&bare, OTHER_TOPIC, "other-topic", &["batch-A", "order-1"]).await;
        let foreign_sent = send(&foreign, TOPIC, "foreign-ns", &["batch-A", "order-1"]).await;
        clock_past(now_ms()).await;
        let window_start = now_ms();
        let mut window = Vec::new();
        for i in 0..10 {
            window.push(send(&bare, TOPIC, &format!("window-{i}"), &["in-window"]).await);
        }
        let window_end = now_ms();
        clock_past(window_end).await;
        for i in 0..3 {
            send(&namespaced, TOPIC, &format!("after-{i}"), &["after"]).await;
        }

        let admin = admin(&addr, None).await;
        // By key: bare and namespaced names find the same messages of this topic only.
        let by_key = admin
            .query_by_key(TOPIC, "batch-A", 64, 0, i64::MAX)
            .await
            .expect("query by key");
        assert_eq!(bodies(&by_key), bodies_of(&before));
        assert!(by_key.iter().all(|m| m.topic == TOPIC), "bare names back");
        let canonical = format!("{INSTANCE}%{TOPIC}");
        let by_canonical = admin
            .query_by_key(&canonical, "batch-A", 64, 0, i64::MAX)
            .await
            .expect("query by key");
        assert_eq!(bodies(&by_canonical), bodies_of(&before));
        assert!(by_canonical.iter().all(|m| m.topic == canonical));
        let one = admin
            .query_by_key(TOPIC, "order-1", 64, 0, i64::MAX)
            .await
            .expect("query by key");
        assert_eq!(
            bodies(&one),
            BTreeSet::from(["ns-1".into(), "bare-1".into()])
        );
        let tagged = &one[0];
        assert_eq!(tagged.tags(), Some("TagA"));
        assert!(tagged.keys().contains(&"order-1"));
        // The other topic and the other namespace keep their own.
        let elsewhere = admin
            .query_by_key(OTHER_TOPIC, "batch-A", 64, 0, i64::MAX)
            .await
            .expect("query by key");
        assert_eq!(bodies(&elsewhere), BTreeSet::from([other.body.clone()]));
        let foreign_topic = format!("{OTHER_INSTANCE}%{TOPIC}");
        let theirs = admin
            .query_by_key(&foreign_topic, "batch-A", 64, 0, i64::MAX)
            .await
            .expect("query by key");
        assert_eq!(bodies(&theirs), BTreeSet::from([foreign_sent.body.clone()]));
        // A time range outside the messages finds none; an unknown key none.
        let too_early = admin
            .query_by_key(TOPIC, "batch-A", 64, 0, 1000)
            .await
            .expect("query by key");
        assert!(too_early.is_empty());
        assert!(
            admin
                .query_by_key(TOPIC, "no-such-key", 64, 0, i64::MAX)
                .await
                .expect("query by key")
                .is_empty()
        );

        // By unique key and by offset id, each message is found, on its own.
        for s in before.iter().chain(&window) {
            let by_uniq = admin
                .query_by_unique_key(TOPIC, &s.uniq)
                .await
                .expect("query by unique key");
            assert_eq!(bodies(&by_uniq), BTreeSet::from([s.body.clone()]), "{s:?}");
            assert_eq!(by_uniq[0].uniq_key(), Some(s.uniq.as_str()));
            let brokers = [admin_of(&addr).await];
            for id in [&s.uniq, &s.offset_id] {
                let viewed = AdminClient::view_message(&brokers, TOPIC, id)
                    .await
                    .expect("view message")
                    .unwrap_or_else(|| panic!("{id} of {s:?} not found"));
                assert_eq!(String::from_utf8_lossy(&viewed.body), s.body);
                assert_eq!(viewed.offset_msg_id(), s.offset_id);
            }
        }
        // Another topic's unique key is not this topic's.
        assert!(
            admin
                .query_by_unique_key(TOPIC, &other.uniq)
                .await
                .expect("query")
                .is_empty()
        );

        // By time range: browse between the offsets of the window's bounds.
        let in_window = browse_time_range(&admin, TOPIC, window_start, window_end).await;
        assert_eq!(bodies(&in_window), bodies_of(&window));
        assert_eq!(in_window.len(), window.len(), "each once");

        // Consume time span: no consumer yet, so each queue waits since its first message.
        let spans = admin
            .consume_time_span(TOPIC, "GID_nobody")
            .await
            .expect("consume time span");
        assert_eq!(spans.len(), queue_ids(&admin, TOPIC).await.len());
        for span in &spans {
            assert!(span.min_time_stamp > 0 && span.max_time_stamp >= span.min_time_stamp);
            assert_eq!(span.consume_time_stamp, span.min_time_stamp);
            assert!(span.delay_time > 0, "{span:?}");
        }

        // The third-party admin finds them too: by key and by offset id.
        let mut tool = DefaultMQAdminExt::new(rt.clone());
        tool.set_namesrv_addr(namesrv.as_str());
        tool.client_config_mut().vip_channel_enabled = false;
        tool.start().await.expect("third-party admin starts");
        let result = tool
            .inner()
            .query_message_by_key(
                None,
                canonical.clone().into(),
                "in-window".into(),
                32,
                0,
                i64::MAX,
                "K".into(),
                None,
            )
            .await
            .expect("third-party query by key");
        let found: BTreeSet<String> = result
            .message_list()
            .iter()
            .map(support::body_text)
            .collect();
        assert_eq!(found, bodies_of(&window));
        let meta = tool
            .query_message_metadata(TOPIC.into(), window[0].offset_id.clone().into())
            .await
            .expect("third-party view by offset id");
        assert_eq!(
            meta.unique_message_id.as_deref(),
            Some(window[0].uniq.as_str())
        );
        let third_party_spans = tool
            .inner()
            .query_consume_time_span(canonical.clone().into(), "GID_nobody".into())
            .await
            .expect("third-party consume time span");
        let mins = |v: Vec<i64>| v.into_iter().collect::<BTreeSet<_>>();
        assert_eq!(
            mins(third_party_spans.iter().map(|s| s.min_time_stamp).collect()),
            mins(spans.iter().map(|s| s.min_time_stamp).collect())
        );
        tool.shutdown().await;

        for mut p in [namespaced, bare, foreign] {
            p.shutdown().await;
        }
    });
}

/// Another admin connection to `addr` (view_message takes the instance's brokers).
async fn admin_of(addr: &str) -> AdminClient {
    admin(addr, None).await
}

#[test]
fn browse_reads_write_only_topics_past_the_receive_tps_limit() {
    let dir = TempDir::new("browse-limits");
    let broker = support::standalone(&dir.0, &["--max-receive-tps", "1"]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    Client::new().run(|rt| async move {
        let admin = admin(&addr, None).await;
        let mut config = topic_config("WriteOnly", 2);
        config.perm = PERM_WRITE;
        admin.create_topic(&config).await.expect("create topic");
        support::wait_for_route(&namesrv, "WriteOnly").await;
        let mut p = producer(&rt, &namesrv, "browse", None, None).await;
        let mut sent = Vec::new();
        for i in 0..40 {
            sent.push(send(&p, "WriteOnly", &format!("wo-{i}"), &[]).await);
        }
        p.shutdown().await;
        // Pulls of 40 messages would take 40 s at 1 message/s; browse is not held.
        let started = Instant::now();
        let mut found = Vec::new();
        for queue_id in queue_ids(&admin, "WriteOnly").await {
            let mut offset = 0;
            loop {
                let page = admin
                    .browse("WriteOnly", queue_id, offset, None, 64)
                    .await
                    .expect("browse a write-only topic");
                if page.messages.is_empty() {
                    assert_eq!(page.next_offset, page.max_offset);
                    break;
                }
                offset = page.next_offset;
                found.extend(page.messages);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "browse held: {:?}",
            started.elapsed()
        );
        assert_eq!(bodies(&found), bodies_of(&sent));
        assert_eq!(found.len(), 40);
        // Pages are capped and continue where they stopped.
        let page = admin
            .browse("WriteOnly", 0, 0, None, 1000)
            .await
            .expect("browse");
        assert!(page.messages.len() <= 64);
        let first = admin
            .browse("WriteOnly", 0, 0, Some(3), 64)
            .await
            .expect("browse");
        assert_eq!(first.messages.len(), 3.min(page.messages.len()));
        assert_eq!(first.next_offset, first.messages.len() as i64);
        // An unknown topic is a clear error.
        let err = admin
            .browse("NoSuchTopic", 0, 0, None, 10)
            .await
            .expect_err("unknown topic");
        assert_eq!(err.response_code(), Some(response_code::TOPIC_NOT_EXIST));
    });
}

/// Accounts: a producer of T and U, a reader of T only, and the admin.
const ACCOUNTS: &str = r#"{"accounts": [
  {"accessKey": "producer", "secretKey": "producer-secret", "topicPerms": ["QT=PUB", "QU=PUB"]},
  {"accessKey": "reader", "secretKey": "reader-secret", "topicPerms": ["QT=SUB"]},
  {"accessKey": "platform", "secretKey": "platform-secret", "admin": true}]}"#;
const ADMIN: (&str, &str) = ("platform", "platform-secret");
const READER: (&str, &str) = ("reader", "reader-secret");

#[test]
fn under_acl_sub_on_a_topic_queries_it_and_nothing_else_and_browse_needs_the_admin() {
    let dir = TempDir::new("queries-acl");
    let broker = support::standalone_with_acl(&dir.0, ACCOUNTS, &[]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    Client::new().run(|rt| async move {
        let root = admin(&addr, Some(ADMIN)).await;
        for topic in ["QT", "QU"] {
            root.create_topic(&topic_config(topic, 2))
                .await
                .expect("the admin creates a topic");
            support::wait_for_route(&namesrv, topic).await;
        }
        let mut p = producer(
            &rt,
            &namesrv,
            "acl-q",
            None,
            Some(("producer", "producer-secret")),
        )
        .await;
        let t = send(&p, "QT", "t-msg", &["shared"]).await;
        let u = send(&p, "QU", "u-msg", &["shared"]).await;
        p.shutdown().await;

        let reader = admin(&addr, Some(READER)).await;
        let found = reader
            .query_by_key("QT", "shared", 32, 0, i64::MAX)
            .await
            .expect("SUB on QT queries QT");
        assert_eq!(bodies(&found), BTreeSet::from([t.body.clone()]));
        let viewed = reader
            .view_by_offset(found[0].phys_offset)
            .await
            .expect("SUB on QT views a QT message");
        assert_eq!(String::from_utf8_lossy(&viewed.body), t.body);
        let readers = [admin(&addr, Some(READER)).await];
        for id in [&t.uniq, &t.offset_id] {
            let m = AdminClient::view_message(&readers, "QT", id)
                .await
                .expect("view")
                .expect("found");
            assert_eq!(String::from_utf8_lossy(&m.body), t.body);
        }

        // QU: refused by key, by unique key and by offset (the message's own topic).
        let refused = |e: mq_broker::client::AdminError| {
            assert_eq!(e.response_code(), Some(mq_broker::acl::Denied::CODE), "{e}");
            assert!(e.to_string().contains("QU"), "names the topic: {e}");
        };
        refused(
            reader
                .query_by_key("QU", "shared", 32, 0, i64::MAX)
                .await
                .expect_err("no SUB on QU"),
        );
        refused(
            reader
                .query_by_unique_key("QU", &u.uniq)
                .await
                .expect_err("no SUB on QU"),
        );
        let (_, u_offset) =
            mq_broker::store::message::decode_offset_msg_id(&u.offset_id).expect("offset id");
        refused(
            reader
                .view_by_offset(u_offset)
                .await
                .expect_err("no SUB on QU"),
        );
        assert!(
            AdminClient::view_message(&readers, "QU", &u.offset_id)
                .await
                .is_err(),
            "a refused view is not a not-found"
        );

        // Browse, time spans and statistics are the admin's.
        for denied in [
            reader.browse("QT", 0, 0, None, 10).await.map(drop),
            reader.consume_time_span("QT", "GID_x").await.map(drop),
            reader.stats_minutes("QT", None, None, None).await.map(drop),
        ] {
            let e = denied.expect_err("admin only");
            assert!(e.to_string().contains("Need admin permission"), "{e}");
        }
        let mut all = Vec::new();
        for queue_id in 0..2 {
            all.extend(
                root.browse("QT", queue_id, 0, None, 10)
                    .await
                    .expect("admin browses")
                    .messages,
            );
        }
        assert_eq!(bodies(&all), BTreeSet::from([t.body.clone()]));
        let stats = root
            .stats_minutes("QT", None, None, None)
            .await
            .expect("admin stats");
        assert_eq!(stats.minutes.iter().map(|(_, n)| n).sum::<u64>(), 1);
    });
}

/// `GET /metrics` on the ops port.
fn metrics(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("ops port accepts");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request written");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response read");
    out
}

/// The value of one sample line `series value`.
fn sample(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

const STATS_TOPIC: &str = "StatsTopic";
const STATS_GROUP: &str = "GID_stats";
/// The statistics bucket: a real minute (the broker's default).
const MINUTE_MS: i64 = 60_000;

/// The sum of a series' buckets of `bucket_ms` and how many are non-zero.
async fn stats_sum(admin: &AdminClient, group: Option<&str>, bucket_ms: i64) -> (u64, usize) {
    let stats = admin
        .stats_minutes(STATS_TOPIC, group, None, None)
        .await
        .expect("stats");
    assert_eq!(stats.bucket_ms, bucket_ms);
    assert!(stats.tracked);
    (
        stats.minutes.iter().map(|(_, n)| n).sum(),
        stats.minutes.iter().filter(|(_, n)| *n > 0).count(),
    )
}

#[test]
fn minute_buckets_sum_to_what_was_sent_and_consumed_also_after_a_clean_restart() {
    let dir = TempDir::new("stats");
    let store = dir.0.join("store");
    // Real minute buckets: the sends span two of them (the wait for the next minute is
    // under 60 s).
    let args: [&str; 0] = [];
    let broker = support::standalone(&store, &args);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let sums = Client::new().run(|rt| {
        let got = got.clone();
        async move {
            let mut p = producer(&rt, &namesrv, "stats", None, None).await;
            send(&p, STATS_TOPIC, "warm-up", &[]).await;
            support::wait_for_route(&namesrv, STATS_TOPIC).await;
            let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
                .client_config(support::client_config(&namesrv, "stats-consumer"))
                .consumer_group(STATS_GROUP.to_string())
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .consume_thread_min(4)
                .consume_thread_max(4)
                .build();
            consumer
                .subscribe(STATS_TOPIC, "*")
                .await
                .expect("subscribe");
            consumer.register_message_listener_concurrently(support::Collect(got.clone()));
            consumer.start().await.expect("consumer starts");
            // 599 more over two minutes: half now, half once the next minute began.
            for i in 0..599 {
                if i == 300 {
                    let t = now_ms();
                    next_minute(t - t % MINUTE_MS + MINUTE_MS).await;
                }
                send(&p, STATS_TOPIC, &format!("s-{i}"), &[]).await;
            }
            eventually("600 consumed", Duration::from_secs(60), || {
                got.lock().map(|g| g.len() >= 600).unwrap_or(false)
            })
            .await;
            consumer.shutdown().await;
            p.shutdown().await;
            let admin = admin(&addr, None).await;
            (
                stats_sum(&admin, None, MINUTE_MS).await,
                stats_sum(&admin, Some(STATS_GROUP), MINUTE_MS).await,
            )
        }
    });
    let ((put, put_buckets), (consumed, _)) = sums;
    assert_eq!(put, 600);
    assert!(put_buckets >= 2, "spread over {put_buckets} buckets");
    assert_eq!(consumed, got.lock().unwrap().len() as u64);
    assert_eq!(consumed, 600, "each message consumed once");
    let ops = broker.addr("http");
    let page = metrics(&ops);
    let put_series = format!("mqfleet_topic_messages_put_total{{topic=\"{STATS_TOPIC}\"}}");
    let consumed_series = format!(
        "mqfleet_group_messages_consumed_total{{group=\"{STATS_GROUP}\",topic=\"{STATS_TOPIC}\"}}"
    );
    assert_eq!(sample(&page, &put_series), Some(600), "{page}");
    assert_eq!(sample(&page, &consumed_series), Some(600), "{page}");

    let (status, _) = broker.terminate(Duration::from_secs(20));
    assert!(status.success(), "clean stop: {status:?}");
    let broker = support::standalone(&store, &args);
    let addr = broker.broker();
    let after = Client::new().run(|_| async move {
        let admin = admin(&addr, None).await;
        (
            stats_sum(&admin, None, MINUTE_MS).await,
            stats_sum(&admin, Some(STATS_GROUP), MINUTE_MS).await,
        )
    });
    assert_eq!(
        after.0,
        (put, put_buckets),
        "put buckets kept across a restart"
    );
    assert_eq!(after.1.0, 600, "consumed buckets kept across a restart");
    let page = metrics(&broker.addr("http"));
    assert_eq!(sample(&page, &put_series), Some(600), "{page}");
}

#[test]
fn minute_buckets_written_before_a_kill_survive_it() {
    let dir = TempDir::new("stats-kill");
    let store = dir.0.join("store");
    let args: [&str; 0] = [];
    let broker = support::standalone(&store, &args);
    let namesrv = broker.namesrv();
    Client::new().run(|rt| async move {
        let mut p = producer(&rt, &namesrv, "stats-kill", None, None).await;
        for i in 0..25 {
            send(&p, STATS_TOPIC, &format!("k-{i}"), &[]).await;
        }
        p.shutdown().await;
    });
    // The broker writes its counts every few seconds (with the consumer offsets); wait
    // for a write that holds all 25, then crash it.
    let file = store.join("config").join("minuteStats.json");
    let written = Instant::now();
    while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains("\"total\":25")) {
        assert!(
            written.elapsed() < Duration::from_secs(20),
            "the counts were not written within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.kill9();
    let broker = support::standalone(&store, &args);
    let addr = broker.broker();
    let (sum, _) = Client::new()
        .run(|_| async move { stats_sum(&admin(&addr, None).await, None, MINUTE_MS).await });
    assert_eq!(sum, 25, "counts written before the kill are kept");
}

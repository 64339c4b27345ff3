//! Transactional messages with the real third-party client (`TransactionMQProducer` of
//! `rocketmq-client-rust` and its push consumer) against `mq-broker` standalone
//! processes: commit delivers once, rollback never, an unknown outcome is settled by the
//! broker's check-back (no earlier than the immunity time), also after a kill -9, the
//! check limit rolls back, END_TRANSACTION checks the producer group and ends a half once,
//! and under ACL only an account with PUB on the topic ends its halves.

mod support;

use mq_broker::acl::Credentials;
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use mq_broker::store::message::decode_offset_msg_id;
use rocketmq_client_rust::{
    AclClientRPCHook, ClientRuntime, DefaultMQProducer, DefaultMQPushConsumer,
    LocalTransactionState, MQPushConsumer, SessionCredentials, TransactionListener,
    TransactionMQProducer,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::MessageTrait;
use rocketmq_model::common::message::message_accessor::MessageAccessor;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_model::result::SendResult;
use std::any::Any;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{BrokerProcess, Client, TempDir, eventually};

/// How long a delivery may take (the first comes ~4 s after a consumer starts).
const DELIVERY: Duration = Duration::from_secs(30);

/// How a listener answers for a message.
#[derive(Clone, Copy)]
enum Answer {
    /// Always UNKNOW: the broker has to ask again.
    Unknown,
    /// By body: `commit…` commits, `rollback…` rolls back, anything else is unknown.
    ByBody,
}

fn answer(how: Answer, body: &str) -> LocalTransactionState {
    match how {
        Answer::ByBody if body.starts_with("commit") => LocalTransactionState::CommitMessage,
        Answer::ByBody if body.starts_with("rollback") => LocalTransactionState::RollbackMessage,
        _ => LocalTransactionState::Unknown,
    }
}

/// A check-back a producer received.
#[derive(Clone, Debug)]
struct Check {
    body: String,
    topic: String,
    at: Instant,
}

/// Check-backs a producer received.
type Checks = Arc<Mutex<Vec<Check>>>;

/// A transaction listener answering the local transaction with `local` and check-backs
/// with `check`, recording each check-back.
struct Listener {
    local: Answer,
    check: Answer,
    checks: Checks,
}

impl TransactionListener for Listener {
    fn execute_local_transaction(
        &self,
        msg: &dyn MessageTrait,
        _: Option<&(dyn Any + Send + Sync)>,
    ) -> LocalTransactionState {
        let body = msg
            .get_body()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        answer(self.local, &body)
    }

    fn check_local_transaction(&self, msg: &MessageExt) -> LocalTransactionState {
        let body = support::body_text(msg);
        self.checks.lock().unwrap().push(Check {
            body: body.clone(),
            topic: msg.topic().to_string(),
            at: Instant::now(),
        });
        answer(self.check, &body)
    }
}

/// A delivered message: body, `UNIQ_KEY`, tags and keys.
#[derive(Clone, Debug)]
struct Delivered {
    body: String,
    uniq: Option<String>,
    tags: Option<String>,
    keys: Option<String>,
}

type Deliveries = Arc<Mutex<Vec<Delivered>>>;

struct Record(Deliveries);

impl rocketmq_client_rust::MessageListenerConcurrently for Record {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _: &rocketmq_client_rust::ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<rocketmq_client_rust::ConsumeConcurrentlyStatus> {
        let prop = |m: &MessageExt, k: &str| m.properties().get(k).map(|v| v.to_string());
        let mut log = self.0.lock().unwrap();
        for m in msgs {
            log.push(Delivered {
                body: support::body_text(m),
                uniq: prop(m, "UNIQ_KEY"),
                tags: prop(m, "TAGS"),
                keys: prop(m, "KEYS"),
            });
        }
        Ok(rocketmq_client_rust::ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

fn hook(ak: &str, sk: &str) -> Arc<AclClientRPCHook> {
    Arc::new(AclClientRPCHook::new(SessionCredentials::with_keys(ak, sk)))
}

/// A started transactional producer of `group`.
async fn tx_producer(
    rt: &Arc<ClientRuntime>,
    namesrv: &str,
    instance: &str,
    group: &str,
    listener: Listener,
    credentials: Option<(&str, &str)>,
) -> TransactionMQProducer {
    let mut builder = TransactionMQProducer::builder(rt.clone())
        .client_config(support::client_config(namesrv, instance))
        .producer_group(group.to_string())
        // One queue, so the marker sent last is behind everything else in it.
        .default_topic_queue_nums(1)
        .transaction_listener(listener);
    if let Some((ak, sk)) = credentials {
        builder = builder.rpc_hook(hook(ak, sk));
    }
    let mut producer = builder.build();
    producer
        .start()
        .await
        .expect("transactional producer starts");
    producer
}

/// A started plain producer (for markers).
async fn plain_producer(
    rt: &Arc<ClientRuntime>,
    namesrv: &str,
    credentials: Option<(&str, &str)>,
) -> DefaultMQProducer {
    let mut builder = DefaultMQProducer::builder(rt.clone())
        .client_config(support::client_config(namesrv, "marker"))
        .producer_group("GID_tx_marker".to_string());
    if let Some((ak, sk)) = credentials {
        builder = builder.rpc_hook(hook(ak, sk));
    }
    let mut producer = builder.build();
    producer.start().await.expect("producer starts");
    producer
}

/// A started push consumer of `topic` recording what it gets.
async fn consumer(
    rt: &Arc<ClientRuntime>,
    namesrv: &str,
    group: &str,
    topic: &str,
) -> (DefaultMQPushConsumer, Deliveries) {
    let got = Deliveries::default();
    let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
        .client_config(support::client_config(namesrv, "tx-consumer"))
        .consumer_group(group.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .consume_thread_min(4)
        .consume_thread_max(4)
        .build();
    consumer.subscribe(topic, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(Record(got.clone()));
    consumer.start().await.expect("consumer starts");
    (consumer, got)
}

fn message(topic: &str, body: &str) -> Message {
    Message::builder()
        .topic(topic)
        .tags("TagTx")
        .key(format!("key-{body}"))
        .body_slice(body.as_bytes())
        .build_unchecked()
}

/// A message whose first check-back may come `secs` after it was stored, no earlier.
fn immune_message(topic: &str, body: &str, secs: u32) -> Message {
    let mut msg = message(topic, body);
    MessageAccessor::put_property(
        &mut msg,
        "CHECK_IMMUNITY_TIME_IN_SECONDS".into(),
        secs.to_string().into(),
    );
    msg
}

/// Sends a half; returns the send result and when it was sent.
async fn send_half(producer: &TransactionMQProducer, msg: Message) -> (SendResult, Instant) {
    let sent = Instant::now();
    let result = producer
        .send_message_in_transaction::<(), _>(msg, None)
        .await
        .expect("the half is sent");
    (result.send_result.expect("a send result"), sent)
}

/// Sends a plain marker after everything else and waits until the consumer has it, so
/// anything that would have been delivered before it has been.
async fn marker(producer: &DefaultMQProducer, topic: &str, got: &Deliveries) {
    producer
        .send(message(topic, "marker"))
        .await
        .expect("marker sent");
    eventually("the marker arrives", DELIVERY, || {
        got.lock().unwrap().iter().any(|d| d.body == "marker")
    })
    .await;
}

fn count(got: &Deliveries, body: &str) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|d| d.body == body)
        .count()
}

const PENDING: &str = "mq_broker_transaction_half_pending";
const COMMITS: &str = "mq_broker_transaction_commits_total";
const ROLLBACKS: &str = "mq_broker_transaction_rollbacks_total";
const CHECKS: &str = "mq_broker_transaction_checks_total";
const LIMIT_ROLLBACKS: &str = "mq_broker_transaction_check_limit_rollbacks_total";

/// Messages stored in queue 0 of `topic` (its max offset).
async fn stored(broker: &str, topic: &str) -> i64 {
    let req = RemotingCommand::new_request(request_code::GET_MAX_OFFSET)
        .with_ext("topic", topic)
        .with_ext("queueId", "0");
    let res = support::raw_request(broker, req).await;
    assert_eq!(res.code, response_code::SUCCESS, "{:?}", res.remark);
    res.ext("offset")
        .and_then(|o| o.parse().ok())
        .expect("an offset")
}

/// A raw END_TRANSACTION for the half `sent`, as `group`, optionally signed.
fn end_request(
    sent: &SendResult,
    group: &str,
    commit_or_rollback: i32,
    credentials: Option<(&str, &str)>,
) -> RemotingCommand {
    let offset_id = sent.offset_msg_id.as_deref().expect("an offset msg id");
    let (_, commit_log_offset) = decode_offset_msg_id(offset_id).expect("a valid offset id");
    let mut req = RemotingCommand::new_request(request_code::END_TRANSACTION)
        .with_ext("producerGroup", group)
        .with_ext("tranStateTableOffset", sent.queue_offset.to_string())
        .with_ext("commitLogOffset", commit_log_offset.to_string())
        .with_ext("commitOrRollback", commit_or_rollback.to_string())
        .with_ext("fromTransactionCheck", "false")
        .with_ext(
            "msgId",
            sent.msg_id
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        );
    if let Some((ak, sk)) = credentials {
        mq_broker::acl::sign::sign(&mut req, &Credentials::new(ak, sk));
    }
    req
}

const COMMIT: i32 = 8;
const ROLLBACK: i32 = 12;

#[test]
fn committed_is_delivered_once_with_its_ids_and_rolled_back_never() {
    let dir = TempDir::new("tx-commit");
    let broker = support::standalone(&dir.0, &["--transaction-check-interval-ms", "1000"]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    let topic = "TxCommitTopic";
    Client::new().run(|rt| async move {
        let checks = Checks::default();
        let listener = Listener {
            local: Answer::ByBody,
            check: Answer::Unknown,
            checks: checks.clone(),
        };
        let mut producer = tx_producer(&rt, &namesrv, "txp", "GID_tx_commit", listener, None).await;
        let (committed, _) = send_half(&producer, message(topic, "commit-1")).await;
        send_half(&producer, message(topic, "rollback-1")).await;
        support::wait_for_route(&namesrv, topic).await;
        let (mut consumer, got) = consumer(&rt, &namesrv, "GID_tx_commit_c", topic).await;
        let mut plain = plain_producer(&rt, &namesrv, None).await;
        marker(&plain, topic, &got).await;
        eventually("the committed message arrives", DELIVERY, || {
            count(&got, "commit-1") > 0
        })
        .await;
        assert_eq!(count(&got, "commit-1"), 1, "committed once: {got:?}");
        assert_eq!(count(&got, "rollback-1"), 0, "rolled back never: {got:?}");
        let delivered = got
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.body == "commit-1")
            .cloned();
        let delivered = delivered.expect("delivered");
        assert_eq!(
            delivered.uniq,
            committed.msg_id.as_ref().map(|m| m.to_string()),
            "the committed message keeps the client's message id"
        );
        assert_eq!(delivered.tags.as_deref(), Some("TagTx"));
        assert_eq!(delivered.keys.as_deref(), Some("key-commit-1"));
        // Halves never took a slot of the real queue: only the commit and the marker.
        assert_eq!(stored(&addr, topic).await, 2);
        assert_eq!(broker.metric(COMMITS), 1);
        assert_eq!(broker.metric(ROLLBACKS), 1);
        assert_eq!(broker.metric(PENDING), 0);
        assert!(
            checks.lock().unwrap().is_empty(),
            "ended halves are never checked"
        );
        consumer.shutdown().await;
        producer.shutdown().await;
        plain.shutdown().await;
    });
}

#[test]
fn an_unknown_outcome_is_settled_by_check_back_both_ways_not_before_the_immunity_time() {
    let dir = TempDir::new("tx-check");
    let broker = support::standalone(
        &dir.0,
        &[
            "--transaction-timeout-ms",
            "2000",
            "--transaction-check-interval-ms",
            "1000",
        ],
    );
    let namesrv = broker.namesrv();
    let topic = "TxCheckTopic";
    Client::new().run(|rt| async move {
        let checks = Checks::default();
        let listener = Listener {
            local: Answer::Unknown,
            check: Answer::ByBody,
            checks: checks.clone(),
        };
        let mut producer = tx_producer(&rt, &namesrv, "txp", "GID_tx_check", listener, None).await;
        let (_, commit_sent) = send_half(&producer, immune_message(topic, "commit-2", 4)).await;
        let (_, rollback_sent) = send_half(&producer, message(topic, "rollback-2")).await;
        assert_eq!(broker.metric(PENDING), 2, "unknown halves wait");
        support::wait_for_route(&namesrv, topic).await;
        let (mut consumer, got) = consumer(&rt, &namesrv, "GID_tx_check_c", topic).await;
        eventually("the check-back commits", DELIVERY, || {
            count(&got, "commit-2") > 0
        })
        .await;
        eventually("both halves end", DELIVERY, || broker.metric(PENDING) == 0).await;
        let mut plain = plain_producer(&rt, &namesrv, None).await;
        marker(&plain, topic, &got).await;
        assert_eq!(count(&got, "commit-2"), 1, "{got:?}");
        assert_eq!(count(&got, "rollback-2"), 0, "{got:?}");
        let first_check = |body: &str| {
            checks
                .lock()
                .unwrap()
                .iter()
                .find(|c| c.body == body)
                .map(|c| c.at)
                .unwrap_or_else(|| panic!("{body} was checked"))
        };
        let commit_wait = first_check("commit-2") - commit_sent;
        assert!(
            commit_wait >= Duration::from_secs(4),
            "first check after the message's immunity time, not {commit_wait:?}"
        );
        let rollback_wait = first_check("rollback-2") - rollback_sent;
        assert!(
            rollback_wait >= Duration::from_secs(2),
            "first check after the broker's transaction timeout, not {rollback_wait:?}"
        );
        assert_eq!(broker.metric(COMMITS), 1);
        assert_eq!(broker.metric(ROLLBACKS), 1);
        assert!(broker.metric(CHECKS) >= 2);
        consumer.shutdown().await;
        producer.shutdown().await;
        plain.shutdown().await;
    });
}

/// A port free now (for a broker restarted on the same addresses, so its clients find it
/// again).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("bound").port()
}

/// `mq-broker standalone` on fixed loopback ports (chosen free by the caller).
fn standalone_at(
    store: &std::path::Path,
    namesrv: u16,
    broker: u16,
    extra: &[&str],
) -> BrokerProcess {
    let (ns, br) = (
        format!("127.0.0.1:{namesrv}"),
        format!("127.0.0.1:{broker}"),
    );
    let mut args = vec![
        "standalone",
        "--namesrv-listen",
        &ns,
        "--listen",
        &br,
        "--no-vip",
        "--http-listen",
        "127.0.0.1:0",
        "--store-dir",
        store.to_str().expect("UTF-8 temp path"),
    ];
    args.extend_from_slice(extra);
    BrokerProcess::start(&support::broker_binary(), &args)
}

#[test]
fn pending_halves_survive_kill9_and_are_checked_after_the_restart() {
    let dir = TempDir::new("tx-restart");
    let flags = [
        "--transaction-timeout-ms",
        "5000",
        "--transaction-check-interval-ms",
        "1000",
    ];
    let topic = "TxRestartTopic";
    let (ns_port, broker_port) = (free_port(), free_port());
    let before = standalone_at(&dir.0, ns_port, broker_port, &flags);
    let namesrv = before.namesrv();
    let checks = Checks::default();
    let store = dir.0.clone();
    Client::new().run(|rt| {
        let checks = checks.clone();
        async move {
            let listener = Listener {
                local: Answer::Unknown,
                check: Answer::ByBody,
                checks: checks.clone(),
            };
            let mut producer = TransactionMQProducer::builder(rt.clone())
                .client_config(rocketmq_client_rust::ClientConfig {
                    // Back with the restarted broker within 10 s (the client's minimum).
                    heartbeat_broker_interval: 10_000,
                    ..support::client_config(&namesrv, "txp")
                })
                .producer_group("GID_tx_restart".to_string())
                .default_topic_queue_nums(1)
                .transaction_listener(listener)
                .build();
            producer
                .start()
                .await
                .expect("transactional producer starts");
            send_half(&producer, message(topic, "commit-3")).await;
            send_half(&producer, message(topic, "rollback-3")).await;
            assert_eq!(before.metric(PENDING), 2);
            before.kill9();
            let restarted = Instant::now();
            let after = standalone_at(&store, ns_port, broker_port, &flags);
            assert_eq!(after.metric(PENDING), 2, "pending halves recovered");
            eventually("both halves end after the restart", DELIVERY, || {
                after.metric(PENDING) == 0
            })
            .await;
            let seen = checks.lock().unwrap().clone();
            assert!(
                seen.iter().all(|c| c.at >= restarted),
                "no check-back before the crash (timeout 5 s): {seen:?}"
            );
            let bodies: Vec<&str> = seen.iter().map(|c| c.body.as_str()).collect();
            assert!(
                bodies.contains(&"commit-3") && bodies.contains(&"rollback-3"),
                "{bodies:?}"
            );
            support::wait_for_route(&namesrv, topic).await;
            let (mut consumer, got) = consumer(&rt, &namesrv, "GID_tx_restart_c", topic).await;
            let mut plain = plain_producer(&rt, &namesrv, None).await;
            marker(&plain, topic, &got).await;
            eventually("the committed message arrives", DELIVERY, || {
                count(&got, "commit-3") > 0
            })
            .await;
            assert_eq!(count(&got, "commit-3"), 1, "{got:?}");
            assert_eq!(count(&got, "rollback-3"), 0, "{got:?}");
            assert_eq!(after.metric(COMMITS), 1);
            assert_eq!(after.metric(ROLLBACKS), 1);
            consumer.shutdown().await;
            producer.shutdown().await;
            plain.shutdown().await;
        }
    });
}

#[test]
fn a_half_never_answered_is_rolled_back_after_the_check_limit_and_counted() {
    let dir = TempDir::new("tx-limit");
    // Timing from broker.conf (Java's keys); the flag wins over the file's limit.
    let conf = dir.0.join("broker.conf");
    std::fs::write(
        &conf,
        "transactionTimeOut=500\ntransactionCheckInterval=500\ntransactionCheckMax=7\n",
    )
    .expect("config file");
    let broker = support::standalone(
        &dir.0.join("store"),
        &[
            "--config",
            conf.to_str().expect("UTF-8"),
            "--transaction-check-max",
            "3",
        ],
    );
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    let topic = "TxLimitTopic";
    let checks = Checks::default();
    Client::new().run(|rt| {
        let checks = checks.clone();
        let broker = &broker;
        async move {
            let listener = Listener {
                local: Answer::Unknown,
                check: Answer::Unknown,
                checks,
            };
            let mut producer =
                tx_producer(&rt, &namesrv, "txp", "GID_tx_limit", listener, None).await;
            send_half(&producer, message(topic, "limbo")).await;
            eventually("the half is rolled back at the limit", DELIVERY, || {
                broker.metric(LIMIT_ROLLBACKS) == 1
            })
            .await;
            assert_eq!(broker.metric(PENDING), 0);
            assert_eq!(broker.metric(ROLLBACKS), 1);
            assert_eq!(
                broker.metric(CHECKS),
                3,
                "exactly --transaction-check-max checks"
            );
            assert_eq!(stored(&addr, topic).await, 0, "nothing reached the topic");
            producer.shutdown().await;
        }
    });
    let checks = checks.lock().unwrap();
    assert_eq!(
        checks.len(),
        3,
        "the producer was asked 3 times: {checks:?}"
    );
}

#[test]
fn end_transaction_checks_the_producer_group_and_ends_a_half_once() {
    let dir = TempDir::new("tx-end");
    let broker = support::standalone(&dir.0, &[]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    let topic = "TxEndTopic";
    let group = "GID_tx_end";
    Client::new().run(|rt| {
        let broker = &broker;
        async move {
            let listener = Listener {
                local: Answer::Unknown,
                check: Answer::Unknown,
                checks: Checks::default(),
            };
            let mut producer = tx_producer(&rt, &namesrv, "txp", group, listener, None).await;
            let (sent, _) = send_half(&producer, message(topic, "commit-4")).await;
            assert_eq!(broker.metric(PENDING), 1);
            let admin = mq_broker::client::AdminClient::connect(&addr, Duration::from_secs(5))
                .await
                .expect("broker reachable");
            let info = admin.runtime_info().await.expect("runtime info");
            assert_eq!(
                info.get("transactionHalfPending").map(String::as_str),
                Some("1")
            );
            // A pending half is in no query, not even the admin's: by unique key, by the
            // offset id the send returned, by either id through `view_message`.
            let uniq = sent.msg_id.as_deref().expect("a unique key").to_owned();
            let offset_id = sent
                .offset_msg_id
                .as_deref()
                .expect("an offset id")
                .to_owned();
            let admins = std::slice::from_ref(&admin);
            assert!(
                admin
                    .query_by_unique_key(topic, &uniq)
                    .await
                    .expect("query")
                    .is_empty()
            );
            for id in [&uniq, &offset_id] {
                let seen = mq_broker::client::AdminClient::view_message(admins, topic, id).await;
                assert!(
                    matches!(seen, Ok(None) | Err(_)),
                    "the half stays hidden: {seen:?}"
                );
            }

            let wrong =
                support::raw_request(&addr, end_request(&sent, "GID_other", COMMIT, None)).await;
            assert_eq!(wrong.code, response_code::SYSTEM_ERROR);
            let remark = wrong.remark.clone().unwrap_or_default();
            assert!(remark.contains("producer group"), "{remark}");
            assert_eq!(broker.metric(PENDING), 1, "a wrong group changes nothing");

            let first = support::raw_request(&addr, end_request(&sent, group, COMMIT, None)).await;
            assert_eq!(first.code, response_code::SUCCESS, "{:?}", first.remark);
            for again in [COMMIT, ROLLBACK] {
                let repeated =
                    support::raw_request(&addr, end_request(&sent, group, again, None)).await;
                assert_eq!(repeated.code, response_code::TRANSACTION_FAILED);
                let remark = repeated.remark.unwrap_or_default();
                assert!(remark.contains("already ended"), "{remark}");
            }
            assert_eq!(broker.metric(PENDING), 0);
            assert_eq!(broker.metric(COMMITS), 1);
            assert_eq!(broker.metric(ROLLBACKS), 0);
            // Committed: the unique key finds exactly the committed copy.
            let found = admin
                .query_by_unique_key(topic, &uniq)
                .await
                .expect("query");
            assert_eq!(found.len(), 1, "the committed message only: {found:?}");

            let bogus = RemotingCommand::new_request(request_code::END_TRANSACTION)
                .with_ext("producerGroup", group)
                .with_ext("commitLogOffset", "999999999")
                .with_ext("commitOrRollback", "8");
            let bogus = support::raw_request(&addr, bogus).await;
            assert_eq!(bogus.code, response_code::SYSTEM_ERROR);

            support::wait_for_route(&namesrv, topic).await;
            let (mut consumer, got) = consumer(&rt, &namesrv, "GID_tx_end_c", topic).await;
            let mut plain = plain_producer(&rt, &namesrv, None).await;
            marker(&plain, topic, &got).await;
            eventually("the committed message arrives", DELIVERY, || {
                count(&got, "commit-4") > 0
            })
            .await;
            assert_eq!(
                count(&got, "commit-4"),
                1,
                "a repeated commit delivers once: {got:?}"
            );
            assert_eq!(stored(&addr, topic).await, 2);
            consumer.shutdown().await;
            producer.shutdown().await;
            plain.shutdown().await;
        }
    });
}

/// Accounts: the owner of `orders` (PUB), a partner with PUB on `orders` too, an
/// outsider with PUB only on its own topic, the admin.
const ACCOUNTS: &str = r#"{"accounts": [
  {"accessKey": "owner", "secretKey": "owner-secret", "topicPerms": ["orders=PUB"]},
  {"accessKey": "partner", "secretKey": "partner-secret", "topicPerms": ["orders=PUB"]},
  {"accessKey": "outsider", "secretKey": "outsider-secret", "topicPerms": ["elsewhere=PUB"],
   "defaultTopicPerm": "DENY"},
  {"accessKey": "platform", "secretKey": "platform-secret", "admin": true}]}"#;

#[test]
fn under_acl_only_pub_on_the_topic_and_the_sending_group_end_a_half() {
    let dir = TempDir::new("tx-acl");
    let broker = support::standalone_with_acl(&dir.0, ACCOUNTS, &[]);
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    let owner = ("owner", "owner-secret");
    Client::new().run(|rt| {
        let broker = &broker;
        async move {
            let admin = mq_broker::client::AdminClient::connect(&addr, Duration::from_secs(5))
                .await
                .expect("broker reachable")
                .with_credentials(Credentials::new("platform", "platform-secret"));
            admin
                .create_topic(&mq_broker::broker::topics::topic_config("orders", 1))
                .await
                .expect("the admin creates orders");
            support::wait_for_route(&namesrv, "orders").await;
            let listener = Listener {
                local: Answer::Unknown,
                check: Answer::Unknown,
                checks: Checks::default(),
            };
            let group = "GID_owner";
            let mut producer =
                tx_producer(&rt, &namesrv, "txp", group, listener, Some(owner)).await;
            let (sent, _) = send_half(&producer, message("orders", "commit-5")).await;
            assert_eq!(broker.metric(PENDING), 1);

            let outsider = Some(("outsider", "outsider-secret"));
            // A half needs PUB on its topic like any send.
            let mut half = RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
                .with_ext("a", "GID_outsider")
                .with_ext("b", "orders")
                .with_ext("c", "TBW102")
                .with_ext("d", "1")
                .with_ext("e", "0")
                .with_ext("f", "4")
                .with_ext("g", "0")
                .with_ext("h", "0")
                .with_ext("i", "TRAN_MSG\u{1}true\u{2}PGROUP\u{1}GID_outsider\u{2}")
                .with_body(&b"sneaky"[..]);
            mq_broker::acl::sign::sign(&mut half, &Credentials::new("outsider", "outsider-secret"));
            let res = support::raw_request(&addr, half).await;
            assert_eq!(res.code, mq_broker::acl::Denied::CODE, "{:?}", res.remark);
            assert!(res.remark.unwrap_or_default().contains("No PUB permission"));
            for as_group in [group, "GID_outsider"] {
                let res =
                    support::raw_request(&addr, end_request(&sent, as_group, COMMIT, outsider))
                        .await;
                assert_eq!(res.code, mq_broker::acl::Denied::CODE, "{:?}", res.remark);
                let remark = res.remark.unwrap_or_default();
                assert!(remark.contains("orders"), "{remark}");
            }
            let partner = Some(("partner", "partner-secret"));
            let res =
                support::raw_request(&addr, end_request(&sent, "GID_partner", COMMIT, partner))
                    .await;
            assert_eq!(res.code, response_code::SYSTEM_ERROR, "{:?}", res.remark);
            assert!(res.remark.unwrap_or_default().contains("producer group"));
            let unsigned =
                support::raw_request(&addr, end_request(&sent, group, ROLLBACK, None)).await;
            assert_eq!(unsigned.code, mq_broker::acl::Denied::CODE);
            assert!(unsigned.remark.unwrap_or_default().contains("accessKey"));
            assert_eq!(broker.metric(PENDING), 1, "refused ends change nothing");

            let res =
                support::raw_request(&addr, end_request(&sent, group, COMMIT, Some(owner))).await;
            assert_eq!(res.code, response_code::SUCCESS, "{:?}", res.remark);
            assert_eq!(broker.metric(PENDING), 0);
            let stats = admin
                .topic_stats("orders")
                .await
                .expect("topic stats as the admin");
            let stored: i64 = stats.offset_table.0.values().map(|o| o.max_offset).sum();
            assert_eq!(stored, 1, "committed once");
            producer.shutdown().await;
        }
    });
}

/// A batch body (`MessageDecoder.encodeMessages`) of `bodies` with `props` each.
fn batch_body(bodies: &[&str], props: &str) -> Vec<u8> {
    let mut out = vec![];
    for body in bodies {
        let total = 20 + body.len() + 2 + props.len();
        out.extend((total as i32).to_be_bytes());
        out.extend(0i32.to_be_bytes());
        out.extend(0i32.to_be_bytes());
        out.extend(0i32.to_be_bytes());
        out.extend((body.len() as i32).to_be_bytes());
        out.extend(body.as_bytes());
        out.extend((props.len() as i16).to_be_bytes());
        out.extend(props.as_bytes());
    }
    out
}

#[test]
fn a_transactional_batch_is_refused_and_nothing_is_stored() {
    let dir = TempDir::new("tx-batch");
    let broker = support::standalone(&dir.0, &[]);
    let addr = broker.broker();
    let topic = "TxBatchTopic";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let batch = |sys_flag: &str, props: &str| {
            RemotingCommand::new_request(request_code::SEND_BATCH_MESSAGE)
                .with_ext("a", "GID_tx_batch")
                .with_ext("b", topic)
                .with_ext("c", "TBW102")
                .with_ext("d", "1")
                .with_ext("e", "0")
                .with_ext("f", sys_flag)
                .with_ext("g", "0")
                .with_ext("h", "0")
                .with_ext("m", "true")
                .with_body(batch_body(&["one", "two"], props))
        };
        for (flag, props) in [("4", ""), ("0", "TRAN_MSG\u{1}true\u{2}")] {
            let res = support::raw_request(&addr, batch(flag, props)).await;
            assert_eq!(res.code, response_code::MESSAGE_ILLEGAL, "{:?}", res.remark);
            assert!(res.remark.unwrap_or_default().contains("transactional"));
        }
        assert_eq!(broker.metric(PENDING), 0);
        let res = support::raw_request(&addr, batch("0", "")).await;
        assert_eq!(res.code, response_code::SUCCESS, "{:?}", res.remark);
        assert_eq!(
            stored(&addr, topic).await,
            2,
            "only the plain batch is stored"
        );
    });
}

#[test]
fn check_backs_name_the_topic_as_each_client_sends_it_in_a_namespaced_instance() {
    let dir = TempDir::new("tx-ns");
    let instance = "MQ_INST_1_txns";
    let broker = support::standalone(
        &dir.0,
        &[
            "--instance-id",
            instance,
            "--transaction-timeout-ms",
            "500",
            "--transaction-check-interval-ms",
            "500",
        ],
    );
    let (namesrv, addr) = (broker.namesrv(), broker.broker());
    let topic = "TxNsTopic";
    let (bare_checks, ns_checks) = (Checks::default(), Checks::default());
    Client::new().run(|rt| {
        let (bare_checks, ns_checks) = (bare_checks.clone(), ns_checks.clone());
        async move {
            let listener = |checks: &Checks| Listener {
                local: Answer::Unknown,
                check: Answer::ByBody,
                checks: checks.clone(),
            };
            let mut bare = tx_producer(
                &rt,
                &namesrv,
                "txp-bare",
                "GID_tx_ns",
                listener(&bare_checks),
                None,
            )
            .await;
            let mut namespaced = TransactionMQProducer::builder(rt.clone())
                .client_config(rocketmq_client_rust::ClientConfig {
                    namespace: Some(instance.into()),
                    ..support::client_config(&namesrv, "txp-ns")
                })
                .producer_group("GID_tx_ns2".to_string())
                .default_topic_queue_nums(1)
                .transaction_listener(listener(&ns_checks))
                .build();
            namespaced
                .start()
                .await
                .expect("namespaced producer starts");
            send_half(&bare, message(topic, "commit-bare")).await;
            send_half(&namespaced, message(topic, "commit-ns")).await;
            eventually("both halves are committed by check-back", DELIVERY, || {
                broker.metric(PENDING) == 0 && broker.metric(COMMITS) == 2
            })
            .await;
            let canonical = format!("{instance}%{topic}");
            assert_eq!(stored(&addr, &canonical).await, 2, "both in one topic");
            bare.shutdown().await;
            namespaced.shutdown().await;
        }
    });
    let bare_checks = bare_checks.lock().unwrap();
    assert!(
        bare_checks
            .iter()
            .all(|c| c.topic == topic && c.body == "commit-bare"),
        "a bare client is asked about its bare topic: {bare_checks:?}"
    );
    let ns_checks = ns_checks.lock().unwrap();
    assert!(
        ns_checks.iter().all(|c| c.body == "commit-ns"),
        "each producer is asked about its own halves: {ns_checks:?}"
    );
    assert!(!bare_checks.is_empty() && !ns_checks.is_empty());
}

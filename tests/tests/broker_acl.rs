//! Plain ACL with the real third-party client (`rocketmq-client-rust` and its
//! `AclClientRPCHook`) against an `mq-broker` standalone process with ACL on: granted
//! accounts produce and consume, everyone else is refused and nothing of theirs is stored;
//! the config file's `aclEnable` and the ACL file apply while the broker runs; with an
//! instance admin key and ACL off, unsigned clients still produce and consume while
//! unsigned admin calls are refused.

mod support;

use mq_broker::broker::groups::group_config;
use mq_broker::broker::topics::topic_config;
use mq_broker::client::{AdminClient, Credentials};
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use rocketmq_client_rust::{
    AclClientRPCHook, ClientRuntime, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
    SessionCredentials,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{BrokerProcess, Client, TempDir, eventually};

/// The platform's admin account.
const ADMIN: (&str, &str) = ("platform", "platform-secret");
/// How long a change of the ACL or config file may take to apply (polls: 2 s and 1 s).
const RELOAD: Duration = Duration::from_secs(20);

/// Accounts: a producer of `orders`, a consumer of `orders` as `GID_acl`, a reader of
/// `orders` without any group, and the admin.
const ACCOUNTS: &str = r#"
  {"accessKey": "producer", "secretKey": "producer-secret", "topicPerms": ["orders=PUB"]},
  {"accessKey": "consumer", "secretKey": "consumer-secret",
   "topicPerms": ["orders=SUB"], "groupPerms": ["GID_acl=SUB"]},
  {"accessKey": "reader", "secretKey": "reader-secret", "topicPerms": ["orders=SUB"],
   "defaultGroupPerm": "DENY"},
  {"accessKey": "platform", "secretKey": "platform-secret", "admin": true}"#;

/// A standalone broker with ACL, its config file and its ACL file.
struct AclBroker {
    process: BrokerProcess,
    conf: PathBuf,
    acl: PathBuf,
    _dir: TempDir,
}

impl AclBroker {
    /// Starts a broker with `accounts` (JSON objects) and `aclEnable=enabled`.
    fn start(name: &str, accounts: &str, enabled: bool) -> Self {
        let dir = TempDir::new(name);
        let (conf, acl) = (dir.0.join("broker.conf"), dir.0.join("plain_acl.json"));
        replace(&acl, &acl_file(accounts));
        replace(&conf, &config(enabled, &acl));
        let store = dir.0.join("store");
        let config_arg = conf.to_str().expect("UTF-8 temp path");
        let process = support::standalone(&store, &["--config", config_arg]);
        Self {
            process,
            conf,
            acl,
            _dir: dir,
        }
    }

    fn namesrv(&self) -> String {
        self.process.namesrv()
    }

    /// An admin client of the broker, signed as `credentials` (or not at all).
    async fn admin(&self, credentials: Option<(&str, &str)>) -> AdminClient {
        let client = AdminClient::connect(&self.process.broker(), Duration::from_secs(5))
            .await
            .expect("broker reachable");
        match credentials {
            Some((ak, sk)) => client.with_credentials(Credentials::new(ak, sk)),
            None => client,
        }
    }

    /// Messages stored in `topic` (sum of its queues' max offsets), read as the admin.
    async fn stored(&self, topic: &str) -> i64 {
        let stats = self
            .admin(Some(ADMIN))
            .await
            .topic_stats(topic)
            .await
            .expect("topic stats as the admin");
        stats.offset_table.0.values().map(|o| o.max_offset).sum()
    }

    /// Creates `topic` and `group` as the admin and waits for the topic's route.
    async fn create(&self, topic: &str, group: &str) {
        let admin = self.admin(Some(ADMIN)).await;
        admin
            .create_topic(&topic_config(topic, 4))
            .await
            .expect("the admin creates a topic");
        admin
            .create_group(&group_config(group))
            .await
            .expect("the admin creates a group");
        support::wait_for_route(&self.namesrv(), topic).await;
    }
}

/// The ACL file around `accounts`.
fn acl_file(accounts: &str) -> String {
    format!(r#"{{"accounts": [{accounts}]}}"#)
}

/// broker.conf with `aclEnable` and `aclFile`.
fn config(enabled: bool, acl: &std::path::Path) -> String {
    format!("aclEnable={enabled}\naclFile={}\n", acl.display())
}

/// Replaces a file atomically (a new inode, as a Kubernetes volume update does).
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

/// The client-side signer for an account.
fn hook(ak: &str, sk: &str) -> Arc<AclClientRPCHook> {
    Arc::new(AclClientRPCHook::new(SessionCredentials::with_keys(ak, sk)))
}

/// A started producer named `instance`, signing as `credentials` (or unsigned).
async fn producer(
    rt: &Arc<ClientRuntime>,
    namesrv: &str,
    instance: &str,
    credentials: Option<(&str, &str)>,
) -> DefaultMQProducer {
    let mut builder = DefaultMQProducer::builder(rt.clone())
        .client_config(support::client_config(namesrv, instance))
        .producer_group(format!("GID_{instance}"));
    if let Some((ak, sk)) = credentials {
        builder = builder.rpc_hook(hook(ak, sk));
    }
    let mut producer = builder.build();
    producer.start().await.expect("producer starts");
    producer
}

/// A started push consumer of `topic` in `group`, signing as `credentials`, keeping the
/// bodies it receives.
async fn consumer(
    rt: &Arc<ClientRuntime>,
    namesrv: &str,
    instance: &str,
    group: &str,
    topic: &str,
    credentials: (&str, &str),
) -> (DefaultMQPushConsumer, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(vec![]));
    let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
        .client_config(support::client_config(namesrv, instance))
        .consumer_group(group.to_string())
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .consume_thread_min(4)
        .consume_thread_max(4)
        .rpc_hook(Some(hook(credentials.0, credentials.1)))
        .build();
    consumer.subscribe(topic, "*").await.expect("subscribe");
    consumer.register_message_listener_concurrently(support::Collect(got.clone()));
    // A consumer whose heartbeats are refused may still start; it just never gets queues.
    let _ = consumer.start().await;
    (consumer, got)
}

fn message(topic: &str, body: &str) -> Message {
    Message::builder()
        .topic(topic)
        .body_slice(body.as_bytes())
        .build_unchecked()
}

/// Whether one send was acknowledged.
async fn sends(producer: &DefaultMQProducer, topic: &str, body: &str) -> bool {
    matches!(producer.send(message(topic, body)).await, Ok(Some(_)))
}

/// Sends `body` until it is acknowledged (an ACL change applying); panics after `RELOAD`.
async fn send_once_allowed(producer: &DefaultMQProducer, topic: &str, body: &str, what: &str) {
    let deadline = Instant::now() + RELOAD;
    while !sends(producer, topic, body).await {
        assert!(Instant::now() < deadline, "{what} within {RELOAD:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn granted_accounts_produce_and_consume_and_no_one_else_does() {
    let env = AclBroker::start("acl-grants", ACCOUNTS, true);
    let namesrv = env.namesrv();
    Client::new().run(|rt| async move {
        // The admin API: unsigned or non-admin callers are refused, the admin is not.
        let unsigned = env.admin(None).await;
        let err = unsigned
            .create_topic(&topic_config("orders", 4))
            .await
            .expect_err("an unsigned admin client cannot create a topic");
        assert_eq!(
            err.response_code(),
            Some(response_code::SYSTEM_ERROR),
            "{err}"
        );
        assert!(
            err.to_string().contains("No accessKey is configured"),
            "{err}"
        );
        let not_admin = env.admin(Some(("producer", "producer-secret"))).await;
        let err = not_admin
            .create_topic(&topic_config("orders", 4))
            .await
            .expect_err("a non-admin account cannot create a topic");
        assert!(err.to_string().contains("Need admin permission"), "{err}");
        env.create("orders", "GID_acl").await;

        // The name server: route queries are open (wait_for_route asked unsigned),
        // registrations need an admin signature.
        let forged = RemotingCommand::new_request(request_code::REGISTER_BROKER)
            .with_ext("brokerName", "rogue")
            .with_ext("brokerAddr", "127.0.0.1:1")
            .with_ext("clusterName", "DefaultCluster")
            .with_ext("brokerId", "0");
        let answer = support::raw_request(&namesrv, forged).await;
        assert_eq!(answer.code, response_code::SYSTEM_ERROR);

        // A granted producer sends; the wrong key, no key and a SUB-only account do not.
        let good = producer(
            &rt,
            &namesrv,
            "p-good",
            Some(("producer", "producer-secret")),
        )
        .await;
        let expected: Vec<String> = (0..20).map(|i| format!("granted-{i}")).collect();
        for body in &expected {
            assert!(sends(&good, "orders", body).await, "granted send {body}");
        }
        let refused = [
            ("p-wrong-key", Some(("producer", "not-the-secret"))),
            ("p-unsigned", None),
            ("p-sub-only", Some(("consumer", "consumer-secret"))),
        ];
        for (instance, credentials) in refused {
            let mut p = producer(&rt, &namesrv, instance, credentials).await;
            assert!(
                !sends(&p, "orders", instance).await,
                "{instance} must not be able to send"
            );
            p.shutdown().await;
        }
        assert_eq!(
            env.stored("orders").await,
            20,
            "only granted sends are stored"
        );

        // The granted consumer gets exactly what was sent; a reader without the group's
        // SUB never joins the group and gets nothing.
        let (mut reader, read) = consumer(
            &rt,
            &namesrv,
            "c-reader",
            "GID_acl",
            "orders",
            ("reader", "reader-secret"),
        )
        .await;
        let (mut granted, got) = consumer(
            &rt,
            &namesrv,
            "c-granted",
            "GID_acl",
            "orders",
            ("consumer", "consumer-secret"),
        )
        .await;
        eventually("every granted message", Duration::from_secs(60), || {
            got.lock().unwrap().len() >= expected.len()
        })
        .await;
        let mut received = got.lock().unwrap().clone();
        received.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(received, want, "each message exactly once");
        assert!(
            read.lock().unwrap().is_empty(),
            "the reader consumed nothing"
        );
        let members = env
            .admin(Some(ADMIN))
            .await
            .consumer_connections("GID_acl")
            .await
            .expect("the group has a member");
        let ids: Vec<&str> = members
            .connection_set
            .iter()
            .map(|c| c.client_id.as_str())
            .collect();
        assert_eq!(ids.len(), 1, "only the granted consumer joined: {ids:?}");
        assert!(ids[0].contains("c-granted"), "{ids:?}");
        reader.shutdown().await;
        granted.shutdown().await;
        let mut good = good;
        good.shutdown().await;
    });
}

#[test]
fn the_acl_switch_and_new_grants_apply_without_a_restart() {
    let late = r#"{"accessKey": "late", "secretKey": "late-secret"}"#;
    let admin = r#"{"accessKey": "platform", "secretKey": "platform-secret", "admin": true}"#;
    let env = AclBroker::start("acl-live", &format!("{late}, {admin}"), true);
    let namesrv = env.namesrv();
    Client::new().run(|rt| async move {
        env.create("live", "GID_live").await;
        let signed = producer(&rt, &namesrv, "p-late", Some(("late", "late-secret"))).await;
        assert!(
            !sends(&signed, "live", "before-grant").await,
            "no grant yet"
        );

        // A new grant in the ACL file applies while the broker runs.
        let granted =
            r#"{"accessKey": "late", "secretKey": "late-secret", "topicPerms": ["live=PUB"]}"#;
        replace(&env.acl, &acl_file(&format!("{granted}, {admin}")));
        send_once_allowed(&signed, "live", "after-grant", "the new grant applies").await;

        // A broken ACL file keeps the ACL in force (it does not fall open).
        replace(&env.acl, "accounts:\n  - accessKey: late\n");
        let unsigned = producer(&rt, &namesrv, "p-unsigned", None).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            assert!(
                !sends(&unsigned, "live", "unsigned").await,
                "ACL on: refused"
            );
        }
        assert!(
            sends(&signed, "live", "still-granted").await,
            "old grants stay"
        );

        // The file as RocketMQ users write it: plain_acl.yml in YAML, with a numeric
        // secret (YAML reads it as a number; it is the text `12345678`).
        let yaml = "accounts:\n  - accessKey: late\n    secretKey: late-secret\n    topicPerms:\n      - live=PUB\n  - accessKey: yaml-user\n    secretKey: 12345678\n    whiteRemoteAddress:\n    topicPerms:\n      - live=PUB|SUB\n  - accessKey: platform\n    secretKey: platform-secret\n    admin: true\n";
        replace(&env.acl, yaml);
        let mut yaml_user = producer(&rt, &namesrv, "p-yaml", Some(("yaml-user", "12345678"))).await;
        send_once_allowed(&yaml_user, "live", "yaml-grant", "a YAML plain_acl.yml applies").await;
        yaml_user.shutdown().await;

        // aclEnable=false in the config file lets an unsigned client in.
        replace(&env.conf, &config(false, &env.acl));
        send_once_allowed(&unsigned, "live", "acl-off", "aclEnable=false applies").await;
        assert_eq!(env.stored("live").await, 4, "refused sends stored nothing");

        // And back on.
        replace(&env.conf, &config(true, &env.acl));
        let deadline = Instant::now() + RELOAD;
        while sends(&unsigned, "live", "maybe").await {
            assert!(Instant::now() < deadline, "aclEnable=true applies");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let before = env.stored("live").await;
        assert!(!sends(&unsigned, "live", "refused-again").await);
        assert_eq!(env.stored("live").await, before);
        let (mut signed, mut unsigned) = (signed, unsigned);
        signed.shutdown().await;
        unsigned.shutdown().await;
    });
}

/// The instance admin key of the broker in the admin-key test.
const INSTANCE_KEY: (&str, &str) = ("mq-admin", "instance-secret");

#[test]
fn with_an_admin_key_and_acl_off_clients_stay_open_and_admin_calls_need_the_key() {
    let dir = TempDir::new("acl-admin-key");
    let process = support::standalone(
        &dir.0.join("store"),
        &[
            "--admin-access-key",
            INSTANCE_KEY.0,
            "--admin-secret-key",
            INSTANCE_KEY.1,
        ],
    );
    let (namesrv, broker) = (process.namesrv(), process.broker());
    Client::new().run(|rt| async move {
        let admin = |credentials: Option<(&str, &str)>| {
            let broker = broker.clone();
            let credentials = credentials.map(|(ak, sk)| Credentials::new(ak, sk));
            async move {
                let client = AdminClient::connect(&broker, Duration::from_secs(5))
                    .await
                    .expect("broker reachable");
                match credentials {
                    Some(c) => client.with_credentials(c),
                    None => client,
                }
            }
        };
        // Admin calls: unsigned or with another instance's key refused, nothing created.
        for (who, credentials) in [
            ("unsigned", None),
            (
                "another instance",
                Some(("mq-admin", "other-instance-secret")),
            ),
        ] {
            let err = admin(credentials)
                .await
                .create_topic(&topic_config("keyed", 4))
                .await
                .expect_err(who);
            assert_eq!(
                err.response_code(),
                Some(response_code::SYSTEM_ERROR),
                "{who}: {err}"
            );
        }
        let signed = admin(Some(INSTANCE_KEY)).await;
        let topics = signed.topics().await.expect("the key lists topics");
        assert!(
            !topics.iter().any(|t| t.topic_name == "keyed"),
            "refused calls created nothing"
        );
        signed
            .create_topic(&topic_config("keyed", 4))
            .await
            .expect("the key creates a topic");
        signed
            .create_group(&group_config("GID_keyed"))
            .await
            .expect("the key creates a group");
        support::wait_for_route(&namesrv, "keyed").await;

        // Clients sign nothing: ACL is off, so they produce and consume.
        let mut p = producer(&rt, &namesrv, "p-keyed", None).await;
        let expected: Vec<String> = (0..10).map(|i| format!("keyed-{i}")).collect();
        for body in &expected {
            assert!(sends(&p, "keyed", body).await, "unsigned send {body}");
        }
        let got = Arc::new(Mutex::new(vec![]));
        let mut c = DefaultMQPushConsumer::builder(rt.clone())
            .client_config(support::client_config(&namesrv, "c-keyed"))
            .consumer_group("GID_keyed".to_string())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .consume_thread_min(4)
            .consume_thread_max(4)
            .build();
        c.subscribe("keyed", "*").await.expect("subscribe");
        c.register_message_listener_concurrently(support::Collect(got.clone()));
        c.start().await.expect("an unsigned consumer starts");
        eventually("every message", Duration::from_secs(60), || {
            got.lock().unwrap().len() >= expected.len()
        })
        .await;
        let mut received = got.lock().unwrap().clone();
        received.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(received, want, "each message exactly once");

        // The consumer's group is visible to the key, not to an unsigned caller.
        let err = admin(None)
            .await
            .consumer_connections("GID_keyed")
            .await
            .expect_err("an unsigned admin read is refused");
        assert!(
            err.to_string().contains("No accessKey is configured"),
            "{err}"
        );
        let members = signed
            .consumer_connections("GID_keyed")
            .await
            .expect("the key reads the group's members");
        assert_eq!(members.connection_set.len(), 1);
        c.shutdown().await;
        p.shutdown().await;
    });
}

/// The console key of the console-role test (`console: true` in the ACL file).
const CONSOLE: (&str, &str) = ("mqfleet-console-x", "console-secret");

#[test]
fn a_console_key_reads_and_resets_but_cannot_send_create_or_pull() {
    let accounts = format!(
        r#"{ACCOUNTS}, {{"accessKey": "{}", "secretKey": "{}", "console": true}}"#,
        CONSOLE.0, CONSOLE.1
    );
    let env = AclBroker::start("acl-console", &accounts, true);
    let namesrv = env.namesrv();
    Client::new().run(|rt| async move {
        env.create("orders", "GID_acl").await;
        let mut good = producer(
            &rt,
            &namesrv,
            "p-good",
            Some(("producer", "producer-secret")),
        )
        .await;
        let sent = good
            .send(message("orders", "for-the-console"))
            .await
            .expect("a granted send")
            .expect("a send result");
        let uniq = sent.msg_id.expect("a unique key").to_string();
        good.shutdown().await;

        // It reads: broker figures, and the message by its unique key.
        let console = env.admin(Some(CONSOLE)).await;
        let info = console
            .runtime_info()
            .await
            .expect("the console reads runtime info");
        assert!(!info.is_empty());
        let found = console
            .query_by_unique_key("orders", &uniq)
            .await
            .expect("the console queries a message");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].body, b"for-the-console".to_vec());
        // It resets a group's offsets (skip everything accumulated).
        let offsets = console
            .reset_offset("orders", "GID_acl", None, true)
            .await
            .expect("the console resets an offset");
        assert_eq!(offsets.values().sum::<i64>(), 1, "{offsets:?}");

        // It cannot create a topic, pull, or send; nothing of those is stored.
        let err = console
            .create_topic(&topic_config("console-made", 4))
            .await
            .expect_err("a console key cannot create a topic");
        assert!(err.to_string().contains("console key"), "{err}");
        let pull = RemotingCommand::new_request(request_code::PULL_MESSAGE)
            .with_ext("consumerGroup", "GID_acl")
            .with_ext("topic", "orders")
            .with_ext("queueId", "0")
            .with_ext("queueOffset", "0")
            .with_ext("maxMsgNums", "32")
            .with_ext("sysFlag", "2")
            .with_ext("commitOffset", "0")
            .with_ext("suspendTimeoutMillis", "0")
            .with_ext("subVersion", "0");
        let answer = console.request(pull).await.expect("the broker answers");
        assert_eq!(
            answer.code,
            response_code::SYSTEM_ERROR,
            "{:?}",
            answer.remark
        );
        assert!(
            answer
                .remark
                .as_deref()
                .is_some_and(|r| r.contains("console key")),
            "{:?}",
            answer.remark
        );
        let mut as_console = producer(&rt, &namesrv, "p-console", Some(CONSOLE)).await;
        assert!(
            !sends(&as_console, "orders", "from-the-console").await,
            "a console key cannot send"
        );
        as_console.shutdown().await;
        assert_eq!(
            env.stored("orders").await,
            1,
            "only the granted send is stored"
        );
        let topics = env.admin(Some(ADMIN)).await.topics().await.expect("topics");
        assert!(!topics.iter().any(|t| t.topic_name == "console-made"));
    });
}

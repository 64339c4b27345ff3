//! The instance admin key against real `mq-broker namesrv` and `mq-broker broker`
//! processes (as the operator runs them): admin requests and registrations need the key's
//! signature whether or not ACL is on, client requests are checked only when ACL is on,
//! the key works while the ACL file is missing or empty, and a config file re-written
//! without `aclEnable` keeps ACL on.
//!
//! Every process listens on ephemeral loopback ports; waits are bounded polls of an
//! observable condition, never fixed sleeps.

#[path = "common/process.rs"]
mod process;
use mq_broker::acl::sign;
use mq_broker::broker::topics::topic_config;
use mq_broker::client::{AdminClient, AdminError, Credentials};
use mq_broker::namesrv::RegisterBrokerRequestHeader;
use mq_broker::net::{Channel, NoRequests, connect};
use mq_broker::remoting::body::{self, RegisterBrokerBody, TopicConfigSerializeWrapper};
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use process::{BrokerProcess, TempDir};
use std::future::Future;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest an asynchronous effect (registration, a file change) may take to show.
const DEADLINE: Duration = Duration::from_secs(20);
/// Longest one call may take.
const CALL: Duration = Duration::from_secs(5);

/// This instance's admin key.
const KEY: (&str, &str) = ("mq-admin", "instance-1-secret");
/// Another instance's admin key: same access key, its own secret.
const OTHER_INSTANCE: (&str, &str) = ("mq-admin", "instance-2-secret");
/// Another instance's key under another name.
const OTHER_NAME: (&str, &str) = ("mq-admin-2", "instance-2-secret");

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mq-broker"))
}

fn creds((ak, sk): (&str, &str)) -> Credentials {
    Credentials::new(ak, sk)
}

/// `--admin-access-key`/`--admin-secret-key` of `key`.
fn key_args(key: (&'static str, &'static str)) -> [&'static str; 4] {
    ["--admin-access-key", key.0, "--admin-secret-key", key.1]
}

/// `mq-broker namesrv` with `extra` arguments.
fn namesrv(extra: &[&str]) -> BrokerProcess {
    let mut args = vec![
        "namesrv",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    BrokerProcess::start(bin(), &args)
}

/// `mq-broker broker` named `name`, registering with `namesrv`, with `extra` arguments.
fn broker(store: &Path, name: &str, namesrv: &str, extra: &[&str]) -> BrokerProcess {
    let store = store.to_str().expect("UTF-8 temp path");
    let mut args = vec![
        "broker",
        "--listen",
        "127.0.0.1:0",
        "--no-vip",
        "--http-listen",
        "127.0.0.1:0",
        "--store-dir",
        store,
        "--broker-name",
        name,
        "--namesrv-addr",
        namesrv,
    ];
    args.extend_from_slice(extra);
    BrokerProcess::start(bin(), &args)
}

/// An admin client of `addr`, signing as `key` (or not at all).
async fn client(addr: &str, key: Option<(&str, &str)>) -> AdminClient {
    let client = AdminClient::connect(addr, CALL)
        .await
        .unwrap_or_else(|e| panic!("{addr} answers: {e}"));
    match key {
        Some(key) => client.with_credentials(creds(key)),
        None => client,
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

/// Whether the name server at `namesrv` lists broker `name` (an open query).
async fn lists_broker(namesrv: &str, name: &str) -> bool {
    client(namesrv, None)
        .await
        .cluster_info()
        .await
        .expect("cluster info is open")
        .broker_addr_table
        .contains_key(name)
}

/// The brokers the name server routes `topic` to (an open query).
async fn routed_brokers(namesrv: &str, topic: &str) -> Vec<String> {
    let route = client(namesrv, None)
        .await
        .route(topic)
        .await
        .expect("route queries are open");
    route
        .map(|r| r.broker_datas.into_iter().map(|b| b.broker_name).collect())
        .unwrap_or_default()
}

/// Whether the broker has `topic` (listed with the right key).
async fn has_topic(broker: &str, topic: &str) -> bool {
    client(broker, Some(KEY))
        .await
        .topics()
        .await
        .expect("the admin key lists topics")
        .iter()
        .any(|t| t.topic_name == topic)
}

/// Creates `KeyTopic` through `c`.
async fn create(c: &AdminClient) -> Result<(), AdminError> {
    c.create_topic(&topic_config("KeyTopic", 4)).await
}

/// Asserts an ACL refusal: SYSTEM_ERROR with Java's remark starting `remark`.
fn assert_refused(result: Result<(), AdminError>, remark: &str, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(
        err.response_code(),
        Some(response_code::SYSTEM_ERROR),
        "{what}: {err}"
    );
    assert!(err.to_string().contains(remark), "{what}: {err}");
}

async fn raw(addr: &str) -> Channel {
    connect(addr, CALL, Arc::new(NoRequests))
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

async fn call(ch: &Channel, req: RemotingCommand) -> RemotingCommand {
    ch.request(req, CALL)
        .await
        .unwrap_or_else(|e| panic!("request to {}: {e}", ch.peer_addr()))
}

/// A well-formed REGISTER_BROKER of broker `name` at `addr` holding `topic`, signed as
/// `key` (or unsigned): what a pod posing as a broker would send.
fn registration(name: &str, addr: &str, topic: &str, key: Option<(&str, &str)>) -> RemotingCommand {
    let mut table = TopicConfigSerializeWrapper::default();
    table
        .topic_config_table
        .insert(topic.to_owned(), topic_config(topic, 4));
    let body = body::to_json(&RegisterBrokerBody {
        topic_config_serialize_wrapper: table,
        filter_server_list: vec![],
    });
    let mut req = RemotingCommand::new_request(request_code::REGISTER_BROKER).with_body(body);
    req.set_header(&RegisterBrokerRequestHeader {
        broker_name: name.to_owned(),
        broker_addr: addr.to_owned(),
        cluster_name: "DefaultCluster".to_owned(),
        ha_server_addr: None,
        broker_id: 0,
        compressed: Some(false),
        body_crc32: None,
        external_broker_addr: None,
    });
    if let Some(key) = key {
        sign::sign(&mut req, &creds(key));
    }
    req
}

/// SEND_MESSAGE_V2 of one unsigned message, as a client with ACL off sends it.
fn send(topic: &str) -> RemotingCommand {
    RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
        .with_ext("a", "PG_key")
        .with_ext("b", topic)
        .with_ext("c", "TBW102")
        .with_ext("d", "4")
        .with_ext("e", "0")
        .with_ext("f", "0")
        .with_ext("g", "1700000000000")
        .with_ext("h", "0")
        .with_body(&b"hello"[..])
}

/// Runs `mq-broker admin …` against `namesrv`; whether it succeeded, and its output
/// (stdout and stderr).
async fn admin_cli(namesrv: &str, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(bin())
        .args(["admin", "--namesrv-addr", namesrv])
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("MQ_ACCESS_KEY")
        .env_remove("MQ_SECRET_KEY")
        .output();
    let output = tokio::time::timeout(DEADLINE, output)
        .await
        .expect("mq-broker admin finishes")
        .expect("mq-broker admin runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test]
async fn with_acl_off_admin_requests_and_registrations_need_the_instance_key() {
    let dir = TempDir::new("admin-key");
    let ns = namesrv(&key_args(KEY));
    let namesrv = ns.namesrv();
    let mq = broker(&dir.0.join("store"), "broker-key", &namesrv, &key_args(KEY));
    let addr = mq.broker();
    // The real broker signs its registration with the key, so it is listed.
    eventually("the broker has registered", || {
        lists_broker(&namesrv, "broker-key")
    })
    .await;

    // Unsigned, wrongly signed, another instance's key: refused, nothing created.
    let unsigned = client(&addr, None).await;
    assert_refused(
        create(&unsigned).await,
        "No accessKey is configured",
        "an unsigned create",
    );
    let other = client(&addr, Some(OTHER_INSTANCE)).await;
    assert_refused(
        create(&other).await,
        "Check signature failed for accessKey=mq-admin",
        "another instance's key",
    );
    let other_name = client(&addr, Some(OTHER_NAME)).await;
    assert_refused(
        create(&other_name).await,
        "No acl config for mq-admin-2",
        "another instance's key name",
    );
    assert_refused(
        unsigned.topics().await.map(drop),
        "No accessKey is configured",
        "an unsigned read of the topic configs",
    );
    assert!(!has_topic(&addr, "KeyTopic").await, "no topic was created");

    // The right key creates it, and the route follows.
    let admin = client(&addr, Some(KEY)).await;
    create(&admin).await.expect("the admin key creates a topic");
    assert!(has_topic(&addr, "KeyTopic").await);
    eventually("the new topic is routed to the real broker", || async {
        routed_brokers(&namesrv, "KeyTopic").await == ["broker-key"]
    })
    .await;

    // An unsigned delete is refused and the topic stays.
    assert_refused(
        unsigned.delete_topic("KeyTopic").await,
        "No accessKey is configured",
        "an unsigned delete",
    );
    assert_refused(
        other.delete_topic("KeyTopic").await,
        "Check signature failed",
        "a delete with another instance's key",
    );
    assert!(has_topic(&addr, "KeyTopic").await, "the topic still exists");

    // Client requests stay open while ACL is off.
    let ch = raw(&addr).await;
    let answer = call(&ch, send("KeyTopic")).await;
    assert_eq!(answer.code, response_code::SUCCESS, "{:?}", answer.remark);
    // A code with no client entry in the broker's ACL table is admin-only: unsigned, it
    // is refused before any handler sees it; signed by the key, it gets its real answer.
    let unlisted = RemotingCommand::new_request(29_999);
    let answer = call(&ch, unlisted.clone()).await;
    assert_eq!(answer.code, response_code::SYSTEM_ERROR, "{answer:?}");
    assert!(
        answer
            .remark
            .as_deref()
            .unwrap_or_default()
            .contains("No accessKey is configured"),
        "{answer:?}"
    );
    let answer = admin.request(unlisted).await.expect("answered");
    assert_eq!(
        answer.code,
        response_code::REQUEST_CODE_NOT_SUPPORTED,
        "{answer:?}"
    );

    // The name server: forged registrations, unregistrations and deletions are refused.
    let ns_ch = raw(&namesrv).await;
    for (who, key) in [
        ("unsigned", None),
        ("another instance", Some(OTHER_INSTANCE)),
    ] {
        let answer = call(
            &ns_ch,
            registration("rogue", "127.0.0.1:1", "KeyTopic", key),
        )
        .await;
        assert_eq!(
            answer.code,
            response_code::SYSTEM_ERROR,
            "{who}: {answer:?}"
        );
        let unregister = RemotingCommand::new_request(request_code::UNREGISTER_BROKER)
            .with_ext("brokerName", "broker-key")
            .with_ext("brokerAddr", addr.as_str())
            .with_ext("clusterName", "DefaultCluster")
            .with_ext("brokerId", "0");
        let answer = call(&ns_ch, unregister).await;
        assert_eq!(
            answer.code,
            response_code::SYSTEM_ERROR,
            "{who}: {answer:?}"
        );
        let delete = RemotingCommand::new_request(request_code::DELETE_TOPIC_IN_NAMESRV)
            .with_ext("topic", "KeyTopic");
        let answer = call(&ns_ch, delete).await;
        assert_eq!(
            answer.code,
            response_code::SYSTEM_ERROR,
            "{who}: {answer:?}"
        );
    }
    assert_eq!(
        routed_brokers(&namesrv, "KeyTopic").await,
        ["broker-key"],
        "the route lists the real broker only"
    );
    assert!(!lists_broker(&namesrv, "rogue").await);
    let refused_by_namesrv = ns.metric("mq_acl_refusals_total");
    assert_eq!(refused_by_namesrv, 6, "each refusal is counted");
    assert_eq!(
        mq.metric("mq_acl_refusals_total"),
        7,
        "the broker counts its refusals (six admin calls, one unlisted code)"
    );
    assert_eq!(mq.metric("mq_acl_enabled"), 0, "ACL is off");
    assert_eq!(mq.metric("mq_acl_admin_key"), 1);
    assert_eq!(ns.metric("mq_acl_admin_key"), 1);

    // The same registration signed with the key is accepted: the refusals above were
    // the signature's doing, not the request's.
    let answer = call(
        &ns_ch,
        registration("rogue", "127.0.0.1:1", "KeyTopic", Some(KEY)),
    )
    .await;
    assert_eq!(answer.code, response_code::SUCCESS, "{:?}", answer.remark);
    assert!(lists_broker(&namesrv, "rogue").await);

    // The command line: unsigned it fails, with the key it works.
    let (ok, stderr) = admin_cli(
        &namesrv,
        &["--broker-addr", &addr, "topic", "create", "CliKeyTopic"],
    )
    .await;
    assert!(!ok, "an unsigned CLI create must fail");
    assert!(stderr.contains("No accessKey is configured"), "{stderr}");
    let (ok, stderr) = admin_cli(
        &namesrv,
        &[
            "--broker-addr",
            &addr,
            "--access-key",
            KEY.0,
            "--secret-key",
            KEY.1,
            "topic",
            "create",
            "CliKeyTopic",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(has_topic(&addr, "CliKeyTopic").await);
}

/// Replaces a file atomically (a new inode, as a Kubernetes volume update does).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

#[tokio::test]
async fn with_acl_on_and_no_accounts_yet_the_key_still_works_and_a_file_without_acl_enable_keeps_it_on()
 {
    let dir = TempDir::new("admin-key-acl");
    // The name server's ACL file has not arrived at all; the broker's holds no accounts.
    let ns_conf = dir.0.join("namesrv.conf");
    let missing = dir.0.join("not-yet/plain_acl.json");
    replace(
        &ns_conf,
        &format!("aclEnable=true\naclFile={}\n", missing.display()),
    );
    let conf = dir.0.join("broker.conf");
    let acl = dir.0.join("plain_acl.json");
    replace(&acl, r#"{"accounts": []}"#);
    replace(
        &conf,
        &format!("aclEnable=true\naclFile={}\n", acl.display()),
    );
    let ns_conf_arg = ns_conf.to_str().expect("UTF-8");
    let mut ns_args = vec!["--config", ns_conf_arg];
    ns_args.extend(key_args(KEY));
    let ns = namesrv(&ns_args);
    let namesrv = ns.namesrv();
    let conf_arg = conf.to_str().expect("UTF-8");
    let mut args = vec!["--config", conf_arg];
    args.extend(key_args(KEY));
    let mq = broker(&dir.0.join("store"), "broker-acl", &namesrv, &args);
    let addr = mq.broker();
    assert_eq!(mq.metric("mq_acl_enabled"), 1);
    assert_eq!(ns.metric("mq_acl_enabled"), 1);

    eventually("the broker has registered", || {
        lists_broker(&namesrv, "broker-acl")
    })
    .await;
    let admin = client(&addr, Some(KEY)).await;
    admin
        .create_topic(&topic_config("AclTopic", 4))
        .await
        .expect("the admin key creates a topic before any account exists");
    eventually("the topic is routed", || async {
        routed_brokers(&namesrv, "AclTopic").await == ["broker-acl"]
    })
    .await;
    assert_refused(
        client(&addr, None)
            .await
            .create_topic(&topic_config("Unsigned", 4))
            .await,
        "No accessKey is configured",
        "an unsigned create",
    );
    // ACL is on: unsigned clients are refused.
    let ch = raw(&addr).await;
    let answer = call(&ch, send("AclTopic")).await;
    assert_eq!(answer.code, response_code::SYSTEM_ERROR, "{answer:?}");

    // The config file re-written without aclEnable (and with a second name server, so the
    // re-read is observable): ACL stays on.
    let second = self::namesrv(&key_args(KEY));
    let second_addr = second.namesrv();
    replace(
        &conf,
        &format!("aclFile={}\nnamesrvAddr={second_addr}\n", acl.display()),
    );
    eventually("the broker registers with the second name server", || {
        lists_broker(&second_addr, "broker-acl")
    })
    .await;
    assert_eq!(mq.metric("mq_acl_enabled"), 1, "ACL is still on");
    let answer = call(&ch, send("AclTopic")).await;
    assert_eq!(
        answer.code,
        response_code::SYSTEM_ERROR,
        "unsigned sends are still refused: {answer:?}"
    );
    assert_eq!(answer.remark.as_deref(), Some("No accessKey is configured"));
}

#[test]
fn half_an_admin_key_refuses_to_start() {
    for (set, missing) in [
        ("MQ_ADMIN_ACCESS_KEY", "--admin-secret-key"),
        ("MQ_ADMIN_SECRET_KEY", "--admin-access-key"),
    ] {
        let mut child = Command::new(bin())
            .args([
                "namesrv",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .env_remove("MQ_ADMIN_ACCESS_KEY")
            .env_remove("MQ_ADMIN_SECRET_KEY")
            .env(set, "x")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mq-broker starts");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait works") {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mq-broker with only {set} did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("piped")
            .read_to_string(&mut stderr)
            .expect("stderr read");
        assert!(!status.success(), "only {set}: must not start");
        assert!(
            stderr.contains(missing) && stderr.contains("give both or neither"),
            "{stderr}"
        );
    }
}

#[test]
fn the_admin_help_says_admin_calls_need_the_instance_admin_key() {
    let output = Command::new(bin())
        .args(["admin", "--help"])
        .output()
        .expect("mq-broker admin --help runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(help.contains("instance's admin key"), "{help}");
}

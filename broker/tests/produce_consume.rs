//! `mq-broker produce` and `mq-broker consume` against a real standalone broker with ACL
//! on: messages sent with an account's keys come back, in the group's order, once; a
//! second consume finds nothing new (offsets were committed); wrong keys are refused with
//! the broker's reason and exit non-zero; an unknown topic says so.

#[path = "common/process.rs"]
mod process;
use mq_broker::broker::topics::topic_config;
use mq_broker::client::{AdminClient, Credentials};
use process::{BrokerProcess, TempDir};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const USER: (&str, &str) = ("demo-user", "demo-user-secret");
const ADMIN: (&str, &str) = ("platform", "platform-secret");

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mq-broker"))
}

/// A standalone broker whose ACL lets USER publish and subscribe everything.
fn broker(dir: &TempDir) -> BrokerProcess {
    let acl = dir.0.join("plain_acl.json");
    let accounts = format!(
        r#"{{"accounts": [{{"accessKey": "{}", "secretKey": "{}", "defaultTopicPerm": "PUB|SUB", "defaultGroupPerm": "SUB"}}, {{"accessKey": "{}", "secretKey": "{}", "admin": true}}]}}"#,
        USER.0, USER.1, ADMIN.0, ADMIN.1
    );
    std::fs::write(&acl, accounts).expect("ACL file");
    let conf = dir.0.join("broker.conf");
    std::fs::write(
        &conf,
        format!("aclEnable=true\naclFile={}\n", acl.display()),
    )
    .expect("config");
    let store = dir.0.join("store");
    BrokerProcess::standalone(
        bin(),
        &store,
        &["--config", conf.to_str().expect("UTF-8 path")],
    )
}

/// Runs `mq-broker <args>` with `keys`, bounded by its own `--timeout-secs`.
fn cli(namesrv: &str, keys: (&str, &str), args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("NAMESRV_ADDR", namesrv)
        .env("MQ_ACCESS_KEY", keys.0)
        .env("MQ_SECRET_KEY", keys.1)
        .output()
        .expect("mq-broker runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates `topic` (2 queues) and waits (bounded) until the name server routes it.
fn create_topic(namesrv: &str, broker: &str, topic: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let timeout = Duration::from_secs(5);
        let admin = AdminClient::connect(broker, timeout)
            .await
            .expect("broker")
            .with_credentials(Credentials::new(ADMIN.0, ADMIN.1));
        let mut config = topic_config(topic, 2);
        config.perm = 6;
        admin.create_topic(&config).await.expect("topic created");
        let ns = AdminClient::connect(namesrv, timeout)
            .await
            .expect("namesrv");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ns.route(topic).await.expect("route call").is_none() {
            assert!(
                Instant::now() < deadline,
                "no route for {topic} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn produced_messages_are_consumed_once_with_the_accounts_keys() {
    let dir = TempDir::new("produce-consume");
    let b = broker(&dir);
    let namesrv = b.namesrv();
    create_topic(&namesrv, &b.broker(), "DEMO_ORDERS");

    let sent = cli(
        &namesrv,
        USER,
        &[
            "produce",
            "--topic",
            "DEMO_ORDERS",
            "--count",
            "4",
            "--body",
            "order {n}",
        ],
    );
    assert!(sent.status.success(), "produce failed: {sent:?}");
    let lines = stdout(&sent);
    assert_eq!(
        lines.lines().filter(|l| l.starts_with("sent ")).count(),
        4,
        "{lines}"
    );

    let got = cli(
        &namesrv,
        USER,
        &[
            "consume",
            "--topic",
            "DEMO_ORDERS",
            "--group",
            "GID_DEMO",
            "--count",
            "4",
            "--timeout-secs",
            "30",
        ],
    );
    assert!(got.status.success(), "consume failed: {got:?}");
    let text = stdout(&got);
    for n in 1..=4 {
        assert_eq!(
            text.lines()
                .filter(|l| l.ends_with(&format!(": order {n}")))
                .count(),
            1,
            "order {n} not exactly once in:\n{text}"
        );
    }

    // Offsets were committed: nothing new for the group, and the command says so.
    let again = cli(
        &namesrv,
        USER,
        &[
            "consume",
            "--topic",
            "DEMO_ORDERS",
            "--group",
            "GID_DEMO",
            "--count",
            "1",
            "--timeout-secs",
            "2",
        ],
    );
    assert!(
        !again.status.success(),
        "a second consume found messages: {again:?}"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("0 of 1 messages"),
        "{again:?}"
    );

    // Wrong keys: refused by the broker, with its reason, and nothing is stored.
    let refused = cli(
        &namesrv,
        (USER.0, "not-the-secret"),
        &["produce", "--topic", "DEMO_ORDERS"],
    );
    assert!(
        !refused.status.success(),
        "a wrong signature was accepted: {refused:?}"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("sending to"), "{err}");

    let unknown = cli(&namesrv, USER, &["produce", "--topic", "NO_SUCH_TOPIC"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("has no route"),
        "{unknown:?}"
    );
}

//! `mq-broker produce` and `mq-broker consume` against a real standalone broker: produce
//! prints one message id per message, consume prints the bodies from the group's
//! committed offset and commits, so a second consume of the same group finds nothing
//! new and says so (exit 1 with `--count`); a topic without a route is a clear error.

#[path = "common/process.rs"]
mod process;
use mq_broker::broker::topics::topic_config;
use mq_broker::client::AdminClient;
use process::{BrokerProcess, TempDir};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mq-broker"))
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("mq-broker {args:?}: {e}"))
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn produce_then_consume_prints_ids_and_bodies_and_commits() {
    let dir = TempDir::new("client-cli");
    let broker = BrokerProcess::standalone(bin(), &dir.0, &[]);
    let ns = broker.namesrv();
    AdminClient::connect(&broker.broker(), Duration::from_secs(5))
        .await
        .expect("broker answers")
        .create_topic(&topic_config("CliTopic", 2))
        .await
        .expect("topic created");
    let base = ["--namesrv", ns.as_str(), "--topic", "CliTopic"];
    // The route registers within the registration's change check.
    let mut produced = None;
    for _ in 0..100 {
        let out = run(&[
            &["produce"],
            &base[..],
            &["--count", "3", "--body", "hi there"],
        ]
        .concat());
        if out.status.success() {
            produced = Some(out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let produced = produced.expect("produce succeeds once the topic is routed");
    let ids = lines(&produced);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.iter().all(|id| id.len() >= 16), "{ids:?}");

    let consume = [
        &["consume"],
        &base[..],
        &["--group", "GID_CLI", "--count", "3", "--timeout-secs", "20"],
    ]
    .concat();
    let out = run(&consume);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&out), vec!["hi there"; 3]);
    let again = [
        &["consume"],
        &base[..],
        &["--group", "GID_CLI", "--count", "1", "--timeout-secs", "2"],
    ]
    .concat();
    let out = run(&again);
    assert!(!out.status.success(), "the offsets were committed");
    assert!(lines(&out).is_empty(), "{:?}", lines(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("consumed 0 of 1"));

    let out = run(&["produce", "--namesrv", &ns, "--topic", "NoSuchTopic"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NoSuchTopic") && err.contains("no route"),
        "{err}"
    );
}

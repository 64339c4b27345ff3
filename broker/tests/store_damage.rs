//! A damaged commit log, for real: a broker killed with SIGKILL whose log then rots in the
//! middle (a message's magic code flips) refuses to start, naming the segment, the offset
//! and `--recover-truncate`, and changes nothing; started once with the flag, it cuts the
//! log there, says what it dropped, and serves the messages before the damage. The
//! refusal is written to `--termination-log` as one parsable line, and a targeted cut
//! (`recoverTruncateAt.<brokerName>` in broker.conf) cuts only at the offset it names.

#[path = "common/process.rs"]
mod process;
use mq_broker::client::AdminClient;
use mq_broker::store::termination::Termination;
use process::{BrokerProcess, TempDir};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mq-broker"))
}

/// A store whose commit log rotted in the middle after a SIGKILL: message 3 of 6 (sent
/// with sync flush) has a flipped magic code, 4 and 5 are intact behind it. Returns the
/// store directory, the damaged offset and the segment's size.
fn damaged_store(dir: &TempDir) -> (std::path::PathBuf, u64, u64) {
    let store = dir.0.join("store");
    let broker = BrokerProcess::standalone(bin(), &store, &["--flush", "sync"]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sent = rt.block_on(async {
        let client = AdminClient::connect(&broker.broker(), Duration::from_secs(5))
            .await
            .expect("broker");
        let mut sent = Vec::new();
        for n in 0..6 {
            let body = format!("m{n}").into_bytes();
            sent.push(
                client
                    .send_message("PID", "ROT", 0, "t", body)
                    .await
                    .expect("send"),
            );
        }
        sent
    });
    broker.kill9();

    // Offsets come from the message ids (store host + physical offset, the last 16 hex
    // digits).
    let phys = |id: &str| u64::from_str_radix(&id[id.len() - 16..], 16).expect("offset id");
    let victim = phys(&sent[3].msg_id);
    let segment = store.join("commitlog").join(format!("{:020}", 0));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .expect("segment");
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, victim + 4).expect("read");
    file.write_all_at(&[b[0] ^ 0xff], victim + 4).expect("rot");
    let size = file.metadata().expect("meta").len();
    (store, victim, size)
}

#[test]
fn a_log_damaged_in_the_middle_stops_the_broker_until_truncation_is_asked_for() {
    let dir = TempDir::new("store-damage");
    let (store, victim, size) = damaged_store(&dir);
    let segment = store.join("commitlog").join(format!("{:020}", 0));
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let last_words = dir.0.join("termination-log");
    let log_arg = format!("--termination-log={}", last_words.display());
    let refused = BrokerProcess::standalone_refusal(bin(), &store, &[&log_arg]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && refused.status.code() != Some(124),
        "{refused:?}"
    );
    for wanted in [
        format!("damaged at offset {victim}"),
        "segment 00000000000000000000".to_owned(),
        "--recover-truncate".to_owned(),
    ] {
        assert!(stderr.contains(&wanted), "no {wanted:?} in: {stderr}");
    }
    // The termination log says the same in one parsable line.
    let written = std::fs::read_to_string(&last_words).expect("termination log written");
    assert_eq!(written.lines().count(), 1, "{written}");
    match Termination::parse(&written) {
        Some(Termination::StoreDamaged {
            segment,
            offset,
            message,
        }) => {
            assert_eq!(segment, format!("{:020}", 0));
            assert_eq!(offset, victim);
            assert!(message.contains("--recover-truncate"), "{message}");
        }
        other => panic!("termination log {written:?} parsed as {other:?}"),
    }
    assert_eq!(
        std::fs::metadata(&segment).expect("meta").len(),
        size,
        "files changed"
    );

    let forced = BrokerProcess::standalone(bin(), &store, &["--recover-truncate"]);
    rt.block_on(async {
        let client = AdminClient::connect(&forced.broker(), Duration::from_secs(5))
            .await
            .expect("broker");
        let pulled = client
            .pull_messages("GID_ROT", "ROT", 0, 0, 32)
            .await
            .expect("pull");
        let bodies = pulled.bodies();
        assert_eq!(bodies, ["m0", "m1", "m2"], "what survives the cut");
        let info = client.runtime_info().await.expect("runtime info");
        let cut = info.get("storeRecoveryCut").expect("storeRecoveryCut");
        assert!(cut.contains(&format!("offset {victim}")), "{cut}");
    });
}

#[test]
fn a_targeted_cut_in_broker_conf_repairs_only_the_reported_damage() {
    let dir = TempDir::new("store-damage-targeted");
    let (store, victim, size) = damaged_store(&dir);
    let conf = dir.0.join("broker.conf");
    let conf_arg = format!("--config={}", conf.display());

    // An offset other than the damage's cuts nothing, and says why.
    std::fs::write(
        &conf,
        format!(
            "brokerName=broker-a\nrecoverTruncateAt.broker-a={}\n",
            victim - 1
        ),
    )
    .expect("conf");
    let refused = BrokerProcess::standalone_refusal(bin(), &store, &[&conf_arg]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && refused.status.code() != Some(124),
        "{refused:?}"
    );
    assert!(
        stderr.contains(&format!("allows a cut at {} only", victim - 1)),
        "{stderr}"
    );
    let segment = store.join("commitlog").join(format!("{:020}", 0));
    assert_eq!(std::fs::metadata(&segment).expect("meta").len(), size);
    // Another broker's key is not this broker's.
    std::fs::write(
        &conf,
        format!("brokerName=broker-a\nrecoverTruncateAt.broker-b={victim}\n"),
    )
    .expect("conf");
    let refused = BrokerProcess::standalone_refusal(bin(), &store, &[&conf_arg]);
    assert!(
        !refused.status.success() && refused.status.code() != Some(124),
        "{refused:?}"
    );

    // The reported offset, for this broker: it starts, and says what was cut.
    std::fs::write(
        &conf,
        format!("brokerName=broker-a\nrecoverTruncateAt.broker-a={victim}\n"),
    )
    .expect("conf");
    let started = BrokerProcess::standalone(bin(), &store, &[&conf_arg]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = AdminClient::connect(&started.broker(), Duration::from_secs(5))
            .await
            .expect("broker");
        let pulled = client
            .pull_messages("GID_ROT", "ROT", 0, 0, 32)
            .await
            .expect("pull");
        assert_eq!(pulled.bodies(), ["m0", "m1", "m2"], "what survives the cut");
        let info = client.runtime_info().await.expect("runtime info");
        let cut = info.get("storeRecoveryCut").expect("storeRecoveryCut");
        assert!(cut.contains(&format!("offset {victim}")), "{cut}");
        assert!(
            cut.contains(&format!("dropping {} bytes", size - victim)),
            "{cut}"
        );
        assert_eq!(info.get("storeDiskFull").map(String::as_str), Some(""));
    });
}

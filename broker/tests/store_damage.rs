//! A damaged commit log, for real: a broker killed with SIGKILL whose log then rots in the
//! middle (a message's magic code flips) refuses to start, naming the segment, the offset
//! and `--recover-truncate`, and changes nothing; started once with the flag, it cuts the
//! log there, says what it dropped, and serves the messages before the damage.

#[path = "common/process.rs"]
mod process;
use mq_broker::client::AdminClient;
use process::{BrokerProcess, TempDir};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mq-broker"))
}

#[test]
fn a_log_damaged_in_the_middle_stops_the_broker_until_truncation_is_asked_for() {
    let dir = TempDir::new("store-damage");
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

    // Message 3's magic code rots; 4 and 5 stay intact behind it. Offsets come from the
    // message ids (store host + physical offset, the last 16 hex digits).
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

    let refused = BrokerProcess::standalone_refusal(bin(), &store, &[]);
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
    });
}

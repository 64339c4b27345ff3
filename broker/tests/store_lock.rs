//! One process per store: a second `mq-broker` on a store directory in use refuses to
//! start and names the process holding it; after that process is killed with SIGKILL (the
//! kernel drops its lock), the store opens again.

#[path = "common/process.rs"]
mod process;
use process::{BrokerProcess, TempDir};
use std::path::Path;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mq-broker"))
}

#[test]
fn a_second_broker_on_a_store_in_use_refuses_and_a_killed_ones_store_opens() {
    let dir = TempDir::new("store-lock");
    let store = dir.0.join("store");
    let first = BrokerProcess::standalone(bin(), &store, &[]);

    // The same store, other ports: refused before it touches anything.
    let out = BrokerProcess::standalone_refusal(bin(), &store, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && out.status.code() != Some(124),
        "a second broker on the store started: {out:?}"
    );
    assert!(
        stderr.contains("in use by another process")
            && stderr.contains(&format!("pid {}", first.pid())),
        "the refusal does not name the holder: {stderr}"
    );

    // kill -9: no clean shutdown, yet the lock is gone with the process.
    first.kill9();
    let again = BrokerProcess::standalone(bin(), &store, &[]);
    assert!(!again.namesrv().is_empty());
}

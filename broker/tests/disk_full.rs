//! A full disk, for real: a standalone broker whose store is on a 48 MiB tmpfs mounted in
//! a private mount namespace (nothing of the host's mounts changes). Filling the tmpfs
//! past 90 % makes sends answer SERVICE_NOT_AVAILABLE ("disk full"), readiness and
//! `/metrics` say so while liveness stays up; freeing the space lets sends through again
//! by itself, and every message acknowledged before is still there. While full, the
//! broker still answers runtime-info requests with `storeDiskFull`.

#[path = "common/process.rs"]
mod process;
use mq_broker::client::AdminClient;
use mq_broker::remoting::response_code;
use process::{BrokerProcess, TempDir};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mq-broker"))
}

/// `GET path` on the ops port: (status, body).
fn http(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("ops port");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[test]
fn a_full_disk_refuses_sends_reports_it_and_recovers_when_space_returns() {
    let dir = TempDir::new("disk-full");
    let mount = dir.0.join("volume");
    std::fs::create_dir_all(&mount).expect("mount point");
    let mount_s = mount.to_str().expect("UTF-8 path");
    let script = format!(
        "mount -t tmpfs -o size=48m tmpfs {mount_s} && exec {} standalone --namesrv-listen 127.0.0.1:0 --listen 127.0.0.1:0 --no-vip --http-listen 127.0.0.1:0 --segment-size 8388608 --store-dir {mount_s}/store",
        bin().display()
    );
    let broker = BrokerProcess::start(
        Path::new("unshare"),
        &["--mount", "--propagation", "private", "sh", "-c", &script],
    );
    // The tmpfs as the broker sees it, from outside its namespace.
    let volume = Path::new("/proc")
        .join(broker.pid().to_string())
        .join("root")
        .join(mount.strip_prefix("/").expect("absolute"));
    let (addr, ops) = (broker.broker(), broker.addr("http"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = AdminClient::connect(&addr, Duration::from_secs(5))
            .await
            .expect("broker");
        let send = |n: usize| {
            let client = &client;
            async move {
                client
                    .send_message(
                        "PID_DISK",
                        "DISK_TOPIC",
                        0,
                        "t",
                        format!("m{n}").into_bytes(),
                    )
                    .await
            }
        };
        let mut acked = Vec::new();
        for n in 0..5 {
            acked.push(send(n).await.expect("send with room"));
        }

        // The commit log's blocks are reserved ahead of what was written (the window,
        // here the whole 8 MiB segment), so writing into them cannot run out of space.
        let segment = volume.join("store/commitlog/00000000000000000000");
        let meta = std::fs::metadata(&segment).expect("first segment");
        assert!(
            meta.len() < 1 << 20,
            "length is what was written: {}",
            meta.len()
        );
        assert!(
            meta.blocks() * 512 >= 8 << 20,
            "8 MiB reserved, found {} bytes",
            meta.blocks() * 512
        );

        // 36 of 48 MiB taken by another writer: with the reserved segment, over the
        // 90 % limit.
        let filler = volume.join("filler");
        std::fs::write(&filler, vec![0u8; 36 << 20]).expect("filler");
        let deadline = Instant::now() + DEADLINE;
        let refusal = loop {
            match send(100).await {
                Err(e) => break e,
                Ok(_) => assert!(
                    Instant::now() < deadline,
                    "sends still taken on a full disk"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            refusal.response_code(),
            Some(response_code::SERVICE_NOT_AVAILABLE),
            "{refusal}"
        );
        assert!(refusal.to_string().contains("disk full"), "{refusal}");
        let (ready, why) = http(&ops, "/readyz");
        assert_eq!(ready, 503, "{why}");
        assert!(why.contains("disk full"), "{why}");
        assert_eq!(
            http(&ops, "/livez").0,
            200,
            "a full disk is no reason to restart"
        );
        assert!(http(&ops, "/metrics").1.contains("mq_store_disk_full 1\n"));
        // Not ready, yet it still answers admin requests, saying why (the operator asks).
        let info = client
            .runtime_info()
            .await
            .expect("runtime info while full");
        let full = info.get("storeDiskFull").expect("storeDiskFull");
        assert!(full.contains("used"), "{full}");

        // Space returns: sends are taken again without a restart.
        std::fs::remove_file(&filler).expect("free the space");
        let deadline = Instant::now() + DEADLINE;
        while send(200).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "sends still refused after space returned"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(http(&ops, "/readyz").0, 200);
        assert!(http(&ops, "/metrics").1.contains("mq_store_disk_full 0\n"));
        let info = client.runtime_info().await.expect("runtime info");
        assert_eq!(info.get("storeDiskFull").map(String::as_str), Some(""));

        // Nothing acknowledged was lost.
        let pulled = client
            .pull_messages("GID_DISK", "DISK_TOPIC", 0, 0, 32)
            .await
            .expect("pull");
        let bodies = pulled.bodies();
        for n in 0..5 {
            assert!(bodies.contains(&format!("m{n}")), "m{n} lost: {bodies:?}");
        }
        assert_eq!(acked.len(), 5);
    });
}

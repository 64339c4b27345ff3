//! Shared by the broker suites: `mq-broker` processes started from the binary `make`
//! just built, and the real third-party client (`rocketmq-client-rust`) set up to run
//! from a plain `#[test]`.

#![allow(dead_code)]

use rocketmq_client_rust::{ClientRuntime, ClientRuntimeConfig};
use rocketmq_runtime::RuntimeOwner;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a broker process may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `mq-broker` binary of this build (target/debug/mq-broker next to the test's deps dir).
pub fn broker_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .join("mq-broker");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, as `make test` does)",
        bin.display()
    );
    bin
}

/// A running `mq-broker` process, killed (and waited for) on drop.
pub struct BrokerProcess {
    child: Child,
    /// The ready line's addresses (`namesrv`, `broker`, …).
    pub ready: serde_json::Value,
}

impl BrokerProcess {
    /// Starts `mq-broker standalone` on loopback with ephemeral ports.
    pub fn standalone(store_dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec![
            "standalone",
            "--namesrv-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--no-vip",
            "--http-listen",
            "127.0.0.1:0",
        ];
        let dir = store_dir.to_str().expect("UTF-8 temp path");
        args.extend_from_slice(&["--store-dir", dir]);
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// Starts `mq-broker namesrv` on loopback with ephemeral ports.
    pub fn namesrv_only() -> Self {
        Self::start(&[
            "namesrv",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
    }

    /// Starts `mq-broker broker` named `name`, registering with `namesrv_addr` (`a;b`).
    pub fn broker_only(store_dir: &Path, namesrv_addr: &str, name: &str) -> Self {
        let dir = store_dir.to_str().expect("UTF-8 temp path");
        Self::start(&[
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--no-vip",
            "--http-listen",
            "127.0.0.1:0",
            "--namesrv-addr",
            namesrv_addr,
            "--broker-name",
            name,
            "--store-dir",
            dir,
        ])
    }

    /// Starts `mq-broker` with `args`, waiting for its ready line.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(broker_binary())
            .args(args)
            // MQ_TEST_BROKER_LOG=debug shows the broker's side of a failing test.
            .env(
                "RUST_LOG",
                std::env::var("MQ_TEST_BROKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mq-broker starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if !line.trim().is_empty() => line,
            other => {
                let _ = child.kill();
                let status = child.wait();
                panic!("mq-broker {args:?} did not become ready: {other:?}, exit {status:?}");
            }
        };
        let ready =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad ready line {line:?}: {e}"));
        Self { child, ready }
    }

    /// The name-server address for `NAMESRV_ADDR`.
    pub fn namesrv(&self) -> String {
        self.ready["namesrv"]
            .as_str()
            .expect("a name server in the ready line")
            .to_owned()
    }

    /// The broker's client address.
    pub fn broker(&self) -> String {
        self.ready["broker"]
            .as_str()
            .expect("a broker in the ready line")
            .to_owned()
    }

    /// SIGKILLs the process (a crash) and waits for it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERMs the process and waits (bounded) for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mq-broker did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `mqfleet-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mqfleet-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The third-party client's runtime: it must own its Tokio runtime, so tests are plain
/// `#[test]`s that hand it their async part.
pub struct Client {
    owner: RuntimeOwner,
    runtime: Arc<ClientRuntime>,
    _telemetry: rocketmq_observability::TelemetryRuntimeGuard,
}

impl Client {
    /// A client runtime.
    pub fn new() -> Self {
        let owner = RuntimeOwner::new().expect("client runtime");
        let telemetry = rocketmq_observability::TelemetryRuntimeGuard::noop();
        let runtime = ClientRuntime::try_new(
            owner.root_context().component("client"),
            ClientRuntimeConfig::default(),
            telemetry.handle(),
        )
        .expect("client runtime");
        Self {
            owner,
            runtime,
            _telemetry: telemetry,
        }
    }

    /// Runs `f` on the client's runtime, then shuts the client down.
    pub fn run<F, Fut, T>(self, f: F) -> T
    where
        F: FnOnce(Arc<ClientRuntime>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let runtime = Arc::clone(&self.runtime);
        let out = self.owner.block_on(async move {
            let out = f(Arc::clone(&runtime)).await;
            let _ = runtime.shutdown().await;
            out
        });
        let _ = self.owner.block_on(self.owner.shutdown_tasks());
        let _ = self.owner.shutdown_background();
        out
    }
}

/// Polls `check` until it returns true or `timeout` passes (then panics with `what`).
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends one request to `addr` on a fresh connection (observing the broker from the side;
/// the client under test is always the third-party one).
pub async fn raw_request(
    addr: &str,
    request: mq_broker::remoting::RemotingCommand,
) -> mq_broker::remoting::RemotingCommand {
    let channel = mq_broker::net::connect(
        addr,
        Duration::from_secs(5),
        Arc::new(mq_broker::net::NoRequests),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    channel
        .request(request, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("request to {addr}: {e}"))
}

/// Waits until the name server routes `topic` (so consumers started now find it at once).
pub async fn wait_for_route(namesrv: &str, topic: &str) {
    use mq_broker::remoting::{RemotingCommand, request_code, response_code};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let req = RemotingCommand::new_request(request_code::GET_ROUTEINFO_BY_TOPIC)
            .with_ext("topic", topic);
        if raw_request(namesrv, req).await.code == response_code::SUCCESS {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no route for {topic} at {namesrv} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

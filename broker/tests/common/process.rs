//! `mq-broker` processes for tests: started from a built binary, ready once they print
//! their JSON ready line, killed and reaped on drop. Shared by the broker crate's tests
//! and the wire suites in `tests/` (included there by path).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a process may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `mq-broker` process.
pub struct BrokerProcess {
    child: Child,
    /// The ready line (`namesrv`, `broker`, `http`, … addresses).
    pub ready: serde_json::Value,
}

impl BrokerProcess {
    /// Starts `bin` with `args` and waits (bounded) for its ready line.
    pub fn start(bin: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            // MQ_TEST_BROKER_LOG=debug shows the broker's side of a failing test.
            .env(
                "RUST_LOG",
                std::env::var("MQ_TEST_BROKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()));
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

    /// `mq-broker standalone` on loopback with ephemeral ports, its store in `store_dir`.
    pub fn standalone(bin: &Path, store_dir: &Path, extra: &[&str]) -> Self {
        let dir = store_dir.to_str().expect("UTF-8 temp path");
        let mut args = vec![
            "standalone",
            "--namesrv-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--no-vip",
            "--http-listen",
            "127.0.0.1:0",
            "--store-dir",
            dir,
        ];
        args.extend_from_slice(extra);
        Self::start(bin, &args)
    }

    /// Runs `mq-broker standalone` on `store_dir` (ephemeral ports, `extra`) expecting it
    /// to refuse to start: its output once it exited. A broker that starts instead is
    /// stopped after 20 s (exit code 124).
    pub fn standalone_refusal(
        bin: &Path,
        store_dir: &Path,
        extra: &[&str],
    ) -> std::process::Output {
        Command::new("timeout")
            .args(["20", bin.to_str().expect("UTF-8 path"), "standalone"])
            .args([
                "--namesrv-listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
                "--no-vip",
            ])
            .args(["--http-listen", "127.0.0.1:0", "--store-dir"])
            .arg(store_dir)
            .args(extra)
            .output()
            .expect("mq-broker runs")
    }

    /// An address from the ready line.
    pub fn addr(&self, key: &str) -> String {
        self.ready[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in the ready line {}", self.ready))
            .to_owned()
    }

    /// The name-server address for `NAMESRV_ADDR`.
    pub fn namesrv(&self) -> String {
        self.addr("namesrv")
    }

    /// The broker's client address.
    pub fn broker(&self) -> String {
        self.addr("broker")
    }

    /// The process's `/metrics` page (its ops port).
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let addr = self.addr("http");
        let mut s = std::net::TcpStream::connect(&addr).expect("ops port accepts");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request written");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response read");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }

    /// The sum of metric `name`'s samples (every label set) on the process's `/metrics`
    /// (0 when it has none).
    pub fn metric(&self, name: &str) -> u64 {
        self.metrics()
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<u64>().ok())
            .sum()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the process (a crash) and reaps it.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERMs the process; its exit status and how long it took, within `bound`.
    pub fn terminate(mut self, bound: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return (status, start.elapsed());
            }
            assert!(
                start.elapsed() < bound,
                "mq-broker did not exit within {bound:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
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

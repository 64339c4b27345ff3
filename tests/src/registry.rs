//! A container registry on loopback for the tests that push images the way the README
//! says (`skopeo copy … docker://$REGISTRY/…`): Debian's `docker-registry` (the CNCF
//! distribution registry), plain HTTP, storage in a scratch directory, port chosen by the
//! kernel and read from its log.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Bound on the registry saying where it listens.
const START: Duration = Duration::from_secs(30);

/// A running registry; dropping it stops it and removes its storage.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    child: Child,
    dir: PathBuf,
}

impl Registry {
    /// Starts a registry storing under a new scratch directory.
    pub fn start() -> Result<Self> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mq-registry-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
                dir.join("data").display()
            ),
        )?;
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting docker-registry (apt package docker-registry)")?;
        let stderr = child.stderr.take().context("registry stderr")?;
        let (tx, rx) = mpsc::channel();
        // Reads the log to its end, so the registry never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Some(at) = line.find("listening on ") {
                    let rest = &line[at + "listening on ".len()..];
                    let addr = rest.split([' ', '"']).next().unwrap_or_default().to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let mut registry = Self {
            addr: String::new(),
            child,
            dir,
        };
        match rx.recv_timeout(START) {
            Ok(addr) if !addr.is_empty() => registry.addr = addr,
            _ => bail!("docker-registry did not say where it listens within {START:?}"),
        }
        Ok(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_answers_the_v2_api_and_stops() {
        let registry = Registry::start().expect("registry starts");
        let url = format!("http://{}/v2/", registry.addr);
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                &url,
            ])
            .output()
            .expect("curl runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
        let dir = registry.dir.clone();
        drop(registry);
        assert!(!dir.exists(), "storage left behind");
    }
}

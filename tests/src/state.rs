//! `<dir>/state.json`: everything needed to find, probe and stop a testbed later,
//! possibly from another process (`mq-testbed down`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::process::{Lifetime, ProcRef};

/// File name of the state file inside a testbed directory.
pub const STATE_FILE: &str = "state.json";

/// Ports the testbed listens on (all on 127.0.0.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// etcd client port.
    pub etcd_client: u16,
    /// etcd peer port.
    pub etcd_peer: u16,
    /// kube-apiserver secure port.
    pub apiserver: u16,
}

/// One started process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// Component name (`etcd`, `kube-apiserver`, ...).
    pub name: String,
    /// Its identity (pid and start time).
    pub proc: ProcRef,
    /// The port it serves, if any.
    pub port: Option<u16>,
    /// Its log file.
    pub log: PathBuf,
    /// Its pid file.
    pub pid_file: PathBuf,
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The testbed directory.
    pub dir: PathBuf,
    /// The slot (0..=27) this testbed holds.
    pub slot: u8,
    /// Service range, `127.<100+slot>.0.0/16`.
    pub service_cidr: String,
    /// Listening ports.
    pub ports: Ports,
    /// Started processes, in start order.
    pub components: Vec<Component>,
    /// Path of the admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Whether the processes outlive their starter.
    pub lifetime: Lifetime,
    /// The process that started the testbed.
    pub starter: Option<ProcRef>,
    /// True once the apiserver is ready and the default service account has its token.
    pub ready: bool,
}

impl State {
    /// Path of the state file in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Reads `<dir>/state.json`; `Ok(None)` if there is none.
    pub fn load(dir: &Path) -> Result<Option<State>> {
        let path = State::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::Json { path, source })
    }

    /// Writes the state atomically (temp file + rename), so readers never see half a file.
    pub fn save(&self) -> Result<()> {
        let path = State::path(&self.dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).ctx(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).ctx(|| format!("renaming {}", tmp.display()))
    }

    /// The recorded component called `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// True if any recorded process still runs.
    pub fn any_alive(&self) -> bool {
        self.components.iter().any(|c| c.proc.is_alive())
    }
}

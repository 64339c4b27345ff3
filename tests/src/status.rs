//! Health of a testbed recorded in a directory (used by `mq-testbed status` and `up`).

use std::path::Path;
use std::time::Duration;

use crate::controlplane::{APISERVER, CONTROLLER_MANAGER, ETCD, SCHEDULER};
use crate::error::{Result, chain};
use crate::kubeconfig;
use crate::probe;
use crate::state::State;

/// Bound on the readyz probe.
const READYZ_TIMEOUT: Duration = Duration::from_secs(5);

/// One component's health.
#[derive(Debug, Clone)]
pub struct ComponentStatus {
    /// Component name.
    pub name: String,
    /// Recorded pid.
    pub pid: u32,
    /// Whether that very process (same start time) runs.
    pub alive: bool,
    /// The port it serves, if any.
    pub port: Option<u16>,
}

/// A testbed's health.
#[derive(Debug, Clone)]
pub struct Status {
    /// The recorded state.
    pub state: State,
    /// Each recorded component.
    pub components: Vec<ComponentStatus>,
    /// `Ok` if the apiserver's `/readyz` said `ok`, else why not.
    pub readyz: std::result::Result<(), String>,
}

impl Status {
    /// All four components alive, startup finished and the apiserver ready.
    pub fn healthy(&self) -> bool {
        let expected = [ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER];
        self.state.ready
            && self.readyz.is_ok()
            && expected
                .iter()
                .all(|name| self.components.iter().any(|c| c.name == *name && c.alive))
    }
}

/// Reads `dir/state.json` and probes what it records; `Ok(None)` if there is no testbed.
pub async fn status(dir: &Path) -> Result<Option<Status>> {
    let Some(state) = State::load(dir)? else {
        return Ok(None);
    };
    let components: Vec<ComponentStatus> = state
        .components
        .iter()
        .map(|c| ComponentStatus {
            name: c.name.clone(),
            pid: c.proc.pid,
            alive: c.proc.is_alive(),
            port: c.port,
        })
        .collect();
    let apiserver_alive = components.iter().any(|c| c.name == APISERVER && c.alive);
    let readyz = if apiserver_alive {
        readyz(&state).await
    } else {
        Err("kube-apiserver is not running".into())
    };
    Ok(Some(Status {
        state,
        components,
        readyz,
    }))
}

async fn readyz(state: &State) -> std::result::Result<(), String> {
    let config = kubeconfig::load(&state.kubeconfig)
        .await
        .map_err(|e| chain(&e))?;
    let client = crate::kubeclient::client(config).map_err(|e| chain(&e))?;
    tokio::time::timeout(READYZ_TIMEOUT, probe::apiserver_readyz(client))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {READYZ_TIMEOUT:?}")))
}

//! The [`Testbed`]: etcd, kube-apiserver, kube-controller-manager and kube-scheduler on
//! loopback, started in a slot of their own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::certs::{self, Pki};
use crate::error::{Error, IoContext, Result};
use crate::install::{self, K8sBinaries};
use crate::kubeconfig;
use crate::paths;
use crate::ports::free_ports;
use crate::probe::{self, Probe};
use crate::process::{self, Lifetime, Managed, ProcRef, Spec, tail_file};
use crate::slot::Slot;
use crate::state::{Component, Ports, State};

/// Component names, in start order (they are stopped in reverse).
pub const ETCD: &str = "etcd";
/// The API server's component name.
pub const APISERVER: &str = "kube-apiserver";
/// The controller manager's component name.
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";
/// The scheduler's component name.
pub const SCHEDULER: &str = "kube-scheduler";
/// The process kubelet's component name.
pub const NODE: &str = "mq-node";

/// How often readiness probes run.
const POLL: Duration = Duration::from_millis(100);
/// Bound on a single probe, so a hung connection cannot eat the whole budget.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// SIGTERM grace per process before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Attempts with fresh ports when a port was taken between choosing and binding it.
const PORT_ATTEMPTS: u32 = 3;
/// Log lines quoted in startup errors.
const TAIL_LINES: usize = 40;
/// What a testbed creates in its directory; `stop` removes exactly these.
const ENTRIES: [&str; 8] = [
    "etcd",
    "node",
    "pki",
    "logs",
    "pids",
    "kubeconfig",
    "state.json",
    "state.json.tmp",
];

/// How to start a testbed.
#[derive(Debug, Clone)]
pub struct Options {
    /// Testbed directory; `None` makes a fresh one under `$CACHE/testbeds/`.
    pub dir: Option<PathBuf>,
    /// Keep the directory (logs, etcd data) after stopping, for debugging; defaults to
    /// true when `MQFLEET_TESTBED_KEEP` is set.
    pub keep_dir: bool,
    /// `Attached` for tests (processes die with us), `Detached` for `mq-testbed up`.
    pub lifetime: Lifetime,
    /// Bound on each readiness wait (etcd, apiserver, default service account).
    pub ready_timeout: Duration,
    /// Extra kube-apiserver flags (e.g. feature gates a suite needs).
    pub extra_apiserver_args: Vec<String>,
    /// Nodes of the process kubelet (0: control plane only, Pods stay Pending).
    pub nodes: usize,
    /// Where `mqfleet/<binary>` images come from; `None`: the directory of the
    /// `mq-testbed` binary, i.e. the workspace's `target/debug`.
    pub bin_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: None,
            keep_dir: std::env::var_os("MQFLEET_TESTBED_KEEP").is_some(),
            lifetime: Lifetime::Attached,
            ready_timeout: Duration::from_secs(60),
            extra_apiserver_args: Vec::new(),
            nodes: DEFAULT_NODES,
            bin_dir: None,
        }
    }
}

/// Nodes a testbed registers unless told otherwise.
pub const DEFAULT_NODES: usize = 3;

/// A running local control plane. Dropping it stops it (unless [`Testbed::detach`]ed).
pub struct Testbed {
    core: Core,
    ready_timeout: Duration,
    config: kube::Config,
    kubeconfig: PathBuf,
    api_url: String,
    admin_token: String,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("dir", &self.core.dir)
            .field("slot", &self.core.slot.index())
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl Testbed {
    /// Starts a testbed and returns once the API serves and Pods can be created.
    pub async fn start(opts: Options) -> Result<Testbed> {
        let bins = blocking(install::ensure_k8s).await?;
        let dir = prepare_dir(opts.dir.as_deref())?;
        let slot = Slot::claim(&paths::slots_dir(), &dir).inspect_err(|_| {
            let _ = remove_testbed_files(&dir);
        })?;
        // From here on, dropping `core` (any `?` below) stops and cleans up.
        let core = Core::new(dir.clone(), slot, &opts);
        // Recorded before any process starts, so `down` can always release the slot.
        core.update(|_| ())?;
        let (openssl, pki_dir, service_ip) = (
            bins.openssl.clone(),
            dir.join("pki"),
            core.slot.service_ip(),
        );
        let pki = blocking(move || certs::generate(&openssl, &pki_dir, service_ip)).await?;
        let launch = Launch {
            core: &core,
            bins: &bins,
            pki: &pki,
            opts: &opts,
        };
        let etcd_port = launch.etcd().await?;
        let (config, api_url) = launch.apiserver(etcd_port).await?;
        launch.controllers(&config).await?;
        launch.node(&config).await?;
        core.update(|s| s.ready = true)?;
        tracing::info!(dir = %dir.display(), slot = core.slot.index(), %api_url, "testbed ready");
        Ok(Testbed {
            ready_timeout: opts.ready_timeout,
            kubeconfig: dir.join("kubeconfig"),
            core,
            config,
            api_url,
            admin_token: pki.admin_token,
        })
    }

    /// A new client for the admin user. Build one per runtime: a `kube::Client` spawns
    /// its worker on the runtime that creates it. Must be called inside a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        // The same config already produced a client during start; TLS setup is
        // deterministic for fixed PEM data, so this cannot fail later.
        crate::kubeclient::client(self.config.clone())
            .expect("the testbed's client config was validated at start")
    }

    /// The client configuration (for callers that build their own clients).
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The testbed directory.
    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    /// The slot number (0..=27).
    pub fn slot(&self) -> u8 {
        self.core.slot.index()
    }

    /// The service range, `127.<100+slot>.0.0/16`.
    pub fn service_cidr(&self) -> String {
        self.core.slot.service_cidr()
    }

    /// The apiserver URL, `https://127.0.0.1:<port>`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A snapshot of the recorded state (ports, pids, paths).
    pub fn state(&self) -> State {
        self.core.lock().state.clone()
    }

    /// Stops every process, releases the slot and removes the directory (unless kept).
    /// Idempotent.
    pub fn stop(&self) -> Result<()> {
        self.core.stop()
    }

    /// Restarts kube-apiserver on the same port and waits until it serves again, as a
    /// control-plane upgrade or crash would (clients must reconnect).
    pub async fn restart_apiserver(&self) -> Result<()> {
        // Blocks this thread for the stop (about a second): callers are tests.
        self.core.restart(APISERVER)?;
        let client = self.client();
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            let last =
                match tokio::time::timeout(PROBE_TIMEOUT, probe::apiserver_readyz(client.clone()))
                    .await
                {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(reason)) => reason,
                    Err(_) => "probe timed out".to_owned(),
                };
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("kube-apiserver after a restart (last: {last})"),
                    timeout: self.ready_timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Freezes kube-apiserver (SIGSTOP) until the returned guard is dropped: clients'
    /// connections hang and their requests time out, as during an outage of the API
    /// server, while etcd and everything else keep running. Keep it short (under the
    /// 40 s after which the controller manager would call the nodes lost).
    pub fn freeze_apiserver(&self) -> Result<process::Frozen> {
        let proc = self
            .state()
            .components
            .iter()
            .find(|c| c.name == APISERVER)
            .map(|c| c.proc);
        proc.and_then(process::Frozen::new)
            .ok_or_else(|| Error::Io {
                context: format!("freezing {APISERVER}: it does not run"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
    }

    /// Leaves the processes running after this value is dropped (for `mq-testbed up`).
    pub fn detach(self) -> State {
        self.core.armed.store(false, Ordering::SeqCst);
        self.state()
    }
}

/// Stops the testbed recorded in `dir/state.json` (from any process), releases its slot
/// and removes its files. Returns whether anything was still running.
pub fn stop_dir(dir: &Path) -> Result<bool> {
    let Some(state) = State::load(dir)? else {
        return Ok(false);
    };
    let was_running = state.any_alive();
    Core::adopt(state).stop()?;
    Ok(was_running)
}

/// Owns the processes, the slot and the directory; stops everything on drop while armed.
struct Core {
    dir: PathBuf,
    slot: Slot,
    keep_dir: bool,
    armed: AtomicBool,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    procs: Vec<Managed>,
    /// How each process was started, to restart it the same way.
    specs: Vec<Spec>,
    stopped: bool,
}

impl Core {
    fn new(dir: PathBuf, slot: Slot, opts: &Options) -> Core {
        let state = State {
            dir: dir.clone(),
            slot: slot.index(),
            service_cidr: slot.service_cidr(),
            ports: Ports::default(),
            components: Vec::new(),
            kubeconfig: dir.join("kubeconfig"),
            lifetime: opts.lifetime,
            starter: ProcRef::current(),
            ready: false,
        };
        Core::from_parts(state, slot, Vec::new(), opts.keep_dir)
    }

    fn adopt(state: State) -> Core {
        let slot = Slot::new(state.slot, &paths::slots_dir(), &state.dir);
        let procs = state
            .components
            .iter()
            .map(|c| Managed::adopted(&c.name, c.proc, c.log.clone(), c.pid_file.clone()))
            .collect();
        Core::from_parts(state, slot, procs, false)
    }

    fn from_parts(state: State, slot: Slot, procs: Vec<Managed>, keep_dir: bool) -> Core {
        Core {
            dir: state.dir.clone(),
            slot,
            keep_dir,
            armed: AtomicBool::new(true),
            inner: Mutex::new(Inner {
                state,
                procs,
                specs: Vec::new(),
                stopped: false,
            }),
        }
    }

    /// A poisoned lock only means a panic elsewhere; the data is still the best we have.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut State)) -> Result<()> {
        let mut inner = self.lock();
        change(&mut inner.state);
        inner.state.save()
    }

    fn spawn(&self, spec: &Spec, port: Option<u16>) -> Result<()> {
        let managed = process::spawn(spec)?;
        let mut inner = self.lock();
        inner.state.components.push(Component {
            name: spec.name.clone(),
            proc: managed.proc,
            port,
            log: spec.log.clone(),
            pid_file: spec.pid_file.clone(),
        });
        inner.procs.push(managed);
        inner.specs.push(spec.clone());
        inner.state.save()
    }

    /// Stops component `name` and starts it again with the same command line (its log
    /// so far is kept as `<name>.log.1`).
    fn restart(&self, name: &str) -> Result<()> {
        let mut inner = self.lock();
        let Some(i) = inner.procs.iter().position(|p| p.name == name) else {
            return Err(Error::Io {
                context: format!("restarting {name}: no such component in this process"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        };
        let Some(spec) = inner.specs.iter().find(|s| s.name == name).cloned() else {
            return Err(Error::Io {
                context: format!("restarting {name}: its command line is unknown"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        };
        inner.procs.remove(i).stop(STOP_GRACE);
        let _ = std::fs::rename(&spec.log, spec.log.with_extension("log.1"));
        let managed = process::spawn(&spec)?;
        if let Some(c) = inner.state.components.iter_mut().find(|c| c.name == name) {
            c.proc = managed.proc;
        }
        inner.procs.insert(i, managed);
        inner.state.save()
    }

    /// Stops one component (a failed attempt) and forgets it.
    fn discard(&self, name: &str) -> Result<()> {
        let mut inner = self.lock();
        inner.state.components.retain(|c| c.name != name);
        if let Some(i) = inner.procs.iter().position(|p| p.name == name) {
            inner.procs.remove(i).stop(STOP_GRACE);
        }
        inner.state.save()
    }

    /// The first recorded process that has exited, with its status.
    fn exited(&self) -> Option<(String, String, PathBuf)> {
        let mut inner = self.lock();
        inner.procs.iter_mut().find_map(|p| {
            let status = p.exit_status()?;
            Some((p.name.clone(), status, p.log.clone()))
        })
    }

    fn log_of(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn stop(&self) -> Result<()> {
        let mut inner = self.lock();
        if inner.stopped {
            return Ok(());
        }
        // Reverse start order: scheduler, controller-manager, apiserver, etcd.
        while let Some(proc) = inner.procs.pop() {
            proc.stop(STOP_GRACE);
        }
        inner.state.components.clear();
        inner.state.ready = false;
        inner.stopped = true;
        let released = self.slot.release();
        let cleaned = if self.keep_dir {
            inner.state.save()
        } else {
            remove_testbed_files(&self.dir)
        };
        released.and(cleaned)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if self.armed.load(Ordering::SeqCst)
            && let Err(e) = self.stop()
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "stopping the testbed failed");
        }
    }
}

/// The startup sequence, borrowing what it needs.
struct Launch<'a> {
    core: &'a Core,
    bins: &'a K8sBinaries,
    pki: &'a Pki,
    opts: &'a Options,
}

impl Launch<'_> {
    /// Starts etcd and returns its client port.
    async fn etcd(&self) -> Result<u16> {
        let data = self.core.dir.join("etcd");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let [client, peer] = free_ports()?;
            // A half-initialised data dir from a failed attempt remembers the old peer URL.
            let _ = std::fs::remove_dir_all(&data);
            let args = etcd_args(&data, client, peer);
            self.core
                .spawn(&self.spec(ETCD, &self.bins.etcd, args), Some(client))?;
            match self.wait(ETCD, || probe::etcd_health(client)).await {
                Ok(()) => {
                    return self
                        .core
                        .update(|s| {
                            s.ports.etcd_client = client;
                            s.ports.etcd_peer = peer;
                        })
                        .map(|()| client);
                }
                Err(e) if attempt < PORT_ATTEMPTS && port_clash(&e) => {
                    tracing::warn!(attempt, "etcd port taken; retrying with new ports");
                    self.core.discard(ETCD)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts kube-apiserver, writes the kubeconfig, returns its client config and URL.
    async fn apiserver(&self, etcd_port: u16) -> Result<(kube::Config, String)> {
        let kubeconfig = self.core.dir.join("kubeconfig");
        let ca = kubeconfig::read_ca(&self.pki.ca_cert)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let [port] = free_ports()?;
            let url = format!("https://127.0.0.1:{port}");
            kubeconfig::write(&kubeconfig, &url, &ca, &self.pki.admin_token)?;
            let config = kubeconfig::load(&kubeconfig).await?;
            let client = crate::kubeclient::client(config.clone())?;
            let args = self.apiserver_args(etcd_port, port);
            let spec = self.spec(APISERVER, &self.bins.apiserver, args);
            self.core.spawn(&spec, Some(port))?;
            match self
                .wait(APISERVER, || probe::apiserver_readyz(client.clone()))
                .await
            {
                Ok(()) => {
                    self.core.update(|s| s.ports.apiserver = port)?;
                    return Ok((config, url));
                }
                Err(e) if attempt < PORT_ATTEMPTS && port_clash(&e) => {
                    tracing::warn!(attempt, "apiserver port taken; retrying with a new port");
                    self.core.discard(APISERVER)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts the controller-manager and scheduler; waits for the default SA token,
    /// which proves the controller-manager works and lets Pods be created.
    async fn controllers(&self, config: &kube::Config) -> Result<()> {
        let kubeconfig = self.core.dir.join("kubeconfig");
        let cm_args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".into(),
            "--controllers=*".into(),
            format!(
                "--service-account-private-key-file={}",
                self.pki.sa_key.display()
            ),
            format!("--root-ca-file={}", self.pki.ca_cert.display()),
            // No health/metrics listeners: they would bind 1025x on 0.0.0.0 and collide.
            "--port=0".into(),
            "--secure-port=0".into(),
        ];
        let cm = self.spec(CONTROLLER_MANAGER, &self.bins.controller_manager, cm_args);
        self.core.spawn(&cm, None)?;
        let scheduler_args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".into(),
            "--port=0".into(),
            "--secure-port=0".into(),
        ];
        let scheduler = self.spec(SCHEDULER, &self.bins.scheduler, scheduler_args);
        self.core.spawn(&scheduler, None)?;
        let client = crate::kubeclient::client(config.clone())?;
        self.wait(CONTROLLER_MANAGER, || {
            probe::default_service_account(client.clone())
        })
        .await
    }

    /// Starts the process kubelet (`mq-testbed node`) and waits for its Nodes.
    async fn node(&self, config: &kube::Config) -> Result<()> {
        let nodes = self.opts.nodes;
        if nodes == 0 {
            return Ok(());
        }
        let binary = paths::testbed_binary()?;
        let bin_dir = match &self.opts.bin_dir {
            Some(dir) => dir.clone(),
            None => binary
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        };
        let args = vec![
            "node".into(),
            format!("--dir={}", self.core.dir.display()),
            format!("--nodes={nodes}"),
            format!("--bin-dir={}", bin_dir.display()),
        ];
        self.core.spawn(&self.spec(NODE, &binary, args), None)?;
        let client = crate::kubeclient::client(config.clone())?;
        self.wait(NODE, || probe::nodes_ready(client.clone(), nodes))
            .await
    }

    fn spec(&self, name: &str, program: &Path, args: Vec<String>) -> Spec {
        Spec {
            name: name.to_owned(),
            program: program.to_path_buf(),
            args,
            log: self.core.log_of(name),
            pid_file: self.core.dir.join("pids").join(format!("{name}.pid")),
            lifetime: self.opts.lifetime,
        }
    }

    fn apiserver_args(&self, etcd_port: u16, port: u16) -> Vec<String> {
        let pki = self.pki;
        let (first, last) = self.core.slot.node_port_range();
        let mut args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", pki.server_cert.display()),
            format!("--tls-private-key-file={}", pki.server_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!("--token-auth-file={}", pki.tokens.display()),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--authorization-mode=RBAC".into(),
            format!(
                "--service-cluster-ip-range={}",
                self.core.slot.service_cidr()
            ),
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            format!("--service-node-port-range={first}-{last}"),
        ];
        args.extend(self.opts.extra_apiserver_args.iter().cloned());
        args
    }

    /// Polls `probe` until it passes, a process exits, or `ready_timeout` elapses.
    async fn wait<F, Fut>(&self, component: &str, mut probe: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Probe>,
    {
        let timeout = self.opts.ready_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((name, status, log)) = self.core.exited() {
                let tail = tail_file(&log, TAIL_LINES);
                return Err(Error::Exited {
                    component: name,
                    status,
                    log,
                    tail,
                });
            }
            let last = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(reason)) => reason,
                Err(_) => format!("probe timed out after {PROBE_TIMEOUT:?}"),
            };
            if Instant::now() >= deadline {
                let log = self.core.log_of(component);
                let tail = tail_file(&log, TAIL_LINES);
                let component = component.to_owned();
                return Err(Error::NotReady {
                    component,
                    timeout,
                    last,
                    log,
                    tail,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn etcd_args(data: &Path, client: u16, peer: u16) -> Vec<String> {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    vec![
        "--name=default".into(),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=default={peer_url}"),
    ]
}

/// True if a component died because its port was taken after we chose it.
fn port_clash(error: &Error) -> bool {
    matches!(error, Error::Exited { tail, .. } if tail.contains("address already in use"))
}

/// Creates (or reuses) the testbed directory. A directory with a live testbed is refused;
/// leftovers of a dead one are stopped and cleared first.
fn prepare_dir(dir: Option<&Path>) -> Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => paths::testbeds_dir().join(certs::random_hex(6)?),
    };
    std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
    // Absolute, so pid/cmdline checks and slot claims compare equal everywhere.
    let dir = dir
        .canonicalize()
        .ctx(|| format!("resolving {}", dir.display()))?;
    if let Some(state) = State::load(&dir)? {
        if state.any_alive() {
            return Err(Error::AlreadyRunning(dir));
        }
        stop_dir(&dir)?;
    }
    remove_entries(&dir)?;
    for sub in ["logs", "pids"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).ctx(|| format!("creating {}", path.display()))?;
    }
    Ok(dir)
}

/// Removes what a testbed creates in `dir`, then `dir` itself if that left it empty
/// (a user-chosen directory may hold other files, which stay).
fn remove_testbed_files(dir: &Path) -> Result<()> {
    remove_entries(dir)?;
    // Not empty (user files) or already gone: both fine.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// Removes exactly the [`ENTRIES`] a testbed creates.
fn remove_entries(dir: &Path) -> Result<()> {
    for entry in ENTRIES {
        let path = dir.join(entry);
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).ctx(|| format!("removing {}", path.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs blocking work (installs, openssl) off the async worker.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Io {
            context: "running a blocking task".into(),
            source: std::io::Error::other(e),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(tail: &str) -> Error {
        Error::Exited {
            component: ETCD.into(),
            status: "exit status: 1".into(),
            log: PathBuf::from("etcd.log"),
            tail: tail.into(),
        }
    }

    #[test]
    fn only_bind_failures_count_as_port_clashes() {
        let etcd = "etcdmain: listen tcp 127.0.0.1:60085: bind: address already in use";
        assert!(port_clash(&exited(etcd)));
        assert!(!port_clash(&exited("flag provided but not defined: -foo")));
    }

    #[test]
    fn etcd_listens_on_loopback_only() {
        let args = etcd_args(Path::new("/d/etcd"), 1111, 2222);
        assert!(args.contains(&"--listen-client-urls=http://127.0.0.1:1111".to_owned()));
        assert!(args.contains(&"--initial-cluster=default=http://127.0.0.1:2222".to_owned()));
    }
}

//! One Pod's life on the node: volumes, init containers, containers as processes,
//! probes, restarts with back-off, status, and graceful deletion.
//!
//! A worker is a single task that owns everything about its Pod; container exits and
//! probe verdicts reach it as messages, so its state needs no locks.

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Ctx;
use super::events;
use super::launch;
use super::probes::{self, Kind, Verdict};
use super::sandbox::{self, Sandbox};
use super::spec::{self, ImageSource, PodFacts};
use super::status::{self, Conditions, ContainerView, PodView, State, Terminated};
use super::termination;
use super::volumes::{self, PodDir, PodVolumes};
use crate::images::store::Store;
use crate::process::ProcRef;

/// What the Pod manager tells a worker.
#[derive(Debug)]
pub enum PodMsg {
    /// The Pod object changed (e.g. it got a deletionTimestamp).
    Updated(Arc<Pod>),
    /// The Pod object is gone: stop its containers now.
    Gone,
    /// The node agent is stopping: stop the containers, leave the object.
    Shutdown,
}

/// First restart delay after the immediate one, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// Kubelet's cap on the crash-loop back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long starts its back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often content volumes are refreshed and a waiting Pod retries.
const TICK: Duration = Duration::from_secs(2);
/// Retry interval for a container that cannot start yet (image, config).
const RETRY: Duration = Duration::from_secs(2);
/// Grace for containers when the node agent itself stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: u64 = 30;

/// Identifies a container incarnation, so late messages of a previous run are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    init: bool,
    index: usize,
    generation: u64,
}

#[derive(Debug)]
enum Note {
    Exited(std::io::Result<ExitStatus>),
    Probe(Verdict),
}

/// A running process of a container.
struct Process {
    proc: ProcRef,
    started: Instant,
    probes: tokio::task::JoinHandle<()>,
    kill_at: Option<Instant>,
    /// The host file bound at its `terminationMessagePath` (none when it could not be).
    termination: Option<PathBuf>,
    /// Its log file.
    log: PathBuf,
}

/// One container's slot in the Pod.
struct Slot {
    spec: Container,
    tag: Tag,
    state: State,
    last: Option<Terminated>,
    restarts: i32,
    ever_started: bool,
    ready: bool,
    started: bool,
    image_id: String,
    process: Option<Process>,
    /// When to (re)start; `None` means never again.
    next_start: Option<Instant>,
    backoff: Duration,
}

impl Slot {
    fn new(spec: Container, init: bool, index: usize) -> Slot {
        Slot {
            tag: Tag {
                init,
                index,
                generation: 0,
            },
            state: State::Waiting {
                reason: if init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                }
                .into(),
                message: None,
            },
            spec,
            last: None,
            restarts: 0,
            ever_started: false,
            ready: false,
            started: false,
            image_id: String::new(),
            process: None,
            next_start: Some(Instant::now()),
            backoff: Duration::ZERO,
        }
    }

    fn view(&self) -> ContainerView {
        ContainerView {
            name: self.spec.name.clone(),
            image: self.spec.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            state: self.state.clone(),
            last: self.last.clone(),
            restarts: self.restarts,
            ready: self.ready,
            started: self.started,
        }
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }

    fn waiting(&mut self, reason: &str, message: String) {
        self.state = State::Waiting {
            reason: reason.to_owned(),
            message: Some(message),
        };
    }
}

/// The worker of one Pod.
pub struct Worker {
    ctx: Arc<Ctx>,
    pod: Arc<Pod>,
    api: Api<Pod>,
    dir: PodDir,
    facts: PodFacts,
    volumes: Option<PodVolumes>,
    init: Vec<Slot>,
    apps: Vec<Slot>,
    conditions: Conditions,
    start_time: Timestamp,
    published: Option<PodStatus>,
    notes_tx: mpsc::Sender<(Tag, Note)>,
    notes_rx: mpsc::Receiver<(Tag, Note)>,
    /// Set once the Pod is being deleted (or the agent stops): the kill deadline.
    terminating: Option<Instant>,
    /// Whether to delete the Pod object once its containers are gone.
    delete_when_stopped: bool,
}

impl Worker {
    /// A worker for `pod` on the node at `host_ip`, with the Pod address `pod_ip`.
    pub fn new(ctx: Arc<Ctx>, pod: Arc<Pod>, host_ip: Ipv4Addr, pod_ip: Ipv4Addr) -> Worker {
        let dir = PodDir::new(&ctx.config, &pod.uid().unwrap_or_default());
        let spec = pod.spec.clone().unwrap_or_default();
        let (notes_tx, notes_rx) = mpsc::channel(64);
        let facts = PodFacts {
            pod_ip,
            host_ip,
            api_ip: ctx.config.service_ip(),
            home: dir.home(),
        };
        let init = spec
            .init_containers
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, c)| Slot::new(c, true, i))
            .collect();
        let apps = spec
            .containers
            .into_iter()
            .enumerate()
            .map(|(i, c)| Slot::new(c, false, i))
            .collect();
        let api = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let mut conditions = Conditions::default();
        conditions.set("PodScheduled", true);
        Worker {
            ctx,
            pod,
            api,
            dir,
            facts,
            volumes: None,
            init,
            apps,
            conditions,
            start_time: Timestamp::now(),
            published: None,
            notes_tx,
            notes_rx,
            terminating: None,
            delete_when_stopped: false,
        }
    }

    /// Runs the Pod until it is deleted (or the agent stops), then cleans up.
    pub async fn run(mut self, mut rx: mpsc::Receiver<PodMsg>) {
        tracing::info!(pod = %self.key(), ip = %self.facts.pod_ip, "starting pod");
        self.on_update();
        loop {
            self.advance().await;
            self.publish().await;
            if self.terminating.is_some() && self.all_stopped() {
                break;
            }
            let wake = self.next_wake();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(PodMsg::Updated(pod)) => { self.pod = pod; self.on_update(); }
                    Some(PodMsg::Gone) | None => self.terminate(Duration::ZERO, false),
                    Some(PodMsg::Shutdown) => self.terminate(SHUTDOWN_GRACE, false),
                },
                Some((tag, note)) = self.notes_rx.recv() => self.on_note(tag, note),
                _ = tokio::time::sleep_until(wake) => self.refresh_volumes(),
            }
        }
        self.finish().await;
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.namespace().unwrap_or_default(),
            self.pod.name_any()
        )
    }

    fn on_update(&mut self) {
        if self.terminating.is_some() {
            return;
        }
        if self.pod.metadata.deletion_timestamp.is_some() {
            let grace = self
                .pod
                .metadata
                .deletion_grace_period_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or_else(|| self.grace().as_secs());
            self.terminate(Duration::from_secs(grace), true);
        }
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(DEFAULT_GRACE);
        Duration::from_secs(secs)
    }

    /// SIGTERM to every container; SIGKILL at the deadline (see `advance`).
    fn terminate(&mut self, grace: Duration, delete: bool) {
        if self.terminating.is_some() {
            return;
        }
        tracing::info!(pod = %self.key(), ?grace, "stopping pod");
        let deadline = Instant::now() + grace;
        self.terminating = Some(deadline);
        self.delete_when_stopped = delete;
        let pod = self.pod.clone();
        for slot in self.init.iter_mut().chain(self.apps.iter_mut()) {
            slot.next_start = None;
            if let Some(p) = &mut slot.process {
                events::record(
                    &self.ctx,
                    &pod,
                    "Normal",
                    "Killing",
                    format!("Stopping container {}", slot.spec.name),
                );
                sandbox::signal_group(p.proc.pid, libc::SIGTERM);
                p.kill_at = Some(deadline);
            }
        }
    }

    fn all_stopped(&self) -> bool {
        self.init
            .iter()
            .chain(self.apps.iter())
            .all(|s| s.process.is_none())
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + TICK;
        for slot in self.init.iter().chain(self.apps.iter()) {
            if let Some(at) = slot.process.as_ref().and_then(|p| p.kill_at) {
                wake = wake.min(at);
            }
            if slot.process.is_none()
                && let Some(at) = slot.next_start
            {
                wake = wake.min(at);
            }
        }
        wake
    }

    /// Kills overdue containers, prepares volumes and starts what is due.
    async fn advance(&mut self) {
        let now = Instant::now();
        for slot in self.init.iter_mut().chain(self.apps.iter_mut()) {
            if let Some(p) = &mut slot.process
                && p.kill_at.is_some_and(|at| at <= now)
            {
                sandbox::signal_group(p.proc.pid, libc::SIGKILL);
                p.kill_at = None;
            }
        }
        if self.terminating.is_some() {
            return;
        }
        if self.volumes.is_none() && !self.prepare_volumes() {
            return;
        }
        if !self.init_done() {
            self.conditions.set("Initialized", false);
            if let Some(i) = self.init.iter().position(|s| !s.succeeded()) {
                self.start_if_due(true, i).await;
            }
            return;
        }
        self.conditions.set("Initialized", true);
        for i in 0..self.apps.len() {
            self.start_if_due(false, i).await;
        }
    }

    fn init_done(&self) -> bool {
        self.init.iter().all(Slot::succeeded)
    }

    fn prepare_volumes(&mut self) -> bool {
        let prepared = volumes::prepare(&self.ctx, &self.pod, &self.dir, &self.facts)
            .and_then(|v| super::fsgroup::apply(&self.pod, &v).map(|()| v));
        match prepared {
            Ok(v) => {
                self.volumes = Some(v);
                true
            }
            Err(message) => {
                tracing::debug!(pod = %self.key(), %message, "volumes not ready");
                for slot in self.init.iter_mut().chain(self.apps.iter_mut()) {
                    let reason = if slot.tag.init {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    };
                    slot.waiting(reason, message.clone());
                }
                false
            }
        }
    }

    fn refresh_volumes(&mut self) {
        if let Some(vols) = &self.volumes
            && let Err(message) = volumes::refresh(&self.ctx, &self.pod, vols, &self.facts)
        {
            tracing::warn!(pod = %self.key(), %message, "refreshing volumes failed");
        }
    }

    fn slot_mut(&mut self, init: bool, index: usize) -> Option<&mut Slot> {
        if init {
            self.init.get_mut(index)
        } else {
            self.apps.get_mut(index)
        }
    }

    async fn start_if_due(&mut self, init: bool, index: usize) {
        let now = Instant::now();
        let Some(slot) = self.slot_mut(init, index) else {
            return;
        };
        if slot.process.is_some() || slot.next_start.is_none_or(|at| at > now) {
            return;
        }
        if let Err((reason, message)) = self.start(init, index).await {
            tracing::info!(pod = %self.key(), %reason, %message, "container not started");
            let pod = self.pod.clone();
            if let Some(slot) = self.slot_mut(init, index) {
                slot.waiting(&reason, message.clone());
                slot.next_start = Some(Instant::now() + RETRY);
            }
            events::record(&self.ctx, &pod, "Warning", "Failed", message);
        }
    }

    /// Starts one container's process and its probes.
    async fn start(&mut self, init: bool, index: usize) -> Result<(), (String, String)> {
        let (pod, facts, dir) = (self.pod.clone(), self.facts.clone(), self.dir.clone());
        let bin_dir = self.ctx.config.bin_dir.clone();
        let store = Store::new(&self.ctx.config.dir);
        let notes = self.notes_tx.clone();
        let log = self.log_path(init, index);
        let slot = match self.slot_mut(init, index) {
            Some(s) => s,
            None => return Ok(()),
        };
        let container = slot.spec.clone();
        let image = container.image.clone().unwrap_or_default();
        let source = spec::resolve_image(&image, &bin_dir, &store)
            .map_err(|e| (e.reason.to_owned(), e.message))?;
        slot.image_id = source.image_id();
        let env = spec::environment(&pod, &container, &facts, &self.ctx.stores)
            .map_err(|e| (e.reason.to_owned(), e.message))?;
        let vols = self.volumes.as_ref().ok_or_else(|| {
            (
                "ContainerCreating".to_owned(),
                "volumes not ready".to_owned(),
            )
        })?;
        let binds = volumes::binds(&pod, &container, vols, &dir)
            .map_err(|m| (spec::CONFIG_ERROR.to_owned(), m))?;
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        let hostname = pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .or_else(|| pod.metadata.name.clone());
        let mut sandbox = Sandbox {
            binds,
            hostname: if host_network { None } else { hostname },
            workdir: PathBuf::from(container.working_dir.as_deref().unwrap_or("/")),
            root: None,
            identity: None,
        };
        let (program, args, env) = match &source {
            ImageSource::Workspace(binary) => {
                let vars = env.iter().cloned().collect();
                let (program, args) = spec::argv(&container, binary, &vars);
                (program, args, env)
            }
            ImageSource::Stored { image, .. } => {
                launch::stored(image, &pod, &container, env, &mut sandbox)
                    .map_err(|m| (spec::CONFIG_ERROR.to_owned(), m))?
            }
        };
        let termination = termination_bind(&dir, &container, &log, &mut sandbox);
        let workdir = sandbox.workdir.clone();
        let identity = sandbox.identity.clone();
        let child = spawn(&program, &args, &env, &sandbox, &log)
            .await
            .map_err(|e| ("RunContainerError".to_owned(), e))?;
        let pid = child.id();
        let proc = ProcRef::of(pid).ok_or_else(|| {
            (
                "RunContainerError".to_owned(),
                format!("process {pid} vanished at start"),
            )
        })?;
        let Some(slot) = self.slot_mut(init, index) else {
            return Ok(());
        };
        slot.tag.generation += 1;
        let tag = slot.tag;
        if slot.ever_started {
            slot.restarts += 1;
        }
        slot.ever_started = true;
        slot.state = State::Running {
            started_at: Timestamp::now(),
            pid,
        };
        slot.ready = false;
        slot.started = false;
        slot.next_start = None;
        let target = probes::Target {
            pod_ip: facts.pod_ip,
            pid,
            env,
            workdir,
            identity,
        };
        let probes = if init {
            // Init containers are not probed; they count as started.
            tokio::spawn(async {})
        } else {
            let tx = notes.clone();
            let (ptx, mut prx) = mpsc::channel(8);
            tokio::spawn(async move {
                let forward = async {
                    while let Some((tag, v)) = prx.recv().await {
                        if tx.send((tag, Note::Probe(v))).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::join!(probes::run(container, target, tag, ptx), forward);
            })
        };
        slot.process = Some(Process {
            proc,
            started: Instant::now(),
            probes,
            kill_at: None,
            termination,
            log: log.clone(),
        });
        wait_in_thread(child, tag, notes);
        let name = slot.spec.name.clone();
        tracing::info!(pod = %self.key(), container = %name, pid, "container started");
        events::record(
            &self.ctx,
            &pod,
            "Normal",
            "Started",
            format!("Started container {name}"),
        );
        Ok(())
    }

    fn log_path(&self, init: bool, index: usize) -> PathBuf {
        let slot = if init {
            &self.init[index]
        } else {
            &self.apps[index]
        };
        let restart = if slot.ever_started {
            slot.restarts + 1
        } else {
            0
        };
        log_path(
            &self.ctx.config.logs_dir(),
            &self.pod,
            &slot.spec.name,
            restart,
        )
    }

    fn on_note(&mut self, tag: Tag, note: Note) {
        let terminating = self.terminating.is_some();
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let pod = self.pod.clone();
        let ctx = self.ctx.clone();
        let grace = self.grace();
        let key = self.key();
        let Some(slot) = self.slot_mut(tag.init, tag.index) else {
            return;
        };
        if slot.tag != tag {
            return;
        }
        match note {
            Note::Probe(Verdict::Started) => slot.started = true,
            Note::Probe(Verdict::Ready(ready)) => slot.ready = ready && slot.started,
            Note::Probe(Verdict::Unhealthy { kind, message }) => {
                let which = if kind == Kind::Startup {
                    "Startup"
                } else {
                    "Liveness"
                };
                tracing::info!(pod = %key, container = %slot.spec.name, %message, "{which} probe failed; restarting");
                events::record(
                    &ctx,
                    &pod,
                    "Warning",
                    "Unhealthy",
                    format!("{which} probe failed: {message}"),
                );
                slot.ready = false;
                if let Some(p) = &mut slot.process {
                    sandbox::signal_group(p.proc.pid, libc::SIGTERM);
                    p.kill_at = Some(Instant::now() + grace);
                }
            }
            Note::Exited(result) => on_exit(slot, result, terminating, &policy, &key),
        }
    }

    fn phase(&self) -> &'static str {
        let stopped_for_good = |s: &Slot| s.process.is_none() && s.next_start.is_none();
        if !self.init_done() {
            let failed = self
                .init
                .iter()
                .any(|s| stopped_for_good(s) && matches!(s.state, State::Terminated(_)));
            return if failed && self.terminating.is_none() {
                "Failed"
            } else {
                "Pending"
            };
        }
        if self.apps.iter().all(|s| !s.ever_started) {
            return "Pending";
        }
        if !self.apps.iter().all(stopped_for_good) {
            return "Running";
        }
        if self.terminating.is_some() {
            // Deleted Pods keep their last phase until the object goes.
            return "Running";
        }
        if self.apps.iter().all(Slot::succeeded) {
            "Succeeded"
        } else {
            "Failed"
        }
    }

    /// Writes the status if it differs from the last one written.
    async fn publish(&mut self) {
        let ready = !self.apps.is_empty() && self.apps.iter().all(|s| s.ready);
        self.conditions.set("ContainersReady", ready);
        self.conditions.set("Ready", ready);
        let init: Vec<ContainerView> = self.init.iter().map(Slot::view).collect();
        let apps: Vec<ContainerView> = self.apps.iter().map(Slot::view).collect();
        let host_ip = self.facts.host_ip;
        let view = PodView {
            phase: self.phase(),
            pod_ip: self.facts.pod_ip,
            host_ip,
            start_time: self.start_time,
            init: &init,
            containers: &apps,
            conditions: &self.conditions,
        };
        let status = status::pod_status(&view);
        if self.published.as_ref() == Some(&status) {
            return;
        }
        let patch = serde_json::json!({ "status": status });
        match self
            .api
            .patch_status(
                &self.pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => self.published = Some(status),
            Err(kube::Error::Api(e)) if e.code == 404 => self.published = Some(status),
            Err(e) => tracing::warn!(pod = %self.key(), error = %e, "writing pod status failed"),
        }
    }

    async fn finish(mut self) {
        for slot in self.init.iter_mut().chain(self.apps.iter_mut()) {
            if let Some(p) = slot.process.take() {
                p.probes.abort();
            }
        }
        if self.delete_when_stopped {
            let uid = self.pod.uid();
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.api.delete(&self.pod.name_any(), &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(pod = %self.key(), error = %e, "deleting pod failed"),
            }
        }
        if let Ok(mut ipam) = self.ctx.ipam.lock() {
            ipam.release(self.facts.pod_ip);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir.root)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(pod = %self.key(), error = %e, "removing the pod sandbox failed");
        }
        tracing::info!(pod = %self.key(), "pod stopped");
    }
}

/// Records an exit and decides on the restart, as kubelet's restartPolicy and back-off.
fn on_exit(
    slot: &mut Slot,
    result: std::io::Result<ExitStatus>,
    terminating: bool,
    policy: &str,
    key: &str,
) {
    let Some(process) = slot.process.take() else {
        return;
    };
    process.probes.abort();
    let (exit_code, signal) = match &result {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            (None, None) => (-1, None),
        },
        Err(_) => (-1, None),
    };
    let started_at = match &slot.state {
        State::Running { started_at, .. } => *started_at,
        _ => Timestamp::now(),
    };
    let message = termination::message(
        process.termination.as_deref(),
        &process.log,
        slot.spec.termination_message_policy.as_deref(),
        exit_code,
    );
    let terminated = Terminated {
        exit_code,
        signal,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
        started_at,
        finished_at: Timestamp::now(),
        pid: process.proc.pid,
        message,
    };
    tracing::info!(pod = %key, container = %slot.spec.name, exit_code, "container exited");
    slot.ready = false;
    slot.started = false;
    let restart = !terminating
        && if slot.tag.init {
            exit_code != 0 && policy != "Never"
        } else {
            policy == "Always" || (policy == "OnFailure" && exit_code != 0)
        };
    if !restart {
        slot.state = State::Terminated(terminated);
        slot.next_start = None;
        return;
    }
    if process.started.elapsed() >= BACKOFF_RESET {
        slot.backoff = Duration::ZERO;
    }
    let delay = slot.backoff;
    slot.backoff = if delay.is_zero() {
        FIRST_BACKOFF
    } else {
        (delay * 2).min(MAX_BACKOFF)
    };
    slot.next_start = Some(Instant::now() + delay);
    slot.state = if delay.is_zero() {
        State::Terminated(terminated.clone())
    } else {
        State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some(format!(
                "back-off {}s restarting failed container={}",
                delay.as_secs(),
                slot.spec.name
            )),
        }
    };
    slot.last = Some(terminated);
}

/// Gives the container an empty termination-message file of its own, bound at its
/// `terminationMessagePath` (next to its log: one per incarnation); `None` (logged) when
/// the mount point cannot be made, so the container still starts.
fn termination_bind(
    dir: &PodDir,
    container: &Container,
    log: &std::path::Path,
    sandbox: &mut Sandbox,
) -> Option<PathBuf> {
    let target = termination::target(container);
    let name = log
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let host = dir
        .root
        .join("termination")
        .join(&container.name)
        .join(name);
    let made = termination::create_host_file(&host).and_then(|()| match &sandbox.root {
        // In an image the sandbox makes the mount point under the image's root.
        Some(_) => Ok(()),
        None => termination::ensure_host_mount_point(&target),
    });
    if let Err(e) = made {
        tracing::warn!(container = %container.name, target = %target.display(), error = %e, "no termination message file");
        return None;
    }
    sandbox.binds.push(sandbox::Bind {
        source: host.clone(),
        target,
        read_only: false,
    });
    Some(host)
}

/// Where container logs go: `<logs>/<ns>_<pod>_<uid>/<container>/<restart>.log`.
pub fn log_path(logs: &std::path::Path, pod: &Pod, container: &str, restart: i32) -> PathBuf {
    logs.join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.uid().unwrap_or_default()
    ))
    .join(container)
    .join(format!("{restart}.log"))
}

/// Forks the container on the permanent spawner thread (PDEATHSIG), in its sandbox.
async fn spawn(
    program: &std::path::Path,
    args: &[String],
    env: &[(String, String)],
    sandbox: &Sandbox,
    log: &std::path::Path,
) -> Result<std::process::Child, String> {
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    sandbox
        .prepare()
        .map_err(|e| format!("preparing mount points: {e}"))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    sandbox
        .apply(&mut cmd)
        .map_err(|e| format!("sandbox: {e}"))?;
    let shown = program.display().to_string();
    let describe = format!("{sandbox:?}");
    tokio::task::spawn_blocking(move || crate::process::spawn_attached(cmd))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("starting {shown}: {e} (sandbox: {describe})"))
}

/// Waits for the child on a thread of its own (it blocks in `wait`) and reports back.
fn wait_in_thread(mut child: std::process::Child, tag: Tag, tx: mpsc::Sender<(Tag, Note)>) {
    let spawned = std::thread::Builder::new()
        .name(format!("wait-{}", child.id()))
        .spawn(move || {
            let status = child.wait();
            let _ = tx.blocking_send((tag, Note::Exited(status)));
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a wait thread; the container's exit will go unnoticed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        let spec: Container = serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
        let mut slot = Slot::new(spec, false, 0);
        slot.ever_started = true;
        slot
    }

    fn running(slot: &mut Slot) {
        slot.process = Some(Process {
            proc: ProcRef::current().unwrap(),
            started: Instant::now(),
            probes: tokio::spawn(async {}),
            kill_at: None,
            termination: None,
            log: PathBuf::from("/nonexistent/0.log"),
        });
        slot.state = State::Running {
            started_at: Timestamp::now(),
            pid: 1,
        };
    }

    fn exit(code: i32) -> std::io::Result<ExitStatus> {
        Ok(ExitStatus::from_raw(code << 8))
    }

    #[tokio::test]
    async fn always_restarts_at_once_then_backs_off_doubling() {
        let mut slot = slot();
        let mut delays = Vec::new();
        for _ in 0..7 {
            running(&mut slot);
            let before = Instant::now();
            on_exit(&mut slot, exit(1), false, "Always", "t/p");
            let at = slot.next_start.expect("restart scheduled");
            delays.push((at - before).as_secs());
        }
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300]);
        assert!(
            matches!(slot.state, State::Waiting { ref reason, .. } if reason == "CrashLoopBackOff")
        );
        assert_eq!(slot.last.as_ref().map(|t| t.exit_code), Some(1));
    }

    #[tokio::test]
    async fn policies_decide_restarts_and_signals_become_exit_codes() {
        let mut slot = slot();
        running(&mut slot);
        on_exit(&mut slot, exit(0), false, "OnFailure", "t/p");
        assert!(slot.next_start.is_none());
        assert!(matches!(&slot.state, State::Terminated(t) if t.reason == "Completed"));

        running(&mut slot);
        on_exit(
            &mut slot,
            Ok(ExitStatus::from_raw(libc::SIGKILL)),
            false,
            "Never",
            "t/p",
        );
        assert!(slot.next_start.is_none());
        assert!(
            matches!(&slot.state, State::Terminated(t) if t.exit_code == 137 && t.signal == Some(9))
        );

        running(&mut slot);
        on_exit(&mut slot, exit(2), true, "Always", "t/p");
        assert!(
            slot.next_start.is_none(),
            "a terminating pod never restarts"
        );
    }
}

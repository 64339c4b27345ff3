//! Spawning and stopping the control-plane processes.
//!
//! Safety rules this module enforces:
//! - A process is only ever signalled through [`ProcRef::signal`], which first checks that
//!   `/proc/<pid>/stat` still shows the start time recorded at spawn (pid reuse).
//! - Attached processes get `PR_SET_PDEATHSIG(SIGKILL)`. Linux fires that signal when the
//!   *thread* that forked the child exits, so they are all forked by one permanent spawner
//!   thread (never a tokio worker, which may be torn down with its runtime).
//! - Detached processes (`mq-testbed up`) call `setsid()` and have no death signal, so
//!   they outlive the CLI.

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// How often stop loops look at a process.
const STOP_POLL: Duration = Duration::from_millis(20);
/// How long to wait after SIGKILL for a process we cannot reap ourselves.
const KILL_WAIT: Duration = Duration::from_secs(3);

/// A process identity that survives pid reuse: the pid plus its start time
/// (field 22 of `/proc/<pid>/stat`, clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    /// The process id.
    pub pid: u32,
    /// Its start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcRef {
    /// Identifies the running process `pid`, if there is one.
    pub fn of(pid: u32) -> Option<ProcRef> {
        let stat = read_stat(pid)?;
        Some(ProcRef {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Identifies the current process.
    pub fn current() -> Option<ProcRef> {
        ProcRef::of(std::process::id())
    }

    /// True if this very process (same start time) still runs; zombies count as dead.
    pub fn is_alive(&self) -> bool {
        read_stat(self.pid).is_some_and(|s| s.start_time == self.start_time && !s.is_zombie())
    }

    /// Sends `signal` only if this very process still runs; returns whether it was sent.
    ///
    /// This is the single place where the library signals a process.
    pub fn signal(&self, signal: libc::c_int) -> bool {
        if !self.is_alive() {
            return false;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid was verified above.
        unsafe { libc::kill(pid, signal) == 0 }
    }
}

/// A process stopped with SIGSTOP (as a hung machine or a stuck server looks to its
/// peers: connections are accepted by the kernel, nothing answers); dropping the guard
/// continues it (SIGCONT), also when a test fails half-way.
#[derive(Debug)]
pub struct Frozen {
    proc: ProcRef,
}

impl Frozen {
    /// Stops `proc`; `None` if it does not run.
    pub fn new(proc: ProcRef) -> Option<Frozen> {
        proc.signal(libc::SIGSTOP).then_some(Frozen { proc })
    }

    /// Continues the process now.
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.proc.signal(libc::SIGCONT);
    }
}

struct Stat {
    state: char,
    start_time: u64,
}

impl Stat {
    fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses, so
/// fields are counted after the *last* `)`.
fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3) come fields 4..; start time is field 22.
    let start_time = fields.nth(22 - 4)?.parse().ok()?;
    Some(Stat { state, start_time })
}

/// Whether a spawned process is tied to the spawning process or independent of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lifetime {
    /// Killed by the kernel if the test process dies (PDEATHSIG from the spawner thread).
    Attached,
    /// Its own session; outlives the process that started it.
    Detached,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Component name, used for the log and pid file names.
    pub name: String,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// File receiving stdout and stderr.
    pub log: PathBuf,
    /// File receiving the pid.
    pub pid_file: PathBuf,
    /// Attached or detached.
    pub lifetime: Lifetime,
}

/// A process this library started, with its `Child` handle while we own it.
#[derive(Debug)]
pub struct Managed {
    /// Component name.
    pub name: String,
    /// Its identity.
    pub proc: ProcRef,
    /// Its log file.
    pub log: PathBuf,
    /// Its pid file.
    pub pid_file: PathBuf,
    child: Option<Child>,
}

impl Managed {
    /// Wraps a process recorded elsewhere (state file) that we cannot reap.
    pub fn adopted(name: &str, proc: ProcRef, log: PathBuf, pid_file: PathBuf) -> Managed {
        Managed {
            name: name.to_owned(),
            proc,
            log,
            pid_file,
            child: None,
        }
    }

    /// The exit status, if the process has already exited.
    pub fn exit_status(&mut self) -> Option<String> {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
            None => (!self.proc.is_alive()).then(|| "exited".to_owned()),
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; reaps the child when we own it.
    pub fn stop(mut self, grace: Duration) {
        match self.child.take() {
            Some(child) => stop_child(&self.name, self.proc, child, grace),
            None => stop_adopted(&self.name, self.proc, grace),
        }
        // A missing pid file is fine: stop is idempotent.
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

fn stop_child(name: &str, proc: ProcRef, mut child: Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // Unreaped, the pid cannot be reused, so the checked signal is exact here.
    proc.signal(libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(STOP_POLL);
    }
    tracing::warn!(
        component = name,
        pid = proc.pid,
        "no exit after SIGTERM; sending SIGKILL"
    );
    // Exact for the same reason as above: the child is still unreaped.
    let _ = child.kill();
    let _ = child.wait();
}

fn stop_adopted(name: &str, proc: ProcRef, grace: Duration) {
    if !proc.signal(libc::SIGTERM) {
        return;
    }
    if wait_dead(proc, grace) {
        return;
    }
    tracing::warn!(
        component = name,
        pid = proc.pid,
        "no exit after SIGTERM; sending SIGKILL"
    );
    proc.signal(libc::SIGKILL);
    if !wait_dead(proc, KILL_WAIT) {
        tracing::error!(
            component = name,
            pid = proc.pid,
            "still alive after SIGKILL"
        );
    }
}

/// Polls until `proc` is gone (or a zombie); returns false on timeout.
fn wait_dead(proc: ProcRef, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while proc.is_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(STOP_POLL);
    }
    true
}

/// Starts `spec`, writes its pid file and returns the handle.
pub fn spawn(spec: &Spec) -> Result<Managed> {
    let log = File::create(&spec.log).ctx(|| format!("creating {}", spec.log.display()))?;
    let log_err = log
        .try_clone()
        .ctx(|| format!("duplicating {}", spec.log.display()))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let child = match spec.lifetime {
        Lifetime::Attached => spawn_attached(cmd),
        Lifetime::Detached => spawn_detached(cmd),
    }
    .ctx(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
    finish_spawn(spec, child)
}

fn finish_spawn(spec: &Spec, mut child: Child) -> Result<Managed> {
    let pid = child.id();
    // The child cannot be reaped before we wait, so its stat entry exists (maybe as zombie).
    let Some(proc) = ProcRef::of(pid) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Io {
            context: format!("reading /proc/{pid}/stat of {}", spec.name),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    };
    let managed = Managed {
        name: spec.name.clone(),
        proc,
        log: spec.log.clone(),
        pid_file: spec.pid_file.clone(),
        child: Some(child),
    };
    if let Err(e) = std::fs::write(&spec.pid_file, format!("{pid}\n")) {
        managed.stop(Duration::ZERO);
        return Err(Error::Io {
            context: format!("writing {}", spec.pid_file.display()),
            source: e,
        });
    }
    Ok(managed)
}

fn spawn_detached(mut cmd: Command) -> std::io::Result<Child> {
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Forks on the permanent spawner thread so PDEATHSIG is tied to the process lifetime.
pub(crate) fn spawn_attached(mut cmd: Command) -> std::io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid), no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // If the parent died before prctl, the signal will never come: give up.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other(Error::SpawnerGone))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other(Error::SpawnerGone))?
}

/// The global spawner thread's queue; the thread never exits.
fn spawner() -> &'static mpsc::Sender<SpawnJob> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let spawn_loop = move || {
            // The static keeps the sender forever, so this loop only ends if that changes;
            // even then the thread must not exit (that would fire PDEATHSIG), so it parks.
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
            loop {
                std::thread::park();
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("mq-testbed-spawner".into())
            .spawn(spawn_loop)
        {
            tracing::error!(error = %e, "cannot start the spawner thread");
        }
        tx
    })
}

/// Runs a short command to completion; on failure the error carries its stderr.
/// With `inherit_stderr` the output streams to our stderr instead (long installs).
pub(crate) fn run_checked(cmd: &mut Command, inherit_stderr: bool) -> Result<Output> {
    let display = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    cmd.stderr(if inherit_stderr {
        Stdio::inherit()
    } else {
        Stdio::piped()
    });
    let output = cmd.output().ctx(|| format!("running {display}"))?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(Error::Command {
        command: display,
        status: output.status.to_string(),
        stderr: tail_lines(&stderr, 20),
    })
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of a log file (best effort: unreadable logs give a note).
pub fn tail_file(path: &Path, n: usize) -> String {
    let mut bytes = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => tail_lines(&String::from_utf8_lossy(&bytes), n),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_start_time_guards_pid_reuse() {
        let me = ProcRef::current().expect("our own /proc entry");
        assert!(me.is_alive());
        let reused = ProcRef {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_alive());
        // The guard refuses to signal a process whose start time differs.
        assert!(!reused.signal(0));
    }

    #[test]
    fn attached_child_is_stopped_and_reaped() {
        let dir = std::env::temp_dir().join(format!("mq-testbed-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let spec = Spec {
            name: "sleeper".into(),
            program: "sleep".into(),
            args: vec!["30".into()],
            log: dir.join("sleeper.log"),
            pid_file: dir.join("sleeper.pid"),
            lifetime: Lifetime::Attached,
        };
        let managed = spawn(&spec).expect("spawn sleep");
        let proc = managed.proc;
        assert!(proc.is_alive());
        assert!(spec.pid_file.exists());
        managed.stop(Duration::from_secs(5));
        assert!(!proc.is_alive());
        assert!(!spec.pid_file.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }
}

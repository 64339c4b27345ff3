//! Startup, readiness and liveness probes (tcpSocket, httpGet, exec), run as kubelet
//! runs them: after `initialDelaySeconds`, every `periodSeconds`, each attempt bounded by
//! `timeoutSeconds`, with success and failure thresholds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::sandbox;

/// Which probe a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// startupProbe.
    Startup,
    /// readinessProbe.
    Readiness,
    /// livenessProbe.
    Liveness,
}

/// What a probe task tells the Pod worker.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// The startup probe passed (or there is none): liveness and readiness begin.
    Started,
    /// Readiness changed.
    Ready(bool),
    /// Startup or liveness crossed its failure threshold: the container must be killed.
    Unhealthy {
        /// Which probe.
        kind: Kind,
        /// The last failure, for the event and the log.
        message: String,
    },
}

/// Where and how to reach the container.
#[derive(Debug, Clone)]
pub struct Target {
    /// The Pod's address (the default probe host).
    pub pod_ip: Ipv4Addr,
    /// The container's process (exec probes join its namespaces).
    pub pid: u32,
    /// The container's environment (exec probes inherit it).
    pub env: Vec<(String, String)>,
    /// The container's working directory.
    pub workdir: PathBuf,
    /// Who the container runs as (exec probes run as the same user).
    pub identity: Option<super::credentials::Identity>,
}

/// Runs every probe of `container` until the task is aborted; verdicts go to `tx`
/// tagged with `tag`.
pub async fn run<T: Clone + Send + 'static>(
    container: Container,
    target: Target,
    tag: T,
    tx: mpsc::Sender<(T, Verdict)>,
) {
    let send = |v: Verdict| {
        let (tx, tag) = (tx.clone(), tag.clone());
        async move { tx.send((tag, v)).await.is_ok() }
    };
    if let Some(probe) = &container.startup_probe {
        match watch_until_threshold(probe, &container, &target, Kind::Startup).await {
            Outcome::Passed => {}
            Outcome::Failed(message) => {
                send(Verdict::Unhealthy {
                    kind: Kind::Startup,
                    message,
                })
                .await;
                return;
            }
        }
    }
    if !send(Verdict::Started).await {
        return;
    }
    let readiness = async {
        match &container.readiness_probe {
            None => {
                send(Verdict::Ready(true)).await;
                std::future::pending::<()>().await;
            }
            Some(probe) => readiness_loop(probe, &container, &target, &send).await,
        }
    };
    let liveness = async {
        let Some(probe) = &container.liveness_probe else {
            return std::future::pending::<()>().await;
        };
        loop {
            if let Outcome::Failed(message) =
                watch_until_threshold(probe, &container, &target, Kind::Liveness).await
            {
                send(Verdict::Unhealthy {
                    kind: Kind::Liveness,
                    message,
                })
                .await;
                return;
            }
        }
    };
    tokio::select! {
        _ = readiness => {}
        _ = liveness => {}
    }
}

enum Outcome {
    Passed,
    Failed(String),
}

/// Startup: probes until success (passed) or `failureThreshold` failures in a row.
/// Liveness: probes while it passes; returns only on `failureThreshold` failures.
async fn watch_until_threshold(
    probe: &Probe,
    container: &Container,
    target: &Target,
    kind: Kind,
) -> Outcome {
    let timing = Timing::of(probe);
    tokio::time::sleep(timing.initial_delay).await;
    let mut failures = 0;
    loop {
        match attempt(probe, container, target, timing.timeout).await {
            Ok(()) if kind == Kind::Startup => return Outcome::Passed,
            Ok(()) => failures = 0,
            Err(message) => {
                failures += 1;
                tracing::debug!(container = %container.name, ?kind, failures, %message, "probe failed");
                if failures >= timing.failure_threshold {
                    return Outcome::Failed(message);
                }
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

async fn readiness_loop<F, Fut>(probe: &Probe, container: &Container, target: &Target, send: &F)
where
    F: Fn(Verdict) -> Fut,
    Fut: Future<Output = bool>,
{
    let timing = Timing::of(probe);
    tokio::time::sleep(timing.initial_delay).await;
    let (mut ready, mut successes, mut failures) = (None::<bool>, 0, 0);
    loop {
        let result = attempt(probe, container, target, timing.timeout).await;
        if result.is_ok() {
            successes += 1;
            failures = 0;
        } else {
            failures += 1;
            successes = 0;
        }
        let verdict = if successes >= timing.success_threshold {
            Some(true)
        } else if failures >= timing.failure_threshold || ready.is_none() {
            // Until the first success a container is not ready.
            Some(false)
        } else {
            None
        };
        if let Some(v) = verdict
            && ready != Some(v)
        {
            ready = Some(v);
            if !send(Verdict::Ready(v)).await {
                return;
            }
        }
        tokio::time::sleep(timing.period).await;
    }
}

struct Timing {
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Timing {
    /// Kubernetes' defaults: period 10 s, timeout 1 s, thresholds 1 and 3.
    fn of(probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// One probe attempt.
async fn attempt(
    probe: &Probe,
    container: &Container,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    let work = async {
        if let Some(tcp) = &probe.tcp_socket {
            let addr = address(tcp.host.as_deref(), &tcp.port, container, target)?;
            return TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}"));
        }
        if let Some(http) = &probe.http_get {
            let addr = address(http.host.as_deref(), &http.port, container, target)?;
            let path = http.path.as_deref().unwrap_or("/");
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            if http.scheme.as_deref() == Some("HTTPS") {
                // Kubelet skips certificate checks; a TCP connect is the honest subset.
                return TcpStream::connect(addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("dial tcp {addr}: {e}"));
            }
            return http_get(addr, path, &headers).await;
        }
        if let Some(exec) = &probe.exec {
            return exec_probe(exec.command.clone().unwrap_or_default(), target).await;
        }
        Err("probe has no handler the process kubelet supports (tcpSocket, httpGet, exec)".into())
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
}

fn address(
    host: Option<&str>,
    port: &IntOrString,
    container: &Container,
    target: &Target,
) -> Result<SocketAddr, String> {
    let ip: IpAddr = match host.filter(|h| !h.is_empty()) {
        Some(h) => h
            .parse()
            .map_err(|_| format!("probe host {h:?} is not an IP"))?,
        None => IpAddr::V4(target.pod_ip),
    };
    Ok(SocketAddr::new(ip, resolve_port(port, container)?))
}

/// A probe port: a number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok())
            .ok_or_else(|| format!("container has no port named {name:?}")),
    }
}

/// `GET path` over HTTP/1.1; statuses 200–399 pass, as in kubelet.
async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.20\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("writing to {addr}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status line from {addr}"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

/// Runs `command` inside the container's namespaces with its environment.
async fn exec_probe(command: Vec<String>, target: &Target) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("exec probe has an empty command".into());
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(target.env.iter().cloned())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    sandbox::enter(
        &mut cmd,
        target.pid,
        &target.workdir,
        target.identity.as_ref(),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::from(cmd);
    // The probe's timeout drops this future; the probe process must not outlive it.
    cmd.kill_on_drop(true);
    let output = cmd
        .output()
        .await
        .map_err(|e| format!("exec {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "exec {program}: {} {}",
            output.status,
            stderr.trim()
        ))
    }
}

//! Test helpers for Pods on the testbed: namespaces ready for Pods, bounded waits that
//! fail with a readable dump (Pods, events, container logs), and process lookups.

use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ServiceAccount};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::controlplane::Testbed;
use crate::error::{Error, Result, chain};
use crate::process::ProcRef;

/// How often waits poll.
const POLL: Duration = Duration::from_millis(250);
/// Events quoted in a dump.
const DUMP_EVENTS: usize = 30;
/// Log lines quoted per container in a dump.
const DUMP_LOG_LINES: usize = 15;

impl Testbed {
    /// Directory of the process kubelet's container logs.
    pub fn logs_dir(&self) -> std::path::PathBuf {
        self.dir().join("logs").join("pods")
    }

    /// Creates namespace `name` and waits until Pods can be created in it (its default
    /// ServiceAccount has a token).
    pub async fn create_namespace(&self, client: &Client, name: &str) -> Result<()> {
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"mqfleet.io/test": "true"}}
        }))
        .map_err(|source| Error::Json {
            path: name.into(),
            source,
        })?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        self.until(
            client,
            name,
            "the default ServiceAccount's token",
            Duration::from_secs(60),
            || {
                let accounts = accounts.clone();
                async move {
                    match accounts.get_opt("default").await {
                        Ok(Some(sa)) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()) => {
                            Ok(Some(()))
                        }
                        Ok(_) => Err("no token yet".into()),
                        Err(e) => Err(chain(&e)),
                    }
                }
            },
        )
        .await
    }

    /// Polls `check` until it returns `Ok(Some(value))`; `Err(reason)` and `Ok(None)`
    /// mean "not yet". After `timeout` the error names `what`, the last reason, and
    /// dumps the Pods, events and container logs of namespace `ns`.
    pub async fn until<T, F, Fut>(
        &self,
        client: &Client,
        ns: &str,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, String>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match check().await {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => "not yet".to_owned(),
                Err(reason) => reason,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Diagnosed {
                    what: what.to_owned(),
                    timeout,
                    last,
                    dump: self.dump(client, ns).await,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A person-readable picture of namespace `ns`: Pods with their states, recent
    /// events, and the end of every container log.
    pub async fn dump(&self, client: &Client, ns: &str) -> String {
        let mut out = format!("--- namespace {ns} ---\n");
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        match pods.list(&ListParams::default()).await {
            Ok(list) => {
                for pod in &list.items {
                    let _ = writeln!(out, "{}", describe_pod(pod));
                    let logs = crate::logs::files(&self.logs_dir(), ns, &pod.name_any());
                    for (container, files) in logs.into_iter().flatten() {
                        if let Some(last) = files.last() {
                            let tail = crate::process::tail_file(last, DUMP_LOG_LINES);
                            let _ =
                                writeln!(out, "  log {container} ({}):\n{tail}", last.display());
                        }
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(out, "listing pods failed: {}", chain(&e));
            }
        }
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        if let Ok(list) = events.list(&ListParams::default()).await {
            let mut items = list.items;
            items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
            let _ = writeln!(out, "events:");
            for e in items.iter().rev().take(DUMP_EVENTS).rev() {
                let _ = writeln!(
                    out,
                    "  {} {} {}/{}: {}",
                    e.type_.as_deref().unwrap_or(""),
                    e.reason.as_deref().unwrap_or(""),
                    e.involved_object.kind.as_deref().unwrap_or(""),
                    e.involved_object.name.as_deref().unwrap_or(""),
                    e.message.as_deref().unwrap_or("")
                );
            }
        }
        out
    }
}

/// One line per Pod: phase, node, address, and each container's state.
pub fn describe_pod(pod: &Pod) -> String {
    let status = pod.status.clone().unwrap_or_default();
    let mut line = format!(
        "pod {} phase={} node={} ip={}",
        pod.name_any(),
        status.phase.as_deref().unwrap_or("?"),
        pod.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("-"),
        status.pod_ip.as_deref().unwrap_or("-"),
    );
    for c in status.container_statuses.iter().flatten() {
        let state = c.state.clone().unwrap_or_default();
        let what = if let Some(w) = state.waiting {
            format!(
                "waiting {} {}",
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            )
        } else if let Some(t) = state.terminated {
            format!("terminated {}", t.exit_code)
        } else {
            "running".into()
        };
        let _ = write!(
            line,
            " [{} ready={} restarts={} {what}]",
            c.name, c.ready, c.restart_count
        );
    }
    line
}

/// True if the Pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The process running container `container` of `pod` (from its `process://<pid>` id).
pub fn container_process(pod: &Pod, container: &str) -> Option<ProcRef> {
    let status = pod.status.as_ref()?;
    let cs = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == container)?;
    cs.state.as_ref()?.running.as_ref()?;
    let pid = cs
        .container_id
        .as_deref()?
        .strip_prefix("process://")?
        .parse()
        .ok()?;
    ProcRef::of(pid)
}

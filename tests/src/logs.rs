//! Container logs written by the process kubelet, for `mq-testbed logs` and for test
//! failure dumps.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The log directories of every Pod named `ns/pod` (one per uid: a StatefulSet's pod
/// keeps its name across re-creations), oldest first.
fn pod_dirs(logs_dir: &Path, ns: &str, pod: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!("{ns}_{pod}_");
    let entries = match std::fs::read_dir(logs_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx(|| format!("reading {}", logs_dir.display())),
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|d| {
            // The uid has no '_', so the prefix match is exact.
            let name = d.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)
                .is_some_and(|uid| !uid.contains('_'))
        })
        .map(|d| {
            let made = d
                .metadata()
                .and_then(|m| m.created().or_else(|_| m.modified()))
                .unwrap_or(std::time::UNIX_EPOCH);
            (made, d.path())
        })
        .collect();
    dirs.sort();
    Ok(dirs.into_iter().map(|(_, p)| p).collect())
}

/// The log files of Pod `ns/pod` (any uid), per container, each sorted by restart.
pub fn files(logs_dir: &Path, ns: &str, pod: &str) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    for dir in pod_dirs(logs_dir, ns, pod)? {
        out.extend(container_files(&dir));
    }
    out.sort();
    Ok(out)
}

/// The log files in one Pod's directory, per container, each sorted by restart.
fn container_files(pod_dir: &Path) -> Vec<(String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    for container in std::fs::read_dir(pod_dir).into_iter().flatten().flatten() {
        let mut logs: Vec<(u32, PathBuf)> = std::fs::read_dir(container.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|f| {
                let n = f
                    .file_name()
                    .to_string_lossy()
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((n, f.path()))
            })
            .collect();
        logs.sort();
        out.push((
            container.file_name().to_string_lossy().into_owned(),
            logs.into_iter().map(|(_, p)| p).collect(),
        ));
    }
    out.sort();
    out
}

/// The current (or, with `previous`, the one before) log of a container of `ns/pod`;
/// `container` may be omitted when the Pod has one.
pub fn read(
    logs_dir: &Path,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    previous: bool,
) -> Result<String> {
    // The Pod that has the name now: the newest of its incarnations.
    let all = pod_dirs(logs_dir, ns, pod)?
        .last()
        .map(|d| container_files(d))
        .unwrap_or_default();
    let not_found = |what: String| Error::Io {
        context: what,
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    };
    let chosen = match container {
        Some(c) => all.iter().find(|(name, _)| name == c),
        None if all.len() == 1 => all.first(),
        None if all.is_empty() => None,
        None => {
            let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
            return Err(not_found(format!(
                "pod {ns}/{pod} has several containers ({}); choose one with -c",
                names.join(", ")
            )));
        }
    };
    let Some((name, logs)) = chosen else {
        return Err(not_found(format!(
            "no logs for pod {ns}/{pod} in {}",
            logs_dir.display()
        )));
    };
    let skip = usize::from(previous);
    let Some(path) = logs.iter().rev().nth(skip) else {
        return Err(not_found(format!(
            "container {name} of {ns}/{pod} has no {} log",
            if previous { "previous" } else { "current" }
        )));
    };
    std::fs::read_to_string(path).ctx(|| format!("reading {}", path.display()))
}

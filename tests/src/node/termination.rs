//! Termination messages, as a kubelet does them: each container incarnation gets an
//! empty host file bind-mounted at its `terminationMessagePath` (default
//! `/dev/termination-log`); after the process exits the file is read into
//! `state.terminated.message` / `lastState.terminated.message` (at most 4096 bytes), and
//! with `terminationMessagePolicy: FallbackToLogsOnError` an empty file on a non-zero
//! exit is replaced by the tail of the container's log (at most 80 lines, 2048 bytes).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

/// Kubernetes' default `terminationMessagePath`.
pub const DEFAULT_PATH: &str = "/dev/termination-log";
/// Most bytes of a termination message read from the file (kubelet's limit).
pub const MAX_BYTES: u64 = 4096;
/// Most log lines used by `FallbackToLogsOnError`.
pub const MAX_LOG_LINES: usize = 80;
/// Most log bytes used by `FallbackToLogsOnError`.
pub const MAX_LOG_BYTES: u64 = 2048;

/// Where the container expects its termination message file.
pub fn target(container: &Container) -> PathBuf {
    PathBuf::from(
        container
            .termination_message_path
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(DEFAULT_PATH),
    )
}

/// Creates (or empties) the host file of one container incarnation, writable by any
/// user the container may run as (a kubelet makes it 0666 too).
pub fn create_host_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, b"")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
}

/// For a container in the host's root: makes sure the mount point exists (an empty
/// file; never truncates one that is there). An error means the bind cannot be made.
pub fn ensure_host_mount_point(target: &Path) -> std::io::Result<()> {
    if std::fs::metadata(target).is_ok() {
        return Ok(());
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .map(drop)
}

/// The message of an exited container: the file's content (capped), else with
/// `FallbackToLogsOnError` and a non-zero exit the log's tail; `None` when empty.
pub fn message(
    file: Option<&Path>,
    log: &Path,
    policy: Option<&str>,
    exit_code: i32,
) -> Option<String> {
    let from_file = file
        .and_then(|f| read_head(f, MAX_BYTES))
        .unwrap_or_default();
    if !from_file.is_empty() {
        return Some(from_file);
    }
    if policy == Some("FallbackToLogsOnError") && exit_code != 0 {
        let tail = log_tail(log);
        return (!tail.is_empty()).then_some(tail);
    }
    None
}

fn read_head(path: &Path, max: u64) -> Option<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(max)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last [`MAX_LOG_LINES`] lines of `log`, at most [`MAX_LOG_BYTES`] (the newest).
fn log_tail(log: &Path) -> String {
    let Ok(mut file) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(MAX_LOG_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err()
        || file.take(MAX_LOG_BYTES).read_to_end(&mut bytes).is_err()
    {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let keep = &lines[lines.len().saturating_sub(MAX_LOG_LINES)..];
    keep.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mq-term-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_file_is_the_message_capped_like_kubelet() {
        let d = dir("file");
        let (file, log) = (d.join("termination-log"), d.join("0.log"));
        create_host_file(&file).unwrap();
        std::fs::write(&log, "some log\n").unwrap();
        assert_eq!(message(Some(&file), &log, None, 1), None, "empty file");
        std::fs::write(&file, "StoreDamaged segment=0 offset=1: bad\n").unwrap();
        assert_eq!(
            message(Some(&file), &log, Some("FallbackToLogsOnError"), 1).as_deref(),
            Some("StoreDamaged segment=0 offset=1: bad\n")
        );
        std::fs::write(&file, "x".repeat(10_000)).unwrap();
        assert_eq!(message(Some(&file), &log, None, 0).unwrap().len(), 4096);
        // A new incarnation starts with an empty file.
        create_host_file(&file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fallback_to_logs_only_on_error_and_an_empty_file() {
        let d = dir("logs");
        let (file, log) = (d.join("termination-log"), d.join("0.log"));
        create_host_file(&file).unwrap();
        let lines: Vec<String> = (0..200).map(|i| format!("line {i}")).collect();
        std::fs::write(&log, lines.join("\n") + "\n").unwrap();
        let fallback = Some("FallbackToLogsOnError");
        let tail = message(Some(&file), &log, fallback, 2).expect("log tail");
        assert!(tail.ends_with("line 199"), "{tail}");
        assert!(tail.lines().count() <= 80);
        assert!(tail.len() <= 2048);
        assert!(tail.lines().all(|l| l.starts_with("line ")));
        assert_eq!(message(Some(&file), &log, fallback, 0), None, "exit 0");
        assert_eq!(message(Some(&file), &log, Some("File"), 2), None);
        assert_eq!(message(None, &log, fallback, 2).as_deref(), Some(&*tail));
        // Long lines: the byte cap wins.
        std::fs::write(&log, format!("{}\nlast\n", "y".repeat(5000))).unwrap();
        let tail = message(Some(&file), &log, fallback, 1).unwrap();
        assert!(tail.len() <= 2048 && tail.ends_with("last"), "{tail}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_path_defaults_like_kubernetes() {
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c"})).unwrap();
        assert_eq!(target(&c), PathBuf::from("/dev/termination-log"));
        let c: Container = serde_json::from_value(
            serde_json::json!({"name": "c", "terminationMessagePath": "/tmp/why"}),
        )
        .unwrap();
        assert_eq!(target(&c), PathBuf::from("/tmp/why"));
    }
}

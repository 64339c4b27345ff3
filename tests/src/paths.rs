//! Where the testbed keeps binaries, slots and testbed directories.

use std::path::{Path, PathBuf};

/// The Kubernetes version built by `scripts/install-k8s.sh`.
pub const K8S_VERSION: &str = "v1.20.2";
/// The Helm version unpacked by `scripts/install-helm.sh`.
pub const HELM_VERSION: &str = "v3.18.0";
/// Environment variable that overrides the cache directory (shared with the scripts).
pub const CACHE_ENV: &str = "MQFLEET_CACHE";
/// Environment variable that overrides the CLI's testbed directory.
pub const DIR_ENV: &str = "MQFLEET_TESTBED_DIR";

/// The cache root: `$MQFLEET_CACHE`, else `~/.cache/mqfleet` (same rule as the scripts).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    Path::new(&home).join(".cache/mqfleet")
}

/// Directory holding kube-apiserver, kube-controller-manager and kube-scheduler.
pub fn k8s_bin_dir() -> PathBuf {
    cache_dir().join(format!("k8s-{K8S_VERSION}")).join("bin")
}

/// Directory holding helm and kubectl.
pub fn helm_bin_dir() -> PathBuf {
    cache_dir().join(format!("helm-{HELM_VERSION}")).join("bin")
}

/// Directory of slot claim files (`<k>` for slot k).
pub fn slots_dir() -> PathBuf {
    cache_dir().join("slots")
}

/// Parent of the throw-away testbed directories that library tests use.
pub fn testbeds_dir() -> PathBuf {
    cache_dir().join("testbeds")
}

/// The workspace root (this crate lives in `<workspace>/tests`).
pub fn workspace_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The CLI's default testbed directory, `<workspace>/.testbed` (git-ignored).
pub fn default_cli_dir() -> PathBuf {
    workspace_dir().join(".testbed")
}

/// Finds `name` on `$PATH`, the way a shell would.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// True if `path` is a regular file with an execute bit set.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Environment variable naming the `mq-testbed` binary that runs the process kubelet.
pub const BINARY_ENV: &str = "MQFLEET_TESTBED_BIN";

/// The `mq-testbed` binary: `$MQFLEET_TESTBED_BIN`, this process if it is that binary,
/// else the one beside (or one level above, for `target/debug/deps/` test binaries)
/// this executable, i.e. the binary cargo built with it.
pub fn testbed_binary() -> crate::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|source| crate::Error::Io {
        context: "finding the current executable".into(),
        source,
    })?;
    if exe.file_name().is_some_and(|n| n == "mq-testbed") {
        return Ok(exe);
    }
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("mq-testbed"));
    for candidate in candidates {
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(crate::Error::NoTestbedBinary(
        exe.parent().unwrap_or(&exe).join("mq-testbed"),
    ))
}

//! Makes sure the control-plane binaries (and Helm/kubectl) are in the cache.
//!
//! The scripts are embedded at compile time so a built binary always runs the script it
//! was built with; both are idempotent and flock-protected, so concurrent callers simply
//! wait for one build.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::paths;
use crate::process::run_checked;

const INSTALL_K8S: &str = include_str!("../scripts/install-k8s.sh");
const INSTALL_HELM: &str = include_str!("../scripts/install-helm.sh");
const INSTALL_KUBERNETES_VALIDATE: &str = include_str!("../scripts/install-kubernetes-validate.sh");
/// The kubernetes-validate version `install-kubernetes-validate.sh` installs.
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// Paths of the control-plane programs.
#[derive(Debug, Clone)]
pub struct K8sBinaries {
    /// etcd (from Debian's etcd-server).
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub apiserver: PathBuf,
    /// kube-controller-manager.
    pub controller_manager: PathBuf,
    /// kube-scheduler.
    pub scheduler: PathBuf,
    /// openssl, used for the testbed's certificates.
    pub openssl: PathBuf,
}

/// Paths of the cached client tools.
#[derive(Debug, Clone)]
pub struct HelmBinaries {
    /// helm v3.18.0.
    pub helm: PathBuf,
    /// kubectl v1.33.0.
    pub kubectl: PathBuf,
}

/// Returns the control-plane binaries, running `install-k8s.sh` first if any is missing.
///
/// Blocking: a cold install builds Kubernetes for several minutes.
pub fn ensure_k8s() -> Result<K8sBinaries> {
    if let Some(bins) = find_k8s() {
        return Ok(bins);
    }
    run_script("install-k8s.sh", INSTALL_K8S)?;
    find_k8s().ok_or_else(|| Error::MissingBinary(first_missing_k8s()))
}

/// Returns helm and kubectl, running `install-helm.sh` first if either is missing.
pub fn ensure_helm() -> Result<HelmBinaries> {
    let dir = paths::helm_bin_dir();
    let bins = HelmBinaries {
        helm: dir.join("helm"),
        kubectl: dir.join("kubectl"),
    };
    if !all_executable(&[&bins.helm, &bins.kubectl]) {
        run_script("install-helm.sh", INSTALL_HELM)?;
    }
    for path in [&bins.helm, &bins.kubectl] {
        if !paths::is_executable(path) {
            return Err(Error::MissingBinary(path.clone()));
        }
    }
    Ok(bins)
}

fn find_k8s() -> Option<K8sBinaries> {
    let dir = paths::k8s_bin_dir();
    let bins = K8sBinaries {
        etcd: paths::which("etcd")?,
        openssl: paths::which("openssl")?,
        apiserver: dir.join("kube-apiserver"),
        controller_manager: dir.join("kube-controller-manager"),
        scheduler: dir.join("kube-scheduler"),
    };
    all_executable(&[&bins.apiserver, &bins.controller_manager, &bins.scheduler]).then_some(bins)
}

fn first_missing_k8s() -> PathBuf {
    let dir = paths::k8s_bin_dir();
    let candidates = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ];
    for name in ["etcd", "openssl"] {
        if paths::which(name).is_none() {
            return PathBuf::from(name);
        }
    }
    candidates
        .iter()
        .map(|name| dir.join(name))
        .find(|path| !paths::is_executable(path))
        .unwrap_or(dir)
}

fn all_executable(paths: &[&Path]) -> bool {
    paths.iter().all(|p| paths::is_executable(p))
}

/// Runs an embedded script with bash; its progress goes straight to our stderr because a
/// cold build takes minutes and silence would look like a hang.
fn run_script(name: &str, body: &str) -> Result<()> {
    tracing::info!(script = name, cache = %paths::cache_dir().display(), "installing");
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(body).arg(name);
    cmd.env(paths::CACHE_ENV, paths::cache_dir());
    run_checked(&mut cmd, true).map(|_| ())
}

/// Path of the cached `kubernetes-validate` (installing it first if needed).
pub fn kubernetes_validate_path() -> Result<PathBuf> {
    let bin = paths::cache_dir()
        .join(format!("kubernetes-validate-{KUBERNETES_VALIDATE_VERSION}"))
        .join("bin")
        .join("kubernetes-validate");
    if !paths::is_executable(&bin) {
        run_script(
            "install-kubernetes-validate.sh",
            INSTALL_KUBERNETES_VALIDATE,
        )?;
    }
    if paths::is_executable(&bin) {
        Ok(bin)
    } else {
        Err(Error::MissingBinary(bin))
    }
}

/// Path of the cached kubectl v1.33.0 (installing helm and kubectl first if needed).
pub fn kubectl_path() -> Result<PathBuf> {
    ensure_helm().map(|bins| bins.kubectl)
}

/// Path of the cached helm v3.18.0 (installing helm and kubectl first if needed).
pub fn helm_path() -> Result<PathBuf> {
    ensure_helm().map(|bins| bins.helm)
}

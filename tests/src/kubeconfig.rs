//! The admin kubeconfig of a testbed, and kube clients built from it.

use std::path::Path;

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::certs::write_private;
use crate::error::{Error, IoContext, Result};

/// Name used for the cluster, user and context entries.
pub const CONTEXT: &str = "mq-testbed";

/// Writes a kubeconfig for `server` that trusts `ca_pem` and authenticates with `token`.
///
/// The CA is embedded (not referenced by path) so the file stays usable if copied.
pub fn write(path: &Path, server: &str, ca_pem: &[u8], token: &str) -> Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"}}],
        "current-context": CONTEXT,
    });
    let text = serde_yaml::to_string(&doc).map_err(|source| Error::Yaml {
        path: path.to_path_buf(),
        source,
    })?;
    write_private(path, text.as_bytes())
}

/// Loads a client configuration from the kubeconfig at `path`.
pub async fn load(path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}

/// Reads the CA certificate to embed.
pub fn read_ca(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).ctx(|| format!("reading {}", path.display()))
}

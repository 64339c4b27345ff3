//! The console on a testbed, for the end-to-end suite and `mq-console-bench`: its pods,
//! accounts made with its own CLI (`mq-console account create`), and its Service.

use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};
use serde::Deserialize;

use crate::controlplane::Testbed;
use crate::operator::PLATFORM;

/// The console's Service and Deployment name.
pub const NAME: &str = "mq-console";
/// The console's port.
pub const PORT: u16 = 8080;
/// Replicas `deploy/` runs.
pub const REPLICAS: usize = 2;

/// An account as `mq-console account create` prints it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAccount {
    /// Its user id.
    pub user_id: String,
    /// Its access key.
    pub access_key: String,
    /// Its secret key.
    pub secret_key: String,
}

/// Waits until every console replica is Ready; their `http://<pod IP>:8080` URLs.
pub async fn ready_urls(
    tb: &Testbed,
    client: &Client,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    let urls = tb
        .until(
            client,
            PLATFORM,
            "the console's replicas Ready",
            timeout,
            || {
                let pods = pods.clone();
                async move {
                    let list = pods
                        .list(&ListParams::default().labels("app.kubernetes.io/name=mq-console"))
                        .await
                        .map_err(|e| e.to_string())?;
                    let urls: Vec<String> = list
                        .items
                        .iter()
                        .filter(|p| {
                            crate::wait::is_ready(p) && p.metadata.deletion_timestamp.is_none()
                        })
                        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
                        .map(|ip| format!("http://{ip}:{PORT}"))
                        .collect();
                    if urls.len() == REPLICAS {
                        Ok(Some(urls))
                    } else {
                        Err(format!(
                            "{} of {REPLICAS} console replicas Ready",
                            urls.len()
                        ))
                    }
                }
            },
        )
        .await?;
    Ok(urls)
}

/// `http://<ClusterIP>:8080` of the console's Service (the testbed proxies it on the host).
pub async fn service_url(client: &Client) -> anyhow::Result<String> {
    let svc = Api::<Service>::namespaced(client.clone(), PLATFORM)
        .get(NAME)
        .await
        .context("reading Service mq-console")?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("Service mq-console has no ClusterIP")?;
    Ok(format!("http://{ip}:{PORT}"))
}

/// Runs `mq-console account <args>` against the testbed; its standard output.
pub async fn account_cli(tb: &Testbed, args: &[&str]) -> anyhow::Result<String> {
    let bin = crate::paths::testbed_binary()?
        .parent()
        .context("the testbed binary has a directory")?
        .join("mq-console");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&bin)
            .arg("account")
            .args(args)
            .env("KUBECONFIG", tb.kubeconfig_path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("mq-console account did not finish within 30 s")?
    .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "mq-console account {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Makes an account with `mq-console account create <args>`.
pub async fn create_account(tb: &Testbed, args: &[&str]) -> anyhow::Result<NewAccount> {
    let mut all = vec!["create"];
    all.extend_from_slice(args);
    let out = account_cli(tb, &all).await?;
    serde_json::from_str(&out).with_context(|| format!("account create printed {out:?}"))
}

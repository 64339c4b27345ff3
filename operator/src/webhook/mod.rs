//! The validating admission webhook (admissionregistration/v1), served by every operator
//! replica: the checks need no leader, only the API and the webhook's own watch caches.
//!
//! The operator makes its own CA ([`certs`]), keeps it in a Secret, and writes it into
//! the `ValidatingWebhookConfiguration` installed with it (`deploy/30-webhook.yaml`)
//! whenever that object lacks it (installed, re-created or renewed). The configuration
//! uses `failurePolicy: Ignore`: while no replica answers, resources are still accepted,
//! and the status conditions report what the webhook would have refused.

pub mod certs;
pub mod server;
pub mod validate;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often the certificates are checked for renewal.
const RENEW_CHECK: Duration = Duration::from_secs(6 * 3600);

/// Where and as what the webhook is served.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Address to serve HTTPS on (the pod IP in a cluster).
    pub listen: SocketAddr,
    /// Namespace of the operator, its Service and the certificate Secret.
    pub namespace: String,
    /// The Service the API server calls (the certificate is issued for its DNS names).
    pub service: String,
    /// The `ValidatingWebhookConfiguration` whose `caBundle` the operator fills in.
    pub configuration: String,
    /// The cluster profiles' ConfigMap (in `namespace`): instances must name one of them.
    pub profiles_configmap: String,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificates could not be made or read.
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    /// The certificates were unusable.
    #[error("webhook TLS: {0}")]
    Tls(String),
    /// The port could not be bound.
    #[error("binding the webhook port {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Serves the webhook and keeps its certificate and CA bundle current, forever.
pub async fn run(client: Client, opts: WebhookOptions) -> Result<(), WebhookError> {
    let names = dns_names(&opts.service, &opts.namespace);
    let cert = certs::ensure(&client, &opts.namespace, &names).await?;
    let tls = Arc::new(RwLock::new(
        server::tls_config(&cert).map_err(WebhookError::Tls)?,
    ));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: opts.listen,
            source,
        })?;
    tracing::info!(addr = %opts.listen, service = %opts.service, "serving the admission webhook");
    let lookup = validate::Lookup::start(client.clone(), &opts.namespace, &opts.profiles_configmap);
    tokio::spawn(server::serve(listener, tls.clone(), lookup));
    let ca = Arc::new(RwLock::new(cert.ca_pem.clone()));
    tokio::spawn(renew(
        client.clone(),
        opts.clone(),
        names,
        cert,
        tls,
        ca.clone(),
    ));
    publish_ca(client, &opts.configuration, ca).await;
    Ok(())
}

/// The names the API server may use for the Service (it dials `<svc>.<ns>.svc`).
fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}

/// Renews the certificates before they expire and serves the new ones.
async fn renew(
    client: Client,
    opts: WebhookOptions,
    names: Vec<String>,
    mut current: certs::ServingCert,
    tls: server::SharedTls,
    ca: Arc<RwLock<String>>,
) {
    loop {
        tokio::time::sleep(RENEW_CHECK).await;
        let fresh = match certs::ensure(&client, &opts.namespace, &names).await {
            Ok(fresh) if fresh != current => fresh,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "checking the webhook certificates failed");
                continue;
            }
        };
        match server::tls_config(&fresh) {
            Ok(config) => {
                *tls.write().unwrap_or_else(|p| p.into_inner()) = config;
                *ca.write().unwrap_or_else(|p| p.into_inner()) = fresh.ca_pem.clone();
                current = fresh;
            }
            Err(e) => tracing::warn!(error = %e, "renewed webhook certificate unusable"),
        }
    }
}

/// Watches the webhook configuration and writes the CA into it whenever it differs.
/// A missing configuration means the webhook is not installed; nothing is written.
async fn publish_ca(client: Client, name: &str, ca: Arc<RwLock<String>>) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let config = crate::controller::watch_config().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api.clone(), config)
        .backoff(crate::controller::relist::WatchBackoff::default())
        .applied_objects()
        .boxed();
    // The renewal timer nudges a re-check, since a new CA changes nothing in the watch.
    let mut tick = tokio::time::interval(RENEW_CHECK);
    loop {
        let current = tokio::select! {
            event = events.next() => match event {
                Some(Ok(obj)) => Some(obj),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watching the webhook configuration");
                    None
                }
                None => return,
            },
            _ = tick.tick() => api.get_opt(name).await.ok().flatten(),
        };
        let Some(mut obj) = current else { continue };
        let pem = ca.read().map(|c| c.clone()).unwrap_or_default();
        if !fill_ca_bundle(&mut obj, pem.as_bytes()) {
            continue;
        }
        match api.replace(name, &PostParams::default(), &obj).await {
            Ok(_) => tracing::info!(configuration = name, "wrote the webhook CA bundle"),
            // Another replica wrote it first; the watch shows the result.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                tracing::warn!(configuration = name, error = %e, "writing the CA bundle failed")
            }
        }
    }
}

/// Sets every webhook's `caBundle` to `ca`; whether anything changed.
fn fill_ca_bundle(obj: &mut ValidatingWebhookConfiguration, ca: &[u8]) -> bool {
    let mut changed = false;
    for hook in obj.webhooks.iter_mut().flatten() {
        if hook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            != Some(ca)
        {
            hook.client_config.ca_bundle = Some(ByteString(ca.to_vec()));
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_bundle_is_written_only_when_it_differs() {
        let mut obj: ValidatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "mq-operator"},
            "webhooks": [{"name": "validate.mqfleet.io", "admissionReviewVersions": ["v1"],
                "sideEffects": "None", "clientConfig": {"service": {"name": "s", "namespace": "n"}}}],
        }))
        .unwrap();
        assert!(fill_ca_bundle(&mut obj, b"CA"));
        assert!(!fill_ca_bundle(&mut obj, b"CA"));
        assert!(fill_ca_bundle(&mut obj, b"NEW"));
    }

    #[test]
    fn the_certificate_names_what_the_api_server_dials() {
        let names = dns_names("mq-operator-webhook", "mqfleet-system");
        assert!(names.contains(&"mq-operator-webhook.mqfleet-system.svc".to_owned()));
    }
}

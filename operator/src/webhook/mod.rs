//! The validating admission webhook (admissionregistration/v1), served by every operator
//! replica: the checks need no leader, only the API and the webhook's own watch caches.
//!
//! The operator makes its own CA ([`certs`]) and keeps it in a Secret, the single source
//! of truth: every replica serves the certificate the Secret holds and writes the Secret's
//! CA bundle into the `ValidatingWebhookConfiguration` installed with it
//! (`charts/mqfleet/templates/webhook.yaml`) whenever that object differs (installed, re-created, or
//! the bundle changed), re-reading the Secret first so no replica writes a stale bundle
//! over a newer one. The configuration
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

/// How often the Secret is re-read (renewal due, or another replica renewed).
const RENEW_CHECK: Duration = Duration::from_secs(3600);

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
    keep_current(client, &opts, &names, cert, tls).await;
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

/// Keeps the served certificate and the configuration's `caBundle` equal to the Secret:
/// on every change of the configuration whose bundle is not the one served, and every
/// [`RENEW_CHECK`], the Secret is re-read (renewed there when due), its bundle written
/// into the configuration, and only then its certificate served (so after a CA change the
/// API server already trusts the new CA when this replica presents it).
async fn keep_current(
    client: Client,
    opts: &WebhookOptions,
    names: &[String],
    mut served: certs::ServingCert,
    tls: server::SharedTls,
) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let name = opts.configuration.as_str();
    let config = crate::watch::watch_config().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api.clone(), config)
        .backoff(crate::watch::relist::WatchBackoff::default())
        .applied_objects()
        .boxed();
    let mut tick = tokio::time::interval(RENEW_CHECK);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(obj)) if bundle_differs(&obj, served.bundle_pem().as_bytes()) => {}
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watching the webhook configuration");
                    continue;
                }
                None => return,
            },
            _ = tick.tick() => {}
        }
        // The Secret, not this replica's memory, decides: another replica may have
        // renewed since this one last read it.
        let latest = match certs::ensure(&client, &opts.namespace, names).await {
            Ok(latest) => latest,
            Err(e) => {
                tracing::warn!(error = %e, "reading the webhook certificates failed");
                continue;
            }
        };
        publish_bundle(&api, name, latest.bundle_pem().as_bytes()).await;
        if latest != served {
            match server::tls_config(&latest) {
                Ok(config) => {
                    *tls.write().unwrap_or_else(|p| p.into_inner()) = config;
                    tracing::info!(not_after = %latest.not_after, "serving the webhook certificate of the Secret");
                    served = latest;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the webhook certificate in the Secret is unusable")
                }
            }
        }
    }
}

/// Writes `bundle` into the configuration `name` if it differs, against the version just
/// read; a conflict means another replica wrote, and the watch brings its result.
/// A missing configuration means the webhook is not installed; nothing is written.
async fn publish_bundle(api: &Api<ValidatingWebhookConfiguration>, name: &str, bundle: &[u8]) {
    let mut obj = match api.get_opt(name).await {
        Ok(Some(obj)) => obj,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(configuration = name, error = %e, "reading the webhook configuration failed");
            return;
        }
    };
    if !fill_ca_bundle(&mut obj, bundle) {
        return;
    }
    match api.replace(name, &PostParams::default(), &obj).await {
        Ok(_) => tracing::info!(configuration = name, "wrote the webhook CA bundle"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!(
                configuration = name,
                "the webhook configuration changed meanwhile"
            )
        }
        Err(e) => {
            tracing::warn!(configuration = name, error = %e, "writing the CA bundle failed")
        }
    }
}

/// Whether any webhook of `obj` lacks exactly `bundle`.
fn bundle_differs(obj: &ValidatingWebhookConfiguration, bundle: &[u8]) -> bool {
    obj.webhooks.iter().flatten().any(|hook| {
        hook.client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.as_slice())
            != Some(bundle)
    })
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
        assert!(bundle_differs(&obj, b"CA"));
        assert!(fill_ca_bundle(&mut obj, b"CA"));
        assert!(!bundle_differs(&obj, b"CA"));
        assert!(!fill_ca_bundle(&mut obj, b"CA"));
        assert!(fill_ca_bundle(&mut obj, b"NEW"));
    }

    #[test]
    fn the_certificate_names_what_the_api_server_dials() {
        let names = dns_names("mq-operator-webhook", "mqfleet-system");
        assert!(names.contains(&"mq-operator-webhook.mqfleet-system.svc".to_owned()));
    }
}

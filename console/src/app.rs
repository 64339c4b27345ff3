//! The `serve` process: the Kubernetes client, the caches, the task key, the HTTP server
//! and a graceful stop on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::context::{Console, Settings};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::sign::ReplayCache;
use crate::state::Caches;
use crate::task::TaskKey;

/// The Secret holding the task key when it is not given (the operator makes it).
pub use mq_operator::domain::keys::CONSOLE_TASK_KEY_SECRET as TASK_KEY_SECRET;

/// What `serve` needs.
pub struct ServeOptions {
    /// Where to listen (`$(POD_IP):8080` in a pod).
    pub listen: String,
    /// Settings of the handlers.
    pub settings: Settings,
    /// Name of the cluster profiles ConfigMap.
    pub profiles_configmap: String,
    /// Requests the replay cache holds.
    pub replay_capacity: usize,
    /// The task key; empty: read Secret [`TASK_KEY_SECRET`].
    pub task_key: String,
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(options: ServeOptions) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    let settings = options.settings;
    let caches = Caches::start(&client, &settings.platform, &options.profiles_configmap);
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let cx = Arc::new(Console {
        client,
        caches,
        runtime: Runtime::new(settings.call_timeout),
        settings,
        replay: ReplayCache::new(options.replay_capacity),
        tasks: TaskKey::new(options.task_key.trim().as_bytes().to_vec()),
        metrics: Metrics::default(),
    });
    if !cx.tasks.is_set() {
        tokio::spawn(load_task_key(cx.clone()));
    }
    tracing::info!(listen = %options.listen, region = %cx.settings.region, "serving /json");
    axum::serve(listener, crate::server::router(cx))
        .with_graceful_shutdown(stopped())
        .await
        .context("serving HTTP")
}

/// Reads the task key from its Secret until it is there (the operator makes it at
/// start); meanwhile everything but paged message queries is served.
async fn load_task_key(cx: Arc<Console>) {
    let mut delay = Duration::from_millis(500);
    loop {
        match read_task_key(&cx.client, &cx.settings.platform).await {
            Ok(key) => {
                cx.tasks.set(key);
                tracing::info!("read the task key");
                return;
            }
            Err(e) => tracing::info!(error = %format!("{e:#}"), "no task key yet"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// The task key from its Secret (key `key`).
async fn read_task_key(client: &Client, platform: &str) -> anyhow::Result<Vec<u8>> {
    let secret = Api::<Secret>::namespaced(client.clone(), platform)
        .get_opt(TASK_KEY_SECRET)
        .await
        .with_context(|| format!("reading Secret {platform}/{TASK_KEY_SECRET}"))?
        .with_context(|| {
            format!(
                "Secret {platform}/{TASK_KEY_SECRET} does not exist yet (the operator makes it)"
            )
        })?;
    let key = secret
        .data
        .and_then(|d| d.get("key").map(|v| v.0.clone()))
        .filter(|k| k.len() >= 16)
        .with_context(|| {
            format!("Secret {platform}/{TASK_KEY_SECRET} has no key of 16 bytes or more")
        })?;
    Ok(key)
}

/// Resolves on SIGTERM or SIGINT.
async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stopping: finishing the requests under way");
}

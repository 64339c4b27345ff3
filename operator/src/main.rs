//! `mq-operator`: the mqfleet operator binary.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The mqfleet operator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log output format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "MQ_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Log output format.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (kubeconfig from $KUBECONFIG or ~/.kube/config, else in-cluster).
    Run {
        /// Namespace of every instance's workloads.
        #[arg(long, env = "MQ_PLATFORM_NAMESPACE", default_value = "mqfleet-system")]
        namespace: String,
        /// ConfigMap (in the platform namespace, key `profiles.yaml`) holding the cluster
        /// profiles instances name in `spec.cluster`: images, placement and defaults.
        #[arg(
            long,
            env = "MQ_PROFILES_CONFIGMAP",
            default_value = mq_operator::domain::profiles::DEFAULT_CONFIGMAP
        )]
        profiles_configmap: String,
        /// Full resync period in seconds (drift correction).
        #[arg(long, env = "MQ_RESYNC_SECS", default_value_t = 600)]
        resync_secs: u64,
        /// Hold the `mq-operator` Lease while reconciling, so several replicas are safe.
        #[arg(long, env = "MQ_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
        leader_elect: bool,
        /// This replica's identity in the Lease [default: $POD_NAME, else host and pid].
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Bound, in seconds, on draining brokers before a scale-down removes them.
        #[arg(long, env = "MQ_DRAIN_TIMEOUT_SECS", default_value_t = 600)]
        drain_timeout_secs: u64,
        /// Serve /healthz, /readyz, /livez and /metrics here (e.g. `$(POD_IP):8080`).
        #[arg(long, env = "MQ_HTTP_LISTEN")]
        http_listen: Option<std::net::SocketAddr>,
        /// Serve the validating admission webhook over HTTPS here (e.g. `$(POD_IP):9443`).
        #[arg(long, env = "MQ_WEBHOOK_LISTEN")]
        webhook_listen: Option<std::net::SocketAddr>,
        /// The Service the API server calls the webhook through (names the certificate).
        #[arg(
            long,
            env = "MQ_WEBHOOK_SERVICE",
            default_value = "mq-operator-webhook"
        )]
        webhook_service: String,
        /// The ValidatingWebhookConfiguration to write the webhook's CA into.
        #[arg(long, env = "MQ_WEBHOOK_CONFIGURATION", default_value = "mq-operator")]
        webhook_configuration: String,
        /// The leader fails /livez when a kind has reconciles in flight and none finished
        /// for this many seconds.
        #[arg(long, env = "MQ_STALL_SECS", default_value_t = 300)]
        stall_secs: u64,
    },
    /// Print the CRDs as YAML, or write one file per CRD into --out-dir.
    Crds {
        /// Directory to write `<crd-name>.yaml` files into (stale generated files are removed).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Run {
            namespace,
            profiles_configmap,
            resync_secs,
            leader_elect,
            identity,
            http_listen,
            drain_timeout_secs,
            webhook_listen,
            webhook_service,
            webhook_configuration,
            stall_secs,
        } => {
            let identity = identity.unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
            let webhook = webhook_listen.map(|listen| mq_operator::webhook::WebhookOptions {
                listen,
                namespace: namespace.clone(),
                service: webhook_service,
                configuration: webhook_configuration,
                profiles_configmap: profiles_configmap.clone(),
            });
            run(mq_operator::app::RunOptions {
                webhook,
                settings: mq_operator::controller::Settings {
                    namespace,
                    profiles_configmap,
                },
                resync: std::time::Duration::from_secs(resync_secs),
                leader_elect,
                identity,
                http_listen,
                drain_timeout: std::time::Duration::from_secs(drain_timeout_secs),
                stall_after: std::time::Duration::from_secs(stall_secs),
            })?;
        }
        Command::Crds { out_dir: None } => print!("{}", mq_operator::crd::crds_yaml()?),
        Command::Crds { out_dir: Some(dir) } => write_crds(&dir)?,
    }
    Ok(())
}

/// Writes one file per CRD, so `git diff crds/` shows exactly what a type change did, and
/// removes YAML files no type generates any more.
fn write_crds(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = mq_operator::crd::crd_files()?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".yaml") && !files.iter().any(|(f, _)| f == name) {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    for (name, yaml) in files {
        let path = dir.join(&name);
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), "wrote CRD");
    }
    Ok(())
}

#[tokio::main]
async fn run(opts: mq_operator::app::RunOptions) -> anyhow::Result<()> {
    // Name rustls' provider: builds that also link aws-lc-rs (test dependencies) would
    // otherwise panic on the first TLS connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    mq_operator::app::run(client, opts).await?;
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

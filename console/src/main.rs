//! `mq-console`: `serve` the `/json/*` API, manage `account`s, or `call` the API signed.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use mq_console::account_cli::{self, NewAccount};
use mq_console::app::{self, ServeOptions};
use mq_console::client::SignedClient;
use mq_console::context::Settings;

#[derive(Parser)]
#[command(
    name = "mq-console",
    version,
    about = "The mqfleet console: the /json/* management API"
)]
struct Cli {
    /// Log format.
    #[arg(long, env = "MQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HttpStatus {
    /// The HTTP status equals the envelope's `code`.
    Code,
    /// Always 200 (for scripts that treat any other status as a transport failure).
    #[value(name = "always-200")]
    Always200,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API.
    Serve(ServeArgs),
    /// Manage accounts (Secrets of the platform namespace).
    Account {
        /// The platform namespace.
        #[arg(long, env = "MQ_PLATFORM_NAMESPACE", default_value = "mqfleet-system")]
        platform_namespace: String,
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Call the API signed with MQ_ACCESS_KEY/MQ_SECRET_KEY at MQ_CONSOLE_URL; prints the envelope.
    Call {
        /// The operation, e.g. /json/instance/list.
        path: String,
        /// Parameters as name=value.
        params: Vec<String>,
        #[arg(long, env = "MQ_CONSOLE_URL")]
        url: String,
        #[arg(long, env = "MQ_ACCESS_KEY", hide_env_values = true)]
        access_key: String,
        #[arg(long, env = "MQ_SECRET_KEY", hide_env_values = true)]
        secret_key: String,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Make an account; prints {"userId","accessKey","secretKey"} as one JSON line.
    Create {
        /// The tenant namespace (a sub-account's is its parent's).
        #[arg(long)]
        namespace: Option<String>,
        /// Make a sub-account of this tenant.
        #[arg(long)]
        parent_user_id: Option<String>,
        /// The sub-account may create, change and delete instances.
        #[arg(long)]
        allow_instance_write: bool,
        /// The sub-account may create, change and delete topics.
        #[arg(long)]
        allow_topic_write: bool,
    },
    /// One JSON line per account (no secret keys).
    List,
    /// A new key pair for the account (the old stops working).
    Rotate {
        #[arg(long)]
        user_id: String,
    },
    /// Delete the account.
    Delete {
        #[arg(long)]
        user_id: String,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (`$(POD_IP):8080` in a pod).
    #[arg(long, env = "MQ_CONSOLE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The platform namespace (accounts, profiles, console keys).
    #[arg(long, env = "MQ_PLATFORM_NAMESPACE", default_value = "mqfleet-system")]
    platform_namespace: String,
    /// The region served.
    #[arg(long, env = "MQ_REGION", default_value = "mq-private")]
    region: String,
    /// How far `__preventCache` may be from the server's clock, either way.
    #[arg(long, env = "MQ_PREVENT_CACHE_WINDOW_SECS", default_value_t = 900)]
    prevent_cache_window_secs: u64,
    /// HTTP status of answers: the envelope's code, or always 200.
    #[arg(long, env = "MQ_HTTP_STATUS", value_enum, default_value_t = HttpStatus::Code)]
    http_status: HttpStatus,
    /// Requests the replay cache holds (beyond that, new requests get 503 until entries expire).
    #[arg(long, env = "MQ_REPLAY_CAPACITY", default_value_t = 1_000_000)]
    replay_capacity: usize,
    /// Bound on each broker or name-server call.
    #[arg(long, env = "MQ_CALL_TIMEOUT_MS", default_value_t = 5000)]
    call_timeout_ms: u64,
    /// Bound on a write's wait for this replica's cache.
    #[arg(long, env = "MQ_WRITE_WAIT_MS", default_value_t = 5000)]
    write_wait_ms: u64,
    /// Bound on `tunnelSwitch`'s wait until the operator reports the new endpoint.
    #[arg(long, env = "MQ_EXPOSURE_WAIT_MS", default_value_t = 30000)]
    exposure_wait_ms: u64,
    /// The cluster profiles ConfigMap (platform namespace).
    #[arg(
        long,
        env = "MQ_PROFILES_CONFIGMAP",
        default_value = "mqfleet-cluster-profiles"
    )]
    profiles_configmap: String,
    /// Key of the paged-query task ids (every replica the same); empty: Secret mq-console-task-key.
    #[arg(
        long,
        env = "MQ_CONSOLE_TASK_KEY",
        default_value = "",
        hide_env_values = true
    )]
    task_key: String,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // kube's TLS needs one process-wide crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve(a) => {
            let settings = Settings {
                region: a.region,
                platform: a.platform_namespace,
                window_ms: i64::try_from(a.prevent_cache_window_secs.saturating_mul(1000))
                    .unwrap_or(i64::MAX),
                always_200: a.http_status == HttpStatus::Always200,
                write_wait: Duration::from_millis(a.write_wait_ms),
                call_timeout: Duration::from_millis(a.call_timeout_ms),
                exposure_wait: Duration::from_millis(a.exposure_wait_ms),
            };
            app::run(ServeOptions {
                listen: a.listen,
                settings,
                profiles_configmap: a.profiles_configmap,
                replay_capacity: a.replay_capacity,
                task_key: a.task_key,
            })
            .await
        }
        Command::Account {
            platform_namespace: platform,
            command,
        } => {
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes configuration")?;
            let out = match command {
                AccountCommand::Create {
                    namespace,
                    parent_user_id,
                    allow_instance_write,
                    allow_topic_write,
                } => {
                    account_cli::create(
                        client,
                        &platform,
                        NewAccount {
                            namespace,
                            parent_user_id,
                            allow_instance_write,
                            allow_topic_write,
                        },
                    )
                    .await?
                }
                AccountCommand::List => account_cli::list(client, &platform).await?,
                AccountCommand::Rotate { user_id } => {
                    account_cli::rotate(client, &platform, &user_id).await?
                }
                AccountCommand::Delete { user_id } => {
                    account_cli::delete(client, &platform, &user_id).await?
                }
            };
            println!("{out}");
            Ok(())
        }
        Command::Call {
            path,
            params,
            url,
            access_key,
            secret_key,
        } => {
            let pairs: Vec<(&str, &str)> = params
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("{kv:?} is not name=value"))
                })
                .collect::<anyhow::Result<_>>()?;
            let client = SignedClient::new(&url, &access_key, &secret_key)?;
            let (_, envelope) = client.post(&path, &pairs).await?;
            println!("{}", serde_json::to_string_pretty(&envelope)?);
            let ok = envelope
                .get("success")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if ok { Ok(()) } else { std::process::exit(1) }
        }
    }
}

//! `mq-testbed`: start, inspect and stop a local Kubernetes control plane for humans
//! (`make up`), and fetch the tools it needs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use mq_testbed::{Lifetime, Options, State, Testbed, apply_crds, paths, status, stop_dir};

/// Start, inspect and stop mqfleet's local Kubernetes control plane (v1.20.2 on loopback).
#[derive(Parser, Debug)]
#[command(name = "mq-testbed", version)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "MQFLEET_LOG_FORMAT", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Json,
    Text,
}

/// Where the testbed lives.
#[derive(Args, Debug)]
struct DirArg {
    /// Testbed directory (state.json, kubeconfig, logs, etcd data).
    #[arg(long, env = paths::DIR_ENV, default_value_os_t = paths::default_cli_dir())]
    dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a detached testbed (or report the healthy one already running there).
    Up {
        #[command(flatten)]
        dir: DirArg,
        /// Apply every CRD YAML in this directory and wait until each is Established
        /// (if that fails, the testbed keeps running; fix the CRD and run `up` again).
        #[arg(long)]
        crds: Option<PathBuf>,
        /// Bound, in seconds, on each readiness wait.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// Nodes of the process kubelet (0: control plane only).
        #[arg(long, default_value_t = mq_testbed::controlplane::DEFAULT_NODES)]
        nodes: usize,
        /// Then server-side-apply every manifest in this directory (after the CRDs), e.g.
        /// the operator's (`deploy/`).
        #[arg(long)]
        manifests: Option<PathBuf>,
    },
    /// Print a container's log (`kubectl logs` needs a kubelet API the process kubelet
    /// does not serve).
    Logs {
        #[command(flatten)]
        dir: DirArg,
        /// The Pod.
        pod: String,
        /// Its namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The container (needed when the Pod has several).
        #[arg(short, long)]
        container: Option<String>,
        /// The log of the previous run (before the last restart).
        #[arg(short, long)]
        previous: bool,
    },
    /// Run the process kubelet of a testbed (started by `up` and by tests; not for humans).
    #[command(hide = true)]
    Node {
        #[command(flatten)]
        dir: DirArg,
        /// How many Nodes to register.
        #[arg(long, default_value_t = mq_testbed::controlplane::DEFAULT_NODES)]
        nodes: usize,
        /// Where `mqfleet/<binary>:dev` images are found (other images come from the
        /// testbed's image store, see `image load`).
        #[arg(long)]
        bin_dir: PathBuf,
    },
    /// Stop exactly what `up` started in the directory (exit 0 if nothing runs).
    Down {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Show each component's pid, liveness and port, and the apiserver's readyz.
    /// Exits 0 when healthy, 1 otherwise.
    Status {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Print the kubeconfig path.
    Kubeconfig {
        #[command(flatten)]
        dir: DirArg,
    },
    /// Make sure the control-plane binaries, helm and kubectl are cached; print paths.
    Tools,
    /// The testbed's local image store (what its process kubelet runs besides
    /// `mqfleet/<binary>:dev`, the workspace build).
    Image {
        #[command(subcommand)]
        action: ImageCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Load an OCI image layout into the store, like `kind load` (the testbed may be up
    /// or not; loading the same image again changes nothing).
    Load {
        #[command(flatten)]
        dir: DirArg,
        /// `<oci-layout-dir>[:tag]`, e.g. `target/images/mq-broker:0.1.0` (`make images`
        /// writes them); without a tag, every tagged image of the layout.
        layout: String,
        /// The repository a bare tag belongs to (default: `mqfleet/<the image's title
        /// label>`), e.g. `registry.local:5000/mqfleet/mq-broker`.
        #[arg(long)]
        repository: Option<String>,
    },
    /// List the references the store answers to, with their manifest digests.
    Ls {
        #[command(flatten)]
        dir: DirArg,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The node agent's mount namespace must be entered while the process has one thread,
    // i.e. before the runtime starts its workers (see `node::mounts`).
    if matches!(cli.command, Command::Node { .. })
        && let Err(e) = mq_testbed::node::mounts::enter_private_namespace()
    {
        eprintln!("error: the node agent needs a mount namespace of its own: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    // kube's request layer logs every refused readiness probe at ERROR; the outcome
    // reaches the user through our own errors, so it is muted by default.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up {
            dir,
            crds,
            timeout,
            nodes,
            manifests,
        } => {
            let apply = Apply {
                crds: crds.as_deref(),
                manifests: manifests.as_deref(),
            };
            up(&dir.dir, apply, Duration::from_secs(timeout), nodes).await
        }
        Command::Logs {
            dir,
            pod,
            namespace,
            container,
            previous,
        } => {
            let logs = dir.dir.join("logs").join("pods");
            let text =
                mq_testbed::logs::read(&logs, &namespace, &pod, container.as_deref(), previous)?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Node {
            dir,
            nodes,
            bin_dir,
        } => node(&dir.dir, nodes, bin_dir).await,
        Command::Down { dir } => down(&dir.dir),
        Command::Status { dir } => show_status(&dir.dir).await,
        Command::Kubeconfig { dir } => kubeconfig(&dir.dir),
        Command::Tools => tools(),
        Command::Image { action } => image(action),
    }
}

fn image(action: ImageCommand) -> anyhow::Result<ExitCode> {
    match action {
        ImageCommand::Load {
            dir,
            layout,
            repository,
        } => {
            let loaded = mq_testbed::images::load(&dir.dir, &layout, repository.as_deref())?;
            for l in loaded {
                let what = if l.changed { "loaded" } else { "unchanged" };
                println!("{what} {} ({})", l.reference, l.digest);
            }
        }
        ImageCommand::Ls { dir } => {
            let store = mq_testbed::images::store::Store::new(&dir.dir);
            for (reference, digest) in store.refs()? {
                println!("{reference}\t{digest}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn node(dir: &Path, nodes: usize, bin_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let Some(state) = State::load(dir)? else {
        bail!("no testbed in {}", dir.display());
    };
    let config = mq_testbed::node::NodeConfig {
        dir: dir.to_path_buf(),
        kubeconfig: state.kubeconfig.clone(),
        slot: state.slot,
        nodes,
        bin_dir,
    };
    mq_testbed::node::run(config).await?;
    Ok(ExitCode::SUCCESS)
}

/// What `up` applies once the testbed runs.
#[derive(Clone, Copy)]
struct Apply<'a> {
    crds: Option<&'a Path>,
    manifests: Option<&'a Path>,
}

async fn up(
    dir: &Path,
    apply: Apply<'_>,
    timeout: Duration,
    nodes: usize,
) -> anyhow::Result<ExitCode> {
    let began = Instant::now();
    if let Some(current) = status(dir).await? {
        if current.healthy() {
            println!("a healthy testbed is already running in {}", dir.display());
            apply_all(&current.state, apply).await?;
            print_usage(&current.state);
            print_console(&current.state).await;
            return Ok(ExitCode::SUCCESS);
        }
        tracing::info!(dir = %dir.display(), "clearing a stopped or broken testbed first");
        stop_dir(dir)?;
    }
    let opts = Options {
        dir: Some(dir.to_path_buf()),
        keep_dir: false,
        lifetime: Lifetime::Detached,
        ready_timeout: timeout,
        extra_apiserver_args: Vec::new(),
        nodes,
        bin_dir: None,
    };
    // Dropping an unfinished start stops whatever it had started.
    let testbed = tokio::select! {
        started = Testbed::start(opts) => started.context("starting the testbed")?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; stopped what had started"),
    };
    let state = testbed.detach();
    println!(
        "testbed up in {:.1} s (slot {}, apiserver https://127.0.0.1:{}, services {})",
        began.elapsed().as_secs_f64(),
        state.slot,
        state.ports.apiserver,
        state.service_cidr
    );
    apply_all(&state, apply).await?;
    print_usage(&state);
    print_console(&state).await;
    Ok(ExitCode::SUCCESS)
}

/// Applies CRDs, then manifests; on failure the testbed keeps running so a fixed file
/// can be re-applied with another `up`.
async fn apply_all(state: &State, apply: Apply<'_>) -> anyhow::Result<()> {
    let config = mq_testbed::kubeconfig::load(&state.kubeconfig).await?;
    let client = mq_testbed::kubeclient::client(config)?;
    apply_crds_from(&client, apply.crds).await?;
    let Some(dir) = apply.manifests else {
        return Ok(());
    };
    let applied = mq_testbed::apply_manifests(&client, dir)
        .await
        .with_context(|| format!("applying the manifests in {}", dir.display()))?;
    println!(
        "applied {} object(s) from {}: {}",
        applied.len(),
        dir.display(),
        applied.join(", ")
    );
    Ok(())
}

async fn apply_crds_from(client: &kube::Client, crds: Option<&Path>) -> anyhow::Result<()> {
    let Some(crds) = crds else {
        return Ok(());
    };
    let names = apply_crds(client, crds)
        .await
        .with_context(|| format!("applying the CRDs in {}", crds.display()))?;
    println!(
        "applied and established {} CRD(s): {}",
        names.len(),
        names.join(", ")
    );
    Ok(())
}

/// The console's export line, when `deploy/` installed it (Service `mq-console`).
async fn print_console(state: &State) {
    use k8s_openapi::api::core::v1::Service;
    let Ok(config) = mq_testbed::kubeconfig::load(&state.kubeconfig).await else {
        return;
    };
    let Ok(client) = mq_testbed::kubeclient::client(config) else {
        return;
    };
    let services: kube::Api<Service> =
        kube::Api::namespaced(client, mq_testbed::operator::PLATFORM);
    let ip = services
        .get_opt("mq-console")
        .await
        .ok()
        .flatten()
        .and_then(|s| s.spec?.cluster_ip);
    if let Some(ip) = ip {
        println!("export MQ_CONSOLE_URL=http://{ip}:8080");
        println!(
            "console accounts: target/debug/mq-console account create --namespace <ns>; then export MQ_ACCESS_KEY/MQ_SECRET_KEY and call e.g. target/debug/mq-console call /json/instance/list"
        );
    }
}

fn print_usage(state: &State) {
    let kubeconfig = state.kubeconfig.display();
    let kubectl = paths::helm_bin_dir().join("kubectl");
    println!("kubeconfig: {kubeconfig}");
    println!("export KUBECONFIG={kubeconfig}");
    println!(
        "try: kubectl get mqfleet -A   (kubectl {}: {})",
        if kubectl.exists() {
            "is at"
        } else {
            "comes with `mq-testbed tools`"
        },
        kubectl.display()
    );
}

fn down(dir: &Path) -> anyhow::Result<ExitCode> {
    let was_running = stop_dir(dir)?;
    if was_running {
        println!("stopped the testbed in {}", dir.display());
    } else {
        println!("no testbed running in {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn show_status(dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(current) = status(dir).await? else {
        println!("no testbed in {}", dir.display());
        return Ok(ExitCode::FAILURE);
    };
    let state = &current.state;
    println!(
        "testbed in {} (slot {}, services {})",
        dir.display(),
        state.slot,
        state.service_cidr
    );
    for c in &current.components {
        let port = c.port.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let alive = if c.alive { "alive" } else { "dead" };
        println!("  {:<24} pid {:<8} {:<6} port {port}", c.name, c.pid, alive);
    }
    match &current.readyz {
        Ok(()) => println!("  apiserver readyz: ok"),
        Err(why) => println!("  apiserver readyz: {why}"),
    }
    Ok(if current.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn kubeconfig(dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(state) = State::load(dir)? else {
        bail!("no testbed in {} (run `mq-testbed up`)", dir.display());
    };
    println!("{}", state.kubeconfig.display());
    Ok(ExitCode::SUCCESS)
}

fn tools() -> anyhow::Result<ExitCode> {
    let k8s = mq_testbed::ensure_k8s()?;
    let helm = mq_testbed::ensure_helm()?;
    for (name, path) in [
        ("etcd", &k8s.etcd),
        ("kube-apiserver", &k8s.apiserver),
        ("kube-controller-manager", &k8s.controller_manager),
        ("kube-scheduler", &k8s.scheduler),
        ("openssl", &k8s.openssl),
        ("helm", &helm.helm),
        ("kubectl", &helm.kubectl),
    ] {
        println!("{name:<24} {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

//! The library's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while preparing, starting, probing or stopping a testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or process operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, including the path involved.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command (openssl, an install script) failed.
    #[error("command `{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, for the reader to re-run.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// A required program is still missing after the install script ran.
    #[error("{0} is missing after the install script ran")]
    MissingBinary(PathBuf),
    /// The `mq-testbed` binary that runs the process kubelet is not built.
    #[error("{0} is not built (run `cargo build -p mq-testbed`, or set MQFLEET_TESTBED_BIN)")]
    NoTestbedBinary(PathBuf),
    /// Every slot is held by a live testbed.
    #[error(
        "all {count} testbed slots under {dir} are in use; run `mq-testbed down` or stop other test runs"
    )]
    NoFreeSlot {
        /// How many slots exist.
        count: u8,
        /// The slot directory.
        dir: PathBuf,
    },
    /// The directory already hosts a running testbed.
    #[error("a testbed is already running in {0}")]
    AlreadyRunning(PathBuf),
    /// A component exited while the testbed was starting.
    #[error("{component} exited during startup ({status})\n--- last lines of {} ---\n{tail}", log.display())]
    Exited {
        /// The component's name.
        component: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A component did not become ready in time.
    #[error("{component} not ready after {timeout:?} (last probe: {last})\n--- last lines of {} ---\n{tail}", log.display())]
    NotReady {
        /// The component's name.
        component: String,
        /// The bound that was exceeded.
        timeout: Duration,
        /// The outcome of the last probe.
        last: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A bounded wait that is not about one component's log timed out.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The bound that was exceeded.
        timeout: Duration,
    },
    /// A wait on cluster objects timed out; carries what the cluster looked like.
    #[error("timed out after {timeout:?} waiting for {what} (last: {last})\n{dump}")]
    Diagnosed {
        /// What was awaited.
        what: String,
        /// The bound that was exceeded.
        timeout: Duration,
        /// The last reason the check gave.
        last: String,
        /// Pods, events and container logs of the namespace.
        dump: String,
    },
    /// A JSON file (state, slot claim) could not be read or written.
    #[error("{}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A YAML file (kubeconfig, CRD) could not be parsed or produced.
    #[error("{}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A YAML document is not a CustomResourceDefinition we can apply.
    #[error("{}: {reason}", path.display())]
    InvalidCrd {
        /// The file.
        path: PathBuf,
        /// Why the document was rejected.
        reason: String,
    },
    /// The kubeconfig could not be turned into a client configuration.
    #[error("invalid kubeconfig")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A Kubernetes API call failed.
    #[error("kubernetes API request failed")]
    Kube(#[from] kube::Error),
    /// Watching for a condition failed.
    #[error("waiting for {what}")]
    Wait {
        /// What was awaited.
        what: String,
        /// The underlying error.
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// Something a cluster object should hold is not there (named with its place).
    #[error("{0} is missing")]
    Missing(String),
    /// The permanent thread that spawns attached processes is gone.
    #[error("the process spawner thread is gone")]
    SpawnerGone,
    /// The per-binary shared testbed failed to start (the first error, repeated).
    #[error("the shared testbed failed to start: {0}")]
    Shared(String),
}

/// `error` and its causes, joined with `: ` (Display shows only the outermost context).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a human context to `std::io::Error`s.
pub(crate) trait IoContext<T> {
    /// Wraps the error with `context()` (called only on failure).
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context().into(),
            source,
        })
    }
}

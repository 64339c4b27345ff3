//! Container images for the process kubelet: OCI image layouts (as `make images` writes
//! them), the image references Kubernetes users write, and the testbed's local image
//! store that `mq-testbed image load` fills (the way `kind load` does for kind).

pub mod build;
pub mod layout;
pub mod reference;
pub mod runconfig;
pub mod store;

use std::path::{Path, PathBuf};

/// What can go wrong reading, building, loading or resolving images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file of the layout or the store is not what the OCI spec says.
    #[error("{0}")]
    Format(String),
    /// An image reference that cannot be parsed.
    #[error("invalid image reference {reference:?}: {why}")]
    Reference {
        /// The reference as written.
        reference: String,
        /// What is wrong with it.
        why: String,
    },
    /// An external tool (umoci, images/build.sh) failed or is missing.
    #[error("{0}")]
    Tool(String),
}

/// Results of this module.
pub type Result<T> = std::result::Result<T, ImageError>;

/// An [`ImageError::Io`] naming what was done to `path`.
pub fn io_error(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = format!("{what} {}", path.display());
    move |source| ImageError::Io { context, source }
}

/// The `umoci` binary, or an error saying how to install it.
pub fn umoci() -> Result<PathBuf> {
    crate::paths::which("umoci").ok_or_else(|| {
        ImageError::Tool(
            "umoci is missing: run tests/scripts/install-umoci.sh (apt-get install umoci)".into(),
        )
    })
}

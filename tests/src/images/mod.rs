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
            "umoci is missing: run tests/scripts/install-image-tools.sh (apt-get install umoci)"
                .into(),
        )
    })
}

/// Splits `mq-testbed image load`'s argument, `<oci-layout-dir>[:tag]`: a path that is
/// itself a layout has no tag (so a directory name with a ':' still works).
pub fn split_layout_arg(arg: &str) -> (PathBuf, Option<String>) {
    let whole = Path::new(arg);
    if whole.join("oci-layout").is_file() {
        return (whole.to_path_buf(), None);
    }
    match arg.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => {
            (PathBuf::from(dir), Some(tag.to_owned()))
        }
        _ => (whole.to_path_buf(), None),
    }
}

/// Loads `<oci-layout-dir>[:tag]` into the image store of the testbed in `testbed_dir`
/// (running or not), as `mq-testbed image load` does.
pub fn load(testbed_dir: &Path, arg: &str, repository: Option<&str>) -> Result<Vec<store::Loaded>> {
    let (dir, tag) = split_layout_arg(arg);
    let layout = layout::Layout::open(&dir)?;
    store::Store::new(testbed_dir).load(&layout, tag.as_deref(), repository)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_args_split_off_a_tag_only_when_it_is_one() {
        assert_eq!(
            split_layout_arg("target/images/mq-broker:0.1.0"),
            (
                PathBuf::from("target/images/mq-broker"),
                Some("0.1.0".to_owned())
            )
        );
        assert_eq!(
            split_layout_arg("target/images/mq-broker"),
            (PathBuf::from("target/images/mq-broker"), None)
        );
        assert_eq!(split_layout_arg("a:b/c"), (PathBuf::from("a:b/c"), None));
    }
}

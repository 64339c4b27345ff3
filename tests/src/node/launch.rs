//! Starting a stored image's container: its root filesystem becomes the container's
//! read-only `/` (with the Pod's volumes, `/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/hostname`, `/proc` and the usual `/dev` files bound in), its config is merged
//! with the container's spec, and it runs as `runAsUser`/`runAsGroup`/`fsGroup` or the
//! image's user.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::sandbox::{Bind, Sandbox};
use crate::images::runconfig;
use crate::images::store::StoredImage;

/// Host files every image container gets, at the same path (Docker's minimal `/dev`).
const SYSTEM_BINDS: [&str; 6] = [
    "/proc",
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// What to exec: the program, its arguments and its environment.
pub type Exec = (PathBuf, Vec<String>, Vec<(String, String)>);

/// What to exec for a stored image: program, args and environment; `sandbox` (holding
/// the Pod's binds) gets the image's root, workdir, identity and the system binds.
/// `Err` is a message for a `CreateContainerConfigError`.
pub fn stored(
    image: &StoredImage,
    pod: &Pod,
    container: &Container,
    kubelet_env: Vec<(String, String)>,
    sandbox: &mut Sandbox,
) -> Result<Exec, String> {
    let (identity, home) = runconfig::identity(&image.config, pod, container, &image.rootfs)?;
    let env = runconfig::environment(&image.config, container, kubelet_env, &home);
    let vars: HashMap<String, String> = env.iter().cloned().collect();
    let mut argv = runconfig::argv(&image.config, container, &vars)?.into_iter();
    let program = PathBuf::from(argv.next().unwrap_or_default());
    sandbox.workdir = PathBuf::from(runconfig::workdir(&image.config, container));
    sandbox.root = Some(image.rootfs.clone());
    sandbox.identity = Some(identity);
    sandbox.binds.extend(SYSTEM_BINDS.iter().map(|path| Bind {
        source: PathBuf::from(path),
        target: PathBuf::from(path),
        read_only: false,
    }));
    Ok((program, argv.collect(), env))
}

//! `fsGroup`, as kubelet applies it: the Pod's writable volumes (emptyDir and claims)
//! become group-owned by the fsGroup, group-writable (`g+rwX`), with setgid
//! directories so new files inherit the group; the container gets the group as a
//! supplementary group (see `images::runconfig::identity`).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use super::volumes::PodVolumes;

/// Applies the Pod's `fsGroup` (if any) to its emptyDir and claim volumes.
pub fn apply(pod: &Pod, vols: &PodVolumes) -> Result<(), String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let Some(group) = spec.security_context.as_ref().and_then(|c| c.fs_group) else {
        return Ok(());
    };
    let group =
        u32::try_from(group).map_err(|_| format!("fsGroup {group} is not a valid group id"))?;
    for volume in spec.volumes.iter().flatten() {
        if volume.empty_dir.is_none() && volume.persistent_volume_claim.is_none() {
            continue;
        }
        if let Some(path) = vols.source(&volume.name) {
            own_tree(path, group).map_err(|e| format!("fsGroup on volume {}: {e}", volume.name))?;
        }
    }
    Ok(())
}

/// chgrp -R `group` and g+rwX (setgid on directories) under `root`, never following
/// symlinks (a container could plant one pointing at a host file).
fn own_tree(root: &Path, group: u32) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        std::os::unix::fs::lchown(&path, None, Some(group))?;
        let mode = meta.mode() & 0o7777;
        let wanted = if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
            mode | 0o2070
        } else {
            // X: execute for the group only where someone may already execute.
            mode | 0o060 | if mode & 0o111 != 0 { 0o010 } else { 0 }
        };
        if wanted != mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wanted))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_become_group_owned_group_writable_and_setgid() {
        let dir = std::env::temp_dir().join(format!("mq-fsgroup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/file"), "x").unwrap();
        std::fs::set_permissions(dir.join("sub/file"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        let before = std::fs::metadata("/etc/passwd").unwrap();
        own_tree(&dir, 65534).unwrap();
        for (path, mode) in [
            (dir.clone(), 0o2070),
            (dir.join("sub"), 0o2070),
            (dir.join("sub/file"), 0o060),
        ] {
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.gid(), 65534, "{}", path.display());
            assert_eq!(
                meta.mode() & mode,
                mode,
                "{}: {:o}",
                path.display(),
                meta.mode()
            );
        }
        assert_eq!(
            std::fs::metadata(dir.join("sub/file")).unwrap().mode() & 0o010,
            0,
            "X adds no execute to plain files"
        );
        let after = std::fs::metadata("/etc/passwd").unwrap();
        assert_eq!(
            (after.gid(), after.mode()),
            (before.gid(), before.mode()),
            "symlinks are not followed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

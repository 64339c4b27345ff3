//! `fsGroup`, as kubelet applies it: the Pod's writable volumes (emptyDir and claims)
//! become group-owned by the fsGroup, group-writable (`g+rwX`), with setgid
//! directories so new files inherit the group; the container gets the group as a
//! supplementary group (see `images::runconfig::identity`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// chgrp -R `group` and g+rwX (setgid on directories) under `root`, never following a
/// symlink: every step goes through descriptors opened with O_NOFOLLOW relative to their
/// directory, so a link planted in a volume (now or while this runs) cannot redirect the
/// change to a host file.
fn own_tree(root: &Path, group: u32) -> std::io::Result<()> {
    let path = CString::new(root.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path with NUL"))?;
    // SAFETY: a valid C string; the descriptor is owned right away.
    let fd = check(unsafe { libc::open(path.as_ptr(), O_DIR) })?;
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    own_dir(dir, group, 0)
}

/// Flags for opening a directory to walk it.
const O_DIR: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
/// Deeper trees are refused rather than walked (no volume needs more).
const MAX_DEPTH: usize = 256;

/// Applies the group to the directory `dir` itself, then to its entries.
fn own_dir(dir: OwnedFd, group: u32, depth: usize) -> std::io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(std::io::Error::other("directory tree too deep"));
    }
    own_fd(&dir, group)?;
    // Listing through /proc/self/fd reads exactly the directory this descriptor holds.
    let listing = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    for entry in std::fs::read_dir(&listing)? {
        let name = CString::new(entry?.file_name().as_bytes())
            .map_err(|_| std::io::Error::other("name with NUL"))?;
        // SAFETY: a live directory descriptor and a valid C string.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        let Ok(fd) = check(fd) else { continue };
        // SAFETY: just opened, owned by nobody else.
        let entry = unsafe { OwnedFd::from_raw_fd(fd) };
        // fstat of an O_NOFOLLOW descriptor describes a symlink itself, not its target.
        let meta = fstat(&entry)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.is_dir() {
            // SAFETY: as above.
            let fd = check(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), O_DIR) })?;
            // SAFETY: just opened, owned by nobody else.
            own_dir(unsafe { OwnedFd::from_raw_fd(fd) }, group, depth + 1)?;
        } else {
            own_fd(&entry, group)?;
        }
    }
    Ok(())
}

/// chgrp and g+rwX of the file or directory `fd` (an O_PATH or open descriptor).
fn own_fd(fd: &OwnedFd, group: u32) -> std::io::Result<()> {
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let meta = fstat(fd)?;
    // SAFETY: a live descriptor and an empty C string (AT_EMPTY_PATH acts on `fd`).
    check(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            u32::MAX,
            group,
            libc::AT_EMPTY_PATH,
        )
    })?;
    let mode = meta.mode() & 0o7777;
    let wanted = if meta.is_dir() {
        mode | 0o2070
    } else {
        // X: execute for the group only where someone may already execute.
        mode | 0o060 | if mode & 0o111 != 0 { 0o010 } else { 0 }
    };
    if wanted != mode && (meta.is_dir() || meta.is_file()) {
        // The magic link leads to the very inode the descriptor holds, never to a path.
        std::fs::set_permissions(&proc_path, std::fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// The metadata of the inode `fd` holds (fstat works on O_PATH descriptors).
fn fstat(fd: &OwnedFd) -> std::io::Result<std::fs::Metadata> {
    let file = std::fs::File::from(fd.try_clone()?);
    file.metadata()
}

fn check(ret: libc::c_int) -> std::io::Result<libc::c_int> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
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
        std::os::unix::fs::symlink("/usr/share", dir.join("dirlink")).unwrap();
        let before = std::fs::metadata("/etc/passwd").unwrap();
        let share = std::fs::metadata("/usr/share").unwrap();
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
        let after = std::fs::metadata("/usr/share").unwrap();
        assert_eq!(
            (after.gid(), after.mode()),
            (share.gid(), share.mode()),
            "nor directory links"
        );
        assert!(
            own_tree(&dir.join("dirlink"), 65534).is_err(),
            "a link as the volume itself is refused"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Who a container's process runs as: uid, gid and supplementary groups, applied in the
//! child between fork and exec (after the mounts, which need root).

use std::io;

/// A container's user, primary group and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`runAsUser`, else the image's user).
    pub uid: u32,
    /// The primary group id (`runAsGroup`, else the image's group, else 0 like kubelet).
    pub gid: u32,
    /// Supplementary groups (`fsGroup`, `supplementalGroups`), without duplicates.
    pub groups: Vec<u32>,
}

impl Identity {
    /// Switches the calling process to this identity: setgroups, setgid, then setuid
    /// (in that order: once the uid is not 0 the others are refused).
    ///
    /// # Safety
    /// Only for a forked child before exec: it makes raw system calls on data owned by
    /// `self` and never allocates.
    pub unsafe fn switch(&self) -> io::Result<()> {
        // SAFETY: `groups` is a live slice of gid_t-sized integers for the call.
        unsafe {
            check(libc::setgroups(
                self.groups.len(),
                self.groups.as_ptr().cast::<libc::gid_t>(),
            ))?;
            check(libc::setgid(self.gid))?;
            check(libc::setuid(self.uid))?;
        }
        Ok(())
    }
}

/// Turns a libc return value into a result carrying the errno, without allocating.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

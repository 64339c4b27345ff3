//! Size-enforced volumes: each PersistentVolume of the `sized` StorageClass (see
//! [`super::provisioner`]) is a tmpfs of exactly its capacity, so a broker's volume can
//! really fill up, as a volume of a real cluster's storage does. The `standard` class's
//! hostPath directories enforce no size.
//!
//! Where the mounts live: `mq-testbed node` moves the whole agent into a mount namespace
//! of its own ([`enter_private_namespace`]) before it starts any thread, so every part of
//! the agent (the pod workers that prepare volumes and apply `fsGroup`, the provisioner
//! that removes them) and every container it forks sees the same tmpfs at the PV's
//! directory; containers bind-mount it at their `mountPath` as any other volume. The
//! host's mount table never changes: nothing can leak, even when the agent is killed with
//! SIGKILL, because the namespace and its mounts go with the last of its processes (the
//! containers die with the agent through PDEATHSIG).
//!
//! A tmpfs is mounted when the volume is first used by a Pod, stays while the agent runs
//! (across container and Pod restarts: it is the PV), and is unmounted before the
//! provisioner removes the directory of a released volume.
//!
//! Limitations: the contents are in memory and exist only while the agent runs; they are
//! gone when the testbed stops (a restarted agent mounts an empty tmpfs). From outside
//! the agent (the host, a test) the PV's directory is an empty directory: look through
//! `/proc/<agent or container pid>/root/<path>` instead. Such volumes cannot be expanded.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Moves this process into a new mount namespace whose mounts do not propagate back to
/// the host's (the host's new mounts still propagate in).
///
/// Only a single-threaded process can do that for all its threads: `unshare(CLONE_NEWNS)`
/// also unshares the calling thread's filesystem information (`CLONE_FS`), so in a
/// multi-threaded process it would move that one thread only. Hence this is called first
/// thing in `main`, before the async runtime exists, and refuses to run otherwise.
pub fn enter_private_namespace() -> io::Result<()> {
    let threads = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    if threads != Some(1) {
        return Err(io::Error::other(format!(
            "a mount namespace for the whole process needs it single-threaded, it has {threads:?} threads"
        )));
    }
    // SAFETY: plain system calls with constant arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(annotated("unshare(CLONE_NEWNS)"));
        }
        // A shared "/" (systemd's default) would carry our mounts back to the host.
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
        {
            return Err(annotated("making / a slave mount"));
        }
    }
    Ok(())
}

/// The tmpfs mounts the agent made, by mount point.
#[derive(Debug, Default)]
pub struct Mounts {
    mounted: Mutex<BTreeSet<PathBuf>>,
}

impl Mounts {
    /// Mounts a tmpfs of `bytes` at `path` (created if missing) unless one is there
    /// already.
    pub fn ensure_tmpfs(&self, path: &Path, bytes: u64) -> io::Result<()> {
        let mut mounted = self.lock();
        if mounted.contains(path) {
            return Ok(());
        }
        std::fs::create_dir_all(path)?;
        let target = c_path(path)?;
        // Like a fresh hostPath directory of the `standard` class: root's, 0755 (fsGroup
        // makes it writable for the Pod's group).
        let options = CString::new(format!("size={bytes},mode=0755"))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: valid C strings that outlive the call.
        let done = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        if done != 0 {
            return Err(annotated(&format!(
                "mounting a tmpfs at {}",
                path.display()
            )));
        }
        tracing::info!(path = %path.display(), bytes, "mounted a sized volume");
        mounted.insert(path.to_path_buf());
        Ok(())
    }

    /// Unmounts the tmpfs at `path`, if the agent mounted one there (lazily: a process
    /// still holding it keeps its view until it lets go).
    pub fn release(&self, path: &Path) -> io::Result<()> {
        let mut mounted = self.lock();
        if !mounted.contains(path) {
            return Ok(());
        }
        let target = c_path(path)?;
        // SAFETY: a valid C string that outlives the call.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            let e = io::Error::last_os_error();
            // Someone else took it down: it is gone either way.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("unmounting {}: {e}", path.display()),
                ));
            }
        }
        tracing::info!(path = %path.display(), "unmounted a sized volume");
        mounted.remove(path);
        Ok(())
    }

    /// Whether the agent has a tmpfs mounted at `path`.
    pub fn is_mounted(&self, path: &Path) -> bool {
        self.lock().contains(path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        self.mounted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

/// The last OS error, prefixed with what was being done.
fn annotated(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Runs `f` on a thread of its own in a mount namespace of its own, so the test
    /// process's other threads (and the host) never see its mounts.
    fn in_private_namespace(f: impl FnOnce() -> Result<(), String> + Send + 'static) {
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            // SAFETY: plain system calls with constant arguments. With CLONE_FS the
            // thread gets filesystem information of its own, so the new namespace is
            // this thread's only (and the processes it forks).
            unsafe {
                if libc::unshare(libc::CLONE_FS | libc::CLONE_NEWNS) != 0 {
                    return Err(format!("unshare: {}", io::Error::last_os_error()));
                }
                if libc::mount(
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(format!("private /: {}", io::Error::last_os_error()));
                }
            }
            f()
        })
        .join()
        .expect("the test thread panicked");
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }

    fn statvfs_total(path: &Path) -> u64 {
        let c = c_path(path).unwrap();
        // SAFETY: a zeroed plain struct and a valid C string.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        s.f_blocks * s.f_frsize
    }

    #[test]
    fn a_sized_volume_refuses_writes_beyond_its_size_and_goes_when_released() {
        let dir = std::env::temp_dir().join(format!("mounts-test-{}", std::process::id()));
        let volume = dir.join("pvc-x");
        let (inside, host_view) = (volume.clone(), volume.clone());
        in_private_namespace(move || {
            let mounts = Mounts::default();
            mounts
                .ensure_tmpfs(&inside, 1 << 20)
                .map_err(|e| e.to_string())?;
            // Twice is once.
            mounts
                .ensure_tmpfs(&inside, 1 << 20)
                .map_err(|e| e.to_string())?;
            if statvfs_total(&inside) != 1 << 20 {
                return Err(format!("size {}", statvfs_total(&inside)));
            }
            let mut file = std::fs::File::create(inside.join("fill")).map_err(|e| e.to_string())?;
            let refused = file.write_all(&vec![1u8; 2 << 20]);
            match refused {
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {}
                other => return Err(format!("2 MiB into 1 MiB: {other:?}")),
            }
            drop(file);
            // Another process forked now sees the same tmpfs (containers inherit it).
            let seen = Command::new("stat")
                .args(["-f", "-c", "%T"])
                .arg(&inside)
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| e.to_string())?;
            let kind = String::from_utf8_lossy(&seen.stdout).trim().to_owned();
            if kind != "tmpfs" {
                return Err(format!("a child sees {kind:?}"));
            }
            mounts.release(&inside).map_err(|e| e.to_string())?;
            mounts.release(&inside).map_err(|e| e.to_string())?;
            if mounts.is_mounted(&inside) || inside.join("fill").exists() {
                return Err("still mounted after release".into());
            }
            Ok(())
        });
        // The host's view never had the tmpfs.
        assert!(host_view.is_dir());
        assert!(!host_view.join("fill").exists());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mountinfo.contains(host_view.to_str().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

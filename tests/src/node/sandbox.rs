//! Per-container private mount and UTS namespaces for locally run containers.
//!
//! The harness runs every container as an ordinary host process, so a volume
//! cannot simply be placed inside a container root filesystem. Instead each
//! container gets its own mount namespace in which the volumes are
//! bind-mounted at their `mountPath`, and its own UTS namespace for the pod
//! hostname. The host's mount table is never changed.
//!
//! Everything that needs allocation (C strings, sorting, validation) happens
//! in [`Sandbox::apply`] / [`enter`] in the parent. The `pre_exec` hooks they
//! install run between `fork` and `exec` in a child of a possibly
//! multi-threaded parent, so they only make raw system calls on data prepared
//! beforehand and report failures as a bare errno.
//!
//! Error reporting: std passes only the raw errno of a failed hook from the
//! child to the parent (any other error becomes `EINVAL`), so a spawn error
//! cannot say *which* step failed. Callers should report the errno together
//! with the sandbox (`{sandbox:?}` lists every bind) when a spawn fails.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::raw::{c_char, c_int};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::credentials::Identity;

/// One bind mount: `source` (a host file or directory) appears at `target` inside the sandbox.
#[derive(Debug, Clone)]
pub struct Bind {
    /// Host path whose content is shown; resolved in the host's view even if an earlier bind shadows it.
    pub source: PathBuf,
    /// Absolute path at which the content appears inside the sandbox.
    pub target: PathBuf,
    /// Whether the mount is remounted read-only (only the top mount, not submounts of `source`).
    pub read_only: bool,
}

/// A container's private view of the filesystem and its hostname.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Bind mounts, in any order; they are applied parents before children.
    pub binds: Vec<Bind>,
    /// Hostname inside the sandbox; `None` keeps the host's name (still in a private UTS namespace).
    pub hostname: Option<String>,
    /// Working directory of the container, entered after the mounts exist.
    pub workdir: PathBuf,
    /// An image's root filesystem: bound read-only and made `/` (pivot_root), with the
    /// binds inside it; `None` keeps the host's root.
    pub root: Option<PathBuf>,
    /// Who the process runs as; `None` keeps the caller's credentials.
    pub identity: Option<Identity>,
}

/// One bind mount with everything the child needs prepared in the parent.
struct MountStep {
    source: CString,
    target: CString,
    read_only: bool,
    /// O_PATH descriptor of `source`, filled in by the child.
    fd: c_int,
}

/// Linux's HOST_NAME_MAX; longer names make `sethostname` fail with EINVAL.
const HOST_NAME_MAX: usize = 64;

/// Room for "/proc/self/fd/" (14 bytes), up to 10 digits and the NUL.
const FD_PATH_LEN: usize = 32;

impl Sandbox {
    /// Creates missing mount points on the host: a directory for a directory source, an empty file (and its parent dirs) for a file source. Errors name the path.
    ///
    /// A target nested under another bind's target is looked up by the kernel
    /// *inside* that bind, so its mount point is created inside the enclosing
    /// bind's source (as container runtimes do), not at the shadowed host path.
    pub fn prepare(&self) -> io::Result<()> {
        self.check_targets()?;
        for (index, bind) in self.binds.iter().enumerate() {
            let source_meta =
                fs::metadata(&bind.source).map_err(|e| annotate(e, "bind source", &bind.source))?;
            let mount_point = self.host_mount_point(index);
            // `metadata` follows symlinks: a target that is a symlink to an
            // existing file (e.g. /etc/resolv.conf) is already a mount point.
            match fs::metadata(&mount_point) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(annotate(e, "mount point", &mount_point)),
            }
            if source_meta.is_dir() {
                fs::create_dir_all(&mount_point)
                    .map_err(|e| annotate(e, "creating mount point", &mount_point))?;
            } else {
                if let Some(parent) = mount_point.parent() {
                    fs::create_dir_all(parent)
                        .map_err(|e| annotate(e, "creating mount point parent", parent))?;
                }
                // Never truncate: the path may have appeared concurrently.
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&mount_point)
                    .map_err(|e| annotate(e, "creating mount point", &mount_point))?;
            }
            tracing::debug!(mount_point = %mount_point.display(), "created mount point");
        }
        Ok(())
    }

    /// Adds a `pre_exec` hook to `cmd` that, in the child: unshare(CLONE_NEWNS | CLONE_NEWUTS); mount("none", "/", NULL, MS_REC|MS_PRIVATE) so nothing propagates back to the host; bind-mounts every Bind (MS_BIND|MS_REC; then a remount MS_BIND|MS_REMOUNT|MS_RDONLY for read-only ones), parents before children (sort by target component count); sethostname; with a `root`, binds it read-only first (the binds go inside it) and pivot_root()s into it; chdir(workdir); switches to the `identity`; setpgid(0, 0) so the container is its own process group.
    ///
    /// Do not also call `Command::current_dir`: std changes directory before
    /// running hooks, i.e. before the mounts exist. A failing step fails the
    /// spawn with that step's errno (see the module docs for reporting).
    pub fn apply(&self, cmd: &mut Command) -> io::Result<()> {
        self.check_targets()?;
        let mut order: Vec<&Bind> = self.binds.iter().collect();
        // Stable sort: a parent must be mounted before a bind inside it, or the
        // parent would hide it; equal targets keep input order so the last wins.
        order.sort_by_key(|bind| bind.target.components().count());
        let mut steps = order
            .into_iter()
            .map(|bind| {
                Ok(MountStep {
                    source: path_cstring(&bind.source)?,
                    target: path_cstring(&self.inside(&bind.target))?,
                    read_only: bind.read_only,
                    fd: -1,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let hostname = match &self.hostname {
            Some(name) => Some(hostname_bytes(name)?),
            None => None,
        };
        let workdir = path_cstring(&self.workdir)?;
        let root = self.root.as_deref().map(path_cstring).transpose()?;
        let identity = self.identity.clone();
        tracing::debug!(sandbox = ?self, "applying sandbox to command");

        let hook = move || -> io::Result<()> {
            // SAFETY: runs in the single-threaded child between fork and exec.
            // Only raw system calls are made, on C strings and buffers owned by
            // this closure or on the stack; nothing allocates, locks or panics.
            // `steps` is this child's private copy, so mutating it is harmless
            // to the parent and to later spawns of the same Command.
            unsafe {
                enter_new_sandbox(&mut steps, root.as_ref(), hostname.as_deref(), &workdir)?;
                if let Some(identity) = &identity {
                    identity.switch()?;
                }
                check(libc::setpgid(0, 0))?;
            }
            Ok(())
        };
        // SAFETY: the hook only performs async-signal-safe work (see above).
        unsafe { cmd.pre_exec(hook) };
        Ok(())
    }

    /// Rejects relative targets, whose meaning would depend on the parent's cwd.
    fn check_targets(&self) -> io::Result<()> {
        match self.binds.iter().find(|bind| !bind.target.is_absolute()) {
            Some(bind) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bind target {} is not absolute", bind.target.display()),
            )),
            None => Ok(()),
        }
    }

    /// Where the kernel will look for bind `index`'s mount point once the binds before it are mounted.
    fn host_mount_point(&self, index: usize) -> PathBuf {
        let target = &self.binds[index].target;
        let mut enclosing: Option<&Bind> = None;
        for bind in &self.binds {
            if bind.target == *target || !target.starts_with(&bind.target) {
                continue;
            }
            // The deepest enclosing target is the mount the lookup ends in; among
            // equal targets the later one is mounted on top, hence `>=`.
            let depth = bind.target.components().count();
            if enclosing.is_none_or(|e| depth >= e.target.components().count()) {
                enclosing = Some(bind);
            }
        }
        match enclosing {
            Some(parent) => match target.strip_prefix(&parent.target) {
                Ok(rest) => parent.source.join(rest),
                Err(_) => target.clone(),
            },
            None => self.inside(target),
        }
    }

    /// Where the host sees container path `target` before the pivot: under the root.
    fn inside(&self, target: &Path) -> PathBuf {
        match &self.root {
            Some(root) => under_root(root, target),
            None => target.to_path_buf(),
        }
    }
}

/// Symlinks followed while resolving one path under an image's root (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// `target` (absolute, inside the container) as a host path under the image's `root`,
/// resolved the way a container runtime's secure join does: `..` never climbs above the
/// root and a symlink inside the image resolves against the root, not the host's `/`,
/// so no mount point or mount can land outside the image.
fn under_root(root: &Path, target: &Path) -> PathBuf {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::path::Component;
    let parts = |path: &Path| -> VecDeque<OsString> {
        path.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect()
    };
    let mut resolved = PathBuf::new();
    let mut pending = parts(target);
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let host = root.join(&candidate);
        let link = fs::symlink_metadata(&host)
            .ok()
            .filter(|m| m.file_type().is_symlink() && hops < MAX_SYMLINKS)
            .and_then(|_| fs::read_link(&host).ok());
        match link {
            Some(link) => {
                hops += 1;
                if link.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut rest = parts(&link);
                rest.extend(pending);
                pending = rest;
            }
            None => resolved = candidate,
        }
    }
    root.join(resolved)
}

/// Adds a `pre_exec` hook that joins the mount and UTS namespaces of the running process `pid`, then chdir(workdir), the identity, and setpgid(0, 0).
///
/// The namespace files are opened now (O_CLOEXEC, so exec closes the child's
/// copies); the parent's copies live in the hook and close when `cmd` is
/// dropped. Used for exec probes and `exec` into a container.
///
/// A container whose sandbox had a `root` needs nothing more: joining its mount
/// namespace lands in its root (pivot_root made it the namespace's `/`). `identity`
/// is the container's, so an exec runs as the container's user.
pub fn enter(
    cmd: &mut Command,
    pid: u32,
    workdir: &Path,
    identity: Option<&Identity>,
) -> io::Result<()> {
    // Opened before fork so a vanished container fails here, with a path.
    let mnt = open_namespace(pid, "mnt")?;
    let uts = open_namespace(pid, "uts")?;
    let workdir = path_cstring(workdir)?;
    let identity = identity.cloned();
    tracing::debug!(pid, workdir = ?workdir, "entering container namespaces");
    let hook = move || -> io::Result<()> {
        // SAFETY: runs in the single-threaded child between fork and exec, and
        // only makes raw system calls on descriptors and a C string owned by
        // this closure. setns(CLONE_NEWNS) needs an unshared fs struct, which a
        // forked child has.
        unsafe {
            check(libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS))?;
            check(libc::setns(uts.as_raw_fd(), libc::CLONE_NEWUTS))?;
            // Joining a mount namespace resets the cwd to its root.
            check(libc::chdir(workdir.as_ptr()))?;
            if let Some(identity) = &identity {
                identity.switch()?;
            }
            check(libc::setpgid(0, 0))?;
        }
        Ok(())
    };
    // SAFETY: the hook only performs async-signal-safe work (see above).
    unsafe { cmd.pre_exec(hook) };
    Ok(())
}

/// Sends `signal` to the whole process group `pgid`; false if none was signalled.
pub fn signal_group(pgid: u32, signal: libc::c_int) -> bool {
    // kill(0) and kill(-1) would hit our own group or every process, and a
    // pgid beyond i32 cannot exist: refuse them instead of signalling.
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// The child half of [`Sandbox::apply`]: set up the namespaces and mounts.
///
/// # Safety
/// Must only be called in a forked child before exec (it changes the calling
/// process's namespaces); it is async-signal-safe.
unsafe fn enter_new_sandbox(
    steps: &mut [MountStep],
    root: Option<&CString>,
    hostname: Option<&[u8]>,
    workdir: &CString,
) -> io::Result<()> {
    let none = c"none".as_ptr();
    // SAFETY (whole body): every pointer passed below comes from a live
    // CString, a byte slice with its length, or a stack buffer, all valid for
    // the duration of each call.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
        // Without this, a shared "/" (systemd's default) would propagate the
        // binds below back into the host namespace.
        check(libc::mount(
            none,
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        // Open every source before mounting anything: a bind at e.g. /tmp
        // would otherwise shadow a later source under /tmp. Opened after
        // unshare because the kernel only binds mounts of the current namespace.
        for step in steps.iter_mut() {
            step.fd = check(libc::open(
                step.source.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC,
            ))?;
        }
        if let Some(root) = root {
            // A bind of the image's root onto itself makes it a mount point that can
            // be made read-only and pivoted to; the binds below land inside it.
            check(libc::mount(
                root.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                none,
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NODEV,
                std::ptr::null(),
            ))?;
        }
        for step in steps.iter() {
            let mut fd_path = [0u8; FD_PATH_LEN];
            let source = write_fd_path(&mut fd_path, step.fd);
            // mount() follows a symlink target, which is fine here: the
            // symlink's destination is only covered inside this namespace.
            check(libc::mount(
                source,
                step.target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            if step.read_only {
                // A bind remount replaces nosuid/nodev/noexec, so carry over the
                // source's: dropping them is refused in user namespaces and
                // would silently loosen the mount otherwise. glibc's fstatvfs is
                // a bare fstatfs syscall plus a struct copy on this kernel.
                let mut stat: libc::statvfs = std::mem::zeroed();
                check(libc::fstatvfs(step.fd, &mut stat))?;
                let kept = stat.f_flag & (libc::ST_NOSUID | libc::ST_NODEV | libc::ST_NOEXEC);
                // ST_NOSUID/NODEV/NOEXEC share the values of MS_NOSUID/NODEV/NOEXEC.
                check(libc::mount(
                    none,
                    step.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | kept,
                    std::ptr::null(),
                ))?;
            }
            // The container should not inherit these; exec would close them too.
            libc::close(step.fd);
        }
        if let Some(name) = hostname {
            check(libc::sethostname(name.as_ptr().cast(), name.len()))?;
        }
        if let Some(root) = root {
            pivot_into(root)?;
        }
        check(libc::chdir(workdir.as_ptr()))?;
    }
    Ok(())
}

/// Makes the mount at `root` this namespace's `/` and detaches the host's root, so
/// nothing of the host stays reachable (unlike chroot, which root could escape).
///
/// # Safety
/// Only for a forked child before exec, inside its own mount namespace.
unsafe fn pivot_into(root: &CString) -> io::Result<()> {
    let dot = c".".as_ptr();
    // SAFETY: C string literals and a live CString.
    unsafe {
        check(libc::chdir(root.as_ptr()))?;
        // pivot_root(".", ".") stacks the old root on top of the new one, so it can be
        // detached without needing a directory for it inside the image.
        check(libc::syscall(libc::SYS_pivot_root, dot, dot) as c_int)?;
        check(libc::umount2(dot, libc::MNT_DETACH))?;
        check(libc::chdir(c"/".as_ptr()))?;
    }
    Ok(())
}

/// Writes "/proc/self/fd/<fd>\0" into `buf` without allocating and returns it as a C string.
fn write_fd_path(buf: &mut [u8; FD_PATH_LEN], fd: c_int) -> *const c_char {
    const PREFIX: &[u8; 14] = b"/proc/self/fd/";
    let mut digits = [0u8; 10];
    let mut count = 0;
    // Descriptors are never negative here; u32 has at most 10 digits.
    let mut n = fd.unsigned_abs();
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut len = 0;
    for &b in PREFIX.iter().chain(digits[..count].iter().rev()) {
        buf[len] = b;
        len += 1;
    }
    buf[len] = 0;
    buf.as_ptr().cast()
}

/// Turns a libc return value into a result carrying the errno, without allocating.
fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Converts a path for the child, rejecting interior NULs with the path named.
fn path_cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}

/// Validates a hostname now, because the child could only report EINVAL.
fn hostname_bytes(name: &str) -> io::Result<Vec<u8>> {
    if name.len() > HOST_NAME_MAX || name.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid hostname {name:?}: at most {HOST_NAME_MAX} bytes, no NUL"),
        ));
    }
    Ok(name.as_bytes().to_vec())
}

/// Opens /proc/<pid>/ns/<kind> with O_CLOEXEC (std's default), naming the path on failure.
fn open_namespace(pid: u32, kind: &str) -> io::Result<OwnedFd> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
    File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| annotate(e, "opening namespace", &path))
}

/// Prefixes an error with what was being done and the path, keeping its kind.
fn annotate(error: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, ExitStatus, Output, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Upper bound for anything a test waits for.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// A unique scratch directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "sandbox-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn join(&self, rest: &str) -> PathBuf {
            self.0.join(rest)
        }

        /// Creates `rest` (and its parents) with `content`.
        fn file(&self, rest: &str, content: &str) -> PathBuf {
            let path = self.join(rest);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A started child whose whole process group is killed if the test bails out.
    struct Running(Child);

    impl Running {
        fn wait(&mut self) -> ExitStatus {
            let start = Instant::now();
            loop {
                if let Some(status) = self.0.try_wait().unwrap() {
                    return status;
                }
                assert!(start.elapsed() < DEADLINE, "child {} hung", self.0.id());
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                signal_group(self.0.id(), libc::SIGKILL);
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }

    fn spawn(cmd: &mut Command) -> Running {
        Running(cmd.stdin(Stdio::null()).spawn().expect("spawn"))
    }

    /// Runs `cmd` to completion within the deadline and captures its output.
    fn run(cmd: &mut Command) -> Output {
        let mut child = spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
        let status = child.wait();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        child
            .0
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        child
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut stderr)
            .unwrap();
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Runs `script` in `sandbox` and returns its stdout, asserting success.
    fn run_in(sandbox: &Sandbox, script: &str) -> String {
        let mut cmd = sh(script);
        sandbox.apply(&mut cmd).unwrap();
        stdout_of(run(&mut cmd))
    }

    fn stdout_of(output: Output) -> String {
        assert!(
            output.status.success(),
            "{:?}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    fn bind(source: &Path, target: &Path, read_only: bool) -> Bind {
        Bind {
            source: source.to_owned(),
            target: target.to_owned(),
            read_only,
        }
    }

    fn sandbox(binds: Vec<Bind>, workdir: &Path) -> Sandbox {
        Sandbox {
            binds,
            hostname: None,
            workdir: workdir.to_owned(),
            root: None,
            identity: None,
        }
    }

    /// Mount points in this (the host's) mount namespace.
    fn host_mount_points() -> Vec<PathBuf> {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .map(|line| PathBuf::from(line.split(' ').nth(4).unwrap()))
            .collect()
    }

    fn assert_not_mounted(path: &Path) {
        assert!(
            !host_mount_points().iter().any(|m| m == path),
            "{} leaked into the host mount table",
            path.display()
        );
    }

    #[test]
    fn dir_bind_at_missing_target_is_visible_and_does_not_leak() {
        let tmp = TempDir::new();
        tmp.file("src/f", "hello");
        let target = tmp.join("targets/data");
        let sb = sandbox(vec![bind(&tmp.join("src"), &target, false)], &tmp.0);
        sb.prepare().unwrap();
        assert!(target.is_dir());
        let mut cmd = sh(&format!("cat {}/f", target.display()));
        sb.apply(&mut cmd).unwrap();
        // Spawning the same Command twice must work: the hook's state is per child.
        for _ in 0..2 {
            assert_eq!(stdout_of(run(&mut cmd)), "hello");
        }
        assert!(!target.join("f").exists());
        assert_not_mounted(&target);
    }

    #[test]
    fn file_bind_over_existing_file() {
        let tmp = TempDir::new();
        let target = tmp.file("etc-hosts", "A");
        let source = tmp.file("volume/hosts", "B");
        let sb = sandbox(vec![bind(&source, &target, false)], &tmp.0);
        sb.prepare().unwrap();
        assert_eq!(run_in(&sb, &format!("cat {}", target.display())), "B");
        assert_eq!(fs::read_to_string(&target).unwrap(), "A");
        assert_not_mounted(&target);
    }

    #[test]
    fn file_bind_over_etc_hosts() {
        let tmp = TempDir::new();
        let content = format!("10.9.8.7 sandbox-test-{}\n", std::process::id());
        let source = tmp.file("hosts", &content);
        let target = Path::new("/etc/hosts");
        let before = fs::read(target).unwrap();
        let sb = sandbox(vec![bind(&source, target, true)], &tmp.0);
        sb.prepare().unwrap();
        assert_eq!(run_in(&sb, "cat /etc/hosts"), content);
        assert_eq!(fs::read(target).unwrap(), before);
        assert_not_mounted(target);
    }

    #[test]
    fn symlink_target_is_followed() {
        let tmp = TempDir::new();
        let real = tmp.file("real", "A");
        let link = tmp.join("link");
        symlink(&real, &link).unwrap();
        let source = tmp.file("volume/conf", "B");
        let sb = sandbox(vec![bind(&source, &link, false)], &tmp.0);
        sb.prepare().unwrap();
        assert_eq!(run_in(&sb, &format!("cat {}", link.display())), "B");
        assert_eq!(fs::read_to_string(&real).unwrap(), "A");
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_not_mounted(&real);
    }

    #[test]
    fn read_only_bind_rejects_writes() {
        let tmp = TempDir::new();
        let source = tmp.join("src");
        tmp.file("src/f", "data");
        let target = tmp.join("ro");
        let sb = sandbox(vec![bind(&source, &target, true)], &tmp.0);
        sb.prepare().unwrap();
        assert_eq!(run_in(&sb, &format!("cat {}/f", target.display())), "data");
        let mut cmd = sh(&format!("echo x > {}/new", target.display()));
        sb.apply(&mut cmd).unwrap();
        let output = run(&mut cmd);
        assert!(!output.status.success(), "write to a read-only bind worked");
        assert!(!source.join("new").exists());
    }

    #[test]
    fn writable_bind_writes_reach_source() {
        let tmp = TempDir::new();
        let source = tmp.join("src");
        fs::create_dir(&source).unwrap();
        let target = tmp.join("rw");
        let sb = sandbox(vec![bind(&source, &target, false)], &tmp.0);
        sb.prepare().unwrap();
        run_in(&sb, &format!("echo hi > {}/out", target.display()));
        assert_eq!(fs::read_to_string(source.join("out")).unwrap(), "hi\n");
        assert!(!target.join("out").exists());
    }

    #[test]
    fn nested_binds_in_any_order() {
        for parent_first in [true, false] {
            let tmp = TempDir::new();
            let outer = tmp.join("outer");
            let inner = tmp.join("inner");
            tmp.file("outer/f1", "one");
            tmp.file("inner/f2", "two");
            let (a, b) = (tmp.join("t/a"), tmp.join("t/a/b"));
            let mut binds = vec![bind(&outer, &a, true), bind(&inner, &b, false)];
            if !parent_first {
                binds.reverse();
            }
            let sb = sandbox(binds, &tmp.0);
            sb.prepare().unwrap();
            // The kernel looks for the inner mount point inside the outer bind.
            assert!(outer.join("b").is_dir());
            let script = format!("cat {}/f1 {}/f2", a.display(), b.display());
            assert_eq!(
                run_in(&sb, &script),
                "onetwo",
                "parent_first={parent_first}"
            );
            assert_not_mounted(&a);
            assert_not_mounted(&b);
        }
    }

    #[test]
    fn sources_are_resolved_before_any_bind_shadows_them() {
        let tmp = TempDir::new();
        let empty = tmp.join("empty");
        fs::create_dir(&empty).unwrap();
        // The first bind covers the directory holding the second bind's source.
        let source = tmp.file("shadowed/inner/conf", "host view");
        let target = tmp.join("deeper/dir/conf");
        let binds = vec![
            bind(&source, &target, false),
            bind(&empty, &tmp.join("shadowed"), false),
        ];
        let sb = sandbox(binds, &tmp.0);
        sb.prepare().unwrap();
        let script = format!(
            "cat {}; ls {}",
            target.display(),
            tmp.join("shadowed").display()
        );
        assert_eq!(run_in(&sb, &script), "host view");
    }

    #[test]
    fn hostname_is_private() {
        let tmp = TempDir::new();
        let before = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let mut sb = sandbox(Vec::new(), &tmp.0);
        sb.hostname = Some("sandbox-test-host".into());
        assert_eq!(run_in(&sb, "hostname"), "sandbox-test-host\n");
        assert_eq!(
            fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
            before
        );
    }

    #[test]
    fn workdir_inside_bind_target() {
        let tmp = TempDir::new();
        tmp.file("src/f", "x");
        let target = tmp.join("work");
        let sb = sandbox(vec![bind(&tmp.join("src"), &target, false)], &target);
        sb.prepare().unwrap();
        let expected = format!("{}\nf\n", fs::canonicalize(&target).unwrap().display());
        assert_eq!(run_in(&sb, "pwd -P; ls"), expected);
    }

    #[test]
    fn enter_joins_mount_and_uts_namespaces() {
        let tmp = TempDir::new();
        tmp.file("src/f", "bound");
        let target = tmp.join("vol");
        let mut sb = sandbox(vec![bind(&tmp.join("src"), &target, false)], &tmp.0);
        sb.hostname = Some("entered-host".into());
        sb.prepare().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        sb.apply(&mut cmd).unwrap();
        // spawn() returns after exec, so the namespace is fully set up.
        let container = spawn(&mut cmd);

        let mut exec = sh("hostname; cat f");
        enter(&mut exec, container.0.id(), &target, None).unwrap();
        assert_eq!(stdout_of(run(&mut exec)), "entered-host\nbound");
        assert!(!target.join("f").exists());
        drop(container);

        let err = enter(&mut sh("true"), u32::MAX, &tmp.0, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/proc/4294967295/ns/mnt"), "{err}");
    }

    /// A root filesystem holding only `/bin/sh` (the host's, with its ldd closure) and
    /// a `/marker` file.
    fn tiny_root(tmp: &TempDir) -> PathBuf {
        let root = tmp.join("root");
        let sh = fs::canonicalize("/bin/sh").unwrap();
        let ldd = Command::new("ldd").arg(&sh).output().unwrap();
        let libs = String::from_utf8(ldd.stdout).unwrap();
        let paths = libs
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(PathBuf::from);
        for path in paths.chain([PathBuf::from("/bin/sh")]) {
            let dest = root.join(path.strip_prefix("/").unwrap());
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(&path, &dest).unwrap();
        }
        fs::write(root.join("marker"), "image").unwrap();
        root
    }

    #[test]
    fn root_becomes_slash_read_only_with_binds_identity_and_enter_inside() {
        let tmp = TempDir::new();
        let root = tiny_root(&tmp);
        let data = tmp.join("data");
        fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(65532), Some(65532)).unwrap();
        let sb = Sandbox {
            binds: vec![bind(&data, Path::new("/data"), false)],
            hostname: None,
            workdir: PathBuf::from("/data"),
            root: Some(root.clone()),
            identity: Some(Identity {
                uid: 65532,
                gid: 65532,
                groups: vec![65534],
            }),
        };
        sb.prepare().unwrap();
        assert!(
            root.join("data").is_dir(),
            "the mount point is made in the root"
        );
        let host = tmp.0.display();
        let script = format!(
            "read m < /marker; echo $m; echo x > /new 2>/dev/null || echo read-only; \
             echo hi > f && echo wrote; [ -e {host} ] || echo no-host"
        );
        assert_eq!(run_in(&sb, &script), "image\nread-only\nwrote\nno-host\n");
        let written = fs::metadata(data.join("f")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((written.uid(), written.gid()), (65532, 65532));
        assert!(!root.join("new").exists());

        let fifo = data.join("fifo");
        let path = path_cstring(&fifo).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::chown(&fifo, Some(65532), Some(65532)).unwrap();
        let mut cmd = sh("read x < /data/fifo");
        sb.apply(&mut cmd).unwrap();
        let container = spawn(&mut cmd);
        let mut exec = sh("read m < /marker; echo $m; pwd; echo done > /data/fifo");
        enter(
            &mut exec,
            container.0.id(),
            Path::new("/data"),
            sb.identity.as_ref(),
        )
        .unwrap();
        assert_eq!(stdout_of(run(&mut exec)), "image\n/data\n");
        drop(container);
    }

    #[test]
    fn targets_under_a_root_never_leave_it() {
        let tmp = TempDir::new();
        let root = tmp.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/", root.join("var")).unwrap();
        symlink("../run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        for (target, inside) in [
            ("/data", "data"),
            ("/../../../etc/x", "etc/x"),
            ("/var/lib/x", "lib/x"),
            ("/etc/resolv.conf", "run/resolv.conf"),
            ("/loop/x", "loop/x"),
        ] {
            assert_eq!(
                under_root(&root, Path::new(target)),
                root.join(inside),
                "{target}"
            );
        }
    }

    #[test]
    fn signal_group_kills_the_whole_group() {
        let tmp = TempDir::new();
        let pid_file = tmp.join("grandchild.pid");
        let sb = sandbox(Vec::new(), &tmp.0);
        // `exec` keeps the group at two processes we can both reap: the
        // leader via Child, the background sleep via the subreaper below.
        let mut cmd = sh(&format!(
            "sleep 30 & echo $! > {}; exec sleep 30",
            pid_file.display()
        ));
        sb.apply(&mut cmd).unwrap();
        let mut container = spawn(&mut cmd);
        let leader = container.0.id();

        let start = Instant::now();
        let grandchild: u32 = loop {
            let text = fs::read_to_string(&pid_file).unwrap_or_default();
            if text.ends_with('\n') {
                break text.trim().parse().unwrap();
            }
            assert!(start.elapsed() < DEADLINE, "grandchild pid never written");
            std::thread::sleep(Duration::from_millis(10));
        };
        let stat_path = PathBuf::from(format!("/proc/{grandchild}/stat"));
        let stat = fs::read_to_string(&stat_path).unwrap();
        // Fields after the parenthesised command: state, ppid, pgrp.
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let pgrp: u32 = after_comm.split(' ').nth(2).unwrap().parse().unwrap();
        assert_eq!(pgrp, leader, "the container is its own process group");

        // PID 1 may reap orphans late (seconds on the test VM), leaving a
        // zombie in /proc: adopt the grandchild to reap it and see it gone.
        // SAFETY: prctl with integer arguments has no memory-safety preconditions.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
            0
        );
        assert!(signal_group(leader, libc::SIGKILL));
        assert_eq!(container.wait().signal(), Some(libc::SIGKILL));
        let start = Instant::now();
        while stat_path.exists() {
            // SAFETY: a null status pointer is allowed; WNOHANG never blocks.
            unsafe {
                libc::waitpid(
                    grandchild as libc::pid_t,
                    std::ptr::null_mut(),
                    libc::WNOHANG,
                )
            };
            assert!(
                start.elapsed() < DEADLINE,
                "grandchild {grandchild} survived"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn signal_group_refuses_impossible_groups() {
        // Signal 0 only probes, so a broken guard could not hurt anything.
        assert!(!signal_group(0, 0));
        assert!(!signal_group(1, 0));
        assert!(!signal_group(u32::MAX, 0));
        let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Pids are always below pid_max, so no such group exists.
        assert!(!signal_group(pid_max, 0));
    }

    #[test]
    fn missing_source_fails_spawn() {
        let tmp = TempDir::new();
        let source = tmp.join("missing");
        let target = tmp.join("target");
        fs::create_dir(&target).unwrap();
        let sb = sandbox(vec![bind(&source, &target, false)], &tmp.0);
        let err = sb.prepare().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains(&*source.to_string_lossy()),
            "{err}"
        );

        let mut cmd = Command::new("true");
        sb.apply(&mut cmd).unwrap();
        let err = cmd.spawn().map(Running).err().expect("spawn must fail");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert_not_mounted(&target);
    }

    #[test]
    fn invalid_input_is_rejected_before_fork() {
        let tmp = TempDir::new();
        let relative = sandbox(vec![bind(&tmp.0, Path::new("rel"), false)], &tmp.0);
        let err = relative.apply(&mut sh("true")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut long = sandbox(Vec::new(), &tmp.0);
        long.hostname = Some("h".repeat(HOST_NAME_MAX + 1));
        let err = long.apply(&mut sh("true")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn fd_paths_are_formatted_without_allocation() {
        for (fd, expected) in [
            (0, c"/proc/self/fd/0"),
            (7, c"/proc/self/fd/7"),
            (123, c"/proc/self/fd/123"),
            (i32::MAX, c"/proc/self/fd/2147483647"),
        ] {
            let mut buf = [0xffu8; FD_PATH_LEN];
            let ptr = write_fd_path(&mut buf, fd);
            // SAFETY: write_fd_path NUL-terminates inside `buf`, which outlives `ptr`.
            assert_eq!(unsafe { std::ffi::CStr::from_ptr(ptr) }, expected);
        }
    }
}

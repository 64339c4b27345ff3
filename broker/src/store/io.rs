//! The file interface every byte of the store goes through.
//!
//! The store never touches `std::fs` directly: it asks a [`FileSystem`] for
//! [`StoreFile`]s and uses positional reads and writes (`pread`/`pwrite`), `set_len`
//! and `fsync`. Two implementations exist:
//!
//! - [`RealFs`]: `std::fs` on the local disk (the broker uses this).
//! - [`SimFs`]: an in-memory disk that remembers what was fsynced, so a test can pull
//!   the plug with [`SimFs::power_cut`]: every write not yet fsynced is dropped, and the
//!   last one is torn at a random byte (a prefix of it survives). Files whose creation
//!   was never made durable (no fsync of their directory) disappear. Handles opened
//!   before the cut fail afterwards, as a dead machine's would; reopening the store on
//!   the same `SimFs` is "the next boot".
//!
//! Why an interface rather than fault injection in the kernel: recovery is the part of
//! a message store that is hardest to get right and least exercised in production.
//! Simulating power loss in-process makes "every acknowledged message survives" a
//! deterministic, seeded unit test that runs in milliseconds.
//!
//! Simplifications of [`SimFs`], stated so nobody relies on them: directories always
//! exist once created (their own creation is treated as durable); removing a file is
//! durable at once; a torn write keeps a byte prefix (real disks tear at sector
//! granularity, which a byte prefix includes).

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// An open file of the store: positional I/O, so readers and the writer share it.
pub trait StoreFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at EOF).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file (with zeros) if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
    /// Reserves disk blocks for `offset..offset + len` without changing the length
    /// (`fallocate(FALLOC_FL_KEEP_SIZE)`), so that writing there later cannot run out of
    /// space: a full disk is refused here, before anything is written, instead of
    /// surfacing in a write or, worse, at writeback as an fsync error. A file system that
    /// cannot preallocate answers `Ok` (nothing is reserved; the free-space refusal
    /// remains the protection).
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()>;
}

/// Space on the device holding the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes the store can ever have: in use plus available (as `df` counts it, so space
    /// reserved for root or held back by the file system does not look "used").
    pub total: u64,
    /// Bytes still available to the store.
    pub available: u64,
}

impl DiskUsage {
    /// Fraction of the device in use, 0.0..=1.0.
    pub fn used_ratio(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.total.saturating_sub(self.available) as f64 / self.total as f64
    }
}

/// A directory tree of [`StoreFile`]s.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Opens `path` read-write; creates it (empty) if `create` and it does not exist.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>>;
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries (files and directories) directly in `dir`; empty if missing.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the creation and removal of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Space on the device holding `path`, if known.
    fn disk_usage(&self, path: &Path) -> io::Result<Option<DiskUsage>>;
    /// Takes the exclusive lock file `path` for this process, recording `holder` in it;
    /// [`Locked::Busy`] with the holder's record while another process has it. The
    /// lock ends with the returned guard, or with the process (kill -9 included).
    fn try_lock(&self, path: &Path, holder: &str) -> io::Result<Locked>;
}

/// What [`FileSystem::try_lock`] found.
#[derive(Debug)]
pub enum Locked {
    /// This process holds the lock until the guard is dropped.
    Held(LockGuard),
    /// Another process holds it; its record (pid, host, since).
    Busy(String),
}

/// Holds a store lock; dropping it releases the lock.
pub struct LockGuard(#[allow(dead_code)] Box<dyn Send + Sync>);

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
pub fn read_full(file: &dyn StoreFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

// ---------------------------------------------------------------------------------
// Real files.

/// The local file system through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl StoreFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        };
        loop {
            // SAFETY: a valid open descriptor; fallocate has no memory effects.
            let rc = unsafe {
                libc::fallocate(self.0.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len)
            };
            if rc == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Not every file system preallocates (older NFS, some FUSE ones).
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return Ok(()),
                _ => return Err(err),
            }
        }
    }
}

impl FileSystem for RealFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile(file)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn disk_usage(&self, path: &Path) -> io::Result<Option<DiskUsage>> {
        statvfs(path).map(Some)
    }
    fn try_lock(&self, path: &Path, holder: &str) -> io::Result<Locked> {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // flock, not fcntl locks: the kernel drops it when the process dies, and a
        // second open in the same process conflicts too.
        // SAFETY: a valid open descriptor; flock has no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
            let mut record = String::new();
            file.read_to_string(&mut record)?;
            return Ok(Locked::Busy(record.trim().to_owned()));
        }
        file.set_len(0)?;
        file.write_all_at(holder.as_bytes(), 0)?;
        file.flush()?;
        Ok(Locked::Held(LockGuard(Box::new(file))))
    }
}

/// `statvfs(3)` of the file system holding `path`.
fn statvfs(path: &Path) -> io::Result<DiskUsage> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` is plain old data; all-zero is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    let used = (st.f_blocks as u64).saturating_sub(st.f_bfree as u64);
    let available = st.f_bavail as u64;
    // df's Use%: used / (used + available). Counting reserved blocks as used would make a
    // device with a large reservation look full (seen: 75 % "used" with 68 GB free).
    Ok(DiskUsage {
        total: used.saturating_add(available).saturating_mul(frsize),
        available: available.saturating_mul(frsize),
    })
}

// ---------------------------------------------------------------------------------
// Simulated disk with power cuts.

/// A small, seeded xorshift64* generator: deterministic randomized tests without a
/// dependency.
#[derive(Debug, Clone)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish value in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// A write or length change not yet made durable.
#[derive(Debug, Clone)]
enum PendingOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl PendingOp {
    fn apply(&self, content: &mut Vec<u8>) {
        match self {
            PendingOp::Write { offset, data } => write_into(content, *offset, data),
            PendingOp::SetLen(len) => content.resize(*len as usize, 0),
        }
    }
}

fn write_into(content: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[start..end].copy_from_slice(data);
}

#[derive(Debug, Default)]
struct SimFileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<PendingOp>,
    /// Whether the directory entry survives a power cut.
    entry_durable: bool,
    /// End of the blocks reserved by `allocate` (they count as used space even past
    /// the length, as on a real disk).
    allocated: u64,
}

impl SimFileData {
    /// Bytes of the device this file takes: its length or its reservation.
    fn footprint(&self) -> u64 {
        (self.current.len() as u64).max(self.allocated)
    }
}

#[derive(Debug, Default)]
struct SimState {
    epoch: u64,
    paths: HashMap<PathBuf, u64>,
    files: HashMap<u64, SimFileData>,
    dirs: BTreeSet<PathBuf>,
    next_id: u64,
    capacity: Option<u64>,
    /// Lock files held: path → (the boot that took it, the holder's record). A power
    /// cut is a new boot, so it ends every lock, as a dead process's locks end.
    locks: HashMap<PathBuf, (u64, String)>,
}

/// A power cut armed to happen at a future operation.
#[derive(Debug)]
struct Trip {
    remaining: u64,
    rng: XorShift64,
    ordered: bool,
}

/// An in-memory disk for tests that tracks durability and simulates power cuts.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
    syncs: Arc<AtomicU64>,
    sync_delay: Arc<Mutex<Duration>>,
    /// Syncs still to fail, as a disk's write error surfaces in fsync.
    sync_failures: Arc<AtomicU64>,
    /// When set, the next write stores only this many bytes, then fails with EIO.
    short_write: Arc<Mutex<Option<usize>>>,
    trip: Arc<Mutex<Option<Trip>>>,
}

impl SimState {
    /// Bytes the files take on the device.
    fn used(&self) -> u64 {
        self.paths
            .values()
            .filter_map(|id| self.files.get(id))
            .map(SimFileData::footprint)
            .sum()
    }
}

fn lock_state(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss: this handle belongs to a dead machine")
}

impl SimFs {
    /// An empty simulated disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// ENOSPC unless file `id` may grow to `len` bytes within the capacity (a full
    /// disk refuses the write and changes nothing).
    fn reserve(&self, id: u64, len: u64) -> io::Result<()> {
        let st = lock_state(&self.state);
        let Some(total) = st.capacity else {
            return Ok(());
        };
        let current = st.files.get(&id).map_or(0, SimFileData::footprint);
        if len <= current {
            return Ok(());
        }
        if st.used() + (len - current) > total {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    /// Makes the next write store only its first `keep` bytes and then fail with EIO (a
    /// write cut short by a failing device).
    pub fn cut_next_write(&self, keep: usize) {
        *self
            .short_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(keep);
    }

    /// Makes the next `n` fsyncs fail with EIO the way Linux does: the file's unsynced
    /// writes never reach the disk (reads still see them until the next boot), and a
    /// later fsync succeeds as if nothing were lost.
    pub fn fail_next_syncs(&self, n: u64) {
        self.sync_failures.store(n, Ordering::SeqCst);
    }

    /// Sets the device size [`FileSystem::disk_usage`] reports (used = bytes in files
    /// and their reservations).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        lock_state(&self.state).capacity = bytes;
    }

    /// Cancels every injected fault (a pending short write, fsyncs still to fail, the
    /// capacity): a fault armed when a power cut came first must not hit recovery.
    pub fn clear_faults(&self) {
        *self
            .short_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.sync_failures.store(0, Ordering::SeqCst);
        self.set_capacity(None);
    }

    /// Makes every file `sync` sleep this long first (to make group commit visible).
    pub fn set_sync_delay(&self, delay: Duration) {
        *self
            .sync_delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = delay;
    }

    /// Number of file syncs so far.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Arms a power cut that happens instead of the mutating operation (write,
    /// `set_len`, sync, create, remove, directory sync) after the next `after_ops`
    /// ones: a cut at an arbitrary point inside whatever the store is doing. That
    /// operation and every later one on old handles fail. `ordered` selects
    /// [`SimFs::power_cut_ordered`].
    pub fn arm_power_cut(&self, after_ops: u64, seed: u64, ordered: bool) {
        let trip = Trip {
            remaining: after_ops,
            rng: XorShift64::new(seed),
            ordered,
        };
        *self.trip.lock().unwrap_or_else(PoisonError::into_inner) = Some(trip);
    }

    /// Cancels an armed power cut.
    pub fn disarm(&self) {
        *self.trip.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Number of power cuts so far.
    pub fn power_cuts(&self) -> u64 {
        lock_state(&self.state).epoch
    }

    /// Counts a mutating operation; performs the armed cut when it is due.
    fn tick(&self) -> io::Result<()> {
        let mut armed = self.trip.lock().unwrap_or_else(PoisonError::into_inner);
        match armed.as_mut() {
            None => return Ok(()),
            Some(trip) if trip.remaining > 0 => {
                trip.remaining -= 1;
                return Ok(());
            }
            Some(_) => {}
        }
        if let Some(mut trip) = armed.take() {
            drop(armed);
            self.cut(&mut trip.rng, trip.ordered);
        }
        Err(power_lost())
    }

    /// Pulls the plug: drops every unsynced write of every file, then tears the last
    /// unsynced write of each file at a random byte (a random prefix survives); files
    /// whose directory entry was never synced vanish. Open handles fail from now on.
    pub fn power_cut(&self, rng: &mut XorShift64) {
        self.cut(rng, false);
    }

    /// Like [`SimFs::power_cut`], but first keeps a random number of each file's
    /// unsynced writes in order (as a disk that writes back in order would) and tears
    /// the next one.
    pub fn power_cut_ordered(&self, rng: &mut XorShift64) {
        self.cut(rng, true);
    }

    fn cut(&self, rng: &mut XorShift64, ordered: bool) {
        let mut st = lock_state(&self.state);
        st.epoch += 1;
        let lost: Vec<u64> = st
            .files
            .iter()
            .filter(|(_, f)| !f.entry_durable)
            .map(|(id, _)| *id)
            .collect();
        for id in &lost {
            st.files.remove(id);
        }
        st.paths.retain(|_, id| !lost.contains(id));
        for file in st.files.values_mut() {
            Self::cut_file(file, rng, ordered);
        }
    }

    fn cut_file(file: &mut SimFileData, rng: &mut XorShift64, ordered: bool) {
        let mut content = file.durable.clone();
        let pending = std::mem::take(&mut file.pending);
        let torn_index = if ordered {
            rng.below(pending.len() as u64 + 1) as usize
        } else {
            pending.len().saturating_sub(1)
        };
        if ordered {
            for op in &pending[..torn_index] {
                op.apply(&mut content);
            }
        }
        if let Some(op) = pending.get(torn_index) {
            Self::apply_torn(op, &mut content, rng);
        }
        file.current = content.clone();
        file.durable = content;
    }

    fn apply_torn(op: &PendingOp, content: &mut Vec<u8>, rng: &mut XorShift64) {
        match op {
            PendingOp::Write { offset, data } => {
                let keep = rng.below(data.len() as u64 + 1) as usize;
                if keep > 0 {
                    write_into(content, *offset, &data[..keep]);
                }
            }
            PendingOp::SetLen(_) if rng.one_in(2) => op.apply(content),
            PendingOp::SetLen(_) => {}
        }
    }

    fn handle(&self, id: u64, epoch: u64) -> Arc<dyn StoreFile> {
        Arc::new(SimHandle {
            fs: self.clone(),
            id,
            epoch,
        })
    }
}

/// A held [`SimFs`] lock; releases it on drop (unless a power cut already did).
struct SimLock {
    state: Arc<Mutex<SimState>>,
    path: PathBuf,
    epoch: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = lock_state(&self.state);
        if st
            .locks
            .get(&self.path)
            .is_some_and(|(e, _)| *e == self.epoch)
        {
            st.locks.remove(&self.path);
        }
    }
}

impl FileSystem for SimFs {
    fn try_lock(&self, path: &Path, holder: &str) -> io::Result<Locked> {
        let mut st = lock_state(&self.state);
        let epoch = st.epoch;
        if let Some((taken, record)) = st.locks.get(path)
            && *taken == epoch
        {
            return Ok(Locked::Busy(record.clone()));
        }
        st.locks.insert(path.to_owned(), (epoch, holder.to_owned()));
        Ok(Locked::Held(LockGuard(Box::new(SimLock {
            state: self.state.clone(),
            path: path.to_owned(),
            epoch,
        }))))
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StoreFile>> {
        let exists = lock_state(&self.state).paths.contains_key(path);
        if !exists && create {
            self.tick()?;
        }
        let mut st = lock_state(&self.state);
        let epoch = st.epoch;
        if let Some(id) = st.paths.get(path).copied() {
            return Ok(self.handle(id, epoch));
        }
        if !create {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                path.display().to_string(),
            ));
        }
        let id = st.next_id;
        st.next_id += 1;
        st.paths.insert(path.to_path_buf(), id);
        st.files.insert(id, SimFileData::default());
        Ok(self.handle(id, epoch))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = lock_state(&self.state);
        for ancestor in path.ancestors() {
            st.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = lock_state(&self.state);
        let files = st.paths.keys().map(PathBuf::as_path);
        let dirs = st.dirs.iter().map(PathBuf::as_path);
        let names: BTreeSet<String> = files
            .chain(dirs)
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        Ok(names.into_iter().collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = lock_state(&self.state);
        st.paths.contains_key(path) || st.dirs.contains(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.tick()?;
        let mut st = lock_state(&self.state);
        match st.paths.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                path.display().to_string(),
            )),
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.tick()?;
        let mut st = lock_state(&self.state);
        let ids: Vec<u64> = st
            .paths
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(_, id)| *id)
            .collect();
        for id in ids {
            if let Some(f) = st.files.get_mut(&id) {
                f.entry_durable = true;
            }
        }
        Ok(())
    }

    fn disk_usage(&self, _path: &Path) -> io::Result<Option<DiskUsage>> {
        let st = lock_state(&self.state);
        let Some(total) = st.capacity else {
            return Ok(None);
        };
        Ok(Some(DiskUsage {
            total,
            available: total.saturating_sub(st.used()),
        }))
    }
}

/// A handle to a [`SimFs`] file, valid until the next power cut.
#[derive(Debug)]
struct SimHandle {
    fs: SimFs,
    id: u64,
    epoch: u64,
}

impl SimHandle {
    fn with<T>(&self, f: impl FnOnce(&mut SimFileData) -> T) -> io::Result<T> {
        let mut st = lock_state(&self.fs.state);
        if st.epoch != self.epoch {
            return Err(power_lost());
        }
        let file = st.files.get_mut(&self.id).ok_or_else(power_lost)?;
        Ok(f(file))
    }
}

impl StoreFile for SimHandle {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|f| {
            let start = (offset as usize).min(f.current.len());
            let n = buf.len().min(f.current.len() - start);
            buf[..n].copy_from_slice(&f.current[start..start + n]);
            n
        })
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.fs.tick()?;
        self.fs.reserve(self.id, offset + buf.len() as u64)?;
        let cut = self
            .fs
            .short_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let written = &buf[..cut.map_or(buf.len(), |keep| keep.min(buf.len()))];
        self.with(|f| {
            write_into(&mut f.current, offset, written);
            f.pending.push(PendingOp::Write {
                offset,
                data: written.to_vec(),
            });
        })?;
        match cut {
            Some(_) => Err(io::Error::from_raw_os_error(libc::EIO)),
            None => Ok(()),
        }
    }
    fn size(&self) -> io::Result<u64> {
        self.with(|f| f.current.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fs.tick()?;
        self.fs.reserve(self.id, len)?;
        self.with(|f| {
            // Truncating frees the blocks past the new end, reserved ones included.
            f.allocated = f.allocated.min(len);
            f.current.resize(len as usize, 0);
            f.pending.push(PendingOp::SetLen(len));
        })
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fs.tick()?;
        let end = offset.saturating_add(len);
        self.fs.reserve(self.id, end)?;
        // Simplification: a reservation is kept across a power cut (it only ever
        // matters for space accounting, never for what recovery reads).
        self.with(|f| f.allocated = f.allocated.max(end))
    }
    fn sync(&self) -> io::Result<()> {
        let delay = *self
            .fs
            .sync_delay
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        self.fs.tick()?;
        self.fs.syncs.fetch_add(1, Ordering::Relaxed);
        let fail = self
            .fs
            .sync_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            // The failed pages are marked clean: their writes are gone for good.
            self.with(|f| f.pending.clear())?;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.with(|f| {
            // The directory entry stays volatile until `sync_dir` (the POSIX rule).
            for op in std::mem::take(&mut f.pending) {
                op.apply(&mut f.durable);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_sync(fs: &SimFs, path: &Path) -> Arc<dyn StoreFile> {
        let f = fs.open(path, true).expect("open");
        fs.sync_dir(path.parent().expect("parent"))
            .expect("sync dir");
        f.write_at(b"hello ", 0).expect("write");
        f.sync().expect("sync");
        f
    }

    #[test]
    fn real_allocation_reserves_blocks_and_keeps_the_length() {
        use std::os::unix::fs::MetadataExt;
        let path = std::env::temp_dir().join(format!("mq-alloc-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let f = RealFs.open(&path, true).expect("create");
        f.write_at(b"head", 0).expect("write");
        f.allocate(4, 1 << 20).expect("allocate");
        let meta = std::fs::metadata(&path).expect("metadata");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(meta.len(), 4, "the length stays what was written");
        assert!(
            meta.blocks() * 512 >= 1 << 20,
            "{} bytes reserved",
            meta.blocks() * 512
        );
    }

    #[test]
    fn power_cut_keeps_synced_data_and_a_prefix_of_the_last_write() {
        for seed in 1..50 {
            let fs = SimFs::new();
            let path = Path::new("/d/f");
            let f = write_sync(&fs, path);
            f.write_at(b"lost ", 6).expect("write");
            f.write_at(b"torn!", 11).expect("write");
            fs.power_cut(&mut XorShift64::new(seed));
            assert!(
                f.read_at(&mut [0; 4], 0).is_err(),
                "old handle must be dead"
            );
            let g = fs.open(path, false).expect("file survives");
            let mut buf = vec![0; 64];
            let n = read_full(g.as_ref(), &mut buf, 0).expect("read");
            assert_eq!(&buf[..6], b"hello ");
            if n > 6 {
                // Only a prefix of the last write, after a hole of zeros.
                assert!(
                    buf[6..11].iter().all(|&b| b == 0),
                    "dropped write resurfaced"
                );
                assert_eq!(&buf[11..n], &b"torn!"[..n - 11]);
            }
        }
    }

    #[test]
    fn ordered_power_cut_keeps_an_in_order_prefix() {
        for seed in 1..50 {
            let fs = SimFs::new();
            let path = Path::new("/d/f");
            let f = write_sync(&fs, path);
            for i in 0..5u8 {
                f.write_at(&[b'a' + i; 4], 6 + 4 * i as u64).expect("write");
            }
            fs.power_cut_ordered(&mut XorShift64::new(seed));
            let g = fs.open(path, false).expect("open");
            let mut buf = vec![0; 64];
            let n = read_full(g.as_ref(), &mut buf, 0).expect("read");
            let expected = b"hello aaaabbbbccccddddeeee";
            assert_eq!(&buf[..n], &expected[..n], "seed {seed}");
        }
    }

    #[test]
    fn an_armed_cut_fires_at_the_chosen_operation() {
        let fs = SimFs::new();
        let f = write_sync(&fs, Path::new("/d/f"));
        fs.arm_power_cut(2, 1, false);
        f.write_at(b"1", 6).expect("first op passes");
        f.write_at(b"2", 7).expect("second op passes");
        assert!(f.sync().is_err(), "the third op is the cut");
        assert_eq!(fs.power_cuts(), 1);
        assert!(f.write_at(b"3", 8).is_err(), "dead handle");
        let g = fs.open(Path::new("/d/f"), false).expect("reopen");
        g.write_at(b"x", 0).expect("new handles work");
    }

    #[test]
    fn unsynced_directory_entries_vanish() {
        let fs = SimFs::new();
        let f = fs.open(Path::new("/d/new"), true).expect("open");
        f.write_at(b"data", 0).expect("write");
        f.sync().expect("sync");
        fs.power_cut(&mut XorShift64::new(7));
        assert!(!fs.exists(Path::new("/d/new")));
    }

    #[test]
    fn lists_files_and_directories() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/r/a/b")).expect("mkdir");
        fs.open(Path::new("/r/f"), true).expect("open");
        assert_eq!(fs.list(Path::new("/r")).expect("list"), vec!["a", "f"]);
        assert!(fs.list(Path::new("/none")).expect("list").is_empty());
    }

    #[test]
    fn real_fs_round_trip() {
        let dir = std::env::temp_dir().join(format!("mq-io-{}", std::process::id()));
        let fs = RealFs;
        fs.create_dir_all(&dir).expect("mkdir");
        let path = dir.join("f");
        let f = fs.open(&path, true).expect("open");
        f.write_at(b"abc", 2).expect("write");
        f.sync().expect("sync");
        fs.sync_dir(&dir).expect("sync dir");
        let mut buf = [9u8; 5];
        assert_eq!(read_full(f.as_ref(), &mut buf, 0).expect("read"), 5);
        assert_eq!(&buf, b"\0\0abc");
        assert_eq!(fs.list(&dir).expect("list"), vec!["f"]);
        let usage = fs.disk_usage(&dir).expect("statvfs").expect("known");
        assert!(usage.total > 0 && usage.used_ratio() <= 1.0);
        fs.remove_file(&path).expect("remove");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

//! The message index: find messages by key (each token of the `KEYS` property) and by
//! `UNIQ_KEY`, within a topic.
//!
//! Design: an LSM-style sequence of immutable *runs*. New entries `(hash, commit-log
//! offset)` — the hash is 64-bit FNV-1a of `topic#key`, the key format of RocketMQ's
//! `IndexService` — go to an in-memory buffer. When it holds `run_entries` entries it
//! is sorted and written as a run file `index/<first commit-log offset, 20 digits>`;
//! a lookup binary-searches each run and scans the buffer. So memory is bounded by the
//! buffer size (16 bytes per entry, ≤ 2 buffers while one is being written), not by the
//! store size, and the files need no in-place updates (unlike RocketMQ's `IndexFile`,
//! whose hash slots are rewritten through mmap, which a power cut can tear anywhere).
//!
//! Run file: a 40-byte header `[magic "MQIX"][version 1][begin u64][end u64][count u64]
//! [entries CRC32][header CRC32]` and `count` entries of `[hash u64][offset u64]`
//! sorted. `[begin, end)` is the commit-log range the run covers. Runs are fsynced when
//! written; the buffer is not persisted — after a crash, recovery re-indexes the log
//! from the last run's end (a torn last run fails its CRC and is deleted first). Hash
//! collisions are possible, so the store verifies each hit against the message.
//!
//! Lookups by store time go through the consume queues (see `MessageStore`), which are
//! ordered by store time already.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::commitlog::{file_name, lock, parse_file_name};
use super::error::{IoContext, Result};
use super::io::{FileSystem, StoreFile, read_full};

/// Default entries per run (16 MiB of memory at most per buffer).
pub const DEFAULT_RUN_ENTRIES: usize = 1 << 20;
const HEADER_LEN: usize = 40;
const ENTRY_LEN: usize = 16;
const RUN_MAGIC: u32 = 0x4D51_4958;
const RUN_VERSION: u32 = 1;

/// Index key hash: FNV-1a 64 of `topic#key`.
pub fn key_hash(topic: &str, key: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in topic
        .bytes()
        .chain(std::iter::once(b'#'))
        .chain(key.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct IndexEntry {
    hash: u64,
    phys: u64,
}

#[derive(Debug, Clone)]
struct Run {
    begin: u64,
    end: u64,
    count: u64,
    file: Arc<dyn StoreFile>,
}

/// A buffer being written as a run.
#[derive(Debug, Clone)]
struct SealJob {
    begin: u64,
    end: u64,
    entries: Arc<Vec<IndexEntry>>,
}

#[derive(Debug)]
struct IndexState {
    runs: Vec<Run>,
    mem: Vec<IndexEntry>,
    sealing: Option<SealJob>,
    /// Commit-log offset where the buffer's range begins.
    mem_begin: u64,
    /// Commit-log offset up to which messages were indexed.
    end: u64,
}

/// The key / unique-key index.
#[derive(Debug)]
pub struct MessageIndex {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    run_entries: usize,
    state: RwLock<IndexState>,
    seal_lock: Mutex<()>,
}

struct Header {
    begin: u64,
    end: u64,
    count: u64,
    entries_crc: u32,
}

impl MessageIndex {
    /// Opens the index in `dir`, dropping a torn last run. `log_min` is where the
    /// commit log starts (the index's start when it has no run).
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        run_entries: usize,
        log_min: u64,
    ) -> Result<Self> {
        fs.create_dir_all(dir).at(dir)?;
        let runs = Self::load_runs(fs.as_ref(), dir)?;
        let end = runs.last().map_or(log_min, |r| r.end);
        let state = IndexState {
            runs,
            mem: Vec::new(),
            sealing: None,
            mem_begin: end,
            end,
        };
        Ok(Self {
            fs,
            dir: dir.to_path_buf(),
            run_entries: run_entries.max(1),
            state: RwLock::new(state),
            seal_lock: Mutex::new(()),
        })
    }

    fn load_runs(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<Run>> {
        let mut begins: Vec<u64> = fs
            .list(dir)
            .at(dir)?
            .iter()
            .filter_map(|n| parse_file_name(n))
            .collect();
        begins.sort_unstable();
        let mut runs = Vec::with_capacity(begins.len());
        let last = begins.len().saturating_sub(1);
        for (i, begin) in begins.into_iter().enumerate() {
            let path = dir.join(file_name(begin));
            let file = fs.open(&path, false).at(&path)?;
            match Self::check_run(file.as_ref(), begin, i == last).at(&path)? {
                Some(h) => runs.push(Run {
                    begin: h.begin,
                    end: h.end,
                    count: h.count,
                    file,
                }),
                None => {
                    tracing::warn!(path = %path.display(), "dropping damaged index run; the log will be re-indexed");
                    fs.remove_file(&path).at(&path)?;
                }
            }
        }
        Ok(runs)
    }

    /// Validates a run's header (and its entries' CRC if `full`).
    fn check_run(file: &dyn StoreFile, begin: u64, full: bool) -> std::io::Result<Option<Header>> {
        let mut raw = [0u8; HEADER_LEN];
        if read_full(file, &mut raw, 0)? < HEADER_LEN {
            return Ok(None);
        }
        // A run covers a non-empty range of the log starting at its name.
        let Some(h) = parse_header(&raw).filter(|h| h.begin == begin && h.end > h.begin) else {
            return Ok(None);
        };
        // A damaged count must not overflow (nor, wrapped, match the file's size).
        let size = file.size()?;
        let body_len = h
            .count
            .checked_mul(ENTRY_LEN as u64)
            .filter(|&len| size.checked_sub(HEADER_LEN as u64) == Some(len))
            .and_then(|len| usize::try_from(len).ok());
        let Some(body_len) = body_len else {
            return Ok(None);
        };
        if full {
            let mut body = vec![0u8; body_len];
            read_full(file, &mut body, HEADER_LEN as u64)?;
            if crc32fast::hash(&body) != h.entries_crc {
                return Ok(None);
            }
        }
        Ok(Some(h))
    }

    fn read_state(&self) -> RwLockReadGuard<'_, IndexState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, IndexState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// End of the last run: everything before it is durably indexed.
    pub fn sealed_end(&self) -> Option<u64> {
        self.read_state().runs.last().map(|r| r.end)
    }

    /// Commit-log offset up to which messages were indexed (durably or in memory).
    pub fn indexed_end(&self) -> u64 {
        self.read_state().end
    }

    /// Entries in memory (buffer plus the run being written).
    pub fn memory_entries(&self) -> usize {
        let st = self.read_state();
        st.mem.len() + st.sealing.as_ref().map_or(0, |j| j.entries.len())
    }

    /// Whether the buffer is so far over its size that the writer should seal it now.
    pub fn needs_urgent_seal(&self) -> bool {
        self.read_state().mem.len() >= 2 * self.run_entries
    }

    /// Indexes the message `[phys, end)` under `hashes`; ignored if already indexed.
    pub fn add(&self, phys: u64, end: u64, hashes: impl IntoIterator<Item = u64>) {
        let mut st = self.write_state();
        if phys < st.end {
            return;
        }
        st.mem
            .extend(hashes.into_iter().map(|hash| IndexEntry { hash, phys }));
        st.end = end;
    }

    /// Records that everything before `end` is indexed (messages without keys, end
    /// markers).
    pub fn advance(&self, end: u64) {
        let mut st = self.write_state();
        st.end = st.end.max(end);
    }

    /// Commit-log offsets of messages indexed under `hash`, newest first, at most `max`.
    pub fn lookup(&self, hash: u64, max: usize) -> Result<Vec<u64>> {
        let (mut hits, runs) = {
            let st = self.read_state();
            let mut hits: Vec<u64> = st
                .mem
                .iter()
                .rev()
                .filter(|e| e.hash == hash)
                .map(|e| e.phys)
                .collect();
            if let Some(job) = &st.sealing {
                hits.extend(
                    job.entries
                        .iter()
                        .rev()
                        .filter(|e| e.hash == hash)
                        .map(|e| e.phys),
                );
            }
            (hits, st.runs.clone())
        };
        for run in runs.iter().rev() {
            if hits.len() >= max {
                break;
            }
            let mut found = self.run_lookup(run, hash)?;
            found.reverse();
            hits.extend(found);
        }
        hits.truncate(max);
        Ok(hits)
    }

    /// Offsets under `hash` in one run (ascending).
    fn run_lookup(&self, run: &Run, hash: u64) -> Result<Vec<u64>> {
        let path = self.dir.join(file_name(run.begin));
        let (mut lo, mut hi) = (0u64, run.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = read_entries(run, mid, 1).at(&path)?;
            if entry.first().is_some_and(|e| e.hash >= hash) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let mut out = Vec::new();
        while lo < run.count {
            let batch = read_entries(run, lo, 64).at(&path)?;
            let matching = batch.iter().take_while(|e| e.hash == hash).count();
            out.extend(batch[..matching].iter().map(|e| e.phys));
            if matching < batch.len() || batch.is_empty() {
                break;
            }
            lo += batch.len() as u64;
        }
        Ok(out)
    }

    /// Writes the buffer as a run if it is full (or if `force` and it holds anything
    /// new). Lookups keep seeing the entries while the run is written.
    pub fn seal(&self, force: bool) -> Result<()> {
        let _one_at_a_time = lock(&self.seal_lock);
        let Some(job) = self.begin_seal(force) else {
            return Ok(());
        };
        let file = self.write_run(&job)?;
        let mut st = self.write_state();
        st.runs.push(Run {
            begin: job.begin,
            end: job.end,
            count: job.entries.len() as u64,
            file,
        });
        st.sealing = None;
        Ok(())
    }

    fn begin_seal(&self, force: bool) -> Option<SealJob> {
        let mut st = self.write_state();
        if let Some(job) = &st.sealing {
            return Some(job.clone());
        }
        let full = st.mem.len() >= self.run_entries;
        let anything_new = st.end > st.mem_begin;
        if !(full || force && anything_new) {
            return None;
        }
        let entries = Arc::new(std::mem::take(&mut st.mem));
        let job = SealJob {
            begin: st.mem_begin,
            end: st.end,
            entries,
        };
        st.mem_begin = st.end;
        st.sealing = Some(job.clone());
        Some(job)
    }

    fn write_run(&self, job: &SealJob) -> Result<Arc<dyn StoreFile>> {
        let mut sorted = job.entries.as_ref().clone();
        sorted.sort_unstable();
        let mut body = Vec::with_capacity(sorted.len() * ENTRY_LEN);
        for e in &sorted {
            body.extend_from_slice(&e.hash.to_be_bytes());
            body.extend_from_slice(&e.phys.to_be_bytes());
        }
        let header = encode_header(&Header {
            begin: job.begin,
            end: job.end,
            count: sorted.len() as u64,
            entries_crc: crc32fast::hash(&body),
        });
        let path = self.dir.join(file_name(job.begin));
        let file = self.fs.open(&path, true).at(&path)?;
        file.set_len(0).at(&path)?;
        file.write_at(&header, 0).at(&path)?;
        file.write_at(&body, HEADER_LEN as u64).at(&path)?;
        file.sync().at(&path)?;
        self.fs.sync_dir(&self.dir).at(&self.dir)?;
        Ok(file)
    }

    /// Recovery: forgets runs reaching past `end` (the log is shorter than they say)
    /// and the buffer; returns where indexing must resume.
    pub fn truncate(&self, end: u64) -> Result<u64> {
        let _one_at_a_time = lock(&self.seal_lock);
        let mut st = self.write_state();
        while st.runs.last().is_some_and(|r| r.end > end) {
            if let Some(run) = st.runs.pop() {
                let path = self.dir.join(file_name(run.begin));
                self.fs.remove_file(&path).at(&path)?;
            }
        }
        self.fs.sync_dir(&self.dir).at(&self.dir)?;
        let resume = st.runs.last().map_or(st.mem_begin.min(end), |r| r.end);
        st.mem.clear();
        st.sealing = None;
        st.mem_begin = resume;
        st.end = resume;
        Ok(resume)
    }

    /// Retention: deletes runs that end at or before `log_min`.
    pub fn delete_before(&self, log_min: u64) -> Result<()> {
        let removed: Vec<Run> = {
            let mut st = self.write_state();
            let n = st.runs.iter().take_while(|r| r.end <= log_min).count();
            st.runs.drain(..n).collect()
        };
        for run in &removed {
            let path = self.dir.join(file_name(run.begin));
            self.fs.remove_file(&path).at(&path)?;
        }
        if !removed.is_empty() {
            self.fs.sync_dir(&self.dir).at(&self.dir)?;
        }
        Ok(())
    }
}

fn read_entries(run: &Run, from: u64, count: u64) -> std::io::Result<Vec<IndexEntry>> {
    let count = count.min(run.count.saturating_sub(from));
    let mut buf = vec![0u8; count as usize * ENTRY_LEN];
    let n = read_full(
        run.file.as_ref(),
        &mut buf,
        HEADER_LEN as u64 + from * ENTRY_LEN as u64,
    )?;
    Ok(buf[..n - n % ENTRY_LEN]
        .chunks_exact(ENTRY_LEN)
        .map(|c| {
            let (hash, phys) = c.split_at(8);
            IndexEntry {
                hash: u64::from_be_bytes(hash.try_into().unwrap_or_default()),
                phys: u64::from_be_bytes(phys.try_into().unwrap_or_default()),
            }
        })
        .collect())
}

fn encode_header(h: &Header) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..4].copy_from_slice(&RUN_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&RUN_VERSION.to_be_bytes());
    out[8..16].copy_from_slice(&h.begin.to_be_bytes());
    out[16..24].copy_from_slice(&h.end.to_be_bytes());
    out[24..32].copy_from_slice(&h.count.to_be_bytes());
    out[32..36].copy_from_slice(&h.entries_crc.to_be_bytes());
    let crc = crc32fast::hash(&out[..36]);
    out[36..40].copy_from_slice(&crc.to_be_bytes());
    out
}

fn parse_header(raw: &[u8; HEADER_LEN]) -> Option<Header> {
    let u32_at = |at: usize| {
        raw.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let u64_at = |at: usize| {
        raw.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    let valid = u32_at(0)? == RUN_MAGIC
        && u32_at(4)? == RUN_VERSION
        && u32_at(36)? == crc32fast::hash(&raw[..36]);
    valid.then_some(())?;
    Some(Header {
        begin: u64_at(8)?,
        end: u64_at(16)?,
        count: u64_at(24)?,
        entries_crc: u32_at(32)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::io::{SimFs, XorShift64};

    fn open(fs: &SimFs, run_entries: usize) -> MessageIndex {
        MessageIndex::open(Arc::new(fs.clone()), Path::new("/s/index"), run_entries, 0)
            .expect("open")
    }

    fn fill(index: &MessageIndex, from: u64, to: u64) {
        for i in from..to {
            let key = format!("k{}", i % 10);
            index.add(
                i * 100,
                i * 100 + 100,
                [key_hash("T", &key), key_hash("T", &format!("u{i}"))],
            );
            index.seal(false).expect("seal");
        }
    }

    #[test]
    fn finds_keys_in_memory_and_in_runs_newest_first() {
        let fs = SimFs::new();
        let index = open(&fs, 8);
        fill(&index, 0, 50);
        assert!(fs.list(Path::new("/s/index")).expect("list").len() >= 10);
        let hits = index.lookup(key_hash("T", "k3"), 100).expect("lookup");
        assert_eq!(hits, vec![4300, 3300, 2300, 1300, 300]);
        assert_eq!(
            index.lookup(key_hash("T", "u17"), 10).expect("lookup"),
            vec![1700]
        );
        assert_eq!(
            index.lookup(key_hash("T", "k3"), 2).expect("lookup"),
            vec![4300, 3300]
        );
        assert!(
            index
                .lookup(key_hash("Other", "k3"), 10)
                .expect("lookup")
                .is_empty()
        );
        assert!(index.memory_entries() < 8);
    }

    #[test]
    fn reopen_keeps_sealed_runs_and_drops_a_torn_last_run() {
        for seed in 1..20 {
            let fs = SimFs::new();
            let index = open(&fs, 8);
            fill(&index, 0, 20);
            index.seal(true).expect("seal");
            let sealed = index.sealed_end().expect("runs");
            assert_eq!(sealed, 2000);
            // A run whose write is torn by a power cut.
            index.add(2000, 2100, [key_hash("T", "late")]);
            let job = index.begin_seal(true).expect("job");
            let path = Path::new("/s/index").join(file_name(job.begin));
            let file = fs.open(&path, true).expect("open");
            fs.sync_dir(Path::new("/s/index")).expect("sync dir");
            file.write_at(&[1u8; 56], 0).expect("write");
            fs.power_cut(&mut XorShift64::new(seed));
            let index = open(&fs, 8);
            assert_eq!(index.sealed_end(), Some(2000), "seed {seed}");
            assert_eq!(
                index.lookup(key_hash("T", "u19"), 10).expect("lookup"),
                vec![1900]
            );
        }
    }

    /// A run file with a header whose CRC is right (damage that kept it, or a bug).
    fn plant_run(fs: &SimFs, begin: u64, end: u64, count: u64, body: &[u8]) {
        let header = encode_header(&Header {
            begin,
            end,
            count,
            entries_crc: crc32fast::hash(body),
        });
        let path = Path::new("/s/index").join(file_name(begin));
        let file = fs.open(&path, true).expect("open");
        file.write_at(&header, 0).expect("write");
        file.write_at(body, HEADER_LEN as u64).expect("write");
    }

    #[test]
    fn a_run_with_a_huge_count_or_an_empty_range_is_dropped() {
        let fs = SimFs::new();
        let index = open(&fs, 4);
        fill(&index, 0, 8);
        index.seal(true).expect("seal");
        drop(index);
        // count × 16 overflows u64 (and wrapped, 2^60 + 1 runs would match 16 bytes).
        let entry = [&7u64.to_be_bytes()[..], &800u64.to_be_bytes()].concat();
        plant_run(&fs, 800, 900, (1 << 60) + 1, &entry);
        let index = open(&fs, 4);
        assert_eq!(index.sealed_end(), Some(800));
        assert!(index.lookup(7, 10).expect("lookup").is_empty());
        drop(index);
        // A run ending where it begins.
        plant_run(&fs, 800, 800, 1, &entry);
        let index = open(&fs, 4);
        assert_eq!(index.sealed_end(), Some(800));
    }

    #[test]
    fn truncate_and_retention_drop_runs() {
        let fs = SimFs::new();
        let index = open(&fs, 4);
        fill(&index, 0, 16);
        assert_eq!(index.truncate(1350).expect("truncate"), 1200);
        assert!(
            index
                .lookup(key_hash("T", "u13"), 10)
                .expect("lookup")
                .is_empty()
        );
        index.add(1200, 1300, [key_hash("T", "again")]);
        assert_eq!(
            index.lookup(key_hash("T", "again"), 10).expect("lookup"),
            vec![1200]
        );
        index.delete_before(800).expect("delete");
        assert!(
            index
                .lookup(key_hash("T", "u1"), 10)
                .expect("lookup")
                .is_empty()
        );
        assert_eq!(
            index.lookup(key_hash("T", "u9"), 10).expect("lookup"),
            vec![900]
        );
        index.add(100, 200, [key_hash("T", "old")]);
        assert!(
            index
                .lookup(key_hash("T", "old"), 10)
                .expect("lookup")
                .is_empty(),
            "re-adding is ignored"
        );
    }
}

//! The commit log: every message of every topic, appended in arrival order to a chain of
//! fixed-size segment files named by their first byte offset (20 digits, as RocketMQ:
//! `00000000000000000000`, `00000000001073741824`, …).
//!
//! A message never straddles two segments: when an entry plus the 8-byte end marker
//! does not fit in what is left of the current segment, the writer puts the blank
//! marker `[remaining i32][0xCBD43194]` there and continues at the next segment's first
//! byte. A message's physical offset is therefore its file's name plus its position.
//! A file's length is how far it was written; the blocks ahead of the write position
//! are reserved a window at a time (`fallocate` keeping the length, see
//! [`StoreFile::allocate`]), so that a full disk refuses the append that would need a new
//! window, before anything is written, and never surfaces at writeback as a failed
//! fsync (which poisons the log). A window, not the whole segment as RocketMQ
//! preallocates: the protection is the same, and a broker that writes little does not
//! take a gigabyte of a shared disk up front.
//!
//! Concurrency: one writer at a time (an internal mutex), any number of readers through
//! positional reads on shared file handles. The writer publishes how far entries are
//! complete (`max_offset`, release ordering) only after the bytes are written, so a
//! reader that checks its range against it never sees a half-written entry. Flushing
//! (`fsync` of the segments written since the last flush) has its own lock: callers
//! that wait for durability queue on it, and whoever holds it syncs everything written
//! so far, so concurrent waiters share one fsync (group commit).
//!
//! Recovery reads segments through [`CommitLog::scan`]: entries are checked (magic,
//! sizes against TOTALSIZE, body CRC, PHYSICALOFFSET equal to the position) and the
//! first bad one ends the valid log; [`CommitLog::truncate`] cuts the files there.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use bytes::Bytes;

use super::error::{EncodeError, IoContext, Result, StoreError, corrupt};
use super::io::{FileSystem, StoreFile, read_full};
use super::message::{
    BLANK_LEN, BLANK_MAGIC, DecodedMessage, EntryHead, MESSAGE_MAGIC, MIN_ENTRY_LEN, decode,
    peek_head, peek_store_timestamp, read_i32,
};

/// Default segment size (RocketMQ's `mappedFileSizeCommitLog`): 1 GiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 1 << 30;
/// Default preallocation window: 16 MiB reserved ahead of the write position.
pub const DEFAULT_PREALLOCATE: u64 = 16 << 20;
/// Bytes read at a time while scanning.
const SCAN_CHUNK: usize = 1 << 20;

/// Locks a mutex, ignoring poisoning (the data stays consistent: no panics while held).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// File name of a segment or queue file starting at `offset`.
pub fn file_name(offset: u64) -> String {
    format!("{offset:020}")
}

/// Parses a 20-digit file name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

#[derive(Debug, Clone)]
struct Segment {
    start: u64,
    file: Arc<dyn StoreFile>,
}

/// The writer's position and how far ahead of it disk blocks are reserved.
#[derive(Debug, Default)]
struct WritePos {
    /// Offset of the next entry.
    pos: u64,
    /// Log offset up to which the current segment's blocks are known to be reserved.
    reserved: u64,
}

/// Where an appended entry landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Physical (commit-log) offset of the entry.
    pub offset: u64,
    /// Entry length in bytes.
    pub size: u32,
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Offset just past the last valid entry: where the log should end.
    pub end: u64,
    /// Why the scan stopped before the end of the written data, if it did.
    pub damage: Option<String>,
}

/// Where scanning one segment stopped.
enum SegmentEnd {
    /// The segment is complete; go on at `resume`, or end at `end_if_last`.
    Next { resume: u64, end_if_last: u64 },
    /// The written data ends here (cleanly if this is the last segment).
    DataEnd(u64),
    /// A damaged entry at `at`.
    Damage { at: u64, reason: String },
}

/// The segmented, append-only commit log.
#[derive(Debug)]
pub struct CommitLog {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    segment_size: u64,
    /// Bytes reserved ahead of the write position at a time (0: none).
    preallocate: u64,
    segments: RwLock<Vec<Segment>>,
    writer: Mutex<WritePos>,
    visible: AtomicU64,
    flushed: AtomicU64,
    flush_lock: Mutex<()>,
    /// Group commit: whether a waiter is fsyncing, and where the others wait.
    group: (Mutex<bool>, Condvar),
    /// The first fsync failure. After one, nothing more is ever called durable: Linux
    /// marks the failed pages clean, so a later fsync succeeds although the data written
    /// before the failure may never reach the disk. Only a restart's recovery can tell
    /// what is really there.
    poisoned: Mutex<Option<String>>,
}

impl CommitLog {
    /// Opens (creating `dir` if needed) the commit log in `dir`. The write position is
    /// the end of the last file; recovery corrects it.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path, segment_size: u64) -> Result<Self> {
        fs.create_dir_all(dir).at(dir)?;
        let segments = Self::load_segments(fs.as_ref(), dir, segment_size)?;
        let log = Self {
            fs,
            dir: dir.to_path_buf(),
            segment_size,
            preallocate: DEFAULT_PREALLOCATE,
            segments: RwLock::new(segments),
            writer: Mutex::new(WritePos::default()),
            visible: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            flush_lock: Mutex::new(()),
            group: (Mutex::new(false), Condvar::new()),
            poisoned: Mutex::new(None),
        };
        let end = log.files_end()?;
        lock(&log.writer).pos = end;
        log.visible.store(end, Ordering::Release);
        log.flushed.store(log.min_offset(), Ordering::Release);
        Ok(log)
    }

    fn load_segments(fs: &dyn FileSystem, dir: &Path, segment_size: u64) -> Result<Vec<Segment>> {
        let mut starts: Vec<u64> = fs
            .list(dir)
            .at(dir)?
            .iter()
            .filter_map(|n| parse_file_name(n))
            .collect();
        starts.sort_unstable();
        let mut segments = Vec::with_capacity(starts.len());
        for start in starts {
            if start % segment_size != 0 {
                let reason =
                    format!("segment {start} is not a multiple of the segment size {segment_size}");
                return Err(corrupt(dir, reason + " (was the segment size changed?)"));
            }
            let path = dir.join(file_name(start));
            let file = fs.open(&path, false).at(&path)?;
            segments.push(Segment { start, file });
        }
        Ok(segments)
    }

    /// Sets the preallocation window (0 turns preallocation off).
    pub fn with_preallocation(mut self, window: u64) -> Self {
        self.preallocate = window;
        self
    }

    /// Configured segment size.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Directory of the segment files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, start: u64) -> PathBuf {
        self.dir.join(file_name(start))
    }

    fn snapshot(&self) -> Vec<Segment> {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// First offset still stored (start of the oldest segment), or the write position
    /// if there is no segment.
    pub fn min_offset(&self) -> u64 {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        segments
            .first()
            .map_or_else(|| self.visible.load(Ordering::Acquire), |s| s.start)
    }

    /// Offset just past the last complete entry (the next write position).
    pub fn max_offset(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// Offset up to which everything is fsynced.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Start offsets of the segment files, oldest first.
    pub fn segment_starts(&self) -> Vec<u64> {
        self.snapshot().iter().map(|s| s.start).collect()
    }

    /// End of the data in the files: last segment's start plus its length.
    pub fn files_end(&self) -> Result<u64> {
        let Some(last) = self.snapshot().pop() else {
            return Ok(0);
        };
        let len = last.file.size().at(&self.path(last.start))?;
        Ok(last.start + len.min(self.segment_size))
    }

    /// Appends one encoded entry: rolls to a new segment (after writing the blank
    /// marker) if it does not fit, lets `patch` fill in fields that depend on the
    /// physical offset, writes it, and publishes it to readers.
    pub fn append(&self, entry: &mut [u8], patch: impl FnOnce(&mut [u8], u64)) -> Result<Appended> {
        let len = entry.len() as u64;
        if len + BLANK_LEN as u64 > self.segment_size {
            let err = EncodeError::EntryTooLarge {
                len: entry.len(),
                segment: self.segment_size,
            };
            return Err(err.into());
        }
        let mut w = lock(&self.writer);
        let segment = self.writable_segment(&mut w.pos, len)?;
        self.reserve(&segment, &mut w, len)?;
        patch(entry, w.pos);
        segment
            .file
            .write_at(entry, w.pos - segment.start)
            .at(&self.path(segment.start))?;
        let offset = w.pos;
        w.pos += len;
        self.visible.store(w.pos, Ordering::Release);
        Ok(Appended {
            offset,
            size: len as u32,
        })
    }

    /// The segment the next `len` bytes go to, rolling over if they do not fit.
    fn writable_segment(&self, pos: &mut u64, len: u64) -> Result<Segment> {
        let current = self.segment_at_write_pos(*pos)?;
        let used = *pos - current.start;
        if used + len + BLANK_LEN as u64 <= self.segment_size {
            return Ok(current);
        }
        self.write_blank(&current, used)?;
        let next = current.start + self.segment_size;
        let segment = self.create_segment(next)?;
        *pos = next;
        Ok(segment)
    }

    /// Makes sure the blocks for the next `len` bytes are reserved, reserving the next
    /// window of the segment when they are not. ENOSPC here refuses the append with
    /// nothing written.
    fn reserve(&self, segment: &Segment, w: &mut WritePos, len: u64) -> Result<()> {
        let need = w.pos + len;
        if self.preallocate == 0 || need <= w.reserved {
            return Ok(());
        }
        let from = w.reserved.max(w.pos);
        let to = need
            .max(from.saturating_add(self.preallocate))
            .min(segment.start + self.segment_size);
        segment
            .file
            .allocate(from - segment.start, to - from)
            .at(&self.path(segment.start))?;
        w.reserved = to;
        Ok(())
    }

    fn segment_at_write_pos(&self, pos: u64) -> Result<Segment> {
        let last = {
            let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
            segments.last().cloned()
        };
        if let Some(last) = last
            && last.start <= pos
            && pos < last.start + self.segment_size
        {
            return Ok(last);
        }
        if !pos.is_multiple_of(self.segment_size) {
            return Err(corrupt(
                &self.dir,
                format!("write position {pos} is outside every segment"),
            ));
        }
        self.create_segment(pos)
    }

    fn write_blank(&self, segment: &Segment, used: u64) -> Result<()> {
        let remaining = self.segment_size - used;
        if remaining < BLANK_LEN as u64 {
            return Ok(());
        }
        let mut marker = [0u8; BLANK_LEN];
        marker[..4].copy_from_slice(&(remaining as i32).to_be_bytes());
        marker[4..].copy_from_slice(&BLANK_MAGIC.to_be_bytes());
        segment
            .file
            .write_at(&marker, used)
            .at(&self.path(segment.start))
    }

    fn create_segment(&self, start: u64) -> Result<Segment> {
        let path = self.path(start);
        let file = self.fs.open(&path, true).at(&path)?;
        if file.size().at(&path)? > 0 {
            file.set_len(0).at(&path)?;
        }
        self.fs.sync_dir(&self.dir).at(&self.dir)?;
        let segment = Segment { start, file };
        let mut segments = self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        segments.push(segment.clone());
        Ok(segment)
    }

    fn segment_containing(&self, offset: u64) -> Option<Segment> {
        let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let idx = segments.partition_point(|s| s.start <= offset);
        let segment = segments.get(idx.checked_sub(1)?)?;
        (offset < segment.start + self.segment_size).then(|| segment.clone())
    }

    /// Reads `len` bytes at `offset`; `None` if the range is not (or no longer) stored
    /// or crosses a segment boundary.
    pub fn read(&self, offset: u64, len: usize) -> Result<Option<Bytes>> {
        let end = offset.saturating_add(len as u64);
        if end > self.max_offset() {
            return Ok(None);
        }
        let Some(segment) = self.segment_containing(offset) else {
            return Ok(None);
        };
        if end > segment.start + self.segment_size {
            return Ok(None);
        }
        let mut buf = vec![0u8; len];
        let n = read_full(segment.file.as_ref(), &mut buf, offset - segment.start)
            .at(&self.path(segment.start))?;
        Ok((n == len).then(|| Bytes::from(buf)))
    }

    /// Reads the whole message entry at `offset` (size and magic checked, nothing else);
    /// `None` if no message starts there.
    pub fn read_entry(&self, offset: u64) -> Result<Option<Bytes>> {
        let Some(head) = self.read(offset, BLANK_LEN)? else {
            return Ok(None);
        };
        match peek_head(&head) {
            Ok(EntryHead::Message(size)) if size >= MIN_ENTRY_LEN => self.read(offset, size),
            _ => Ok(None),
        }
    }

    /// STORETIMESTAMP of the first message of the segment starting at `start`.
    pub fn first_store_timestamp(&self, start: u64) -> Result<Option<i64>> {
        let Some(head) = self.read(start, 80)? else {
            return Ok(None);
        };
        match peek_head(&head) {
            Ok(EntryHead::Message(_)) => Ok(peek_store_timestamp(&head)),
            _ => Ok(None),
        }
    }

    /// Fsyncs everything written so far; returns the flushed offset.
    pub fn flush(&self) -> Result<u64> {
        let _guard = lock(&self.flush_lock);
        self.flush_locked()
    }

    /// Returns once everything before `end` is fsynced; concurrent callers share fsyncs.
    pub fn flush_until(&self, end: u64) -> Result<()> {
        let mut flushing = lock(&self.group.0);
        loop {
            if self.flushed_offset() >= end {
                return Ok(());
            }
            if !*flushing {
                // Lead: one fsync for everything written so far, then wake the others.
                *flushing = true;
                drop(flushing);
                let result = self.flush();
                flushing = lock(&self.group.0);
                *flushing = false;
                self.group.1.notify_all();
                result?;
                continue;
            }
            flushing = self
                .group
                .1
                .wait(flushing)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Why the commit log refuses to flush (a failed fsync), if it does.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.poisoned).clone()
    }

    fn flush_locked(&self) -> Result<u64> {
        if let Some(reason) = self.poisoned() {
            return Err(StoreError::Failed(reason));
        }
        let target = self.max_offset();
        let from = self.flushed_offset();
        if target <= from {
            return Ok(from);
        }
        let dirty: Vec<Segment> = {
            let segments = self.segments.read().unwrap_or_else(PoisonError::into_inner);
            let first = segments.partition_point(|s| s.start + self.segment_size <= from);
            segments[first..]
                .iter()
                .take_while(|s| s.start < target)
                .cloned()
                .collect()
        };
        for segment in dirty {
            let path = self.path(segment.start);
            if let Err(e) = segment.file.sync() {
                let reason = format!("fsync of {} failed: {e}", path.display());
                lock(&self.poisoned).get_or_insert(reason);
                return Err(StoreError::Io { path, source: e });
            }
        }
        self.flushed.store(target, Ordering::Release);
        Ok(target)
    }

    /// Scans entries from `from` (an entry boundary), verifying each and passing it to
    /// `visit`, until the data ends or an entry is damaged.
    pub fn scan(
        &self,
        from: u64,
        mut visit: impl FnMut(u64, &DecodedMessage<'_>) -> Result<()>,
    ) -> Result<ScanOutcome> {
        let segments = self.snapshot();
        let found = segments
            .iter()
            .position(|s| s.start <= from && from < s.start + self.segment_size);
        let Some(mut idx) = found else {
            return Ok(ScanOutcome {
                end: from,
                damage: None,
            });
        };
        let mut pos = from;
        loop {
            let is_last = idx + 1 == segments.len();
            match self.scan_segment(&segments[idx], pos, &mut visit)? {
                SegmentEnd::Next {
                    resume,
                    end_if_last,
                } => {
                    if !is_last && segments[idx + 1].start == resume {
                        idx += 1;
                        pos = resume;
                        continue;
                    }
                    let damage = (!is_last).then(|| format!("no segment file at {resume}"));
                    return Ok(ScanOutcome {
                        end: end_if_last,
                        damage,
                    });
                }
                SegmentEnd::DataEnd(end) => {
                    let damage =
                        (!is_last).then(|| format!("segment ends at {end} without an end marker"));
                    return Ok(ScanOutcome { end, damage });
                }
                SegmentEnd::Damage { at, reason } => {
                    return Ok(ScanOutcome {
                        end: at,
                        damage: Some(reason),
                    });
                }
            }
        }
    }

    fn scan_segment(
        &self,
        segment: &Segment,
        mut pos: u64,
        visit: &mut impl FnMut(u64, &DecodedMessage<'_>) -> Result<()>,
    ) -> Result<SegmentEnd> {
        let path = self.path(segment.start);
        let seg_end = segment.start + self.segment_size;
        let data_end = segment.start + segment.file.size().at(&path)?.min(self.segment_size);
        let mut reader = ChunkReader::new(segment, data_end, &path);
        loop {
            if pos == seg_end {
                return Ok(SegmentEnd::Next {
                    resume: seg_end,
                    end_if_last: seg_end,
                });
            }
            if pos >= data_end {
                return Ok(SegmentEnd::DataEnd(pos));
            }
            match Self::next_entry(&mut reader, pos, seg_end)? {
                Step::Blank => {
                    return Ok(SegmentEnd::Next {
                        resume: seg_end,
                        end_if_last: pos,
                    });
                }
                Step::Damage(reason) => return Ok(SegmentEnd::Damage { at: pos, reason }),
                Step::Message(size) => {
                    let Some(bytes) = reader.bytes(pos, size)? else {
                        return Ok(SegmentEnd::Damage {
                            at: pos,
                            reason: "truncated message".into(),
                        });
                    };
                    match verify(bytes, pos) {
                        Ok(msg) => visit(pos, &msg)?,
                        Err(reason) => return Ok(SegmentEnd::Damage { at: pos, reason }),
                    }
                    pos += size as u64;
                }
            }
        }
    }

    /// Classifies the entry at `pos` from its header.
    fn next_entry(reader: &mut ChunkReader<'_>, pos: u64, seg_end: u64) -> Result<Step> {
        let Some(head) = reader.bytes(pos, BLANK_LEN)? else {
            return Ok(Step::Damage("truncated entry header".into()));
        };
        let size = match peek_head(head) {
            Err(e) => return Ok(Step::Damage(e.to_string())),
            Ok(EntryHead::Blank(n)) if pos + n as u64 == seg_end => return Ok(Step::Blank),
            Ok(EntryHead::Blank(n)) => {
                return Ok(Step::Damage(format!("blank marker of {n} bytes at {pos}")));
            }
            Ok(EntryHead::Message(size)) => size,
        };
        if size < MIN_ENTRY_LEN || pos + size as u64 > seg_end {
            return Ok(Step::Damage(format!("implausible TOTALSIZE {size}")));
        }
        Ok(Step::Message(size))
    }

    /// The first position after `from`, in the segment file holding `from`, where a
    /// whole, verified message starts (its PHYSICALOFFSET is that position). One file is
    /// written front to back, so a torn tail never has one; damage in the middle of a
    /// file (a bad sector, bit rot) does. Later files are not looked at: after a power
    /// cut a new segment's first writes may survive while the previous file's unflushed
    /// tail did not, which is an ordinary torn tail across a roll-over.
    pub fn valid_entry_after(&self, from: u64) -> Result<Option<u64>> {
        let magic = MESSAGE_MAGIC.to_be_bytes();
        let in_segment = |s: &Segment| s.start <= from && from < s.start + self.segment_size;
        for segment in self.snapshot().into_iter().filter(in_segment) {
            let path = self.path(segment.start);
            let data_end = segment.start + segment.file.size().at(&path)?.min(self.segment_size);
            if data_end <= from + 1 {
                continue;
            }
            let mut reader = ChunkReader::new(&segment, data_end, &path);
            let mut pos = (from + 1).max(segment.start);
            while pos + MIN_ENTRY_LEN as u64 <= data_end {
                let Some(head) = reader.bytes(pos, 8)? else {
                    break;
                };
                if head[4..8] == magic
                    && let Some(size) = read_i32(head, 0).and_then(|n| usize::try_from(n).ok())
                    && size >= MIN_ENTRY_LEN
                    && let Some(bytes) = reader.bytes(pos, size)?
                    && verify(bytes, pos).is_ok()
                {
                    return Ok(Some(pos));
                }
                pos += 1;
            }
        }
        Ok(None)
    }

    /// Cuts the log at `end` (an entry boundary): later segment files are removed, the
    /// one containing `end` is shortened, and the write position becomes `end`.
    pub fn truncate(&self, end: u64) -> Result<()> {
        let mut w = lock(&self.writer);
        let removed = self.drop_segments_after(end);
        for segment in &removed {
            let path = self.path(segment.start);
            self.fs.remove_file(&path).at(&path)?;
        }
        if let Some(last) = self.snapshot().pop() {
            self.shorten(&last, end)?;
        }
        self.fs.sync_dir(&self.dir).at(&self.dir)?;
        // Shortening freed the blocks past `end`.
        *w = WritePos {
            pos: end,
            reserved: end,
        };
        self.visible.store(end, Ordering::Release);
        self.flushed.fetch_min(end, Ordering::AcqRel);
        Ok(())
    }

    fn drop_segments_after(&self, end: u64) -> Vec<Segment> {
        let mut segments = self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let keep = segments.partition_point(|s| s.start <= end);
        segments.split_off(keep)
    }

    fn shorten(&self, segment: &Segment, end: u64) -> Result<()> {
        let path = self.path(segment.start);
        let keep = end.saturating_sub(segment.start).min(self.segment_size);
        if segment.file.size().at(&path)? > keep {
            segment.file.set_len(keep).at(&path)?;
            segment.file.sync().at(&path)?;
        }
        Ok(())
    }

    /// Deletes whole segments that end at or before `new_min` (never the last one);
    /// returns how many were deleted.
    pub fn delete_segments_before(&self, new_min: u64) -> Result<usize> {
        let removed: Vec<Segment> = {
            let mut segments = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let deletable = segments.len().saturating_sub(1);
            let n = segments[..deletable]
                .iter()
                .take_while(|s| s.start + self.segment_size <= new_min)
                .count();
            segments.drain(..n).collect()
        };
        for segment in &removed {
            let path = self.path(segment.start);
            self.fs.remove_file(&path).at(&path)?;
        }
        if !removed.is_empty() {
            self.fs.sync_dir(&self.dir).at(&self.dir)?;
        }
        Ok(removed.len())
    }
}

/// Decodes an entry (sizes, CRC) and checks it was written at `pos`.
fn verify(bytes: &[u8], pos: u64) -> std::result::Result<DecodedMessage<'_>, String> {
    let msg = decode(bytes).map_err(|e| e.to_string())?;
    if msg.phys_offset != pos as i64 {
        return Err(format!(
            "PHYSICALOFFSET {} at position {pos}",
            msg.phys_offset
        ));
    }
    Ok(msg)
}

/// What is at a scan position.
enum Step {
    Message(usize),
    Blank,
    Damage(String),
}

/// Buffered positional reads over one segment, so a scan does not issue a syscall per
/// entry.
struct ChunkReader<'a> {
    file: &'a dyn StoreFile,
    base: u64,
    limit: u64,
    path: &'a Path,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> ChunkReader<'a> {
    fn new(segment: &'a Segment, limit: u64, path: &'a Path) -> Self {
        Self {
            file: segment.file.as_ref(),
            base: segment.start,
            limit,
            path,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// `n` bytes at absolute offset `pos`, or `None` if the data ends before them.
    fn bytes(&mut self, pos: u64, n: usize) -> Result<Option<&[u8]>> {
        let end = pos + n as u64;
        if end > self.limit {
            return Ok(None);
        }
        let cached = pos >= self.buf_start && end <= self.buf_start + self.buf.len() as u64;
        if !cached {
            let want = n.max(SCAN_CHUNK).min((self.limit - pos) as usize);
            self.buf.resize(want, 0);
            let got = read_full(self.file, &mut self.buf, pos - self.base).at(self.path)?;
            self.buf.truncate(got);
            self.buf_start = pos;
            if got < n {
                return Ok(None);
            }
        }
        let at = (pos - self.buf_start) as usize;
        Ok(Some(&self.buf[at..at + n]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::io::SimFs;
    use crate::store::message::{MessageToStore, encode, patch_for_append, read_i32};
    use std::net::SocketAddr;

    const SEG: u64 = 1024;

    fn host() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10911))
    }

    fn entry(i: usize, body_len: usize) -> Vec<u8> {
        let msg = MessageToStore::new("T", 0, vec![i as u8; body_len]);
        encode(&msg, host(), 1 << 20).expect("encode")
    }

    fn append(log: &CommitLog, i: usize, body_len: usize) -> Appended {
        let mut e = entry(i, body_len);
        log.append(&mut e, |buf, phys| {
            patch_for_append(buf, i as i64, phys as i64, 1000 + i as i64)
        })
        .expect("append")
    }

    fn open(fs: &SimFs) -> CommitLog {
        CommitLog::open(Arc::new(fs.clone()), Path::new("/s/commitlog"), SEG).expect("open")
    }

    /// Bytes the simulated disk counts as used (files and their reservations).
    fn used(fs: &SimFs) -> u64 {
        let usage = fs
            .disk_usage(Path::new("/s"))
            .expect("usage")
            .expect("capacity set");
        usage.total - usage.available
    }

    #[test]
    fn appends_reserve_a_window_ahead_and_a_full_disk_refuses_before_writing() {
        let fs = SimFs::new();
        fs.set_capacity(Some(1 << 20));
        let log = open(&fs).with_preallocation(256);
        let first = append(&log, 0, 10);
        let size = u64::from(first.size);
        assert_eq!(used(&fs), 256, "the first window is reserved");
        assert_eq!(
            log.files_end().expect("end"),
            size,
            "the length is what was written"
        );
        let mut end = size;
        while end + size <= 256 {
            end += u64::from(append(&log, 1, 10).size);
        }
        assert_eq!(
            used(&fs),
            256,
            "appends inside the window take no new space"
        );
        // No room for the next window: the append is refused with ENOSPC before a byte
        // of it is written, so nothing can fail later at writeback.
        fs.set_capacity(Some(256));
        let mut e = entry(2, 10);
        match log.append(&mut e, |_, _| {}) {
            Err(StoreError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
            }
            other => panic!("append with no room for the next window: {other:?}"),
        }
        assert_eq!(log.max_offset(), end);
        assert_eq!(log.files_end().expect("end"), end, "nothing was written");
        fs.set_capacity(Some(1 << 20));
        let next = append(&log, 2, 10);
        assert_eq!(next.offset, end, "the refused append left no gap");
        assert_eq!(used(&fs), 512, "the next window is reserved");
        log.truncate(end).expect("truncate");
        assert_eq!(used(&fs), end, "truncating frees the reserved blocks");
    }

    #[test]
    fn a_failed_fsync_poisons_the_log_even_when_the_disk_recovers() {
        let fs = SimFs::new();
        let log = open(&fs);
        let first = append(&log, 0, 50);
        let durable = log.flush().expect("first flush");
        assert_eq!(durable, first.offset + u64::from(first.size));
        fs.fail_next_syncs(1);
        append(&log, 1, 50);
        assert!(log.flush().is_err(), "the injected failure must surface");
        // Linux cleared the failed pages: an fsync now "succeeds", so the log must not
        // ask the disk again and call entry 1 durable.
        for _ in 0..3 {
            match log.flush() {
                Err(StoreError::Failed(reason)) => assert!(reason.contains("fsync"), "{reason}"),
                other => panic!("a poisoned log flushed: {other:?}"),
            }
        }
        assert_eq!(log.flushed_offset(), durable);
        assert!(log.flush_until(durable + 1).is_err());
        assert!(log.poisoned().is_some());
    }

    #[test]
    fn rolls_with_a_blank_marker_and_20_digit_names() {
        let fs = SimFs::new();
        let log = open(&fs);
        let mut placed = Vec::new();
        for i in 0..20 {
            placed.push(append(&log, i, 208)); // 91 + 208 + 1-byte topic = 300 bytes
        }
        let names = fs.list(Path::new("/s/commitlog")).expect("list");
        assert_eq!(names[0], "00000000000000000000");
        assert_eq!(names[1], "00000000000000001024");
        // 300-byte entries: three fit in 1024 (900 + 8 ≤ 1024), the fourth rolls.
        assert_eq!(placed[2].offset, 600);
        assert_eq!(placed[3].offset, SEG);
        let blank = log.read(900, 8).expect("read").expect("stored");
        assert_eq!(read_i32(&blank, 0), Some(124));
        assert_eq!(read_i32(&blank, 4), Some(BLANK_MAGIC as i32));
        for (i, a) in placed.iter().enumerate() {
            let bytes = log.read_entry(a.offset).expect("read").expect("entry");
            let msg = decode(&bytes).expect("decode");
            assert_eq!(
                (msg.phys_offset as u64, msg.queue_offset),
                (a.offset, i as i64)
            );
        }
    }

    #[test]
    fn scan_visits_every_entry_across_segments() {
        let fs = SimFs::new();
        let log = open(&fs);
        let placed: Vec<Appended> = (0..25).map(|i| append(&log, i, 100 + i * 7)).collect();
        let mut seen = Vec::new();
        let outcome = log.scan(placed[4].offset, |pos, _| {
            seen.push(pos);
            Ok(())
        });
        let outcome = outcome.expect("scan");
        assert_eq!(
            outcome,
            ScanOutcome {
                end: log.max_offset(),
                damage: None
            }
        );
        let expected: Vec<u64> = placed[4..].iter().map(|a| a.offset).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn scan_stops_at_a_corrupt_entry_and_truncate_cuts_there() {
        let fs = SimFs::new();
        let log = open(&fs);
        let placed: Vec<Appended> = (0..12).map(|i| append(&log, i, 150)).collect();
        let victim = placed[7];
        let file = fs
            .open(&log.path(victim.offset / SEG * SEG), false)
            .expect("open");
        file.write_at(&[0xFF], victim.offset % SEG + 100)
            .expect("corrupt body");
        let outcome = log.scan(0, |_, _| Ok(())).expect("scan");
        assert_eq!(outcome.end, victim.offset);
        assert!(outcome.damage.expect("damage").contains("CRC"));
        log.truncate(outcome.end).expect("truncate");
        assert_eq!(log.max_offset(), victim.offset);
        assert!(log.read_entry(victim.offset).expect("read").is_none());
        let next = append(&log, 99, 150);
        assert_eq!(next.offset, victim.offset);
        assert_eq!(
            log.segment_starts().last(),
            Some(&(victim.offset / SEG * SEG))
        );
    }

    #[test]
    fn reopen_continues_at_the_end_and_deletes_old_segments() {
        let fs = SimFs::new();
        let log = open(&fs);
        for i in 0..10 {
            append(&log, i, 200);
        }
        log.flush().expect("flush");
        let end = log.max_offset();
        drop(log);
        let log = open(&fs);
        assert_eq!(log.max_offset(), end);
        assert_eq!(log.first_store_timestamp(SEG).expect("ts"), Some(1003));
        assert_eq!(log.delete_segments_before(2 * SEG).expect("delete"), 2);
        assert_eq!(log.min_offset(), 2 * SEG);
        assert!(log.read(0, 8).expect("read").is_none());
        assert_eq!(
            log.delete_segments_before(100 * SEG).expect("delete"),
            1,
            "the last segment stays"
        );
    }

    #[test]
    fn entries_that_cannot_fit_a_segment_are_refused() {
        let fs = SimFs::new();
        let log = open(&fs);
        let mut big = entry(0, 1000);
        let err = log.append(&mut big, |_, _| {}).expect_err("too large");
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}

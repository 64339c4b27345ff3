//! The persistent timer store of arbitrary-time scheduled messages (`TIMER_DELIVER_MS`,
//! `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`, `__STARTDELIVERTIME`).
//!
//! Layout, under `<data dir>/timer/`:
//! - one append-only file per time slot (`slot-<start ms>`, [`SLOT`] wide) holding the
//!   whole waiting messages in arrival order; a record is `len u32, crc32 u32, deliver
//!   ms i64, message` (little endian; the CRC covers deliver ms and message);
//! - `progress`: "every message due at or before this ms has been re-put" (i64 + CRC,
//!   replaced atomically by rename).
//!
//! Only the slot being delivered is read into memory, and only as an index (deliver ms,
//! file position, length: 24 bytes a message), sorted when the slot comes due; every
//! other pending message stays on disk, so 1,000,000 pending messages cost memory only
//! for the slot names. The messages live outside the commit log, so its retention never
//! deletes a pending timer (no pinning, no roll-forward needed).
//!
//! Crash safety: records are written with one `write` each (and, when the store flushes
//! synchronously, fsynced before `add` returns, concurrent adds sharing one fsync), so a kill -9 loses nothing acknowledged; a torn tail (power
//! loss) fails its CRC and is truncated when the store opens. A slot file is deleted
//! only once every message in it is re-put; a crash between a re-put and the next
//! `progress` write delivers those messages again (at least once, never lost).

use crate::store::MessageToStore;
use bytes::{Buf, BufMut, Bytes};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Width of a time slot (one file per slot).
pub const SLOT: Duration = Duration::from_secs(10);
/// Bytes before a record's message: length, CRC, deliver time.
const HEADER: usize = 16;
/// Largest record accepted when reading (a corrupt length must not allocate gigabytes).
const MAX_RECORD: usize = 64 << 20;
/// Append handles kept open at once.
const MAX_WRITERS: usize = 32;

/// One pending message in the slot being delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    deliver_ms: i64,
    pos: u64,
    len: u32,
}

/// The slot being delivered: its index, sorted, and how much of it is re-put.
struct Loaded {
    slot: i64,
    entries: Vec<Entry>,
    next: usize,
}

struct State {
    /// Slots that have a file.
    slots: BTreeSet<i64>,
    /// Open slot files and their lengths (kept here, so an append is one `write`).
    writers: HashMap<i64, (File, u64)>,
    /// Every message due at or before this is re-put.
    progress: i64,
    /// The latest time [`TimerStore::take_due`] handed messages out for: a message due
    /// at or before it is not kept any more (it could land inside a batch in flight).
    taken_until: i64,
    loaded: Option<Loaded>,
    /// Slots appended to since their last fsync (synchronous flush only).
    dirty: std::collections::HashSet<i64>,
}

/// Due messages handed out by [`TimerStore::take_due`]; [`TimerStore::commit`] marks
/// them re-put.
#[derive(Debug)]
pub struct DueBatch {
    /// The messages, in delivery-time order, with their delivery times.
    pub messages: Vec<(i64, MessageToStore)>,
    slot: i64,
}

/// The timer store (see the module doc).
pub struct TimerStore {
    dir: PathBuf,
    slot_ms: i64,
    fsync: bool,
    state: Mutex<State>,
    pending: AtomicU64,
    delivered: AtomicU64,
    /// Records appended so far (numbered under the state lock).
    written: AtomicU64,
    /// Group commit: records up to this number are fsynced.
    synced: Mutex<u64>,
}

impl std::fmt::Debug for TimerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerStore")
            .field("dir", &self.dir)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl TimerStore {
    /// Opens (or creates) the store in `dir`: truncates torn tails and counts what is
    /// pending. `fsync`: make every added message durable before `add` returns.
    pub fn open(dir: impl Into<PathBuf>, slot: Duration, fsync: bool) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let progress = read_progress(&dir.join("progress"))?;
        let mut slots = BTreeSet::new();
        let mut pending = 0;
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name();
            let Some(slot) = name
                .to_str()
                .and_then(|n| n.strip_prefix("slot-"))
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            let path = dir.join(name);
            let (entries, valid) = scan(&path)?;
            if valid < fs::metadata(&path)?.len() {
                tracing::warn!(path = %path.display(), valid, "timer slot has a torn tail; truncating");
                OpenOptions::new().write(true).open(&path)?.set_len(valid)?;
            }
            pending += entries.iter().filter(|e| e.deliver_ms > progress).count() as u64;
            slots.insert(slot);
        }
        Ok(Self {
            dir,
            slot_ms: slot.as_millis().max(1) as i64,
            fsync,
            state: Mutex::new(State {
                slots,
                writers: HashMap::new(),
                progress,
                taken_until: i64::MIN,
                loaded: None,
                dirty: Default::default(),
            }),
            pending: AtomicU64::new(pending),
            delivered: AtomicU64::new(0),
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
        })
    }

    /// Messages waiting for their time.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Messages re-put since start.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Slots with a file (what the store keeps in memory per pending slot).
    pub fn slot_count(&self) -> usize {
        self.lock().slots.len()
    }

    /// Index entries in memory (those of the slot being delivered).
    pub fn memory_entries(&self) -> usize {
        self.lock().loaded.as_ref().map_or(0, |l| l.entries.len())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn slot_of(&self, ms: i64) -> i64 {
        ms.div_euclid(self.slot_ms) * self.slot_ms
    }

    fn slot_path(&self, slot: i64) -> PathBuf {
        self.dir.join(format!("slot-{slot}"))
    }

    /// Keeps `msg` until `deliver_ms`. Returns `false`, keeping nothing, when that time
    /// is already here (at `now_ms`): the caller stores the message normally.
    pub fn add(&self, deliver_ms: i64, now_ms: i64, msg: &MessageToStore) -> io::Result<bool> {
        let record = encode_record(deliver_ms, msg);
        let mut state = self.lock();
        // Checked under the lock, so a delivery pass never misses a message due before it.
        if deliver_ms <= now_ms.max(state.taken_until).max(state.progress) {
            return Ok(false);
        }
        let slot = self.slot_of(deliver_ms);
        let pos = self.append(&mut state, slot, &record)?;
        if let Some(loaded) = state.loaded.as_mut().filter(|l| l.slot == slot) {
            let entry = Entry {
                deliver_ms,
                pos,
                len: record.len() as u32,
            };
            let at = loaded.next + loaded.entries[loaded.next..].partition_point(|e| *e < entry);
            loaded.entries.insert(at, entry);
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        let number = self.written.fetch_add(1, Ordering::AcqRel) + 1;
        drop(state);
        if self.fsync {
            self.make_durable(number)?;
        }
        Ok(true)
    }

    /// Group commit: returns once record `number` is fsynced, fsyncing every slot
    /// written to since the last fsync when no concurrent caller already did.
    fn make_durable(&self, number: u64) -> io::Result<()> {
        let mut synced = self
            .synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *synced >= number {
            return Ok(());
        }
        let (upto, files) = {
            let mut state = self.lock();
            let upto = self.written.load(Ordering::Acquire);
            let dirty: Vec<i64> = state.dirty.drain().collect();
            let files = dirty
                .iter()
                .filter_map(|slot| state.writers.get(slot).map(|(f, _)| f.try_clone()))
                .collect::<io::Result<Vec<File>>>()?;
            (upto, files)
        };
        for file in files {
            file.sync_data()?;
        }
        *synced = upto;
        Ok(())
    }

    /// Appends one record to a slot's file; returns where it starts.
    fn append(&self, state: &mut State, slot: i64, record: &[u8]) -> io::Result<u64> {
        if !state.writers.contains_key(&slot) {
            if state.writers.len() >= MAX_WRITERS {
                let victim = *state.writers.keys().next().expect("not empty");
                if let Some((file, _)) = state.writers.remove(&victim)
                    && state.dirty.remove(&victim)
                {
                    // Its pending group commit has no handle to fsync any more.
                    file.sync_data()?;
                }
            }
            let created = state.slots.insert(slot);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.slot_path(slot))?;
            if created && self.fsync {
                File::open(&self.dir)?.sync_all()?;
            }
            let len = file.metadata()?.len();
            state.writers.insert(slot, (file, len));
        }
        let (file, len) = state.writers.get_mut(&slot).expect("just opened");
        let pos = *len;
        if let Err(e) = file.write_all(record) {
            // A partial record must not stay in front of later ones.
            let _ = file.set_len(pos);
            state.writers.remove(&slot);
            return Err(e);
        }
        *len += record.len() as u64;
        if self.fsync {
            state.dirty.insert(slot);
        }
        Ok(pos)
    }

    /// Fsyncs the slot files written to since the last call (async flush: the delivery
    /// task calls it as often as the commit log is flushed).
    pub fn sync(&self) -> io::Result<()> {
        let state = self.lock();
        for (file, _) in state.writers.values() {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Up to `max` messages due at `now_ms`, oldest first (none: nothing is due). The
    /// same messages come again until [`TimerStore::commit`] marks them re-put.
    pub fn take_due(&self, now_ms: i64, max: usize) -> io::Result<DueBatch> {
        let mut state = self.lock();
        state.taken_until = state.taken_until.max(now_ms);
        loop {
            if state.loaded.is_none() {
                let Some(&slot) = state.slots.first().filter(|s| **s <= now_ms) else {
                    return Ok(DueBatch {
                        messages: vec![],
                        slot: 0,
                    });
                };
                let loaded = self.load(slot, state.progress)?;
                state.loaded = Some(loaded);
            }
            let loaded = state.loaded.as_ref().expect("loaded above");
            let due = loaded.entries[loaded.next..]
                .iter()
                .take(max)
                .take_while(|e| e.deliver_ms <= now_ms)
                .copied()
                .collect::<Vec<_>>();
            if !due.is_empty() {
                let slot = loaded.slot;
                let messages = self.read(slot, &due)?;
                return Ok(DueBatch { messages, slot });
            }
            if loaded.next < loaded.entries.len()
                || loaded.slot.saturating_add(self.slot_ms) > now_ms
            {
                return Ok(DueBatch {
                    messages: vec![],
                    slot: loaded.slot,
                });
            }
            // Every message of a slot that is over is re-put: no add can reach it now.
            let slot = loaded.slot;
            self.finish(&mut state, slot)?;
        }
    }

    /// Marks the first `count` messages of `batch` re-put.
    pub fn commit(&self, batch: &DueBatch, count: usize) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        let mut state = self.lock();
        let Some(loaded) = state.loaded.as_mut().filter(|l| l.slot == batch.slot) else {
            return Ok(());
        };
        let count = count.min(loaded.entries.len() - loaded.next);
        loaded.next += count;
        let last = loaded.entries[loaded.next - 1].deliver_ms;
        // Messages due at the same ms as the last one re-put may still wait.
        let progress = match loaded.entries.get(loaded.next) {
            Some(e) if e.deliver_ms == last => last - 1,
            _ => last,
        };
        self.pending.fetch_sub(count as u64, Ordering::Relaxed);
        self.delivered.fetch_add(count as u64, Ordering::Relaxed);
        if progress > state.progress {
            state.progress = progress;
            write_progress(&self.dir, progress)?;
        }
        Ok(())
    }

    /// Reads a slot's index: its messages not re-put yet, in delivery order.
    fn load(&self, slot: i64, progress: i64) -> io::Result<Loaded> {
        let (mut entries, _) = scan(&self.slot_path(slot))?;
        entries.retain(|e| e.deliver_ms > progress);
        entries.sort_unstable();
        Ok(Loaded {
            slot,
            entries,
            next: 0,
        })
    }

    /// Reads the messages of `entries` from a slot's file.
    fn read(&self, slot: i64, entries: &[Entry]) -> io::Result<Vec<(i64, MessageToStore)>> {
        let file = File::open(self.slot_path(slot))?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let mut buf = vec![0; e.len as usize];
            file.read_exact_at(&mut buf, e.pos)?;
            let msg = decode_message(&buf[HEADER..]).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "undecodable timer record")
            })?;
            out.push((e.deliver_ms, msg));
        }
        Ok(out)
    }

    /// Deletes a fully re-put slot's file.
    fn finish(&self, state: &mut State, slot: i64) -> io::Result<()> {
        state.writers.remove(&slot);
        match fs::remove_file(self.slot_path(slot)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        state.slots.remove(&slot);
        state.loaded = None;
        Ok(())
    }
}

/// The index of a slot file and the length of its valid prefix (a torn or corrupt tail
/// ends it).
fn scan(path: &Path) -> io::Result<(Vec<Entry>, u64)> {
    let file = match File::open(path) {
        Ok(file) => file,
        // A slot whose file could not be created holds nothing.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((vec![], 0)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    scan_records(BufReader::with_capacity(1 << 16, file), len)
}

/// [`scan`] over the `len` bytes of a slot file. A record longer than what is left is a
/// torn tail (its length is not allocated for); an intact record (its CRC right) whose
/// message does not decode is skipped with a warning, so every entry kept can be read
/// back by [`TimerStore::take_due`] (it would fail on it at every delivery pass).
fn scan_records(mut reader: impl Read, len: u64) -> io::Result<(Vec<Entry>, u64)> {
    let mut entries = vec![];
    let mut pos = 0u64;
    let mut header = [0u8; HEADER];
    let mut payload = vec![];
    loop {
        if read_full(&mut reader, &mut header)? < HEADER {
            break;
        }
        let record_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let fits = u64::try_from(record_len).is_ok_and(|l| l <= len.saturating_sub(pos));
        if !(HEADER..=MAX_RECORD).contains(&record_len) || !fits {
            break;
        }
        payload.resize(record_len - HEADER, 0);
        if read_full(&mut reader, &mut payload)? < payload.len() {
            break;
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..16]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            break;
        }
        if decode_message(&payload).is_some() {
            entries.push(Entry {
                deliver_ms: i64::from_le_bytes(header[8..16].try_into().expect("8 bytes")),
                pos,
                len: record_len as u32,
            });
        } else {
            tracing::warn!(pos, "timer record does not decode; skipping it");
        }
        pos += record_len as u64;
    }
    Ok((entries, pos))
}

/// For the fuzz check (`crate::fuzz::check_timer_store`): what [`scan`] keeps of a slot
/// file's bytes, as (deliver ms, record bytes), and the length of the valid prefix.
pub(crate) fn scan_slot_bytes(data: &[u8]) -> (Vec<(i64, &[u8])>, u64) {
    let (entries, valid) = scan_records(data, data.len() as u64).expect("reading a slice");
    let records = entries
        .iter()
        .map(|e| {
            let at = usize::try_from(e.pos).expect("within the slice");
            (e.deliver_ms, &data[at..at + e.len as usize])
        })
        .collect();
    (records, valid)
}

/// A whole record (header included): its deliver time and message, if it decodes.
pub(crate) fn decode_record(record: &[u8]) -> Option<(i64, MessageToStore)> {
    let deliver_ms = i64::from_le_bytes(record.get(8..HEADER)?.try_into().ok()?);
    Some((deliver_ms, decode_message(record.get(HEADER..)?)?))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn read_progress(path: &Path) -> io::Result<i64> {
    match fs::read(path) {
        Ok(b) => Ok(parse_progress(&b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(i64::MIN),
        Err(e) => Err(e),
    }
}

/// The `progress` file's value; a damaged file only means more messages come twice.
pub(crate) fn parse_progress(b: &[u8]) -> i64 {
    match b.split_at_checked(8) {
        Some((value, crc)) if crc == crc32fast::hash(value).to_le_bytes() => {
            i64::from_le_bytes(value.try_into().expect("8 bytes"))
        }
        _ => i64::MIN,
    }
}

/// The `progress` file's bytes.
pub(crate) fn encode_progress(progress: i64) -> Vec<u8> {
    let mut b = progress.to_le_bytes().to_vec();
    b.extend(crc32fast::hash(&b).to_le_bytes());
    b
}

fn write_progress(dir: &Path, progress: i64) -> io::Result<()> {
    let tmp = dir.join("progress.tmp");
    fs::write(&tmp, encode_progress(progress))?;
    fs::rename(tmp, dir.join("progress"))
}

/// A record: header and the encoded message.
pub(crate) fn encode_record(deliver_ms: i64, msg: &MessageToStore) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + 64 + msg.body.len() + msg.properties.len());
    b.put_u32_le(0);
    b.put_u32_le(0);
    b.put_i64_le(deliver_ms);
    let host = msg.born_host.to_string();
    put_str(&mut b, &msg.topic);
    b.put_i32_le(msg.queue_id);
    b.put_i32_le(msg.flag);
    b.put_i32_le(msg.sys_flag);
    b.put_i64_le(msg.born_timestamp);
    put_str(&mut b, &host);
    b.put_i32_le(msg.reconsume_times);
    put_str(&mut b, &msg.properties);
    b.put_u32_le(msg.body.len() as u32);
    b.put_slice(&msg.body);
    let len = b.len() as u32;
    let crc = crc32fast::hash(&b[8..]);
    b[0..4].copy_from_slice(&len.to_le_bytes());
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s.as_bytes());
}

fn get_str(b: &mut &[u8]) -> Option<String> {
    let bytes = get_bytes(b)?;
    String::from_utf8(bytes.to_vec()).ok()
}

fn get_bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    if b.remaining() < 4 {
        return None;
    }
    let len = b.get_u32_le() as usize;
    if b.remaining() < len {
        return None;
    }
    let (head, tail) = b.split_at(len);
    *b = tail;
    Some(head)
}

/// The message of a record (after its header).
fn decode_message(mut b: &[u8]) -> Option<MessageToStore> {
    let topic = get_str(&mut b)?;
    if b.remaining() < 20 {
        return None;
    }
    let queue_id = b.get_i32_le();
    let flag = b.get_i32_le();
    let sys_flag = b.get_i32_le();
    let born_timestamp = b.get_i64_le();
    let born_host: SocketAddr = get_str(&mut b)?.parse().ok()?;
    if b.remaining() < 4 {
        return None;
    }
    let reconsume_times = b.get_i32_le();
    let properties = get_str(&mut b)?;
    let body = Bytes::copy_from_slice(get_bytes(&mut b)?);
    Some(MessageToStore {
        topic,
        queue_id,
        flag,
        sys_flag,
        body,
        properties,
        born_timestamp,
        born_host,
        reconsume_times,
        prepared_transaction_offset: 0,
    })
}

#[cfg(test)]
#[path = "timer_store_tests.rs"]
mod tests;

//! The checkpoint file: how far the commit log, the consume queues and the index are
//! known to be durable, so recovery knows where it can start.
//!
//! RocketMQ's `StoreCheckpoint` keeps three store timestamps (physic, logics, index at
//! bytes 0, 8, 16 of a page) and recovery searches the log for a file older than the
//! smallest. We keep the same three timestamps for operators, and add the commit-log
//! offsets, which let recovery start at an exact entry boundary instead of guessing by
//! time. The file holds two 128-byte slots written alternately, each with a sequence
//! number and a CRC, so a write torn by a power cut leaves the previous checkpoint
//! readable. (This file is our own format; it is not read by Java tools.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{IoContext, Result};
use super::io::{FileSystem, StoreFile, read_full};

const SLOT_LEN: u64 = 128;
const BODY_LEN: usize = 64;
const MAGIC: u32 = 0x4D51_4350;
const VERSION: u32 = 1;

/// What was durable at the last checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Commit-log offset up to which the log was fsynced.
    pub phys_flushed: u64,
    /// Commit-log offset up to which every message is in the (fsynced) consume queues.
    pub cq_offset: u64,
    /// Commit-log offset up to which the index runs are fsynced.
    pub index_offset: u64,
    /// Store time of the last message in the flushed log (RocketMQ `physicMsgTimestamp`).
    pub phys_timestamp: i64,
    /// Store time of the last message in the consume queues (`logicsMsgTimestamp`).
    pub cq_timestamp: i64,
    /// Store time of the last indexed message (`indexMsgTimestamp`).
    pub index_timestamp: i64,
}

impl Checkpoint {
    /// A slot's bytes (`crate::fuzz` checks a read checkpoint re-encodes to its slot).
    pub(crate) fn encode(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(BODY_LEN + 4);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        for v in [self.phys_flushed, self.cq_offset, self.index_offset] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for v in [self.phys_timestamp, self.cq_timestamp, self.index_timestamp] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a slot: `(sequence, checkpoint)` if intact.
    fn decode(raw: &[u8]) -> Option<(u64, Self)> {
        let word =
            |i: usize| -> Option<[u8; 8]> { raw.get(8 + i * 8..16 + i * 8)?.try_into().ok() };
        let head: [u8; 8] = raw.get(..8)?.try_into().ok()?;
        let crc: [u8; 4] = raw.get(BODY_LEN..BODY_LEN + 4)?.try_into().ok()?;
        let intact = head[..4] == MAGIC.to_be_bytes()
            && head[4..] == VERSION.to_be_bytes()
            && u32::from_be_bytes(crc) == crc32fast::hash(&raw[..BODY_LEN]);
        if !intact {
            return None;
        }
        let u = |i| word(i).map(u64::from_be_bytes);
        let s = |i| word(i).map(i64::from_be_bytes);
        let cp = Self {
            phys_flushed: u(1)?,
            cq_offset: u(2)?,
            index_offset: u(3)?,
            phys_timestamp: s(4)?,
            cq_timestamp: s(5)?,
            index_timestamp: s(6)?,
        };
        Some((u(0)?, cp))
    }
}

/// The checkpoint file with its two slots.
#[derive(Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    file: Arc<dyn StoreFile>,
    seq: u64,
}

impl CheckpointFile {
    /// Opens (or creates) the file and reads the newest intact checkpoint.
    pub fn open(fs: &dyn FileSystem, path: &Path) -> Result<(Self, Option<Checkpoint>)> {
        let existed = fs.exists(path);
        let file = fs.open(path, true).at(path)?;
        if !existed && let Some(dir) = path.parent() {
            fs.sync_dir(dir).at(dir)?;
        }
        let mut raw = vec![0u8; 2 * SLOT_LEN as usize];
        let n = read_full(file.as_ref(), &mut raw, 0).at(path)?;
        raw.truncate(n);
        let newest = raw
            .chunks(SLOT_LEN as usize)
            .filter_map(Checkpoint::decode)
            .max_by_key(|(seq, _)| *seq);
        let seq = newest.map_or(0, |(seq, _)| seq);
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                seq,
            },
            newest.map(|(_, cp)| cp),
        ))
    }

    /// Writes `cp` into the older slot and fsyncs it.
    pub fn write(&mut self, cp: &Checkpoint) -> Result<()> {
        let Some(seq) = self.seq.checked_add(1) else {
            return self.restart_sequence(cp);
        };
        let slot = seq % 2 * SLOT_LEN;
        self.file.write_at(&cp.encode(seq), slot).at(&self.path)?;
        self.file.sync().at(&self.path)?;
        self.seq = seq;
        Ok(())
    }

    /// After sequence `u64::MAX` (only a damaged file that kept its CRC gets there):
    /// writes `cp` as sequence 1 into slot 1, then blanks slot 0, which holds the
    /// `u64::MAX` one (an older checkpoint wins if the blanking is lost: still safe).
    fn restart_sequence(&mut self, cp: &Checkpoint) -> Result<()> {
        self.file.write_at(&cp.encode(1), SLOT_LEN).at(&self.path)?;
        self.file.sync().at(&self.path)?;
        self.file
            .write_at(&[0u8; SLOT_LEN as usize], 0)
            .at(&self.path)?;
        self.file.sync().at(&self.path)?;
        self.seq = 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::io::{SimFs, XorShift64};

    fn cp(n: u64) -> Checkpoint {
        Checkpoint {
            phys_flushed: n,
            cq_offset: n,
            index_offset: n / 2,
            phys_timestamp: n as i64 * 10,
            cq_timestamp: 1,
            index_timestamp: -1,
        }
    }

    #[test]
    fn the_next_checkpoint_wins_over_sequence_u64_max() {
        for (slot, other) in [(0, SLOT_LEN), (SLOT_LEN, 0)] {
            let fs = SimFs::new();
            let path = Path::new("/s/checkpoint");
            let file = fs.open(path, true).expect("open");
            file.write_at(&cp(100).encode(u64::MAX), slot)
                .expect("write");
            file.write_at(&cp(50).encode(7), other).expect("write");
            let (mut file, got) = CheckpointFile::open(&fs, path).expect("open");
            assert_eq!(got, Some(cp(100)));
            file.write(&cp(200)).expect("write");
            let (mut file, got) = CheckpointFile::open(&fs, path).expect("reopen");
            assert_eq!(got, Some(cp(200)));
            file.write(&cp(300)).expect("write");
            let (_, got) = CheckpointFile::open(&fs, path).expect("reopen");
            assert_eq!(got, Some(cp(300)));
        }
    }

    #[test]
    fn newest_intact_slot_wins_even_after_a_torn_write() {
        for seed in 1..40 {
            let fs = SimFs::new();
            let path = Path::new("/s/checkpoint");
            let (mut file, none) = CheckpointFile::open(&fs, path).expect("open");
            assert_eq!(none, None);
            file.write(&cp(100)).expect("write");
            file.write(&cp(200)).expect("write");
            let (file, got) = CheckpointFile::open(&fs, path).expect("reopen");
            assert_eq!(got, Some(cp(200)));
            // A third write that the power cut may tear: 200 or 300 survives.
            let _ = file.file.write_at(&cp(300).encode(3), SLOT_LEN);
            fs.power_cut(&mut XorShift64::new(seed));
            let (_, got) = CheckpointFile::open(&fs, path).expect("reopen");
            assert!(
                got == Some(cp(200)) || got == Some(cp(300)),
                "seed {seed}: {got:?}"
            );
        }
    }
}

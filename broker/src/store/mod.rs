//! The broker's message store (layer 2 of DESIGN.md "Broker"): a pure library, no
//! networking.
//!
//! # Layout
//!
//! ```text
//! <root>/commitlog/<20-digit offset>                 all messages, RocketMQ 4.x format
//! <root>/consumequeue/<topic>/<queueId>/<20 digits>  20-byte entries per queue offset
//! <root>/index/<20-digit offset>                     sorted key-hash runs
//! <root>/checkpoint                                  how far each part is durable
//! <root>/abort                                       exists while the store is open
//! ```
//!
//! - [`message`]: the stored-message format, properties, tag hash, message ids.
//! - [`io`]: the file interface (real files, and a simulated disk with power cuts).
//! - [`commitlog`]: the segmented append-only log.
//! - [`consumequeue`]: per-queue offset → log position files.
//! - [`index`]: lookup by `KEYS` token and `UNIQ_KEY`.
//! - [`MessageStore`]: puts, gets, lookups, flush policy, checkpoint, recovery,
//!   retention.
//!
//! # Durability
//!
//! The commit log is the only source of truth; consume queues and the index are derived
//! from it and rebuilt after a crash (see `recovery.rs`). With [`FlushPolicy::Sync`] an
//! acknowledged put has been fsynced; with [`FlushPolicy::Async`] a power cut loses at
//! most the last flush interval, a killed process nothing. Recovery never serves a torn
//! or corrupt message: every entry past the last checkpoint is verified (sizes, CRC)
//! and the log ends at the first bad one.
//!
//! # A full disk is an answer, never a failure
//!
//! Puts are refused (`DiskFull`) while the disk is at least `disk_full_ratio` (90 %)
//! used and has less than `disk_reserve_bytes` available, and writing resumes by itself
//! when space returns. Behind that check, the commit log reserves its blocks a window
//! ahead of the write position (`commitlog_preallocate`, 16 MiB), so a disk filled by
//! someone else between two checks refuses the append that needs the next window before
//! writing anything; it can never surface at writeback as a failed fsync, which poisons
//! the log. A consume queue that finds no room writing out its tail keeps the entry (the
//! put stands) and refuses later puts until space returns.
//!
//! # Retention: the only way an acknowledged message goes away
//!
//! A retention pass (every `clean_interval`, default 10 s) deletes *whole* commit-log
//! segments, oldest first, never the one being written:
//! - by age: when every message in the segment is older than `retention` (72 h);
//! - by space, only above a hard threshold: while the disk is at least
//!   `disk_force_clean_ratio` (95 %) full and has less than half of
//!   `disk_reserve_bytes` available, whether or not the messages were consumed (a
//!   warning in the log, and `mq_store_segments_deleted_for_space_total`). Below it a
//!   full disk refuses sends instead (at 90 % and less than the reserve), so a disk
//!   shared with other data, which sits far above any ratio, loses nothing.
//!
//! The consume-queue and index entries that pointed into deleted segments go with them,
//! and queue minimum offsets move up (a consumer behind them gets `OffsetTooSmall` and
//! the new minimum). Nothing else deletes stored messages. Age is judged per segment
//! from the first message of the *next* segment, so a segment goes once that message
//! has expired too (at most one segment's worth of time later than its own last one).

#![warn(missing_docs)]

pub mod checkpoint;
pub mod commitlog;
pub mod consumequeue;
pub mod error;
pub mod index;
pub mod io;
pub mod message;
mod recovery;
#[allow(clippy::module_inception)]
mod store;
pub mod termination;
#[cfg(test)]
mod tests;

pub use error::{DecodeError, EncodeError, Result, StoreError};
pub use message::{DEFAULT_MAX_BODY_BYTES, DecodedMessage, MessageToStore};
pub use store::{
    Clock, DISK_FULL_ADVICE, FlushPolicy, FoundMessage, GetResult, GetStatus, ManualClock,
    MessageStore, PutResult, RecoveryCut, StoreConfig, StoredMessage, SystemClock, TagsCodeFn,
};

//! Error types of the store: one enum per concern, so callers can tell a message the
//! client must fix ([`EncodeError`]) from bytes that are not a message ([`DecodeError`])
//! from a store that cannot do its job ([`StoreError`]).

use std::io;
use std::path::{Path, PathBuf};

/// Why a message cannot be put into the stored-message format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The topic is empty.
    #[error("topic is empty")]
    EmptyTopic,
    /// The topic cannot name a directory (it would escape the store).
    #[error("topic {0:?} cannot be stored: it must not be '.', '..' or contain '/', '\\' or NUL")]
    InvalidTopic(String),
    /// The topic is longer than the 1-byte length field of RocketMQ 4.x allows.
    #[error(
        "topic is {len} bytes; the stored format allows at most 127 (including any '<instanceId>%' prefix)"
    )]
    TopicTooLong {
        /// Length of the topic in UTF-8 bytes.
        len: usize,
    },
    /// The serialized properties exceed the 2-byte length field.
    #[error("properties are {len} bytes serialized; the stored format allows at most 32767")]
    PropertiesTooLong {
        /// Length of the serialized properties in bytes.
        len: usize,
    },
    /// The body exceeds the configured maximum.
    #[error("message body is {len} bytes; the maximum is {max}")]
    BodyTooLarge {
        /// Body length in bytes.
        len: usize,
        /// Configured maximum body length.
        max: usize,
    },
    /// The stored entry cannot fit in one commit-log segment (plus the end marker).
    #[error(
        "stored message of {len} bytes does not fit in a commit-log segment of {segment} bytes"
    )]
    EntryTooLarge {
        /// Stored entry length in bytes.
        len: usize,
        /// Configured segment size.
        segment: u64,
    },
}

/// Why bytes are not a valid stored message (or message id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a field or the declared size needs.
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The magic code is neither a message nor a blank marker of RocketMQ 4.x.
    #[error("bad magic code {0:#010x}")]
    BadMagic(u32),
    /// The bytes are the blank end-of-segment marker, not a message.
    #[error("blank end-of-segment marker")]
    Blank,
    /// TOTALSIZE disagrees with the field lengths.
    #[error("TOTALSIZE {declared} does not match the fields ({computed} bytes)")]
    SizeMismatch {
        /// TOTALSIZE as stored.
        declared: i64,
        /// Size computed from the field lengths.
        computed: i64,
    },
    /// A length field is negative.
    #[error("negative {field} length {len}")]
    NegativeLength {
        /// Which length field.
        field: &'static str,
        /// The stored value.
        len: i64,
    },
    /// The body does not match its stored CRC.
    #[error("body CRC {stored:#x} does not match the body ({computed:#x})")]
    CrcMismatch {
        /// BODYCRC as stored.
        stored: u32,
        /// CRC of the stored body.
        computed: u32,
    },
    /// A host's port is outside 0..=65535.
    #[error("port {0} out of range")]
    BadPort(i32),
    /// A message id is not 32 or 56 hex digits.
    #[error("bad message id {0:?}: expected 32 (IPv4) or 56 (IPv6) hex digits")]
    BadMessageId(String),
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The message cannot be stored as given.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Store files contradict each other in a way recovery cannot repair.
    #[error("store data in {path} is unusable: {reason}")]
    Corrupt {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write or fsync failed; the store refuses writes until it is reopened
    /// (recovery then re-establishes what is really on disk).
    #[error("store refuses writes after an I/O failure (reopen to recover): {0}")]
    Failed(String),
    /// The store was shut down.
    #[error("the store is shut down")]
    ShutDown,
    /// Recovery found damage it may not repair by cutting the log: below what was
    /// fsynced, before valid messages, or a missing segment. Nothing was changed.
    #[error(
        "the commit log in {path} is damaged at offset {offset} (segment {segment}): {reason}; {detail}. Nothing was changed. To start anyway, cutting the log at {offset} and dropping everything after it, start once with --recover-truncate"
    )]
    Damaged {
        /// The commit-log directory.
        path: PathBuf,
        /// Where the valid log ends.
        offset: u64,
        /// The segment file holding that offset.
        segment: String,
        /// What the scan found there.
        reason: String,
        /// Why cutting there would lose acknowledged data.
        detail: String,
    },
    /// The disk is too full to take more messages; writes resume once space returns.
    #[error("disk full: {reason}")]
    DiskFull {
        /// How full, and what the limit is.
        reason: String,
    },
    /// The store's volume cannot hold two commit-log segments (the one being written and
    /// the next), so the broker would fill it before retention could ever free a segment.
    #[error(
        "the volume holding {path} has {} in total, but a store with {} commit-log segments needs at least {} (two segments); give the broker a bigger volume, or a smaller --segment-size",
        human_bytes(*total), human_bytes(*minimum / 2), human_bytes(*minimum)
    )]
    VolumeTooSmall {
        /// The store directory.
        path: PathBuf,
        /// Bytes of its file system (in use plus available).
        total: u64,
        /// Bytes needed: two segments.
        minimum: u64,
    },
    /// Another process has the store open: two writers would corrupt it.
    #[error(
        "store {path} is in use by another process ({holder}); stop that process first (two processes on one store would corrupt it)"
    )]
    Locked {
        /// The store's lock file.
        path: PathBuf,
        /// The holder's record: its pid and host.
        holder: String,
    },
}

/// `bytes` in binary units as Kubernetes quantities write them (`1Gi`, `256Mi`, `1.5Gi`),
/// exact bytes below 1 KiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["Ki", "Mi", "Gi", "Ti", "Pi"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}{unit}")
    } else {
        format!("{rounded:.1}{unit}")
    }
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches the path to an `io::Error`.
pub(crate) trait IoContext<T> {
    /// Maps the error to [`StoreError::Io`] naming `path`.
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Builds a [`StoreError::Corrupt`].
pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

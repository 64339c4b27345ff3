//! The broker's last words: one machine-parsable line written to a termination log
//! (`mq-broker --termination-log <path>`, Kubernetes' `terminationMessagePath`) when the
//! process exits on a fatal startup or store error, so whoever restarts it (a person
//! reading `kubectl describe pod`, the operator reading
//! `status.containerStatuses[].lastState.terminated.message`) knows why without its logs.
//!
//! # Format
//!
//! One line, at most [`MAX_BYTES`] bytes (Kubernetes keeps no more than 4096):
//!
//! ```text
//! StoreDamaged segment=<segment file> offset=<commit-log offset>: <human message>
//! VolumeTooSmall: <human message>
//! Fatal: <human message>
//! ```
//!
//! The first word is the kind; `StoreDamaged` carries the segment file name (20 digits)
//! and the offset where the valid log ends — the offset a targeted cut
//! (`recoverTruncateAt.<brokerName>` in broker.conf) must name. The human message is the
//! error as the log shows it, newlines folded into `; `. [`Termination::parse`] reads
//! it back; anything else (a log tail a kubelet fell back to) parses as `None`.

use std::fmt;
use std::path::Path;

use super::StoreError;

/// Most bytes of a termination message (Kubernetes' limit).
pub const MAX_BYTES: usize = 4096;

/// Why the broker stopped, as written to its termination log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Termination {
    /// The commit log is damaged where recovery may not cut on its own.
    StoreDamaged {
        /// The segment file holding `offset`.
        segment: String,
        /// Where the valid log ends (a cut drops everything from here on).
        offset: u64,
        /// The error as a person reads it.
        message: String,
    },
    /// The store's volume cannot hold two commit-log segments.
    VolumeTooSmall {
        /// The error as a person reads it (names the minimum).
        message: String,
    },
    /// Any other fatal error.
    Fatal {
        /// The error as a person reads it.
        message: String,
    },
}

impl Termination {
    /// The termination of a store error; `Fatal` for kinds without their own.
    pub fn from_store_error(err: &StoreError) -> Self {
        let message = one_line(&err.to_string());
        match err {
            StoreError::Damaged {
                segment, offset, ..
            } => Self::StoreDamaged {
                segment: segment.clone(),
                offset: *offset,
                message,
            },
            StoreError::VolumeTooSmall { .. } => Self::VolumeTooSmall { message },
            _ => Self::Fatal { message },
        }
    }

    /// A `Fatal` termination (newlines folded into `; `).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal {
            message: one_line(&message.into()),
        }
    }

    /// The human message.
    pub fn message(&self) -> &str {
        match self {
            Self::StoreDamaged { message, .. }
            | Self::VolumeTooSmall { message }
            | Self::Fatal { message } => message,
        }
    }

    /// The line as written: one line, at most [`MAX_BYTES`] bytes, without a newline.
    pub fn line(&self) -> String {
        let head = match self {
            Self::StoreDamaged {
                segment, offset, ..
            } => format!(
                "StoreDamaged segment={} offset={offset}: ",
                one_word(segment)
            ),
            Self::VolumeTooSmall { .. } => "VolumeTooSmall: ".to_owned(),
            Self::Fatal { .. } => "Fatal: ".to_owned(),
        };
        let mut line = head + &one_line(self.message());
        if line.len() > MAX_BYTES {
            let mut cut = MAX_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line
    }

    /// Reads a termination message back; `None` unless its first line is one of ours.
    pub fn parse(text: &str) -> Option<Self> {
        let line = text.lines().next()?.trim_end();
        let (head, message) = line.split_once(": ")?;
        let message = message.to_owned();
        let mut words = head.split(' ');
        let kind = words.next()?;
        let fields: Vec<&str> = words.collect();
        match (kind, fields.as_slice()) {
            ("StoreDamaged", [segment, offset]) => Some(Self::StoreDamaged {
                segment: segment.strip_prefix("segment=")?.to_owned(),
                offset: offset.strip_prefix("offset=")?.parse().ok()?,
                message,
            }),
            ("VolumeTooSmall", []) => Some(Self::VolumeTooSmall { message }),
            ("Fatal", []) => Some(Self::Fatal { message }),
            _ => None,
        }
    }

    /// Writes the line (and a newline) to `path`, replacing what was there.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, format!("{}\n", self.line()))
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn one_word(text: &str) -> String {
    text.replace(|c: char| c.is_whitespace() || c == ':', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn damaged() -> StoreError {
        StoreError::Damaged {
            path: PathBuf::from("/store/commitlog"),
            offset: 4242,
            segment: format!("{:020}", 0),
            reason: "bad magic code 0x00000000".into(),
            detail: "a valid message follows".into(),
        }
    }

    #[test]
    fn store_damage_round_trips_with_its_segment_and_offset() {
        let t = Termination::from_store_error(&damaged());
        let line = t.line();
        assert!(
            line.starts_with("StoreDamaged segment=00000000000000000000 offset=4242: the commit log in /store/commitlog is damaged at offset 4242"),
            "{line}"
        );
        assert_eq!(Termination::parse(&format!("{line}\n")), Some(t));
    }

    #[test]
    fn other_kinds_round_trip_and_logs_do_not_parse() {
        let small = Termination::from_store_error(&StoreError::VolumeTooSmall {
            path: PathBuf::from("/store"),
            total: 100 << 20,
            minimum: 2 << 30,
        });
        assert!(small.line().starts_with("VolumeTooSmall: "), "{small}");
        assert!(small.message().contains("2Gi"), "{small}");
        assert_eq!(Termination::parse(&small.line()), Some(small));
        let fatal = Termination::fatal("binding the broker\nAddress in use");
        assert_eq!(fatal.line(), "Fatal: binding the broker; Address in use");
        assert_eq!(Termination::parse(&fatal.line()), Some(fatal));
        for other in [
            "",
            "2026-01-01T00:00:00Z INFO broker listening",
            "StoreDamaged segment=x: no offset",
            "StoreDamaged segment=x offset=nope: bad",
            "Panic: something",
        ] {
            assert_eq!(Termination::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn a_long_message_is_cut_to_what_kubernetes_keeps() {
        let t = Termination::fatal("é".repeat(5000));
        let line = t.line();
        assert!(line.len() <= MAX_BYTES);
        assert!(matches!(
            Termination::parse(&line),
            Some(Termination::Fatal { .. })
        ));
    }
}

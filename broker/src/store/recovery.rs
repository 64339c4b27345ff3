//! Recovery at open: make the commit log, the consume queues and the index agree again.
//!
//! **After a clean stop** (no `abort` file, and the checkpoint says the log, the queues
//! and the index all end where the log's files end) the files are trusted as they are.
//!
//! **After a crash** (the `abort` file is still there, or anything disagrees):
//!
//! 1. Pick the safe point *S*: the smaller of the checkpoint's consume-queue offset and
//!    the end of the last index run, never below the log's first segment. Everything
//!    before *S* was fsynced in the log, the queues and the index before the checkpoint
//!    recorded it (the checkpoint fsyncs the log first, then the queues).
//! 2. Cut every consume queue back to its entries that point below *S* (walking back
//!    over torn or zeroed tail entries).
//! 3. Scan the log from *S*, verifying each entry (magic, sizes, body CRC, its own
//!    offset); re-append each message to its consume queue and index it. The first bad
//!    entry is the torn tail: the log is truncated there.
//! 4. If an index run claims more than the log now holds, drop such runs and re-index
//!    from the end of the last remaining one.
//!
//! A message's stored QUEUEOFFSET must equal its queue's length when it is re-appended,
//! so queue offsets stay dense. If not (a queue file lost data it had fsynced), recovery
//! starts over from the log's first segment, and at worst restarts that queue at the
//! stored offset (entries below are gone with the log anyway).

use super::checkpoint::Checkpoint;
use super::commitlog::{Appended, ScanOutcome, lock};
use super::consumequeue::ConsumeQueue;
use super::error::{Result, StoreError, corrupt};
use super::message::{DecodedMessage, is_invisible_transaction, validate_topic};
use super::store::{Inner, RecoveryCut};

/// Whether a rebuild pass may repair queues instead of giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Report a queue that disagrees with the log.
    Strict,
    /// Restart a disagreeing queue at the offset the log says.
    Repair,
}

/// How a re-dispatch pass ended.
enum Pass {
    /// The scan reached the end of the valid log.
    Done(ScanOutcome),
    /// A queue disagreed with the log (strict mode).
    Disagree(String),
}

impl Inner {
    /// Brings the store to a consistent state; `crashed` is whether the abort marker
    /// was present.
    pub(super) fn recover(&self, crashed: bool, saved: Option<Checkpoint>) -> Result<()> {
        let trusted = saved.filter(|cp| !crashed && self.matches_files(cp).unwrap_or(false));
        match trusted {
            Some(cp) => {
                lock(&self.writer).last_store_timestamp = cp.phys_timestamp;
                tracing::info!(
                    end = cp.phys_flushed,
                    "store was stopped cleanly; trusting the checkpoint"
                );
            }
            None => self.recover_after_crash(saved)?,
        }
        let log_min = self.commitlog.min_offset();
        for cq in self.all_queues() {
            cq.correct_min_offset(log_min)?;
        }
        self.checkpoint()
    }

    /// Whether a checkpoint describes exactly the files as they are.
    fn matches_files(&self, cp: &Checkpoint) -> Result<bool> {
        let end = self.commitlog.files_end()?;
        let index_end = self
            .index
            .sealed_end()
            .unwrap_or(self.commitlog.min_offset());
        if cp.phys_flushed != end || cp.cq_offset != end || index_end != end {
            return Ok(false);
        }
        for cq in self.all_queues() {
            let max = cq.max_offset();
            let last = if max > cq.min_offset() {
                cq.entry(max - 1)?
            } else {
                None
            };
            if last.is_some_and(|e| !e.is_valid() || e.phys() + e.size as u64 > end) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn recover_after_crash(&self, saved: Option<Checkpoint>) -> Result<()> {
        let log_min = self.commitlog.min_offset();
        let files_end = self.commitlog.files_end()?;
        let index_end = self.index.sealed_end().unwrap_or(log_min);
        let cq_end = saved.map_or(log_min, |cp| cp.cq_offset);
        let mut start = cq_end.min(index_end).max(log_min);
        if start > files_end {
            start = log_min;
        }
        if files_end > 0 {
            tracing::warn!(
                start,
                files_end,
                "store was not stopped cleanly; recovering from the commit log"
            );
        }
        let flushed = saved.map_or(log_min, |cp| cp.phys_flushed);
        match self.rebuild_from(start, Mode::Strict, flushed)? {
            None => Ok(()),
            Some(reason) if start > log_min => {
                tracing::warn!(%reason, "queues disagree with the log; rebuilding from the first segment");
                self.rebuild_from(log_min, Mode::Repair, flushed)
                    .map(|_| ())
            }
            Some(reason) => Err(corrupt(self.commitlog.dir(), reason)),
        }
    }

    /// Steps 2–4 from `start`; returns the disagreement that stopped a strict pass.
    /// `flushed` is what the last checkpoint saw fsynced: damage below it is not a torn
    /// tail.
    fn rebuild_from(&self, start: u64, mode: Mode, flushed: u64) -> Result<Option<String>> {
        for cq in self.all_queues() {
            cq.truncate_before_phys(start)?;
        }
        let outcome = match self.redispatch(start, mode, true)? {
            Pass::Done(outcome) => outcome,
            Pass::Disagree(reason) => return Ok(Some(reason)),
        };
        if let Some(reason) = &outcome.damage {
            self.may_cut(outcome.end, reason, flushed)?;
        }
        self.commitlog.truncate(outcome.end)?;
        if self.index.sealed_end().is_some_and(|e| e > outcome.end) {
            let resume = self.index.truncate(outcome.end)?;
            self.redispatch(resume, mode, false)?;
        }
        self.index.advance(outcome.end);
        tracing::info!(start, end = outcome.end, "commit log recovered");
        Ok(None)
    }

    /// Whether the log may be cut at `end` where the scan found `reason`: only a torn
    /// tail may (nothing fsynced after it, no valid message after it, no segment
    /// missing); anything else needs `recover_truncate`, and is then reported loudly.
    fn may_cut(&self, end: u64, reason: &str, flushed: u64) -> Result<()> {
        let detail = if reason.starts_with("no segment file at") {
            Some("a segment file in the middle of the log is missing".to_owned())
        } else if end < flushed {
            Some(format!(
                "the last checkpoint saw the log fsynced up to {flushed}, so acknowledged messages would be dropped"
            ))
        } else {
            self.commitlog.valid_entry_after(end)?.map(|next| {
                format!("a valid message follows at offset {next} in the same file, so this is not a torn tail")
            })
        };
        let Some(detail) = detail else {
            tracing::warn!(end, %reason, "truncating the commit log's torn tail");
            return Ok(());
        };
        let segment_size = self.commitlog.segment_size();
        let segment = format!("{:020}", end - end % segment_size);
        let targeted = self.cfg.recover_truncate_at == Some(end);
        if !self.cfg.recover_truncate && !targeted {
            let detail = match self.cfg.recover_truncate_at {
                Some(at) => format!(
                    "{detail} (recoverTruncateAt allows a cut at {at} only, and the damage is at {end})"
                ),
                None => detail,
            };
            return Err(StoreError::Damaged {
                path: self.commitlog.dir().to_owned(),
                offset: end,
                segment,
                reason: reason.to_owned(),
                detail,
            });
        }
        let dropped = self.commitlog.files_end()?.saturating_sub(end);
        tracing::error!(
            end,
            segment,
            dropped_bytes = dropped,
            %reason,
            %detail,
            how = if targeted { "recoverTruncateAt" } else { "--recover-truncate" },
            "cutting the damaged commit log as asked; everything after this offset is dropped"
        );
        *lock(&self.recovery_cut) = Some(RecoveryCut {
            offset: end,
            segment,
            dropped_bytes: dropped,
        });
        Ok(())
    }

    /// Scans from `start`, indexing each message and, if `with_queues`, re-appending it
    /// to its consume queue (the index skips what it already has).
    fn redispatch(&self, start: u64, mode: Mode, with_queues: bool) -> Result<Pass> {
        let mut disagreement = None;
        let scanned = self.commitlog.scan(start, |pos, msg| {
            match self.redispatch_one(pos, msg, mode, with_queues)? {
                None => Ok(()),
                Some(reason) => {
                    let err = corrupt(self.commitlog.dir(), reason.clone());
                    disagreement = Some(reason);
                    Err(err)
                }
            }
        });
        match disagreement {
            Some(reason) => Ok(Pass::Disagree(reason)),
            None => scanned.map(Pass::Done),
        }
    }

    /// Re-dispatches one message; returns a disagreement in strict mode.
    fn redispatch_one(
        &self,
        pos: u64,
        msg: &DecodedMessage<'_>,
        mode: Mode,
        with_queues: bool,
    ) -> Result<Option<String>> {
        {
            let mut writer = lock(&self.writer);
            writer.last_store_timestamp = writer.last_store_timestamp.max(msg.store_timestamp);
        }
        if validate_topic(&msg.topic).is_err() {
            tracing::warn!(pos, topic = %msg.topic, "skipping a message with an unusable topic");
            return Ok(None);
        }
        let visible = with_queues && !is_invisible_transaction(msg.sys_flag);
        let cq = if visible {
            Some(self.queue_or_create(&msg.topic, msg.queue_id)?)
        } else {
            None
        };
        if let Some(cq) = &cq
            && let Some(reason) = self.check_queue_offset(cq, pos, msg, mode)?
        {
            return Ok(Some(reason));
        }
        let at = Appended {
            offset: pos,
            size: msg.store_size as u32,
        };
        self.dispatch(
            cq.as_deref(),
            msg.sys_flag,
            &msg.topic,
            &msg.properties,
            msg.store_timestamp,
            at,
        )?;
        Ok(None)
    }

    /// Checks the message's QUEUEOFFSET against the queue's length (repairing the queue
    /// in repair mode).
    fn check_queue_offset(
        &self,
        cq: &ConsumeQueue,
        pos: u64,
        msg: &DecodedMessage<'_>,
        mode: Mode,
    ) -> Result<Option<String>> {
        let expected = cq.max_offset();
        if msg.queue_offset == expected as i64 {
            return Ok(None);
        }
        let reason = format!(
            "message at {pos} has queue offset {} but {}/{} holds {expected} entries",
            msg.queue_offset, msg.topic, msg.queue_id
        );
        if mode == Mode::Strict || msg.queue_offset < 0 {
            return Ok(Some(reason));
        }
        tracing::warn!(%reason, "restarting the queue at the logged offset");
        cq.reset_to(msg.queue_offset as u64)?;
        Ok(None)
    }
}

//! Message reads over an instance's brokers: one message by id, messages by key, a
//! message's trace, dead-letter resends, and the pages of a paged query.

use mq_broker::client::{DlqMessageRef, QueriedMessage, TrackedMessage};
use mq_broker::remoting::consume::{MessageTrack, TrackType};
use mq_broker::store::message;

use super::{Broker, Runtime, Target, absent_here};
use crate::envelope::{ApiError, ErrorCode};
use crate::task::{Snapshot, SnapshotQueue};

/// Most messages `getByKey` asks each broker for (the broker's own cap).
pub const MAX_BY_KEY: i32 = 64;
/// Most messages one browse call returns.
const BROWSE_BATCH: i64 = 64;

/// A message and the broker holding it.
#[derive(Clone, Debug)]
pub struct Found {
    /// Index of the broker in the list searched.
    pub broker: usize,
    /// The message.
    pub message: QueriedMessage,
}

impl Runtime {
    /// The message of `topic` named by `msg_id` (offset id or the client's unique key),
    /// `None` when no broker has it in that topic (a message of another topic is not
    /// shown: its id names nothing here).
    pub async fn find(
        &self,
        t: &Target,
        brokers: &[Broker],
        topic: &str,
        msg_id: &str,
    ) -> Result<Option<Found>, ApiError> {
        let wanted = t.bare(topic);
        if let Ok((_, offset)) = message::decode_offset_msg_id(msg_id) {
            for (i, b) in brokers.iter().enumerate() {
                // Not this broker's (the IP in the id may be an old pod IP): try the next.
                if let Ok(m) = b.client.view_by_offset(offset).await
                    && m.offset_msg_id().eq_ignore_ascii_case(msg_id)
                {
                    return Ok((t.bare(&m.topic) == wanted).then_some(Found {
                        broker: i,
                        message: m,
                    }));
                }
            }
        }
        for (i, b) in brokers.iter().enumerate() {
            let found = match b.client.query_by_unique_key(topic, msg_id).await {
                Ok(found) => found,
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            };
            if let Some(m) = found.into_iter().find(|m| t.bare(&m.topic) == wanted) {
                return Ok(Some(Found {
                    broker: i,
                    message: m,
                }));
            }
        }
        Ok(None)
    }

    /// Messages of `topic` whose keys contain `key`, newest first, from every broker.
    pub async fn by_key(
        &self,
        brokers: &[Broker],
        topic: &str,
        key: &str,
    ) -> Result<Vec<QueriedMessage>, ApiError> {
        let mut out = Vec::new();
        for b in brokers {
            match b
                .client
                .query_by_key(topic, key, MAX_BY_KEY, 0, i64::MAX)
                .await
            {
                Ok(found) => out.extend(found),
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            }
        }
        out.sort_by(|a, b| {
            (b.store_timestamp, b.store_host, b.phys_offset).cmp(&(
                a.store_timestamp,
                a.store_host,
                a.phys_offset,
            ))
        });
        out.dedup_by(|a, b| a.store_host == b.store_host && a.phys_offset == b.phys_offset);
        Ok(out)
    }

    /// For every group consuming the found message's topic, where the message stands,
    /// asked of the broker holding it. Pull and broadcasting groups answer `UNKNOWN` (the
    /// broker cannot tell) with the reason.
    pub async fn trace(
        &self,
        t: &Target,
        brokers: &[Broker],
        found: &Found,
    ) -> Result<Vec<MessageTrack>, ApiError> {
        let b = &brokers[found.broker];
        let m = &found.message;
        // Canonical names throughout: the broker then answers canonical names too, so the
        // consume stats' topics compare equal to the message's.
        let tracked = TrackedMessage {
            topic: t.names.canonical(&m.topic),
            queue_id: m.queue_id,
            queue_offset: m.queue_offset,
            tags: m.tags().map(str::to_owned),
        };
        let tracks = b
            .client
            .message_track(&tracked)
            .await
            .map_err(|e| self.fail(b, &e))?;
        Ok(tracks
            .into_iter()
            .map(|mut tr| {
                tr.consumer_group = t.bare(&tr.consumer_group);
                let why = match tr.track_type {
                    TrackType::Pull => Some("a pull consumer group keeps its own progress"),
                    TrackType::ConsumeBroadcasting => {
                        Some("a broadcasting group's clients keep their own progress")
                    }
                    _ => None,
                };
                if let Some(why) = why {
                    tr.track_type = TrackType::Unknown;
                    tr.exception_desc = Some(why.to_owned());
                }
                tr
            })
            .collect())
    }

    /// Delivers the dead-letter message `msg_id` of `group` to the group again, from the
    /// broker holding it. `BIZ_NO_MESSAGE` when none does.
    pub async fn resend_dlq(
        &self,
        brokers: &[Broker],
        group: &str,
        msg_id: &str,
    ) -> Result<(), ApiError> {
        for b in brokers {
            match b.client.resend_dlq(group, DlqMessageRef::Id(msg_id)).await {
                Ok(_) => return Ok(()),
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            }
        }
        Err(no_message(msg_id))
    }

    /// The per-queue extent of `topic` between `begin` and `end` (ms, inclusive): for
    /// every queue, the first offset stored at or after `begin` and the first after `end`.
    pub async fn snapshot(
        &self,
        brokers: &[Broker],
        topic: &str,
        begin: i64,
        end: i64,
    ) -> Result<Snapshot, ApiError> {
        let mut snap = Snapshot::default();
        for (i, queue, min, max) in self.queues(brokers, topic).await? {
            if max <= min {
                continue;
            }
            let b = &brokers[i];
            let lo = b.client.search_offset(topic, queue, begin).await;
            let hi = b
                .client
                .search_offset(topic, queue, end.saturating_add(1))
                .await;
            let (lo, hi) = match (lo, hi) {
                (Ok(lo), Ok(hi)) => (lo.max(min), hi.min(max)),
                (Err(e), _) | (_, Err(e)) => return Err(self.fail(b, &e)),
            };
            if hi > lo {
                snap.push(&b.name, queue, lo, hi);
            }
        }
        Ok(snap)
    }

    /// The messages of `queues` (segments of a snapshot, in order) of `topic`.
    pub async fn read_segments(
        &self,
        brokers: &[Broker],
        topic: &str,
        queues: &[SnapshotQueue],
    ) -> Result<Vec<QueriedMessage>, ApiError> {
        let mut out = Vec::new();
        for q in queues {
            let b = brokers.iter().find(|b| b.name == q.broker).ok_or_else(|| {
                ApiError::invoke(format!(
                    "broker {} holding part of this query is not reachable now",
                    q.broker
                ))
            })?;
            let mut at = q.from;
            while at < q.to {
                let n = (q.to - at).min(BROWSE_BATCH) as i32;
                let page = b
                    .client
                    .browse(topic, q.queue, at, Some(q.to), n)
                    .await
                    .map_err(|e| self.fail(b, &e))?;
                let got = page.messages.len();
                out.extend(page.messages.into_iter().filter(|m| m.queue_offset < q.to));
                // Messages past retention are gone: jump to what is still stored.
                let next = page.next_offset.max(page.min_offset);
                if got == 0 && next <= at {
                    break;
                }
                at = if next > at { next } else { at + got as i64 };
            }
        }
        Ok(out)
    }
}

/// `BIZ_NO_MESSAGE` for `msg_id`.
pub fn no_message(msg_id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NoMessage,
        format!("no message with id {msg_id:?} in this topic"),
    )
}

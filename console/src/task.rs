//! Stateless paged message queries: a task id carries the query, its snapshot and its
//! expiry, signed with a key every replica shares, so any replica answers any page of the
//! same stable result set.
//!
//! A task id is `base64url(json payload) "." base64url(HMAC-SHA256(key, payload))`. The
//! snapshot lists, per queue holding messages of the time range, the offsets `[from, to)`
//! at creation; page `n` is the `n`-th slice of their concatenation.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::envelope::ApiError;

/// How long a task id is valid (ms).
pub const TASK_TTL_MS: i64 = 30 * 60 * 1000;
/// Most pages of one query.
pub const MAX_PAGES: i64 = 50;
/// Smallest and largest page, and the default.
pub const PAGE_SIZES: (i64, i64, i64) = (5, 50, 20);

/// The key task ids are signed with.
pub struct TaskKey {
    /// Empty until the key is known (the console serves before the operator made it).
    key: std::sync::RwLock<Vec<u8>>,
}

/// What a query reads: a topic, or a group's dead-letter queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// `getByPagedTopic`.
    #[serde(rename = "t")]
    Topic,
    /// `getByPagedDLQ`.
    #[serde(rename = "d")]
    Dlq,
}

/// One queue's part of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotQueue {
    /// Broker name.
    pub broker: String,
    /// Queue id.
    pub queue: i32,
    /// First offset (inclusive).
    pub from: i64,
    /// End offset (exclusive).
    pub to: i64,
}

/// Per-queue offsets of a query's messages at its creation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Broker names (indexed by `q`).
    #[serde(rename = "b")]
    brokers: Vec<String>,
    /// `[broker index, queue id, from, to]`, in reading order.
    #[serde(rename = "q")]
    queues: Vec<[i64; 4]>,
}

impl Snapshot {
    /// Adds queue `queue` of `broker` with offsets `[from, to)`.
    pub fn push(&mut self, broker: &str, queue: i32, from: i64, to: i64) {
        let i = match self.brokers.iter().position(|b| b == broker) {
            Some(i) => i,
            None => {
                self.brokers.push(broker.to_owned());
                self.brokers.len() - 1
            }
        };
        self.queues.push([i as i64, queue.into(), from, to]);
    }

    /// Messages in the snapshot.
    pub fn total(&self) -> i64 {
        self.queues.iter().map(|q| (q[3] - q[2]).max(0)).sum()
    }

    /// The queue segments holding messages `[skip, skip + take)` of the concatenation.
    pub fn slice(&self, mut skip: i64, mut take: i64) -> Vec<SnapshotQueue> {
        let mut out = Vec::new();
        for q in &self.queues {
            if take <= 0 {
                break;
            }
            let len = (q[3] - q[2]).max(0);
            if skip >= len {
                skip -= len;
                continue;
            }
            let from = q[2] + skip;
            let to = (from + take).min(q[3]);
            take -= to - from;
            skip = 0;
            let broker = usize::try_from(q[0])
                .ok()
                .and_then(|i| self.brokers.get(i))
                .cloned()
                .unwrap_or_default();
            out.push(SnapshotQueue {
                broker,
                queue: i32::try_from(q[1]).unwrap_or(0),
                from,
                to,
            });
        }
        out
    }
}

/// A paged query: what it asks, for whom, its snapshot and its expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Topic or dead-letter queue.
    #[serde(rename = "k")]
    pub source: Source,
    /// Instance id.
    #[serde(rename = "i")]
    pub instance: String,
    /// Topic or group id, as the caller named it.
    #[serde(rename = "n")]
    pub name: String,
    /// The caller's user id.
    #[serde(rename = "u")]
    pub caller: String,
    /// Begin of the time range (ms).
    #[serde(rename = "f")]
    pub begin: i64,
    /// End of the time range (ms).
    #[serde(rename = "e")]
    pub end: i64,
    /// Page size.
    #[serde(rename = "s")]
    pub page_size: i64,
    /// Expiry (ms).
    #[serde(rename = "x")]
    pub expires: i64,
    /// The snapshot.
    #[serde(rename = "p")]
    pub snapshot: Snapshot,
}

impl Task {
    /// Pages of this query (at most [`MAX_PAGES`]).
    pub fn max_pages(&self) -> i64 {
        let size = self.page_size.max(1);
        ((self.snapshot.total() + size - 1) / size).min(MAX_PAGES)
    }

    /// The segments of page `page` (1-based).
    pub fn page(&self, page: i64) -> Vec<SnapshotQueue> {
        self.snapshot
            .slice((page - 1).max(0) * self.page_size, self.page_size)
    }

    /// Whether this task answers `query` (same source, instance, name, caller and range).
    pub fn answers(&self, query: &Task) -> bool {
        self.source == query.source
            && self.instance == query.instance
            && self.name == query.name
            && self.caller == query.caller
    }
}

/// `BIZ_FIELD_CHECK_INVALID` on `field` for a task id that is not valid here.
fn invalid(field: &str, why: &str) -> ApiError {
    ApiError::field(field, why)
}

impl TaskKey {
    /// A key from its bytes.
    pub fn new(key: Vec<u8>) -> Self {
        Self {
            key: std::sync::RwLock::new(key),
        }
    }

    /// Sets the key (once it is known).
    pub fn set(&self, key: Vec<u8>) {
        *self.key.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    /// Whether a key is set.
    pub fn is_set(&self) -> bool {
        !self
            .key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn mac(&self, payload: &[u8]) -> Result<Hmac<Sha256>, ApiError> {
        let key = self.key.read().unwrap_or_else(|e| e.into_inner()).clone();
        if key.is_empty() {
            return Err(ApiError::invoke(
                "paged queries are not ready: the console has not read its task key (Secret mq-console-task-key, made by the operator) yet",
            ));
        }
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|e| ApiError::system(format!("task key: {e}")))?;
        mac.update(payload);
        Ok(mac)
    }

    /// The signed id of `task`.
    pub fn seal(&self, task: &Task) -> Result<String, ApiError> {
        let payload = serde_json::to_vec(task)
            .map_err(|e| ApiError::system(format!("encoding a task: {e}")))?;
        let tag = self.mac(&payload)?.finalize().into_bytes();
        Ok(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    /// The task of `id` (parameter `field`) when it is signed with this key, not expired
    /// at `now_ms`, and answers `query`; else `BIZ_FIELD_CHECK_INVALID`.
    pub fn open(&self, field: &str, id: &str, now_ms: i64, query: &Task) -> Result<Task, ApiError> {
        let (payload, tag) = id
            .trim()
            .split_once('.')
            .ok_or_else(|| invalid(field, "is not a task id of this console"))?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| invalid(field, "is not a task id of this console"))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| invalid(field, "is not a task id of this console"))?;
        self.mac(&payload)?
            .verify_slice(&tag)
            .map_err(|_| invalid(field, "is not a task id of this console"))?;
        let task: Task = serde_json::from_slice(&payload)
            .map_err(|_| invalid(field, "is not a task id of this console"))?;
        if now_ms >= task.expires {
            return Err(invalid(
                field,
                "has expired (a task lives 30 minutes): start the query again without it",
            ));
        }
        if !task.answers(query) {
            return Err(invalid(
                field,
                "belongs to another query (instance, topic, group or account)",
            ));
        }
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(total_per_queue: &[i64]) -> Task {
        let mut snapshot = Snapshot::default();
        for (i, n) in total_per_queue.iter().enumerate() {
            snapshot.push(
                if i % 2 == 0 { "broker-0" } else { "broker-1" },
                i as i32,
                100,
                100 + n,
            );
        }
        Task {
            source: Source::Topic,
            instance: "MQ_INST_1".into(),
            name: "ORDERS".into(),
            caller: "1001".into(),
            begin: 0,
            end: 10,
            page_size: 5,
            expires: 1_000,
            snapshot,
        }
    }

    #[test]
    fn a_sealed_task_opens_on_any_replica_with_the_key() {
        let t = task(&[3, 4]);
        let id = TaskKey::new(b"k".to_vec()).seal(&t).unwrap();
        let again = TaskKey::new(b"k".to_vec())
            .open("taskId", &id, 999, &t)
            .unwrap();
        assert_eq!(again, t);
        assert!(id.len() < crate::params::MAX_VALUE_LEN);
    }

    #[test]
    fn forged_expired_and_foreign_ids_are_refused_as_field_errors() {
        let t = task(&[3]);
        let key = TaskKey::new(b"k".to_vec());
        let id = key.seal(&t).unwrap();
        let other_key = TaskKey::new(b"other".to_vec()).open("taskId", &id, 0, &t);
        assert!(other_key.unwrap_err().detail.starts_with("taskId: "));
        // A payload changed (more pages) with the old signature.
        let (_, tag) = id.split_once('.').unwrap();
        let mut bigger = t.clone();
        bigger.snapshot.push("broker-9", 0, 0, 1_000_000);
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&bigger).unwrap())
        );
        assert!(key.open("taskId", &forged, 0, &bigger).is_err());
        assert!(key.open("taskId", "garbage", 0, &t).is_err());
        let expired = key.open("taskId", &id, 1_000, &t).unwrap_err();
        assert!(expired.detail.contains("expired"), "{expired:?}");
        for other in [
            Task {
                caller: "2002".into(),
                ..t.clone()
            },
            Task {
                instance: "MQ_INST_2".into(),
                ..t.clone()
            },
            Task {
                name: "OTHER".into(),
                ..t.clone()
            },
            Task {
                source: Source::Dlq,
                ..t.clone()
            },
        ] {
            let e = key.open("taskId", &id, 0, &other).unwrap_err();
            assert_eq!(e.code, crate::envelope::ErrorCode::FieldCheckInvalid);
        }
    }

    #[test]
    fn pages_cut_the_queues_in_order_without_overlap() {
        let t = task(&[3, 4, 0, 6]);
        assert_eq!(t.snapshot.total(), 13);
        assert_eq!(t.max_pages(), 3);
        let p1 = t.page(1);
        assert_eq!(
            p1.iter()
                .map(|q| (q.queue, q.from, q.to))
                .collect::<Vec<_>>(),
            vec![(0, 100, 103), (1, 100, 102)]
        );
        assert_eq!(p1[1].broker, "broker-1");
        let p3 = t.page(3);
        assert_eq!(
            p3.iter()
                .map(|q| (q.queue, q.from, q.to))
                .collect::<Vec<_>>(),
            vec![(3, 103, 106)]
        );
        assert!(t.page(4).is_empty());
        let counted: i64 = (1..=3).flat_map(|p| t.page(p)).map(|q| q.to - q.from).sum();
        assert_eq!(counted, 13);
    }

    #[test]
    fn pages_are_capped_at_fifty() {
        let t = task(&[10_000]);
        assert_eq!(t.max_pages(), MAX_PAGES);
    }

    #[test]
    fn no_key_no_tasks_until_it_is_set() {
        let key = TaskKey::new(vec![]);
        let e = key.seal(&task(&[1])).unwrap_err();
        assert_eq!(e.code, crate::envelope::ErrorCode::InvokeError);
        assert!(e.detail.contains("not ready"), "{e}");
        key.set(b"k".to_vec());
        let id = key.seal(&task(&[1])).unwrap();
        assert!(key.open("taskId", &id, 0, &task(&[1])).is_ok());
    }
}

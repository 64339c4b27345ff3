//! Consumer offsets per group, topic and queue (`ConsumerOffsetManager`), persisted
//! periodically and on shutdown.

use super::persist::{self, PersistError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Key of one group's offsets on one topic, Java's `topic@group`.
fn key(group: &str, topic: &str) -> String {
    format!("{topic}@{group}")
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Stored {
    offset_table: HashMap<String, BTreeMap<i32, i64>>,
}

/// Committed consumer offsets.
pub struct ConsumerOffsets {
    path: PathBuf,
    table: Mutex<Stored>,
    dirty: AtomicBool,
}

impl ConsumerOffsets {
    /// Loads `path` (empty when new).
    pub fn open(path: PathBuf) -> Result<Self, PersistError> {
        Ok(Self {
            table: Mutex::new(persist::load(&path)?),
            path,
            dirty: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the group's next offset to consume in a queue.
    pub fn commit(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        self.lock()
            .offset_table
            .entry(key(group, topic))
            .or_default()
            .insert(queue_id, offset);
        self.dirty.store(true, Ordering::Release);
    }

    /// The group's committed offset in a queue, if any.
    pub fn query(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.lock()
            .offset_table
            .get(&key(group, topic))
            .and_then(|q| q.get(&queue_id).copied())
    }

    /// The group's committed offsets on a topic, by queue.
    pub fn topic_offsets(&self, group: &str, topic: &str) -> BTreeMap<i32, i64> {
        self.lock()
            .offset_table
            .get(&key(group, topic))
            .cloned()
            .unwrap_or_default()
    }

    /// Topics the group has committed offsets on.
    pub fn topics_of_group(&self, group: &str) -> Vec<String> {
        let suffix = format!("@{group}");
        self.lock()
            .offset_table
            .keys()
            .filter_map(|k| k.strip_suffix(&suffix).map(str::to_owned))
            .collect()
    }

    /// Groups with committed offsets on `topic`.
    pub fn groups_of_topic(&self, topic: &str) -> Vec<String> {
        let prefix = format!("{topic}@");
        self.lock()
            .offset_table
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    /// Forgets every offset of a group (the group was deleted).
    pub fn remove_group(&self, group: &str) {
        let suffix = format!("@{group}");
        self.lock()
            .offset_table
            .retain(|k, _| !k.ends_with(&suffix));
        self.dirty.store(true, Ordering::Release);
    }

    /// Forgets every offset on a topic (the topic was deleted).
    pub fn remove_topic(&self, topic: &str) {
        let prefix = format!("{topic}@");
        self.lock()
            .offset_table
            .retain(|k, _| !k.starts_with(&prefix));
        self.dirty.store(true, Ordering::Release);
    }

    /// Writes the offsets if anything changed since the last write.
    pub fn persist(&self) -> Result<(), PersistError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = Stored {
            offset_table: self.lock().offset_table.clone(),
        };
        persist::save(&self.path, &snapshot)
            .inspect_err(|_| self.dirty.store(true, Ordering::Release))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_a_restart_once_persisted() {
        let dir = std::env::temp_dir().join(format!("mq-offsets-{}", std::process::id()));
        let path = dir.join("consumerOffset.json");
        let offsets = ConsumerOffsets::open(path.clone()).unwrap();
        offsets.commit("GID_a", "T", 0, 42);
        offsets.commit("GID_a", "T", 1, 7);
        offsets.commit("GID_b", "T", 0, 1);
        assert_eq!(offsets.query("GID_a", "T", 0), Some(42));
        assert_eq!(offsets.query("GID_a", "T", 2), None);
        offsets.persist().unwrap();
        let reopened = ConsumerOffsets::open(path).unwrap();
        assert_eq!(
            reopened.topic_offsets("GID_a", "T"),
            [(0, 42), (1, 7)].into()
        );
        let mut groups = reopened.groups_of_topic("T");
        groups.sort();
        assert_eq!(groups, ["GID_a", "GID_b"]);
        reopened.remove_group("GID_a");
        assert_eq!(reopened.query("GID_a", "T", 0), None);
        assert_eq!(reopened.topics_of_group("GID_b"), ["T"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

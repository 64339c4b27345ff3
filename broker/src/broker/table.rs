//! A persisted, versioned table of named configs (topics, subscription groups).

use super::persist::{self, PersistError};
use crate::remoting::body::DataVersion;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::RwLock;

/// What a table file holds (`crate::fuzz` reads it too).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stored<V> {
    #[serde(default = "BTreeMap::new")]
    table: BTreeMap<String, V>,
    #[serde(default)]
    data_version: DataVersion,
}

// Derived `Default` would demand `V: Default`; an empty table needs no value.
impl<V> Default for Stored<V> {
    fn default() -> Self {
        Self {
            table: BTreeMap::new(),
            data_version: DataVersion::default(),
        }
    }
}

/// Named configs, written to disk on every change (they change rarely).
pub struct ConfigTable<V> {
    path: PathBuf,
    stored: RwLock<Stored<V>>,
    changed: tokio::sync::Notify,
}

impl<V> ConfigTable<V>
where
    V: Clone + PartialEq + Serialize + DeserializeOwned,
{
    /// Loads `path` (empty when new).
    pub fn open(path: PathBuf) -> Result<Self, PersistError> {
        let stored: Stored<V> = persist::load(&path)?;
        Ok(Self {
            path,
            stored: RwLock::new(stored),
            changed: tokio::sync::Notify::new(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Stored<V>> {
        self.stored
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One entry.
    pub fn get(&self, name: &str) -> Option<V> {
        self.read().table.get(name).cloned()
    }

    /// Every entry with the table's version.
    pub fn snapshot(&self) -> (BTreeMap<String, V>, DataVersion) {
        let s = self.read();
        (s.table.clone(), s.data_version)
    }

    /// Resolves after the next change (or at once if one happened since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Names of every entry.
    pub fn names(&self) -> Vec<String> {
        self.read().table.keys().cloned().collect()
    }

    /// Creates or replaces an entry; returns whether anything changed (idempotent).
    pub fn upsert(&self, name: &str, value: V) -> Result<bool, PersistError> {
        self.mutate(|t| {
            if t.get(name) == Some(&value) {
                return false;
            }
            t.insert(name.to_owned(), value);
            true
        })
    }

    /// Creates an entry unless one exists; returns the entry in effect.
    pub fn get_or_create(&self, name: &str, value: V) -> Result<V, PersistError> {
        if let Some(existing) = self.get(name) {
            return Ok(existing);
        }
        self.mutate(|t| {
            if t.contains_key(name) {
                return false;
            }
            t.insert(name.to_owned(), value);
            true
        })?;
        self.get(name).ok_or_else(|| unreachable_missing(name))
    }

    /// Removes an entry; returns whether it existed.
    pub fn remove(&self, name: &str) -> Result<bool, PersistError> {
        self.mutate(|t| t.remove(name).is_some())
    }

    /// Applies `change`; when it reports a change, bumps the version and persists.
    fn mutate(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, V>) -> bool,
    ) -> Result<bool, PersistError> {
        let mut s = self
            .stored
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !change(&mut s.table) {
            return Ok(false);
        }
        s.data_version = DataVersion {
            timestamp: now_millis(),
            counter: s.data_version.counter + 1,
        };
        persist::save(&self.path, &*s)?;
        // A stored permit: whoever waits next (the registration loop) wakes at once.
        self.changed.notify_one();
        Ok(true)
    }
}

/// An entry inserted under the write lock is there; this error cannot happen, but a
/// library must not panic on it either.
fn unreachable_missing(name: &str) -> PersistError {
    PersistError::Io {
        path: name.to_owned(),
        source: std::io::Error::other("entry vanished right after creation"),
    }
}

/// Milliseconds since the epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_persist_and_the_version_moves_only_on_real_changes() {
        let dir = std::env::temp_dir().join(format!("mq-table-{}", std::process::id()));
        let path = dir.join("t.json");
        let table: ConfigTable<i32> = ConfigTable::open(path.clone()).unwrap();
        assert!(table.upsert("a", 4).unwrap());
        let (_, v1) = table.snapshot();
        assert!(
            !table.upsert("a", 4).unwrap(),
            "the same value is no change"
        );
        assert_eq!(table.snapshot().1, v1);
        assert_eq!(table.get_or_create("a", 8).unwrap(), 4);
        let reopened: ConfigTable<i32> = ConfigTable::open(path).unwrap();
        assert_eq!(reopened.get("a"), Some(4));
        assert_eq!(reopened.snapshot().1, v1, "the version survives a restart");
        assert!(reopened.remove("a").unwrap());
        assert!(!reopened.remove("a").unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

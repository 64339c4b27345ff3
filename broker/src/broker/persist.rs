//! Small JSON state files (topics, groups, consumer offsets), written atomically.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::path::Path;

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not the JSON we wrote.
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads `path`; a missing file is the default value (a new broker).
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Result<T, PersistError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| PersistError::Corrupt {
            path: path.display().to_string(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes `value` to `path` so that a crash leaves either the old or the new file:
/// write a temporary file, fsync it, rename it over, fsync the directory.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), PersistError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(value).map_err(|source| PersistError::Corrupt {
        path: path.display().to_string(),
        source,
    })?;
    let mut file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&json).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn saved_state_loads_back_and_a_missing_file_is_empty() {
        let dir = std::env::temp_dir().join(format!("mq-persist-{}", std::process::id()));
        let path = dir.join("state.json");
        let empty: BTreeMap<String, i64> = load(&path).unwrap();
        assert!(empty.is_empty());
        let state: BTreeMap<String, i64> = [("a".to_owned(), 1)].into();
        save(&path, &state).unwrap();
        assert_eq!(load::<BTreeMap<String, i64>>(&path).unwrap(), state);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            load::<BTreeMap<String, i64>>(&path),
            Err(PersistError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

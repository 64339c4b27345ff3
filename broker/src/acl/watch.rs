//! Re-reading the ACL file when it changes.
//!
//! The file is usually a mounted Kubernetes Secret, which the kubelet replaces atomically
//! by swapping a symlink: a new inode with a possibly equal mtime. So the watch compares
//! the file's *content* (it is small), read through the symlink every poll. A changed
//! file that does not parse is logged and the previous ACL stays in force — never "allow
//! all"; the same bad content is not reported again until it changes.

use super::Acl;
use super::table::AclTable;
use crate::names::Namespace;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the ACL file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The ACL file could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ACL file {path}: {reason}")]
pub struct AclFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// What one look at the file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Same content as last time.
    Unchanged,
    /// New content, now in force: this many accounts.
    Applied(usize),
    /// New content that does not parse; the previous ACL stays.
    Rejected(AclFileError),
    /// The file cannot be read; the previous ACL stays.
    Unreadable(AclFileError),
}

/// Watches one ACL file for one server's [`Acl`].
#[derive(Debug)]
pub struct AclWatch {
    path: PathBuf,
    ns: Namespace,
    last: Option<Vec<u8>>,
}

impl AclWatch {
    /// Reads and parses `path` now: the watch and the file's table.
    pub fn open(path: impl Into<PathBuf>, ns: Namespace) -> Result<(Self, AclTable), AclFileError> {
        let mut watch = Self {
            path: path.into(),
            ns,
            last: None,
        };
        let text = watch.read()?;
        let table = watch.parse(&text)?;
        watch.last = Some(text);
        Ok((watch, table))
    }

    /// A watch that has read nothing yet: its first [`reload`](Self::reload) applies
    /// whatever the file holds.
    pub fn unread(path: impl Into<PathBuf>, ns: Namespace) -> Self {
        Self {
            path: path.into(),
            ns,
            last: None,
        }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks at the file and puts a changed, valid version in force in `acl`.
    pub fn reload(&mut self, acl: &Acl) -> Reload {
        let text = match self.read() {
            Ok(text) => text,
            Err(e) => return Reload::Unreadable(e),
        };
        if self.last.as_ref() == Some(&text) {
            return Reload::Unchanged;
        }
        let parsed = self.parse(&text);
        // Remembered even when bad, so one bad version is reported once.
        self.last = Some(text);
        match parsed {
            Ok(table) => {
                let accounts = table.len();
                acl.replace(table);
                Reload::Applied(accounts)
            }
            Err(e) => Reload::Rejected(e),
        }
    }

    fn read(&self) -> Result<Vec<u8>, AclFileError> {
        std::fs::read(&self.path).map_err(|e| self.error(e.to_string()))
    }

    fn parse(&self, text: &[u8]) -> Result<AclTable, AclFileError> {
        let text = std::str::from_utf8(text).map_err(|_| self.error("not UTF-8".into()))?;
        AclTable::parse(text, &self.ns).map_err(|reason| self.error(reason))
    }

    fn error(&self, reason: String) -> AclFileError {
        AclFileError {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Reloads the file into `acl` every `interval`, forever (spawn it).
pub async fn run(mut watch: AclWatch, acl: Acl, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unreadable = false;
    loop {
        tick.tick().await;
        // A small read off the async threads (the mount may be slow).
        let (back, reload) = match tokio::task::spawn_blocking({
            let acl = acl.clone();
            move || {
                let reload = watch.reload(&acl);
                (watch, reload)
            }
        })
        .await
        {
            Ok(done) => done,
            Err(e) => {
                tracing::error!(error = %e, "ACL file watcher failed; the ACL stays as it is");
                return;
            }
        };
        watch = back;
        match reload {
            Reload::Unchanged => unreadable = false,
            Reload::Applied(accounts) => {
                unreadable = false;
                tracing::info!(file = %watch.path().display(), accounts, "ACL file reloaded");
            }
            Reload::Rejected(e) => {
                unreadable = false;
                tracing::error!(error = %e, "ACL file rejected; the previous ACL stays in force");
            }
            Reload::Unreadable(e) if !unreadable => {
                unreadable = true;
                tracing::warn!(error = %e, "ACL file unreadable; the previous ACL stays in force");
            }
            Reload::Unreadable(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ak: &str) -> String {
        format!(r#"{{"accounts":[{{"accessKey":"{ak}","secretKey":"s","admin":true}}]}}"#)
    }

    #[test]
    fn a_bad_version_keeps_the_previous_acl_and_a_symlink_swap_is_seen() {
        let dir = std::env::temp_dir().join(format!("mq-acl-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for v in ["..v1", "..v2", "..v3"] {
            std::fs::create_dir_all(dir.join(v)).unwrap();
        }
        std::fs::write(dir.join("..v1/acl.json"), file("first")).unwrap();
        std::fs::write(dir.join("..v2/acl.json"), "accounts: [oops").unwrap();
        std::fs::write(dir.join("..v3/acl.json"), file("second")).unwrap();
        let swap = |to: &str| {
            std::os::unix::fs::symlink(to, dir.join("..data_tmp")).unwrap();
            std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        };
        swap("..v1");
        std::os::unix::fs::symlink("..data/acl.json", dir.join("acl.json")).unwrap();

        let (mut watch, table) =
            AclWatch::open(dir.join("acl.json"), Namespace::default()).unwrap();
        let acl = Acl::new(true, table);
        assert!(acl.table().get("first").is_some());
        assert_eq!(watch.reload(&acl), Reload::Unchanged);

        swap("..v2");
        assert!(matches!(watch.reload(&acl), Reload::Rejected(_)));
        assert!(
            acl.table().get("first").is_some(),
            "the old ACL stays in force"
        );
        assert_eq!(watch.reload(&acl), Reload::Unchanged, "reported once");

        swap("..v3");
        assert_eq!(watch.reload(&acl), Reload::Applied(1));
        assert!(acl.table().get("first").is_none());
        assert!(acl.table().get("second").is_some());

        std::fs::remove_file(dir.join("..data")).unwrap();
        assert!(matches!(watch.reload(&acl), Reload::Unreadable(_)));
        assert!(
            acl.table().get("second").is_some(),
            "a missing file keeps the ACL"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_file_at_start_is_an_error() {
        let path = std::env::temp_dir().join(format!("mq-acl-bad-{}.json", std::process::id()));
        std::fs::write(&path, "accessKey: AK1").unwrap();
        let err = AclWatch::open(&path, Namespace::default()).unwrap_err();
        assert!(err.to_string().contains("no \"accounts\" list"), "{err}");
        let _ = std::fs::remove_file(&path);
        assert!(
            AclWatch::open(&path, Namespace::default()).is_err(),
            "missing file"
        );
    }
}

//! Slots let several testbeds run at once: slot k owns the service range
//! `127.<100+k>.0.0/16`, so no two live testbeds hand out the same ClusterIPs.
//!
//! A slot is claimed by creating `$CACHE/slots/<k>` with `O_CREAT|O_EXCL`. A claim is
//! stale, and may be taken over, when its testbed directory is gone, or when both the
//! process that claimed it and the testbed's recorded etcd are dead. (Requiring both keeps
//! a live owner that is restarting etcd on new ports from losing its slot, and keeps a
//! detached `up`, whose starter has exited, alive while its etcd runs.) Take-overs are
//! serialised by an flock on `slots/.lock` so two claimers cannot both reclaim one slot.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::paths;
use crate::process::ProcRef;
use crate::state::State;

/// Number of slots (0..=27): 127.100/16 up to 127.127/16.
pub const SLOT_COUNT: u8 = 28;

/// What a slot file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The testbed directory that holds the slot.
    pub dir: PathBuf,
    /// The process that claimed it.
    pub claimer: Option<ProcRef>,
}

/// A claimed slot.
#[derive(Debug, Clone)]
pub struct Slot {
    index: u8,
    file: PathBuf,
    dir: PathBuf,
}

impl Slot {
    /// Claims the lowest free (or stale) slot for `testbed_dir`.
    pub fn claim(slots_dir: &Path, testbed_dir: &Path) -> Result<Slot> {
        std::fs::create_dir_all(slots_dir).ctx(|| format!("creating {}", slots_dir.display()))?;
        let _lock = lock_exclusive(&slots_dir.join(".lock"))?;
        let claim = Claim {
            dir: testbed_dir.to_path_buf(),
            claimer: ProcRef::current(),
        };
        // Sweep first, so leftovers of crashed runs do not pile up in high slots.
        for index in 0..SLOT_COUNT {
            let file = slots_dir.join(index.to_string());
            if file.exists() && is_stale(&file) {
                reclaim(index, &file)?;
            }
        }
        for index in 0..SLOT_COUNT {
            if try_create(&slots_dir.join(index.to_string()), &claim)? {
                return Ok(Slot::new(index, slots_dir, testbed_dir));
            }
        }
        Err(Error::NoFreeSlot {
            count: SLOT_COUNT,
            dir: slots_dir.to_path_buf(),
        })
    }

    /// The slot held by `testbed_dir` according to its state (for releasing later).
    pub fn new(index: u8, slots_dir: &Path, testbed_dir: &Path) -> Slot {
        Slot {
            index,
            file: slots_dir.join(index.to_string()),
            dir: testbed_dir.to_path_buf(),
        }
    }

    /// The slot number.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The slot's service range.
    pub fn service_cidr(&self) -> String {
        service_cidr(self.index)
    }

    /// The `kubernetes` Service's ClusterIP (first address of the range).
    pub fn service_ip(&self) -> Ipv4Addr {
        service_ip(self.index)
    }

    /// The cluster DNS address, `127.<100+slot>.0.10` (reserved by a `kube-dns` Service).
    pub fn dns_ip(&self) -> Ipv4Addr {
        dns_ip(self.index)
    }

    /// The NodePort range handed to the apiserver, 100 ports of the slot's own.
    pub fn node_port_range(&self) -> (u16, u16) {
        node_port_range(self.index)
    }

    /// Frees the slot, but only if it is still ours (it may have been reclaimed).
    pub fn release(&self) -> Result<()> {
        if owner(&self.file).is_some_and(|claim| claim.dir == self.dir) {
            remove_if_exists(&self.file)?;
        }
        Ok(())
    }
}

/// The service range of slot `index`.
pub fn service_cidr(index: u8) -> String {
    format!("127.{}.0.0/16", 100u16 + u16::from(index))
}

/// The cluster DNS address of slot `index`.
pub fn dns_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 100 + index, 0, 10)
}

/// The `kubernetes` Service's ClusterIP in slot `index`.
pub fn service_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 100 + index, 0, 1)
}

/// The node and Pod address prefix of slot `index`: `127.<128+k>` (beyond the service
/// ranges, which end at 127.127), so Pods of two testbeds never share an address.
pub fn pod_prefix(index: u8) -> [u8; 2] {
    [127, 128 + index]
}

/// NodePorts of slot `index`: `30000 + 100k ..= 30099 + 100k`, so two testbeds, whose
/// NodePorts all listen on 127.0.0.1, never hand out the same port.
pub fn node_port_range(index: u8) -> (u16, u16) {
    let first = 30_000 + 100 * u16::from(index);
    (first, first + 99)
}

/// The claim on slot `index`, if the slot file exists and is readable.
pub fn slot_owner(slots_dir: &Path, index: u8) -> Option<Claim> {
    owner(&slots_dir.join(index.to_string()))
}

fn owner(file: &Path) -> Option<Claim> {
    let text = std::fs::read_to_string(file).ok()?;
    serde_json::from_str(&text).ok()
}

/// Atomically creates `file` with the claim; false if it already exists.
fn try_create(file: &Path, claim: &Claim) -> Result<bool> {
    let mut handle = match OpenOptions::new().write(true).create_new(true).open(file) {
        Ok(handle) => handle,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e).ctx(|| format!("creating {}", file.display())),
    };
    let text = serde_json::to_vec(claim).map_err(|source| Error::Json {
        path: file.to_path_buf(),
        source,
    })?;
    handle
        .write_all(&text)
        .ctx(|| format!("writing {}", file.display()))?;
    Ok(true)
}

/// See the module docs for the rule.
fn is_stale(file: &Path) -> bool {
    // Writers hold the lock we hold, so an unreadable claim is a crash leftover.
    let Some(claim) = owner(file) else {
        return true;
    };
    if !claim.dir.is_dir() {
        return true;
    }
    let claimer_alive = claim.claimer.is_some_and(|p| p.is_alive());
    let etcd_alive = State::load(&claim.dir)
        .ok()
        .flatten()
        .and_then(|s| s.component("etcd").map(|c| c.proc.is_alive()))
        .unwrap_or(false);
    !claimer_alive && !etcd_alive
}

/// Drops a stale claim; a throw-away library testbed dir whose processes are all dead
/// (PDEATHSIG took them) goes too, since nobody else will ever remove it.
fn reclaim(index: u8, file: &Path) -> Result<()> {
    tracing::info!(slot = index, "reclaiming a stale testbed slot");
    if let Some(claim) = owner(file)
        && claim.dir.starts_with(paths::testbeds_dir())
        && !State::load(&claim.dir)
            .ok()
            .flatten()
            .is_some_and(|s| s.any_alive())
    {
        let _ = std::fs::remove_dir_all(&claim.dir);
    }
    remove_if_exists(file)
}

fn remove_if_exists(file: &Path) -> Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).ctx(|| format!("removing {}", file.display()))
        }
        _ => Ok(()),
    }
}

/// Holds an exclusive flock until dropped (closing the file releases it).
fn lock_exclusive(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ctx(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a valid, owned descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| format!("locking {}", path.display()));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mq-testbed-slot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn claims_distinct_slots_and_releases_only_its_own() {
        let root = temp("distinct");
        let slots = root.join("slots");
        let (a, b) = (root.join("a"), root.join("b"));
        std::fs::create_dir_all(&a).expect("dir a");
        std::fs::create_dir_all(&b).expect("dir b");
        let sa = Slot::claim(&slots, &a).expect("claim a");
        let sb = Slot::claim(&slots, &b).expect("claim b");
        assert_ne!(sa.index(), sb.index());
        assert_eq!(
            sa.service_cidr(),
            format!("127.{}.0.0/16", 100 + sa.index())
        );
        assert_eq!(sa.service_ip(), Ipv4Addr::new(127, 100 + sa.index(), 0, 1));
        // A slot reclaimed by someone else is not freed by the old owner.
        Slot::new(sb.index(), &slots, &a)
            .release()
            .expect("foreign release");
        assert_eq!(
            slot_owner(&slots, sb.index()).map(|c| c.dir),
            Some(b.clone())
        );
        sa.release().expect("release a");
        assert!(slot_owner(&slots, sa.index()).is_none());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn stale_claims_are_reclaimed() {
        let root = temp("stale");
        let slots = root.join("slots");
        std::fs::create_dir_all(&slots).expect("slots dir");
        // Slot 0 names a directory that no longer exists.
        let gone = Claim {
            dir: root.join("gone"),
            claimer: ProcRef::current(),
        };
        std::fs::write(slots.join("0"), serde_json::to_vec(&gone).expect("json")).expect("write");
        let live = root.join("live");
        std::fs::create_dir_all(&live).expect("live dir");
        let slot = Slot::claim(&slots, &live).expect("claim");
        assert_eq!(slot.index(), 0);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn service_ranges_cover_127_100_to_127_127() {
        assert_eq!(service_cidr(0), "127.100.0.0/16");
        assert_eq!(service_cidr(SLOT_COUNT - 1), "127.127.0.0/16");
    }
}

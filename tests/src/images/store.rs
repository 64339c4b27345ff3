//! The testbed's local image store, filled by `mq-testbed image load` and read by the
//! process kubelet:
//!
//! ```text
//! <testbed dir>/images/refs.json               normalised reference -> manifest digest
//! <testbed dir>/images/sha256/<hex>/rootfs/    the unpacked root filesystem
//! <testbed dir>/images/sha256/<hex>/config.json  the image's run config (Entrypoint, User…)
//! <testbed dir>/images/.lock                   serialises loads
//! ```
//!
//! An image answers to `name:tag` and `name@sha256:<manifest digest>`. Unpacking goes
//! to a temporary directory renamed into place, so a reader never sees half an image.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::layout::{Descriptor, Layout, RunConfig, sha256_hex};
use super::reference::Reference;
use super::{ImageError, Result, io_error};

/// The label that names an image's binary (`make images` sets it).
const TITLE_LABEL: &str = "org.opencontainers.image.title";

/// The local image store of one testbed directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// An image of the store, ready to run.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The manifest digest (`sha256:<hex>`): the container's `imageID`.
    pub digest: String,
    /// Its unpacked root filesystem.
    pub rootfs: PathBuf,
    /// How it runs.
    pub config: RunConfig,
}

/// One reference `load` recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The normalised reference.
    pub reference: String,
    /// The manifest digest it now names.
    pub digest: String,
    /// False when the store already had exactly this.
    pub changed: bool,
}

impl Store {
    /// The store of the testbed in `testbed_dir`.
    pub fn new(testbed_dir: &Path) -> Store {
        Store {
            dir: testbed_dir.join("images"),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the image tagged `tag` of `layout` (every tagged image when `None`). A tag
    /// that is a full reference (`registry/name:tag`, as skopeo writes) is used as is;
    /// a bare tag is put after `repository`, by default `mqfleet/<the image's title
    /// label, else the layout directory's name>`.
    pub fn load(
        &self,
        layout: &Layout,
        tag: Option<&str>,
        repository: Option<&str>,
    ) -> Result<Vec<Loaded>> {
        let manifests = match tag {
            Some(tag) => vec![layout.find(tag)?],
            None => layout
                .manifests()?
                .into_iter()
                .filter(|m| m.ref_name().is_some())
                .collect(),
        };
        if manifests.is_empty() {
            return Err(ImageError::Format(format!(
                "{} has no tagged image",
                layout.dir().display()
            )));
        }
        fs::create_dir_all(self.dir.join("sha256")).map_err(io_error("creating", &self.dir))?;
        let _lock = self.lock()?;
        let mut refs = self.refs()?;
        let mut out = Vec::new();
        for manifest in &manifests {
            let config = layout.run_config(manifest)?;
            let reference = reference_of(layout, manifest, &config, repository)?;
            let unpacked = self.unpack(layout, manifest, &config)?;
            for name in [
                reference.tagged(),
                Some(reference.with_digest(&manifest.digest).to_string()),
            ]
            .into_iter()
            .flatten()
            {
                let changed = refs.get(&name) != Some(&manifest.digest);
                refs.insert(name.clone(), manifest.digest.clone());
                out.push(Loaded {
                    reference: name,
                    digest: manifest.digest.clone(),
                    changed: changed || unpacked,
                });
            }
        }
        self.write_refs(&refs)?;
        Ok(out)
    }

    /// The stored image `image` (any reference form) names, `None` if none is loaded.
    pub fn resolve(&self, image: &str) -> Result<Option<StoredImage>> {
        let reference = Reference::parse(image)?;
        let refs = self.refs()?;
        let key = match (reference.digested(), reference.tagged()) {
            (Some(digested), _) => digested,
            (None, Some(tagged)) => tagged,
            (None, None) => return Ok(None),
        };
        let Some(digest) = refs.get(&key) else {
            return Ok(None);
        };
        let image_dir = self.image_dir(digest)?;
        let path = image_dir.join("config.json");
        let text = fs::read(&path).map_err(io_error("reading", &path))?;
        let config = serde_json::from_slice(&text)
            .map_err(|e| ImageError::Format(format!("{}: {e}", path.display())))?;
        Ok(Some(StoredImage {
            digest: digest.clone(),
            rootfs: image_dir.join("rootfs"),
            config,
        }))
    }

    /// Every reference and the digest it names.
    pub fn refs(&self) -> Result<BTreeMap<String, String>> {
        let path = self.dir.join("refs.json");
        match fs::read(&path) {
            Ok(text) => serde_json::from_slice(&text)
                .map_err(|e| ImageError::Format(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io_error("reading", &path)(e)),
        }
    }

    /// Unpacks the image unless the store has it; true if it was unpacked now.
    fn unpack(&self, layout: &Layout, manifest: &Descriptor, config: &RunConfig) -> Result<bool> {
        let target = self.image_dir(&manifest.digest)?;
        if target.join("config.json").is_file() {
            return Ok(false);
        }
        let hex = sha256_hex(&manifest.digest)?;
        let tmp = self
            .dir
            .join("sha256")
            .join(format!(".tmp-{hex}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let tag = manifest.ref_name().ok_or_else(|| {
            ImageError::Format(format!("manifest {} has no tag", manifest.digest))
        })?;
        let result = (|| {
            layout.unpack(tag, &tmp)?;
            // umoci's own files (a runtime spec, its mtree) are not ours to keep.
            for entry in fs::read_dir(&tmp)
                .map_err(io_error("listing", &tmp))?
                .flatten()
            {
                if entry.file_name() != "rootfs" {
                    let p = entry.path();
                    fs::remove_file(&p).map_err(io_error("removing", &p))?;
                }
            }
            let json =
                serde_json::to_vec_pretty(config).map_err(|e| ImageError::Format(e.to_string()))?;
            let path = tmp.join("config.json");
            fs::write(&path, json).map_err(io_error("writing", &path))?;
            let _ = fs::remove_dir_all(&target);
            fs::rename(&tmp, &target).map_err(io_error("moving into place", &target))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result.map(|()| true)
    }

    fn image_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join("sha256").join(sha256_hex(digest)?))
    }

    fn write_refs(&self, refs: &BTreeMap<String, String>) -> Result<()> {
        let path = self.dir.join("refs.json");
        let tmp = self.dir.join(format!(".refs-{}.json", std::process::id()));
        let json =
            serde_json::to_vec_pretty(refs).map_err(|e| ImageError::Format(e.to_string()))?;
        fs::write(&tmp, json).map_err(io_error("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_error("replacing", &path))
    }

    /// An exclusive lock on the store, released when the file closes.
    fn lock(&self) -> Result<fs::File> {
        let path = self.dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("opening", &path))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_error("locking", &path)(std::io::Error::last_os_error()));
        }
        Ok(file)
    }
}

/// The reference a tagged manifest of `layout` answers to.
fn reference_of(
    layout: &Layout,
    manifest: &Descriptor,
    config: &RunConfig,
    repository: Option<&str>,
) -> Result<Reference> {
    let tag = manifest.ref_name().unwrap_or("latest");
    if tag.contains('/') {
        return Reference::parse(tag);
    }
    let repository = match repository {
        Some(r) => r.to_owned(),
        None => {
            let title = config
                .labels
                .as_ref()
                .and_then(|l| l.get(TITLE_LABEL))
                .cloned();
            let base = layout
                .dir()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            format!(
                "{}/{}",
                crate::node::spec::IMAGE_REPOSITORY,
                title.or(base).unwrap_or_default()
            )
        }
    };
    Reference::parse(&format!("{repository}:{tag}"))
}

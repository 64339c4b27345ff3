//! Reading an OCI image layout (`oci-layout`, `index.json`, manifests, configs) and
//! unpacking one of its images with umoci.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{ImageError, Result, io_error, umoci};

/// The index annotation holding a manifest's tag (or full reference).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor (of a manifest, config or layer).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    /// The blob's media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Annotations (the index's carry the tag).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The tag (or reference) the index gives this manifest, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: RunConfig,
}

/// The part of an image's config that says how to run it (OCI image spec `config`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `KEY=value` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The entrypoint argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// The working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels (`org.opencontainers.image.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Opens `dir`, which must hold `oci-layout` and `index.json`.
    pub fn open(dir: &Path) -> Result<Layout> {
        if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
            return Err(ImageError::Format(format!(
                "{} is not an OCI image layout (no oci-layout and index.json; `make images` writes them under target/images/)",
                dir.display()
            )));
        }
        Ok(Layout {
            dir: dir.to_path_buf(),
        })
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifests of the index.
    pub fn manifests(&self) -> Result<Vec<Descriptor>> {
        let index: Index = self.read_json(&self.dir.join("index.json"))?;
        Ok(index.manifests)
    }

    /// The manifest tagged `tag`, or an error listing the tags there are.
    pub fn find(&self, tag: &str) -> Result<Descriptor> {
        let manifests = self.manifests()?;
        let tags: Vec<&str> = manifests.iter().filter_map(Descriptor::ref_name).collect();
        manifests
            .iter()
            .find(|m| m.ref_name() == Some(tag))
            .cloned()
            .ok_or_else(|| {
                ImageError::Format(format!(
                    "{} has no image tagged {tag:?} (tags: {})",
                    self.dir.display(),
                    tags.join(", ")
                ))
            })
    }

    /// The run config of the image whose manifest is `manifest`.
    pub fn run_config(&self, manifest: &Descriptor) -> Result<RunConfig> {
        let manifest: Manifest = self.read_json(&self.blob(&manifest.digest)?)?;
        let config: ConfigFile = self.read_json(&self.blob(&manifest.config.digest)?)?;
        Ok(config.config)
    }

    /// Unpacks the image tagged `tag` into `dest` (which must not exist): its root
    /// filesystem lands in `dest/rootfs`, owners and modes as in the layers.
    pub fn unpack(&self, tag: &str, dest: &Path) -> Result<PathBuf> {
        let image = format!("{}:{tag}", self.dir.display());
        let output = Command::new(umoci()?)
            .args(["unpack", "--image", &image])
            .arg(dest)
            .output()
            .map_err(io_error("running umoci unpack into", dest))?;
        if !output.status.success() {
            return Err(ImageError::Tool(format!(
                "umoci unpack --image {image} {} failed ({}): {}",
                dest.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(dest.join("rootfs"))
    }

    /// The path of blob `digest` (only `sha256:<64 hex>` is accepted, so a digest from
    /// the index can never name a path outside the layout).
    fn blob(&self, digest: &str) -> Result<PathBuf> {
        let hex = sha256_hex(digest)?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, path: &Path) -> Result<T> {
        let text = std::fs::read(path).map_err(io_error("reading", path))?;
        serde_json::from_slice(&text)
            .map_err(|e| ImageError::Format(format!("{}: {e}", path.display())))
    }
}

/// The hex part of a `sha256:<64 lowercase hex>` digest.
pub fn sha256_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(ImageError::Format(format!(
            "unsupported digest {digest:?} (want sha256:<64 hex digits>)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_before_they_become_paths() {
        let hex = "a".repeat(64);
        assert_eq!(sha256_hex(&format!("sha256:{hex}")).unwrap(), hex);
        for bad in [
            "sha256:../../etc/passwd",
            "sha512:abc",
            "sha256:",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(sha256_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_config_reads_the_oci_field_names() {
        let file: ConfigFile = serde_json::from_str(
            r#"{"config":{"User":"65532:65532","Entrypoint":["/bin/x"],"Cmd":["a"],
                "Env":["PATH=/bin"],"WorkingDir":"/w","Labels":{"k":"v"}}}"#,
        )
        .unwrap();
        assert_eq!(file.config.user.as_deref(), Some("65532:65532"));
        assert_eq!(file.config.entrypoint, Some(vec!["/bin/x".to_owned()]));
        assert_eq!(file.config.working_dir.as_deref(), Some("/w"));
    }
}

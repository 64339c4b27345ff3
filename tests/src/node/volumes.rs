//! A Pod's volumes on the host, and the bind mounts that put them at each container's
//! `mountPath`.
//!
//! Content volumes (configMap, secret, downwardAPI, projected) are directories the agent
//! writes and keeps current: a changed key is written to a temporary file and renamed
//! over the old one, so a reader sees the old or the new content, never half of it, and
//! the bind-mounted directory shows the change at once (a subPath mount does not, as in
//! Kubernetes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, Pod, Secret, Volume, VolumeProjection,
};
use kube::runtime::reflector::ObjectRef;

use super::sandbox::Bind;
use super::spec::{self, Objects, PodFacts};
use super::{Ctx, NodeConfig};

/// Files of a content volume: relative path → (bytes, mode).
type Files = BTreeMap<PathBuf, (Vec<u8>, u32)>;
/// Mode of content files unless the volume says otherwise (0644).
const DEFAULT_MODE: u32 = 0o644;

/// Paths of one Pod's sandbox on the host.
#[derive(Debug, Clone)]
pub struct PodDir {
    /// `<pods>/<uid>`.
    pub root: PathBuf,
}

impl PodDir {
    /// The sandbox of the Pod with `uid`.
    pub fn new(config: &NodeConfig, uid: &str) -> PodDir {
        PodDir {
            root: config.pods_dir().join(uid),
        }
    }

    /// Where volume `name` lives.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    /// The Pod's `/etc/<file>` replacement.
    pub fn etc(&self, file: &str) -> PathBuf {
        self.root.join("etc").join(file)
    }

    /// HOME of the Pod's containers.
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }
}

/// A prepared Pod's volumes: where each is on the host.
#[derive(Debug, Default)]
pub struct PodVolumes {
    sources: HashMap<String, PathBuf>,
    read_only: HashSet<String>,
}

impl PodVolumes {
    /// Where volume `name` is on the host.
    pub fn source(&self, name: &str) -> Option<&Path> {
        self.sources.get(name).map(PathBuf::as_path)
    }
}

/// Creates every volume of `pod` and its `/etc` files. `Err` says what the Pod waits for
/// (an unbound claim, a missing ConfigMap), in words for the Pod's status.
pub fn prepare(ctx: &Ctx, pod: &Pod, dir: &PodDir, facts: &PodFacts) -> Result<PodVolumes, String> {
    let mut out = PodVolumes::default();
    write_etc(ctx, pod, dir, facts.pod_ip).map_err(|e| format!("writing /etc files: {e}"))?;
    super::ensure_dir(&dir.home()).map_err(|e| format!("{e:#}"))?;
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = source_path(ctx, pod, volume, dir)?;
        if let Some(files) = content(&ctx.stores, pod, volume, facts)? {
            write_tree(&path, &files).map_err(|e| format!("volume {}: {e}", volume.name))?;
            out.read_only.insert(volume.name.clone());
        }
        out.sources.insert(volume.name.clone(), path);
    }
    Ok(out)
}

/// Rewrites content volumes whose sources changed.
pub fn refresh(ctx: &Ctx, pod: &Pod, vols: &PodVolumes, facts: &PodFacts) -> Result<(), String> {
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let (Some(path), Some(files)) = (
            vols.sources.get(&volume.name),
            content(&ctx.stores, pod, volume, facts)?,
        ) else {
            continue;
        };
        write_tree(path, &files).map_err(|e| format!("volume {}: {e}", volume.name))?;
    }
    Ok(())
}

/// The bind mounts of `container`: its volumeMounts, then the Pod's /etc files.
pub fn binds(
    pod: &Pod,
    container: &Container,
    vols: &PodVolumes,
    dir: &PodDir,
) -> Result<Vec<Bind>, String> {
    let mut out = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(source) = vols.sources.get(&mount.name) else {
            return Err(format!(
                "volumeMount {:?} names no volume of the Pod",
                mount.name
            ));
        };
        let source = match mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
            Some(sub) => {
                if Path::new(sub).components().any(|c| {
                    matches!(
                        c,
                        std::path::Component::ParentDir | std::path::Component::RootDir
                    )
                }) {
                    return Err(format!("subPath {sub:?} must be relative, without '..'"));
                }
                let path = source.join(sub);
                if !path.exists() {
                    // Kubelet creates a missing subPath as a directory.
                    std::fs::create_dir_all(&path)
                        .map_err(|e| format!("creating subPath {}: {e}", path.display()))?;
                }
                path
            }
            None => source.clone(),
        };
        out.push(Bind {
            source,
            target: PathBuf::from(&mount.mount_path),
            read_only: mount.read_only.unwrap_or(false) || vols.read_only.contains(&mount.name),
        });
    }
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
    for file in ["hosts", "resolv.conf", "hostname"] {
        if host_network && file != "resolv.conf" {
            continue;
        }
        out.push(Bind {
            source: dir.etc(file),
            target: Path::new("/etc").join(file),
            read_only: false,
        });
    }
    Ok(out)
}

fn source_path(ctx: &Ctx, pod: &Pod, volume: &Volume, dir: &PodDir) -> Result<PathBuf, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path)
                .map_err(|e| format!("hostPath {}: {e}", path.display()))?,
            "FileOrCreate" if !path.exists() => std::fs::write(&path, b"")
                .map_err(|e| format!("hostPath {}: {e}", path.display()))?,
            "Directory" if !path.is_dir() => {
                return Err(format!("hostPath {} is not a directory", path.display()));
            }
            "File" if !path.is_file() => {
                return Err(format!("hostPath {} is not a file", path.display()));
            }
            _ => {}
        }
        return Ok(path);
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        return claim_path(ctx, ns, &claim.claim_name);
    }
    let path = dir.volume(&volume.name);
    super::ensure_dir(&path).map_err(|e| format!("{e:#}"))?;
    Ok(path)
}

/// The host directory of the PV bound to claim `ns/name`.
fn claim_path(ctx: &Ctx, ns: &str, name: &str) -> Result<PathBuf, String> {
    let claim = ctx
        .stores
        .claims
        .get(&ObjectRef::new(name).within(ns))
        .ok_or_else(|| format!("persistentvolumeclaim {name:?} not found"))?;
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| bound)
        .ok_or_else(|| format!("persistentvolumeclaim {name:?} is not bound yet"))?;
    let pv = ctx
        .stores
        .volumes
        .get(&ObjectRef::new(&volume_name))
        .ok_or_else(|| format!("persistentvolume {volume_name:?} not found"))?;
    let spec = pv.spec.as_ref();
    let path = spec
        .and_then(|s| s.host_path.as_ref().map(|h| h.path.clone()))
        .or_else(|| spec.and_then(|s| s.local.as_ref().map(|l| l.path.clone())))
        .ok_or_else(|| format!("persistentvolume {volume_name:?} is neither hostPath nor local"))?;
    let path = PathBuf::from(path);
    std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(bytes) = sized_volume(ctx, &pv, &path)? {
        ctx.mounts.ensure_tmpfs(&path, bytes).map_err(|e| {
            format!("persistentvolume {volume_name:?}: its size cannot be enforced: {e}")
        })?;
    }
    Ok(path)
}

/// The size of `pv` if it is a sized volume of our provisioner (a tmpfs of its capacity
/// on its directory, see [`super::mounts`]); only the directory the provisioner made for
/// it can get one.
fn sized_volume(
    ctx: &Ctx,
    pv: &k8s_openapi::api::core::v1::PersistentVolume,
    path: &Path,
) -> Result<Option<u64>, String> {
    use super::provisioner::{MEDIUM_ANNOTATION, PROVISIONER, TMPFS};
    let annotations = pv.metadata.annotations.as_ref();
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    let ours = get("pv.kubernetes.io/provisioned-by") == Some(PROVISIONER);
    if !ours || get(MEDIUM_ANNOTATION) != Some(TMPFS) {
        return Ok(None);
    }
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    if path != ctx.config.volumes_dir().join(name) {
        return Err(format!(
            "persistentvolume {name:?} is sized but its path {} is not the provisioner's",
            path.display()
        ));
    }
    let capacity = pv
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default();
    match spec::parse_quantity(&capacity).map(f64::ceil) {
        Some(bytes) if bytes >= 1.0 && bytes < u64::MAX as f64 => Ok(Some(bytes as u64)),
        _ => Err(format!(
            "persistentvolume {name:?} is sized but its capacity {capacity:?} is not a size"
        )),
    }
}

/// The files of a content volume; `None` for other kinds.
fn content(
    objects: &dyn Objects,
    pod: &Pod,
    volume: &Volume,
    facts: &PodFacts,
) -> Result<Option<Files>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mode = |m: Option<i32>| {
        m.and_then(|m| u32::try_from(m).ok())
            .unwrap_or(DEFAULT_MODE)
    };
    if let Some(src) = &volume.config_map {
        let cm = objects.config_map(ns, &src.name);
        let files = config_map_files(
            cm.as_ref(),
            &src.name,
            src.items.as_deref(),
            src.optional,
            mode(src.default_mode),
        )?;
        return Ok(Some(files));
    }
    if let Some(src) = &volume.secret {
        let name = src.secret_name.clone().unwrap_or_default();
        let secret = objects.secret(ns, &name);
        let files = secret_files(
            secret.as_ref(),
            &name,
            src.items.as_deref(),
            src.optional,
            mode(src.default_mode),
        )?;
        return Ok(Some(files));
    }
    if let Some(src) = &volume.downward_api {
        let mut files = Files::new();
        for item in src.items.iter().flatten() {
            let Some(field) = &item.field_ref else {
                continue;
            };
            let value = spec::field_value(pod, &field.field_path, facts).ok_or_else(|| {
                format!("downwardAPI: unsupported fieldPath {}", field.field_path)
            })?;
            let m = mode(item.mode.or(src.default_mode));
            files.insert(PathBuf::from(&item.path), (value.into_bytes(), m));
        }
        return Ok(Some(files));
    }
    if let Some(src) = &volume.projected {
        let mut files = Files::new();
        for source in src.sources.iter().flatten() {
            files.extend(projection(
                objects,
                pod,
                ns,
                source,
                facts,
                src.default_mode,
            )?);
        }
        return Ok(Some(files));
    }
    Ok(None)
}

fn projection(
    objects: &dyn Objects,
    pod: &Pod,
    ns: &str,
    source: &VolumeProjection,
    facts: &PodFacts,
    default_mode: Option<i32>,
) -> Result<Files, String> {
    let mode = default_mode
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(DEFAULT_MODE);
    if let Some(src) = &source.config_map {
        let cm = objects.config_map(ns, &src.name);
        return config_map_files(
            cm.as_ref(),
            &src.name,
            src.items.as_deref(),
            src.optional,
            mode,
        );
    }
    if let Some(src) = &source.secret {
        let secret = objects.secret(ns, &src.name);
        return secret_files(
            secret.as_ref(),
            &src.name,
            src.items.as_deref(),
            src.optional,
            mode,
        );
    }
    if let Some(src) = &source.downward_api {
        let mut files = Files::new();
        for item in src.items.iter().flatten() {
            if let Some(field) = &item.field_ref {
                let value = spec::field_value(pod, &field.field_path, facts).unwrap_or_default();
                files.insert(PathBuf::from(&item.path), (value.into_bytes(), mode));
            }
        }
        return Ok(files);
    }
    Err("projected volume: only configMap, secret and downwardAPI sources are supported by the process kubelet".into())
}

fn config_map_files(
    cm: Option<&ConfigMap>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<Files, String> {
    let Some(cm) = cm else {
        return if optional == Some(true) {
            Ok(Files::new())
        } else {
            Err(format!("configmap {name:?} not found"))
        };
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    data.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    select(data, items, mode, &format!("configmap {name:?}"))
}

fn secret_files(
    secret: Option<&Secret>,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: u32,
) -> Result<Files, String> {
    let Some(secret) = secret else {
        return if optional == Some(true) {
            Ok(Files::new())
        } else {
            Err(format!("secret {name:?} not found"))
        };
    };
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    data.extend(
        secret
            .string_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
    );
    select(data, items, mode, &format!("secret {name:?}"))
}

/// All keys as files, or only `items` (key → path, each with an optional mode).
fn select(
    mut data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: u32,
    what: &str,
) -> Result<Files, String> {
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data
            .into_iter()
            .map(|(k, v)| (PathBuf::from(k), (v, mode)))
            .collect());
    };
    let mut files = Files::new();
    for item in items {
        let bytes = data
            .remove(&item.key)
            .ok_or_else(|| format!("{what} has no key {:?}", item.key))?;
        let m = item
            .mode
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(mode);
        files.insert(PathBuf::from(&item.path), (bytes, m));
    }
    Ok(files)
}

/// Makes `dir` hold exactly `files`, rewriting only what changed (atomically).
fn write_tree(dir: &Path, files: &Files) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (rel, (bytes, mode)) in files {
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(std::io::Error::other(format!(
                "item path {} must be relative, without '..'",
                rel.display()
            )));
        }
        let path = dir.join(rel);
        let same = std::fs::read(&path).is_ok_and(|old| old == *bytes)
            && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode);
        if same {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::write(&tmp, bytes)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(*mode))?;
        std::fs::rename(&tmp, &path)?;
    }
    remove_others(dir, dir, files).map(|_| ())
}

/// Removes files of `dir` that are no longer wanted, and directories that this emptied.
/// Empty directories and empty files it did not empty are left alone: they are mount
/// points of volumes nested in this one (the sandbox makes them), and removing a mount
/// point here detaches that mount inside the container. Returns whether it removed any.
fn remove_others(root: &Path, dir: &Path, files: &Files) -> std::io::Result<bool> {
    let mut removed = false;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        if path.is_dir() {
            if remove_others(root, &path, files)? && std::fs::read_dir(&path)?.next().is_none() {
                std::fs::remove_dir(&path)?;
                removed = true;
            }
        } else if !files.contains_key(&rel) && std::fs::metadata(&path)?.len() > 0 {
            std::fs::remove_file(&path)?;
            removed = true;
        }
    }
    Ok(removed)
}

/// `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` of the Pod.
fn write_etc(ctx: &Ctx, pod: &Pod, dir: &PodDir, ip: Ipv4Addr) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.root.join("etc"))?;
    let spec = pod.spec.as_ref();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file (mq-testbed process kubelet).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    match spec.and_then(|s| s.subdomain.as_deref()) {
        Some(sub) => hosts.push_str(&format!(
            "{ip}\t{hostname}.{sub}.{ns}.svc.cluster.local\t{hostname}\n"
        )),
        None => hosts.push_str(&format!("{ip}\t{hostname}\n")),
    }
    for alias in spec.iter().flat_map(|s| s.host_aliases.iter().flatten()) {
        let names = alias.hostnames.clone().unwrap_or_default().join("\t");
        hosts.push_str(&format!("{}\t{names}\n", alias.ip));
    }
    std::fs::write(dir.etc("hosts"), hosts)?;
    std::fs::write(dir.etc("hostname"), format!("{hostname}\n"))?;
    std::fs::write(dir.etc("resolv.conf"), resolv_conf(ctx, pod))
}

/// The Pod's resolver configuration, following its `dnsPolicy` and `dnsConfig`.
fn resolv_conf(ctx: &Ctx, pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut nameservers = Vec::new();
    let mut searches = Vec::new();
    let mut options = Vec::new();
    if cluster {
        nameservers.push(ctx.config.dns_ip().to_string());
        searches.extend([
            format!("{ns}.svc.cluster.local"),
            "svc.cluster.local".to_owned(),
            "cluster.local".to_owned(),
        ]);
        options.push("ndots:5".to_owned());
    } else if policy != "None" {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for line in host.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => nameservers.extend(words.map(str::to_owned)),
                Some("search") => searches.extend(words.map(str::to_owned)),
                Some("options") => options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
    }
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        nameservers.extend(extra.nameservers.clone().unwrap_or_default());
        searches.extend(extra.searches.clone().unwrap_or_default());
        for option in extra.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            options.push(match &option.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for ns in nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mq-vol-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn write_tree_rewrites_changes_and_removes_dropped_keys() {
        let dir = tmp("tree");
        let mut files = Files::new();
        files.insert("a".into(), (b"1".to_vec(), 0o644));
        files.insert("sub/b".into(), (b"2".to_vec(), 0o600));
        write_tree(&dir, &files).unwrap();
        assert_eq!(std::fs::read(dir.join("sub/b")).unwrap(), b"2");
        let mode = std::fs::metadata(dir.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        files.remove(Path::new("sub/b"));
        files.insert("a".into(), (b"changed".to_vec(), 0o644));
        write_tree(&dir, &files).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"changed");
        assert!(!dir.join("sub").exists());
        // The mount point of a volume nested in this one stays: removing it would detach
        // that volume in the container.
        std::fs::create_dir(dir.join("nested")).unwrap();
        write_tree(&dir, &files).unwrap();
        assert!(dir.join("nested").is_dir());
        let escape: Files = [("../x".into(), (b"no".to_vec(), 0o644))].into();
        assert!(write_tree(&dir, &escape).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn items_select_and_rename_keys() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("k1".to_owned(), b"v1".to_vec()),
            ("k2".to_owned(), b"v2".to_vec()),
        ]
        .into();
        let items = vec![KeyToPath {
            key: "k2".into(),
            path: "conf/two".into(),
            mode: Some(0o400),
        }];
        let files = select(data.clone(), Some(&items), 0o644, "cm").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[Path::new("conf/two")], (b"v2".to_vec(), 0o400));
        let missing = vec![KeyToPath {
            key: "nope".into(),
            path: "x".into(),
            mode: None,
        }];
        assert!(
            select(data, Some(&missing), 0o644, "cm")
                .unwrap_err()
                .contains("nope")
        );
    }
}

//! The storage provisioner: a default StorageClass `standard` whose claims get a
//! hostPath PersistentVolume in the testbed's `node/volumes/` directory. The volume
//! outlives its Pods; with reclaim policy Delete it is removed once its claim is.
//!
//! The StorageClass `sized` (parameter `medium: tmpfs`) gives volumes whose size is
//! enforced, as real storage does: the same directory, with a tmpfs of exactly the
//! claim's size mounted on it in the node agent's mount namespace when a Pod first uses
//! it, unmounted when the volume is reclaimed (see [`super::mounts`] for how, and for
//! what that costs: the contents are lost when the testbed stops). A standard hostPath
//! directory never fills; a sized volume does, so a full disk can be tested end to end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::{Ctx, MANAGER};

/// The provisioner name in StorageClasses and PV annotations.
pub const PROVISIONER: &str = "mqfleet.io/hostpath";
/// The default StorageClass the agent creates.
pub const DEFAULT_CLASS: &str = "standard";
/// The StorageClass of size-enforced (tmpfs) volumes.
pub const SIZED_CLASS: &str = "sized";
/// The StorageClass parameter that picks the medium; `tmpfs` is the only one known.
pub const MEDIUM_PARAMETER: &str = "medium";
/// The medium of size-enforced volumes.
pub const TMPFS: &str = "tmpfs";
/// Annotation on a PersistentVolume of ours that has a medium (the class parameter).
pub const MEDIUM_ANNOTATION: &str = "mqfleet.io/medium";
/// How often the caches are scanned for work (no API calls unless there is some).
const SCAN: Duration = Duration::from_millis(500);

/// Creates the StorageClasses and provisions claims in the background.
pub async fn start(ctx: Arc<Ctx>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
    // Made before the default class, whose existence the testbed's readiness waits for,
    // so a ready testbed has both.
    let sized = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": SIZED_CLASS},
        "provisioner": PROVISIONER,
        "parameters": {MEDIUM_PARAMETER: TMPFS},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        // A mounted tmpfs could be resized, but nothing here grows a PV's capacity.
        "allowVolumeExpansion": false,
    });
    api.patch(
        SIZED_CLASS,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&sized),
    )
    .await
    .context("creating the StorageClass sized")?;
    let class = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": DEFAULT_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": true,
    });
    api.patch(
        DEFAULT_CLASS,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&class),
    )
    .await
    .context("creating the default StorageClass")?;
    let classes = super::cache_of::<StorageClass>(&ctx.client);
    Ok(tokio::spawn(async move {
        loop {
            scan(&ctx, &classes).await;
            tokio::time::sleep(SCAN).await;
        }
    }))
}

/// What a class of ours asks of its volumes.
struct ClassTerms {
    policy: String,
    medium: Option<String>,
}

async fn scan(ctx: &Ctx, classes: &Store<StorageClass>) {
    let ours: BTreeMap<String, ClassTerms> = classes
        .state()
        .iter()
        .filter(|c| c.provisioner == PROVISIONER)
        .map(|c| {
            let policy = c.reclaim_policy.clone().unwrap_or_else(|| "Delete".into());
            let medium = c
                .parameters
                .as_ref()
                .and_then(|p| p.get(MEDIUM_PARAMETER))
                .cloned();
            (c.name_any(), ClassTerms { policy, medium })
        })
        .collect();
    for claim in ctx.stores.claims.state() {
        let spec = claim.spec.as_ref();
        let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
        let unbound = spec.and_then(|s| s.volume_name.as_deref()).is_none();
        let class = spec.and_then(|s| s.storage_class_name.as_deref());
        let Some(terms) = class.and_then(|c| ours.get(c)) else {
            continue;
        };
        if pending
            && unbound
            && claim.metadata.deletion_timestamp.is_none()
            && let Err(e) = provision(ctx, &claim, terms).await
        {
            tracing::warn!(claim = %claim.name_any(), error = %e, "provisioning failed");
        }
    }
    for volume in ctx.stores.volumes.state() {
        if let Err(e) = reclaim(ctx, &volume).await {
            tracing::warn!(volume = %volume.name_any(), error = %e, "reclaiming failed");
        }
    }
}

async fn provision(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    terms: &ClassTerms,
) -> anyhow::Result<()> {
    let uid = claim.uid().unwrap_or_default();
    let name = format!("pvc-{uid}");
    let key = kube::runtime::reflector::ObjectRef::new(&name);
    if ctx.stores.volumes.get(&key).is_some() {
        return Ok(());
    }
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let mut annotations = BTreeMap::from([(
        "pv.kubernetes.io/provisioned-by".to_owned(),
        PROVISIONER.to_owned(),
    )]);
    match terms.medium.as_deref() {
        None => {}
        Some(TMPFS) => {
            annotations.insert(MEDIUM_ANNOTATION.to_owned(), TMPFS.to_owned());
        }
        Some(other) => anyhow::bail!(
            "the class asks for {MEDIUM_PARAMETER} {other:?}; only {TMPFS:?} is known"
        ),
    }
    let path = ctx.config.volumes_dir().join(&name);
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    let volume: PersistentVolume = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "annotations": annotations,
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": terms.policy,
            "storageClassName": spec.storage_class_name,
            "volumeMode": spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
            "hostPath": {"path": path.display().to_string(), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.namespace(),
                "name": claim.name_any(),
                "uid": uid,
            },
        },
    }))?;
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match api.create(&PostParams::default(), &volume).await {
        Ok(_) => {
            tracing::info!(claim = %claim.name_any(), volume = %volume.name_any(), "provisioned");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a released volume of ours whose policy is Delete, data first.
async fn reclaim(ctx: &Ctx, volume: &PersistentVolume) -> anyhow::Result<()> {
    let ours = volume
        .annotations()
        .get("pv.kubernetes.io/provisioned-by")
        .is_some_and(|p| p == PROVISIONER);
    let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let spec = volume.spec.as_ref();
    let delete = spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete");
    if !(ours && released && delete) || volume.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let expected = ctx.config.volumes_dir().join(volume.name_any());
    let path = spec.and_then(|s| s.host_path.as_ref()).map(|h| &h.path);
    // Only ever remove a directory this provisioner made; a sized volume's tmpfs goes
    // first (removing the directory under it would fail and only empty the tmpfs).
    if path.is_some_and(|p| std::path::Path::new(p) == expected) {
        ctx.mounts
            .release(&expected)
            .with_context(|| format!("unmounting {}", expected.display()))?;
        match std::fs::remove_dir_all(&expected) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", expected.display())),
        }
    }
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match api
        .delete(&volume.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => {
            tracing::info!(volume = %volume.name_any(), "reclaimed");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

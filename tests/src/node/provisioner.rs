//! The storage provisioner: a default StorageClass `standard` whose claims get a
//! hostPath PersistentVolume in the testbed's `node/volumes/` directory. The volume
//! outlives its Pods; with reclaim policy Delete it is removed once its claim is.

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
/// How often the caches are scanned for work (no API calls unless there is some).
const SCAN: Duration = Duration::from_millis(500);

/// Creates the default StorageClass and provisions claims in the background.
pub async fn start(ctx: Arc<Ctx>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let api: Api<StorageClass> = Api::all(ctx.client.clone());
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

async fn scan(ctx: &Ctx, classes: &Store<StorageClass>) {
    let ours: BTreeMap<String, String> = classes
        .state()
        .iter()
        .filter(|c| c.provisioner == PROVISIONER)
        .map(|c| {
            let policy = c.reclaim_policy.clone().unwrap_or_else(|| "Delete".into());
            (c.name_any(), policy)
        })
        .collect();
    for claim in ctx.stores.claims.state() {
        let spec = claim.spec.as_ref();
        let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
        let unbound = spec.and_then(|s| s.volume_name.as_deref()).is_none();
        let class = spec.and_then(|s| s.storage_class_name.as_deref());
        let Some(policy) = class.and_then(|c| ours.get(c)) else {
            continue;
        };
        if pending
            && unbound
            && claim.metadata.deletion_timestamp.is_none()
            && let Err(e) = provision(ctx, &claim, policy).await
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

async fn provision(ctx: &Ctx, claim: &PersistentVolumeClaim, policy: &str) -> anyhow::Result<()> {
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
    let path = ctx.config.volumes_dir().join(&name);
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    let volume: PersistentVolume = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": policy,
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
    // Only ever remove a directory this provisioner made.
    if path.is_some_and(|p| std::path::Path::new(p) == expected) {
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

//! Applying ordinary manifests (any kind the API server serves) to a testbed, as
//! `kubectl apply --server-side -f DIR` would: `make up` installs the operator this way.

use std::path::Path;

use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::Value;

use crate::crds::FIELD_MANAGER;
use crate::error::{Error, IoContext, Result};

/// Server-side-applies every document of every YAML file in `dir` (sorted by file name,
/// so `00-namespace.yaml` goes first). Returns `kind/name` of each applied object.
pub async fn apply_manifests(client: &Client, dir: &Path) -> Result<Vec<String>> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Vec::new();
    for file in crate::crds::yaml_files(dir)? {
        let text = std::fs::read_to_string(&file).ctx(|| format!("reading {}", file.display()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(document).map_err(|source| Error::Yaml {
                path: file.clone(),
                source,
            })?;
            if doc.is_null() {
                continue;
            }
            let object: DynamicObject =
                serde_json::from_value(doc.clone()).map_err(|source| Error::Json {
                    path: file.clone(),
                    source,
                })?;
            let invalid = |reason: &str| Error::InvalidCrd {
                path: file.clone(),
                reason: reason.to_owned(),
            };
            let types = object
                .types
                .as_ref()
                .ok_or_else(|| invalid("a document has no apiVersion/kind"))?;
            let gvk = GroupVersionKind::try_from(types)
                .map_err(|_| invalid("a document has an invalid apiVersion"))?;
            let name = object
                .metadata
                .name
                .clone()
                .ok_or_else(|| invalid("a document has no metadata.name"))?;
            let (resource, caps) = discovery::pinned_kind(client, &gvk).await?;
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Cluster => Api::all_with(client.clone(), &resource),
                Scope::Namespaced => {
                    let ns = object.metadata.namespace.as_deref().unwrap_or("default");
                    Api::namespaced_with(client.clone(), ns, &resource)
                }
            };
            api.patch(&name, &params, &Patch::Apply(&doc)).await?;
            applied.push(format!("{}/{name}", gvk.kind));
        }
    }
    Ok(applied)
}

//! Applying CustomResourceDefinitions to a testbed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, IoContext, Result};

/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "mq-testbed";
/// Bound on waiting for one CRD to become Established.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(60);

/// Server-side-applies every CRD in every `*.yaml`/`*.yml` file of `dir` (sorted,
/// multi-document files allowed; field manager `mq-testbed`, forced), then waits until
/// each is Established. Returns the CRD names in apply order.
///
/// Kubernetes 1.20 rejects schema fields it does not know (`x-kubernetes-validations`,
/// `selectableFields`) with a 500 on server-side apply, so they are removed first and a
/// warning says so: such rules must be enforced by the operator on this cluster.
pub async fn apply_crds(client: &Client, dir: &Path) -> Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    for file in yaml_files(dir)? {
        for (name, crd) in read_crds(&file)? {
            api.patch(&name, &params, &Patch::Apply(&crd)).await?;
            tracing::info!(crd = %name, file = %file.display(), "applied");
            names.push(name);
        }
    }
    for name in &names {
        wait_established(&api, name).await?;
    }
    Ok(names)
}

async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) -> Result<()> {
    let what = format!("CRD {name} to be Established");
    let established = await_condition(api.clone(), name, conditions::is_crd_established());
    match tokio::time::timeout(ESTABLISHED_TIMEOUT, established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(Error::Wait { what, source }),
        Err(_) => Err(Error::Timeout {
            what,
            timeout: ESTABLISHED_TIMEOUT,
        }),
    }
}

pub(crate) fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.ctx(|| format!("listing {}", dir.display()))?.path();
        let is_yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses every non-empty document of `file` as a CRD, returning `(name, document)`.
fn read_crds(file: &Path) -> Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(file).ctx(|| format!("reading {}", file.display()))?;
    let mut crds = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let mut doc = Value::deserialize(document).map_err(|source| Error::Yaml {
            path: file.to_path_buf(),
            source,
        })?;
        if doc.is_null() {
            continue;
        }
        let name = check_crd(file, &doc)?;
        let removed = strip_unsupported(&mut doc);
        if removed > 0 {
            tracing::warn!(crd = %name, removed, "removed schema fields Kubernetes 1.20 rejects (x-kubernetes-validations, selectableFields)");
        }
        crds.push((name, doc));
    }
    Ok(crds)
}

fn check_crd(file: &Path, doc: &Value) -> Result<String> {
    let invalid = |reason: String| Error::InvalidCrd {
        path: file.to_path_buf(),
        reason,
    };
    if doc["apiVersion"] != "apiextensions.k8s.io/v1" || doc["kind"] != "CustomResourceDefinition" {
        return Err(invalid(format!(
            "expected an apiextensions.k8s.io/v1 CustomResourceDefinition, found {} {}",
            doc["apiVersion"], doc["kind"]
        )));
    }
    doc["metadata"]["name"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid("the CRD has no metadata.name".into()))
}

/// Removes `x-kubernetes-validations` (anywhere) and `selectableFields` (per version);
/// returns how many were removed.
fn strip_unsupported(doc: &mut Value) -> usize {
    let mut removed = 0;
    if let Some(versions) = doc["spec"]["versions"].as_array_mut() {
        for version in versions {
            if let Some(map) = version.as_object_mut() {
                removed += usize::from(map.remove("selectableFields").is_some());
            }
        }
    }
    removed + strip_key(doc, "x-kubernetes-validations")
}

fn strip_key(value: &mut Value, key: &str) -> usize {
    match value {
        Value::Object(map) => {
            let here = usize::from(map.remove(key).is_some());
            here + map.values_mut().map(|v| strip_key(v, key)).sum::<usize>()
        }
        Value::Array(items) => items.iter_mut().map(|v| strip_key(v, key)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_fields_1_20_rejects() {
        let mut doc = serde_json::json!({
            "spec": {"versions": [{"name": "v1", "selectableFields": [{"jsonPath": ".spec.a"}],
                "schema": {"openAPIV3Schema": {"properties": {"spec": {
                    "x-kubernetes-validations": [{"rule": "self.a > 0"}],
                    "properties": {"a": {"type": "integer"}}}}}}}]}
        });
        assert_eq!(strip_unsupported(&mut doc), 2);
        let text = doc.to_string();
        assert!(!text.contains("x-kubernetes-validations") && !text.contains("selectableFields"));
        assert!(text.contains(r#""a":{"type":"integer"}"#));
    }

    #[test]
    fn rejects_non_crd_documents() {
        let doc =
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert!(check_crd(Path::new("x.yaml"), &doc).is_err());
    }
}

//! End-to-end: the generated CRDs on a real Kubernetes API server (the local testbed).
//!
//! Applies `crds/`, creates every manifest of `examples/` and checks it is stored as written
//! (with defaults filled in), sees every manifest of `examples/invalid/` refused by the API
//! server with a message naming the bad field, and reads the printer columns a person sees
//! in `kubectl get`.

use anyhow::{Context, Result, bail, ensure};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Client, Resource};
use mq_operator::crd::{MQEmpower, MQGroup, MQInstance, MQTopic};
use mq_testbed::Testbed;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One manifest of a YAML file, with the field its file says the API server must refuse.
struct Manifest {
    file: PathBuf,
    object: DynamicObject,
    rejected_field: Option<String>,
}

fn manifests(dir: &Path) -> Result<Vec<Manifest>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let mut out = vec![];
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let rejected_field = text
            .lines()
            .find_map(|l| l.strip_prefix("# rejected-field:"))
            .map(|f| f.trim().to_owned());
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            let object: DynamicObject = serde_yaml::from_value(value)
                .with_context(|| format!("{} is not a Kubernetes object", file.display()))?;
            out.push(Manifest {
                file: file.clone(),
                object,
                rejected_field: rejected_field.clone(),
            });
        }
    }
    ensure!(!out.is_empty(), "no manifests in {}", dir.display());
    Ok(out)
}

use serde::Deserialize;

fn api_resource(kind: &str) -> Result<ApiResource> {
    Ok(match kind {
        "MQInstance" => ApiResource::erase::<MQInstance>(&()),
        "MQTopic" => ApiResource::erase::<MQTopic>(&()),
        "MQGroup" => ApiResource::erase::<MQGroup>(&()),
        "MQEmpower" => ApiResource::erase::<MQEmpower>(&()),
        other => bail!("unexpected kind {other}"),
    })
}

fn api(client: &Client, ns: &str, object: &DynamicObject) -> Result<Api<DynamicObject>> {
    let kind = object
        .types
        .as_ref()
        .map(|t| t.kind.as_str())
        .unwrap_or_default();
    Ok(Api::namespaced_with(
        client.clone(),
        ns,
        &api_resource(kind)?,
    ))
}

async fn fresh_namespace(client: &Client, prefix: &str) -> Result<String> {
    use k8s_openapi::api::core::v1::Namespace;
    let name = format!("{prefix}-{}", std::process::id());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(name)
}

/// Every value of `want` (a manifest's spec) is in `got` (the stored spec), recursively;
/// `got` may hold more (defaults).
fn assert_contains(want: &serde_json::Value, got: &serde_json::Value, path: &str) {
    match (want, got) {
        (serde_json::Value::Object(w), serde_json::Value::Object(g)) => {
            for (k, v) in w {
                let sub = format!("{path}.{k}");
                let g = g
                    .get(k)
                    .unwrap_or_else(|| panic!("{sub} missing from the stored object"));
                assert_contains(v, g, &sub);
            }
        }
        _ => assert_eq!(want, got, "{path} stored differently than written"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_are_accepted_and_invalid_manifests_are_refused_naming_the_field() -> Result<()> {
    let testbed = Testbed::shared().await?;
    let client = testbed.client();
    mq_testbed::apply_crds(&client, &workspace().join("crds")).await?;
    let ns = fresh_namespace(&client, "examples").await?;

    for m in manifests(&workspace().join("examples"))? {
        let api = api(&client, &ns, &m.object)?;
        let created = api
            .create(&PostParams::default(), &m.object)
            .await
            .with_context(|| format!("creating {}", m.file.display()))?;
        assert_contains(&m.object.data["spec"], &created.data["spec"], "spec");
    }
    // Stored objects read back as the Rust types, with the documented defaults filled in.
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), &ns);
    let ordered = topics.get("order-status").await?;
    assert_eq!(
        ordered.spec.perm,
        mq_operator::crd::Perm::ReadWrite,
        "perm defaults to 6"
    );
    assert_eq!(ordered.spec.queues, 8, "queues default to 8");
    let instance = Api::<MQInstance>::namespaced(client.clone(), &ns)
        .get("orders")
        .await?;
    assert_eq!(
        instance
            .spec
            .brokers
            .storage
            .size
            .as_ref()
            .map(|q| q.0.as_str()),
        Some("20Gi")
    );
    assert_eq!(instance.spec.topic_capacity, 50);

    let invalid = manifests(&workspace().join("examples/invalid"))?;
    assert!(invalid.len() >= 15, "expected the whole invalid catalogue");
    for m in invalid {
        let field = m
            .rejected_field
            .clone()
            .with_context(|| format!("{} lacks a `# rejected-field:` line", m.file.display()))?;
        let api = api(&client, &ns, &m.object)?;
        match api.create(&PostParams::default(), &m.object).await {
            Ok(_) => panic!(
                "{} was accepted; the API server must refuse it",
                m.file.display()
            ),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{}: {status:?}", m.file.display());
                assert!(
                    status.message.contains(&field),
                    "{}: the refusal must name {field}, got: {}",
                    m.file.display(),
                    status.message
                );
            }
            Err(other) => return Err(other).context(format!("creating {}", m.file.display())),
        }
        let name = m.object.meta().name.clone().unwrap_or_default();
        assert!(
            api.get_opt(&name).await?.is_none(),
            "{name} must not be stored"
        );
    }

    assert_printer_columns(&client, &ns).await?;
    assert_kubectl_lists_the_category(testbed, &ns)?;

    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .delete(&ns, &DeleteParams::default())
        .await?;
    Ok(())
}

/// The columns `kubectl get` shows come from the server's Table rendering of the CRD's
/// `additionalPrinterColumns`: ask for that rendering, as kubectl does.
async fn assert_printer_columns(client: &Client, ns: &str) -> Result<()> {
    let expected: [(&str, &[&str]); 4] = [
        (
            "mqinstances",
            &[
                "Name",
                "InstanceId",
                "Phase",
                "Ready",
                "Ready Brokers",
                "Brokers",
                "Endpoint",
                // Priority 1: `kubectl get -o wide` only.
                "External",
                "Age",
            ],
        ),
        (
            "mqtopics",
            &[
                "Name", "Instance", "Topic", "Type", "Perm", "Phase", "Ready", "Age",
            ],
        ),
        (
            "mqgroups",
            &[
                "Name",
                "Instance",
                "GroupId",
                "ReadEnable",
                "Phase",
                "Ready",
                "Age",
            ],
        ),
        (
            "mqempowers",
            &[
                "Name", "Instance", "Topic", "User", "Relation", "Phase", "Ready", "Age",
            ],
        ),
    ];
    for (plural, columns) in expected {
        let request = http::Request::get(format!(
            "/apis/mqfleet.io/v1alpha1/namespaces/{ns}/{plural}"
        ))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(vec![])?;
        let table: serde_json::Value = client.request(request).await?;
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .context("a Table has columnDefinitions")?
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, columns, "printer columns of {plural}");
        if plural == "mqinstances" {
            let external = table["columnDefinitions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == "External");
            assert_eq!(
                external.map(|c| c["priority"].clone()),
                Some(serde_json::json!(1)),
                "the external endpoint shows with kubectl get -o wide only"
            );
        }
        let rows = table["rows"].as_array().context("a Table has rows")?;
        assert!(!rows.is_empty(), "{plural}: the examples are listed");
    }
    Ok(())
}

/// `kubectl get mqfleet` lists every kind of the category, with their columns.
fn assert_kubectl_lists_the_category(testbed: &Testbed, ns: &str) -> Result<()> {
    let kubectl = mq_testbed::kubectl_path()?;
    let out = std::process::Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(testbed.kubeconfig_path())
        .args(["get", "mqfleet", "-n", ns])
        .output()
        .with_context(|| format!("running {}", kubectl.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "mqinstance.mqfleet.io/orders",
        "mqtopic.mqfleet.io/order-created",
        "mqtopic.mqfleet.io/order-status",
        "mqgroup.mqfleet.io/gid-order-processor",
        "mqempower.mqfleet.io/analytics-reads-order-created",
        "INSTANCEID",
        "GROUPID",
        "ORDER_CREATED",
    ] {
        assert!(
            stdout.contains(needle),
            "`kubectl get mqfleet` lacks {needle}:\n{stdout}"
        );
    }
    Ok(())
}

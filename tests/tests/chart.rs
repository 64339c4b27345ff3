//! The Helm chart `charts/mqfleet`, offline: `helm lint`, rendering with default and
//! non-default values for Kubernetes 1.20 and 1.33, the rendered objects checked against
//! the Kubernetes schemas (kubernetes-validate, whose oldest schemas are 1.25; the 1.20
//! API server itself checks the install in `chart_install.rs`), invalid values refused
//! by `values.schema.json`, and the two copies the chart keeps in sync: its CRDs
//! (`make crds`) and `deploy/` (`make deploy`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use serde_yaml::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    workspace().join("charts/mqfleet")
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mq-chart-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs helm with `args`; returns (success, stdout, stderr).
fn helm(args: &[&str]) -> Result<(bool, String, String)> {
    let bin = mq_testbed::install::helm_path()?;
    let out = Command::new(&bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `helm template` of the chart with `extra` arguments; the rendered YAML or helm's error.
fn template(extra: &[&str]) -> Result<String> {
    let chart = chart();
    let mut args = vec!["template", "mqfleet", chart.to_str().context("chart path")?];
    args.extend_from_slice(&["--namespace", "mqfleet-system"]);
    args.extend_from_slice(extra);
    let (ok, out, err) = helm(&args)?;
    ensure!(ok, "helm template {extra:?} failed:\n{err}");
    Ok(out)
}

/// The rendered documents.
fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde::Deserialize::deserialize(doc)?;
        if !matches!(value, Value::Null) {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The document of `kind` named `name`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
}

/// kubernetes-validate --strict of `yaml` for Kubernetes `version`; (success, report).
fn validate(yaml: &str, version: &str, dir: &Path) -> Result<(bool, String)> {
    let file = dir.join(format!("rendered-{version}.yaml"));
    std::fs::write(&file, yaml)?;
    let bin = mq_testbed::install::kubernetes_validate_path()?;
    let out = Command::new(&bin)
        .args(["-k", version, "--strict"])
        .arg(&file)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), report))
}

/// Values a platform team would change: another registry and tag, JSON logs, a NodePort
/// console, pull secrets, placement, a ServiceMonitor, its own first account.
const CUSTOM: &[&str] = &[
    "--set",
    "image.registry=registry.example.com:5000",
    "--set",
    "image.tag=1.2.3",
    "--set",
    "image.pullPolicy=Always",
    "--set",
    "image.pullSecrets[0]=regcred",
    "--set",
    "logFormat=json",
    "--set",
    "operator.replicas=3",
    "--set",
    "operator.nodeSelector.pool=system",
    "--set",
    "operator.tolerations[0].key=dedicated",
    "--set",
    "operator.tolerations[0].operator=Exists",
    "--set",
    "console.replicas=1",
    "--set",
    "console.service.type=NodePort",
    "--set",
    "console.service.nodePort=30080",
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "crds.keep=false",
    "--set-string",
    "firstAccount.userId=4242",
    "--set",
    "firstAccount.accessKey=AKfirst0001",
    "--set",
    "firstAccount.secretKey=SKfirst0001secret",
    "--set",
    "firstAccount.namespace=shop",
];

#[test]
fn helm_lint_passes_with_default_and_testbed_values() -> Result<()> {
    let chart = chart();
    let chart = chart.to_str().context("chart path")?;
    let testbed = workspace().join("charts/mqfleet/values-testbed.yaml");
    let testbed = testbed.to_str().context("values path")?;
    for extra in [&[][..], &["-f", testbed][..]] {
        let mut args = vec!["lint", chart, "--strict"];
        args.extend_from_slice(extra);
        let (ok, out, err) = helm(&args)?;
        ensure!(ok, "helm lint {extra:?} failed:\n{out}{err}");
    }
    Ok(())
}

#[test]
fn default_and_custom_values_render_valid_objects_for_1_20_and_1_33() -> Result<()> {
    let dir = Scratch::new("validate")?;
    for kube in ["1.20.0", "1.33.0"] {
        for (label, values) in [("default", &[][..]), ("custom", CUSTOM)] {
            let mut extra = vec!["--kube-version", kube];
            extra.extend_from_slice(values);
            let yaml = template(&extra)?;
            let docs = documents(&yaml)?;
            ensure!(
                docs.len() >= 20,
                "{label}/{kube}: only {} objects",
                docs.len()
            );
            // kubernetes-validate has no schemas older than 1.25; 1.20 renders the same
            // API versions (the chart uses none that 1.20 lacks).
            let schemas = if kube == "1.20.0" { "1.25.0" } else { kube };
            let (ok, report) = validate(&yaml, schemas, &dir.0)?;
            ensure!(ok, "{label} values for {kube} refused:\n{report}");
            let checked = report.matches("passed").count();
            // Every object but the ServiceMonitor (a CRD kind the validator lacks).
            let custom_kinds = docs
                .iter()
                .filter(|d| d["kind"].as_str() == Some("ServiceMonitor"))
                .count();
            ensure!(
                checked + custom_kinds >= docs.len(),
                "{label}/{kube}: {checked} of {} objects checked:\n{report}",
                docs.len()
            );
        }
    }
    Ok(())
}

#[test]
fn default_values_give_the_documented_platform() -> Result<()> {
    let docs = documents(&template(&[])?)?;
    let operator = find(&docs, "Deployment", "mq-operator").context("no operator")?;
    ensure!(operator["spec"]["replicas"].as_i64() == Some(2));
    let container = &operator["spec"]["template"]["spec"]["containers"][0];
    ensure!(container["image"].as_str() == Some("mqfleet/mq-operator:0.1.0"));
    let pod = &operator["spec"]["template"]["spec"];
    ensure!(pod["securityContext"]["runAsNonRoot"].as_bool() == Some(true));
    ensure!(container["securityContext"]["readOnlyRootFilesystem"].as_bool() == Some(true));
    let console = find(&docs, "Deployment", "mq-console").context("no console")?;
    ensure!(console["spec"]["replicas"].as_i64() == Some(2));
    let service = find(&docs, "Service", "mq-console").context("no console Service")?;
    ensure!(service["spec"]["type"].as_str() == Some("ClusterIP"));
    ensure!(service["spec"]["sessionAffinity"].as_str() == Some("ClientIP"));
    // CRDs are templates kept on uninstall; no Namespace object; no ServiceMonitor.
    let crds: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("CustomResourceDefinition"))
        .collect();
    ensure!(crds.len() == 4, "{} CRDs", crds.len());
    for crd in &crds {
        ensure!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].as_str() == Some("keep"));
    }
    ensure!(!docs.iter().any(|d| d["kind"].as_str() == Some("Namespace")));
    ensure!(
        !docs
            .iter()
            .any(|d| d["kind"].as_str() == Some("ServiceMonitor"))
    );
    // The profile's images follow the broker image; epoch milliseconds stay integers.
    let (text, parsed) = rendered_profiles(&docs)?;
    let default = parsed.get("default").context("no default profile")?;
    ensure!(default.brokers.image == "mqfleet/mq-broker:0.1.0");
    ensure!(default.name_servers.image == "mqfleet/mq-broker:0.1.0");
    ensure!(default.create_time == Some(1_767_225_600_000), "{text}");
    ensure!(default.image_pull_secrets.is_empty(), "{text}");
    // A first account, generated: a decimal user id, keys, kept on uninstall.
    let account = docs
        .iter()
        .find(|d| d["metadata"]["labels"]["mqfleet.io/account"].as_str() == Some("true"))
        .context("no first account")?;
    let secret: k8s_openapi::api::core::v1::Secret = serde_yaml::from_value(account.clone())?;
    let parsed =
        mq_operator::domain::accounts::Account::from_secret(&secret).map_err(anyhow::Error::msg)?;
    ensure!(parsed.namespace == "mq-demo");
    ensure!(parsed.credentials.access_key.len() >= 20);
    ensure!(account["metadata"]["annotations"]["helm.sh/resource-policy"].as_str() == Some("keep"));
    ensure!(
        secret.metadata.name.as_deref()
            == Some(mq_operator::domain::accounts::Account::secret_name(&parsed.user_id).as_str())
    );
    Ok(())
}

#[test]
fn custom_values_reach_the_objects() -> Result<()> {
    let docs = documents(&template(CUSTOM)?)?;
    let operator = find(&docs, "Deployment", "mq-operator").context("no operator")?;
    let pod = &operator["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    ensure!(operator["spec"]["replicas"].as_i64() == Some(3));
    ensure!(
        container["image"].as_str() == Some("registry.example.com:5000/mqfleet/mq-operator:1.2.3")
    );
    ensure!(container["imagePullPolicy"].as_str() == Some("Always"));
    ensure!(pod["imagePullSecrets"][0]["name"].as_str() == Some("regcred"));
    ensure!(pod["nodeSelector"]["pool"].as_str() == Some("system"));
    ensure!(pod["tolerations"][0]["key"].as_str() == Some("dedicated"));
    let env = container["env"].as_sequence().context("env")?;
    ensure!(env.iter().any(
        |e| e["name"].as_str() == Some("MQ_LOG_FORMAT") && e["value"].as_str() == Some("json")
    ));
    let console = find(&docs, "Deployment", "mq-console").context("no console")?;
    ensure!(console["spec"]["replicas"].as_i64() == Some(1));
    // One console replica: a budget of one would block every drain.
    ensure!(find(&docs, "PodDisruptionBudget", "mq-console").is_none());
    ensure!(find(&docs, "PodDisruptionBudget", "mq-operator").is_some());
    let service = find(&docs, "Service", "mq-console").context("no console Service")?;
    ensure!(service["spec"]["type"].as_str() == Some("NodePort"));
    ensure!(service["spec"]["ports"][0]["nodePort"].as_i64() == Some(30080));
    ensure!(find(&docs, "ServiceMonitor", "mqfleet").is_some());
    let (text, parsed) = rendered_profiles(&docs)?;
    ensure!(
        text.contains("registry.example.com:5000/mqfleet/mq-broker:1.2.3"),
        "{text}"
    );
    // The servers pull from the same private registry with the same Secret.
    let default = parsed.get("default").context("no default profile")?;
    ensure!(default.image_pull_secrets == ["regcred"], "{text}");
    for crd in docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("CustomResourceDefinition"))
    {
        ensure!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    }
    let secret = find(&docs, "Secret", "mqfleet-account-4242").context("no given account")?;
    let secret: k8s_openapi::api::core::v1::Secret = serde_yaml::from_value(secret.clone())?;
    let account =
        mq_operator::domain::accounts::Account::from_secret(&secret).map_err(anyhow::Error::msg)?;
    ensure!(account.credentials.access_key == "AKfirst0001");
    ensure!(account.namespace == "shop");
    Ok(())
}

#[test]
fn a_profile_may_pull_with_its_own_secrets() -> Result<()> {
    let docs = documents(&template(&[
        "--set",
        "image.pullSecrets[0]=regcred",
        "--set",
        "profiles.default.imagePullSecrets[0]=mirror-creds",
    ])?)?;
    let (text, parsed) = rendered_profiles(&docs)?;
    let default = parsed.get("default").context("no default profile")?;
    ensure!(default.image_pull_secrets == ["mirror-creds"], "{text}");
    let operator = find(&docs, "Deployment", "mq-operator").context("no operator")?;
    let pod = &operator["spec"]["template"]["spec"];
    ensure!(pod["imagePullSecrets"][0]["name"].as_str() == Some("regcred"));
    Ok(())
}

#[test]
fn invalid_values_are_refused_with_the_schema_message() -> Result<()> {
    let chart = chart();
    let chart = chart.to_str().context("chart path")?;
    for (set, expected) in [
        (
            "operator.replicas=-1",
            "operator.replicas: Must be greater than or equal to 0",
        ),
        (
            "logFormat=xml",
            "logFormat: logFormat must be one of the following",
        ),
        ("console.service.type=Ingress", "console.service.type"),
        (
            "operatr.replicas=1",
            "Additional property operatr is not allowed",
        ),
        ("firstAccount.userId=abc", "firstAccount.userId"),
        (
            "profiles.default.imagePullSecrets[0]=Reg_Cred",
            "profiles.default.imagePullSecrets.0",
        ),
    ] {
        let (ok, _, err) = helm(&["template", "m", chart, "--set", set])?;
        ensure!(!ok, "--set {set} was accepted");
        ensure!(err.contains(expected), "--set {set}: {err}");
    }
    Ok(())
}

/// The rendered profiles ConfigMap's `profiles.yaml`: its text, and as the operator parses it.
fn rendered_profiles(docs: &[Value]) -> Result<(String, mq_operator::domain::profiles::Profiles)> {
    let profiles = find(docs, "ConfigMap", "mqfleet-cluster-profiles").context("profiles")?;
    let text = profiles["data"]["profiles.yaml"]
        .as_str()
        .context("profiles.yaml")?;
    let parsed = mq_operator::domain::profiles::Profiles::parse(text)?;
    Ok((text.to_owned(), parsed))
}

/// Fails unless `a` and `b` hold the same files with the same bytes; `fix` says how to
/// bring them back in line.
fn same_files(a: &Path, b: &Path, fix: &str) -> Result<()> {
    let names = |dir: &Path| -> Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(dir)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        v.sort();
        Ok(v)
    };
    let list = names(a)?;
    ensure!(
        list == names(b)?,
        "{} and {} hold other files: {fix}",
        a.display(),
        b.display()
    );
    for name in list {
        ensure!(
            std::fs::read(a.join(&name))? == std::fs::read(b.join(&name))?,
            "{name} differs between {} and {}: {fix}",
            a.display(),
            b.display()
        );
    }
    Ok(())
}

#[test]
fn the_charts_crds_are_the_generated_ones() -> Result<()> {
    same_files(
        &workspace().join("crds"),
        &chart().join("files/crds"),
        "run `make crds`",
    )
}

#[test]
fn deploy_is_the_chart_rendered_with_testbed_values() -> Result<()> {
    let dir = Scratch::new("deploy")?;
    let helm = mq_testbed::install::helm_path()?;
    let out = Command::new("bash")
        .arg(workspace().join("hack/render-deploy.sh"))
        .arg(&dir.0)
        .env("HELM", &helm)
        .output()?;
    ensure!(
        out.status.success(),
        "render-deploy.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    same_files(&dir.0, &workspace().join("deploy"), "run `make deploy`")
}

//! Every object the operator builds, and every manifest in `deploy/`, validates against
//! the Kubernetes 1.33 schemas (`kubernetes-validate --strict`), so current clusters
//! accept what the 1.20 testbed accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use mq_operator::controller::workloads::{self, Names, Settings};
use mq_operator::crd::MQInstance;
use mq_operator::domain::profiles::{Effective, Profiles};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn validate(files: &[PathBuf]) -> Result<(bool, String)> {
    let bin = mq_testbed::install::kubernetes_validate_path()?;
    let out = Command::new(&bin)
        .args(["-k", "1.33.0", "--strict"])
        .args(files)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("mq-schemas-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn objects_the_operator_builds_are_valid_kubernetes_1_33() -> Result<()> {
    let text = std::fs::read_to_string(workspace().join("examples/mqinstance.yaml"))?;
    let mut instance: MQInstance = serde_yaml::from_str(&text)?;
    instance.metadata.namespace = Some("shop".into());
    let settings = Settings {
        namespace: "mqfleet-system".into(),
        profiles_configmap: "mqfleet-cluster-profiles".into(),
    };
    // The profile `deploy/` ships, with placement added so that is checked too.
    let deployed: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        workspace().join("deploy/profiles.yaml"),
    )?)?;
    let mut text = deployed["data"]["profiles.yaml"]
        .as_str()
        .context("deploy/profiles.yaml has no profiles.yaml")?
        .to_owned();
    text.push_str(concat!(
        "  nodeSelector: {mqfleet.io/pool: brokers}\n",
        "  tolerations: [{key: dedicated, operator: Equal, value: mq, effect: NoSchedule}]\n",
        "  affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [",
        "{weight: 100, podAffinityTerm: {topologyKey: kubernetes.io/hostname, ",
        "labelSelector: {matchLabels: {mqfleet.io/component: broker}}}}]}}\n",
    ));
    let profiles = Profiles::parse(&text)?;
    let profile = profiles.get("default").context("no default profile")?;
    let effective = Effective::of(&instance.spec, profile);
    let names = Names::of(&instance);
    let mut objects = vec![
        serde_yaml::to_string(&workloads::config_map(
            &instance, &names, &settings, &effective, None,
        ))?,
        serde_yaml::to_string(&workloads::namesrv_statefulset(
            &instance, &names, &settings, &effective,
        ))?,
        serde_yaml::to_string(&workloads::broker_statefulset(
            &instance, &names, &settings, &effective,
        ))?,
    ];
    for svc in workloads::services(&instance, &names, &settings) {
        objects.push(serde_yaml::to_string(&svc)?);
    }
    // The Services of an instance exposed outside the cluster, of both external types.
    use mq_operator::controller::exposure;
    objects.push(serde_yaml::to_string(&exposure::namesrv_service(
        &instance,
        &names,
        &settings,
        "NodePort",
        Some(30001),
    ))?);
    objects.push(serde_yaml::to_string(&exposure::broker_service(
        &instance,
        &names,
        &settings,
        "LoadBalancer",
        0,
        None,
    ))?);
    // On 1.33 the operator finds and uses policy/v1.
    for pdb in workloads::disruption_budgets(&instance, &names, &settings, "policy/v1") {
        objects.push(serde_yaml::to_string(&pdb)?);
    }
    let dir = scratch("operator")?;
    let mut files = Vec::new();
    for (i, yaml) in objects.iter().enumerate() {
        let path = dir.join(format!("{i}.yaml"));
        std::fs::write(&path, yaml)?;
        files.push(path);
    }
    for entry in std::fs::read_dir(workspace().join("deploy"))? {
        files.push(entry?.path());
    }
    let (ok, report) = validate(&files)?;
    std::fs::remove_dir_all(&dir)?;
    ensure!(ok, "kubernetes-validate refused objects:\n{report}");
    ensure!(
        report.matches("passed").count() >= files.len(),
        "not every object was checked:\n{report}"
    );
    Ok(())
}

#[test]
fn the_validator_refuses_an_invalid_object() -> Result<()> {
    // Proves the check above can fail: a Deployment with a string replica count.
    let dir = scratch("invalid")?;
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  replicas: two\n  selector: {matchLabels: {a: b}}\n  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: x}]}}\n",
    )?;
    let (ok, report) = validate(&[path])?;
    std::fs::remove_dir_all(&dir)?;
    ensure!(!ok, "an invalid Deployment passed:\n{report}");
    Ok(())
}

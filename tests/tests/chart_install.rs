//! The chart installed for real, with helm and the real images, on a fresh testbed: the
//! README's real-cluster block runs as written (`make images`, `skopeo copy` to a registry
//! on loopback, `helm install --set image.registry=…`) while the testbed's nodes pull from
//! that registry; then an invalid value refused by the schema, the quickstart instance
//! Ready, the processes running as the images' non-root user, a real client round trip
//! signed with the first account's keys, a signed console call, `helm upgrade` with a
//! changed value rolling the operator and the console, `helm uninstall` leaving tenants'
//! resources, keys and messages, and a second `helm install` finding them all again.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::{Api, Client};
use mq_console::client::SignedClient;
use mq_operator::crd::MQInstance;
use mq_testbed::Testbed;
use serde_json::Value;

const PLATFORM: &str = "mqfleet-system";
const RELEASE: &str = "mqfleet";
/// The first account's namespace (the chart's default).
const TENANT: &str = "mq-demo";
/// The images' tag: the chart's appVersion.
const TAG: &str = "0.1.0";
/// What the images run as.
const IMAGE_USER: u32 = 65532;
/// Bound on helm's own waits and on the instance becoming Ready.
const WAIT: Duration = Duration::from_secs(240);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `bin args` with the testbed's kubeconfig; (success, stdout + stderr).
fn run(bin: &Path, tb: &Testbed, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(bin)
        .args(args)
        .env("KUBECONFIG", tb.kubeconfig_path())
        .current_dir(workspace())
        .output()
        .with_context(|| format!("running {} {args:?}", bin.display()))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// `helm args…`, which must succeed; its output.
fn helm(tb: &Testbed, args: &[&str]) -> Result<String> {
    let (ok, out) = run(&mq_testbed::install::helm_path()?, tb, args)?;
    ensure!(ok, "helm {args:?} failed:\n{out}");
    Ok(out)
}

/// `helm upgrade --install` of the chart as the README installs it (images from
/// `registry`), with `extra`.
fn install(tb: &Testbed, registry: &str, extra: &[&str]) -> Result<String> {
    let timeout = format!("{}s", WAIT.as_secs());
    let image_registry = format!("image.registry={registry}");
    let mut args = vec![
        "upgrade",
        "--install",
        RELEASE,
        "charts/mqfleet",
        "--namespace",
        PLATFORM,
        "--create-namespace",
        "--set",
        &image_registry,
        "--set",
        "profiles.default.externalHost=127.0.0.1",
        "--wait",
        "--timeout",
        &timeout,
    ];
    args.extend_from_slice(extra);
    helm(tb, &args)
}

/// Runs the README's real-cluster block against `tb` with images pushed to `registry`;
/// after the push, the testbed's nodes pull them (skopeo back into OCI layouts, then
/// `mq-testbed image load` under the registry's names), as a real node would on first use.
fn readme_real_cluster(tb: &Testbed, registry: &str, scratch: &Path) -> Result<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md"))?;
    let commands = mq_testbed::readme::block(&readme, "real-cluster")?;
    let testbed_bin = workspace().join("target/debug/mq-testbed");
    let pull = format!(
        "for image in mq-operator mq-broker mq-console; do \
           skopeo copy --quiet --src-tls-verify=false docker://$REGISTRY/mqfleet/$image:{TAG} oci:{dir}/$image:{TAG} && \
           {bin} image load --dir {tb_dir} {dir}/$image:{TAG} --repository $REGISTRY/mqfleet/$image || exit 1; \
         done",
        dir = scratch.display(),
        bin = testbed_bin.display(),
        tb_dir = tb.dir().display(),
    );
    let script = mq_testbed::readme::script(&commands, &[("skopeo copy", &pull)]);
    let tools = mq_testbed::install::helm_path()?
        .parent()
        .context("helm's directory")?
        .to_owned();
    let path = format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = mq_testbed::readme::run(
        &script,
        &workspace(),
        &[
            ("REGISTRY", registry.to_owned()),
            // The testbed's node ports answer on 127.0.0.1.
            ("EXTERNAL_HOST", "127.0.0.1".to_owned()),
            ("KUBECONFIG", tb.kubeconfig_path().display().to_string()),
            ("PATH", path),
        ],
        Duration::from_secs(600),
    )?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(
        out.status.success(),
        "the README's real-cluster block failed:\n{stderr}\n{stdout}"
    );
    Ok(stdout.into_owned())
}

/// Every running container of the platform's operator and console runs as the images'
/// user, from the image's own root.
async fn runs_as_image_user(client: &Client) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    let mut checked = 0;
    for (app, container) in [("mq-operator", "operator"), ("mq-console", "console")] {
        let list = pods
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={app}")))
            .await?;
        for pod in &list.items {
            let image = &pod.spec.as_ref().context("spec")?.containers[0].image;
            ensure!(
                image
                    .as_deref()
                    .is_some_and(|i| i.ends_with(&format!("/mqfleet/{app}:{TAG}"))),
                "{app} runs {image:?}"
            );
            let proc = mq_testbed::wait::container_process(pod, container).with_context(|| {
                format!(
                    "no process for {}",
                    pod.metadata.name.as_deref().unwrap_or("?")
                )
            })?;
            let status = std::fs::read_to_string(format!("/proc/{}/status", proc.pid))?;
            let uids: Vec<u32> = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .context("no Uid line")?
                .split_whitespace()
                .filter_map(|u| u.parse().ok())
                .collect();
            ensure!(uids == [IMAGE_USER; 4], "{app} runs as uids {uids:?}");
            // Its root is the image's: the workspace does not exist there.
            let root = format!("/proc/{}/root", proc.pid);
            ensure!(
                !Path::new(&root)
                    .join(workspace().canonicalize()?.strip_prefix("/")?)
                    .exists(),
                "{app} sees the host's files"
            );
            checked += 1;
        }
    }
    ensure!(checked >= 4, "only {checked} containers checked");
    Ok(())
}

/// The first account's keys, from the Secret the chart made.
async fn first_account(client: &Client) -> Result<(String, String)> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), PLATFORM);
    let list = secrets
        .list(&ListParams::default().labels(&format!("mqfleet.io/first-account={RELEASE}")))
        .await?;
    ensure!(list.items.len() == 1, "{} first accounts", list.items.len());
    let account = mq_operator::domain::accounts::Account::from_secret(&list.items[0])
        .map_err(anyhow::Error::msg)?;
    ensure!(account.namespace == TENANT, "{account:?}");
    Ok((
        account.credentials.access_key,
        account.credentials.secret_key,
    ))
}

/// Waits until instance `demo` is Ready; its status.
async fn demo_ready(tb: &Testbed, client: &Client) -> Result<Value> {
    let api: Api<MQInstance> = Api::namespaced(client.clone(), TENANT);
    let status = tb
        .until(client, TENANT, "instance demo Ready", WAIT, || {
            let api = api.clone();
            async move {
                let i = api.get("demo").await.map_err(|e| e.to_string())?;
                let status = serde_json::to_value(&i.status).map_err(|e| e.to_string())?;
                let ready = status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                let current = status["observedGeneration"].as_i64() == i.metadata.generation;
                Ok((ready && current).then_some(status))
            }
        })
        .await?;
    Ok(status)
}

/// Every pod of a Deployment, once they all run the current template with `env` set to
/// `value` and the old ones are gone.
async fn rolled(tb: &Testbed, client: &Client, name: &str, env: &str, value: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), PLATFORM);
    let what = format!("{name} rolled to {env}={value}");
    let done = tb.until(client, PLATFORM, &what, WAIT, || {
        let (pods, deployments) = (pods.clone(), deployments.clone());
        async move {
            let d = deployments.get(name).await.map_err(|e| e.to_string())?;
            let want = d.spec.and_then(|s| s.replicas).unwrap_or(1) as usize;
            let list = pods
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={name}")))
                .await
                .map_err(|e| e.to_string())?;
            let with = |p: &Pod| {
                p.spec.as_ref().is_some_and(|s| {
                    s.containers[0]
                        .env
                        .iter()
                        .flatten()
                        .any(|e| e.name == env && e.value.as_deref() == Some(value))
                })
            };
            let new = list
                .items
                .iter()
                .filter(|p| with(p) && mq_testbed::wait::is_ready(p))
                .count();
            let old = list.items.iter().filter(|p| !with(p)).count();
            Ok((new == want && old == 0).then_some(()))
        }
    });
    Ok(done.await?)
}

/// Sends `bodies` to DEMO_ORDERS with the first account's keys (the brokers' ACL picks up
/// the account within seconds; sends are retried, bounded, until it does).
fn produce(namesrv: &str, keys: &(String, String), bodies: Vec<String>) {
    use rocketmq_client_rust::DefaultMQProducer;
    let (namesrv, keys) = (namesrv.to_owned(), keys.clone());
    support::Client::new().run(|rt| async move {
        let mut producer = DefaultMQProducer::builder(rt)
            .client_config(support::client_config(&namesrv, "chart-producer"))
            .producer_group("GID_CHART_PRODUCER")
            .rpc_hook(hook(&keys))
            .build();
        producer.start().await.expect("producer starts");
        for body in bodies {
            let m = support::message("DEMO_ORDERS", &body);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                match producer.send(m.clone()).await {
                    Ok(Some(_)) => break,
                    other => {
                        assert!(
                            tokio::time::Instant::now() < deadline,
                            "send refused for 60 s: {other:?}"
                        );
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
        producer.shutdown().await;
    });
}

/// Consumes with GID_DEMO until every body in `wanted` arrived (bounded); all bodies seen.
fn consume(namesrv: &str, keys: &(String, String), wanted: &[String]) -> Vec<String> {
    use rocketmq_client_rust::{DefaultMQPushConsumer, MQPushConsumer};
    use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
    let (namesrv, keys, wanted) = (namesrv.to_owned(), keys.clone(), wanted.to_vec());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let collected = seen.clone();
    support::Client::new().run(|rt| async move {
        let mut consumer = DefaultMQPushConsumer::builder(rt)
            .client_config(support::client_config(&namesrv, "chart-consumer"))
            .consumer_group("GID_DEMO".to_string())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .rpc_hook(Some(hook(&keys)))
            .build();
        consumer
            .subscribe("DEMO_ORDERS", "*")
            .await
            .expect("subscribe");
        consumer.register_message_listener_concurrently(support::Collect(collected.clone()));
        consumer.start().await.expect("consumer starts");
        support::eventually(
            "the sent messages consumed",
            Duration::from_secs(90),
            || {
                let bodies = collected.lock().map(|c| c.clone()).unwrap_or_default();
                wanted.iter().all(|w| bodies.iter().any(|b| b == w))
            },
        )
        .await;
        consumer.shutdown().await;
    });
    seen.lock().map(|s| s.clone()).unwrap_or_default()
}

fn hook(keys: &(String, String)) -> std::sync::Arc<rocketmq_client_rust::AclClientRPCHook> {
    std::sync::Arc::new(rocketmq_client_rust::AclClientRPCHook::new(
        rocketmq_client_rust::SessionCredentials::with_keys(keys.0.clone(), keys.1.clone()),
    ))
}

/// A signed `/json/instance/list` through Service mq-console; the instances' names.
async fn console_instances(client: &Client, keys: &(String, String)) -> Result<Vec<String>> {
    let url = mq_testbed::console::service_url(client).await?;
    let signed = SignedClient::new(&url, &keys.0, &keys.1)?;
    let (status, envelope) = signed.post("/json/instance/list", &[]).await?;
    ensure!(status == 200 && envelope["success"] == true, "{envelope}");
    Ok(envelope["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["instanceName"].as_str().map(str::to_owned))
        .collect())
}

#[test]
fn the_chart_installs_upgrades_uninstalls_and_reinstalls_keeping_tenants_data() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let tb = rt.block_on(Testbed::shared())?;
    // The client's worker task lives on `rt`.
    let client = {
        let _entered = rt.enter();
        tb.client()
    };
    let kubectl = mq_testbed::install::kubectl_path()?;
    let registry = mq_testbed::registry::Registry::start()?;
    let scratch = std::env::temp_dir().join(format!("mq-chart-pull-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;

    // A value the schema refuses fails the install before anything is made.
    let (ok, out) = run(
        &mq_testbed::install::helm_path()?,
        tb,
        &[
            "install",
            "bad",
            "charts/mqfleet",
            "-n",
            PLATFORM,
            "--create-namespace",
            "--set",
            "operator.replicas=-1",
        ],
    )?;
    ensure!(
        !ok && out.contains("operator.replicas: Must be greater than or equal to 0"),
        "{out}"
    );
    ensure!(helm(tb, &["list", "-n", PLATFORM, "-q"])?.trim().is_empty());

    let notes = readme_real_cluster(tb, &registry.addr, &scratch)?;
    let _ = std::fs::remove_dir_all(&scratch);
    ensure!(notes.contains("kubectl get mqfleet -A"), "NOTES: {notes}");
    rt.block_on(runs_as_image_user(&client))?;
    // The 1.20 server has no policy/v1: the chart asked it and used v1beta1.
    let (ok, out) = run(
        &kubectl,
        tb,
        &[
            "get",
            "pdb.v1beta1.policy",
            "-n",
            PLATFORM,
            "mq-operator",
            "mq-console",
        ],
    )?;
    ensure!(ok, "no disruption budgets: {out}");
    let keys = rt.block_on(first_account(&client))?;
    let (ok, out) = run(&kubectl, tb, &["create", "namespace", TENANT])?;
    ensure!(ok, "{out}");
    let (ok, out) = run(
        &kubectl,
        tb,
        &["apply", "-n", TENANT, "-f", "examples/quickstart/demo.yaml"],
    )?;
    ensure!(ok, "{out}");
    let status = rt.block_on(demo_ready(tb, &client))?;
    let namesrv = status["endpoint"]
        .as_str()
        .context("no endpoint")?
        .to_owned();
    // The brokers and name servers run the real broker image too.
    let (ok, images) = run(
        &kubectl,
        tb,
        &[
            "get",
            "pods",
            "-n",
            PLATFORM,
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ],
    )?;
    ensure!(
        ok && images.contains(&format!("{}/mqfleet/mq-broker:{TAG}", registry.addr)),
        "{images}"
    );

    // A round trip with the real client, signed with the first account's keys.
    let first: Vec<String> = (0..3).map(|i| format!("first-{i}")).collect();
    produce(&namesrv, &keys, first.clone());
    let got = consume(&namesrv, &keys, &first);
    ensure!(first.iter().all(|b| got.contains(b)), "consumed {got:?}");
    ensure!(rt.block_on(console_instances(&client, &keys))? == vec!["demo".to_owned()]);

    // An upgrade with a changed value rolls both; the account's keys stay.
    install(tb, &registry.addr, &["--set", "logFormat=json"])?;
    rt.block_on(rolled(tb, &client, "mq-operator", "MQ_LOG_FORMAT", "json"))?;
    rt.block_on(rolled(tb, &client, "mq-console", "MQ_LOG_FORMAT", "json"))?;
    ensure!(
        rt.block_on(first_account(&client))? == keys,
        "the upgrade changed the keys"
    );

    // Uninstall: the platform goes; CRDs, the instance, its brokers and the keys stay.
    let kept: Vec<String> = (0..3).map(|i| format!("kept-{i}")).collect();
    produce(&namesrv, &keys, kept.clone());
    helm(
        tb,
        &[
            "uninstall",
            RELEASE,
            "-n",
            PLATFORM,
            "--wait",
            "--timeout",
            "120s",
        ],
    )?;
    rt.block_on(async {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), PLATFORM);
        ensure!(deployments.get_opt("mq-operator").await?.is_none());
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        ensure!(
            crds.get_opt("mqinstances.mqfleet.io").await?.is_some(),
            "CRD removed"
        );
        let instances: Api<MQInstance> = Api::namespaced(client.clone(), TENANT);
        ensure!(
            instances.get_opt("demo").await?.is_some(),
            "instance removed"
        );
        Ok(())
    })?;
    ensure!(rt.block_on(first_account(&client))? == keys);

    // Installed again: the same keys, the instance Ready, the messages still there.
    install(tb, &registry.addr, &[])?;
    ensure!(
        rt.block_on(first_account(&client))? == keys,
        "reinstall changed the keys"
    );
    rt.block_on(demo_ready(tb, &client))?;
    let got = consume(&namesrv, &keys, &kept);
    ensure!(
        kept.iter().all(|b| got.contains(b)),
        "after reinstall consumed {got:?}"
    );
    ensure!(
        !got.iter().any(|b| first.contains(b)),
        "redelivered consumed ones: {got:?}"
    );
    Ok(())
}

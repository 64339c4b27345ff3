//! The operator on a testbed, for the end-to-end suites and `mq-operator-bench`:
//! installing it from `deploy/`, finding the replica that leads, reading its metrics, and
//! the manifests the suites create.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use mq_operator::domain::profiles::{DEFAULT_CONFIGMAP, PROFILES_KEY};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::controlplane::Testbed;
use crate::error::Result;

/// The operator's platform namespace (as `deploy/` installs it).
pub const PLATFORM: &str = "mqfleet-system";
/// Replicas `deploy/` runs.
pub const REPLICAS: usize = 2;
/// The operator's ops port in `deploy/`.
pub const OPS_PORT: u16 = 8080;
/// Bound on the operator's pods becoming Ready.
const READY: Duration = Duration::from_secs(60);

/// Applies the CRDs and `deploy/`, optionally with a shorter resync period (so drift
/// correction shows within a test), and waits until every replica runs that template.
pub async fn install(tb: &Testbed, client: &Client, resync_secs: Option<u64>) -> Result<()> {
    let workspace = crate::paths::workspace_dir();
    crate::apply_crds(client, &workspace.join("crds")).await?;
    crate::apply_manifests(client, &workspace.join("deploy")).await?;
    if let Some(secs) = resync_secs {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "operator", "env": [{"name": "MQ_RESYNC_SECS", "value": secs.to_string()}]}
        ]}}}});
        Api::<Deployment>::namespaced(client.clone(), PLATFORM)
            .patch(
                "mq-operator",
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    // deploy/ already sets MQ_RESYNC_SECS: wait for pods with the patched value.
    let wanted_env = resync_secs.map(|secs| ("MQ_RESYNC_SECS", secs.to_string()));
    tb.until(
        client,
        PLATFORM,
        "the operator's replicas running",
        READY,
        || {
            let pods = pods.clone();
            let wanted_env = wanted_env.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app.kubernetes.io/name=mq-operator"))
                    .await
                    .map_err(|e| e.to_string())?;
                let running = list
                    .items
                    .iter()
                    .filter(|p| crate::wait::is_ready(p) && p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        wanted_env
                            .as_ref()
                            .is_none_or(|(name, value)| has_env(p, name, value))
                    })
                    .count();
                if running == REPLICAS {
                    Ok(Some(()))
                } else {
                    Err(format!("{running} of {REPLICAS} operator replicas running"))
                }
            }
        },
    )
    .await
}

fn has_env(pod: &Pod, name: &str, value: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first()?.env.as_ref())
        .is_some_and(|env| {
            env.iter()
                .any(|e| e.name == name && e.value.as_deref() == Some(value))
        })
}

/// The pod holding the operator's Lease.
pub async fn leader(client: &Client) -> std::result::Result<Pod, String> {
    let lease = Api::<Lease>::namespaced(client.clone(), PLATFORM)
        .get("mq-operator")
        .await
        .map_err(|e| e.to_string())?;
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        .ok_or("the lease has no holder")?;
    Api::<Pod>::namespaced(client.clone(), PLATFORM)
        .get(&holder)
        .await
        .map_err(|e| format!("lease holder {holder}: {e}"))
}

/// A sample (`name` with its labels, e.g. `x{kind="MQTopic"}`) from an operator pod's
/// `/metrics`.
pub async fn metric(pod: &Pod, name: &str) -> std::result::Result<f64, String> {
    let (_, text) = ops_get(pod, "/metrics").await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("{name} is not in /metrics"))
}

/// `GET path` on an operator pod's ops port (its pod IP, as the kubelet's probes do):
/// the status code and the body. Needs no API server.
pub async fn ops_get(pod: &Pod, path: &str) -> std::result::Result<(u16, String), String> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or("the pod has no IP")?;
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect((ip.as_str(), OPS_PORT)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        std::io::Result::Ok(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| format!("GET {path} timed out"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP response: {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// The operator's pods that are not being deleted.
pub async fn operator_pods(client: &Client) -> std::result::Result<Vec<Pod>, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    Ok(pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=mq-operator"))
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

/// Waits until `count` `MQTopic`s of namespace `ns` are Ready (for their generation).
pub async fn topics_ready(
    tb: &Testbed,
    client: &Client,
    ns: &str,
    count: usize,
    timeout: Duration,
) -> Result<()> {
    let topics: Api<mq_operator::crd::MQTopic> = Api::namespaced(client.clone(), ns);
    let what = format!("{count} MQTopics Ready");
    tb.until(client, ns, &what, timeout, || {
        let topics = topics.clone();
        async move {
            let list = topics
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready = list
                .items
                .iter()
                .filter(|t| mq_operator::crd::is_ready(t.metadata.generation, t.status.as_ref()))
                .count();
            if ready == count {
                Ok(Some(()))
            } else {
                Err(format!("{ready} of {count} Ready"))
            }
        }
    })
    .await
}

/// Waits until `MQInstance` `name` of `ns` is Running and Ready for its generation, with
/// exactly `brokers` ready brokers when given; returns it.
pub async fn instance_running(
    tb: &Testbed,
    client: &Client,
    ns: &str,
    name: &str,
    brokers: Option<i32>,
    timeout: Duration,
) -> Result<mq_operator::crd::MQInstance> {
    use mq_operator::crd::{MQInstance, Phase, is_ready};
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), ns);
    let what = match brokers {
        Some(n) => format!("MQInstance {ns}/{name} Running and Ready with {n} ready broker(s)"),
        None => format!("MQInstance {ns}/{name} Running and Ready"),
    };
    // The operator's log is what explains a wait that times out, so the dump is PLATFORM's.
    tb.until(client, PLATFORM, &what, timeout, || {
        let instances = instances.clone();
        async move {
            let i = instances.get(name).await.map_err(|e| e.to_string())?;
            let s = i.status.clone().unwrap_or_default();
            let ok = s.phase == Some(Phase::Running)
                && brokers.is_none_or(|n| s.ready_brokers == n)
                && is_ready(i.metadata.generation, i.status.as_ref());
            if ok {
                Ok(Some(i))
            } else {
                Err(format!("status {:?}", i.status))
            }
        }
    })
    .await
}

/// The profiles ConfigMap's `profiles.yaml`, parsed.
pub async fn profiles(client: &Client) -> Result<serde_yaml::Value> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), PLATFORM)
        .get(DEFAULT_CONFIGMAP)
        .await?;
    let text = cm
        .data
        .and_then(|d| d.get(PROFILES_KEY).cloned())
        .ok_or_else(|| crate::Error::Missing(profiles_place().display().to_string()))?;
    serde_yaml::from_str(&text).map_err(|source| crate::Error::Yaml {
        path: profiles_place(),
        source,
    })
}

/// Replaces the profiles ConfigMap's `profiles.yaml` with `value`.
pub async fn set_profiles(client: &Client, value: &serde_yaml::Value) -> Result<()> {
    let text = serde_yaml::to_string(value).map_err(|source| crate::Error::Yaml {
        path: profiles_place(),
        source,
    })?;
    let patch = json!({"data": {PROFILES_KEY: text}});
    Api::<ConfigMap>::namespaced(client.clone(), PLATFORM)
        .patch(
            DEFAULT_CONFIGMAP,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Where the profiles live, for errors: `configmap <ns>/<name> <key>`.
fn profiles_place() -> std::path::PathBuf {
    format!("configmap {PLATFORM}/{DEFAULT_CONFIGMAP} {PROFILES_KEY}").into()
}

/// Waits until the admission webhook answers for namespace `ns`: a dry-run copy of the
/// existing `MQTopic` `existing` (same topic name) is refused. Until the operator has
/// written its CA into the configuration, the API server skips the webhook
/// (`failurePolicy: Ignore`), so suites that assert refusals wait here first.
pub async fn webhook_in_force(
    tb: &Testbed,
    client: &Client,
    ns: &str,
    existing: &str,
) -> Result<()> {
    webhook_state(tb, client, ns, existing, true).await
}

/// Waits until the webhook no longer answers for `ns` (its configuration was deleted).
pub async fn webhook_off(tb: &Testbed, client: &Client, ns: &str, existing: &str) -> Result<()> {
    webhook_state(tb, client, ns, existing, false).await
}

async fn webhook_state(
    tb: &Testbed,
    client: &Client,
    ns: &str,
    existing: &str,
    wanted: bool,
) -> Result<()> {
    use mq_operator::crd::MQTopic;
    let topics: Api<MQTopic> = Api::namespaced(client.clone(), ns);
    let what = format!(
        "the admission webhook {}",
        if wanted { "in force" } else { "off" }
    );
    tb.until(client, ns, &what, READY, || {
        let topics = topics.clone();
        async move {
            let mut copy = topics.get(existing).await.map_err(|e| e.to_string())?;
            copy.metadata = kube::api::ObjectMeta {
                name: Some(format!("{existing}-webhook-probe")),
                ..Default::default()
            };
            copy.status = None;
            let dry_run = kube::api::PostParams {
                dry_run: true,
                ..Default::default()
            };
            let refused = match topics.create(&dry_run, &copy).await {
                Ok(_) => false,
                Err(kube::Error::Api(e)) if e.message.contains("denied the request") => true,
                Err(e) => return Err(e.to_string()),
            };
            if refused == wanted {
                Ok(Some(()))
            } else {
                Err(format!(
                    "a duplicate topic was {}",
                    if refused { "refused" } else { "accepted" }
                ))
            }
        }
    })
    .await
}

/// An `MQInstance` manifest with `brokers` brokers, one name server, 1 GiB stores that go
/// with the instance.
pub fn instance(name: &str, brokers: i32) -> Value {
    json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
        "metadata": {"name": name},
        "spec": {"instanceName": name, "cluster": "default",
                 "brokers": {"replicas": brokers, "storage": {"size": "1Gi", "retainOnDelete": false}},
                 "nameServers": {"replicas": 1}},
    })
}

/// An `MQTopic` manifest (normal messages).
pub fn topic(name: &str, instance: &str, topic: &str) -> Value {
    json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQTopic",
        "metadata": {"name": name},
        "spec": {"instance": instance, "topic": topic, "orderType": 0},
    })
}

/// An `MQGroup` manifest.
pub fn group(name: &str, instance: &str, group_id: &str) -> Value {
    json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQGroup",
        "metadata": {"name": name},
        "spec": {"instance": instance, "groupId": group_id},
    })
}

/// The admin key of instance `instance_id` (Secret `<base>-admin` the operator makes in the
/// platform namespace): what admin calls to its brokers and name servers must be signed
/// with.
pub async fn instance_admin_key(
    client: &Client,
    instance_id: &str,
) -> Result<mq_broker::acl::Credentials> {
    let names = mq_operator::controller::workloads::Names::for_id(instance_id.to_owned());
    key_in_secret(client, &names.admin()).await
}

/// The console key of instance `instance_id`, from the Secret `<base>-console` the
/// operator writes for the console.
pub async fn instance_console_key(
    client: &Client,
    instance_id: &str,
) -> Result<mq_broker::acl::Credentials> {
    let names = mq_operator::controller::workloads::Names::for_id(instance_id.to_owned());
    key_in_secret(client, &names.console()).await
}

/// The `accessKey`/`secretKey` of Secret `name` in the platform namespace.
async fn key_in_secret(client: &Client, name: &str) -> Result<mq_broker::acl::Credentials> {
    use k8s_openapi::api::core::v1::Secret;
    let secret = Api::<Secret>::namespaced(client.clone(), PLATFORM)
        .get(name)
        .await?;
    let data = secret.data.unwrap_or_default();
    let text = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .unwrap_or_default()
    };
    Ok(mq_broker::acl::Credentials::new(
        text("accessKey"),
        text("secretKey"),
    ))
}

/// The pod `<component>-<ordinal>` (`broker` or `namesrv`) of instance `instance_id` that
/// is not being deleted, and its IP.
pub async fn server_pod(
    client: &Client,
    instance_id: &str,
    component: &str,
    ordinal: usize,
) -> std::result::Result<(Pod, String), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    let selector = format!("mqfleet.io/instance-id={instance_id},mqfleet.io/component={component}");
    let suffix = format!("-{component}-{ordinal}");
    let pod = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.ends_with(&suffix))
        })
        .ok_or_else(|| format!("no pod {suffix} of {instance_id}"))?;
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| format!("pod {suffix} of {instance_id} has no IP"))?;
    Ok((pod, ip))
}

/// The Events with reason `reason` the operator recorded on `kind`/`name` of namespace
/// `ns`: each one's note and how often it was recorded (the operator's Recorder writes
/// events.k8s.io/v1 Events and counts repeats of the same note in their series).
pub async fn events(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    reason: &str,
) -> std::result::Result<Vec<(i32, String)>, String> {
    use k8s_openapi::api::events::v1::Event;
    let list = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
        })
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            (count, e.note.unwrap_or_default())
        })
        .collect())
}

/// Creates the object `value` describes in namespace `ns` (the API server's refusal, e.g.
/// the webhook's or the schema's, is the error).
pub async fn create<K>(client: &Client, ns: &str, value: Value) -> kube::Result<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).map_err(kube::Error::SerdeError)?;
    Api::<K>::namespaced(client.clone(), ns)
        .create(&kube::api::PostParams::default(), &obj)
        .await
}

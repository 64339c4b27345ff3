//! End-to-end: a broker whose volume fills up (issue 14, item 5), as the tenant lives
//! it. The testbed's StorageClass `sized` gives volumes of exactly their claim's size (a
//! tmpfs in the node agent's mount namespace), so the disk is really full: an instance on
//! a small profile of that class takes messages from a real third-party client
//! (`rocketmq-client-rust`); then another writer fills the broker's volume past 90 %.
//! With nobody sending, the instance shows `DiskFull=True` naming the pod and what to do,
//! and `Ready=False`, in what `kubectl get` prints; the client's send is refused. Once the writer's file is gone, the
//! instance recovers by itself: `DiskFull=False`, Ready again, sends are taken, and every
//! message acknowledged before is consumed.
//!
//! Also the class itself: a claim of it refuses writes beyond its size, nothing of it
//! shows on the host, and deleting the claim unmounts and removes the volume.

mod support;

use std::collections::HashSet;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use mq_operator::controller::store_health::DISK_FULL;
use mq_operator::crd::{FORCE_DELETE_ANNOTATION, MQGroup, MQInstance, MQTopic, is_ready};
use mq_testbed::Testbed;
use mq_testbed::operator::{
    PLATFORM, create, instance_running, profiles, server_pod, set_profiles,
};
use rocketmq_client_rust::{DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use serde_json::json;

/// Bound on each wait.
const WAIT: Duration = Duration::from_secs(90);
const NS: &str = "disk-full";
const NAME: &str = "full";
const TOPIC: &str = "DISK";
const GROUP: &str = "GID_DISK";
/// The profile of this test: one broker on a 12 MiB sized volume, 4 MiB segments (the
/// webhook asks for two segments at least).
const PROFILE: &str = "small-disk";
const VOLUME_BYTES: u64 = 12 << 20;
/// Where the broker container has its store.
const STORE: &str = "store";

/// (total, used) bytes of the file system holding `path`.
fn disk_usage(path: &Path) -> Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a zeroed plain struct and a valid C string, both alive for the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("statvfs {}", path.display()));
    }
    let total = s.f_blocks * s.f_frsize;
    Ok((total, total - s.f_bfree * s.f_frsize))
}

/// `path` as the process `pid` sees it (root may look into its mount namespace).
fn seen_by(pid: u32, path: &str) -> PathBuf {
    Path::new("/proc")
        .join(pid.to_string())
        .join("root")
        .join(path.trim_start_matches('/'))
}

fn manifest() -> serde_json::Value {
    json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
        "metadata": {"name": NAME},
        "spec": {"instanceName": NAME, "cluster": PROFILE,
                 "brokers": {"replicas": 1, "storage": {"retainOnDelete": false}},
                 "nameServers": {"replicas": 1}},
    })
}

/// The instance's conditions: type → (status, reason, message).
async fn conditions(
    api: &Api<MQInstance>,
) -> std::result::Result<std::collections::BTreeMap<String, (String, String, String)>, String> {
    let i = api.get(NAME).await.map_err(|e| e.to_string())?;
    Ok(i.status
        .map(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, (c.status, c.reason, c.message)))
        .collect())
}

/// Waits until the instance is Running and Ready with its broker; returns it.
async fn running(tb: &Testbed, client: &Client) -> Result<MQInstance> {
    Ok(instance_running(tb, client, NS, NAME, Some(1), WAIT).await?)
}

/// What a person sees with `kubectl get mqi <name> -o jsonpath=...`: one line per
/// condition, `type=status reason: message`.
fn kubectl_conditions(tb: &Testbed) -> Result<String> {
    let kubectl = mq_testbed::install::kubectl_path()?;
    let template =
        r#"{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}"#;
    let out = std::process::Command::new(kubectl)
        .arg(format!("--kubeconfig={}", tb.kubeconfig_path().display()))
        .args(["-n", NS, "get", "mqi", NAME, "-o"])
        .arg(format!("jsonpath={template}"))
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn message(body: &str) -> rocketmq_model::common::message::message_single::Message {
    support::message(TOPIC, body)
}

#[test]
fn a_full_broker_volume_shows_as_disk_full_and_recovers_when_space_returns() -> Result<()> {
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new()?;
    let (endpoint, id) = runtime.block_on(setup())?;
    println!("instance running after {:?}", started.elapsed());
    let namespace = id.clone();
    let config = move |name: &str| rocketmq_client_rust::ClientConfig {
        namespace: Some(namespace.clone().into()),
        ..support::client_config(&endpoint, name)
    };
    let outcome: Result<()> = support::Client::new().run(|rt| async move {
        let tb = Testbed::shared().await?;
        let client = tb.client();
        let instances: Api<MQInstance> = Api::namespaced(client.clone(), NS);
        let mut producer = DefaultMQProducer::builder(rt.clone())
            .client_config(config("disk-producer"))
            .producer_group("GID_DISK_PRODUCER")
            .build();
        producer.start().await.context("producer starts")?;
        let mut acked = Vec::new();
        for n in 0..10 {
            let body = format!("before-{n}");
            producer
                .send(message(&body))
                .await
                .with_context(|| format!("sending {body} with room"))?;
            acked.push(body);
        }

        // The broker's volume is the sized class's: exactly the profile's 12 MiB.
        let (pod, _) = server_pod(&client, &id, "broker", 0)
            .await
            .map_err(anyhow::Error::msg)?;
        let pod_name = pod.name_any();
        let broker = mq_testbed::wait::container_process(&pod, "broker")
            .context("the broker has no running process")?;
        let store = seen_by(broker.pid, STORE);
        let (total, used) = disk_usage(&store)?;
        ensure!(
            total == VOLUME_BYTES,
            "the broker's volume has {total} bytes, not the claim's {VOLUME_BYTES}"
        );

        // Someone else fills it to 92.5 %: over the 90 % limit (and less than the reserve
        // free), below the 95 % at which retention would delete segments for space.
        let ballast = store.join("ballast");
        let fill = (total * 925 / 1000).saturating_sub(used) & !4095;
        let mut file = std::fs::File::create(&ballast)
            .with_context(|| format!("creating {}", ballast.display()))?;
        file.write_all(&vec![0xa5; fill as usize])
            .context("writing the ballast")?;
        file.sync_all()?;
        drop(file);
        println!(
            "volume {total} bytes, {used} used, ballast {fill} after {:?}",
            started.elapsed()
        );

        // Nobody sends, yet the instance says which pod and what to do, and is not Ready.
        let full = tb
            .until(
                &client,
                PLATFORM,
                "DiskFull=True naming the pod, Ready=False",
                WAIT,
                || {
                    let (instances, pod_name) = (instances.clone(), pod_name.clone());
                    async move {
                        let c = conditions(&instances).await?;
                        let disk = c.get(DISK_FULL);
                        let ready = c.get("Ready");
                        match (disk, ready) {
                            (Some((s, _, m)), Some((r, reason, _)))
                                if s == "True"
                                    && m.contains(&pod_name)
                                    && r == "False"
                                    && reason == DISK_FULL =>
                            {
                                Ok(Some(m.clone()))
                            }
                            _ => Err(format!("conditions {c:?}")),
                        }
                    }
                },
            )
            .await?;
        println!("disk full after {:?}: {full}", started.elapsed());
        // The client's send is refused.
        match producer.send(message("refused")).await {
            Ok(sent) => bail!("a send was taken on a full disk: {sent:?}"),
            Err(e) => println!("refused: {e}"),
        }
        let shown = kubectl_conditions(tb)?;
        println!("kubectl shows:\n{shown}");
        let line = shown
            .lines()
            .find(|l| l.starts_with(&format!("{DISK_FULL}=True")))
            .with_context(|| format!("no DiskFull=True in {shown}"))?;
        for wanted in [
            pod_name.as_str(),
            "refuses sends",
            "% of the volume",
            "free space on the volume or give the instance bigger volumes",
        ] {
            ensure!(line.contains(wanted), "{wanted:?} not in {line}");
        }
        ensure!(
            line.matches("free space").count() == 1,
            "the advice is given more than once: {line}"
        );
        ensure!(
            shown.lines().any(|l| l.starts_with("Ready=False DiskFull")),
            "{shown}"
        );

        // The other writer's file goes: the instance recovers by itself, with no send.
        std::fs::remove_file(&ballast).context("removing the ballast")?;
        tb.until(
            &client,
            PLATFORM,
            "DiskFull=False once space returned",
            WAIT,
            || {
                let instances = instances.clone();
                async move {
                    let c = conditions(&instances).await?;
                    match c.get(DISK_FULL) {
                        Some((s, r, _)) if s == "False" && r == "SpaceAvailable" => Ok(Some(())),
                        _ => Err(format!("conditions {c:?}")),
                    }
                }
            },
        )
        .await?;
        running(tb, &client).await?;
        println!("recovered after {:?}", started.elapsed());

        // Sends are taken again (the client may have set the broker aside for a moment).
        for n in 0..5 {
            let body = format!("after-{n}");
            let deadline = Instant::now() + WAIT;
            loop {
                match producer.send(message(&body)).await {
                    Ok(_) => break,
                    Err(e) => ensure!(Instant::now() < deadline, "{body} refused: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            acked.push(body);
        }
        producer.shutdown().await;
        println!("sends taken again after {:?}", started.elapsed());

        // Everything acknowledged is consumed.
        let received = Arc::new(Mutex::new(HashSet::new()));
        let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
            .client_config(config("disk-consumer"))
            .consumer_group(GROUP.to_string())
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .build();
        consumer.register_message_listener_concurrently(support::Collect(received.clone()));
        consumer.subscribe(TOPIC, "*").await.context("subscribe")?;
        consumer.start().await.context("consumer starts")?;
        let deadline = Instant::now() + WAIT;
        let missing = loop {
            let missing: Vec<&String> = {
                let got = received.lock().unwrap_or_else(|e| e.into_inner());
                acked.iter().filter(|b| !got.contains(*b)).collect()
            };
            if missing.is_empty() || Instant::now() >= deadline {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        consumer.shutdown().await;
        ensure!(
            missing.is_empty(),
            "acknowledged but never consumed: {missing:?}"
        );
        println!(
            "{} acknowledged messages consumed after {:?}",
            acked.len(),
            started.elapsed()
        );
        Ok(())
    });
    let cleaned = runtime.block_on(cleanup());
    outcome?;
    cleaned
}

/// The profile, the instance with its topic and group; waits until they serve. Returns
/// (endpoint, instance id).
async fn setup() -> Result<(String, String)> {
    let tb = Testbed::shared().await?;
    let client = tb.client();
    mq_testbed::operator::install(tb, &client, None).await?;
    tb.create_namespace(&client, NS).await?;
    let mut all = profiles(&client).await?;
    let mut small = all["default"].clone();
    small["brokers"]["replicas"] = 1.into();
    small["brokers"]["storage"] = serde_yaml::from_str(&format!(
        "{{size: {}Mi, segmentSize: 4Mi, storageClassName: {}}}",
        VOLUME_BYTES >> 20,
        mq_testbed::node::provisioner::SIZED_CLASS
    ))?;
    small["nameServers"]["replicas"] = 1.into();
    all[PROFILE] = small;
    set_profiles(&client, &all).await?;
    let api: Api<MQInstance> = Api::namespaced(client.clone(), NS);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let instance: MQInstance = serde_json::from_value(manifest())?;
    // Wait until the webhook knows the new profile.
    tb.until(&client, NS, "the webhook knowing the profile", WAIT, || {
        let (api, dry_run, instance) = (api.clone(), dry_run.clone(), instance.clone());
        async move {
            api.create(&dry_run, &instance)
                .await
                .map(|_| Some(()))
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    create::<MQInstance>(&client, NS, manifest()).await?;
    create::<MQTopic>(
        &client,
        NS,
        mq_testbed::operator::topic("disk", NAME, TOPIC),
    )
    .await?;
    create::<MQGroup>(
        &client,
        NS,
        mq_testbed::operator::group("gid-disk", NAME, GROUP),
    )
    .await?;
    let instance = running(tb, &client).await?;
    mq_testbed::operator::topics_ready(tb, &client, NS, 1, WAIT).await?;
    let groups: Api<MQGroup> = Api::namespaced(client.clone(), NS);
    tb.until(&client, NS, "the group Ready", WAIT, || {
        let groups = groups.clone();
        async move {
            let g = groups.get("gid-disk").await.map_err(|e| e.to_string())?;
            Ok(is_ready(g.metadata.generation, g.status.as_ref()).then_some(()))
        }
    })
    .await?;
    let status = instance.status.context("no status")?;
    Ok((
        status.endpoint.context("no endpoint")?,
        status.instance_id.context("no instance id")?,
    ))
}

/// Deletes the instance (with its topic and group: force) and withdraws the profile.
async fn cleanup() -> Result<()> {
    let tb = Testbed::shared().await?;
    let client = tb.client();
    let api: Api<MQInstance> = Api::namespaced(client.clone(), NS);
    if api.get_opt(NAME).await?.is_some() {
        let force = json!({"metadata": {"annotations": {FORCE_DELETE_ANNOTATION: "true"}}});
        api.patch(NAME, &PatchParams::default(), &Patch::Merge(force))
            .await?;
        api.delete(NAME, &DeleteParams::default()).await?;
    }
    let mut all = profiles(&client).await?;
    if let Some(map) = all.as_mapping_mut() {
        map.remove(PROFILE);
    }
    Ok(set_profiles(&client, &all).await?)
}

#[test]
fn a_sized_volume_holds_its_size_and_goes_with_its_claim() -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(sized_volume())
}

async fn sized_volume() -> Result<()> {
    const SIZE: u64 = 1 << 20;
    let ns = "sized-volume";
    let tb = Testbed::shared().await?;
    let client = tb.client();
    tb.create_namespace(&client, ns).await?;
    create::<PersistentVolumeClaim>(
        &client,
        ns,
        json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "scratch"},
            "spec": {"storageClassName": mq_testbed::node::provisioner::SIZED_CLASS,
                     "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Mi"}}},
        }),
    )
    .await?;
    create::<Pod>(
        &client,
        ns,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "writer"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "app", "image": "mqfleet/mq-testpod:dev",
                    "args": ["--listen=$(POD_IP):8080"],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "scratch"}}],
            },
        }),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let process = tb
        .until(&client, ns, "the writer running", WAIT, || {
            let pods = pods.clone();
            async move {
                let pod = pods.get("writer").await.map_err(|e| e.to_string())?;
                Ok(mq_testbed::wait::container_process(&pod, "app"))
            }
        })
        .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let volume = claims
        .get("scratch")
        .await?
        .spec
        .and_then(|s| s.volume_name)
        .context("the claim is not bound")?;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let host_dir = volumes
        .get(&volume)
        .await?
        .spec
        .and_then(|s| s.host_path)
        .map(|h| PathBuf::from(h.path))
        .context("not a hostPath volume")?;

    // Exactly the claim's size, as the container sees it; a write beyond it fails.
    let data = seen_by(process.pid, "/data");
    let (total, _) = disk_usage(&data)?;
    ensure!(total == SIZE, "{total} bytes instead of {SIZE}");
    let mut file = std::fs::File::create(data.join("fill"))?;
    match file.write_all(&vec![1u8; 2 * SIZE as usize]) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {}
        other => bail!("2 MiB into a 1 MiB volume: {other:?}"),
    }
    drop(file);
    let written = std::fs::metadata(data.join("fill"))?.len();
    ensure!(written <= SIZE, "{written} bytes in a {SIZE}-byte volume");
    // The host sees the directory the volume is mounted on, never what is in it.
    ensure!(host_dir.is_dir(), "{} missing", host_dir.display());
    ensure!(
        !host_dir.join("fill").exists(),
        "the volume's content leaked to the host"
    );
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dir_text = host_dir.to_string_lossy().into_owned();
    ensure!(
        !host_mounts.contains(&dir_text),
        "a mount on the host: {dir_text}"
    );
    // The agent has it mounted in its own namespace.
    let agent = tb
        .state()
        .components
        .into_iter()
        .find(|c| c.name == mq_testbed::controlplane::NODE)
        .context("no node agent")?
        .proc;
    let agent_mounts = || std::fs::read_to_string(format!("/proc/{}/mountinfo", agent.pid));
    ensure!(
        agent_mounts()?.contains(&dir_text),
        "the agent has no mount at {dir_text}"
    );

    // The claim goes (after its Pod): the tmpfs is unmounted and the directory removed.
    pods.delete("writer", &DeleteParams::default()).await?;
    claims.delete("scratch", &DeleteParams::default()).await?;
    tb.until(&client, ns, "the volume reclaimed", WAIT, || {
        let volumes = volumes.clone();
        let volume = volume.clone();
        async move {
            let left = volumes.get_opt(&volume).await.map_err(|e| e.to_string())?;
            Ok(left.is_none().then_some(()))
        }
    })
    .await?;
    ensure!(
        !agent_mounts()?.contains(&dir_text),
        "the agent still has a mount at {dir_text}"
    );
    ensure!(!host_dir.exists(), "{} is still there", host_dir.display());
    Ok(())
}

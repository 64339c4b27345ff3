//! End-to-end: a broker whose store is damaged (issue 14, items 3 and 5), as the tenant
//! lives it. A broker's commit log rots below what it had fsynced (bytes flipped in its
//! first segment, on the PersistentVolume's host directory, while the broker is frozen,
//! then the broker is killed): the broker refuses to start and says why in its
//! termination message; the instance shows `StoreDamaged` naming the pod, the segment
//! and the offset, and is not Ready. An annotation naming a pod that reports no damage
//! is ignored with a Warning. `mqfleet.io/recover-truncate=<pod>` makes that one broker
//! start, cutting its log at the reported offset: `StoreDamaged=False, reason=Recovered`
//! says what was cut, the annotation is gone, the instance is Ready again, and the
//! messages stored before the cut are still consumed.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use mq_broker::client::AdminClient;
use mq_broker::store::checkpoint::CheckpointFile;
use mq_broker::store::io::RealFs;
use mq_operator::controller::store_health::{RECOVER_TRUNCATE_ANNOTATION, STORE_DAMAGED};
use mq_operator::controller::workloads::Names;
use mq_operator::crd::{MQGroup, MQInstance, MQTopic, is_ready};
use mq_testbed::Testbed;
use mq_testbed::operator::{
    PLATFORM, create, events, instance_admin_key, instance_running, server_pod,
};
use serde_json::json;

/// Bound on an instance becoming Running, and on the other waits.
const WAIT: Duration = Duration::from_secs(120);
const NS: &str = "store-rot";
const NAME: &str = "rot";

fn annotate(value: Option<&str>) -> Patch<serde_json::Value> {
    Patch::Merge(json!({"metadata": {"annotations": {RECOVER_TRUNCATE_ANNOTATION: value}}}))
}

/// Waits until the instance is Running and Ready with its broker; its id.
async fn running(tb: &Testbed, client: &Client) -> Result<String> {
    instance_running(tb, client, NS, NAME, Some(1), WAIT)
        .await?
        .status
        .and_then(|s| s.instance_id)
        .context("no instance id")
}

/// The instance's condition `type_`: (status, reason, message).
async fn condition_of(
    api: &Api<MQInstance>,
    type_: &str,
) -> std::result::Result<Option<(String, String, String)>, String> {
    let i = api.get(NAME).await.map_err(|e| e.to_string())?;
    Ok(i.status.and_then(|s| {
        s.conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status, c.reason, c.message))
    }))
}

/// The host directory of the broker's store volume (the testbed's hostPath PV).
async fn store_dir(client: &Client, names: &Names) -> Result<PathBuf> {
    let claim = format!("store-{}-0", names.broker());
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), PLATFORM)
        .get(&claim)
        .await?;
    let volume = pvc
        .spec
        .and_then(|s| s.volume_name)
        .context("the claim is not bound")?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await?;
    let path = pv
        .spec
        .and_then(|s| s.host_path)
        .map(|h| h.path)
        .context("not a hostPath volume")?;
    Ok(PathBuf::from(path))
}

#[test]
fn a_damaged_broker_store_is_reported_and_cut_only_when_the_tenant_asks() -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(damaged_store())
}

async fn damaged_store() -> Result<()> {
    let tb = Testbed::shared().await?;
    let client = tb.client();
    mq_testbed::operator::install(tb, &client, None).await?;
    tb.create_namespace(&client, NS).await?;
    create::<MQInstance>(&client, NS, mq_testbed::operator::instance(NAME, 1)).await?;
    create::<MQTopic>(&client, NS, mq_testbed::operator::topic("rot", NAME, "ROT")).await?;
    create::<MQGroup>(
        &client,
        NS,
        mq_testbed::operator::group("gid-rot", NAME, "GID_ROT"),
    )
    .await?;
    let id = running(tb, &client).await?;
    mq_testbed::operator::topics_ready(tb, &client, NS, 1, WAIT).await?;
    let groups: Api<MQGroup> = Api::namespaced(client.clone(), NS);
    tb.until(&client, NS, "MQGroup gid-rot Ready", WAIT, || {
        let groups = groups.clone();
        async move {
            let g = groups.get("gid-rot").await.map_err(|e| e.to_string())?;
            Ok(is_ready(g.metadata.generation, g.status.as_ref()).then_some(()))
        }
    })
    .await?;
    let names = Names::for_id(id.clone());
    let (topic, group) = (format!("{id}%ROT"), format!("{id}%GID_ROT"));
    let key = instance_admin_key(&client, &id).await?;
    let admin = |ip: String| {
        let key = key.clone();
        async move {
            AdminClient::connect(&format!("{ip}:10911"), Duration::from_secs(5))
                .await
                .map(|c| c.with_credentials(key))
                .map_err(|e| e.to_string())
        }
    };

    // Six messages; the fourth will rot.
    let (pod, ip) = server_pod(&client, &id, "broker", 0)
        .await
        .map_err(anyhow::Error::msg)?;
    let broker = admin(ip).await.map_err(anyhow::Error::msg)?;
    let mut offsets = Vec::new();
    for n in 0..6 {
        let sent = broker
            .send_message("PID_ROT", &topic, 0, "t", format!("m{n}").into_bytes())
            .await
            .with_context(|| format!("sending m{n}"))?;
        let id = &sent.msg_id;
        offsets.push(u64::from_str_radix(&id[id.len() - 16..], 16).context("offset id")?);
    }
    let (victim, last) = (offsets[3], offsets[5]);

    // The broker's checkpoint records the log fsynced past the victim (async flush).
    let dir = store_dir(&client, &names).await?;
    let checkpoint = dir.join("checkpoint");
    tb.until(
        &client,
        PLATFORM,
        "the checkpoint past the last message",
        WAIT,
        || {
            let checkpoint = checkpoint.clone();
            async move {
                let (_, saved) =
                    CheckpointFile::open(&RealFs, &checkpoint).map_err(|e| e.to_string())?;
                let flushed = saved.map_or(0, |cp| cp.phys_flushed);
                if flushed > last {
                    Ok(Some(()))
                } else {
                    Err(format!("flushed up to {flushed}"))
                }
            }
        },
    )
    .await?;

    // Frozen, its log rots below what it fsynced; then it dies without a clean stop.
    let process = mq_testbed::wait::container_process(&pod, "broker")
        .context("the broker has no running process")?;
    let frozen = mq_testbed::process::Frozen::new(process).context("freezing the broker")?;
    let segment = dir.join("commitlog").join(format!("{:020}", 0));
    {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment)
            .with_context(|| format!("opening {}", segment.display()))?;
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, victim + 4)?;
        file.write_all_at(&[b[0] ^ 0xff], victim + 4)?;
    }
    ensure!(
        process.signal(libc::SIGKILL),
        "the broker could not be killed"
    );
    drop(frozen);

    // The instance says which pod, where, and what to do; it is not Ready.
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), NS);
    let pod_name = pod.name_any();
    let damaged = tb
        .until(
            &client,
            PLATFORM,
            "StoreDamaged=True naming the damage",
            WAIT,
            || {
                let (instances, pod_name) = (instances.clone(), pod_name.clone());
                async move {
                    let c = condition_of(&instances, STORE_DAMAGED).await?;
                    let ready = condition_of(&instances, "Ready").await?;
                    match (&c, &ready) {
                        (Some((s, _, m)), Some((r, reason, _)))
                            if s == "True"
                                && m.contains(&pod_name)
                                && m.contains(&format!("offset {victim}"))
                                && m.contains("segment 00000000000000000000")
                                && r == "False"
                                && reason == STORE_DAMAGED =>
                        {
                            Ok(Some(m.clone()))
                        }
                        _ => Err(format!("StoreDamaged {c:?}, Ready {ready:?}")),
                    }
                }
            },
        )
        .await?;
    println!("damaged: {damaged}");
    ensure!(
        damaged.contains(&format!(
            "annotate mqi {NAME} {RECOVER_TRUNCATE_ANNOTATION}={pod_name}"
        )),
        "no instruction in {damaged}"
    );

    // A pod that is not this instance's damaged broker is ignored, with a Warning.
    let stranger = "mq-inst-other-broker-0";
    instances
        .patch(NAME, &PatchParams::default(), &annotate(Some(stranger)))
        .await?;
    tb.until(
        &client,
        NS,
        "a Warning about the ignored annotation",
        WAIT,
        || {
            let client = client.clone();
            async move {
                let warned =
                    events(&client, NS, "MQInstance", NAME, "RecoverTruncateIgnored").await?;
                Ok(warned
                    .iter()
                    .any(|(_, note)| note.contains(stranger))
                    .then_some(()))
            }
        },
    )
    .await?;
    let status = instances.get(NAME).await?.status.unwrap_or_default();
    ensure!(
        status.store_recovery.is_none(),
        "a cut for a stranger: {status:?}"
    );
    let config = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), PLATFORM)
        .get(&names.config())
        .await?;
    let conf = config
        .data
        .unwrap_or_default()
        .remove("broker.conf")
        .unwrap_or_default();
    ensure!(!conf.contains("recoverTruncateAt"), "broker.conf: {conf}");

    // The tenant asks for the cut of the reported damage.
    instances
        .patch(NAME, &PatchParams::default(), &annotate(Some(&pod_name)))
        .await?;
    let recovered = tb
        .until(
            &client,
            PLATFORM,
            "StoreDamaged=False reason Recovered",
            WAIT,
            || {
                let instances = instances.clone();
                async move {
                    match condition_of(&instances, STORE_DAMAGED).await? {
                        Some((s, r, m)) if s == "False" && r == "Recovered" => Ok(Some(m)),
                        other => Err(format!("StoreDamaged {other:?}")),
                    }
                }
            },
        )
        .await?;
    println!("recovered: {recovered}");
    ensure!(
        recovered.contains(&format!("offset {victim}")),
        "the cut is not named: {recovered}"
    );
    running(tb, &client).await?;
    let after = instances.get(NAME).await?;
    ensure!(
        !after
            .annotations()
            .contains_key(RECOVER_TRUNCATE_ANNOTATION),
        "the annotation is still there"
    );
    ensure!(
        after
            .status
            .as_ref()
            .and_then(|s| s.store_recovery.as_ref())
            .is_none(),
        "a cut still pending"
    );
    let recorded = events(&client, NS, "MQInstance", NAME, "Recovered")
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(!recorded.is_empty(), "no Recovered event");
    let config = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), PLATFORM)
        .get(&names.config())
        .await?;
    let conf = config
        .data
        .unwrap_or_default()
        .remove("broker.conf")
        .unwrap_or_default();
    ensure!(
        !conf.contains("recoverTruncateAt"),
        "the line stayed: {conf}"
    );

    // What was stored before the cut is still consumed.
    let (_, ip) = server_pod(&client, &id, "broker", 0)
        .await
        .map_err(anyhow::Error::msg)?;
    let broker = admin(ip).await.map_err(anyhow::Error::msg)?;
    let pulled = broker.pull_messages(&group, &topic, 0, 0, 32).await?;
    ensure!(
        pulled.bodies() == ["m0", "m1", "m2"],
        "after the cut: {:?}",
        pulled.bodies()
    );

    instances
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"mqfleet.io/force-delete": "true"}}}),
            ),
        )
        .await?;
    instances.delete(NAME, &DeleteParams::default()).await?;
    Ok(())
}

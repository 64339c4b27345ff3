//! End-to-end: the testbed's process kubelet runs a real image. `mq-testbed image load`
//! brings the `mq-broker` OCI layout (`images/build.sh`) into a testbed's store; a Pod
//! of it runs from the image's read-only root as its `runAsUser`, with its `fsGroup`
//! owning the emptyDir it writes, answers on its Pod address, passes an exec probe run
//! inside the image, and sees nothing of the host; an image not loaded (another
//! registry's name) waits with `ErrImageNeverPull` and a message saying how to load it,
//! and starts once it is loaded under that name.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use mq_broker::client::AdminClient;
use mq_testbed::images::build::build_images;
use mq_testbed::wait::{container_process, is_ready};
use mq_testbed::{Options, Testbed};
use serde_json::json;

/// Bound on a Pod becoming Ready (or showing why it cannot start).
const READY: Duration = Duration::from_secs(90);
/// Bound on building the image from the built binary.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);
/// The user and group the Pod asks for (not the image's 65532).
const RUN_AS_USER: u32 = 65533;
const FS_GROUP: u32 = 65534;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf()
}

/// `mq-testbed image load --dir <testbed> <arg>`'s stdout.
fn image_load(testbed: &Path, arg: &str, extra: &[&str]) -> Result<String> {
    let out = Command::new(bin_dir().join("mq-testbed"))
        .args(["image", "load", "--dir"])
        .arg(testbed)
        .arg(arg)
        .args(extra)
        .output()
        .context("running mq-testbed image load")?;
    ensure!(
        out.status.success(),
        "image load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A Pod running the broker image as a standalone name server + broker on its address.
fn broker_pod(name: &str, image: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsUser": RUN_AS_USER, "fsGroup": FS_GROUP},
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{
                "name": "broker",
                "image": image,
                "args": ["standalone", "--namesrv-listen", "$(POD_IP):9876", "--listen", "$(POD_IP):10911",
                         "--no-vip", "--http-listen", "$(POD_IP):8080", "--store-dir", "/data/store"],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "startupProbe": {"tcpSocket": {"port": 9876}, "periodSeconds": 1, "failureThreshold": 60},
                // Ready only if an exec inside the image's root, as its user, works:
                // nothing but the image's own files exist there.
                "readinessProbe": {"exec": {"command": ["/usr/local/bin/mq-broker", "--help"]}, "periodSeconds": 1},
            }],
        },
    }))?)
}

/// A process's `Uid:`, `Gid:` or `Groups:` ids.
fn ids(pid: u32, field: &str) -> Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .context("no such field")?;
    Ok(line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect())
}

async fn wait_ready(tb: &Testbed, client: &Client, ns: &str, name: &str) -> Result<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    tb.until(client, ns, &format!("pod {name} Ready"), READY, || {
        let api = api.clone();
        let name = name.to_owned();
        async move {
            let pod = api.get(&name).await.map_err(|e| e.to_string())?;
            Ok(is_ready(&pod).then_some(pod))
        }
    })
    .await
    .map_err(Into::into)
}

#[tokio::test]
async fn a_loaded_image_runs_as_its_pod_user_from_its_own_root() -> Result<()> {
    let scratch = Scratch(
        std::env::temp_dir().join(format!("mqfleet-images-testbed-{}", std::process::id())),
    );
    let out = scratch.0.join("out");
    let version = env!("CARGO_PKG_VERSION");
    build_images(&bin_dir(), &out, &["mq-broker"], BUILD_TIMEOUT)?;
    let tb = Testbed::start(Options {
        nodes: 1,
        ..Options::default()
    })
    .await?;
    let layout = format!("{}:{version}", out.join("mq-broker").display());

    let loaded = image_load(tb.dir(), &layout, &[])?;
    let reference = format!("docker.io/mqfleet/mq-broker:{version}");
    ensure!(
        loaded.contains(&format!("loaded {reference} (sha256:")),
        "{loaded}"
    );
    let digest = loaded
        .split("(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .context("digest printed")?
        .to_owned();
    let again = image_load(tb.dir(), &layout, &[])?;
    ensure!(
        again.contains(&format!("unchanged {reference}")) && !again.contains("loaded "),
        "a second load is a no-op: {again}"
    );

    let client = tb.client();
    let ns = "images";
    tb.create_namespace(&client, ns).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &broker_pod("broker", &format!("mqfleet/mq-broker:{version}"))?,
    )
    .await?;
    let pod = wait_ready(&tb, &client, ns, "broker").await?;

    let status = pod.status.clone().context("status")?;
    let cs = status.container_statuses.clone().unwrap_or_default();
    let image_id = cs.first().map(|c| c.image_id.clone()).unwrap_or_default();
    ensure!(
        image_id == format!("docker.io/mqfleet/mq-broker@{digest}"),
        "imageID {image_id}"
    );

    // Answering on its Pod address: the name server lists the broker.
    let ip = status.pod_ip.clone().context("pod IP")?;
    let ns_client = AdminClient::connect(&format!("{ip}:9876"), Duration::from_secs(5)).await?;
    let broker_addr = format!("{ip}:10911");
    let registered = tb.until(&client, ns, "the broker registered", READY, || {
        let ns_client = &ns_client;
        let broker_addr = broker_addr.clone();
        async move {
            let info = ns_client.cluster_info().await.map_err(|e| e.to_string())?;
            Ok(info
                .broker_addr_table
                .values()
                .any(|b| b.broker_addrs.values().any(|a| *a == broker_addr))
                .then_some(()))
        }
    });
    registered.await?;

    // As the Pod's user, with the fsGroup as a supplementary group, from the image's root.
    let pid = container_process(&pod, "broker")
        .context("container process")?
        .pid;
    ensure!(
        ids(pid, "Uid:")? == [RUN_AS_USER; 4],
        "uids {:?}",
        ids(pid, "Uid:")?
    );
    ensure!(ids(pid, "Gid:")? == [0; 4], "gids {:?}", ids(pid, "Gid:")?);
    ensure!(
        ids(pid, "Groups:")?.contains(&FS_GROUP),
        "groups {:?}",
        ids(pid, "Groups:")?
    );
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    ensure!(
        root.join("usr/local/bin/mq-broker").is_file(),
        "its / is the image"
    );
    let workspace = mq_testbed::paths::workspace_dir();
    ensure!(
        !root.join(workspace.strip_prefix("/")?).exists(),
        "the workspace is visible inside"
    );
    ensure!(
        !root.join("bin/sh").exists(),
        "the host's /bin is visible inside"
    );
    ensure!(
        std::fs::read_to_string(root.join("etc/resolv.conf"))?.contains("nameserver"),
        "resolv.conf is bound in"
    );
    let store = std::fs::metadata(root.join("data/store"))?;
    ensure!(
        (store.uid(), store.gid()) == (RUN_AS_USER, FS_GROUP),
        "the emptyDir write: {}:{}",
        store.uid(),
        store.gid()
    );
    let write = std::fs::write(root.join("usr/local/bin/x"), "x");
    ensure!(write.is_err(), "the image's root is writable");

    // An image that is not loaded (another registry's name is another image) waits,
    // saying how to load it; once loaded under that name, the Pod starts by itself.
    let registry = "registry.local:5000/mqfleet/mq-broker";
    api.create(
        &PostParams::default(),
        &broker_pod("unloaded", &format!("{registry}:{version}"))?,
    )
    .await?;
    let message = tb
        .until(&client, ns, "ErrImageNeverPull", READY, || {
            let api = api.clone();
            async move {
                let pod = api.get("unloaded").await.map_err(|e| e.to_string())?;
                let waiting = pod
                    .status
                    .and_then(|s| s.container_statuses)
                    .and_then(|c| c.into_iter().next())
                    .and_then(|c| c.state)
                    .and_then(|s| s.waiting);
                Ok(waiting
                    .filter(|w| w.reason.as_deref() == Some("ErrImageNeverPull"))
                    .and_then(|w| w.message))
            }
        })
        .await?;
    ensure!(
        message.contains("mq-testbed image load"),
        "unhelpful message: {message}"
    );
    image_load(tb.dir(), &layout, &["--repository", registry])?;
    let late = wait_ready(&tb, &client, ns, "unloaded").await?;
    let late_id = late
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .map(|c| c.image_id)
        .unwrap_or_default();
    ensure!(
        late_id == format!("{registry}@{digest}"),
        "imageID {late_id}"
    );

    for name in ["broker", "unloaded"] {
        api.delete(name, &DeleteParams::default()).await?;
    }
    let gone = tb.until(&client, ns, "the pods gone", READY, || {
        let api = api.clone();
        async move {
            Ok(api
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .is_empty()
                .then_some(()))
        }
    });
    gone.await?;
    tb.stop()?;
    Ok(())
}

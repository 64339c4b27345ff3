//! The testbed itself: a real control plane starts, serves, runs beside another one, and
//! stops without leaving processes, slots or directories behind — through the library
//! and through the `mq-testbed` CLI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use mq_testbed::slot::slot_owner;
use mq_testbed::{Options, ProcRef, State, Testbed, paths};

/// Lists namespaces and checks the `kubernetes` Service got the slot's first service IP.
async fn assert_serves(testbed: &Testbed) -> Result<()> {
    let client = testbed.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect();
    for expected in ["default", "kube-system"] {
        ensure!(
            names.iter().any(|n| n == expected),
            "no namespace {expected} in {names:?}"
        );
    }
    let services: Api<Service> = Api::namespaced(client, "default");
    let cluster_ip = services
        .get("kubernetes")
        .await?
        .spec
        .and_then(|spec| spec.cluster_ip)
        .context("service/kubernetes has no clusterIP")?;
    let expected = format!("127.{}.0.1", 100 + u16::from(testbed.slot()));
    ensure!(
        cluster_ip == expected,
        "clusterIP {cluster_ip}, expected {expected}"
    );
    Ok(())
}

/// Every recorded process is gone (start-time checked), the slot is free, the dir removed.
fn assert_stopped(state: &State) -> Result<()> {
    for component in &state.components {
        ensure!(
            !component.proc.is_alive(),
            "{} (pid {}) still alive after stop",
            component.name,
            component.proc.pid
        );
    }
    let owner = slot_owner(&paths::slots_dir(), state.slot).map(|claim| claim.dir);
    ensure!(
        owner.as_deref() != Some(state.dir.as_path()),
        "slot {} still held",
        state.slot
    );
    ensure!(!state.dir.exists(), "{} still exists", state.dir.display());
    Ok(())
}

fn assert_all_running(state: &State) -> Result<()> {
    let names: Vec<&str> = state.components.iter().map(|c| c.name.as_str()).collect();
    ensure!(
        names
            == [
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "mq-node"
            ],
        "unexpected components {names:?}"
    );
    for component in &state.components {
        ensure!(
            component.proc.is_alive(),
            "{} is not running",
            component.name
        );
    }
    ensure!(state.ready, "state.json does not say ready");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testbed_serves_and_stops_cleanly() -> Result<()> {
    let testbed = Testbed::start(Options::default()).await?;
    assert_serves(&testbed).await?;

    let configmaps: Api<ConfigMap> = Api::namespaced(testbed.client(), "default");
    let data = BTreeMap::from([("greeting".to_owned(), "hello".to_owned())]);
    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some("testbed-smoke".into()),
            ..ObjectMeta::default()
        },
        data: Some(data.clone()),
        ..ConfigMap::default()
    };
    configmaps
        .create(&PostParams::default(), &configmap)
        .await?;
    let stored = configmaps.get("testbed-smoke").await?;
    ensure!(
        stored.data == Some(data),
        "stored ConfigMap differs: {stored:?}"
    );

    let state = testbed.state();
    assert_all_running(&state)?;
    testbed.stop()?;
    assert_stopped(&state)?;
    // Idempotent: a second stop (and the drop after it) does nothing.
    testbed.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_testbeds_run_side_by_side() -> Result<()> {
    let (a, b) = tokio::try_join!(
        Testbed::start(Options::default()),
        Testbed::start(Options::default())
    )?;
    let (sa, sb) = (a.state(), b.state());
    ensure!(sa.slot != sb.slot, "both testbeds got slot {}", sa.slot);
    ensure!(a.service_cidr() != b.service_cidr(), "same service range");
    let ports_a = [sa.ports.etcd_client, sa.ports.etcd_peer, sa.ports.apiserver];
    let ports_b = [sb.ports.etcd_client, sb.ports.etcd_peer, sb.ports.apiserver];
    ensure!(
        ports_a.iter().all(|p| !ports_b.contains(p)),
        "ports overlap: {ports_a:?} vs {ports_b:?}"
    );
    ensure!(
        a.api_url() != b.api_url() && a.dir() != b.dir(),
        "shared url or dir"
    );
    tokio::try_join!(assert_serves(&a), assert_serves(&b))?;

    a.stop()?;
    assert_stopped(&sa)?;
    // b is unaffected by a's stop.
    assert_serves(&b).await?;
    b.stop()?;
    assert_stopped(&sb)?;
    Ok(())
}

/// Runs `down` if the CLI test fails half-way: its processes are detached and would
/// otherwise outlive the test.
struct DownOnDrop(PathBuf);

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        let _ = mq_testbed::stop_dir(&self.0);
    }
}

fn cli(args: &[&str], dir: &Path) -> Result<Output> {
    let output = Command::new(env!("CARGO_BIN_EXE_mq-testbed"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .context("running mq-testbed")?;
    Ok(output)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn expect_success(what: &str, output: &Output) -> Result<String> {
    ensure!(
        output.status.success(),
        "`mq-testbed {what}` failed ({}):\n{}\n{}",
        output.status,
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout(output))
}

/// Live processes (not zombies) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline.contains(needle).then_some((pid, cmdline))
        })
        .collect()
}

#[test]
fn cli_up_status_down_leaves_nothing_behind() -> Result<()> {
    let dir = paths::testbeds_dir().join(format!("cli-test-{}", std::process::id()));
    let _guard = DownOnDrop(dir.clone());

    let began = Instant::now();
    let up = expect_success("up", &cli(&["up"], &dir)?)?;
    println!(
        "warm `mq-testbed up`: {:.1} s",
        began.elapsed().as_secs_f64()
    );
    // state.json records the canonical path; compare like with like.
    let dir = dir.canonicalize()?;
    let kubeconfig = dir.join("kubeconfig");
    ensure!(
        up.contains(&format!("export KUBECONFIG={}", kubeconfig.display())),
        "no export line in:\n{up}"
    );

    let again = expect_success("up (again)", &cli(&["up"], &dir)?)?;
    ensure!(
        again.contains("already running"),
        "second up said:\n{again}"
    );

    let status = expect_success("status", &cli(&["status"], &dir)?)?;
    ensure!(status.contains("readyz: ok"), "status said:\n{status}");
    let printed = expect_success("kubeconfig", &cli(&["kubeconfig"], &dir)?)?;
    ensure!(
        printed.trim() == kubeconfig.to_string_lossy(),
        "kubeconfig said {printed}"
    );

    let state = State::load(&dir)?.context("no state.json after up")?;
    assert_all_running(&state)?;
    expect_success("down", &cli(&["down"], &dir)?)?;
    assert_stopped(&state)?;
    let leftovers = processes_mentioning(&dir.to_string_lossy());
    ensure!(leftovers.is_empty(), "processes left behind: {leftovers:?}");

    let twice = expect_success("down (again)", &cli(&["down"], &dir)?)?;
    ensure!(
        twice.contains("no testbed running"),
        "second down said:\n{twice}"
    );
    let status = cli(&["status"], &dir)?;
    ensure!(
        !status.status.success(),
        "status succeeded with nothing running"
    );
    Ok(())
}

/// Bound on a helper's start (several testbeds may be starting on two cores) and exit.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs one `#[ignore]`d helper test of this binary in a child process, stdout piped.
fn helper(name: &str) -> Result<std::process::Child> {
    Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("starting the helper test")
}

/// The helper's `STATE=<json>` and the container process it printed before it as
/// `CONTAINER=<json>` (libtest prefixes the lines with the test name), read on a side
/// thread so a silent helper cannot hang us.
fn read_helper_lines(child: &mut std::process::Child) -> Result<(State, ProcRef)> {
    use std::io::BufRead;
    let out = child.stdout.take().context("helper stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut container = None;
        // Drain to EOF: closing the pipe early would fail the helper's final output.
        for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
            if let Some((_, json)) = line.split_once("CONTAINER=") {
                container = Some(json.to_owned());
            }
            if let Some((_, json)) = line.split_once("STATE=") {
                let _ = tx.send((json.to_owned(), container.clone()));
            }
        }
    });
    match rx.recv_timeout(HELPER_TIMEOUT) {
        Ok((json, container)) => {
            let container = container.context("the helper printed no container process")?;
            Ok((
                serde_json::from_str(&json)?,
                serde_json::from_str(&container)?,
            ))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the helper printed no state ({e})")
        }
    }
}

/// Waits (bounded) for the helper to exit.
fn wait_exit(child: &mut std::process::Child) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + HELPER_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the helper did not exit within {HELPER_TIMEOUT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits (bounded) until every recorded process is gone.
fn wait_all_dead(state: &State, timeout: std::time::Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while state.components.iter().any(|c| c.proc.is_alive()) {
        ensure!(
            Instant::now() < deadline,
            "processes alive after {timeout:?}: {state:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

#[tokio::test]
#[ignore = "helper: run in a child process by shared_testbed_is_stopped_at_exit"]
async fn helper_shared_testbed() -> Result<()> {
    let testbed = Testbed::shared().await?;
    ensure!(
        std::ptr::eq(testbed, Testbed::shared().await?),
        "two shared testbeds"
    );
    assert_serves(testbed).await?;
    let container = run_pod(testbed).await?;
    println!("CONTAINER={}", serde_json::to_string(&container)?);
    println!("STATE={}", serde_json::to_string(&testbed.state())?);
    Ok(())
}

/// Runs one Pod of the test server on `testbed`; returns its container's process.
async fn run_pod(testbed: &Testbed) -> Result<ProcRef> {
    use k8s_openapi::api::core::v1::Pod;
    let client = testbed.client();
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "leftover-check"},
        "spec": {"containers": [{"name": "app", "image": "mqfleet/mq-testpod:dev",
            "args": ["--listen=$(POD_IP):8080"],
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]},
    }))?;
    pods.create(&kube::api::PostParams::default(), &pod).await?;
    let process = testbed
        .until(
            &client,
            "default",
            "the pod's container running",
            std::time::Duration::from_secs(60),
            || {
                let pods = pods.clone();
                async move {
                    let pod = pods
                        .get("leftover-check")
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(mq_testbed::wait::container_process(&pod, "app"))
                }
            },
        )
        .await?;
    Ok(process)
}

#[test]
fn shared_testbed_is_stopped_at_exit() -> Result<()> {
    let mut child = helper("helper_shared_testbed")?;
    let (state, container) = read_helper_lines(&mut child)?;
    assert_all_running(&state)?;
    ensure!(container.is_alive(), "the pod's container is not running");
    let status = wait_exit(&mut child)?;
    ensure!(status.success(), "helper failed: {status}");
    // The atexit hook ran before the helper's exit completed: the control plane, the
    // node agent and the Pods' processes are all gone.
    assert_stopped(&state)?;
    ensure!(!container.is_alive(), "a Pod's process outlived the suite");
    Ok(())
}

#[tokio::test]
#[ignore = "helper: killed with SIGKILL by killed_test_process_takes_its_testbed_along"]
async fn helper_blocks_with_testbed() -> Result<()> {
    let testbed = Testbed::start(Options::default()).await?;
    let container = run_pod(&testbed).await?;
    println!("CONTAINER={}", serde_json::to_string(&container)?);
    println!("STATE={}", serde_json::to_string(&testbed.state())?);
    // Blocks until the parent kills us (or closes stdin, then we clean up normally).
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(())
}

#[test]
fn killed_test_process_takes_its_testbed_along() -> Result<()> {
    let mut child = helper("helper_blocks_with_testbed")?;
    let (state, container) = read_helper_lines(&mut child)?;
    assert_all_running(&state)?;
    child.kill()?;
    child.wait()?;
    // PDEATHSIG: the kernel kills the processes, down to the node agent's containers;
    // no cleanup code ran.
    wait_all_dead(&state, std::time::Duration::from_secs(10))?;
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while container.is_alive() {
        ensure!(
            Instant::now() < deadline,
            "a Pod's process outlived its killed testbed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    ensure!(state.dir.exists(), "nothing should have removed the dir");
    // The next claim sees the stale slot, reclaims it and removes the dead testbed's dir.
    let probe_dir = paths::testbeds_dir().join(format!("probe-{}", std::process::id()));
    std::fs::create_dir_all(&probe_dir)?;
    let slot = mq_testbed::slot::Slot::claim(&paths::slots_dir(), &probe_dir)?;
    slot.release()?;
    std::fs::remove_dir(&probe_dir)?;
    ensure!(
        !state.dir.exists(),
        "stale testbed dir {} not swept",
        state.dir.display()
    );
    let owner = slot_owner(&paths::slots_dir(), state.slot).map(|claim| claim.dir);
    ensure!(
        owner.as_deref() != Some(state.dir.as_path()),
        "stale slot not reclaimed"
    );
    Ok(())
}

#[tokio::test]
async fn failed_start_quotes_the_log_and_cleans_up() -> Result<()> {
    let dir = paths::testbeds_dir().join(format!("failing-{}", std::process::id()));
    let opts = Options {
        dir: Some(dir.clone()),
        extra_apiserver_args: vec!["--no-such-flag".into()],
        ..Options::default()
    };
    let Err(error) = Testbed::start(opts).await else {
        anyhow::bail!("an apiserver with an unknown flag started");
    };
    let text = error.to_string();
    ensure!(
        text.contains("kube-apiserver exited") && text.contains("unknown flag: --no-such-flag"),
        "error does not name the component and quote its log:\n{text}"
    );
    ensure!(!dir.exists(), "{} left behind", dir.display());
    let leftovers = processes_mentioning(&dir.to_string_lossy());
    ensure!(leftovers.is_empty(), "processes left behind: {leftovers:?}");
    for slot in 0..mq_testbed::slot::SLOT_COUNT {
        let owner = slot_owner(&paths::slots_dir(), slot).map(|claim| claim.dir);
        ensure!(
            owner.as_deref() != Some(dir.as_path()),
            "slot {slot} still held"
        );
    }
    Ok(())
}

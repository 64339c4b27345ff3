//! `mq-operator-bench`: the operator's figures on a fresh testbed (`make bench`).
//!
//! Installs the operator from `deploy/` as Pods, then measures: apply → Ready of an
//! `MQInstance` with one broker and one name server; 1,000 `MQTopic`s (configurable)
//! created at once → all Ready; the leader's RSS, CPU and API writes while idle with
//! them all. RSS is reported for both replicas (the leader runs the controllers and the
//! webhook, the other replica only the webhook), with 0 topics (the instance Running,
//! before any topic) and with all of them after the idle period. `--hold` keeps the
//! testbed up afterwards (its kubeconfig printed) until Ctrl-C, e.g. to profile an
//! operator run outside it. The images run the binaries beside this one (build them in
//! release mode).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use mq_operator::crd::{MQInstance, MQTopic, Phase, is_ready};
use mq_testbed::{Options, Testbed, operator};

const NS: &str = "bench";

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut topics = 1000usize;
    let mut idle = Duration::from_secs(60);
    let mut hold = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--topics" => topics = args.next().context("--topics N")?.parse()?,
            "--idle-secs" => {
                idle = Duration::from_secs(args.next().context("--idle-secs N")?.parse()?)
            }
            "--hold" => hold = true,
            other => bail!("unknown argument {other} (try --topics N --idle-secs N --hold)"),
        }
    }
    let tb = Testbed::start(Options::default()).await?;
    let client = tb.client();
    operator::install(&tb, &client, None).await?;
    tb.create_namespace(&client, NS).await?;
    wait(&tb, &client, "the operator's lease holder", || async {
        operator::leader(&client).await.map(|_| Some(()))
    })
    .await?;

    let began = Instant::now();
    let instances: Api<MQInstance> = Api::namespaced(client.clone(), NS);
    let mut manifest = operator::instance("bench", 1);
    // Room for every topic (the default capacity is 100).
    manifest["spec"]["topicCapacity"] = serde_json::json!(topics.max(100));
    let instance = serde_json::from_value(manifest)?;
    instances.create(&PostParams::default(), &instance).await?;
    wait(&tb, &client, "the instance Running", || {
        let instances = instances.clone();
        async move {
            let i = instances.get("bench").await.map_err(|e| e.to_string())?;
            let running = i.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running);
            Ok((running && is_ready(i.metadata.generation, i.status.as_ref())).then_some(()))
        }
    })
    .await?;
    println!(
        "MQInstance apply → Ready (1 broker, 1 name server): {:.2} s",
        began.elapsed().as_secs_f64()
    );
    // Let the instance's last reconciles and the first relists settle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let empty = replicas_rss(&client).await?;

    let began = Instant::now();
    let api: Api<MQTopic> = Api::namespaced(client.clone(), NS);
    let created = futures::stream::iter(0..topics)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("topic-{i}");
                let manifest = operator::topic(&name, "bench", &format!("BENCH_{i}"));
                let topic: MQTopic = serde_json::from_value(manifest)?;
                api.create(&PostParams::default(), &topic).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    created.into_iter().collect::<Result<Vec<_>>>()?;
    let created_in = began.elapsed();
    operator::topics_ready(&tb, &client, NS, topics, Duration::from_secs(600)).await?;
    println!(
        "{topics} MQTopics created in {:.1} s, all Ready after {:.1} s",
        created_in.as_secs_f64(),
        began.elapsed().as_secs_f64()
    );

    let lead = operator::leader(&client)
        .await
        .map_err(anyhow::Error::msg)?;
    let pid = container_pid(&lead).context("the leader's process")?;
    let writes = metric(&lead, "mq_operator_api_writes_total").await?;
    let (cpu_before, at) = (cpu_ticks(pid)?, Instant::now());
    tokio::time::sleep(idle).await;
    let cpu =
        (cpu_ticks(pid)? - cpu_before) as f64 / ticks_per_second() / at.elapsed().as_secs_f64();
    let wrote = metric(&lead, "mq_operator_api_writes_total").await? - writes;
    let full = replicas_rss(&client).await?;
    println!(
        "idle leader with {topics} topics over {} s: RSS {:.1} MiB, CPU {:.2} % of one core, {wrote} API writes (lease renewals excluded)",
        idle.as_secs(),
        full.leader,
        cpu * 100.0
    );
    println!(
        "operator RSS, leader (controllers + webhook): {:.1} MiB with 0 topics, {:.1} MiB with {topics} topics",
        empty.leader, full.leader
    );
    println!(
        "operator RSS, non-leader (webhook only):      {:.1} MiB with 0 topics, {:.1} MiB with {topics} topics",
        empty.standby, full.standby
    );
    if hold {
        println!(
            "holding the testbed (KUBECONFIG={}); Ctrl-C stops it",
            tb.kubeconfig_path().display()
        );
        tokio::signal::ctrl_c().await?;
    }
    tb.stop()?;
    Ok(())
}

/// The RSS, in MiB, of the replica holding the lease and of the other one.
struct Rss {
    leader: f64,
    standby: f64,
}

async fn replicas_rss(client: &Client) -> Result<Rss> {
    let lead = operator::leader(client).await.map_err(anyhow::Error::msg)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), operator::PLATFORM);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=mq-operator"))
        .await?;
    let standby = list
        .items
        .iter()
        .find(|p| p.metadata.name != lead.metadata.name && p.metadata.deletion_timestamp.is_none())
        .context("the non-leader replica")?;
    let mib = |pod: &Pod| -> Result<f64> {
        let pid = container_pid(pod).context("an operator replica's process")?;
        Ok(rss_kib(pid)? as f64 / 1024.0)
    };
    Ok(Rss {
        leader: mib(&lead)?,
        standby: mib(standby)?,
    })
}

async fn wait<F, Fut>(tb: &Testbed, client: &Client, what: &str, check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<Option<()>, String>>,
{
    Ok(tb
        .until(client, NS, what, Duration::from_secs(600), check)
        .await?)
}

async fn metric(pod: &Pod, name: &str) -> Result<f64> {
    operator::metric(pod, name)
        .await
        .map_err(anyhow::Error::msg)
}

fn container_pid(pod: &Pod) -> Option<u32> {
    mq_testbed::wait::container_process(pod, "operator").map(|p| p.pid)
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

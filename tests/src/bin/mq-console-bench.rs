//! `mq-console-bench`: the console's figures on a fresh testbed (`make bench`).
//!
//! Installs the operator and the console from `deploy/` as Pods, makes an account with
//! `mq-console account create`, then measures through the signed API: an instance's
//! create → serving; topic create → serving (each of a series, one at a time); and signed
//! `/json/topic/listInPage` requests per second with 1,000 topics (configurable), straight
//! to one console pod over keep-alive connections, with p50/p99 latency and the pod's RSS.
//! The images run the binaries beside this one (build them in release mode).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use mq_console::client::SignedClient;
use mq_testbed::{Options, Testbed, console, operator};
use serde_json::Value;

const NS: &str = "console-bench";

/// What the command line asks for.
struct Args {
    topics: usize,
    secs: u64,
    workers: usize,
    timed_creates: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        topics: 1000,
        secs: 15,
        workers: 32,
        timed_creates: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || -> Result<usize> { Ok(it.next().context("a number")?.parse()?) };
        match arg.as_str() {
            "--topics" => a.topics = value()?,
            "--secs" => a.secs = value()? as u64,
            "--workers" => a.workers = value()?,
            "--timed-creates" => a.timed_creates = value()?,
            other => bail!(
                "unknown argument {other} (try --topics N --secs N --workers N --timed-creates N)"
            ),
        }
    }
    Ok(a)
}

/// Calls `path` expecting success; its envelope.
async fn ok(c: &SignedClient, path: &str, params: &[(&str, &str)]) -> Result<Value> {
    let (_, envelope) = c.post(path, params).await?;
    ensure!(envelope["success"] == true, "{path}: {envelope}");
    Ok(envelope)
}

/// Polls until topic/get (or instance/baseInfo) says serving; how long it took from `from`.
async fn until_serving(
    c: &SignedClient,
    path: &str,
    params: &[(&str, &str)],
    from: Instant,
) -> Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let envelope = ok(c, path, params).await?;
        if envelope["data"]["status"] == 0 {
            return Ok(from.elapsed());
        }
        ensure!(
            Instant::now() < deadline,
            "{path} {params:?} not serving in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let tb = Testbed::start(Options::default()).await?;
    let result = run(&tb, &args).await;
    tb.stop()?;
    result
}

async fn run(tb: &Testbed, args: &Args) -> Result<()> {
    let client = tb.client();
    operator::install(tb, &client, None).await?;
    let urls = console::ready_urls(tb, &client, Duration::from_secs(120)).await?;
    tb.create_namespace(&client, NS).await?;
    let account = console::create_account(tb, &["--namespace", NS]).await?;
    let c = SignedClient::new(&urls[0], &account.access_key, &account.secret_key)?;
    // The account reaches the console's cache a moment after the Secret is written.
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.post("/json/instance/list", &[]).await?.1["success"] != true {
        ensure!(
            Instant::now() < deadline,
            "the account is not known after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let capacity = args.topics.max(args.timed_creates + 1).to_string();
    let began = Instant::now();
    let created = ok(
        &c,
        "/json/instance/create",
        &[
            ("cluster", "default"),
            ("instanceName", "bench"),
            ("independentNaming", "true"),
            ("maxSendTps", "100000"),
            ("maxReceiveTps", "100000"),
            ("topicCapacity", &capacity),
        ],
    )
    .await?;
    let id = created["data"]["instanceId"]
        .as_str()
        .context("instanceId")?
        .to_owned();
    let took = until_serving(&c, "/json/instance/baseInfo", &[("instanceId", &id)], began).await?;
    println!(
        "instance create → serving through the API (2 brokers, 2 name servers): {:.2} s",
        took.as_secs_f64()
    );

    let mut latencies = Vec::new();
    for i in 0..args.timed_creates {
        let topic = format!("TIMED_{i}");
        let began = Instant::now();
        let params = [("instanceId", id.as_str()), ("topic", topic.as_str())];
        ok(
            &c,
            "/json/topic/create",
            &[params[0], params[1], ("orderType", "0")],
        )
        .await?;
        latencies.push(until_serving(&c, "/json/topic/get", &params, began).await?);
    }
    latencies.sort();
    println!(
        "topic create → serving through the API, {} one at a time: p50 {:.0} ms, max {:.0} ms",
        latencies.len(),
        pct(&latencies, 0.5).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );

    let rest = args.topics.saturating_sub(args.timed_creates);
    let began = Instant::now();
    let results = futures::stream::iter(0..rest)
        .map(|i| {
            let c = &c;
            let id = id.as_str();
            async move {
                let topic = format!("BENCH_{i}");
                ok(
                    c,
                    "/json/topic/create",
                    &[("instanceId", id), ("topic", &topic), ("orderType", "0")],
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect::<Result<Vec<_>>>()?;
    println!(
        "{rest} more topics created through the API (8 at a time) in {:.1} s ({:.0} creates/s)",
        began.elapsed().as_secs_f64(),
        rest as f64 / began.elapsed().as_secs_f64()
    );

    // Measure the console, not the operator: let every topic reach the brokers first.
    operator::topics_ready(tb, &client, NS, args.topics, Duration::from_secs(600)).await?;
    println!(
        "all {} topics Ready {:.1} s after the first bulk create",
        args.topics,
        began.elapsed().as_secs_f64()
    );
    load(&c, &id, args).await?;
    let rss = console_rss(&client, &urls[0]).await?;
    println!("console pod RSS after the load: {rss:.1} MiB");
    Ok(())
}

/// `workers` loops of signed listInPage for `secs` over keep-alive connections to one
/// pod; prints req/s and latency.
async fn load(c: &SignedClient, id: &str, args: &Args) -> Result<()> {
    let page = ok(c, "/json/topic/listInPage", &[("instanceId", id)]).await?;
    ensure!(
        page["total"] == args.topics,
        "listInPage counts {} topics, not {}",
        page["total"],
        args.topics
    );
    let until = Instant::now() + Duration::from_secs(args.secs);
    let pages = (args.topics / 20).max(1);
    let workers = (0..args.workers).map(|w| async move {
        let mut took = Vec::new();
        let mut n = w;
        while Instant::now() < until {
            let current = (n % pages + 1).to_string();
            n += args.workers;
            let began = Instant::now();
            let params = [
                ("instanceId", id),
                ("pageSize", "20"),
                ("currentPage", current.as_str()),
            ];
            let status = c.post_status("/json/topic/listInPage", &params).await?;
            ensure!(status == 200, "listInPage answered HTTP {status}");
            took.push(began.elapsed());
        }
        anyhow::Ok(took)
    });
    let began = Instant::now();
    let mut all = Vec::new();
    for took in futures::future::join_all(workers).await {
        all.extend(took?);
    }
    let secs = began.elapsed().as_secs_f64();
    all.sort();
    println!(
        "signed /json/topic/listInPage with {} topics, {} workers on keep-alive connections to one pod for {secs:.1} s: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms ({} requests)",
        args.topics,
        args.workers,
        all.len() as f64 / secs,
        pct(&all, 0.5).as_secs_f64() * 1000.0,
        pct(&all, 0.99).as_secs_f64() * 1000.0,
        all.len()
    );
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The RSS (MiB) of the console pod serving `url`.
async fn console_rss(client: &kube::Client, url: &str) -> Result<f64> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), operator::PLATFORM);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=mq-console"))
        .await?;
    let pod = list
        .items
        .iter()
        .find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .is_some_and(|ip| url.contains(ip))
        })
        .context("the console pod")?;
    let pid = mq_testbed::wait::container_process(pod, "console")
        .context("the console's process")?
        .pid;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

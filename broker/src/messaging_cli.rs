//! `mq-broker produce` and `mq-broker consume`: send a few messages to a topic and read
//! them back through an instance's name servers, to see that it works (no client SDK
//! ships with the platform; applications use their own).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use mq_broker::client::{AdminClient, Credentials};
use mq_broker::remoting::body::TopicRouteData;

/// Where to connect and how to sign.
#[derive(Args, Debug)]
pub struct Endpoint {
    /// Name servers, `host:port;host:port` (the instance's status.endpoint).
    #[arg(long, env = "NAMESRV_ADDR", default_value = "127.0.0.1:9876")]
    pub namesrv_addr: String,
    /// Access key of an account allowed on the topic (instances with ACL on).
    #[arg(long, env = "MQ_ACCESS_KEY", requires = "secret_key")]
    pub access_key: Option<String>,
    /// Its secret key.
    #[arg(long, env = "MQ_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Seconds one call may take.
    #[arg(long, default_value_t = 5)]
    pub call_timeout_secs: u64,
}

/// `mq-broker produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// How many messages.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Body of each message (`{n}` becomes its number).
    #[arg(long, default_value = "hello from mq-broker produce #{n}")]
    pub body: String,
    /// Tag of each message.
    #[arg(long, default_value = "demo")]
    pub tags: String,
    /// Producer group.
    #[arg(long, default_value = "PID_MQ_BROKER_CLI")]
    pub group: String,
}

/// `mq-broker consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// Consumer group (its committed offsets are used and advanced; a group that never
    /// consumed starts at the first message).
    #[arg(long)]
    pub group: String,
    /// Stop after this many messages (default: when `--timeout-secs` pass).
    #[arg(long)]
    pub count: Option<u32>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

impl Endpoint {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_secs.max(1))
    }

    /// A client of `addr`, signing when keys were given.
    async fn client(&self, addr: &str) -> Result<AdminClient> {
        let client = AdminClient::connect(addr, self.timeout())
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Ok(match (&self.access_key, &self.secret_key) {
            (Some(ak), Some(sk)) => client.with_credentials(Credentials::new(ak, sk)),
            _ => client,
        })
    }

    /// The topic's route from the first name server that answers.
    async fn route(&self, topic: &str) -> Result<TopicRouteData> {
        let mut last = None;
        for addr in self
            .namesrv_addr
            .split(';')
            .filter(|a| !a.trim().is_empty())
        {
            match self.client(addr.trim()).await {
                Ok(namesrv) => match namesrv.route(topic).await {
                    Ok(Some(route)) => return Ok(route),
                    Ok(None) => {
                        bail!("topic {topic} has no route: does it exist on this instance?")
                    }
                    Err(e) => last = Some(anyhow::Error::new(e)),
                },
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no name server address given")))
    }
}

/// Every (master address, queue id) of the route whose permission has `bit`
/// (2 = write, 4 = read).
fn queues(route: &TopicRouteData, bit: i32) -> Vec<(String, i32)> {
    let masters: BTreeMap<&str, &str> = route
        .broker_datas
        .iter()
        .filter_map(|b| Some((b.broker_name.as_str(), b.broker_addrs.get(&0)?.as_str())))
        .collect();
    let mut out = Vec::new();
    for q in route.queue_datas.iter().filter(|q| q.perm & bit != 0) {
        let Some(addr) = masters.get(q.broker_name.as_str()) else {
            continue;
        };
        let n = if bit == 2 {
            q.write_queue_nums
        } else {
            q.read_queue_nums
        };
        out.extend((0..n).map(|id| ((*addr).to_owned(), id)));
    }
    out
}

/// Sends `--count` messages round robin over the topic's writable queues.
pub async fn produce(args: ProduceArgs) -> Result<()> {
    let route = args.endpoint.route(&args.topic).await?;
    let targets = queues(&route, 2);
    if targets.is_empty() {
        bail!("topic {} has no writable queue", args.topic);
    }
    let mut clients: BTreeMap<String, AdminClient> = BTreeMap::new();
    for n in 0..args.count {
        let (addr, queue) = &targets[n as usize % targets.len()];
        if !clients.contains_key(addr) {
            clients.insert(addr.clone(), args.endpoint.client(addr).await?);
        }
        let body = args.body.replace("{n}", &(n + 1).to_string());
        let sent = clients[addr]
            .send_message(
                &args.group,
                &args.topic,
                *queue,
                &args.tags,
                body.into_bytes(),
            )
            .await
            .with_context(|| format!("sending to {addr} queue {queue}"))?;
        println!(
            "sent {} to {addr} queue {} offset {}",
            sent.msg_id, sent.queue_id, sent.queue_offset
        );
    }
    Ok(())
}

/// Pulls from every readable queue, from the group's committed offsets, printing each
/// message and committing as it goes, until `--count` messages or `--timeout-secs`.
pub async fn consume(args: ConsumeArgs) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let route = args.endpoint.route(&args.topic).await?;
    let sources = queues(&route, 4);
    if sources.is_empty() {
        bail!("topic {} has no readable queue", args.topic);
    }
    let mut clients: BTreeMap<String, AdminClient> = BTreeMap::new();
    let mut offsets = BTreeMap::new();
    for (addr, queue) in &sources {
        if !clients.contains_key(addr) {
            clients.insert(addr.clone(), args.endpoint.client(addr).await?);
        }
        let committed = clients[addr]
            .consumer_offset(&args.group, &args.topic, *queue)
            .await?;
        offsets.insert((addr.clone(), *queue), committed.unwrap_or(0));
    }
    let wanted = args.count.map(u64::from);
    let mut seen = 0u64;
    while wanted.is_none_or(|w| seen < w) && Instant::now() < deadline {
        let mut got_any = false;
        for ((addr, queue), offset) in offsets.iter_mut() {
            let client = &clients[addr];
            let pulled = client
                .pull_messages(&args.group, &args.topic, *queue, *offset, 32)
                .await?;
            for m in &pulled.messages {
                if wanted.is_some_and(|w| seen >= w) {
                    break;
                }
                let body = String::from_utf8_lossy(&m.body);
                println!("{addr} queue {queue} offset {}: {body}", m.queue_offset);
                *offset = m.queue_offset + 1;
                seen += 1;
                got_any = true;
            }
            if pulled.messages.is_empty() {
                *offset = pulled.next_offset.max(*offset);
            }
            client
                .commit_consumer_offset(&args.group, &args.topic, *queue, *offset)
                .await?;
        }
        if !got_any {
            // Nothing new anywhere: ask again shortly (a person is waiting, not a test).
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if let Some(w) = wanted
        && seen < w
    {
        bail!("{seen} of {w} messages within {} s", args.timeout_secs);
    }
    Ok(())
}

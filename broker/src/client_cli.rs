//! `mq-broker produce` and `mq-broker consume`: a minimal client for trying an instance
//! from a shell (no client ships with the platform). It looks the topic's route up at the
//! given name servers (an exposed instance's external endpoint gives external broker
//! addresses), signs every request with `--access-key`/`--secret-key` when given (RocketMQ
//! ACL), sends with SEND_MESSAGE_V2, and consumes by pulling each queue from the group's
//! committed offset, committing as it goes. Output: one line per message, the message id
//! (produce) or the body (consume).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use mq_broker::acl::Credentials;
use mq_broker::client::AdminClient;
use mq_broker::client::QueriedMessage;
use mq_broker::remoting::body::TopicRouteData;
use mq_broker::remoting::{RemotingCommand, request_code, response_code};

/// Where to connect and as whom.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Name servers, `host:port;host:port` (an instance's `NAMESRV_ADDR`).
    #[arg(long = "namesrv", env = "NAMESRV_ADDR")]
    pub namesrv: String,
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// AccessKey to sign with (instances with ACL on).
    #[arg(long, env = "MQ_ACCESS_KEY", requires = "secret_key")]
    pub access_key: Option<String>,
    /// SecretKey of that AccessKey.
    #[arg(long, env = "MQ_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Seconds one call may take.
    #[arg(long, default_value_t = 5)]
    pub call_timeout_secs: u64,
}

/// `mq-broker produce`.
#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Messages to send.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Body of each message.
    #[arg(long, default_value = "hello from mq-broker produce")]
    pub body: String,
}

/// `mq-broker consume`.
#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Consumer group (it must exist on the instance, e.g. an `MQGroup`).
    #[arg(long)]
    pub group: String,
    /// Stop after this many messages [default: when the timeout passes].
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many seconds (with fewer than `--count` messages: exit 1).
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

/// One queue of the route: its broker's address and id.
#[derive(Debug, Clone)]
struct Queue {
    broker: String,
    id: i32,
}

/// A client of the given servers, signing when keys were given.
async fn connect(args: &ClientArgs, addr: &str) -> Result<AdminClient> {
    let client = AdminClient::connect(addr, Duration::from_secs(args.call_timeout_secs.max(1)))
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(match (&args.access_key, &args.secret_key) {
        (Some(ak), Some(sk)) => client.with_credentials(Credentials::new(ak, sk)),
        _ => client,
    })
}

/// One connection per broker, made on first use.
struct Brokers<'a> {
    args: &'a ClientArgs,
    open: std::collections::HashMap<String, AdminClient>,
}

impl<'a> Brokers<'a> {
    fn new(args: &'a ClientArgs) -> Self {
        Self {
            args,
            open: std::collections::HashMap::new(),
        }
    }

    async fn get(&mut self, addr: &str) -> Result<&AdminClient> {
        if !self.open.contains_key(addr) {
            let client = connect(self.args, addr).await?;
            self.open.insert(addr.to_owned(), client);
        }
        self.open
            .get(addr)
            .with_context(|| format!("no connection to {addr}"))
    }
}

/// The topic's route from the first name server that knows it.
async fn route(args: &ClientArgs) -> Result<TopicRouteData> {
    let mut why = Vec::new();
    for addr in mq_broker::conf::parse_addr_list(&args.namesrv) {
        match connect(args, &addr).await?.route(&args.topic).await {
            Ok(Some(route)) => return Ok(route),
            Ok(None) => why.push(format!("{addr}: no route")),
            Err(e) => why.push(format!("{addr}: {e}")),
        }
    }
    bail!("topic {:?} has no route ({})", args.topic, why.join("; "))
}

/// Every queue of the route (readable or writable as `write` says), broker by broker.
fn queues(route: &TopicRouteData, write: bool) -> Vec<Queue> {
    let mut out = Vec::new();
    for q in &route.queue_datas {
        let Some(addr) = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == q.broker_name)
            .and_then(|b| b.broker_addrs.get(&0))
        else {
            continue;
        };
        let (n, perm) = if write {
            (q.write_queue_nums, 2)
        } else {
            (q.read_queue_nums, 4)
        };
        if q.perm & perm == 0 {
            continue;
        }
        out.extend((0..n).map(|id| Queue {
            broker: addr.clone(),
            id,
        }));
    }
    out
}

/// Sends `--count` messages round robin over the writable queues; prints each id.
pub async fn produce(args: ProduceArgs) -> Result<()> {
    let route = route(&args.client).await?;
    let queues = queues(&route, true);
    if queues.is_empty() {
        bail!("topic {:?} has no writable queue", args.client.topic);
    }
    let mut brokers = Brokers::new(&args.client);
    for i in 0..args.count {
        let q = &queues[i as usize % queues.len()];
        let broker = brokers.get(&q.broker).await?;
        let properties = "WAIT\u{1}true\u{2}";
        let req = RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
            .with_ext("a", "mq_broker_cli")
            .with_ext("b", args.client.topic.as_str())
            .with_ext("c", "TBW102")
            .with_ext("d", "4")
            .with_ext("e", q.id.to_string())
            .with_ext("f", "0")
            .with_ext("g", mq_broker::broker::table::now_millis().to_string())
            .with_ext("h", "0")
            .with_ext("i", properties)
            .with_ext("j", "0")
            .with_ext("k", "false")
            .with_ext("m", "false")
            .with_body(args.body.clone().into_bytes());
        let answer = broker.request(req).await?;
        if answer.code != response_code::SUCCESS {
            bail!(
                "send to {} refused ({}): {}",
                q.broker,
                answer.code,
                answer.remark.unwrap_or_default()
            );
        }
        println!("{}", answer.ext("msgId").unwrap_or_default());
    }
    Ok(())
}

/// Pulls every readable queue from the group's committed offset, printing each body,
/// until `--count` messages or the timeout.
pub async fn consume(args: ConsumeArgs) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let route = route(&args.client).await?;
    let queues = queues(&route, false);
    let mut brokers = Brokers::new(&args.client);
    let mut offsets = Vec::with_capacity(queues.len());
    for q in &queues {
        let broker = brokers.get(&q.broker).await?;
        offsets.push(committed(broker, &args, q.id).await?);
    }
    let mut got = 0u64;
    let want = args.count.unwrap_or(u64::MAX);
    while got < want && Instant::now() < deadline {
        let mut round = 0;
        for (q, offset) in queues.iter().zip(offsets.iter_mut()) {
            let broker = brokers.get(&q.broker).await?;
            let (messages, next) = pull(broker, &args, q.id, *offset).await?;
            for m in messages.iter().take((want - got) as usize) {
                println!("{}", String::from_utf8_lossy(&m.body));
                got += 1;
                round += 1;
            }
            if next != *offset {
                *offset = next;
                commit(broker, &args, q.id, next).await?;
            }
        }
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if args.count.is_some_and(|n| got < n) {
        bail!(
            "consumed {got} of {want} messages within {} s",
            args.timeout_secs
        );
    }
    Ok(())
}

fn group_request(code: i32, args: &ConsumeArgs, queue: i32) -> RemotingCommand {
    RemotingCommand::new_request(code)
        .with_ext("consumerGroup", args.group.as_str())
        .with_ext("topic", args.client.topic.as_str())
        .with_ext("queueId", queue.to_string())
}

/// The group's committed offset of a queue (0 when it has none).
async fn committed(broker: &AdminClient, args: &ConsumeArgs, queue: i32) -> Result<i64> {
    let answer = broker
        .request(group_request(
            request_code::QUERY_CONSUMER_OFFSET,
            args,
            queue,
        ))
        .await?;
    match answer.code {
        response_code::SUCCESS => Ok(answer
            .ext("offset")
            .and_then(|o| o.parse().ok())
            .unwrap_or(0)),
        response_code::QUERY_NOT_FOUND => Ok(0),
        code => bail!(
            "offset of queue {queue} at {} refused ({code}): {}",
            broker.addr(),
            answer.remark.unwrap_or_default()
        ),
    }
}

async fn commit(broker: &AdminClient, args: &ConsumeArgs, queue: i32, offset: i64) -> Result<()> {
    let req = group_request(request_code::UPDATE_CONSUMER_OFFSET, args, queue)
        .with_ext("commitOffset", offset.to_string());
    let answer = broker.request(req).await?;
    if answer.code != response_code::SUCCESS {
        bail!(
            "committing offset {offset} of queue {queue} refused ({}): {}",
            answer.code,
            answer.remark.unwrap_or_default()
        );
    }
    Ok(())
}

/// One pull of `queue` at `offset`: the messages and the next offset.
async fn pull(
    broker: &AdminClient,
    args: &ConsumeArgs,
    queue: i32,
    offset: i64,
) -> Result<(Vec<QueriedMessage>, i64)> {
    const PULL_FLAG_SUBSCRIPTION: i32 = 0x4;
    let req = group_request(request_code::PULL_MESSAGE, args, queue)
        .with_ext("queueOffset", offset.to_string())
        .with_ext("maxMsgNums", "32")
        .with_ext("sysFlag", PULL_FLAG_SUBSCRIPTION.to_string())
        .with_ext("commitOffset", "0")
        .with_ext("suspendTimeoutMillis", "0")
        .with_ext("subscription", "*")
        .with_ext("subVersion", "0")
        .with_ext("expressionType", "TAG");
    let answer = broker.request(req).await?;
    let next = answer
        .ext("nextBeginOffset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(offset);
    match answer.code {
        response_code::SUCCESS => {
            let body = answer.body.unwrap_or_default();
            let messages = QueriedMessage::decode_all(&body).context("decoding pulled messages")?;
            Ok((messages, next))
        }
        response_code::PULL_NOT_FOUND
        | response_code::PULL_RETRY_IMMEDIATELY
        | response_code::PULL_OFFSET_MOVED => Ok((vec![], next)),
        code => bail!(
            "pull of queue {queue} at {} refused ({code}): {}",
            broker.addr(),
            answer.remark.unwrap_or_default()
        ),
    }
}

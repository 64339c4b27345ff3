//! `mq-broker admin …`: the mqadmin habit over the lib's admin client.
//!
//! Broker-side commands act on `--broker-addr` (repeatable or `;`-separated), by default on
//! every master broker the name server's cluster info lists (`--cluster` narrows that).
//! Output is an aligned table, or JSON with `--output json` (queue-keyed maps as lists of
//! `[queue, value]` pairs).
//!
//! Servers started with an admin key refuse unsigned admin calls and registrations
//! whatever `aclEnable` says, so calls against them need `--access-key`/`--secret-key`:
//! the instance's admin key (or an admin account of its ACL file).

mod table;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use mq_broker::broker::groups::{SubscriptionGroupConfig, group_config};
use mq_broker::client::{AdminClient, AdminError, Credentials};
use mq_broker::remoting::body::{ClusterInfo, PERM_READ, PERM_WRITE, TopicConfig};
use serde_json::{Value, json};
use std::time::Duration;
use table::{Table, utc_time};

/// Admin commands against running name servers and brokers. Servers started with an
/// admin key refuse unsigned admin calls (whether or not ACL is on): sign them with the
/// instance's admin key, `--access-key`/`--secret-key`.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Name servers, `host:port;host:port`.
    #[arg(
        long,
        global = true,
        env = "NAMESRV_ADDR",
        default_value = "127.0.0.1:9876"
    )]
    pub namesrv_addr: String,
    /// Brokers to act on (default: every master in the name server's cluster info).
    #[arg(long, global = true, value_delimiter = ';')]
    pub broker_addr: Vec<String>,
    /// Only brokers of this cluster (when brokers come from the name server).
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// Seconds one call may take.
    #[arg(long, global = true, default_value_t = 5)]
    pub timeout_secs: u64,
    /// Access key to sign every request with: the instance's admin key (the
    /// `--admin-access-key` its servers were started with; they refuse unsigned admin
    /// calls whether or not ACL is on), or an admin account of the ACL file.
    #[arg(long, global = true, env = "MQ_ACCESS_KEY", requires = "secret_key")]
    pub access_key: Option<String>,
    /// Secret key of that key or account (the instance's `--admin-secret-key`).
    #[arg(long, global = true, env = "MQ_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Admin commands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Topics: create, list, delete, route, stats.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Subscription groups: create, list, delete, connections.
    #[command(subcommand)]
    Group(GroupCommand),
    /// A consumer group's progress per queue (accumulation).
    ConsumeStats {
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Clusters and their brokers.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

/// Topic commands.
#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Creates or updates a topic on the brokers.
    Create {
        /// Topic name.
        topic: String,
        /// Read and write queues.
        #[arg(long, default_value_t = 8)]
        queues: i32,
        /// Read queues (default: `--queues`).
        #[arg(long)]
        read_queues: Option<i32>,
        /// Write queues (default: `--queues`).
        #[arg(long)]
        write_queues: Option<i32>,
        /// Permission bits: 6 read-write, 4 read-only, 2 write-only.
        #[arg(long, default_value_t = PERM_READ | PERM_WRITE)]
        perm: i32,
        /// Ordered topic.
        #[arg(long)]
        order: bool,
    },
    /// Lists the brokers' topics.
    List,
    /// Deletes a topic from the brokers and the name servers.
    Delete {
        /// Topic name.
        topic: String,
    },
    /// Shows a topic's route from the name server.
    Route {
        /// Topic name.
        topic: String,
    },
    /// Shows a topic's min/max offsets per queue.
    Stats {
        /// Topic name.
        topic: String,
    },
}

/// Subscription group commands.
#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Creates or updates a subscription group on the brokers.
    Create {
        /// Group name.
        group: String,
        /// Deliveries before the dead-letter queue.
        #[arg(long, default_value_t = 16)]
        retry_max_times: i32,
        /// Queues of the group's retry topic.
        #[arg(long, default_value_t = 1)]
        retry_queues: i32,
        /// Stop delivering to the group.
        #[arg(long)]
        disable_consume: bool,
        /// Refuse broadcasting consumers.
        #[arg(long)]
        disable_broadcast: bool,
    },
    /// Lists the brokers' subscription groups.
    List,
    /// Deletes a group, its offsets and its retry/DLQ topics from the brokers.
    Delete {
        /// Group name.
        group: String,
    },
    /// Shows a consumer group's online clients.
    Connections {
        /// Group name.
        group: String,
    },
}

/// Cluster commands.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Lists clusters, brokers and their runtime figures.
    List,
}

/// What a command prints, in both formats.
struct Report {
    table: Table,
    json: Value,
}

/// Runs one admin command and prints its report.
pub async fn run(args: AdminArgs) -> Result<()> {
    let ctx = Ctx {
        namesrv: args.namesrv_addr.clone(),
        brokers: args.broker_addr.clone(),
        cluster: args.cluster.clone(),
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
        credentials: args
            .access_key
            .zip(args.secret_key)
            .map(|(ak, sk)| Credentials::new(ak, sk)),
    };
    let (report, failed) = ctx.execute(args.command).await?;
    match args.output {
        Output::Table => print!("{}", report.table.render()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report.json)?),
    }
    if failed > 0 {
        bail!("{failed} broker(s) failed, see above");
    }
    Ok(())
}

/// Where commands go.
struct Ctx {
    namesrv: String,
    brokers: Vec<String>,
    cluster: Option<String>,
    timeout: Duration,
    credentials: Option<Credentials>,
}

impl Ctx {
    /// An admin connection to `addr`, signing with the given credentials.
    async fn connect(&self, addr: &str) -> Result<AdminClient, AdminError> {
        let client = AdminClient::connect(addr, self.timeout).await?;
        Ok(match &self.credentials {
            Some(credentials) => client.with_credentials(credentials.clone()),
            None => client,
        })
    }

    /// Runs a command; returns its report and how many brokers failed.
    async fn execute(&self, command: AdminCommand) -> Result<(Report, usize)> {
        match command {
            AdminCommand::Topic(command) => self.topic(command).await,
            AdminCommand::Group(command) => self.group(command).await,
            AdminCommand::ConsumeStats { group, topic } => {
                self.consume_stats(&group, topic.as_deref()).await
            }
            AdminCommand::Cluster(ClusterCommand::List) => ok(self.cluster_list().await?),
        }
    }

    async fn topic(&self, command: TopicCommand) -> Result<(Report, usize)> {
        match command {
            TopicCommand::Create {
                topic,
                queues,
                read_queues,
                write_queues,
                perm,
                order,
            } => {
                let config = TopicConfig {
                    topic_name: topic,
                    read_queue_nums: read_queues.unwrap_or(queues),
                    write_queue_nums: write_queues.unwrap_or(queues),
                    perm,
                    order,
                    ..TopicConfig::default()
                };
                self.create_topic(&config).await
            }
            TopicCommand::List => self.list_topics().await,
            TopicCommand::Delete { topic } => self.delete_topic(&topic).await,
            TopicCommand::Route { topic } => ok(self.route(&topic).await?),
            TopicCommand::Stats { topic } => self.topic_stats(&topic).await,
        }
    }

    async fn group(&self, command: GroupCommand) -> Result<(Report, usize)> {
        match command {
            GroupCommand::Create {
                group,
                retry_max_times,
                retry_queues,
                disable_consume,
                disable_broadcast,
            } => {
                let config = SubscriptionGroupConfig {
                    retry_max_times,
                    retry_queue_nums: retry_queues,
                    consume_enable: !disable_consume,
                    consume_broadcast_enable: !disable_broadcast,
                    ..group_config(&group)
                };
                self.create_group(&config).await
            }
            GroupCommand::List => self.list_groups().await,
            GroupCommand::Delete { group } => self.delete_group(&group).await,
            GroupCommand::Connections { group } => self.connections(&group).await,
        }
    }

    /// The name servers, in the order given.
    fn namesrv_addrs(&self) -> Vec<String> {
        self.namesrv
            .split(';')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A connection to the first name server that answers.
    async fn namesrv(&self) -> Result<AdminClient> {
        let mut last = None;
        for addr in self.namesrv_addrs() {
            match self.connect(&addr).await {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e).context("no name server answered"),
            None => bail!("no name server address given (--namesrv-addr)"),
        }
    }

    async fn cluster_info(&self) -> Result<ClusterInfo> {
        Ok(self.namesrv().await?.cluster_info().await?)
    }

    /// The brokers broker-side commands act on.
    async fn broker_addrs(&self) -> Result<Vec<String>> {
        if !self.brokers.is_empty() {
            return Ok(self.brokers.clone());
        }
        let info = self.cluster_info().await?;
        let addrs: Vec<String> = info
            .broker_addr_table
            .values()
            .filter(|b| self.cluster.as_ref().is_none_or(|c| *c == b.cluster))
            .filter_map(|b| b.broker_addrs.get(&0).cloned())
            .collect();
        if addrs.is_empty() {
            bail!("the name server knows no master broker; pass --broker-addr");
        }
        Ok(addrs)
    }

    /// Connects to every target broker.
    async fn brokers(&self) -> Result<Vec<AdminClient>> {
        let mut clients = vec![];
        for addr in self.broker_addrs().await? {
            clients.push(self.connect(&addr).await?);
        }
        Ok(clients)
    }
}

/// A report with no failures.
fn ok(report: Report) -> Result<(Report, usize)> {
    Ok((report, 0))
}

/// One row per broker saying whether an action worked; counts failures.
struct Outcomes {
    table: Table,
    json: Vec<Value>,
    failed: usize,
}

impl Outcomes {
    fn new() -> Self {
        Self {
            table: Table::new(&["BROKER", "RESULT"]),
            json: vec![],
            failed: 0,
        }
    }

    fn add(&mut self, broker: &str, result: Result<(), mq_broker::client::AdminError>) {
        let text = match &result {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                self.failed += 1;
                format!("error: {e}")
            }
        };
        self.table.row(vec![broker.to_owned(), text.clone()]);
        self.json
            .push(json!({"broker": broker, "ok": result.is_ok(), "result": text}));
    }

    fn finish(self) -> Result<(Report, usize)> {
        let report = Report {
            table: self.table,
            json: Value::Array(self.json),
        };
        Ok((report, self.failed))
    }
}

impl Ctx {
    async fn create_topic(&self, config: &TopicConfig) -> Result<(Report, usize)> {
        let mut out = Outcomes::new();
        for broker in self.brokers().await? {
            out.add(broker.addr(), broker.create_topic(config).await);
        }
        out.finish()
    }

    async fn delete_topic(&self, topic: &str) -> Result<(Report, usize)> {
        let mut out = Outcomes::new();
        for broker in self.brokers().await? {
            out.add(broker.addr(), broker.delete_topic(topic).await);
        }
        for addr in self.namesrv_addrs() {
            let result = match self.connect(&addr).await {
                Ok(namesrv) => namesrv.delete_topic_in_namesrv(topic).await,
                Err(e) => Err(e),
            };
            out.add(&format!("namesrv {addr}"), result);
        }
        out.finish()
    }

    async fn create_group(&self, config: &SubscriptionGroupConfig) -> Result<(Report, usize)> {
        let mut out = Outcomes::new();
        for broker in self.brokers().await? {
            out.add(broker.addr(), broker.create_group(config).await);
        }
        out.finish()
    }

    async fn delete_group(&self, group: &str) -> Result<(Report, usize)> {
        let mut out = Outcomes::new();
        for broker in self.brokers().await? {
            out.add(broker.addr(), broker.delete_group(group).await);
        }
        out.finish()
    }

    async fn list_topics(&self) -> Result<(Report, usize)> {
        let mut table = Table::new(&["TOPIC", "BROKER", "READ", "WRITE", "PERM", "ORDER"]);
        let mut json = vec![];
        for broker in self.brokers().await? {
            for t in broker.topics().await? {
                table.row(vec![
                    t.topic_name.clone(),
                    broker.addr().to_owned(),
                    t.read_queue_nums.to_string(),
                    t.write_queue_nums.to_string(),
                    t.perm.to_string(),
                    t.order.to_string(),
                ]);
                json.push(json!({"broker": broker.addr(), "topic": t}));
            }
        }
        ok(Report {
            table,
            json: Value::Array(json),
        })
    }

    async fn list_groups(&self) -> Result<(Report, usize)> {
        let mut table = Table::new(&[
            "GROUP",
            "BROKER",
            "CONSUME",
            "BROADCAST",
            "RETRY MAX",
            "RETRY QUEUES",
        ]);
        let mut json = vec![];
        for broker in self.brokers().await? {
            for g in broker.groups().await? {
                table.row(vec![
                    g.group_name.clone(),
                    broker.addr().to_owned(),
                    g.consume_enable.to_string(),
                    g.consume_broadcast_enable.to_string(),
                    g.retry_max_times.to_string(),
                    g.retry_queue_nums.to_string(),
                ]);
                json.push(json!({"broker": broker.addr(), "group": g}));
            }
        }
        ok(Report {
            table,
            json: Value::Array(json),
        })
    }

    async fn route(&self, topic: &str) -> Result<Report> {
        let Some(route) = self.namesrv().await?.route(topic).await? else {
            bail!("no route for topic {topic}: no live broker has it");
        };
        let mut table = Table::new(&["BROKER", "ADDRESS", "READ", "WRITE", "PERM"]);
        for q in &route.queue_datas {
            let addr = route
                .broker_datas
                .iter()
                .find(|b| b.broker_name == q.broker_name)
                .and_then(|b| b.broker_addrs.get(&0).cloned())
                .unwrap_or_else(|| "-".to_owned());
            table.row(vec![
                q.broker_name.clone(),
                addr,
                q.read_queue_nums.to_string(),
                q.write_queue_nums.to_string(),
                q.perm.to_string(),
            ]);
        }
        Ok(Report {
            table,
            json: serde_json::to_value(&route)?,
        })
    }

    async fn topic_stats(&self, topic: &str) -> Result<(Report, usize)> {
        let mut table = Table::new(&[
            "BROKER",
            "QUEUE",
            "MIN OFFSET",
            "MAX OFFSET",
            "LAST UPDATED (UTC)",
        ]);
        let mut json = vec![];
        for broker in self.brokers().await? {
            let stats = broker.topic_stats(topic).await?;
            for (mq, o) in &stats.offset_table.0 {
                table.row(vec![
                    mq.broker_name.clone(),
                    mq.queue_id.to_string(),
                    o.min_offset.to_string(),
                    o.max_offset.to_string(),
                    utc_time(o.last_update_timestamp),
                ]);
            }
            json.push(json!({"broker": broker.addr(), "stats": stats}));
        }
        ok(Report {
            table,
            json: Value::Array(json),
        })
    }

    async fn consume_stats(&self, group: &str, topic: Option<&str>) -> Result<(Report, usize)> {
        let mut table = Table::new(&[
            "TOPIC",
            "BROKER",
            "QUEUE",
            "BROKER OFFSET",
            "CONSUMER OFFSET",
            "DIFF",
            "LAST CONSUMED (UTC)",
        ]);
        let (mut json, mut tps, mut diff) = (vec![], 0.0, 0);
        for broker in self.brokers().await? {
            let stats = broker.consume_stats(group, topic).await?;
            for (mq, o) in &stats.offset_table.0 {
                table.row(vec![
                    mq.topic.clone(),
                    mq.broker_name.clone(),
                    mq.queue_id.to_string(),
                    o.broker_offset.to_string(),
                    o.consumer_offset.to_string(),
                    o.diff().to_string(),
                    utc_time(o.last_timestamp),
                ]);
            }
            tps += stats.consume_tps;
            diff += stats.total_diff();
            json.push(json!({"broker": broker.addr(), "stats": stats}));
        }
        table.note(format!("consume TPS: {tps:.2}  diff total: {diff}"));
        ok(Report {
            table,
            json: Value::Array(json),
        })
    }

    async fn connections(&self, group: &str) -> Result<(Report, usize)> {
        let mut table = Table::new(&[
            "BROKER",
            "CLIENT ID",
            "CLIENT ADDRESS",
            "LANGUAGE",
            "VERSION",
        ]);
        let mut json = vec![];
        for broker in self.brokers().await? {
            let conns = match broker.consumer_connections(group).await {
                Err(e) if e.is_not_found() => continue,
                other => other?,
            };
            for c in &conns.connection_set {
                table.row(vec![
                    broker.addr().to_owned(),
                    c.client_id.clone(),
                    c.client_addr.clone(),
                    c.language.clone(),
                    c.version.to_string(),
                ]);
            }
            json.push(json!({"broker": broker.addr(), "connections": conns}));
        }
        ok(Report {
            table,
            json: Value::Array(json),
        })
    }

    async fn cluster_list(&self) -> Result<Report> {
        let info = self.cluster_info().await?;
        let mut table = Table::new(&[
            "CLUSTER",
            "BROKER",
            "ID",
            "ADDRESS",
            "VERSION",
            "IN TPS",
            "OUT TPS",
            "PUT TOTAL",
            "GET TOTAL",
        ]);
        let mut json = vec![];
        for (cluster, names) in &info.cluster_addr_table {
            for name in names {
                let Some(data) = info.broker_addr_table.get(name) else {
                    continue;
                };
                for (id, addr) in &data.broker_addrs {
                    let runtime = self.runtime(addr).await;
                    let get = |k: &str| {
                        runtime
                            .get(k)
                            .and_then(Value::as_str)
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let first = |k: &str| get(k).split(' ').next().unwrap_or("-").to_owned();
                    table.row(vec![
                        cluster.clone(),
                        name.clone(),
                        id.to_string(),
                        addr.clone(),
                        get("brokerVersionDesc"),
                        first("putTps"),
                        first("getTransferedTps"),
                        get("msgPutTotalTodayNow"),
                        get("msgGetTotalTodayNow"),
                    ]);
                    json.push(json!({"cluster": cluster, "brokerName": name, "brokerId": id, "addr": addr, "runtime": runtime}));
                }
            }
        }
        Ok(Report {
            table,
            json: Value::Array(json),
        })
    }

    /// A broker's runtime table as JSON, `{}` when it does not answer.
    async fn runtime(&self, addr: &str) -> Value {
        let info = match self.connect(addr).await {
            Ok(broker) => broker.runtime_info().await,
            Err(e) => Err(e),
        };
        match info {
            Ok(table) => json!(table),
            Err(e) => {
                tracing::warn!(broker = %addr, error = %e, "no runtime info");
                json!({})
            }
        }
    }
}

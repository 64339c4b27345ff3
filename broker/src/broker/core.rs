//! The broker: shared state and request dispatch.

use super::activity::Activity;
use super::arrivals::Arrivals;
use super::clients::ClientRegistry;
use super::config::BrokerConfig;
use super::gate::SendQueue;
use super::groups::{GroupTable, SubscriptionGroupConfig, group_config};
use super::lifecycle::Lifecycle;
use super::locks::QueueLocks;
use super::minute_stats::MinuteStats;
use super::offsets::ConsumerOffsets;
use super::persist::PersistError;
use super::refusal::{Refusal, Reply};
use super::topics::{TopicTable, topic_config};
use super::transaction::Transactions;
use crate::names::{self, DEFAULT_TOPIC};
use crate::net::{RequestContext, RequestHandler, not_supported};
use crate::remoting::body::{PERM_WRITE, TopicConfig};
use crate::remoting::{RemotingCommand, request_code, response_code};
use crate::store::MessageStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Messages stored.
    pub messages_in: AtomicU64,
    /// Bytes of message bodies stored.
    pub bytes_in: AtomicU64,
    /// Messages returned by pulls.
    pub messages_out: AtomicU64,
    /// Bytes returned by pulls.
    pub bytes_out: AtomicU64,
    /// Requests answered with an error code.
    pub errors: AtomicU64,
}

/// A broker: its store and the state its processors share.
pub struct Broker {
    pub(super) cfg: BrokerConfig,
    pub(super) store: Arc<MessageStore>,
    pub(super) topics: TopicTable,
    pub(super) groups: GroupTable,
    pub(super) offsets: ConsumerOffsets,
    pub(super) clients: ClientRegistry,
    pub(super) locks: QueueLocks,
    pub(super) arrivals: Arrivals,
    pub(super) stats: BrokerStats,
    pub(super) next_queue: AtomicU64,
    pub(super) registered: AtomicBool,
    pub(super) activity: Activity,
    pub(super) gate: SendQueue,
    pub(super) lifecycle: Lifecycle,
    pub(super) resets: super::reset::ResetGuards,
    pub(super) minutes: MinuteStats,
    pub(super) transactions: Transactions,
    pub(super) timer: Arc<super::timer_store::TimerStore>,
}

impl Broker {
    /// Opens the broker's state files next to an opened store.
    pub fn new(cfg: BrokerConfig, store: Arc<MessageStore>) -> Result<Self, PersistError> {
        let dir = cfg.data_dir.join("config");
        let state = dir.join("transaction.json");
        let transactions = Transactions::open(&store, &cfg.transactions, &state).map_err(|e| {
            super::persist::PersistError::Io {
                path: state.display().to_string(),
                source: std::io::Error::other(e),
            }
        })?;
        let timer_dir = cfg.data_dir.join("timer");
        let fsync = store.flush_policy() == crate::store::FlushPolicy::Sync;
        let timer =
            super::timer_store::TimerStore::open(&timer_dir, super::timer_store::SLOT, fsync)
                .map_err(|source| PersistError::Io {
                    path: timer_dir.display().to_string(),
                    source,
                })?;
        let broker = Self {
            topics: TopicTable::open(dir.join("topics.json"))?,
            groups: GroupTable::open(dir.join("subscriptionGroup.json"))?,
            offsets: ConsumerOffsets::open(dir.join("consumerOffset.json"))?,
            clients: ClientRegistry::new(cfg.client_idle_timeout),
            locks: QueueLocks::new(cfg.lock_expiry),
            arrivals: Arrivals::default(),
            stats: BrokerStats::default(),
            next_queue: AtomicU64::new(0),
            registered: AtomicBool::new(false),
            activity: Activity::new(),
            gate: SendQueue::new(&store, cfg.max_send_wait),
            lifecycle: Lifecycle::default(),
            resets: super::reset::ResetGuards::default(),
            minutes: MinuteStats::open(
                cfg.stats_bucket_ms,
                cfg.stats_max_series,
                dir.join("minuteStats.json"),
            ),
            transactions,
            timer: Arc::new(timer),
            store,
            cfg,
        };
        if broker.cfg.auto_create_topics {
            // Producers send unknown topics with defaultTopic=TBW102; its route tells them
            // this broker accepts auto-creation.
            broker.topics.get_or_create(
                DEFAULT_TOPIC,
                topic_config(DEFAULT_TOPIC, broker.cfg.default_topic_queues),
            )?;
        }
        Ok(broker)
    }

    /// The configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Arc<MessageStore> {
        &self.store
    }

    /// The topic table.
    pub fn topics(&self) -> &TopicTable {
        &self.topics
    }

    /// The subscription groups.
    pub fn groups(&self) -> &GroupTable {
        &self.groups
    }

    /// The consumer offsets.
    pub fn offsets(&self) -> &ConsumerOffsets {
        &self.offsets
    }

    /// The connected clients.
    pub fn clients(&self) -> &ClientRegistry {
        &self.clients
    }

    /// The counters.
    pub fn stats(&self) -> &BrokerStats {
        &self.stats
    }

    /// The per-minute put/consumed counts.
    pub fn minute_stats(&self) -> &MinuteStats {
        &self.minutes
    }

    /// A topic's config, creating it when this broker auto-creates topics (or it is the
    /// retry topic of a known group).
    /// `requested_queues` is the producer's `defaultTopicQueueNums` (capped by ours), as
    /// Java brokers size auto-created topics.
    pub(super) fn topic_for_write(
        &self,
        topic: &str,
        requested_queues: i32,
    ) -> Result<TopicConfig, Refusal> {
        if let Some(config) = self.topics.get(topic) {
            return Ok(config);
        }
        if let Some(group) = topic.strip_prefix(names::RETRY_PREFIX)
            && let Some(group) = self.group(group)?
        {
            let queues = group.retry_queue_nums.max(1);
            return Ok(self
                .topics
                .get_or_create(topic, topic_config(topic, queues))?);
        }
        if self.cfg.auto_create_topics {
            let queues = requested_queues.clamp(1, self.cfg.default_topic_queues.max(1));
            return Ok(self
                .topics
                .get_or_create(topic, topic_config(topic, queues))?);
        }
        Err(Refusal::new(
            response_code::TOPIC_NOT_EXIST,
            format!("topic[{topic}] not exist, apply first please!"),
        ))
    }

    /// A group's config, creating the default when this broker auto-creates groups.
    pub(super) fn group(&self, group: &str) -> Result<Option<SubscriptionGroupConfig>, Refusal> {
        if let Some(config) = self.groups.get(group) {
            return Ok(Some(config));
        }
        if self.cfg.auto_create_groups {
            return Ok(Some(self.groups.get_or_create(group, group_config(group))?));
        }
        Ok(None)
    }

    /// The queue a send without a queue id goes to: round robin over writable queues.
    pub(super) fn pick_queue(&self, config: &TopicConfig) -> i32 {
        let n = config.write_queue_nums.max(1) as u64;
        (self.next_queue.fetch_add(1, Ordering::Relaxed) % n) as i32
    }

    /// Drops silent clients (telling their groups to rebalance) and persists consumer
    /// offsets, forever (spawn it).
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut tick = tokio::time::interval(
            self.cfg
                .offset_persist_interval
                .min(Duration::from_secs(10)),
        );
        loop {
            tick.tick().await;
            for group in self.clients.expire(Instant::now()) {
                self.notify_consumers_changed(&group);
            }
            if let Err(e) = self.offsets.persist() {
                tracing::error!(error = %e, "persisting consumer offsets failed");
            }
            if let Err(e) = self.minutes.persist() {
                tracing::error!(error = %e, "persisting minute stats failed");
            }
        }
    }

    /// Flushes what a clean stop must not lose: consumer offsets and the store.
    pub fn shutdown(&self) -> Result<(), String> {
        self.offsets.persist().map_err(|e| e.to_string())?;
        self.minutes.persist().map_err(|e| e.to_string())?;
        self.timer.sync().map_err(|e| e.to_string())?;
        self.store.shutdown().map_err(|e| e.to_string())
    }

    async fn dispatch(&self, ctx: &RequestContext, req: &RemotingCommand) -> Reply {
        match req.code {
            request_code::SEND_MESSAGE | request_code::SEND_MESSAGE_V2 => self.send(ctx, req).await,
            request_code::SEND_BATCH_MESSAGE => self.send_batch(ctx, req).await,
            request_code::PULL_MESSAGE => self.pull(ctx, req).await,
            request_code::HEART_BEAT => self.heartbeat(ctx, req),
            request_code::UNREGISTER_CLIENT => self.unregister_client(ctx, req),
            request_code::GET_CONSUMER_LIST_BY_GROUP => self.consumer_list(req),
            request_code::QUERY_CONSUMER_OFFSET => self.query_consumer_offset(req),
            request_code::UPDATE_CONSUMER_OFFSET => self.update_consumer_offset(req),
            request_code::GET_MAX_OFFSET => self.max_offset(req),
            request_code::GET_MIN_OFFSET => self.min_offset(req),
            request_code::SEARCH_OFFSET_BY_TIMESTAMP => self.search_offset(req),
            request_code::GET_EARLIEST_MSG_STORETIME => self.earliest_store_time(req),
            request_code::LOCK_BATCH_MQ => self.lock_batch(req),
            request_code::UNLOCK_BATCH_MQ => self.unlock_batch(req),
            request_code::CONSUMER_SEND_MSG_BACK => self.send_back(req).await,
            request_code::QUERY_MESSAGE | request_code::VIEW_MESSAGE_BY_ID => self
                .query(req)
                .await
                .unwrap_or_else(|| Ok(not_supported(req))),
            code if super::admin::is_admin(code) => match self.query(req).await {
                Some(reply) => reply,
                None => self.admin(req),
            },
            code if super::consume::is_consume_admin(code) => self.consume_admin(req).await,
            request_code::END_TRANSACTION => self.end_transaction(req).await,
            _ => Ok(not_supported(req)),
        }
    }
}

/// A success response to `req`.
pub(super) fn ok(req: &RemotingCommand) -> RemotingCommand {
    RemotingCommand::response_to(req, response_code::SUCCESS, None)
}

/// Whether a topic accepts writes.
pub(super) fn writable(config: &TopicConfig) -> bool {
    config.perm & PERM_WRITE != 0
}

impl RequestHandler for Broker {
    async fn handle(
        &self,
        ctx: RequestContext,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        tracing::trace!(code = request.code, peer = %ctx.channel.peer_addr(), "request");
        // Counted until answered, so a clean stop can wait for it (lifecycle.rs).
        let _in_flight = self.lifecycle.enter();
        let answered = match self.authorize(&request) {
            Ok(()) => self.dispatch(&ctx, &request).await,
            Err(denied) => Err(denied),
        };
        let response = answered.unwrap_or_else(|refusal| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(code = request.code, answer = refusal.code, remark = %refusal.remark, "request refused");
            refusal.into_response(&request)
        });
        Some(response)
    }
}

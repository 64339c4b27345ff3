//! Transactional messages (`TransactionalMessageServiceImpl`, `EndTransactionProcessor`,
//! `TransactionalMessageCheckService` in Apache RocketMQ).
//!
//! - A send with the PREPARED sysflag (or `TRAN_MSG=true`) stores a *half*: the message
//!   goes to [`HALF_TOPIC`] queue 0 with its real topic and queue in `REAL_TOPIC` /
//!   `REAL_QID`, as Java does, so neither consumers nor key queries of the real topic
//!   ever see it. The answer carries the half's offset id (what END_TRANSACTION names)
//!   and the transaction id (the client's `UNIQ_KEY`).
//! - END_TRANSACTION (37) loads the half by `commitLogOffset`, requires PUB on its real
//!   topic and the producer group that sent it, and ends it once: commit re-puts it to
//!   its real topic and queue (keeping `UNIQ_KEY`, keys, tags, born host and time),
//!   rollback drops it. A half that is no longer pending is left alone (a repeated
//!   commit never delivers twice).
//! - Every outcome, and every check-back sent, is an entry of the op log
//!   [`OP_TOPIC`] queue 0 (body: the half's commit-log offset; tag `d` ended, `c`
//!   checked). On startup the pending set is the halves still stored minus those the
//!   op log ended (`halves.rs`), so halves survive restarts and crashes; only offsets
//!   are kept in memory. Each recovery reads the two queues from where the previous one
//!   found the oldest pending half ([`RecoveryStart`], `config/transaction.json`).
//! - Check-back: a pending half is first checked `CHECK_IMMUNITY_TIME_IN_SECONDS` after
//!   it was stored (else the broker's transaction timeout), then every check interval:
//!   CHECK_TRANSACTION_STATE (39, oneway) goes to one live producer connection of its
//!   group, with the half (real topic restored) as body. With no producer online the
//!   check is not counted and tried again an interval later. A half checked the maximum
//!   number of times is rolled back at its next due time, and counted.

use super::core::{Broker, ok};
use super::halves::{Op, Pending, PendingHalves, recover};
use super::refusal::{Refusal, Reply};
use super::schedule::{PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC};
use crate::acl::{Needs, Perm};
use crate::command_header;
use crate::net::RequestContext;
use crate::remoting::{
    CommandHeader, RemotingCommand, SendMessageRequestHeader, SendMessageResponseHeader,
    request_code, response_code,
};
use crate::store::message::{
    self, DecodedMessage, encode_properties, patch_for_append, properties_iter, property_value,
    sysflag,
};
use crate::store::{GetStatus, MessageStore, MessageToStore, StoreError};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The system topic halves wait in.
pub const HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
/// The op log: one entry per ended half and per check-back sent.
pub const OP_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
/// `broker.conf` key of [`TransactionConfig::timeout`] (ms).
pub const CONF_TIMEOUT: &str = "transactionTimeOut";
/// `broker.conf` key of [`TransactionConfig::check_interval`] (ms).
pub const CONF_CHECK_INTERVAL: &str = "transactionCheckInterval";
/// `broker.conf` key of [`TransactionConfig::check_max`].
pub const CONF_CHECK_MAX: &str = "transactionCheckMax";
/// GET_BROKER_RUNTIME_INFO key of the pending-half count (what a drain waits for).
pub const RUNTIME_HALF_PENDING: &str = "transactionHalfPending";
/// Property marking a half (`MessageConst.PROPERTY_TRANSACTION_PREPARED`).
pub const PROPERTY_TRAN_MSG: &str = "TRAN_MSG";
/// Property naming the producer group of a half.
pub const PROPERTY_PRODUCER_GROUP: &str = "PGROUP";
/// Property: earliest first check-back, in seconds after the send.
pub const PROPERTY_CHECK_IMMUNITY: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
/// Op-log tag of an ended half (Java's `REMOVETAG`).
const TAG_ENDED: &str = "d";
/// Op-log tag of a check-back sent.
const TAG_CHECKED: &str = "c";
/// Op-log property saying how a half ended (`commit`, `rollback`, `check-limit`).
const PROPERTY_OUTCOME: &str = "TRAN_OUTCOME";
/// Most halves checked per pass of the check service.
const CHECKS_PER_PASS: usize = 1_000;
/// Longest pause between passes of the check service.
const MAX_TICK: Duration = Duration::from_secs(1);
/// Entries read from the half and op queues per store read during recovery.
const RECOVERY_BATCH: usize = 256;

/// Transaction settings (Java's `transactionTimeOut`, `transactionCheckInterval`,
/// `transactionCheckMax`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionConfig {
    /// A half without `CHECK_IMMUNITY_TIME_IN_SECONDS` is first checked this long after it
    /// was stored.
    pub timeout: Duration,
    /// Time between check-backs of a half.
    pub check_interval: Duration,
    /// Check-backs sent before a half is rolled back.
    pub check_max: u32,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(6),
            check_interval: Duration::from_secs(60),
            check_max: 15,
        }
    }
}

/// Transaction counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TransactionStats {
    /// CHECK_TRANSACTION_STATE requests sent.
    pub checks: AtomicU64,
    /// Halves committed.
    pub commits: AtomicU64,
    /// Halves rolled back (by the producer or after the check limit).
    pub rollbacks: AtomicU64,
    /// Halves rolled back because they reached the check limit.
    pub check_limit_rollbacks: AtomicU64,
}

/// The broker's transaction state: pending halves and counters.
#[derive(Debug, Default)]
pub struct Transactions {
    pending: PendingHalves,
    stats: TransactionStats,
}

/// Where the next recovery starts reading (`config/transaction.json`): every half below
/// `half_offset` in the half queue has ended, and every op-log entry below `op_offset`
/// is about such a half (an op is always written after its half). Computed at the end
/// of a recovery, when no send runs, so the next start reads only what came since.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryStart {
    /// First half-queue offset that may still be pending.
    pub half_offset: u64,
    /// First op-queue offset that may be about such a half.
    pub op_offset: u64,
}

impl Transactions {
    /// Derives the pending halves from the half topic and the op log of `store`, reading
    /// from `start` on; returns them and where the next recovery may start.
    pub fn recover(
        store: &MessageStore,
        cfg: &TransactionConfig,
        start: RecoveryStart,
    ) -> Result<(Self, RecoveryStart), StoreError> {
        let mut halves = vec![];
        let mut queue_offsets = std::collections::HashMap::new();
        scan(store, HALF_TOPIC, start.half_offset, |q, at, m| {
            halves.push((at, first_check_ms(m, cfg)));
            queue_offsets.insert(at, q);
        })?;
        let mut ops = vec![];
        let mut op_positions = vec![];
        scan(store, OP_TOPIC, start.op_offset, |q, op_at, m| {
            op_positions.push((q, op_at));
            let Some(at) = std::str::from_utf8(m.body)
                .ok()
                .and_then(|b| b.trim().parse().ok())
            else {
                return;
            };
            match m.tags() {
                Some(TAG_ENDED) => ops.push(Op::Ended(at)),
                Some(TAG_CHECKED) => ops.push(Op::Checked(at)),
                _ => {}
            }
        })?;
        let pending = recover(halves, ops);
        let next = match pending.keys().next() {
            // The oldest pending half, and the first op written after it.
            Some(oldest) => RecoveryStart {
                half_offset: queue_offsets
                    .get(oldest)
                    .copied()
                    .unwrap_or(start.half_offset),
                op_offset: op_positions
                    .iter()
                    .find(|(_, op_at)| op_at > oldest)
                    .map_or(store.max_offset(OP_TOPIC, 0), |(q, _)| *q),
            },
            None => RecoveryStart {
                half_offset: store.max_offset(HALF_TOPIC, 0),
                op_offset: store.max_offset(OP_TOPIC, 0),
            },
        };
        if !pending.is_empty() {
            tracing::info!(
                pending = pending.len(),
                "pending transaction halves recovered"
            );
        }
        let recovered = Self {
            pending: PendingHalves::new(pending),
            stats: TransactionStats::default(),
        };
        Ok((recovered, next))
    }

    /// Recovers from `store` starting where `state` (a [`RecoveryStart`] file) says, and
    /// writes where the next recovery starts.
    pub fn open(
        store: &MessageStore,
        cfg: &TransactionConfig,
        state: &std::path::Path,
    ) -> Result<Self, String> {
        let start: RecoveryStart = super::persist::load(state).map_err(|e| e.to_string())?;
        let (recovered, next) = Self::recover(store, cfg, start).map_err(|e| e.to_string())?;
        super::persist::save(state, &next).map_err(|e| e.to_string())?;
        Ok(recovered)
    }

    /// Halves waiting for a commit or rollback.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The counters.
    pub fn stats(&self) -> &TransactionStats {
        &self.stats
    }
}

/// Calls `each` with the queue offset, commit-log offset and content of every message of
/// queue 0 of `topic` from queue offset `from` on, in queue order.
fn scan(
    store: &MessageStore,
    topic: &str,
    from: u64,
    mut each: impl FnMut(u64, u64, &DecodedMessage<'_>),
) -> Result<(), StoreError> {
    let mut offset = store.min_offset(topic, 0).max(from);
    loop {
        let got = store.get(topic, 0, offset, RECOVERY_BATCH, 8 << 20, &|_| true)?;
        for m in &got.messages {
            match message::decode(&m.data) {
                Ok(decoded) => each(m.queue_offset, m.phys_offset, &decoded),
                Err(e) => {
                    tracing::warn!(topic, phys = m.phys_offset, error = %e, "unreadable transaction entry skipped")
                }
            }
        }
        let advanced = got.next_begin_offset > offset;
        offset = got.next_begin_offset;
        if !advanced || !matches!(got.status, GetStatus::Found | GetStatus::NoMatchedMessage) {
            return Ok(());
        }
    }
}

/// When a half is first checked: its immunity time after it was stored, else the
/// transaction timeout.
fn first_check_ms(m: &DecodedMessage<'_>, cfg: &TransactionConfig) -> i64 {
    let immunity = m
        .property(PROPERTY_CHECK_IMMUNITY)
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|s| *s > 0)
        .map_or(cfg.timeout.as_millis() as i64, |s| s.saturating_mul(1_000));
    m.store_timestamp.saturating_add(immunity)
}

/// Whether a send is a half: the PREPARED sysflag, or `TRAN_MSG=true` (Java's broker
/// reads the property).
pub fn is_half(sys_flag: i32, properties: &str) -> bool {
    sys_flag & sysflag::TRANSACTION_MASK == sysflag::TRANSACTION_PREPARED
        || property_value(properties, PROPERTY_TRAN_MSG).is_some_and(|v| v == "true")
}

command_header! {
    /// END_TRANSACTION (37) request header (`EndTransactionRequestHeader`).
    pub struct EndTransactionHeader {
        /// Producer group that sent the half.
        producer_group: String = "producerGroup";
        /// The half's queue offset (unused: `commitLogOffset` names the half).
        tran_state_table_offset: Option<i64> = "tranStateTableOffset";
        /// The half's commit-log offset.
        commit_log_offset: i64 = "commitLogOffset";
        /// 0 unknown (nothing to do), 8 commit, 12 rollback.
        commit_or_rollback: i32 = "commitOrRollback";
        /// Whether this answers a check-back.
        from_transaction_check: Option<bool> = "fromTransactionCheck";
        /// The client's message id.
        msg_id: Option<String> = "msgId";
        /// The transaction id.
        transaction_id: Option<String> = "transactionId";
    }
}

command_header! {
    /// CHECK_TRANSACTION_STATE (39) request header (`CheckTransactionStateRequestHeader`).
    pub struct CheckTransactionStateHeader {
        /// The half's real topic.
        topic: Option<String> = "topic";
        /// The half's queue offset in the half topic.
        tran_state_table_offset: i64 = "tranStateTableOffset";
        /// The half's commit-log offset (what END_TRANSACTION sends back).
        commit_log_offset: i64 = "commitLogOffset";
        /// The client's message id (`UNIQ_KEY`).
        msg_id: Option<String> = "msgId";
        /// The transaction id.
        transaction_id: Option<String> = "transactionId";
        /// The half's offset message id.
        offset_msg_id: Option<String> = "offsetMsgId";
        /// This broker's name.
        broker_name: Option<String> = "brokerName";
    }
}

/// A refusal with SYSTEM_ERROR, Java's answer to a bad END_TRANSACTION.
fn refuse(remark: String) -> Refusal {
    Refusal::new(response_code::SYSTEM_ERROR, remark)
}

impl Broker {
    /// The transaction state.
    pub fn transactions(&self) -> &Transactions {
        &self.transactions
    }

    /// Stores a half (the send already chose its real topic and queue in `msg`).
    pub(super) async fn send_half(
        &self,
        ctx: &RequestContext,
        req: &RemotingCommand,
        h: &SendMessageRequestHeader,
        mut msg: MessageToStore,
    ) -> Reply {
        let real_queue = msg.queue_id;
        let real_queue_text = real_queue.to_string();
        let mut props: Vec<(&str, &str)> = properties_iter(&msg.properties)
            .filter(|(k, _)| *k != PROPERTY_REAL_TOPIC && *k != PROPERTY_REAL_QUEUE_ID)
            .collect();
        props.push((PROPERTY_REAL_TOPIC, &msg.topic));
        props.push((PROPERTY_REAL_QUEUE_ID, &real_queue_text));
        if !props.iter().any(|(k, _)| *k == PROPERTY_PRODUCER_GROUP) {
            props.push((PROPERTY_PRODUCER_GROUP, &h.producer_group));
        }
        if !props.iter().any(|(k, _)| *k == PROPERTY_TRAN_MSG) {
            props.push((PROPERTY_TRAN_MSG, "true"));
        }
        let properties = encode_properties(props);
        msg.properties = properties;
        msg.topic = HALF_TOPIC.to_owned();
        msg.queue_id = 0;
        // Stored as a plain message of the half topic, so its queue lists the halves.
        msg.sys_flag &= !sysflag::TRANSACTION_MASK;
        let uniq = property_value(&msg.properties, message::property::UNIQ_KEY).map(str::to_owned);
        let immunity = property_value(&msg.properties, PROPERTY_CHECK_IMMUNITY)
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|s| *s > 0)
            .map_or(self.cfg.transactions.timeout.as_millis() as i64, |s| {
                s.saturating_mul(1_000)
            });
        let results = self.put_send(ctx.received, vec![msg]).await?;
        let Some(put) = results.first() else {
            return Err(refuse("the half message was not stored".to_owned()));
        };
        self.transactions.pending.insert(
            put.phys_offset,
            put.store_timestamp.saturating_add(immunity),
        );
        let mut response = ok(req);
        response.set_header(&SendMessageResponseHeader {
            msg_id: put.msg_id.clone(),
            queue_id: real_queue,
            queue_offset: put.queue_offset as i64,
            transaction_id: Some(uniq.unwrap_or_else(|| put.msg_id.clone())),
            msg_region: Some("DefaultRegion".to_owned()),
            trace_on: Some(true),
        });
        Ok(response)
    }

    /// END_TRANSACTION: commits or rolls back a pending half.
    pub(super) async fn end_transaction(&self, req: &RemotingCommand) -> Reply {
        let h = EndTransactionHeader::from_command(req)?;
        let commit = match h.commit_or_rollback {
            sysflag::TRANSACTION_NOT => return Ok(ok(req)),
            sysflag::TRANSACTION_COMMIT => true,
            sysflag::TRANSACTION_ROLLBACK => false,
            other => {
                return Err(Refusal::new(
                    response_code::MESSAGE_ILLEGAL,
                    format!("commitOrRollback must be 0, 8 or 12, not {other}"),
                ));
            }
        };
        let at = u64::try_from(h.commit_log_offset)
            .map_err(|_| refuse(format!("bad commitLogOffset {}", h.commit_log_offset)))?;
        let data = self.load_half(at).await?;
        let half = message::decode(&data)
            .map_err(|e| refuse(format!("the message at offset {at} is unreadable: {e}")))?;
        let real_topic = half_real_topic(&half, at)?;
        self.authorize_publish(req, &real_topic)?;
        let ns = &self.cfg.namespace;
        let owner = half.property(PROPERTY_PRODUCER_GROUP).unwrap_or_default();
        if ns.canonical(owner) != ns.canonical(&h.producer_group) {
            return Err(refuse(format!(
                "The producer group wrong: the half message at offset {at} belongs to producer group {owner}, not {}",
                h.producer_group
            )));
        }
        let Some(pending) = self.transactions.pending.claim(at) else {
            return Err(Refusal::new(
                response_code::TRANSACTION_FAILED,
                format!(
                    "the transaction of the half message at offset {at} already ended (committed or rolled back); nothing done"
                ),
            ));
        };
        let ended = match commit {
            true => self.commit_half(&half, at, &real_topic).await,
            false => self.log_end(at, "rollback").await,
        };
        if let Err(e) = ended {
            self.transactions.pending.restore(at, pending);
            return Err(e);
        }
        let counter = match commit {
            true => &self.transactions.stats.commits,
            false => &self.transactions.stats.rollbacks,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(at, commit, from_check = ?h.from_transaction_check, "transaction ended");
        Ok(ok(req))
    }

    /// The stored entry at `at`, if it is a half.
    async fn load_half(&self, at: u64) -> Result<Bytes, Refusal> {
        let store = Arc::clone(&self.store);
        let found = tokio::task::spawn_blocking(move || store.view_by_physical_offset(at))
            .await
            .map_err(|e| refuse(format!("store task failed: {e}")))??;
        found.ok_or_else(|| {
            refuse(format!(
                "Find prepared transaction message failed: no message at commit-log offset {at}"
            ))
        })
    }

    /// Checks that `req`'s account may publish to the (canonical) `topic` (when ACL is on).
    fn authorize_publish(&self, req: &RemotingCommand, topic: &str) -> Result<(), Refusal> {
        self.cfg
            .acl
            .authorize(req, || {
                let mut needs = Needs::default();
                needs.topic(topic, Perm::PUB);
                Ok(needs)
            })
            .map_err(|denied| Refusal::new(crate::acl::Denied::CODE, denied.0))
    }

    /// Re-puts a half to its real topic and queue, then logs its end.
    async fn commit_half(
        &self,
        half: &DecodedMessage<'_>,
        at: u64,
        real_topic: &str,
    ) -> Result<(), Refusal> {
        let msg = committed(half, at, real_topic)?;
        self.put(vec![msg]).await?;
        self.log_end(at, "commit").await
    }

    /// Appends an op-log entry that ends the half at `at`.
    async fn log_end(&self, at: u64, outcome: &str) -> Result<(), Refusal> {
        self.log_op(at, TAG_ENDED, Some(outcome)).await
    }

    async fn log_op(&self, at: u64, tag: &str, outcome: Option<&str>) -> Result<(), Refusal> {
        let mut props = vec![(message::property::TAGS, tag)];
        if let Some(outcome) = outcome {
            props.push((PROPERTY_OUTCOME, outcome));
        }
        let op =
            MessageToStore::new(OP_TOPIC, 0, at.to_string().into_bytes()).with_properties(props);
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.put(&op))
            .await
            .map_err(|e| refuse(format!("store task failed: {e}")))??;
        Ok(())
    }

    /// Checks due halves, forever (spawn it).
    pub async fn run_transaction_check(self: Arc<Self>) {
        let tick = self.cfg.transactions.check_interval.min(MAX_TICK) / 4;
        let mut tick = tokio::time::interval(tick.max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = super::table::now_millis();
            for (at, pending) in self.transactions.pending.due(now, CHECKS_PER_PASS) {
                if let Err(e) = self.check_half(at, pending, now).await {
                    tracing::warn!(at, error = %e.remark, "transaction check failed; retrying");
                    self.transactions
                        .pending
                        .postpone(at, now + self.check_interval_ms());
                }
            }
        }
    }

    fn check_interval_ms(&self) -> i64 {
        self.cfg.transactions.check_interval.as_millis() as i64
    }

    /// One due half: rolled back at the check limit, else checked with a live producer.
    async fn check_half(&self, at: u64, pending: Pending, now: i64) -> Result<(), Refusal> {
        let next = now + self.check_interval_ms();
        if pending.checks >= self.cfg.transactions.check_max {
            return self.roll_back_at_limit(at).await;
        }
        let data = match self.load_half(at).await {
            Ok(data) => data,
            Err(_) => {
                // Retention removed it: nothing can be committed any more.
                tracing::warn!(at, "a pending half message is gone from the store; dropped");
                self.transactions.pending.claim(at);
                return Ok(());
            }
        };
        let half = message::decode(&data)
            .map_err(|e| refuse(format!("the half at offset {at} is unreadable: {e}")))?;
        let group = self
            .cfg
            .namespace
            .canonical(half.property(PROPERTY_PRODUCER_GROUP).unwrap_or_default());
        let Some(producer) = self
            .clients
            .producers(&group)
            .into_iter()
            .filter(|c| !c.channel.is_closed())
            .max_by_key(|c| c.last_heartbeat)
        else {
            self.transactions.pending.postpone(at, next);
            return Ok(());
        };
        let request = self.check_request(&half, at, producer.bare)?;
        self.log_op(at, TAG_CHECKED, None).await?;
        self.transactions.pending.checked(at, next);
        self.transactions
            .stats
            .checks
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(at, %group, client = %producer.client_id, "transaction check sent");
        if let Err(e) = producer.channel.send_oneway(request).await {
            tracing::debug!(at, error = %e, "transaction check not delivered");
        }
        Ok(())
    }

    /// Rolls back a half that reached the check limit.
    async fn roll_back_at_limit(&self, at: u64) -> Result<(), Refusal> {
        let Some(pending) = self.transactions.pending.claim(at) else {
            return Ok(());
        };
        if let Err(e) = self.log_end(at, "check-limit").await {
            self.transactions.pending.restore(at, pending);
            return Err(e);
        }
        let stats = &self.transactions.stats;
        stats.rollbacks.fetch_add(1, Ordering::Relaxed);
        stats.check_limit_rollbacks.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            at,
            checks = pending.checks,
            "half message rolled back after the check limit"
        );
        Ok(())
    }

    /// CHECK_TRANSACTION_STATE for a half: the header and the half with its real topic
    /// and queue restored (bare for a bare client), as the producer's listener sees it.
    fn check_request(
        &self,
        half: &DecodedMessage<'_>,
        at: u64,
        bare: bool,
    ) -> Result<RemotingCommand, Refusal> {
        let real_topic = half_real_topic(half, at)?;
        let shown = match bare {
            true => self.cfg.namespace.bare(&real_topic),
            false => real_topic,
        };
        let mut msg = committed(half, at, &shown)?;
        msg.sys_flag = (msg.sys_flag & !sysflag::TRANSACTION_MASK) | sysflag::TRANSACTION_PREPARED;
        msg.properties = half.properties.to_string();
        let mut entry = message::encode(&msg, half.store_host, usize::MAX)
            .map_err(|e| refuse(format!("the half at offset {at} cannot be re-encoded: {e}")))?;
        patch_for_append(
            &mut entry,
            half.queue_offset,
            at as i64,
            half.store_timestamp,
        );
        let uniq = half.uniq_key().map(str::to_owned);
        let mut request = RemotingCommand::new_request(request_code::CHECK_TRANSACTION_STATE);
        request.set_header(&CheckTransactionStateHeader {
            topic: Some(shown),
            tran_state_table_offset: half.queue_offset,
            commit_log_offset: at as i64,
            msg_id: uniq.clone(),
            transaction_id: half
                .property("__transactionId__")
                .map(str::to_owned)
                .or(uniq),
            offset_msg_id: Some(half.msg_id()),
            broker_name: Some(self.cfg.broker_name.clone()),
        });
        Ok(request.with_body(entry))
    }
}

/// The real topic a half was sent to.
fn half_real_topic(half: &DecodedMessage<'_>, at: u64) -> Result<String, Refusal> {
    if half.topic != HALF_TOPIC {
        return Err(refuse(format!(
            "the message at commit-log offset {at} is not a half message of a transaction"
        )));
    }
    half.property(PROPERTY_REAL_TOPIC)
        .map(str::to_owned)
        .ok_or_else(|| refuse(format!("the half message at offset {at} has no REAL_TOPIC")))
}

/// The message a committed half becomes: its real topic and queue, the COMMIT sysflag,
/// the half's offset as PREPARED TX OFFSET, without the half's own properties.
fn committed(half: &DecodedMessage<'_>, at: u64, topic: &str) -> Result<MessageToStore, Refusal> {
    let queue_id = half
        .property(PROPERTY_REAL_QUEUE_ID)
        .and_then(|q| q.parse().ok())
        .ok_or_else(|| refuse(format!("the half message at offset {at} has no REAL_QID")))?;
    let properties = encode_properties(properties_iter(&half.properties).filter(|(k, _)| {
        *k != PROPERTY_REAL_TOPIC && *k != PROPERTY_REAL_QUEUE_ID && *k != PROPERTY_TRAN_MSG
    }));
    Ok(MessageToStore {
        topic: topic.to_owned(),
        queue_id,
        flag: half.flag,
        sys_flag: (half.sys_flag
            & !(sysflag::BORNHOST_V6 | sysflag::STOREHOST_V6 | sysflag::TRANSACTION_MASK))
            | sysflag::TRANSACTION_COMMIT,
        body: Bytes::copy_from_slice(half.body),
        properties,
        born_timestamp: half.born_timestamp,
        born_host: half.born_host,
        reconsume_times: half.reconsume_times,
        prepared_transaction_offset: at as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    fn store(name: &str) -> (MessageStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mq-tx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = StoreConfig::new(&dir);
        cfg.background = false;
        (MessageStore::open(cfg).expect("store opens"), dir)
    }

    fn half(body: &str, immunity: Option<&str>) -> MessageToStore {
        let mut props = vec![
            (PROPERTY_REAL_TOPIC, "orders"),
            (PROPERTY_REAL_QUEUE_ID, "0"),
            (PROPERTY_PRODUCER_GROUP, "GID_p"),
        ];
        if let Some(secs) = immunity {
            props.push((PROPERTY_CHECK_IMMUNITY, secs));
        }
        MessageToStore::new(HALF_TOPIC, 0, body.as_bytes().to_vec()).with_properties(props)
    }

    fn op(at: u64, tag: &str) -> MessageToStore {
        MessageToStore::new(OP_TOPIC, 0, at.to_string().into_bytes())
            .with_properties([(message::property::TAGS, tag)])
    }

    #[test]
    fn pending_halves_are_recovered_from_the_half_topic_and_the_op_log() {
        let (store, dir) = store("recover");
        let cfg = TransactionConfig::default();
        let a = store.put(&half("a", None)).unwrap();
        let b = store.put(&half("b", Some("30"))).unwrap();
        let c = store.put(&half("c", None)).unwrap();
        store.put(&op(a.phys_offset, TAG_CHECKED)).unwrap();
        store.put(&op(c.phys_offset, TAG_ENDED)).unwrap();
        // Garbage in the op log is skipped, not fatal.
        store
            .put(&MessageToStore::new(OP_TOPIC, 0, &b"not an offset"[..]))
            .unwrap();
        store.shutdown().unwrap();
        drop(store);

        let mut reopened = StoreConfig::new(&dir);
        reopened.background = false;
        let store = MessageStore::open(reopened).unwrap();
        let (tx, next) = Transactions::recover(&store, &cfg, RecoveryStart::default()).unwrap();
        assert_eq!(tx.pending(), 2, "c ended; a and b still pending");
        assert_eq!(
            next,
            RecoveryStart {
                half_offset: 0,
                op_offset: 0
            },
            "a (the oldest pending half) is first, so every op may matter"
        );
        let due = tx.pending.due(i64::MAX, 10);
        let first = |at: u64| due.iter().find(|d| d.0 == at).map(|d| d.1);
        let pa = first(a.phys_offset).expect("a pending");
        assert_eq!(pa.checks, 1, "the logged check is counted");
        assert_eq!(
            pa.next_check_ms,
            a.store_timestamp + 6_000,
            "transaction timeout"
        );
        let pb = first(b.phys_offset).expect("b pending");
        assert_eq!(
            pb.next_check_ms,
            b.store_timestamp + 30_000,
            "immunity time"
        );
        assert!(first(c.phys_offset).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_next_recovery_starts_at_the_oldest_pending_half_and_finds_the_same_set() {
        let (store, dir) = store("watermark");
        let cfg = TransactionConfig::default();
        let a = store.put(&half("a", None)).unwrap();
        store.put(&op(a.phys_offset, TAG_ENDED)).unwrap();
        let b = store.put(&half("b", None)).unwrap();
        store.put(&op(b.phys_offset, TAG_CHECKED)).unwrap();
        let c = store.put(&half("c", None)).unwrap();
        store.put(&op(c.phys_offset, TAG_ENDED)).unwrap();
        let (tx, next) = Transactions::recover(&store, &cfg, RecoveryStart::default()).unwrap();
        assert_eq!(tx.pending(), 1, "only b");
        assert_eq!(
            next,
            RecoveryStart {
                half_offset: 1,
                op_offset: 1
            },
            "a and its op are behind; b's check (op 1) is not"
        );
        let (again, then) = Transactions::recover(&store, &cfg, next).unwrap();
        let due = again.pending.due(i64::MAX, 10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, b.phys_offset);
        assert_eq!(due[0].1.checks, 1, "b's check is still counted");
        assert_eq!(then, next);

        // Once b ends, the next start skips everything read so far.
        store.put(&op(b.phys_offset, TAG_ENDED)).unwrap();
        let (done, last) = Transactions::recover(&store, &cfg, then).unwrap();
        assert_eq!(done.pending(), 0);
        assert_eq!(
            last,
            RecoveryStart {
                half_offset: 3,
                op_offset: 4
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn halves_are_sends_with_the_prepared_flag_or_tran_msg() {
        assert!(is_half(sysflag::TRANSACTION_PREPARED, ""));
        assert!(is_half(0, "TRAN_MSG\u{1}true\u{2}"));
        assert!(!is_half(sysflag::TRANSACTION_COMMIT, ""));
        assert!(!is_half(0, "TRAN_MSG\u{1}false\u{2}"));
    }
}

//! Arbitrary-time scheduled messages: `__STARTDELIVERTIME` (absolute epoch ms, 4.x/ONS
//! clients) and the 5.x `TIMER_DELIVER_MS` (absolute), `TIMER_DELAY_SEC` and
//! `TIMER_DELAY_MS` (relative to the broker's receipt), on any topic.
//!
//! A time now or past is stored at once; one further ahead than
//! [`BrokerConfig::timer_max_delay`](super::BrokerConfig) (40 days) is refused with
//! MESSAGE_ILLEGAL; anything else waits in the [`TimerStore`] (see `timer_store.rs`),
//! without its timer properties (so the re-put is never scheduled again), and a task
//! re-puts it to its real topic and queue when due, within a tick (25 ms) of its time.

use super::core::{Broker, ok};
use super::refusal::Refusal;
use super::timer_store::TimerStore;
use crate::remoting::{
    RemotingCommand, SendMessageResponseHeader, response_code, response_code::MESSAGE_ILLEGAL,
};
use crate::store::MessageToStore;
use crate::store::message::{encode_properties, properties_iter, property_value, sysflag};
use std::sync::Arc;
use std::time::Duration;

/// Absolute delivery time in epoch ms (4.x and ONS clients).
pub const PROPERTY_START_DELIVER_TIME: &str = "__STARTDELIVERTIME";
/// Absolute delivery time in epoch ms (5.x clients).
pub const PROPERTY_TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
/// Delay in seconds from the send (5.x clients).
pub const PROPERTY_TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
/// Delay in milliseconds from the send (5.x clients).
pub const PROPERTY_TIMER_DELAY_MS: &str = "TIMER_DELAY_MS";
/// Key of the pending count in GET_BROKER_RUNTIME_INFO (the operator's drain reads it).
pub const RUNTIME_TIMER_PENDING: &str = "timerPending";
/// How far ahead a message may be scheduled by default (RocketMQ's `timerMaxDelaySec`).
pub const DEFAULT_TIMER_MAX_DELAY: Duration = Duration::from_secs(40 * 86_400);
/// How often due messages are looked for.
const TICK: Duration = Duration::from_millis(25);
/// Time between fsyncs of the timer store (the commit log's async flush interval).
const SYNC_EVERY: Duration = Duration::from_millis(500);
/// Messages re-put in one store write.
const BATCH: usize = 256;

const TIMER_PROPERTIES: [&str; 4] = [
    PROPERTY_START_DELIVER_TIME,
    PROPERTY_TIMER_DELIVER_MS,
    PROPERTY_TIMER_DELAY_SEC,
    PROPERTY_TIMER_DELAY_MS,
];

/// What a send with timer properties becomes.
pub(super) enum Timed {
    /// Not scheduled (no timer property, or its time has come): store it now.
    Now(MessageToStore),
    /// Kept in the timer store; this is the send's answer.
    Kept(RemotingCommand),
}

/// A property as a number, or a clear refusal.
fn number(properties: &str, key: &str) -> Result<Option<i64>, Refusal> {
    let Some(text) = property_value(properties, key) else {
        return Ok(None);
    };
    text.trim().parse().map(Some).map_err(|_| {
        Refusal::new(
            MESSAGE_ILLEGAL,
            format!("the {key} property must be a number, not {text:?}"),
        )
    })
}

/// When a message is to be delivered (epoch ms), if it carries a timer property.
pub(super) fn deliver_time(properties: &str, now_ms: i64) -> Result<Option<i64>, Refusal> {
    if let Some(at) = number(properties, PROPERTY_TIMER_DELIVER_MS)? {
        return Ok(Some(at));
    }
    if let Some(at) = number(properties, PROPERTY_START_DELIVER_TIME)? {
        return Ok(Some(at));
    }
    if let Some(sec) = number(properties, PROPERTY_TIMER_DELAY_SEC)? {
        return Ok(Some(now_ms.saturating_add(sec.saturating_mul(1000))));
    }
    Ok(number(properties, PROPERTY_TIMER_DELAY_MS)?.map(|ms| now_ms.saturating_add(ms)))
}

/// A limit as people say it: whole days, else seconds.
fn describe(limit: Duration) -> String {
    let secs = limit.as_secs();
    match secs {
        86_400 => "1 day".to_owned(),
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s => format!("{s} s"),
    }
}

/// Refuses a delivery time beyond the limit.
pub(super) fn check_limit(deliver_ms: i64, now_ms: i64, limit: Duration) -> Result<(), Refusal> {
    if deliver_ms.saturating_sub(now_ms) > limit.as_millis() as i64 {
        let limit = describe(limit);
        return Err(Refusal::new(
            MESSAGE_ILLEGAL,
            format!("the delivery time is more than {limit} ahead (limit {limit})"),
        ));
    }
    Ok(())
}

impl Broker {
    /// The timer store.
    pub fn timer(&self) -> &Arc<TimerStore> {
        &self.timer
    }

    /// Keeps a message with a future timer property in the timer store.
    pub(super) async fn keep_timed(
        &self,
        req: &RemotingCommand,
        mut msg: MessageToStore,
    ) -> Result<Timed, Refusal> {
        let now = super::table::now_millis();
        let transactional = msg.sys_flag & sysflag::TRANSACTION_MASK != sysflag::TRANSACTION_NOT;
        let Some(at) = deliver_time(&msg.properties, now)?.filter(|_| !transactional) else {
            return Ok(Timed::Now(msg));
        };
        check_limit(at, now, self.cfg.timer_max_delay)?;
        msg.properties = encode_properties(
            properties_iter(&msg.properties).filter(|(k, _)| !TIMER_PROPERTIES.contains(k)),
        );
        if at <= now {
            return Ok(Timed::Now(msg));
        }
        if self.is_stopping() {
            return Err(Refusal::new(
                response_code::SERVICE_NOT_AVAILABLE,
                "the broker is shutting down; send to another broker",
            ));
        }
        self.cfg.limits.admit_send(1)?;
        let timer = Arc::clone(&self.timer);
        let (kept, msg) = tokio::task::spawn_blocking(move || {
            let kept = timer.add(at, super::table::now_millis(), &msg);
            (kept, msg)
        })
        .await
        .map_err(|e| Refusal::new(response_code::SYSTEM_ERROR, e.to_string()))?;
        let kept = kept.map_err(|e| {
            Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("the timer store failed: {e}"),
            )
        })?;
        if !kept {
            return Ok(Timed::Now(msg));
        }
        Ok(Timed::Kept(timer_response(req, &msg)))
    }

    /// Re-puts due scheduled messages, forever (spawn it).
    pub async fn run_timer(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut synced = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            if let Err(e) = self.deliver_timers().await {
                tracing::warn!(error = %e.remark, "scheduled delivery failed; retrying");
            }
            if synced.elapsed() >= SYNC_EVERY {
                synced = tokio::time::Instant::now();
                let timer = Arc::clone(&self.timer);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || timer.sync()).await {
                    tracing::warn!(error = %e, "fsync of the timer store failed");
                }
            }
        }
    }

    /// Re-puts everything due now.
    async fn deliver_timers(&self) -> Result<(), Refusal> {
        let io = |e: std::io::Error| {
            Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("the timer store failed: {e}"),
            )
        };
        loop {
            let timer = Arc::clone(&self.timer);
            let now = super::table::now_millis();
            let batch = tokio::task::spawn_blocking(move || timer.take_due(now, BATCH))
                .await
                .map_err(|e| Refusal::new(response_code::SYSTEM_ERROR, e.to_string()))?
                .map_err(io)?;
            if batch.messages.is_empty() {
                return Ok(());
            }
            let msgs: Vec<MessageToStore> = batch.messages.iter().map(|(_, m)| m.clone()).collect();
            let count = msgs.len();
            match self.put(msgs).await {
                Ok(_) => self.timer.commit(&batch, count).map_err(io)?,
                Err(e) if e.code == MESSAGE_ILLEGAL => self.deliver_one_by_one(&batch).await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Re-puts a batch the store refused one message at a time, dropping (and logging)
    /// only the messages it can never take.
    async fn deliver_one_by_one(
        &self,
        batch: &super::timer_store::DueBatch,
    ) -> Result<(), Refusal> {
        let io = |e: std::io::Error| Refusal::new(response_code::SYSTEM_ERROR, e.to_string());
        for (_, m) in &batch.messages {
            match self.put(vec![m.clone()]).await {
                Ok(_) => {}
                Err(e) if e.code == MESSAGE_ILLEGAL => {
                    tracing::error!(topic = %m.topic, error = %e.remark, "a scheduled message cannot be stored; dropped");
                }
                Err(e) => return Err(e),
            }
            self.timer.commit(batch, 1).map_err(io)?;
        }
        Ok(())
    }
}

/// The answer to a send kept in the timer store: its unique key stands for the offset
/// id, which it has none of yet.
fn timer_response(req: &RemotingCommand, msg: &MessageToStore) -> RemotingCommand {
    let mut response = ok(req);
    response.set_header(&SendMessageResponseHeader {
        msg_id: property_value(&msg.properties, "UNIQ_KEY")
            .unwrap_or_default()
            .to_owned(),
        queue_id: msg.queue_id,
        queue_offset: 0,
        transaction_id: None,
        msg_region: Some("DefaultRegion".to_owned()),
        trace_on: Some(true),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_timer_property_gives_a_delivery_time() {
        let props = |k: &str, v: &str| encode_properties([(k, v)]);
        let now = 1_000_000;
        assert_eq!(deliver_time("", now).unwrap(), None);
        let at = |k, v| deliver_time(&props(k, v), now).unwrap();
        assert_eq!(at(PROPERTY_TIMER_DELIVER_MS, "1005000"), Some(1_005_000));
        assert_eq!(at(PROPERTY_START_DELIVER_TIME, "1003000"), Some(1_003_000));
        assert_eq!(at(PROPERTY_TIMER_DELAY_SEC, "3"), Some(1_003_000));
        assert_eq!(at(PROPERTY_TIMER_DELAY_MS, "250"), Some(1_000_250));
        let bad = deliver_time(&props(PROPERTY_TIMER_DELAY_SEC, "soon"), now).unwrap_err();
        assert_eq!(bad.code, MESSAGE_ILLEGAL);
        assert!(bad.remark.contains("TIMER_DELAY_SEC"), "{}", bad.remark);
    }

    #[test]
    fn more_than_the_limit_ahead_is_refused_with_the_limit_in_the_text() {
        let day = 86_400_000;
        assert!(check_limit(40 * day, 0, DEFAULT_TIMER_MAX_DELAY).is_ok());
        let refused = check_limit(41 * day, 0, DEFAULT_TIMER_MAX_DELAY).unwrap_err();
        assert_eq!(refused.code, MESSAGE_ILLEGAL);
        assert_eq!(
            refused.remark,
            "the delivery time is more than 40 days ahead (limit 40 days)"
        );
        let short = check_limit(91_000, 0, Duration::from_secs(90)).unwrap_err();
        assert!(short.remark.contains("limit 90 s"), "{}", short.remark);
    }
}

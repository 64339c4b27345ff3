//! Delayed delivery: messages with a `DELAY` level (and retries) wait in
//! `SCHEDULE_TOPIC_XXXX`, one queue per level, and are re-put to their real topic when due.
//!
//! The consume-queue tag code of a waiting message is its delivery time (the store's tag
//! hook), so the delivery task reads only queue entries, in order, per level: every
//! message of a level has the same delay, so they come due in queue order. How far each
//! level has delivered is a consumer offset (group [`SCHEDULE_GROUP`]), persisted with the
//! others, so the schedule survives restarts; a crash between re-put and offset commit
//! delivers a message twice, never loses it.

use super::core::Broker;
use super::refusal::Refusal;
use crate::names::SCHEDULE_TOPIC;
use crate::remoting::body::TopicConfig;
use crate::store::message::{self, encode_properties, properties_iter, property_value, sysflag};
use crate::store::{MessageToStore, TagsCodeFn};
use std::sync::Arc;
use std::time::Duration;

/// Property holding the real topic of a delayed message.
pub const PROPERTY_REAL_TOPIC: &str = "REAL_TOPIC";
/// Property holding the real queue of a delayed message.
pub const PROPERTY_REAL_QUEUE_ID: &str = "REAL_QID";
/// Offsets of the delivery task, per level queue.
pub const SCHEDULE_GROUP: &str = "SCHEDULE_DELIVERY";
/// How often due messages are looked for.
const TICK: Duration = Duration::from_millis(100);

/// The delay level of a message, clamped to the table (`None` when not delayed).
fn delay_level(properties: &str, levels: usize) -> Option<usize> {
    let level: i64 = property_value(properties, super::send::PROPERTY_DELAY)?
        .trim()
        .parse()
        .ok()?;
    (level > 0 && levels > 0).then(|| (level as usize).min(levels))
}

/// The store hook that makes a waiting message's tag code its delivery time.
pub fn tags_code_hook(levels: Vec<Duration>) -> TagsCodeFn {
    Arc::new(move |topic: &str, properties: &str, store_timestamp: i64| {
        if topic != SCHEDULE_TOPIC {
            return None;
        }
        let level = delay_level(properties, levels.len())?;
        Some(store_timestamp + levels[level - 1].as_millis() as i64)
    })
}

impl Broker {
    /// Redirects a message with a delay level into the schedule topic.
    pub(super) fn route_delayed(
        &self,
        mut msg: MessageToStore,
        _config: &TopicConfig,
    ) -> Result<MessageToStore, Refusal> {
        let levels = self.cfg.delay_levels.len();
        let transactional = msg.sys_flag & sysflag::TRANSACTION_MASK != sysflag::TRANSACTION_NOT;
        let Some(level) = delay_level(&msg.properties, levels).filter(|_| !transactional) else {
            return Ok(msg);
        };
        let real_queue = msg.queue_id.to_string();
        let mut props: Vec<(&str, &str)> = properties_iter(&msg.properties)
            .filter(|(k, _)| {
                *k != PROPERTY_REAL_TOPIC
                    && *k != PROPERTY_REAL_QUEUE_ID
                    && *k != super::send::PROPERTY_DELAY
            })
            .collect();
        let level_text = level.to_string();
        props.push((super::send::PROPERTY_DELAY, &level_text));
        props.push((PROPERTY_REAL_TOPIC, &msg.topic));
        props.push((PROPERTY_REAL_QUEUE_ID, &real_queue));
        msg.properties = encode_properties(props);
        msg.topic = SCHEDULE_TOPIC.to_owned();
        msg.queue_id = level as i32 - 1;
        Ok(msg)
    }

    /// Delivers due delayed messages, forever (spawn it).
    pub async fn run_schedule(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for level in 0..self.cfg.delay_levels.len() as i32 {
                if let Err(e) = self.deliver_due(level).await {
                    // A clean stop cancels the store tasks under way: nothing is lost (the
                    // level's offset did not move), and it is no fault worth a warning.
                    if self.is_stopping() {
                        return;
                    }
                    tracing::warn!(level = level + 1, error = %e.remark, "delayed delivery failed; retrying");
                }
            }
        }
    }

    /// Re-puts the due messages at the head of one level's queue.
    async fn deliver_due(&self, queue_id: i32) -> Result<(), Refusal> {
        let now = super::table::now_millis();
        loop {
            let offset = self
                .offsets
                .query(SCHEDULE_GROUP, SCHEDULE_TOPIC, queue_id)
                .unwrap_or(0);
            let offset = offset.max(self.store.min_offset(SCHEDULE_TOPIC, queue_id) as i64);
            let store = Arc::clone(&self.store);
            let found = tokio::task::spawn_blocking(move || {
                store.get(
                    SCHEDULE_TOPIC,
                    queue_id,
                    offset as u64,
                    32,
                    1 << 20,
                    &|_| true,
                )
            })
            .await
            .map_err(|e| {
                Refusal::new(crate::remoting::response_code::SYSTEM_ERROR, e.to_string())
            })??;
            let due: Vec<_> = found
                .messages
                .iter()
                .take_while(|m| m.tags_code <= now)
                .collect();
            if due.is_empty() {
                return Ok(());
            }
            let restored: Vec<MessageToStore> =
                due.iter().filter_map(|m| restore(&m.data)).collect();
            let next = due.last().map_or(offset, |m| m.queue_offset as i64 + 1);
            if !restored.is_empty() {
                self.put(restored).await?;
            }
            self.offsets
                .commit(SCHEDULE_GROUP, SCHEDULE_TOPIC, queue_id, next);
            if due.len() < found.messages.len() || found.messages.len() < 32 {
                return Ok(());
            }
        }
    }
}

/// The message a waiting entry stands for, back on its real topic and queue.
fn restore(entry: &[u8]) -> Option<MessageToStore> {
    let m = message::decode(entry).ok()?;
    let topic = m.property(PROPERTY_REAL_TOPIC)?.to_owned();
    let queue_id = m.property(PROPERTY_REAL_QUEUE_ID)?.parse().ok()?;
    let properties = encode_properties(
        properties_iter(&m.properties).filter(|(k, _)| *k != super::send::PROPERTY_DELAY),
    );
    Some(MessageToStore {
        topic,
        queue_id,
        flag: m.flag,
        sys_flag: m.sys_flag & !(sysflag::BORNHOST_V6 | sysflag::STOREHOST_V6),
        body: bytes::Bytes::copy_from_slice(m.body),
        properties,
        born_timestamp: m.born_timestamp,
        born_host: m.born_host,
        reconsume_times: m.reconsume_times,
        prepared_transaction_offset: 0,
    })
}

//! INVOKE_BROKER_TO_RESET_OFFSET (222): moves a group's offsets on a topic to a time, or
//! to the end ("skip all accumulated"), with its consumers online or not
//! (`Broker2Client.resetOffset`).
//!
//! Header `topic, group, timestamp, isForce` (5.x adds `queueId, offset`: a queue id ≥ 0
//! with an offset ≥ 0 sets that one queue to that offset). `timestamp` -1 means the end
//! of each queue, what the dashboard's "skip accumulation" sends; any other time means
//! the first offset stored at or after it. As in Java, without `isForce` a queue only
//! moves backwards; a queue the group has no offset on yet gets the new offset (Java
//! refuses the whole reset as "consumer group not exist" then). The answer is `{"offsetTable":{MQ:offset}}` (fastjson object keys).
//!
//! Unlike Java, which leaves committing to the clients (and answers CONSUMER_NOT_ONLINE
//! for an offline group), the broker commits the new offsets itself, so an offline group
//! simply starts there. Online clients are told with RESET_CONSUMER_CLIENT_OFFSET (220,
//! oneway, same header, body `{"offsetTable":…}` in the names each client uses; C++
//! clients get Java's `ResetOffsetBodyForC` list form, which is what they parse); Java
//! and `rocketmq-client-rust` clients then drop what they hold, wait (10 s in both) and
//! continue from the new offsets, committing them.
//!
//! The race: a client's periodic commit sent before it adopted the reset carries its old
//! position and would undo it. So after a reset the broker ignores a group's commits on
//! the queue that differ from the reset offset until the client shows it adopted it (it
//! commits the reset offset itself: clients persist the offset they were reset to
//! before consuming on) or the guard window passes (`--reset-guard-secs`, default 30 s,
//! longer than the clients' 10 s wait). A pull at the reset offset is no proof: a client
//! that had already fetched a queue to its end pulls there before and after a skip-all.

use super::core::{Broker, ok};
use super::refusal::{Refusal, Reply};
use crate::command_header;
use crate::remoting::body::MessageQueue;
use crate::remoting::fastjson::MqMap;
use crate::remoting::{CommandHeader, LanguageCode, RemotingCommand, request_code, response_code};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

command_header! {
    /// INVOKE_BROKER_TO_RESET_OFFSET (222) and RESET_CONSUMER_CLIENT_OFFSET (220) header
    /// (`ResetOffsetRequestHeader`).
    pub struct ResetOffsetRequestHeader {
        /// Topic.
        topic: String = "topic";
        /// Consumer group.
        group: String = "group";
        /// Store time to go back to (ms); -1: the end of each queue.
        timestamp: i64 = "timestamp";
        /// Move forwards too (without it a queue only moves back).
        is_force: Option<bool> = "isForce";
        /// 5.x: only this queue (-1: all).
        queue_id: Option<i32> = "queueId";
        /// 5.x: the offset for `queueId`.
        offset: Option<i64> = "offset";
    }
}

/// The 222 response and 220 request body (`ResetOffsetBody`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResetOffsetBody {
    /// New offset per queue.
    pub offset_table: MqMap<i64>,
}

impl ResetOffsetBody {
    /// The body C++ clients read (`ResetOffsetBodyForC`): a list of queues with offsets.
    pub fn to_json_for_c(&self) -> bytes::Bytes {
        let entries: Vec<serde_json::Value> = self
            .offset_table
            .0
            .iter()
            .map(|(mq, offset)| {
                serde_json::json!({
                    "brokerName": mq.broker_name,
                    "offset": offset,
                    "queueId": mq.queue_id,
                    "topic": mq.topic,
                })
            })
            .collect();
        serde_json::json!({ "offsetTable": entries })
            .to_string()
            .into()
    }

    /// The body as Java writes it (fastjson, queue objects as keys).
    pub fn to_fastjson(&self) -> bytes::Bytes {
        let mut out = String::from(r#"{"offsetTable":"#);
        self.offset_table.write_fastjson(&mut out);
        out.push('}');
        out.into()
    }
}

/// Offsets just reset, guarded against stale commits: (group, topic, queue) → (offset,
/// guard end).
#[derive(Default)]
pub struct ResetGuards {
    guards: Mutex<GuardTable>,
}

/// (group, topic, queue) → (reset offset, end of the guard).
type GuardTable = HashMap<(String, String, i32), (i64, Instant)>;

impl ResetGuards {
    fn lock(&self) -> std::sync::MutexGuard<'_, GuardTable> {
        self.guards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Guards a queue's reset offset until `until`.
    pub fn arm(&self, group: &str, topic: &str, queue_id: i32, offset: i64, until: Instant) {
        self.lock().insert(
            (group.to_owned(), topic.to_owned(), queue_id),
            (offset, until),
        );
    }

    /// Whether a client's commit of `offset` may be recorded; a commit of the reset
    /// offset itself shows the client adopted it and ends the guard.
    pub fn allows(&self, group: &str, topic: &str, queue_id: i32, offset: i64) -> bool {
        let mut guards = self.lock();
        if guards.is_empty() {
            return true;
        }
        let key = (group.to_owned(), topic.to_owned(), queue_id);
        match guards.get(&key) {
            Some(&(reset, until)) if Instant::now() < until && offset != reset => false,
            Some(_) => {
                guards.remove(&key);
                true
            }
            None => true,
        }
    }
}

impl Broker {
    /// Commits a client's offset unless it would undo a reset the client has not adopted.
    pub(super) fn commit_client_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) {
        if self.resets.allows(group, topic, queue_id, offset) {
            self.offsets.commit(group, topic, queue_id, offset);
        } else {
            tracing::debug!(%group, %topic, queue_id, offset, "stale commit ignored after a reset");
        }
    }

    pub(super) async fn reset_offset(&self, req: &RemotingCommand) -> Reply {
        let h = ResetOffsetRequestHeader::from_command(req)?;
        let ns = &self.cfg.namespace;
        let (topic, group) = (ns.canonical(h.topic.trim()), ns.canonical(h.group.trim()));
        let Some(config) = self.topics.get(&topic) else {
            return Err(Refusal::new(
                response_code::TOPIC_NOT_EXIST,
                format!(
                    "[reset-offset] reset offset failed, no topic in this broker. topic={topic}"
                ),
            ));
        };
        let queues = config.read_queue_nums.max(config.write_queue_nums);
        let mut table = MqMap::default();
        for queue_id in 0..queues {
            if let Some(offset) = self.reset_target(&h, &group, &topic, queue_id)? {
                table.0.insert(self.queue_of(&topic, queue_id), offset);
            }
        }
        let until = Instant::now() + self.cfg.reset_offset_guard;
        for (mq, &offset) in &table.0 {
            self.offsets.commit(&group, &topic, mq.queue_id, offset);
            self.resets.arm(&group, &topic, mq.queue_id, offset, until);
        }
        tracing::info!(%group, %topic, timestamp = h.timestamp, offsets = ?table.0.values().collect::<Vec<_>>(), "offsets reset");
        self.tell_clients_reset(&h, &group, &topic, &table);
        let body = ResetOffsetBody {
            offset_table: table,
        };
        Ok(ok(req).with_body(body.to_fastjson()))
    }

    /// The new offset of one queue, `None` when the request names another queue.
    fn reset_target(
        &self,
        h: &ResetOffsetRequestHeader,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Result<Option<i64>, Refusal> {
        let max = self.store.max_offset(topic, queue_id) as i64;
        let min = self.store.min_offset(topic, queue_id) as i64;
        if let (Some(only), Some(offset)) = (h.queue_id.filter(|q| *q >= 0), h.offset)
            && offset >= 0
        {
            return Ok((only == queue_id).then_some(offset.clamp(min, max)));
        }
        let target = match h.timestamp {
            -1 => max,
            t => self.store.search_offset_by_time(topic, queue_id, t)? as i64,
        };
        let current = self.offsets.query(group, topic, queue_id);
        Ok(Some(match current {
            Some(current) if !h.is_force.unwrap_or(false) && target >= current => current,
            _ => target,
        }))
    }

    fn queue_of(&self, topic: &str, queue_id: i32) -> MessageQueue {
        MessageQueue {
            topic: topic.to_owned(),
            broker_name: self.cfg.broker_name.clone(),
            queue_id,
        }
    }

    /// RESET_CONSUMER_CLIENT_OFFSET (oneway, as Java) to each online client of the group,
    /// in the names that client uses.
    fn tell_clients_reset(
        &self,
        h: &ResetOffsetRequestHeader,
        group: &str,
        topic: &str,
        table: &MqMap<i64>,
    ) {
        let Some(online) = self.clients.consumer_group(group) else {
            return;
        };
        let ns = &self.cfg.namespace;
        for client in online.clients.into_values() {
            let name = |n: &str| {
                if client.bare {
                    ns.bare(n)
                } else {
                    n.to_owned()
                }
            };
            let shown = MqMap(
                table
                    .0
                    .iter()
                    .map(|(mq, &offset)| (self.queue_of(&name(&mq.topic), mq.queue_id), offset))
                    .collect(),
            );
            let mut notify =
                RemotingCommand::new_request(request_code::RESET_CONSUMER_CLIENT_OFFSET);
            notify.set_header(&ResetOffsetRequestHeader {
                topic: name(topic),
                group: name(group),
                timestamp: h.timestamp,
                is_force: Some(h.is_force.unwrap_or(false)),
                queue_id: None,
                offset: None,
            });
            let body = ResetOffsetBody {
                offset_table: shown,
            };
            notify.body = Some(if client.language == LanguageCode::Cpp {
                body.to_json_for_c()
            } else {
                body.to_fastjson()
            });
            tokio::spawn(async move {
                if let Err(e) = client.channel.send_oneway(notify).await {
                    tracing::warn!(client = %client.client_id, error = %e, "telling a client of a reset failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_guard_refuses_stale_commits_until_the_client_commits_the_reset_offset() {
        let guards = ResetGuards::default();
        let until = Instant::now() + Duration::from_secs(60);
        guards.arm("G", "T", 0, 5, until);
        assert!(!guards.allows("G", "T", 0, 90), "the old position is stale");
        assert!(!guards.allows("G", "T", 0, 3), "so is one below");
        assert!(
            guards.allows("G", "T", 1, 90),
            "other queues are not guarded"
        );
        assert!(
            guards.allows("G", "T", 0, 5),
            "the reset offset itself: adopted"
        );
        assert!(
            guards.allows("G", "T", 0, 7),
            "adopted: commits count again"
        );
    }

    #[test]
    fn a_guard_ends_with_its_window() {
        let guards = ResetGuards::default();
        guards.arm("G", "T", 0, 5, Instant::now());
        assert!(guards.allows("G", "T", 0, 90));
    }

    #[test]
    fn the_body_is_written_with_queue_object_keys() {
        let mq = MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id: 0,
        };
        let body = ResetOffsetBody {
            offset_table: MqMap([(mq, 3)].into()),
        };
        assert_eq!(
            &body.to_fastjson()[..],
            br#"{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:3}}"#
        );
        assert_eq!(
            &body.to_json_for_c()[..],
            br#"{"offsetTable":[{"brokerName":"b","offset":3,"queueId":0,"topic":"T"}]}"#,
            "C++ clients read a list"
        );
    }
}

//! CONSUMER_SEND_MSG_BACK (36): a message the consumer failed goes to the group's retry
//! topic with a growing delay, or to its dead-letter topic after too many attempts.

use super::core::{Broker, ok};
use super::refusal::{Refusal, Reply};
use super::topics::topic_config;
use crate::command_header;
use crate::names;
use crate::remoting::{CommandHeader, RemotingCommand, mq_version, response_code};
use crate::store::MessageToStore;
use crate::store::message::{self, encode_properties, properties_iter, sysflag};

/// Property naming the topic a retried message first came from.
pub const PROPERTY_RETRY_TOPIC: &str = "RETRY_TOPIC";
/// Property naming the message a retry is a copy of.
pub const PROPERTY_ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";

command_header! {
    /// CONSUMER_SEND_MSG_BACK request header (`ConsumerSendMsgBackRequestHeader`).
    pub struct SendBackHeader {
        /// Commit-log offset of the failed message.
        offset: i64 = "offset";
        /// Consumer group.
        group: String = "group";
        /// Delay level the client asks for (0: broker decides, < 0: straight to DLQ).
        delay_level: i32 = "delayLevel";
        /// Id of the original message.
        origin_msg_id: Option<String> = "originMsgId";
        /// Topic of the original message.
        origin_topic: Option<String> = "originTopic";
        /// Unit mode (unused).
        unit_mode: Option<bool> = "unitMode";
        /// The client's retry limit (wins over the group's).
        max_reconsume_times: Option<i32> = "maxReconsumeTimes";
    }
}

impl Broker {
    pub(super) async fn send_back(&self, req: &RemotingCommand) -> Reply {
        let h = SendBackHeader::from_command(req)?;
        let group = self.cfg.namespace.canonical(&h.group);
        let Some(group_config) = self.group(&group)? else {
            return Err(Refusal::new(
                response_code::SUBSCRIPTION_GROUP_NOT_EXIST,
                format!("subscription group not exist, {group}"),
            ));
        };
        let entry = self
            .store
            .view_by_physical_offset(h.offset.max(0) as u64)?
            .ok_or_else(|| {
                Refusal::new(
                    response_code::SYSTEM_ERROR,
                    format!("look message by offset failed, {}", h.offset),
                )
            })?;
        let failed = message::decode(&entry).map_err(|e| {
            Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("stored message at {} unreadable: {e}", h.offset),
            )
        })?;
        // The header's originTopic was checked before dispatch; this is the topic whose
        // message the retry would copy into the group's retry topic.
        self.authorize_topic(req, &failed.topic)?;
        // Old clients (before 3.4.9) send no limit of their own.
        let max_times = h
            .max_reconsume_times
            .filter(|_| req.version >= mq_version::V3_4_9)
            .unwrap_or(group_config.retry_max_times);
        let dead = failed.reconsume_times >= max_times || h.delay_level < 0;
        let (topic, queues) = if dead {
            (names::dlq_topic(&group), 1)
        } else {
            (
                names::retry_topic(&group),
                group_config.retry_queue_nums.max(1),
            )
        };
        self.topics
            .get_or_create(&topic, topic_config(&topic, queues))?;
        let level = match h.delay_level {
            0 => 3 + failed.reconsume_times,
            n => n,
        };
        let origin_id = h.origin_msg_id.clone().unwrap_or_else(|| failed.msg_id());
        let retry_topic = failed
            .property(PROPERTY_RETRY_TOPIC)
            .map(str::to_owned)
            .unwrap_or_else(|| failed.topic.to_string());
        let level_text = level.to_string();
        let mut props: Vec<(&str, &str)> = properties_iter(&failed.properties)
            .filter(|(k, _)| {
                ![
                    PROPERTY_RETRY_TOPIC,
                    PROPERTY_ORIGIN_MESSAGE_ID,
                    super::send::PROPERTY_DELAY,
                ]
                .contains(k)
            })
            .collect();
        props.push((PROPERTY_RETRY_TOPIC, &retry_topic));
        props.push((PROPERTY_ORIGIN_MESSAGE_ID, &origin_id));
        if !dead {
            props.push((super::send::PROPERTY_DELAY, &level_text));
        }
        let msg = MessageToStore {
            topic,
            queue_id: 0,
            flag: failed.flag,
            sys_flag: failed.sys_flag & !(sysflag::BORNHOST_V6 | sysflag::STOREHOST_V6),
            body: bytes::Bytes::copy_from_slice(failed.body),
            properties: encode_properties(props),
            born_timestamp: failed.born_timestamp,
            born_host: failed.born_host,
            reconsume_times: failed.reconsume_times + 1,
            prepared_transaction_offset: 0,
        };
        let config = self.topics.get(&msg.topic).unwrap_or_default();
        let msg = self.route_delayed(msg, &config)?;
        self.put(vec![msg]).await?;
        Ok(ok(req))
    }
}

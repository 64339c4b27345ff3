//! Producing and consuming with the admin client, for `mq-broker produce|consume` (a
//! quick check that an instance works, not a client SDK: applications use theirs).
//!
//! Requests are the ones a Java client sends: SEND_MESSAGE_V2 with the short header names
//! (`SendMessageRequestHeaderV2`, apache/rocketmq
//! `remoting/.../protocol/header/SendMessageRequestHeaderV2.java`), PULL_MESSAGE with a
//! subscription in the header (`PullMessageRequestHeader`, sysFlag 0x4), and the consumer
//! offset calls QUERY_CONSUMER_OFFSET / UPDATE_CONSUMER_OFFSET. Signed like every admin
//! request when the client has credentials.

use super::{AdminClient, AdminError, QueriedMessage};
use crate::remoting::{RemotingCommand, request_code, response_code};

/// PULL_MESSAGE sysFlag: the subscription travels in the header.
const PULL_FLAG_SUBSCRIPTION: i32 = 0x4;

/// What the broker answered a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message id (`msgId`: the offset id the broker made).
    pub msg_id: String,
    /// The queue it went to.
    pub queue_id: i32,
    /// Its offset in that queue.
    pub queue_offset: i64,
}

/// One pull's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The messages found (possibly none).
    pub messages: Vec<QueriedMessage>,
    /// The offset to pull from next.
    pub next_offset: i64,
}

/// A PULL_MESSAGE of every tag, no long polling, no commit: up to `max` messages of
/// `topic`'s `queue_id` from `offset` for `group`.
pub fn pull_request(
    group: &str,
    topic: &str,
    queue_id: i32,
    offset: i64,
    max: i32,
) -> RemotingCommand {
    RemotingCommand::new_request(request_code::PULL_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue_id.to_string())
        .with_ext("queueOffset", offset.to_string())
        .with_ext("maxMsgNums", max.to_string())
        .with_ext("sysFlag", PULL_FLAG_SUBSCRIPTION.to_string())
        .with_ext("commitOffset", "0")
        .with_ext("suspendTimeoutMillis", "0")
        .with_ext("subscription", "*")
        .with_ext("subVersion", "0")
        .with_ext("expressionType", "TAG")
}

impl Pulled {
    /// The messages' bodies as text (invalid UTF-8 replaced), in queue order.
    pub fn bodies(&self) -> Vec<String> {
        self.messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect()
    }
}

impl AdminClient {
    /// Broker: sends `body` with `tags` to `queue_id` of `topic` as `producer_group`.
    pub async fn send_message(
        &self,
        producer_group: &str,
        topic: &str,
        queue_id: i32,
        tags: &str,
        body: Vec<u8>,
    ) -> Result<Sent, AdminError> {
        let born = crate::broker::table::now_millis();
        let properties = format!("WAIT\u{1}true\u{2}TAGS\u{1}{tags}\u{2}");
        let req = RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
            .with_ext("a", producer_group)
            .with_ext("b", topic)
            .with_ext("c", "TBW102")
            .with_ext("d", "4")
            .with_ext("e", queue_id.to_string())
            .with_ext("f", "0")
            .with_ext("g", born.to_string())
            .with_ext("h", "0")
            .with_ext("i", properties)
            .with_ext("j", "0")
            .with_ext("k", "false")
            .with_ext("m", "false")
            .with_body(body);
        let answer = self.call(req).await?;
        let ext = |name: &str| answer.ext(name).map(str::to_owned);
        Ok(Sent {
            msg_id: ext("msgId").unwrap_or_default(),
            queue_id: ext("queueId")
                .and_then(|q| q.parse().ok())
                .unwrap_or(queue_id),
            queue_offset: ext("queueOffset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(-1),
        })
    }

    /// Broker: up to `max` messages of `topic`'s `queue_id` from `offset`, for `group`
    /// (every tag). Nothing there yet is an empty pull, not an error.
    pub async fn pull_messages(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max: i32,
    ) -> Result<Pulled, AdminError> {
        let req = pull_request(group, topic, queue_id, offset, max);
        let answer = self.request(req).await?;
        let next = answer.ext("nextBeginOffset").and_then(|o| o.parse().ok());
        match answer.code {
            response_code::SUCCESS => {
                let body = answer.body.as_deref().unwrap_or_default();
                let messages =
                    QueriedMessage::decode_all(body).map_err(|e| AdminError::BadBody {
                        addr: self.addr.clone(),
                        request: "PULL_MESSAGE",
                        reason: e.to_string(),
                    })?;
                let last = messages.last().map(|m| m.queue_offset + 1);
                Ok(Pulled {
                    next_offset: next.or(last).unwrap_or(offset),
                    messages,
                })
            }
            response_code::PULL_NOT_FOUND
            | response_code::PULL_RETRY_IMMEDIATELY
            | response_code::PULL_OFFSET_MOVED => Ok(Pulled {
                messages: Vec::new(),
                next_offset: next.unwrap_or(offset),
            }),
            code => Err(AdminError::refused(
                &self.addr,
                request_code::PULL_MESSAGE,
                code,
                answer.remark,
            )),
        }
    }

    /// Broker: `group`'s committed offset in `topic`'s `queue_id`, `None` when it never
    /// committed one there.
    pub async fn consumer_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
    ) -> Result<Option<i64>, AdminError> {
        let req = RemotingCommand::new_request(request_code::QUERY_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", queue_id.to_string());
        let answer = self.request(req).await?;
        match answer.code {
            response_code::SUCCESS => Ok(answer.ext("offset").and_then(|o| o.parse().ok())),
            response_code::QUERY_NOT_FOUND => Ok(None),
            code => Err(AdminError::refused(
                &self.addr,
                request_code::QUERY_CONSUMER_OFFSET,
                code,
                answer.remark,
            )),
        }
    }

    /// Broker: commits `offset` as `group`'s progress in `topic`'s `queue_id`.
    pub async fn commit_consumer_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: i32,
        offset: i64,
    ) -> Result<(), AdminError> {
        let req = RemotingCommand::new_request(request_code::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", group)
            .with_ext("topic", topic)
            .with_ext("queueId", queue_id.to_string())
            .with_ext("commitOffset", offset.to_string());
        self.call(req).await.map(drop)
    }
}

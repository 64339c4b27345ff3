//! Broker calls about consumers: who consumes a topic, a client's running info, offset
//! resets, dead-letter resends, consuming one message directly, and message trace.

use super::{AdminClient, AdminError, with_header};
use crate::broker::{
    GroupList, RESEND_DLQ_MESSAGE, ResendDlqMessageRequestHeader, ResendDlqMessageResponseHeader,
    ResetOffsetBody, ResetOffsetRequestHeader,
};
use crate::remoting::body::{ConsumeType, MessageModel, MessageQueue};
use crate::remoting::consume::{
    ConsumeMessageDirectlyResult, ConsumerRunningInfo, MessageTrack, TrackType,
};
use crate::remoting::{CommandHeader, request_code, response_code};
use std::collections::{BTreeMap, BTreeSet};

/// A stored message as the trace needs it: where it is and its tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackedMessage {
    /// Topic (as stored).
    pub topic: String,
    /// Queue id on the broker the client talks to.
    pub queue_id: i32,
    /// Queue offset.
    pub queue_offset: i64,
    /// The TAGS property, if any.
    pub tags: Option<String>,
}

/// Which dead-letter message to resend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlqMessageRef<'a> {
    /// Its offset message id or its unique key (`SendResult.msgId`).
    Id(&'a str),
    /// Its queue offset in the DLQ's queue 0.
    Offset(i64),
}

impl AdminClient {
    /// Broker: the groups consuming `topic`: subscribed now, or holding offsets on it.
    pub async fn topic_consumed_by(&self, topic: &str) -> Result<BTreeSet<String>, AdminError> {
        let header = crate::broker::QueryTopicConsumeByWhoRequestHeader {
            topic: topic.to_owned(),
        };
        let list: GroupList = self
            .fetch(with_header(
                request_code::QUERY_TOPIC_CONSUME_BY_WHO,
                &header,
            ))
            .await?;
        Ok(list.group_list)
    }

    /// Broker: what an online client of `group` reports of itself (with its thread dump
    /// when `jstack`). Refused with CONSUMER_NOT_ONLINE when the client is not connected,
    /// CONSUME_MSG_TIMEOUT when it does not answer in time.
    pub async fn consumer_running_info(
        &self,
        group: &str,
        client_id: &str,
        jstack: bool,
    ) -> Result<ConsumerRunningInfo, AdminError> {
        let req =
            crate::remoting::RemotingCommand::new_request(request_code::GET_CONSUMER_RUNNING_INFO)
                .with_ext("consumerGroup", group)
                .with_ext("clientId", client_id)
                .with_ext("jstackEnable", jstack.to_string());
        self.fetch(req).await
    }

    /// Broker: moves `group`'s offsets on `topic` to the first message stored at or after
    /// `timestamp` (ms), or to the end of each queue when `None` (skip all accumulated);
    /// without `force` a queue only moves back. Online clients are told. Returns the new
    /// offsets.
    pub async fn reset_offset(
        &self,
        topic: &str,
        group: &str,
        timestamp: Option<i64>,
        force: bool,
    ) -> Result<BTreeMap<MessageQueue, i64>, AdminError> {
        let header = ResetOffsetRequestHeader {
            topic: topic.to_owned(),
            group: group.to_owned(),
            timestamp: timestamp.unwrap_or(-1),
            is_force: Some(force),
            queue_id: Some(-1),
            offset: Some(-1),
        };
        let body: ResetOffsetBody = self
            .fetch(with_header(
                request_code::INVOKE_BROKER_TO_RESET_OFFSET,
                &header,
            ))
            .await?;
        Ok(body.offset_table.0)
    }

    /// Broker: delivers a message of `%DLQ%<group>` to the group again (a copy in its
    /// retry topic, same unique key; the DLQ copy stays). Returns the copy's offset id and
    /// queue offset.
    pub async fn resend_dlq(
        &self,
        group: &str,
        message: DlqMessageRef<'_>,
    ) -> Result<ResendDlqMessageResponseHeader, AdminError> {
        let (msg_id, offset) = match message {
            DlqMessageRef::Id(id) => (Some(id.to_owned()), None),
            DlqMessageRef::Offset(offset) => (None, Some(offset)),
        };
        let header = ResendDlqMessageRequestHeader {
            group: group.to_owned(),
            msg_id,
            offset,
        };
        let response = self.call(with_header(RESEND_DLQ_MESSAGE, &header)).await?;
        ResendDlqMessageResponseHeader::from_command(&response).map_err(|e| AdminError::BadBody {
            addr: self.addr.clone(),
            request: "RESEND_DLQ_MESSAGE",
            reason: e.to_string(),
        })
    }

    /// Broker: hands the stored message `msg_id` (offset id; or the unique key of a
    /// message in the group's DLQ) to the online client `client_id` of `group`, whose
    /// listener consumes it now; returns how that went.
    pub async fn consume_message_directly(
        &self,
        group: &str,
        client_id: &str,
        msg_id: &str,
    ) -> Result<ConsumeMessageDirectlyResult, AdminError> {
        let req =
            crate::remoting::RemotingCommand::new_request(request_code::CONSUME_MESSAGE_DIRECTLY)
                .with_ext("consumerGroup", group)
                .with_ext("clientId", client_id)
                .with_ext("msgId", msg_id);
        self.fetch(req).await
    }

    /// Broker: for every group consuming the message's topic, whether it consumed the
    /// message, passed it by its tag filter, has not reached it, or is not online
    /// (`MQAdminExtImpl.messageTrackDetail`, from 300, 203 and 208), sorted by group.
    pub async fn message_track(
        &self,
        msg: &TrackedMessage,
    ) -> Result<Vec<MessageTrack>, AdminError> {
        let mut tracks = vec![];
        for group in self.topic_consumed_by(&msg.topic).await? {
            let (track_type, exception_desc) = match self.track_in_group(&group, msg).await {
                Ok(track) => (track, None),
                Err(e) if e.response_code() == Some(response_code::CONSUMER_NOT_ONLINE) => {
                    (TrackType::NotOnline, Some(e.to_string()))
                }
                Err(e) => (TrackType::Unknown, Some(e.to_string())),
            };
            tracks.push(MessageTrack {
                consumer_group: group,
                track_type,
                exception_desc,
            });
        }
        Ok(tracks)
    }

    /// Where `msg` stands for one group.
    async fn track_in_group(
        &self,
        group: &str,
        msg: &TrackedMessage,
    ) -> Result<TrackType, AdminError> {
        let connection = self.consumer_connections(group).await?;
        if connection.consume_type == ConsumeType::ConsumeActively {
            return Ok(TrackType::Pull);
        }
        if connection.message_model == MessageModel::Broadcasting {
            return Ok(TrackType::ConsumeBroadcasting);
        }
        let stats = self.consume_stats(group, Some(&msg.topic)).await?;
        let consumed = stats.offset_table.0.iter().any(|(mq, offsets)| {
            mq.topic == msg.topic
                && mq.queue_id == msg.queue_id
                && offsets.consumer_offset > msg.queue_offset
        });
        if !consumed {
            return Ok(TrackType::NotConsumeYet);
        }
        let Some(sub) = connection.subscription_table.get(&msg.topic) else {
            return Ok(TrackType::Consumed);
        };
        let passes = match msg.tags.as_deref() {
            None => true,
            Some(tag) => {
                sub.tags_set.is_empty() || sub.tags_set.contains("*") || sub.tags_set.contains(tag)
            }
        };
        Ok(if passes {
            TrackType::Consumed
        } else {
            TrackType::ConsumedButFiltered
        })
    }
}

//! Admin calls that read messages and statistics: queries by key and unique key, views
//! by message id, consume time spans, the console's browse, offsets by time and the
//! per-minute counts (see `broker/query.rs` for the request codes).

use super::{AdminClient, AdminError, with_header};
use crate::broker::minute_stats::{StatsKind, StatsMinutes};
use crate::broker::query::{
    BrowseMessagesRequestHeader, BrowseMessagesResponseHeader, QueryConsumeTimeSpanBody,
    QueryConsumeTimeSpanRequestHeader, QueryMessageRequestHeader, QueueTimeSpan,
    StatsMinutesRequestHeader, UNIQUE_KEY_QUERY, ViewMessageRequestHeader,
};
use crate::remoting::{CommandHeader, RemotingCommand, request_code, response_code};
use crate::store::DecodeError;
use crate::store::message::{self, sysflag};
use bytes::Bytes;
use std::net::SocketAddr;

/// A stored message as a query returns it (body as stored: compressed stays compressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueriedMessage {
    /// Topic (bare when asked with a bare name of a namespaced broker).
    pub topic: String,
    /// Queue id.
    pub queue_id: i32,
    /// Queue offset.
    pub queue_offset: i64,
    /// Commit-log offset.
    pub phys_offset: i64,
    /// SYSFLAG (`sysflag::COMPRESSED`, transaction bits, …).
    pub sys_flag: i32,
    /// FLAG set by the producer.
    pub flag: i32,
    /// When the producer made it (ms).
    pub born_timestamp: i64,
    /// The producer's address.
    pub born_host: SocketAddr,
    /// When the broker stored it (ms).
    pub store_timestamp: i64,
    /// The broker's address when it stored it.
    pub store_host: SocketAddr,
    /// Times it was consumed again.
    pub reconsume_times: i32,
    /// Body bytes as stored.
    pub body: Bytes,
    /// Properties in stored order.
    pub properties: Vec<(String, String)>,
}

impl QueriedMessage {
    /// Decodes one stored entry.
    pub fn decode(entry: &[u8]) -> Result<Self, DecodeError> {
        let m = message::decode(entry)?;
        Ok(Self {
            topic: m.topic.into_owned(),
            queue_id: m.queue_id,
            queue_offset: m.queue_offset,
            phys_offset: m.phys_offset,
            sys_flag: m.sys_flag,
            flag: m.flag,
            born_timestamp: m.born_timestamp,
            born_host: m.born_host,
            store_timestamp: m.store_timestamp,
            store_host: m.store_host,
            reconsume_times: m.reconsume_times,
            body: Bytes::copy_from_slice(m.body),
            properties: message::decode_properties(&m.properties),
        })
    }

    /// Decodes stored entries laid back to back (a query, view or pull body).
    pub fn decode_all(mut body: &[u8]) -> Result<Vec<Self>, DecodeError> {
        let mut out = Vec::new();
        while !body.is_empty() {
            let truncated = DecodeError::Truncated {
                need: message::MIN_ENTRY_LEN,
                have: body.len(),
            };
            let len = message::read_i32(body, 0)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (message::MIN_ENTRY_LEN..=body.len()).contains(n))
                .ok_or(truncated)?;
            out.push(Self::decode(&body[..len])?);
            body = &body[len..];
        }
        Ok(out)
    }

    /// A property's value (the last one wins).
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The TAGS property.
    pub fn tags(&self) -> Option<&str> {
        self.property(message::property::TAGS)
    }

    /// The KEYS, split on spaces.
    pub fn keys(&self) -> Vec<&str> {
        message::split_keys(self.property(message::property::KEYS).unwrap_or("")).collect()
    }

    /// The client's message id (`UNIQ_KEY`, what `SendResult.msgId` shows).
    pub fn uniq_key(&self) -> Option<&str> {
        self.property(message::property::UNIQ_KEY)
    }

    /// The offset message id (store host + commit-log offset).
    pub fn offset_msg_id(&self) -> String {
        message::offset_msg_id(self.store_host, self.phys_offset)
    }

    /// Whether the body is compressed (zlib; the reader decompresses).
    pub fn is_compressed(&self) -> bool {
        self.sys_flag & sysflag::COMPRESSED != 0
    }
}

/// One page of a browse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsePage {
    /// The messages, in queue order.
    pub messages: Vec<QueriedMessage>,
    /// Where the next page starts (= the asked offset at the end).
    pub next_offset: i64,
    /// The queue's smallest offset.
    pub min_offset: i64,
    /// The queue's next offset to be written.
    pub max_offset: i64,
}

impl AdminClient {
    /// Broker: messages of `topic` whose KEYS contain `key`, stored within
    /// `[begin_ms, end_ms]`, newest first, at most `max` (the broker caps it at 64).
    pub async fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max: i32,
        begin_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<QueriedMessage>, AdminError> {
        self.query_message(topic, key, max, begin_ms, end_ms, false)
            .await
    }

    /// Broker: messages of `topic` whose unique key (`UNIQ_KEY`, the client's
    /// `SendResult.msgId`) is `uniq_key`: normally one, more if it was sent again.
    pub async fn query_by_unique_key(
        &self,
        topic: &str,
        uniq_key: &str,
    ) -> Result<Vec<QueriedMessage>, AdminError> {
        self.query_message(topic, uniq_key, 32, 0, i64::MAX, true)
            .await
    }

    async fn query_message(
        &self,
        topic: &str,
        key: &str,
        max: i32,
        begin_ms: i64,
        end_ms: i64,
        unique: bool,
    ) -> Result<Vec<QueriedMessage>, AdminError> {
        let header = QueryMessageRequestHeader {
            topic: topic.to_owned(),
            key: key.to_owned(),
            max_num: max,
            begin_timestamp: begin_ms,
            end_timestamp: end_ms,
        };
        let req = with_header(request_code::QUERY_MESSAGE, &header)
            .with_ext(UNIQUE_KEY_QUERY, if unique { "true" } else { "false" });
        let response = self.request(req).await?;
        match response.code {
            response_code::QUERY_NOT_FOUND => Ok(Vec::new()),
            response_code::SUCCESS => self.messages(request_code::QUERY_MESSAGE, &response),
            code => Err(AdminError::refused(
                &self.addr,
                request_code::QUERY_MESSAGE,
                code,
                response.remark,
            )),
        }
    }

    /// Broker: the message stored at commit-log offset `offset` of this broker.
    pub async fn view_by_offset(&self, offset: i64) -> Result<QueriedMessage, AdminError> {
        let header = ViewMessageRequestHeader {
            topic: None,
            offset,
        };
        let response = self
            .call(with_header(request_code::VIEW_MESSAGE_BY_ID, &header))
            .await?;
        self.messages(request_code::VIEW_MESSAGE_BY_ID, &response)?
            .pop()
            .ok_or_else(|| self.bad_body(request_code::VIEW_MESSAGE_BY_ID, "no message"))
    }

    /// Brokers of one instance: the message of `topic` named by `msg_id`, either the
    /// offset message id (store IP + port + commit-log offset) or the client's unique
    /// key (`SendResult.msgId`). An offset id is tried on every broker given and the
    /// answer kept only when its own offset id matches (a pod's IP changes, so the IP in
    /// the id may be an old IP of any of them); otherwise the id is looked up as a
    /// unique key on every broker. `None` when no broker has it.
    pub async fn view_message(
        brokers: &[AdminClient],
        topic: &str,
        msg_id: &str,
    ) -> Result<Option<QueriedMessage>, AdminError> {
        if let Ok((_, offset)) = message::decode_offset_msg_id(msg_id) {
            for broker in brokers {
                // Not this broker's (or not visible to us): try the next one.
                if let Ok(m) = broker.view_by_offset(offset).await
                    && m.offset_msg_id().eq_ignore_ascii_case(msg_id)
                {
                    return Ok(Some(m));
                }
            }
        }
        let mut last_error = None;
        for broker in brokers {
            match broker.query_by_unique_key(topic, msg_id).await {
                Ok(found) => {
                    if let Some(m) = found.into_iter().next() {
                        return Ok(Some(m));
                    }
                }
                Err(e) => last_error = Some(e),
            }
        }
        match last_error {
            // Every broker refused: say why rather than "not found".
            Some(e) if brokers.len() == 1 => Err(e),
            _ => Ok(None),
        }
    }

    /// Broker: per write queue of `topic`, the store times of its first and last
    /// messages and of the last one `group` consumed, and how long the next has waited.
    pub async fn consume_time_span(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Vec<QueueTimeSpan>, AdminError> {
        let header = QueryConsumeTimeSpanRequestHeader {
            topic: topic.to_owned(),
            group: group.to_owned(),
        };
        let body: QueryConsumeTimeSpanBody = self
            .fetch(with_header(request_code::QUERY_CONSUME_TIME_SPAN, &header))
            .await?;
        Ok(body.consume_time_span_set)
    }

    /// Broker: up to `max_nums` messages (at most 64) of one queue in queue order from
    /// `offset`, stopping before `max_offset` when given. Needs no group, is not held
    /// by the receive TPS limit, and reads write-only topics.
    pub async fn browse(
        &self,
        topic: &str,
        queue_id: i32,
        offset: i64,
        max_offset: Option<i64>,
        max_nums: i32,
    ) -> Result<BrowsePage, AdminError> {
        let header = BrowseMessagesRequestHeader {
            topic: topic.to_owned(),
            queue_id,
            offset,
            max_offset,
            max_nums,
        };
        let response = self
            .call(with_header(request_code::BROWSE_MESSAGES, &header))
            .await?;
        let h = BrowseMessagesResponseHeader::from_command(&response)
            .map_err(|e| self.bad_body(request_code::BROWSE_MESSAGES, &e.to_string()))?;
        Ok(BrowsePage {
            messages: self.messages(request_code::BROWSE_MESSAGES, &response)?,
            next_offset: h.next_offset,
            min_offset: h.min_offset,
            max_offset: h.max_offset,
        })
    }

    /// Broker: the first queue offset whose message was stored at or after
    /// `timestamp_ms` (the queue's end when none).
    pub async fn search_offset(
        &self,
        topic: &str,
        queue_id: i32,
        timestamp_ms: i64,
    ) -> Result<i64, AdminError> {
        let req = RemotingCommand::new_request(request_code::SEARCH_OFFSET_BY_TIMESTAMP)
            .with_ext("topic", topic)
            .with_ext("queueId", queue_id.to_string())
            .with_ext("timestamp", timestamp_ms.to_string());
        let response = self.call(req).await?;
        response
            .ext("offset")
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| self.bad_body(request_code::SEARCH_OFFSET_BY_TIMESTAMP, "no offset"))
    }

    /// Broker: per-minute counts of messages put into `topic` (`group` `None`) or
    /// consumed by `group` from it, for the buckets starting within `[begin_ms,
    /// end_ms]` (default: the last 24 h, the current minute included).
    pub async fn stats_minutes(
        &self,
        topic: &str,
        group: Option<&str>,
        begin_ms: Option<i64>,
        end_ms: Option<i64>,
    ) -> Result<StatsMinutes, AdminError> {
        let kind = if group.is_some() {
            StatsKind::Group
        } else {
            StatsKind::Topic
        };
        let header = StatsMinutesRequestHeader {
            kind: match kind {
                StatsKind::Topic => "topic",
                StatsKind::Group => "group",
            }
            .to_owned(),
            topic: topic.to_owned(),
            group: group.map(str::to_owned),
            begin_minute: begin_ms,
            end_minute: end_ms,
        };
        let response = self
            .call(with_header(request_code::GET_STATS_MINUTES, &header))
            .await?;
        serde_json::from_slice(response.body.as_deref().unwrap_or(b"{}"))
            .map_err(|e| self.bad_body(request_code::GET_STATS_MINUTES, &e.to_string()))
    }

    /// The messages of a success response's body.
    fn messages(
        &self,
        code: i32,
        response: &RemotingCommand,
    ) -> Result<Vec<QueriedMessage>, AdminError> {
        QueriedMessage::decode_all(response.body.as_deref().unwrap_or_default())
            .map_err(|e| self.bad_body(code, &e.to_string()))
    }

    fn bad_body(&self, code: i32, reason: &str) -> AdminError {
        AdminError::BadBody {
            addr: self.addr.clone(),
            request: request_code::name(code).unwrap_or("request"),
            reason: reason.to_owned(),
        }
    }
}

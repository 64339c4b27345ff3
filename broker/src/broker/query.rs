//! Message queries (`QueryMessageProcessor`, parts of `AdminBrokerProcessor`), the
//! console's browse and its per-minute statistics.
//!
//! - QUERY_MESSAGE (12): `topic, key, maxNum, beginTimestamp, endTimestamp` and the ext
//!   field `_UNIQUE_KEY_QUERY` ("true": `key` is a unique key, `UNIQ_KEY`). Answers the
//!   stored messages of that topic whose KEYS contain the key (or whose UNIQ_KEY is it)
//!   and which were stored within the range, back to back as in a pull body, newest
//!   first, at most `maxNum` (capped at 64; 32 for unique keys, as Java), with header
//!   `indexLastUpdateTimestamp, indexLastUpdatePhyoffset`; QUERY_NOT_FOUND (22) when none.
//! - VIEW_MESSAGE_BY_ID (33): `offset` (the commit-log offset the client decoded from the
//!   offset message id; `topic` optional) → that one stored message; SYSTEM_ERROR
//!   "can not find message by the offset" when no visible message starts there (as Java).
//!   The handler checks SUB on the topic the message really is in.
//! - QUERY_CONSUME_TIME_SPAN (303, admin): `topic, group` →
//!   `{"consumeTimeSpanSet":[{messageQueue, minTimeStamp, maxTimeStamp, consumeTimeStamp,
//!   delayTime}]}` per write queue, as Java computes it (-1: no such message); each span
//!   also carries snake-case copies of its fields, which `rocketmq-client-rust` 1.0 reads.
//! - BROWSE_MESSAGES (30000, private, admin): `topic, queueId, offset, maxOffset?
//!   (exclusive), maxNums` → the stored messages of one queue in queue order from
//!   `offset` (raised to the queue's minimum when retention removed it), at most
//!   `maxNums` (capped at 64) and about 1 MiB (always at least one), with response header
//!   `nextOffset, minOffset, maxOffset`. Needs no subscription group, is not held by the
//!   receive TPS limit and reads topics without the read permission (write-only
//!   topics): the console's paged queries, with times turned into offsets by
//!   SEARCH_OFFSET_BY_TIMESTAMP (29). An empty body with `nextOffset = offset` means the
//!   end of the queue (or of the range).
//! - GET_STATS_MINUTES (30001, private, admin): `kind` (`topic` | `group`), `topic`,
//!   `group` (for `group`), `beginMinute?`, `endMinute?` (epoch ms) → JSON
//!   `{"bucketMs":60000,"tracked":true,"minutes":[[startMs,count],...]}`, every bucket of
//!   the range within the last 24 h, oldest first (see `minute_stats.rs`).
//!
//! Half (PREPARED) and rolled-back transaction messages are never returned: they have
//! no consume-queue entry (browse), are filtered by sysflag here (query, view), and live
//! in system topics. System topics are answered only to the admin key (or an admin
//! account). Clients that name the topic bare get bare names back in the messages, as
//! pulls do; bodies are returned as stored (compressed stays compressed).

use super::core::{Broker, ok};
use super::minute_stats::{SeriesKey, StatsKind, now_ms};
use super::pull::with_bare_names;
use super::refusal::{Refusal, Reply};
use crate::command_header;
use crate::names;
use crate::remoting::body::{self, MessageQueue};
use crate::remoting::{CommandHeader, RemotingCommand, request_code, response_code};
use crate::store::FoundMessage;
use crate::store::message::{self, is_invisible_transaction};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Ext field flagging a unique-key query (`MixAll.UNIQUE_MSG_QUERY_FLAG`).
pub const UNIQUE_KEY_QUERY: &str = "_UNIQUE_KEY_QUERY";
/// Most messages one query returns (`maxMsgsNumBatch`).
pub const MAX_QUERY_MSGS: usize = 64;
/// Messages a unique-key query returns (`defaultQueryMaxNum`).
const UNIQUE_QUERY_MSGS: usize = 32;
/// Most messages one browse returns.
pub const MAX_BROWSE_MSGS: usize = 64;
/// About this many bytes per browse at most (always at least one message).
const MAX_BROWSE_BYTES: usize = 1024 * 1024;

/// The admin request codes this module answers.
pub const ADMIN_CODES: [i32; 3] = [
    request_code::QUERY_CONSUME_TIME_SPAN,
    request_code::BROWSE_MESSAGES,
    request_code::GET_STATS_MINUTES,
];

command_header! {
    /// QUERY_MESSAGE (12) request header (`QueryMessageRequestHeader`).
    pub struct QueryMessageRequestHeader {
        /// Topic.
        topic: String = "topic";
        /// The key (or unique key).
        key: String = "key";
        /// Most messages wanted.
        max_num: i32 = "maxNum";
        /// Earliest store time (ms).
        begin_timestamp: i64 = "beginTimestamp";
        /// Latest store time (ms).
        end_timestamp: i64 = "endTimestamp";
    }
}

command_header! {
    /// QUERY_MESSAGE (12) response header (`QueryMessageResponseHeader`).
    pub struct QueryMessageResponseHeader {
        /// When the index last changed (ms).
        index_last_update_timestamp: i64 = "indexLastUpdateTimestamp";
        /// Commit-log offset the index covers.
        index_last_update_phyoffset: i64 = "indexLastUpdatePhyoffset";
    }
}

command_header! {
    /// VIEW_MESSAGE_BY_ID (33) request header (`ViewMessageRequestHeader`).
    pub struct ViewMessageRequestHeader {
        /// Topic (5.x clients send it; optional).
        topic: Option<String> = "topic";
        /// Commit-log offset.
        offset: i64 = "offset";
    }
}

command_header! {
    /// QUERY_CONSUME_TIME_SPAN (303) request header (`QueryConsumeTimeSpanRequestHeader`).
    pub struct QueryConsumeTimeSpanRequestHeader {
        /// Topic.
        topic: String = "topic";
        /// Consumer group.
        group: String = "group";
    }
}

command_header! {
    /// BROWSE_MESSAGES (30000) request header.
    pub struct BrowseMessagesRequestHeader {
        /// Topic.
        topic: String = "topic";
        /// Queue.
        queue_id: i32 = "queueId";
        /// First queue offset wanted.
        offset: i64 = "offset";
        /// Queue offset to stop before (exclusive); none: the queue's end.
        max_offset: Option<i64> = "maxOffset";
        /// Most messages wanted (capped at 64).
        max_nums: i32 = "maxNums";
    }
}

command_header! {
    /// BROWSE_MESSAGES (30000) response header.
    pub struct BrowseMessagesResponseHeader {
        /// Where the next page starts.
        next_offset: i64 = "nextOffset";
        /// The queue's smallest offset.
        min_offset: i64 = "minOffset";
        /// The queue's next offset to be written.
        max_offset: i64 = "maxOffset";
    }
}

command_header! {
    /// GET_STATS_MINUTES (30001) request header.
    pub struct StatsMinutesRequestHeader {
        /// `topic` or `group`.
        kind: String = "kind";
        /// Topic.
        topic: String = "topic";
        /// Consumer group (kind `group`).
        group: Option<String> = "group";
        /// Earliest bucket start wanted (epoch ms).
        begin_minute: Option<i64> = "beginMinute";
        /// Latest bucket start wanted (epoch ms).
        end_minute: Option<i64> = "endMinute";
    }
}

/// One queue's times (`QueueTimeSpan`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueTimeSpan {
    /// The queue.
    pub message_queue: MessageQueue,
    /// Store time of the queue's first message (-1: none).
    pub min_time_stamp: i64,
    /// Store time of its last message (-1: none).
    pub max_time_stamp: i64,
    /// Store time of the last message the group consumed (the first message's when it
    /// consumed none).
    pub consume_time_stamp: i64,
    /// How long the next message to consume has waited (ms; 0 when caught up).
    pub delay_time: i64,
}

/// QUERY_CONSUME_TIME_SPAN response body (`QueryConsumeTimeSpanBody`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueryConsumeTimeSpanBody {
    /// One entry per write queue.
    pub consume_time_span_set: Vec<QueueTimeSpan>,
}

/// The body as Java writes it, each span also under snake-case names:
/// `rocketmq-client-rust` 1.0 reads `QueueTimeSpan` without renaming its fields (as
/// the name server emits both `topicSynFlag` and `topicSysFlag`; readers ignore the
/// names they do not know).
fn time_span_json(body: &QueryConsumeTimeSpanBody) -> Bytes {
    let aliases = [
        ("messageQueue", "message_queue"),
        ("minTimeStamp", "min_time_stamp"),
        ("maxTimeStamp", "max_time_stamp"),
        ("consumeTimeStamp", "consume_time_stamp"),
        ("delayTime", "delay_time"),
    ];
    let mut value = serde_json::to_value(body).unwrap_or_default();
    if let Some(spans) = value
        .get_mut("consumeTimeSpanSet")
        .and_then(|v| v.as_array_mut())
    {
        for span in spans.iter_mut().filter_map(|s| s.as_object_mut()) {
            for (java, snake) in aliases {
                if let Some(v) = span.get(java).cloned() {
                    span.insert(snake.to_owned(), v);
                }
            }
        }
    }
    body::to_json(&value)
}

/// Whether `topic` belongs to the broker (admin only).
/// Whether a stored message is never shown, not even to the admin: a half or rolled-back
/// transaction message, or an entry of the transaction half and op topics (a committed
/// send's offset id names its half there).
fn is_hidden(topic: &str, sys_flag: i32) -> bool {
    use super::transaction::{HALF_TOPIC, OP_TOPIC};
    is_invisible_transaction(sys_flag) || topic == HALF_TOPIC || topic == OP_TOPIC
}

fn is_system_topic(topic: &str) -> bool {
    names::is_system(topic) || topic.starts_with("RMQ_SYS_")
}

impl Broker {
    /// Answers the codes of this module (`None`: not one of them).
    pub(super) async fn query(&self, req: &RemotingCommand) -> Option<Reply> {
        Some(match req.code {
            request_code::QUERY_MESSAGE => self.query_message(req).await,
            request_code::VIEW_MESSAGE_BY_ID => self.view_message(req).await,
            request_code::QUERY_CONSUME_TIME_SPAN => self.consume_time_span(req),
            request_code::BROWSE_MESSAGES => self.browse(req).await,
            request_code::GET_STATS_MINUTES => self.stats_minutes(req),
            _ => return None,
        })
    }

    /// System topics are the admin's: refuses anyone else.
    fn check_system_topic(&self, req: &RemotingCommand, topic: &str) -> Result<(), Refusal> {
        if !is_system_topic(topic) {
            return Ok(());
        }
        self.cfg.acl.authorize_admin(req).map_err(|denied| {
            Refusal::new(
                crate::acl::Denied::CODE,
                format!("topic[{topic}] is a system topic: {}", denied.0),
            )
        })
    }

    async fn query_message(&self, req: &RemotingCommand) -> Reply {
        let h = QueryMessageRequestHeader::from_command(req)?;
        let ns = &self.cfg.namespace;
        let topic = ns.canonical(&h.topic);
        self.check_system_topic(req, &topic)?;
        let unique = req.ext(UNIQUE_KEY_QUERY) == Some("true");
        let max = if unique {
            UNIQUE_QUERY_MSGS
        } else {
            usize::try_from(h.max_num)
                .unwrap_or(0)
                .clamp(1, MAX_QUERY_MSGS)
        };
        let (begin, end) = (h.begin_timestamp, h.end_timestamp);
        let store = Arc::clone(&self.store);
        let (t, key) = (topic.clone(), h.key.clone());
        let found = blocking(move || {
            if unique {
                store.lookup_by_uniq_key(&t, &key, max)
            } else {
                store.lookup_by_key(&t, &key, max, begin, end)
            }
        })
        .await??;
        let visible: Vec<FoundMessage> = found
            .into_iter()
            .filter(|f| {
                message::decode(&f.data).is_ok_and(|m| {
                    !is_hidden(&m.topic, m.sys_flag) && (begin..=end).contains(&m.store_timestamp)
                })
            })
            .collect();
        let mut response = if visible.is_empty() {
            RemotingCommand::response_to(
                req,
                response_code::QUERY_NOT_FOUND,
                Some("can not find message, maybe time range not correct"),
            )
        } else {
            let mut response = ok(req);
            let bare = ns.is_bare(&h.topic);
            response.body = Some(self.message_body(visible.iter().map(|f| &f.data), bare));
            response
        };
        response.set_header(&QueryMessageResponseHeader {
            index_last_update_timestamp: now_ms(),
            index_last_update_phyoffset: self.store.commitlog_max_offset() as i64,
        });
        Ok(response)
    }

    async fn view_message(&self, req: &RemotingCommand) -> Reply {
        let h = ViewMessageRequestHeader::from_command(req)?;
        let not_found = || {
            Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("can not find message by the offset, {}", h.offset),
            )
        };
        let offset = u64::try_from(h.offset).map_err(|_| not_found())?;
        let store = Arc::clone(&self.store);
        let data = blocking(move || store.view_by_physical_offset(offset))
            .await??
            .ok_or_else(not_found)?;
        let topic = {
            let m = message::decode(&data).map_err(|_| not_found())?;
            if is_hidden(&m.topic, m.sys_flag) {
                return Err(not_found());
            }
            m.topic.into_owned()
        };
        self.check_system_topic(req, &topic)?;
        // The header named no topic the ACL could check: the message's own topic decides.
        self.authorize_topic(req, &topic)?;
        let bare = h
            .topic
            .as_deref()
            .is_some_and(|t| self.cfg.namespace.is_bare(t));
        let mut response = ok(req);
        response.body = Some(self.message_body([&data], bare));
        Ok(response)
    }

    /// Stored entries back to back; renamed for clients that use bare names.
    fn message_body<'a>(&self, entries: impl IntoIterator<Item = &'a Bytes>, bare: bool) -> Bytes {
        let mut body = BytesMut::new();
        for data in entries {
            match bare
                .then(|| with_bare_names(data, &self.cfg.namespace))
                .flatten()
            {
                Some(renamed) => body.put_slice(&renamed),
                None => body.put_slice(data),
            }
        }
        body.freeze()
    }

    fn consume_time_span(&self, req: &RemotingCommand) -> Reply {
        let h = QueryConsumeTimeSpanRequestHeader::from_command(req)?;
        let ns = &self.cfg.namespace;
        let (topic, group) = (ns.canonical(&h.topic), ns.canonical(&h.group));
        let Some(config) = self.topics.get(&topic) else {
            return Err(Refusal::new(
                response_code::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist"),
            ));
        };
        let time_at = |queue_id: i32, offset: i64| -> i64 {
            u64::try_from(offset)
                .ok()
                .and_then(|o| self.store.store_timestamp_at(&topic, queue_id, o).ok())
                .flatten()
                .unwrap_or(-1)
        };
        let now = now_ms();
        let spans = (0..config.write_queue_nums)
            .map(|queue_id| {
                let min_time = time_at(queue_id, self.store.min_offset(&topic, queue_id) as i64);
                let max = self.store.max_offset(&topic, queue_id) as i64;
                let consumer = self.offsets.query(&group, &topic, queue_id).unwrap_or(-1);
                QueueTimeSpan {
                    message_queue: MessageQueue {
                        topic: topic.clone(),
                        broker_name: self.cfg.broker_name.clone(),
                        queue_id,
                    },
                    min_time_stamp: min_time,
                    max_time_stamp: time_at(queue_id, max - 1),
                    consume_time_stamp: if consumer > 0 {
                        time_at(queue_id, consumer - 1)
                    } else {
                        min_time
                    },
                    delay_time: if consumer < max {
                        let next = time_at(queue_id, consumer.max(0));
                        if next >= 0 { now - next } else { 0 }
                    } else {
                        0
                    },
                }
            })
            .collect();
        let mut response = ok(req);
        response.body = Some(time_span_json(&QueryConsumeTimeSpanBody {
            consume_time_span_set: spans,
        }));
        Ok(response)
    }

    async fn browse(&self, req: &RemotingCommand) -> Reply {
        let h = BrowseMessagesRequestHeader::from_command(req)?;
        let ns = &self.cfg.namespace;
        let topic = ns.canonical(&h.topic);
        let known = !is_hidden(&topic, 0)
            && (self.topics.get(&topic).is_some() || !self.store.queue_ids(&topic).is_empty());
        if !known {
            return Err(Refusal::new(
                response_code::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist"),
            ));
        }
        let (min, max) = (
            self.store.min_offset(&topic, h.queue_id),
            self.store.max_offset(&topic, h.queue_id),
        );
        let start = u64::try_from(h.offset).unwrap_or(0).clamp(min, max);
        let stop = h
            .max_offset
            .and_then(|m| u64::try_from(m).ok())
            .map_or(max, |m| m.min(max));
        let wanted = usize::try_from(h.max_nums.max(1))
            .unwrap_or(1)
            .min(MAX_BROWSE_MSGS)
            .min(usize::try_from(stop.saturating_sub(start)).unwrap_or(usize::MAX));
        let (messages, next) = if wanted == 0 {
            (Vec::new(), start)
        } else {
            let store = Arc::clone(&self.store);
            let (t, queue_id) = (topic.clone(), h.queue_id);
            let got = blocking(move || {
                store.get(&t, queue_id, start, wanted, MAX_BROWSE_BYTES, &|_| true)
            })
            .await??;
            let next = got.next_begin_offset.max(start);
            (got.messages, next)
        };
        let mut response = ok(req);
        response.set_header(&BrowseMessagesResponseHeader {
            next_offset: next as i64,
            min_offset: min as i64,
            max_offset: max as i64,
        });
        response.body =
            Some(self.message_body(messages.iter().map(|m| &m.data), ns.is_bare(&h.topic)));
        Ok(response)
    }

    fn stats_minutes(&self, req: &RemotingCommand) -> Reply {
        let h = StatsMinutesRequestHeader::from_command(req)?;
        let ns = &self.cfg.namespace;
        let Some(kind) = StatsKind::parse(&h.kind) else {
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("kind must be topic or group, not {:?}", h.kind),
            ));
        };
        let group = match (kind, h.group.as_deref().filter(|g| !g.is_empty())) {
            (StatsKind::Topic, _) => String::new(),
            (StatsKind::Group, Some(g)) => ns.canonical(g),
            (StatsKind::Group, None) => {
                return Err(Refusal::new(
                    response_code::SYSTEM_ERROR,
                    "kind group needs the group header field",
                ));
            }
        };
        let key = SeriesKey {
            kind,
            topic: ns.canonical(&h.topic),
            group,
        };
        let answer = self
            .minutes
            .minutes(&key, h.begin_minute, h.end_minute, now_ms());
        let mut response = ok(req);
        response.body = Some(Bytes::from(serde_json::to_vec(&answer)?));
        Ok(response)
    }
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Refusal::new(
            response_code::SYSTEM_ERROR,
            format!("store task failed: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Acl, AclTable, Credentials};
    use crate::broker::BrokerConfig;
    use crate::names::Namespace;
    use crate::store::message::sysflag;
    use crate::store::{MessageStore, MessageToStore, StoreConfig};

    /// A broker over a fresh store in a temp dir, with an admin key.
    fn broker(name: &str) -> (Broker, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mq-query-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store_cfg = StoreConfig::new(&dir);
        store_cfg.background = false;
        let store = Arc::new(MessageStore::open(store_cfg).expect("store opens"));
        let mut cfg = BrokerConfig::new(&dir);
        cfg.acl = Acl::with_admin_key(
            false,
            AclTable::parse(r#"{"accounts":[]}"#, &Namespace::default()).expect("acl"),
            Some(Credentials::new("admin", "admin-secret")),
        );
        (Broker::new(cfg, store).expect("broker"), dir)
    }

    fn put(b: &Broker, topic: &str, sys_flag: i32, body: &str, uniq: &str) -> u64 {
        let mut m = MessageToStore::new(topic, 0, Bytes::copy_from_slice(body.as_bytes()))
            .with_properties([("KEYS", "K"), ("UNIQ_KEY", uniq)]);
        m.sys_flag = sys_flag;
        b.store.put(&m).expect("put").phys_offset
    }

    fn query(topic: &str, key: &str, unique: bool) -> RemotingCommand {
        let mut req = RemotingCommand::new_request(request_code::QUERY_MESSAGE);
        req.set_header(&QueryMessageRequestHeader {
            topic: topic.into(),
            key: key.into(),
            max_num: 32,
            begin_timestamp: 0,
            end_timestamp: i64::MAX,
        });
        req.with_ext(UNIQUE_KEY_QUERY, if unique { "true" } else { "false" })
    }

    fn bodies(response: &RemotingCommand) -> Vec<String> {
        crate::client::QueriedMessage::decode_all(response.body.as_deref().unwrap_or_default())
            .expect("decodes")
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn half_and_rolled_back_messages_are_never_returned() {
        let (b, dir) = broker("tx");
        put(&b, "T", 0, "plain", "U1");
        let half = put(&b, "T", sysflag::TRANSACTION_PREPARED, "half", "U2");
        let rolled = put(&b, "T", sysflag::TRANSACTION_ROLLBACK, "rolled", "U3");
        let committed = put(&b, "T", sysflag::TRANSACTION_COMMIT, "committed", "U4");
        let by_key = b.query(&query("T", "K", false)).await.unwrap().unwrap();
        let mut found = bodies(&by_key);
        found.sort();
        assert_eq!(found, ["committed", "plain"]);
        for uniq in ["U2", "U3"] {
            let r = b.query(&query("T", uniq, true)).await.unwrap().unwrap();
            assert_eq!(r.code, response_code::QUERY_NOT_FOUND);
            assert!(r.ext("indexLastUpdatePhyoffset").is_some());
        }
        let view = |offset: u64| {
            RemotingCommand::new_request(request_code::VIEW_MESSAGE_BY_ID)
                .with_ext("offset", offset.to_string())
        };
        for offset in [half, rolled] {
            let refused = b.query(&view(offset)).await.unwrap().unwrap_err();
            assert_eq!(refused.code, response_code::SYSTEM_ERROR);
            assert!(refused.remark.contains("can not find message"));
        }
        let seen = b.query(&view(committed)).await.unwrap().unwrap();
        assert_eq!(bodies(&seen), ["committed"]);
        let garbage = b.query(&view(u64::MAX >> 1)).await.unwrap().unwrap_err();
        assert_eq!(garbage.code, response_code::SYSTEM_ERROR);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn system_topics_are_answered_only_to_the_admin() {
        let (b, dir) = broker("system");
        let waiting = put(&b, "SCHEDULE_TOPIC_XXXX", 0, "waiting", "U1");
        let refused = b
            .query(&query("SCHEDULE_TOPIC_XXXX", "K", false))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            refused.remark.contains("system topic"),
            "{}",
            refused.remark
        );
        let mut view = RemotingCommand::new_request(request_code::VIEW_MESSAGE_BY_ID)
            .with_ext("offset", waiting.to_string());
        assert!(b.query(&view).await.unwrap().is_err());
        crate::acl::sign::sign(&mut view, &Credentials::new("admin", "admin-secret"));
        let seen = b.query(&view).await.unwrap().unwrap();
        assert_eq!(bodies(&seen), ["waiting"]);

        // A half in the transaction half topic is hidden even from the admin: a committed
        // send's offset id names it, and the console must not show it.
        let half = put(&b, "RMQ_SYS_TRANS_HALF_TOPIC", 0, "half", "U2");
        let mut view = RemotingCommand::new_request(request_code::VIEW_MESSAGE_BY_ID)
            .with_ext("offset", half.to_string());
        crate::acl::sign::sign(&mut view, &Credentials::new("admin", "admin-secret"));
        assert!(
            b.query(&view).await.unwrap().is_err(),
            "the half is not shown"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn time_span_body_has_javas_field_names() {
        let body = QueryConsumeTimeSpanBody {
            consume_time_span_set: vec![QueueTimeSpan {
                message_queue: MessageQueue {
                    topic: "T".into(),
                    broker_name: "b".into(),
                    queue_id: 1,
                },
                min_time_stamp: 1,
                max_time_stamp: 2,
                consume_time_stamp: 3,
                delay_time: 4,
            }],
        };
        let json = String::from_utf8(body::to_json(&body).to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"consumeTimeSpanSet":[{"messageQueue":{"topic":"T","brokerName":"b","queueId":1},"minTimeStamp":1,"maxTimeStamp":2,"consumeTimeStamp":3,"delayTime":4}]}"#
        );
        // What the broker sends also carries snake-case copies, and reads back the same.
        let sent = time_span_json(&body);
        let value: serde_json::Value = serde_json::from_slice(&sent).unwrap();
        let span = &value["consumeTimeSpanSet"][0];
        assert_eq!(span["min_time_stamp"], 1);
        assert_eq!(span["message_queue"]["queueId"], 1);
        let back: QueryConsumeTimeSpanBody = serde_json::from_slice(&sent).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn system_topics_are_recognised() {
        assert!(is_system_topic("RMQ_SYS_TRANS_HALF_TOPIC"));
        assert!(
            is_hidden("RMQ_SYS_TRANS_HALF_TOPIC", 0) && is_hidden("RMQ_SYS_TRANS_OP_HALF_TOPIC", 0)
        );
        assert!(!is_hidden("orders", 0) && is_hidden("orders", sysflag::TRANSACTION_PREPARED));
        assert!(is_system_topic("SCHEDULE_TOPIC_XXXX"));
        assert!(!is_system_topic("orders"));
    }
}

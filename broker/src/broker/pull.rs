//! PULL_MESSAGE (11): reads a queue, filtered by the group's tags, held open (long
//! polling) until a message arrives when the client allows it.

use super::core::Broker;
use super::limits::MAX_THROTTLE;
use super::refusal::{Refusal, Reply};
use crate::names::Namespace;
use crate::net::RequestContext;
use crate::remoting::body::{MessageModel, PERM_READ, SubscriptionData};
use crate::remoting::{
    CommandHeader, PullMessageRequestHeader, PullMessageResponseHeader, RemotingCommand,
    response_code,
};
use crate::store::message::{self, encode_properties, properties_iter};
use crate::store::{GetResult, GetStatus};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Pull sys flag: commit `commitOffset` with this pull.
const FLAG_COMMIT_OFFSET: i32 = 0x1;
/// Pull sys flag: hold the pull when nothing is there.
const FLAG_SUSPEND: i32 = 0x2;
/// Pull sys flag: the header's subscription is the one to use.
const FLAG_SUBSCRIPTION: i32 = 0x4;
/// Most messages one pull returns (Java clients ask for 32).
const MAX_PULL_MSGS: usize = 32;
/// About this many bytes per pull at most (always at least one message).
const MAX_PULL_BYTES: usize = 256 * 1024;
/// Properties that carry topic names a bare client must see bare.
const NAME_PROPERTIES: [&str; 2] = ["RETRY_TOPIC", "REAL_TOPIC"];

/// What one pull asks for, resolved to canonical names.
struct PullRequest {
    header: PullMessageRequestHeader,
    topic: String,
    group: String,
    subscription: SubscriptionData,
    bare_client: bool,
}

impl Broker {
    /// Answers a pull, holding it up to the client's suspend timeout when nothing is new.
    pub(super) async fn pull(&self, _ctx: &RequestContext, req: &RemotingCommand) -> Reply {
        let pull = self.resolve_pull(req)?;
        let h = &pull.header;
        if h.sys_flag & FLAG_COMMIT_OFFSET != 0
            && h.commit_offset >= 0
            && self.is_clustering(&pull.group)
        {
            self.commit_client_offset(&pull.group, &pull.topic, h.queue_id, h.commit_offset);
        }
        let notify = self.arrivals.of(&pull.topic, h.queue_id);
        let arrived = notify.notified();
        tokio::pin!(arrived);
        // Registered before reading, so a message stored in between still wakes us.
        arrived.as_mut().enable();
        let mut result = self.read_limited(&pull).await?;
        let may_wait = h.sys_flag & FLAG_SUSPEND != 0 && h.suspend_timeout_millis > 0;
        if may_wait && result.status == GetStatus::OffsetOverflowOne {
            let hold =
                Duration::from_millis(h.suspend_timeout_millis as u64).min(self.cfg.max_pull_hold);
            // A clean stop answers held pulls at once (lifecycle.rs).
            let woken = tokio::select! {
                woken = tokio::time::timeout(hold, arrived) => woken.is_ok(),
                _ = self.lifecycle.stopped() => false,
            };
            if woken {
                result = self.read_limited(&pull).await?;
            }
        }
        Ok(self.pull_response(req, &pull, result))
    }

    fn resolve_pull(&self, req: &RemotingCommand) -> Result<PullRequest, Refusal> {
        let header = PullMessageRequestHeader::from_command(req)?;
        let ns = &self.cfg.namespace;
        let topic = ns.canonical(&header.topic);
        let group = ns.canonical(&header.consumer_group);
        let Some(group_config) = self.group(&group)? else {
            return Err(Refusal::new(
                response_code::SUBSCRIPTION_GROUP_NOT_EXIST,
                format!("subscription group [{group}] does not exist, apply first please!"),
            ));
        };
        if !group_config.consume_enable {
            return Err(Refusal::new(
                response_code::NO_PERMISSION,
                format!("subscription group [{group}] no permission to consume"),
            ));
        }
        let Some(config) = self.topics.get(&topic) else {
            return Err(Refusal::new(
                response_code::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist, apply first please!"),
            ));
        };
        if config.perm & PERM_READ == 0 {
            return Err(Refusal::new(
                response_code::NO_PERMISSION,
                format!("the topic[{topic}] pulling message is forbidden"),
            ));
        }
        if header.queue_id < 0 || header.queue_id >= config.read_queue_nums {
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                format!(
                    "queueId[{}] is illegal, topic:[{topic}] topicConfig.readQueueNums:[{}]",
                    header.queue_id, config.read_queue_nums
                ),
            ));
        }
        let subscription = self.pull_subscription(&header, &group, &topic)?;
        Ok(PullRequest {
            bare_client: ns.is_bare(&header.topic),
            header,
            topic,
            group,
            subscription,
        })
    }

    /// The subscription to filter with: the header's when flagged (and not empty), else
    /// the one the group's heartbeat declared.
    fn pull_subscription(
        &self,
        h: &PullMessageRequestHeader,
        group: &str,
        topic: &str,
    ) -> Result<SubscriptionData, Refusal> {
        let from_header = h
            .subscription
            .as_deref()
            .filter(|s| h.sys_flag & FLAG_SUBSCRIPTION != 0 && !s.trim().is_empty());
        if let Some(expr) = from_header {
            return Ok(super::clients::normalize_subscription(SubscriptionData {
                topic: topic.to_owned(),
                sub_string: expr.to_owned(),
                ..SubscriptionData::default()
            }));
        }
        self.clients.subscription(group, topic).ok_or_else(|| {
            Refusal::new(
                response_code::SUBSCRIPTION_NOT_EXIST,
                format!("the consumer's subscription not exist, group: {group} topic: {topic}"),
            )
        })
    }

    fn is_clustering(&self, group: &str) -> bool {
        self.clients
            .consumer_group(group)
            .is_none_or(|g| g.message_model == MessageModel::Clustering)
    }

    /// Reads the queue within the receive TPS limit (`limits.rs`): waits for room, reads
    /// no more than the limit allows, and gives back what was not returned.
    async fn read_limited(&self, pull: &PullRequest) -> Result<GetResult, Refusal> {
        let h = &pull.header;
        let wanted = (h.max_msg_nums.max(1) as usize).min(MAX_PULL_MSGS);
        let bound = if h.sys_flag & FLAG_SUSPEND != 0 && h.suspend_timeout_millis > 0 {
            Duration::from_millis(h.suspend_timeout_millis as u64).min(MAX_THROTTLE)
        } else {
            MAX_THROTTLE
        };
        let limits = &self.cfg.limits;
        let allowed = limits
            .receive_allowance(wanted, bound, self.lifecycle.stopped())
            .await;
        let result = self.read_queue(pull, allowed).await;
        let returned = result.as_ref().map_or(0, |r| r.messages.len());
        limits.unused_receive(allowed.saturating_sub(returned));
        result
    }

    async fn read_queue(&self, pull: &PullRequest, max: usize) -> Result<GetResult, Refusal> {
        let store = Arc::clone(&self.store);
        let (topic, queue_id) = (pull.topic.clone(), pull.header.queue_id);
        let offset = pull.header.queue_offset.max(0) as u64;
        let codes = pull.subscription.code_set.clone();
        let all = pull.subscription.sub_string == "*";
        Ok(tokio::task::spawn_blocking(move || {
            store.get(&topic, queue_id, offset, max, MAX_PULL_BYTES, &|code| {
                all || codes.contains(&code)
            })
        })
        .await
        .map_err(|e| {
            Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("store task failed: {e}"),
            )
        })??)
    }

    fn pull_response(
        &self,
        req: &RemotingCommand,
        pull: &PullRequest,
        result: GetResult,
    ) -> RemotingCommand {
        let requested = pull.header.queue_offset;
        let (code, remark) = match result.status {
            GetStatus::Found => (response_code::SUCCESS, "FOUND"),
            GetStatus::NoMatchedMessage => {
                (response_code::PULL_RETRY_IMMEDIATELY, "NO_MATCHED_MESSAGE")
            }
            GetStatus::OffsetOverflowOne => (response_code::PULL_NOT_FOUND, "OFFSET_OVERFLOW_ONE"),
            GetStatus::NoMatchedLogicQueue | GetStatus::NoMessageInQueue if requested != 0 => {
                (response_code::PULL_OFFSET_MOVED, "NO_MESSAGE_IN_QUEUE")
            }
            GetStatus::NoMatchedLogicQueue | GetStatus::NoMessageInQueue => {
                (response_code::PULL_NOT_FOUND, "NO_MESSAGE_IN_QUEUE")
            }
            GetStatus::OffsetTooSmall => (response_code::PULL_OFFSET_MOVED, "OFFSET_TOO_SMALL"),
            GetStatus::OffsetOverflowBadly => {
                (response_code::PULL_OFFSET_MOVED, "OFFSET_OVERFLOW_BADLY")
            }
        };
        let mut response = RemotingCommand::response_to(req, code, Some(remark));
        response.set_header(&PullMessageResponseHeader {
            suggest_which_broker_id: 0,
            next_begin_offset: result.next_begin_offset as i64,
            min_offset: result.min_offset as i64,
            max_offset: result.max_offset as i64,
            ..Default::default()
        });
        if code == response_code::SUCCESS {
            self.stats
                .messages_out
                .fetch_add(result.messages.len() as u64, Ordering::Relaxed);
            self.activity
                .record_consumed(&pull.group, &pull.topic, result.messages.len() as u64);
            self.minutes
                .record_consumed(&pull.group, &pull.topic, result.messages.len() as u64);
            self.stats
                .bytes_out
                .fetch_add(result.total_bytes() as u64, Ordering::Relaxed);
            response.body = Some(self.pull_body(&result, pull.bare_client));
        }
        response
    }

    /// The stored entries back to back; renamed for clients that use bare names.
    fn pull_body(&self, result: &GetResult, bare_client: bool) -> Bytes {
        let mut body = BytesMut::with_capacity(result.total_bytes());
        for m in &result.messages {
            match bare_client
                .then(|| with_bare_names(&m.data, &self.cfg.namespace))
                .flatten()
            {
                Some(renamed) => body.put_slice(&renamed),
                None => body.put_slice(&m.data),
            }
        }
        body.freeze()
    }
}

/// A stored entry with this instance's namespace removed from its topic and the
/// topic-naming properties; `None` when nothing needs renaming (or it does not decode).
pub(super) fn with_bare_names(entry: &[u8], ns: &Namespace) -> Option<Vec<u8>> {
    let m = message::decode(entry).ok()?;
    let topic = ns.bare(&m.topic);
    let renamed: Vec<(&str, String)> = properties_iter(&m.properties)
        .map(|(k, v)| {
            (
                k,
                if NAME_PROPERTIES.contains(&k) {
                    ns.bare(v)
                } else {
                    v.to_owned()
                },
            )
        })
        .collect();
    let properties = encode_properties(renamed.iter().map(|(k, v)| (*k, v.as_str())));
    if topic == m.topic && properties == m.properties {
        return None;
    }
    // Everything up to the body's end is unchanged; topic and properties follow it.
    let head_len = message::body_len_pos(m.sys_flag) + 4 + m.body.len();
    let mut out = Vec::with_capacity(entry.len());
    out.extend_from_slice(entry.get(..head_len)?);
    out.put_u8(u8::try_from(topic.len()).ok()?);
    out.put_slice(topic.as_bytes());
    out.put_i16(i16::try_from(properties.len()).ok()?);
    out.put_slice(properties.as_bytes());
    let total = i32::try_from(out.len()).ok()?;
    out[..4].copy_from_slice(&total.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageToStore;

    #[test]
    fn bare_clients_get_messages_with_bare_names() {
        let ns = Namespace::new(Some("MQ_INST_1_x"));
        let msg = MessageToStore::new("%RETRY%MQ_INST_1_x%GID_a", 0, &b"body"[..])
            .with_properties([("RETRY_TOPIC", "MQ_INST_1_x%T"), ("TAGS", "A")]);
        let entry = message::encode(&msg, "127.0.0.1:10911".parse().unwrap(), 1 << 20).unwrap();
        let renamed = with_bare_names(&entry, &ns).unwrap();
        let m = message::decode(&renamed).unwrap();
        assert_eq!(m.topic, "%RETRY%GID_a");
        assert_eq!(m.property("RETRY_TOPIC"), Some("T"));
        assert_eq!(m.property("TAGS"), Some("A"));
        assert_eq!(m.body, b"body");
        assert_eq!(m.store_size as usize, renamed.len());
        assert!(with_bare_names(&renamed, &ns).is_none(), "already bare");
    }
}

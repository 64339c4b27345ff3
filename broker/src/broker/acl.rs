//! What each broker request needs of the ACL (Java's `PlainAccessResource.parse`), and
//! the check before dispatch.
//!
//! Names are read with the processors' own header and body types and canonicalised into
//! the instance namespace exactly as the processors do, so the resource checked is the
//! resource acted on. Per request code:
//! - SEND_MESSAGE/_V2, SEND_BATCH_MESSAGE: PUB on the topic (a retry or dead-letter topic:
//!   the group's SUB);
//! - PULL_MESSAGE: SUB on the topic and the group;
//! - HEART_BEAT: per consumer group, SUB on the group and on every subscribed topic (pure
//!   producers need only a valid signature; producer groups are not checked, as in Java);
//! - UNREGISTER_CLIENT, GET_CONSUMER_LIST_BY_GROUP: SUB on the consumer group (if any);
//! - QUERY/UPDATE_CONSUMER_OFFSET: SUB on the group and the topic;
//! - CONSUMER_SEND_MSG_BACK: SUB on the group and `originTopic` — and, in the processor,
//!   SUB on the topic the stored message really is in ([`Broker::authorize_topic`]), so a
//!   send-back cannot copy another topic's message into the group's retry topic;
//! - LOCK/UNLOCK_BATCH_MQ: SUB on the group and every topic of the queues;
//! - GET_MAX/MIN_OFFSET, SEARCH_OFFSET_BY_TIMESTAMP, GET_EARLIEST_MSG_STORETIME: SUB on the
//!   topic;
//! - END_TRANSACTION: PUB on the real topic of the half it names, checked in the
//!   processor once the half is loaded (`transaction.rs`), like send-back's topic;
//! - QUERY_MESSAGE: SUB on the topic (a system topic: admin only, in the processor);
//! - VIEW_MESSAGE_BY_ID: a valid signature here — the processor loads the message and
//!   checks SUB on the topic it really is in (system topics: admin only);
//! - admin requests ([`super::admin::is_admin`]) and **every code not listed in
//!   [`CLIENT_CODES`]**: an admin account — and with an admin key these are checked whether
//!   or not ACL is on ([`crate::acl::Acl::authorize_admin`]). So a new request code is
//!   admin-only until its client entry is written here: forgetting it fails closed (the
//!   consumer admin codes 222, 300, 307, 309 and 30002 of [`super::consume`], and
//!   QUERY_CONSUME_TIME_SPAN, BROWSE_MESSAGES and GET_STATS_MINUTES are such).
//!
//! The client codes are checked only when ACL (`aclEnable`) is on.
//!
//! The console role (an ACL-file account with `console: true`, the per-instance key the
//! operator writes into Secret `<base>-console` for the console): such an account is
//! decided by the request code alone, on every topic and group of the broker, whether or
//! not ACL is on (the admin-plane codes among them are checked with the admin key like
//! any admin request) — it may make exactly [`crate::acl::console::CONSOLE_CODES`]:
//! GET_ALL_TOPIC_CONFIG (21), GET_ALL_SUBSCRIPTIONGROUP_CONFIG (201),
//! GET_BROKER_RUNTIME_INFO (28), GET_CONSUME_STATS (208), GET_TOPIC_STATS_INFO (202),
//! GET_CONSUMER_CONNECTION_LIST (203), QUERY_TOPIC_CONSUME_BY_WHO (300),
//! QUERY_CONSUME_TIME_SPAN (303), QUERY_MESSAGE (12), VIEW_MESSAGE_BY_ID (33),
//! SEARCH_OFFSET_BY_TIMESTAMP (29), BROWSE_MESSAGES (30000), GET_STATS_MINUTES (30001),
//! GET_CONSUMER_RUNNING_INFO (307), INVOKE_BROKER_TO_RESET_OFFSET (222) and
//! RESEND_DLQ_MESSAGE (30002) — what the admin client's console calls send. Every other
//! code is refused (`accessKey=… is a console key, which may not make request code=…`):
//! it cannot send, pull, commit offsets, change topics or groups, or register a broker.
//! System topics, open only to the admin plane for queries, are open to it too (they hold
//! only this instance's messages).

use super::consumer::{
    ConsumerGroupHeader, ConsumerOffsetHeader, QueueHeader, UnregisterClientHeader,
};
use super::core::Broker;
use super::refusal::Refusal;
use super::retry::SendBackHeader;
use crate::acl::{Needs, Perm};
use crate::names::Namespace;
use crate::remoting::body::{self, HeartbeatData, LockBatchRequestBody};
use crate::remoting::request_code::*;
use crate::remoting::{
    CommandHeader, PullMessageRequestHeader, RemotingCommand, SendMessageRequestHeader,
};

/// The request codes clients send that have an entry in [`needs`]; any other code needs
/// an admin key.
pub const CLIENT_CODES: &[i32] = &[
    SEND_MESSAGE,
    SEND_MESSAGE_V2,
    SEND_BATCH_MESSAGE,
    PULL_MESSAGE,
    HEART_BEAT,
    UNREGISTER_CLIENT,
    GET_CONSUMER_LIST_BY_GROUP,
    QUERY_CONSUMER_OFFSET,
    UPDATE_CONSUMER_OFFSET,
    CONSUMER_SEND_MSG_BACK,
    QUERY_MESSAGE,
    VIEW_MESSAGE_BY_ID,
    END_TRANSACTION,
    LOCK_BATCH_MQ,
    UNLOCK_BATCH_MQ,
    GET_MAX_OFFSET,
    GET_MIN_OFFSET,
    SEARCH_OFFSET_BY_TIMESTAMP,
    GET_EARLIEST_MSG_STORETIME,
];

/// Whether `code` is checked as an admin request: every code that is not a listed client
/// code.
pub fn needs_admin(code: i32) -> bool {
    !CLIENT_CODES.contains(&code)
}

/// What `req` needs, in canonical names of `ns`.
pub(super) fn needs(req: &RemotingCommand, ns: &Namespace) -> Result<Needs, String> {
    let mut needs = Needs::default();
    let name = |n: &str| ns.canonical(n);
    match req.code {
        SEND_MESSAGE | SEND_MESSAGE_V2 | SEND_BATCH_MESSAGE => {
            let h = header::<SendMessageRequestHeader>(req)?;
            needs.topic(&name(&h.topic), Perm::PUB);
        }
        PULL_MESSAGE => {
            let h = header::<PullMessageRequestHeader>(req)?;
            needs
                .topic(&name(&h.topic), Perm::SUB)
                .group(&name(&h.consumer_group));
        }
        HEART_BEAT => {
            let data: HeartbeatData = body_of(req)?;
            for consumer in &data.consumer_data_set {
                needs.group(&name(&consumer.group_name));
                for sub in &consumer.subscription_data_set {
                    needs.topic(&name(&sub.topic), Perm::SUB);
                }
            }
        }
        UNREGISTER_CLIENT => {
            if let Some(group) = header::<UnregisterClientHeader>(req)?.consumer_group {
                needs.group(&name(&group));
            }
        }
        GET_CONSUMER_LIST_BY_GROUP => {
            needs.group(&name(&header::<ConsumerGroupHeader>(req)?.consumer_group));
        }
        QUERY_CONSUMER_OFFSET | UPDATE_CONSUMER_OFFSET => {
            let h = header::<ConsumerOffsetHeader>(req)?;
            needs
                .group(&name(&h.consumer_group))
                .topic(&name(&h.topic), Perm::SUB);
        }
        CONSUMER_SEND_MSG_BACK => {
            let h = header::<SendBackHeader>(req)?;
            needs.group(&name(&h.group));
            if let Some(topic) = h.origin_topic.filter(|t| !t.is_empty()) {
                needs.topic(&name(&topic), Perm::SUB);
            }
        }
        LOCK_BATCH_MQ | UNLOCK_BATCH_MQ => {
            let b: LockBatchRequestBody = body_of(req)?;
            needs.group(&name(&b.consumer_group));
            for mq in &b.mq_set {
                needs.topic(&name(&mq.topic), Perm::SUB);
            }
        }
        GET_MAX_OFFSET
        | GET_MIN_OFFSET
        | SEARCH_OFFSET_BY_TIMESTAMP
        | GET_EARLIEST_MSG_STORETIME => {
            needs.topic(&name(&header::<QueueHeader>(req)?.topic), Perm::SUB);
        }
        QUERY_MESSAGE => {
            let h = header::<super::query::QueryMessageRequestHeader>(req)?;
            needs.topic(&name(&h.topic), Perm::SUB);
        }
        // Checked against the topic the message really is in, in the processor.
        VIEW_MESSAGE_BY_ID => {}
        // The half's real topic is known once it is loaded: the processor checks PUB.
        END_TRANSACTION => {}
        _ => return Ok(Needs::admin()),
    }
    Ok(needs)
}

fn header<H: CommandHeader>(req: &RemotingCommand) -> Result<H, String> {
    H::from_command(req).map_err(|e| e.to_string())
}

fn body_of<T: serde::de::DeserializeOwned>(req: &RemotingCommand) -> Result<T, String> {
    body::from_json(req.body.as_deref()).map_err(|e| format!("bad request body: {e}"))
}

impl Broker {
    /// Checks `req` against the ACL: admin requests always when there is an admin key,
    /// everything when ACL is on; the refusal answers it otherwise.
    pub(super) fn authorize(&self, req: &RemotingCommand) -> Result<(), Refusal> {
        let acl = &self.cfg.acl;
        if needs_admin(req.code) {
            acl.authorize_admin(req)
        } else {
            acl.authorize(req, || needs(req, &self.cfg.namespace))
        }
        .map_err(|denied| Refusal::new(crate::acl::Denied::CODE, denied.0))
    }

    /// Checks that `req`'s account may consume the (canonical) `topic` (when ACL is on).
    pub(super) fn authorize_topic(
        &self,
        req: &RemotingCommand,
        topic: &str,
    ) -> Result<(), Refusal> {
        self.cfg
            .acl
            .authorize(req, || {
                let mut needs = Needs::default();
                needs.topic(topic, Perm::SUB);
                Ok(needs)
            })
            .map_err(|denied| Refusal::new(crate::acl::Denied::CODE, denied.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::body::{ConsumerData, MessageQueue, SubscriptionData};

    fn ns() -> Namespace {
        Namespace::new(Some("MQ_INST_1_x"))
    }

    fn topics(n: &Needs) -> Vec<(&str, Perm)> {
        n.topics.iter().map(|(t, p)| (t.as_str(), *p)).collect()
    }

    #[test]
    fn sends_need_pub_and_retry_sends_need_the_groups_sub() {
        for code in [SEND_MESSAGE, SEND_MESSAGE_V2, SEND_BATCH_MESSAGE] {
            let req = RemotingCommand::new_request(code)
                .with_ext("a", "GID_p")
                .with_ext("b", "orders")
                .with_ext("c", "TBW102")
                .with_ext("d", "4")
                .with_ext("e", "-1")
                .with_ext("f", "0")
                .with_ext("g", "0")
                .with_ext("h", "0");
            let n = needs(&req, &ns()).unwrap();
            assert_eq!(topics(&n), [("MQ_INST_1_x%orders", Perm::PUB)]);
            assert!(n.groups.is_empty(), "producer groups are not checked");
        }
        let retry = RemotingCommand::new_request(SEND_MESSAGE)
            .with_ext("producerGroup", "p")
            .with_ext("topic", "%RETRY%GID_a")
            .with_ext("defaultTopic", "TBW102")
            .with_ext("defaultTopicQueueNums", "4")
            .with_ext("queueId", "0")
            .with_ext("sysFlag", "0")
            .with_ext("bornTimestamp", "0")
            .with_ext("flag", "0");
        let n = needs(&retry, &ns()).unwrap();
        assert!(n.topics.is_empty());
        assert_eq!(n.groups, ["MQ_INST_1_x%GID_a"]);
    }

    #[test]
    fn pulls_and_offsets_need_sub_on_topic_and_group() {
        let pull = RemotingCommand::new_request(PULL_MESSAGE)
            .with_ext("consumerGroup", "MQ_INST_1_x%GID_a")
            .with_ext("topic", "orders")
            .with_ext("queueId", "0")
            .with_ext("queueOffset", "0")
            .with_ext("maxMsgNums", "32")
            .with_ext("sysFlag", "2")
            .with_ext("commitOffset", "0")
            .with_ext("suspendTimeoutMillis", "1000")
            .with_ext("subVersion", "0");
        let n = needs(&pull, &ns()).unwrap();
        assert_eq!(topics(&n), [("MQ_INST_1_x%orders", Perm::SUB)]);
        assert_eq!(n.groups, ["MQ_INST_1_x%GID_a"]);

        let offset = RemotingCommand::new_request(UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "GID_a")
            .with_ext("topic", "%RETRY%GID_a")
            .with_ext("queueId", "0")
            .with_ext("commitOffset", "3");
        let n = needs(&offset, &ns()).unwrap();
        assert!(n.topics.is_empty());
        assert_eq!(n.groups, ["MQ_INST_1_x%GID_a", "MQ_INST_1_x%GID_a"]);
    }

    #[test]
    fn heartbeats_need_sub_for_each_consumer_group_and_topic() {
        let data = HeartbeatData {
            client_id: "c".into(),
            consumer_data_set: vec![ConsumerData {
                group_name: "GID_a".into(),
                subscription_data_set: vec![
                    SubscriptionData {
                        topic: "orders".into(),
                        ..SubscriptionData::default()
                    },
                    SubscriptionData {
                        topic: "%RETRY%GID_a".into(),
                        ..SubscriptionData::default()
                    },
                ],
                ..ConsumerData::default()
            }],
            ..HeartbeatData::default()
        };
        let req = RemotingCommand::new_request(HEART_BEAT).with_body(body::to_json(&data));
        let n = needs(&req, &ns()).unwrap();
        assert_eq!(topics(&n), [("MQ_INST_1_x%orders", Perm::SUB)]);
        assert_eq!(n.groups, ["MQ_INST_1_x%GID_a", "MQ_INST_1_x%GID_a"]);

        let producer_only = HeartbeatData {
            client_id: "p".into(),
            ..HeartbeatData::default()
        };
        let req = RemotingCommand::new_request(HEART_BEAT).with_body(body::to_json(&producer_only));
        assert_eq!(needs(&req, &ns()).unwrap(), Needs::signature_only());
    }

    #[test]
    fn locks_send_backs_and_admin_codes() {
        let lock = LockBatchRequestBody {
            consumer_group: "GID_a".into(),
            client_id: "c".into(),
            mq_set: [MessageQueue {
                topic: "orders".into(),
                ..MessageQueue::default()
            }]
            .into(),
            ..LockBatchRequestBody::default()
        };
        let req = RemotingCommand::new_request(LOCK_BATCH_MQ).with_body(body::to_json(&lock));
        let n = needs(&req, &ns()).unwrap();
        assert_eq!(topics(&n), [("MQ_INST_1_x%orders", Perm::SUB)]);
        assert_eq!(n.groups, ["MQ_INST_1_x%GID_a"]);

        let back = RemotingCommand::new_request(CONSUMER_SEND_MSG_BACK)
            .with_ext("offset", "0")
            .with_ext("group", "GID_a")
            .with_ext("delayLevel", "0")
            .with_ext("originTopic", "orders");
        let n = needs(&back, &ns()).unwrap();
        assert_eq!(topics(&n), [("MQ_INST_1_x%orders", Perm::SUB)]);
        assert_eq!(n.groups, ["MQ_INST_1_x%GID_a"]);

        for code in [
            UPDATE_AND_CREATE_TOPIC,
            DELETE_SUBSCRIPTIONGROUP,
            GET_TOPIC_STATS_INFO,
        ] {
            let req = RemotingCommand::new_request(code);
            assert_eq!(needs(&req, &ns()).unwrap(), Needs::admin());
        }
        assert_eq!(
            needs(&RemotingCommand::new_request(9999), &ns()).unwrap(),
            Needs::admin(),
            "a code without an entry is admin-only"
        );
        assert!(needs_admin(9999) && needs_admin(UPDATE_AND_CREATE_TOPIC));
        assert!(!needs_admin(SEND_MESSAGE) && !needs_admin(HEART_BEAT));
    }

    #[test]
    fn consumer_admin_codes_need_the_admin_key() {
        for code in [
            INVOKE_BROKER_TO_RESET_OFFSET,
            QUERY_TOPIC_CONSUME_BY_WHO,
            GET_CONSUMER_RUNNING_INFO,
            CONSUME_MESSAGE_DIRECTLY,
            super::super::dlq::RESEND_DLQ_MESSAGE,
        ] {
            let req = RemotingCommand::new_request(code);
            assert_eq!(needs(&req, &ns()).unwrap(), Needs::admin(), "code {code}");
            assert!(needs_admin(code), "code {code}");
        }
    }

    #[test]
    fn queries_need_sub_on_the_topic_and_browse_and_stats_are_admin() {
        let query = RemotingCommand::new_request(QUERY_MESSAGE)
            .with_ext("topic", "orders")
            .with_ext("key", "k")
            .with_ext("maxNum", "32")
            .with_ext("beginTimestamp", "0")
            .with_ext("endTimestamp", "1");
        let n = needs(&query, &ns()).unwrap();
        assert_eq!(topics(&n), [("MQ_INST_1_x%orders", Perm::SUB)]);
        // The processor checks the stored message's own topic.
        let view = RemotingCommand::new_request(VIEW_MESSAGE_BY_ID).with_ext("offset", "0");
        assert_eq!(needs(&view, &ns()).unwrap(), Needs::signature_only());
        for code in [QUERY_CONSUME_TIME_SPAN, BROWSE_MESSAGES, GET_STATS_MINUTES] {
            let req = RemotingCommand::new_request(code);
            assert_eq!(needs(&req, &ns()).unwrap(), Needs::admin(), "code {code}");
        }
    }

    #[test]
    fn a_request_whose_names_cannot_be_read_is_refused() {
        let pull = RemotingCommand::new_request(PULL_MESSAGE).with_ext("topic", "orders");
        assert!(needs(&pull, &ns()).is_err());
        let hb = RemotingCommand::new_request(HEART_BEAT).with_body(&b"not json"[..]);
        assert!(
            needs(&hb, &ns())
                .unwrap_err()
                .starts_with("bad request body")
        );
    }
}

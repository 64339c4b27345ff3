//! Who consumes what, and calls relayed to consumer clients (`AdminBrokerProcessor`):
//! - QUERY_TOPIC_CONSUME_BY_WHO (300), header `topic` → `{"groupList":[…]}`: groups
//!   subscribed to the topic now (heartbeats) or holding offsets on it;
//! - GET_CONSUMER_RUNNING_INFO (307), header `consumerGroup, clientId, jstackEnable`, and
//!   CONSUME_MESSAGE_DIRECTLY (309), header `consumerGroup, clientId, msgId, brokerName`:
//!   relayed on the client's own connection (clients listen on no port), the client's
//!   answer returned as is. 309 first loads the message named by `msgId` (the offset id,
//!   as Java does; a unique key of a message in the group's dead-letter topic works too)
//!   and sends it as the body. A client not online is CONSUMER_NOT_ONLINE (206); one that
//!   does not answer within the broker's client-call timeout is CONSUME_MSG_TIMEOUT (207,
//!   Java's code) with a remark saying it timed out.
//!
//! INVOKE_BROKER_TO_RESET_OFFSET (222) is in `reset.rs`, RESEND_DLQ_MESSAGE (30002) in
//! `dlq.rs`. All of these are admin requests: they need the admin key.

use super::clients::ClientConn;
use super::core::{Broker, ok};
use super::refusal::{Refusal, Reply};
use crate::command_header;
use crate::names;
use crate::remoting::body;
use crate::remoting::{CommandHeader, RemotingCommand, request_code, response_code};
use crate::store::message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The admin request codes of this module, `reset.rs` and `dlq.rs`.
pub const CONSUME_ADMIN_CODES: [i32; 5] = [
    request_code::QUERY_TOPIC_CONSUME_BY_WHO,
    request_code::GET_CONSUMER_RUNNING_INFO,
    request_code::CONSUME_MESSAGE_DIRECTLY,
    request_code::INVOKE_BROKER_TO_RESET_OFFSET,
    super::dlq::RESEND_DLQ_MESSAGE,
];

/// Whether `code` is one of [`CONSUME_ADMIN_CODES`].
pub fn is_consume_admin(code: i32) -> bool {
    CONSUME_ADMIN_CODES.contains(&code)
}

/// Ext fields that sign the admin's request: never passed on to a client.
const SIGNATURE_FIELDS: [&str; 3] = ["AccessKey", "Signature", "SecurityToken"];

command_header! {
    /// QUERY_TOPIC_CONSUME_BY_WHO (300) request header.
    pub struct QueryTopicConsumeByWhoRequestHeader {
        /// Topic.
        topic: String = "topic";
    }
}

command_header! {
    /// GET_CONSUMER_RUNNING_INFO (307) request header.
    pub struct GetConsumerRunningInfoRequestHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup";
        /// The client asked.
        client_id: String = "clientId";
        /// Whether the client adds its thread dump.
        jstack_enable: Option<bool> = "jstackEnable";
    }
}

command_header! {
    /// CONSUME_MESSAGE_DIRECTLY (309) request header (`ConsumeMessageDirectlyResultRequestHeader`).
    pub struct ConsumeMessageDirectlyRequestHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup";
        /// The client that consumes the message.
        client_id: Option<String> = "clientId";
        /// Offset message id (or unique key of a message in the group's DLQ).
        msg_id: Option<String> = "msgId";
        /// Broker name (the broker writes its own).
        broker_name: Option<String> = "brokerName";
    }
}

/// QUERY_TOPIC_CONSUME_BY_WHO response body (`GroupList`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GroupList {
    /// Consumer groups, sorted.
    pub group_list: BTreeSet<String>,
}

impl Broker {
    /// Answers one of [`CONSUME_ADMIN_CODES`].
    pub(super) async fn consume_admin(&self, req: &RemotingCommand) -> Reply {
        match req.code {
            request_code::QUERY_TOPIC_CONSUME_BY_WHO => self.consumed_by(req),
            request_code::GET_CONSUMER_RUNNING_INFO => self.consumer_running_info(req).await,
            request_code::CONSUME_MESSAGE_DIRECTLY => self.consume_directly(req).await,
            request_code::INVOKE_BROKER_TO_RESET_OFFSET => self.reset_offset(req).await,
            _ => self.resend_dlq(req).await,
        }
    }

    /// The groups consuming `topic` (canonical): online subscribers and offset holders.
    pub(super) fn groups_consuming(&self, topic: &str) -> BTreeSet<String> {
        let mut groups: BTreeSet<String> = self
            .clients
            .consumer_groups()
            .into_iter()
            .filter(|g| self.clients.subscription(g, topic).is_some())
            .collect();
        groups.extend(self.offsets.groups_of_topic(topic));
        groups
    }

    fn consumed_by(&self, req: &RemotingCommand) -> Reply {
        let h = QueryTopicConsumeByWhoRequestHeader::from_command(req)?;
        let topic = self.cfg.namespace.canonical(h.topic.trim());
        let body = GroupList {
            group_list: self.groups_consuming(&topic),
        };
        Ok(ok(req).with_body(body::to_json(&body)))
    }

    async fn consumer_running_info(&self, req: &RemotingCommand) -> Reply {
        let h = GetConsumerRunningInfoRequestHeader::from_command(req)?;
        let group = self.cfg.namespace.canonical(h.consumer_group.trim());
        let client = self.online_client(&group, &h.client_id)?;
        self.call_client(req, &group, &client, None).await
    }

    async fn consume_directly(&self, req: &RemotingCommand) -> Reply {
        let h = ConsumeMessageDirectlyRequestHeader::from_command(req)?;
        let group = self.cfg.namespace.canonical(h.consumer_group.trim());
        let msg_id = h.msg_id.as_deref().map(str::trim).unwrap_or_default();
        let stored = self.find_message(&group, msg_id)?;
        let client_id = h.client_id.unwrap_or_default();
        let client = self.online_client(&group, &client_id)?;
        self.call_client(req, &group, &client, Some(stored)).await
    }

    /// The stored message `msg_id` names: an offset id, or the unique key of a message
    /// in the group's dead-letter topic.
    fn find_message(&self, group: &str, msg_id: &str) -> Result<bytes::Bytes, Refusal> {
        if msg_id.is_empty() {
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                "msgId is required: the offset message id of the message to consume",
            ));
        }
        // A unique key is hex of the same length: it may decode as an offset id that
        // points nowhere, so a failed look-up here is no error.
        if let Some(entry) = self.store.view_by_msg_id(msg_id).ok().flatten()
            && message::decode(&entry).is_ok()
        {
            return Ok(entry);
        }
        let dlq = names::dlq_topic(group);
        if let Some(found) = self.store.lookup_by_uniq_key(&dlq, msg_id, 1)?.pop() {
            return Ok(found.data);
        }
        Err(Refusal::new(
            response_code::QUERY_NOT_FOUND,
            format!("no message with id {msg_id} on this broker"),
        ))
    }

    /// The online client `client_id` of `group`.
    pub(super) fn online_client(
        &self,
        group: &str,
        client_id: &str,
    ) -> Result<ClientConn, Refusal> {
        self.clients
            .consumer_group(group)
            .and_then(|g| {
                g.clients
                    .into_values()
                    .find(|c| c.client_id == client_id && !c.channel.is_closed())
            })
            .ok_or_else(|| {
                Refusal::new(
                    response_code::CONSUMER_NOT_ONLINE,
                    format!("The Consumer <{group}> <{client_id}> not online"),
                )
            })
    }

    /// Relays `req` (its header, with the group as the client names it, and `body` or
    /// the request's own) to `client` and returns the client's answer to the caller.
    async fn call_client(
        &self,
        req: &RemotingCommand,
        group: &str,
        client: &ClientConn,
        body: Option<bytes::Bytes>,
    ) -> Reply {
        let mut relay = RemotingCommand::new_request(req.code);
        relay.ext_fields = req.ext_fields.clone();
        for field in SIGNATURE_FIELDS {
            relay.ext_fields.remove(field);
        }
        let shown = if client.bare {
            self.cfg.namespace.bare(group)
        } else {
            group.to_owned()
        };
        relay.set_ext("consumerGroup", shown);
        if req.code == request_code::CONSUME_MESSAGE_DIRECTLY {
            relay.set_ext("brokerName", self.cfg.broker_name.clone());
        }
        relay.body = body.or_else(|| req.body.clone());
        let timeout = self.cfg.client_call_timeout;
        let answer = client.channel.request(relay, timeout).await.map_err(|e| {
            let (code, what) = match e {
                crate::net::ChannelError::Timeout { .. } => (
                    response_code::CONSUME_MSG_TIMEOUT,
                    format!("timed out: no answer within {timeout:?}"),
                ),
                other => (response_code::SYSTEM_ERROR, other.to_string()),
            };
            Refusal::new(
                code,
                format!("invoke consumer <{group}> <{}> {what}", client.client_id),
            )
        })?;
        let mut response = RemotingCommand::response_to(req, answer.code, answer.remark.as_deref());
        response.ext_fields = answer.ext_fields;
        response.body = answer.body;
        Ok(response)
    }
}

//! RESEND_DLQ_MESSAGE (30002, private): a message of `%DLQ%<group>` is delivered to that
//! group again.
//!
//! Header `group` (required) and either `msgId` (the offset message id of the DLQ copy,
//! or its unique key: what `SendResult.msgId` and the console show) or `offset` (its
//! queue offset in the DLQ's queue 0). The broker re-puts the message into
//! `%RETRY%<group>` with its properties (`UNIQ_KEY`, `RETRY_TOPIC` naming the original
//! topic, `ORIGIN_MESSAGE_ID`, tags, keys) and body, without a delay and with its
//! reconsume count reset to 0, so whichever consumer holds the retry queue gets it at
//! once as a message of the original topic, and a new failure goes through the retry
//! levels again. The DLQ copy stays. The answer's ext fields `msgId` and `queueOffset`
//! name the new retry copy. Unknown group message: QUERY_NOT_FOUND (22) saying what was
//! looked for. Admin key required.

use super::core::{Broker, ok};
use super::refusal::{Refusal, Reply};
use super::retry::PROPERTY_RETRY_TOPIC;
use super::topics::topic_config;
use crate::command_header;
use crate::names;
use crate::remoting::{CommandHeader, RemotingCommand, response_code};
use crate::store::MessageToStore;
use crate::store::message::{self, encode_properties, properties_iter, sysflag};

/// RESEND_DLQ_MESSAGE: our private admin request code.
pub const RESEND_DLQ_MESSAGE: i32 = 30002;

command_header! {
    /// RESEND_DLQ_MESSAGE (30002) request header.
    pub struct ResendDlqMessageRequestHeader {
        /// The consumer group whose dead-letter message is resent to it.
        group: String = "group";
        /// Offset message id or unique key of the DLQ message.
        msg_id: Option<String> = "msgId";
        /// Queue offset of the DLQ message (used when `msgId` is absent).
        offset: Option<i64> = "offset";
    }
}

command_header! {
    /// RESEND_DLQ_MESSAGE response header: the retry copy.
    pub struct ResendDlqMessageResponseHeader {
        /// Offset message id of the retry copy.
        msg_id: String = "msgId";
        /// Its queue offset in `%RETRY%<group>`.
        queue_offset: i64 = "queueOffset";
    }
}

impl Broker {
    pub(super) async fn resend_dlq(&self, req: &RemotingCommand) -> Reply {
        let h = ResendDlqMessageRequestHeader::from_command(req)?;
        let group = self.cfg.namespace.canonical(h.group.trim());
        let dlq = names::dlq_topic(&group);
        let entry = self.dlq_message(&dlq, &h)?;
        let dead = message::decode(&entry).map_err(|e| {
            Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("stored message unreadable: {e}"),
            )
        })?;
        let retry = names::retry_topic(&group);
        let queues = self.group(&group)?.map_or(1, |g| g.retry_queue_nums.max(1));
        self.topics
            .get_or_create(&retry, topic_config(&retry, queues))?;
        // A DLQ copy always names its first topic; an older one may not.
        let origin = dead
            .property(PROPERTY_RETRY_TOPIC)
            .map(str::to_owned)
            .unwrap_or_else(|| dead.topic.to_string());
        let props: Vec<(&str, &str)> = properties_iter(&dead.properties)
            .filter(|(k, _)| ![PROPERTY_RETRY_TOPIC, super::send::PROPERTY_DELAY].contains(k))
            .chain([(PROPERTY_RETRY_TOPIC, origin.as_str())])
            .collect();
        let msg = MessageToStore {
            topic: retry,
            queue_id: 0,
            flag: dead.flag,
            sys_flag: dead.sys_flag & !(sysflag::BORNHOST_V6 | sysflag::STOREHOST_V6),
            body: bytes::Bytes::copy_from_slice(dead.body),
            properties: encode_properties(props),
            born_timestamp: dead.born_timestamp,
            born_host: dead.born_host,
            reconsume_times: 0,
            prepared_transaction_offset: 0,
        };
        let put = self.put(vec![msg]).await?;
        let Some(put) = put.first() else {
            return Err(Refusal::new(response_code::SYSTEM_ERROR, "nothing stored"));
        };
        tracing::info!(%group, msg_id = %put.msg_id, "dead-letter message resent");
        let mut response = ok(req);
        response.set_header(&ResendDlqMessageResponseHeader {
            msg_id: put.msg_id.clone(),
            queue_offset: put.queue_offset as i64,
        });
        Ok(response)
    }

    /// The DLQ message the header names.
    fn dlq_message(
        &self,
        dlq: &str,
        h: &ResendDlqMessageRequestHeader,
    ) -> Result<bytes::Bytes, Refusal> {
        let not_found = |what: String| {
            Refusal::new(
                response_code::QUERY_NOT_FOUND,
                format!("no message {what} in {dlq}"),
            )
        };
        if let Some(id) = h.msg_id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
            // A unique key may decode as an offset id pointing nowhere: no error.
            if let Some(entry) = self.store.view_by_msg_id(id).ok().flatten()
                && message::decode(&entry).is_ok_and(|m| m.topic == dlq)
            {
                return Ok(entry);
            }
            return match self.store.lookup_by_uniq_key(dlq, id, 1)?.pop() {
                Some(found) => Ok(found.data),
                None => Err(not_found(format!("with id {id}"))),
            };
        }
        let Some(offset) = h.offset.filter(|o| *o >= 0) else {
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                "give msgId (offset id or unique key) or offset of the dead-letter message",
            ));
        };
        let got = self.store.get(dlq, 0, offset as u64, 1, 1, &|_| true)?;
        match got.messages.into_iter().next() {
            Some(m) if m.queue_offset == offset as u64 => Ok(m.data),
            _ => Err(not_found(format!("at offset {offset}"))),
        }
    }
}

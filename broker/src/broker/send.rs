//! SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320).

use super::core::{Broker, ok, writable};
use super::refusal::{Refusal, Reply};
use crate::net::RequestContext;
use crate::remoting::body::TopicConfig;
use crate::remoting::{
    CommandHeader, RemotingCommand, SendMessageRequestHeader, SendMessageResponseHeader,
    response_code,
};
use crate::store::message::{self, property_value};
use crate::store::{MessageToStore, PutResult};
use bytes::{Buf, Bytes};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The `DELAY` property: a delay level (1-based) of the broker's table.
pub const PROPERTY_DELAY: &str = "DELAY";

/// One message of a batch body.
pub(crate) struct BatchItem {
    pub(crate) flag: i32,
    pub(crate) body: Bytes,
    pub(crate) properties: String,
}

/// Splits a batch body (`MessageDecoder.encodeMessages`): per message TOTALSIZE, MAGIC,
/// BODYCRC, FLAG, body (i32 length), properties (i16 length).
pub(crate) fn decode_batch(mut body: Bytes) -> Result<Vec<BatchItem>, Refusal> {
    let bad = |what: &str| {
        Refusal::new(
            response_code::MESSAGE_ILLEGAL,
            format!("malformed batch body: {what}"),
        )
    };
    let mut items = vec![];
    while body.has_remaining() {
        if body.remaining() < 20 {
            return Err(bad("truncated message header"));
        }
        let total = body.get_i32();
        let _magic = body.get_i32();
        let _crc = body.get_i32();
        let flag = body.get_i32();
        let body_len = usize::try_from(body.get_i32()).map_err(|_| bad("negative body length"))?;
        if total < 20 || body.remaining() < body_len + 2 {
            return Err(bad("message longer than the batch"));
        }
        let msg_body = body.split_to(body_len);
        let props_len =
            usize::try_from(body.get_i16()).map_err(|_| bad("negative properties length"))?;
        if body.remaining() < props_len {
            return Err(bad("properties longer than the batch"));
        }
        let properties = String::from_utf8_lossy(&body.split_to(props_len)).into_owned();
        items.push(BatchItem {
            flag,
            body: msg_body,
            properties,
        });
    }
    if items.is_empty() {
        return Err(bad("no messages"));
    }
    Ok(items)
}

impl Broker {
    /// Stores one message.
    pub(super) async fn send(&self, ctx: &RequestContext, req: &RemotingCommand) -> Reply {
        let arrived = ctx.received;
        let h = SendMessageRequestHeader::from_command(req)?;
        let (topic, config, queue_id) = self.send_target(&h)?;
        let msg = MessageToStore {
            topic,
            queue_id,
            flag: h.flag,
            sys_flag: h.sys_flag,
            body: req.body.clone().unwrap_or_default(),
            properties: h.properties.clone().unwrap_or_default(),
            born_timestamp: h.born_timestamp,
            born_host: ctx.channel.peer_addr(),
            reconsume_times: h.reconsume_times.unwrap_or(0),
            prepared_transaction_offset: 0,
        };
        if super::transaction::is_half(msg.sys_flag, &msg.properties) {
            return self.send_half(ctx, req, &h, msg).await;
        }
        let msg = match self.keep_timed(req, msg).await? {
            super::timer::Timed::Now(msg) => msg,
            super::timer::Timed::Kept(response) => return Ok(response),
        };
        let msg = self.route_delayed(msg, &config)?;
        let results = self.put_send(arrived, vec![msg]).await?;
        Ok(self.send_response(req, &results))
    }

    /// Stores every message of a batch, in order, in one queue.
    pub(super) async fn send_batch(&self, ctx: &RequestContext, req: &RemotingCommand) -> Reply {
        let arrived = ctx.received;
        let h = SendMessageRequestHeader::from_command(req)?;
        let (topic, _config, queue_id) = self.send_target(&h)?;
        if topic.starts_with(crate::names::RETRY_PREFIX) {
            return Err(Refusal::new(
                response_code::MESSAGE_ILLEGAL,
                "batch messages cannot be sent to a retry topic",
            ));
        }
        let items = decode_batch(req.body.clone().unwrap_or_default())?;
        if items
            .iter()
            .any(|i| super::transaction::is_half(h.sys_flag, &i.properties))
        {
            return Err(Refusal::new(
                response_code::MESSAGE_ILLEGAL,
                "batch messages cannot be transactional",
            ));
        }
        let total: usize = items.iter().map(|i| i.body.len()).sum();
        let max = self.store.max_body_bytes();
        if total > max {
            return Err(Refusal::new(
                response_code::MESSAGE_ILLEGAL,
                format!(
                    "the batch's bodies are {total} bytes together; the maximum message size is {max}"
                ),
            ));
        }
        let mut msgs = Vec::with_capacity(items.len());
        for item in items {
            if property_value(&item.properties, PROPERTY_DELAY).is_some_and(|d| d.trim() != "0") {
                return Err(Refusal::new(
                    response_code::MESSAGE_ILLEGAL,
                    "batch messages cannot be delayed",
                ));
            }
            if super::timer::deliver_time(&item.properties, 0)?.is_some() {
                return Err(Refusal::new(
                    response_code::MESSAGE_ILLEGAL,
                    "batch messages cannot be scheduled",
                ));
            }
            msgs.push(MessageToStore {
                topic: topic.clone(),
                queue_id,
                flag: item.flag,
                sys_flag: h.sys_flag,
                body: item.body,
                properties: item.properties,
                born_timestamp: h.born_timestamp,
                born_host: ctx.channel.peer_addr(),
                reconsume_times: 0,
                prepared_transaction_offset: 0,
            });
        }
        let results = self.put_send(arrived, msgs).await?;
        Ok(self.send_response(req, &results))
    }

    /// The canonical topic, its config and the queue a send goes to.
    fn send_target(
        &self,
        h: &SendMessageRequestHeader,
    ) -> Result<(String, TopicConfig, i32), Refusal> {
        let topic = self.cfg.namespace.canonical(&h.topic);
        message::validate_topic(&topic)
            .map_err(|e| Refusal::new(response_code::MESSAGE_ILLEGAL, e.to_string()))?;
        let config = self.topic_for_write(&topic, h.default_topic_queue_nums)?;
        if !writable(&config) {
            return Err(Refusal::new(
                response_code::NO_PERMISSION,
                format!("the topic[{topic}] sending message is forbidden"),
            ));
        }
        let queue_id = if h.queue_id < 0 {
            self.pick_queue(&config)
        } else {
            h.queue_id
        };
        if queue_id >= config.write_queue_nums {
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                format!(
                    "request queueId[{queue_id}] is illegal, topic {topic} has {} write queues",
                    config.write_queue_nums
                ),
            ));
        }
        Ok((topic, config, queue_id))
    }

    /// Stores messages off the async threads (puts block; sync flush waits for fsync),
    /// then wakes pulls waiting on their queues.
    pub(super) async fn put(&self, msgs: Vec<MessageToStore>) -> Result<Vec<PutResult>, Refusal> {
        let store = Arc::clone(&self.store);
        // The messages travel to the blocking task and back, so nothing is copied.
        let (msgs, results) = tokio::task::spawn_blocking(move || {
            let results = store.put_batch(&msgs);
            (msgs, results)
        })
        .await
        .map_err(|e| {
            Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("store task failed: {e}"),
            )
        })?;
        let results = results.map_err(|e| match e {
            crate::store::StoreError::Encode(e) => {
                Refusal::new(response_code::MESSAGE_ILLEGAL, e.to_string())
            }
            other => Refusal::from(other),
        })?;
        self.after_put(&msgs);
        Ok(results)
    }

    /// Counts stored messages and wakes pulls waiting on their queues.
    pub(super) fn after_put(&self, msgs: &[MessageToStore]) {
        let bytes: usize = msgs.iter().map(|m| m.body.len()).sum();
        self.stats
            .messages_in
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(bytes as u64, Ordering::Relaxed);
        for m in msgs {
            self.arrivals.notify(&m.topic, m.queue_id);
        }
        // A batch is one topic: one count per run of a topic, not one lock per message.
        for run in msgs.chunk_by(|a, b| a.topic == b.topic) {
            // Delayed and half messages count when they reach their real topic.
            if !crate::names::is_system(&run[0].topic) {
                self.minutes.record_put(&run[0].topic, run.len() as u64);
            }
        }
    }

    fn send_response(&self, req: &RemotingCommand, results: &[PutResult]) -> RemotingCommand {
        let mut response = ok(req);
        let first = results.first();
        response.set_header(&SendMessageResponseHeader {
            msg_id: results
                .iter()
                .map(|r| r.msg_id.as_str())
                .collect::<Vec<_>>()
                .join(","),
            queue_id: first.map_or(0, |r| r.queue_id),
            queue_offset: first.map_or(0, |r| r.queue_offset as i64),
            transaction_id: None,
            msg_region: Some("DefaultRegion".to_owned()),
            trace_on: Some(true),
        });
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn batch_entry(body: &[u8], props: &str) -> Vec<u8> {
        let mut b = vec![];
        let total = 4 + 4 + 4 + 4 + 4 + body.len() + 2 + props.len();
        b.put_i32(total as i32);
        b.put_i32(0);
        b.put_i32(0);
        b.put_i32(7);
        b.put_i32(body.len() as i32);
        b.put_slice(body);
        b.put_i16(props.len() as i16);
        b.put_slice(props.as_bytes());
        b
    }

    #[test]
    fn batch_bodies_split_into_messages_and_garbage_is_refused() {
        let mut body = batch_entry(b"one", "TAGS\u{1}A\u{2}");
        body.extend(batch_entry(b"two", ""));
        let items = decode_batch(Bytes::from(body.clone())).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(&items[0].body[..], b"one");
        assert_eq!(items[0].flag, 7);
        assert_eq!(items[0].properties, "TAGS\u{1}A\u{2}");
        assert_eq!(&items[1].body[..], b"two");
        for cut in 1..body.len() {
            if cut == batch_entry(b"one", "TAGS\u{1}A\u{2}").len() {
                continue;
            }
            let err = decode_batch(Bytes::from(body[..cut].to_vec())).err();
            assert_eq!(
                err.map(|e| e.code),
                Some(response_code::MESSAGE_ILLEGAL),
                "cut at {cut}"
            );
        }
    }
}

//! Client bookkeeping and offsets: HEART_BEAT, UNREGISTER_CLIENT,
//! GET_CONSUMER_LIST_BY_GROUP, QUERY/UPDATE_CONSUMER_OFFSET, GET_MAX/MIN_OFFSET,
//! SEARCH_OFFSET_BY_TIMESTAMP, GET_EARLIEST_MSG_STORETIME, LOCK/UNLOCK_BATCH_MQ.

use super::clients::ClientConn;
use super::core::{Broker, ok};
use super::refusal::{Refusal, Reply};
use super::topics::topic_config;
use crate::command_header;
use crate::names;
use crate::net::RequestContext;
use crate::remoting::body::{
    self, ConsumerList, HeartbeatData, LockBatchRequestBody, LockBatchResponseBody,
};
use crate::remoting::{CommandHeader, RemotingCommand, request_code, response_code};
use std::time::Instant;

command_header! {
    /// UNREGISTER_CLIENT (35) request header.
    pub struct UnregisterClientHeader {
        /// Client id.
        client_id: String = "clientID";
        /// Producer group leaving, if any.
        producer_group: Option<String> = "producerGroup";
        /// Consumer group leaving, if any.
        consumer_group: Option<String> = "consumerGroup";
    }
}

command_header! {
    /// Requests naming a consumer group (GET_CONSUMER_LIST_BY_GROUP, NOTIFY_CONSUMER_IDS_CHANGED).
    pub struct ConsumerGroupHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup";
    }
}

command_header! {
    /// QUERY_CONSUMER_OFFSET (14) / UPDATE_CONSUMER_OFFSET (15) request header.
    pub struct ConsumerOffsetHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup";
        /// Topic.
        topic: String = "topic";
        /// Queue.
        queue_id: i32 = "queueId";
        /// Offset to commit (update only).
        commit_offset: Option<i64> = "commitOffset";
    }
}

command_header! {
    /// Requests naming a queue (GET_MAX/MIN_OFFSET, GET_EARLIEST_MSG_STORETIME, SEARCH_OFFSET_BY_TIMESTAMP).
    pub struct QueueHeader {
        /// Topic.
        topic: String = "topic";
        /// Queue.
        queue_id: i32 = "queueId";
        /// Time to search for (search only).
        timestamp: Option<i64> = "timestamp";
    }
}

command_header! {
    /// Responses carrying one offset.
    pub struct OffsetResponseHeader {
        /// The offset.
        offset: i64 = "offset";
    }
}

command_header! {
    /// GET_EARLIEST_MSG_STORETIME response header.
    pub struct TimestampResponseHeader {
        /// Store time (ms).
        timestamp: i64 = "timestamp";
    }
}

fn with_offset(req: &RemotingCommand, offset: i64) -> RemotingCommand {
    let mut response = ok(req);
    response.set_header(&OffsetResponseHeader { offset });
    response
}

impl Broker {
    /// Records a client's producer and consumer groups; members changing tells the
    /// group's consumers to rebalance.
    pub(super) fn heartbeat(&self, ctx: &RequestContext, req: &RemotingCommand) -> Reply {
        let data: HeartbeatData = body::from_json(req.body.as_deref())?;
        let ns = &self.cfg.namespace;
        let conn = ClientConn {
            channel: ctx.channel.clone(),
            client_id: data.client_id.clone(),
            language: req.language.clone(),
            version: req.version,
            last_heartbeat: Instant::now(),
            bare: false,
        };
        // Bare or not per group: a namespaced consumer also heartbeats the bare
        // CLIENT_INNER_PRODUCER group, which must not make the broker call it with bare
        // names (its running info would then name a group it does not know).
        let as_sent = |group: &str| ClientConn {
            bare: ns.is_bare(group),
            ..conn.clone()
        };
        for producer in &data.producer_data_set {
            self.clients.register_producer(
                &ns.canonical(&producer.group_name),
                as_sent(&producer.group_name),
            );
        }
        for mut consumer in data.consumer_data_set {
            let conn = as_sent(&consumer.group_name);
            consumer.group_name = ns.canonical(&consumer.group_name);
            for sub in &mut consumer.subscription_data_set {
                sub.topic = ns.canonical(&sub.topic);
            }
            if let Some(group) = self.group(&consumer.group_name)? {
                // Clients subscribe to their retry topic at once: it must exist.
                let retry = names::retry_topic(&consumer.group_name);
                self.topics
                    .get_or_create(&retry, topic_config(&retry, group.retry_queue_nums.max(1)))?;
            }
            if self.clients.register_consumer(&consumer, conn.clone()) {
                tracing::info!(group = %consumer.group_name, client = %conn.client_id, members = ?self.clients.consumer_ids(&consumer.group_name), "consumer joined");
                self.notify_consumers_changed(&consumer.group_name);
            }
        }
        Ok(ok(req))
    }

    pub(super) fn unregister_client(&self, ctx: &RequestContext, req: &RemotingCommand) -> Reply {
        let h = UnregisterClientHeader::from_command(req)?;
        let ns = &self.cfg.namespace;
        if let Some(group) = h.producer_group {
            self.clients
                .unregister_producer(&ns.canonical(&group), ctx.channel.id());
        }
        if let Some(group) = h.consumer_group.map(|g| ns.canonical(&g))
            && self.clients.unregister_consumer(&group, ctx.channel.id())
        {
            self.notify_consumers_changed(&group);
        }
        Ok(ok(req))
    }

    /// Tells every consumer of `group` its membership changed (oneway), in the naming
    /// each client uses.
    pub(crate) fn notify_consumers_changed(&self, group: &str) {
        let Some(members) = self.clients.consumer_group(group) else {
            return;
        };
        for client in members.clients.into_values() {
            let shown = if client.bare {
                self.cfg.namespace.bare(group)
            } else {
                group.to_owned()
            };
            let mut notify =
                RemotingCommand::new_request(request_code::NOTIFY_CONSUMER_IDS_CHANGED);
            notify.set_header(&ConsumerGroupHeader {
                consumer_group: shown,
            });
            tokio::spawn(async move {
                let _ = client.channel.send_oneway(notify).await;
            });
        }
    }

    pub(super) fn consumer_list(&self, req: &RemotingCommand) -> Reply {
        let h = ConsumerGroupHeader::from_command(req)?;
        let group = self.cfg.namespace.canonical(&h.consumer_group);
        let ids = self.clients.consumer_ids(&group);
        if ids.is_empty() {
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("no consumer for this group, {group}"),
            ));
        }
        Ok(ok(req).with_body(body::to_json(&ConsumerList {
            consumer_id_list: ids,
        })))
    }

    pub(super) fn query_consumer_offset(&self, req: &RemotingCommand) -> Reply {
        let h = ConsumerOffsetHeader::from_command(req)?;
        let ns = &self.cfg.namespace;
        let (group, topic) = (ns.canonical(&h.consumer_group), ns.canonical(&h.topic));
        if let Some(offset) = self.offsets.query(&group, &topic, h.queue_id) {
            return Ok(with_offset(req, offset));
        }
        // A new group on a queue whose first message is still here starts at 0, as Java
        // does; otherwise the client decides from its consume-from-where.
        if self.store.min_offset(&topic, h.queue_id) == 0 {
            return Ok(with_offset(req, 0));
        }
        Err(Refusal::new(
            response_code::QUERY_NOT_FOUND,
            "Not found, maybe this group consumer boot first",
        ))
    }

    pub(super) fn update_consumer_offset(&self, req: &RemotingCommand) -> Reply {
        let h = ConsumerOffsetHeader::from_command(req)?;
        let ns = &self.cfg.namespace;
        let offset = h
            .commit_offset
            .ok_or(crate::remoting::HeaderError::Missing("commitOffset"))?;
        self.commit_client_offset(
            &ns.canonical(&h.consumer_group),
            &ns.canonical(&h.topic),
            h.queue_id,
            offset,
        );
        Ok(ok(req))
    }

    fn queue_header(&self, req: &RemotingCommand) -> Result<(String, QueueHeader), Refusal> {
        let h = QueueHeader::from_command(req)?;
        Ok((self.cfg.namespace.canonical(&h.topic), h))
    }

    pub(super) fn max_offset(&self, req: &RemotingCommand) -> Reply {
        let (topic, h) = self.queue_header(req)?;
        Ok(with_offset(
            req,
            self.store.max_offset(&topic, h.queue_id) as i64,
        ))
    }

    pub(super) fn min_offset(&self, req: &RemotingCommand) -> Reply {
        let (topic, h) = self.queue_header(req)?;
        Ok(with_offset(
            req,
            self.store.min_offset(&topic, h.queue_id) as i64,
        ))
    }

    pub(super) fn search_offset(&self, req: &RemotingCommand) -> Reply {
        let (topic, h) = self.queue_header(req)?;
        let timestamp = h
            .timestamp
            .ok_or(crate::remoting::HeaderError::Missing("timestamp"))?;
        Ok(with_offset(
            req,
            self.store
                .search_offset_by_time(&topic, h.queue_id, timestamp)? as i64,
        ))
    }

    pub(super) fn earliest_store_time(&self, req: &RemotingCommand) -> Reply {
        let (topic, h) = self.queue_header(req)?;
        let min = self.store.min_offset(&topic, h.queue_id);
        let timestamp = self
            .store
            .store_timestamp_at(&topic, h.queue_id, min)?
            .unwrap_or(-1);
        let mut response = ok(req);
        response.set_header(&TimestampResponseHeader { timestamp });
        Ok(response)
    }

    pub(super) fn lock_batch(&self, req: &RemotingCommand) -> Reply {
        let mut body: LockBatchRequestBody = body::from_json(req.body.as_deref())?;
        let ns = &self.cfg.namespace;
        let bare = ns.is_bare(&body.consumer_group);
        let group = ns.canonical(&body.consumer_group);
        let asked = std::mem::take(&mut body.mq_set);
        let canonical = asked
            .iter()
            .cloned()
            .map(|mut mq| {
                mq.topic = ns.canonical(&mq.topic);
                mq
            })
            .collect();
        let locked = self
            .locks
            .lock_batch(&group, &body.client_id, &canonical, Instant::now());
        let lock_ok_mq_set = asked
            .into_iter()
            .filter(|mq| {
                locked.iter().any(|l| {
                    l.queue_id == mq.queue_id
                        && l.broker_name == mq.broker_name
                        && l.topic == ns.canonical(&mq.topic)
                })
            })
            .map(|mut mq| {
                if bare {
                    mq.topic = ns.bare(&mq.topic);
                }
                mq
            })
            .collect();
        Ok(ok(req).with_body(body::to_json(&LockBatchResponseBody { lock_ok_mq_set })))
    }

    pub(super) fn unlock_batch(&self, req: &RemotingCommand) -> Reply {
        let body: LockBatchRequestBody = body::from_json(req.body.as_deref())?;
        let ns = &self.cfg.namespace;
        let queues = body
            .mq_set
            .into_iter()
            .map(|mut mq| {
                mq.topic = ns.canonical(&mq.topic);
                mq
            })
            .collect();
        self.locks.unlock_batch(
            &ns.canonical(&body.consumer_group),
            &body.client_id,
            &queues,
        );
        Ok(ok(req))
    }
}

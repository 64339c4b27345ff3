//! Admin requests (`AdminBrokerProcessor`): create/update/delete topics and subscription
//! groups, list their configs, consume and topic stats, connection lists, runtime info.
//!
//! Every change is idempotent: creating what exists with the same config changes nothing
//! (not even the table's data version), deleting what is absent succeeds. Names are
//! canonicalised into the broker's instance namespace like every other request, and
//! answers carry canonical names.
//!
//! Deleting a topic removes its config and every group's offsets on it; the store keeps
//! its messages until retention removes them (age or disk threshold, the only way stored
//! messages go away), so a topic re-created before then continues at its old offsets.
//! Deleting a group removes its config and its offsets; its `%RETRY%`/`%DLQ%` topics are
//! deleted by the admin client, as mqadmin does (they are topics like any other here).

use super::core::{Broker, ok};
use super::groups::SubscriptionGroupConfig;
use super::refusal::{Refusal, Reply};
use super::topics::{registration_view, topic_config};
use crate::command_header;
use crate::names;
use crate::namesrv::TopicRequestHeader;
use crate::net::not_supported;
use crate::remoting::admin::{
    Connection, ConsumeStats, ConsumerConnection, KvTable, OffsetWrapper, ProducerConnection,
    TopicOffset, TopicStatsTable,
};
use crate::remoting::body::{
    self, DataVersion, MessageQueue, PERM_READ, PERM_WRITE, TopicConfig, TopicFilterType,
};
use crate::remoting::fastjson::MqMap;
use crate::remoting::{CommandHeader, RemotingCommand, mq_version, request_code, response_code};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

/// Longest topic name a 4.x broker accepts (`TopicValidator.TOPIC_MAX_LENGTH`).
const TOPIC_MAX_LENGTH: usize = 127;

/// The request codes this module answers.
const ADMIN_CODES: [i32; 11] = [
    request_code::UPDATE_AND_CREATE_TOPIC,
    request_code::DELETE_TOPIC_IN_BROKER,
    request_code::GET_ALL_TOPIC_CONFIG,
    request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
    request_code::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
    request_code::DELETE_SUBSCRIPTIONGROUP,
    request_code::GET_CONSUME_STATS,
    request_code::GET_TOPIC_STATS_INFO,
    request_code::GET_CONSUMER_CONNECTION_LIST,
    request_code::GET_PRODUCER_CONNECTION_LIST,
    request_code::GET_BROKER_RUNTIME_INFO,
];

/// Whether `code` is an admin request this module answers.
pub fn is_admin(code: i32) -> bool {
    ADMIN_CODES.contains(&code) || super::query::ADMIN_CODES.contains(&code)
}

command_header! {
    /// UPDATE_AND_CREATE_TOPIC (17) request header (`CreateTopicRequestHeader`).
    ///
    /// Java requires every field but `topicSysFlag`; we default the ones a config can do
    /// without (perm RW, `SINGLE_TAG`, not ordered).
    pub struct CreateTopicRequestHeader {
        /// Topic.
        topic: String = "topic";
        /// Template topic (`TBW102`); unused.
        default_topic: Option<String> = "defaultTopic";
        /// Queues consumers read.
        read_queue_nums: i32 = "readQueueNums";
        /// Queues producers write.
        write_queue_nums: i32 = "writeQueueNums";
        /// Permission bits (read 4, write 2).
        perm: Option<i32> = "perm";
        /// `SINGLE_TAG` or `MULTI_TAG`.
        topic_filter_type: Option<String> = "topicFilterType";
        /// Topic sys flag.
        topic_sys_flag: Option<i32> = "topicSysFlag";
        /// Ordered topic.
        order: Option<bool> = "order";
    }
}

command_header! {
    /// DELETE_SUBSCRIPTIONGROUP (207) request header (`DeleteSubscriptionGroupRequestHeader`).
    pub struct DeleteSubscriptionGroupRequestHeader {
        /// Group.
        group_name: String = "groupName";
        /// 5.x flag; offsets are removed whatever it says.
        clean_offset: Option<bool> = "cleanOffset";
    }
}

command_header! {
    /// GET_CONSUME_STATS (208) request header (`GetConsumeStatsRequestHeader`).
    pub struct GetConsumeStatsRequestHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup";
        /// Only this topic; every topic the group consumes when absent or blank.
        topic: Option<String> = "topic";
    }
}

command_header! {
    /// GET_CONSUMER_CONNECTION_LIST (203) request header.
    pub struct GetConsumerConnectionListRequestHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup";
    }
}

command_header! {
    /// GET_PRODUCER_CONNECTION_LIST (204) request header.
    pub struct GetProducerConnectionListRequestHeader {
        /// Producer group.
        producer_group: String = "producerGroup";
    }
}

/// GET_ALL_SUBSCRIPTIONGROUP_CONFIG response body (`SubscriptionGroupWrapper`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupWrapper {
    /// Group name → config.
    pub subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
    /// Version of the table.
    pub data_version: DataVersion,
}

/// Refuses names Java's `TopicValidator` refuses, and the cluster's name (4.x).
fn validate_topic(topic: &str, cluster: &str) -> Result<(), Refusal> {
    let refuse = |remark: String| Err(Refusal::new(response_code::SYSTEM_ERROR, remark));
    if topic.trim().is_empty() {
        return refuse("The specified topic is blank.".into());
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"%|_-".contains(&b))
    {
        return refuse(format!(
            "The specified topic[{topic}] contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$"
        ));
    }
    if topic.len() > TOPIC_MAX_LENGTH {
        return refuse("The specified topic is longer than topic max length.".into());
    }
    if topic == cluster {
        return refuse(format!(
            "the topic[{topic}] is conflict with system reserved words."
        ));
    }
    Ok(())
}

/// The topic config a create request describes.
fn requested_topic(topic: &str, h: &CreateTopicRequestHeader) -> Result<TopicConfig, Refusal> {
    let filter = match h.topic_filter_type.as_deref().map(str::trim) {
        None | Some("") => TopicFilterType::SingleTag,
        Some(name) => {
            serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|_| {
                Refusal::new(
                    response_code::SYSTEM_ERROR,
                    format!("topicFilterType = [{name}] value invalid"),
                )
            })?
        }
    };
    if h.read_queue_nums < 0 || h.write_queue_nums < 0 {
        return Err(Refusal::new(
            response_code::SYSTEM_ERROR,
            "queue numbers must not be negative",
        ));
    }
    Ok(TopicConfig {
        topic_name: topic.to_owned(),
        read_queue_nums: h.read_queue_nums,
        write_queue_nums: h.write_queue_nums,
        perm: h.perm.unwrap_or(PERM_READ | PERM_WRITE),
        topic_filter_type: filter,
        topic_sys_flag: h.topic_sys_flag.unwrap_or(0),
        order: h.order.unwrap_or(false),
    })
}

/// Java's `runtime` format: `[ 0 days, 1 hours, 2 minutes, 3 seconds ]`.
fn format_runtime(secs: u64) -> String {
    format!(
        "[ {} days, {} hours, {} minutes, {} seconds ]",
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

impl Broker {
    /// Answers an admin request (see [`is_admin`]).
    pub(super) fn admin(&self, req: &RemotingCommand) -> Reply {
        match req.code {
            request_code::UPDATE_AND_CREATE_TOPIC => self.create_topic(req),
            request_code::DELETE_TOPIC_IN_BROKER => self.delete_topic(req),
            request_code::GET_ALL_TOPIC_CONFIG => {
                Ok(ok(req).with_body(body::to_json(&registration_view(&self.topics))))
            }
            request_code::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP => self.create_group(req),
            request_code::GET_ALL_SUBSCRIPTIONGROUP_CONFIG => self.all_groups(req),
            request_code::DELETE_SUBSCRIPTIONGROUP => self.delete_group(req),
            request_code::GET_CONSUME_STATS => self.consume_stats(req),
            request_code::GET_TOPIC_STATS_INFO => self.topic_stats(req),
            request_code::GET_CONSUMER_CONNECTION_LIST => self.consumer_connections(req),
            request_code::GET_PRODUCER_CONNECTION_LIST => self.producer_connections(req),
            request_code::GET_BROKER_RUNTIME_INFO => {
                Ok(ok(req).with_body(body::to_json(&KvTable {
                    table: self.runtime_info(),
                })))
            }
            _ => Ok(not_supported(req)),
        }
    }

    fn create_topic(&self, req: &RemotingCommand) -> Reply {
        let h = CreateTopicRequestHeader::from_command(req)?;
        let topic = self.cfg.namespace.canonical(h.topic.trim());
        validate_topic(&topic, &self.cfg.cluster)?;
        let config = requested_topic(&topic, &h)?;
        if self.topics.upsert(&topic, config)? {
            tracing::info!(%topic, "topic created or updated");
        }
        Ok(ok(req))
    }

    fn delete_topic(&self, req: &RemotingCommand) -> Reply {
        let h = TopicRequestHeader::from_command(req)?;
        let topic = self.cfg.namespace.canonical(h.topic.trim());
        validate_topic(&topic, &self.cfg.cluster)?;
        if names::is_system(&topic) {
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("The topic[{topic}] is conflict with system topic."),
            ));
        }
        if self.topics.remove(&topic)? {
            tracing::info!(%topic, "topic deleted (messages stay until retention)");
        }
        self.offsets.remove_topic(&topic);
        Ok(ok(req))
    }

    fn create_group(&self, req: &RemotingCommand) -> Reply {
        let mut config: SubscriptionGroupConfig = body::from_json(req.body.as_deref())?;
        let group = self.cfg.namespace.canonical(config.group_name.trim());
        if group.is_empty() {
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                "the body has no groupName",
            ));
        }
        config.group_name = group.clone();
        let retry_queues = config.retry_queue_nums.max(1);
        if self.groups.upsert(&group, config)? {
            tracing::info!(%group, "subscription group created or updated");
        }
        // Consumers subscribe to their retry topic at once: it exists with the group.
        let retry = names::retry_topic(&group);
        self.topics
            .upsert(&retry, topic_config(&retry, retry_queues))?;
        Ok(ok(req))
    }

    fn all_groups(&self, req: &RemotingCommand) -> Reply {
        let (table, data_version) = self.groups.snapshot();
        Ok(ok(req).with_body(body::to_json(&SubscriptionGroupWrapper {
            subscription_group_table: table,
            data_version,
        })))
    }

    fn delete_group(&self, req: &RemotingCommand) -> Reply {
        let h = DeleteSubscriptionGroupRequestHeader::from_command(req)?;
        let group = self.cfg.namespace.canonical(h.group_name.trim());
        if self.groups.remove(&group)? {
            tracing::info!(%group, "subscription group deleted");
        }
        self.offsets.remove_group(&group);
        Ok(ok(req))
    }

    /// The queue `queue_id` of `topic` on this broker.
    fn queue(&self, topic: &str, queue_id: i32) -> MessageQueue {
        MessageQueue {
            topic: topic.to_owned(),
            broker_name: self.cfg.broker_name.clone(),
            queue_id,
        }
    }

    /// Store time of the message at a queue offset, 0 when unknown.
    fn store_time(&self, topic: &str, queue_id: i32, offset: i64) -> i64 {
        if offset < 0 {
            return 0;
        }
        self.store
            .store_timestamp_at(topic, queue_id, offset as u64)
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Topics a group's stats cover: the one asked for, or those it has offsets on or
    /// subscribes to.
    fn stats_topics(&self, group: &str, topic: Option<&str>) -> BTreeSet<String> {
        if let Some(topic) = topic.map(str::trim).filter(|t| !t.is_empty()) {
            return [self.cfg.namespace.canonical(topic)].into();
        }
        let mut topics: BTreeSet<String> =
            self.offsets.topics_of_group(group).into_iter().collect();
        if let Some(online) = self.clients.consumer_group(group) {
            topics.extend(online.subscriptions.into_keys());
        }
        topics
    }

    fn consume_stats(&self, req: &RemotingCommand) -> Reply {
        let h = GetConsumeStatsRequestHeader::from_command(req)?;
        let group = self.cfg.namespace.canonical(h.consumer_group.trim());
        let online = self.clients.consumer_group(&group);
        let mut stats = ConsumeStats::default();
        for topic in self.stats_topics(&group, h.topic.as_deref()) {
            let Some(config) = self.topics.get(&topic) else {
                continue;
            };
            // As Java: an online group that does not subscribe to the topic is skipped.
            if let Some(g) = &online
                && !g.subscriptions.is_empty()
                && !g.subscriptions.contains_key(&topic)
            {
                continue;
            }
            for queue_id in 0..config.read_queue_nums {
                let consumer_offset = self
                    .offsets
                    .query(&group, &topic, queue_id)
                    .unwrap_or(0)
                    .max(0);
                let offsets = OffsetWrapper {
                    broker_offset: self.store.max_offset(&topic, queue_id) as i64,
                    consumer_offset,
                    last_timestamp: self.store_time(&topic, queue_id, consumer_offset - 1),
                    // Pull positions are not tracked: the committed offset is where the
                    // group continues after a rebalance.
                    pull_offset: consumer_offset,
                };
                stats
                    .offset_table
                    .0
                    .insert(self.queue(&topic, queue_id), offsets);
            }
            stats.consume_tps += self.activity.consume_tps(&group, &topic);
        }
        Ok(ok(req).with_body(stats.to_fastjson()))
    }

    fn topic_stats(&self, req: &RemotingCommand) -> Reply {
        let h = TopicRequestHeader::from_command(req)?;
        let topic = self.cfg.namespace.canonical(h.topic.trim());
        let Some(config) = self.topics.get(&topic) else {
            return Err(Refusal::new(
                response_code::TOPIC_NOT_EXIST,
                format!("topic[{topic}] not exist"),
            ));
        };
        let table = (0..config.write_queue_nums)
            .map(|queue_id| {
                let max_offset = self.store.max_offset(&topic, queue_id) as i64;
                let offsets = TopicOffset {
                    last_update_timestamp: self.store_time(&topic, queue_id, max_offset - 1),
                    max_offset,
                    min_offset: self.store.min_offset(&topic, queue_id) as i64,
                };
                (self.queue(&topic, queue_id), offsets)
            })
            .collect();
        let stats = TopicStatsTable {
            offset_table: MqMap(table),
        };
        Ok(ok(req).with_body(stats.to_fastjson()))
    }

    fn consumer_connections(&self, req: &RemotingCommand) -> Reply {
        let h = GetConsumerConnectionListRequestHeader::from_command(req)?;
        let group = self.cfg.namespace.canonical(h.consumer_group.trim());
        let Some(online) = self.clients.consumer_group(&group) else {
            return Err(Refusal::new(
                response_code::CONSUMER_NOT_ONLINE,
                format!("the consumer group[{group}] not online"),
            ));
        };
        let connections = ConsumerConnection {
            connection_set: online.clients.values().map(connection).collect(),
            consume_from_where: online.consume_from_where,
            consume_type: online.consume_type,
            message_model: online.message_model,
            subscription_table: online.subscriptions,
        };
        Ok(ok(req).with_body(body::to_json(&connections)))
    }

    fn producer_connections(&self, req: &RemotingCommand) -> Reply {
        let h = GetProducerConnectionListRequestHeader::from_command(req)?;
        let group = self.cfg.namespace.canonical(h.producer_group.trim());
        let clients = self.clients.producers(&group);
        if clients.is_empty() {
            return Err(Refusal::new(
                response_code::SYSTEM_ERROR,
                format!("the producer group[{group}] not exist"),
            ));
        }
        let connections = ProducerConnection {
            connection_set: clients.iter().map(connection).collect(),
        };
        Ok(ok(req).with_body(body::to_json(&connections)))
    }

    /// GET_BROKER_RUNTIME_INFO's table: the keys mqadmin and the dashboard read.
    ///
    /// No day boundaries are kept, so the "morning" counters are 0 and "today" means
    /// "since start"; rates are those of [`Activity`](super::activity::Activity).
    pub fn runtime_info(&self) -> BTreeMap<String, String> {
        let put = self.stats.messages_in.load(Ordering::Relaxed);
        let get = self.stats.messages_out.load(Ordering::Relaxed);
        let (put_tps, get_tps) = self.activity.broker_tps(put, get);
        let tps = |v: f64| format!("{v:.2} {v:.2} {v:.2}");
        [
            ("brokerVersionDesc", "V4_9_5".to_owned()),
            ("brokerVersion", mq_version::CURRENT.to_string()),
            ("bootTimestamp", self.activity.started_ms().to_string()),
            ("runtime", format_runtime(self.activity.uptime().as_secs())),
            ("msgPutTotalYesterdayMorning", "0".to_owned()),
            ("msgPutTotalTodayMorning", "0".to_owned()),
            ("msgPutTotalTodayNow", put.to_string()),
            ("msgGetTotalYesterdayMorning", "0".to_owned()),
            ("msgGetTotalTodayMorning", "0".to_owned()),
            ("msgGetTotalTodayNow", get.to_string()),
            (
                "putMessageSizeTotal",
                self.stats.bytes_in.load(Ordering::Relaxed).to_string(),
            ),
            ("putTps", tps(put_tps)),
            ("getTransferedTps", tps(get_tps)),
            (
                "commitLogMinOffset",
                self.store.commitlog_min_offset().to_string(),
            ),
            (
                "commitLogMaxOffset",
                self.store.commitlog_max_offset().to_string(),
            ),
            (
                RUNTIME_STORE_DISK_FULL,
                self.store.disk_full().unwrap_or_default(),
            ),
            (
                RUNTIME_STORE_RECOVERY_CUT,
                self.store
                    .recovery_cut()
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            ),
            (
                super::transaction::RUNTIME_HALF_PENDING,
                self.transactions().pending().to_string(),
            ),
            (
                super::timer::RUNTIME_TIMER_PENDING,
                self.timer.pending().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// Runtime-info key: why the store refuses writes for lack of space (empty while it
/// takes them).
pub const RUNTIME_STORE_DISK_FULL: &str = "storeDiskFull";
/// Runtime-info key: what a forced recovery cut from a damaged commit log at this start
/// (offset, segment and dropped bytes; empty when nothing was cut).
pub const RUNTIME_STORE_RECOVERY_CUT: &str = "storeRecoveryCut";

/// A client as a connection list shows it.
fn connection(c: &super::clients::ClientConn) -> Connection {
    Connection {
        client_addr: c.channel.peer_addr().to_string(),
        client_id: c.client_id.clone(),
        language: c.language.to_string(),
        version: c.version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked_like_java() {
        assert!(validate_topic("MQ_INST_1_x%Topic-a|b", "DefaultCluster").is_ok());
        for bad in ["", " ", "a b", "a/b", "DefaultCluster"] {
            assert!(validate_topic(bad, "DefaultCluster").is_err(), "{bad:?}");
        }
        assert!(validate_topic(&"t".repeat(128), "c").is_err());
        assert!(validate_topic(&"t".repeat(127), "c").is_ok());
    }

    #[test]
    fn create_headers_default_what_java_requires_but_we_can_do_without() {
        let h = CreateTopicRequestHeader {
            topic: "T".into(),
            read_queue_nums: 4,
            write_queue_nums: 2,
            topic_filter_type: Some("multi_tag".into()),
            ..Default::default()
        };
        let config = requested_topic("T", &h).unwrap();
        assert_eq!(config.perm, 6);
        assert_eq!(config.topic_filter_type, TopicFilterType::MultiTag);
        assert_eq!((config.read_queue_nums, config.write_queue_nums), (4, 2));
        let bad = CreateTopicRequestHeader {
            topic_filter_type: Some("NO_TAG".into()),
            ..h
        };
        assert!(requested_topic("T", &bad).is_err());
    }

    #[test]
    fn runtime_is_formatted_like_java() {
        assert_eq!(
            format_runtime(90_061),
            "[ 1 days, 1 hours, 1 minutes, 1 seconds ]"
        );
    }
}

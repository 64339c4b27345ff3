//! JSON bodies of requests and responses (`protocol/route/*`, `protocol/heartbeat/*`,
//! `protocol/body/*`, `TopicConfig`, `DataVersion`).
//!
//! Java writes these with fastjson: enums by name, nulls omitted. Reading is liberal as
//! clients differ (spec/messaging.md "Be liberal"): enums by name or ordinal, numbers as
//! strings, missing fields defaulted, unknown fields ignored. Maps keyed by numbers (broker
//! ids) are written with quoted keys: Java's fastjson reads both, strict JSON parsers (the
//! Rust and Go clients) only these.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Topic permission bit: consumers may read.
pub const PERM_READ: i32 = 4;
/// Topic permission bit: producers may write.
pub const PERM_WRITE: i32 = 2;

/// Serializes a body as JSON bytes.
pub fn to_json<T: Serialize>(body: &T) -> bytes::Bytes {
    // Serializing plain data structs with string keys cannot fail.
    serde_json::to_vec(body).unwrap_or_default().into()
}

/// Parses a JSON body, reporting what was wrong.
pub fn from_json<'a, T: Deserialize<'a>>(body: Option<&'a [u8]>) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body.unwrap_or(b"{}"))
}

/// Reads an integer given as a JSON number or a numeric string.
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| de::Error::custom("not an integer")),
        serde_json::Value::String(s) => s.trim().parse().map_err(de::Error::custom),
        serde_json::Value::Null => Ok(0),
        other => Err(de::Error::custom(format!(
            "expected an integer, got {other}"
        ))),
    }
}

fn lenient_i32<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let v = lenient_i64(d)?;
    i32::try_from(v).map_err(de::Error::custom)
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => Ok(b),
        serde_json::Value::Number(n) => Ok(n.as_i64().unwrap_or(0) != 0),
        serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" | "" => Ok(false),
            other => Err(de::Error::custom(format!(
                "expected a boolean, got {other:?}"
            ))),
        },
        serde_json::Value::Null => Ok(false),
        other => Err(de::Error::custom(format!(
            "expected a boolean, got {other}"
        ))),
    }
}

/// Declares a Java enum read by name (any case) or ordinal and written by name.
macro_rules! java_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            const ALL: &'static [($name, &'static str)] = &[$(($name::$variant, $wire)),+];

            /// The Java constant name.
            pub fn as_str(self) -> &'static str {
                Self::ALL.iter().find(|(v, _)| *v == self).map(|(_, n)| *n).unwrap_or_default()
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let found = match serde_json::Value::deserialize(d)? {
                    serde_json::Value::String(s) => Self::ALL
                        .iter()
                        .find(|(_, n)| n.eq_ignore_ascii_case(s.trim()))
                        .or_else(|| s.trim().parse::<usize>().ok().and_then(|i| Self::ALL.get(i))),
                    serde_json::Value::Number(n) => {
                        n.as_u64().and_then(|i| Self::ALL.get(i as usize))
                    }
                    serde_json::Value::Null => return Ok(Self::default()),
                    _ => None,
                };
                found.map(|(v, _)| *v).ok_or_else(|| {
                    de::Error::custom(concat!("unknown ", stringify!($name)))
                })
            }
        }
    };
}

java_enum!(
    /// How a topic's messages are tagged (`TopicFilterType`).
    TopicFilterType {
        /// One tag per message.
        #[default]
        SingleTag = "SINGLE_TAG",
        /// Several tags per message.
        MultiTag = "MULTI_TAG",
    }
);

java_enum!(
    /// Push or pull consumer (`ConsumeType`).
    ConsumeType {
        /// Pull consumer.
        ConsumeActively = "CONSUME_ACTIVELY",
        /// Push consumer.
        #[default]
        ConsumePassively = "CONSUME_PASSIVELY",
        /// 5.x POP consumer.
        ConsumePop = "CONSUME_POP",
    }
);

java_enum!(
    /// Whether each message goes to one consumer of the group or to all (`MessageModel`).
    MessageModel {
        /// Every consumer gets every message; offsets kept by clients.
        Broadcasting = "BROADCASTING",
        /// Each message to one consumer; offsets kept by the broker.
        #[default]
        Clustering = "CLUSTERING",
    }
);

java_enum!(
    /// Where a new consumer group starts (`ConsumeFromWhere`, 4.x ordinals).
    ConsumeFromWhere {
        /// From the end.
        #[default]
        ConsumeFromLastOffset = "CONSUME_FROM_LAST_OFFSET",
        /// Deprecated alias of last offset.
        ConsumeFromLastOffsetAndFromMinWhenBootFirst = "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST",
        /// Deprecated.
        ConsumeFromMinOffset = "CONSUME_FROM_MIN_OFFSET",
        /// Deprecated.
        ConsumeFromMaxOffset = "CONSUME_FROM_MAX_OFFSET",
        /// From the beginning.
        ConsumeFromFirstOffset = "CONSUME_FROM_FIRST_OFFSET",
        /// From a timestamp.
        ConsumeFromTimestamp = "CONSUME_FROM_TIMESTAMP",
    }
);

/// A topic as a broker holds it (`TopicConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfig {
    /// Topic name.
    pub topic_name: String,
    /// Queues consumers read.
    #[serde(deserialize_with = "lenient_i32")]
    pub read_queue_nums: i32,
    /// Queues producers write.
    #[serde(deserialize_with = "lenient_i32")]
    pub write_queue_nums: i32,
    /// Permission bits (read 4, write 2).
    #[serde(deserialize_with = "lenient_i32")]
    pub perm: i32,
    /// Tag type.
    pub topic_filter_type: TopicFilterType,
    /// Topic sys flag.
    #[serde(deserialize_with = "lenient_i32")]
    pub topic_sys_flag: i32,
    /// Ordered topic.
    #[serde(deserialize_with = "lenient_bool")]
    pub order: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            topic_name: String::new(),
            read_queue_nums: 16,
            write_queue_nums: 16,
            perm: PERM_READ | PERM_WRITE,
            topic_filter_type: TopicFilterType::SingleTag,
            topic_sys_flag: 0,
            order: false,
        }
    }
}

/// Version of a broker's topic table (`DataVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DataVersion {
    /// When the table last changed (ms).
    #[serde(deserialize_with = "lenient_i64")]
    pub timestamp: i64,
    /// Changes since start.
    #[serde(deserialize_with = "lenient_i64")]
    pub counter: i64,
}

/// A broker's topics with their version (`TopicConfigSerializeWrapper`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicConfigSerializeWrapper {
    /// Topic name → config.
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    /// Version of the table.
    pub data_version: DataVersion,
}

/// REGISTER_BROKER body (`RegisterBrokerBody`, uncompressed form).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegisterBrokerBody {
    /// The broker's topics.
    pub topic_config_serialize_wrapper: TopicConfigSerializeWrapper,
    /// Filter servers (unused; always empty).
    pub filter_server_list: Vec<String>,
}

/// A topic's queues on one broker (`QueueData`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QueueData {
    /// Broker name.
    pub broker_name: String,
    /// Readable queues.
    #[serde(deserialize_with = "lenient_i32")]
    pub read_queue_nums: i32,
    /// Writable queues.
    #[serde(deserialize_with = "lenient_i32")]
    pub write_queue_nums: i32,
    /// Permission bits.
    #[serde(deserialize_with = "lenient_i32")]
    pub perm: i32,
    /// Topic sys flag (later 4.x spelling).
    #[serde(deserialize_with = "lenient_i32")]
    pub topic_sys_flag: i32,
    /// Topic sys flag (older 4.x spelling, `topicSynFlag`); both are written.
    #[serde(deserialize_with = "lenient_i32")]
    pub topic_syn_flag: i32,
}

/// One broker group: its name, cluster and addresses by broker id (`BrokerData`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BrokerData {
    /// Cluster name.
    pub cluster: String,
    /// Broker name.
    pub broker_name: String,
    /// Broker id (0 = master) → `ip:port`.
    pub broker_addrs: BTreeMap<i64, String>,
    /// 5.x acting-master flag; always false here, but written because strict clients
    /// (rocketmq-client-rust) require the key.
    #[serde(deserialize_with = "lenient_bool")]
    pub enable_acting_master: bool,
}

/// GET_ROUTEINFO_BY_TOPIC response body (`TopicRouteData`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicRouteData {
    /// Ordered-topic config (`brokerName:queues;…`), when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
    /// The topic's queues per broker.
    pub queue_datas: Vec<QueueData>,
    /// The brokers holding it.
    pub broker_datas: Vec<BrokerData>,
    /// Filter servers per broker address (always empty).
    pub filter_server_table: BTreeMap<String, Vec<String>>,
}

/// GET_BROKER_CLUSTER_INFO response body (`ClusterInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfo {
    /// Broker name → broker data.
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    /// Cluster → broker names.
    pub cluster_addr_table: BTreeMap<String, BTreeSet<String>>,
}

/// A list of topic names (`TopicList`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicList {
    /// Topic names.
    pub topic_list: BTreeSet<String>,
    /// The broker the list came from, when one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_addr: Option<String>,
}

/// A consumer's subscription to one topic (`SubscriptionData`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionData {
    /// Class filter mode (unused).
    #[serde(deserialize_with = "lenient_bool")]
    pub class_filter_mode: bool,
    /// Topic.
    pub topic: String,
    /// Expression as the client wrote it (`*`, `TagA || TagB`).
    pub sub_string: String,
    /// Tags as the client parsed them (the broker recomputes them from `sub_string`).
    pub tags_set: BTreeSet<String>,
    /// Tag hash codes as the client computed them (not trusted).
    pub code_set: BTreeSet<i64>,
    /// Version (client timestamp).
    #[serde(deserialize_with = "lenient_i64")]
    pub sub_version: i64,
    /// `TAG` (default) or `SQL92`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression_type: Option<String>,
}

/// One producer group of a client (`ProducerData`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    /// Producer group.
    pub group_name: String,
}

/// One consumer group of a client (`ConsumerData`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    /// Consumer group.
    pub group_name: String,
    /// Push or pull.
    pub consume_type: ConsumeType,
    /// Clustering or broadcasting.
    pub message_model: MessageModel,
    /// Where a new group starts.
    pub consume_from_where: ConsumeFromWhere,
    /// Subscriptions.
    pub subscription_data_set: Vec<SubscriptionData>,
    /// Unit mode (unused).
    #[serde(deserialize_with = "lenient_bool")]
    pub unit_mode: bool,
}

/// HEART_BEAT body (`HeartbeatData`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeartbeatData {
    /// Client id (`ip@instance`).
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// Producer groups of the client.
    pub producer_data_set: Vec<ProducerData>,
    /// Consumer groups of the client.
    pub consumer_data_set: Vec<ConsumerData>,
}

/// A queue of a topic on a broker (`MessageQueue`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageQueue {
    /// Topic.
    pub topic: String,
    /// Broker name.
    pub broker_name: String,
    /// Queue id.
    #[serde(deserialize_with = "lenient_i32")]
    pub queue_id: i32,
}

/// LOCK_BATCH_MQ / UNLOCK_BATCH_MQ body (`LockBatchRequestBody`, `UnlockBatchRequestBody`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchRequestBody {
    /// Consumer group.
    pub consumer_group: String,
    /// Client asking.
    pub client_id: String,
    /// Only lock (5.x): whether the lock is held only locally.
    #[serde(deserialize_with = "lenient_bool")]
    pub only_this_broker: bool,
    /// Queues to lock or unlock.
    pub mq_set: BTreeSet<MessageQueue>,
}

/// LOCK_BATCH_MQ response body (`LockBatchResponseBody`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LockBatchResponseBody {
    /// Queues now locked by the client (Java spells it `lockOKMQSet`).
    #[serde(rename = "lockOKMQSet")]
    pub lock_ok_mq_set: BTreeSet<MessageQueue>,
}

/// GET_CONSUMER_LIST_BY_GROUP response body (`GetConsumerListByGroupResponseBody`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerList {
    /// Client ids of the group's online consumers.
    pub consumer_id_list: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_variants_from_different_clients_parse_alike() {
        let java = r#"{"clientID":"10.0.0.1@1","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"GID_a","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[2598919],"expressionType":"TAG","subString":"TagA","subVersion":1700000000000,"tagsSet":["TagA"],"topic":"T"}],"unitMode":false}],"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}]}"#;
        let odd = r#"{"clientID":"10.0.0.1@1","consumerDataSet":[{"consumeFromWhere":4,"consumeType":1,"groupName":"GID_a","messageModel":"clustering","subscriptionDataSet":[{"subString":"TagA","subVersion":"1700000000000","topic":"T","codeSet":[],"extra":1}],"unitMode":"0"}]}"#;
        let a: HeartbeatData = serde_json::from_str(java).unwrap();
        let b: HeartbeatData = serde_json::from_str(odd).unwrap();
        let (ca, cb) = (&a.consumer_data_set[0], &b.consumer_data_set[0]);
        assert_eq!(
            ca.consume_from_where,
            ConsumeFromWhere::ConsumeFromFirstOffset
        );
        assert_eq!(
            cb.consume_from_where,
            ConsumeFromWhere::ConsumeFromFirstOffset
        );
        assert_eq!(ca.consume_type, cb.consume_type);
        assert_eq!(ca.message_model, cb.message_model);
        assert_eq!(
            ca.subscription_data_set[0].sub_version,
            cb.subscription_data_set[0].sub_version
        );
        assert_eq!(b.producer_data_set.len(), 0);
    }

    #[test]
    fn route_data_writes_quoted_broker_ids_and_both_sys_flag_spellings() {
        let route = TopicRouteData {
            queue_datas: vec![QueueData {
                broker_name: "b".into(),
                read_queue_nums: 4,
                write_queue_nums: 4,
                perm: 6,
                ..Default::default()
            }],
            broker_datas: vec![BrokerData {
                cluster: "c".into(),
                broker_name: "b".into(),
                broker_addrs: [(0, "127.0.0.1:10911".to_owned())].into(),
                enable_acting_master: false,
            }],
            ..Default::default()
        };
        let json = String::from_utf8(to_json(&route).to_vec()).unwrap();
        assert!(
            json.contains(r#""brokerAddrs":{"0":"127.0.0.1:10911"}"#),
            "{json}"
        );
        assert!(
            json.contains(r#""topicSysFlag":0"#) && json.contains(r#""topicSynFlag":0"#),
            "{json}"
        );
        assert!(
            !json.contains("orderTopicConf"),
            "nulls are omitted: {json}"
        );
        assert_eq!(
            serde_json::from_str::<TopicRouteData>(&json).unwrap(),
            route
        );
    }

    #[test]
    fn lock_answers_use_javas_field_name() {
        let body = LockBatchResponseBody {
            lock_ok_mq_set: [MessageQueue {
                topic: "T".into(),
                broker_name: "b".into(),
                queue_id: 1,
            }]
            .into(),
        };
        let json = String::from_utf8(to_json(&body).to_vec()).unwrap();
        assert_eq!(
            json,
            r#"{"lockOKMQSet":[{"topic":"T","brokerName":"b","queueId":1}]}"#
        );
    }
}

//! Bodies of the admin requests (`admin/ConsumeStats`, `OffsetWrapper`, `TopicStatsTable`,
//! `TopicOffset`, `protocol/body/ConsumerConnection`, `ProducerConnection`, `Connection`,
//! `KVTable`).
//!
//! Field names and types are Apache RocketMQ 4.x's. Queue-keyed maps are [`MqMap`]s: sent
//! in fastjson's object-key form (see [`fastjson`](super::fastjson)), so the
//! bodies with such maps have their own `to_fastjson` writer; every body is read with
//! [`fastjson::from_slice`](super::fastjson::from_slice).

use super::body::{ConsumeFromWhere, ConsumeType, MessageModel, SubscriptionData};
use super::fastjson::MqMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One queue's progress in a consumer group (`OffsetWrapper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OffsetWrapper {
    /// The queue's max offset (next offset to be written).
    pub broker_offset: i64,
    /// The group's committed offset (next offset to consume).
    pub consumer_offset: i64,
    /// Store time of the last consumed message (ms), 0 when unknown.
    pub last_timestamp: i64,
    /// 5.x: where the group pulls next. 4.x tools ignore it, but `rocketmq-client-rust`'s
    /// admin refuses a body without it (its `message_track_detail` reads 208).
    pub pull_offset: i64,
}

impl OffsetWrapper {
    /// Messages not consumed yet.
    pub fn diff(&self) -> i64 {
        (self.broker_offset - self.consumer_offset).max(0)
    }
}

/// GET_CONSUME_STATS response body (`ConsumeStats`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumeStats {
    /// Messages per second the group pulls (recent).
    pub consume_tps: f64,
    /// Progress per queue.
    pub offset_table: MqMap<OffsetWrapper>,
}

impl ConsumeStats {
    /// Accumulated messages over all queues (`computeTotalDiff`).
    pub fn total_diff(&self) -> i64 {
        self.offset_table.0.values().map(OffsetWrapper::diff).sum()
    }

    /// The body as a Java broker writes it (fastjson, queue objects as keys).
    pub fn to_fastjson(&self) -> bytes::Bytes {
        let mut out = format!(
            r#"{{"consumeTps":{},"offsetTable":"#,
            json_f64(self.consume_tps)
        );
        self.offset_table.write_fastjson(&mut out);
        out.push('}');
        out.into()
    }
}

/// A double as fastjson writes it (`0.0`, never `NaN`).
fn json_f64(v: f64) -> String {
    serde_json::Value::from(if v.is_finite() { v } else { 0.0 }).to_string()
}

/// One queue's extent (`TopicOffset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicOffset {
    /// Store time of the queue's last message (ms), 0 when empty.
    pub last_update_timestamp: i64,
    /// Next offset to be written.
    pub max_offset: i64,
    /// First offset still stored.
    pub min_offset: i64,
}

/// GET_TOPIC_STATS_INFO response body (`TopicStatsTable`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TopicStatsTable {
    /// Extent per queue.
    pub offset_table: MqMap<TopicOffset>,
}

impl TopicStatsTable {
    /// The body as a Java broker writes it (fastjson, queue objects as keys).
    pub fn to_fastjson(&self) -> bytes::Bytes {
        let mut out = String::from(r#"{"offsetTable":"#);
        self.offset_table.write_fastjson(&mut out);
        out.push('}');
        out.into()
    }
}

/// One client connection of a group (`Connection`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Connection {
    /// `ip:port` of the client's end.
    pub client_addr: String,
    /// Client id (`ip@instance`).
    pub client_id: String,
    /// SDK language (`LanguageCode` name).
    pub language: String,
    /// SDK protocol version (`MQVersion` ordinal).
    pub version: i32,
}

/// GET_CONSUMER_CONNECTION_LIST response body (`ConsumerConnection`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerConnection {
    /// The group's online clients.
    pub connection_set: Vec<Connection>,
    /// Where a new consumer starts.
    pub consume_from_where: ConsumeFromWhere,
    /// Push or pull.
    pub consume_type: ConsumeType,
    /// Clustering or broadcasting.
    pub message_model: MessageModel,
    /// Topic → subscription.
    pub subscription_table: BTreeMap<String, SubscriptionData>,
}

/// GET_PRODUCER_CONNECTION_LIST response body (`ProducerConnection`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerConnection {
    /// The group's online clients.
    pub connection_set: Vec<Connection>,
}

/// A string table (`KVTable`), e.g. GET_BROKER_RUNTIME_INFO's body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct KvTable {
    /// Key → value.
    pub table: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::body::MessageQueue;
    use crate::remoting::fastjson::from_slice;

    fn mq(queue_id: i32) -> MessageQueue {
        MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id,
        }
    }

    #[test]
    fn consume_stats_are_written_like_a_java_broker_and_read_back() {
        let offsets = OffsetWrapper {
            broker_offset: 10,
            consumer_offset: 4,
            last_timestamp: 1_700_000_000_000,
            pull_offset: 4,
        };
        let stats = ConsumeStats {
            consume_tps: 1.5,
            offset_table: MqMap([(mq(0), offsets)].into()),
        };
        let wire = stats.to_fastjson();
        assert_eq!(
            &wire[..],
            br#"{"consumeTps":1.5,"offsetTable":{{"brokerName":"b","queueId":0,"topic":"T"}:{"brokerOffset":10,"consumerOffset":4,"lastTimestamp":1700000000000,"pullOffset":4}}}"#
        );
        assert_eq!(from_slice::<ConsumeStats>(&wire).unwrap(), stats);
        assert_eq!(stats.total_diff(), 6);
        let listed = serde_json::to_vec(&stats).unwrap();
        assert_eq!(from_slice::<ConsumeStats>(&listed).unwrap(), stats);
    }

    #[test]
    fn a_java_topic_stats_body_reads() {
        // As a 4.x broker sends it: HashMap order, fastjson keys, a field we do not know.
        let java = br#"{"offsetTable":{{"brokerName":"b","queueId":1,"topic":"T"}:{"lastUpdateTimestamp":0,"maxOffset":0,"minOffset":0},{"brokerName":"b","queueId":0,"topic":"T"}:{"lastUpdateTimestamp":1700000000000,"maxOffset":3,"minOffset":0,"x":1}}}"#;
        let table: TopicStatsTable = from_slice(java).unwrap();
        assert_eq!(table.offset_table.0.len(), 2);
        assert_eq!(table.offset_table.0[&mq(0)].max_offset, 3);
        assert_eq!(
            from_slice::<TopicStatsTable>(&table.to_fastjson()).unwrap(),
            table
        );
    }

    #[test]
    fn consume_tps_is_always_a_json_number() {
        let stats = ConsumeStats {
            consume_tps: f64::NAN,
            ..Default::default()
        };
        assert_eq!(
            &stats.to_fastjson()[..],
            br#"{"consumeTps":0.0,"offsetTable":{}}"#
        );
    }
}

//! Bodies of the calls about consumers (`protocol/body/ConsumerRunningInfo`,
//! `ConsumeStatus`, `ConsumeMessageDirectlyResult`, `admin/MessageTrack`, `TrackType`).
//!
//! Field names are Apache RocketMQ 4.x's as fastjson writes them (getter names, so
//! `pullRT`, `consumeOKTPS`). Clients write these bodies; the broker passes them on as
//! is, so everything is read leniently (unknown fields ignored, missing ones default).

use super::body::SubscriptionData;
use super::fastjson::MqMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A client's consumption figures for one topic (`ConsumeStatus`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumeStatus {
    /// Pull round trip (ms).
    #[serde(rename = "pullRT")]
    pub pull_rt: f64,
    /// Pulls per second.
    #[serde(rename = "pullTPS")]
    pub pull_tps: f64,
    /// Time to consume a message (ms).
    #[serde(rename = "consumeRT")]
    pub consume_rt: f64,
    /// Messages consumed per second.
    #[serde(rename = "consumeOKTPS")]
    pub consume_ok_tps: f64,
    /// Messages failed per second.
    #[serde(rename = "consumeFailedTPS")]
    pub consume_failed_tps: f64,
    /// Messages failed in the last hour.
    #[serde(rename = "consumeFailedMsgs")]
    pub consume_failed_msgs: i64,
}

/// GET_CONSUMER_RUNNING_INFO answer: what a consumer client reports of itself
/// (`ConsumerRunningInfo`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerRunningInfo {
    /// Settings and facts (`PROP_CONSUME_TYPE`, `PROP_CLIENT_VERSION`, thread counts…).
    pub properties: BTreeMap<String, String>,
    /// The client's subscriptions.
    pub subscription_set: Vec<SubscriptionData>,
    /// Per queue the client holds: its process-queue figures (kept as sent).
    pub mq_table: MqMap<serde_json::Value>,
    /// Per topic: consumption rates.
    pub status_table: BTreeMap<String, ConsumeStatus>,
    /// Thread dump, when asked for.
    pub jstack: Option<String>,
}

/// CONSUME_MESSAGE_DIRECTLY answer: how the client's listener took the message
/// (`ConsumeMessageDirectlyResult`). Java writes camelCase; `rocketmq-client-rust` 1.0
/// writes the Rust field names (`auto_commit`, …), so both are read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumeMessageDirectlyResult {
    /// The consumer is orderly.
    pub order: bool,
    /// Orderly consumers: offsets committed automatically.
    #[serde(alias = "auto_commit")]
    pub auto_commit: bool,
    /// `CR_SUCCESS`, `CR_LATER`, `CR_ROLLBACK`, `CR_COMMIT`, `CR_THROW_EXCEPTION`,
    /// `CR_RETURN_NULL`.
    #[serde(alias = "consume_result")]
    pub consume_result: String,
    /// What went wrong, if anything.
    pub remark: Option<String>,
    /// Time the listener took (ms).
    #[serde(alias = "spent_time_mills")]
    pub spent_time_mills: i64,
}

/// Where a message stands for one consumer group (`TrackType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TrackType {
    /// The group consumed it.
    Consumed,
    /// The group passed it, but its tag filter excluded it.
    ConsumedButFiltered,
    /// A pull consumer group: the broker cannot tell.
    Pull,
    /// The group has not reached it yet.
    NotConsumeYet,
    /// No client of the group is online.
    NotOnline,
    /// A broadcasting group: each client keeps its own offset.
    ConsumeBroadcasting,
    /// The broker could not tell (see the exception).
    Unknown,
}

/// One group's view of a message (`MessageTrack`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageTrack {
    /// Consumer group.
    pub consumer_group: String,
    /// Where the message stands.
    pub track_type: TrackType,
    /// Why the answer is `UNKNOWN` or `NOT_ONLINE`, if an error said so.
    pub exception_desc: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_info_reads_what_java_writes() {
        let text = r#"{"jstack":"main","mqTable":{{"brokerName":"b","queueId":0,"topic":"T"}:{"commitOffset":3}},
            "properties":{"PROP_CONSUME_TYPE":"CONSUME_PASSIVELY"},"statusTable":{"T":{"consumeFailedMsgs":2,"consumeOKTPS":1.5,"pullRT":3.0}},
            "subscriptionSet":[{"subString":"*","tagsSet":[],"codeSet":[],"topic":"T","subVersion":1}],"other":1}"#;
        let info: ConsumerRunningInfo =
            super::super::fastjson::from_slice(text.as_bytes()).unwrap();
        assert_eq!(info.properties["PROP_CONSUME_TYPE"], "CONSUME_PASSIVELY");
        assert_eq!(info.status_table["T"].consume_ok_tps, 1.5);
        assert_eq!(info.status_table["T"].consume_failed_msgs, 2);
        assert_eq!(info.subscription_set[0].topic, "T");
        assert_eq!(info.mq_table.0.len(), 1);
        assert_eq!(info.jstack.as_deref(), Some("main"));
    }

    #[test]
    fn consume_directly_results_are_read_in_both_spellings() {
        let java =
            r#"{"autoCommit":true,"consumeResult":"CR_SUCCESS","order":false,"spentTimeMills":3}"#;
        let rust = r#"{"order":false,"auto_commit":true,"consume_result":"CR_SUCCESS","remark":null,"spent_time_mills":3}"#;
        for text in [java, rust] {
            let r: ConsumeMessageDirectlyResult = serde_json::from_str(text).unwrap();
            assert_eq!(
                (r.consume_result.as_str(), r.auto_commit, r.spent_time_mills),
                ("CR_SUCCESS", true, 3)
            );
        }
    }

    #[test]
    fn track_types_are_named_like_java() {
        let names = serde_json::to_string(&[
            TrackType::Consumed,
            TrackType::ConsumedButFiltered,
            TrackType::NotConsumeYet,
            TrackType::NotOnline,
        ])
        .unwrap();
        assert_eq!(
            names,
            r#"["CONSUMED","CONSUMED_BUT_FILTERED","NOT_CONSUME_YET","NOT_ONLINE"]"#
        );
    }
}

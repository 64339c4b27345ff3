//! Subscription group configs (`SubscriptionGroupManager`).

use super::table::ConfigTable;
use serde::{Deserialize, Serialize};

/// How the broker treats one consumer group (`SubscriptionGroupConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionGroupConfig {
    /// Group name (canonical).
    pub group_name: String,
    /// `false` stops delivery to the group.
    pub consume_enable: bool,
    /// Whether a new group may start from the minimum offset.
    pub consume_from_min_enable: bool,
    /// Whether broadcasting consumers are allowed.
    pub consume_broadcast_enable: bool,
    /// Queues of the group's retry topic.
    pub retry_queue_nums: i32,
    /// Deliveries before the dead-letter queue, for clients that do not send their own.
    pub retry_max_times: i32,
    /// Broker to consume from (0 = master).
    pub broker_id: i64,
    /// Broker to use when consumption is slow.
    pub which_broker_when_consume_slowly: i64,
    /// Tell consumers when the group's members change (so they rebalance).
    pub notify_consumer_ids_changed_enable: bool,
}

impl Default for SubscriptionGroupConfig {
    fn default() -> Self {
        Self {
            group_name: String::new(),
            consume_enable: true,
            consume_from_min_enable: true,
            consume_broadcast_enable: true,
            retry_queue_nums: 1,
            retry_max_times: 16,
            broker_id: 0,
            which_broker_when_consume_slowly: 1,
            notify_consumer_ids_changed_enable: true,
        }
    }
}

/// The broker's subscription groups.
pub type GroupTable = ConfigTable<SubscriptionGroupConfig>;

/// The default config of a group.
pub fn group_config(name: &str) -> SubscriptionGroupConfig {
    SubscriptionGroupConfig {
        group_name: name.to_owned(),
        ..SubscriptionGroupConfig::default()
    }
}

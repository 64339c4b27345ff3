//! Topic configs as the broker holds and registers them.

use super::table::ConfigTable;
use crate::remoting::body::{PERM_READ, PERM_WRITE, TopicConfig, TopicConfigSerializeWrapper};

/// The broker's topics (`TopicConfigManager`).
pub type TopicTable = ConfigTable<TopicConfig>;

/// The registration body's view of the topic table.
pub fn registration_view(topics: &TopicTable) -> TopicConfigSerializeWrapper {
    let (table, data_version) = topics.snapshot();
    TopicConfigSerializeWrapper {
        topic_config_table: table,
        data_version,
    }
}

/// A read-write topic config with `queues` queues.
pub fn topic_config(name: &str, queues: i32) -> TopicConfig {
    TopicConfig {
        topic_name: name.to_owned(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: PERM_READ | PERM_WRITE,
        ..TopicConfig::default()
    }
}

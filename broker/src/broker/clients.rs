//! Who is connected: producer and consumer groups, their clients and subscriptions
//! (`ProducerManager`, `ConsumerManager`), learned from heartbeats.

use crate::net::Channel;
use crate::remoting::LanguageCode;
use crate::remoting::body::{
    ConsumeFromWhere, ConsumeType, ConsumerData, MessageModel, SubscriptionData,
};
use crate::store::message::tags_code;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One client connection of a group.
#[derive(Debug, Clone)]
pub struct ClientConn {
    /// The connection.
    pub channel: Channel,
    /// The client's id (`ip@instance`).
    pub client_id: String,
    /// SDK language.
    pub language: LanguageCode,
    /// SDK protocol version.
    pub version: i32,
    /// Last heartbeat.
    pub last_heartbeat: Instant,
    /// The client uses bare names (no instance id), so it is answered with bare names.
    pub bare: bool,
}

/// A consumer group as its clients describe it.
#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    /// Push or pull.
    pub consume_type: ConsumeType,
    /// Clustering or broadcasting.
    pub message_model: MessageModel,
    /// Where a new consumer starts.
    pub consume_from_where: ConsumeFromWhere,
    /// Topic → subscription, tags recomputed by the broker.
    pub subscriptions: BTreeMap<String, SubscriptionData>,
    /// Connection id → client.
    pub clients: BTreeMap<u64, ClientConn>,
}

#[derive(Default)]
struct Registry {
    producers: HashMap<String, BTreeMap<u64, ClientConn>>,
    consumers: HashMap<String, ConsumerGroup>,
}

/// Every group's live clients.
pub struct ClientRegistry {
    registry: Mutex<Registry>,
    idle_timeout: Duration,
}

/// Recomputes tags and codes from the expression: clients differ in how they split and
/// hash `TagA || TagB` (some hash untrimmed pieces), so their sets are not trusted.
pub fn normalize_subscription(mut sub: SubscriptionData) -> SubscriptionData {
    let expr = sub.sub_string.trim();
    sub.tags_set.clear();
    sub.code_set.clear();
    if expr.is_empty() || expr == "*" {
        sub.sub_string = "*".to_owned();
        return sub;
    }
    for tag in expr.split("||").map(str::trim).filter(|t| !t.is_empty()) {
        sub.code_set.insert(tags_code(tag));
        sub.tags_set.insert(tag.to_owned());
    }
    sub
}

impl ClientRegistry {
    /// A registry that drops clients silent for `idle_timeout` (Java: 120 s).
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            registry: Mutex::default(),
            idle_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a producer heartbeat.
    pub fn register_producer(&self, group: &str, conn: ClientConn) {
        self.lock()
            .producers
            .entry(group.to_owned())
            .or_default()
            .insert(conn.channel.id(), conn);
    }

    /// Records a consumer heartbeat (`data.group_name` canonical); returns whether the
    /// group's membership changed, so the caller tells its consumers to rebalance.
    pub fn register_consumer(&self, data: &ConsumerData, conn: ClientConn) -> bool {
        let mut r = self.lock();
        let group = r.consumers.entry(data.group_name.clone()).or_default();
        group.consume_type = data.consume_type;
        group.message_model = data.message_model;
        group.consume_from_where = data.consume_from_where;
        group.subscriptions = data
            .subscription_data_set
            .iter()
            .cloned()
            .map(normalize_subscription)
            .map(|s| (s.topic.clone(), s))
            .collect();
        group.clients.insert(conn.channel.id(), conn).is_none()
    }

    /// Removes a client from a group (UNREGISTER_CLIENT); returns whether it was there.
    pub fn unregister_consumer(&self, group: &str, channel_id: u64) -> bool {
        let mut r = self.lock();
        let Some(g) = r.consumers.get_mut(group) else {
            return false;
        };
        let removed = g.clients.remove(&channel_id).is_some();
        if g.clients.is_empty() {
            r.consumers.remove(group);
        }
        removed
    }

    /// Removes a producer client from a group.
    pub fn unregister_producer(&self, group: &str, channel_id: u64) {
        let mut r = self.lock();
        if let Some(p) = r.producers.get_mut(group) {
            p.remove(&channel_id);
            if p.is_empty() {
                r.producers.remove(group);
            }
        }
    }

    /// Drops clients whose connection closed or that stopped heartbeating; returns the
    /// consumer groups whose membership changed.
    pub fn expire(&self, now: Instant) -> Vec<String> {
        let idle = self.idle_timeout;
        let gone =
            |c: &ClientConn| c.channel.is_closed() || now.duration_since(c.last_heartbeat) > idle;
        let mut r = self.lock();
        for clients in r.producers.values_mut() {
            clients.retain(|_, c| !gone(c));
        }
        r.producers.retain(|_, c| !c.is_empty());
        let mut changed = vec![];
        for (name, group) in r.consumers.iter_mut() {
            let before = group.clients.len();
            group.clients.retain(|_, c| !gone(c));
            if group.clients.len() != before {
                changed.push(name.clone());
            }
        }
        r.consumers.retain(|_, g| !g.clients.is_empty());
        changed
    }

    /// A consumer group's current state.
    pub fn consumer_group(&self, group: &str) -> Option<ConsumerGroup> {
        self.lock().consumers.get(group).cloned()
    }

    /// The subscription of `group` to `topic`, if a client of the group has one.
    pub fn subscription(&self, group: &str, topic: &str) -> Option<SubscriptionData> {
        self.lock()
            .consumers
            .get(group)?
            .subscriptions
            .get(topic)
            .cloned()
    }

    /// Client ids of a group's consumers, sorted (clients rebalance on this list).
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        let r = self.lock();
        let mut ids: Vec<String> = r
            .consumers
            .get(group)
            .map(|g| g.clients.values().map(|c| c.client_id.clone()).collect())
            .unwrap_or_default();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Names of every online consumer group.
    pub fn consumer_groups(&self) -> Vec<String> {
        self.lock().consumers.keys().cloned().collect()
    }

    /// A producer group's clients.
    pub fn producers(&self, group: &str) -> Vec<ClientConn> {
        self.lock()
            .producers
            .get(group)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Connections open now (producers and consumers, counted once each).
    pub fn connection_count(&self) -> usize {
        let r = self.lock();
        let mut ids: Vec<u64> = r
            .producers
            .values()
            .flat_map(|p| p.keys().copied())
            .collect();
        ids.extend(r.consumers.values().flat_map(|g| g.clients.keys().copied()));
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_normalised_whatever_the_client_sent() {
        let sub = |s: &str| SubscriptionData {
            topic: "T".into(),
            sub_string: s.into(),
            code_set: [1, 2].into(),
            ..Default::default()
        };
        let spaced = normalize_subscription(sub("TagA || TagB"));
        let tight = normalize_subscription(sub("TagA||TagB"));
        assert_eq!(spaced.tags_set, tight.tags_set);
        assert_eq!(
            spaced.code_set,
            [tags_code("TagA"), tags_code("TagB")].into()
        );
        assert_eq!(tags_code("TagA"), 2598919, "Java's String.hashCode");
        let all = normalize_subscription(sub(""));
        assert_eq!(all.sub_string, "*");
        assert!(all.code_set.is_empty());
    }
}

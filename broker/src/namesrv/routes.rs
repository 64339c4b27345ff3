//! The route table: brokers, their topics' queues, clusters, and broker liveness.
//!
//! Each broker may register an external address beside its own ([`Registration::external_addr`]).
//! The [`View::External`] of the table (the name server's external port) names brokers by
//! their external addresses; a broker without one is left out of it (with its queues), so
//! a client outside the cluster never gets an address it cannot reach.

use crate::net::Channel;
use crate::remoting::body::{
    BrokerData, ClusterInfo, QueueData, TopicConfig, TopicList, TopicRouteData,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// One broker's registration.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Cluster name.
    pub cluster: String,
    /// Broker name (group).
    pub broker_name: String,
    /// Address clients use.
    pub broker_addr: String,
    /// 0 for a master.
    pub broker_id: i64,
    /// Address clients outside the cluster use, if the broker has one.
    pub external_addr: Option<String>,
    /// The broker's topics (replaces what was known of a master's topics).
    pub topics: Vec<TopicConfig>,
    /// The connection it registered on: its close removes the broker at once.
    pub channel: Option<Channel>,
}

struct Live {
    last_seen: Instant,
    external_addr: Option<String>,
    cluster: String,
    broker_name: String,
    channel: Option<Channel>,
}

#[derive(Default)]
struct Tables {
    /// topic → broker name → queues.
    topics: HashMap<String, BTreeMap<String, QueueData>>,
    /// broker name → broker data.
    brokers: BTreeMap<String, BrokerData>,
    /// cluster → broker names.
    clusters: BTreeMap<String, BTreeSet<String>>,
    /// broker address → liveness.
    live: HashMap<String, Live>,
}

/// Everything a name server knows, safe to share between connections.
pub struct RouteTable {
    tables: RwLock<Tables>,
    expiry: Duration,
}

impl RouteTable {
    /// A table that forgets brokers silent for longer than `expiry` (Java: 120 s).
    pub fn new(expiry: Duration) -> Self {
        Self {
            tables: RwLock::default(),
            expiry,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a registration; returns the address of the group's master, if known.
    pub fn register(&self, reg: Registration) -> Option<String> {
        let mut t = self.write();
        t.clusters
            .entry(reg.cluster.clone())
            .or_default()
            .insert(reg.broker_name.clone());
        let data = t
            .brokers
            .entry(reg.broker_name.clone())
            .or_insert_with(|| BrokerData {
                cluster: reg.cluster.clone(),
                broker_name: reg.broker_name.clone(),
                broker_addrs: BTreeMap::new(),
                enable_acting_master: false,
            });
        // An id that moved to a new address (pod restarted with a new IP) replaces the old.
        let stale: Vec<i64> = data
            .broker_addrs
            .iter()
            .filter(|(id, addr)| **id != reg.broker_id && **addr == reg.broker_addr)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            data.broker_addrs.remove(&id);
        }
        let moved_from = data
            .broker_addrs
            .insert(reg.broker_id, reg.broker_addr.clone())
            .filter(|old| *old != reg.broker_addr);
        let master = data.broker_addrs.get(&0).cloned();
        // The old address is no broker any more: its closing connection or expiry must
        // not take the new registration's routes with it.
        if let Some(old) = moved_from {
            t.live.remove(&old);
        }
        if reg.broker_id == 0 {
            replace_topics(&mut t, &reg.broker_name, &reg.topics);
        }
        t.live.insert(
            reg.broker_addr.clone(),
            Live {
                last_seen: Instant::now(),
                external_addr: reg.external_addr,
                cluster: reg.cluster,
                broker_name: reg.broker_name,
                channel: reg.channel,
            },
        );
        master
    }

    /// Removes a broker (UNREGISTER_BROKER, expiry, closed connection).
    pub fn unregister(&self, broker_addr: &str) {
        let mut t = self.write();
        remove_broker(&mut t, broker_addr);
    }

    /// Removes brokers that have not registered within the expiry, or whose connection
    /// closed; returns their addresses.
    pub fn expire(&self) -> Vec<String> {
        self.expire_at(Instant::now())
    }

    /// [`RouteTable::expire`] as of `now` (tests move the clock instead of waiting).
    pub fn expire_at(&self, now: Instant) -> Vec<String> {
        let mut t = self.write();
        let dead: Vec<String> = t
            .live
            .iter()
            .filter(|(_, l)| {
                now.duration_since(l.last_seen) > self.expiry
                    || l.channel.as_ref().is_some_and(Channel::is_closed)
            })
            .map(|(addr, _)| addr.clone())
            .collect();
        for addr in &dead {
            remove_broker(&mut t, addr);
        }
        dead
    }

    /// The route of `topic`, or `None` when no live broker has it.
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        self.route_in(topic, View::Internal)
    }

    /// The route of `topic` as `view` sees it, or `None` when no live broker (reachable
    /// in that view) has it.
    pub fn route_in(&self, topic: &str, view: View) -> Option<TopicRouteData> {
        let t = self.read();
        let queues = t.topics.get(topic).filter(|q| !q.is_empty())?;
        let brokers: BTreeMap<String, BrokerData> = queues
            .keys()
            .filter_map(|name| Some((name.clone(), t.brokers.get(name)?.clone())))
            .collect();
        let brokers = t.in_view(brokers, view);
        let queue_datas: Vec<QueueData> = queues
            .values()
            .filter(|q| brokers.contains_key(&q.broker_name))
            .cloned()
            .collect();
        if queue_datas.is_empty() {
            return None;
        }
        Some(TopicRouteData {
            order_topic_conf: None,
            queue_datas,
            broker_datas: brokers.into_values().collect(),
            filter_server_table: BTreeMap::new(),
        })
    }

    /// Brokers and clusters (GET_BROKER_CLUSTER_INFO).
    pub fn cluster_info(&self) -> ClusterInfo {
        self.cluster_info_in(View::Internal)
    }

    /// Brokers and clusters as `view` sees them.
    pub fn cluster_info_in(&self, view: View) -> ClusterInfo {
        let t = self.read();
        let brokers = t.in_view(t.brokers.clone(), view);
        let clusters = t
            .clusters
            .iter()
            .map(|(c, names)| {
                let names: BTreeSet<String> = names
                    .iter()
                    .filter(|n| brokers.contains_key(*n))
                    .cloned()
                    .collect();
                (c.clone(), names)
            })
            .filter(|(_, names)| !names.is_empty())
            .collect();
        ClusterInfo {
            broker_addr_table: brokers,
            cluster_addr_table: clusters,
        }
    }

    /// Every topic with a route.
    pub fn topics(&self) -> TopicList {
        TopicList {
            topic_list: self.read().topics.keys().cloned().collect(),
            broker_addr: None,
        }
    }

    /// Forgets a topic until a broker registers it again.
    pub fn delete_topic(&self, topic: &str) {
        self.write().topics.remove(topic);
    }
}

/// Which addresses an answer names brokers by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The addresses brokers registered as their own (pod addresses): clients inside.
    Internal,
    /// The external addresses brokers registered: clients that came in from outside.
    External,
}

impl Tables {
    /// `brokers` with their addresses as `view` sees them; in the external view a broker
    /// address without an external one is dropped, and a broker left with none too.
    fn in_view(
        &self,
        mut brokers: BTreeMap<String, BrokerData>,
        view: View,
    ) -> BTreeMap<String, BrokerData> {
        if view == View::Internal {
            return brokers;
        }
        for data in brokers.values_mut() {
            data.broker_addrs = std::mem::take(&mut data.broker_addrs)
                .into_iter()
                .filter_map(|(id, addr)| {
                    let external = self.live.get(&addr)?.external_addr.clone()?;
                    Some((id, external))
                })
                .collect();
        }
        brokers.retain(|_, data| !data.broker_addrs.is_empty());
        brokers
    }
}

/// A master's registration is its whole topic table: topics it no longer has lose it.
fn replace_topics(t: &mut Tables, broker_name: &str, topics: &[TopicConfig]) {
    t.topics.retain(|_, queues| {
        queues.remove(broker_name);
        !queues.is_empty()
    });
    for tc in topics {
        let queue = QueueData {
            broker_name: broker_name.to_owned(),
            read_queue_nums: tc.read_queue_nums,
            write_queue_nums: tc.write_queue_nums,
            perm: tc.perm,
            topic_sys_flag: tc.topic_sys_flag,
            topic_syn_flag: tc.topic_sys_flag,
        };
        t.topics
            .entry(tc.topic_name.clone())
            .or_default()
            .insert(broker_name.to_owned(), queue);
    }
}

fn remove_broker(t: &mut Tables, broker_addr: &str) {
    let Some(live) = t.live.remove(broker_addr) else {
        return;
    };
    tracing::info!(broker = %live.broker_name, addr = %broker_addr, "broker left the routes");
    let (empty, was_master) = match t.brokers.get_mut(&live.broker_name) {
        Some(data) => {
            let was_master = data.broker_addrs.get(&0).is_some_and(|a| a == broker_addr);
            data.broker_addrs.retain(|_, addr| addr != broker_addr);
            (data.broker_addrs.is_empty(), was_master)
        }
        None => (false, false),
    };
    // Without its master a group serves no writes; Java keeps slaves readable, we have
    // no slaves, so the group's queues go with its last broker or its master.
    if empty || was_master {
        t.topics.retain(|_, queues| {
            queues.remove(&live.broker_name);
            !queues.is_empty()
        });
    }
    if empty {
        t.brokers.remove(&live.broker_name);
        if let Some(names) = t.clusters.get_mut(&live.cluster) {
            names.remove(&live.broker_name);
            if names.is_empty() {
                t.clusters.remove(&live.cluster);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, addr: &str, topics: &[&str]) -> Registration {
        Registration {
            cluster: "DefaultCluster".into(),
            broker_name: name.into(),
            broker_addr: addr.into(),
            broker_id: 0,
            external_addr: None,
            topics: topics
                .iter()
                .map(|t| TopicConfig {
                    topic_name: (*t).into(),
                    read_queue_nums: 4,
                    write_queue_nums: 4,
                    ..Default::default()
                })
                .collect(),
            channel: None,
        }
    }

    #[test]
    fn a_broker_back_on_a_new_address_keeps_its_routes_when_the_old_one_goes() {
        // A restarted pod registers from its new IP before the name server notices that
        // the old connection closed.
        let table = RouteTable::new(Duration::from_secs(120));
        table.register(reg("broker-1", "127.0.0.4:10911", &["T"]));
        table.register(reg("broker-1", "127.0.0.6:10911", &["T"]));
        table.unregister("127.0.0.4:10911");
        let route = table.route("T").expect("the route survives");
        assert_eq!(route.queue_datas.len(), 1);
        assert_eq!(
            route.broker_datas[0]
                .broker_addrs
                .get(&0)
                .map(String::as_str),
            Some("127.0.0.6:10911")
        );
    }

    #[test]
    fn routes_follow_registrations_and_expiry() {
        let table = RouteTable::new(Duration::from_secs(120));
        table.register(reg("broker-0", "127.0.0.1:10911", &["T", "U"]));
        table.register(reg("broker-1", "127.0.0.2:10911", &["T"]));
        let route = table.route("T").unwrap();
        assert_eq!(route.queue_datas.len(), 2);
        assert_eq!(route.broker_datas.len(), 2);
        assert_eq!(
            table.cluster_info().cluster_addr_table["DefaultCluster"].len(),
            2
        );

        // A re-registration without U removes U from broker-0.
        table.register(reg("broker-0", "127.0.0.1:10911", &["T"]));
        assert!(table.route("U").is_none());

        assert!(table.expire().is_empty(), "both registered just now");
        let later = Instant::now() + Duration::from_secs(100);
        assert!(table.expire_at(later).is_empty());
        // broker-1 registers again 100 s on; broker-0 stays silent past the expiry.
        table
            .write()
            .live
            .get_mut("127.0.0.2:10911")
            .unwrap()
            .last_seen = later;
        let expired = table.expire_at(later + Duration::from_secs(30));
        assert_eq!(expired, vec!["127.0.0.1:10911".to_owned()]);
        let route = table.route("T").unwrap();
        assert_eq!(route.broker_datas.len(), 1);
        assert_eq!(route.broker_datas[0].broker_name, "broker-1");
        assert!(
            !table
                .cluster_info()
                .broker_addr_table
                .contains_key("broker-0")
        );
    }
}

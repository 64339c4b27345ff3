//! Consumption reads over an instance's brokers: a group's progress (accumulate, status),
//! its clients and their running info, time spans, offset resets and who subscribes.

use std::collections::{BTreeMap, BTreeSet};

use mq_broker::client::AdminError;
use mq_broker::names::{DLQ_PREFIX, RETRY_PREFIX};
use mq_broker::remoting::admin::{ConsumerConnection, TopicStatsTable};
use mq_broker::remoting::body::{ConsumeType, MessageModel};
use mq_broker::remoting::consume::ConsumerRunningInfo;
use serde::Serialize;

use super::{Broker, Runtime, Target, absent_here, broker_error, now_ms};
use crate::envelope::ApiError;

/// One topic's backlog in a group (`DetailInTopicList` entries).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicDiff {
    /// Topic as the user named it.
    pub topic: String,
    /// Messages not consumed yet.
    pub total_diff: i64,
    /// Store time of the last consumed message (ms; 0 none).
    pub last_timestamp: i64,
    /// How long the oldest waiting message has waited (ms; 0 when caught up).
    pub delay_time: i64,
}

/// A group's progress over every broker.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Messages per second the group consumes (sum over brokers).
    pub consume_tps: f64,
    /// Per topic (retry topics included), by bare name.
    pub topics: BTreeMap<String, TopicDiff>,
    /// The queues of the user's topics: (bare topic, broker name, queue id).
    pub queues: BTreeSet<(String, String, i32)>,
}

impl Progress {
    /// Backlog over every topic, the group's retry topic included.
    pub fn total_diff(&self) -> i64 {
        self.topics.values().map(|t| t.total_diff).sum()
    }

    /// Latest consumed store time.
    pub fn last_timestamp(&self) -> i64 {
        self.topics
            .values()
            .map(|t| t.last_timestamp)
            .max()
            .unwrap_or(0)
    }

    /// Longest wait.
    pub fn delay_time(&self) -> i64 {
        self.topics
            .values()
            .map(|t| t.delay_time)
            .max()
            .unwrap_or(0)
    }

    /// The user's topics (retry topics left out), by name.
    pub fn detail(&self) -> Vec<TopicDiff> {
        self.topics
            .values()
            .filter(|t| !is_internal(&t.topic))
            .cloned()
            .collect()
    }
}

/// Whether `topic` is a group's retry or dead-letter topic (not one a user named).
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with(RETRY_PREFIX) || topic.starts_with(DLQ_PREFIX)
}

/// A client connection (`Connection` of §6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conn {
    /// Client id.
    pub client_id: String,
    /// `ip:port` of the client's end.
    pub client_addr: String,
    /// SDK language.
    pub language: String,
    /// SDK version.
    pub version: i32,
    /// The client's IP.
    #[serde(rename = "remoteIP")]
    pub remote_ip: String,
}

/// A group's online clients, merged over brokers, with the broker each was found on.
#[derive(Clone, Debug, Default)]
pub struct Online {
    /// The first answer (model, type, subscriptions).
    pub connection: Option<ConsumerConnection>,
    /// Clients by id, with the index of a broker they are connected to.
    pub clients: BTreeMap<String, (Conn, usize)>,
    /// Whether every broker saw the same subscriptions.
    pub same_everywhere: bool,
}

impl Online {
    /// Whether a client is online.
    pub fn online(&self) -> bool {
        !self.clients.is_empty()
    }

    /// `CLUSTERING` or `BROADCASTING`.
    pub fn model(&self) -> &'static str {
        match self.connection.as_ref().map(|c| c.message_model) {
            Some(MessageModel::Broadcasting) => "BROADCASTING",
            _ => "CLUSTERING",
        }
    }

    /// The clients as §6's Connection list.
    pub fn connections(&self) -> Vec<Conn> {
        self.clients.values().map(|(c, _)| c.clone()).collect()
    }
}

/// The IP of `ip:port` (IPv6 in brackets or not).
pub fn ip_of(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_owned(),
    }
}

impl Runtime {
    /// `group`'s progress on `topic` (or every topic it consumes) over `brokers`: offsets
    /// from consume stats, waits from the consume time spans of topics with a backlog.
    pub async fn progress(
        &self,
        t: &Target,
        brokers: &[Broker],
        group: &str,
        topic: Option<&str>,
    ) -> Result<Progress, ApiError> {
        let mut p = Progress::default();
        let mut behind: BTreeSet<(usize, String)> = BTreeSet::new();
        for (i, b) in brokers.iter().enumerate() {
            let stats = match b.client.consume_stats(group, topic).await {
                Ok(s) => s,
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            };
            p.consume_tps += if stats.consume_tps.is_finite() {
                stats.consume_tps
            } else {
                0.0
            };
            for (mq, off) in &stats.offset_table.0 {
                let name = t.bare(&mq.topic);
                let entry = p.topics.entry(name.clone()).or_insert_with(|| TopicDiff {
                    topic: name.clone(),
                    ..TopicDiff::default()
                });
                entry.total_diff += off.diff();
                if !is_internal(&name) {
                    p.queues
                        .insert((name.clone(), mq.broker_name.clone(), mq.queue_id));
                }
                entry.last_timestamp = entry.last_timestamp.max(off.last_timestamp);
                if off.diff() > 0 {
                    behind.insert((i, mq.topic.clone()));
                }
            }
        }
        for (i, stored) in behind {
            let b = &brokers[i];
            let spans = match b.client.consume_time_span(&stored, group).await {
                Ok(s) => s,
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            };
            let wait = spans.iter().map(|s| s.delay_time).max().unwrap_or(0);
            if let Some(entry) = p.topics.get_mut(&t.bare(&stored)) {
                entry.delay_time = entry.delay_time.max(wait);
            }
        }
        Ok(p)
    }

    /// `group`'s online clients over `brokers` (none: offline, no error).
    pub async fn online(&self, brokers: &[Broker], group: &str) -> Result<Online, ApiError> {
        let mut out = Online {
            same_everywhere: true,
            ..Online::default()
        };
        for (i, b) in brokers.iter().enumerate() {
            let c = match b.client.consumer_connections(group).await {
                Ok(c) => c,
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            };
            for conn in &c.connection_set {
                out.clients.entry(conn.client_id.clone()).or_insert((
                    Conn {
                        client_id: conn.client_id.clone(),
                        client_addr: conn.client_addr.clone(),
                        language: conn.language.clone(),
                        version: conn.version,
                        remote_ip: ip_of(&conn.client_addr),
                    },
                    i,
                ));
            }
            match &out.connection {
                None => out.connection = Some(c),
                Some(first) => {
                    if subs_of(first) != subs_of(&c) {
                        out.same_everywhere = false;
                    }
                }
            }
        }
        Ok(out)
    }

    /// What client `client_id` of `group` reports of itself, asked through `broker`
    /// (which forwards the group name as that client registered it).
    pub async fn running_info(
        &self,
        broker: &Broker,
        group: &str,
        client_id: &str,
        jstack: bool,
    ) -> Result<ConsumerRunningInfo, ApiError> {
        broker
            .client
            .consumer_running_info(group, client_id, jstack)
            .await
            .map_err(|e| self.fail(broker, &e))
    }

    /// Store times over every broker holding `topic`: earliest stored, latest stored,
    /// latest consumed by `group` (0 when none).
    pub async fn time_span(
        &self,
        brokers: &[Broker],
        topic: &str,
        group: &str,
    ) -> Result<TimeSpan, ApiError> {
        let mut span = TimeSpan {
            topic: topic.to_owned(),
            ..TimeSpan::default()
        };
        for b in brokers {
            let queues = match b.client.consume_time_span(topic, group).await {
                Ok(q) => q,
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            };
            for q in queues {
                if q.min_time_stamp > 0 {
                    span.min_time_stamp = match span.min_time_stamp {
                        0 => q.min_time_stamp,
                        m => m.min(q.min_time_stamp),
                    };
                }
                span.max_time_stamp = span.max_time_stamp.max(q.max_time_stamp);
                span.consume_time_stamp = span.consume_time_stamp.max(q.consume_time_stamp);
            }
        }
        Ok(span)
    }

    /// Moves `group`'s offsets on `topic` on every broker holding it: to the end of each
    /// queue (`None`, skip the backlog) or to the first message stored at or after the
    /// time. Returns how many queues moved.
    pub async fn reset_offset(
        &self,
        brokers: &[Broker],
        topic: &str,
        group: &str,
        to: Option<i64>,
    ) -> Result<usize, ApiError> {
        let mut moved = 0;
        let mut holders = 0;
        for b in brokers {
            match b.client.reset_offset(topic, group, to, true).await {
                Ok(offsets) => {
                    holders += 1;
                    moved += offsets.len();
                }
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            }
        }
        if holders == 0 {
            return Err(ApiError::invoke(format!(
                "no broker holds topic {topic:?} yet"
            )));
        }
        Ok(moved)
    }

    /// The groups consuming `topic` (subscribed now or holding offsets), bare names.
    pub async fn consumers_of(
        &self,
        t: &Target,
        brokers: &[Broker],
        topic: &str,
    ) -> Result<BTreeSet<String>, ApiError> {
        let mut groups = BTreeSet::new();
        for b in brokers {
            match b.client.topic_consumed_by(topic).await {
                Ok(g) => groups.extend(g.iter().map(|g| t.bare(g))),
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            }
        }
        Ok(groups)
    }

    /// Every queue of `topic` over `brokers`: (broker index, queue id, min, max offset).
    pub async fn queues(
        &self,
        brokers: &[Broker],
        topic: &str,
    ) -> Result<Vec<(usize, i32, i64, i64)>, ApiError> {
        let mut out = Vec::new();
        for (i, b) in brokers.iter().enumerate() {
            let stats: TopicStatsTable = match b.client.topic_stats(topic).await {
                Ok(s) => s,
                Err(e) if absent_here(&e) => continue,
                Err(e) => return Err(self.fail(b, &e)),
            };
            for (mq, off) in &stats.offset_table.0 {
                out.push((i, mq.queue_id, off.min_offset, off.max_offset));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The `ONS_INVOKE_ERROR` of a failed call (a broken connection is dropped).
    pub fn fail(&self, b: &Broker, e: &AdminError) -> ApiError {
        self.failed(b.client.addr(), e);
        broker_error(b, e)
    }
}

/// `consumer/timespan`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeSpan {
    /// Topic as asked.
    pub topic: String,
    /// Earliest stored message (ms; 0 none).
    pub min_time_stamp: i64,
    /// Latest stored message (ms; 0 none).
    pub max_time_stamp: i64,
    /// Latest consumed by the group (ms; 0 none).
    pub consume_time_stamp: i64,
}

/// Topic → expression of a connection, for comparing brokers' views.
fn subs_of(c: &ConsumerConnection) -> BTreeMap<String, String> {
    c.subscription_table
        .iter()
        .map(|(t, s)| (t.clone(), s.sub_string.clone()))
        .collect()
}

/// `PUSH` or `PULL`.
pub fn consume_type(c: Option<&ConsumerConnection>) -> &'static str {
    match c.map(|c| c.consume_type) {
        Some(ConsumeType::ConsumeActively) => "PULL",
        _ => "PUSH",
    }
}

/// A thread dump as §6's `Jstack` list. Java's `UtilAll.jstack` (and the Rust client's
/// imitation) writes a block per thread: a header `<name padded to 40>TID: n STATE: s`,
/// then each frame prefixed by the padded name, then a blank line; indented frames under
/// a `Thread: name` line are read too.
pub fn parse_jstack(text: &str) -> Vec<serde_json::Value> {
    let mut threads: Vec<(String, Vec<String>)> = Vec::new();
    let mut name: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            name = None;
            continue;
        }
        let prefix = name.as_deref().filter(|n| !n.is_empty());
        let frame = if line.starts_with([' ', '\t']) && name.is_some() {
            Some(line.trim())
        } else {
            prefix.and_then(|n| line.strip_prefix(n)).map(str::trim)
        };
        match (frame, threads.last_mut()) {
            (Some(frame), Some((_, frames))) => {
                frames.push(frame.strip_prefix("at ").unwrap_or(frame).to_owned());
            }
            _ => {
                let header = line.split_whitespace().collect::<Vec<_>>().join(" ");
                let header = header.strip_prefix("Thread:").unwrap_or(&header).trim();
                let header = header.trim_end_matches(':').to_owned();
                name = Some(
                    line.split("TID:")
                        .next()
                        .filter(|_| line.contains("TID:"))
                        .map_or(String::new(), |n| n.trim().to_owned()),
                );
                threads.push((header, Vec::new()));
            }
        }
    }
    threads
        .into_iter()
        .map(|(thread, track)| serde_json::json!({"thread": thread, "trackList": track}))
        .collect()
}

/// Now, for `lastTimeStamp` of a running-info answer.
pub fn asked_at() -> i64 {
    now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_dump_becomes_threads_with_their_frames() {
        let dump = "Thread: main\n\tat a.B.c(B.java:1)\n\tat d.E.f(E.java:2)\n\nThread: worker-1:\n    parked\n";
        let threads = parse_jstack(dump);
        assert_eq!(
            threads,
            vec![
                serde_json::json!({"thread": "main", "trackList": ["a.B.c(B.java:1)", "d.E.f(E.java:2)"]}),
                serde_json::json!({"thread": "worker-1", "trackList": ["parked"]}),
            ]
        );
        assert!(parse_jstack("").is_empty());
    }

    #[test]
    fn a_java_style_dump_strips_the_padded_thread_name_from_each_frame() {
        let dump = format!(
            "{:<40}TID: 1 STATE: RUNNABLE\n{:<40}java.lang.Thread.sleep(Native Method)\n{:<40}a.B.run(B.java:3)\n\n{:<40}TID: 7 STATE: WAITING\n{:<40}x.Y.z(Y.java:9)\n",
            "main", "main", "main", "pool-1", "pool-1"
        );
        assert_eq!(
            parse_jstack(&dump),
            vec![
                serde_json::json!({"thread": "main TID: 1 STATE: RUNNABLE",
                                   "trackList": ["java.lang.Thread.sleep(Native Method)", "a.B.run(B.java:3)"]}),
                serde_json::json!({"thread": "pool-1 TID: 7 STATE: WAITING", "trackList": ["x.Y.z(Y.java:9)"]}),
            ]
        );
    }

    #[test]
    fn progress_sums_and_lists_only_the_users_topics() {
        let mut p = Progress::default();
        for (topic, diff, last, delay) in [("ORDERS", 3, 10, 500), ("%RETRY%GID_a", 2, 20, 900)] {
            p.topics.insert(
                topic.into(),
                TopicDiff {
                    topic: topic.into(),
                    total_diff: diff,
                    last_timestamp: last,
                    delay_time: delay,
                },
            );
        }
        assert_eq!(p.total_diff(), 5, "retries wait too");
        assert_eq!((p.last_timestamp(), p.delay_time()), (20, 900));
        assert_eq!(p.detail().len(), 1);
        assert_eq!(p.detail()[0].topic, "ORDERS");
        let json = serde_json::to_value(&p.detail()[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"topic": "ORDERS", "totalDiff": 3, "lastTimestamp": 10, "delayTime": 500})
        );
    }

    #[test]
    fn client_addresses_give_their_ip() {
        assert_eq!(ip_of("10.1.2.3:5000"), "10.1.2.3");
        assert_eq!(ip_of("[::1]:5000"), "::1");
        assert_eq!(ip_of("host"), "host");
    }
}

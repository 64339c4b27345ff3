//! `/json/consumer/*` and the two `subDetail`s: a group's progress, clients, running info,
//! time spans and offset resets, and who subscribes to a topic (spec §6 "Consumption").

use serde_json::{Value, json};

use super::Scope;
use super::live::{self, Live};
use crate::envelope::{ApiError, ApiResult, Reply};
use crate::params::Params;
use crate::runtime::consumption::{
    Online, Progress, asked_at, consume_type, is_internal, parse_jstack,
};
use crate::runtime::{Target, now_ms};

/// `consumer/accumulate`: `{onLine, totalDiff, consumeTps, lastTimestamp, delayTime,
/// DetailInTopicList}` (the list only with `detail`).
pub async fn accumulate(s: &Scope<'_>, p: &Params) -> ApiResult {
    let detail = p.bool_or("detail", false)?;
    let instance = s.instance(p, "instanceId")?;
    let group = live::group(s, p, &instance, "groupId")?;
    let live = Live::for_instance(s, instance).await?;
    let gid = &group.spec.group_id;
    let progress =
        s.cx.runtime
            .progress(&live.target, &live.brokers, gid, None)
            .await?;
    let online = s.cx.runtime.online(&live.brokers, gid).await?;
    let mut out = figures(&progress, detail);
    out["onLine"] = json!(online.online());
    Ok(Reply::data(out))
}

/// The backlog figures shared by accumulate and status.
fn figures(progress: &Progress, detail: bool) -> Value {
    json!({
        "totalDiff": progress.total_diff(),
        "consumeTps": progress.consume_tps,
        "lastTimestamp": progress.last_timestamp(),
        "delayTime": progress.delay_time(),
        "DetailInTopicList": if detail { progress.detail() } else { vec![] },
    })
}

/// `consumer/status`: accumulate's figures, the model, the clients and, with `detail`,
/// each client's running info (with its thread dump when `needJstack`).
pub async fn status(s: &Scope<'_>, p: &Params) -> ApiResult {
    let detail = p.bool_or("detail", false)?;
    let jstack = p.bool_or("needJstack", false)?;
    if jstack && !detail {
        return Err(ApiError::field("needJstack", "needs detail=true"));
    }
    let instance = s.instance(p, "instanceId")?;
    let group = live::group(s, p, &instance, "groupId")?;
    let live = Live::for_instance(s, instance).await?;
    let gid = &group.spec.group_id;
    let rt = &s.cx.runtime;
    let progress = rt.progress(&live.target, &live.brokers, gid, None).await?;
    let online = rt.online(&live.brokers, gid).await?;
    let mut infos = Vec::new();
    let mut held = std::collections::BTreeSet::new();
    let mut same = online.same_everywhere;
    if detail {
        for (client_id, (conn, broker)) in &online.clients {
            let info = client_info(s, &live, &online, gid, client_id, conn, *broker, jstack).await;
            if let Some((subs, queues)) = info.1 {
                same &= subs == subscriptions(&online, &live.target);
                held.extend(queues);
            }
            infos.push(info.0);
        }
    }
    // Every queue of the group's topics held by a client (clustering: one of them).
    let rebalance_ok = online.online()
        && (!detail
            || online.model() == "BROADCASTING"
            || progress.queues.iter().all(|q| held.contains(q)));
    let mut out = figures(&progress, detail);
    let extra = json!({
        "online": online.online(),
        "consumeModel": online.model(),
        "subscriptionSame": online.online() && same,
        "rebalanceOK": rebalance_ok,
        "ConnectionSet": online.connections(),
        "ConsumerConnectionInfoList": infos,
    });
    if let (Some(o), Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    Ok(Reply::data(out))
}

/// Bare topic → expression of the group's online subscriptions (retry topics left out).
fn subscriptions(online: &Online, t: &Target) -> std::collections::BTreeMap<String, String> {
    online
        .connection
        .iter()
        .flat_map(|c| c.subscription_table.values())
        .map(|sub| (t.bare(&sub.topic), sub.sub_string.clone()))
        .filter(|(topic, _)| !is_internal(topic))
        .collect()
}

/// What a client reported: its subscriptions and the queues it holds.
type ClientFacts = (
    std::collections::BTreeMap<String, String>,
    Vec<(String, String, i32)>,
);

/// One `ConsumerConnectionInfoList` entry, and the client's subscriptions and queues when
/// it answered (a client that does not answer in time gets an entry saying why).
#[allow(clippy::too_many_arguments)]
async fn client_info(
    s: &Scope<'_>,
    live: &Live,
    online: &Online,
    gid: &str,
    client_id: &str,
    conn: &crate::runtime::consumption::Conn,
    broker: usize,
    jstack: bool,
) -> (Value, Option<ClientFacts>) {
    let t = &live.target;
    let mut entry = json!({
        "clientId": client_id, "connection": conn.client_addr, "language": conn.language,
        "version": conn.version, "consumeModel": online.model(),
        "consumeType": consume_type(online.connection.as_ref()),
        "threadCount": 0, "startTimeStamp": 0, "lastTimeStamp": asked_at(),
        "SubscriptionSet": [], "RunningDataList": [], "Jstack": [],
    });
    let info = match s
        .cx
        .runtime
        .running_info(&live.brokers[broker], gid, client_id, jstack)
        .await
    {
        Ok(info) => info,
        Err(e) => {
            entry["runningInfoError"] = json!(e.detail);
            return (entry, None);
        }
    };
    let prop = |k: &str| {
        info.properties
            .get(k)
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    entry["threadCount"] = json!(prop("PROP_THREADPOOL_CORE_SIZE").unwrap_or(0));
    entry["startTimeStamp"] = json!(prop("PROP_CONSUMER_START_TIMESTAMP").unwrap_or(0));
    let subs: Vec<_> = info
        .subscription_set
        .iter()
        .filter(|x| !is_internal(&t.bare(&x.topic)))
        .collect();
    entry["SubscriptionSet"] = json!(
        subs.iter()
            .map(
                |x| json!({"topic": t.bare(&x.topic), "subString": x.sub_string,
                        "subVersion": x.sub_version, "tagsSet": x.tags_set})
            )
            .collect::<Vec<_>>()
    );
    entry["RunningDataList"] =
        json!(info
        .status_table
        .iter()
        .filter(|(topic, _)| !is_internal(&t.bare(topic)))
        .map(|(topic, st)| json!({"groupId": gid, "topic": t.bare(topic), "rt": st.consume_rt,
            "okTps": st.consume_ok_tps, "failedTps": st.consume_failed_tps,
            "failedCountPerHour": st.consume_failed_msgs}))
        .collect::<Vec<_>>());
    if let Some(dump) = info.jstack.as_deref().filter(|_| jstack) {
        entry["Jstack"] = json!(parse_jstack(dump));
    }
    let facts = (
        subs.iter()
            .map(|x| (t.bare(&x.topic), x.sub_string.clone()))
            .collect(),
        info.mq_table
            .0
            .keys()
            .map(|mq| (t.bare(&mq.topic), mq.broker_name.clone(), mq.queue_id))
            .collect(),
    );
    (entry, Some(facts))
}

/// `consumer/getConnection`: the group's online clients (empty when offline).
pub async fn get_connection(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let group = live::group(s, p, &instance, "groupId")?;
    let live = Live::for_instance(s, instance).await?;
    let online =
        s.cx.runtime
            .online(&live.brokers, &group.spec.group_id)
            .await?;
    Ok(Reply::data(online.connections()))
}

/// `consumer/timespan`: earliest and latest stored, latest consumed by the group.
pub async fn timespan(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let group = live::group(s, p, &instance, "groupId")?;
    let (topic, rights) = live::topic(s, p, &instance, "topic")?;
    live::may_read(&topic, &rights)?;
    let live = Live::for_instance(s, instance).await?;
    let span =
        s.cx.runtime
            .time_span(&live.brokers, &topic, &group.spec.group_id)
            .await?;
    Ok(Reply::data(span))
}

/// `consumer/resetoffset`: type 0 skips the backlog, type 1 moves to `resetTime`.
pub async fn reset_offset(s: &Scope<'_>, p: &Params) -> ApiResult {
    let kind = p.int("type")?;
    crate::params::rules::one_of("type", kind.into(), &[0, 1])?;
    let to = match kind {
        0 => None,
        _ => {
            let at = p.long("resetTime")?;
            if !(0..=now_ms() + 24 * 3_600_000).contains(&at) {
                return Err(ApiError::field(
                    "resetTime",
                    format!("{at} is not a time (epoch ms)"),
                ));
            }
            Some(at)
        }
    };
    let instance = s.instance(p, "instanceId")?;
    let group = live::group(s, p, &instance, "groupId")?;
    let (topic, rights) = live::topic(s, p, &instance, "topic")?;
    live::may_read(&topic, &rights)?;
    let live = Live::for_instance(s, instance).await?;
    s.cx.runtime
        .reset_offset(&live.brokers, &topic, &group.spec.group_id, to)
        .await?;
    Ok(Reply::null())
}

/// `topic/subDetail`: the online groups subscribed to the topic (the owner sees every
/// group, others only their own).
pub async fn topic_sub_detail(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let (topic, rights) = live::topic(s, p, &instance, "topic")?;
    let shown = live::shown_groups(s, &instance, &rights);
    let live = Live::for_instance(s, instance).await?;
    let rt = &s.cx.runtime;
    let mut list = Vec::new();
    for gid in rt.consumers_of(&live.target, &live.brokers, &topic).await? {
        if shown.as_ref().is_some_and(|g| !g.contains(&gid)) {
            continue;
        }
        let online = rt.online(&live.brokers, &gid).await?;
        let sub = online.connection.as_ref().and_then(|c| {
            c.subscription_table
                .values()
                .find(|x| live.target.bare(&x.topic) == topic)
        });
        if let (true, Some(sub)) = (online.online(), sub) {
            list.push(json!({"groupId": gid, "subString": sub.sub_string,
                             "messageModel": online.model()}));
        }
    }
    Ok(Reply::data(
        json!({"topic": topic, "SubscriptionDataList": list}),
    ))
}

/// `group/subDetail`: whether the group is online, its model and its subscriptions
/// (empty when offline).
pub async fn group_sub_detail(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let group = live::group(s, p, &instance, "groupId")?;
    let live = Live::for_instance(s, instance).await?;
    let gid = &group.spec.group_id;
    let online = s.cx.runtime.online(&live.brokers, gid).await?;
    let list: Vec<Value> = subscriptions(&online, &live.target)
        .into_iter()
        .map(|(topic, sub)| json!({"topic": topic, "subString": sub}))
        .collect();
    Ok(Reply::data(json!({
        "groupId": gid, "online": online.online(), "messageModel": online.model(),
        "SubscriptionDataList": if online.online() { list } else { vec![] },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::consumption::TopicDiff;

    #[test]
    fn backlog_figures_have_the_spec_spellings_and_list_topics_only_with_detail() {
        let mut p = Progress {
            consume_tps: 1.5,
            ..Progress::default()
        };
        p.topics.insert(
            "ORDERS".into(),
            TopicDiff {
                topic: "ORDERS".into(),
                total_diff: 4,
                last_timestamp: 7,
                delay_time: 9,
            },
        );
        let brief = figures(&p, false);
        assert_eq!(
            brief,
            json!({"totalDiff": 4, "consumeTps": 1.5, "lastTimestamp": 7, "delayTime": 9,
                   "DetailInTopicList": []})
        );
        assert!(brief["consumeTps"].is_f64(), "a float (spec §7)");
        let full = figures(&p, true);
        assert_eq!(full["DetailInTopicList"][0]["topic"], "ORDERS");
        assert_eq!(full["DetailInTopicList"][0]["totalDiff"], 4);
    }
}

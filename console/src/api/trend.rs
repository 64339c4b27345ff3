//! `/json/trend/{topicInputTps,groupOutputTps}`: messages put into a topic, or consumed
//! from it by a group, per period of 1, 5 or 10 minutes, as totals or TPS.

use serde_json::json;

use super::Scope;
use super::live::{self, Live};
use crate::envelope::{ApiResult, Reply};
use crate::params::{Params, rules};
use crate::runtime::trend::{buckets, check_range};

/// (begin, end, period, tps) of a trend request.
fn range(p: &Params) -> Result<(i64, i64, i64, bool), crate::envelope::ApiError> {
    let begin = p.long("beginTime")?;
    let end = p.long("endTime")?;
    let period = p.long("period")?;
    rules::one_of("period", period, &[1, 5, 10])?;
    let kind = p.long("type")?;
    rules::one_of("type", kind, &[0, 1])?;
    check_range(begin, end, period)?;
    Ok((begin, end, period, kind == 1))
}

/// `trend/topicInputTps`.
pub async fn topic_input_tps(s: &Scope<'_>, p: &Params) -> ApiResult {
    let (begin, end, period, tps) = range(p)?;
    let instance = s.instance(p, "instanceId")?;
    let (topic, _) = live::topic(s, p, &instance, "topic")?;
    let live = Live::for_instance(s, instance).await?;
    let minutes =
        s.cx.runtime
            .minutes(&live.brokers, &topic, None, begin, end)
            .await?;
    let title = format!("{topic} input {}", if tps { "TPS" } else { "messages" });
    Ok(Reply::data(
        json!({"title": title, "records": buckets(&minutes, begin, end, period, tps)}),
    ))
}

/// `trend/groupOutputTps` (the group on one topic, spec §7).
pub async fn group_output_tps(s: &Scope<'_>, p: &Params) -> ApiResult {
    let (begin, end, period, tps) = range(p)?;
    let instance = s.instance(p, "instanceId")?;
    let group = live::group(s, p, &instance, "groupId")?;
    let (topic, _) = live::topic(s, p, &instance, "topic")?;
    let live = Live::for_instance(s, instance).await?;
    let gid = &group.spec.group_id;
    let minutes =
        s.cx.runtime
            .minutes(&live.brokers, &topic, Some(gid), begin, end)
            .await?;
    let title = format!(
        "{gid} output from {topic} {}",
        if tps { "TPS" } else { "messages" }
    );
    Ok(Reply::data(
        json!({"title": title, "records": buckets(&minutes, begin, end, period, tps)}),
    ))
}

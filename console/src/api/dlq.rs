//! `/json/message/{getByIdInDLQ,getByPagedDLQ,resendByIdInDLQ}`: a group's dead-letter
//! queue, with the capitalised parameter and field names of spec §6.

use mq_broker::names::dlq_topic;

use super::Scope;
use super::live::{self, Live};
use super::message::{PagedNames, paged};
use crate::envelope::{ApiResult, Reply};
use crate::params::Params;
use crate::runtime::messages::no_message;
use crate::runtime::view::{BodyBudget, capitalised, view};
use crate::task::Source;

/// `message/getByIdInDLQ`: one dead-letter message of the group, else `BIZ_NO_MESSAGE`.
pub async fn get_by_id(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "InstanceId")?;
    let group = live::group(s, p, &instance, "GroupId")?;
    let msg_id = p.str("MsgId")?;
    let live = Live::for_instance(s, instance).await?;
    let dlq = dlq_topic(&group.spec.group_id);
    let found =
        s.cx.runtime
            .find(&live.target, &live.brokers, &dlq, msg_id)
            .await?
            .ok_or_else(|| no_message(msg_id))?;
    let v = serde_json::to_value(view(&live.target, &found.message, &mut BodyBudget::page()))
        .map_err(|e| crate::envelope::ApiError::system(e.to_string()))?;
    Ok(Reply::data(capitalised(v)))
}

/// `message/getByPagedDLQ`.
pub async fn get_by_paged(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "InstanceId")?;
    let group = live::group(s, p, &instance, "GroupId")?;
    let live = Live::for_instance(s, instance).await?;
    let gid = &group.spec.group_id;
    paged(
        s,
        p,
        &live,
        Source::Dlq,
        gid,
        &dlq_topic(gid),
        &PagedNames::DLQ,
    )
    .await
}

/// `message/resendByIdInDLQ`: delivers the dead-letter message to the group again.
pub async fn resend_by_id(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "InstanceId")?;
    let group = live::group(s, p, &instance, "GroupId")?;
    let msg_id = p.str("MsgId")?;
    let live = Live::for_instance(s, instance).await?;
    s.cx.runtime
        .resend_dlq(&live.brokers, &group.spec.group_id, msg_id)
        .await?;
    Ok(Reply::null())
}

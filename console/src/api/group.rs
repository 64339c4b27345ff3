//! `/json/group/*` (but `subDetail`, a runtime read): groups are `MQGroup` resources in
//! the instance's namespace — a grantee's too, with `spec.owner` the grantee — named from
//! (instance id, group id).

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::ObjectMeta;
use mq_operator::crd::{MQGroup, MQGroupSpec, MQInstance};
use mq_operator::domain::quotas;
use serde_json::{Value, json};

use super::Scope;
use super::scope::instance_id;
use super::topic::tenant_of;
use super::view;
use crate::envelope::{ApiError, ApiResult, ErrorCode, Reply};
use crate::params::{Params, rules};

/// `group/list`: the caller's groups of the instance, optionally filtered by id substring.
pub async fn list(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let filter = p.opt_str("groupId").unwrap_or("");
    let tenant = tenant_of(s, &instance.namespace().unwrap_or_default());
    let list: Vec<Value> = s
        .visible_groups(&instance)
        .iter()
        .filter(|g| g.spec.group_id.contains(filter))
        .map(|g| view::group(g, &instance, tenant.as_deref()))
        .collect();
    Ok(Reply::data(list))
}

/// Refuses `candidate` when its id is taken in the instance, or (without independent
/// naming) in another of the namespace's instances without a namespace (the shared rule
/// the webhook applies too).
fn refusal(s: &Scope<'_>, instance: &MQInstance, candidate: &MQGroup) -> Result<(), ApiError> {
    let group_id = &candidate.spec.group_id;
    let taken = |existing: &MQGroup| {
        if mq_operator::domain::access::uses_group(s.account(), existing) {
            ApiError::new(
                ErrorCode::SubscriptionExisted,
                format!("group {group_id:?} already exists"),
            )
        } else {
            ApiError::new(
                ErrorCode::ConsumerIdBelongToOtherUser,
                format!("group {group_id:?} belongs to another account; choose another id"),
            )
        }
    };
    if let Some(existing) = s
        .groups_of(instance)
        .into_iter()
        .find(|g| &g.spec.group_id == group_id)
    {
        return Err(taken(&existing));
    }
    let instances = s.cx.caches.instances.state();
    let groups = s.cx.caches.groups.state();
    let conflict = quotas::name_conflict(
        candidate,
        instances.iter().map(AsRef::as_ref),
        groups.iter().map(AsRef::as_ref),
    );
    if conflict.is_some() {
        return Err(ApiError::new(
            ErrorCode::SubscriptionExisted,
            format!(
                "group {group_id:?} already exists in another of your instances without a namespace"
            ),
        ));
    }
    Ok(())
}

/// `group/create`.
pub async fn create(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let group_id = p.str("groupId")?;
    rules::new_group_id("groupId", group_id)?;
    let remark = super::instance::remark(p)?;
    let id = instance_id(&instance);
    let spec: MQGroupSpec = serde_json::from_value(json!({
        "instance": instance.name_any(), "groupId": group_id, "remark": remark,
        "owner": s.account().user_id,
    }))
    .map_err(|e| ApiError::system(format!("building the group: {e}")))?;
    let obj = MQGroup {
        metadata: ObjectMeta {
            name: Some(mq_operator::domain::names::console_object_name(
                group_id,
                &[&id, group_id],
            )),
            namespace: instance.namespace(),
            ..Default::default()
        },
        spec,
        status: None,
    };
    refusal(s, &instance, &obj)?;
    let what = format!("group {group_id:?}");
    s.create(
        &s.cx.caches.groups,
        &obj,
        ErrorCode::SubscriptionExisted,
        &what,
    )
    .await?;
    Ok(Reply::data(json!({"remark": remark.unwrap_or_default()})))
}

/// The group `groupId` of `instanceId` that the caller may use.
fn usable(s: &Scope<'_>, p: &Params) -> Result<Arc<MQGroup>, ApiError> {
    let instance = s.instance(p, "instanceId")?;
    let group_id = p.str("groupId")?;
    rules::group_id("groupId", group_id)?;
    s.group(&instance, group_id)
}

/// `group/delete`.
pub async fn delete(s: &Scope<'_>, p: &Params) -> ApiResult {
    let group = usable(s, p)?;
    if group.metadata.deletion_timestamp.is_some() {
        return Err(ApiError::new(
            ErrorCode::SubscriptionNotFound,
            format!("group {:?} is already being deleted", group.spec.group_id),
        ));
    }
    let what = format!("group {:?}", group.spec.group_id);
    s.delete(&s.cx.caches.groups, &group, &what).await?;
    Ok(Reply::null())
}

/// `group/consumerUpdate`: `readEnable=false` stops delivery to the group.
pub async fn consumer_update(s: &Scope<'_>, p: &Params) -> ApiResult {
    let read_enable = p.bool("readEnable")?;
    let group = usable(s, p)?;
    let what = format!("group {:?}", group.spec.group_id);
    s.patch_spec(
        &s.cx.caches.groups,
        &group,
        json!({"readEnable": read_enable}),
        &what,
    )
    .await?;
    Ok(Reply::null())
}

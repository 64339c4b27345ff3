//! `/json/topic/*` (but `subDetail`, a runtime read): topics are `MQTopic` resources in
//! the instance's namespace, named from (instance id, topic), `spec.owner` the creator.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::ObjectMeta;
use mq_operator::crd::{MQInstance, MQTopic, MQTopicSpec};
use mq_operator::domain::names::console_object_name;
use mq_operator::domain::{access, quotas};
use serde_json::{Value, json};

use super::Scope;
use super::scope::instance_id;
use super::view;
use crate::envelope::{ApiError, ApiResult, ErrorCode, Page, Reply};
use crate::params::{Params, rules};

/// The namespace tenant's user id, for resources made without `spec.owner`.
pub fn tenant_of(s: &Scope<'_>, ns: &str) -> Option<String> {
    crate::accounts::tenant_of(&s.cx.caches.accounts, ns)
}

/// `topic/get`.
pub async fn get(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let (topic, rights) = s.topic(&instance, p.str("topic")?)?;
    let tenant = tenant_of(s, &instance.namespace().unwrap_or_default());
    Ok(Reply::data(view::topic(
        &topic,
        &instance,
        rights,
        tenant.as_deref(),
    )))
}

/// `topic/listInPage`: a case-sensitive substring filter, pages of 1–100 (default 20).
pub async fn list_in_page(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let current = p.opt_long("currentPage")?.unwrap_or(1);
    let size = p.opt_long("pageSize")?.unwrap_or(20);
    rules::within("currentPage", current, 1, i64::from(i32::MAX))?;
    rules::within("pageSize", size, 1, 100)?;
    let filter = p.opt_str("topic").unwrap_or("");
    let tenant = tenant_of(s, &instance.namespace().unwrap_or_default());
    let matches: Vec<_> = s
        .visible_topics(&instance)
        .into_iter()
        .filter(|(t, _)| t.spec.topic.contains(filter))
        .collect();
    let total = matches.len() as i64;
    let start = usize::try_from((current - 1).saturating_mul(size)).unwrap_or(usize::MAX);
    let page: Vec<Value> = matches
        .iter()
        .skip(start)
        .take(size as usize)
        .map(|(t, r)| view::topic(t, &instance, *r, tenant.as_deref()))
        .collect();
    Ok(Reply::paged(
        page,
        Page {
            current,
            size,
            total,
        },
    ))
}

/// `topic/listNames`.
pub async fn list_names(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let names: Vec<String> = s
        .visible_topics(&instance)
        .into_iter()
        .map(|(t, _)| t.spec.topic.clone())
        .collect();
    Ok(Reply::data(names))
}

/// Refuses when the caller may not create topics in `instance`.
fn may_create(s: &Scope<'_>, instance: &MQInstance) -> Result<(), ApiError> {
    let ns = instance.namespace().unwrap_or_default();
    if access::creates_topics(s.account(), &ns) {
        return Ok(());
    }
    let why = if access::works_in(s.account(), &ns) {
        "this sub-account may not create, change or delete topics; the platform admin can allow it (--allow-topic-write)".to_owned()
    } else {
        format!(
            "instance {} belongs to another account; you may only use the topics it granted you",
            instance_id(instance)
        )
    };
    Err(ApiError::new(ErrorCode::PermissionDenied, why))
}

/// Why `candidate` may not be created (the shared rules the webhook applies too): its
/// name is taken in the instance, or (without independent naming) in another of the
/// namespace's instances without a namespace, or the instance is full.
fn refusal(s: &Scope<'_>, instance: &MQInstance, candidate: &MQTopic) -> Result<(), ApiError> {
    let name = &candidate.spec.topic;
    if s.topics_of(instance).iter().any(|t| &t.spec.topic == name) {
        return Err(ApiError::new(
            ErrorCode::TopicExisted,
            format!("topic {name:?} already exists"),
        ));
    }
    let instances = s.cx.caches.instances.state();
    let topics = s.cx.caches.topics.state();
    if quotas::name_conflict(
        candidate,
        instances.iter().map(AsRef::as_ref),
        topics.iter().map(AsRef::as_ref),
    )
    .is_some()
    {
        return Err(ApiError::new(
            ErrorCode::TopicExisted,
            format!(
                "topic {name:?} already exists in another of your instances without a namespace"
            ),
        ));
    }
    if let Some((_, why)) =
        quotas::topic_capacity(candidate, instance, topics.iter().map(AsRef::as_ref))
    {
        return Err(ApiError::new(ErrorCode::TopicCapacityExceeded, why));
    }
    Ok(())
}

/// `topic/create`.
pub async fn create(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let name = p.str("topic")?;
    rules::topic("topic", name)?;
    let order = p.long("orderType")?;
    rules::one_of("orderType", order, &[0, 1, 2, 4, 5])?;
    let remark = super::instance::remark(p)?;
    may_create(s, &instance)?;
    let id = instance_id(&instance);
    let spec: MQTopicSpec = serde_json::from_value(json!({
        "instance": instance.name_any(), "topic": name, "orderType": order,
        "remark": remark, "owner": s.account().user_id,
    }))
    .map_err(|e| ApiError::system(format!("building the topic: {e}")))?;
    let obj = MQTopic {
        metadata: ObjectMeta {
            name: Some(console_object_name(name, &[&id, name])),
            namespace: instance.namespace(),
            ..Default::default()
        },
        spec,
        status: None,
    };
    refusal(s, &instance, &obj)?;
    let what = format!("topic {name:?}");
    s.create(&s.cx.caches.topics, &obj, ErrorCode::TopicExisted, &what)
        .await?;
    Ok(Reply::data(json!({})))
}

/// The topic `topic` of `instanceId` that the caller owns and may write.
fn owned(s: &Scope<'_>, p: &Params) -> Result<(Arc<MQInstance>, Arc<MQTopic>), ApiError> {
    let instance = s.instance(p, "instanceId")?;
    let (topic, rights) = s.topic(&instance, p.str("topic")?)?;
    may_create(s, &instance)?;
    if !rights.owner {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("topic {:?} belongs to another account", topic.spec.topic),
        ));
    }
    Ok((instance, topic))
}

/// `topic/update`: the permission (6 read+write, 4 read-only, 2 write-only).
pub async fn update(s: &Scope<'_>, p: &Params) -> ApiResult {
    let perm = p.long("perm")?;
    rules::one_of("perm", perm, &[2, 4, 6])?;
    let (_, topic) = owned(s, p)?;
    let what = format!("topic {:?}", topic.spec.topic);
    s.patch_spec(&s.cx.caches.topics, &topic, json!({"perm": perm}), &what)
        .await?;
    Ok(Reply::null())
}

/// `topic/delete`: the topic and its grants.
pub async fn delete(s: &Scope<'_>, p: &Params) -> ApiResult {
    let (instance, topic) = owned(s, p)?;
    if topic.metadata.deletion_timestamp.is_some() {
        return Err(ApiError::new(
            ErrorCode::TopicNotFound,
            format!("topic {:?} is already being deleted", topic.spec.topic),
        ));
    }
    let name = topic.spec.topic.clone();
    for grant in s.grants_on(&instance, &name) {
        let what = format!(
            "grant of topic {name:?} to user {}",
            grant.spec.empower_user
        );
        s.delete(&s.cx.caches.empowers, &grant, &what).await?;
    }
    let claimants: Vec<_> = s
        .topics_of(&instance)
        .into_iter()
        .filter(|t| t.spec.topic == name && access::owns_topic(s.account(), t))
        .collect();
    for t in claimants {
        s.delete(&s.cx.caches.topics, &t, &format!("topic {name:?}"))
            .await?;
    }
    Ok(Reply::null())
}

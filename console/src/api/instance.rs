//! `/json/instance/*`: instances are `MQInstance` resources in the caller's namespace,
//! named from (namespace, instanceName), so a repeated create is `BIZ_INSTANCE_EXISTED`.

use kube::ResourceExt;
use kube::api::ObjectMeta;
use mq_operator::crd::{MQInstance, MQInstanceSpec};
use mq_operator::domain::names::console_object_name;
use mq_operator::domain::{access, quotas};
use serde_json::{Value, json};

use super::Scope;
use super::scope::instance_id;
use super::view;
use crate::envelope::{ApiError, ApiResult, ErrorCode, Reply};
use crate::params::{Params, rules};

/// `instance/baseInfo`.
pub async fn base_info(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    Ok(Reply::data(view::instance(&instance)))
}

/// `instance/list`: the instances the caller may see.
pub async fn list(s: &Scope<'_>, _p: &Params) -> ApiResult {
    let list: Vec<Value> = s
        .visible_instances()
        .iter()
        .map(|i| view::instance(i))
        .collect();
    Ok(Reply::data(list))
}

/// Refuses when the caller may not write instances of its namespace.
fn may_write(s: &Scope<'_>) -> Result<String, ApiError> {
    let ns = s.account().namespace.clone();
    if !access::writes_instance(s.account(), &ns) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            "this sub-account may not create, change or delete instances; the platform admin can allow it (--allow-instance-write)",
        ));
    }
    Ok(ns)
}

/// The live instances of namespace `ns`.
fn instances_in(s: &Scope<'_>, ns: &str) -> Vec<std::sync::Arc<MQInstance>> {
    s.cx.caches.instances.state_filter(|i| {
        i.namespace().as_deref() == Some(ns) && i.metadata.deletion_timestamp.is_none()
    })
}

/// `instance/create`.
pub async fn create(s: &Scope<'_>, p: &Params) -> ApiResult {
    let ns = may_write(s)?;
    let name = p.str("instanceName")?;
    rules::instance_name("instanceName", name)?;
    let cluster = p.str("cluster")?;
    let independent = p.bool("independentNaming")?;
    let send = p.long("maxSendTps")?;
    let receive = p.long("maxReceiveTps")?;
    rules::within("maxSendTps", send, 1, 1_000_000)?;
    rules::within("maxReceiveTps", receive, 1, 1_000_000)?;
    let capacity = p.opt_int("topicCapacity")?.unwrap_or(100);
    rules::within("topicCapacity", capacity.into(), 1, 10_000)?;
    let remark = remark(p)?;
    known_cluster(s, cluster)?;
    let user = s.account().user_id.clone();
    let obj = MQInstance {
        metadata: ObjectMeta {
            name: Some(console_object_name(name, &[&ns, name])),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        spec: spec(
            name,
            cluster,
            independent,
            send,
            receive,
            capacity,
            remark,
            user,
        )?,
        status: None,
    };
    refusal(s, &obj)?;
    let what = format!("instance {name:?}");
    let created = s
        .create(
            &s.cx.caches.instances,
            &obj,
            ErrorCode::InstanceExisted,
            &what,
        )
        .await?;
    Ok(Reply::data(view::instance(&created)))
}

/// Refuses `candidate` by the shared rules the webhook applies too: a tenant's instance
/// count, one instance without a namespace per account, unique instance names.
fn refusal(s: &Scope<'_>, candidate: &MQInstance) -> Result<(), ApiError> {
    let ns = candidate.namespace().unwrap_or_default();
    let existing = instances_in(s, &ns);
    let refusal = quotas::instance_refusal(candidate, existing.iter().map(AsRef::as_ref));
    let Some((reason, why)) = refusal else {
        return Ok(());
    };
    Err(match reason {
        quotas::INSTANCE_NAME_TAKEN => ApiError::new(
            ErrorCode::InstanceExisted,
            format!(
                "you already have an instance named {:?}",
                candidate.spec.instance_name
            ),
        ),
        quotas::NAMESPACE_INSTANCE_LIMIT => ApiError::field("independentNaming", why),
        _ => ApiError::new(ErrorCode::InstanceCapacityExceeded, why),
    })
}

/// The spec of a new instance (defaults for what the API does not set).
#[allow(clippy::too_many_arguments)]
fn spec(
    name: &str,
    cluster: &str,
    independent: bool,
    send: i64,
    receive: i64,
    capacity: i32,
    remark: Option<String>,
    owner: String,
) -> Result<MQInstanceSpec, ApiError> {
    let mut spec: MQInstanceSpec = serde_json::from_value(json!({
        "instanceName": name, "cluster": cluster, "independentNaming": independent,
        "maxSendTps": send, "maxReceiveTps": receive, "topicCapacity": capacity,
        // Grants are enforced by the brokers (spec §4): console instances sign every client.
        "aclEnabled": true,
    }))
    .map_err(|e| ApiError::system(format!("building the instance: {e}")))?;
    spec.remark = remark;
    spec.owner = Some(owner);
    Ok(spec)
}

/// `remark?`: at most 128 characters.
pub fn remark(p: &Params) -> Result<Option<String>, ApiError> {
    let remark = p.opt_str("remark").map(str::to_owned);
    if remark.as_ref().is_some_and(|r| r.chars().count() > 128) {
        return Err(ApiError::field("remark", "is longer than 128 characters"));
    }
    Ok(remark)
}

/// Refuses a cluster that is not a profile of this region.
fn known_cluster(s: &Scope<'_>, cluster: &str) -> Result<(), ApiError> {
    match s.cx.caches.profiles.resolve(cluster) {
        Ok(profile) if profile.region_id == s.cx.settings.region => Ok(()),
        _ => Err(ApiError::field(
            "cluster",
            format!("{cluster:?} is not a cluster of this region (see /json/cluster/list)"),
        )),
    }
}

/// The instance named by `instanceId` that the caller may write.
pub(super) fn writable(s: &Scope<'_>, p: &Params) -> Result<std::sync::Arc<MQInstance>, ApiError> {
    let instance = s.instance(p, "instanceId")?;
    let ns = may_write(s)?;
    if instance.namespace().as_deref() != Some(ns.as_str()) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!(
                "instance {} belongs to another account; you may only use what it granted you",
                instance_id(&instance)
            ),
        ));
    }
    Ok(instance)
}

/// `instance/update`: only the given fields change.
pub async fn update(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = writable(s, p)?;
    let mut spec = serde_json::Map::new();
    if let Some(name) = p.opt_str("instanceName") {
        rules::instance_name("instanceName", name)?;
        let ns = instance.namespace().unwrap_or_default();
        let taken = instances_in(s, &ns)
            .iter()
            .any(|i| i.spec.instance_name == name && i.name_any() != instance.name_any());
        if taken {
            return Err(ApiError::new(
                ErrorCode::InstanceExisted,
                format!("you already have an instance named {name:?}"),
            ));
        }
        spec.insert("instanceName".into(), json!(name));
    }
    if let Some(remark) = remark(p)? {
        spec.insert("remark".into(), json!(remark));
    }
    if !spec.is_empty() {
        let what = format!("instance {}", instance_id(&instance));
        s.patch_spec(
            &s.cx.caches.instances,
            &instance,
            Value::Object(spec),
            &what,
        )
        .await?;
    }
    Ok(Reply::null())
}

/// `instance/delete`: refused while the instance has topics or groups.
pub async fn delete(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = writable(s, p)?;
    let (topics, groups) = (s.topics_of(&instance).len(), s.groups_of(&instance).len());
    if topics + groups > 0 {
        return Err(ApiError::new(
            ErrorCode::InstanceNotEmpty,
            format!(
                "instance {} still has {topics} topics and {groups} groups; delete them first",
                instance_id(&instance)
            ),
        ));
    }
    let what = format!("instance {}", instance_id(&instance));
    s.delete(&s.cx.caches.instances, &instance, &what).await?;
    Ok(Reply::null())
}

//! `/json/empower/*`: grants are `MQEmpower` resources in the topic's namespace, named
//! from (instance id, topic, user, sub-account), enforced by the brokers through the ACL.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::ObjectMeta;
use mq_operator::crd::{MQEmpower, MQEmpowerSpec, MQInstance, MQTopic};
use mq_operator::domain::names::console_object_name;
use serde_json::{Value, json};

use super::Scope;
use super::scope::instance_id;
use crate::accounts::by_user_id;
use crate::envelope::{ApiError, ApiResult, ErrorCode, Reply};
use crate::params::{Params, rules};

/// The instance and topic named by the parameters, which the caller must own.
fn owned_topic(s: &Scope<'_>, p: &Params) -> Result<(Arc<MQInstance>, Arc<MQTopic>), ApiError> {
    let instance = s.instance(p, "instanceId")?;
    let name = p.str("topic")?;
    rules::topic("topic", name)?;
    let (topic, rights) = s.topic(&instance, name)?;
    if !rights.owner {
        return Err(ApiError::new(
            ErrorCode::EmpowerOwnerCheck,
            format!("you do not own topic {name:?}, so you cannot grant it"),
        ));
    }
    Ok((instance, topic))
}

/// `empower/create`: grants a tenant account.
pub async fn create(s: &Scope<'_>, p: &Params) -> ApiResult {
    grant(s, p, false).await
}

/// `empower/createBySub`: grants one of the caller's tenant's sub-accounts.
pub async fn create_by_sub(s: &Scope<'_>, p: &Params) -> ApiResult {
    grant(s, p, true).await
}

/// Checks that `user` is an account a grant may name.
fn check_grantee(s: &Scope<'_>, user: i64, sub: bool) -> Result<(), ApiError> {
    let grantee = by_user_id(&s.cx.caches.accounts, &user.to_string());
    let tenant = s.account().tenant_user_id();
    match grantee {
        Some(g) if sub && g.parent_user_id.as_deref() == Some(tenant) => Ok(()),
        Some(_) if sub => Err(ApiError::field(
            "empowerUser",
            format!("{user} is not a sub-account of your account"),
        )),
        Some(g) if !g.is_sub() && g.user_id != tenant => Ok(()),
        Some(g) if g.user_id == tenant => Err(ApiError::field(
            "empowerUser",
            format!("{user} is your own account, which has every right already"),
        )),
        _ => Err(ApiError::field(
            "empowerUser",
            format!("{user} is not a tenant account (use empower/createBySub for sub-accounts)"),
        )),
    }
}

async fn grant(s: &Scope<'_>, p: &Params, sub: bool) -> ApiResult {
    let user = p.long("empowerUser")?;
    rules::within("empowerUser", user, 1, i64::MAX)?;
    let relation = p.long("relation")?;
    rules::one_of("relation", relation, &[2, 4, 6])?;
    let (instance, topic) = owned_topic(s, p)?;
    check_grantee(s, user, sub)?;
    let name = topic.spec.topic.clone();
    let exists = s
        .grants_of(&instance)
        .iter()
        .any(|g| g.spec.topic == name && g.spec.empower_user == user && g.spec.sub_account == sub);
    if exists {
        return Err(ApiError::new(
            ErrorCode::EmpowerExist,
            format!("user {user} already has a grant on topic {name:?}; delete it to change it"),
        ));
    }
    let id = instance_id(&instance);
    let spec: MQEmpowerSpec = serde_json::from_value(json!({
        "instance": instance.name_any(), "topic": name, "empowerUser": user,
        "relation": relation, "subAccount": sub,
    }))
    .map_err(|e| ApiError::system(format!("building the grant: {e}")))?;
    let kind = if sub { "sub" } else { "tenant" };
    let obj = MQEmpower {
        metadata: ObjectMeta {
            name: Some(console_object_name(
                &name,
                &[&id, &name, &user.to_string(), kind],
            )),
            namespace: instance.namespace(),
            ..Default::default()
        },
        spec,
        status: None,
    };
    let what = format!("grant of topic {name:?} to user {user}");
    s.create(&s.cx.caches.empowers, &obj, ErrorCode::EmpowerExist, &what)
        .await?;
    Ok(Reply::null())
}

/// `empower/delete`: the grant must exist; the caller must own the topic.
pub async fn delete(s: &Scope<'_>, p: &Params) -> ApiResult {
    let user = p.long("empowerUser")?;
    let (instance, topic) = owned_topic(s, p)?;
    let grants: Vec<_> = s
        .grants_on(&instance, &topic.spec.topic)
        .into_iter()
        .filter(|g| g.spec.empower_user == user && g.metadata.deletion_timestamp.is_none())
        .collect();
    if grants.is_empty() {
        return Err(ApiError::new(
            ErrorCode::EmpowerNotFound,
            format!("user {user} has no grant on topic {:?}", topic.spec.topic),
        ));
    }
    for g in grants {
        let what = format!("grant of topic {:?} to user {user}", topic.spec.topic);
        s.delete(&s.cx.caches.empowers, &g, &what).await?;
    }
    Ok(Reply::null())
}

/// `empower/list`: the topic's owner sees every grant on it, a grantee its own.
pub async fn list(s: &Scope<'_>, p: &Params) -> ApiResult {
    let instance = s.instance(p, "instanceId")?;
    let name = p.str("topic")?;
    let user = p.opt_long("empowerUser")?;
    let (topic, rights) = s.topic(&instance, name)?;
    let me = &s.account().user_id;
    let list: Vec<Value> = s
        .grants_of(&instance)
        .iter()
        .filter(|g| g.spec.topic == topic.spec.topic)
        .filter(|g| user.is_none_or(|u| g.spec.empower_user == u))
        .filter(|g| rights.owner || &g.spec.empower_user.to_string() == me)
        .map(|g| {
            json!({"topic": g.spec.topic, "empowerUser": g.spec.empower_user,
                   "relation": g.spec.relation.code(), "subAccount": g.spec.sub_account})
        })
        .collect();
    Ok(Reply::data(list))
}

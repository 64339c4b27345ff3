//! How resources look in answers: the status codes of spec §7 and the objects of §6.

use kube::Resource;
use mq_operator::crd::{CommonStatus, MQGroup, MQInstance, MQTopic, Phase};
use mq_operator::domain::access::TopicRights;
use serde_json::{Value, json};

use super::scope::instance_id;

/// §7 status codes: 0 serving, 1 being created, 2 being deleted, 3 failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// Ready.
    Serving = 0,
    /// Accepted, not ready yet.
    Creating = 1,
    /// Being deleted.
    Deleting = 2,
    /// Failed; the message says why.
    Failed = 3,
}

impl Serving {
    /// `statusName`.
    pub fn name(self) -> &'static str {
        match self {
            Serving::Serving => "SERVING",
            Serving::Creating => "CREATING",
            Serving::Deleting => "DELETING",
            Serving::Failed => "FAILED",
        }
    }
}

/// The serving state of a resource, and the Ready condition's message when failed.
pub fn serving<K: Resource>(
    obj: &K,
    status: Option<&impl CommonStatus>,
    phase: Option<&Phase>,
) -> (Serving, Option<String>) {
    if obj.meta().deletion_timestamp.is_some() || phase == Some(&Phase::Deleting) {
        return (Serving::Deleting, None);
    }
    let ready = status.and_then(|s| s.conditions().iter().find(|c| c.type_ == "Ready"));
    let current = status.and_then(|s| s.observed_generation()) == obj.meta().generation;
    match (phase, ready) {
        (Some(Phase::Failed), Some(c)) => (Serving::Failed, Some(c.message.clone())),
        (_, Some(c)) if c.status == "True" && current => (Serving::Serving, None),
        _ => (Serving::Creating, None),
    }
}

/// The status fields (`status`, `statusName`, `statusMessage` when failed) of an object.
fn status_fields(v: &mut Value, (state, message): (Serving, Option<String>)) {
    v["status"] = json!(state as i32);
    v["statusName"] = json!(state.name());
    if let Some(m) = message {
        v["statusMessage"] = json!(m);
    }
}

/// Epoch milliseconds of the object's creation.
pub fn created_ms<K: Resource>(obj: &K) -> Option<i64> {
    obj.meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
}

/// The owner user id of a resource: `spec.owner`, else the namespace tenant's.
fn owner(spec_owner: &Option<String>, tenant: Option<&str>) -> Value {
    json!(spec_owner.as_deref().or(tenant))
}

/// `relationName` of a relation code.
pub fn relation_name(relation: u8) -> &'static str {
    match relation {
        1 => "OWNER",
        2 => "PUBLISH",
        4 => "SUBSCRIBE",
        6 => "PUBLISH_SUBSCRIBE",
        _ => "NONE",
    }
}

/// A topic as `topic/get` and `topic/listInPage` answer it.
pub fn topic(
    t: &MQTopic,
    instance: &MQInstance,
    rights: TopicRights,
    tenant: Option<&str>,
) -> Value {
    let relation = rights.relation().unwrap_or(0);
    let order = t.spec.order_type.code();
    let mut v = json!({
        "topic": t.spec.topic, "owner": owner(&t.spec.owner, tenant),
        "instanceId": instance_id(instance), "orderType": order, "messageType": order,
        "perm": t.spec.perm.code(), "remark": t.spec.remark.clone().unwrap_or_default(),
        "createTime": created_ms(t), "relation": relation, "relationName": relation_name(relation),
        "independentNaming": instance.spec.independent_naming,
    });
    let status = t.status.as_ref();
    status_fields(
        &mut v,
        serving(t, status, status.and_then(|s| s.phase.as_ref())),
    );
    v
}

/// A group as `group/list` answers it.
pub fn group(g: &MQGroup, instance: &MQInstance, tenant: Option<&str>) -> Value {
    let mut v = json!({
        "owner": owner(&g.spec.owner, tenant), "instanceId": instance_id(instance),
        "groupId": g.spec.group_id, "independentNaming": instance.spec.independent_naming,
        "remark": g.spec.remark.clone().unwrap_or_default(), "readEnable": g.spec.read_enable,
        "createTime": created_ms(g),
    });
    let status = g.status.as_ref();
    status_fields(
        &mut v,
        serving(g, status, status.and_then(|s| s.phase.as_ref())),
    );
    v
}

/// An instance as `instance/baseInfo` answers it.
pub fn instance(i: &MQInstance) -> Value {
    // The address clients use under the current exposure (external once there is one).
    let endpoint = i.status.as_ref().and_then(|s| {
        s.external_endpoint
            .clone()
            .filter(|_| i.spec.exposure.is_external())
            .or_else(|| s.endpoint.clone())
    });
    let endpoints = json!({ "tcpEndpoint": endpoint });
    let mut v = json!({
        "instanceId": instance_id(i), "instanceName": i.spec.instance_name,
        "independentNaming": i.spec.independent_naming, "namespaceRulesType": i.spec.independent_naming,
        "endpoints": endpoints, "Endpoints": endpoints,
        "maxSendTps": i.spec.max_send_tps, "maxReceiveTps": i.spec.max_receive_tps,
        "topicCapacity": i.spec.topic_capacity, "cluster": i.spec.cluster,
        "remark": i.spec.remark.clone().unwrap_or_default(), "createTime": created_ms(i),
    });
    let status = i.status.as_ref();
    status_fields(
        &mut v,
        serving(i, status, status.and_then(|s| s.phase.as_ref())),
    );
    v
}

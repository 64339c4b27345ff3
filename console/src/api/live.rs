//! What every runtime read starts with: the caller's instance, its brokers, and the
//! caller's topic or group in it (another tenant's answers as missing, spec §7).

use std::sync::Arc;

use mq_operator::crd::{MQGroup, MQInstance};
use mq_operator::domain::access::{SUBSCRIBE, TopicRights};

use super::Scope;
use crate::envelope::{ApiError, ErrorCode};
use crate::params::Params;
use crate::runtime::{Broker, Target};

/// An instance the caller may see, with its reachable brokers.
pub struct Live {
    /// The instance.
    pub instance: Arc<MQInstance>,
    /// Where its servers are.
    pub target: Target,
    /// Its broker masters.
    pub brokers: Vec<Broker>,
}

impl Live {
    /// The instance of parameter `field` and its brokers.
    pub async fn of(s: &Scope<'_>, p: &Params, field: &str) -> Result<Self, ApiError> {
        let instance = s.instance(p, field)?;
        Self::for_instance(s, instance).await
    }

    /// `instance`'s brokers (after the caller's checks passed).
    pub async fn for_instance(s: &Scope<'_>, instance: Arc<MQInstance>) -> Result<Self, ApiError> {
        let (target, brokers) = s.cx.runtime.instance_brokers(s.cx, &instance).await?;
        Ok(Self {
            instance,
            target,
            brokers,
        })
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.target.instance_id
    }
}

/// The group of parameter `field` in `instance`, when the caller may use it.
pub fn group(
    s: &Scope<'_>,
    p: &Params,
    instance: &MQInstance,
    field: &str,
) -> Result<Arc<MQGroup>, ApiError> {
    s.group(instance, p.str(field)?)
}

/// The topic of parameter `field` in `instance` and the caller's rights on it.
pub fn topic(
    s: &Scope<'_>,
    p: &Params,
    instance: &MQInstance,
    field: &str,
) -> Result<(String, TopicRights), ApiError> {
    let (t, rights) = s.topic(instance, p.str(field)?)?;
    Ok((t.spec.topic.clone(), rights))
}

/// Message bodies and consumer progress are the owner's and subscribers' to read; a
/// publish-only grantee sees the topic but not what others stored in it.
pub fn may_read(topic: &str, rights: &TopicRights) -> Result<(), ApiError> {
    if rights.owner || rights.granted & SUBSCRIBE != 0 {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("reading the messages of topic {topic:?} needs the subscribe right"),
        ))
    }
}

/// The group ids of `instance` the caller may see in answers about a topic: all of them
/// for the topic's owner (its consumers), else only the caller's own.
pub fn shown_groups(
    s: &Scope<'_>,
    instance: &MQInstance,
    rights: &TopicRights,
) -> Option<std::collections::BTreeSet<String>> {
    if rights.owner {
        return None;
    }
    Some(
        s.visible_groups(instance)
            .iter()
            .map(|g| g.spec.group_id.clone())
            .collect(),
    )
}

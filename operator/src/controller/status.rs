//! Writing what the operator observed into a resource's status, the same way for all four
//! kinds: only when it differs from what is stored (an idle operator writes nothing), with
//! an Event whenever the Ready condition changes.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{Context, Error};
use crate::crd::{
    CommonStatus, MQEmpower, MQEmpowerStatus, MQGroup, MQGroupStatus, MQInstance, MQInstanceStatus,
    MQTopic, MQTopicStatus, Phase, READY, condition, set_condition,
};

/// A resource of an instance with the common status: what writing its status needs.
pub trait Reported:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Its status type.
    type Status: CommonStatus + Default + Clone + PartialEq + Serialize + Send;
    /// Its current status.
    fn status(&self) -> Option<&Self::Status>;
}

macro_rules! reported {
    ($kind:ty, $status:ty) => {
        impl Reported for $kind {
            type Status = $status;
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
        }
    };
}

reported!(MQInstance, MQInstanceStatus);
reported!(MQTopic, MQTopicStatus);
reported!(MQGroup, MQGroupStatus);
reported!(MQEmpower, MQEmpowerStatus);

/// Writes the Ready condition (and the phase, if given) for the current generation.
pub async fn set_ready<K: Reported>(
    ctx: &Context,
    obj: &K,
    phase: Option<Phase>,
    ready: bool,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let generation = obj.meta().generation;
    let mut status = obj.status().cloned().unwrap_or_default();
    status.set_observed_generation(generation);
    if let Some(phase) = phase {
        status.set_phase(phase);
    }
    set_condition(
        status.conditions_mut(),
        condition(READY, ready, reason, message, generation),
    );
    write_status(ctx, obj, status).await
}

/// Writes `status` if it changed, and records the change as an Event.
pub async fn write_status<K: Reported>(
    ctx: &Context,
    obj: &K,
    status: K::Status,
) -> Result<(), Error> {
    if obj.status() == Some(&status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    ctx.metrics.wrote();
    if let Some(c) = status.conditions().iter().find(|c| c.type_ == READY) {
        let old = obj
            .status()
            .and_then(|s| s.conditions().iter().find(|o| o.type_ == READY).cloned());
        if old.as_ref().map(|o| (&o.status, &o.reason)) != Some((&c.status, &c.reason)) {
            super::record(
                ctx,
                obj.object_ref(&()),
                c.status == "True",
                &c.reason,
                c.message.clone(),
            )
            .await;
        }
    }
    Ok(())
}

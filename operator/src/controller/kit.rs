//! The steps every reconciler of the four kinds shares, written once: the wrapper (counted
//! in the metrics, run under the kind's finalizer, errors taken out of the finalizer's
//! wrapping for the error policy) and the gates checked before anything is touched (the
//! pause annotation, then changed immutable fields).

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};

use super::status::{Reported, set_ready, write_status};
use super::{Context, Error, conventions};
use crate::crd::{
    CommonStatus, ImmutableFieldChange, PAUSE_ANNOTATION, Phase, condition, set_condition,
};

/// Reconciles `obj`: `apply` while it lives, `cleanup` once it is deleted (its finalizer
/// `finalizer_name` is added first and removed after a successful cleanup).
pub async fn finalized<K, A, AF, C, CF>(
    ctx: &Arc<Context>,
    obj: Arc<K>,
    finalizer_name: &str,
    apply: A,
    cleanup: C,
) -> Result<Action, Error>
where
    K: Reported,
    A: FnOnce(Arc<K>) -> AF,
    AF: Future<Output = Result<Action, Error>>,
    C: FnOnce(Arc<K>) -> CF,
    CF: Future<Output = Result<Action, Error>>,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let work = finalizer(&api, finalizer_name, obj.clone(), |event| async move {
        match event {
            Event::Apply(o) => apply(o).await,
            Event::Cleanup(o) => cleanup(o).await,
        }
    });
    ctx.observe(obj.as_ref(), async move {
        work.await.map_err(Error::from_finalizer)
    })
    .await
}

/// When `obj` is paused: shows the `ReconciliationPaused` condition and says to stop.
pub async fn pause_gate<K: Reported>(ctx: &Context, obj: &K) -> Result<Option<Action>, Error> {
    if !conventions::paused(obj) {
        return Ok(None);
    }
    let mut status = obj.status().cloned().unwrap_or_default();
    let generation = obj.meta().generation;
    let message = format!("remove the {PAUSE_ANNOTATION} annotation to resume");
    let paused = condition(conventions::PAUSED, true, "Paused", message, generation);
    set_condition(status.conditions_mut(), paused);
    write_status(ctx, obj, status).await?;
    Ok(Some(Action::await_change()))
}

/// When immutable fields changed: `Ready=False` with reason `NotSupported` naming them (and
/// `phase`, if given), and says to stop until the resource changes again.
pub async fn immutable_gate<K: Reported>(
    ctx: &Context,
    obj: &K,
    changes: &[ImmutableFieldChange],
    phase: Option<Phase>,
) -> Result<Option<Action>, Error> {
    if changes.is_empty() {
        return Ok(None);
    }
    let message = crate::domain::immutable::describe_changes(changes);
    set_ready(ctx, obj, phase, false, "NotSupported", message).await?;
    Ok(Some(Action::await_change()))
}

//! The controllers: `MQInstance` into workloads, `MQTopic` and `MQGroup` onto the
//! instance's brokers. One [`Context`] carries the client and settings; each reconcile
//! is idempotent and writes status only when it changed.

pub mod brokers;
pub mod children;
pub mod conventions;
pub mod instance;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::crd::{MQGroup, MQInstance, MQTopic};
pub use workloads::Settings;
use workloads::{MANAGED_BY, OPERATOR, OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL};

/// What every reconcile needs.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Operator settings.
    pub settings: Settings,
    /// Full resync period (drift correction).
    pub resync: Duration,
    /// Publishes Kubernetes Events about the resources.
    pub recorder: Recorder,
    /// Every MQTopic (the topic controller's cache), for name conflicts.
    pub topics: Store<MQTopic>,
    /// Every MQGroup, for name conflicts.
    pub groups: Store<MQGroup>,
}

/// Publishes an Event about `reference` (failures are logged: an event must never
/// fail a reconcile).
pub async fn record(
    ctx: &Context,
    reference: ObjectReference,
    normal: bool,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: if normal {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: reason.to_owned(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::debug!(error = %e, "publishing an event failed");
    }
}

/// Why a reconcile failed; the error policy retries with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer, or the cleanup, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// A broker refused or could not be reached.
    #[error("broker {broker}: {message}")]
    Broker {
        /// Which broker.
        broker: String,
        /// What went wrong.
        message: String,
    },
    /// The instance still has topics or groups and is not force-deleted.
    #[error("instance still has {0}")]
    NotEmpty(String),
}

/// Retries a failed reconcile soon, and says why in an Event.
fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: kube::Resource<DynamicType = ()>,
{
    tracing::warn!(name = %obj.name_any(), namespace = ?obj.namespace(), %error, "reconcile failed");
    let (reference, note) = (obj.object_ref(&()), error.to_string());
    let reason = match error {
        Error::NotEmpty(_) => "InstanceNotEmpty",
        Error::Broker { .. } => "BrokerUnavailable",
        _ => "ReconcileFailed",
    };
    tokio::spawn(async move { record(&ctx, reference, false, reason, note).await });
    Action::requeue(Duration::from_secs(5))
}

/// Creates the platform namespace if it is missing (installed operators find it made by
/// their manifests and need only `get` on namespaces).
async fn ensure_namespace(client: &Client, name: &str) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
        "labels": {MANAGED_BY: OPERATOR}}});
    api.patch(name, &PatchParams::apply(OPERATOR), &Patch::Apply(&ns))
        .await?;
    Ok(())
}

/// Runs the three controllers until SIGTERM/SIGINT.
pub async fn run(client: Client, settings: Settings, resync: Duration) -> Result<(), Error> {
    ensure_namespace(&client, &settings.namespace).await?;
    let topic_controller = Controller::new(
        Api::<MQTopic>::all(client.clone()),
        watcher::Config::default(),
    );
    let group_controller = Controller::new(
        Api::<MQGroup>::all(client.clone()),
        watcher::Config::default(),
    );
    let reporter = Reporter {
        controller: OPERATOR.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: settings.clone(),
        resync,
        recorder: Recorder::new(client.clone(), reporter),
        topics: topic_controller.store(),
        groups: group_controller.store(),
    });
    let workloads = watcher::Config::default().labels(&format!("{MANAGED_BY}={OPERATOR}"));
    let instances = Controller::new(
        Api::<MQInstance>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<StatefulSet>::namespaced(client.clone(), &settings.namespace),
        workloads,
        |sts| owner_of(&sts),
    )
    .shutdown_on_signal()
    .run(instance::reconcile, error_policy, ctx.clone())
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "instance controller");
        }
    });
    // A broker pod that changes (new, restarted with an empty store, Ready again)
    // re-applies every topic and group of its instance.
    let broker_pods = watcher::Config::default().labels(&format!(
        "{MANAGED_BY}={OPERATOR},{}=broker",
        workloads::COMPONENT_LABEL
    ));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &settings.namespace);
    let topic_store = topic_controller.store();
    let topics = topic_controller
        .watches(pods.clone(), broker_pods.clone(), move |pod| {
            children_of(&topic_store, &pod, |t: &MQTopic| t.spec.instance.clone())
        })
        .shutdown_on_signal()
        .run(children::reconcile_topic, error_policy, ctx.clone())
        .for_each(|_| async {});
    let group_store = group_controller.store();
    let groups = group_controller
        .watches(pods, broker_pods, move |pod| {
            children_of(&group_store, &pod, |g: &MQGroup| g.spec.instance.clone())
        })
        .shutdown_on_signal()
        .run(children::reconcile_group, error_policy, ctx.clone())
        .for_each(|_| async {});
    tracing::info!(namespace = %settings.namespace, "mq-operator running");
    futures::join!(instances, topics, groups);
    Ok(())
}

/// The topics (or groups) in `store` that belong to the instance owning `pod`.
fn children_of<K>(
    store: &Store<K>,
    pod: &Pod,
    instance_of: impl Fn(&K) -> String,
) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let Some(owner) = owner_of(pod) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|k| k.meta().namespace == owner.namespace && instance_of(k) == owner.name)
        .map(|k| ObjectRef::from_obj(k.as_ref()))
        .collect()
}

/// The `MQInstance` a workload object belongs to, from its labels.
fn owner_of<K: ResourceExt>(obj: &K) -> Option<ObjectRef<MQInstance>> {
    let labels = obj.labels();
    let ns = labels.get(OWNER_NAMESPACE_LABEL)?;
    let name = labels.get(OWNER_NAME_LABEL)?;
    Some(ObjectRef::new(name).within(ns))
}

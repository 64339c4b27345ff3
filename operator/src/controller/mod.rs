//! The controllers: `MQInstance` into workloads, `MQTopic` and `MQGroup` onto the
//! instance's brokers. One [`Context`] carries the client and settings; each reconcile
//! is idempotent and writes status only when it changed.

pub mod acl;
pub mod apply;
pub mod brokers;
pub mod children;
pub mod conventions;
pub mod drain;
pub mod empower;
pub mod exposure;
pub mod failures;
#[cfg(test)]
mod fixtures;
pub mod health;
pub mod instance;
pub mod kit;
pub mod limits;
pub mod metrics;
pub mod ownership;
pub mod status;
pub mod store_health;
pub mod task_key;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use metrics::Metrics;

use crate::crd::{MQEmpower, MQGroup, MQInstance, MQTopic};
use crate::watch::profiles::ProfileCache;
use crate::watch::{cache, watch_config};
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
    /// Every MQEmpower, for the instances' ACLs.
    pub empowers: Store<MQEmpower>,
    /// Every MQInstance, for the oldest claimant of an id.
    pub instances: Store<MQInstance>,
    /// The ownership records of instance ids ([`ownership`]).
    pub records: Store<ConfigMap>,
    /// The account Secrets of the platform namespace ([`acl`]).
    pub accounts: Store<Secret>,
    /// Lasting problems already reported in an Event ([`Context::warn_once`]).
    pub reported: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The platform's master key: each instance's admin key is derived from it
    /// ([`Context::instance_admin`]); it opens no broker itself.
    pub admin: mq_broker::acl::Credentials,
    /// Why the master key Secret is unusable, if it is: then no instance is changed, and
    /// each says so in its status.
    pub admin_problem: Option<String>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Bound on a broker scale-down's drain.
    pub drain_timeout: Duration,
    /// Consecutive failures per object, for exponential back-off.
    pub failures: failures::Failures,
    /// The PodDisruptionBudget resource the server offers (`policy/v1`, else
    /// `policy/v1beta1` as on 1.20), if any.
    pub pdb: Option<kube::core::ApiResource>,
    /// The cluster profiles (a watch of their ConfigMap).
    pub profiles: ProfileCache,
}

impl Context {
    /// Runs the reconcile `run` of `obj`, counting it in the metrics; a success resets
    /// the object's back-off.
    pub async fn observe<K: kube::Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        run: impl Future<Output = Result<Action, Error>>,
    ) -> Result<Action, Error> {
        let started = std::time::Instant::now();
        self.metrics.begin(&K::kind(&()));
        let result = run.await;
        let ok = result.is_ok();
        self.metrics.reconciled(&K::kind(&()), started, ok);
        if ok {
            // Also the last reconcile of a deleted object (its cleanup finished).
            self.failures.forget(&failure_key(obj));
        }
        result
    }

    /// The admin key of the instance whose objects are `names`: it signs every admin call
    /// to that instance's brokers and name servers, and opens no other instance's.
    pub fn instance_admin(&self, names: &workloads::Names) -> mq_broker::acl::Credentials {
        crate::domain::keys::instance_admin_key(&self.admin, &names.instance_id)
    }

    /// The console key of the instance whose objects are `names`: the console reads its
    /// brokers with it, limited there to the console role.
    pub fn instance_console(&self, names: &workloads::Names) -> mq_broker::acl::Credentials {
        crate::domain::keys::console_key(&self.admin, &names.instance_id)
    }

    /// Publishes a Warning Event about `reference` once per `key` for the life of the
    /// process: a lasting problem is reported when found, not at every resync (an idle
    /// operator writes nothing).
    pub async fn warn_once(
        &self,
        key: String,
        reference: ObjectReference,
        reason: &str,
        note: String,
    ) {
        let fresh = self
            .reported
            .lock()
            .map(|mut seen| seen.insert(key))
            .unwrap_or(false);
        if fresh {
            record(self, reference, false, reason, note).await;
        }
    }

    /// The consecutive failed reconciles of `obj` so far.
    pub fn failures_of<K: kube::Resource<DynamicType = ()>>(&self, obj: &K) -> u32 {
        self.failures.count(&failure_key(obj))
    }

    /// The next retry delay of `obj` after one more failure: 5 s, doubling to 5 min.
    fn backoff<K: kube::Resource<DynamicType = ()>>(&self, obj: &K) -> Duration {
        retry_delay(
            self.failures
                .failed(failure_key(obj), std::time::Instant::now()),
        )
    }
}

/// The retry delay after `failures` consecutive failures: 5 s, doubling up to 5 min.
fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    (FIRST_RETRY * 2u32.pow(exponent)).min(MAX_RETRY)
}

/// First retry after a failed reconcile.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest retry delay.
const MAX_RETRY: Duration = Duration::from_secs(300);

fn failure_key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
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
    /// An instance id's ownership record could not be settled.
    #[error("instance id ownership: {0}")]
    Ownership(String),
    /// An object of the platform namespace belongs to another resource: the operator
    /// neither applies over it nor deletes it.
    #[error("{0}")]
    NotOurs(String),
    /// The platform's master key could not be made (no random source).
    #[error("making the platform admin key: {0}")]
    AdminKey(#[source] std::io::Error),
    /// The platform's master key Secret is unusable; instances report it.
    #[error("{0}")]
    MalformedAdmin(String),
    /// Leader election failed or the lease was lost (the process exits; a replica that
    /// keeps working without the lease would fight the new leader).
    #[error("leader election: {0}")]
    Leadership(String),
    /// The ops port could not be bound.
    #[error("binding the ops port {addr}: {source}")]
    OpsPort {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The error a reconcile failed with, out of the finalizer's wrapping (the apply or
    /// cleanup's own error), so the error policy sees the real cause.
    pub fn from_finalizer(error: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match error {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            other => Error::Finalizer(Box::new(other)),
        }
    }
}

/// Retries a failed reconcile soon, and says why in an Event.
fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: kube::Resource<DynamicType = ()>,
{
    tracing::warn!(name = %obj.name_any(), namespace = ?obj.namespace(), %error, "reconcile failed");
    let (reference, note) = (obj.object_ref(&()), error.to_string());
    let (reason, delay) = policy(error, || ctx.backoff(obj.as_ref()));
    tokio::spawn(async move { record(&ctx, reference, false, reason, note).await });
    Action::requeue(delay)
}

/// The Event reason for `error` and the retry delay (`backoff` counts one more failure).
fn policy(error: &Error, backoff: impl FnOnce() -> Duration) -> (&'static str, Duration) {
    match error {
        // A refused instance deletion waits for the user, not for a fault to clear.
        Error::NotEmpty(_) => ("InstanceNotEmpty", FIRST_RETRY),
        Error::Broker { .. } => ("BrokerUnavailable", backoff()),
        _ => ("ReconcileFailed", backoff()),
    }
}

/// What the controllers need to run.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Workload settings.
    pub settings: Settings,
    /// Full resync period (drift correction).
    pub resync: Duration,
    /// Bound on a broker scale-down's drain.
    pub drain_timeout: Duration,
}

/// The four controllers, until SIGTERM/SIGINT (the caller holds the leader lease).
pub async fn run_controllers(
    client: Client,
    opts: ControllerOptions,
    metrics: Arc<Metrics>,
) -> Result<(), Error> {
    let ControllerOptions {
        settings,
        resync,
        drain_timeout,
    } = opts;
    let bounded = || kube::runtime::controller::Config::default().concurrency(CHILD_CONCURRENCY);
    let topic_controller =
        Controller::new(Api::<MQTopic>::all(client.clone()), watch_config()).with_config(bounded());
    let group_controller =
        Controller::new(Api::<MQGroup>::all(client.clone()), watch_config()).with_config(bounded());
    let empower_controller = Controller::new(Api::<MQEmpower>::all(client.clone()), watch_config())
        .with_config(bounded());
    let (admin, admin_problem) = match acl::ensure_admin(&client, &settings.namespace).await {
        Ok(key) => (key, None),
        Err(Error::MalformedAdmin(problem)) => {
            tracing::error!(%problem, "the platform admin key is unusable; instances are left as they are");
            (mq_broker::acl::Credentials::new("", ""), Some(problem))
        }
        Err(e) => return Err(e),
    };
    // The console's replicas sign paged-query task ids with it.
    task_key::ensure_console_task_key(&client, &settings.namespace).await?;
    let reporter = Reporter {
        controller: OPERATOR.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let (profiles, profile_changes) = ProfileCache::start(
        client.clone(),
        &settings.namespace,
        &settings.profiles_configmap,
    );
    let instance_controller =
        Controller::new(Api::<MQInstance>::all(client.clone()), watch_config());
    let records = cache(
        Api::<ConfigMap>::namespaced(client.clone(), &settings.namespace),
        watch_config().labels(ownership::RECORD_LABEL),
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: settings.clone(),
        resync,
        recorder: Recorder::new(client.clone(), reporter),
        topics: topic_controller.store(),
        groups: group_controller.store(),
        empowers: empower_controller.store(),
        instances: instance_controller.store(),
        records,
        accounts: cache(
            Api::<Secret>::namespaced(client.clone(), &settings.namespace),
            watch_config().labels(acl::ACCOUNT_LABEL),
        ),
        reported: Default::default(),
        admin,
        admin_problem: admin_problem.clone(),
        metrics: metrics.clone(),
        drain_timeout,
        failures: Default::default(),
        pdb: disruption_budget_resource(&client).await,
        profiles,
    });
    metrics.set_running(true);
    if let Some(problem) = admin_problem {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some(acl::ADMIN_SECRET.into()),
            namespace: Some(settings.namespace.clone()),
            ..Default::default()
        };
        record(&ctx, reference, false, "MalformedAdminKey", problem).await;
    }
    tokio::spawn(count_cached(ctx.clone()));
    let workloads = watch_config().labels(&format!("{MANAGED_BY}={OPERATOR}"));
    // With ACL on, an instance's ACL follows its topics, groups, grants and the accounts.
    let acl_on = instance_controller.store();
    let on_profile = acl_on.clone();
    let (on_topic, on_group, on_grant, on_account) =
        (acl_on.clone(), acl_on.clone(), acl_on.clone(), acl_on);
    let accounts = watch_config().labels(acl::ACCOUNT_LABEL);
    let (instance_retry, instance_relist) = crate::watch::relist::Relisted::new();
    let instances = instance_controller
        .watches(
            Api::<StatefulSet>::namespaced(client.clone(), &settings.namespace),
            workloads,
            |sts| owner_of(&sts),
        )
        .watches(
            Api::<MQTopic>::all(client.clone()),
            watch_config(),
            move |t| acl_instance(&on_topic, t.namespace(), &t.spec.instance),
        )
        .watches(
            Api::<MQGroup>::all(client.clone()),
            watch_config(),
            move |g| acl_instance(&on_group, g.namespace(), &g.spec.instance),
        )
        .watches(
            Api::<MQEmpower>::all(client.clone()),
            watch_config(),
            move |e| acl_instance(&on_grant, e.namespace(), &e.spec.instance),
        )
        .watches(
            Api::<Secret>::namespaced(client.clone(), &settings.namespace),
            accounts,
            move |_| {
                on_account
                    .state()
                    .iter()
                    .filter(|i| i.spec.acl_enabled)
                    .map(|i| ObjectRef::from_obj(i.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(profile_users(on_profile, profile_changes))
        .reconcile_all_on(instance_relist)
        .trigger_backoff(crate::watch::relist::WatchBackoff::default())
        .shutdown_on_signal()
        .run(instance::reconcile, error_policy, ctx.clone())
        .for_each(move |result| {
            instance_retry.note(&result, "MQInstance");
            async {}
        });
    // A broker pod that changes (new, restarted with an empty store, Ready again)
    // re-applies every topic and group of its instance.
    let broker_pods = watch_config().labels(&format!(
        "{MANAGED_BY}={OPERATOR},{}=broker",
        workloads::COMPONENT_LABEL
    ));
    let pods: Api<Pod> = Api::namespaced(client.clone(), &settings.namespace);
    let topic_store = topic_controller.store();
    let (topic_retry, topic_relist) = crate::watch::relist::Relisted::new();
    let topics = topic_controller
        .watches(pods.clone(), broker_pods.clone(), move |pod| {
            children_of(&topic_store, &pod, |t: &MQTopic| t.spec.instance.clone())
        })
        .reconcile_all_on(topic_relist)
        .trigger_backoff(crate::watch::relist::WatchBackoff::default())
        .shutdown_on_signal()
        .run(children::reconcile_topic, error_policy, ctx.clone())
        .for_each(move |result| {
            topic_retry.note(&result, "MQTopic");
            async {}
        });
    let group_store = group_controller.store();
    let (group_retry, group_relist) = crate::watch::relist::Relisted::new();
    let groups = group_controller
        .watches(pods, broker_pods, move |pod| {
            children_of(&group_store, &pod, |g: &MQGroup| g.spec.instance.clone())
        })
        .reconcile_all_on(group_relist)
        .trigger_backoff(crate::watch::relist::WatchBackoff::default())
        .shutdown_on_signal()
        .run(children::reconcile_group, error_policy, ctx.clone())
        .for_each(move |result| {
            group_retry.note(&result, "MQGroup");
            async {}
        });
    let (empower_retry, empower_relist) = crate::watch::relist::Relisted::new();
    let empowers = empower_controller
        .reconcile_all_on(empower_relist)
        .trigger_backoff(crate::watch::relist::WatchBackoff::default())
        .shutdown_on_signal()
        .run(empower::reconcile, error_policy, ctx.clone())
        .for_each(move |result| {
            empower_retry.note(&result, "MQEmpower");
            async {}
        });
    tracing::info!(namespace = %settings.namespace, "mq-operator running");
    let health = &metrics.health;
    futures::join!(
        health.until_ended("MQInstance", instances),
        health.until_ended("MQTopic", topics),
        health.until_ended("MQGroup", groups),
        health.until_ended("MQEmpower", empowers),
    );
    Ok(())
}

/// Reconciles of topics, groups and grants running at once, per kind. Unbounded, a
/// thousand topics listed at start (or created at once) ran a thousand reconciles
/// together: ~1,350 API connections open at the same moment, which the allocator then
/// kept. 64 keeps 1,000 new topics as quick to Ready as unbounded (14 s on 2 cores;
/// 16 took 22 s) for ~7 MiB more than 16.
pub const CHILD_CONCURRENCY: u16 = 64;

/// The newest PodDisruptionBudget version the server serves.
async fn disruption_budget_resource(client: &Client) -> Option<kube::core::ApiResource> {
    for version in ["v1", "v1beta1"] {
        let gvk = kube::core::GroupVersionKind::gvk("policy", version, "PodDisruptionBudget");
        if let Ok((resource, _)) = kube::discovery::pinned_kind(client, &gvk).await {
            return Some(resource);
        }
    }
    tracing::warn!("the server offers no PodDisruptionBudget; instances get none");
    None
}

/// Keeps the cached-object gauges current.
async fn count_cached(ctx: Arc<Context>) {
    loop {
        ctx.metrics.set_cached("MQTopic", ctx.topics.len());
        ctx.metrics.set_cached("MQGroup", ctx.groups.len());
        ctx.metrics.set_cached("MQEmpower", ctx.empowers.len());
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
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

/// The instance `name` of namespace `ns`, if its ACL is on (its ACL Secret then follows
/// the change that called this).
fn acl_instance(
    instances: &Store<MQInstance>,
    ns: Option<String>,
    name: &str,
) -> Option<ObjectRef<MQInstance>> {
    let reference = ObjectRef::new(name).within(ns.as_deref()?);
    instances
        .get(&reference)
        .filter(|i| i.spec.acl_enabled)
        .map(|_| reference)
}

/// The instances using the profiles each change of the profiles ConfigMap touched: an
/// edit rolls their images, resources and placement; a removed profile shows as
/// `UnknownCluster`, a restored one heals.
fn profile_users(
    instances: Store<MQInstance>,
    changes: tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
) -> impl futures::Stream<Item = ObjectRef<MQInstance>> + Send + 'static {
    futures::stream::unfold(changes, |mut rx| async move {
        rx.recv().await.map(|names| (names, rx))
    })
    .flat_map(move |names| {
        let users: Vec<ObjectRef<MQInstance>> = instances
            .state()
            .iter()
            .filter(|i| names.contains(&i.spec.cluster))
            .map(|i| ObjectRef::from_obj(i.as_ref()))
            .collect();
        futures::stream::iter(users)
    })
}

/// The `MQInstance` a workload object belongs to, from its labels.
fn owner_of<K: ResourceExt>(obj: &K) -> Option<ObjectRef<MQInstance>> {
    let labels = obj.labels();
    let ns = labels.get(OWNER_NAMESPACE_LABEL)?;
    let name = labels.get(OWNER_NAME_LABEL)?;
    Some(ObjectRef::new(name).within(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_policy_sees_the_cause_inside_the_finalizer() {
        use kube::runtime::finalizer::Error as F;
        let refused = Error::from_finalizer(F::CleanupFailed(Error::NotEmpty("topics t".into())));
        assert!(matches!(refused, Error::NotEmpty(_)), "{refused:?}");
        let many_failures = || retry_delay(9);
        assert_eq!(
            policy(&refused, many_failures),
            ("InstanceNotEmpty", Duration::from_secs(5)),
            "a refused deletion is retried in 5 s however often it was refused"
        );
        let broker = Error::from_finalizer(F::ApplyFailed(Error::Broker {
            broker: "b-0".into(),
            message: "connection refused".into(),
        }));
        assert_eq!(
            policy(&broker, || retry_delay(2)),
            ("BrokerUnavailable", Duration::from_secs(10))
        );
        let unnamed = Error::from_finalizer(F::UnnamedObject);
        assert!(matches!(unnamed, Error::Finalizer(_)));
        assert_eq!(policy(&unnamed, || retry_delay(1)).0, "ReconcileFailed");
    }

    #[test]
    fn failures_back_off_exponentially_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
        let topic: MQTopic = serde_json::from_value(serde_json::json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQTopic",
            "metadata": {"name": "t", "namespace": "n"},
            "spec": {"instance": "i", "topic": "TOPIC", "orderType": 0},
        }))
        .unwrap();
        assert_eq!(failure_key(&topic), "MQTopic/n/t");
    }
}

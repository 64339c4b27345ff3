//! `MQInstance` → name-server and broker StatefulSets, Services and ConfigMap in the
//! platform namespace; status with the instance id, endpoint, ready brokers and counts.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams};
use kube::core::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, Resource, ResourceExt};

use super::apply::{apply_object, apply_with, delete_owned};
use super::status::write_status;
use super::workloads::{self, INSTANCE_ID_LABEL, Names};
use super::{Context, Error};
use super::{acl, brokers, conventions, drain, kit, ownership, store_health};
use crate::crd::{
    FORCE_DELETE_ANNOTATION, MQGroup, MQInstance, MQInstanceStatus, MQTopic, OrderType, Phase,
    READY, condition, set_condition,
};
use crate::domain::immutable::instance_identity;
use crate::domain::profiles::{Effective, Unresolved};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The instance finalizer (cleanup crosses namespaces, so owner references cannot).
pub const FINALIZER: &str = "mqfleet.io/instance";
/// Re-check period while workloads are starting.
const STARTING: Duration = Duration::from_secs(3);

/// Reconciles one instance.
pub async fn reconcile(instance: Arc<MQInstance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let c = &ctx;
    kit::finalized(
        c,
        instance,
        FINALIZER,
        |i| async move { apply(&i, c).await },
        |i| async move { cleanup(&i, c).await },
    )
    .await
}

async fn apply(instance: &MQInstance, ctx: &Context) -> Result<Action, Error> {
    let generation = instance.metadata.generation;
    if let Some(action) = kit::pause_gate(ctx, instance).await? {
        return Ok(action);
    }
    if let Some(problem) = &ctx.admin_problem {
        refuse(ctx, instance, "PlatformKeyInvalid", problem.clone()).await?;
        return Ok(Action::requeue(ctx.resync));
    }
    // A limit of spec §4 broken: a new instance gets nothing (not even its id); one that
    // already runs keeps running and only its Ready condition says so.
    let limit = super::limits::instance_refusal(ctx, instance);
    if let Some((reason, message)) = &limit
        && ownership::held_by(&ctx.records, instance).is_none()
    {
        refuse(ctx, instance, reason, message.clone()).await?;
        return Ok(Action::requeue(super::limits::RECHECK.min(ctx.resync)));
    }
    // The instance id names every workload and every namespaced topic: it cannot move, and
    // it is this instance's alone (the ownership record, which tenants cannot write).
    let identity = instance_identity(instance);
    let record = match ownership::claim(ctx, instance, &identity).await? {
        ownership::Claim::Held(record) => record,
        ownership::Claim::Taken(message) => {
            // Nothing of the holder's is touched: no workload of this id is applied.
            refuse(ctx, instance, "ResourceConflict", message).await?;
            return Ok(Action::requeue(ctx.resync));
        }
        ownership::Claim::Invalid(message) => {
            refuse(ctx, instance, "InvalidInstanceId", message).await?;
            return Ok(Action::await_change());
        }
    };
    ownership::complete(ctx, &record, &identity).await?;
    let changes = crate::domain::immutable::changes_from(&record.applied, identity);
    // The old settings keep running: the phase stays, unless there is none yet.
    let phase = instance
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_none()
        .then_some(Phase::Failed);
    if let Some(action) = kit::immutable_gate(ctx, instance, &changes, phase).await? {
        return Ok(action);
    }
    let (settings, names) = (&ctx.settings, Names::for_id(record.instance_id.clone()));
    let effective = match effective(ctx, instance, &names).await? {
        Ok(effective) => effective,
        Err(action) => return Ok(action),
    };
    let platform = &settings.namespace;
    // Before the pods, so a broker starts with its admin key and, with ACL on, its accounts.
    let admin = acl::admin_secret(instance, &names, platform, &ctx.instance_admin(&names));
    apply_object(ctx, platform, &admin).await?;
    let console = acl::console_secret(instance, &names, platform, &ctx.instance_console(&names));
    apply_object(ctx, platform, &console).await?;
    let bad_accounts = acl::sync(ctx, instance, &names).await?;
    report_bad_accounts(ctx, &bad_accounts).await;
    // Before broker.conf: it carries the brokers' external addresses.
    let external = super::exposure::reconcile(ctx, instance, &names, &effective).await?;
    let mut status = instance.status.clone().unwrap_or_default();
    // Damaged stores, and a cut the tenant asked for (before broker.conf: it carries it).
    let pods = brokers::broker_pods(&ctx.client, platform, &names.instance_id).await?;
    let damages: Vec<store_health::Damage> =
        pods.iter().filter_map(store_health::damage_of).collect();
    accept_cut(ctx, instance, &mut status, &damages).await;
    let mut config = workloads::config_map(
        instance,
        &names,
        settings,
        &effective,
        status.store_recovery.as_ref(),
    );
    external.write_config(&mut config);
    apply_object(ctx, platform, &config).await?;
    for svc in workloads::services(instance, &names, settings) {
        apply_object(ctx, platform, &svc).await?;
    }
    let namesrv = apply_object(
        ctx,
        platform,
        &workloads::namesrv_statefulset(instance, &names, settings, &effective),
    )
    .await?;
    let (replicas, drained) =
        broker_replicas(ctx, instance, &names, &status, effective.broker_replicas).await?;
    let mut broker_sts = workloads::broker_statefulset(instance, &names, settings, &effective);
    if let Some(spec) = broker_sts.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    let brokers = apply_object(ctx, platform, &broker_sts).await?;
    if let Some(resource) = &ctx.pdb {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), platform, resource);
        for pdb in workloads::disruption_budgets(instance, &names, settings, &resource.api_version)
        {
            apply_with(ctx, &api, &pdb).await?;
        }
    }
    let recovered = follow_cut(ctx, instance, &names, &mut status, &pods).await?;
    if recovered.is_some() {
        // The cut is made: the line goes (without rolling anything).
        let mut config = workloads::config_map(instance, &names, settings, &effective, None);
        external.write_config(&mut config);
        apply_object(ctx, platform, &config).await?;
    }
    let disk_full = disk_full(ctx, &names, &pods).await;
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), platform);
    let cluster_ip = services
        .get_opt(&names.namesrv())
        .await?
        .and_then(|s| s.spec?.cluster_ip);
    let ready = |sts: &StatefulSet| {
        sts.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    };
    let ready_ns = ready(&namesrv);
    // A broker counts once it is Ready *and* holds every topic and group of the
    // instance, so a new broker (scale-up, empty store) is not counted half-configured.
    let (ready_brokers, missing) = serving_brokers(ctx, instance, &names, &pods).await?;
    let ready_brokers = ready_brokers.min(ready(&brokers));
    let (want_ns, want_brokers) = (effective.name_server_replicas, effective.broker_replicas);
    let (topics, groups) = children_of(&ctx.topics, &ctx.groups, instance);

    status.observed_generation = generation;
    status.instance_id = Some(names.instance_id.clone());
    status.endpoint = cluster_ip.map(|ip| format!("{ip}:{}", workloads::NAMESRV_PORT));
    status.dns_endpoint = Some(format!(
        "{}.{platform}.svc:{}",
        names.namesrv(),
        workloads::NAMESRV_PORT
    ));
    status.external_endpoint = external.endpoint.clone();
    status.brokers = want_brokers;
    status.effective = Some(effective.status());
    status.ready_brokers = ready_brokers;
    status.topics = i32::try_from(topics.len()).unwrap_or(i32::MAX);
    status.groups = i32::try_from(groups.len()).unwrap_or(i32::MAX);
    let running = ready_ns >= want_ns && ready_brokers >= want_brokers && status.endpoint.is_some();
    let was_running = status.phase == Some(Phase::Running) || status.phase == Some(Phase::Degraded);
    status.phase = Some(match (running, was_running) {
        (true, _) => Phase::Running,
        (false, true) => Phase::Degraded,
        (false, false) => Phase::Creating,
    });
    let message = if running {
        format!(
            "{ready_brokers} broker(s) and {ready_ns} name server(s) ready; clients use NAMESRV_ADDR={}{}",
            status.endpoint.clone().unwrap_or_default(),
            external
                .endpoint
                .as_ref()
                .map(|e| format!(" (outside the cluster: {e})"))
                .unwrap_or_default()
        )
    } else {
        let missing = if missing.is_empty() {
            String::new()
        } else {
            format!("; still configuring: {}", missing.join(", "))
        };
        format!(
            "waiting for pods: brokers {ready_brokers}/{want_brokers} ready, name servers {ready_ns}/{want_ns} ready{missing} (see `kubectl -n {platform} get pods -l {INSTANCE_ID_LABEL}={}`)",
            names.instance_id
        )
    };
    let reason = if running {
        "InstanceReady"
    } else if was_running {
        "PodsNotReady"
    } else {
        "Creating"
    };
    set_condition(
        &mut status.conditions,
        condition(READY, running, reason, message, generation),
    );
    let draining = record_drain(&mut status.conditions, drained, generation);
    if draining && running {
        // Serving, but not yet what the spec asks for.
        let message = status
            .conditions
            .iter()
            .find(|c| c.type_ == drain::DRAINING)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        set_condition(
            &mut status.conditions,
            condition(READY, false, "Draining", message, generation),
        );
    }
    status.conditions.retain(|c| c.type_ != conventions::PAUSED);
    record_bad_accounts(&mut status.conditions, &bad_accounts, generation);
    if let Some((reason, message)) = limit.clone() {
        set_condition(
            &mut status.conditions,
            condition(READY, false, reason, message, generation),
        );
    }
    if let Some((reason, message)) = external.problem.clone() {
        set_condition(
            &mut status.conditions,
            condition(READY, false, reason, message, generation),
        );
    }
    record_storage(
        &mut status.conditions,
        effective.storage_refusal(),
        running,
        generation,
    );
    let (ns, name) = (
        instance.namespace().unwrap_or_default(),
        instance.name_any(),
    );
    let damaged = (!damages.is_empty()).then(|| {
        store_health::damaged_message(&ns, &name, &damages, status.store_recovery.as_ref())
    });
    let disk_full = (!disk_full.is_empty()).then(|| store_health::disk_full_message(&disk_full));
    let store_trouble = damaged.is_some() || disk_full.is_some();
    if let Some((reason, message)) = store_health::record(
        &mut status.conditions,
        damaged,
        recovered,
        disk_full,
        generation,
    ) {
        set_condition(
            &mut status.conditions,
            condition(READY, false, reason, message, generation),
        );
    }
    let pending_cut = status.store_recovery.is_some();
    write_status(ctx, instance, status).await?;
    // A load balancer's address arrives without any change of ours: look again soon.
    let waiting_for_lb = external
        .problem
        .as_ref()
        .is_some_and(|(reason, _)| *reason == super::exposure::WAITING_FOR_LB);
    let next = if running && !draining && !waiting_for_lb && !store_trouble && !pending_cut {
        ctx.resync
    } else {
        STARTING
    };
    Ok(Action::requeue(if limit.is_some() {
        next.min(super::limits::RECHECK)
    } else {
        next
    }))
}

/// Takes the tenant's `mqfleet.io/recover-truncate` annotation into `status.storeRecovery`
/// when it names a broker pod of this instance that reports damage (an Event says what
/// will be cut); otherwise it is ignored with a Warning, and no cut is pending.
async fn accept_cut(
    ctx: &Context,
    instance: &MQInstance,
    status: &mut MQInstanceStatus,
    damages: &[store_health::Damage],
) {
    let annotation = instance
        .annotations()
        .get(store_health::RECOVER_TRUNCATE_ANNOTATION)
        .cloned();
    if annotation.is_some() && status.store_recovery.is_none() {
        // A reconcile woken by the broker pod's restart can run on a cached object that
        // lacks our own last status write (the pending cut): the new pod reports no
        // damage yet, so without the pending cut the annotation would look stale and the
        // cut be forgotten. The API server has the latest status.
        let api: Api<MQInstance> = Api::namespaced(
            ctx.client.clone(),
            &instance.namespace().unwrap_or_default(),
        );
        if let Ok(fresh) = api.get_status(&instance.name_any()).await {
            status.store_recovery = fresh.status.and_then(|s| s.store_recovery);
        }
    }
    let reference = instance.object_ref(&());
    match store_health::requested_cut(
        annotation.as_deref(),
        status.store_recovery.as_ref(),
        damages,
    ) {
        Ok(cut) => {
            if let Some(c) = &cut
                && status.store_recovery.as_ref() != Some(c)
            {
                let note = format!(
                    "cutting the commit log of broker pod {} ({}) at offset {} (segment {}) as asked: every message stored from there on is dropped",
                    c.pod, c.broker, c.offset, c.segment
                );
                super::record(ctx, reference, true, "RecoverTruncate", note).await;
            }
            status.store_recovery = cut;
        }
        Err(message) => {
            let key = format!(
                "recover-truncate:{}/{}:{}",
                instance.namespace().unwrap_or_default(),
                instance.name_any(),
                annotation.unwrap_or_default()
            );
            ctx.warn_once(key, reference, "RecoverTruncateIgnored", message)
                .await;
            status.store_recovery = None;
        }
    }
}

/// Moves a pending cut on: a broker still crash-looping on the damage is restarted now
/// (a new pod reads the broker.conf that allows the cut); once it is Ready the cut is
/// done: the annotation is removed, an Event says what was cut, and the message for the
/// `Recovered` condition is returned.
async fn follow_cut(
    ctx: &Context,
    instance: &MQInstance,
    names: &Names,
    status: &mut MQInstanceStatus,
    pods: &[Pod],
) -> Result<Option<String>, Error> {
    let Some(cut) = status.store_recovery.clone() else {
        return Ok(None);
    };
    let Some(pod) = pods.iter().find(|p| p.name_any() == cut.pod) else {
        return Ok(None);
    };
    let platform = &ctx.settings.namespace;
    if store_health::broker_ready(pod) {
        let what = match brokers::running_broker(pod) {
            Some(b) => runtime_info(ctx, names, &b)
                .await
                .and_then(|info| store_health::store_keys(&info).1),
            None => None,
        };
        let what = what.unwrap_or_else(|| format!("cut at offset {}", cut.offset));
        let message = format!(
            "broker pod {} ({}) started again: its damaged commit log was {what}",
            cut.pod, cut.broker
        );
        let api: Api<MQInstance> = Api::namespaced(
            ctx.client.clone(),
            &instance.namespace().unwrap_or_default(),
        );
        let patch = serde_json::json!({"metadata": {"annotations": {store_health::RECOVER_TRUNCATE_ANNOTATION: null}}});
        api.patch(
            &instance.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
        super::record(
            ctx,
            instance.object_ref(&()),
            true,
            "Recovered",
            message.clone(),
        )
        .await;
        status.store_recovery = None;
        return Ok(Some(message));
    }
    let still_failing = store_health::damage_of(pod).is_some_and(|d| d.offset == cut.offset);
    if still_failing && store_health::crash_looping(pod) {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), platform);
        pods.delete(&cut.pod, &DeleteParams::default()).await?;
        super::record(
            ctx,
            instance.object_ref(&()),
            true,
            "RecoverTruncate",
            format!(
                "restarting broker pod {} now, with broker.conf allowing the cut at offset {}",
                cut.pod, cut.offset
            ),
        )
        .await;
    }
    Ok(None)
}

/// A broker's runtime info, bounded; `None` when it cannot be had.
async fn runtime_info(
    ctx: &Context,
    names: &Names,
    broker: &brokers::BrokerPod,
) -> Option<std::collections::BTreeMap<String, String>> {
    let ask = async {
        let admin = brokers::connect(&ctx.instance_admin(names), broker)
            .await
            .ok()?;
        admin.runtime_info().await.ok()
    };
    tokio::time::timeout(store_health::ASK_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
}

/// The running brokers (ready or not: a full disk fails readiness) that refuse sends
/// for lack of space: pod → reason.
async fn disk_full(
    ctx: &Context,
    names: &Names,
    pods: &[Pod],
) -> std::collections::BTreeMap<String, String> {
    let mut full = std::collections::BTreeMap::new();
    for pod in pods {
        let Some(broker) = brokers::running_broker(pod) else {
            continue;
        };
        if let Some(reason) = runtime_info(ctx, names, &broker)
            .await
            .and_then(|info| store_health::store_keys(&info).0)
        {
            full.insert(pod.name_any(), reason);
        }
    }
    full
}

/// Condition type shown while the broker volumes are smaller than two commit-log segments.
pub const STORAGE_SUFFICIENT: &str = "StorageSufficient";

/// Shows volumes too small for two segments: `StorageSufficient=False`, and `Ready=False`
/// unless the brokers serve anyway (an instance created before the check, whose brokers
/// keep their store: it stays Ready, and the condition says what to grow).
fn record_storage(
    conditions: &mut Vec<Condition>,
    refusal: Option<String>,
    running: bool,
    generation: Option<i64>,
) {
    let Some(message) = refusal else {
        conditions.retain(|c| c.type_ != STORAGE_SUFFICIENT);
        return;
    };
    let reason = "StorageTooSmall";
    set_condition(
        conditions,
        condition(
            STORAGE_SUFFICIENT,
            false,
            reason,
            message.clone(),
            generation,
        ),
    );
    if !running {
        set_condition(
            conditions,
            condition(READY, false, reason, message, generation),
        );
    }
}

/// Condition type shown while account Secrets that may concern the instance are unusable.
pub const ACCOUNTS_VALID: &str = "AccountsValid";

/// Shows the unusable account Secrets in an `AccountsValid=False` condition (removed once
/// none are left).
fn record_bad_accounts(
    conditions: &mut Vec<Condition>,
    bad: &[acl::BadAccount],
    generation: Option<i64>,
) {
    if bad.is_empty() {
        conditions.retain(|c| c.type_ != ACCOUNTS_VALID);
        return;
    }
    let list: Vec<String> = bad
        .iter()
        .map(|b| format!("{}: {}", b.secret, b.reason))
        .collect();
    let message = format!(
        "account Secret(s) in the platform namespace cannot be used, so their keys are in no ACL ({}); every other account works; the platform admin must fix them",
        list.join("; ")
    );
    set_condition(
        conditions,
        condition(ACCOUNTS_VALID, false, "BadAccount", message, generation),
    );
}

/// One Warning Event on each bad account Secret version (not one per reconcile).
async fn report_bad_accounts(ctx: &Context, bad: &[acl::BadAccount]) {
    for account in bad {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            name: Some(account.secret.clone()),
            namespace: Some(ctx.settings.namespace.clone()),
            ..Default::default()
        };
        let key = format!("account:{}@{}", account.secret, account.version);
        ctx.warn_once(key, reference, "BadAccount", account.reason.clone())
            .await;
    }
}

/// Broker replicas to run now: the `wanted` ones, except while shrinking, when the
/// current count stays until the leaving brokers are drained. Returns the drain's state
/// too.
async fn broker_replicas(
    ctx: &Context,
    instance: &MQInstance,
    names: &Names,
    status: &MQInstanceStatus,
    wanted: i32,
) -> Result<(i32, Option<drain::Drain>), Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let current = api
        .get_opt(&names.broker())
        .await?
        .and_then(|s| s.spec?.replicas)
        .unwrap_or(0);
    if current <= wanted {
        return Ok((wanted, None));
    }
    let since = drain::started(&status.conditions);
    let state = drain::drain(ctx, instance, &names.instance_id, wanted, since).await?;
    let replicas = match state {
        drain::Drain::Waiting(_) | drain::Drain::TimedOut(_) => current,
        drain::Drain::Done | drain::Drain::Overridden(_) => wanted,
    };
    Ok((replicas, Some(state)))
}

/// What the instance runs (its spec over its cluster profile), with the storage its
/// brokers were created with (claim templates cannot change). `Err(action)` when the
/// profile is unknown (status says `UnknownCluster` and which profiles exist; an edit
/// of the profiles ConfigMap reconciles again) or still loading.
async fn effective(
    ctx: &Context,
    instance: &MQInstance,
    names: &Names,
) -> Result<Result<Effective, Action>, Error> {
    let message = match ctx.profiles.effective(&instance.spec) {
        Ok(mut effective) => {
            let api: Api<StatefulSet> =
                Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
            if let Some((size, class)) = api
                .get_opt(&names.broker())
                .await?
                .as_ref()
                .and_then(claimed_storage)
            {
                effective.pin_storage(size, class);
            }
            return Ok(Ok(effective));
        }
        Err(Unresolved::Loading) => return Ok(Err(Action::requeue(STARTING))),
        Err(Unresolved::Unknown(message)) => message,
    };
    let generation = instance.metadata.generation;
    let mut status = instance.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    if matches!(status.phase, None | Some(Phase::Creating)) {
        status.phase = Some(Phase::Failed);
    }
    set_condition(
        &mut status.conditions,
        condition(READY, false, "UnknownCluster", message, generation),
    );
    status.conditions.retain(|c| c.type_ != conventions::PAUSED);
    write_status(ctx, instance, status).await?;
    Ok(Err(Action::await_change()))
}

/// The size and class of the store claims a broker StatefulSet was created with.
fn claimed_storage(sts: &StatefulSet) -> Option<(Quantity, Option<String>)> {
    let claim = sts
        .spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("store"))?
        .spec
        .as_ref()?;
    let size = claim
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    Some((size.clone(), claim.storage_class_name.clone()))
}

/// Keeps the Draining condition in step with the drain; true while brokers drain.
fn record_drain(
    conditions: &mut Vec<Condition>,
    drained: Option<drain::Drain>,
    generation: Option<i64>,
) -> bool {
    match drained {
        Some(drain::Drain::Waiting(message)) => {
            set_condition(
                conditions,
                condition(
                    drain::DRAINING,
                    true,
                    "BacklogRemaining",
                    message,
                    generation,
                ),
            );
            true
        }
        Some(drain::Drain::TimedOut(message)) => {
            set_condition(
                conditions,
                condition(drain::DRAINING, true, "DrainTimedOut", message, generation),
            );
            true
        }
        Some(drain::Drain::Overridden(message)) => {
            set_condition(
                conditions,
                condition(
                    drain::DRAINING,
                    false,
                    "DrainOverridden",
                    message,
                    generation,
                ),
            );
            false
        }
        Some(drain::Drain::Done) => {
            let message = "the leaving brokers' backlog was consumed; their pods are removed";
            set_condition(
                conditions,
                condition(drain::DRAINING, false, "Drained", message, generation),
            );
            false
        }
        None => false,
    }
}

/// The Ready brokers among `pods` that hold every applied topic and group of
/// `instance`, and for the others what they still miss.
async fn serving_brokers(
    ctx: &Context,
    instance: &MQInstance,
    names: &Names,
    pods: &[Pod],
) -> Result<(i32, Vec<String>), Error> {
    let (ns, name) = (instance.namespace(), instance.name_any());
    let ours = |k_ns: Option<String>, k_instance: &str| k_ns == ns && k_instance == name;
    // Only what was applied counts (a conflict loser or a paused resource is not due).
    let topics: Vec<Arc<MQTopic>> = ctx
        .topics
        .state()
        .into_iter()
        .filter(|t| {
            ours(t.namespace(), &t.spec.instance) && conventions::owns_broker_object(t.as_ref())
        })
        .collect();
    let groups: Vec<Arc<MQGroup>> = ctx
        .groups
        .state()
        .into_iter()
        .filter(|g| {
            ours(g.namespace(), &g.spec.instance) && conventions::owns_broker_object(g.as_ref())
        })
        .collect();
    let canonical = |n: &str| {
        if instance.spec.independent_naming {
            format!("{}%{n}", names.instance_id)
        } else {
            n.to_owned()
        }
    };
    let pods = brokers::ready_of(pods);
    let (mut serving, mut missing) = (0, Vec::new());
    let key = ctx.instance_admin(names);
    for pod in &pods {
        let Ok(admin) = brokers::connect(&key, pod).await else {
            missing.push(format!("{} unreachable", pod.name));
            continue;
        };
        let (Ok(have_topics), Ok(have_groups)) = (admin.topics().await, admin.groups().await)
        else {
            missing.push(format!("{} does not answer admin requests", pod.name));
            continue;
        };
        let have_topics: std::collections::HashSet<String> =
            have_topics.into_iter().map(|t| t.topic_name).collect();
        let have_groups: std::collections::HashSet<String> =
            have_groups.into_iter().map(|g| g.group_name).collect();
        // A globally ordered topic lives on one fixed broker only.
        let lacking_topics = topics
            .iter()
            .filter(|t| {
                pod.name == brokers::GLOBAL_ORDER_BROKER
                    || t.spec.order_type != OrderType::GlobalOrder
            })
            .filter(|t| !have_topics.contains(&canonical(&t.spec.topic)))
            .count();
        let lacking_groups = groups
            .iter()
            .filter(|g| !have_groups.contains(&canonical(&g.spec.group_id)))
            .count();
        if lacking_topics + lacking_groups == 0 {
            serving += 1;
        } else {
            missing.push(format!(
                "{} lacks {lacking_topics} topic(s) and {lacking_groups} group(s)",
                pod.name
            ));
        }
    }
    Ok((serving, missing))
}

/// The names of the instance's workloads: those of the id it holds (its ownership
/// record), even while the spec asks for another (refused as `NotSupported`); `None`
/// while it holds no id (not reconciled yet, or it lost the id to another instance).
pub fn names_in_effect(ctx: &Context, instance: &MQInstance) -> Option<Names> {
    ownership::held_by(&ctx.records, instance).map(|r| Names::for_id(r.instance_id))
}

/// Writes `Ready=False` with `reason` (phase Failed) for the current generation; the
/// instance's workloads are left as they are.
async fn refuse(
    ctx: &Context,
    instance: &MQInstance,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let generation = instance.metadata.generation;
    let mut status = instance.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.phase = Some(Phase::Failed);
    set_condition(
        &mut status.conditions,
        condition(READY, false, reason, message, generation),
    );
    status.conditions.retain(|c| c.type_ != conventions::PAUSED);
    write_status(ctx, instance, status).await
}

/// The topics and groups of `instance` (from the caches), as `MQTopic/<name>` and
/// `MQGroup/<name>`.
pub fn children_of(
    topics: &Store<MQTopic>,
    groups: &Store<MQGroup>,
    instance: &MQInstance,
) -> (Vec<String>, Vec<String>) {
    let (topics, groups) = (topics.state(), groups.state());
    crate::domain::claims::children_of(
        topics.iter().map(AsRef::as_ref),
        groups.iter().map(AsRef::as_ref),
        instance,
    )
}

/// Refuses (in status) while topics or groups remain, unless forced; then removes the
/// workloads of the id the instance holds, and the store claims unless `retainOnDelete`.
/// Only objects whose owner labels name this instance are deleted; an instance that holds
/// no id (it lost it to another) removes nothing.
async fn cleanup(instance: &MQInstance, ctx: &Context) -> Result<Action, Error> {
    let forced = instance
        .annotations()
        .get(FORCE_DELETE_ANNOTATION)
        .is_some_and(|v| v == "true");
    let (topics, groups) = children_of(&ctx.topics, &ctx.groups, instance);
    let empty = topics.is_empty() && groups.is_empty();
    if !forced && !empty {
        let list = [topics, groups].concat().join(", ");
        // The instance keeps serving; only its deletion waits.
        let mut status = instance.status.clone().unwrap_or_default();
        set_condition(
            &mut status.conditions,
            condition(
                READY,
                false,
                "InstanceNotEmpty",
                format!(
                    "delete its topics and groups first ({list}), or annotate the instance {FORCE_DELETE_ANNOTATION}=\"true\""
                ),
                instance.metadata.generation,
            ),
        );
        write_status(ctx, instance, status).await?;
        return Err(Error::NotEmpty(list));
    }
    let Some(record) = ownership::held_by(&ctx.records, instance) else {
        tracing::info!(instance = %instance.name_any(), "instance removed; it held no instance id, so nothing else is");
        return Ok(Action::await_change());
    };
    let names = Names::for_id(record.instance_id.clone());
    let platform = &ctx.settings.namespace;
    // The owner labels in the selector: objects of the id that name another owner stay.
    let selector = ListParams::default().labels(&format!(
        "{INSTANCE_ID_LABEL}={},{}={},{}={}",
        names.instance_id,
        workloads::OWNER_NAMESPACE_LABEL,
        instance.namespace().unwrap_or_default(),
        workloads::OWNER_NAME_LABEL,
        instance.name_any()
    ));
    let background = DeleteParams::background();
    Api::<StatefulSet>::namespaced(ctx.client.clone(), platform)
        .delete_collection(&background, &selector)
        .await?;
    for svc in workloads::services(instance, &names, &ctx.settings) {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), platform);
        delete_owned(&api, &svc.name_any(), instance).await?;
    }
    super::exposure::remove(ctx, instance, &names, 0).await?;
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), platform);
    delete_owned(&cms, &names.config(), instance).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), platform);
    delete_owned(&secrets, &names.acl(), instance).await?;
    delete_owned(&secrets, &names.admin(), instance).await?;
    delete_owned(&secrets, &names.console(), instance).await?;
    if let Some(resource) = &ctx.pdb {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), platform, resource);
        for name in [names.broker(), names.namesrv()] {
            delete_owned(&api, &name, instance).await?;
        }
    }
    if !instance.spec.brokers.storage.retain_on_delete {
        Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), platform)
            .delete_collection(&background, &selector)
            .await?;
    }
    ownership::release(ctx, &record).await?;
    tracing::info!(instance = %instance.name_any(), id = %names.instance_id, "instance removed");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{Expect, cache, instance};
    use super::*;
    use serde_json::json;

    #[test]
    fn small_storage_fails_ready_only_while_the_brokers_do_not_serve() {
        let find = |c: &[Condition], t: &str| c.iter().find(|c| c.type_ == t).cloned();
        let mut conditions = vec![condition(READY, true, "InstanceReady", String::new(), None)];
        let refusal = Some("storage size 1Gi is below the minimum of 2Gi".to_owned());
        // Serving (created before the check): Ready stays, the condition says what to grow.
        record_storage(&mut conditions, refusal.clone(), true, None);
        assert_eq!(find(&conditions, READY).unwrap().status, "True");
        let storage = find(&conditions, STORAGE_SUFFICIENT).unwrap();
        assert_eq!(
            (storage.status.as_str(), storage.reason.as_str()),
            ("False", "StorageTooSmall")
        );
        assert!(storage.message.contains("2Gi"));
        // Not serving: Ready is False with the same reason.
        record_storage(&mut conditions, refusal, false, None);
        let ready = find(&conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "StorageTooSmall")
        );
        // Grown: the condition goes.
        record_storage(&mut conditions, None, true, None);
        assert!(find(&conditions, STORAGE_SUFFICIENT).is_none());
    }

    #[tokio::test]
    async fn a_new_instance_named_like_an_older_one_gets_nothing_and_says_why() {
        let (ctx, server, mut caches) = Context::test();
        let first = instance("shop", "first", "FIRST", "2026-01-01T00:00:00Z");
        let mut second = instance("shop", "second", "SECOND", "2026-02-01T00:00:00Z");
        second.spec.instance_name = "first".into();
        cache(&mut caches.instances, first);
        cache(&mut caches.instances, second.clone());
        // No id record claimed, no workload applied: only the status and its Event.
        let served = server.run(vec![
            Expect::ok(
                "PATCH",
                "/apis/mqfleet.io/v1alpha1/namespaces/shop/mqinstances/second/status",
                serde_json::to_value(&second).unwrap(),
            )
            .with_body("InstanceNameTaken"),
            Expect::ok(
                "POST",
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                json!({}),
            )
            .with_body("MQInstance/first"),
        ]);
        let action = reconcile(Arc::new(second), ctx.clone())
            .await
            .expect("a broken limit is a status, not an error");
        assert_eq!(action, Action::requeue(super::super::limits::RECHECK));
        served.await.expect("the API server saw only the refusal");
    }
}

//! `MQEmpower`: a grant written into its instance's ACL Secret, which the brokers reload
//! (see [`super::acl`]). The grant is Ready once the Secret holds it; a grant for a topic
//! the instance lacks, or for a user no account has, says so and is retried.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::instance::names_in_effect;
use super::status::{set_ready, write_status};
use super::{Context, Error, acl, conventions, kit};
use crate::crd::{
    CommonStatus, ImmutableFields, MQEmpower, MQInstance, Phase, READY, condition, set_condition,
};

/// Finalizer of grants: the grant leaves the ACL before the resource goes.
pub const EMPOWER_FINALIZER: &str = "mqfleet.io/empower";
/// Retry period while the instance, topic or account is missing.
const RETRY: Duration = Duration::from_secs(10);

/// Reconciles one grant.
pub async fn reconcile(grant: Arc<MQEmpower>, ctx: Arc<Context>) -> Result<Action, Error> {
    let c = &ctx;
    kit::finalized(
        c,
        grant,
        EMPOWER_FINALIZER,
        |g| async move { apply(&g, c).await },
        // The caches still hold the grant, marked deleting, which the ACL skips.
        |g| async move {
            if let Some(instance) = instance_of(c, &g).await?
                && let Some(names) = names_in_effect(c, &instance)
            {
                acl::sync(c, &instance, &names).await?;
            }
            Ok(Action::await_change())
        },
    )
    .await
}

async fn instance_of(ctx: &Context, grant: &MQEmpower) -> Result<Option<MQInstance>, Error> {
    let api: Api<MQInstance> =
        Api::namespaced(ctx.client.clone(), &grant.namespace().unwrap_or_default());
    Ok(api.get_opt(&grant.spec.instance).await?)
}

async fn apply(grant: &MQEmpower, ctx: &Context) -> Result<Action, Error> {
    let generation = grant.metadata.generation;
    if let Some(action) = kit::pause_gate(ctx, grant).await? {
        return Ok(action);
    }
    let changes = conventions::changes(grant, grant.spec.immutable_fields());
    if let Some(action) = kit::immutable_gate(ctx, grant, &changes, Some(Phase::Failed)).await? {
        return Ok(action);
    }
    // Two grants to one user on one topic: the older one stands (webhook backstop).
    let grants = ctx.empowers.state();
    let claimants = grants.iter().map(AsRef::as_ref).filter(|g: &&MQEmpower| {
        g.namespace() == grant.namespace() && crate::domain::claims::same_grantee(g, grant)
    });
    if let Some(winner) = crate::domain::claims::winner(claimants)
        && winner.name_any() != grant.name_any()
    {
        let message = format!(
            "user {} already has a grant on topic {:?} (MQEmpower/{}, created earlier); change that grant's relation and delete this one",
            grant.spec.empower_user,
            grant.spec.topic,
            winner.name_any()
        );
        return refuse(ctx, grant, "ResourceConflict", message).await;
    }
    let Some(instance) = instance_of(ctx, grant).await? else {
        let message = format!(
            "MQInstance {:?} does not exist in this namespace; create it or fix spec.instance",
            grant.spec.instance
        );
        return refuse(ctx, grant, "InstanceNotReady", message).await;
    };
    if let Some((reason, message)) = invalid(ctx, grant).await? {
        return refuse(ctx, grant, reason, message).await;
    }
    let Some(names) = names_in_effect(ctx, &instance) else {
        let message = format!(
            "MQInstance {:?} holds no instance id yet (see its status); the grant applies once it does",
            grant.spec.instance
        );
        return refuse(ctx, grant, "InstanceNotReady", message).await;
    };
    acl::sync(ctx, &instance, &names).await?;
    conventions::mark_applied(ctx, grant, &grant.spec.immutable_fields()).await?;
    let mut status = grant.status.clone().unwrap_or_default();
    status.set_observed_generation(generation);
    status.set_phase(Phase::Running);
    let enforced = if instance.spec.acl_enabled {
        "the brokers enforce it (they reload the ACL within seconds)".to_owned()
    } else {
        format!(
            "in the ACL of instance {:?}; the brokers check it once the instance sets spec.aclEnabled",
            instance.name_any()
        )
    };
    set_condition(
        status.conditions_mut(),
        condition(READY, true, "Granted", enforced, generation),
    );
    status
        .conditions_mut()
        .retain(|c| c.type_ != conventions::PAUSED);
    if status.enforced_since.is_none() {
        status.enforced_since = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
    }
    write_status(ctx, grant, status).await?;
    Ok(Action::requeue(ctx.resync))
}

/// Why the grant cannot take effect: its topic or its user is unknown.
async fn invalid(
    ctx: &Context,
    grant: &MQEmpower,
) -> Result<Option<(&'static str, String)>, Error> {
    let ns = grant.namespace();
    let topic_known = ctx.topics.state().iter().any(|t| {
        t.namespace() == ns
            && t.spec.instance == grant.spec.instance
            && t.spec.topic == grant.spec.topic
            && t.metadata.deletion_timestamp.is_none()
    });
    if !topic_known {
        return Ok(Some((
            "TopicNotFound",
            format!(
                "instance {:?} has no MQTopic with topic {:?}; create the topic or fix spec.topic",
                grant.spec.instance, grant.spec.topic
            ),
        )));
    }
    let (accounts, _) = acl::read_accounts(&ctx.accounts.state());
    let user = grant.spec.empower_user.to_string();
    let known = accounts
        .iter()
        .any(|a| a.user_id == user && a.parent_user_id.is_some() == grant.spec.sub_account);
    if !known {
        let kind = if grant.spec.sub_account {
            "sub-account"
        } else {
            "tenant account"
        };
        return Ok(Some((
            "UnknownUser",
            format!(
                "no {kind} has user id {user}; fix spec.empowerUser (or spec.subAccount), or create the account first"
            ),
        )));
    }
    Ok(None)
}

async fn refuse(
    ctx: &Context,
    grant: &MQEmpower,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    set_ready(ctx, grant, Some(Phase::Failed), false, reason, message).await?;
    Ok(Action::requeue(RETRY))
}

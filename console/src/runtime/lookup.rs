//! The thin Kubernetes layer: an `MQInstance`'s name servers (its status endpoint, then its
//! Ready name-server pods) and its console key (Secret `<base>-console`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use mq_broker::client::Credentials;
use mq_broker::names::Namespace;
use mq_operator::controller::brokers::ready_name_servers;
use mq_operator::crd::{MQInstance, Phase};
use mq_operator::domain::names::Names;

use super::{Runtime, Target};
use crate::context::Console;
use crate::envelope::ApiError;

/// How long a target (name servers and key) is reused before it is looked up again.
const TARGET_TTL: Duration = Duration::from_secs(60);

impl Runtime {
    /// Where `instance`'s servers are, for the reads. `ONS_INVOKE_ERROR` when it is not
    /// running or has no name server.
    pub async fn target(&self, cx: &Console, instance: &MQInstance) -> Result<Target, ApiError> {
        let id = instance.effective_instance_id();
        let phase = instance.status.as_ref().and_then(|s| s.phase);
        if !matches!(phase, Some(Phase::Running | Phase::Degraded)) {
            return Err(ApiError::invoke(format!(
                "instance {id} is not running yet (phase {}): its brokers cannot be asked",
                phase.map_or("unknown".to_owned(), |p| format!("{p:?}"))
            )));
        }
        if let Some(t) = self.cached_target(&id, TARGET_TTL) {
            return Ok(t);
        }
        let platform = &cx.settings.platform;
        let names = Names::for_id(id.clone());
        // The Service endpoint first (stable, any name server behind it), then each Ready
        // name-server pod: the brokers try them in order until one answers.
        let mut name_servers: Vec<String> = instance
            .status
            .as_ref()
            .and_then(|s| s.endpoint.as_deref())
            .unwrap_or_default()
            .split(';')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let pods = match ready_name_servers(&cx.client, platform, &id).await {
            Ok(pods) => pods,
            // The endpoint alone will do.
            Err(e) if !name_servers.is_empty() => {
                tracing::warn!(instance = %id, error = %e, "cannot list the name-server pods");
                Vec::new()
            }
            Err(e) => {
                return Err(ApiError::invoke(format!(
                    "listing the name servers of {id}: {e}"
                )));
            }
        };
        for pod in pods {
            if !name_servers.contains(&pod) {
                name_servers.push(pod);
            }
        }
        if name_servers.is_empty() {
            return Err(ApiError::invoke(format!(
                "instance {id} has no ready name server yet"
            )));
        }
        let credentials = console_key(cx, platform, &names).await?;
        let t = Target {
            names: Namespace::new(instance.spec.independent_naming.then_some(id.as_str())),
            instance_id: id,
            name_servers,
            credentials,
        };
        self.remember_target(&t);
        Ok(t)
    }

    /// The brokers of `instance` (see [`Runtime::brokers`]); a failure forgets the cached
    /// target, so the next call looks the servers up again.
    pub async fn instance_brokers(
        &self,
        cx: &Console,
        instance: &MQInstance,
    ) -> Result<(Target, Vec<super::Broker>), ApiError> {
        let t = self.target(cx, instance).await?;
        match self.brokers(&t).await {
            Ok(b) => Ok((t, b)),
            Err(e) => {
                self.forget_target(&t.instance_id);
                Err(e)
            }
        }
    }
}

/// The instance's console key, `None` while the operator has not written it (calls then go
/// unsigned, which brokers accept only while the instance's ACL is off).
async fn console_key(
    cx: &Console,
    platform: &str,
    names: &Names,
) -> Result<Option<Credentials>, ApiError> {
    let name = names.console();
    let secret = Api::<Secret>::namespaced(cx.client.clone(), platform)
        .get_opt(&name)
        .await
        .map_err(|e| ApiError::invoke(format!("reading the console key {name}: {e}")))?;
    let Some(data) = secret.and_then(|s| s.data) else {
        return Ok(None);
    };
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    match (text("accessKey"), text("secretKey")) {
        (Some(ak), Some(sk)) => Ok(Some(Credentials::new(ak, sk))),
        _ => Err(ApiError::invoke(format!(
            "the console key {name} lacks accessKey or secretKey"
        ))),
    }
}

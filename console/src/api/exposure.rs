//! `/json/vpcTunnel/tunnelSwitch`: who can reach an instance (`spec.exposure`).
//!
//! `anyTunnel` exposes the instance outside the cluster with its cluster profile's
//! external exposure (`externalExposure`, `nodePort` unless the profile says
//! `loadBalancer`); `singleTunnel` keeps it inside (`exposure: cluster`). The switch
//! changes the `MQInstance` (the operator does the rest) and waits, bounded by
//! `--exposure-wait-ms`, until the operator reports the matching endpoint, which it
//! returns: the external `NAMESRV_ADDR`, or the in-cluster one. Refused: instances with
//! ACL off (`anyTunnel`; anyone who reaches a node could use them), and, unless
//! `force=true`, instances where any broker handles more than [`MAX_UNFORCED_TPS`]
//! send+receive TPS (clients are moving between addresses). Another tenant's instance
//! answers as missing; a read-only sub-account is refused.

use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use mq_operator::crd::{Exposure, MQInstance};
use mq_operator::domain::exposure::acl_refusal;
use mq_operator::domain::profiles::Known;
use serde_json::json;

use super::Scope;
use super::live::Live;
use super::scope::instance_id;
use crate::envelope::{ApiError, ApiResult, ErrorCode, Reply};
use crate::params::Params;

/// Above this many send+receive messages per second on any broker, a switch needs
/// `force=true` (spec: `tunnelSwitch`).
pub const MAX_UNFORCED_TPS: f64 = 10.0;
/// How often the cache is looked at while waiting for the endpoint.
const POLL: Duration = Duration::from_millis(100);

/// `vpcTunnel/tunnelSwitch`.
pub async fn tunnel_switch(s: &Scope<'_>, p: &Params) -> ApiResult {
    let tunnel = p.str("tunnelType")?;
    let external = match tunnel {
        "anyTunnel" => true,
        "singleTunnel" => false,
        other => {
            return Err(ApiError::field(
                "tunnelType",
                format!("{other:?} is not anyTunnel or singleTunnel"),
            ));
        }
    };
    let force = p.bool_or("force", false)?;
    let instance = super::instance::writable(s, p)?;
    let wanted = if external {
        external_exposure(s, &instance)
    } else {
        Exposure::Cluster
    };
    if let Some(refusal) = acl_refusal_for(&instance, wanted) {
        return Err(ApiError::new(ErrorCode::FieldCheckInvalid, refusal));
    }
    let current = if instance.spec.exposure == wanted {
        instance
    } else {
        if !force {
            busy_refusal(s, &instance).await?;
        }
        let what = format!("instance {}", instance_id(&instance));
        let patched = s
            .patch_spec(
                &s.cx.caches.instances,
                &instance,
                json!({"exposure": wanted.as_str()}),
                &what,
            )
            .await?;
        std::sync::Arc::new(patched)
    };
    let endpoint = wait_for_endpoint(s, &current, wanted).await?;
    Ok(Reply::data(json!(endpoint)))
}

/// The exposure `anyTunnel` asks for: the instance's profile's.
fn external_exposure(s: &Scope<'_>, instance: &MQInstance) -> Exposure {
    match s.cx.caches.profiles.known() {
        Known::Read(profiles, _) => profiles
            .get(&instance.spec.cluster)
            .map_or(Exposure::NodePort, |p| p.external_exposure()),
        _ => Exposure::NodePort,
    }
}

/// The ACL refusal of switching `instance` to `wanted`, worded for the console.
fn acl_refusal_for(instance: &MQInstance, wanted: Exposure) -> Option<String> {
    let mut spec = instance.spec.clone();
    spec.exposure = wanted;
    acl_refusal(&spec).map(|_| {
        format!(
            "instance {} has ACL off: exposing it outside the cluster (anyTunnel) requires ACL on, so that only signed clients get in; turn ACL on for it (spec.aclEnabled: true) first",
            instance_id(instance)
        )
    })
}

/// Refuses while any broker of `instance` handles more than [`MAX_UNFORCED_TPS`], or when
/// that cannot be told (brokers that served are not reachable now).
async fn busy_refusal(
    s: &Scope<'_>,
    instance: &std::sync::Arc<MQInstance>,
) -> Result<(), ApiError> {
    let id = instance_id(instance);
    let unknown = |why: String| {
        ApiError::invoke(format!(
            "cannot tell how busy instance {id} is ({why}); pass force=true to switch anyway"
        ))
    };
    let live = match Live::for_instance(s, instance.clone()).await {
        Ok(live) => live,
        // No broker has served yet: there is no traffic to disturb.
        Err(_)
            if instance
                .status
                .as_ref()
                .is_none_or(|st| st.ready_brokers == 0) =>
        {
            return Ok(());
        }
        Err(e) => return Err(unknown(e.to_string())),
    };
    for b in &live.brokers {
        let info = b
            .client
            .runtime_info()
            .await
            .map_err(|e| unknown(format!("broker {}: {e}", b.name)))?;
        let tps = broker_tps(&info);
        if tps > MAX_UNFORCED_TPS {
            return Err(ApiError::new(
                ErrorCode::FieldCheckInvalid,
                format!(
                    "broker {} of instance {id} handles {tps:.1} send+receive TPS (more than {MAX_UNFORCED_TPS}); its clients will have to move between addresses: pass force=true to switch anyway",
                    b.name
                ),
            ));
        }
    }
    Ok(())
}

/// Send+receive TPS of a broker from its runtime info (`putTps`, `getTransferedTps`:
/// each "now 1min 10min"; the first figure counts).
pub fn broker_tps(info: &std::collections::BTreeMap<String, String>) -> f64 {
    let first = |key: &str| {
        info.get(key)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    first("putTps") + first("getTransferedTps")
}

/// Waits (bounded) until this replica's cache shows the operator's answer to `wanted`:
/// the external endpoint, or (cluster) the in-cluster one.
async fn wait_for_endpoint(
    s: &Scope<'_>,
    written: &MQInstance,
    wanted: Exposure,
) -> Result<String, ApiError> {
    let key = ObjectRef::from_obj(written);
    let deadline = Instant::now() + s.cx.settings.exposure_wait;
    let mut last = None;
    loop {
        if let Some(i) = s.cx.caches.instances.get(&key) {
            if let Some(endpoint) = settled_endpoint(&i, written.metadata.generation, wanted) {
                return Ok(endpoint);
            }
            last = i.status.clone();
        }
        if Instant::now() >= deadline {
            let why = last
                .iter()
                .flat_map(|s| s.conditions.iter())
                .find(|c| c.type_ == "Ready")
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_else(|| "the operator has not reported yet".into());
            return Err(ApiError::invoke(format!(
                "instance {} was switched to {}, but its endpoint is not ready yet ({why}); ask again to get it",
                instance_id(written),
                wanted.as_str()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The endpoint `i` reports for `wanted`, once its status describes `generation`.
pub fn settled_endpoint(
    i: &MQInstance,
    generation: Option<i64>,
    wanted: Exposure,
) -> Option<String> {
    let status = i.status.as_ref()?;
    if status.observed_generation < generation || i.spec.exposure != wanted {
        return None;
    }
    if wanted.is_external() {
        status.external_endpoint.clone()
    } else {
        status
            .external_endpoint
            .is_none()
            .then(|| status.endpoint.clone())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(exposure: &str, observed: i64, external: Option<&str>) -> MQInstance {
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
            "metadata": {"name": "orders", "namespace": "shop", "generation": 2},
            "spec": {"instanceName": "orders", "aclEnabled": true, "exposure": exposure},
            "status": {"observedGeneration": observed, "endpoint": "10.0.0.1:9876",
                       "externalEndpoint": external},
        }))
        .unwrap()
    }

    #[test]
    fn the_endpoint_is_returned_only_once_the_operator_reported_the_switch() {
        let stale = instance("nodePort", 1, None);
        assert_eq!(settled_endpoint(&stale, Some(2), Exposure::NodePort), None);
        let exposed = instance("nodePort", 2, Some("127.0.0.1:30001"));
        assert_eq!(
            settled_endpoint(&exposed, Some(2), Exposure::NodePort).as_deref(),
            Some("127.0.0.1:30001")
        );
        assert_eq!(settled_endpoint(&exposed, Some(2), Exposure::Cluster), None);
        let back = instance("cluster", 2, None);
        assert_eq!(
            settled_endpoint(&back, Some(2), Exposure::Cluster).as_deref(),
            Some("10.0.0.1:9876")
        );
    }

    #[test]
    fn tps_is_send_plus_receive_now() {
        let info = [
            ("putTps".to_owned(), "7.50 1.00 0.10".to_owned()),
            ("getTransferedTps".to_owned(), "4.00 0.00 0.00".to_owned()),
        ]
        .into_iter()
        .collect();
        assert!((broker_tps(&info) - 11.5).abs() < 1e-9);
        assert_eq!(broker_tps(&Default::default()), 0.0);
    }

    #[test]
    fn acl_off_instances_are_refused_for_any_tunnel_only() {
        let mut i = instance("cluster", 2, None);
        i.spec.acl_enabled = false;
        let refusal = acl_refusal_for(&i, Exposure::NodePort).expect("refused");
        assert!(refusal.contains("ACL"), "{refusal}");
        assert_eq!(acl_refusal_for(&i, Exposure::Cluster), None);
    }
}

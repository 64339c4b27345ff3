//! `/json/region/list`, `/json/cluster/list` and `/json/vpcTunnel/tunnelSwitch`.

use serde_json::json;

use super::Scope;
use crate::envelope::{ApiError, ApiResult, ErrorCode, Reply};
use crate::params::Params;

/// The region this console serves (`--region`).
pub async fn regions(s: &Scope<'_>, _p: &Params) -> ApiResult {
    let region = &s.cx.settings.region;
    Ok(Reply::data(
        json!([{"id": 1, "regionId": region, "regionName": region}]),
    ))
}

/// The platform's cluster profiles of this region.
pub async fn clusters(s: &Scope<'_>, _p: &Params) -> ApiResult {
    use mq_operator::domain::profiles::Known;
    let region = &s.cx.settings.region;
    let profiles = match s.cx.caches.profiles.known() {
        Known::Read(profiles, _) => profiles,
        Known::Missing => return Ok(Reply::data(json!([]))),
        other => {
            return Err(ApiError::invoke(format!(
                "the platform's cluster profiles cannot be read: {other:?}"
            )));
        }
    };
    let list: Vec<_> = profiles
        .iter()
        .filter(|(_, p)| &p.region_id == region)
        .map(|(name, p)| {
            json!({"regionId": p.region_id, "cluster": name,
                   "createTime": p.create_time, "modifyTime": p.modify_time})
        })
        .collect();
    Ok(Reply::data(list))
}

/// Not supported until instances can be exposed outside the cluster (after the
/// parameters and the instance are checked, so a script learns of a typo first).
pub async fn tunnel_switch(s: &Scope<'_>, p: &Params) -> ApiResult {
    let tunnel = p.str("tunnelType")?;
    if !matches!(tunnel, "anyTunnel" | "singleTunnel") {
        return Err(ApiError::field(
            "tunnelType",
            format!("{tunnel:?} is not anyTunnel or singleTunnel"),
        ));
    }
    p.bool_or("force", false)?;
    s.instance_by_id(p.str("instanceId")?)?;
    Err(ApiError::new(
        ErrorCode::ServiceUnsupported,
        "exposing an instance outside the cluster is not available on this platform yet; clients inside the cluster use the instance's endpoint",
    ))
}

//! `/json/region/list`, `/json/cluster/list` and `/json/vpcTunnel/tunnelSwitch`.

use serde_json::json;

use super::Scope;
use crate::envelope::{ApiError, ApiResult, Reply};
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

/// `vpcTunnel/tunnelSwitch` (see [`super::exposure`]).
pub async fn tunnel_switch(s: &Scope<'_>, p: &Params) -> ApiResult {
    super::exposure::tunnel_switch(s, p).await
}

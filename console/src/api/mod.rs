//! The `/json/*` operations, one file per family (spec §6). Every handler is
//! `async fn(&Scope, &Params) -> ApiResult` over an authenticated caller and parsed
//! parameters; [`dispatch`] picks it by path.

pub mod consumer;
pub mod dlq;
pub mod empower;
pub mod exposure;
pub mod group;
pub mod instance;
pub mod live;
pub mod message;
pub mod region;
pub mod scope;
pub mod topic;
pub mod trend;
pub mod view;
pub mod writes;

use crate::envelope::{ApiError, ApiResult, ErrorCode};
use crate::params::Params;
pub use scope::Scope;

/// Every path the console serves (the metrics' endpoint label is one of these or `other`).
pub const PATHS: &[&str] = &[
    "/json/region/list",
    "/json/cluster/list",
    "/json/vpcTunnel/tunnelSwitch",
    "/json/instance/baseInfo",
    "/json/instance/create",
    "/json/instance/delete",
    "/json/instance/list",
    "/json/instance/update",
    "/json/topic/create",
    "/json/topic/delete",
    "/json/topic/get",
    "/json/topic/listInPage",
    "/json/topic/update",
    "/json/topic/listNames",
    "/json/topic/subDetail",
    "/json/group/create",
    "/json/group/delete",
    "/json/group/list",
    "/json/group/subDetail",
    "/json/group/consumerUpdate",
    "/json/consumer/accumulate",
    "/json/consumer/status",
    "/json/consumer/getConnection",
    "/json/consumer/timespan",
    "/json/consumer/resetoffset",
    "/json/message/trace",
    "/json/message/getById",
    "/json/message/getByKey",
    "/json/message/getByPagedTopic",
    "/json/trend/topicInputTps",
    "/json/trend/groupOutputTps",
    "/json/empower/create",
    "/json/empower/createBySub",
    "/json/empower/delete",
    "/json/empower/list",
    "/json/message/getByIdInDLQ",
    "/json/message/getByPagedDLQ",
    "/json/message/resendByIdInDLQ",
];

/// Whether `path` is a write (audited with an Event on the written object).
pub fn is_write(path: &str) -> bool {
    [
        "create",
        "delete",
        "update",
        "createBySub",
        "consumerUpdate",
        "resetoffset",
        "resendByIdInDLQ",
        "tunnelSwitch",
    ]
    .iter()
    .any(|w| path.ends_with(&format!("/{w}")))
}

/// Runs the operation of `path`.
pub async fn dispatch(path: &str, s: &Scope<'_>, p: &Params) -> ApiResult {
    match path {
        "/json/region/list" => region::regions(s, p).await,
        "/json/cluster/list" => region::clusters(s, p).await,
        "/json/vpcTunnel/tunnelSwitch" => region::tunnel_switch(s, p).await,
        "/json/instance/baseInfo" => instance::base_info(s, p).await,
        "/json/instance/create" => instance::create(s, p).await,
        "/json/instance/delete" => instance::delete(s, p).await,
        "/json/instance/list" => instance::list(s, p).await,
        "/json/instance/update" => instance::update(s, p).await,
        "/json/topic/create" => topic::create(s, p).await,
        "/json/topic/delete" => topic::delete(s, p).await,
        "/json/topic/get" => topic::get(s, p).await,
        "/json/topic/listInPage" => topic::list_in_page(s, p).await,
        "/json/topic/update" => topic::update(s, p).await,
        "/json/topic/listNames" => topic::list_names(s, p).await,
        "/json/group/create" => group::create(s, p).await,
        "/json/group/delete" => group::delete(s, p).await,
        "/json/group/list" => group::list(s, p).await,
        "/json/group/consumerUpdate" => group::consumer_update(s, p).await,
        "/json/empower/create" => empower::create(s, p).await,
        "/json/empower/createBySub" => empower::create_by_sub(s, p).await,
        "/json/empower/delete" => empower::delete(s, p).await,
        "/json/empower/list" => empower::list(s, p).await,
        "/json/consumer/accumulate" => consumer::accumulate(s, p).await,
        "/json/consumer/status" => consumer::status(s, p).await,
        "/json/consumer/getConnection" => consumer::get_connection(s, p).await,
        "/json/consumer/timespan" => consumer::timespan(s, p).await,
        "/json/consumer/resetoffset" => consumer::reset_offset(s, p).await,
        "/json/topic/subDetail" => consumer::topic_sub_detail(s, p).await,
        "/json/group/subDetail" => consumer::group_sub_detail(s, p).await,
        "/json/message/trace" => message::trace(s, p).await,
        "/json/message/getById" => message::get_by_id(s, p).await,
        "/json/message/getByKey" => message::get_by_key(s, p).await,
        "/json/message/getByPagedTopic" => message::get_by_paged_topic(s, p).await,
        "/json/trend/topicInputTps" => trend::topic_input_tps(s, p).await,
        "/json/trend/groupOutputTps" => trend::group_output_tps(s, p).await,
        "/json/message/getByIdInDLQ" => dlq::get_by_id(s, p).await,
        "/json/message/getByPagedDLQ" => dlq::get_by_paged(s, p).await,
        "/json/message/resendByIdInDLQ" => dlq::resend_by_id(s, p).await,
        _ => Err(ApiError::new(
            ErrorCode::ApiNotFound,
            format!("{path} is not an operation of this console"),
        )),
    }
}

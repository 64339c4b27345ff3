//! The response shape every `/json/*` answer has (spec §2) and the error codes (spec §3,
//! §7): one enum, each variant knowing its `dynamicCode` and HTTP status.

use serde::Serialize;
use serde_json::{Value, json};

/// A `dynamicCode` of spec §3/§7, with its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Internal failure.
    SystemError,
    /// Not supported in this deployment.
    ServiceUnsupported,
    /// A backend (broker, name server, API server) call failed or is not ready.
    InvokeError,
    /// The replay cache is full: try again shortly.
    Busy,
    /// A parameter failed validation.
    FieldCheckInvalid,
    /// No such path.
    ApiNotFound,
    /// Unknown or not-yours instance.
    InstanceNotFound,
    /// An instance of that name exists.
    InstanceExisted,
    /// The instance still has topics or groups.
    InstanceNotEmpty,
    /// The tenant holds the most instances it may.
    InstanceCapacityExceeded,
    /// Unknown or not-yours topic.
    TopicNotFound,
    /// The topic exists.
    TopicExisted,
    /// The instance holds `topicCapacity` topics.
    TopicCapacityExceeded,
    /// Unknown or not-yours consumer group.
    SubscriptionNotFound,
    /// The group id exists.
    SubscriptionExisted,
    /// The group id exists (as a producer group).
    PublisherExisted,
    /// The group has no online consumer.
    ConsumerNotOnline,
    /// No message with that id.
    NoMessage,
    /// Unknown `_regionId`.
    RegionNotFound,
    /// The group id belongs to another account.
    ConsumerIdBelongToOtherUser,
    /// The group id does not exist.
    PublishInfoNotFound,
    /// That grant exists.
    EmpowerExist,
    /// The caller does not own the topic it tries to grant.
    EmpowerOwnerCheck,
    /// No such grant.
    EmpowerNotFound,
    /// The account may not do this (e.g. a sub-account without write permission).
    PermissionDenied,
    /// Missing or wrong signature.
    SignatureInvalid,
    /// Unknown access key.
    AccessKeyNotFound,
    /// `__preventCache` outside the window.
    RequestExpired,
    /// Request seen before inside the window.
    Replayed,
}

impl ErrorCode {
    /// The `dynamicCode` string.
    pub fn dynamic_code(self) -> &'static str {
        use ErrorCode::*;
        match self {
            SystemError => "ONS_SYSTEM_ERROR",
            ServiceUnsupported => "ONS_SERVICE_UNSUPPORTED",
            InvokeError => "ONS_INVOKE_ERROR",
            Busy => "ONS_SYSTEM_BUSY",
            FieldCheckInvalid => "BIZ_FIELD_CHECK_INVALID",
            ApiNotFound => "API_NOT_FOUND",
            InstanceNotFound => "BIZ_INSTANCE_NOT_FOUND",
            InstanceExisted => "BIZ_INSTANCE_EXISTED",
            InstanceNotEmpty => "INSTANCE_NOT_EMPTY",
            InstanceCapacityExceeded => "INSTANCE_CAPACITY_EXCEEDED",
            TopicNotFound => "BIZ_TOPIC_NOT_FOUND",
            TopicExisted => "BIZ_TOPIC_EXISTED",
            TopicCapacityExceeded => "TOPIC_CAPACITY_EXCEEDED",
            SubscriptionNotFound => "BIZ_SUBSCRIPTION_NOT_FOUND",
            SubscriptionExisted => "BIZ_SUBSCRIPTION_EXISTED",
            PublisherExisted => "BIZ_PUBLISHER_EXISTED",
            ConsumerNotOnline => "BIZ_CONSUMER_NOT_ONLINE",
            NoMessage => "BIZ_NO_MESSAGE",
            RegionNotFound => "BIZ_REGION_NOT_FOUND",
            ConsumerIdBelongToOtherUser => "BIZ_CONSUMER_ID_BELONG_TO_OTHER_USER",
            PublishInfoNotFound => "BIZ_PUBLISH_INFO_NOT_FOUND",
            EmpowerExist => "EMPOWER_EXIST_ERROR",
            EmpowerOwnerCheck => "EMPOWER_OWNER_CHECK_ERROR",
            EmpowerNotFound => "EMPOWER_NOT_FOUND",
            PermissionDenied => "AUTH_PERMISSION_DENIED",
            SignatureInvalid => "AUTH_SIGNATURE_INVALID",
            AccessKeyNotFound => "AUTH_ACCESSKEY_NOT_FOUND",
            RequestExpired => "AUTH_REQUEST_EXPIRED",
            Replayed => "AUTH_REPLAYED",
        }
    }

    /// The HTTP-style status (`code` of the envelope).
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            SystemError => 500,
            ServiceUnsupported => 501,
            InvokeError | Busy => 503,
            FieldCheckInvalid => 400,
            ApiNotFound | InstanceNotFound | TopicNotFound | SubscriptionNotFound
            | ConsumerNotOnline | NoMessage | RegionNotFound | PublishInfoNotFound
            | EmpowerNotFound => 404,
            InstanceExisted
            | InstanceNotEmpty
            | InstanceCapacityExceeded
            | TopicExisted
            | TopicCapacityExceeded
            | SubscriptionExisted
            | PublisherExisted
            | EmpowerExist => 409,
            ConsumerIdBelongToOtherUser
            | EmpowerOwnerCheck
            | PermissionDenied
            | SignatureInvalid
            | AccessKeyNotFound
            | RequestExpired
            | Replayed => 403,
        }
    }
}

/// A refused or failed request: the code and what exactly is wrong (`dynamicMessage`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", code.dynamic_code())]
pub struct ApiError {
    /// Which error.
    pub code: ErrorCode,
    /// The detail: which field, which value, why; what is not ready.
    pub detail: String,
}

impl ApiError {
    /// An error with `code` and `detail`.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    /// `BIZ_FIELD_CHECK_INVALID` naming `field` and why.
    pub fn field(field: &str, why: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::FieldCheckInvalid, format!("{field}: {why}"))
    }

    /// `ONS_SYSTEM_ERROR` (the cause is logged, not shown in full to the caller).
    pub fn system(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::SystemError, detail)
    }

    /// `ONS_INVOKE_ERROR`: a backend failed or is not ready.
    pub fn invoke(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvokeError, detail)
    }
}

/// The paging fields of a paged answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// `currentPage`.
    pub current: i64,
    /// `pageSize`.
    pub size: i64,
    /// `total`: all matches.
    pub total: i64,
}

/// A successful answer: its `data` and, for paged queries, the paging fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// `data`.
    pub data: Value,
    /// Paging fields, when paged.
    pub page: Option<Page>,
}

impl Reply {
    /// `data` = `value`.
    pub fn data(value: impl Serialize) -> Self {
        Self {
            data: serde_json::to_value(value).unwrap_or(Value::Null),
            page: None,
        }
    }

    /// `data` = null.
    pub fn null() -> Self {
        Self {
            data: Value::Null,
            page: None,
        }
    }

    /// A paged answer.
    pub fn paged(value: impl Serialize, page: Page) -> Self {
        Self {
            page: Some(page),
            ..Self::data(value)
        }
    }
}

/// What a handler returns.
pub type ApiResult = Result<Reply, ApiError>;

/// The envelope of `result`, and its `code`.
pub fn envelope(result: &ApiResult, request_id: &str) -> (u16, Value) {
    match result {
        Ok(reply) => {
            let page = reply.page.unwrap_or_default();
            let body = json!({
                "code": 200, "success": true, "status": "SUCCESS",
                "message": "operation success", "data": reply.data,
                "dynamicCode": "", "dynamicMessage": "", "helpUrl": null,
                "requestId": request_id,
                "currentPage": page.current, "pageSize": page.size, "total": page.total,
            });
            (200, body)
        }
        Err(e) => {
            let status = e.code.status();
            let body = json!({
                "code": status, "success": false, "status": "FAILED",
                "message": e.to_string(), "data": null,
                "dynamicCode": e.code.dynamic_code(), "dynamicMessage": e.detail,
                "helpUrl": null, "requestId": request_id,
                "currentPage": 0, "pageSize": 0, "total": 0,
            });
            (status, body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_has_every_field_of_the_spec() {
        let (code, body) = envelope(&Ok(Reply::data(json!({"a": 1}))), "req-1");
        assert_eq!(code, 200);
        for field in [
            "code",
            "currentPage",
            "data",
            "dynamicCode",
            "dynamicMessage",
            "helpUrl",
            "message",
            "pageSize",
            "requestId",
            "status",
            "success",
            "total",
        ] {
            assert!(body.get(field).is_some(), "{field} missing in {body}");
        }
        assert_eq!(body["status"], "SUCCESS");
        assert_eq!(body["requestId"], "req-1");
        assert_eq!(body["message"], "operation success");
    }

    #[test]
    fn an_error_names_its_code_and_detail_and_keeps_http_status_equal() {
        let err = ApiError::field("topic", "must be 3 to 64 characters");
        let (code, body) = envelope(&Err(err), "r");
        assert_eq!(code, 400);
        assert_eq!(body["code"], 400);
        assert_eq!(body["success"], false);
        assert_eq!(body["status"], "FAILED");
        assert_eq!(body["dynamicCode"], "BIZ_FIELD_CHECK_INVALID");
        assert_eq!(body["dynamicMessage"], "topic: must be 3 to 64 characters");
        assert_eq!(ErrorCode::InstanceExisted.status(), 409);
        assert_eq!(ErrorCode::Replayed.dynamic_code(), "AUTH_REPLAYED");
    }
}

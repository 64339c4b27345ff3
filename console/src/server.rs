//! The HTTP server: `/json/*` (authenticate, dispatch, envelope, access log, metrics),
//! `/healthz` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::accounts::{self, Caller};
use crate::api::{self, Scope};
use crate::context::Console;
use crate::envelope::{ApiError, ApiResult, ErrorCode, envelope};
use crate::params::Params;

/// Largest request body (form parameters only; nothing large is ever posted).
pub const MAX_BODY: usize = 64 * 1024;
/// Bound on one request's whole handling.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The router of the console.
pub fn router(cx: Arc<Console>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/json/{*operation}", any(json))
        .with_state(cx)
}

async fn healthz(State(cx): State<Arc<Console>>) -> Response {
    if cx.caches.ready(Duration::from_millis(1)).await {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches loading").into_response()
    }
}

async fn metrics(State(cx): State<Arc<Console>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        cx.metrics.render(),
    )
        .into_response()
}

/// A request id unique across replicas: this process's start, and a counter.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id())
    });
    format!(
        "{:016x}-{:08x}",
        *start as u64,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

async fn json(
    State(cx): State<Arc<Console>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let request_id = request_id();
    let path = uri.path().to_owned();
    let mut user = String::new();
    // Read at most MAX_BODY: a larger body is refused with an envelope, not read on.
    let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::field(
            "body",
            format!("is larger than {MAX_BODY} bytes or could not be read"),
        )
    });
    let body = body.and_then(|b| {
        form_body(&headers, &b)?;
        Ok(b)
    });
    let result = match (method.clone(), body) {
        (Method::GET | Method::POST, Ok(body)) => {
            let query = uri.query().unwrap_or("").as_bytes();
            handle(&cx, &path, query, &body, &request_id, &mut user).await
        }
        (_, Err(e)) => Err(e),
        (m, _) => Err(ApiError::field("method", format!("{m} is not GET or POST"))),
    };
    let (code, body) = envelope(&result, &request_id);
    let endpoint = api::PATHS
        .iter()
        .find(|p| **p == path)
        .copied()
        .unwrap_or("other");
    cx.metrics.observe(endpoint, code, started.elapsed());
    log_access(
        &request_id,
        &user,
        &method,
        endpoint,
        code,
        &result,
        started,
    );
    let status = http_status(code, cx.settings.always_200);
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

/// The HTTP status of an answer with envelope `code`: the code itself, or 200 for
/// deployments whose scripts treat any other status as a transport failure.
fn http_status(code: u16, always_200: bool) -> StatusCode {
    let status = if always_200 { 200 } else { code };
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The form body of a POST, or nothing; another content type is refused.
fn form_body<'a>(headers: &HeaderMap, body: &'a Bytes) -> Result<&'a [u8], ApiError> {
    if body.is_empty() {
        return Ok(&[]);
    }
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if kind.is_empty() || kind.starts_with("application/x-www-form-urlencoded") {
        Ok(body)
    } else {
        Err(ApiError::field(
            "Content-Type",
            format!("{kind:?}: send parameters as application/x-www-form-urlencoded"),
        ))
    }
}

async fn handle(
    cx: &Console,
    path: &str,
    query: &[u8],
    body: &[u8],
    request_id: &str,
    user: &mut String,
) -> ApiResult {
    let params = Params::decode(&[query, body])?;
    let replay = &cx.replay;
    let account = accounts::authenticate(
        &cx.caches.accounts,
        &params,
        replay,
        cx.settings.window_ms,
        now_ms(),
    )?;
    user.clone_from(&account.user_id);
    let region = params.opt_str("_regionId").unwrap_or(&cx.settings.region);
    if region != cx.settings.region {
        return Err(ApiError::new(
            ErrorCode::RegionNotFound,
            format!(
                "region {region:?} is not served here (this console serves {:?})",
                cx.settings.region
            ),
        ));
    }
    let caller = Caller {
        account,
        request_id: request_id.to_owned(),
    };
    let scope = Scope::new(cx, &caller);
    match tokio::time::timeout(REQUEST_TIMEOUT, api::dispatch(path, &scope, &params)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::invoke(format!(
            "the operation took longer than {} s",
            REQUEST_TIMEOUT.as_secs()
        ))),
    }
}

/// One access-log line: who, what, the outcome; never a parameter value or key.
fn log_access(
    request_id: &str,
    user: &str,
    method: &Method,
    endpoint: &str,
    code: u16,
    result: &ApiResult,
    started: Instant,
) {
    let error = result.as_ref().err().map(|e| e.code.dynamic_code());
    tracing::info!(
        target: "mq_console::access",
        request_id,
        user_id = user,
        method = %method,
        endpoint,
        code,
        error,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_the_code_unless_always_200() {
        assert_eq!(http_status(403, false), StatusCode::FORBIDDEN);
        assert_eq!(http_status(403, true), StatusCode::OK);
        assert_eq!(http_status(200, false), StatusCode::OK);
    }

    #[test]
    fn only_form_bodies_are_read() {
        let mut headers = HeaderMap::new();
        let body = Bytes::from_static(b"a=1");
        assert_eq!(form_body(&headers, &body).unwrap(), b"a=1");
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let refused = form_body(&headers, &body).unwrap_err();
        assert!(refused.detail.starts_with("Content-Type"), "{refused}");
        assert!(form_body(&headers, &Bytes::new()).unwrap().is_empty());
    }
}

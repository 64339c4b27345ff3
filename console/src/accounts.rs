//! Who is calling: the account whose access key signed the request (accounts are the
//! Secrets labelled `mqfleet.io/account` that the operator reads too, served from a watch).

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::Store;
use mq_operator::domain::accounts::Account;

use crate::envelope::{ApiError, ErrorCode};
use crate::params::Params;
use crate::sign;

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Its account.
    pub account: Account,
    /// The request id (envelope `requestId`, access log, audit Events).
    pub request_id: String,
}

/// The account holding `access_key`. Secrets that cannot be read, and keys held by more
/// than one Secret, open nothing (the ACL treats them alike).
pub fn by_access_key(store: &Store<Secret>, access_key: &str) -> Option<Account> {
    let holders: Vec<Account> = store
        .state()
        .iter()
        .filter(|s| holds_key(s, access_key))
        .filter_map(|s| Account::from_secret(s).ok())
        .collect();
    match holders.as_slice() {
        [one] if one.credentials.access_key == access_key => Some(one.clone()),
        _ => None,
    }
}

/// Whether Secret `s` names `access_key` (cheap filter before parsing).
fn holds_key(s: &Secret, access_key: &str) -> bool {
    s.data
        .as_ref()
        .and_then(|d| d.get("accessKey"))
        .is_some_and(|v| v.0.trim_ascii() == access_key.as_bytes())
}

/// The account of user id `user_id`.
pub fn by_user_id(store: &Store<Secret>, user_id: &str) -> Option<Account> {
    store
        .state()
        .iter()
        .filter_map(|s| Account::from_secret(s).ok())
        .find(|a| a.user_id == user_id)
}

/// Checks a request's signature, clock and freshness against the account store; the
/// caller, or the `AUTH_*` refusal (nothing else has happened yet).
pub fn authenticate(
    store: &Store<Secret>,
    params: &Params,
    replay: &sign::ReplayCache,
    window_ms: i64,
    now_ms: i64,
) -> Result<Account, ApiError> {
    let signature = params
        .opt_str(sign::SIGNATURE)
        .ok_or_else(|| ApiError::new(ErrorCode::SignatureInvalid, "_signature is missing"))?;
    let access_key = params
        .opt_str(sign::ACCESS_KEY)
        .ok_or_else(|| ApiError::new(ErrorCode::AccessKeyNotFound, "_accesskey is missing"))?;
    let account = by_access_key(store, access_key).ok_or_else(|| {
        ApiError::new(
            ErrorCode::AccessKeyNotFound,
            format!("access key {access_key:?} is not known"),
        )
    })?;
    if !sign::verify(&account.credentials.secret_key, params, signature) {
        return Err(ApiError::new(
            ErrorCode::SignatureInvalid,
            "the signature does not match: sign the values of every parameter but _signature, sorted by name, with HMAC-SHA1 and base64",
        ));
    }
    let stamp = sign::check_fresh(params, now_ms, window_ms)?;
    if let Some(parent) = &account.parent_user_id {
        let parent_ns = by_user_id(store, parent).map(|p| p.namespace);
        if parent_ns.as_deref() != Some(account.namespace.as_str()) {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                "this sub-account's parent account is missing or works in another namespace; ask the platform admin to fix the account",
            ));
        }
    }
    replay.admit(access_key, stamp, signature, stamp + window_ms, now_ms)?;
    Ok(account)
}

/// The user id of the tenant (primary) account of namespace `ns`.
pub fn tenant_of(store: &Store<Secret>, ns: &str) -> Option<String> {
    store
        .state()
        .iter()
        .filter_map(|s| Account::from_secret(s).ok())
        .find(|a| a.namespace == ns && !a.is_sub())
        .map(|a| a.user_id)
}

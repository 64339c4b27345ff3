//! Request signatures (spec §1, §7): the string-to-sign, signing, constant-time
//! verification, the `__preventCache` window and the replay cache.
//!
//! The replay cache is per replica: the console Service uses client-IP session affinity so
//! a client's requests reach one replica. It keeps a SHA-256 of (access key,
//! `__preventCache`, signature) with its expiry, never a signature itself, and when full
//! it refuses (503) rather than evicting: evicting would let a captured request be
//! replayed.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::envelope::{ApiError, ErrorCode};
use crate::params::Params;

/// The signature parameter.
pub const SIGNATURE: &str = "_signature";
/// The access key parameter.
pub const ACCESS_KEY: &str = "_accesskey";
/// The caller's clock (ms), also the replay nonce.
pub const PREVENT_CACHE: &str = "__preventCache";

/// The string-to-sign: every parameter's value but `_signature`'s, ordered by name.
pub fn string_to_sign(params: &Params) -> String {
    params
        .iter()
        .filter(|(name, _)| *name != SIGNATURE)
        .map(|(_, value)| value)
        .collect()
}

/// `base64(HMAC-SHA1(secret, text))`.
pub fn sign(secret: &str, text: &str) -> String {
    STANDARD.encode(mac(secret, text).finalize().into_bytes())
}

fn mac(secret: &str, text: &str) -> Hmac<Sha1> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(text.as_bytes());
    mac
}

/// Whether `signature` is the signature of `params` with `secret`, compared in constant time.
pub fn verify(secret: &str, params: &Params, signature: &str) -> bool {
    let Ok(given) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    mac(secret, &string_to_sign(params))
        .verify_slice(&given)
        .is_ok()
}

/// Checks `__preventCache` against `now_ms`: within `window_ms` either way.
pub fn check_fresh(params: &Params, now_ms: i64, window_ms: i64) -> Result<i64, ApiError> {
    let stamp = params
        .raw(PREVENT_CACHE)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::RequestExpired,
                "__preventCache: required, the caller's clock in epoch milliseconds",
            )
        })?;
    if (now_ms - stamp).abs() > window_ms {
        return Err(ApiError::new(
            ErrorCode::RequestExpired,
            format!(
                "__preventCache {stamp} is more than {} s from the server's clock {now_ms}",
                window_ms / 1000
            ),
        ));
    }
    Ok(stamp)
}

/// Requests seen inside the window, as hashes with their expiry (ms).
pub struct ReplayCache {
    seen: Mutex<HashMap<[u8; 32], i64>>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache holding at most `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Records a request; refuses one seen before (`AUTH_REPLAYED`) and, when full of
    /// unexpired entries, any new one (`ONS_SYSTEM_BUSY`).
    pub fn admit(
        &self,
        access_key: &str,
        stamp: i64,
        signature: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let mut hasher = Sha256::new();
        for part in [access_key, &stamp.to_string(), signature.trim()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let key: [u8; 32] = hasher.finalize().into();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(&key).is_some_and(|&exp| exp > now_ms) {
            return Err(ApiError::new(
                ErrorCode::Replayed,
                "this request (access key, __preventCache, signature) was already received; sign each request with a fresh __preventCache",
            ));
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, exp| *exp > now_ms);
            if seen.len() >= self.capacity {
                return Err(ApiError::new(
                    ErrorCode::Busy,
                    "too many requests inside the replay window; try again shortly",
                ));
            }
        }
        seen.insert(key, expires_ms);
        Ok(())
    }

    /// Entries held (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example_of_the_spec() {
        let p = Params::from_pairs([
            ("__preventCache", "1498029701000"),
            ("_accesskey", "ACCESSKEY_XXX"),
            ("_platform", "onsConsole"),
            ("_regionId", "mq-private"),
            ("topic", "TOPIC_XXX"),
            ("_signature", "ignored"),
        ]);
        assert_eq!(
            string_to_sign(&p),
            "1498029701000ACCESSKEY_XXXonsConsolemq-privateTOPIC_XXX"
        );
        // echo -n "1498029701000ACCESSKEY_XXXonsConsolemq-privateTOPIC_XXX" |
        //   openssl dgst -hmac "SECRET" -sha1 -binary | base64
        let sig = sign("SECRET", &string_to_sign(&p));
        assert_eq!(sig, "1YA494TC0dd75X9zpAlEfeu1qww=");
        assert!(verify("SECRET", &p, &sig));
        assert!(!verify("OTHER", &p, &sig));
        assert!(!verify("SECRET", &p, "not base64!"));
    }

    #[test]
    fn capitalised_dlq_names_sort_before_the_common_ones() {
        let p = Params::from_pairs([("__preventCache", "1"), ("GroupId", "G"), ("MsgId", "M")]);
        assert_eq!(string_to_sign(&p), "GM1");
    }

    #[test]
    fn stale_clocks_are_refused_both_ways() {
        let p = Params::from_pairs([("__preventCache", "1000000")]);
        assert_eq!(check_fresh(&p, 1_000_500, 1000).unwrap(), 1_000_000);
        let late = check_fresh(&p, 1_002_000, 1000).unwrap_err();
        assert_eq!(late.code, ErrorCode::RequestExpired);
        assert!(check_fresh(&p, 998_000, 1000).is_err());
        assert!(check_fresh(&Params::default(), 0, 1000).is_err());
    }

    #[test]
    fn a_request_is_admitted_once_and_a_full_cache_refuses_instead_of_forgetting() {
        let cache = ReplayCache::new(2);
        cache.admit("ak", 1, "sig", 100, 0).unwrap();
        let again = cache.admit("ak", 1, "sig", 100, 50).unwrap_err();
        assert_eq!(again.code, ErrorCode::Replayed);
        cache.admit("ak", 2, "sig", 100, 50).unwrap();
        let full = cache.admit("ak", 3, "sig", 100, 60).unwrap_err();
        assert_eq!(full.code, ErrorCode::Busy);
        // Once the first entries expire they make room (and may be seen again: the
        // window refuses their stale clock before the cache is asked).
        cache.admit("ak", 3, "sig", 300, 150).unwrap();
        assert_eq!(cache.len(), 1);
    }
}

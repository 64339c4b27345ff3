//! Request signatures of RocketMQ's plain ACL, the one place both sides use: the verifier
//! (broker, name server) and the signers (the broker's registrations, the admin client).
//!
//! The client puts its `AccessKey` (and optional `SecurityToken`) into the ext fields,
//! then signs: the values of every ext field but `Signature`, in key order, then the body
//! bytes; the signature is base64(HmacSHA1(secretKey, content)) in ext field `Signature`
//! (Java's `AclClientRPCHook`/`AclUtils.calSignature`; `rocketmq-client-rust` does the same
//! with its default algorithm, HmacSHA1). Ext fields are a `BTreeMap`, so already in
//! key order.

use crate::remoting::RemotingCommand;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// Ext field naming the account.
pub const ACCESS_KEY: &str = "AccessKey";
/// Ext field carrying the signature.
pub const SIGNATURE: &str = "Signature";
/// Ext field of temporary credentials (signed like any other field; not checked).
pub const SECURITY_TOKEN: &str = "SecurityToken";
/// Ext field Java clients add to a query after signing (`MixAll.UNIQUE_MSG_QUERY_FLAG`),
/// so Java brokers leave it out of the content.
const UNIQUE_KEY_QUERY: &str = "_UNIQUE_KEY_QUERY";

type HmacSha1 = Hmac<Sha1>;

/// An account's keys, what a signer needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The account's name (`AccessKey`).
    pub access_key: String,
    /// The shared secret (never sent).
    pub secret_key: String,
}

impl Credentials {
    /// Credentials of `access_key` with `secret_key`.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// The HMAC over `req`'s content, leaving out the ext fields in `skip`; `None` only if
/// the HMAC refused the key (it takes keys of any length).
fn mac(req: &RemotingCommand, secret_key: &str, skip: &[&str]) -> Option<HmacSha1> {
    let mut mac = HmacSha1::new_from_slice(secret_key.as_bytes()).ok()?;
    for (key, value) in &req.ext_fields {
        if !skip.contains(&key.as_str()) {
            mac.update(value.as_bytes());
        }
    }
    if let Some(body) = &req.body {
        mac.update(body);
    }
    Some(mac)
}

/// The signature of `req` with `secret_key`: base64(HmacSHA1(secret, content)).
pub fn signature(req: &RemotingCommand, secret_key: &str) -> String {
    mac(req, secret_key, &[SIGNATURE])
        .map(|m| STANDARD.encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Signs `req` as `credentials`' account: sets `AccessKey`, then `Signature`. Call it
/// last, once every other ext field and the body are set.
pub fn sign(req: &mut RemotingCommand, credentials: &Credentials) {
    req.set_ext(ACCESS_KEY, credentials.access_key.as_str());
    let signature = signature(req, &credentials.secret_key);
    req.set_ext(SIGNATURE, signature);
}

/// Whether `req`'s `Signature` is right for `secret_key`, compared in constant time.
/// A `_UNIQUE_KEY_QUERY` field counts either way: Java clients leave it out of what they
/// sign, `rocketmq-client-rust` signs it.
pub fn verify(req: &RemotingCommand, secret_key: &str) -> bool {
    let Some(given) = req.ext(SIGNATURE).and_then(|s| STANDARD.decode(s).ok()) else {
        return false;
    };
    let matches =
        |skip: &[&str]| mac(req, secret_key, skip).is_some_and(|m| m.verify_slice(&given).is_ok());
    matches(&[SIGNATURE, UNIQUE_KEY_QUERY])
        || (req.ext_fields.contains_key(UNIQUE_KEY_QUERY) && matches(&[SIGNATURE]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::request_code;

    /// A SEND_MESSAGE_V2-like request: `AccessKey=AK1`, `a=GID_p`, `b=orders`, `e=-1`,
    /// body `hello`.
    fn request() -> RemotingCommand {
        RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
            .with_ext("b", "orders")
            .with_ext("a", "GID_p")
            .with_ext("e", "-1")
            .with_body(&b"hello"[..])
    }

    #[test]
    fn the_signature_matches_an_independent_computation() {
        // Computed apart from this code, content = values in key order + body:
        // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b"SK1",
        //   b"AK1GID_porders-1hello",hashlib.sha1).digest()).decode())'
        let mut req = request();
        sign(&mut req, &Credentials::new("AK1", "SK1"));
        assert_eq!(req.ext(SIGNATURE), Some("snBnt/dLWvq6RqXbQwiqltU/guE="));
        assert_eq!(req.ext(ACCESS_KEY), Some("AK1"));
        assert!(verify(&req, "SK1"));
    }

    #[test]
    fn the_third_party_clients_own_vector_verifies() {
        // rocketmq-client-rust's test of its AclClientRPCHook: ak/secret/token, fields
        // a=first, z=last, body "body" → wuJkFDNRMKY6aFXTDwT/vg0UC8M= (python3 agrees:
        // hmac.new(b"secret", b"aktokenfirstlastbody", hashlib.sha1)).
        let req = RemotingCommand::new_request(request_code::SEND_MESSAGE)
            .with_ext("z", "last")
            .with_ext("a", "first")
            .with_ext(ACCESS_KEY, "ak")
            .with_ext(SECURITY_TOKEN, "token")
            .with_ext(SIGNATURE, "wuJkFDNRMKY6aFXTDwT/vg0UC8M=")
            .with_body(&b"body"[..]);
        assert!(verify(&req, "secret"));
        assert!(!verify(&req, "other"));
    }

    #[test]
    fn tampering_or_a_wrong_key_fails() {
        let creds = Credentials::new("AK1", "SK1");
        let mut req = request();
        sign(&mut req, &creds);
        assert!(!verify(&req, "SK2"), "wrong secret");
        let mut changed = req.clone();
        changed.set_ext("b", "audit");
        assert!(!verify(&changed, "SK1"), "changed field");
        let mut changed = req.clone();
        changed.body = Some(bytes::Bytes::from_static(b"other"));
        assert!(!verify(&changed, "SK1"), "changed body");
        let mut changed = req.clone();
        changed.set_ext(SIGNATURE, "not base64!");
        assert!(!verify(&changed, "SK1"), "garbage signature");
        changed.ext_fields.remove(SIGNATURE);
        assert!(!verify(&changed, "SK1"), "no signature");
        // Re-signing replaces a stale signature instead of signing it.
        let mut resigned = req.clone();
        sign(&mut resigned, &creds);
        assert_eq!(resigned.ext(SIGNATURE), req.ext(SIGNATURE));
    }

    #[test]
    fn the_unique_key_query_flag_verifies_signed_or_not() {
        let creds = Credentials::new("AK1", "SK1");
        // Java: signed without the flag, which is added afterwards.
        let mut java = request();
        sign(&mut java, &creds);
        java.set_ext(UNIQUE_KEY_QUERY, "true");
        assert!(verify(&java, "SK1"));
        // rocketmq-client-rust: signed with it.
        let mut rust = request().with_ext(UNIQUE_KEY_QUERY, "true");
        sign(&mut rust, &creds);
        assert!(verify(&rust, "SK1"));
    }

    #[test]
    fn credentials_never_print_the_secret() {
        let shown = format!("{:?}", Credentials::new("AK1", "very-secret"));
        assert!(shown.contains("AK1") && !shown.contains("very-secret"));
    }
}

//! Plain ACL (RocketMQ 4.x `PlainAccessValidator`): signed requests, accounts and grants.
//!
//! When ACL is on, every request a server checks must carry the `AccessKey` of a known
//! account and a valid `Signature` ([`sign`]); then what the request does ([`Needs`], built
//! per request code by the broker and the name server) must be granted to the account
//! ([`table`]). A refusal is answered `SYSTEM_ERROR` with Java's remarks (`No acl config
//! for AK1`, `Check signature failed for accessKey=AK1`, ...), as a Java broker answers
//! its `AclException`; the connection stays open and nothing is done. When ACL is off,
//! `AccessKey` and `Signature` are ignored.
//!
//! [`Acl`] is the live state one server (or a standalone process's two) shares: the
//! on/off switch (`aclEnable`, re-read from the config file) and the accounts (the ACL
//! file, re-read by [`watch`]).

pub mod perm;
pub mod sign;
pub mod table;
pub mod watch;

pub use perm::{Needs, Perm};
pub use sign::Credentials;
pub use table::AclTable;

use crate::remoting::{RemotingCommand, response_code};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A request refused by the ACL, with the remark saying why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Denied {
    /// The response code of a refusal (Java answers an `AclException` so).
    pub const CODE: i32 = response_code::SYSTEM_ERROR;

    /// The response to `request` carrying this refusal.
    pub fn into_response(self, request: &RemotingCommand) -> RemotingCommand {
        RemotingCommand::response_to(request, Self::CODE, Some(&self.0))
    }
}

#[derive(Debug, Default)]
struct Shared {
    enabled: AtomicBool,
    table: RwLock<Arc<AclTable>>,
    refused: AtomicU64,
}

/// The live ACL of a server: on or off, and the accounts. Cheap to clone; clones share it.
/// The default is off with no accounts.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    inner: Arc<Shared>,
}

impl Acl {
    /// An ACL, on or off, with `table`'s accounts.
    pub fn new(enabled: bool, table: AclTable) -> Self {
        let acl = Self::default();
        acl.set_enabled(enabled);
        acl.replace(table);
        acl
    }

    /// Whether requests are checked.
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Acquire)
    }

    /// Switches checking on or off (`aclEnable` re-read).
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Release);
    }

    /// The accounts in force.
    pub fn table(&self) -> Arc<AclTable> {
        self.inner
            .table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts new accounts in force (the ACL file re-read).
    pub fn replace(&self, table: AclTable) {
        *self
            .inner
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
    }

    /// What this server signs its own requests with: the file's first admin account.
    /// Known whether or not checking is on, so a server signs before its peers turn on.
    pub fn signer(&self) -> Option<Credentials> {
        self.table().signer().cloned()
    }

    /// Requests refused since start.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Checks `req` when ACL is on: a known account, a valid signature, and the grants
    /// `needs` computes (called only when ACL is on; its error is the refusal's remark).
    pub fn authorize(
        &self,
        req: &RemotingCommand,
        needs: impl FnOnce() -> Result<Needs, String>,
    ) -> Result<(), Denied> {
        if !self.is_enabled() {
            return Ok(());
        }
        self.check(req, needs).map_err(|remark| {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(code = req.code, %remark, "request refused by the ACL");
            Denied(remark)
        })
    }

    fn check(
        &self,
        req: &RemotingCommand,
        needs: impl FnOnce() -> Result<Needs, String>,
    ) -> Result<(), String> {
        let Some(ak) = req.ext(sign::ACCESS_KEY).filter(|ak| !ak.is_empty()) else {
            return Err("No accessKey is configured".to_owned());
        };
        let table = self.table();
        let account = table
            .get(ak)
            .ok_or_else(|| format!("No acl config for {ak}"))?;
        if !sign::verify(req, account.secret_key()) {
            return Err(format!("Check signature failed for accessKey={ak}"));
        }
        account.check(req.code, &needs()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Namespace;
    use crate::remoting::request_code;

    fn acl(enabled: bool) -> Acl {
        let text = r#"{"accounts":[
            {"accessKey":"AK1","secretKey":"SK1","topicPerms":["orders=PUB"]},
            {"accessKey":"admin","secretKey":"SKA","admin":true}]}"#;
        Acl::new(
            enabled,
            AclTable::parse(text, &Namespace::default()).unwrap(),
        )
    }

    fn send(topic: &str) -> RemotingCommand {
        RemotingCommand::new_request(request_code::SEND_MESSAGE_V2).with_ext("b", topic)
    }

    fn pub_on(topic: &str) -> Result<Needs, String> {
        let mut n = Needs::default();
        n.topic(topic, Perm::PUB);
        Ok(n)
    }

    #[test]
    fn unsigned_unknown_or_badly_signed_requests_are_refused_when_on() {
        let acl = acl(true);
        let denied = |req: &RemotingCommand| acl.authorize(req, || pub_on("orders")).unwrap_err().0;
        assert_eq!(denied(&send("orders")), "No accessKey is configured");
        let mut req = send("orders");
        sign::sign(&mut req, &Credentials::new("AK9", "SK1"));
        assert_eq!(denied(&req), "No acl config for AK9");
        let mut req = send("orders");
        sign::sign(&mut req, &Credentials::new("AK1", "wrong"));
        assert_eq!(denied(&req), "Check signature failed for accessKey=AK1");
        let mut req = send("orders");
        sign::sign(&mut req, &Credentials::new("AK1", "SK1"));
        assert_eq!(acl.authorize(&req, || pub_on("orders")), Ok(()));
        assert!(acl.authorize(&req, || pub_on("audit")).is_err());
        assert_eq!(acl.refused(), 4);
    }

    #[test]
    fn off_means_nothing_is_checked_and_switching_is_live() {
        let acl = acl(false);
        let req = send("orders");
        assert_eq!(acl.authorize(&req, || Err("never asked".into())), Ok(()));
        acl.set_enabled(true);
        assert!(acl.authorize(&req, || pub_on("orders")).is_err());
        assert_eq!(acl.signer(), Some(Credentials::new("admin", "SKA")));
    }

    #[test]
    fn a_refusal_is_a_system_error_on_the_same_opaque() {
        let req = send("orders").with_opaque(9);
        let resp = Denied("No acl config for AK1".into()).into_response(&req);
        assert_eq!((resp.code, resp.opaque), (response_code::SYSTEM_ERROR, 9));
        assert_eq!(resp.remark.as_deref(), Some("No acl config for AK1"));
    }
}

//! Plain ACL (RocketMQ 4.x `PlainAccessValidator`): signed requests, accounts and grants,
//! and the instance's admin key.
//!
//! Two planes, checked differently:
//! - The *admin plane* — the broker's admin requests (`broker::admin::is_admin`: topic and
//!   group changes, configs, stats, connection lists) and every name-server request that
//!   is not an open route query (broker registration and unregistration, topic deletion,
//!   KV writes, ...). When the server has an *admin key* (`--admin-access-key`/
//!   `--admin-secret-key`, the instance's own key the operator delivers), these need a
//!   valid signature by that key or by an `admin: true` account of the ACL file in force,
//!   **whether or not `aclEnable` is on** ([`Acl::authorize_admin`]). Without an admin key
//!   they are checked only when ACL is on, as client requests are (local use stays open).
//! - The *client plane* — sends, pulls, heartbeats, offsets, locks, ... — is checked only
//!   when ACL is on (`aclEnable`, the tenant's switch): the request must carry the
//!   `AccessKey` of a known account (or of the admin key) and a valid `Signature`
//!   ([`sign`]); then what it does ([`Needs`], built per request code by the broker and
//!   the name server) must be granted to the account ([`table`]). When ACL is off,
//!   `AccessKey` and `Signature` of client requests are ignored.
//!
//! The admin key counts as an admin account that is always there: it works while the ACL
//! file is missing, unreadable or empty (accounts not yet delivered to the pod), and an
//! ACL-file account with the same access key never stands in for it (the key's own
//! secret is the only one accepted for that name). One instance's key opens only the
//! servers started with it. Signatures are compared in constant time.
//!
//! A refusal is answered `SYSTEM_ERROR` with Java's remarks (`No accessKey is configured`,
//! `No acl config for AK1`, `Check signature failed for accessKey=AK1`, `Need admin
//! permission ...`), as a Java broker answers its `AclException`; the connection stays
//! open, nothing is done, and the refusal is counted ([`Acl::refused`]).
//!
//! [`Acl`] is the live state one server (or a standalone process's two) shares: the
//! on/off switch (`aclEnable`, re-read from the config file), the accounts (the ACL
//! file, re-read by [`watch`]) and the admin key (fixed at start).

pub mod console;
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
    admin_key: Option<Credentials>,
    refused: AtomicU64,
}

/// The live ACL of a server: on or off, the accounts, and the admin key. Cheap to clone;
/// clones share it. The default is off with no accounts and no admin key.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    inner: Arc<Shared>,
}

impl Acl {
    /// An ACL, on or off, with `table`'s accounts and no admin key.
    pub fn new(enabled: bool, table: AclTable) -> Self {
        Self::with_admin_key(enabled, table, None)
    }

    /// An ACL, on or off, with `table`'s accounts and the instance's admin key (when
    /// `Some`, admin requests are checked whether or not ACL is on).
    pub fn with_admin_key(enabled: bool, table: AclTable, admin_key: Option<Credentials>) -> Self {
        Self {
            inner: Arc::new(Shared {
                enabled: AtomicBool::new(enabled),
                table: RwLock::new(Arc::new(table)),
                admin_key,
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// Whether client requests are checked (`aclEnable`).
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled.load(Ordering::Acquire)
    }

    /// Switches checking of client requests on or off (`aclEnable` re-read). Admin
    /// requests stay checked when there is an admin key.
    pub fn set_enabled(&self, enabled: bool) {
        self.inner.enabled.store(enabled, Ordering::Release);
    }

    /// Whether the server has an admin key (admin requests are then always checked).
    pub fn has_admin_key(&self) -> bool {
        self.inner.admin_key.is_some()
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

    /// What this server signs its own requests with (a broker's registrations): the admin
    /// key when there is one, else the ACL file's first admin account. Known whether or
    /// not checking is on, so a server signs before its peers turn on.
    pub fn signer(&self) -> Option<Credentials> {
        self.inner
            .admin_key
            .clone()
            .or_else(|| self.table().signer().cloned())
    }

    /// Requests refused since start.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Checks a client-plane request when ACL is on: a known account (or the admin key),
    /// a valid signature, and the grants `needs` computes (called only when checked; its
    /// error is the refusal's remark). When ACL is off, everything passes.
    pub fn authorize(
        &self,
        req: &RemotingCommand,
        needs: impl FnOnce() -> Result<Needs, String>,
    ) -> Result<(), Denied> {
        if !self.is_enabled() {
            return Ok(());
        }
        self.check(req, needs)
            .map_err(|remark| self.refuse(req, remark))
    }

    /// Checks an admin-plane request (a broker's admin request, a name server's
    /// registration or write): with an admin key always, signed by that key or by an
    /// admin account of the ACL file; without one only when ACL is on, like
    /// [`authorize`](Self::authorize) with [`Needs::admin`].
    pub fn authorize_admin(&self, req: &RemotingCommand) -> Result<(), Denied> {
        if !self.has_admin_key() && !self.is_enabled() {
            return Ok(());
        }
        self.check(req, || Ok(Needs::admin()))
            .map_err(|remark| self.refuse(req, remark))
    }

    fn refuse(&self, req: &RemotingCommand, remark: String) -> Denied {
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(code = req.code, %remark, "request refused by the ACL");
        Denied(remark)
    }

    fn check(
        &self,
        req: &RemotingCommand,
        needs: impl FnOnce() -> Result<Needs, String>,
    ) -> Result<(), String> {
        let Some(ak) = req.ext(sign::ACCESS_KEY).filter(|ak| !ak.is_empty()) else {
            return Err("No accessKey is configured".to_owned());
        };
        // The admin key may do everything; its name is never looked up in the file.
        if let Some(admin) = &self.inner.admin_key
            && admin.access_key == ak
        {
            return if sign::verify(req, &admin.secret_key) {
                Ok(())
            } else {
                Err(format!("Check signature failed for accessKey={ak}"))
            };
        }
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
    fn a_console_key_works_with_acl_off_and_stays_in_its_codes() {
        let text = r#"{"accounts":[{"accessKey":"console","secretKey":"SKC","console":true}]}"#;
        let table = AclTable::parse(text, &Namespace::default()).unwrap();
        let admin_key = Credentials::new("mq-admin", "instance-1");
        let console = Credentials::new("console", "SKC");
        for enabled in [false, true] {
            let acl = Acl::with_admin_key(enabled, table.clone(), Some(admin_key.clone()));
            let signed = |code: i32, key: &Credentials| {
                let mut req = RemotingCommand::new_request(code).with_ext("topic", "orders");
                sign::sign(&mut req, key);
                req
            };
            let stats = signed(request_code::GET_CONSUME_STATS, &console);
            assert_eq!(acl.authorize_admin(&stats), Ok(()), "ACL on: {enabled}");
            let create = signed(request_code::UPDATE_AND_CREATE_TOPIC, &console);
            assert!(acl.authorize_admin(&create).is_err(), "ACL on: {enabled}");
            let forged = signed(
                request_code::GET_CONSUME_STATS,
                &Credentials::new("console", "x"),
            );
            assert!(acl.authorize_admin(&forged).is_err(), "ACL on: {enabled}");
        }
        // With ACL on, client-plane codes outside the role are refused too.
        let acl = Acl::with_admin_key(true, table, Some(admin_key));
        let mut send = send("orders");
        sign::sign(&mut send, &console);
        assert!(acl.authorize(&send, || pub_on("orders")).is_err());
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

    /// The instance's admin key in the decision tests.
    fn instance_key() -> Credentials {
        Credentials::new("mq-admin", "instance-1-secret")
    }

    fn with_key(enabled: bool, key: Option<Credentials>, table: &str) -> Acl {
        Acl::with_admin_key(
            enabled,
            AclTable::parse(table, &Namespace::default()).unwrap(),
            key,
        )
    }

    const ACCOUNTS: &str = r#"{"accounts":[
        {"accessKey":"AK1","secretKey":"SK1","topicPerms":["orders=PUB"]},
        {"accessKey":"admin","secretKey":"SKA","admin":true}]}"#;

    fn create_topic() -> RemotingCommand {
        RemotingCommand::new_request(request_code::UPDATE_AND_CREATE_TOPIC)
            .with_ext("topic", "orders")
    }

    fn signed(mut req: RemotingCommand, by: Option<Credentials>) -> RemotingCommand {
        if let Some(credentials) = by {
            sign::sign(&mut req, &credentials);
        }
        req
    }

    #[test]
    fn admin_requests_need_the_admin_key_or_an_admin_account_whatever_acl_says() {
        let other_instance = Credentials::new("mq-admin", "instance-2-secret");
        let other_name = Credentials::new("mq-admin-2", "instance-2-secret");
        let signers: [(&str, Option<Credentials>); 6] = [
            ("unsigned", None),
            ("the admin key", Some(instance_key())),
            ("another instance's key", Some(other_instance)),
            ("another instance's key name", Some(other_name)),
            ("a non-admin account", Some(Credentials::new("AK1", "SK1"))),
            ("an admin account", Some(Credentials::new("admin", "SKA"))),
        ];
        for key in [None, Some(instance_key())] {
            for enabled in [false, true] {
                let acl = with_key(enabled, key.clone(), ACCOUNTS);
                for (who, by) in &signers {
                    let req = signed(create_topic(), by.clone());
                    let outcome = acl.authorize_admin(&req);
                    let expected = match (*who, key.is_some(), enabled) {
                        // Without a key and with ACL off, the admin plane is open.
                        (_, false, false) => Ok(()),
                        ("an admin account", _, _) => Ok(()),
                        ("the admin key", true, _) => Ok(()),
                        ("unsigned", _, _) => Err("No accessKey is configured".to_owned()),
                        ("a non-admin account", _, _) => Err(
                            "Need admin permission for request code=17, but accessKey=AK1 is not"
                                .to_owned(),
                        ),
                        ("the admin key" | "another instance's key", false, true) => {
                            Err("No acl config for mq-admin".to_owned())
                        }
                        ("another instance's key", true, _) => {
                            Err("Check signature failed for accessKey=mq-admin".to_owned())
                        }
                        ("another instance's key name", _, _) => {
                            Err("No acl config for mq-admin-2".to_owned())
                        }
                        other => unreachable!("{other:?}"),
                    };
                    assert_eq!(
                        outcome.map_err(|d| d.0),
                        expected,
                        "{who}, admin key {}, aclEnable={enabled}",
                        key.is_some()
                    );
                }
            }
        }
    }

    #[test]
    fn client_requests_are_checked_only_when_acl_is_on_and_the_admin_key_passes_them() {
        for key in [None, Some(instance_key())] {
            let off = with_key(false, key.clone(), ACCOUNTS);
            assert_eq!(off.authorize(&send("audit"), || pub_on("audit")), Ok(()));
            let on = with_key(true, key.clone(), ACCOUNTS);
            let denied = |req: &RemotingCommand| on.authorize(req, || pub_on("audit")).is_err();
            assert!(denied(&send("audit")), "unsigned");
            assert!(
                denied(&signed(send("audit"), Some(Credentials::new("AK1", "SK1")))),
                "not granted"
            );
            let by_key = signed(send("audit"), Some(instance_key()));
            assert_eq!(denied(&by_key), key.is_none(), "the admin key may do all");
        }
    }

    #[test]
    fn the_admin_key_works_before_any_account_is_delivered() {
        // ACL on and the ACL file missing (an empty table) or holding no accounts.
        for table in [
            AclTable::default(),
            AclTable::parse(r#"{"accounts":[]}"#, &Namespace::default()).unwrap(),
        ] {
            let acl = Acl::with_admin_key(true, table, Some(instance_key()));
            let req = signed(create_topic(), Some(instance_key()));
            assert_eq!(acl.authorize_admin(&req), Ok(()));
            assert_eq!(
                acl.authorize(&signed(send("orders"), Some(instance_key())), || pub_on(
                    "orders"
                )),
                Ok(())
            );
            assert!(acl.authorize_admin(&create_topic()).is_err());
            assert!(acl.authorize(&send("orders"), || pub_on("orders")).is_err());
            assert_eq!(
                acl.signer(),
                Some(instance_key()),
                "registrations are signed"
            );
            assert_eq!(acl.refused(), 2);
        }
    }

    #[test]
    fn a_file_account_named_like_the_admin_key_does_not_stand_in_for_it() {
        let table = r#"{"accounts":[{"accessKey":"mq-admin","secretKey":"tenant","admin":true}]}"#;
        let acl = with_key(false, Some(instance_key()), table);
        let forged = signed(create_topic(), Some(Credentials::new("mq-admin", "tenant")));
        assert_eq!(
            acl.authorize_admin(&forged).map_err(|d| d.0),
            Err("Check signature failed for accessKey=mq-admin".to_owned())
        );
        // The key signs, not the file's first admin.
        assert_eq!(acl.signer(), Some(instance_key()));
        assert_eq!(
            with_key(false, None, table).signer(),
            Some(Credentials::new("mq-admin", "tenant"))
        );
    }

    #[test]
    fn a_refusal_is_a_system_error_on_the_same_opaque() {
        let req = send("orders").with_opaque(9);
        let resp = Denied("No acl config for AK1".into()).into_response(&req);
        assert_eq!((resp.code, resp.opaque), (response_code::SYSTEM_ERROR, 9));
        assert_eq!(resp.remark.as_deref(), Some("No acl config for AK1"));
    }
}

//! What the name server asks of the ACL: route and cluster queries stay open (clients
//! look routes up before they know which broker to sign for, and many send them
//! unsigned); every other request — broker registration and unregistration, topic
//! deletion, KV and permission changes — is admin-plane: it needs a valid signature of
//! the instance's admin key or of an admin account of the ACL file, so no pod can pose
//! as a broker or delete a route.
//!
//! With an admin key (`--admin-access-key`/`--admin-secret-key`) that holds whether or
//! not ACL (`aclEnable`) is on, and the key works while the ACL file is missing or empty.
//! Without one, admin-plane requests are checked only when ACL is on (local use stays
//! open). See [`crate::acl`].

use crate::remoting::request_code::*;

/// Requests anyone may make, signed or not.
const OPEN: [i32; 10] = [
    GET_ROUTEINFO_BY_TOPIC,
    GET_BROKER_CLUSTER_INFO,
    GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
    GET_KV_CONFIG,
    GET_KVLIST_BY_NAMESPACE,
    GET_TOPICS_BY_CLUSTER,
    GET_SYSTEM_TOPIC_LIST_FROM_NS,
    GET_UNIT_TOPIC_LIST,
    GET_HAS_UNIT_SUB_TOPIC_LIST,
    GET_HAS_UNIT_SUB_UNUNIT_TOPIC_LIST,
];

/// Whether request `code` is open to anyone; every other code is admin-plane
/// ([`crate::acl::Acl::authorize_admin`]).
pub fn is_open(code: i32) -> bool {
    OPEN.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Acl, AclTable, Credentials, sign};
    use crate::names::Namespace;
    use crate::remoting::RemotingCommand;

    const WRITES: [i32; 8] = [
        REGISTER_BROKER,
        UNREGISTER_BROKER,
        DELETE_TOPIC_IN_NAMESRV,
        PUT_KV_CONFIG,
        DELETE_KV_CONFIG,
        WIPE_WRITE_PERM_OF_BROKER,
        UPDATE_NAMESRV_CONFIG,
        9999,
    ];

    #[test]
    fn queries_are_open_and_writes_are_admin_plane() {
        assert!(is_open(GET_ROUTEINFO_BY_TOPIC));
        assert!(is_open(GET_BROKER_CLUSTER_INFO));
        for code in WRITES {
            assert!(!is_open(code), "code {code}");
        }
    }

    #[test]
    fn with_an_admin_key_writes_need_its_signature_whatever_acl_says() {
        let key = Credentials::new("mq-admin", "instance-1");
        let table =
            r#"{"accounts":[{"accessKey":"AK1","secretKey":"SK1","defaultTopicPerm":"PUB"}]}"#;
        let table = AclTable::parse(table, &Namespace::default()).unwrap();
        for enabled in [false, true] {
            let acl = Acl::with_admin_key(enabled, table.clone(), Some(key.clone()));
            for code in WRITES {
                let unsigned = RemotingCommand::new_request(code).with_ext("brokerName", "b");
                assert!(acl.authorize_admin(&unsigned).is_err(), "code {code}");
                for wrong in [
                    Credentials::new("mq-admin", "instance-2"),
                    Credentials::new("AK1", "SK1"),
                ] {
                    let mut req = unsigned.clone();
                    sign::sign(&mut req, &wrong);
                    assert!(acl.authorize_admin(&req).is_err(), "code {code}, {wrong:?}");
                }
                let mut req = unsigned.clone();
                sign::sign(&mut req, &key);
                assert_eq!(acl.authorize_admin(&req), Ok(()), "code {code}");
            }
        }
        // Without a key and with ACL off, the name server stays open.
        let open = Acl::new(false, table);
        let unsigned = RemotingCommand::new_request(REGISTER_BROKER);
        assert_eq!(open.authorize_admin(&unsigned), Ok(()));
    }
}

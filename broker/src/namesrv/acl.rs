//! What the name server asks of the ACL: route and cluster queries stay open (clients
//! look routes up before they know which broker to sign for, and many send them
//! unsigned); every other request — broker registration, unregistration, topic deletion,
//! KV and permission changes — needs a valid signature of an admin account, so no pod
//! can pose as a broker or delete a route.

use crate::acl::Needs;
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

/// What request `code` needs: `None` when it is open to anyone.
pub fn needs(code: i32) -> Option<Needs> {
    (!OPEN.contains(&code)).then(Needs::admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_open_and_writes_need_an_admin() {
        assert_eq!(needs(GET_ROUTEINFO_BY_TOPIC), None);
        assert_eq!(needs(GET_BROKER_CLUSTER_INFO), None);
        for code in [
            REGISTER_BROKER,
            UNREGISTER_BROKER,
            DELETE_TOPIC_IN_NAMESRV,
            PUT_KV_CONFIG,
            DELETE_KV_CONFIG,
            WIPE_WRITE_PERM_OF_BROKER,
            UPDATE_NAMESRV_CONFIG,
            9999,
        ] {
            assert_eq!(needs(code), Some(Needs::admin()), "code {code}");
        }
    }
}

//! Request and response headers of the name server's requests.

use crate::command_header;

command_header! {
    /// REGISTER_BROKER (103) request header (`RegisterBrokerRequestHeader`).
    pub struct RegisterBrokerRequestHeader {
        /// Broker name (the broker group).
        broker_name: String = "brokerName";
        /// `ip:port` clients connect to.
        broker_addr: String = "brokerAddr";
        /// Cluster name.
        cluster_name: String = "clusterName";
        /// HA address (unused).
        ha_server_addr: Option<String> = "haServerAddr";
        /// 0 for a master.
        broker_id: i64 = "brokerId";
        /// Whether the body is deflate-compressed (late 4.x); we accept only plain JSON.
        compressed: Option<bool> = "compressed";
        /// CRC32 of the body (late 4.x).
        body_crc32: Option<i32> = "bodyCrc32";
        /// mqfleet's: `host:port` clients outside the cluster reach the broker on
        /// (see the module docs of [`crate::namesrv`]).
        external_broker_addr: Option<String> = "externalBrokerAddr";
    }
}

command_header! {
    /// REGISTER_BROKER response header (`RegisterBrokerResponseHeader`).
    pub struct RegisterBrokerResponseHeader {
        /// HA address of the master.
        ha_server_addr: Option<String> = "haServerAddr";
        /// Address of the master of the broker's group.
        master_addr: Option<String> = "masterAddr";
    }
}

command_header! {
    /// UNREGISTER_BROKER (104) request header.
    pub struct UnregisterBrokerRequestHeader {
        /// Broker name.
        broker_name: String = "brokerName";
        /// Broker address.
        broker_addr: String = "brokerAddr";
        /// Cluster name.
        cluster_name: String = "clusterName";
        /// Broker id.
        broker_id: i64 = "brokerId";
    }
}

command_header! {
    /// GET_ROUTEINFO_BY_TOPIC (105) request header.
    pub struct GetRouteInfoRequestHeader {
        /// Topic.
        topic: String = "topic";
        /// ≥ 4.9.4 clients ask for standard JSON (we always write it).
        accept_standard_json_only: Option<bool> = "acceptStandardJsonOnly";
    }
}

command_header! {
    /// Requests naming one topic (DELETE_TOPIC_IN_NAMESRV 216, GET_TOPICS_BY_CLUSTER …).
    pub struct TopicRequestHeader {
        /// Topic.
        topic: String = "topic";
    }
}

//! The name server: where brokers register their topics and clients find routes.
//!
//! Brokers register with every name server periodically (REGISTER_BROKER carries the
//! broker's whole topic table, which replaces what the name server knew of that broker);
//! a broker that stops registering, or whose connection closes, leaves the routes.
//!
//! Clients outside the cluster: a broker may send its external address in an extra
//! REGISTER_BROKER header field, `externalBrokerAddr` (mqfleet's; stock name servers
//! ignore unknown header fields, and the standard ones are those of Apache RocketMQ's
//! `remoting/.../protocol/header/namesrv/RegisterBrokerRequestHeader.java`: brokerName,
//! brokerAddr, clusterName, haServerAddr, brokerId, compressed, bodyCrc32). A name server
//! started with a second, external port ([`ExternalView`]) answers route and cluster
//! queries there with the brokers' external addresses (leaving out brokers without one),
//! and on its normal port with the pod addresses, so in-cluster clients, the operator and
//! the console keep pod addresses. The external port answers the open queries only
//! (routes, cluster info, topic lists, KV reads); registrations and other admin requests
//! are refused there. The VIP channel (broker port − 2) is not part of the external
//! addresses: clients outside turn `vipChannelEnabled` off.

pub mod acl;
mod headers;
mod processor;
mod routes;

pub use headers::*;
pub use processor::{ExternalView, NameServer};
pub use routes::{Registration, RouteTable, View};

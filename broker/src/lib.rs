//! mq-broker: a RocketMQ-compatible name server and broker.
//!
//! Built bottom up (DESIGN.md, "Broker"): [`remoting`] is the wire protocol; the
//! store, the name server, the broker and the admin client come next. The crate is
//! what the workspace's dependency direction (`console → operator → broker`) is built
//! around.

pub mod acl;
pub mod broker;
pub mod client;
pub mod conf;
pub mod fuzz;
pub mod names;
pub mod namesrv;
pub mod net;
pub mod ops;
pub mod remoting;
pub mod store;

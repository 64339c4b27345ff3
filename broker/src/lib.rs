//! mq-broker: a RocketMQ-compatible name server and broker.
//!
//! The remoting protocol, the store, the name server, the broker and the admin
//! client arrive with issue 3; this crate is the placeholder the workspace's
//! dependency direction (`console → operator → broker`) is built around.

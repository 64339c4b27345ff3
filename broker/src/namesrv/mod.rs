//! The name server: where brokers register their topics and clients find routes.
//!
//! Brokers register with every name server periodically (REGISTER_BROKER carries the
//! broker's whole topic table, which replaces what the name server knew of that broker);
//! a broker that stops registering, or whose connection closes, leaves the routes.

pub mod acl;
mod headers;
mod processor;
mod routes;

pub use headers::*;
pub use processor::NameServer;
pub use routes::{Registration, RouteTable};

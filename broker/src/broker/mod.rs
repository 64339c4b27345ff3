//! The broker: request processors over the store, plus the state they share (topics,
//! groups, offsets, clients, queue locks).
//!
//! Processors are split by concern: [`send`](self) (send, batch), `pull` (long polling,
//! tag filtering, bare-name rewriting), `consumer` (heartbeat, offsets, locks), `retry`
//! (send-back, DLQ), `schedule` (delay levels), `timer`
//! (arbitrary-time scheduled messages, kept in `timer_store`), `register` (name servers), `admin`
//! (topics, groups, stats, connection lists, runtime info; rates in `activity`), `acl`
//! (what each request needs of the ACL), `limits` (instance TPS limits).

mod acl;
pub mod activity;
pub mod admin;
mod arrivals;
mod bucket;
pub mod clients;
pub mod config;
mod consumer;
mod core;
pub mod gate;
pub mod groups;
mod lifecycle;
pub mod limits;
pub mod locks;
pub mod offsets;
pub mod persist;
mod pull;
mod refusal;
mod register;
mod retry;
pub mod schedule;
mod send;
pub mod table;
pub mod timer;
pub mod timer_store;
pub mod topics;

pub use config::{BrokerConfig, DEFAULT_DELAY_LEVELS, parse_delay_levels};
pub use core::{Broker, BrokerStats};
pub use refusal::{Refusal, Reply};

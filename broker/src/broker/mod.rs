//! The broker: request processors over the store, plus the state they share (topics,
//! groups, offsets, clients, queue locks).
//!
//! Processors are split by concern: [`send`](self) (send, batch), `pull` (long polling,
//! tag filtering, bare-name rewriting), `consumer` (heartbeat, offsets, locks), `retry`
//! (send-back, DLQ), `schedule` (delay levels), `timer` (arbitrary-time scheduled
//! messages, kept in `timer_store`), `register` (name servers), `admin` (topics, groups,
//! stats, connection lists, runtime info; rates in `activity`), `query` (message queries,
//! browse, per-minute statistics in `minute_stats`), `acl` (what each request needs of the
//! ACL), `limits` (instance TPS limits), `consume` (who consumes what, calls relayed to
//! clients), `reset` (offset resets), `dlq` (dead-letter resend), `transaction` (half
//! messages, END_TRANSACTION, check-back; pending set in `halves`).

mod acl;
pub mod activity;
pub mod admin;
mod arrivals;
mod bucket;
pub mod clients;
pub mod config;
mod consume;
mod consumer;
mod core;
mod dlq;
pub mod gate;
pub mod groups;
mod halves;
mod lifecycle;
pub mod limits;
pub mod locks;
pub mod minute_stats;
pub mod offsets;
pub mod persist;
mod pull;
pub mod query;
mod refusal;
mod register;
mod reset;
mod retry;
pub mod schedule;
pub(crate) mod send;
pub mod table;
pub mod timer;
pub mod timer_store;
pub mod topics;
pub mod transaction;

pub use config::{BrokerConfig, DEFAULT_DELAY_LEVELS, parse_delay_levels};
pub use consume::{GroupList, QueryTopicConsumeByWhoRequestHeader};
pub use core::{Broker, BrokerStats};
pub use dlq::{RESEND_DLQ_MESSAGE, ResendDlqMessageRequestHeader, ResendDlqMessageResponseHeader};
pub use refusal::{Refusal, Reply};
pub use reset::{ResetOffsetBody, ResetOffsetRequestHeader};

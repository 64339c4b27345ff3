//! mq-console: the `/json/*` management API (spec/console-api.md).
//!
//! It writes the same custom resources a person would (`mq_operator::crd`) and reads
//! runtime facts from brokers; it never creates anything on a broker itself. Layout
//! (DESIGN.md "Console"): [`sign`] signatures and replay, [`envelope`] the answer and its
//! error codes, [`params`] typed parameters, [`accounts`] who calls, [`state`] the watch
//! caches, [`api`] one file per operation family, [`runtime`] the broker reads,
//! [`task`] the paged-query task ids, [`server`] HTTP, [`client`] the signed client,
//! [`account_cli`] the platform admin's account commands, [`app`] the process.

pub mod account_cli;
pub mod accounts;
pub mod api;
pub mod app;
pub mod client;
pub mod context;
pub mod envelope;
pub mod metrics;
pub mod params;
pub mod runtime;
pub mod server;
pub mod sign;
pub mod state;
pub mod task;

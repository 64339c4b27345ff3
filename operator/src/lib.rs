//! mq-operator: the mqfleet custom resource types, the rules every part of the platform
//! shares, and the controllers and admission webhook that enforce them.
//!
//! The map, bottom up (each layer imports only those below it):
//! - [`crd`]: the four resource types (`MQInstance`, `MQTopic`, `MQGroup`, `MQEmpower`)
//!   and their generated CRDs;
//! - [`domain`]: pure rules the webhook, the controllers and the console all call, so they
//!   never disagree: instance ids and the names they give ([`domain::ids`],
//!   [`domain::names`]), who holds a name or a grant ([`domain::claims`]), immutable fields
//!   ([`domain::immutable`]), admin keys ([`domain::keys`]), ownership records
//!   ([`domain::records`]) and cluster profiles ([`domain::profiles`]);
//! - [`watch`]: the watches and caches the controllers and the webhook keep;
//! - [`controller`]: the reconcilers (one file per kind or concern, sharing
//!   [`controller::kit`], [`controller::status`] and [`controller::apply`]), their
//!   [`controller::Context`], health and metrics;
//! - [`webhook`]: the validating admission webhook (every replica);
//! - [`app`]: the process: ops port, leader lease, and the controllers and the webhook.
//!
//! The controllers and the webhook never import each other; only the process wiring in
//! [`app::run`] starts the webhook beside the controllers.
pub mod app;
pub mod controller;
pub mod crd;
pub mod domain;
pub mod watch;
pub mod webhook;

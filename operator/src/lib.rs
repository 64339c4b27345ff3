//! mq-operator: the mqfleet custom resource types and their controllers.
//!
//! - [`crd`]: the four resource types and their generated CRDs;
//! - [`domain`]: the rules the webhook, the controllers and the console share (instance
//!   ids, admin keys);
//! - [`watch`]: the watches and caches the controllers and the webhook share;
//! - [`controller`]: the reconcilers, their context and the ops port;
//! - [`webhook`]: the validating admission webhook.
pub mod controller;
pub mod crd;
pub mod domain;
pub mod watch;
pub mod webhook;

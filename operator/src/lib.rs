//! mq-operator: the mqfleet custom resource types and their controllers.
pub mod controller;
pub mod crd;
pub mod webhook;

//! The domain rules of mqfleet that the admission webhook, the controllers and the
//! console must apply identically, so they can never disagree: who holds a topic, group or
//! grant ([`claims`]), what may not change ([`immutable`]), what an instance id may be and
//! the object names it gives ([`ids`]), the keys that open an instance's brokers
//! ([`keys`]), the cluster profiles an instance runs on ([`profiles`]) and the limits of
//! spec §4 on instances, topics and names ([`quotas`]) and who may reach an instance from
//! outside the cluster ([`exposure`]).
//! Pure functions only: nothing here talks to the API server or a broker.

pub mod access;
pub mod accounts;
pub mod claims;
pub mod exposure;
pub mod ids;
pub mod immutable;
pub mod keys;
pub mod names;
pub mod profiles;
pub mod quotas;
pub mod records;

//! The domain rules of mqfleet that the admission webhook, the controllers and the
//! console must apply identically, so they can never disagree: what an instance id may
//! be and the object names it gives, and the keys that open an instance's brokers.
//! Pure functions only: nothing here talks to the API server or a broker.

pub mod ids;
pub mod keys;
pub mod profiles;

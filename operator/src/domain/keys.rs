//! The keys that open an instance's brokers and name servers for admin requests.
//!
//! The platform keeps one master key (Secret `mq-operator-admin`). Each instance's admin
//! key is derived from it: access key `mqfleet-admin-<base>`, secret key
//! hex(HMAC-SHA256(master secret, base of the instance id)). The operator and the console
//! derive the same key without storing one per instance, and a key derived for one
//! instance opens no other instance's brokers.

use hmac::{Hmac, KeyInit, Mac};
use mq_broker::acl::Credentials;
use sha2::Sha256;

/// The access key of instance `instance_id`'s admin key.
pub fn admin_access_key(instance_id: &str) -> String {
    format!("mqfleet-admin-{}", super::ids::base(instance_id))
}

/// The admin key of instance `instance_id`, derived from the platform's `master` key.
pub fn instance_admin_key(master: &Credentials, instance_id: &str) -> Credentials {
    let base = super::ids::base(instance_id);
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(master.secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(base.as_bytes());
    let secret: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Credentials::new(admin_access_key(instance_id), secret)
}

/// 32 bytes from the operating system's random source, as hex; an error when the source
/// cannot be read (a key must never be predictable).
pub fn random_secret() -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_keys_are_derived_per_base_and_differ_between_instances() {
        let master = Credentials::new("mqfleet-platform", "master-secret");
        let a = instance_admin_key(&master, "ORDERS_PROD");
        assert_eq!(a.access_key, "mqfleet-admin-orders-prod");
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"master-secret",b"orders-prod",hashlib.sha256).hexdigest())'
        assert_eq!(
            a.secret_key,
            "f9732b9031a37ea2d5159ce0ff2b7702a656cd4a513824792977591f74719c44"
        );
        assert_eq!(a, instance_admin_key(&master, "orders-prod"));
        assert_ne!(a, instance_admin_key(&master, "ORDERS_TEST"));
        let other_master = Credentials::new("mqfleet-platform", "another");
        assert_ne!(
            a.secret_key,
            instance_admin_key(&other_master, "ORDERS_PROD").secret_key
        );
    }

    #[test]
    fn random_secrets_are_64_hex_digits_and_differ() {
        let (a, b) = (random_secret().unwrap(), random_secret().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}

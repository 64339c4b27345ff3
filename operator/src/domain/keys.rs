//! The keys that open an instance's brokers and name servers for admin requests.
//!
//! The platform keeps one master key (Secret `mq-operator-admin`). Each instance's admin
//! key is derived from it: access key `mqfleet-admin-<base>`, secret key
//! hex(HMAC-SHA256(master secret, base of the instance id)). The operator and the console
//! derive the same key without storing one per instance, and a key derived for one
//! instance opens no other instance's brokers.
//!
//! The console reads an instance with its *console key* ([`console_key`]): access key
//! `mqfleet-console-<base>`, secret key hex(HMAC-SHA256(master secret, "console:" + base)),
//! which the instance's ACL grants only the console role (`console: true`, see the
//! broker's `acl::console`). The operator writes it into Secret `<base>-console`; the
//! console never holds the master key. The console's paged-query task ids are signed
//! with a key every replica shares, in Secret [`CONSOLE_TASK_KEY_SECRET`].

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
    Credentials::new(admin_access_key(instance_id), derive(master, &base))
}

/// The Secret (platform namespace, key `key`) holding the key the console's replicas
/// sign paged-query task ids with.
pub const CONSOLE_TASK_KEY_SECRET: &str = "mq-console-task-key";

/// The access key of instance `instance_id`'s console key.
pub fn console_access_key(instance_id: &str) -> String {
    format!("mqfleet-console-{}", super::ids::base(instance_id))
}

/// The console key of instance `instance_id`, derived from the platform's `master` key
/// with another input than the admin key's, so neither reveals the other.
pub fn console_key(master: &Credentials, instance_id: &str) -> Credentials {
    let base = super::ids::base(instance_id);
    Credentials::new(
        console_access_key(instance_id),
        derive(master, &format!("console:{base}")),
    )
}

/// hex(HMAC-SHA256(master secret, input)).
fn derive(master: &Credentials, input: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(master.secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(input.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    fn console_keys_are_derived_per_base_apart_from_the_admin_key() {
        let master = Credentials::new("mqfleet-platform", "master-secret");
        let c = console_key(&master, "ORDERS_PROD");
        assert_eq!(c.access_key, "mqfleet-console-orders-prod");
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"master-secret",b"console:orders-prod",hashlib.sha256).hexdigest())'
        assert_eq!(
            c.secret_key,
            "5bf2ca10769c15992e791dd8b4297faaa4760a5ea6b484bbbbf0636460a951c3"
        );
        assert_eq!(c, console_key(&master, "orders-prod"));
        assert_ne!(c, console_key(&master, "ORDERS_TEST"));
        let admin = instance_admin_key(&master, "ORDERS_PROD");
        assert_ne!(c.secret_key, admin.secret_key);
        assert_ne!(c.access_key, admin.access_key);
        let other_master = Credentials::new("mqfleet-platform", "another");
        assert_ne!(
            c.secret_key,
            console_key(&other_master, "ORDERS_PROD").secret_key
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

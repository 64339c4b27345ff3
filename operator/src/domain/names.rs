//! The names and labels of an instance's objects in the platform namespace, all derived
//! from its instance id, so every part of the platform finds them the same way.

use crate::crd::MQInstance;

/// Label: which tool manages the object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: the instance id an object belongs to.
pub const INSTANCE_ID_LABEL: &str = "mqfleet.io/instance-id";
/// Label: the namespace of the owning `MQInstance` (owner references cannot cross namespaces).
pub const OWNER_NAMESPACE_LABEL: &str = "mqfleet.io/owner-namespace";
/// Label: the name of the owning `MQInstance`.
pub const OWNER_NAME_LABEL: &str = "mqfleet.io/owner-name";
/// Label: `broker` or `namesrv`.
pub const COMPONENT_LABEL: &str = "mqfleet.io/component";
/// The operator's name (field manager, managed-by label).
pub const OPERATOR: &str = "mq-operator";

/// Names of one instance's objects, all derived from its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The instance id (`MQ_INST_…`).
    pub instance_id: String,
    /// DNS-safe base name: the id lower-cased, `_` → `-`.
    pub base: String,
}

impl Names {
    /// The names of `instance`'s objects.
    pub fn of(instance: &MQInstance) -> Names {
        Names::for_id(instance.effective_instance_id())
    }

    /// The names of the objects of the instance with id `instance_id`.
    pub fn for_id(instance_id: String) -> Names {
        let base = crate::domain::ids::base(&instance_id);
        Names { instance_id, base }
    }

    /// Name-server StatefulSet (and its pods' prefix).
    pub fn namesrv(&self) -> String {
        format!("{}-namesrv", self.base)
    }

    /// Headless Service giving name-server pods stable DNS names.
    pub fn namesrv_headless(&self) -> String {
        format!("{}-namesrv-hl", self.base)
    }

    /// Broker StatefulSet (and its pods' prefix).
    pub fn broker(&self) -> String {
        format!("{}-broker", self.base)
    }

    /// Headless Service of the brokers.
    pub fn broker_headless(&self) -> String {
        format!("{}-broker-hl", self.base)
    }

    /// Broker ConfigMap.
    pub fn config(&self) -> String {
        format!("{}-config", self.base)
    }

    /// Secret with the ACL file the brokers and name servers load.
    pub fn acl(&self) -> String {
        format!("{}-acl", self.base)
    }

    /// Secret with the instance's admin key.
    pub fn admin(&self) -> String {
        format!("{}-admin", self.base)
    }

    /// Secret with the instance's console key (what the console reads the brokers with).
    pub fn console(&self) -> String {
        format!("{}-console", self.base)
    }
}

/// The name of an object the console creates for `display` (a topic, group id, instance
/// or grant as the user named it): `<sanitised display>-<8 hex>`, the hex from a SHA-256
/// of `identity` (e.g. instance id and real name). Mixed-case names become valid object
/// names, and two names that sanitise alike (`Orders`, `orders_`) still get two objects.
pub fn console_object_name(display: &str, identity: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in identity {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let hash = hasher.finalize();
    let hex: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    let mut stem: String = display
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    // 63 (label-safe, so the name can be a label value too) minus "-" and 8 hex.
    stem.truncate(54);
    let stem = stem.trim_matches('-');
    if stem.is_empty() {
        format!("x-{hex}")
    } else {
        format!("{stem}-{hex}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_names_are_valid_stable_and_distinct() {
        let a = console_object_name("Orders_Prod", &["MQ_INST_1", "Orders_Prod"]);
        assert_eq!(
            a,
            console_object_name("Orders_Prod", &["MQ_INST_1", "Orders_Prod"])
        );
        assert!(a.starts_with("orders-prod-") && a.len() == "orders-prod-".len() + 8);
        let b = console_object_name("orders-prod", &["MQ_INST_1", "orders-prod"]);
        assert_ne!(a, b, "names that sanitise alike stay apart");
        let c = console_object_name("Orders_Prod", &["MQ_INST_2", "Orders_Prod"]);
        assert_ne!(a, c, "one name in two instances");
        let long = console_object_name(&"A".repeat(64), &["i"]);
        assert!(long.len() <= 63);
        let re = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        assert!(re(&a) && re(&long) && re(&console_object_name("__", &["i"])));
        // Parts are length-framed: ("ab","c") and ("a","bc") differ.
        assert_ne!(
            console_object_name("x", &["ab", "c"]),
            console_object_name("x", &["a", "bc"])
        );
    }
}

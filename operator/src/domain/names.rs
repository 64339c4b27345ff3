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

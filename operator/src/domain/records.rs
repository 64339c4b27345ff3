//! Ownership records of instance ids (ConfigMap `mqfleet-id-<base>` in the platform
//! namespace, written only by the operator): who holds an id, and what the operator
//! applied for it. The webhook reads them to refuse a taken id; the controllers write them
//! ([`crate::controller::ownership`]); the console will read them to answer "not found"
//! for another tenant's id.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;

use crate::crd::MQInstance;
use crate::domain::ids;
use crate::domain::names::{
    INSTANCE_ID_LABEL, MANAGED_BY, OPERATOR, OWNER_NAME_LABEL, OWNER_NAMESPACE_LABEL,
};

/// Label marking a ConfigMap of the platform namespace as an id's ownership record.
pub const RECORD_LABEL: &str = "mqfleet.io/id-record";
/// Data keys of a record.
const ID_KEY: &str = "instanceId";
const OWNER_NAMESPACE_KEY: &str = "ownerNamespace";
const OWNER_NAME_KEY: &str = "ownerName";
const OWNER_UID_KEY: &str = "ownerUid";
const APPLIED_KEY: &str = "applied";

/// The record of the id with base `base`.
pub fn record_name(base: &str) -> String {
    format!("mqfleet-id-{base}")
}

/// Who owns an instance id, and what the operator applied for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdRecord {
    /// The id as its owner spelled it.
    pub instance_id: String,
    /// Namespace of the owning `MQInstance`.
    pub owner_namespace: String,
    /// Name of the owning `MQInstance`.
    pub owner_name: String,
    /// Uid of the owning `MQInstance` when it claimed the id (records from before it have
    /// none): tells a re-created resource that asks for another id from the one that
    /// applied this one.
    pub owner_uid: Option<String>,
    /// The instance's immutable fields as they took effect.
    pub applied: BTreeMap<String, String>,
}

impl IdRecord {
    /// The record a ConfigMap holds (`None` if it is not a readable record).
    pub fn from_config_map(cm: &ConfigMap) -> Option<Self> {
        let data = cm.data.as_ref()?;
        let text = |k: &str| data.get(k).filter(|v| !v.is_empty()).cloned();
        Some(Self {
            instance_id: text(ID_KEY)?,
            owner_namespace: text(OWNER_NAMESPACE_KEY)?,
            owner_name: text(OWNER_NAME_KEY)?,
            owner_uid: text(OWNER_UID_KEY),
            applied: data
                .get(APPLIED_KEY)
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_default(),
        })
    }

    /// The ConfigMap holding this record in namespace `platform`.
    pub fn to_config_map(&self, platform: &str) -> ConfigMap {
        let labels = BTreeMap::from([
            (MANAGED_BY.to_owned(), OPERATOR.to_owned()),
            (RECORD_LABEL.to_owned(), "true".to_owned()),
            (INSTANCE_ID_LABEL.to_owned(), self.instance_id.clone()),
            (
                OWNER_NAMESPACE_LABEL.to_owned(),
                self.owner_namespace.clone(),
            ),
            (OWNER_NAME_LABEL.to_owned(), self.owner_name.clone()),
        ]);
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(record_name(&ids::base(&self.instance_id))),
                namespace: Some(platform.to_owned()),
                labels: Some(labels),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                (ID_KEY.to_owned(), self.instance_id.clone()),
                (OWNER_NAMESPACE_KEY.to_owned(), self.owner_namespace.clone()),
                (OWNER_NAME_KEY.to_owned(), self.owner_name.clone()),
                (
                    OWNER_UID_KEY.to_owned(),
                    self.owner_uid.clone().unwrap_or_default(),
                ),
                (
                    APPLIED_KEY.to_owned(),
                    serde_json::to_string(&self.applied).unwrap_or_default(),
                ),
            ])),
            ..Default::default()
        }
    }

    /// Whether `instance` owns this record.
    pub fn owned_by(&self, instance: &MQInstance) -> bool {
        Some(self.owner_namespace.as_str()) == instance.metadata.namespace.as_deref()
            && Some(self.owner_name.as_str()) == instance.metadata.name.as_deref()
    }

    /// The merge patch that records `applied` as what the operator applied.
    pub fn applied_patch(applied: &BTreeMap<String, String>) -> serde_json::Value {
        serde_json::json!({"data": {APPLIED_KEY: serde_json::to_string(applied).unwrap_or_default()}})
    }

    /// Whether this record was written by `instance` itself (not by an earlier resource of
    /// the same name): same uid, or a record from before uids were kept.
    pub fn same_incarnation(&self, instance: &MQInstance) -> bool {
        self.owner_uid
            .as_deref()
            .is_none_or(|uid| Some(uid) == instance.metadata.uid.as_deref())
    }

    /// `namespace/name` of the owner, for logs and platform Events.
    pub fn holder(&self) -> String {
        format!("{}/{}", self.owner_namespace, self.owner_name)
    }
}

/// Of `records`, the one `instance` holds: of those its namespace/name owns, the one of
/// its effective id (a re-created resource gets its id back), else the one it wrote itself
/// (its spec asks for another id: refused as `NotSupported`). Records an earlier resource
/// of the same name left for another id (retained data) are not this one's.
pub fn held(
    records: impl IntoIterator<Item = IdRecord>,
    instance: &MQInstance,
) -> Option<IdRecord> {
    let base = ids::base(&instance.effective_instance_id());
    let mine: Vec<IdRecord> = records
        .into_iter()
        .filter(|r| r.owned_by(instance))
        .collect();
    let own_id = mine.iter().find(|r| ids::base(&r.instance_id) == base);
    own_id
        .or_else(|| mine.iter().find(|r| r.same_incarnation(instance)))
        .cloned()
}

/// Whether `labels` name `instance` as the owner.
pub fn owner_labels_match(labels: &BTreeMap<String, String>, instance: &MQInstance) -> bool {
    labels.get(OWNER_NAMESPACE_LABEL).map(String::as_str) == instance.metadata.namespace.as_deref()
        && labels.get(OWNER_NAME_LABEL).map(String::as_str) == instance.metadata.name.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    fn instance(ns: &str, name: &str) -> MQInstance {
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"instanceName": "orders"},
        }))
        .unwrap()
    }

    #[test]
    fn a_record_round_trips_and_names_its_owner() {
        let record = IdRecord {
            instance_id: "Orders_Prod".into(),
            owner_namespace: "team-a".into(),
            owner_name: "orders".into(),
            owner_uid: Some("uid-1".into()),
            applied: BTreeMap::from([("spec.instanceId".into(), "Orders_Prod".into())]),
        };
        let cm = record.to_config_map("mqfleet-system");
        assert_eq!(cm.metadata.name.as_deref(), Some("mqfleet-id-orders-prod"));
        assert_eq!(cm.labels()[RECORD_LABEL], "true");
        assert_eq!(IdRecord::from_config_map(&cm), Some(record.clone()));
        assert!(record.owned_by(&instance("team-a", "orders")));
        assert!(!record.owned_by(&instance("team-b", "orders")));
        assert!(!record.owned_by(&instance("team-a", "orders2")));
        // Ids with one base share one record: the second POST gets 409.
        let twin = IdRecord {
            instance_id: "orders-PROD".into(),
            ..record
        };
        assert_eq!(
            twin.to_config_map("mqfleet-system").metadata.name,
            cm.metadata.name
        );
    }

    #[test]
    fn owner_labels_must_name_the_instance() {
        let labels = BTreeMap::from([
            (OWNER_NAMESPACE_LABEL.to_owned(), "team-a".to_owned()),
            (OWNER_NAME_LABEL.to_owned(), "orders".to_owned()),
        ]);
        assert!(owner_labels_match(&labels, &instance("team-a", "orders")));
        assert!(!owner_labels_match(&labels, &instance("team-b", "orders")));
        assert!(!owner_labels_match(
            &BTreeMap::new(),
            &instance("team-a", "orders")
        ));
    }

    #[test]
    fn a_recreated_resource_gets_its_own_id_back_and_may_ask_for_another() {
        let record = |id: &str, uid: Option<&str>| IdRecord {
            instance_id: id.into(),
            owner_namespace: "team-a".into(),
            owner_name: "orders".into(),
            owner_uid: uid.map(Into::into),
            applied: BTreeMap::new(),
        };
        let with = |id: &str, uid: &str| {
            let mut i = instance("team-a", "orders");
            i.spec.instance_id = Some(id.into());
            i.metadata.uid = Some(uid.into());
            i
        };
        // Re-created (new uid) with the same id: its record, and its data, come back.
        let old = record("ORDERS", Some("uid-1"));
        assert_eq!(
            held([old.clone()], &with("orders", "uid-2")),
            Some(old.clone())
        );
        // The same resource with a changed spec id: still its record (NotSupported).
        assert_eq!(
            held([old.clone()], &with("OTHER", "uid-1")),
            Some(old.clone())
        );
        // Re-created asking for another id: the earlier record is not its own.
        assert_eq!(held([old.clone()], &with("OTHER", "uid-2")), None);
        // Both exist: the one of its id wins.
        let new = record("OTHER", Some("uid-2"));
        assert_eq!(
            held([old.clone(), new.clone()], &with("OTHER", "uid-2")),
            Some(new)
        );
        // A record from before uids were kept counts as its own.
        let legacy = record("ORDERS", None);
        assert_eq!(
            held([legacy.clone()], &with("OTHER", "uid-9")),
            Some(legacy)
        );
        assert!(held([old], &with("ORDERS", "uid-1")).is_some());
    }
}

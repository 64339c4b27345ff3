//! Immutable fields: what may never change once applied, and how a refused change is
//! described (the same words in an admission refusal and in a `NotSupported` condition).

use std::collections::BTreeMap;

use crate::crd::{ImmutableFieldChange, ImmutableFields, MQInstance};

/// Immutable fields whose requested value differs from the `applied` one (fields not
/// recorded are no change).
pub fn changes_from(
    applied: &BTreeMap<String, String>,
    requested: Vec<(&'static str, String)>,
) -> Vec<ImmutableFieldChange> {
    requested
        .into_iter()
        .filter_map(|(field, value)| {
            let old = applied.get(field)?;
            (*old != value).then(|| ImmutableFieldChange {
                field,
                accepted: old.clone(),
                requested: value,
            })
        })
        .collect()
}

/// The changes between two versions' immutable fields.
pub fn changes_between(
    old: Vec<(&'static str, String)>,
    new: Vec<(&'static str, String)>,
) -> Vec<ImmutableFieldChange> {
    let old: BTreeMap<String, String> = old.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    changes_from(&old, new)
}

/// One message naming every refused change, for a condition or an admission refusal.
pub fn describe_changes(changes: &[ImmutableFieldChange]) -> String {
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The instance's immutable fields as they take effect: the *effective* instance id, so
/// writing the derived id into an instance that had none is no change.
pub fn instance_identity(instance: &MQInstance) -> Vec<(&'static str, String)> {
    let mut fields = instance.spec.immutable_fields();
    for (field, value) in &mut fields {
        if *field == "spec.instanceId" {
            *value = instance.effective_instance_id();
        }
    }
    fields
}

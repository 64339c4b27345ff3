//! Instance ids: which ids a tenant may ask for, and the base name every object of the
//! instance is named after. Ids that give the same base (`a_b` and `A-B`) are one id: they
//! would name the same StatefulSets, claims and Secrets.

/// The prefix of derived ids (`MQ_INST_<16 digits>_<8>`); a tenant may not choose an id
/// that looks derived unless it is the one derived for that very resource.
pub const DERIVED_PREFIX: &str = "MQ_INST_";

/// Longest instance id. The broker StatefulSet `<base>-namesrv` must stay within 52
/// characters, because the `controller-revision-hash` label on its pods appends 11
/// more and labels stop at 63.
pub const MAX_LEN: usize = 52 - "-namesrv".len();

/// Shortest instance id.
pub const MIN_LEN: usize = 3;

/// The schema pattern of `spec.instanceId`: letters, digits, `_` and `-`, starting with a
/// letter or digit (a leading `-` would make the derived object names invalid).
pub const PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9_-]*$";

/// The DNS-safe base name of `instance_id`: lower-cased, `_` → `-`. Every object of the
/// instance is `<base>-…`, so two ids with one base are the same id.
pub fn base(instance_id: &str) -> String {
    instance_id.to_ascii_lowercase().replace('_', "-")
}

/// Why `requested` may not be the id of the resource whose derived id is `derived`;
/// `None` when it may. The schema refuses most of this already; this is the same rule
/// for the webhook and the operator (clusters whose CRD predates the schema).
pub fn refusal(requested: &str, derived: &str) -> Option<String> {
    let len = requested.len();
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return Some(format!(
            "spec.instanceId {requested:?} must be {MIN_LEN} to {MAX_LEN} characters long (it names the instance's StatefulSets)"
        ));
    }
    let first_ok = requested
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    let chars_ok = requested
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !first_ok || !chars_ok {
        return Some(format!(
            "spec.instanceId {requested:?} may hold only letters, digits, '_' and '-', and must start with a letter or digit"
        ));
    }
    if base(requested).starts_with(&base(DERIVED_PREFIX)) && base(requested) != base(derived) {
        return Some(format!(
            "spec.instanceId {requested:?}: ids starting with {DERIVED_PREFIX} are derived by the platform; leave spec.instanceId empty to get one, or choose an id without that prefix"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_one_base_are_one_id() {
        assert_eq!(base("a_b"), base("A-B"));
        assert_eq!(base("MQ_INST_1_x"), "mq-inst-1-x");
        assert_ne!(base("a_b"), base("ab"));
    }

    #[test]
    fn derived_looking_ids_are_reserved_for_their_own_resource() {
        let derived = "MQ_INST_0123456789012345_AbCdEfGh";
        assert!(refusal(derived, derived).is_none());
        assert!(refusal("mq-inst-0123456789012345-abcdefgh", derived).is_none());
        let other = refusal("MQ_INST_9999999999999999_zzzzzzzz", derived).unwrap();
        assert!(other.contains("derived by the platform"), "{other}");
        assert!(refusal("mq-inst-x", derived).is_some());
        assert!(refusal("ORDERS_PROD", derived).is_none());
    }

    #[test]
    fn ids_that_break_object_names_are_refused() {
        let d = "MQ_INST_0_x";
        assert!(
            refusal("-abc", d)
                .unwrap()
                .contains("start with a letter or digit")
        );
        assert!(refusal("_abc", d).is_some());
        assert!(refusal("a.b", d).is_some());
        assert!(refusal("ab", d).is_some());
        assert!(refusal(&"a".repeat(MAX_LEN), d).is_none());
        assert!(
            refusal(&"a".repeat(MAX_LEN + 1), d)
                .unwrap()
                .contains("characters")
        );
        // The longest id still names a StatefulSet whose revision label fits 63.
        let sts = format!("{}-namesrv", base(&"a".repeat(MAX_LEN)));
        assert!(sts.len() + 11 <= 63);
    }
}

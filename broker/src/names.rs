//! Names inside the broker: instance namespaces (spec/messaging.md "Names inside the broker").
//!
//! A broker (and its name servers) belongs to one instance. With independent naming the
//! canonical stored name is namespaced, `<instanceId>%<topic>`, and retry/DLQ topics are
//! `%RETRY%<instanceId>%<group>` / `%DLQ%<instanceId>%<group>` — what namespaced SDKs send
//! and expect back (`NamespaceUtil` in the Java client). Bare names from clients that do
//! not set an instance id are mapped to the same resource on the way in, and shown bare to
//! those clients on the way out. System topics (`TBW102`, `SCHEDULE_TOPIC_XXXX`, `rmq_sys_…`)
//! are never namespaced.

/// Prefix of a group's retry topic.
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic.
pub const DLQ_PREFIX: &str = "%DLQ%";
/// Separator between an instance id and a name.
const SEPARATOR: char = '%';

/// The template topic producers send with when a topic is unknown (auto-creation).
pub const DEFAULT_TOPIC: &str = "TBW102";
/// The topic delayed messages wait in.
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";

/// Topics that belong to the broker, not to an instance's namespace.
const SYSTEM_TOPICS: &[&str] = &[
    DEFAULT_TOPIC,
    SCHEDULE_TOPIC,
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "TRANS_CHECK_MAX_TIME_TOPIC",
    "RMQ_SYS_TRACE_TOPIC",
    "OFFSET_MOVED_EVENT",
    "SELF_TEST_TOPIC",
    "BenchmarkTest",
];

/// Whether `name` is a broker-owned name that is never namespaced.
pub fn is_system(name: &str) -> bool {
    SYSTEM_TOPICS.contains(&name)
        || name.starts_with("rmq_sys_")
        || name.starts_with("CID_RMQ_SYS_")
        || name == "CLIENT_INNER_PRODUCER"
        || name == "TOOLS_CONSUMER"
        // The scheduled-delivery task's offsets, so an admin's consume stats of it read
        // the broker's own progress (what a drain waits for).
        || name == "SCHEDULE_DELIVERY"
}

/// Splits off a `%RETRY%` or `%DLQ%` prefix.
fn split_prefix(name: &str) -> (&'static str, &str) {
    for prefix in [RETRY_PREFIX, DLQ_PREFIX] {
        if let Some(rest) = name.strip_prefix(prefix) {
            return (prefix, rest);
        }
    }
    ("", name)
}

/// The instance namespace of a broker: how names are canonicalised and shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    instance_id: Option<String>,
}

impl Namespace {
    /// A namespace for `instance_id`; `None` (or empty) for an instance without one.
    pub fn new(instance_id: Option<&str>) -> Self {
        Self {
            instance_id: instance_id.filter(|id| !id.is_empty()).map(str::to_owned),
        }
    }

    /// The instance id, when the instance has a namespace.
    pub fn instance_id(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }

    /// The canonical stored form of a name a client sent.
    ///
    /// A bare name gets this instance's namespace; a name already in it stays; a name in
    /// another instance's namespace stays as it is, so it never aliases one of ours.
    pub fn canonical(&self, name: &str) -> String {
        let Some(ns) = &self.instance_id else {
            return name.to_owned();
        };
        let (prefix, rest) = split_prefix(name);
        if rest.contains(SEPARATOR) || is_system(rest) || rest.is_empty() {
            return name.to_owned();
        }
        format!("{prefix}{ns}{SEPARATOR}{rest}")
    }

    /// Whether a client used bare names (so it is answered with bare names).
    pub fn is_bare(&self, name: &str) -> bool {
        let (_, rest) = split_prefix(name);
        self.instance_id.is_some() && !rest.contains(SEPARATOR)
    }

    /// A canonical name as a bare client expects it: this instance's namespace removed.
    pub fn bare(&self, name: &str) -> String {
        let Some(ns) = &self.instance_id else {
            return name.to_owned();
        };
        let (prefix, rest) = split_prefix(name);
        match rest
            .strip_prefix(ns.as_str())
            .and_then(|r| r.strip_prefix(SEPARATOR))
        {
            Some(bare) => format!("{prefix}{bare}"),
            None => name.to_owned(),
        }
    }

    /// A canonical name as the client that sent `as_sent` expects it back.
    pub fn shown_as(&self, canonical: &str, as_sent: &str) -> String {
        if self.is_bare(as_sent) {
            self.bare(canonical)
        } else {
            canonical.to_owned()
        }
    }
}

/// The retry topic of a (canonical) group.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The dead-letter topic of a (canonical) group.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_namespaced_names_meet_in_one_canonical_form() {
        let ns = Namespace::new(Some("MQ_INST_1_x"));
        for sent in ["T", "MQ_INST_1_x%T"] {
            assert_eq!(ns.canonical(sent), "MQ_INST_1_x%T");
        }
        for sent in ["%RETRY%GID_a", "%RETRY%MQ_INST_1_x%GID_a"] {
            assert_eq!(ns.canonical(sent), "%RETRY%MQ_INST_1_x%GID_a");
        }
        assert_eq!(ns.canonical("%DLQ%GID_a"), "%DLQ%MQ_INST_1_x%GID_a");
        assert_eq!(
            ns.canonical("OTHER%T"),
            "OTHER%T",
            "another instance's name is not ours"
        );
        assert_eq!(ns.canonical("TBW102"), "TBW102");
    }

    #[test]
    fn bare_clients_get_bare_names_back() {
        let ns = Namespace::new(Some("MQ_INST_1_x"));
        assert_eq!(
            ns.shown_as("%RETRY%MQ_INST_1_x%GID_a", "%RETRY%GID_a"),
            "%RETRY%GID_a"
        );
        assert_eq!(ns.shown_as("MQ_INST_1_x%T", "T"), "T");
        assert_eq!(
            ns.shown_as("MQ_INST_1_x%T", "MQ_INST_1_x%T"),
            "MQ_INST_1_x%T"
        );
    }

    #[test]
    fn an_instance_without_namespace_keeps_names_as_sent() {
        let ns = Namespace::new(None);
        assert_eq!(ns.canonical("T"), "T");
        assert_eq!(ns.bare("T"), "T");
        assert!(!ns.is_bare("T"));
    }
}

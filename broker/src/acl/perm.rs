//! Permissions (`PUB`, `SUB`) and what one request needs of them.

use crate::names::{DLQ_PREFIX, RETRY_PREFIX};

/// A set of permissions on a topic or group: publish, subscribe, both or none (`DENY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Perm(u8);

impl Perm {
    /// Nothing allowed (`DENY`).
    pub const DENY: Perm = Perm(0);
    /// Sending to a topic.
    pub const PUB: Perm = Perm(1);
    /// Consuming a topic, or consuming as a group.
    pub const SUB: Perm = Perm(2);
    /// Both (`PUB|SUB`, also written `SUB|PUB` or `ANY`).
    pub const ANY: Perm = Perm(3);

    /// Parses Java's perm names (`DENY`, `PUB`, `SUB`, `PUB|SUB`, `SUB|PUB`) and `ANY`,
    /// in any case. Java maps unknown names to `DENY` silently; we refuse them, so a typo
    /// shows up as an error instead of a puzzling denial.
    pub fn parse(text: &str) -> Result<Perm, String> {
        match text.trim().to_ascii_uppercase().as_str() {
            "DENY" => Ok(Perm::DENY),
            "PUB" => Ok(Perm::PUB),
            "SUB" => Ok(Perm::SUB),
            "PUB|SUB" | "SUB|PUB" | "ANY" => Ok(Perm::ANY),
            _ => Err(format!(
                "unknown permission {text:?} (DENY, PUB, SUB, PUB|SUB or ANY)"
            )),
        }
    }

    /// Whether this set includes everything in `needed`.
    pub fn allows(self, needed: Perm) -> bool {
        self.0 & needed.0 == needed.0
    }

    /// Java's name of the permission.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "DENY",
            1 => "PUB",
            2 => "SUB",
            _ => "PUB|SUB",
        }
    }
}

/// The group whose retry or dead-letter topic `topic` is (Java authorizes both with the
/// group's SUB permission).
pub fn group_of_topic(topic: &str) -> Option<&str> {
    topic
        .strip_prefix(RETRY_PREFIX)
        .or_else(|| topic.strip_prefix(DLQ_PREFIX))
}

/// What a request needs: admin rights, and permissions on canonical topic and group names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Only an admin account may make it.
    pub admin: bool,
    /// Topics and the permission needed on each.
    pub topics: Vec<(String, Perm)>,
    /// Groups the request acts as (each needs SUB).
    pub groups: Vec<String>,
}

impl Needs {
    /// Nothing beyond a valid signature.
    pub fn signature_only() -> Self {
        Self::default()
    }

    /// An admin account.
    pub fn admin() -> Self {
        Self {
            admin: true,
            ..Self::default()
        }
    }

    /// Adds `perm` on a (canonical) topic; a retry or dead-letter topic needs its group's
    /// SUB instead.
    pub fn topic(&mut self, topic: &str, perm: Perm) -> &mut Self {
        match group_of_topic(topic) {
            Some(group) => self.group(group),
            None => {
                self.topics.push((topic.to_owned(), perm));
                self
            }
        }
    }

    /// Adds SUB on a (canonical) group.
    pub fn group(&mut self, group: &str) -> &mut Self {
        self.groups.push(group.to_owned());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms_parse_like_java_and_refuse_typos() {
        assert_eq!(Perm::parse("PUB"), Ok(Perm::PUB));
        assert_eq!(Perm::parse(" sub "), Ok(Perm::SUB));
        assert_eq!(Perm::parse("PUB|SUB"), Ok(Perm::ANY));
        assert_eq!(Perm::parse("SUB|PUB"), Ok(Perm::ANY));
        assert_eq!(Perm::parse("ANY"), Ok(Perm::ANY));
        assert_eq!(Perm::parse("DENY"), Ok(Perm::DENY));
        assert!(Perm::parse("PUBLISH").is_err());
        assert!(Perm::parse("").is_err());
    }

    #[test]
    fn a_set_allows_what_it_contains() {
        assert!(Perm::ANY.allows(Perm::PUB) && Perm::ANY.allows(Perm::SUB));
        assert!(Perm::PUB.allows(Perm::PUB) && !Perm::PUB.allows(Perm::SUB));
        assert!(!Perm::SUB.allows(Perm::PUB));
        assert!(!Perm::DENY.allows(Perm::SUB));
    }

    #[test]
    fn retry_and_dead_letter_topics_need_the_groups_sub() {
        let mut needs = Needs::default();
        needs
            .topic("orders", Perm::PUB)
            .topic("%RETRY%GID_a", Perm::PUB)
            .topic("%DLQ%X%GID_b", Perm::SUB);
        assert_eq!(needs.topics, vec![("orders".to_owned(), Perm::PUB)]);
        assert_eq!(needs.groups, vec!["GID_a".to_owned(), "X%GID_b".to_owned()]);
    }
}

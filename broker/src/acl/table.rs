//! The ACL file: accounts with their keys and grants, and the check of one request's
//! needs against one account.
//!
//! The file is Java's `plain_acl.yml`, as RocketMQ users write it, in YAML or in its JSON
//! form (what the operator writes; JSON is YAML too):
//!
//! ```yaml
//! accounts:
//!   - accessKey: AK1
//!     secretKey: 12345678        # scalars are read as text, as Java's loader does
//!     admin: false
//!     defaultTopicPerm: DENY
//!     defaultGroupPerm: DENY
//!     topicPerms: [orders=PUB|SUB, audit=PUB]
//!     groupPerms: [GID_a=SUB]
//!   - {accessKey: platform, secretKey: "...", admin: true}
//!   - {accessKey: mqfleet-console-x, secretKey: "...", console: true}
//! ```
//!
//! Perms: `DENY`, `PUB`, `SUB`, `PUB|SUB` (or `SUB|PUB`, `ANY`); defaults apply to names
//! not listed and are `DENY` when absent. `console: true` (our addition, never together
//! with `admin: true`) makes the account a console key: exactly the request codes of
//! [`super::console::CONSOLE_CODES`], on every topic and group, and nothing else; its
//! perms are ignored. Names are bare (or already namespaced) and are
//! canonicalised into the server's instance namespace, so namespaced and bare clients
//! meet the same grant. Unknown fields are ignored — including Java's
//! `whiteRemoteAddress` and `globalWhiteRemoteAddresses`: an address never replaces a
//! signature here (pod IPs are reused), every request must be signed.

use super::perm::{Needs, Perm};
use super::sign::Credentials;
use crate::names::Namespace;
use serde::Deserialize;
use std::collections::HashMap;

/// One account as the file writes it. YAML reads `secretKey: 12345678` as a number and
/// `admin: "true"` as text; Java turns both into what the field wants, and so do we.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileAccount {
    #[serde(default, deserialize_with = "scalar_text")]
    access_key: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    secret_key: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    admin: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    console: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    default_topic_perm: Option<String>,
    #[serde(default, deserialize_with = "scalar_text")]
    default_group_perm: Option<String>,
    topic_perms: Option<Vec<String>>,
    group_perms: Option<Vec<String>>,
}

/// A scalar (text, number or boolean) as its text; null or absent as `None`.
fn scalar_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    match Option::<serde_yaml::Value>::deserialize(d)? {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(serde_yaml::Value::String(s)) => Ok(Some(s)),
        Some(serde_yaml::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(serde_yaml::Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(D::Error::custom(format!(
            "expected a text value, found {other:?}"
        ))),
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
struct FileDoc {
    accounts: Option<Vec<FileAccount>>,
}

/// A secret key, redacted in `Debug` output so it never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An account: its secret, whether it is an admin, and its grants (canonical names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    access_key: String,
    secret_key: Secret,
    admin: bool,
    console: bool,
    default_topic: Perm,
    default_group: Perm,
    topics: HashMap<String, Perm>,
    groups: HashMap<String, Perm>,
}

impl Account {
    /// The secret the account's requests are signed with.
    pub fn secret_key(&self) -> &str {
        &self.secret_key.0
    }

    /// Whether the account may do everything.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// Whether the account is a console key (see [`super::console`]).
    pub fn is_console(&self) -> bool {
        self.console
    }

    /// Whether the account may make request `code` needing `needs`; the refusal's remark
    /// otherwise.
    pub fn check(&self, code: i32, needs: &Needs) -> Result<(), String> {
        if self.admin {
            return Ok(());
        }
        let ak = &self.access_key;
        // A console key is decided by the code alone, on every topic and group.
        if self.console {
            return if super::console::allows(code) {
                Ok(())
            } else {
                Err(format!(
                    "accessKey={ak} is a console key, which may not make request code={code}"
                ))
            };
        }
        if needs.admin {
            return Err(format!(
                "Need admin permission for request code={code}, but accessKey={ak} is not"
            ));
        }
        for (topic, needed) in &needs.topics {
            let owned = self
                .topics
                .get(topic)
                .copied()
                .unwrap_or(self.default_topic);
            if !owned.allows(*needed) {
                return Err(format!(
                    "No {} permission for topic={topic}, accessKey={ak}",
                    needed.name()
                ));
            }
        }
        for group in &needs.groups {
            let owned = self
                .groups
                .get(group)
                .copied()
                .unwrap_or(self.default_group);
            if !owned.allows(Perm::SUB) {
                return Err(format!(
                    "No SUB permission for group={group}, accessKey={ak}"
                ));
            }
        }
        Ok(())
    }
}

/// Every account of an ACL file, by access key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclTable {
    accounts: HashMap<String, Account>,
    signer: Option<Credentials>,
}

impl AclTable {
    /// Parses the file's text, canonicalising names into `ns`.
    pub fn parse(text: &str, ns: &Namespace) -> Result<Self, String> {
        let doc: FileDoc = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?
        } else {
            serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?
        };
        let accounts = doc
            .accounts
            .ok_or("no \"accounts\" list (an empty list denies everyone)")?;
        let mut table = Self::default();
        for (i, raw) in accounts.into_iter().enumerate() {
            let account = account(raw, ns).map_err(|e| format!("account {}: {e}", i + 1))?;
            if table.signer.is_none() && account.admin {
                table.signer = Some(Credentials::new(
                    account.access_key.as_str(),
                    account.secret_key(),
                ));
            }
            let ak = account.access_key.clone();
            if table.accounts.insert(ak.clone(), account).is_some() {
                return Err(format!("accessKey {ak} is listed twice"));
            }
        }
        Ok(table)
    }

    /// The account of `access_key`.
    pub fn get(&self, access_key: &str) -> Option<&Account> {
        self.accounts.get(access_key)
    }

    /// The first admin account of the file: what this server signs its own requests
    /// with (a broker's registrations).
    pub fn signer(&self) -> Option<&Credentials> {
        self.signer.as_ref()
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether there are no accounts (everyone is refused).
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}

/// An account from its file form.
fn account(raw: FileAccount, ns: &Namespace) -> Result<Account, String> {
    let access_key = raw
        .access_key
        .filter(|k| !k.trim().is_empty())
        .ok_or("accessKey is missing")?;
    let secret_key = raw
        .secret_key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("secretKey of {access_key} is missing"))?;
    let perm = |p: Option<String>| p.map_or(Ok(Perm::DENY), |p| Perm::parse(&p));
    let switch = |name: &str, value: Option<String>| match value.as_deref().map(str::trim) {
        None | Some("false") | Some("") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(format!(
            "{name} of {access_key} is {other:?}, not true/false"
        )),
    };
    let admin = switch("admin", raw.admin)?;
    let console = switch("console", raw.console)?;
    if admin && console {
        return Err(format!(
            "{access_key} is both admin and console; a console key is never an admin"
        ));
    }
    Ok(Account {
        admin,
        console,
        default_topic: perm(raw.default_topic_perm)?,
        default_group: perm(raw.default_group_perm)?,
        topics: grants(raw.topic_perms, ns)?,
        groups: grants(raw.group_perms, ns)?,
        access_key,
        secret_key: Secret(secret_key),
    })
}

/// `name=PERM` entries by canonical name (a later entry for a name wins, as in Java).
fn grants(entries: Option<Vec<String>>, ns: &Namespace) -> Result<HashMap<String, Perm>, String> {
    let mut map = HashMap::new();
    for entry in entries.unwrap_or_default() {
        let parts: Vec<&str> = entry.split('=').filter(|p| !p.is_empty()).collect();
        let [name, perm] = parts[..] else {
            return Err(format!("{entry:?} is not name=PERM"));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("{entry:?} has no name"));
        }
        map.insert(ns.canonical(name), Perm::parse(perm)?);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::request_code;

    const FILE: &str = r#"{"accounts": [
      {"accessKey": "AK1", "secretKey": "SK1", "admin": false,
       "defaultTopicPerm": "DENY", "defaultGroupPerm": "DENY",
       "topicPerms": ["orders=PUB|SUB", "audit=PUB"], "groupPerms": ["GID_a=SUB"],
       "whiteRemoteAddress": "10.0.0.1"},
      {"accessKey": "reader", "secretKey": "SK2", "defaultTopicPerm": "SUB",
       "defaultGroupPerm": "SUB"},
      {"accessKey": "platform", "secretKey": "SK3", "admin": true},
      {"accessKey": "platform2", "secretKey": "SK4", "admin": true}
    ], "globalWhiteRemoteAddresses": ["10.*"]}"#;

    fn needs(topics: &[(&str, Perm)], groups: &[&str]) -> Needs {
        let mut n = Needs::default();
        for (t, p) in topics {
            n.topic(t, *p);
        }
        for g in groups {
            n.group(g);
        }
        n
    }

    #[test]
    fn grants_and_defaults_decide() {
        let t = AclTable::parse(FILE, &Namespace::default()).unwrap();
        assert_eq!(t.len(), 4);
        let ak1 = t.get("AK1").unwrap();
        let code = request_code::SEND_MESSAGE;
        assert!(
            ak1.check(code, &needs(&[("orders", Perm::PUB)], &[]))
                .is_ok()
        );
        assert!(
            ak1.check(code, &needs(&[("orders", Perm::SUB)], &["GID_a"]))
                .is_ok()
        );
        assert!(
            ak1.check(code, &needs(&[("audit", Perm::PUB)], &[]))
                .is_ok()
        );
        let err = ak1
            .check(code, &needs(&[("audit", Perm::SUB)], &[]))
            .unwrap_err();
        assert_eq!(err, "No SUB permission for topic=audit, accessKey=AK1");
        assert!(
            ak1.check(code, &needs(&[("other", Perm::PUB)], &[]))
                .is_err()
        );
        assert!(ak1.check(code, &needs(&[], &["GID_b"])).is_err());
        // The group's SUB covers its retry topic.
        assert!(
            ak1.check(code, &needs(&[("%RETRY%GID_a", Perm::PUB)], &[]))
                .is_ok()
        );

        let reader = t.get("reader").unwrap();
        assert!(
            reader
                .check(code, &needs(&[("x", Perm::SUB)], &["g"]))
                .is_ok()
        );
        assert!(
            reader
                .check(code, &needs(&[("x", Perm::PUB)], &[]))
                .is_err()
        );
        assert!(!reader.is_admin());
    }

    #[test]
    fn only_admins_pass_admin_requests_and_the_first_admin_signs() {
        let t = AclTable::parse(FILE, &Namespace::default()).unwrap();
        let code = request_code::UPDATE_AND_CREATE_TOPIC;
        assert_eq!(
            t.get("AK1").unwrap().check(code, &Needs::admin()),
            Err("Need admin permission for request code=17, but accessKey=AK1 is not".into())
        );
        let admin = t.get("platform").unwrap();
        assert!(admin.check(code, &Needs::admin()).is_ok());
        assert!(
            admin
                .check(code, &needs(&[("any", Perm::ANY)], &["g"]))
                .is_ok()
        );
        assert_eq!(t.signer(), Some(&Credentials::new("platform", "SK3")));
    }

    #[test]
    fn names_are_canonicalised_into_the_namespace() {
        let ns = Namespace::new(Some("MQ_INST_1_x"));
        let t = AclTable::parse(FILE, &ns).unwrap();
        let ak1 = t.get("AK1").unwrap();
        let code = request_code::PULL_MESSAGE;
        let granted = needs(&[("MQ_INST_1_x%orders", Perm::SUB)], &["MQ_INST_1_x%GID_a"]);
        assert!(ak1.check(code, &granted).is_ok());
        let retry = needs(&[("%RETRY%MQ_INST_1_x%GID_a", Perm::SUB)], &[]);
        assert!(ak1.check(code, &retry).is_ok());
        let bare = needs(&[("orders", Perm::SUB)], &[]);
        assert!(
            ak1.check(code, &bare).is_err(),
            "the server checks canonical names"
        );
    }

    #[test]
    fn a_console_key_makes_exactly_the_console_codes_on_any_name() {
        let text = "accounts:\n  - {accessKey: console, secretKey: SKC, console: \"true\", topicPerms: [orders=DENY]}\n";
        let t = AclTable::parse(text, &Namespace::new(Some("MQ_INST_1_x"))).unwrap();
        let console = t.get("console").unwrap();
        assert!(console.is_console() && !console.is_admin());
        assert!(
            t.signer().is_none(),
            "a console key never signs as the server"
        );
        let anything = needs(&[("MQ_INST_1_x%orders", Perm::SUB)], &["MQ_INST_1_x%GID_a"]);
        for code in [
            request_code::QUERY_MESSAGE,
            request_code::GET_CONSUME_STATS,
            request_code::INVOKE_BROKER_TO_RESET_OFFSET,
            crate::broker::RESEND_DLQ_MESSAGE,
        ] {
            assert!(console.check(code, &anything).is_ok(), "code {code}");
            assert!(console.check(code, &Needs::admin()).is_ok(), "code {code}");
        }
        for code in [
            request_code::SEND_MESSAGE,
            request_code::PULL_MESSAGE,
            request_code::UPDATE_CONSUMER_OFFSET,
            request_code::UPDATE_AND_CREATE_TOPIC,
            request_code::REGISTER_BROKER,
        ] {
            let err = console.check(code, &Needs::signature_only()).unwrap_err();
            assert!(err.contains("console key"), "{err}");
        }
        let both =
            r#"{"accounts":[{"accessKey":"a","secretKey":"s","admin":true,"console":true}]}"#;
        let err = AclTable::parse(both, &Namespace::default()).unwrap_err();
        assert!(err.contains("both admin and console"), "{err}");
        let bad = r#"{"accounts":[{"accessKey":"a","secretKey":"s","console":"yes"}]}"#;
        let err = AclTable::parse(bad, &Namespace::default()).unwrap_err();
        assert!(err.contains("console of a"), "{err}");
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let ns = Namespace::default();
        let err = |text: &str| AclTable::parse(text, &ns).unwrap_err();
        assert!(err("accounts:\n  - accessKey: AK1\n").contains("secretKey of AK1 is missing"));
        assert!(err("accounts: [\n").contains("not valid YAML"));
        assert!(
            err("accounts:\n  - {accessKey: a, secretKey: s, admin: maybe}\n")
                .contains("not true/false")
        );
        assert!(err("{\"accounts\": [").contains("not valid JSON"));
        assert!(err("{}").contains("accounts"));
        assert!(err(r#"{"accounts":[{"secretKey":"s"}]}"#).contains("accessKey is missing"));
        assert!(err(r#"{"accounts":[{"accessKey":"a"}]}"#).contains("secretKey of a"));
        let bad_perm =
            r#"{"accounts":[{"accessKey":"a","secretKey":"s","topicPerms":["t=WRITE"]}]}"#;
        assert!(err(bad_perm).contains("unknown permission"));
        let no_eq = r#"{"accounts":[{"accessKey":"a","secretKey":"s","groupPerms":["g"]}]}"#;
        assert!(err(no_eq).contains("not name=PERM"));
        let twice =
            r#"{"accounts":[{"accessKey":"a","secretKey":"s"},{"accessKey":"a","secretKey":"t"}]}"#;
        assert!(err(twice).contains("listed twice"));
        let empty = AclTable::parse(r#"{"accounts":[]}"#, &ns).unwrap();
        assert!(empty.is_empty() && empty.signer().is_none());
    }

    /// RocketMQ's own distribution file (`distribution/conf/plain_acl.yml`, 4.9), verbatim.
    const JAVA_FILE: &str = "globalWhiteRemoteAddresses:
  - 10.10.103.*
  - 192.168.0.*

accounts:
  - accessKey: RocketMQ
    secretKey: 12345678
    whiteRemoteAddress:
    admin: false
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - topicA=DENY
      - topicB=PUB|SUB
      - topicC=SUB
    groupPerms:
      # the group should convert to retry topic
      - groupA=DENY
      - groupB=PUB|SUB
      - groupC=SUB

  - accessKey: rocketmq2
    secretKey: 12345678
    whiteRemoteAddress: 192.168.1.*
    # if it is admin, it could access all resources
    admin: true
";

    #[test]
    fn java_plain_acl_yml_is_read_as_written() {
        let t = AclTable::parse(JAVA_FILE, &Namespace::default()).unwrap();
        assert_eq!(t.len(), 2);
        let user = t.get("RocketMQ").unwrap();
        assert_eq!(
            user.secret_key(),
            "12345678",
            "a numeric secret is its text"
        );
        assert!(!user.is_admin());
        let code = request_code::SEND_MESSAGE;
        assert!(
            user.check(code, &needs(&[("topicB", Perm::PUB)], &[]))
                .is_ok()
        );
        assert!(
            user.check(code, &needs(&[("topicA", Perm::SUB)], &[]))
                .is_err()
        );
        assert!(
            user.check(code, &needs(&[("topicC", Perm::PUB)], &[]))
                .is_err()
        );
        assert!(user.check(code, &needs(&[], &["groupC"])).is_ok());
        assert!(user.check(code, &needs(&[], &["groupA"])).is_err());
        assert!(
            user.check(code, &needs(&[], &["unlisted"])).is_ok(),
            "defaultGroupPerm SUB"
        );
        let admin = t.get("rocketmq2").unwrap();
        assert!(admin.is_admin());
        assert_eq!(t.signer().unwrap().access_key, "rocketmq2");
        let json = AclTable::parse(
            r#"{"accounts":[{"accessKey":"RocketMQ","secretKey":"12345678","defaultGroupPerm":"SUB",
              "topicPerms":["topicA=DENY","topicB=PUB|SUB","topicC=SUB"],
              "groupPerms":["groupA=DENY","groupB=PUB|SUB","groupC=SUB"]},
              {"accessKey":"rocketmq2","secretKey":"12345678","admin":true}]}"#,
            &Namespace::default(),
        )
        .unwrap();
        assert_eq!(t, json, "YAML and its JSON form are the same table");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let t = AclTable::parse(FILE, &Namespace::default()).unwrap();
        let shown = format!("{t:?}");
        assert!(shown.contains("AK1") && !shown.contains("SK1") && !shown.contains("SK3"));
    }
}

//! Accounts: Secrets labelled `mqfleet.io/account` in the platform namespace, each holding
//! a key pair, a decimal user id, the tenant namespace it works in and, for a sub-account,
//! its parent's user id and what it may write. The operator renders them into the brokers'
//! ACL, the console authenticates requests with them, and `mq-console account` makes them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::ObjectMeta;
use mq_broker::acl::Credentials;

/// Secret key: may a sub-account write instances.
pub const ALLOW_INSTANCE_WRITE: &str = "allowInstanceWrite";
/// Secret key: may a sub-account write topics.
pub const ALLOW_TOPIC_WRITE: &str = "allowTopicWrite";

/// `"true"`/`"false"` (any case) or absent (false).
fn flag(value: &Option<String>) -> Result<bool, String> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(format!("{other:?} is not true or false")),
    }
}

/// Label marking a Secret of the platform namespace as an account.
pub const ACCOUNT_LABEL: &str = "mqfleet.io/account";

/// An account, from its Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The user id (decimal).
    pub user_id: String,
    /// The tenant namespace it works in.
    pub namespace: String,
    /// The tenant a sub-account belongs to.
    pub parent_user_id: Option<String>,
    /// Its key pair.
    pub credentials: Credentials,
    /// A sub-account may create, change and delete instances (Secret key
    /// `allowInstanceWrite: "true"`); tenants always may.
    pub allow_instance_write: bool,
    /// A sub-account may create, change and delete topics (`allowTopicWrite: "true"`);
    /// tenants always may.
    pub allow_topic_write: bool,
}

impl Account {
    /// The account a Secret describes, or what is wrong with it.
    pub fn from_secret(secret: &Secret) -> Result<Self, String> {
        let empty = Default::default();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let text = |key: &str| -> Result<Option<String>, String> {
            match data.get(key) {
                None => Ok(None),
                Some(v) => String::from_utf8(v.0.clone())
                    .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
                    .map_err(|_| format!("{key} is not UTF-8 text")),
            }
        };
        let required = |key: &str| text(key)?.ok_or_else(|| format!("{key} is missing or empty"));
        let user_id = required("userId")?;
        if user_id.len() > 20 || !user_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("userId {user_id:?} is not a decimal user id"));
        }
        Ok(Self {
            user_id,
            namespace: required("namespace")?,
            parent_user_id: text("parentUserId")?,
            credentials: Credentials::new(required("accessKey")?, required("secretKey")?),
            allow_instance_write: flag(&text(ALLOW_INSTANCE_WRITE)?)?,
            allow_topic_write: flag(&text(ALLOW_TOPIC_WRITE)?)?,
        })
    }
}

/// An account Secret the ACL cannot use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadAccount {
    /// The Secret's name (in the platform namespace).
    pub secret: String,
    /// Its resourceVersion (one Event per bad version).
    pub version: String,
    /// The tenant namespace it names, when readable: the instances it affects.
    pub namespace: Option<String>,
    /// What is wrong, for the platform admin.
    pub reason: String,
}

/// The usable accounts among `secrets`, and the unusable ones: malformed Secrets, and
/// Secrets sharing one accessKey (neither can be trusted to be the key's owner). One bad
/// Secret never costs the others their access.
pub fn read_accounts(secrets: &[std::sync::Arc<Secret>]) -> (Vec<Account>, Vec<BadAccount>) {
    let mut good: Vec<(&Secret, Account)> = Vec::new();
    let mut bad = Vec::new();
    for secret in secrets {
        match Account::from_secret(secret) {
            Ok(account) => good.push((secret, account)),
            Err(reason) => bad.push(BadAccount {
                namespace: secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get("namespace"))
                    .and_then(|v| String::from_utf8(v.0.clone()).ok())
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty()),
                secret: secret.name_any(),
                version: secret.resource_version().unwrap_or_default(),
                reason,
            }),
        }
    }
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (secret, account) in &good {
        holders
            .entry(account.credentials.access_key.clone())
            .or_default()
            .push(secret.name_any());
    }
    holders.retain(|_, names| names.len() > 1);
    let (kept, dropped): (Vec<_>, Vec<_>) = good
        .into_iter()
        .partition(|(_, a)| !holders.contains_key(&a.credentials.access_key));
    for (secret, account) in dropped {
        let name = secret.name_any();
        let others: Vec<&str> = holders[&account.credentials.access_key]
            .iter()
            .filter(|n| **n != name)
            .map(String::as_str)
            .collect();
        bad.push(BadAccount {
            reason: format!(
                "its accessKey is also the accessKey of {}; access keys must be unique, so neither is in any ACL",
                others.join(", ")
            ),
            namespace: Some(account.namespace),
            version: secret.resource_version().unwrap_or_default(),
            secret: name,
        });
    }
    bad.sort_by(|a, b| a.secret.cmp(&b.secret));
    (kept.into_iter().map(|(_, a)| a).collect(), bad)
}

/// Whether `bad` may concern the instances of namespace `ns` (an account whose namespace
/// cannot be read may be anyone's).
pub fn affects(bad: &BadAccount, ns: &str) -> bool {
    bad.namespace.as_deref().is_none_or(|n| n == ns)
}

impl Account {
    /// Whether this is a sub-account (it has a parent tenant).
    pub fn is_sub(&self) -> bool {
        self.parent_user_id.is_some()
    }

    /// The user id of the tenant this account acts for: its parent's, or its own.
    pub fn tenant_user_id(&self) -> &str {
        self.parent_user_id.as_deref().unwrap_or(&self.user_id)
    }

    /// Whether it may create, change and delete instances.
    pub fn may_write_instances(&self) -> bool {
        !self.is_sub() || self.allow_instance_write
    }

    /// Whether it may create, change and delete topics.
    pub fn may_write_topics(&self) -> bool {
        !self.is_sub() || self.allow_topic_write
    }

    /// The name of the Secret holding the account of `user_id`.
    pub fn secret_name(user_id: &str) -> String {
        format!("mqfleet-account-{user_id}")
    }

    /// The Secret holding this account in namespace `platform`.
    pub fn to_secret(&self, platform: &str) -> Secret {
        let mut data = BTreeMap::from([
            ("userId", self.user_id.clone()),
            ("namespace", self.namespace.clone()),
            ("accessKey", self.credentials.access_key.clone()),
            ("secretKey", self.credentials.secret_key.clone()),
        ]);
        if let Some(parent) = &self.parent_user_id {
            data.insert("parentUserId", parent.clone());
        }
        if self.allow_instance_write {
            data.insert(ALLOW_INSTANCE_WRITE, "true".into());
        }
        if self.allow_topic_write {
            data.insert(ALLOW_TOPIC_WRITE, "true".into());
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(Self::secret_name(&self.user_id)),
                namespace: Some(platform.to_owned()),
                labels: Some(BTreeMap::from([(
                    ACCOUNT_LABEL.to_owned(),
                    "true".to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
                    .collect(),
            ),
            type_: Some("Opaque".into()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account_secret(name: &str, data: &[(&str, &str)]) -> std::sync::Arc<Secret> {
        std::sync::Arc::new(Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        })
    }

    #[test]
    fn bad_account_secrets_are_reported_and_cost_the_others_nothing() {
        let good = |name: &str, user: &str, ak: &str| {
            account_secret(
                name,
                &[
                    ("userId", user),
                    ("namespace", "shop"),
                    ("accessKey", ak),
                    ("secretKey", "s"),
                ],
            )
        };
        let secrets = vec![
            good("a", "10", "AK10"),
            account_secret(
                "no-key",
                &[
                    ("userId", "11"),
                    ("namespace", "shop"),
                    ("accessKey", "AK11"),
                ],
            ),
            account_secret(
                "bad-user",
                &[
                    ("userId", "eleven"),
                    ("namespace", "x"),
                    ("accessKey", "K"),
                    ("secretKey", "s"),
                ],
            ),
            good("dup-1", "12", "SHARED"),
            good("dup-2", "13", "SHARED"),
            good("b", "14", "AK14"),
        ];
        let (accounts, bad) = read_accounts(&secrets);
        let users: Vec<&str> = accounts.iter().map(|a| a.user_id.as_str()).collect();
        assert_eq!(users, ["10", "14"]);
        let bad: Vec<(&str, &str)> = bad
            .iter()
            .map(|b| (b.secret.as_str(), b.reason.as_str()))
            .collect();
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert!(
            bad.contains(&("no-key", "secretKey is missing or empty")),
            "{bad:?}"
        );
        assert!(
            bad.iter()
                .any(|(s, r)| *s == "bad-user" && r.contains("not a decimal"))
        );
        assert!(
            bad.iter()
                .any(|(s, r)| *s == "dup-1" && r.contains("dup-2"))
        );
        assert!(
            bad.iter()
                .any(|(s, r)| *s == "dup-2" && r.contains("dup-1"))
        );
        let (_, bad) = read_accounts(&secrets);
        let no_key = bad.iter().find(|b| b.secret == "no-key").unwrap();
        assert!(affects(no_key, "shop") && !affects(no_key, "other"));
        let unreadable = BadAccount {
            secret: "x".into(),
            version: "1".into(),
            namespace: None,
            reason: String::new(),
        };
        assert!(affects(&unreadable, "anyone"));
    }

    #[test]
    fn an_account_round_trips_through_its_secret_with_write_permissions() {
        let sub = Account {
            user_id: "1002".into(),
            namespace: "shop".into(),
            parent_user_id: Some("1001".into()),
            credentials: Credentials::new("AK", "SK"),
            allow_instance_write: false,
            allow_topic_write: true,
        };
        let secret = sub.to_secret("mqfleet-system");
        assert_eq!(secret.name_any(), "mqfleet-account-1002");
        assert_eq!(secret.labels()[ACCOUNT_LABEL], "true");
        let back = Account::from_secret(&secret).unwrap();
        assert_eq!(back, sub);
        assert!(back.is_sub() && back.may_write_topics() && !back.may_write_instances());
        assert_eq!(back.tenant_user_id(), "1001");
        let tenant = Account {
            parent_user_id: None,
            allow_topic_write: false,
            ..sub
        };
        assert!(tenant.may_write_instances() && tenant.may_write_topics());
        assert_eq!(tenant.tenant_user_id(), "1002");
        let mut odd = tenant.to_secret("p");
        odd.data
            .as_mut()
            .unwrap()
            .insert(ALLOW_TOPIC_WRITE.into(), ByteString(b"yes".to_vec()));
        assert!(
            Account::from_secret(&odd)
                .unwrap_err()
                .contains("not true or false")
        );
    }
}

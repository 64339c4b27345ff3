//! The ACL the brokers of an instance enforce (DESIGN.md "Where things run"): one Secret
//! per instance in the platform namespace, `<base>-acl`, holding the broker's ACL file
//! (`plain_acl.yml`'s fields as JSON). It is rendered from the accounts (Secrets labelled
//! `mqfleet.io/account`), the instance's topics and groups, and its `MQEmpower` grants.
//!
//! Who gets what:
//! - the instance's admin key (derived from the platform's master key in Secret
//!   `mq-operator-admin`, see [`crate::domain::keys`]): everything; the operator signs its
//!   admin calls with it and the brokers their registrations (they get it from the
//!   Secret `<base>-admin`, whether or not tenant ACL is on);
//! - the instance's console key (also derived, in Secret `<base>-console` for the
//!   console): the console role (`console: true`), exactly the broker requests the
//!   console's reads, offset resets and dead-letter resends make, whether or not tenant
//!   ACL is on;
//! - a tenant account of the instance's namespace: every topic and group of the instance;
//! - a sub-account of that namespace: the topics and groups it owns (`spec.owner`), and
//!   what an `MQEmpower` with `subAccount: true` grants it;
//! - any other account: what an `MQEmpower` grants it, and the groups it owns here.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use mq_broker::acl::Credentials;
use serde_json::json;

use super::workloads::Names;
use crate::crd::{MQEmpower, MQGroup, MQInstance, MQTopic};
pub use crate::domain::accounts::{ACCOUNT_LABEL, Account, BadAccount, affects, read_accounts};

/// The platform admin key's Secret.
pub const ADMIN_SECRET: &str = "mq-operator-admin";
/// The key of the ACL file in an instance's ACL Secret.
pub const ACL_FILE_KEY: &str = "plain_acl.yml";

/// The platform's master key, made once and kept in [`ADMIN_SECRET`] (replicas racing to
/// make it agree: the loser reads the winner's). Fails when the OS random source cannot
/// be read: the operator then refuses to start rather than use a guessable key.
pub async fn ensure_admin(client: &Client, platform: &str) -> Result<Credentials, super::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), platform);
    loop {
        if let Some(secret) = api.get_opt(ADMIN_SECRET).await? {
            let data = secret.data.unwrap_or_default();
            let text = |k: &str| {
                data.get(k)
                    .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                    .unwrap_or_default()
            };
            let key = Credentials::new(text("accessKey"), text("secretKey"));
            if key.access_key.trim().is_empty() || key.secret_key.trim().len() < 16 {
                return Err(super::Error::MalformedAdmin(format!(
                    "the Secret {platform}/{ADMIN_SECRET} lacks accessKey or a secretKey of at least 16 characters; fix it and restart the operator (or delete it to have a new key made: every instance's admin key changes and its brokers restart)"
                )));
            }
            return Ok(key);
        }
        let bytes = |s: String| ByteString(s.into_bytes());
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(ADMIN_SECRET.into()),
                labels: Some(BTreeMap::from([(
                    super::workloads::MANAGED_BY.into(),
                    super::workloads::OPERATOR.into(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("accessKey".into(), bytes("mqfleet-platform".into())),
                (
                    "secretKey".into(),
                    bytes(crate::domain::keys::random_secret().map_err(super::Error::AdminKey)?),
                ),
            ])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => tracing::info!(secret = ADMIN_SECRET, "made the platform admin key"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The Secret `<base>-admin` holding the instance's admin key; broker and name-server pods
/// read it through non-optional `secretKeyRef`s, so they sign from their first start.
pub fn admin_secret(
    instance: &MQInstance,
    names: &Names,
    platform: &str,
    key: &Credentials,
) -> Secret {
    key_secret(instance, names, names.admin(), platform, key)
}

/// The Secret `<base>-console` holding the instance's console key, which the console
/// reads the instance's brokers with (same keys as the admin-key Secret).
pub fn console_secret(
    instance: &MQInstance,
    names: &Names,
    platform: &str,
    key: &Credentials,
) -> Secret {
    key_secret(instance, names, names.console(), platform, key)
}

/// A Secret `name` of the instance holding `key` as `accessKey`/`secretKey`.
fn key_secret(
    instance: &MQInstance,
    names: &Names,
    name: String,
    platform: &str,
    key: &Credentials,
) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(platform.into()),
            labels: Some(super::workloads::labels(instance, names, None)),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (ADMIN_ACCESS_KEY.into(), bytes(&key.access_key)),
            (ADMIN_SECRET_KEY.into(), bytes(&key.secret_key)),
        ])),
        ..Default::default()
    }
}

/// Key of the access key in an admin-key Secret.
pub const ADMIN_ACCESS_KEY: &str = "accessKey";
/// Key of the secret key in an admin-key Secret.
pub const ADMIN_SECRET_KEY: &str = "secretKey";

/// What the ACL is rendered from.
pub struct AclInputs<'a> {
    /// The instance.
    pub instance: &'a MQInstance,
    /// Its topics.
    pub topics: Vec<&'a MQTopic>,
    /// Its groups.
    pub groups: Vec<&'a MQGroup>,
    /// Its grants.
    pub empowers: Vec<&'a MQEmpower>,
    /// Every account.
    pub accounts: &'a [Account],
    /// The instance's admin key.
    pub admin: &'a Credentials,
    /// The instance's console key.
    pub console: &'a Credentials,
}

/// Permission bits as the ACL file spells them.
fn perm_name(bits: u8) -> &'static str {
    match bits & 6 {
        6 => "PUB|SUB",
        2 => "PUB",
        4 => "SUB",
        _ => "DENY",
    }
}

/// The ACL file's JSON.
pub fn render(inputs: &AclInputs) -> String {
    use crate::domain::access;
    let ns = inputs.instance.namespace().unwrap_or_default();
    let mut accounts = vec![
        json!({
            "accessKey": inputs.admin.access_key, "secretKey": inputs.admin.secret_key, "admin": true,
        }),
        json!({
            "accessKey": inputs.console.access_key, "secretKey": inputs.console.secret_key, "console": true,
        }),
    ];
    let reserved = [&inputs.admin.access_key, &inputs.console.access_key];
    for account in inputs.accounts {
        // An account may not pose as the platform's keys (nor make the file list a key
        // twice, which the brokers refuse as a whole).
        if reserved.contains(&&account.credentials.access_key) {
            continue;
        }
        let tenant_here = access::is_tenant_of(account, &ns);
        let mut topics: BTreeMap<&str, u8> = BTreeMap::new();
        let mut groups: BTreeMap<&str, u8> = BTreeMap::new();
        for t in &inputs.topics {
            let bits = access::topic_rights(account, t, &inputs.empowers).bits();
            if bits != 0 {
                *topics.entry(&t.spec.topic).or_default() |= bits;
            }
        }
        for g in &inputs.groups {
            if access::uses_group(account, g) {
                *groups.entry(&g.spec.group_id).or_default() |= access::SUBSCRIBE;
            }
        }
        // A grant on a topic that has no MQTopic (yet) still opens it, as before.
        for e in &inputs.empowers {
            if access::grant_applies(e, account) {
                *topics.entry(&e.spec.topic).or_default() |= access::relation_bits(e);
            }
        }
        if !tenant_here && topics.is_empty() && groups.is_empty() {
            continue;
        }
        let list = |m: &BTreeMap<&str, u8>| -> Vec<String> {
            m.iter()
                .map(|(name, bits)| format!("{name}={}", perm_name(*bits)))
                .collect()
        };
        accounts.push(json!({
            "accessKey": account.credentials.access_key,
            "secretKey": account.credentials.secret_key,
            "admin": false,
            "defaultTopicPerm": "DENY",
            "defaultGroupPerm": "DENY",
            "topicPerms": list(&topics),
            "groupPerms": list(&groups),
        }));
    }
    serde_json::to_string_pretty(&json!({ "accounts": accounts })).unwrap_or_default()
}

/// The instance's ACL Secret holding `file`.
pub fn secret(instance: &MQInstance, names: &Names, platform: &str, file: String) -> Secret {
    let mut labels = super::workloads::labels(instance, names, None);
    labels.insert("mqfleet.io/acl".into(), "true".into());
    Secret {
        metadata: ObjectMeta {
            name: Some(names.acl()),
            namespace: Some(platform.into()),
            labels: Some(labels),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            ACL_FILE_KEY.into(),
            ByteString(file.into_bytes()),
        )])),
        ..Default::default()
    }
}

/// Renders the ACL of `instance` from the caches and the accounts, and applies its
/// Secret (not re-sent while unchanged). Returns the account Secrets that could not be
/// used and may concern this instance.
pub async fn sync(
    ctx: &super::Context,
    instance: &MQInstance,
    names: &Names,
) -> Result<Vec<BadAccount>, super::Error> {
    let platform = &ctx.settings.namespace;
    let (accounts, bad) = read_accounts(&ctx.accounts.state());
    let ns = instance.namespace().unwrap_or_default();
    let bad: Vec<BadAccount> = bad.into_iter().filter(|b| affects(b, &ns)).collect();
    let (ns, name) = (instance.namespace(), instance.name_any());
    let mine = |k_ns: Option<String>, k_instance: &str| k_ns == ns && k_instance == name;
    let topics = ctx.topics.state();
    let groups = ctx.groups.state();
    let empowers = ctx.empowers.state();
    let live = |meta: &ObjectMeta| meta.deletion_timestamp.is_none();
    let file = render(&AclInputs {
        instance,
        topics: topics
            .iter()
            .map(AsRef::as_ref)
            .filter(|t: &&MQTopic| live(&t.metadata) && mine(t.namespace(), &t.spec.instance))
            .collect(),
        groups: groups
            .iter()
            .map(AsRef::as_ref)
            .filter(|g: &&MQGroup| live(&g.metadata) && mine(g.namespace(), &g.spec.instance))
            .collect(),
        empowers: crate::domain::claims::standing_grants(
            &empowers
                .iter()
                .map(AsRef::as_ref)
                .filter(|e: &&MQEmpower| live(&e.metadata) && mine(e.namespace(), &e.spec.instance))
                .collect::<Vec<_>>(),
        ),
        accounts: &accounts,
        admin: &ctx.instance_admin(names),
        console: &ctx.instance_console(names),
    });
    super::apply::apply_object(ctx, platform, &secret(instance, names, platform, file)).await?;
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn obj<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> K {
        serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": "shop"}, "spec": spec,
        }))
        .unwrap()
    }

    fn account(user: &str, ns: &str, parent: Option<&str>) -> Account {
        Account {
            user_id: user.into(),
            namespace: ns.into(),
            parent_user_id: parent.map(Into::into),
            credentials: Credentials::new(format!("AK{user}"), format!("SK{user}")),
            allow_instance_write: false,
            allow_topic_write: false,
        }
    }

    fn perms(rendered: &str, ak: &str) -> Option<(Vec<String>, Vec<String>)> {
        let v: Value = serde_json::from_str(rendered).unwrap();
        let a = v["accounts"]
            .as_array()?
            .iter()
            .find(|a| a["accessKey"] == ak)?;
        let strings = |k: &str| {
            a[k].as_array()
                .map(|l| l.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        Some((strings("topicPerms"), strings("groupPerms")))
    }

    #[test]
    fn tenants_own_everything_subs_what_they_own_others_what_is_granted() {
        let instance: MQInstance = obj(
            "MQInstance",
            "i",
            json!({"instanceName": "i", "cluster": "c"}),
        );
        let t1: MQTopic = obj(
            "MQTopic",
            "t1",
            json!({"instance": "i", "topic": "ORDERS", "orderType": 0}),
        );
        let t2: MQTopic = obj(
            "MQTopic",
            "t2",
            json!({"instance": "i", "topic": "AUDIT", "orderType": 0, "owner": "11"}),
        );
        let g1: MQGroup = obj(
            "MQGroup",
            "g1",
            json!({"instance": "i", "groupId": "GID_A"}),
        );
        let g2: MQGroup = obj(
            "MQGroup",
            "g2",
            json!({"instance": "i", "groupId": "GID_OTHER", "owner": "20"}),
        );
        let e: MQEmpower = obj(
            "MQEmpower",
            "e",
            json!({"instance": "i", "topic": "ORDERS", "empowerUser": 20, "relation": 4}),
        );
        let accounts = [
            account("10", "shop", None),
            account("11", "shop", Some("10")),
            account("20", "other", None),
            account("30", "third", None),
        ];
        let admin = Credentials::new("platform", "secret");
        let console = Credentials::new("mqfleet-console-i", "console-secret");
        let rendered = render(&AclInputs {
            instance: &instance,
            topics: vec![&t1, &t2],
            groups: vec![&g1, &g2],
            empowers: vec![&e],
            accounts: &accounts,
            admin: &admin,
            console: &console,
        });
        let (topics, groups) = perms(&rendered, "AK10").unwrap();
        assert_eq!(topics, ["AUDIT=PUB|SUB", "ORDERS=PUB|SUB"]);
        assert_eq!(groups, ["GID_A=SUB", "GID_OTHER=SUB"]);
        let (topics, groups) = perms(&rendered, "AK11").unwrap();
        assert_eq!(topics, ["AUDIT=PUB|SUB"]);
        assert!(groups.is_empty());
        let (topics, groups) = perms(&rendered, "AK20").unwrap();
        assert_eq!(topics, ["ORDERS=SUB"]);
        assert_eq!(groups, ["GID_OTHER=SUB"]);
        assert!(perms(&rendered, "AK30").is_none(), "no access, no entry");
        let v: Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(v["accounts"][0]["admin"], true);
    }

    #[test]
    fn the_console_key_gets_the_console_role_with_acl_on_or_off() {
        let admin = Credentials::new("mqfleet-admin-i", "admin-secret");
        let console = Credentials::new("mqfleet-console-i", "console-secret");
        // A tenant account trying to pose as the console key is left out.
        let mut impostor = account("40", "shop", None);
        impostor.credentials = Credentials::new("mqfleet-console-i", "guess");
        let accounts = [account("10", "shop", None), impostor];
        for acl in [false, true] {
            let instance: MQInstance = obj(
                "MQInstance",
                "i",
                json!({"instanceName": "i", "cluster": "c", "aclEnabled": acl}),
            );
            let rendered = render(&AclInputs {
                instance: &instance,
                topics: vec![],
                groups: vec![],
                empowers: vec![],
                accounts: &accounts,
                admin: &admin,
                console: &console,
            });
            let v: Value = serde_json::from_str(&rendered).unwrap();
            let entries: Vec<&Value> = v["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["accessKey"] == "mqfleet-console-i")
                .collect();
            assert_eq!(entries.len(), 1, "{rendered}");
            assert_eq!(entries[0]["secretKey"], "console-secret");
            assert_eq!(entries[0]["console"], true);
            assert!(entries[0].get("admin").is_none());
            // The brokers read the file, and the console entry is a console key there.
            let table = mq_broker::acl::AclTable::parse(&rendered, &Default::default()).unwrap();
            assert!(table.get("mqfleet-console-i").unwrap().is_console());
        }
    }

    #[test]
    fn the_console_key_secret_sits_beside_the_admin_key_secret() {
        let instance: MQInstance = obj(
            "MQInstance",
            "i",
            json!({"instanceName": "i", "cluster": "c", "instanceId": "ORDERS_PROD"}),
        );
        let names = Names::for_id("ORDERS_PROD".into());
        let master = Credentials::new("mqfleet-platform", "master-secret");
        let key = crate::domain::keys::console_key(&master, "ORDERS_PROD");
        let secret = console_secret(&instance, &names, "mqfleet-system", &key);
        assert_eq!(secret.metadata.name.as_deref(), Some("orders-prod-console"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("mqfleet-system"));
        let data = secret.data.unwrap();
        assert_eq!(data[ADMIN_ACCESS_KEY].0, b"mqfleet-console-orders-prod");
        assert_eq!(data[ADMIN_SECRET_KEY].0, key.secret_key.as_bytes());
    }
}

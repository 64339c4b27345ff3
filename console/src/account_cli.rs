//! `mq-console account create|list|rotate|delete`: the platform admin's account commands.
//! An account is a Secret of the platform namespace (`mqfleet.io/account`), so the
//! operator's ACL and the console read the same thing.

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use mq_broker::acl::Credentials;
use mq_operator::domain::accounts::{ACCOUNT_LABEL, Account, read_accounts};
use mq_operator::domain::keys::random_secret;
use serde_json::json;

/// What `account create` makes.
pub struct NewAccount {
    /// Tenant namespace (a sub-account: its parent's; may be omitted).
    pub namespace: Option<String>,
    /// The parent tenant of a sub-account.
    pub parent_user_id: Option<String>,
    /// A sub-account may write instances.
    pub allow_instance_write: bool,
    /// A sub-account may write topics.
    pub allow_topic_write: bool,
}

/// Every readable account of `platform`.
async fn accounts(api: &Api<Secret>) -> anyhow::Result<Vec<Account>> {
    let list = api
        .list(&ListParams::default().labels(ACCOUNT_LABEL))
        .await
        .context("listing the account Secrets")?;
    let secrets: Vec<_> = list.items.into_iter().map(std::sync::Arc::new).collect();
    Ok(read_accounts(&secrets).0)
}

/// A fresh key pair: `MQAK` + 20 upper-case hex digits, and 40 hex digits of secret.
fn key_pair() -> anyhow::Result<Credentials> {
    let (a, s) = (random_secret()?, random_secret()?);
    Ok(Credentials::new(
        format!("MQAK{}", a[..20].to_ascii_uppercase()),
        s[..40].to_owned(),
    ))
}

/// A fresh 16-digit user id not in `taken`.
fn user_id(taken: &[Account]) -> anyhow::Result<String> {
    loop {
        let hex = random_secret()?;
        let digits: String = hex
            .bytes()
            .filter_map(|b| (b as char).to_digit(16))
            .map(|d| char::from(b'0' + (d % 10) as u8))
            .take(16)
            .collect();
        let id = format!("1{}", &digits[1..]);
        if !taken.iter().any(|a| a.user_id == id) {
            return Ok(id);
        }
    }
}

/// Makes an account; prints `{"userId","accessKey","secretKey"}`.
pub async fn create(client: Client, platform: &str, new: NewAccount) -> anyhow::Result<String> {
    let api: Api<Secret> = Api::namespaced(client, platform);
    let existing = accounts(&api).await?;
    let namespace = match &new.parent_user_id {
        Some(parent) => {
            let Some(p) = existing.iter().find(|a| &a.user_id == parent) else {
                bail!("there is no account with user id {parent}");
            };
            if p.is_sub() {
                bail!("{parent} is itself a sub-account; a sub-account's parent is a tenant");
            }
            if new.namespace.as_ref().is_some_and(|ns| ns != &p.namespace) {
                bail!(
                    "a sub-account works in its parent's namespace {:?}; leave --namespace out or give that one",
                    p.namespace
                );
            }
            p.namespace.clone()
        }
        None => {
            let Some(ns) = new.namespace.clone() else {
                bail!("--namespace is required for a tenant account");
            };
            if let Some(t) = existing.iter().find(|a| a.namespace == ns && !a.is_sub()) {
                bail!(
                    "namespace {ns:?} already has a tenant (user id {}); a namespace has one tenant",
                    t.user_id
                );
            }
            if new.allow_instance_write || new.allow_topic_write {
                bail!(
                    "--allow-instance-write and --allow-topic-write are for sub-accounts (tenants may always write)"
                );
            }
            ns
        }
    };
    let account = Account {
        user_id: user_id(&existing)?,
        namespace,
        parent_user_id: new.parent_user_id,
        credentials: key_pair()?,
        allow_instance_write: new.allow_instance_write,
        allow_topic_write: new.allow_topic_write,
    };
    api.create(&PostParams::default(), &account.to_secret(platform))
        .await
        .context("writing the account Secret")?;
    Ok(keys_line(&account))
}

/// The one JSON line `create` and `rotate` print: the user id and its key pair.
fn keys_line(account: &Account) -> String {
    json!({"userId": account.user_id, "accessKey": account.credentials.access_key,
           "secretKey": account.credentials.secret_key})
    .to_string()
}

/// One JSON line per account (no secret keys).
pub async fn list(client: Client, platform: &str) -> anyhow::Result<String> {
    let api: Api<Secret> = Api::namespaced(client, platform);
    let lines: Vec<String> = accounts(&api)
        .await?
        .iter()
        .map(|a| {
            json!({"userId": a.user_id, "namespace": a.namespace, "parentUserId": a.parent_user_id,
                   "accessKey": a.credentials.access_key,
                   "allowInstanceWrite": a.allow_instance_write, "allowTopicWrite": a.allow_topic_write})
            .to_string()
        })
        .collect();
    Ok(lines.join("\n"))
}

/// Gives `user_id` a new key pair (the old one stops working); prints it.
pub async fn rotate(client: Client, platform: &str, user_id: &str) -> anyhow::Result<String> {
    let api: Api<Secret> = Api::namespaced(client, platform);
    let Some(mut account) = accounts(&api)
        .await?
        .into_iter()
        .find(|a| a.user_id == user_id)
    else {
        bail!("there is no account with user id {user_id}");
    };
    account.credentials = key_pair()?;
    let name = Account::secret_name(user_id);
    let mut secret = api
        .get(&name)
        .await
        .with_context(|| format!("reading Secret {name}"))?;
    secret.data = account.to_secret(platform).data;
    api.replace(&name, &PostParams::default(), &secret)
        .await
        .context("writing the account Secret")?;
    Ok(keys_line(&account))
}

/// Deletes the account of `user_id` (and refuses while it has sub-accounts).
pub async fn delete(client: Client, platform: &str, user_id: &str) -> anyhow::Result<String> {
    let api: Api<Secret> = Api::namespaced(client, platform);
    let all = accounts(&api).await?;
    if !all.iter().any(|a| a.user_id == user_id) {
        bail!("there is no account with user id {user_id}");
    }
    let subs: Vec<&str> = all
        .iter()
        .filter(|a| a.parent_user_id.as_deref() == Some(user_id))
        .map(|a| a.user_id.as_str())
        .collect();
    if !subs.is_empty() {
        bail!("{user_id} still has sub-accounts {subs:?}; delete them first");
    }
    api.delete(&Account::secret_name(user_id), &DeleteParams::default())
        .await
        .context("deleting the account Secret")?;
    Ok(json!({"deleted": user_id}).to_string())
}

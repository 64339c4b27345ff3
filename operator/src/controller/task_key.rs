//! The console's task key: the Secret [`CONSOLE_TASK_KEY_SECRET`] in the platform
//! namespace (key `key`, 32 random bytes as hex) that every console replica signs its
//! paged-query task ids with, so any replica answers any page. Made once at start, like
//! the platform's master key ([`super::acl::ensure_admin`]); replicas racing to make it
//! agree (the loser reads the winner's). The operator never changes an existing one.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

pub use crate::domain::keys::CONSOLE_TASK_KEY_SECRET;

/// The key of the task key in its Secret.
pub const TASK_KEY: &str = "key";

/// Makes the console's task key Secret unless it exists. Fails when the OS random source
/// cannot be read (a guessable key would let anyone forge task ids) or the API fails; an
/// existing Secret without a usable key is reported in the log and left to the platform
/// admin.
pub async fn ensure_console_task_key(client: &Client, platform: &str) -> Result<(), super::Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), platform);
    if let Some(secret) = api.get_opt(CONSOLE_TASK_KEY_SECRET).await? {
        if let Some(problem) = unusable(&secret) {
            tracing::error!(secret = CONSOLE_TASK_KEY_SECRET, %problem, "the console's task key is unusable; fix or delete the Secret");
        }
        return Ok(());
    }
    let key = crate::domain::keys::random_secret().map_err(super::Error::AdminKey)?;
    match api
        .create(&PostParams::default(), &task_key_secret(&key))
        .await
    {
        Ok(_) => tracing::info!(
            secret = CONSOLE_TASK_KEY_SECRET,
            "made the console's task key"
        ),
        // Another replica made it first: its key stands.
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The Secret holding task key `key`.
fn task_key_secret(key: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(CONSOLE_TASK_KEY_SECRET.into()),
            labels: Some(BTreeMap::from([(
                super::workloads::MANAGED_BY.into(),
                super::workloads::OPERATOR.into(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            TASK_KEY.into(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// What is wrong with an existing task key Secret: no `key`, or one under 32 characters.
fn unusable(secret: &Secret) -> Option<String> {
    let key = secret.data.as_ref().and_then(|d| d.get(TASK_KEY));
    match key {
        None => Some(format!("it has no {TASK_KEY:?}")),
        Some(k) if String::from_utf8_lossy(&k.0).trim().len() < 32 => {
            Some(format!("its {TASK_KEY:?} is shorter than 32 characters"))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_task_key_is_64_hex_digits_in_its_named_secret() {
        let key = crate::domain::keys::random_secret().unwrap();
        let secret = task_key_secret(&key);
        assert_eq!(secret.metadata.name.as_deref(), Some("mq-console-task-key"));
        let stored = &secret.data.as_ref().unwrap()[TASK_KEY].0;
        assert_eq!(stored.len(), 64);
        assert!(stored.iter().all(u8::is_ascii_hexdigit));
        assert!(unusable(&secret).is_none());
        assert!(
            unusable(&task_key_secret("short"))
                .unwrap()
                .contains("shorter")
        );
        assert!(unusable(&Secret::default()).unwrap().contains("no"));
    }
}

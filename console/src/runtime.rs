//! Runtime reads from an instance's brokers, found through its name servers, each call
//! bounded by a timeout and signed with the instance's console key.
//!
//! The core takes a [`Target`] (name-server addresses, credentials, the instance's
//! namespace), so it runs against any broker; [`lookup`] is the thin Kubernetes layer that
//! makes a `Target` of an `MQInstance`.

pub mod consumption;
pub mod lookup;
pub mod messages;
pub mod trend;
pub mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mq_broker::client::{AdminClient, AdminError, Credentials};
use mq_broker::names::Namespace;

use crate::envelope::ApiError;

/// Most cached connections; past it the cache starts over (connections then close).
const MAX_CLIENTS: usize = 256;

/// Where an instance's servers are and how to sign calls to them.
#[derive(Clone, Debug)]
pub struct Target {
    /// The instance id (answers name it).
    pub instance_id: String,
    /// Name-server addresses (`host:port`), tried in order.
    pub name_servers: Vec<String>,
    /// The console key; `None` calls unsigned (only works while the instance's ACL is off).
    pub credentials: Option<Credentials>,
    /// The instance's namespace: names go to brokers bare and come back shown bare.
    pub names: Namespace,
}

impl Target {
    /// A name as the user gave it (`<instanceId>%` removed).
    pub fn bare(&self, name: &str) -> String {
        self.names.bare(name)
    }
}

/// One broker master of an instance, with its (cached) admin connection.
#[derive(Clone, Debug)]
pub struct Broker {
    /// Broker name (`broker-0`).
    pub name: String,
    /// The connection.
    pub client: Arc<AdminClient>,
}

/// Cache key: address and the key pair calls are signed with (a rotated secret gets a
/// new connection rather than one signing with the old secret).
type ClientKey = (String, Option<(String, String)>);

/// Broker reads for the console's runtime endpoints.
pub struct Runtime {
    /// Bound on each call.
    pub timeout: Duration,
    clients: Mutex<HashMap<ClientKey, Arc<AdminClient>>>,
    targets: Mutex<HashMap<String, (Instant, Target)>>,
}

impl Runtime {
    /// Reads bounded by `timeout` per call.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            clients: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// A connection to `addr` signing with `credentials`: the cached one, or a new one.
    pub async fn client(
        &self,
        addr: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Arc<AdminClient>, AdminError> {
        let key = (
            addr.to_owned(),
            credentials.map(|c| (c.access_key.clone(), c.secret_key.clone())),
        );
        if let Some(c) = self.lock_clients().get(&key) {
            return Ok(c.clone());
        }
        let mut client = AdminClient::connect(addr, self.timeout).await?;
        if let Some(c) = credentials {
            client = client.with_credentials(c.clone());
        }
        let client = Arc::new(client);
        let mut cache = self.lock_clients();
        if cache.len() >= MAX_CLIENTS {
            cache.clear();
        }
        Ok(cache.entry(key).or_insert(client).clone())
    }

    /// Drops the cached connections to `addr` after `error`, when the connection failed
    /// (the next call reconnects).
    pub fn failed(&self, addr: &str, error: &AdminError) {
        if matches!(error, AdminError::Connection { .. }) {
            self.lock_clients().retain(|(a, _), _| a != addr);
        }
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, Arc<AdminClient>>> {
        // A poisoned cache only holds connections: keep using it.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every broker master (id 0) the name servers of `t` list, draining ones included
    /// (they still hold messages), sorted by name. `ONS_INVOKE_ERROR` when no name server
    /// answers or no broker is reachable.
    pub async fn brokers(&self, t: &Target) -> Result<Vec<Broker>, ApiError> {
        let mut why = Vec::new();
        for addr in &t.name_servers {
            let info = match self.client(addr, t.credentials.as_ref()).await {
                Ok(ns) => ns.cluster_info().await,
                Err(e) => Err(e),
            };
            let info = match info {
                Ok(info) => info,
                Err(e) => {
                    self.failed(addr, &e);
                    why.push(format!("name server {e}"));
                    continue;
                }
            };
            let mut out = Vec::new();
            for (name, data) in &info.broker_addr_table {
                let Some(baddr) = data.broker_addrs.get(&0) else {
                    continue;
                };
                match self.client(baddr, t.credentials.as_ref()).await {
                    Ok(client) => out.push(Broker {
                        name: name.clone(),
                        client,
                    }),
                    Err(e) => why.push(format!("broker {name}: {e}")),
                }
            }
            if out.is_empty() {
                why.push(format!("name server {addr} lists no reachable broker"));
                continue;
            }
            return Ok(out);
        }
        Err(ApiError::invoke(format!(
            "instance {} is not ready: {}",
            t.instance_id,
            if why.is_empty() {
                "it has no name server yet".to_owned()
            } else {
                why.join("; ")
            }
        )))
    }

    /// A cached target of `instance_id` younger than `max_age`.
    fn cached_target(&self, instance_id: &str, max_age: Duration) -> Option<Target> {
        let cache = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(instance_id)
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, t)| t.clone())
    }

    /// Remembers `t` for a while (the lookup's cache; tests without a cluster pin an
    /// instance's target with it).
    pub fn remember_target(&self, t: &Target) {
        let mut cache = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CLIENTS {
            cache.clear();
        }
        cache.insert(t.instance_id.clone(), (Instant::now(), t.clone()));
    }

    /// Forgets the cached target of `instance_id` (its servers moved or are not ready).
    pub fn forget_target(&self, instance_id: &str) {
        let mut cache = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        cache.remove(instance_id);
    }
}

/// `ONS_INVOKE_ERROR` for a failed call to `broker`.
pub fn broker_error(broker: &Broker, e: &AdminError) -> ApiError {
    ApiError::invoke(format!("broker {}: {e}", broker.name))
}

/// Whether `e` says the broker does not have the thing asked about (a topic or group that
/// lives on other brokers only).
pub fn absent_here(e: &AdminError) -> bool {
    e.is_not_found()
}

/// Now in epoch ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

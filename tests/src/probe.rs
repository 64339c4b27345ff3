//! Readiness probes. Each returns `Err(reason)` while not ready; callers poll them inside
//! bounded loops and report the last reason on timeout.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::GetParams;
use kube::{Api, Client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::chain;

/// Longest reason kept from a failed probe (readyz failures list every check).
const MAX_REASON: usize = 400;

/// The outcome of one probe.
pub type Probe = std::result::Result<(), String>;

/// etcd's `GET /health` reports `"health":"true"`.
///
/// A raw HTTP/1.0 request keeps an HTTP client crate out of the dependencies.
pub async fn etcd_health(port: u16) -> Probe {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    if text.contains(r#""health":"true""#) {
        Ok(())
    } else {
        Err(shorten(text.lines().last().unwrap_or("empty response")))
    }
}

/// kube-apiserver's `GET /readyz` (with the admin token) returns `ok`.
pub async fn apiserver_readyz(client: Client) -> Probe {
    // `Request::new("").get("readyz")` builds a plain `GET /readyz` without naming `http`.
    let request = kube::core::Request::new("")
        .get("readyz", &GetParams::default())
        .map_err(|e| e.to_string())?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| shorten(&chain(&e)))?;
    if text.trim() == "ok" {
        Ok(())
    } else {
        Err(shorten(&text))
    }
}

/// `serviceaccount/default` in `default` has its token secret (before that, the
/// ServiceAccount admission plugin rejects Pods).
pub async fn default_service_account(client: Client) -> Probe {
    let api: Api<ServiceAccount> = Api::namespaced(client, "default");
    match api.get_opt("default").await {
        Ok(Some(sa)) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()) => Ok(()),
        Ok(Some(_)) => Err("serviceaccount/default has no token secret yet".into()),
        Ok(None) => Err("serviceaccount/default not created yet".into()),
        Err(e) => Err(shorten(&chain(&e))),
    }
}

/// `nodes` Nodes of the process kubelet are Ready and schedulable (the not-ready taint
/// the admission plugin adds is gone), and the default StorageClass exists.
pub async fn nodes_ready(client: Client, nodes: usize) -> Probe {
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::storage::v1::StorageClass;
    use kube::api::ListParams;
    let api: Api<Node> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default().labels("node.mqfleet.io/testbed=true"))
        .await
        .map_err(|e| shorten(&chain(&e)))?;
    let ready = list
        .items
        .iter()
        .filter(|n| {
            let ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let tainted = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| !t.is_empty());
            ready && !tainted
        })
        .count();
    if ready < nodes {
        return Err(format!("{ready} of {nodes} nodes Ready and untainted"));
    }
    let classes: Api<StorageClass> = Api::all(client);
    match classes
        .get_opt(crate::node::provisioner::DEFAULT_CLASS)
        .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the default StorageClass is not created yet".into()),
        Err(e) => Err(shorten(&chain(&e))),
    }
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_REASON) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

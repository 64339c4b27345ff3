//! `mq-testpod`: a small HTTP server the end-to-end suites run as a Pod (image
//! `mqfleet/mq-testpod`) to look at the node from inside: its files, resolver, Services
//! and the API through in-cluster config.
//!
//! Routes (all `GET`): `/` (pod name and address), `/ready` (200, or 503 after
//! `/set-ready?v=false`), `/file?path=`, `/write?path=&data=`, `/resolve?name=`,
//! `/get?url=http://host:port/path`, `/env?name=`, `/kube/pods?namespace=`,
//! `/exit?code=`.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on reading a request head.
const MAX_HEAD: usize = 16 * 1024;
/// Bound on outgoing calls (`/get`, `/kube/pods`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .skip(1)
        .find_map(|a| a.strip_prefix("--listen=").map(str::to_owned))
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen={listen}"))?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    eprintln!("mq-testpod listening on {addr}");
    let ready = Arc::new(AtomicBool::new(true));
    loop {
        let (stream, _) = listener.accept().await?;
        let ready = ready.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(stream, ready).await {
                eprintln!("request failed: {e:#}");
            }
        });
    }
}

async fn serve(mut stream: TcpStream, ready: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0 && head.len() < MAX_HEAD, "bad request head");
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let target = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let params = parse_query(query);
    let (status, body) = route(path, &params, &ready).await;
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    if path == "/exit" {
        let code = params.get("code").and_then(|c| c.parse().ok()).unwrap_or(0);
        std::process::exit(code);
    }
    Ok(())
}

async fn route(
    path: &str,
    params: &HashMap<String, String>,
    ready: &AtomicBool,
) -> (&'static str, String) {
    let param = |k: &str| params.get(k).cloned().unwrap_or_default();
    let result: anyhow::Result<String> = match path {
        "/" => Ok(format!(
            "{} {}",
            std::env::var("POD_NAME").unwrap_or_else(|_| hostname()),
            std::env::var("POD_IP").unwrap_or_default()
        )),
        "/ready" if ready.load(Ordering::SeqCst) => Ok("ready".into()),
        "/ready" => return ("503 Service Unavailable", "not ready".into()),
        "/set-ready" => {
            ready.store(param("v") != "false", Ordering::SeqCst);
            Ok("ok".into())
        }
        "/file" => std::fs::read_to_string(param("path")).map_err(Into::into),
        "/write" => std::fs::write(param("path"), param("data"))
            .map(|()| "ok".into())
            .map_err(Into::into),
        "/resolve" => resolve(&param("name")).await,
        "/get" => tokio::time::timeout(CALL_TIMEOUT, http_get(&param("url")))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out"))),
        "/env" => std::env::var(param("name")).map_err(Into::into),
        "/kube/pods" => tokio::time::timeout(CALL_TIMEOUT, list_pods(&param("namespace")))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out"))),
        "/exit" => Ok("bye".into()),
        _ => return ("404 Not Found", format!("no route {path}")),
    };
    match result {
        Ok(body) => ("200 OK", body),
        Err(e) => ("500 Internal Server Error", format!("{e:#}")),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Resolves through the C library, so `/etc/hosts` and `/etc/resolv.conf` (with its
/// search list) apply exactly as for any program in the Pod.
async fn resolve(name: &str) -> anyhow::Result<String> {
    let name = name.to_owned();
    let addrs = tokio::task::spawn_blocking(move || (name.as_str(), 0).to_socket_addrs()).await??;
    let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
    ips.sort();
    ips.dedup();
    Ok(ips.join(","))
}

/// A plain HTTP/1.0 GET returning the body.
async fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").context("only http:// URLs")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // Like any HTTP client: no port means 80.
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut stream = TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    anyhow::ensure!(
        head.contains(" 200 "),
        "{}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_owned())
}

/// Lists Pods with in-cluster configuration, as a controller running as a Pod would.
async fn list_pods(namespace: &str) -> anyhow::Result<String> {
    use k8s_openapi::api::core::v1::Pod;
    mq_testbed::kubeclient::install_crypto_provider();
    let client = kube::Client::try_default().await?;
    let api: kube::Api<Pod> = kube::Api::namespaced(client, namespace);
    let pods = api.list(&Default::default()).await?;
    let mut names: Vec<String> = pods
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    Ok(names.join(","))
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// Percent-decoding (and `+` as space), enough for test parameters.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

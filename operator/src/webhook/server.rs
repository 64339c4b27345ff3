//! The webhook's HTTPS server: `POST /validate` with an `AdmissionReview`, answered by
//! [`super::validate`]. The certificate can be swapped while serving (renewal).

use super::certs::ServingCert;
use super::validate;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// Bound on a TLS handshake, so a silent peer cannot hold a connection slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one client may take of the server: a slow or huge request has its connection
/// closed, so it cannot hold a connection slot (and memory) that others need.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time to send a request's head, and then again its body.
    pub read_timeout: Duration,
    /// Largest body read.
    pub max_body: usize,
}

impl Default for Limits {
    /// 10 s to send the head and 10 s the body (the API server waits at most
    /// `timeoutSeconds`, 5 s, for the whole review); 3 MiB, the most the API server sends.
    fn default() -> Self {
        Self {
            read_timeout: Duration::from_secs(10),
            max_body: 3 << 20,
        }
    }
}

/// The rustls configuration serving `cert`.
pub fn tls_config(cert: &ServingCert) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("serving certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| format!("serving key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("serving certificate: {e}"))?;
    // The API server speaks HTTP/2 when offered; this server only speaks HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The configuration in force; replaced when the certificate is renewed.
pub type SharedTls = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// Serves admission reviews on `listener` forever.
pub async fn serve(listener: TcpListener, tls: SharedTls, lookup: validate::Lookup) {
    serve_with(listener, tls, lookup, Limits::default()).await
}

/// Serves admission reviews on `listener` forever, within `limits`.
pub async fn serve_with(
    listener: TcpListener,
    tls: SharedTls,
    lookup: validate::Lookup,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let config = tls
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let lookup = lookup.clone();
        tokio::spawn(async move {
            let accept = TlsAcceptor::from(config).accept(stream);
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service =
                hyper::service::service_fn(move |req| answer(req, lookup.clone(), limits));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.read_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "webhook: connection ended");
            }
            drop(slot);
        });
    }
}

type Answer = Response<Full<Bytes>>;

async fn answer(
    req: Request<Incoming>,
    lookup: validate::Lookup,
    limits: Limits,
) -> Result<Answer, std::convert::Infallible> {
    if req.uri().path() != "/validate" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found: POST /validate"));
    }
    if req.method() != Method::POST {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an AdmissionReview",
        ));
    }
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Ok(closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a review body is at most {} bytes", limits.max_body),
        ));
    }
    let read = Limited::new(req.into_body(), limits.max_body).collect();
    let body = match tokio::time::timeout(limits.read_timeout, read).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(closing(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a review body is at most {} bytes", limits.max_body),
            ));
        }
        Ok(Err(e)) => {
            return Ok(closing(
                StatusCode::BAD_REQUEST,
                &format!("reading the body: {e}"),
            ));
        }
        Err(_) => {
            return Ok(closing(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the body did not arrive within {:?}", limits.read_timeout),
            ));
        }
    };
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                &format!("not an AdmissionReview: {e}"),
            ));
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, &format!("no request: {e}"))),
    };
    let response = match validate::review(&lookup, &request).await {
        Ok(None) => AdmissionResponse::from(&request),
        Ok(Some(refusal)) => {
            tracing::info!(kind = %request.kind.kind, name = %request.name, namespace = ?request.namespace, %refusal, "webhook refused");
            AdmissionResponse::from(&request).deny(refusal)
        }
        // Like the webhook's failurePolicy: an error here lets the request through, and
        // the operator's status conditions still catch what the webhook would have refused.
        Err(e) => {
            tracing::warn!(kind = %request.kind.kind, name = %request.name, error = %e, "webhook could not decide; allowing");
            AdmissionResponse::from(&request)
        }
    };
    let json = serde_json::to_vec(&response.into_review()).unwrap_or_default();
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json)))
        .unwrap_or_default())
}

fn plain(status: StatusCode, text: &str) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response
}

/// A refusal after which the connection is closed: the rest of the request was not read,
/// so the connection cannot carry another one (and the client is not waited for).
fn closing(status: StatusCode, text: &str) -> Answer {
    let mut response = plain(status, text);
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::certs::ServingCert;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::ServerName;

    const NAME: &str = "mq-operator-webhook.mqfleet-system.svc";
    /// The bound under test, short so the test is quick.
    const LIMITS: Limits = Limits {
        read_timeout: Duration::from_millis(800),
        max_body: 64 * 1024,
    };
    /// Longest any step of the test may take before it counts as hanging.
    const HANG: Duration = Duration::from_secs(10);

    /// A real server on loopback with a fresh certificate; the client TLS config trusts
    /// its bundle. The lookup's API server is unreachable: the reviews sent here need none.
    async fn start() -> (std::net::SocketAddr, TlsConnector) {
        let cert =
            ServingCert::generate(&[NAME.to_owned()], k8s_openapi::jiff::Timestamp::now()).unwrap();
        let tls = Arc::new(RwLock::new(tls_config(&cert).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // As `main` does: kube's HTTPS connector takes the process default provider, which
        // rustls cannot pick by itself when a build unifies both of its backends (the
        // workspace's test build does: a client dev-dependency brings aws-lc-rs).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let lookup = validate::Lookup::start(
            kube::Client::try_from(config).unwrap(),
            "mqfleet-system",
            "mqfleet-cluster-profiles",
        );
        tokio::spawn(serve_with(listener, tls, lookup, LIMITS));
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(cert.bundle_pem().as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (addr, TlsConnector::from(Arc::new(client)))
    }

    async fn connect(
        addr: std::net::SocketAddr,
        tls: &TlsConnector,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(NAME).unwrap();
        tokio::time::timeout(HANG, tls.connect(name, tcp))
            .await
            .expect("handshake in time")
            .expect("handshake")
    }

    /// Everything the server sends until it closes the connection, and when it closed.
    async fn until_closed(
        stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) -> (String, Instant) {
        let mut out = Vec::new();
        let read = tokio::time::timeout(HANG, async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server did not close the connection");
        (String::from_utf8_lossy(&out).into_owned(), Instant::now())
    }

    fn review() -> String {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "mqfleet.io", "version": "v1alpha1", "kind": "MQGroup"},
                "resource": {"group": "mqfleet.io", "version": "v1alpha1", "resource": "mqgroups"},
                "operation": "DELETE", "userInfo": {}, "name": "g", "namespace": "t",
            },
        })
        .to_string()
    }

    #[tokio::test]
    async fn slow_and_huge_requests_are_cut_off_while_a_normal_review_answers() {
        let (addr, tls) = start().await;

        // Head sent, then the body stalls after 10 of 100 bytes.
        let mut stalled_body = connect(addr, &tls).await;
        let started = Instant::now();
        stalled_body
            .write_all(
                b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"apiVersi",
            )
            .await
            .unwrap();
        // Half a head, then nothing.
        let mut stalled_head = connect(addr, &tls).await;
        stalled_head
            .write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();

        // Meanwhile a normal review is answered at once.
        let mut normal = connect(addr, &tls).await;
        let body = review();
        let request = format!(
            "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        normal.write_all(request.as_bytes()).await.unwrap();
        let (answer, answered) = until_closed(&mut normal).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"uid\":\"u-1\""), "{answer}");
        assert!(answer.contains("\"allowed\":true"), "{answer}");
        assert!(
            answered - started < LIMITS.read_timeout,
            "the normal review did not wait for the stalled ones"
        );

        let (answer, closed) = until_closed(&mut stalled_body).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let took = closed - started;
        assert!(
            took >= LIMITS.read_timeout && took < LIMITS.read_timeout * 3,
            "closed after {took:?}"
        );
        let (answer, closed) = until_closed(&mut stalled_head).await;
        assert!(!answer.contains("200"), "{answer}");
        assert!(
            closed - started < LIMITS.read_timeout * 3,
            "closed after {:?}",
            closed - started
        );

        // A body over the limit, declared or streamed, is refused without reading it all.
        let mut declared = connect(addr, &tls).await;
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            LIMITS.max_body + 1
        );
        declared.write_all(head.as_bytes()).await.unwrap();
        let (answer, _) = until_closed(&mut declared).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let mut chunked = connect(addr, &tls).await;
        chunked
            .write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "a".repeat(16 * 1024));
        for _ in 0..(LIMITS.max_body / (16 * 1024) + 1) {
            if chunked.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        let (answer, _) = until_closed(&mut chunked).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
}

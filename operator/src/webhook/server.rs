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

/// Largest review body read (the API server caps objects at about 3 MiB).
const MAX_BODY: usize = 8 << 20;
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// Bound on a TLS handshake, so a silent peer cannot hold a connection slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
            let service = hyper::service::service_fn(move |req| answer(req, lookup.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
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
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                &format!("reading the body: {e}"),
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

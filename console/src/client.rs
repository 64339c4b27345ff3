//! A signed HTTP client of the console API: what `mq-console call`, the end-to-end suites
//! and the benchmark use. It signs exactly as spec §1 says, with a `__preventCache` that
//! never repeats within the process (the server refuses a repeated request as a replay).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::params::Params;
use crate::sign;

/// Why a call got no envelope.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The URL is not `http://host:port`.
    #[error("console URL {0:?} is not http://host:port")]
    Url(String),
    /// Connecting, sending or reading failed.
    #[error("calling the console failed: {0}")]
    Transport(String),
    /// No answer within the timeout.
    #[error("the console did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not JSON.
    #[error("the console answered HTTP {0} with a body that is not JSON: {1}")]
    NotJson(u16, String),
}

/// A client signing with one account's keys.
pub struct SignedClient {
    base: String,
    access_key: String,
    secret_key: String,
    http: Client<HttpConnector, Full<Bytes>>,
    last_stamp: AtomicI64,
    timeout: Duration,
}

impl SignedClient {
    /// A client of the console at `url` (`http://host:port`) signing with the given keys.
    pub fn new(url: &str, access_key: &str, secret_key: &str) -> Result<Self, CallError> {
        let base = url.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(CallError::Url(url.to_owned()));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        Ok(Self {
            base,
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            http: Client::builder(TokioExecutor::new()).build(connector),
            last_stamp: AtomicI64::new(0),
            timeout: Duration::from_secs(60),
        })
    }

    /// A `__preventCache` after every earlier one of this client.
    fn stamp(&self) -> i64 {
        let now = crate::server::now_ms();
        let prev = self
            .last_stamp
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        now.max(prev + 1)
    }

    /// `params` with the common parameters and the signature added, form-encoded.
    pub fn signed_form(&self, params: &[(&str, &str)]) -> String {
        self.signed_form_at(params, self.stamp())
    }

    /// [`Self::signed_form`] with `__preventCache` = `stamp` (tests of the clock window).
    pub fn signed_form_at(&self, params: &[(&str, &str)], stamp: i64) -> String {
        let stamp = stamp.to_string();
        let mut all: Vec<(&str, &str)> = params.to_vec();
        all.push((sign::PREVENT_CACHE, &stamp));
        all.push((sign::ACCESS_KEY, &self.access_key));
        let signature = sign::sign(
            &self.secret_key,
            &sign::string_to_sign(&Params::from_pairs(all.iter().copied())),
        );
        all.push((sign::SIGNATURE, &signature));
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(all)
            .finish()
    }

    /// POSTs `path` with `params` signed; the HTTP status and the envelope.
    pub async fn post(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<(u16, Value), CallError> {
        self.send(self.form_request(path, self.signed_form(params))?)
            .await
    }

    /// POSTs `path` with `params` signed; only the HTTP status (the body is read, not
    /// parsed: what a load generator needs, since the status equals the envelope's code).
    pub async fn post_status(&self, path: &str, params: &[(&str, &str)]) -> Result<u16, CallError> {
        let request = self.form_request(path, self.signed_form(params))?;
        Ok(self.exchange(request).await?.0)
    }

    /// POSTs an already encoded form as it is (to replay or tamper with one).
    pub async fn post_form(&self, path: &str, form: String) -> Result<(u16, Value), CallError> {
        self.send(self.form_request(path, form)?).await
    }

    /// GETs `path` with `params` signed in the query string.
    pub async fn get(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<(u16, Value), CallError> {
        let request =
            hyper::Request::get(format!("{}{path}?{}", self.base, self.signed_form(params)))
                .body(Full::new(Bytes::new()))
                .map_err(|e| CallError::Transport(e.to_string()))?;
        self.send(request).await
    }

    /// A POST of the encoded `form` to `path`.
    fn form_request(
        &self,
        path: &str,
        form: String,
    ) -> Result<hyper::Request<Full<Bytes>>, CallError> {
        hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| CallError::Transport(e.to_string()))
    }

    /// Sends a request as built (tests craft unusual ones); the HTTP status and the body.
    pub async fn send(
        &self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(u16, Value), CallError> {
        let (status, body) = self.exchange(request).await?;
        serde_json::from_slice(&body)
            .map(|v| (status, v))
            .map_err(|_| CallError::NotJson(status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Sends `request` and reads the whole answer, within the timeout.
    async fn exchange(
        &self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), CallError> {
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Transport(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout(self.timeout))?
    }

    /// The console's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }
}

//! TLS on the remoting ports, as RocketMQ's `tls.server.mode=permissive`: one port serves
//! plaintext and TLS clients alike.
//!
//! The first byte a client sends decides: a TLS handshake record starts with `0x16`, which
//! no remoting frame can (its first byte is the top byte of the frame length, and a frame
//! of 0x16000000 bytes = 352 MiB is far over any frame limit). A connection that sends no
//! byte, or does not finish its handshake, within the handshake timeout is closed, so a
//! silent peer holds nothing for long.
//!
//! The certificate and key are PEM files (a mounted Kubernetes TLS Secret: `tls.crt`,
//! `tls.key`); they are re-read when they change, so a renewed certificate applies to new
//! connections without a restart, and a bad renewal keeps the previous one in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// First byte of a TLS handshake record (`ContentType.handshake`).
const TLS_HANDSHAKE: u8 = 0x16;
/// How often the certificate files are checked for a renewal.
const RELOAD_EVERY: Duration = Duration::from_secs(30);

/// A server certificate from PEM files, re-read when they change.
pub struct TlsIdentity {
    cert: PathBuf,
    key: PathBuf,
    handshake_timeout: Duration,
    current: RwLock<Loaded>,
}

/// The files' contents and the configuration made of them.
struct Loaded {
    pem: (Vec<u8>, Vec<u8>),
    config: Arc<ServerConfig>,
}

/// What a new connection turned out to speak.
pub enum Accepted {
    /// Plaintext remoting frames.
    Plain(TcpStream),
    /// TLS, handshake done.
    Tls(Box<TlsStream<TcpStream>>),
}

impl TlsIdentity {
    /// Loads the certificate chain and key; an error says which file is wrong and why.
    pub fn load(cert: &Path, key: &Path, handshake_timeout: Duration) -> Result<Self, String> {
        let pem = read_pair(cert, key)?;
        let config = server_config(&pem.0, &pem.1)
            .map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()))?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            handshake_timeout,
            current: RwLock::new(Loaded { pem, config }),
        })
    }

    /// The bound on a new connection's first byte and TLS handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Reads a connection's first byte and, for TLS, completes the handshake, both within
    /// the handshake timeout.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<Accepted> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake");
        let mut first = [0u8; 1];
        let n = tokio::time::timeout(self.handshake_timeout, stream.peek(&mut first))
            .await
            .map_err(|_| timed_out())??;
        if n == 0 || first[0] != TLS_HANDSHAKE {
            return Ok(Accepted::Plain(stream));
        }
        let acceptor = TlsAcceptor::from(self.config());
        let tls = tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream))
            .await
            .map_err(|_| timed_out())??;
        Ok(Accepted::Tls(Box::new(tls)))
    }

    /// The configuration in force.
    fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .config
            .clone()
    }

    /// Re-reads the files; a changed, valid pair replaces the configuration. Returns
    /// whether it changed.
    pub fn reload(&self) -> Result<bool, String> {
        let pem = read_pair(&self.cert, &self.key)?;
        if self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pem
            == pem
        {
            return Ok(false);
        }
        let config = server_config(&pem.0, &pem.1)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Loaded { pem, config };
        Ok(true)
    }

    /// Applies renewed certificates, forever (spawn it).
    pub async fn run_reload(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(cert = %self.cert.display(), "TLS certificate renewed"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "renewed TLS certificate rejected; the previous one stays in force")
                }
            }
        }
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
    Ok((read(cert)?, read(key)?))
}

/// A server configuration for a PEM chain and key.
fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("certificate: no PEM certificate found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_malformed_pair_is_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("mq-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let t = Duration::from_secs(1);
        let err = TlsIdentity::load(&cert, &key, t).err().unwrap();
        assert!(err.contains("reading") && err.contains("tls.crt"), "{err}");
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let err = TlsIdentity::load(&cert, &key, t).err().unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_remoting_frame_starts_like_a_tls_record() {
        let smallest_tls_looking_frame = u32::from_be_bytes([TLS_HANDSHAKE, 0, 0, 0]) as usize;
        // The largest frame a broker port accepts: a 256 MiB message and 1 MiB of header.
        assert!(smallest_tls_looking_frame > (256 << 20) + (1 << 20));
    }
}

//! Building `kube::Client`s that work whatever TLS backends the build unified.
//!
//! rustls needs exactly one process-wide crypto provider. kube brings `ring`; a test
//! dependency (the RocketMQ client) brings `aws-lc-rs`; when one `cargo test` build
//! enables both, rustls refuses to guess and panics on the first TLS connection. So we
//! name the provider before any client exists.

/// A client for `config`, with rustls' crypto provider chosen first.
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    install_crypto_provider();
    kube::Client::try_from(config)
}

/// Installs `ring` as rustls' process-wide provider (a no-op when one is installed).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

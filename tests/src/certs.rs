//! The testbed's credentials, made with the openssl CLI (no cert crate needed).

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{IoContext, Result};
use crate::process::run_checked;

/// Files and secrets the control plane is started with.
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate (trusted by clients).
    pub ca_cert: PathBuf,
    /// CA private key.
    pub ca_key: PathBuf,
    /// kube-apiserver serving certificate.
    pub server_cert: PathBuf,
    /// kube-apiserver serving key.
    pub server_key: PathBuf,
    /// Service-account signing key (RSA).
    pub sa_key: PathBuf,
    /// Service-account verification key.
    pub sa_pub: PathBuf,
    /// Static token file for `--token-auth-file`.
    pub tokens: PathBuf,
    /// The admin bearer token (group system:masters).
    pub admin_token: String,
}

/// Creates the CA, serving cert, service-account keys and token file under `dir`.
///
/// `service_ip` is the first address of the service range (the `kubernetes` Service),
/// which in-cluster clients use to reach the apiserver, so it must be in the SAN.
pub fn generate(openssl: &Path, dir: &Path, service_ip: Ipv4Addr) -> Result<Pki> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("apiserver.crt"),
        server_key: dir.join("apiserver.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
        tokens: dir.join("tokens.csv"),
        admin_token: random_hex(24)?,
    };
    make_ca(openssl, &pki)?;
    make_server_cert(openssl, dir, &pki, service_ip)?;
    make_sa_keys(openssl, &pki)?;
    let line = format!("{},admin,admin,system:masters\n", pki.admin_token);
    write_private(&pki.tokens, line.as_bytes())?;
    Ok(pki)
}

fn make_ca(openssl: &Path, pki: &Pki) -> Result<()> {
    openssl_run(openssl, |c| {
        c.args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
        ])
        .args(["-subj", "/CN=mq-testbed-ca"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&pki.ca_key)
        .arg("-out")
        .arg(&pki.ca_cert)
    })
}

fn make_server_cert(openssl: &Path, dir: &Path, pki: &Pki, service_ip: Ipv4Addr) -> Result<()> {
    let csr = dir.join("apiserver.csr");
    let ext = dir.join("apiserver.ext");
    std::fs::write(&ext, server_extensions(service_ip))
        .ctx(|| format!("writing {}", ext.display()))?;
    openssl_run(openssl, |c| {
        c.args(["req", "-new", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", "/CN=kube-apiserver"])
            .arg("-keyout")
            .arg(&pki.server_key)
            .arg("-out")
            .arg(&csr)
    })?;
    let serial = format!("0x{}", random_hex(16)?);
    openssl_run(openssl, |c| {
        c.args([
            "x509",
            "-req",
            "-sha256",
            "-days",
            "3650",
            "-set_serial",
            &serial,
        ])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&pki.ca_cert)
        .arg("-CAkey")
        .arg(&pki.ca_key)
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&pki.server_cert)
    })
}

/// The x509v3 extensions of the serving certificate.
fn server_extensions(service_ip: Ipv4Addr) -> String {
    let dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ];
    let mut san = vec!["IP:127.0.0.1".to_owned(), format!("IP:{service_ip}")];
    san.extend(dns.iter().map(|d| format!("DNS:{d}")));
    format!(
        "subjectAltName={}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n",
        san.join(",")
    )
}

fn make_sa_keys(openssl: &Path, pki: &Pki) -> Result<()> {
    openssl_run(openssl, |c| {
        c.args(["genrsa", "-out"]).arg(&pki.sa_key).arg("2048")
    })?;
    openssl_run(openssl, |c| {
        c.args(["rsa", "-pubout", "-in"])
            .arg(&pki.sa_key)
            .arg("-out")
            .arg(&pki.sa_pub)
    })
}

fn openssl_run(openssl: &Path, build: impl FnOnce(&mut Command) -> &mut Command) -> Result<()> {
    let mut cmd = Command::new(openssl);
    build(&mut cmd);
    run_checked(&mut cmd, false).map(|_| ())
}

/// Writes a file readable only by its owner (tokens, kubeconfigs).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .ctx(|| format!("writing {}", path.display()))
}

/// `n` random bytes from the kernel, hex-encoded.
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .ctx(|| "reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

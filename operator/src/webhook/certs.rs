//! The webhook's TLS: a CA and a serving certificate the operator makes itself, kept in a
//! Secret of the platform namespace so every replica serves the same certificate and a
//! restart does not invalidate the CA the API server trusts.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::collections::BTreeMap;

/// Secret holding `ca.crt`, `tls.crt` and `tls.key`.
pub const TLS_SECRET: &str = "mq-operator-webhook-tls";
/// Annotation on the Secret: when the certificates expire (RFC 3339).
const NOT_AFTER_ANNOTATION: &str = "mqfleet.io/not-after";
/// How long new certificates are valid.
const VALIDITY: SignedDuration = SignedDuration::from_hours(365 * 24);
/// Certificates are renewed this long before they expire.
const RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(30 * 24);

/// A CA and the serving certificate it signed, PEM-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingCert {
    /// The CA certificate (what the webhook configuration's `caBundle` holds).
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
    /// When both expire.
    pub not_after: Timestamp,
}

/// Why certificates could not be made or stored.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Generating a key or certificate failed.
    #[error("generating the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The Secret could not be read or written.
    #[error("the webhook certificate Secret: {0}")]
    Kube(#[from] kube::Error),
}

impl ServingCert {
    /// A new CA, and a serving certificate for `dns_names` signed by it, valid from `now`.
    pub fn generate(dns_names: &[String], now: Timestamp) -> Result<Self, CertError> {
        let not_after = now + VALIDITY;
        let window = |params: &mut CertificateParams| -> Result<(), CertError> {
            let at = |t: Timestamp| time::OffsetDateTime::from_unix_timestamp(t.as_second());
            // A minute of slack for clocks that are slightly behind ours.
            params.not_before =
                at(now - SignedDuration::from_mins(1)).map_err(|_| rcgen::Error::Time)?;
            params.not_after = at(not_after).map_err(|_| rcgen::Error::Time)?;
            Ok(())
        };
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(DnType::CommonName, "mq-operator webhook CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        window(&mut ca)?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(dns_names.to_vec())?;
        leaf.distinguished_name.push(
            DnType::CommonName,
            dns_names.first().cloned().unwrap_or_default(),
        );
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        window(&mut leaf)?;
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }

    /// Whether it is time to replace these certificates.
    pub fn renewal_due(&self, now: Timestamp) -> bool {
        now + RENEW_BEFORE >= self.not_after
    }

    /// The certificates as kept in the Secret (`None` when a key is missing or unreadable).
    fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
        let not_after = secret
            .metadata
            .annotations
            .as_ref()?
            .get(NOT_AFTER_ANNOTATION)?
            .parse()
            .ok()?;
        Some(Self {
            ca_pem: text("ca.crt")?,
            cert_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
            not_after,
        })
    }

    /// The Secret holding these certificates.
    fn to_secret(&self, namespace: &str, resource_version: Option<String>) -> Secret {
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        Secret {
            metadata: ObjectMeta {
                name: Some(TLS_SECRET.into()),
                namespace: Some(namespace.into()),
                resource_version,
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".into(),
                    "mq-operator".into(),
                )])),
                annotations: Some(BTreeMap::from([(
                    NOT_AFTER_ANNOTATION.into(),
                    self.not_after.to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(BTreeMap::from([
                ("ca.crt".into(), bytes(&self.ca_pem)),
                ("tls.crt".into(), bytes(&self.cert_pem)),
                ("tls.key".into(), bytes(&self.key_pem)),
            ])),
            ..Default::default()
        }
    }
}

/// The certificates in the Secret, made (or renewed) first when they are missing, unreadable
/// or about to expire. Replicas racing here agree: a write only succeeds against the
/// version it read, and the loser takes the winner's certificates.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    dns_names: &[String],
) -> Result<ServingCert, CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..3 {
        let existing = api.get_opt(TLS_SECRET).await?;
        let current = existing.as_ref().and_then(ServingCert::from_secret);
        let now = Timestamp::now();
        if let Some(cert) = current.filter(|c| !c.renewal_due(now)) {
            return Ok(cert);
        }
        let fresh = ServingCert::generate(dns_names, now)?;
        let written = match existing {
            None => {
                let secret = fresh.to_secret(namespace, None);
                api.create(&PostParams::default(), &secret).await
            }
            Some(old) => {
                let secret = fresh.to_secret(namespace, old.metadata.resource_version);
                api.replace(TLS_SECRET, &PostParams::default(), &secret)
                    .await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = TLS_SECRET, not_after = %fresh.not_after, "made new webhook certificates");
                return Ok(fresh);
            }
            // Another replica wrote first: read what it wrote.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let secret = api.get(TLS_SECRET).await?;
    ServingCert::from_secret(&secret)
        .ok_or_else(|| CertError::Generate(rcgen::Error::CouldNotParseCertificate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_round_trip_through_the_secret_and_renew_before_expiry() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let names = vec!["mq-operator-webhook.mqfleet-system.svc".to_owned()];
        let cert = ServingCert::generate(&names, now).unwrap();
        assert!(cert.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.key_pem.contains("PRIVATE KEY"));
        let secret = cert.to_secret("mqfleet-system", None);
        assert_eq!(ServingCert::from_secret(&secret).as_ref(), Some(&cert));
        assert!(!cert.renewal_due(now + SignedDuration::from_hours(300 * 24)));
        assert!(cert.renewal_due(now + SignedDuration::from_hours(340 * 24)));
    }

    #[test]
    fn rustls_accepts_the_serving_certificate() {
        let names = vec!["svc.ns.svc".to_owned()];
        let cert = ServingCert::generate(&names, Timestamp::now()).unwrap();
        assert!(super::super::server::tls_config(&cert).is_ok());
    }
}

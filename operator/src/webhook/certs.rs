//! The webhook's TLS: a long-lived CA and a serving certificate it signs, kept in a Secret
//! of the platform namespace. The Secret is the single source of truth: every replica
//! serves the certificate it holds and publishes the CA bundle it holds, and every write
//! to it is optimistic (against the resourceVersion read), so replicas never disagree
//! for longer than one re-read.
//!
//! Renewal replaces only the serving certificate, signed by the same CA, so the bundle the
//! API server trusts does not change. The CA itself is re-issued only when it nears its
//! own expiry; the old CA then stays in the bundle beside the new one until it expires,
//! so a replica still serving a certificate of the old CA is trusted meanwhile.

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

/// Secret holding `ca.crt`, `ca.key`, `ca-bundle.crt`, `tls.crt` and `tls.key`.
pub const TLS_SECRET: &str = "mq-operator-webhook-tls";
/// Annotation on the Secret: when the serving certificate expires (RFC 3339). Secrets of
/// the previous version carry it too, for their CA and certificate alike.
const NOT_AFTER_ANNOTATION: &str = "mqfleet.io/not-after";
/// Annotation on the Secret: when the CA expires (RFC 3339).
const CA_NOT_AFTER_ANNOTATION: &str = "mqfleet.io/ca-not-after";
/// Annotation on the Secret: when each CA of `ca-bundle.crt` expires, comma-separated in
/// bundle order (so expired CAs leave the bundle without parsing certificates).
const BUNDLE_NOT_AFTER_ANNOTATION: &str = "mqfleet.io/ca-bundle-not-after";
/// Key of the CA bundle (what the webhook configuration's `caBundle` holds).
pub const BUNDLE_KEY: &str = "ca-bundle.crt";
/// How long a new serving certificate is valid.
const VALIDITY: SignedDuration = SignedDuration::from_hours(365 * 24);
/// The serving certificate is renewed this long before it expires.
const RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(30 * 24);
/// How long a new CA is valid.
const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(10 * 365 * 24);
/// The CA is re-issued this long before it expires (the old one stays trusted until then).
const CA_RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(365 * 24);
const PEM_END: &str = "-----END CERTIFICATE-----";

/// A CA certificate the API server is to trust, and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedCa {
    /// The CA certificate, PEM.
    pub pem: String,
    /// When it expires (it leaves the bundle then).
    pub not_after: Timestamp,
}

/// The webhook's CA, the serving certificate it signed and the CA bundle, PEM-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingCert {
    /// The CA that signs serving certificates.
    pub ca_pem: String,
    /// The CA's private key (kept so renewals keep the CA).
    pub ca_key_pem: String,
    /// When the CA expires.
    pub ca_not_after: Timestamp,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
    /// When the serving certificate expires.
    pub not_after: Timestamp,
    /// Every CA to trust, the current one first.
    pub bundle: Vec<TrustedCa>,
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

/// What the Secret holds, as far as it can be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Nothing usable: start afresh.
    Missing,
    /// A Secret of the previous version (CA without its key): its CA stays trusted until
    /// it expires, beside a new CA.
    Legacy(TrustedCa),
    /// A complete Secret.
    Current(ServingCert),
}

/// What to do with the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// It is current: serve it.
    Keep(ServingCert),
    /// Write this (optimistically) and serve it.
    Write(ServingCert),
}

/// Converts a timestamp for rcgen.
fn at(t: Timestamp) -> Result<time::OffsetDateTime, rcgen::Error> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|_| rcgen::Error::Time)
}

/// The CA's parameters: the same for issuing the CA and for signing with it later, so a
/// stored CA key signs certificates whose issuer matches the stored CA certificate. The
/// name carries the expiry so two generations of the CA never share a subject.
fn ca_params(not_after: Timestamp) -> Result<CertificateParams, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("mq-operator webhook CA until {not_after}"),
    );
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca)
}

/// The certificate's validity window (a minute of slack for clocks slightly behind ours).
fn window(
    params: &mut CertificateParams,
    now: Timestamp,
    not_after: Timestamp,
) -> Result<(), rcgen::Error> {
    params.not_before = at(now - SignedDuration::from_mins(1))?;
    params.not_after = at(not_after)?;
    Ok(())
}

/// A new CA valid from `now`: its certificate, key and expiry.
fn new_ca(now: Timestamp) -> Result<(String, String, Timestamp), rcgen::Error> {
    let not_after = now + CA_VALIDITY;
    let key = KeyPair::generate()?;
    let mut params = ca_params(not_after)?;
    window(&mut params, now, not_after)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// A serving certificate for `dns_names` signed by the CA (`ca_key_pem`, expiring at
/// `ca_not_after`), valid from `now` but never beyond the CA.
fn new_serving(
    dns_names: &[String],
    ca_key_pem: &str,
    ca_not_after: Timestamp,
    now: Timestamp,
) -> Result<(String, String, Timestamp), rcgen::Error> {
    let issuer = Issuer::new(ca_params(ca_not_after)?, KeyPair::from_pem(ca_key_pem)?);
    let not_after = (now + VALIDITY).min(ca_not_after);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(dns_names.to_vec())?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    window(&mut leaf, now, not_after)?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// One PEM block, ending in exactly one newline (so a bundle round-trips byte for byte).
fn normalise(pem: &str) -> String {
    format!("{}\n", pem.trim())
}

/// The certificates of a PEM bundle, each normalised.
fn split_bundle(text: &str) -> Vec<String> {
    text.split_inclusive(PEM_END)
        .map(str::trim)
        .filter(|block| block.ends_with(PEM_END))
        .map(normalise)
        .collect()
}

impl ServingCert {
    /// A new CA, and a serving certificate for `dns_names` signed by it, valid from `now`.
    pub fn generate(dns_names: &[String], now: Timestamp) -> Result<Self, CertError> {
        Self::with_new_ca(dns_names, now, Vec::new())
    }

    /// A new CA and serving certificate; `keep` (older CAs) stays in the bundle after it.
    fn with_new_ca(
        dns_names: &[String],
        now: Timestamp,
        keep: Vec<TrustedCa>,
    ) -> Result<Self, CertError> {
        let (ca_pem, ca_key_pem, ca_not_after) = new_ca(now)?;
        let (cert_pem, key_pem, not_after) =
            new_serving(dns_names, &ca_key_pem, ca_not_after, now)?;
        let mut bundle = vec![TrustedCa {
            pem: normalise(&ca_pem),
            not_after: ca_not_after,
        }];
        bundle.extend(keep);
        Ok(Self {
            ca_pem: normalise(&ca_pem),
            ca_key_pem,
            ca_not_after,
            cert_pem,
            key_pem,
            not_after,
            bundle,
        })
    }

    /// Whether it is time to replace the serving certificate.
    pub fn renewal_due(&self, now: Timestamp) -> bool {
        now + RENEW_BEFORE >= self.not_after
    }

    /// Whether it is time to replace the CA.
    pub fn ca_renewal_due(&self, now: Timestamp) -> bool {
        now + CA_RENEW_BEFORE >= self.ca_not_after
    }

    /// The CA bundle as the webhook configuration's `caBundle` (and the Secret) hold it.
    pub fn bundle_pem(&self) -> String {
        self.bundle.iter().map(|ca| ca.pem.as_str()).collect()
    }

    /// What the Secret holds (`Missing` when it is absent or unusable).
    pub fn read(secret: Option<&Secret>) -> Stored {
        let Some(secret) = secret else {
            return Stored::Missing;
        };
        let Some(data) = secret.data.as_ref() else {
            return Stored::Missing;
        };
        let text = |key: &str| String::from_utf8(data.get(key)?.0.clone()).ok();
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let time = |key: &str| annotations.get(key)?.parse::<Timestamp>().ok();
        let (Some(ca_pem), Some(not_after)) = (text("ca.crt"), time(NOT_AFTER_ANNOTATION)) else {
            return Stored::Missing;
        };
        let ca_pem = normalise(&ca_pem);
        let complete = (|| {
            let ca_key_pem = text("ca.key")?;
            // A key that does not parse cannot sign: treat the CA as one without its key.
            KeyPair::from_pem(&ca_key_pem).ok()?;
            let ca_not_after = time(CA_NOT_AFTER_ANNOTATION)?;
            Some(Self {
                ca_pem: ca_pem.clone(),
                ca_key_pem,
                ca_not_after,
                cert_pem: text("tls.crt")?,
                key_pem: text("tls.key")?,
                not_after,
                bundle: Vec::new(),
            })
        })();
        let Some(mut cert) = complete else {
            // The previous version's CA and certificate expire together.
            return Stored::Legacy(TrustedCa {
                pem: ca_pem,
                not_after,
            });
        };
        let pems = split_bundle(&text(BUNDLE_KEY).unwrap_or_default());
        let expiries: Vec<Timestamp> = annotations
            .get(BUNDLE_NOT_AFTER_ANNOTATION)
            .map(|s| s.split(',').filter_map(|t| t.parse().ok()).collect())
            .unwrap_or_default();
        cert.bundle = if pems.len() == expiries.len() && pems.first() == Some(&cert.ca_pem) {
            pems.into_iter()
                .zip(expiries)
                .map(|(pem, not_after)| TrustedCa { pem, not_after })
                .collect()
        } else {
            // An inconsistent bundle: trust the current CA, which signs what is served.
            vec![TrustedCa {
                pem: cert.ca_pem.clone(),
                not_after: cert.ca_not_after,
            }]
        };
        Stored::Current(cert)
    }

    /// The Secret holding these certificates, to be written against `resource_version`.
    pub fn to_secret(&self, namespace: &str, resource_version: Option<String>) -> Secret {
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        let expiries: Vec<String> = self
            .bundle
            .iter()
            .map(|c| c.not_after.to_string())
            .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(TLS_SECRET.into()),
                namespace: Some(namespace.into()),
                resource_version,
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".into(),
                    "mq-operator".into(),
                )])),
                annotations: Some(BTreeMap::from([
                    (NOT_AFTER_ANNOTATION.into(), self.not_after.to_string()),
                    (
                        CA_NOT_AFTER_ANNOTATION.into(),
                        self.ca_not_after.to_string(),
                    ),
                    (BUNDLE_NOT_AFTER_ANNOTATION.into(), expiries.join(",")),
                ])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(BTreeMap::from([
                ("ca.crt".into(), bytes(&self.ca_pem)),
                ("ca.key".into(), bytes(&self.ca_key_pem)),
                (BUNDLE_KEY.into(), bytes(&self.bundle_pem())),
                ("tls.crt".into(), bytes(&self.cert_pem)),
                ("tls.key".into(), bytes(&self.key_pem)),
            ])),
            ..Default::default()
        }
    }
}

/// What to do with what the Secret holds at `now`: keep it, or write its successor
/// (new serving certificate; new CA only when the CA nears expiry or has no key).
/// Expired CAs leave the bundle.
pub fn plan(stored: Stored, dns_names: &[String], now: Timestamp) -> Result<Plan, CertError> {
    let valid = |ca: &TrustedCa| ca.not_after > now;
    match stored {
        Stored::Missing => Ok(Plan::Write(ServingCert::generate(dns_names, now)?)),
        Stored::Legacy(old) => {
            let keep = Some(old).filter(valid).into_iter().collect();
            Ok(Plan::Write(ServingCert::with_new_ca(dns_names, now, keep)?))
        }
        Stored::Current(cert) => {
            let trusted: Vec<TrustedCa> =
                cert.bundle.iter().filter(|c| valid(c)).cloned().collect();
            if cert.ca_renewal_due(now) {
                return Ok(Plan::Write(ServingCert::with_new_ca(
                    dns_names, now, trusted,
                )?));
            }
            if cert.renewal_due(now) {
                let (cert_pem, key_pem, not_after) =
                    new_serving(dns_names, &cert.ca_key_pem, cert.ca_not_after, now)?;
                return Ok(Plan::Write(ServingCert {
                    cert_pem,
                    key_pem,
                    not_after,
                    bundle: trusted,
                    ..cert
                }));
            }
            if trusted.len() != cert.bundle.len() {
                return Ok(Plan::Write(ServingCert {
                    bundle: trusted,
                    ..cert
                }));
            }
            Ok(Plan::Keep(cert))
        }
    }
}

/// The certificates in the Secret, made, renewed or migrated first when due. Replicas
/// racing here agree: a write only succeeds against the version it read, and the loser
/// takes the winner's certificates.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    dns_names: &[String],
) -> Result<ServingCert, CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..3 {
        let existing = api.get_opt(TLS_SECRET).await?;
        let fresh = match plan(
            ServingCert::read(existing.as_ref()),
            dns_names,
            Timestamp::now(),
        )? {
            Plan::Keep(cert) => return Ok(cert),
            Plan::Write(fresh) => fresh,
        };
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
                tracing::info!(secret = TLS_SECRET, not_after = %fresh.not_after, ca_not_after = %fresh.ca_not_after, trusted_cas = fresh.bundle.len(), "wrote new webhook certificates");
                return Ok(fresh);
            }
            // Another replica wrote first (409 on replace, 409 AlreadyExists on create):
            // read what it wrote.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let secret = api.get(TLS_SECRET).await?;
    match ServingCert::read(Some(&secret)) {
        Stored::Current(cert) => Ok(cert),
        _ => Err(CertError::Generate(rcgen::Error::CouldNotParseCertificate)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::rustls;

    fn names() -> Vec<String> {
        vec!["mq-operator-webhook.mqfleet-system.svc".to_owned()]
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Whether a client trusting `bundle` accepts `cert` for the service's name at `now`
    /// (rustls' real verifier, as the API server's TLS client would check it).
    fn trusted(bundle: &str, cert: &ServingCert, now: Timestamp) -> bool {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let leaf = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
        let name = ServerName::try_from(names()[0].clone()).unwrap();
        let when = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now.as_second()).unwrap(),
        ));
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], when)
            .is_ok()
    }

    /// A Secret as the previous version wrote it: CA and certificate, no CA key.
    fn legacy_secret(now: Timestamp) -> (Secret, String) {
        let old = ServingCert::generate(&names(), now).unwrap();
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(TLS_SECRET.into()),
                resource_version: Some("1".into()),
                annotations: Some(BTreeMap::from([(
                    NOT_AFTER_ANNOTATION.into(),
                    (now + VALIDITY).to_string(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("ca.crt".into(), bytes(&old.ca_pem)),
                ("tls.crt".into(), bytes(&old.cert_pem)),
                ("tls.key".into(), bytes(&old.key_pem)),
            ])),
            ..Default::default()
        };
        (secret, old.ca_pem)
    }

    /// The API server's optimistic write: only against the version last stored.
    fn write(stored: &mut Secret, mut new: Secret) -> Result<(), ()> {
        if new.metadata.resource_version != stored.metadata.resource_version {
            return Err(());
        }
        let version: u64 = stored
            .metadata
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        new.metadata.resource_version = Some((version + 1).to_string());
        *stored = new;
        Ok(())
    }

    /// One replica's round: read, plan, write if due; what it then serves.
    fn round(stored: &mut Secret, now: Timestamp) -> ServingCert {
        loop {
            let read = stored.clone();
            match plan(ServingCert::read(Some(&read)), &names(), now).unwrap() {
                Plan::Keep(cert) => return cert,
                Plan::Write(fresh) => {
                    let secret = fresh.to_secret("ns", read.metadata.resource_version.clone());
                    if write(stored, secret).is_ok() {
                        return fresh;
                    }
                }
            }
        }
    }

    #[test]
    fn certificates_round_trip_through_the_secret() {
        let now = t("2026-01-01T00:00:00Z");
        let cert = ServingCert::generate(&names(), now).unwrap();
        assert!(cert.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.key_pem.contains("PRIVATE KEY"));
        let secret = cert.to_secret("mqfleet-system", None);
        assert_eq!(
            ServingCert::read(Some(&secret)),
            Stored::Current(cert.clone())
        );
        let data = secret.data.unwrap();
        assert_eq!(data[BUNDLE_KEY].0, cert.ca_pem.as_bytes());
        assert_eq!(
            plan(Stored::Current(cert.clone()), &names(), now).unwrap(),
            Plan::Keep(cert)
        );
    }

    #[test]
    fn renewal_replaces_only_the_serving_certificate_and_keeps_the_bundle() {
        let start = t("2026-01-01T00:00:00Z");
        let cert = ServingCert::generate(&names(), start).unwrap();
        assert_eq!(cert.ca_not_after, start + CA_VALIDITY);
        let later = start + SignedDuration::from_hours(300 * 24);
        assert!(matches!(
            plan(Stored::Current(cert.clone()), &names(), later).unwrap(),
            Plan::Keep(_)
        ));
        let due = start + SignedDuration::from_hours(340 * 24);
        let Plan::Write(renewed) = plan(Stored::Current(cert.clone()), &names(), due).unwrap()
        else {
            panic!("the serving certificate is due");
        };
        assert_ne!(renewed.cert_pem, cert.cert_pem);
        assert_eq!(renewed.ca_pem, cert.ca_pem);
        assert_eq!(renewed.ca_key_pem, cert.ca_key_pem);
        assert_eq!(
            renewed.bundle_pem(),
            cert.bundle_pem(),
            "caBundle unchanged"
        );
        // Both the old and the renewed certificate verify against the one bundle, so a
        // replica that has not yet switched is still trusted.
        assert!(trusted(&cert.bundle_pem(), &renewed, due));
        assert!(trusted(&cert.bundle_pem(), &cert, due));
        assert!(!trusted(
            &cert.bundle_pem(),
            &cert,
            cert.not_after + SignedDuration::from_hours(1)
        ));
    }

    #[test]
    fn the_ca_is_reissued_near_its_expiry_and_the_old_one_stays_trusted_until_it_expires() {
        let start = t("2026-01-01T00:00:00Z");
        let first = ServingCert::generate(&names(), start).unwrap();
        let near = first.ca_not_after - SignedDuration::from_hours(200 * 24);
        // What an old replica serves then: a certificate renewed shortly before by the old CA.
        let (cert_pem, key_pem, not_after) = new_serving(
            &names(),
            &first.ca_key_pem,
            first.ca_not_after,
            near - SignedDuration::from_hours(24),
        )
        .unwrap();
        let first = ServingCert {
            cert_pem,
            key_pem,
            not_after,
            ..first
        };
        let Plan::Write(second) = plan(Stored::Current(first.clone()), &names(), near).unwrap()
        else {
            panic!("the CA is due");
        };
        assert_ne!(second.ca_pem, first.ca_pem);
        assert_eq!(second.bundle.len(), 2);
        assert_eq!(second.bundle[0].pem, second.ca_pem, "the current CA first");
        assert_eq!(second.bundle[1].pem, first.ca_pem);
        assert!(trusted(&second.bundle_pem(), &second, near));
        assert!(
            trusted(&second.bundle_pem(), &first, near),
            "an old replica's certificate"
        );
        let secret = second.to_secret("ns", None);
        assert_eq!(
            ServingCert::read(Some(&secret)),
            Stored::Current(second.clone())
        );
        // Once the old CA expired, the next check drops it.
        let after = first.ca_not_after + SignedDuration::from_hours(1);
        let Plan::Write(pruned) = plan(Stored::Current(second.clone()), &names(), after).unwrap()
        else {
            panic!("the expired CA leaves the bundle");
        };
        assert_eq!(pruned.bundle_pem(), second.ca_pem);
        assert_eq!(pruned.cert_pem, second.cert_pem);
    }

    #[test]
    fn a_secret_of_the_previous_version_is_migrated_keeping_its_ca_in_the_bundle() {
        let start = t("2026-01-01T00:00:00Z");
        let (secret, old_ca) = legacy_secret(start);
        let Stored::Legacy(old) = ServingCert::read(Some(&secret)) else {
            panic!("a CA without its key");
        };
        assert_eq!(old.pem, old_ca);
        let now = start + SignedDuration::from_hours(24);
        let Plan::Write(migrated) = plan(Stored::Legacy(old.clone()), &names(), now).unwrap()
        else {
            panic!("migrated");
        };
        assert_ne!(migrated.ca_pem, old_ca);
        assert_eq!(
            migrated
                .bundle
                .iter()
                .map(|c| c.pem.clone())
                .collect::<Vec<_>>(),
            [migrated.ca_pem.clone(), old_ca]
        );
        // An expired legacy CA is not carried over.
        let expired = old.not_after + SignedDuration::from_hours(1);
        let Plan::Write(fresh) = plan(Stored::Legacy(old), &names(), expired).unwrap() else {
            panic!("migrated");
        };
        assert_eq!(fresh.bundle.len(), 1);
    }

    #[test]
    fn two_replicas_converge_on_the_secret() {
        let start = t("2026-01-01T00:00:00Z");
        let (mut stored, old_ca) = legacy_secret(start);
        // Both read the old Secret; each plans a migration with its own new CA, but only
        // the first write lands; the other re-reads and takes it.
        let now = start + SignedDuration::from_hours(1);
        let read_by_b = stored.clone();
        let a = round(&mut stored, now);
        let Plan::Write(b_plan) = plan(ServingCert::read(Some(&read_by_b)), &names(), now).unwrap()
        else {
            panic!("b wants to migrate too");
        };
        assert_ne!(b_plan.ca_pem, a.ca_pem, "b made its own CA");
        let stale = b_plan.to_secret("ns", read_by_b.metadata.resource_version);
        assert!(
            write(&mut stored, stale).is_err(),
            "b's stale write is refused"
        );
        let b = round(&mut stored, now);
        assert_eq!(a, b, "both serve and publish the Secret's certificates");
        assert!(a.bundle_pem().contains(&old_ca));

        // A renewal by one replica: the other, serving the previous certificate, is still
        // trusted by the unchanged bundle, and adopts the new one on its next read.
        let due = a.not_after - SignedDuration::from_hours(24);
        let renewed = round(&mut stored, due);
        assert_ne!(renewed.cert_pem, b.cert_pem);
        assert_eq!(renewed.ca_pem, b.ca_pem);
        assert!(trusted(&renewed.bundle_pem(), &b, due));
        assert_eq!(round(&mut stored, due), renewed);
    }

    #[test]
    fn rustls_accepts_the_serving_certificate() {
        let cert = ServingCert::generate(&names(), Timestamp::now()).unwrap();
        assert!(super::super::server::tls_config(&cert).is_ok());
    }
}

//! TLS on the remoting ports with the real third-party client (`rocketmq-client-rust`,
//! `tls.enable` with server verification against our CA): TLS and plaintext clients use
//! the same name-server and broker ports (RocketMQ's permissive mode), a client that
//! trusts another CA is refused, and a connection that never finishes its handshake is
//! closed after the handshake timeout while the broker keeps serving.

mod support;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rocketmq_client_rust::{DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_transport::api::{TlsClientConfig, TlsConfig};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Client, TempDir, eventually};

/// A CA and a server certificate for 127.0.0.1 and localhost it signed, written as PEM
/// files into `dir`: (CA certificate, server certificate, server key).
fn certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    let paths = (
        dir.join(format!("{name}-ca.crt")),
        dir.join(format!("{name}-tls.crt")),
        dir.join(format!("{name}-tls.key")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("write CA");
    std::fs::write(&paths.1, cert.pem()).expect("write certificate");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}

/// Client settings: TLS verifying the server against `trusted` (a CA file), or plaintext.
fn config(namesrv: &str, name: &str, trusted: Option<&Path>) -> rocketmq_client_rust::ClientConfig {
    let mut config = support::client_config(namesrv, name);
    if let Some(ca) = trusted {
        config.set_use_tls(true);
        config.set_tls_config(TlsConfig {
            client: TlsClientConfig {
                auth_server: true,
                trust_cert_path: Some(ca.display().to_string()),
                ..TlsClientConfig::default()
            },
            ..TlsConfig::default()
        });
    }
    config
}

/// Sends `bodies` with a producer configured by `cfg`; whether every send succeeded.
async fn send_all(
    rt: &Arc<rocketmq_client_rust::ClientRuntime>,
    cfg: rocketmq_client_rust::ClientConfig,
    topic: &str,
    bodies: &[String],
) -> bool {
    let mut producer = DefaultMQProducer::builder(rt.clone())
        .client_config(cfg)
        .producer_group("GID_tls_producer")
        .send_msg_timeout(3000)
        .build();
    if producer.start().await.is_err() {
        return false;
    }
    let mut ok = true;
    for body in bodies {
        let msg = Message::builder()
            .topic(topic)
            .body_slice(body.as_bytes())
            .build_unchecked();
        ok &= matches!(producer.send(msg).await, Ok(Some(_)));
    }
    producer.shutdown().await;
    ok
}

#[test]
fn tls_and_plaintext_clients_share_the_ports_and_a_stalled_handshake_is_closed() {
    // This test binary links both rustls providers (the client's transport asks for
    // aws-lc-rs, the rest of the workspace for ring): name one, as the operator does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = TempDir::new("tls");
    let (ca, cert, key) = certificates(&dir.0, "ours");
    let (other_ca, _, _) = certificates(&dir.0, "other");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let broker = support::standalone(
        &dir.0.join("store"),
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-handshake-timeout-ms",
            "1000",
        ],
    );
    let namesrv = broker.namesrv();
    let received = Arc::new(Mutex::new(HashSet::new()));
    let got = received.clone();
    let (ns, ca2, other) = (namesrv.clone(), ca.clone(), other_ca.clone());
    Client::new().run(|rt| async move {
        // A TLS consumer and a TLS producer: every message arrives.
        let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
            .client_config(config(&ns, "tls-consumer", Some(&ca2)))
            .consumer_group("GID_tls")
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .consume_thread_min(4)
            .consume_thread_max(4)
            .build();
        consumer.subscribe("Secure", "*").await.expect("subscribe");
        consumer.register_message_listener_concurrently(support::Collect(got.clone()));
        consumer.start().await.expect("TLS consumer starts");
        let tls_bodies: Vec<String> = (0..5).map(|i| format!("tls-{i}")).collect();
        assert!(
            send_all(
                &rt,
                config(&ns, "tls-producer", Some(&ca2)),
                "Secure",
                &tls_bodies
            )
            .await,
            "TLS sends succeed"
        );
        // Plaintext on the same ports (permissive).
        let plain_bodies: Vec<String> = (0..5).map(|i| format!("plain-{i}")).collect();
        assert!(
            send_all(
                &rt,
                config(&ns, "plain-producer", None),
                "Secure",
                &plain_bodies
            )
            .await,
            "plaintext sends succeed on the same ports"
        );
        // A client that trusts another CA cannot send.
        let refused: Vec<String> = vec!["untrusted".into()];
        assert!(
            !send_all(
                &rt,
                config(&ns, "untrusted-producer", Some(&other)),
                "Secure",
                &refused
            )
            .await,
            "a client trusting another CA is refused"
        );
        eventually("all 10 messages arrive", Duration::from_secs(60), || {
            got.lock().unwrap().len() >= 10
        })
        .await;
        consumer.shutdown().await;
    });
    let received = received.lock().unwrap().clone();
    let expected: HashSet<String> = (0..5)
        .flat_map(|i| [format!("tls-{i}"), format!("plain-{i}")])
        .collect();
    assert_eq!(received, expected, "exactly the trusted sends arrived");
    assert!(
        broker.metric("mq_remoting_tls_connections_total") >= 2,
        "the TLS clients came over TLS:\n{}",
        broker.metrics()
    );

    // A peer that starts a handshake and stalls is closed after the timeout (1 s).
    let mut stalled = std::net::TcpStream::connect(broker.broker()).expect("connect");
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stalled
        .write_all(&[0x16, 0x03, 0x01])
        .expect("a handshake's first bytes");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let closed = matches!(stalled.read(&mut buf), Ok(0) | Err(_));
    assert!(
        closed && started.elapsed() < Duration::from_secs(9),
        "a stalled handshake is closed by the server, not left open"
    );
    assert!(broker.metric("mq_remoting_tls_handshake_failures_total") >= 1);
    let bodies: Vec<String> = (0..3).map(|i| format!("after-{i}")).collect();
    let (ns, ca3) = (namesrv.clone(), ca.clone());
    let ok = Client::new().run(|rt| async move {
        send_all(
            &rt,
            config(&ns, "after-producer", Some(&ca3)),
            "Secure",
            &bodies,
        )
        .await
    });
    assert!(ok, "the broker keeps serving TLS clients");
}

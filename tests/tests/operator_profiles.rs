//! Cluster profiles end to end on the testbed (`deploy/profiles.yaml`): an instance
//! naming a profile the platform does not offer is refused by the webhook, naming
//! `spec.cluster` and the profiles that exist; one on `default` runs the profile's image
//! with its storage size, resources and a hardened pod, whatever image its manifest asks
//! for (the field is pruned); `spec.cluster` is immutable; an edit of the profile rolls
//! the brokers; a withdrawn profile shows as `UnknownCluster` in status and the instance
//! can still be deleted; a profile with `tls.secretName` makes its name servers and
//! brokers serve that Secret's certificate (a TLS handshake verifying our CA succeeds).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mq_operator::crd::MQInstance;
use mq_testbed::Testbed;
use mq_testbed::operator::{PLATFORM, instance_running, profiles, set_profiles};
use serde_json::json;

const NS: &str = "op-profiles";
const WAIT: Duration = Duration::from_secs(90);
/// What `deploy/profiles.yaml` gives the `default` profile's brokers.
const PROFILE_IMAGE: &str = "mqfleet/mq-broker:dev";

fn instances(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &ApiResource::erase::<MQInstance>(&()))
}

/// An instance manifest as a tenant writes it (sent as is, not through the Rust type).
fn manifest(name: &str, cluster: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
        "metadata": {"name": name},
        "spec": {"instanceName": name, "cluster": cluster,
                 "brokers": {"replicas": 1, "storage": {"retainOnDelete": false}},
                 "nameServers": {"replicas": 1}},
    }))
    .expect("a valid manifest")
}

/// The webhook's refusal message of `result`.
fn refusal<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<String> {
    match result {
        Err(kube::Error::Api(e)) if e.message.contains("denied the request") => Ok(e.message),
        other => anyhow::bail!("expected the webhook to refuse, got {other:?}"),
    }
}

/// Waits until MQInstance `name` is Running and Ready; returns it.
async fn running(tb: &Testbed, client: &Client, name: &str) -> Result<MQInstance> {
    Ok(instance_running(tb, client, NS, name, None, WAIT).await?)
}

/// The names of a pod spec's image pull Secrets.
fn pull_secrets(spec: Option<k8s_openapi::api::core::v1::PodSpec>) -> Vec<String> {
    spec.and_then(|s| s.image_pull_secrets)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

fn broker_container(sts: &StatefulSet) -> Result<k8s_openapi::api::core::v1::Container> {
    sts.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first().cloned())
        .context("the StatefulSet has no container")
}

fn cpu_request(c: &k8s_openapi::api::core::v1::Container) -> Option<String> {
    Some(
        c.resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("cpu")?
            .0
            .clone(),
    )
}

#[test]
fn instances_run_on_the_platforms_cluster_profiles() -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(profiles_end_to_end())
}

async fn profiles_end_to_end() -> Result<()> {
    let tb = Testbed::shared().await?;
    let client = tb.client();
    mq_testbed::operator::install(tb, &client, None).await?;
    tb.create_namespace(&client, NS).await?;
    let api = instances(&client);
    let original = profiles(&client).await?;

    // 1. An unknown profile is refused before it is stored, naming spec.cluster and the
    // profiles that exist (waiting until the webhook answers at all).
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let message = tb
        .until(
            &client,
            NS,
            "the webhook refusing an unknown profile",
            WAIT,
            || {
                let api = api.clone();
                let dry_run = dry_run.clone();
                async move {
                    match api.create(&dry_run, &manifest("nowhere", "huge")).await {
                        Err(kube::Error::Api(e)) if e.message.contains("denied the request") => {
                            Ok(Some(e.message))
                        }
                        other => Err(format!("not refused yet: {other:?}")),
                    }
                }
            },
        )
        .await?;
    ensure!(
        message.contains("spec.cluster \"huge\"") && message.contains("profiles: default"),
        "{message}"
    );
    refusal(
        api.create(&PostParams::default(), &manifest("nowhere", "huge"))
            .await,
    )?;
    ensure!(
        api.get_opt("nowhere").await?.is_none(),
        "refused but stored"
    );

    // 2. On `default`: the profile's image, storage and resources, whatever image the
    // manifest asks for — the schema prunes the field before anything sees it.
    let mut plain = manifest("plain", "default");
    plain.data["spec"]["image"] = json!("evil/image");
    api.create(&PostParams::default(), &plain).await?;
    let stored = api.get("plain").await?;
    ensure!(
        stored.data["spec"].get("image").is_none(),
        "spec.image was stored: {}",
        stored.data["spec"]
    );
    let instance = running(tb, &client, "plain").await?;
    let status = instance.status.clone().context("no status")?;
    let id = status.instance_id.clone().context("no instance id")?;
    let effective = status.effective.clone().context("no status.effective")?;
    ensure!(
        status.brokers == 1
            && effective.broker_image == PROFILE_IMAGE
            && effective.storage_size.as_ref().map(|q| q.0.as_str()) == Some("1Gi"),
        "{status:?}"
    );
    let base = id.to_lowercase().replace('_', "-");
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), PLATFORM);
    let brokers = statefulsets.get(&format!("{base}-broker")).await?;
    let namesrv = statefulsets.get(&format!("{base}-namesrv")).await?;
    for sts in [&brokers, &namesrv] {
        let c = broker_container(sts)?;
        ensure!(
            c.image.as_deref() == Some(PROFILE_IMAGE),
            "image {:?}",
            c.image
        );
        let pod = sts
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .context("no pod spec")?;
        ensure!(pod.automount_service_account_token == Some(false));
        let psc = pod.security_context.context("no pod securityContext")?;
        ensure!(psc.run_as_non_root == Some(true) && psc.fs_group == Some(10001));
        let csc = c.security_context.context("no container securityContext")?;
        ensure!(
            csc.read_only_root_filesystem == Some(true)
                && csc.allow_privilege_escalation == Some(false)
        );
    }
    let c = broker_container(&brokers)?;
    ensure!(
        cpu_request(&c).as_deref() == Some("100m"),
        "broker requests {:?}",
        c.resources
    );
    let claim = brokers
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .and_then(|t| t.first())
        .and_then(|c| c.spec.as_ref())
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    ensure!(claim.as_deref() == Some("1Gi"), "claim {claim:?}");

    // 3. The profile cannot change under an instance.
    let message = refusal(
        api.patch(
            "plain",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cluster": "other"}})),
        )
        .await,
    )?;
    ensure!(message.contains("spec.cluster is immutable"), "{message}");

    // 4. An edit of the profile rolls the brokers' template (and then their pods), with
    // the image pull Secrets it names.
    let mut edited = original.clone();
    edited["default"]["brokers"]["resources"]["requests"]["cpu"] = serde_yaml::Value::from("150m");
    edited["default"]["imagePullSecrets"] = serde_yaml::to_value(["mq-pull"])?;
    set_profiles(&client, &edited).await?;
    let broker_name = format!("{base}-broker");
    tb.until(
        &client,
        PLATFORM,
        "the broker template with 150m",
        WAIT,
        || {
            let statefulsets = statefulsets.clone();
            let name = broker_name.clone();
            async move {
                let sts = statefulsets.get(&name).await.map_err(|e| e.to_string())?;
                let cpu = broker_container(&sts)
                    .map_err(|e| e.to_string())
                    .map(|c| cpu_request(&c))?;
                let pulls = pull_secrets(sts.spec.and_then(|s| s.template.spec));
                (cpu.as_deref() == Some("150m") && pulls == ["mq-pull"])
                    .then_some(Some(()))
                    .ok_or_else(|| format!("broker cpu request {cpu:?}, pull secrets {pulls:?}"))
            }
        },
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), PLATFORM);
    let pod_name = format!("{base}-broker-0");
    tb.until(
        &client,
        PLATFORM,
        "the broker pod rolled to 150m",
        WAIT,
        || {
            let pods = pods.clone();
            let name = pod_name.clone();
            async move {
                let pod = pods.get(&name).await.map_err(|e| e.to_string())?;
                let cpu = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(cpu_request);
                let ready = mq_testbed::wait::is_ready(&pod);
                let pulls = pull_secrets(pod.spec);
                (cpu.as_deref() == Some("150m") && ready && pulls == ["mq-pull"])
                    .then_some(Some(()))
                    .ok_or_else(|| {
                        format!("pod cpu {cpu:?}, ready {ready}, pull secrets {pulls:?}")
                    })
            }
        },
    )
    .await?;
    running(tb, &client, "plain").await?;

    // 5. A withdrawn profile: accepted while it existed, then `UnknownCluster` in status
    // naming the profiles left; the instance can still be deleted.
    let mut with_temp = edited.clone();
    with_temp["temp"] = original["default"].clone();
    set_profiles(&client, &with_temp).await?;
    tb.until(
        &client,
        NS,
        "the webhook knowing profile temp",
        WAIT,
        || {
            let api = api.clone();
            let dry_run = dry_run.clone();
            async move {
                api.create(&dry_run, &manifest("ghost", "temp"))
                    .await
                    .map(|_| Some(()))
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await?;
    let mut ghost = manifest("ghost", "temp");
    ghost.metadata.annotations = Some(
        [(
            "mqfleet.io/pause-reconciliation".to_owned(),
            "true".to_owned(),
        )]
        .into(),
    );
    api.create(&PostParams::default(), &ghost).await?;
    set_profiles(&client, &edited).await?;
    // Resuming it after the withdrawal: the operator finds no profile `temp`.
    api.patch(
        "ghost",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"mqfleet.io/pause-reconciliation": null}}}),
        ),
    )
    .await?;
    let typed: Api<MQInstance> = Api::namespaced(client.clone(), NS);
    let message = tb
        .until(&client, PLATFORM, "ghost UnknownCluster", WAIT, || {
            let typed = typed.clone();
            async move {
                let i = typed.get("ghost").await.map_err(|e| e.to_string())?;
                let ready = i
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
                match ready {
                    Some(c) if c.reason == "UnknownCluster" && c.status == "False" => {
                        Ok(Some(c.message))
                    }
                    other => Err(format!("Ready {other:?}")),
                }
            }
        })
        .await?;
    ensure!(
        message.contains("spec.cluster \"temp\"") && message.contains("profiles: default"),
        "{message}"
    );
    // 6. A profile with TLS: its servers present the mounted Secret's certificate.
    tls_profile(tb, &client, &api, &edited).await?;

    for name in ["ghost", "plain", "secure"] {
        api.delete(name, &DeleteParams::default()).await?;
    }
    tb.until(&client, NS, "both instances gone", WAIT, || {
        let api = api.clone();
        async move {
            let left = api
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            (left == 0)
                .then_some(Some(()))
                .ok_or_else(|| format!("{left} instance(s) left"))
        }
    })
    .await?;
    set_profiles(&client, &original).await?;
    Ok(())
}

/// A CA and a certificate for `localhost` it signed: (CA PEM, certificate PEM, key PEM).
fn tls_material() -> Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// Completes a TLS handshake with `addr`, verifying its certificate against `ca_pem` for
/// the name `localhost`.
fn tls_handshake(addr: &str, ca_pem: &str) -> Result<()> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into()?)?;
    let mut sock = std::net::TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(())
}

/// Profile `secure` = `base`'s `default` with `tls.secretName: mq-tls`; an instance on it
/// runs, and its name server and broker complete a verified TLS handshake.
async fn tls_profile(
    tb: &Testbed,
    client: &Client,
    api: &Api<DynamicObject>,
    base: &serde_yaml::Value,
) -> Result<()> {
    let (ca, cert, key) = tls_material()?;
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "mq-tls", "namespace": PLATFORM},
        "stringData": {"tls.crt": cert, "tls.key": key},
    });
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), PLATFORM)
        .patch(
            "mq-tls",
            &PatchParams::apply("mq-testbed").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    let mut with_tls = base.clone();
    with_tls["secure"] = base["default"].clone();
    with_tls["secure"]["tls"] = serde_yaml::from_str("{secretName: mq-tls}")?;
    set_profiles(client, &with_tls).await?;
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    tb.until(
        client,
        NS,
        "the webhook knowing profile secure",
        WAIT,
        || {
            let api = api.clone();
            let dry_run = dry_run.clone();
            async move {
                api.create(&dry_run, &manifest("secure", "secure"))
                    .await
                    .map(|_| Some(()))
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await?;
    api.create(&PostParams::default(), &manifest("secure", "secure"))
        .await?;
    let instance = running(tb, client, "secure").await?;
    let id = instance
        .status
        .and_then(|s| s.instance_id)
        .context("no instance id")?;
    for (component, port) in [("namesrv", 9876), ("broker", 10911)] {
        let (_, ip) = mq_testbed::operator::server_pod(client, &id, component, 0)
            .await
            .map_err(anyhow::Error::msg)?;
        let (addr, ca) = (format!("{ip}:{port}"), ca.clone());
        tokio::task::spawn_blocking(move || tls_handshake(&addr, &ca))
            .await?
            .with_context(|| format!("a TLS handshake with the {component}"))?;
    }
    Ok(())
}

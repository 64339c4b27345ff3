//! The Kubernetes objects an `MQInstance` becomes, as pure functions of the resource,
//! what it runs ([`Effective`]: its spec over its cluster profile) and the operator's
//! settings: name-server and broker StatefulSets, their Services and the broker
//! ConfigMap. The reconciler applies them with server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use serde_json::{Value, json};

use crate::crd::{FlushMode, MQInstance};
use crate::domain::profiles::Effective;

/// Port of the name servers.
pub const NAMESRV_PORT: u16 = 9876;
/// Remoting port of the brokers (the VIP channel is this minus 2).
pub const BROKER_PORT: u16 = 10911;
/// Operations HTTP port of brokers and name servers (`/healthz`, `/metrics`).
pub const OPS_PORT: u16 = 10912;
/// Where the broker ConfigMap is mounted.
const CONFIG_DIR: &str = "/etc/mqfleet";
/// Where the broker store volume is mounted.
const STORE_DIR: &str = "/store";
/// Where a broker writes why it stopped (Kubernetes' default termination message path).
pub const TERMINATION_LOG: &str = "/dev/termination-log";

pub use crate::domain::names::{
    COMPONENT_LABEL, INSTANCE_ID_LABEL, MANAGED_BY, Names, OPERATOR, OWNER_NAME_LABEL,
    OWNER_NAMESPACE_LABEL,
};

/// What the operator was started with that shapes workloads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace of every instance's workloads.
    pub namespace: String,
    /// Name of the ConfigMap (in `namespace`) holding the cluster profiles.
    pub profiles_configmap: String,
}

/// Labels on every object of the instance.
pub fn labels(
    instance: &MQInstance,
    names: &Names,
    component: Option<&str>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.to_owned(), OPERATOR.to_owned()),
        (INSTANCE_ID_LABEL.to_owned(), names.instance_id.clone()),
        (
            OWNER_NAMESPACE_LABEL.to_owned(),
            instance.metadata.namespace.clone().unwrap_or_default(),
        ),
        (
            OWNER_NAME_LABEL.to_owned(),
            instance.metadata.name.clone().unwrap_or_default(),
        ),
    ]);
    if let Some(c) = component {
        labels.insert(COMPONENT_LABEL.to_owned(), c.to_owned());
    }
    labels
}

/// Pod selector of one component.
fn selector(names: &Names, component: &str) -> Value {
    json!({INSTANCE_ID_LABEL: names.instance_id, COMPONENT_LABEL: component})
}

/// The name-server list brokers use: each name-server pod's stable DNS name.
pub fn namesrv_addrs(effective: &Effective, names: &Names, settings: &Settings) -> String {
    (0..effective.name_server_replicas)
        .map(|i| {
            format!(
                "{}-{i}.{}.{}.svc.cluster.local:{NAMESRV_PORT}",
                names.namesrv(),
                names.namesrv_headless(),
                settings.namespace
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The broker ConfigMap (`broker.conf`, RocketMQ's properties format). A pending cut of a
/// damaged commit log (`status.storeRecovery`) adds that broker's
/// `recoverTruncateAt.<brokerName>` line, outside the part whose hash rolls the brokers.
pub fn config_map(
    instance: &MQInstance,
    names: &Names,
    settings: &Settings,
    effective: &Effective,
    recovery: Option<&crate::crd::StoreRecovery>,
) -> ConfigMap {
    let header = format!(
        "# Written by mq-operator for MQInstance {}/{}; edits are overwritten.\n",
        instance.metadata.namespace.as_deref().unwrap_or_default(),
        instance.metadata.name.as_deref().unwrap_or_default(),
    );
    let acl = format!(
        "aclEnable={}\naclFile={ACL_DIR}/{}\n",
        instance.spec.acl_enabled,
        super::acl::ACL_FILE_KEY
    );
    // The instance's limits, shared evenly by its brokers; read live.
    let brokers = i64::from(effective.broker_replicas.max(1));
    let per_broker = |tps: i64| (tps + brokers - 1) / brokers;
    let broker = format!(
        "{header}{}namesrvAddr={}\n{acl}maxSendTps={}\nmaxReceiveTps={}\n{}",
        restart_settings(effective),
        namesrv_addrs(effective, names, settings),
        per_broker(instance.spec.max_send_tps),
        per_broker(instance.spec.max_receive_tps),
        recovery
            .map(super::store_health::recover_truncate_line)
            .unwrap_or_default(),
    );
    from_json(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta(instance, names, &names.config(), settings, None),
        "data": {"broker.conf": broker, "namesrv.conf": format!("{header}{acl}")},
    }))
}

/// Where the ACL Secret is mounted in broker and name-server pods.
const ACL_DIR: &str = "/etc/mqfleet/acl";

/// Where the profile's TLS Secret is mounted.
const TLS_DIR: &str = "/etc/mqfleet/tls";

/// The config and ACL volumes (the ACL Secret is optional: pods start before it exists),
/// and the profile's TLS Secret (not optional: a server asked to speak TLS does not start
/// without its certificate; the pod's events name the missing Secret).
fn config_volumes(names: &Names, effective: &Effective) -> Value {
    let mut volumes = vec![
        json!({"name": "config", "configMap": {"name": names.config()}}),
        json!({"name": "acl", "secret": {"secretName": names.acl(), "optional": true}}),
    ];
    if let Some(secret) = &effective.tls_secret {
        volumes.push(json!({"name": "tls", "secret": {"secretName": secret}}));
    }
    Value::Array(volumes)
}

fn config_mounts(effective: &Effective) -> Vec<Value> {
    let mut mounts = vec![
        json!({"name": "config", "mountPath": CONFIG_DIR, "readOnly": true}),
        json!({"name": "acl", "mountPath": ACL_DIR, "readOnly": true}),
    ];
    if effective.tls_secret.is_some() {
        mounts.push(json!({"name": "tls", "mountPath": TLS_DIR, "readOnly": true}));
    }
    mounts
}

/// The server flags of the profile's TLS (none without it).
fn tls_args(effective: &Effective) -> Vec<String> {
    match effective.tls_secret {
        Some(_) => vec![
            format!("--tls-cert={TLS_DIR}/tls.crt"),
            format!("--tls-key={TLS_DIR}/tls.key"),
        ],
        None => vec![],
    }
}

/// The part of `broker.conf` a broker reads only at start. Its hash is on the pod
/// template, so changing it rolls the brokers one at a time; the rest (`namesrvAddr`) is
/// re-read live and changes without restarts.
fn restart_settings(effective: &Effective) -> String {
    let flush = match effective.flush_mode {
        FlushMode::Sync => "SYNC_FLUSH",
        FlushMode::Async => "ASYNC_FLUSH",
    };
    format!(
        "brokerClusterName={}\nbrokerName=broker-{{ordinal}}\nflushDiskType={flush}\nstorePathRootDir={STORE_DIR}\n",
        effective.cluster
    )
}

/// Pod-template annotation: hash of the settings brokers read only at start.
pub const CONFIG_HASH_ANNOTATION: &str = "mqfleet.io/config-hash";

/// Hex SHA-1 of `bytes`: names a content, for "did it change" checks.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn meta(
    instance: &MQInstance,
    names: &Names,
    name: &str,
    settings: &Settings,
    component: Option<&str>,
) -> Value {
    json!({"name": name, "namespace": settings.namespace, "labels": labels(instance, names, component)})
}

/// Variables every server container gets: its pod's address and name (downward API), and
/// the instance's admin key, from a Secret that is not optional, so no server starts
/// without it: admin requests and registrations must be signed with it from the start.
fn pod_env(names: &Names) -> Value {
    let key = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": names.admin(), "key": key}}});
    json!([
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        key("MQ_ADMIN_ACCESS_KEY", super::acl::ADMIN_ACCESS_KEY),
        key("MQ_ADMIN_SECRET_KEY", super::acl::ADMIN_SECRET_KEY),
    ])
}

fn probes() -> Value {
    json!({
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": OPS_PORT}, "periodSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/livez", "port": OPS_PORT}, "periodSeconds": 10, "failureThreshold": 6},
    })
}

fn resources(value: Option<&k8s_openapi::api::core::v1::ResourceRequirements>) -> Value {
    value
        .and_then(|r| serde_json::to_value(r).ok())
        .unwrap_or_else(|| json!({}))
}

/// User and group the servers run as (not root); the store volume is group-writable by
/// it through `fsGroup`.
pub const RUN_AS: i64 = 10001;

/// The pod-level part every server pod gets: no API token (the servers never call the
/// API), a non-root user owning the volumes, the profile's placement and its image pull
/// Secrets.
fn pod_hardening_and_placement(effective: &Effective) -> Value {
    let placement = &effective.placement;
    let mut spec = json!({
        "automountServiceAccountToken": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    if !placement.node_selector.is_empty() {
        spec["nodeSelector"] = json!(placement.node_selector);
    }
    if !placement.tolerations.is_empty() {
        spec["tolerations"] = serde_json::to_value(&placement.tolerations).unwrap_or_default();
    }
    if let Some(affinity) = &placement.affinity {
        spec["affinity"] = serde_json::to_value(affinity).unwrap_or_default();
    }
    // Only when set: an absent list keeps the pod template (and so the running pods) of
    // instances whose profile has none exactly as before.
    if !effective.image_pull_secrets.is_empty() {
        let names: Vec<Value> = effective
            .image_pull_secrets
            .iter()
            .map(|name| json!({"name": name}))
            .collect();
        spec["imagePullSecrets"] = Value::Array(names);
    }
    spec
}

/// Every server container: no privilege escalation, a read-only root filesystem (the
/// store and the config are volumes), no capabilities.
fn container_security() -> Value {
    json!({"securityContext": {
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    }})
}

/// The name servers: a StatefulSet binding each pod's own address.
pub fn namesrv_statefulset(
    instance: &MQInstance,
    names: &Names,
    settings: &Settings,
    effective: &Effective,
) -> StatefulSet {
    let mut args = vec![
        "namesrv".to_owned(),
        format!("--listen=$(POD_IP):{NAMESRV_PORT}"),
        // Always on, so switching spec.exposure never restarts the name servers.
        format!(
            "--external-listen=$(POD_IP):{}",
            super::exposure::NAMESRV_EXTERNAL_PORT
        ),
        format!("--http-listen=$(POD_IP):{OPS_PORT}"),
        format!("--instance-id={}", names.instance_id),
        format!("--config={CONFIG_DIR}/namesrv.conf"),
    ];
    args.extend(tls_args(effective));
    let mut container = json!({
        "name": "namesrv",
        "image": effective.name_server_image,
        "args": args,
        "env": pod_env(names),
        "ports": [{"name": "namesrv", "containerPort": NAMESRV_PORT}, {"name": "external", "containerPort": super::exposure::NAMESRV_EXTERNAL_PORT}, {"name": "ops", "containerPort": OPS_PORT}],
        "volumeMounts": config_mounts(effective),
        "resources": resources(effective.name_server_resources.as_ref()),
    });
    merge(&mut container, probes());
    merge(&mut container, container_security());
    let mut pod = json!({
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": config_volumes(names, effective),
    });
    merge(&mut pod, pod_hardening_and_placement(effective));
    from_json(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": meta(instance, names, &names.namesrv(), settings, Some("namesrv")),
        "spec": {
            "serviceName": names.namesrv_headless(),
            "replicas": effective.name_server_replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector(names, "namesrv")},
            "template": {
                "metadata": {"labels": labels(instance, names, Some("namesrv"))},
                "spec": pod,
            },
        },
    }))
}

/// The brokers: a StatefulSet, one broker `broker-<ordinal>` per pod, each with its store
/// on a claim from the volume template.
pub fn broker_statefulset(
    instance: &MQInstance,
    names: &Names,
    settings: &Settings,
    effective: &Effective,
) -> StatefulSet {
    let mut args = vec![
        "broker".to_owned(),
        format!("--listen=$(POD_IP):{BROKER_PORT}"),
        format!("--advertise-addr=$(POD_IP):{BROKER_PORT}"),
        format!("--http-listen=$(POD_IP):{OPS_PORT}"),
        format!("--config={CONFIG_DIR}/broker.conf"),
        format!("--store-dir={STORE_DIR}"),
        format!("--segment-size={}", effective.segment_size),
        format!("--termination-log={TERMINATION_LOG}"),
    ];
    if instance.spec.independent_naming {
        args.push(format!("--instance-id={}", names.instance_id));
    }
    args.extend(tls_args(effective));
    let mut container = json!({
        "name": "broker",
        "image": effective.broker_image,
        "args": args,
        "env": pod_env(names),
        "ports": [{"name": "remoting", "containerPort": BROKER_PORT}, {"name": "ops", "containerPort": OPS_PORT}],
        "volumeMounts": [{"name": "store", "mountPath": STORE_DIR}],
        "resources": resources(effective.broker_resources.as_ref()),
        // The broker's last words (a damaged store, a volume too small) reach the
        // pod's status; a crash without them shows its log's tail.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    merge(&mut container, probes());
    merge(&mut container, container_security());
    if let Some(mounts) = container["volumeMounts"].as_array_mut() {
        mounts.extend(config_mounts(effective));
    }
    let mut claim = json!({
        "metadata": {"name": "store", "labels": labels(instance, names, Some("broker"))},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": effective.storage_size.0}}},
    });
    if let Some(class) = &effective.storage_class_name {
        claim["spec"]["storageClassName"] = json!(class);
    }
    let mut pod = json!({
        "terminationGracePeriodSeconds": 60,
        "containers": [container],
        "volumes": config_volumes(names, effective),
    });
    merge(&mut pod, pod_hardening_and_placement(effective));
    from_json(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": meta(instance, names, &names.broker(), settings, Some("broker")),
        "spec": {
            "serviceName": names.broker_headless(),
            "replicas": effective.broker_replicas,
            "podManagementPolicy": "Parallel",
            // One broker at a time, each Ready before the next goes: the others serve.
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": selector(names, "broker")},
            "template": {
                "metadata": {
                    "labels": labels(instance, names, Some("broker")),
                    "annotations": {CONFIG_HASH_ANNOTATION: content_hash(restart_settings(effective).as_bytes())},
                },
                "spec": pod,
            },
            "volumeClaimTemplates": [claim],
        },
    }))
}

/// Services: clients' name-server Service (its ClusterIP is the endpoint), and headless
/// Services for stable pod names (the name servers' publish not-ready addresses, so a
/// restarting name server keeps its DNS name and brokers keep their list).
pub fn services(instance: &MQInstance, names: &Names, settings: &Settings) -> Vec<Service> {
    let port = |name: &str, port: u16| json!({"name": name, "port": port, "targetPort": port, "protocol": "TCP"});
    vec![
        from_json(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(instance, names, &names.namesrv(), settings, Some("namesrv")),
            "spec": {"selector": selector(names, "namesrv"), "ports": [port("namesrv", NAMESRV_PORT)]},
        })),
        from_json(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(instance, names, &names.namesrv_headless(), settings, Some("namesrv")),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true,
                     "selector": selector(names, "namesrv"), "ports": [port("namesrv", NAMESRV_PORT)]},
        })),
        from_json(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(instance, names, &names.broker_headless(), settings, Some("broker")),
            "spec": {"clusterIP": "None", "selector": selector(names, "broker"),
                     "ports": [port("remoting", BROKER_PORT)]},
        })),
    ]
}

/// PodDisruptionBudgets (at most one broker and one name server down at a time, so a
/// node drain never takes a whole instance), in the `policy` version the server offers.
pub fn disruption_budgets(
    instance: &MQInstance,
    names: &Names,
    settings: &Settings,
    api_version: &str,
) -> Vec<kube::core::DynamicObject> {
    [("broker", names.broker()), ("namesrv", names.namesrv())]
        .into_iter()
        .map(|(component, name)| {
            from_json(json!({
                "apiVersion": api_version, "kind": "PodDisruptionBudget",
                "metadata": meta(instance, names, &name, settings, Some(component)),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(names, component)}},
            }))
        })
        .collect()
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        t.extend(e);
    }
}

/// The builders' JSON always has the typed shape; a failure here is a bug in this file,
/// caught by the unit tests.
fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    match serde_json::from_value(value) {
        Ok(v) => v,
        Err(e) => panic!("workload builder produced an invalid object: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(independent: bool) -> MQInstance {
        let mut i: MQInstance = serde_json::from_value(json!({
            "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {"instanceName": "orders", "cluster": "default",
                     "brokers": {"replicas": 2, "flushMode": "sync", "storage": {"size": "5Gi", "storageClassName": "fast"}},
                     "nameServers": {"replicas": 2}},
        }))
        .unwrap();
        i.spec.independent_naming = independent;
        i
    }

    fn settings() -> Settings {
        Settings {
            namespace: "mqfleet-system".into(),
            profiles_configmap: "mqfleet-cluster-profiles".into(),
        }
    }

    const PROFILES: &str = r#"
default:
  brokers:
    image: mqfleet/mq-broker:dev
    replicas: 3
    storage: {size: 1Gi}
    resources: {requests: {cpu: 100m, memory: 128Mi}}
  nameServers:
    image: mqfleet/mq-namesrv:dev
    replicas: 1
    resources: {requests: {cpu: 50m, memory: 64Mi}}
  nodeSelector: {mqfleet.io/pool: brokers}
  tolerations: [{key: dedicated, operator: Equal, value: mq, effect: NoSchedule}]
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: kubernetes.io/hostname
            labelSelector: {matchLabels: {mqfleet.io/component: broker}}
"#;

    fn effective(i: &MQInstance) -> Effective {
        let profiles = crate::domain::profiles::Profiles::parse(PROFILES).unwrap();
        Effective::of(&i.spec, profiles.get("default").unwrap())
    }

    fn pod_spec(sts: &StatefulSet) -> k8s_openapi::api::core::v1::PodSpec {
        sts.spec.clone().unwrap().template.spec.unwrap()
    }

    #[test]
    fn a_profile_with_tls_mounts_its_secret_and_turns_tls_on_in_every_server() {
        let (i, s) = (instance(true), settings());
        let names = Names::of(&i);
        let tls_of = |sts: &StatefulSet| {
            let pod = pod_spec(sts);
            let c = &pod.containers[0];
            let args = c.args.clone().unwrap_or_default();
            let volume = pod
                .volumes
                .unwrap_or_default()
                .into_iter()
                .find(|v| v.name == "tls");
            let mount = c
                .volume_mounts
                .clone()
                .unwrap_or_default()
                .into_iter()
                .find(|m| m.name == "tls");
            (args, volume, mount)
        };
        for sts in [
            broker_statefulset(&i, &names, &s, &effective(&i)),
            namesrv_statefulset(&i, &names, &s, &effective(&i)),
        ] {
            let (args, volume, mount) = tls_of(&sts);
            assert!(
                volume.is_none() && mount.is_none(),
                "no TLS without the profile's"
            );
            assert!(!args.iter().any(|a| a.starts_with("--tls")));
        }
        let mut tls = effective(&i);
        tls.tls_secret = Some("mq-tls".into());
        for sts in [
            broker_statefulset(&i, &names, &s, &tls),
            namesrv_statefulset(&i, &names, &s, &tls),
        ] {
            let (args, volume, mount) = tls_of(&sts);
            let secret = volume
                .and_then(|v| v.secret)
                .expect("the TLS Secret is a volume");
            assert_eq!(secret.secret_name.as_deref(), Some("mq-tls"));
            assert_ne!(
                secret.optional,
                Some(true),
                "a server asked for TLS waits for it"
            );
            assert_eq!(mount.expect("mounted").mount_path, TLS_DIR);
            assert!(
                args.contains(&format!("--tls-cert={TLS_DIR}/tls.crt")),
                "{args:?}"
            );
            assert!(
                args.contains(&format!("--tls-key={TLS_DIR}/tls.key")),
                "{args:?}"
            );
        }
        let parsed = crate::domain::profiles::Profiles::parse(&format!(
            "{PROFILES}  tls: {{secretName: mq-tls}}\n"
        ))
        .unwrap();
        let from_profile = Effective::of(&i.spec, parsed.get("default").unwrap());
        assert_eq!(from_profile.tls_secret.as_deref(), Some("mq-tls"));
    }

    #[test]
    fn names_are_dns_safe_and_stable() {
        let names = Names::of(&instance(true));
        assert!(names.instance_id.starts_with("MQ_INST_"));
        assert!(names.base.starts_with("mq-inst-"));
        assert!(names.broker_headless().len() <= 63);
        assert_eq!(names, Names::of(&instance(true)));
    }

    #[test]
    fn brokers_find_name_servers_by_stable_dns_names() {
        let (i, s) = (instance(true), settings());
        let names = Names::of(&i);
        let cm = config_map(&i, &names, &s, &effective(&i), None);
        let conf = &cm.data.unwrap()["broker.conf"];
        let ns = names.namesrv();
        let hl = names.namesrv_headless();
        assert!(conf.contains(&format!(
            "namesrvAddr={ns}-0.{hl}.mqfleet-system.svc.cluster.local:9876;{ns}-1.{hl}.mqfleet-system.svc.cluster.local:9876\n"
        )), "{conf}");
        assert!(conf.contains("flushDiskType=SYNC_FLUSH"));
        assert!(conf.contains("brokerName=broker-{ordinal}"));
    }

    #[test]
    fn limits_are_shared_by_the_brokers_and_live_settings_do_not_roll_them() {
        let (mut i, s) = (instance(true), settings());
        i.spec.max_send_tps = 5001;
        i.spec.max_receive_tps = 100;
        i.spec.acl_enabled = true;
        let names = Names::of(&i);
        let data = config_map(&i, &names, &s, &effective(&i), None)
            .data
            .unwrap();
        let conf = &data["broker.conf"];
        assert!(conf.contains("maxSendTps=2501\n"), "{conf}");
        assert!(conf.contains("maxReceiveTps=50\n"), "{conf}");
        assert!(conf.contains("aclEnable=true\naclFile=/etc/mqfleet/acl/plain_acl.yml\n"));
        assert!(data["namesrv.conf"].contains("aclEnable=true"));
        let hash = |i: &MQInstance| {
            broker_statefulset(i, &names, &s, &effective(i))
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let before = hash(&i);
        i.spec.acl_enabled = false;
        i.spec.max_send_tps = 10;
        assert_eq!(hash(&i), before, "live settings must not restart brokers");
        i.spec.brokers.flush_mode = Some(FlushMode::Async);
        assert_ne!(hash(&i), before, "the flush mode is read at start only");
    }

    #[test]
    fn a_pending_cut_is_one_brokers_line_outside_the_restart_hash() {
        let (i, s) = (instance(true), settings());
        let names = Names::of(&i);
        let cut = crate::crd::StoreRecovery {
            pod: format!("{}-1", names.broker()),
            broker: "broker-1".into(),
            segment: format!("{:020}", 0),
            offset: 4242,
        };
        let conf = |r: Option<&crate::crd::StoreRecovery>| {
            config_map(&i, &names, &s, &effective(&i), r).data.unwrap()["broker.conf"].clone()
        };
        let with = conf(Some(&cut));
        assert!(
            with.ends_with("recoverTruncateAt.broker-1=4242\n"),
            "{with}"
        );
        assert!(!conf(None).contains("recoverTruncateAt"));
        // The restart hash is of the start-only part, which the line is not in.
        assert!(!restart_settings(&effective(&i)).contains("recoverTruncateAt"));
        // Brokers say why they stop, where Kubernetes reads it.
        let sts = broker_statefulset(&i, &names, &s, &effective(&i));
        let c = &sts.spec.unwrap().template.spec.unwrap().containers[0];
        let args = c.args.clone().unwrap();
        assert!(
            args.contains(&"--termination-log=/dev/termination-log".to_owned()),
            "{args:?}"
        );
        assert!(
            args.contains(&format!("--segment-size={}", 1u64 << 30)),
            "{args:?}"
        );
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(
            c.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
    }

    #[test]
    fn the_broker_statefulset_binds_its_pod_ip_and_claims_its_store() {
        let (i, s) = (instance(true), settings());
        let names = Names::of(&i);
        let sts = broker_statefulset(&i, &names, &s, &effective(&i));
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let c = &spec.template.spec.unwrap().containers[0];
        let args = c.args.clone().unwrap();
        assert!(args.contains(&"--listen=$(POD_IP):10911".to_owned()));
        assert!(args.contains(&format!("--instance-id={}", names.instance_id)));
        let claim = &spec.volume_claim_templates.unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "5Gi"
        );
        let shared = broker_statefulset(&instance(false), &names, &s, &effective(&i));
        let args = shared.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert!(!args.iter().any(|a| a.starts_with("--instance-id")));
    }

    #[test]
    fn services_set_protocols_for_server_side_apply_on_1_20() {
        let (i, s) = (instance(true), settings());
        for svc in services(&i, &Names::of(&i), &s) {
            for port in svc.spec.unwrap().ports.unwrap() {
                assert_eq!(port.protocol.as_deref(), Some("TCP"));
            }
        }
    }

    #[test]
    fn images_resources_and_placement_come_from_the_profile() {
        let (mut i, s) = (instance(true), settings());
        i.spec.brokers = Default::default();
        i.spec.name_servers = Default::default();
        let names = Names::of(&i);
        let e = effective(&i);
        let brokers = broker_statefulset(&i, &names, &s, &e);
        assert_eq!(brokers.spec.as_ref().unwrap().replicas, Some(3));
        let pod = pod_spec(&brokers);
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("mqfleet/mq-broker:dev"));
        let requests = c.resources.as_ref().unwrap().requests.clone().unwrap();
        assert_eq!(requests["cpu"].0, "100m");
        assert_eq!(requests["memory"].0, "128Mi");
        assert_eq!(
            pod.node_selector.as_ref().unwrap()["mqfleet.io/pool"],
            "brokers"
        );
        assert_eq!(
            pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
            Some("dedicated")
        );
        assert!(pod.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
        let claim = &brokers
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .clone()
            .unwrap()[0];
        let claim = claim.spec.as_ref().unwrap();
        assert_eq!(
            claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "1Gi"
        );
        assert_eq!(claim.storage_class_name, None);

        let namesrv = namesrv_statefulset(&i, &names, &s, &e);
        assert_eq!(namesrv.spec.as_ref().unwrap().replicas, Some(1));
        let pod = pod_spec(&namesrv);
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("mqfleet/mq-namesrv:dev"));
        let requests = c.resources.as_ref().unwrap().requests.clone().unwrap();
        assert_eq!(requests["cpu"].0, "50m");
        assert!(pod.tolerations.is_some() && pod.node_selector.is_some());
        let conf = config_map(&i, &names, &s, &e, None).data.unwrap()["broker.conf"].clone();
        assert_eq!(conf.matches(".svc.cluster.local:9876").count(), 1, "{conf}");
        assert!(conf.contains("flushDiskType=ASYNC_FLUSH"), "{conf}");
    }

    #[test]
    fn the_profiles_image_pull_secrets_reach_every_server_pod_and_only_when_set() {
        let (i, s) = (instance(true), settings());
        let names = Names::of(&i);
        let pulls = |e: &Effective| {
            [
                broker_statefulset(&i, &names, &s, e),
                namesrv_statefulset(&i, &names, &s, e),
            ]
            .map(|sts| {
                pod_spec(&sts)
                    .image_pull_secrets
                    .map(|refs| refs.into_iter().map(|r| r.name).collect::<Vec<_>>())
            })
        };
        let plain = effective(&i);
        assert_eq!(pulls(&plain), [None, None], "no list without a profile's");
        let yaml = PROFILES.replace(
            "default:\n",
            "default:\n  imagePullSecrets: [regcred, mirror.creds]\n",
        );
        let profiles = crate::domain::profiles::Profiles::parse(&yaml).unwrap();
        let private = Effective::of(&i.spec, profiles.get("default").unwrap());
        let want = Some(vec!["regcred".to_owned(), "mirror.creds".to_owned()]);
        assert_eq!(pulls(&private), [want.clone(), want]);
    }

    #[test]
    fn the_spec_overrides_the_profile_where_allowed() {
        let (mut i, s) = (instance(true), settings());
        i.spec.brokers.resources = Some(
            serde_json::from_value(json!({"requests": {"cpu": "2", "memory": "4Gi"}})).unwrap(),
        );
        let names = Names::of(&i);
        let sts = broker_statefulset(&i, &names, &s, &effective(&i));
        assert_eq!(
            sts.spec.as_ref().unwrap().replicas,
            Some(2),
            "spec replicas"
        );
        let c = &pod_spec(&sts).containers[0];
        assert_eq!(
            c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0,
            "2"
        );
        // The image is never the tenant's.
        assert_eq!(c.image.as_deref(), Some("mqfleet/mq-broker:dev"));
        let claim = &sts
            .spec
            .as_ref()
            .unwrap()
            .volume_claim_templates
            .clone()
            .unwrap()[0];
        assert_eq!(
            claim.spec.as_ref().unwrap().storage_class_name.as_deref(),
            Some("fast")
        );
    }

    #[test]
    fn server_pods_are_hardened_and_get_no_api_token() {
        let (i, s) = (instance(true), settings());
        let names = Names::of(&i);
        let e = effective(&i);
        for sts in [
            broker_statefulset(&i, &names, &s, &e),
            namesrv_statefulset(&i, &names, &s, &e),
        ] {
            let pod = pod_spec(&sts);
            assert_eq!(pod.automount_service_account_token, Some(false));
            let psc = pod.security_context.clone().unwrap();
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(psc.run_as_user, Some(RUN_AS));
            assert_eq!(psc.fs_group, Some(RUN_AS), "the store stays writable");
            let csc = pod.containers[0].security_context.clone().unwrap();
            assert_eq!(csc.allow_privilege_escalation, Some(false));
            assert_eq!(csc.read_only_root_filesystem, Some(true));
            assert_eq!(csc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
        }
    }

    #[test]
    fn a_profile_edit_changes_the_pod_templates() {
        let (i, s) = (instance(true), settings());
        let names = Names::of(&i);
        let before = broker_statefulset(&i, &names, &s, &effective(&i));
        let mut e = effective(&i);
        e.broker_resources =
            Some(serde_json::from_value(json!({"requests": {"cpu": "300m"}})).unwrap());
        let after = broker_statefulset(&i, &names, &s, &e);
        assert_ne!(
            before.spec.unwrap().template,
            after.spec.unwrap().template,
            "a new template rolls the brokers"
        );
    }
}

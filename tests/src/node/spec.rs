//! From a container's spec to what to execute: the image's binary, the environment
//! (with `valueFrom`, `envFrom`, service links and `$(VAR)` expansion) and the argv.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret, Service};
use kube::runtime::reflector::ObjectRef;

use super::Stores;
use super::expand::expand;
use crate::images::reference::{DEFAULT_DOMAIN, Reference};
use crate::images::store::{Store, StoredImage};

/// The image repository whose images run workspace binaries.
pub const IMAGE_REPOSITORY: &str = "mqfleet";
/// Waiting reason for images the process kubelet cannot run (not loaded, not built).
pub const IMAGE_ERROR: &str = "ErrImageNeverPull";
/// Waiting reason for a missing ConfigMap/Secret key referenced by the env.
pub const CONFIG_ERROR: &str = "CreateContainerConfigError";
/// CPU the Nodes report (also what `resourceFieldRef` gives without limits).
pub const NODE_CPU: &str = "8";
/// Memory the Nodes report.
pub const NODE_MEMORY: &str = "32Gi";
/// PATH for containers that do not set one (Debian's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a container cannot be started (yet); becomes its `waiting` state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotStartable {
    /// The waiting reason (`ErrImageNeverPull`, `CreateContainerConfigError`).
    pub reason: &'static str,
    /// What the user should know.
    pub message: String,
}

impl NotStartable {
    fn config(message: String) -> NotStartable {
        NotStartable {
            reason: CONFIG_ERROR,
            message,
        }
    }
}

/// Where the Pod runs, for `fieldRef`s and the base environment.
#[derive(Debug, Clone)]
pub struct PodFacts {
    /// status.podIP.
    pub pod_ip: Ipv4Addr,
    /// status.hostIP.
    pub host_ip: Ipv4Addr,
    /// The `kubernetes` Service's ClusterIP.
    pub api_ip: Ipv4Addr,
    /// HOME inside the container (an empty per-Pod directory, so nothing of the host's
    /// home, e.g. a kubeconfig, leaks in).
    pub home: PathBuf,
}

/// Objects env references resolve against.
pub trait Objects {
    /// The ConfigMap `ns/name`.
    fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap>;
    /// The Secret `ns/name`.
    fn secret(&self, ns: &str, name: &str) -> Option<Secret>;
    /// The Services of `ns` (for service-link variables).
    fn services(&self, ns: &str) -> Vec<Service>;
}

impl Objects for Stores {
    fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
        let key = ObjectRef::new(name).within(ns);
        self.config_maps.get(&key).map(|o| (*o).clone())
    }

    fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        let key = ObjectRef::new(name).within(ns);
        self.secrets.get(&key).map(|o| (*o).clone())
    }

    fn services(&self, ns: &str) -> Vec<Service> {
        self.services
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
            .map(|s| (**s).clone())
            .collect()
    }
}

/// The tag whose `mqfleet/<binary>` images run the workspace build.
pub const DEV_TAG: &str = "dev";

/// What an image runs from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// `mqfleet/<binary>:dev`: the workspace binary (in the host's root).
    Workspace(PathBuf),
    /// Any other image, found in the testbed's image store.
    Stored {
        /// The normalised reference the Pod named.
        reference: Reference,
        /// The image (boxed: it is much larger than a path).
        image: Box<StoredImage>,
    },
}

impl ImageSource {
    /// The container status's `imageID`: the binary, or `name@<manifest digest>`.
    pub fn image_id(&self) -> String {
        match self {
            ImageSource::Workspace(binary) => format!("file://{}", binary.display()),
            ImageSource::Stored { reference, image } => {
                format!("{}@{}", reference.name, image.digest)
            }
        }
    }
}

/// Resolves a container's image: only `mqfleet/<binary>:dev` (exactly that tag, any
/// spelling of Docker Hub) is the workspace binary in `bin_dir`; any other image must
/// be in `store` (`mq-testbed image load`), else it waits with `ErrImageNeverPull`.
pub fn resolve_image(
    image: &str,
    bin_dir: &Path,
    store: &Store,
) -> Result<ImageSource, NotStartable> {
    let never = |message: String| NotStartable {
        reason: IMAGE_ERROR,
        message,
    };
    let reference = Reference::parse(image).map_err(|e| never(e.to_string()))?;
    if let Some(binary) = workspace_binary(&reference) {
        let path = bin_dir.join(binary);
        return if crate::paths::is_executable(&path) {
            Ok(ImageSource::Workspace(path))
        } else {
            Err(never(format!(
                "image {image:?}: {} is not built (run `cargo build --workspace --bins`)",
                path.display()
            )))
        };
    }
    match store.resolve(image) {
        Ok(Some(stored)) => Ok(ImageSource::Stored {
            reference,
            image: Box::new(stored),
        }),
        Ok(None) => Err(never(format!(
            "image {image:?} is not in the testbed's image store ({}): load it with `mq-testbed image load <oci-layout-dir>[:tag]` (e.g. target/images/mq-broker after `make images`); only {IMAGE_REPOSITORY}/<binary>:{DEV_TAG} runs a binary of the workspace in {}",
            store.dir().display(),
            bin_dir.display()
        ))),
        Err(e) => Err(never(format!("image {image:?}: the image store: {e}"))),
    }
}

/// The binary `docker.io/mqfleet/<binary>:dev` names (no digest, one path component).
fn workspace_binary(reference: &Reference) -> Option<&str> {
    let binary = reference
        .name
        .strip_prefix(DEFAULT_DOMAIN)?
        .strip_prefix('/')?
        .strip_prefix(IMAGE_REPOSITORY)?
        .strip_prefix('/')?;
    let dev = reference.tag.as_deref() == Some(DEV_TAG) && reference.digest.is_none();
    (dev && !binary.contains('/') && !binary.starts_with('.')).then_some(binary)
}

/// The argv: the image's binary unless `command` replaces it (a `command[0]` naming the
/// image's binary still means that binary), then `args`, all `$(VAR)`-expanded.
pub fn argv(
    container: &Container,
    binary: &Path,
    env: &HashMap<String, String>,
) -> (PathBuf, Vec<String>) {
    let name = binary.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut words: Vec<String> = container.command.clone().unwrap_or_default();
    let program = match words.first() {
        None => binary.to_path_buf(),
        Some(first) => {
            let first = expand(first, env);
            let base = first.rsplit('/').next().unwrap_or(&first).to_owned();
            words.remove(0);
            if Some(base) == name {
                binary.to_path_buf()
            } else {
                PathBuf::from(first)
            }
        }
    };
    words.extend(container.args.clone().unwrap_or_default());
    let args = words.iter().map(|w| expand(w, env)).collect();
    (program, args)
}

/// The container's environment, in kubelet's order: base variables, service links,
/// `envFrom`, then `env` (later definitions win; `$(VAR)` sees earlier ones).
pub fn environment(
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
    objects: &dyn Objects,
) -> Result<Vec<(String, String)>, NotStartable> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = Env::default();
    for (k, v) in base_env(pod, facts) {
        env.set(k, v);
    }
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    if links {
        for (k, v) in service_links(&objects.services(ns)) {
            env.set(k, v);
        }
    }
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        if let Some(r) = &source.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match objects.config_map(ns, &r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        env.set(format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => {
                    return Err(NotStartable::config(format!(
                        "configmap \"{}\" not found",
                        r.name
                    )));
                }
            }
        }
        if let Some(r) = &source.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match objects.secret(ns, &r.name) {
                Some(s) => {
                    for (k, v) in secret_strings(&s) {
                        env.set(format!("{prefix}{k}"), v);
                    }
                }
                None if optional => {}
                None => {
                    return Err(NotStartable::config(format!(
                        "secret \"{}\" not found",
                        r.name
                    )));
                }
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(pod, container, var, facts, objects, &env.map)? {
            env.set(var.name.clone(), value);
        }
    }
    Ok(env.ordered())
}

/// Ordered variables with a lookup map for expansion.
#[derive(Default)]
struct Env {
    order: Vec<String>,
    map: HashMap<String, String>,
}

impl Env {
    fn set(&mut self, key: String, value: String) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push(key);
        }
    }

    fn ordered(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .filter_map(|k| self.map.remove(&k).map(|v| (k, v)))
            .collect()
    }
}

fn base_env(pod: &Pod, facts: &PodFacts) -> Vec<(String, String)> {
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let api = facts.api_ip;
    vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), facts.home.display().to_string()),
        ("HOSTNAME".into(), hostname),
        ("KUBERNETES_SERVICE_HOST".into(), api.to_string()),
        ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), "443".into()),
        ("KUBERNETES_PORT".into(), format!("tcp://{api}:443")),
        ("KUBERNETES_PORT_443_TCP".into(), format!("tcp://{api}:443")),
        ("KUBERNETES_PORT_443_TCP_PROTO".into(), "tcp".into()),
        ("KUBERNETES_PORT_443_TCP_PORT".into(), "443".into()),
        ("KUBERNETES_PORT_443_TCP_ADDR".into(), api.to_string()),
    ]
}

/// Docker-link style variables (`<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT[_<NAME>]`)
/// for the namespace's Services with a ClusterIP, as kubelet sets them.
fn service_links(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None" && !ip.is_empty())
        else {
            continue;
        };
        let name = svc
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        if name == "KUBERNETES" {
            continue;
        }
        let ports = spec.ports.as_deref().unwrap_or_default();
        out.push((format!("{name}_SERVICE_HOST"), ip.to_owned()));
        if let Some(first) = ports.first() {
            out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
            let proto = first.protocol.as_deref().unwrap_or("TCP").to_lowercase();
            out.push((
                format!("{name}_PORT"),
                format!("{proto}://{ip}:{}", first.port),
            ));
        }
        for port in ports {
            if let Some(port_name) = &port.name {
                let port_name = port_name.to_uppercase().replace('-', "_");
                out.push((
                    format!("{name}_SERVICE_PORT_{port_name}"),
                    port.port.to_string(),
                ));
            }
        }
    }
    out
}

fn env_value(
    pod: &Pod,
    container: &Container,
    var: &EnvVar,
    facts: &PodFacts,
    objects: &dyn Objects,
    defined: &HashMap<String, String>,
) -> Result<Option<String>, NotStartable> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), defined)));
    };
    if let Some(field) = &from.field_ref {
        return field_value(pod, &field.field_path, facts)
            .map(Some)
            .ok_or_else(|| {
                NotStartable::config(format!(
                    "env {}: unsupported fieldRef {:?}",
                    var.name, field.field_path
                ))
            });
    }
    if let Some(resource) = &from.resource_field_ref {
        return Ok(Some(resource_value(container, pod, resource)));
    }
    if let Some(key) = &from.config_map_key_ref {
        let optional = key.optional.unwrap_or(false);
        let value = objects
            .config_map(ns, &key.name)
            .and_then(|cm| cm.data.and_then(|d| d.get(&key.key).cloned()));
        return match value {
            Some(v) => Ok(Some(v)),
            None if optional => Ok(None),
            None => Err(NotStartable::config(format!(
                "couldn't find key {} in ConfigMap {ns}/{}",
                key.key, key.name
            ))),
        };
    }
    if let Some(key) = &from.secret_key_ref {
        let optional = key.optional.unwrap_or(false);
        let value = objects
            .secret(ns, &key.name)
            .and_then(|s| secret_strings(&s).remove(&key.key));
        return match value {
            Some(v) => Ok(Some(v)),
            None if optional => Ok(None),
            None => Err(NotStartable::config(format!(
                "couldn't find key {} in Secret {ns}/{}",
                key.key, key.name
            ))),
        };
    }
    Ok(Some(String::new()))
}

/// A Secret's data and stringData as text (values that are not UTF-8 are lossy-decoded).
pub fn secret_strings(secret: &Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    out.extend(secret.string_data.clone().unwrap_or_default());
    out
}

/// The value of a downward-API `fieldPath`, as kubelet renders it.
pub fn field_value(pod: &Pod, path: &str, facts: &PodFacts) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_suffix("']")?
            .strip_prefix("['")?;
        Some(map.and_then(|m| m.get(key).cloned()).unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(render_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(render_map(meta.annotations.as_ref())),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(facts.pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(facts.host_ip.to_string()),
        _ => keyed("metadata.labels", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations", meta.annotations.as_ref())),
    }
}

/// `key="value"` lines, sorted, like the downward API's label file.
fn render_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn resource_value(
    container: &Container,
    pod: &Pod,
    field: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> String {
    let target = field
        .container_name
        .as_deref()
        .and_then(|name| {
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .find(|c| c.name == name)
        })
        .unwrap_or(container);
    let (kind, resource) = field
        .resource
        .split_once('.')
        .unwrap_or(("limits", &field.resource));
    let resources = target.resources.as_ref();
    let set = match kind {
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => resources.and_then(|r| r.limits.as_ref()),
    };
    let fallback = if resource == "cpu" {
        NODE_CPU
    } else {
        NODE_MEMORY
    };
    let quantity = set
        .and_then(|s| s.get(resource))
        .map(|q| q.0.as_str())
        .unwrap_or(fallback);
    let divisor = field
        .divisor
        .as_ref()
        .and_then(|d| parse_quantity(&d.0))
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    let value = parse_quantity(quantity).unwrap_or(0.0) / divisor;
    // Kubelet rounds up, so a 500m CPU limit reads as 1 core.
    format!("{}", value.ceil() as u64)
}

/// A Kubernetes quantity (`500m`, `2`, `1Gi`, `10M`) as a number.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed {
        config_maps: Vec<ConfigMap>,
        secrets: Vec<Secret>,
        services: Vec<Service>,
    }

    impl Objects for Fixed {
        fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
            self.config_maps
                .iter()
                .find(|c| {
                    c.metadata.namespace.as_deref() == Some(ns)
                        && c.metadata.name.as_deref() == Some(name)
                })
                .cloned()
        }
        fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
            self.secrets
                .iter()
                .find(|c| {
                    c.metadata.namespace.as_deref() == Some(ns)
                        && c.metadata.name.as_deref() == Some(name)
                })
                .cloned()
        }
        fn services(&self, _ns: &str) -> Vec<Service> {
            self.services.clone()
        }
    }

    fn objects() -> Fixed {
        Fixed {
            config_maps: vec![
                serde_json::from_value(json!({
                    "metadata": {"name": "conf", "namespace": "t"},
                    "data": {"mode": "fast", "level": "3"}
                }))
                .unwrap(),
            ],
            secrets: vec![
                serde_json::from_value(json!({
                    "metadata": {"name": "keys", "namespace": "t"},
                    "data": {"password": "aHVudGVyMg=="}
                }))
                .unwrap(),
            ],
            services: vec![
                serde_json::from_value(json!({
                    "metadata": {"name": "web-front", "namespace": "t"},
                    "spec": {"clusterIP": "127.100.3.4", "ports": [{"name": "http", "port": 80}]}
                }))
                .unwrap(),
            ],
        }
    }

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: Ipv4Addr::new(127, 128, 1, 7),
            host_ip: Ipv4Addr::new(127, 128, 0, 1),
            api_ip: Ipv4Addr::new(127, 100, 0, 1),
            home: PathBuf::from("/pods/x/home"),
        }
    }

    fn pod(container: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "t", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "node-2", "containers": [container]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    fn env_of(container: serde_json::Value) -> Result<HashMap<String, String>, NotStartable> {
        let (pod, c) = pod(container);
        environment(&pod, &c, &facts(), &objects()).map(|v| v.into_iter().collect())
    }

    #[test]
    fn value_from_fields_config_maps_and_secrets() {
        let env = env_of(json!({"name": "c", "image": "mqfleet/x", "env": [
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "mode"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "keys", "key": "password"}}},
            {"name": "ADDR", "value": "$(IP):10911"},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
        ]}))
        .unwrap();
        assert_eq!(env["IP"], "127.128.1.7");
        assert_eq!(env["NAME"], "web-0");
        assert_eq!(env["NS"], "t");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["NODE"], "node-2");
        assert_eq!(env["MODE"], "fast");
        assert_eq!(env["PW"], "hunter2");
        assert_eq!(env["ADDR"], "127.128.1.7:10911");
        assert_eq!(env["CPU"], NODE_CPU);
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "127.100.0.1");
        assert_eq!(env["WEB_FRONT_SERVICE_HOST"], "127.100.3.4");
        assert_eq!(env["WEB_FRONT_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["HOME"], "/pods/x/home");
    }

    #[test]
    fn env_from_with_prefix_and_later_env_wins() {
        let env = env_of(json!({"name": "c", "image": "mqfleet/x",
            "envFrom": [{"configMapRef": {"name": "conf"}, "prefix": "CFG_"}, {"secretRef": {"name": "keys"}}],
            "env": [{"name": "CFG_mode", "value": "slow"}]
        }))
        .unwrap();
        assert_eq!(env["CFG_mode"], "slow");
        assert_eq!(env["CFG_level"], "3");
        assert_eq!(env["password"], "hunter2");
    }

    #[test]
    fn missing_references_are_config_errors_unless_optional() {
        let err = env_of(json!({"name": "c", "image": "mqfleet/x", "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "nope"}}}
        ]}))
        .unwrap_err();
        assert_eq!(err.reason, CONFIG_ERROR);
        assert!(err.message.contains("nope"), "{}", err.message);
        let env = env_of(json!({"name": "c", "image": "mqfleet/x", "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}}
        ]}))
        .unwrap();
        assert!(!env.contains_key("X"));
        let err = env_of(json!({"name": "c", "image": "mqfleet/x", "envFrom": [{"secretRef": {"name": "gone"}}]}))
            .unwrap_err();
        assert!(err.message.contains("gone"));
    }

    #[test]
    fn only_the_dev_tag_maps_to_workspace_binaries() {
        let dir = std::env::temp_dir().join(format!("mq-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::new(&dir.join("testbed"));
        let bin = dir.join("mq-broker");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let workspace = |image: &str| match resolve_image(image, &dir, &store) {
            Ok(ImageSource::Workspace(path)) => Some(path),
            _ => None,
        };
        assert_eq!(workspace("mqfleet/mq-broker:dev"), Some(bin.clone()));
        assert_eq!(
            workspace("docker.io/mqfleet/mq-broker:dev"),
            Some(bin.clone())
        );
        for not_dev in [
            "mqfleet/mq-broker",
            "mqfleet/mq-broker:0.1.0",
            "mqfleet/mq-broker:latest",
            "registry:5000/mqfleet/mq-broker:dev",
            &format!("mqfleet/mq-broker:dev@sha256:{}", "a".repeat(64)),
            "other/mq-broker:dev",
        ] {
            let err = resolve_image(not_dev, &dir, &store).unwrap_err();
            assert_eq!(err.reason, IMAGE_ERROR, "{not_dev}");
            assert!(
                err.message.contains("mq-testbed image load"),
                "{}",
                err.message
            );
            assert!(
                err.message.contains("mqfleet/<binary>:dev"),
                "{}",
                err.message
            );
        }
        let bad = resolve_image("Not/Valid", &dir, &store).unwrap_err();
        assert!(
            bad.message.contains("invalid image reference"),
            "{}",
            bad.message
        );
        let missing = resolve_image("mqfleet/mq-console:dev", &dir, &store).unwrap_err();
        assert!(
            missing.message.contains("is not built"),
            "{}",
            missing.message
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn command_replaces_the_entrypoint_and_args_expand() {
        let (_, c) = pod(json!({"name": "c", "image": "mqfleet/mq-broker",
            "command": ["mq-broker", "broker"], "args": ["--listen=$(IP):1", "$$(IP)"]}));
        let env: HashMap<String, String> = [("IP".to_owned(), "1.2.3.4".to_owned())].into();
        let bin = Path::new("/t/debug/mq-broker");
        let (program, args) = argv(&c, bin, &env);
        assert_eq!(program, bin);
        assert_eq!(args, ["broker", "--listen=1.2.3.4:1", "$(IP)"]);
        let (_, c) = pod(
            json!({"name": "c", "image": "mqfleet/mq-broker", "command": ["sh", "-c", "exit 3"]}),
        );
        assert_eq!(argv(&c, bin, &env).0, PathBuf::from("sh"));
        let (_, c) =
            pod(json!({"name": "c", "image": "mqfleet/mq-broker", "args": ["standalone"]}));
        assert_eq!(
            argv(&c, bin, &env),
            (bin.to_path_buf(), vec!["standalone".to_owned()])
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2Gi"), Some(2.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("10M"), Some(1e7));
        assert_eq!(parse_quantity("x"), None);
    }
}

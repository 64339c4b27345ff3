//! Test fixtures in the style of kube-rs's controller-rs example: a [`Context`] whose
//! client talks to a mocked API server, and a verifier that answers the requests a
//! reconcile is expected to make, in order, and fails on any other. Reconcilers' decisions
//! (what they write, and above all what they must not touch) are tested without a cluster.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};

use super::{Context, Settings};
use crate::crd::{MQInstance, MQTopic};

/// The mocked API server's side of the client.
pub type ApiServerHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Writers that fill the context's caches, as the watches would.
pub struct Caches {
    /// The instances' cache.
    pub instances: Writer<MQInstance>,
    /// The ownership records' cache.
    pub records: Writer<k8s_openapi::api::core::v1::ConfigMap>,
    /// The topics' cache.
    pub topics: Writer<MQTopic>,
}

/// Puts `obj` into the cache behind `writer`.
pub fn cache<K>(writer: &mut Writer<K>, obj: K)
where
    K: Resource<DynamicType = ()> + Clone,
{
    writer.apply_watcher_event(&watcher::Event::Apply(obj));
}

fn store<K>() -> (Store<K>, Writer<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    reflector::store()
}

impl Context {
    /// A context whose client talks to the returned mocked API server.
    pub fn test() -> (Arc<Self>, ApiServerVerifier, Caches) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (instances, instances_writer) = store();
        let (records, records_writer) = store();
        let (topics, topics_writer) = store();
        let ctx = Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "mq-operator".into(),
                    instance: None,
                },
            ),
            client,
            settings: Settings {
                namespace: "mqfleet-system".into(),
                profiles_configmap: "mqfleet-cluster-profiles".into(),
            },
            profiles: crate::watch::profiles::ProfileCache::fixed(
                crate::domain::profiles::Known::Missing,
                "mqfleet-cluster-profiles",
            ),
            resync: Duration::from_secs(600),
            topics,
            groups: store().0,
            empowers: store().0,
            instances,
            records,
            accounts: store().0,
            reported: Default::default(),
            admin: mq_broker::acl::Credentials::new("mqfleet-platform", "0123456789abcdef0123"),
            admin_problem: None,
            metrics: Default::default(),
            drain_timeout: Duration::from_secs(600),
            failures: Default::default(),
            pdb: None,
        };
        let caches = Caches {
            instances: instances_writer,
            records: records_writer,
            topics: topics_writer,
        };
        (Arc::new(ctx), ApiServerVerifier(handle), caches)
    }
}

/// An instance of namespace `ns` named `name` asking for instance id `id`, created at
/// `created`, with the operator's finalizer already on it.
pub fn instance(ns: &str, name: &str, id: &str, created: &str) -> MQInstance {
    serde_json::from_value(json!({
        "apiVersion": "mqfleet.io/v1alpha1", "kind": "MQInstance",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"),
                     "creationTimestamp": created, "generation": 1,
                     "resourceVersion": "1",
                     "finalizers": [super::instance::FINALIZER]},
        "spec": {"instanceName": name, "instanceId": id,
                 "brokers": {"replicas": 1, "storage": {"retainOnDelete": false}}},
    }))
    .unwrap_or_else(|e| panic!("fixture instance: {e}"))
}

/// One request the reconcile must make: its method, a path it must equal, and text its
/// body must contain; the response to give.
pub struct Expect {
    /// HTTP method.
    pub method: &'static str,
    /// The request path (without the query).
    pub path: String,
    /// Text the body must contain (`""`: anything).
    pub body_contains: &'static str,
    /// Text the body must not contain (`""`: no such rule).
    pub body_lacks: &'static str,
    /// Status of the answer.
    pub status: StatusCode,
    /// Body of the answer.
    pub answer: Value,
}

impl Expect {
    /// A request answered 200 with `answer`.
    pub fn ok(method: &'static str, path: impl Into<String>, answer: Value) -> Self {
        Self {
            method,
            path: path.into(),
            body_contains: "",
            body_lacks: "",
            status: StatusCode::OK,
            answer,
        }
    }

    /// The same, with text the request body must contain.
    pub fn with_body(mut self, text: &'static str) -> Self {
        self.body_contains = text;
        self
    }

    /// The same, with text the request body must not contain.
    pub fn without(mut self, text: &'static str) -> Self {
        self.body_lacks = text;
        self
    }

    /// A request answered with an API error `code` (`reason` as the API server says it).
    pub fn error(method: &'static str, path: impl Into<String>, code: u16, reason: &str) -> Self {
        Self {
            method,
            path: path.into(),
            body_contains: "",
            body_lacks: "",
            status: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            answer: json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "message": reason, "reason": reason, "code": code}),
        }
    }
}

/// Answers the reconcile's requests.
pub struct ApiServerVerifier(ApiServerHandle);

impl ApiServerVerifier {
    /// Serves `script` in order: each request must match its entry (else the test fails
    /// naming what came instead), and nothing may follow it.
    pub fn run(self, script: Vec<Expect>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut handle = self.0;
            for expected in script {
                let next = tokio::time::timeout(Duration::from_secs(5), handle.next_request());
                let (request, send) = next
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "no request came; expected {} {}",
                            expected.method, expected.path
                        )
                    })
                    .unwrap_or_else(|| {
                        panic!(
                            "the client went away; expected {} {}",
                            expected.method, expected.path
                        )
                    });
                let (method, path) = (
                    request.method().to_string(),
                    request.uri().path().to_owned(),
                );
                let body = request
                    .into_body()
                    .collect_bytes()
                    .await
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                assert_eq!(
                    (method.as_str(), path.as_str()),
                    (expected.method, expected.path.as_str()),
                    "unexpected request (body {body})"
                );
                assert!(
                    body.contains(expected.body_contains),
                    "{method} {path}: body lacks {:?}: {body}",
                    expected.body_contains
                );
                assert!(
                    expected.body_lacks.is_empty() || !body.contains(expected.body_lacks),
                    "{method} {path}: body reveals {:?}: {body}",
                    expected.body_lacks
                );
                let answer = serde_json::to_vec(&expected.answer).unwrap_or_default();
                send.send_response(
                    Response::builder()
                        .status(expected.status)
                        .body(Body::from(answer))
                        .unwrap_or_else(|e| panic!("response: {e}")),
                );
            }
            // Nothing else: in particular nothing that writes over another's objects.
            let more =
                tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await;
            if let Ok(Some((request, _))) = more {
                panic!(
                    "unexpected extra request {} {}",
                    request.method(),
                    request.uri().path()
                );
            }
        })
    }
}

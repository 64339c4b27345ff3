//! Shared by the broker suites: `mq-broker` processes started from the binary `make`
//! just built, and the real third-party client (`rocketmq-client-rust`) set up to run
//! from a plain `#[test]`.

#![allow(dead_code)]

#[path = "../../../broker/tests/common/process.rs"]
mod process;
#[allow(unused_imports)]
pub use process::{BrokerProcess, TempDir};
use rocketmq_client_rust::{ClientRuntime, ClientRuntimeConfig};
use rocketmq_runtime::RuntimeOwner;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `mq-broker` binary of this build (target/debug/mq-broker next to the test's deps dir).
pub fn broker_binary() -> PathBuf {
    workspace_binary("mq-broker")
}

/// A binary of this build (`target/<profile>/<name>`, next to the test's deps dir).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, as `make test` does)",
        bin.display()
    );
    bin
}

/// `mq-broker standalone` on loopback with ephemeral ports.
pub fn standalone(store_dir: &Path, extra: &[&str]) -> BrokerProcess {
    BrokerProcess::standalone(&broker_binary(), store_dir, extra)
}

/// `mq-broker standalone` with ACL on: `accounts` is the ACL file's text (its JSON form),
/// written with a `broker.conf` into `dir`; the store is `dir/store`.
pub fn standalone_with_acl(dir: &Path, accounts: &str, extra: &[&str]) -> BrokerProcess {
    let (conf, acl) = (dir.join("broker.conf"), dir.join("plain_acl.json"));
    std::fs::write(&acl, accounts).expect("ACL file");
    std::fs::write(
        &conf,
        format!("aclEnable=true\naclFile={}\n", acl.display()),
    )
    .expect("config file");
    let mut args = vec!["--config", conf.to_str().expect("UTF-8 temp path")];
    args.extend_from_slice(extra);
    standalone(&dir.join("store"), &args)
}

/// A message of `topic` with tag `T` and `body`.
pub fn message(
    topic: &str,
    body: &str,
) -> rocketmq_model::common::message::message_single::Message {
    rocketmq_model::common::message::message_single::Message::builder()
        .topic(topic)
        .tags("T")
        .body_slice(body.as_bytes())
        .build_unchecked()
}

/// A started producer of `group`, after a warm-up send that creates `topic` (the broker
/// auto-creates) and until the name server routes it.
pub async fn warmed_producer(
    rt: Arc<rocketmq_client_rust::ClientRuntime>,
    namesrv: &str,
    topic: &str,
    group: &str,
) -> rocketmq_client_rust::DefaultMQProducer {
    let mut producer = rocketmq_client_rust::DefaultMQProducer::builder(rt)
        .client_config(client_config(namesrv, "producer"))
        .producer_group(group.to_owned())
        .build();
    producer.start().await.expect("producer starts");
    producer
        .send(message(topic, "warmup"))
        .await
        .expect("warm-up send creates the topic");
    wait_for_route(namesrv, topic).await;
    producer
}

/// `mq-broker namesrv` on loopback with ephemeral ports.
pub fn namesrv_only() -> BrokerProcess {
    BrokerProcess::start(
        &broker_binary(),
        &[
            "namesrv",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
    )
}

/// `mq-broker broker` named `name`, registering with `namesrv_addr` (`a;b`).
pub fn broker_only(store_dir: &Path, namesrv_addr: &str, name: &str) -> BrokerProcess {
    let dir = store_dir.to_str().expect("UTF-8 temp path");
    BrokerProcess::start(
        &broker_binary(),
        &[
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--no-vip",
            "--http-listen",
            "127.0.0.1:0",
            "--namesrv-addr",
            namesrv_addr,
            "--broker-name",
            name,
            "--store-dir",
            dir,
        ],
    )
}

/// The third-party client's runtime: it must own its Tokio runtime, so tests are plain
/// `#[test]`s that hand it their async part.
pub struct Client {
    owner: RuntimeOwner,
    runtime: Arc<ClientRuntime>,
    _telemetry: rocketmq_observability::TelemetryRuntimeGuard,
}

impl Client {
    /// A client runtime.
    pub fn new() -> Self {
        let owner = RuntimeOwner::new().expect("client runtime");
        let telemetry = rocketmq_observability::TelemetryRuntimeGuard::noop();
        let runtime = ClientRuntime::try_new(
            owner.root_context().component("client"),
            ClientRuntimeConfig::default(),
            telemetry.handle(),
        )
        .expect("client runtime");
        Self {
            owner,
            runtime,
            _telemetry: telemetry,
        }
    }

    /// Runs `f` on the client's runtime, then shuts the client down.
    pub fn run<F, Fut, T>(self, f: F) -> T
    where
        F: FnOnce(Arc<ClientRuntime>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let runtime = Arc::clone(&self.runtime);
        let out = self.owner.block_on(async move {
            let out = f(Arc::clone(&runtime)).await;
            let _ = runtime.shutdown().await;
            out
        });
        let _ = self.owner.block_on(self.owner.shutdown_tasks());
        let _ = self.owner.shutdown_background();
        out
    }
}

/// Polls `check` until it returns true or `timeout` passes (then panics with `what`).
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends one request to `addr` on a fresh connection (observing the broker from the side;
/// the client under test is always the third-party one).
pub async fn raw_request(
    addr: &str,
    request: mq_broker::remoting::RemotingCommand,
) -> mq_broker::remoting::RemotingCommand {
    let channel = mq_broker::net::connect(
        addr,
        Duration::from_secs(5),
        Arc::new(mq_broker::net::NoRequests),
    )
    .await
    .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    channel
        .request(request, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("request to {addr}: {e}"))
}

/// Waits until the name server routes `topic` (so consumers started now find it at once).
pub async fn wait_for_route(namesrv: &str, topic: &str) {
    use mq_broker::remoting::{RemotingCommand, request_code, response_code};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let req = RemotingCommand::new_request(request_code::GET_ROUTEINFO_BY_TOPIC)
            .with_ext("topic", topic);
        if raw_request(namesrv, req).await.code == response_code::SUCCESS {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no route for {topic} at {namesrv} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The client settings every wire test uses: this name server, a distinct instance name
/// (two consumers in one process must be two clients), no VIP channel.
pub fn client_config(namesrv: &str, instance: &str) -> rocketmq_client_rust::ClientConfig {
    rocketmq_client_rust::ClientConfig {
        namesrv_addr: Some(namesrv.to_owned().into()),
        instance_name: instance.to_owned().into(),
        vip_channel_enabled: false,
        ..Default::default()
    }
}

/// A message's body as text.
pub fn body_text(m: &rocketmq_model::common::message::message_ext::MessageExt) -> String {
    String::from_utf8_lossy(&m.body().unwrap_or_default()).into_owned()
}

/// A listener that keeps every body it gets and fails those starting with `poison`
/// (with no retries allowed they go straight to the group's dead-letter queue).
#[derive(Clone, Default)]
pub struct FailPoison(pub Arc<std::sync::Mutex<Vec<String>>>);

impl rocketmq_client_rust::MessageListenerConcurrently for FailPoison {
    fn consume_message(
        &self,
        msgs: &[&rocketmq_model::common::message::message_ext::MessageExt],
        _: &rocketmq_client_rust::ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<rocketmq_client_rust::ConsumeConcurrentlyStatus> {
        let mut failed = false;
        let mut log = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for m in msgs {
            let body = body_text(m);
            failed |= body.starts_with("poison");
            log.push(body);
        }
        Ok(if failed {
            rocketmq_client_rust::ConsumeConcurrentlyStatus::ReconsumeLater
        } else {
            rocketmq_client_rust::ConsumeConcurrentlyStatus::ConsumeSuccess
        })
    }
}

impl FailPoison {
    /// How many deliveries there were.
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether nothing was delivered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many deliveries had body `body`.
    pub fn count(&self, body: &str) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|b| *b == body)
            .count()
    }
}

/// A listener that acknowledges every message and keeps its body text in `C`
/// (a `Vec` to count deliveries, a `HashSet` when redelivery is allowed).
pub struct Collect<C>(pub Arc<std::sync::Mutex<C>>);

impl<C: Extend<String> + Send> rocketmq_client_rust::MessageListenerConcurrently for Collect<C> {
    fn consume_message(
        &self,
        msgs: &[&rocketmq_model::common::message::message_ext::MessageExt],
        _: &rocketmq_client_rust::ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<rocketmq_client_rust::ConsumeConcurrentlyStatus> {
        let mut bodies = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bodies.extend(msgs.iter().map(|m| body_text(m)));
        Ok(rocketmq_client_rust::ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

/// Sends `count` messages `<prefix>-<i>` to `topic` through the name servers at `endpoint`
/// with the real client, unsigned, and consumes them with a push consumer of `group`
/// (from the first offset). Returns every body received; panics when a send fails or not
/// all of this round's messages arrive within 60 s (earlier rounds may come again, which
/// at-least-once delivery allows).
pub fn round_trip(
    endpoint: &str,
    namespace: Option<&str>,
    topic: &str,
    group: &str,
    prefix: &str,
    count: usize,
) -> std::collections::HashSet<String> {
    use rocketmq_client_rust::{DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer};
    use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
    use rocketmq_model::common::message::message_single::Message;
    let received = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let config = |name: &str| rocketmq_client_rust::ClientConfig {
        namespace: namespace.map(|n| n.to_owned().into()),
        ..client_config(endpoint, name)
    };
    let (topic, group) = (topic.to_owned(), group.to_owned());
    Client::new().run(|rt| {
        let received = received.clone();
        async move {
            let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
                .client_config(config("rt-consumer"))
                .consumer_group(group.clone())
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .consume_thread_min(4)
                .consume_thread_max(4)
                .build();
            consumer.subscribe(&topic, "*").await.expect("subscribe");
            consumer.register_message_listener_concurrently(Collect(received.clone()));
            consumer.start().await.expect("consumer starts");
            let mut producer = DefaultMQProducer::builder(rt.clone())
                .client_config(config("rt-producer"))
                .producer_group(format!("{group}_PRODUCER"))
                .build();
            producer.start().await.expect("producer starts");
            for i in 0..count {
                let message = Message::builder()
                    .topic(topic.as_str())
                    .tags("T")
                    .body_slice(format!("{prefix}-{i}").as_bytes())
                    .build_unchecked();
                if let Err(e) = producer.send(message).await {
                    let mut why = format!("{e}");
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        why.push_str(&format!(": {s}"));
                        source = s.source();
                    }
                    panic!("send {prefix}-{i} to {topic} at {endpoint}: {why}");
                }
            }
            let mine = format!("{prefix}-");
            eventually("every message consumed", Duration::from_secs(60), || {
                received
                    .lock()
                    .map(|r| r.iter().filter(|b| b.starts_with(&mine)).count() >= count)
                    .unwrap_or(false)
            })
            .await;
            consumer.shutdown().await;
            producer.shutdown().await;
        }
    });
    Arc::try_unwrap(received)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default()
}

/// The operator's console key of instance `instance_id` (Secret `<base>-console`): it
/// reads the instance's broker 0 (its topics, which hold `topic`, and its runtime info),
/// cannot create a topic there, and is neither the admin key nor accepted by the broker
/// of `other_id` (when given). Polls until the broker has the key (its ACL file is a
/// mounted Secret).
pub async fn console_key_reads_only(
    tb: &mq_testbed::Testbed,
    client: &kube::Client,
    instance_id: &str,
    topic: &str,
    other_id: Option<&str>,
) -> anyhow::Result<()> {
    use mq_broker::client::AdminClient;
    use mq_testbed::operator::{PLATFORM, instance_admin_key, instance_console_key, server_pod};
    let key = instance_console_key(client, instance_id).await?;
    let base = mq_operator::domain::ids::base(instance_id);
    anyhow::ensure!(
        key.access_key == format!("mqfleet-console-{base}"),
        "{key:?}"
    );
    let admin = instance_admin_key(client, instance_id).await?;
    anyhow::ensure!(
        key.secret_key != admin.secret_key,
        "the console key is the admin key"
    );
    let broker = |id: String| async move {
        let (_, ip) = server_pod(client, &id, "broker", 0).await?;
        Ok::<_, String>(format!("{ip}:10911"))
    };
    let connect = |addr: String, key: mq_broker::acl::Credentials| async move {
        AdminClient::connect(&addr, Duration::from_secs(5))
            .await
            .map(|c| c.with_credentials(key))
            .map_err(|e| e.to_string())
    };
    let addr = broker(instance_id.to_owned())
        .await
        .map_err(anyhow::Error::msg)?;
    let what = format!("the console key reading {instance_id}'s broker");
    tb.until(client, PLATFORM, &what, Duration::from_secs(60), || {
        let (addr, key) = (addr.clone(), key.clone());
        async move {
            let console = connect(addr, key).await?;
            let info = console.runtime_info().await.map_err(|e| e.to_string())?;
            let topics = console.topics().await.map_err(|e| e.to_string())?;
            let has = topics.iter().any(|t| t.topic_name.ends_with(topic));
            Ok((!info.is_empty() && has).then_some(()))
        }
    })
    .await?;
    let console = connect(addr, key.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    let config = mq_broker::broker::topics::topic_config("CONSOLE_MADE", 1);
    let err = console
        .create_topic(&config)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("the console key created a topic"))?;
    anyhow::ensure!(err.to_string().contains("console key"), "{err}");
    if let Some(other) = other_id {
        let addr = broker(other.to_owned()).await.map_err(anyhow::Error::msg)?;
        let elsewhere = connect(addr, key).await.map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            elsewhere.runtime_info().await.is_err(),
            "{instance_id}'s console key opened {other}'s broker"
        );
    }
    Ok(())
}

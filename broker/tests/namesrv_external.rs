//! Clients outside the cluster, against real `mq-broker namesrv` and `mq-broker broker`
//! processes: a broker registers its external address beside its own; the name
//! server's external port (`--external-listen`) answers routes and cluster info with
//! external addresses while its normal port keeps the pod addresses; a broker without an
//! external address is not offered outside; a change of `externalAddr.<brokerName>` in
//! the broker's config file reaches the routes without a restart; the external port
//! refuses registrations.
//!
//! Every process listens on ephemeral loopback ports; waits are bounded polls.

#[path = "common/process.rs"]
mod process;
use mq_broker::broker::topics::topic_config;
use mq_broker::client::AdminClient;
use mq_broker::namesrv::RegisterBrokerRequestHeader;
use mq_broker::net::{NoRequests, connect};
use mq_broker::remoting::body::{self, RegisterBrokerBody, TopicConfigSerializeWrapper};
use mq_broker::remoting::{RemotingCommand, request_code, response_code};
use process::{BrokerProcess, TempDir};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);
const CALL: Duration = Duration::from_secs(5);
const TOPIC: &str = "ExternalTopic";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mq-broker"))
}

fn namesrv() -> BrokerProcess {
    BrokerProcess::start(
        bin(),
        &[
            "namesrv",
            "--listen",
            "127.0.0.1:0",
            "--external-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ],
    )
}

fn broker(store: &Path, name: &str, namesrv: &str, extra: &[&str]) -> BrokerProcess {
    let store = store.to_str().expect("UTF-8 temp path");
    let mut args = vec![
        "broker",
        "--listen",
        "127.0.0.1:0",
        "--no-vip",
        "--http-listen",
        "127.0.0.1:0",
        "--store-dir",
        store,
        "--broker-name",
        name,
        "--namesrv-addr",
        namesrv,
        "--register-interval-secs",
        "1",
    ];
    args.extend_from_slice(extra);
    BrokerProcess::start(bin(), &args)
}

async fn admin(addr: &str) -> AdminClient {
    AdminClient::connect(addr, CALL)
        .await
        .unwrap_or_else(|e| panic!("{addr} answers: {e}"))
}

/// broker name → master address in the route of [`TOPIC`] from `namesrv`.
async fn route_addrs(namesrv: &str) -> Vec<(String, String)> {
    let Ok(Some(route)) = admin(namesrv).await.route(TOPIC).await else {
        return vec![];
    };
    let mut addrs: Vec<(String, String)> = route
        .broker_datas
        .iter()
        .filter_map(|b| Some((b.broker_name.clone(), b.broker_addrs.get(&0)?.clone())))
        .collect();
    addrs.sort();
    assert_eq!(
        route.queue_datas.len(),
        addrs.len(),
        "every queue of the route names a broker of the route"
    );
    addrs
}

/// Polls until the route of [`TOPIC`] at `namesrv` is `want`.
async fn route_becomes(namesrv: &str, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = route_addrs(namesrv).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "route at {namesrv} stayed {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn external_clients_get_external_addresses_and_the_pod_port_keeps_pod_addresses() {
    let ns = namesrv();
    let (inside, outside) = (ns.namesrv(), ns.addr("namesrvExternal"));
    let dir = TempDir::new("ns-external");
    std::fs::create_dir_all(dir.0.join("a")).unwrap();
    std::fs::create_dir_all(dir.0.join("b")).unwrap();
    // broker-a from its flag; broker-b from its config file, as the operator writes it.
    let conf = dir.0.join("broker.conf");
    std::fs::write(&conf, "externalAddr.broker-b=203.0.113.20:30002\n").unwrap();
    let conf_arg = format!("--config={}", conf.display());
    let a = broker(
        &dir.0.join("a"),
        "broker-a",
        &inside,
        &["--external-addr", "203.0.113.10:30001"],
    );
    let b = broker(&dir.0.join("b"), "broker-b", &inside, &[&conf_arg]);
    for broker in [&a, &b] {
        admin(&broker.broker())
            .await
            .create_topic(&topic_config(TOPIC, 4))
            .await
            .expect("topic created");
    }
    let (a_pod, b_pod) = (a.addr("advertised"), b.addr("advertised"));
    route_becomes(
        &inside,
        &[("broker-a", a_pod.as_str()), ("broker-b", b_pod.as_str())],
    )
    .await;
    route_becomes(
        &outside,
        &[
            ("broker-a", "203.0.113.10:30001"),
            ("broker-b", "203.0.113.20:30002"),
        ],
    )
    .await;
    let info = admin(&outside)
        .await
        .cluster_info()
        .await
        .expect("cluster info");
    assert_eq!(
        info.broker_addr_table["broker-b"]
            .broker_addrs
            .get(&0)
            .map(String::as_str),
        Some("203.0.113.20:30002")
    );
    let info = admin(&inside)
        .await
        .cluster_info()
        .await
        .expect("cluster info");
    assert_eq!(
        info.broker_addr_table["broker-b"].broker_addrs.get(&0),
        Some(&b_pod)
    );

    // The operator re-writes the file: the new address is registered without a restart;
    // without one the broker is offered inside only.
    std::fs::write(&conf, "externalAddr.broker-b=203.0.113.20:30099\n").unwrap();
    route_becomes(
        &outside,
        &[
            ("broker-a", "203.0.113.10:30001"),
            ("broker-b", "203.0.113.20:30099"),
        ],
    )
    .await;
    std::fs::write(&conf, "# back to exposure: cluster\n").unwrap();
    route_becomes(&outside, &[("broker-a", "203.0.113.10:30001")]).await;
    route_becomes(
        &inside,
        &[("broker-a", a_pod.as_str()), ("broker-b", b_pod.as_str())],
    )
    .await;
    let info = admin(&outside)
        .await
        .cluster_info()
        .await
        .expect("cluster info");
    assert!(!info.broker_addr_table.contains_key("broker-b"), "{info:?}");
}

#[tokio::test]
async fn the_external_port_refuses_registrations() {
    let ns = namesrv();
    let outside = ns.addr("namesrvExternal");
    let mut table = TopicConfigSerializeWrapper::default();
    table
        .topic_config_table
        .insert("Hijack".to_owned(), topic_config("Hijack", 4));
    let body = body::to_json(&RegisterBrokerBody {
        topic_config_serialize_wrapper: table,
        filter_server_list: vec![],
    });
    let mut req = RemotingCommand::new_request(request_code::REGISTER_BROKER).with_body(body);
    req.set_header(&RegisterBrokerRequestHeader {
        broker_name: "broker-x".into(),
        broker_addr: "198.51.100.66:10911".into(),
        cluster_name: "DefaultCluster".into(),
        ha_server_addr: None,
        broker_id: 0,
        compressed: Some(false),
        body_crc32: None,
        external_broker_addr: Some("198.51.100.66:10911".into()),
    });
    let channel = connect(&outside, CALL, Arc::new(NoRequests))
        .await
        .expect("external port answers");
    let answer = channel.request(req, CALL).await.expect("an answer");
    assert_eq!(answer.code, response_code::NO_PERMISSION, "{answer:?}");
    let info = admin(&ns.namesrv())
        .await
        .cluster_info()
        .await
        .expect("cluster info");
    assert!(info.broker_addr_table.is_empty(), "{info:?}");
}

//! Two name servers and two brokers with the real third-party client: a topic on both
//! brokers takes sends on both; when one broker stops it leaves the routes and sends go on.

mod support;

use mq_broker::broker::groups::group_config;
use mq_broker::broker::topics::topic_config;
use mq_broker::client::AdminClient;
use rocketmq_client_rust::{
    ClientConfig, DefaultMQProducer, DefaultMQPushConsumer, MQPushConsumer,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_single::Message;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{BrokerProcess, Client, TempDir, eventually};

const TOPIC: &str = "SpreadTopic";
const GROUP: &str = "GID_spread";

fn config(namesrv: &str, instance: &str) -> ClientConfig {
    ClientConfig {
        // Clients refresh routes every 30 s by default; 10 s is the client's minimum.
        poll_name_server_interval: 10_000,
        ..support::client_config(namesrv, instance)
    }
}

/// Waits until every name server routes `TOPIC` to exactly `brokers`.
async fn wait_for_brokers(namesrvs: &[String], brokers: &[&str]) {
    let want: HashSet<&str> = brokers.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for ns in namesrvs {
        let admin = AdminClient::connect(ns, Duration::from_secs(5))
            .await
            .expect("name server reachable");
        loop {
            let route = admin.route(TOPIC).await.expect("route query");
            let have: HashSet<String> = route
                .iter()
                .flat_map(|r| r.broker_datas.iter().map(|b| b.broker_name.clone()))
                .collect();
            if have.iter().map(String::as_str).collect::<HashSet<_>>() == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{ns} routes {TOPIC} to {have:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[test]
fn a_topic_on_two_brokers_survives_one_of_them_stopping() {
    let (d0, d1) = (TempDir::new("cluster-b0"), TempDir::new("cluster-b1"));
    let ns = [support::namesrv_only(), support::namesrv_only()];
    let namesrvs: Vec<String> = ns.iter().map(BrokerProcess::namesrv).collect();
    let addr = namesrvs.join(";");
    let b0 = support::broker_only(&d0.0, &addr, "broker-0");
    let b1 = support::broker_only(&d1.0, &addr, "broker-1");
    let got = Arc::new(Mutex::new(HashSet::new()));
    let (first_brokers, b0) = Client::new().run(|rt| {
        let got = got.clone();
        async move {
            // Broker mode does not auto-create: the operator's way in is the admin API.
            for b in [&b0, &b1] {
                let admin = AdminClient::connect(&b.broker(), Duration::from_secs(5))
                    .await
                    .expect("broker reachable");
                admin
                    .create_topic(&topic_config(TOPIC, 4))
                    .await
                    .expect("create topic");
                admin
                    .create_group(&group_config(GROUP))
                    .await
                    .expect("create group");
            }
            wait_for_brokers(&namesrvs, &["broker-0", "broker-1"]).await;

            let mut consumer = DefaultMQPushConsumer::builder(rt.clone())
                .client_config(config(&addr, "c1"))
                .consumer_group(GROUP.to_string())
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .consume_thread_min(4)
                .consume_thread_max(4)
                .build();
            consumer.subscribe(TOPIC, "*").await.expect("subscribe");
            consumer.register_message_listener_concurrently(support::Collect(got.clone()));
            consumer.start().await.expect("consumer starts");
            let mut producer = DefaultMQProducer::builder(rt.clone())
                .client_config(config(&addr, "p1"))
                .producer_group("GID_spread_producer")
                .build();
            producer.start().await.expect("producer starts");

            let mut used: HashSet<String> = HashSet::new();
            for i in 0..200 {
                let msg = Message::builder()
                    .topic(TOPIC)
                    .body_slice(format!("first-{i}").as_bytes())
                    .build_unchecked();
                let result = producer
                    .send(msg)
                    .await
                    .expect("send")
                    .expect("send result");
                used.extend(result.message_queue.map(|q| q.broker_name().to_string()));
            }
            eventually("the first 200", Duration::from_secs(60), || {
                got.lock().unwrap().len() >= 200
            })
            .await;

            // broker-0 stops: its connections close and the name servers drop it.
            assert!(
                b0.terminate(Duration::from_secs(20)).0.success(),
                "broker-0 stops cleanly on SIGTERM"
            );
            wait_for_brokers(&namesrvs, &["broker-1"]).await;
            // Until the client refreshes its route a send may still pick the stopped broker
            // and fail; an application retries it, as it would any failed send.
            let mut retried = 0;
            for i in 0..100 {
                let deadline = Instant::now() + Duration::from_secs(25);
                loop {
                    let msg = Message::builder()
                        .topic(TOPIC)
                        .body_slice(format!("second-{i}").as_bytes())
                        .build_unchecked();
                    match producer.send(msg).await {
                        Ok(Some(_)) => break,
                        other => {
                            assert!(
                                Instant::now() < deadline,
                                "send {i} kept failing with one broker left: {other:?}"
                            );
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            eprintln!("{retried} sends were retried while the client still routed to broker-0");
            eventually("the next 100", Duration::from_secs(60), || {
                got.lock().unwrap().len() >= 300
            })
            .await;
            consumer.shutdown().await;
            producer.shutdown().await;
            (used, b1)
        }
    });
    drop(b0);
    assert_eq!(
        first_brokers,
        HashSet::from(["broker-0".to_owned(), "broker-1".to_owned()]),
        "sends spread over both brokers"
    );
    let got = got.lock().unwrap();
    for i in 0..200 {
        assert!(got.contains(&format!("first-{i}")));
    }
    for i in 0..100 {
        assert!(got.contains(&format!("second-{i}")));
    }
    drop(ns);
}

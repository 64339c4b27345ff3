//! "Be liberal in what you accept" (spec/messaging.md): each way real clients differ,
//! sent as raw frames to a real `mq-broker` process.

mod support;

use bytes::BytesMut;
use mq_broker::remoting::{RemotingCommand, frame, request_code, response_code};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::TempDir;

/// A connection speaking hand-made frames.
struct Raw(TcpStream);

impl Raw {
    fn connect(addr: &str) -> Self {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(35)))
            .expect("timeout");
        Raw(s)
    }

    /// Sends a JSON header exactly as given (no normalisation) plus `body`.
    fn send_json(&mut self, header: serde_json::Value, body: &[u8]) -> RemotingCommand {
        let header = serde_json::to_vec(&header).expect("json");
        let mut frame = Vec::new();
        frame.extend_from_slice(&((4 + header.len() + body.len()) as i32).to_be_bytes());
        frame.extend_from_slice(&(header.len() as u32).to_be_bytes()); // type byte 0 = JSON
        frame.extend_from_slice(&header);
        frame.extend_from_slice(body);
        self.0.write_all(&frame).expect("write");
        self.read_response()
    }

    /// The next response; requests the broker sends us meanwhile (NOTIFY_CONSUMER_IDS_CHANGED
    /// after a heartbeat) are skipped, as a client handles them apart.
    fn read_response(&mut self) -> RemotingCommand {
        let mut buf = BytesMut::new();
        let mut chunk = [0u8; 65536];
        loop {
            while let Some(cmd) =
                frame::decode(&mut buf, frame::DEFAULT_MAX_FRAME).expect("a well-formed reply")
            {
                if cmd.is_response() {
                    return cmd;
                }
            }
            let n = self.0.read(&mut chunk).expect("reply");
            assert!(
                n > 0,
                "the broker closed the connection instead of answering"
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn send_header(
    topic: &str,
    ext: serde_json::Value,
    opaque: i32,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut h = json!({"code": request_code::SEND_MESSAGE_V2, "flag": 0, "language": "JAVA", "opaque": opaque, "version": 403, "extFields": ext});
    h["extFields"]["b"] = json!(topic);
    for (k, v) in extra.as_object().into_iter().flatten() {
        h[k] = v.clone();
    }
    h
}

fn v2_fields() -> serde_json::Value {
    json!({"a": "GID_liberal", "c": "TBW102", "d": "4", "e": "0", "f": "0", "g": "1700000000000", "h": "0", "i": "TAGS\u{1}TagA\u{2}"})
}

#[test]
fn header_variants_value_types_and_unknown_fields_are_accepted() {
    let dir = TempDir::new("liberal-headers");
    let broker = support::standalone(&dir.0, &[]);
    let mut raw = Raw::connect(&broker.broker());
    let cases = [
        (
            "with serializeTypeCurrentRPC",
            v2_fields(),
            json!({"serializeTypeCurrentRPC": "JSON"}),
        ),
        ("without serializeTypeCurrentRPC", v2_fields(), json!({})),
        (
            "language as a number, odd version",
            v2_fields(),
            json!({"language": 9, "version": 99999}),
        ),
        (
            "unknown language name",
            v2_fields(),
            json!({"language": "ERLANG_NEXT"}),
        ),
        (
            "numbers as JSON numbers",
            json!({"a": "GID_liberal", "c": "TBW102", "d": 4, "e": 0, "f": 0, "g": 1700000000000i64, "h": 0, "i": "TAGS\u{1}TagA\u{2}"}),
            json!({}),
        ),
        (
            "booleans as 0/1 and true/false",
            json!({"a": "GID_liberal", "c": "TBW102", "d": "4", "e": "0", "f": "0", "g": "1700000000000", "h": "0", "k": "0", "m": false}),
            json!({}),
        ),
        (
            "unknown ext fields and header keys",
            json!({"a": "GID_liberal", "c": "TBW102", "d": "4", "e": "0", "f": "0", "g": "1700000000000", "h": "0", "zz": "?"}),
            json!({"somethingNew": [1, 2]}),
        ),
        (
            "V1 long names",
            json!({"producerGroup": "GID_liberal", "defaultTopic": "TBW102", "defaultTopicQueueNums": "4", "queueId": "0", "sysFlag": "0", "bornTimestamp": "1700000000000", "flag": "0"}),
            json!({}),
        ),
    ];
    for (i, (what, ext, extra)) in cases.into_iter().enumerate() {
        let mut ext = ext;
        if what == "V1 long names" {
            ext["topic"] = json!("LiberalTopic");
        }
        let reply = raw.send_json(
            send_header("LiberalTopic", ext, 100 + i as i32, extra),
            b"hello",
        );
        assert_eq!(
            reply.code,
            response_code::SUCCESS,
            "{what}: {:?}",
            reply.remark
        );
        assert_eq!(
            reply.opaque,
            100 + i as i32,
            "{what}: the reply matches its request"
        );
        assert!(
            reply.ext("msgId").is_some_and(|id| id.len() == 32),
            "{what}: an offset message id"
        );
    }
    // A request missing a required field is answered with an error; the connection stays.
    let reply = raw.send_json(
        send_header("LiberalTopic", json!({"a": "GID_liberal"}), 7, json!({})),
        b"x",
    );
    assert_eq!(reply.code, response_code::SYSTEM_ERROR);
    assert!(
        reply.remark.unwrap_or_default().contains("missing"),
        "the remark says what is missing"
    );
    let again = raw.send_json(
        send_header("LiberalTopic", v2_fields(), 8, json!({})),
        b"still served",
    );
    assert_eq!(again.code, response_code::SUCCESS);
}

fn heartbeat(raw: &mut Raw, consumer_data: serde_json::Value, opaque: i32) -> RemotingCommand {
    let body = json!({"clientID": format!("127.0.0.1@liberal-{opaque}"), "producerDataSet": [], "consumerDataSet": [consumer_data]});
    let header = json!({"code": request_code::HEART_BEAT, "flag": 0, "language": "GO", "opaque": opaque, "version": 317, "extFields": {}});
    raw.send_json(header, &serde_json::to_vec(&body).expect("json"))
}

fn pull(raw: &mut Raw, group: &str, opaque: i32) -> RemotingCommand {
    let header = json!({"code": request_code::PULL_MESSAGE, "flag": 0, "language": "CPP", "opaque": opaque, "version": 1, "extFields": {
        "consumerGroup": group, "topic": "TagTopic", "queueId": "0", "queueOffset": "0", "maxMsgNums": "32",
        "sysFlag": "0", "commitOffset": "0", "suspendTimeoutMillis": "0", "subVersion": "0"}});
    raw.send_json(header, b"")
}

#[test]
fn heartbeat_variants_and_spaced_tag_expressions_filter_alike() {
    let dir = TempDir::new("liberal-heartbeat");
    let broker = support::standalone(&dir.0, &[]);
    let mut raw = Raw::connect(&broker.broker());
    for (i, tag) in ["TagA", "TagB", "TagC", "TagA"].iter().enumerate() {
        let mut ext = v2_fields();
        ext["i"] = json!(format!("TAGS\u{1}{tag}\u{2}"));
        let reply = raw.send_json(
            send_header("TagTopic", ext, 10 + i as i32, json!({})),
            tag.as_bytes(),
        );
        assert_eq!(reply.code, response_code::SUCCESS);
    }
    let variants = [
        // Java: names, expressionType, tags and (correct) codes.
        json!({"groupName": "GID_java", "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING", "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET", "unitMode": false,
               "subscriptionDataSet": [{"topic": "TagTopic", "subString": "TagA || TagB", "tagsSet": ["TagA", "TagB"], "codeSet": [2598919, 2598920], "subVersion": 1, "expressionType": "TAG", "classFilterMode": false}]}),
        // Enums as ordinals, no expressionType, subVersion as a string, tight expression.
        json!({"groupName": "GID_ordinals", "consumeType": 1, "messageModel": 1, "consumeFromWhere": 4, "unitMode": "0",
               "subscriptionDataSet": [{"topic": "TagTopic", "subString": "TagA||TagB", "subVersion": "1700000000000"}]}),
        // Codes computed from untrimmed pieces (the Rust client's quirk): must not matter.
        json!({"groupName": "GID_wrong_codes", "consumeType": "CONSUME_ACTIVELY", "messageModel": "CLUSTERING", "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET",
               "subscriptionDataSet": [{"topic": "TagTopic", "subString": "TagA || TagB", "tagsSet": ["TagA "], "codeSet": [1, 2, 3], "subVersion": 5}]}),
    ];
    for (i, data) in variants.into_iter().enumerate() {
        let group = data["groupName"].as_str().expect("name").to_owned();
        let reply = heartbeat(&mut raw, data, 20 + i as i32);
        assert_eq!(
            reply.code,
            response_code::SUCCESS,
            "{group}: {:?}",
            reply.remark
        );
        let reply = pull(&mut raw, &group, 30 + i as i32);
        assert_eq!(
            reply.code,
            response_code::SUCCESS,
            "{group}: {:?}",
            reply.remark
        );
        let body = reply.body.expect("messages");
        let bodies = stored_bodies(&body);
        assert_eq!(
            bodies,
            ["TagA", "TagB", "TagA"],
            "{group} gets TagA and TagB only"
        );
    }
}

/// The bodies of the stored messages of a pull reply.
fn stored_bodies(mut data: &[u8]) -> Vec<String> {
    let mut out = vec![];
    while !data.is_empty() {
        let msg = mq_broker::store::message::decode(data).expect("a stored message");
        out.push(String::from_utf8_lossy(msg.body).into_owned());
        data = &data[msg.store_size as usize..];
    }
    out
}

#[test]
fn the_retry_topic_exists_once_a_group_subscribes_and_failures_stay_on_their_connection() {
    let dir = TempDir::new("liberal-retry");
    let broker = support::standalone(&dir.0, &[]);
    let mut raw = Raw::connect(&broker.broker());
    let data = json!({"groupName": "GID_fresh", "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING", "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET",
                      "subscriptionDataSet": [{"topic": "AnyTopic", "subString": "*"}]});
    assert_eq!(heartbeat(&mut raw, data, 1).code, response_code::SUCCESS);
    let namesrv = broker.namesrv();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(support::wait_for_route(&namesrv, "%RETRY%GID_fresh"));

    // A request its handler refuses (queue 999 does not exist) is answered with an error…
    let mut other = Raw::connect(&broker.broker());
    let mut ext = v2_fields();
    ext["e"] = json!("999");
    let refused = raw.send_json(send_header("LiberalTopic2", ext, 2, json!({})), b"x");
    assert_ne!(refused.code, response_code::SUCCESS);
    // …and both that connection and another keep working.
    for conn in [&mut raw, &mut other] {
        let ok = conn.send_json(
            send_header("LiberalTopic2", v2_fields(), 3, json!({})),
            b"fine",
        );
        assert_eq!(ok.code, response_code::SUCCESS);
    }
}

//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through the same checks the cargo-fuzz
//! targets run (`mq_broker::fuzz`), in the normal test build: what fuzzing once found, or
//! was seeded with, stays fixed without a fuzzer. `make fuzz` runs the targets themselves.
//!
//! The `hand-*` seeds are written by the ignored `write_hand_made_seeds` below
//! (`cargo test -p mq-broker --test fuzz_corpus -- --ignored`); the `cap-*` seeds are real
//! client traffic, recorded by `tests/tests/fuzz_capture.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};
use mq_broker::fuzz::TARGETS;
use mq_broker::remoting::admin::{ConsumeStats, OffsetWrapper, TopicStatsTable};
use mq_broker::remoting::body::MessageQueue;
use mq_broker::remoting::{LanguageCode, RemotingCommand, SerializeType, frame, request_code};
use mq_broker::store::MessageToStore;
use mq_broker::store::message::{self, property};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

#[test]
fn every_corpus_file_passes_its_check() {
    let mut total = 0;
    for (target, check) in TARGETS {
        let dir = corpus().join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{target} has no seeds");
        for file in &files {
            let data = std::fs::read(file).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", file.display());
        }
        total += files.len();
    }
    assert!(total <= 250, "keep the corpus small ({total} files)");
}

/// Every target has its directory, and every directory a target.
#[test]
fn corpus_directories_match_the_targets() {
    let mut dirs: Vec<String> = std::fs::read_dir(corpus())
        .expect("fuzz/corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut targets: Vec<String> = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
    targets.sort();
    assert_eq!(dirs, targets);
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus().join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("hand-{name}")), bytes).expect("seed written");
}

/// A frame and its header seed (serialize-type selector byte + header bytes).
fn write_command(name: &str, cmd: &RemotingCommand) {
    let mut buf = BytesMut::new();
    frame::encode(cmd, &mut buf).expect("encodable");
    write("frame", name, &buf);
    let header = frame::encode_header(cmd).expect("encodable");
    write(
        "header",
        name,
        &[&[cmd.serialize_type.code()][..], &header].concat(),
    );
}

/// A JSON header written by hand, as a frame (and a header seed).
fn write_json_header(name: &str, json: &str, body: &[u8]) {
    let mut buf = BytesMut::new();
    buf.put_i32(i32::try_from(4 + json.len() + body.len()).unwrap());
    buf.put_u32(u32::try_from(json.len()).unwrap());
    buf.extend_from_slice(json.as_bytes());
    buf.extend_from_slice(body);
    write("frame", name, &buf);
    write("header", name, &[&[0u8][..], json.as_bytes()].concat());
}

fn send_v1(serialize_type: SerializeType) -> RemotingCommand {
    let props = message::encode_properties([
        (property::TAGS, "TagA"),
        (property::KEYS, "order-1 order-2"),
        (property::UNIQ_KEY, "7F0000010001"),
        ("WAIT", "true"),
    ]);
    RemotingCommand::new_request(request_code::SEND_MESSAGE)
        .with_serialize_type(serialize_type)
        .with_opaque(7)
        .with_ext("producerGroup", "GID_p")
        .with_ext("topic", "orders")
        .with_ext("defaultTopic", "TBW102")
        .with_ext("defaultTopicQueueNums", "4")
        .with_ext("queueId", "1")
        .with_ext("sysFlag", "0")
        .with_ext("bornTimestamp", "1700000000000")
        .with_ext("flag", "0")
        .with_ext("properties", props)
        .with_ext("reconsumeTimes", "0")
        .with_ext("unitMode", "false")
        .with_ext("batch", "false")
        .with_body(&b"hello"[..])
}

fn batch_body(messages: &[(&[u8], &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (body, props) in messages {
        let total = 20 + body.len() + 2 + props.len();
        out.put_i32(i32::try_from(total).unwrap());
        out.put_u32(message::MESSAGE_MAGIC);
        out.put_u32(message::body_crc(body));
        out.put_i32(0);
        out.put_i32(i32::try_from(body.len()).unwrap());
        out.extend_from_slice(body);
        out.put_i16(i16::try_from(props.len()).unwrap());
        out.extend_from_slice(props.as_bytes());
    }
    out
}

fn stored(msg: &MessageToStore, store_host: SocketAddr, queue_offset: i64) -> Vec<u8> {
    let mut entry = message::encode(msg, store_host, usize::MAX).expect("encodable");
    message::patch_for_append(
        &mut entry,
        queue_offset,
        4096 * queue_offset,
        1_700_000_000_123,
    );
    entry
}

#[test]
#[ignore = "rewrites the hand-made seeds of fuzz/corpus; run by hand"]
fn write_hand_made_seeds() {
    // Frames and headers: our encoder, both serialize types.
    for (suffix, st) in [
        ("json", SerializeType::Json),
        ("binary", SerializeType::RocketMq),
    ] {
        write_command(&format!("send-v1-{suffix}"), &send_v1(st));
        let mut v2 = RemotingCommand::new_request(request_code::SEND_MESSAGE_V2)
            .with_serialize_type(st)
            .with_opaque(8);
        for (k, v) in [
            ("a", "GID_p"),
            ("b", "orders"),
            ("c", "TBW102"),
            ("d", "4"),
            ("e", "0"),
            ("f", "0"),
            ("g", "1700000000000"),
            ("h", "0"),
            ("i", "TAGS\u{1}TagA\u{2}"),
            ("j", "0"),
            ("k", "false"),
            ("m", "true"),
        ] {
            v2.set_ext(k, v);
        }
        v2.code = request_code::SEND_BATCH_MESSAGE;
        let v2 = v2.with_body(batch_body(&[(b"one", ""), (b"two", "TAGS\u{1}TagB\u{2}")]));
        write_command(&format!("send-batch-v2-{suffix}"), &v2);
        let pull = RemotingCommand::new_request(request_code::PULL_MESSAGE)
            .with_serialize_type(st)
            .with_opaque(9)
            .with_ext("consumerGroup", "GID_c")
            .with_ext("topic", "orders")
            .with_ext("queueId", "0")
            .with_ext("queueOffset", "12")
            .with_ext("maxMsgNums", "32")
            .with_ext("sysFlag", "2")
            .with_ext("commitOffset", "0")
            .with_ext("suspendTimeoutMillis", "15000")
            .with_ext("subscription", "TagA || TagB")
            .with_ext("subVersion", "0");
        write_command(&format!("pull-{suffix}"), &pull);
        let mut response = RemotingCommand::response_to(&pull, 1, Some("SYSTEM_ERROR: épuisé"));
        response.serialize_type = st;
        response.language = LanguageCode::from_code(12);
        write_command(&format!("response-{suffix}"), &response);
    }
    // Two frames back to back, then half of a third.
    let mut stream = BytesMut::new();
    for st in [SerializeType::Json, SerializeType::RocketMq] {
        frame::encode(&send_v1(st), &mut stream).unwrap();
    }
    let len = stream.len();
    stream.extend_from_slice(&stream.clone()[..len / 3]);
    write("frame", "stream", &stream);
    // JSON headers as Java (fastjson) and other clients write them.
    write_json_header(
        "java-heartbeat",
        r#"{"code":34,"extFields":{},"flag":0,"language":"JAVA","opaque":3,"serializeTypeCurrentRPC":"JSON","version":399}"#,
        br#"{"clientID":"10.0.0.1@1234","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"GID_c","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[2598919],"expressionType":"TAG","subString":"TagA","subVersion":1700000000000,"tagsSet":["TagA"],"topic":"orders"}],"unitMode":false}],"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}]}"#,
    );
    write_json_header(
        "loose-types",
        r#" {"code":"310","language":2,"version":"x","opaque":-1,"flag":2,"remark":null,"extFields":{"a":"GID","b":"t","e":3,"k":true,"n":null,"x":[1,2],"y":{"z":1.5}},"unknown":[{}]}"#,
        b"",
    );
    write_json_header("not-an-object", r#"[1,2,3]"#, b"");

    // Batches.
    write(
        "batch",
        "two",
        &batch_body(&[(b"one", ""), (b"two", "TAGS\u{1}TagB\u{2}")]),
    );
    write(
        "batch",
        "empty-body",
        &batch_body(&[(b"", "KEYS\u{1}k\u{2}")]),
    );
    let mut truncated = batch_body(&[(b"truncated", "")]);
    truncated.truncate(truncated.len() - 3);
    write("batch", "truncated", &truncated);

    // Stored messages: the store's encoder, IPv4 and IPv6 hosts.
    let mut msg = MessageToStore::new("orders", 3, &b"stored body"[..]);
    msg.properties = message::encode_properties([
        (property::TAGS, "TagA"),
        (property::KEYS, "k1 k2"),
        (property::UNIQ_KEY, "AC11000100002A9F0000000000000001"),
    ]);
    msg.born_timestamp = 1_700_000_000_000;
    msg.born_host = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)), 53211);
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 10911);
    write("stored_message", "v4", &stored(&msg, v4, 5));
    let mut v6msg = msg.clone();
    v6msg.born_host = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 40000);
    v6msg.sys_flag = 8; // a transaction's prepared type
    v6msg.reconsume_times = 2;
    v6msg.prepared_transaction_offset = 1234;
    let v6 = SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
        10911,
    );
    write("stored_message", "v6", &stored(&v6msg, v6, 6));
    let empty = MessageToStore::new("%RETRY%GID_c", 0, &b""[..]);
    let mut two = stored(&empty, v4, 0);
    two.extend_from_slice(&stored(&msg, v4, 1));
    write("stored_message", "empty-then-next", &two);
    let mut blank = Vec::new();
    blank.put_i32(64);
    blank.put_u32(message::BLANK_MAGIC);
    write("stored_message", "blank", &blank);

    // fastjson bodies: queue-keyed maps and number-keyed maps as Java writes them.
    let queue = |id| MessageQueue {
        topic: "orders".into(),
        broker_name: "broker-a".into(),
        queue_id: id,
    };
    let mut stats = ConsumeStats {
        consume_tps: 1.5,
        ..Default::default()
    };
    let mut topic_stats = TopicStatsTable::default();
    for id in 0..2 {
        stats.offset_table.0.insert(
            queue(id),
            OffsetWrapper {
                broker_offset: 10,
                consumer_offset: 7,
                last_timestamp: 1_700_000_000_000,
                pull_offset: 8,
            },
        );
        topic_stats
            .offset_table
            .0
            .insert(queue(id), Default::default());
    }
    write("fastjson", "consume-stats", &stats.to_fastjson());
    write("fastjson", "topic-stats", &topic_stats.to_fastjson());
    write(
        "fastjson",
        "number-keys",
        br#"{"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"},"brokerName":"broker-a","cluster":"DefaultCluster"}"#,
    );
    write(
        "fastjson",
        "lock-batch",
        br#"{"clientId":"10.0.0.1@1","consumerGroup":"GID_c","mqSet":[{"brokerName":"broker-a","queueId":0,"topic":"orders"}],"onlyThisBroker":false}"#,
    );

    // ACL files: RocketMQ's own plain_acl.yml, its JSON form, a console key.
    write(
        "acl",
        "java-plain-acl.yml",
        b"globalWhiteRemoteAddresses:\n  - 10.10.103.*\n  - 192.168.0.*\n\naccounts:\n  - accessKey: RocketMQ\n    secretKey: 12345678\n    whiteRemoteAddress:\n    admin: false\n    defaultTopicPerm: DENY\n    defaultGroupPerm: SUB\n    topicPerms:\n      - topicA=DENY\n      - topicB=PUB|SUB\n      - topicC=SUB\n    groupPerms:\n      # the group should convert to retry topic\n      - groupA=DENY\n      - groupB=PUB|SUB\n      - groupC=SUB\n\n  - accessKey: rocketmq2\n    secretKey: 12345678\n    whiteRemoteAddress: 192.168.1.*\n    # if it is admin, it could access all resources\n    admin: true\n",
    );
    write(
        "acl",
        "operator.json",
        br#"{"accounts":[{"accessKey":"platform","secretKey":"c2VjcmV0","admin":true},{"accessKey":"app","secretKey":"s","defaultTopicPerm":"DENY","defaultGroupPerm":"SUB","topicPerms":["MQ_INST_1_x%orders=PUB|SUB","audit=PUB"],"groupPerms":["GID_a=SUB"]},{"accessKey":"mqfleet-console-x","secretKey":"k","console":"true"}]}"#,
    );
    write(
        "acl",
        "flow.yml",
        b"accounts:\n  - {accessKey: console, secretKey: SKC, console: \"true\", topicPerms: [orders=DENY]}\n  - {accessKey: a, secretKey: 1e3, admin: 1}\n",
    );
}

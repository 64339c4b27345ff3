//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through the same checks the cargo-fuzz
//! targets run (`mq_broker::fuzz`), in the normal test build: what fuzzing once found, or
//! was seeded with, stays fixed without a fuzzer. `make fuzz` runs the targets themselves.
//!
//! The `hand-*` seeds are written by the ignored `write_hand_made_seeds` below
//! (`cargo test -p mq-broker --test fuzz_corpus -- --ignored`); the `cap-*` seeds are real
//! client traffic, recorded by `tests/tests/fuzz_capture.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use mq_broker::broker::groups::{GroupTable, SubscriptionGroupConfig};
use mq_broker::broker::minute_stats::{DEFAULT_BUCKET_MS, MinuteStats, SeriesKey, StatsKind};
use mq_broker::broker::offsets::ConsumerOffsets;
use mq_broker::broker::timer_store::{self, TimerStore};
use mq_broker::broker::topics::{TopicTable, topic_config};
use mq_broker::broker::transaction::RecoveryStart;
use mq_broker::fuzz::TARGETS;
use mq_broker::remoting::admin::{ConsumeStats, OffsetWrapper, TopicStatsTable};
use mq_broker::remoting::body::MessageQueue;
use mq_broker::remoting::{LanguageCode, RemotingCommand, SerializeType, frame, request_code};
use mq_broker::store::MessageToStore;
use mq_broker::store::checkpoint::{Checkpoint, CheckpointFile};
use mq_broker::store::consumequeue::{ConsumeQueue, CqEntry};
use mq_broker::store::index::{MessageIndex, key_hash};
use mq_broker::store::io::{FileSystem, SimFs, read_full};
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

/// A file's bytes on a `SimFs`.
fn sim_file(fs: &SimFs, path: &Path) -> Vec<u8> {
    let file = fs.open(path, false).expect("file exists");
    let mut buf = vec![0; usize::try_from(file.size().expect("size")).unwrap()];
    let n = read_full(file.as_ref(), &mut buf, 0).expect("read");
    buf.truncate(n);
    buf
}

/// `[len u8][bytes]` as the store-file checks split their input.
fn piece(bytes: &[u8]) -> Vec<u8> {
    [
        &[u8::try_from(bytes.len()).expect("seed piece ≤ 255 bytes")][..],
        bytes,
    ]
    .concat()
}

fn cq_entry(i: u64) -> CqEntry {
    CqEntry {
        phys_offset: i64::try_from(i * 100).unwrap(),
        size: 100,
        tags_code: i64::try_from(i).unwrap(),
    }
}

fn timer_message(body: &str) -> MessageToStore {
    let mut msg = MessageToStore::new("orders", 1, body.as_bytes().to_vec());
    msg.properties = message::encode_properties([
        (property::TAGS, "TagA"),
        (property::UNIQ_KEY, "AC11000100002A9F0000000000000001"),
        ("TIMER_DELIVER_MS", "1700000020000"),
    ]);
    msg.born_timestamp = 1_700_000_000_000;
    msg.born_host = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)), 53211);
    msg
}

#[test]
#[ignore = "rewrites the store-file seeds of fuzz/corpus; run by hand"]
fn write_store_file_seeds() {
    // Consume queues (4 entries a file): files the queue itself wrote.
    let fs = SimFs::new();
    let root = Path::new("/s/consumequeue");
    let cq = ConsumeQueue::open(Arc::new(fs.clone()), root, "T", 0, 4).expect("open");
    for i in 0..10 {
        cq.append(cq_entry(i)).expect("append");
    }
    cq.flush().expect("flush");
    let dir = root.join("T/0");
    let files: Vec<Vec<u8>> = [
        "00000000000000000000",
        "00000000000000000080",
        "00000000000000000160",
    ]
    .iter()
    .map(|name| sim_file(&fs, &dir.join(name)))
    .collect();
    // One file, cut at 250 (keeps phys 0, 100, 200).
    write(
        "consume_queue",
        "one-file",
        &[&[0, 5, 0][..], &piece(&files[0])].concat(),
    );
    // Three files, the last torn mid-entry; nothing to cut.
    let mut torn = files[2].clone();
    torn.truncate(torn.len() - 7);
    let three = [
        &[0, 0xFF][..],
        &[0],
        &piece(&files[0]),
        &[0],
        &piece(&files[1]),
        &[0],
        &piece(&torn),
    ]
    .concat();
    write("consume_queue", "three-files-torn", &three);
    // A file two ranges on, with zeroed entries after good ones (a power cut's tail).
    let mut zeroed = files[1].clone();
    zeroed[40..].fill(0);
    let gap = [&[0, 3, 0][..], &piece(&files[0]), &[1], &piece(&zeroed)].concat();
    write("consume_queue", "gap-zeroed-tail", &gap);
    // A file 2^36 ranges on (one damaged digit in its name): recovery walked the gap.
    let far = [
        &[0, 3, 0][..],
        &piece(&files[0]),
        &[0x40],
        &piece(&[0xFF; 40]),
    ]
    .concat();
    write("consume_queue", "far-file-name", &far);
    // A name not on a file boundary: refused.
    write(
        "consume_queue",
        "unaligned-name",
        &[&[0, 3, 0x80][..], &piece(&files[0])].concat(),
    );

    // Key-index runs (4 entries a run): runs the index itself wrote.
    let fs = SimFs::new();
    let dir = Path::new("/s/index");
    let index = MessageIndex::open(Arc::new(fs.clone()), dir, 4, 0).expect("open");
    for i in 0..6u64 {
        let key = format!("k{}", i % 3);
        index.add(i * 100, i * 100 + 100, [key_hash("orders", &key)]);
        index.seal(false).expect("seal");
    }
    index.seal(true).expect("seal");
    let runs: Vec<Vec<u8>> = ["00000000000000000000", "00000000000000000400"]
        .iter()
        .map(|name| sim_file(&fs, &dir.join(name)))
        .collect();
    write(
        "index",
        "two-runs",
        &[&[2, 0xFF][..], &piece(&runs[0]), &piece(&runs[1])].concat(),
    );
    write(
        "index",
        "two-runs-truncated",
        &[&[2, 5][..], &piece(&runs[0]), &piece(&runs[1])].concat(),
    );
    let mut torn = runs[1].clone();
    torn.truncate(torn.len() - 5);
    write(
        "index",
        "torn-last-run",
        &[&[2, 0xFF][..], &piece(&runs[0]), &piece(&torn)].concat(),
    );
    // A count whose × 16 overflows (with the CRCs put right by the check): an overflow
    // panic at open before the fix.
    let mut huge = runs[1][..56].to_vec();
    huge[24..32].copy_from_slice(&((1u64 << 60) + 1).to_be_bytes());
    write(
        "index",
        "count-overflow",
        &[&[6, 0xFF][..], &piece(&runs[0]), &piece(&huge)].concat(),
    );
    // A run whose range ends where it begins.
    let mut empty = runs[1].clone();
    empty[16..24].copy_from_slice(&400u64.to_be_bytes());
    write(
        "index",
        "empty-range",
        &[&[6, 0xFF][..], &piece(&runs[0]), &piece(&empty)].concat(),
    );

    // Checkpoints: the file after two writes, torn, and with sequence u64::MAX.
    let fs = SimFs::new();
    let path = Path::new("/s/checkpoint");
    let (mut file, _) = CheckpointFile::open(&fs, path).expect("open");
    for n in [4096u64, 8192] {
        file.write(&Checkpoint {
            phys_flushed: n,
            cq_offset: n,
            index_offset: n / 2,
            phys_timestamp: 1_700_000_000_000,
            cq_timestamp: 1_700_000_000_000,
            index_timestamp: 1_699_999_999_000,
        })
        .expect("write");
    }
    let mut bytes = sim_file(&fs, path);
    bytes.resize(256, 0);
    write("checkpoint", "two-slots", &[&[0][..], &bytes].concat());
    write(
        "checkpoint",
        "torn-second",
        &[&[0][..], &bytes[..160]].concat(),
    );
    let mut max = bytes.clone();
    max[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    write("checkpoint", "seq-u64-max", &[&[1][..], &max].concat());
    write("checkpoint", "empty", &[0]);

    // Timer store: a slot file and a progress file the store itself wrote.
    let dir = std::env::temp_dir().join(format!("mq-fuzz-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let now = 1_700_000_000_000;
    let store = TimerStore::open(&dir, timer_store::SLOT, false).expect("open");
    for (i, body) in ["first", "second", "third"].into_iter().enumerate() {
        let at = now + 20_000 - i64::try_from(i).unwrap() * 1000;
        assert!(store.add(at, now, &timer_message(body)).expect("add"));
    }
    let slot = std::fs::read(dir.join("slot-1700000010000")).expect("slot file");
    let batch = store.take_due(now + 19_000, 1).expect("take");
    store.commit(&batch, 1).expect("commit");
    let progress = std::fs::read(dir.join("progress")).expect("progress file");
    drop(store);
    std::fs::remove_dir_all(&dir).expect("clean up");
    write("timer_store", "three-records", &[&[0][..], &slot].concat());
    let mut torn = slot.clone();
    torn.truncate(slot.len() - 9);
    write("timer_store", "torn-tail", &[&[4][..], &torn].concat());
    write("timer_store", "progress", &[&[0][..], &progress].concat());
    // Progress from the first record's length and CRC: some records already re-put.
    write("timer_store", "with-progress", &[&[3][..], &slot].concat());
    // An intact record whose born host is no address (CRCs put right by the check).
    let mut bad = slot.clone();
    let host = bad
        .windows(14)
        .position(|w| w == b"10.0.0.7:53211")
        .expect("host");
    bad[host + 9] = b'x';
    write(
        "timer_store",
        "undecodable-record",
        &[&[1][..], &bad].concat(),
    );
    write("timer_store", "slot-i64-max", &[&[8][..], &slot].concat());

    // JSON state files as the broker writes them.
    let dir = std::env::temp_dir().join(format!("mq-fuzz-json-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let topics = TopicTable::open(dir.join("topics.json")).expect("open");
    topics
        .upsert("orders", topic_config("orders", 8))
        .expect("upsert");
    topics
        .upsert("%RETRY%GID_c", topic_config("%RETRY%GID_c", 1))
        .expect("upsert");
    write(
        "state_json",
        "topics",
        &[&[0][..], &std::fs::read(dir.join("topics.json")).unwrap()].concat(),
    );
    let groups = GroupTable::open(dir.join("subscriptionGroup.json")).expect("open");
    groups
        .upsert("GID_c", SubscriptionGroupConfig::default())
        .expect("upsert");
    write(
        "state_json",
        "groups",
        &[
            &[1][..],
            &std::fs::read(dir.join("subscriptionGroup.json")).unwrap(),
        ]
        .concat(),
    );
    let offsets = ConsumerOffsets::open(dir.join("consumerOffset.json")).expect("open");
    offsets.commit("GID_c", "orders", 0, 12);
    offsets.commit("GID_c", "orders", 3, 7);
    offsets.persist().expect("persist");
    write(
        "state_json",
        "offsets",
        &[
            &[2][..],
            &std::fs::read(dir.join("consumerOffset.json")).unwrap(),
        ]
        .concat(),
    );
    let start = RecoveryStart {
        half_offset: 10,
        op_offset: 4,
    };
    write(
        "state_json",
        "transaction",
        &[&[3][..], &serde_json::to_vec_pretty(&start).unwrap()].concat(),
    );
    let stats = MinuteStats::new(DEFAULT_BUCKET_MS, 100, Some(dir.join("minuteStats.json")));
    for (kind, group) in [(StatsKind::Topic, ""), (StatsKind::Group, "GID_c")] {
        let key = SeriesKey {
            kind,
            topic: "orders".into(),
            group: group.into(),
        };
        stats.record(key.clone(), 5, now);
        stats.record(key, 2, now + 120_000);
    }
    stats.persist().expect("persist");
    write(
        "state_json",
        "minute-stats",
        &[
            &[4][..],
            &std::fs::read(dir.join("minuteStats.json")).unwrap(),
        ]
        .concat(),
    );
    // Java's topics.json: numbers as strings, and the fields this broker ignores.
    let java = br#"{"dataVersion":{"counter":"3","timestamp":1700000000000},"table":{"orders":{"order":false,"perm":"6","readQueueNums":8,"topicFilterType":"SINGLE_TAG","topicName":"orders","topicSysFlag":0,"writeQueueNums":"8"}}}"#;
    write("state_json", "java-topics", &[&[0][..], java].concat());
    std::fs::remove_dir_all(&dir).expect("clean up");
}

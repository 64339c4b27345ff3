//! Fuzz entry points: one `check_*` function per decoder that reads untrusted bytes.
//!
//! Each takes arbitrary bytes, must never panic on them, and asserts the invariants that
//! hold for what it decodes (re-encoding a decoded value reads back the same value). The
//! fuzz targets in `fuzz/` (cargo-fuzz, outside the workspace) call them, and
//! `broker/tests/fuzz_corpus.rs` replays the committed corpus through them in the normal
//! test build. A panic here is a bug, in the decoder or in the invariant.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::acl::AclTable;
use crate::names::Namespace;
use crate::remoting::admin::{ConsumeStats, TopicStatsTable};
use crate::remoting::body::{HeartbeatData, LockBatchRequestBody, TopicRouteData};
use crate::remoting::command::RemotingCommand;
use crate::remoting::header::CommandHeader;
use crate::remoting::{
    PullMessageRequestHeader, PullMessageResponseHeader, SendMessageRequestHeader,
    SendMessageResponseHeader, fastjson, frame,
};
use crate::store::message;
use crate::store::{DecodeError, MessageToStore};

/// A fuzz check: panics on a bug, returns on any input a decoder may refuse.
pub type Check = fn(&[u8]);

/// Every target: its name (the corpus directory `fuzz/corpus/<name>/`) and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame", check_frame),
    ("header", check_header),
    ("batch", check_batch),
    ("stored_message", check_stored_message),
    ("fastjson", check_fastjson),
    ("acl", check_acl),
];

/// The remoting frame decoder on a byte stream: decodes frames until it needs more input
/// or fails (under the default limit and a small one), and checks every decoded command
/// survives re-encoding.
pub fn check_frame(data: &[u8]) {
    for max in [frame::DEFAULT_MAX_FRAME, 64] {
        let mut buf = BytesMut::from(data);
        let mut decoded = 0;
        loop {
            let before = buf.len();
            match frame::decode(&mut buf, max) {
                Ok(Some(cmd)) => {
                    assert!(buf.len() < before, "a decoded frame consumes input");
                    round_trip_command(&cmd);
                    decoded += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    // Errors in the prefix leave the buffer as it was; inside a frame they
                    // consume it. Either way the stream is not read on past a bad prefix.
                    if buf.len() == before {
                        break;
                    }
                }
            }
        }
        let _ = decoded;
    }
    let _ = frame::frame_len(data, frame::DEFAULT_MAX_FRAME);
}

/// The JSON and binary header decoders behind a valid length prefix: the first byte picks
/// the serialize type (its low bit), the rest is the header; a decoded command's typed
/// headers must re-read as themselves.
pub fn check_header(data: &[u8]) {
    let Some((&selector, header)) = data.split_first() else {
        return;
    };
    let kind = selector & 1;
    // Bits 1.. of the selector say how many trailing header bytes count as body instead.
    let body_len = usize::from(selector >> 1).min(header.len());
    let header_len = header.len() - body_len;
    let mut buf = BytesMut::with_capacity(8 + header.len());
    buf.put_i32(i32::try_from(4 + header.len()).unwrap_or(i32::MAX));
    buf.put_u32((u32::from(kind) << 24) | u32::try_from(header_len & 0xFF_FFFF).unwrap_or(0));
    buf.extend_from_slice(header);
    let Ok(Some(cmd)) = frame::decode(&mut buf, frame::DEFAULT_MAX_FRAME) else {
        return;
    };
    assert!(buf.is_empty(), "a complete frame is consumed whole");
    round_trip_command(&cmd);
    typed_header_round_trips::<SendMessageRequestHeader>(&cmd);
    typed_header_round_trips::<SendMessageResponseHeader>(&cmd);
    typed_header_round_trips::<PullMessageRequestHeader>(&cmd);
    typed_header_round_trips::<PullMessageResponseHeader>(&cmd);
}

/// Encoding a decoded command and decoding it again gives the same command.
fn round_trip_command(cmd: &RemotingCommand) {
    let mut buf = BytesMut::new();
    // A decoded command may not be encodable (a JSON header re-escaped past 16 MiB).
    if frame::encode(cmd, &mut buf).is_err() {
        return;
    }
    let again = frame::decode(&mut buf, usize::MAX)
        .expect("a re-encoded command decodes")
        .expect("a re-encoded command is complete");
    assert_eq!(&again, cmd, "a decoded command re-encodes to itself");
    assert!(buf.is_empty());
}

/// A typed header read from `cmd` writes ext fields that read back as the same header.
fn typed_header_round_trips<H: CommandHeader + PartialEq + std::fmt::Debug>(cmd: &RemotingCommand) {
    let Ok(header) = H::from_command(cmd) else {
        return;
    };
    let mut fields = BTreeMap::new();
    header.to_ext_fields(&mut fields);
    assert_eq!(H::from_ext_fields(&fields).as_ref(), Ok(&header));
}

/// The SEND_BATCH_MESSAGE body decoder (`MessageDecoder.encodeMessages` format): a decoded
/// batch, encoded again, decodes to the same messages.
pub fn check_batch(data: &[u8]) {
    let Ok(items) = crate::broker::send::decode_batch(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert!(!items.is_empty(), "an accepted batch has messages");
    let mut again = BytesMut::new();
    for item in &items {
        let props = item.properties.as_bytes();
        let Ok(props_len) = i16::try_from(props.len()) else {
            return; // lossy UTF-8 grew the properties past their wire field
        };
        let total = 20 + item.body.len() + 2 + props.len();
        again.put_i32(i32::try_from(total).expect("small input"));
        again.put_u32(message::MESSAGE_MAGIC);
        again.put_u32(message::body_crc(&item.body));
        again.put_i32(item.flag);
        again.put_i32(i32::try_from(item.body.len()).expect("small input"));
        again.extend_from_slice(&item.body);
        again.put_i16(props_len);
        again.extend_from_slice(props);
    }
    let Ok(decoded) = crate::broker::send::decode_batch(again.freeze()) else {
        panic!("a re-encoded batch decodes");
    };
    assert_eq!(decoded.len(), items.len());
    for (a, b) in decoded.iter().zip(&items) {
        assert_eq!(
            (a.flag, &a.body, &a.properties),
            (b.flag, &b.body, &b.properties)
        );
    }
}

/// The commit-log entry decoder: a decoded entry, encoded again by the store's encoder
/// (and patched as at append), is byte for byte the entry it came from.
pub fn check_stored_message(data: &[u8]) {
    let _ = message::peek_head(data);
    let _ = message::peek_store_timestamp(data);
    // A mutated body fails the CRC check; with the CRC put right the same bytes go on to
    // the round trip, which a fuzzer could not reach by computing CRCs itself.
    let crc_fixed;
    let data = match message::decode(data) {
        Err(DecodeError::CrcMismatch { computed, .. }) => {
            let mut fixed = data.to_vec();
            fixed[8..12].copy_from_slice(&computed.to_be_bytes());
            crc_fixed = fixed;
            &crc_fixed[..]
        }
        _ => data,
    };
    let Ok(msg) = message::decode(data) else {
        return;
    };
    let size = usize::try_from(msg.store_size).expect("decoded sizes are positive");
    let entry = &data[..size];
    let _ = (msg.tags(), msg.keys().count(), msg.uniq_key());
    let _ = message::decode_properties(&msg.properties);
    assert_eq!(
        message::decode_offset_msg_id(&msg.msg_id()).ok(),
        Some((msg.store_host, msg.phys_offset)),
        "an offset message id decodes to its host and offset"
    );
    // Invalid UTF-8 in the topic or properties was replaced; it cannot re-encode the same.
    let lossless = matches!(msg.topic, std::borrow::Cow::Borrowed(_))
        && matches!(msg.properties, std::borrow::Cow::Borrowed(_));
    let to_store = MessageToStore {
        topic: msg.topic.clone().into_owned(),
        queue_id: msg.queue_id,
        flag: msg.flag,
        sys_flag: msg.sys_flag,
        body: Bytes::copy_from_slice(msg.body),
        properties: msg.properties.clone().into_owned(),
        born_timestamp: msg.born_timestamp,
        born_host: msg.born_host,
        reconsume_times: msg.reconsume_times,
        prepared_transaction_offset: msg.prepared_transaction_offset,
    };
    // Topics the store refuses to write (empty, too long, path-like) do not re-encode.
    let Ok(mut encoded) = message::encode(&to_store, msg.store_host, usize::MAX) else {
        return;
    };
    message::patch_for_append(
        &mut encoded,
        msg.queue_offset,
        msg.phys_offset,
        msg.store_timestamp,
    );
    let again = message::decode(&encoded).expect("a re-encoded entry decodes");
    assert_eq!(again.body, msg.body);
    assert_eq!(
        (
            again.queue_id,
            again.flag,
            again.sys_flag,
            again.born_host,
            again.store_host
        ),
        (
            msg.queue_id,
            msg.flag,
            msg.sys_flag,
            msg.born_host,
            msg.store_host
        )
    );
    if lossless {
        let mut expected = entry.to_vec();
        if msg.body.is_empty() {
            // The CRC of an empty body is not checked, so any stored value decodes.
            expected[8..12].copy_from_slice(&message::body_crc(&[]).to_be_bytes());
        }
        assert_eq!(
            encoded, expected,
            "a decoded entry re-encodes byte for byte"
        );
    }
}

/// The fastjson normaliser and the bodies read through it: standard JSON passes through
/// unchanged, and the queue-keyed tables re-read from their fastjson form.
pub fn check_fastjson(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let normalized = fastjson::normalize(&text);
    for t in [text.as_ref(), normalized.as_ref()] {
        if serde_json::from_str::<serde_json::Value>(t).is_ok() {
            assert_eq!(fastjson::normalize(t), t, "standard JSON is left as it is");
        }
    }
    let _ = fastjson::from_slice::<serde_json::Value>(data);
    let _ = fastjson::from_slice::<HeartbeatData>(data);
    let _ = fastjson::from_slice::<LockBatchRequestBody>(data);
    let _ = fastjson::from_slice::<TopicRouteData>(data);
    if let Ok(stats) = fastjson::from_slice::<TopicStatsTable>(data) {
        let again = fastjson::from_slice::<TopicStatsTable>(&stats.to_fastjson());
        assert_eq!(
            again.ok().as_ref(),
            Some(&stats),
            "TopicStatsTable re-reads"
        );
    }
    if let Ok(stats) = fastjson::from_slice::<ConsumeStats>(data) {
        let again = fastjson::from_slice::<ConsumeStats>(&stats.to_fastjson());
        assert!(again.is_ok(), "ConsumeStats re-reads: {again:?}");
    }
}

/// The ACL file parser (`plain_acl.yml`, or its JSON form), in and out of a namespace;
/// parsing is deterministic.
pub fn check_acl(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for ns in [Namespace::new(None), Namespace::new(Some("MQ_INST_1_fuzz"))] {
        let table = AclTable::parse(text, &ns);
        if let Ok(table) = &table {
            let _ = (table.len(), table.signer());
        }
        assert_eq!(
            AclTable::parse(text, &ns),
            table,
            "parsing is deterministic"
        );
    }
}

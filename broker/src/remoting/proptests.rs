//! Property tests of the frame codec: round trips, hostile input, arbitrary splits, and
//! hostile headers behind valid length prefixes (so they reach the header decoders).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::codes::LanguageCode;
use super::command::{RemotingCommand, SerializeType};
use super::frame::{self, DEFAULT_MAX_FRAME};

/// Languages either encoding carries exactly: known ones and unknown bytes.
fn any_coded_language() -> impl Strategy<Value = LanguageCode> {
    any::<u8>().prop_map(LanguageCode::from_code)
}

/// Languages a JSON header carries exactly: also names no client uses.
fn any_json_language() -> impl Strategy<Value = LanguageCode> {
    let named = "[A-Z_]{1,10}"
        .prop_map(|name| LanguageCode::from_name(&name))
        .prop_filter("names that are not known languages", |lang| {
            matches!(lang, LanguageCode::UnknownName(_))
        });
    prop_oneof![any_coded_language(), named]
}

/// Any command the given encoding can represent.
///
/// Binary headers hold code and version in i16, and both encodings drop an empty
/// remark or body on the way (as Java does), so those are generated non-empty.
fn any_command(serialize_type: SerializeType) -> impl Strategy<Value = RemotingCommand> {
    let (code, version, language) = match serialize_type {
        SerializeType::Json => (
            any::<i32>().boxed(),
            any::<i32>().boxed(),
            any_json_language().boxed(),
        ),
        SerializeType::RocketMq => (
            any::<i16>().prop_map(i32::from).boxed(),
            any::<i16>().prop_map(i32::from).boxed(),
            any_coded_language().boxed(),
        ),
    };
    let ext = prop::collection::btree_map(".{0,12}", ".{0,24}", 0..6);
    let remark = prop::option::of(".{1,24}");
    let body = prop::option::of(prop::collection::vec(any::<u8>(), 1..200).prop_map(Bytes::from));
    (
        code,
        language,
        version,
        any::<i32>(),
        any::<i32>(),
        remark,
        ext,
        body,
    )
        .prop_map(
            move |(code, language, version, opaque, flag, remark, ext_fields, body)| {
                RemotingCommand {
                    code,
                    language,
                    version,
                    opaque,
                    flag,
                    remark,
                    ext_fields,
                    body,
                    serialize_type,
                }
            },
        )
}

/// Any command in either encoding.
fn any_frame_command() -> impl Strategy<Value = RemotingCommand> {
    prop_oneof![
        any_command(SerializeType::Json),
        any_command(SerializeType::RocketMq)
    ]
}

/// The frame bytes of `cmd`.
fn encoded(cmd: &RemotingCommand) -> BytesMut {
    let mut buf = BytesMut::new();
    frame::encode(cmd, &mut buf).expect("generated commands are encodable");
    buf
}

/// Decodes frames from `bytes` until it needs more input or fails; must not panic.
fn decode_all(bytes: &[u8], max_frame: usize) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(_)) = frame::decode(&mut buf, max_frame) {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_command_round_trips(cmd in any_frame_command()) {
        let mut buf = encoded(&cmd);
        let decoded = frame::decode(&mut buf, DEFAULT_MAX_FRAME).expect("valid frame");
        prop_assert_eq!(decoded, Some(cmd));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), max in 0usize..1024) {
        decode_all(&bytes, max);
    }

    #[test]
    fn corrupted_frames_never_panic(
        cmd in any_frame_command(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encoded(&cmd).to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            if let Some(byte) = bytes.get_mut(i) {
                *byte = value;
            }
        }
        decode_all(&bytes, DEFAULT_MAX_FRAME);
        decode_all(&bytes[..cut.index(bytes.len() + 1)], DEFAULT_MAX_FRAME);
    }

    #[test]
    fn truncated_frames_wait_for_more(cmd in any_frame_command(), cut in any::<prop::sample::Index>()) {
        let bytes = encoded(&cmd);
        let mut part = BytesMut::from(&bytes[..cut.index(bytes.len())]);
        prop_assert!(frame::decode(&mut part, DEFAULT_MAX_FRAME).expect("a prefix is not an error").is_none());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_frame_split_anywhere_decodes_the_same(cmd in any_frame_command()) {
        let bytes = encoded(&cmd);
        for split in 0..=bytes.len() {
            let mut buf = BytesMut::from(&bytes[..split]);
            let early = frame::decode(&mut buf, DEFAULT_MAX_FRAME).expect("no error on a prefix");
            let decoded = match early {
                Some(cmd) => {
                    prop_assert_eq!(split, bytes.len(), "decoded before the frame was complete");
                    cmd
                }
                None => {
                    buf.extend_from_slice(&bytes[split..]);
                    frame::decode(&mut buf, DEFAULT_MAX_FRAME).expect("valid frame").expect("complete")
                }
            };
            prop_assert_eq!(&decoded, &cmd);
            prop_assert!(buf.is_empty());
        }
    }
}

/// `[len][type << 24 | header len][header][body]` with both lengths right, so the bytes
/// reach the header decoders (random bytes almost never get past the length prefix).
fn framed(kind: u8, header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + header.len() + body.len());
    let len = u32::try_from(4 + header.len() + body.len()).expect("small frame");
    out.extend_from_slice(&len.to_be_bytes());
    let header_len = u32::try_from(header.len()).expect("small header");
    out.extend_from_slice(&((u32::from(kind) << 24) | header_len).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

/// A serialize-type byte: mostly JSON or ROCKETMQ, sometimes neither.
fn any_kind() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(0u8), 4 => Just(1u8), 1 => any::<u8>()]
}

/// A length field that is right, a little off, or anything.
fn length_field(actual: usize) -> impl Strategy<Value = i64> {
    let actual = i64::try_from(actual).expect("small");
    prop_oneof![
        16 => Just(actual),
        2 => (-2i64..=2).prop_map(move |d| actual + d),
        1 => any::<i32>().prop_map(i64::from),
    ]
}

/// A RocketMQ binary header from its fields, its length fields right or not.
fn any_binary_header() -> impl Strategy<Value = Vec<u8>> {
    let remark = prop::collection::vec(any::<u8>(), 0..24);
    let ext = prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 0..12),
            prop::collection::vec(any::<u8>(), 0..24),
        ),
        0..5,
    );
    (any::<[u8; 13]>(), remark, ext)
        .prop_flat_map(|(fixed, remark, ext)| {
            let entries: Vec<_> = ext
                .into_iter()
                .map(|(k, v)| {
                    (
                        length_field(k.len()),
                        Just(k),
                        length_field(v.len()),
                        Just(v),
                    )
                })
                .collect();
            (
                Just(fixed),
                length_field(remark.len()),
                Just(remark),
                entries,
                prop::bool::weighted(0.8),
                length_field(0),
            )
        })
        .prop_map(
            |(fixed, remark_len, remark, entries, exact_ext, ext_delta)| {
                let mut ext = Vec::new();
                for (key_len, key, value_len, value) in entries {
                    ext.extend_from_slice(&(key_len as i16).to_be_bytes());
                    ext.extend_from_slice(&key);
                    ext.extend_from_slice(&(value_len as i32).to_be_bytes());
                    ext.extend_from_slice(&value);
                }
                let ext_len = if exact_ext {
                    ext.len() as i64
                } else {
                    ext.len() as i64 + ext_delta
                };
                let mut out = fixed.to_vec();
                out.extend_from_slice(&(remark_len as i32).to_be_bytes());
                out.extend_from_slice(&remark);
                out.extend_from_slice(&(ext_len as i32).to_be_bytes());
                out.extend_from_slice(&ext);
                out
            },
        )
}

/// Any JSON value, small.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        "-?[0-9 ]{1,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON header: the fields Java writes, any of them missing, of any JSON type.
fn any_json_header() -> impl Strategy<Value = Vec<u8>> {
    let fields = [
        "code",
        "language",
        "version",
        "opaque",
        "flag",
        "remark",
        "extFields",
        "serializeTypeCurrentRPC",
    ];
    let ext = prop::collection::btree_map(".{0,8}", any_json(), 0..5)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()));
    let value = prop_oneof![
        3 => any::<i32>().prop_map(serde_json::Value::from),
        2 => ext,
        2 => any_json(),
    ];
    prop::collection::vec((prop::sample::select(fields.to_vec()), value), 0..9).prop_map(|pairs| {
        let map: serde_json::Map<String, serde_json::Value> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        serde_json::to_vec(&map).expect("JSON")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_header_bytes_behind_a_valid_prefix_never_panic(
        kind in any_kind(),
        header in prop::collection::vec(any::<u8>(), 0..256),
        body in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let bytes = framed(kind, &header, &body);
        crate::fuzz::check_frame(&bytes);
        // A valid prefix is always read: the frame is consumed, decoded or not.
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = frame::decode(&mut buf, DEFAULT_MAX_FRAME);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn binary_headers_behind_a_valid_prefix_decode_or_fail_cleanly(
        header in any_binary_header(),
        body in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        crate::fuzz::check_frame(&framed(1, &header, &body));
        crate::fuzz::check_header(&[&[1u8][..], &header].concat());
    }

    #[test]
    fn json_headers_behind_a_valid_prefix_decode_or_fail_cleanly(
        header in any_json_header(),
        body in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        crate::fuzz::check_frame(&framed(0, &header, &body));
        crate::fuzz::check_header(&[&[0u8][..], &header].concat());
    }

    #[test]
    fn corrupted_headers_behind_an_intact_prefix_never_panic(
        cmd in any_frame_command(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encoded(&cmd).to_vec();
        // Only the header-length word and what follows: the length prefix stays right.
        for (at, value) in edits {
            let i = 4 + at.index(bytes.len() - 4);
            bytes[i] = value;
        }
        crate::fuzz::check_frame(&bytes);
    }
}

/// How often the generators reach the header decoders (the point of valid prefixes).
#[test]
fn valid_prefix_generators_reach_the_decoders() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut binary_ok, mut json_ok) = (0, 0);
    for _ in 0..200 {
        let header = any_binary_header().new_tree(&mut runner).unwrap().current();
        let mut buf = BytesMut::from(&framed(1, &header, b"")[..]);
        binary_ok += usize::from(matches!(
            frame::decode(&mut buf, DEFAULT_MAX_FRAME),
            Ok(Some(_))
        ));
        let header = any_json_header().new_tree(&mut runner).unwrap().current();
        let mut buf = BytesMut::from(&framed(0, &header, b"")[..]);
        json_ok += usize::from(matches!(
            frame::decode(&mut buf, DEFAULT_MAX_FRAME),
            Ok(Some(_))
        ));
    }
    // Both decode often enough to exercise the fields, and fail often enough to
    // exercise the errors.
    assert!(
        (50..=190).contains(&binary_ok),
        "binary headers decoded: {binary_ok}/200"
    );
    assert!(
        (20..=190).contains(&json_ok),
        "JSON headers decoded: {json_ok}/200"
    );
}

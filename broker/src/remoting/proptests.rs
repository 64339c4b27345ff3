//! Property tests of the frame codec: round trips, hostile input, arbitrary splits.

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

//! Typed custom headers: request and response fields carried as string ext fields.
//!
//! Java keys ext fields by the header class's field names (`decodeCommandCustomHeader`),
//! values in decimal or `"true"`/`"false"`. Each header here is declared once with the
//! [`command_header!`](crate::command_header) macro: field, type, wire name and any alias (the V2 short names).
//! Parsing is liberal (surrounding whitespace, booleans in any case or as `1`/`0`);
//! a missing required field or an unusable value is a [`HeaderError`].

use std::collections::BTreeMap;

use super::command::RemotingCommand;

/// Why a header could not be read from a command's ext fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A required field is absent.
    #[error("required header field {0} is missing")]
    Missing(&'static str),
    /// A field is present but cannot be parsed as its type.
    #[error("header field {field} has invalid value {value:?}")]
    Invalid {
        /// Wire name of the field.
        field: &'static str,
        /// The raw value received.
        value: String,
    },
}

/// A custom header: read from and written to a command's ext fields.
pub trait CommandHeader: Sized {
    /// Reads the header from ext fields.
    fn from_ext_fields(fields: &BTreeMap<String, String>) -> Result<Self, HeaderError>;

    /// Writes every present field into `fields` under its primary wire name.
    fn to_ext_fields(&self, fields: &mut BTreeMap<String, String>);

    /// Reads the header from a command.
    fn from_command(cmd: &RemotingCommand) -> Result<Self, HeaderError> {
        Self::from_ext_fields(&cmd.ext_fields)
    }
}

impl RemotingCommand {
    /// Reads a typed header from this command's ext fields.
    pub fn decode_header<H: CommandHeader>(&self) -> Result<H, HeaderError> {
        H::from_command(self)
    }

    /// Writes a typed header into this command's ext fields.
    pub fn set_header<H: CommandHeader>(&mut self, header: &H) {
        header.to_ext_fields(&mut self.ext_fields);
    }
}

/// A type a header field can have: how it is read from and written to its string form.
pub trait FieldValue: Sized {
    /// Reads the field from its raw value (`None` when absent).
    fn read_field(field: &'static str, raw: Option<&str>) -> Result<Self, HeaderError>;

    /// Writes the field, if it has a value, into `out` as `field`.
    fn write_field(&self, field: &'static str, out: &mut BTreeMap<String, String>);
}

/// A scalar's text form, shared by required (`T`) and optional (`Option<T>`) fields.
trait Scalar: Sized {
    /// Parses the raw value; `None` if it is not a valid `Self`.
    fn parse(raw: &str) -> Option<Self>;
    /// The value as Java's `toString` writes it.
    fn render(&self) -> String;
}

impl Scalar for String {
    fn parse(raw: &str) -> Option<Self> {
        Some(raw.to_owned())
    }
    fn render(&self) -> String {
        self.clone()
    }
}

impl Scalar for i32 {
    fn parse(raw: &str) -> Option<Self> {
        raw.trim().parse().ok()
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Scalar for i64 {
    fn parse(raw: &str) -> Option<Self> {
        raw.trim().parse().ok()
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Scalar for bool {
    fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("true") || raw == "1" {
            Some(true)
        } else if raw.eq_ignore_ascii_case("false") || raw == "0" {
            Some(false)
        } else {
            None
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

/// Implements [`FieldValue`] for a scalar (required) and its `Option` (optional).
macro_rules! field_value {
    ($($ty:ty),*) => {$(
        impl FieldValue for $ty {
            fn read_field(field: &'static str, raw: Option<&str>) -> Result<Self, HeaderError> {
                parse_scalar(field, raw.ok_or(HeaderError::Missing(field))?)
            }
            fn write_field(&self, field: &'static str, out: &mut BTreeMap<String, String>) {
                out.insert(field.to_owned(), self.render());
            }
        }

        impl FieldValue for Option<$ty> {
            fn read_field(field: &'static str, raw: Option<&str>) -> Result<Self, HeaderError> {
                raw.map(|raw| parse_scalar(field, raw)).transpose()
            }
            fn write_field(&self, field: &'static str, out: &mut BTreeMap<String, String>) {
                if let Some(value) = self {
                    value.write_field(field, out);
                }
            }
        }
    )*};
}

field_value!(String, i32, i64, bool);

/// Parses a present value, naming the field on failure.
fn parse_scalar<T: Scalar>(field: &'static str, raw: &str) -> Result<T, HeaderError> {
    T::parse(raw).ok_or_else(|| HeaderError::Invalid {
        field,
        value: raw.to_owned(),
    })
}

/// The value of the first of `names` present in `fields`.
pub fn lookup<'a>(fields: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| fields.get(*name))
        .map(String::as_str)
}

/// Declares a header struct and its [`CommandHeader`] impl from a field table.
///
/// Each line is `field: Type = "wireName" | "alias"...;`. `Type` is `String`, `i32`,
/// `i64` or `bool` for a required field, `Option<_>` of one for an optional field.
/// Reading takes the first name present; writing uses the wire name.
#[macro_export]
macro_rules! command_header {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $wire:literal $(| $alias:literal)* ; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::remoting::header::CommandHeader for $name {
            fn from_ext_fields(
                fields: &::std::collections::BTreeMap<String, String>,
            ) -> Result<Self, $crate::remoting::header::HeaderError> {
                use $crate::remoting::header::{lookup, FieldValue};
                Ok(Self {
                    $( $field: FieldValue::read_field($wire, lookup(fields, &[$wire $(, $alias)*]))?, )*
                })
            }

            fn to_ext_fields(&self, fields: &mut ::std::collections::BTreeMap<String, String>) {
                use $crate::remoting::header::FieldValue;
                $( self.$field.write_field($wire, fields); )*
            }
        }
    };
}

command_header! {
    /// SEND_MESSAGE (10), SEND_MESSAGE_V2 (310), SEND_BATCH_MESSAGE (320) request header.
    ///
    /// Accepts the V1 long names and the V2 short names `a`..`n` (`SendMessageRequestHeaderV2`)
    /// whatever the request code, because clients differ in which they send.
    pub struct SendMessageRequestHeader {
        /// Producer group.
        producer_group: String = "producerGroup" | "a";
        /// Target topic.
        topic: String = "topic" | "b";
        /// Template topic for auto-creation (normally `TBW102`).
        default_topic: String = "defaultTopic" | "c";
        /// Queue count for an auto-created topic.
        default_topic_queue_nums: i32 = "defaultTopicQueueNums" | "d";
        /// Target queue; negative lets the broker pick.
        queue_id: i32 = "queueId" | "e";
        /// Message sys flag (compression, tags, transaction bits).
        sys_flag: i32 = "sysFlag" | "f";
        /// Client timestamp (ms).
        born_timestamp: i64 = "bornTimestamp" | "g";
        /// User flag.
        flag: i32 = "flag" | "h";
        /// Properties, `name\x01value\x02` pairs.
        properties: Option<String> = "properties" | "i";
        /// Times this message was consumed before (retries); default 0.
        reconsume_times: Option<i32> = "reconsumeTimes" | "j";
        /// Unit mode; default false.
        unit_mode: Option<bool> = "unitMode" | "k";
        /// Per-message retry limit.
        max_reconsume_times: Option<i32> = "maxReconsumeTimes" | "l";
        /// Whether the body is a batch; default false.
        batch: Option<bool> = "batch" | "m";
        /// Target broker name (5.x clients).
        broker_name: Option<String> = "bname" | "n";
    }
}

command_header! {
    /// SEND_MESSAGE response header (`SendMessageResponseHeader` plus the ext fields 4.x adds).
    pub struct SendMessageResponseHeader {
        /// Offset message id (store address + commit-log offset, hex).
        msg_id: String = "msgId";
        /// Queue the message went to.
        queue_id: i32 = "queueId";
        /// Its offset in that queue.
        queue_offset: i64 = "queueOffset";
        /// Transaction id of a half message.
        transaction_id: Option<String> = "transactionId";
        /// Region the broker belongs to (4.x sends `DefaultRegion`).
        msg_region: Option<String> = "MSG_REGION";
        /// Whether message tracing is on (4.x sends `true`).
        trace_on: Option<bool> = "TRACE_ON";
    }
}

command_header! {
    /// PULL_MESSAGE (11) and LITE_PULL_MESSAGE (361) request header (`PullMessageRequestHeader`).
    pub struct PullMessageRequestHeader {
        /// Consumer group.
        consumer_group: String = "consumerGroup";
        /// Topic.
        topic: String = "topic";
        /// Queue.
        queue_id: i32 = "queueId";
        /// First queue offset wanted.
        queue_offset: i64 = "queueOffset";
        /// Most messages to return.
        max_msg_nums: i32 = "maxMsgNums";
        /// Pull sys flag: 0x1 commit offset, 0x2 suspend, 0x4 subscription, 0x8 class filter.
        sys_flag: i32 = "sysFlag";
        /// Offset to commit alongside the pull.
        commit_offset: i64 = "commitOffset";
        /// Long-poll timeout (ms) when nothing is available.
        suspend_timeout_millis: i64 = "suspendTimeoutMillis";
        /// Subscription expression.
        subscription: Option<String> = "subscription";
        /// Subscription version (ms timestamp).
        sub_version: i64 = "subVersion";
        /// `TAG` (default) or `SQL92`.
        expression_type: Option<String> = "expressionType";
        /// Byte limit of the reply.
        max_msg_bytes: Option<i32> = "maxMsgBytes";
        /// Target broker name (5.x clients).
        broker_name: Option<String> = "bname";
    }
}

command_header! {
    /// PULL_MESSAGE response header (`PullMessageResponseHeader`).
    pub struct PullMessageResponseHeader {
        /// Broker to pull from next (0 = master).
        suggest_which_broker_id: i64 = "suggestWhichBrokerId";
        /// Offset to pull from next.
        next_begin_offset: i64 = "nextBeginOffset";
        /// Queue min offset.
        min_offset: i64 = "minOffset";
        /// Queue max offset.
        max_offset: i64 = "maxOffset";
        /// Offset delta (5.x).
        offset_delta: Option<i64> = "offsetDelta";
        /// Topic sys flag (5.x).
        topic_sys_flag: Option<i32> = "topicSysFlag";
        /// Group sys flag (5.x).
        group_sys_flag: Option<i32> = "groupSysFlag";
        /// Forbidden type (5.x).
        forbidden_type: Option<i32> = "forbiddenType";
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::codes::{request_code, response_code};

    /// Ext fields from `(key, value)` pairs.
    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A send header as the Java client's V2 encoding carries it.
    fn v2_fields() -> BTreeMap<String, String> {
        fields(&[
            ("a", "group"),
            ("b", "TopicTest"),
            ("c", "TBW102"),
            ("d", "4"),
            ("e", "2"),
            ("f", "0"),
            ("g", "1700000000000"),
            ("h", "0"),
            ("i", "TAGS\u{1}TagA\u{2}"),
            ("j", "0"),
            ("k", "false"),
            ("m", "false"),
        ])
    }

    #[test]
    fn v2_short_names_read_as_the_v1_header() {
        let v1 = fields(&[
            ("producerGroup", "group"),
            ("topic", "TopicTest"),
            ("defaultTopic", "TBW102"),
            ("defaultTopicQueueNums", "4"),
            ("queueId", "2"),
            ("sysFlag", "0"),
            ("bornTimestamp", "1700000000000"),
            ("flag", "0"),
            ("properties", "TAGS\u{1}TagA\u{2}"),
            ("reconsumeTimes", "0"),
            ("unitMode", "false"),
            ("batch", "false"),
        ]);
        let from_v1 = SendMessageRequestHeader::from_ext_fields(&v1).expect("valid V1 header");
        let from_v2 =
            SendMessageRequestHeader::from_ext_fields(&v2_fields()).expect("valid V2 header");
        assert_eq!(from_v1, from_v2);
        assert_eq!(from_v2.producer_group, "group");
        assert_eq!(from_v2.born_timestamp, 1_700_000_000_000);
        assert_eq!(from_v2.batch, Some(false));
        assert_eq!(from_v2.max_reconsume_times, None);
    }

    #[test]
    fn rocketmq_client_rust_send_header_reads_from_a_command() {
        let mut cmd = RemotingCommand::new_request(request_code::SEND_MESSAGE);
        for (k, v) in [
            ("producerGroup", "pg"),
            ("topic", "TopicTest"),
            ("defaultTopic", "TBW102"),
            ("defaultTopicQueueNums", "4"),
            ("queueId", "1"),
            ("sysFlag", "0"),
            ("bornTimestamp", "1700000000000"),
            ("flag", "0"),
            ("properties", "TAGS\u{1}TagA\u{2}"),
            ("reconsumeTimes", "0"),
            ("unitMode", "false"),
            ("batch", "false"),
        ] {
            cmd.set_ext(k, v);
        }
        let header: SendMessageRequestHeader = cmd.decode_header().expect("valid header");
        assert_eq!(header.topic, "TopicTest");
        assert_eq!(header.queue_id, 1);
    }

    #[test]
    fn missing_and_invalid_fields_name_the_field() {
        let mut v2 = v2_fields();
        v2.remove("a");
        assert_eq!(
            SendMessageRequestHeader::from_ext_fields(&v2),
            Err(HeaderError::Missing("producerGroup"))
        );
        let mut v2 = v2_fields();
        v2.insert("e".into(), "two".into());
        assert_eq!(
            SendMessageRequestHeader::from_ext_fields(&v2),
            Err(HeaderError::Invalid {
                field: "queueId",
                value: "two".into()
            })
        );
        let mut v2 = v2_fields();
        v2.insert("g".into(), "12.0".into());
        assert!(matches!(
            SendMessageRequestHeader::from_ext_fields(&v2),
            Err(HeaderError::Invalid {
                field: "bornTimestamp",
                ..
            })
        ));
    }

    #[test]
    fn scalars_are_parsed_liberally() {
        let mut v2 = v2_fields();
        v2.insert("e".into(), " 3 ".into());
        v2.insert("k".into(), "TRUE".into());
        v2.insert("m".into(), "1".into());
        v2.insert("l".into(), "-1".into());
        let header = SendMessageRequestHeader::from_ext_fields(&v2).expect("valid header");
        assert_eq!(
            (header.queue_id, header.unit_mode, header.batch),
            (3, Some(true), Some(true))
        );
        assert_eq!(header.max_reconsume_times, Some(-1));
        v2.insert("m".into(), "0".into());
        assert_eq!(
            SendMessageRequestHeader::from_ext_fields(&v2).map(|h| h.batch),
            Ok(Some(false))
        );
        v2.insert("m".into(), "yes".into());
        assert!(matches!(
            SendMessageRequestHeader::from_ext_fields(&v2),
            Err(HeaderError::Invalid { field: "batch", .. })
        ));
    }

    #[test]
    fn pull_request_header_as_the_rust_client_sends_it() {
        let ext = fields(&[
            ("consumerGroup", "cg"),
            ("topic", "TopicTest"),
            ("queueId", "0"),
            ("queueOffset", "12"),
            ("maxMsgNums", "32"),
            ("sysFlag", "2"),
            ("commitOffset", "0"),
            ("suspendTimeoutMillis", "15000"),
            ("subscription", ""),
            ("subVersion", "1700000000000"),
            ("expressionType", "TAG"),
        ]);
        let header = PullMessageRequestHeader::from_ext_fields(&ext).expect("valid header");
        assert_eq!(header.queue_offset, 12);
        assert_eq!(header.subscription.as_deref(), Some(""));
        assert_eq!(header.max_msg_bytes, None);
        let mut missing = ext.clone();
        missing.remove("subVersion");
        assert_eq!(
            PullMessageRequestHeader::from_ext_fields(&missing),
            Err(HeaderError::Missing("subVersion"))
        );
    }

    #[test]
    fn response_headers_write_java_field_names() {
        let request = RemotingCommand::new_request(request_code::SEND_MESSAGE_V2).with_opaque(4);
        let mut response = RemotingCommand::response_to(&request, response_code::SUCCESS, None);
        response.set_header(&SendMessageResponseHeader {
            msg_id: "0A00000100002A9F0000000000000000".into(),
            queue_id: 2,
            queue_offset: 7,
            transaction_id: None,
            msg_region: Some("DefaultRegion".into()),
            trace_on: Some(true),
        });
        assert_eq!(
            response.ext_fields,
            fields(&[
                ("MSG_REGION", "DefaultRegion"),
                ("TRACE_ON", "true"),
                ("msgId", "0A00000100002A9F0000000000000000"),
                ("queueId", "2"),
                ("queueOffset", "7"),
            ])
        );
        let pull = PullMessageResponseHeader {
            next_begin_offset: 10,
            max_offset: 10,
            ..Default::default()
        };
        let mut ext = BTreeMap::new();
        pull.to_ext_fields(&mut ext);
        assert_eq!(
            ext,
            fields(&[
                ("maxOffset", "10"),
                ("minOffset", "0"),
                ("nextBeginOffset", "10"),
                ("suggestWhichBrokerId", "0")
            ])
        );
        assert_eq!(PullMessageResponseHeader::from_ext_fields(&ext), Ok(pull));
    }
}

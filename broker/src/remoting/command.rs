//! The remoting command: the one message type of the protocol, request or response.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::codes::{LanguageCode, mq_version};

/// Flag bit 0 (`RPC_TYPE`): set on responses.
pub const RESPONSE_FLAG: i32 = 1;
/// Flag bit 1 (`RPC_ONEWAY`): the sender expects no reply.
pub const ONEWAY_FLAG: i32 = 1 << 1;

/// How a frame's header is serialized: the high byte of the header-length word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SerializeType {
    /// 0: a fastjson-style JSON object (what Java clients send by default).
    #[default]
    Json,
    /// 1: RocketMQ's compact binary header.
    RocketMq,
}

impl SerializeType {
    /// The byte that marks this type in a frame.
    pub fn code(self) -> u8 {
        match self {
            Self::Json => 0,
            Self::RocketMq => 1,
        }
    }

    /// The type a frame's marker byte names, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Json),
            1 => Some(Self::RocketMq),
            _ => None,
        }
    }

    /// The Java enum name, as written in `serializeTypeCurrentRPC`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::RocketMq => "ROCKETMQ",
        }
    }
}

/// One request or response (`RemotingCommand.java`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemotingCommand {
    /// Request code (see `request_code`) or response code (see `response_code`).
    pub code: i32,
    /// The sender's language.
    pub language: LanguageCode,
    /// The sender's protocol version (an `MQVersion` ordinal).
    pub version: i32,
    /// Request id; a response carries its request's.
    pub opaque: i32,
    /// Bit 0 response, bit 1 oneway.
    pub flag: i32,
    /// Free text, e.g. why a request failed.
    pub remark: Option<String>,
    /// The custom header: string key/value pairs, kept sorted as fastjson writes them.
    pub ext_fields: BTreeMap<String, String>,
    /// The payload; `None` when the frame has no body bytes.
    pub body: Option<Bytes>,
    /// How the header was (or will be) serialized.
    pub serialize_type: SerializeType,
}

impl RemotingCommand {
    /// A request from this broker: JSON header, our language and version, opaque 0.
    pub fn new_request(code: i32) -> Self {
        Self {
            code,
            version: mq_version::CURRENT,
            ..Self::default()
        }
    }

    /// The response to `request`: same opaque and header encoding, response flag set.
    ///
    /// The serialize type is the request's because a client that sent a binary
    /// header may not be able to read a JSON one (and the Java broker does the same).
    pub fn response_to(request: &RemotingCommand, code: i32, remark: Option<&str>) -> Self {
        Self {
            code,
            version: mq_version::CURRENT,
            opaque: request.opaque,
            flag: RESPONSE_FLAG,
            remark: remark.map(str::to_owned),
            serialize_type: request.serialize_type,
            ..Self::default()
        }
    }

    /// Whether this is a response (flag bit 0).
    pub fn is_response(&self) -> bool {
        self.flag & RESPONSE_FLAG != 0
    }

    /// Whether the sender expects no reply (flag bit 1).
    pub fn is_oneway(&self) -> bool {
        self.flag & ONEWAY_FLAG != 0
    }

    /// Marks this command as a response.
    pub fn mark_response(&mut self) {
        self.flag |= RESPONSE_FLAG;
    }

    /// Marks this command as oneway: the peer must not reply.
    pub fn mark_oneway(&mut self) {
        self.flag |= ONEWAY_FLAG;
    }

    /// The ext field `key`, if present.
    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key).map(String::as_str)
    }

    /// Sets the ext field `key` to `value`, replacing any previous value.
    pub fn set_ext(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.ext_fields.insert(key.into(), value.into());
    }

    /// Builder form of [`set_ext`](Self::set_ext).
    pub fn with_ext(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_ext(key, value);
        self
    }

    /// Builder: sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// About how many bytes this command takes on the wire (body, ext fields, remark and
    /// a fixed allowance for the rest of the header): what memory budgets count.
    pub fn approx_len(&self) -> usize {
        let fields: usize = self
            .ext_fields
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum();
        let remark = self.remark.as_ref().map_or(0, String::len);
        let body = self.body.as_ref().map_or(0, |b| b.len());
        128 + fields + remark + body
    }

    /// Builder: sets the remark.
    pub fn with_remark(mut self, remark: impl Into<String>) -> Self {
        self.remark = Some(remark.into());
        self
    }

    /// Builder: sets the opaque (request id).
    pub fn with_opaque(mut self, opaque: i32) -> Self {
        self.opaque = opaque;
        self
    }

    /// Builder: sets how the header is serialized.
    pub fn with_serialize_type(mut self, serialize_type: SerializeType) -> Self {
        self.serialize_type = serialize_type;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::codes::{request_code, response_code};

    #[test]
    fn response_echoes_opaque_and_keeps_the_request_serialize_type() {
        let mut request = RemotingCommand::new_request(request_code::PULL_MESSAGE)
            .with_opaque(77)
            .with_serialize_type(SerializeType::RocketMq);
        request.language = LanguageCode::Rust;
        request.mark_oneway();
        let response = RemotingCommand::response_to(
            &request,
            response_code::PULL_NOT_FOUND,
            Some("NO_NEW_MSG"),
        );
        assert_eq!(response.opaque, 77);
        assert!(response.is_response());
        assert!(
            !response.is_oneway(),
            "the oneway bit belongs to the request"
        );
        assert_eq!(response.serialize_type, SerializeType::RocketMq);
        assert_eq!(response.language, LanguageCode::Java);
        assert_eq!(response.version, mq_version::CURRENT);
        assert_eq!(response.remark.as_deref(), Some("NO_NEW_MSG"));
    }

    #[test]
    fn flags_and_ext_fields() {
        let mut cmd = RemotingCommand::new_request(request_code::HEART_BEAT)
            .with_ext("b", "2")
            .with_ext("a", "1");
        assert!(!cmd.is_response() && !cmd.is_oneway());
        cmd.mark_oneway();
        assert!(cmd.is_oneway() && !cmd.is_response());
        cmd.mark_response();
        assert_eq!(cmd.flag, 3);
        cmd.set_ext("a", "one");
        assert_eq!(cmd.ext("a"), Some("one"));
        assert_eq!(cmd.ext("missing"), None);
        let keys: Vec<_> = cmd.ext_fields.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["a", "b"],
            "ext fields stay sorted like fastjson output"
        );
    }

    #[test]
    fn serialize_type_codes() {
        assert_eq!(SerializeType::from_code(0), Some(SerializeType::Json));
        assert_eq!(SerializeType::from_code(1), Some(SerializeType::RocketMq));
        assert_eq!(SerializeType::from_code(2), None);
        assert_eq!(SerializeType::RocketMq.name(), "ROCKETMQ");
    }
}

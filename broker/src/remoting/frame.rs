//! Encoding and decoding of one frame. Pure: no I/O, fuzzable.
//!
//! Layout (big-endian, `RemotingCommand.encode` / `NettyDecoder`):
//! `[len i32 = 4 + hdrLen + bodyLen][serialize type u8][hdrLen u24][header][body]`.
//! The header is JSON (type 0) or RocketMQ binary (type 1, `RocketMQSerializable`).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::codes::LanguageCode;
use super::command::{RemotingCommand, SerializeType};

/// Netty's default `com.rocketmq.remoting.frameMaxLength`: 16 MiB, length prefix included.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// The largest header the 24-bit header-length field can describe.
pub const MAX_HEADER_LEN: usize = 0xFF_FFFF;
/// Size of the length prefix, and of the type/header-length word after it.
const WORD: usize = 4;

/// Why a frame could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is negative.
    #[error("frame length {0} is negative")]
    NegativeLength(i32),
    /// The length prefix leaves no room for the type/header-length word.
    #[error("frame length {0} is shorter than the 4-byte header-length word")]
    TooShort(i32),
    /// The frame is larger than allowed; the stream cannot be trusted past this.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Frame size including the length prefix.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The header-length field claims more bytes than the frame holds.
    #[error("header length {header} exceeds the {available} bytes left in the frame")]
    HeaderTooLong {
        /// Claimed header length.
        header: usize,
        /// Bytes available after the header-length word.
        available: usize,
    },
    /// The serialize-type byte is neither JSON (0) nor ROCKETMQ (1).
    #[error("unknown serialize type {0}")]
    UnknownSerializeType(u8),
    /// The JSON header is not valid JSON.
    #[error("malformed JSON header: {0}")]
    Json(#[from] serde_json::Error),
    /// A JSON header field has a value we cannot use.
    #[error("JSON header field {field} has unusable value {value}")]
    BadJsonField {
        /// Field name.
        field: &'static str,
        /// The offending JSON, abbreviated.
        value: String,
    },
    /// The binary header ends inside a field.
    #[error("binary header truncated in {0}")]
    Truncated(&'static str),
    /// A binary header length field is negative.
    #[error("binary header field {field} has negative length {len}")]
    NegativeFieldLength {
        /// Field name.
        field: &'static str,
        /// The length read.
        len: i32,
    },
    /// A value does not fit the field it must be encoded in.
    #[error("{field} = {value} does not fit its wire field")]
    Unencodable {
        /// Field name.
        field: &'static str,
        /// The value (or length) that does not fit.
        value: i64,
    },
}

/// Decodes one frame from the front of `buf`, consuming it.
///
/// Returns `Ok(None)` until a whole frame is buffered. The length prefix is checked
/// against `max_frame` as soon as it is readable, so an oversized frame fails before
/// its bytes arrive. Errors found inside a complete frame consume that frame, so the
/// stream stays in step; errors in the length prefix leave `buf` as it was.
pub fn decode(buf: &mut BytesMut, max_frame: usize) -> Result<Option<RemotingCommand>, FrameError> {
    let Some(total) = frame_len(buf, max_frame)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(WORD);
    parse_frame(frame).map(Some)
}

/// Total size (prefix included) of the frame at the front of `buf`, once its prefix is readable.
pub fn frame_len(buf: &[u8], max_frame: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.first_chunk::<WORD>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(*prefix);
    let body_len = usize::try_from(len).map_err(|_| FrameError::NegativeLength(len))?;
    if body_len < WORD {
        return Err(FrameError::TooShort(len));
    }
    let total = body_len.saturating_add(WORD);
    if total > max_frame {
        return Err(FrameError::TooLarge {
            len: total,
            max: max_frame,
        });
    }
    Ok(Some(total))
}

/// Parses `[type u8][hdrLen u24][header][body]` (the frame after its length prefix).
fn parse_frame(mut frame: Bytes) -> Result<RemotingCommand, FrameError> {
    let word = frame
        .first_chunk::<WORD>()
        .ok_or(FrameError::Truncated("header length"))?;
    let [kind, len_hi, len_mid, len_lo] = *word;
    let header_len =
        (usize::from(len_hi) << 16) | (usize::from(len_mid) << 8) | usize::from(len_lo);
    frame.advance(WORD);
    if header_len > frame.len() {
        return Err(FrameError::HeaderTooLong {
            header: header_len,
            available: frame.len(),
        });
    }
    let serialize_type =
        SerializeType::from_code(kind).ok_or(FrameError::UnknownSerializeType(kind))?;
    let header = frame.split_to(header_len);
    let mut cmd = match serialize_type {
        SerializeType::Json => decode_json_header(&header)?,
        SerializeType::RocketMq => decode_binary_header(&header)?,
    };
    cmd.serialize_type = serialize_type;
    // Java leaves the body null when no bytes follow the header.
    cmd.body = (!frame.is_empty()).then_some(frame);
    Ok(cmd)
}

/// Appends the whole frame for `cmd` to `dst`, in `cmd.serialize_type`.
pub fn encode(cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), FrameError> {
    encode_head(cmd, dst)?;
    if let Some(body) = &cmd.body {
        dst.extend_from_slice(body);
    }
    Ok(())
}

/// Appends everything but the body: lets a writer send a large body without copying it.
pub fn encode_head(cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), FrameError> {
    let header = encode_header(cmd)?;
    let body_len = cmd.body.as_ref().map_or(0, Bytes::len);
    let frame_len = WORD + header.len() + body_len;
    let frame_len = i32::try_from(frame_len).map_err(|_| unencodable("frame length", frame_len))?;
    let header_len =
        u32::try_from(header.len()).map_err(|_| unencodable("header length", header.len()))?;
    dst.reserve(2 * WORD + header.len());
    dst.put_i32(frame_len);
    dst.put_u32((u32::from(cmd.serialize_type.code()) << 24) | header_len);
    dst.extend_from_slice(&header);
    Ok(())
}

/// Serializes the header of `cmd` alone, in `cmd.serialize_type`.
pub fn encode_header(cmd: &RemotingCommand) -> Result<Vec<u8>, FrameError> {
    let header = match cmd.serialize_type {
        SerializeType::Json => encode_json_header(cmd)?,
        SerializeType::RocketMq => encode_binary_header(cmd)?,
    };
    if header.len() > MAX_HEADER_LEN {
        return Err(unencodable("header length", header.len()));
    }
    Ok(header)
}

/// An `Unencodable` error for a length.
fn unencodable(field: &'static str, len: usize) -> FrameError {
    FrameError::Unencodable {
        field,
        value: i64::try_from(len).unwrap_or(i64::MAX),
    }
}

// ---------------------------------------------------------------------------
// JSON header
// ---------------------------------------------------------------------------

/// The JSON header as fastjson writes it: fields in alphabetical order, nulls omitted.
#[derive(Serialize)]
struct JsonHeaderOut<'a> {
    code: i32,
    #[serde(rename = "extFields")]
    ext_fields: &'a BTreeMap<String, String>,
    flag: i32,
    language: JsonLanguage<'a>,
    opaque: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    remark: Option<&'a str>,
    #[serde(rename = "serializeTypeCurrentRPC")]
    serialize_type: &'static str,
    version: i32,
}

/// A language by name, or by number when it has no name.
#[derive(Serialize)]
#[serde(untagged)]
enum JsonLanguage<'a> {
    /// Known or unknown-but-named languages.
    Name(&'a str),
    /// An unknown byte code (only reachable from a binary header).
    Code(u8),
}

/// Writes the JSON header; `extFields` is always present because Java clients read it unchecked.
fn encode_json_header(cmd: &RemotingCommand) -> Result<Vec<u8>, FrameError> {
    let language = match cmd.language.name() {
        Some(name) => JsonLanguage::Name(name),
        None => JsonLanguage::Code(cmd.language.code()),
    };
    let out = JsonHeaderOut {
        code: cmd.code,
        ext_fields: &cmd.ext_fields,
        flag: cmd.flag,
        language,
        opaque: cmd.opaque,
        remark: cmd.remark.as_deref(),
        serialize_type: SerializeType::Json.name(),
        version: cmd.version,
    };
    Ok(serde_json::to_vec(&out)?)
}

/// Reads a JSON header liberally: any key order, unknown keys ignored, numbers as strings.
///
/// Parsed straight into the fields it needs (no `serde_json::Value` tree), since every
/// request pays for it.
fn decode_json_header(header: &[u8]) -> Result<RemotingCommand, FrameError> {
    if header.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let value: Value = serde_json::from_slice(header)?;
        return Err(bad_json("header", &value));
    }
    let h: JsonHeaderIn = serde_json::from_slice(header)?;
    let ext_fields = match h.ext_fields {
        Loose::Null => BTreeMap::new(),
        Loose::Map(map) => map,
        other => return Err(bad_text("extFields", &other.render())),
    };
    Ok(RemotingCommand {
        code: h.code.to_i32("code")?,
        language: h.language.to_language(),
        // Version only gates optional features, so an odd value must not cost the request.
        version: h.version.to_i32("version").unwrap_or(0),
        opaque: h.opaque.to_i32("opaque")?,
        flag: h.flag.to_i32("flag")?,
        remark: h.remark.into_text(),
        ext_fields,
        body: None,
        // `serializeTypeCurrentRPC` is ignored: the frame's type byte is authoritative.
        serialize_type: SerializeType::Json,
    })
}

/// The header fields we read; anything else is ignored.
#[derive(Deserialize, Default)]
#[serde(default)]
struct JsonHeaderIn {
    code: Loose,
    language: Loose,
    version: Loose,
    opaque: Loose,
    flag: Loose,
    remark: Loose,
    #[serde(rename = "extFields")]
    ext_fields: Loose,
}

/// One header value, whatever JSON type the client chose.
#[derive(Default)]
enum Loose {
    /// Absent or `null`.
    #[default]
    Null,
    /// A string.
    Text(String),
    /// An integer that fits `i64`.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// An object, its values in text form (null values are absent keys): `extFields`.
    Map(BTreeMap<String, String>),
    /// Anything else (floats, huge integers, arrays), as JSON text.
    Other(String),
}

impl Loose {
    /// An integer field given as a number or a decimal string; null means 0 (Java's default).
    fn to_i32(&self, field: &'static str) -> Result<i32, FrameError> {
        let parsed = match self {
            Loose::Null => Some(0),
            Loose::Int(i) => i32::try_from(*i).ok(),
            Loose::Text(s) => s.trim().parse().ok(),
            Loose::Bool(_) | Loose::Map(_) | Loose::Other(_) => None,
        };
        parsed.ok_or_else(|| bad_text(field, &self.render()))
    }

    /// The language as a name or a number; never an error, since any client must be served.
    fn to_language(&self) -> LanguageCode {
        match self {
            Loose::Null => LanguageCode::Java,
            Loose::Text(name) => LanguageCode::from_name(name),
            Loose::Int(i) => match u8::try_from(*i) {
                Ok(code) => LanguageCode::from_code(code),
                Err(_) => LanguageCode::UnknownName(i.to_string()),
            },
            other => LanguageCode::UnknownName(other.render()),
        }
    }

    /// The value as the string Java would hold: strings as is, scalars in text form.
    fn into_text(self) -> Option<String> {
        match self {
            Loose::Null => None,
            Loose::Text(s) => Some(s),
            other => Some(other.render()),
        }
    }

    fn render(&self) -> String {
        match self {
            Loose::Null => "null".to_owned(),
            Loose::Text(s) => Value::String(s.clone()).to_string(),
            Loose::Int(i) => i.to_string(),
            Loose::Bool(b) => b.to_string(),
            Loose::Map(map) => serde_json::to_string(map).unwrap_or_default(),
            Loose::Other(text) => text.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

struct LooseVisitor;

impl<'de> serde::de::Visitor<'de> for LooseVisitor {
    type Value = Loose;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_none<E>(self) -> Result<Loose, E> {
        Ok(Loose::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Loose, E> {
        Ok(Loose::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Loose, E> {
        Ok(Loose::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Loose, E> {
        Ok(i64::try_from(u).map_or_else(|_| Loose::Other(u.to_string()), Loose::Int))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Loose, E> {
        Ok(Loose::Other(Value::from(f).to_string()))
    }
    fn visit_str<E>(self, s: &str) -> Result<Loose, E> {
        Ok(Loose::Text(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Loose, E> {
        Ok(Loose::Text(s))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Loose, A::Error> {
        let value = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Loose::Other(value.to_string()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Loose, A::Error> {
        let mut fields = BTreeMap::new();
        while let Some((key, value)) = map.next_entry::<String, Loose>()? {
            if let Some(text) = value.into_text() {
                fields.insert(key, text);
            }
        }
        Ok(Loose::Map(fields))
    }
}

/// A `BadJsonField` error quoting at most 64 characters of `text`.
fn bad_text(field: &'static str, text: &str) -> FrameError {
    FrameError::BadJsonField {
        field,
        value: text.chars().take(64).collect(),
    }
}

/// A `BadJsonField` error quoting at most 64 characters of the value.
fn bad_json(field: &'static str, value: &Value) -> FrameError {
    let value = value.to_string().chars().take(64).collect();
    FrameError::BadJsonField { field, value }
}

// ---------------------------------------------------------------------------
// RocketMQ binary header
// ---------------------------------------------------------------------------

/// Writes the binary header: code i16, language u8, version i16, opaque i32, flag i32,
/// remark (i32 len + UTF-8), ext fields (i32 len + repeated {i16 key len, key, i32 val len, val}).
fn encode_binary_header(cmd: &RemotingCommand) -> Result<Vec<u8>, FrameError> {
    let code = i16::try_from(cmd.code).map_err(|_| FrameError::Unencodable {
        field: "code",
        value: cmd.code.into(),
    })?;
    let version = i16::try_from(cmd.version).map_err(|_| FrameError::Unencodable {
        field: "version",
        value: cmd.version.into(),
    })?;
    let remark = cmd.remark.as_deref().unwrap_or("").as_bytes();
    let ext = encode_binary_ext(&cmd.ext_fields)?;
    let mut out = Vec::with_capacity(21 + remark.len() + ext.len());
    out.put_i16(code);
    out.put_u8(cmd.language.code());
    out.put_i16(version);
    out.put_i32(cmd.opaque);
    out.put_i32(cmd.flag);
    out.put_i32(len_i32("remark", remark.len())?);
    out.extend_from_slice(remark);
    out.put_i32(len_i32("extFields", ext.len())?);
    out.extend_from_slice(&ext);
    Ok(out)
}

/// Serializes the ext fields map of a binary header.
fn encode_binary_ext(fields: &BTreeMap<String, String>) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    for (key, value) in fields {
        let key_len =
            i16::try_from(key.len()).map_err(|_| unencodable("ext key length", key.len()))?;
        out.put_i16(key_len);
        out.extend_from_slice(key.as_bytes());
        out.put_i32(len_i32("ext value length", value.len())?);
        out.extend_from_slice(value.as_bytes());
    }
    Ok(out)
}

/// A length as the i32 the wire wants.
fn len_i32(field: &'static str, len: usize) -> Result<i32, FrameError> {
    i32::try_from(len).map_err(|_| unencodable(field, len))
}

/// Reads a binary header; every length is checked against the bytes actually left.
fn decode_binary_header(header: &[u8]) -> Result<RemotingCommand, FrameError> {
    let mut r = Reader(header);
    let code = r.i16("code")?.into();
    let language = LanguageCode::from_code(r.u8("language")?);
    let version = r.i16("version")?.into();
    let opaque = r.i32("opaque")?;
    let flag = r.i32("flag")?;
    let remark_len = r.len_i32("remark")?;
    // Java's encoder writes length 0 for both a null and an empty remark.
    let remark = (remark_len > 0)
        .then(|| r.string(remark_len, "remark"))
        .transpose()?;
    let ext_len = r.len_i32("extFields")?;
    let ext_fields = decode_binary_ext(r.take(ext_len, "extFields")?)?;
    // Trailing bytes after the ext fields are ignored, as Java does.
    Ok(RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        body: None,
        serialize_type: SerializeType::RocketMq,
    })
}

/// Reads the repeated {i16 key len, key, i32 value len, value} ext field entries.
fn decode_binary_ext(bytes: &[u8]) -> Result<BTreeMap<String, String>, FrameError> {
    let mut r = Reader(bytes);
    let mut fields = BTreeMap::new();
    while !r.0.is_empty() {
        let key_len = r.i16("ext key length")?;
        let key_len = usize::try_from(key_len).map_err(|_| FrameError::NegativeFieldLength {
            field: "ext key",
            len: key_len.into(),
        })?;
        let key = r.string(key_len, "ext key")?;
        let value_len = r.len_i32("ext value")?;
        let value = r.string(value_len, "ext value")?;
        fields.insert(key, value);
    }
    Ok(fields)
}

/// A bounds-checked big-endian cursor: every read fails cleanly instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next `n` bytes; `Truncated(field)` if fewer remain.
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], FrameError> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or(FrameError::Truncated(field))?;
        self.0 = rest;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FrameError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(FrameError::Truncated(field))?;
        self.0 = rest;
        Ok(*head)
    }

    /// One byte.
    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        self.array::<1>(field).map(u8::from_be_bytes)
    }

    /// A big-endian i16.
    fn i16(&mut self, field: &'static str) -> Result<i16, FrameError> {
        self.array(field).map(i16::from_be_bytes)
    }

    /// A big-endian i32.
    fn i32(&mut self, field: &'static str) -> Result<i32, FrameError> {
        self.array(field).map(i32::from_be_bytes)
    }

    /// An i32 length that must not be negative.
    fn len_i32(&mut self, field: &'static str) -> Result<usize, FrameError> {
        let len = self.i32(field)?;
        usize::try_from(len).map_err(|_| FrameError::NegativeFieldLength { field, len })
    }

    /// `len` bytes as text; invalid UTF-8 is replaced, as Java's `new String(bytes, UTF_8)` does.
    fn string(&mut self, len: usize, field: &'static str) -> Result<String, FrameError> {
        self.take(len, field)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remoting::codes::{mq_version, request_code, response_code};

    /// Frames `header` (raw bytes) and `body` by hand, as a peer would.
    fn raw_frame(kind: u8, header: &[u8], body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        let len = i32::try_from(4 + header.len() + body.len()).expect("small test frame");
        buf.put_i32(len);
        buf.put_u32((u32::from(kind) << 24) | u32::try_from(header.len()).expect("small header"));
        buf.extend_from_slice(header);
        buf.extend_from_slice(body);
        buf
    }

    /// Decodes one complete frame that must be valid.
    fn decode_one(mut buf: BytesMut) -> RemotingCommand {
        let cmd = decode(&mut buf, DEFAULT_MAX_FRAME)
            .expect("valid frame")
            .expect("complete frame");
        assert!(buf.is_empty(), "the whole frame is consumed");
        cmd
    }

    /// Encodes and decodes again.
    fn round_trip(cmd: &RemotingCommand) -> RemotingCommand {
        let mut buf = BytesMut::new();
        encode(cmd, &mut buf).expect("encodable");
        decode_one(buf)
    }

    #[test]
    fn decodes_a_java_4x_send_message_v2_header() {
        let header = br#"{"code":310,"extFields":{"a":"group","b":"TopicTest","c":"TBW102","d":"4","e":"2","f":"0","g":"1700000000000","h":"0","i":"UNIQ_KEY\u0001C0A8000100002A9F00000000000000\u0002WAIT\u0001true\u0002TAGS\u0001TagA","j":"0","k":"false","m":"false"},"flag":0,"language":"JAVA","opaque":1,"serializeTypeCurrentRPC":"JSON","version":403}"#;
        let cmd = decode_one(raw_frame(0, header, b"Hello RocketMQ"));
        assert_eq!(cmd.code, request_code::SEND_MESSAGE_V2);
        assert_eq!(cmd.language, LanguageCode::Java);
        assert_eq!((cmd.version, cmd.opaque, cmd.flag), (403, 1, 0));
        assert_eq!(cmd.remark, None);
        assert_eq!(cmd.ext("b"), Some("TopicTest"));
        assert_eq!(
            cmd.ext("i"),
            Some("UNIQ_KEY\u{1}C0A8000100002A9F00000000000000\u{2}WAIT\u{1}true\u{2}TAGS\u{1}TagA")
        );
        assert_eq!(cmd.body.as_deref(), Some(&b"Hello RocketMQ"[..]));
        assert_eq!(cmd.serialize_type, SerializeType::Json);
    }

    #[test]
    fn decodes_a_rocketmq_client_rust_send_message_header() {
        // Field order, null remark and RUST/474 as the serde-derived header of rocketmq-rust writes it.
        let header = br#"{"code":10,"language":"RUST","version":474,"opaque":3,"flag":0,"remark":null,"extFields":{"producerGroup":"pg","topic":"TopicTest","defaultTopic":"TBW102","defaultTopicQueueNums":"4","queueId":"1","sysFlag":"0","bornTimestamp":"1700000000000","flag":"0","properties":"TAGS\u0001TagA\u0002","reconsumeTimes":"0","unitMode":"false","batch":"false"},"serializeTypeCurrentRPC":"JSON"}"#;
        let cmd = decode_one(raw_frame(0, header, b"x"));
        assert_eq!(cmd.code, request_code::SEND_MESSAGE);
        assert_eq!(cmd.language, LanguageCode::Rust);
        assert_eq!(cmd.version, 474);
        assert_eq!(cmd.remark, None);
        assert_eq!(cmd.ext("producerGroup"), Some("pg"));
        assert_eq!(cmd.ext("properties"), Some("TAGS\u{1}TagA\u{2}"));
    }

    #[test]
    fn json_header_is_read_liberally() {
        let header = br#"{"opaque":"9","code":" 11 ","language":9,"version":"4.9.4","flag":null,"remark":"","unknown":{"x":[1]},"extFields":{"queueId":3,"sysFlag":2.5,"unitMode":true,"gone":null,"subscription":"*"}}"#;
        let cmd = decode_one(raw_frame(0, header, b""));
        assert_eq!((cmd.code, cmd.opaque, cmd.flag), (11, 9, 0));
        assert_eq!(cmd.language, LanguageCode::Go);
        assert_eq!(
            cmd.version, 0,
            "an unparsable version is defaulted, not fatal"
        );
        assert_eq!(cmd.remark.as_deref(), Some(""));
        assert_eq!(cmd.ext("queueId"), Some("3"));
        assert_eq!(cmd.ext("sysFlag"), Some("2.5"));
        assert_eq!(cmd.ext("unitMode"), Some("true"));
        assert_eq!(cmd.ext("gone"), None);
        assert_eq!(cmd.body, None, "no body bytes means no body, as in Java");
    }

    #[test]
    fn json_header_without_optional_keys_and_odd_languages() {
        let cmd = decode_one(raw_frame(0, br#"{"code":34}"#, b""));
        assert_eq!(cmd.language, LanguageCode::Java);
        assert!(cmd.ext_fields.is_empty());
        let cmd = decode_one(raw_frame(0, br#"{"code":34,"language":"NODE_JS"}"#, b""));
        assert_eq!(cmd.language, LanguageCode::NodeJs);
        let cmd = decode_one(raw_frame(0, br#"{"code":34,"language":"SCALA"}"#, b""));
        assert_eq!(cmd.language, LanguageCode::UnknownName("SCALA".into()));
        let cmd = decode_one(raw_frame(0, br#"{"code":34,"language":4000}"#, b""));
        assert_eq!(cmd.language, LanguageCode::UnknownName("4000".into()));
    }

    #[test]
    fn json_encoding_matches_fastjson() {
        let request = RemotingCommand::new_request(request_code::PULL_MESSAGE).with_opaque(5);
        let mut response =
            RemotingCommand::response_to(&request, response_code::SUCCESS, Some("FOUND"));
        response.set_ext("nextBeginOffset", "10");
        response.set_ext("maxOffset", "10");
        let header = encode_header(&response).expect("encodable");
        assert_eq!(
            std::str::from_utf8(&header).expect("utf-8"),
            r#"{"code":0,"extFields":{"maxOffset":"10","nextBeginOffset":"10"},"flag":1,"language":"JAVA","opaque":5,"remark":"FOUND","serializeTypeCurrentRPC":"JSON","version":403}"#
        );
        let bare = RemotingCommand::response_to(&request, response_code::SYSTEM_BUSY, None);
        assert_eq!(
            String::from_utf8(encode_header(&bare).expect("encodable")).expect("utf-8"),
            r#"{"code":2,"extFields":{},"flag":1,"language":"JAVA","opaque":5,"serializeTypeCurrentRPC":"JSON","version":403}"#
        );
    }

    #[test]
    fn binary_header_matches_rocketmq_serializable() {
        let mut cmd = RemotingCommand::new_request(request_code::SEND_MESSAGE)
            .with_opaque(0x0102_0304)
            .with_remark("hi")
            .with_ext("k", "val")
            .with_body(&b"BODY"[..])
            .with_serialize_type(SerializeType::RocketMq);
        cmd.language = LanguageCode::Rust;
        cmd.flag = 2;
        let mut expected_header = vec![0x00, 10, 12, 0x01, 0x93, 1, 2, 3, 4, 0, 0, 0, 2];
        expected_header.extend_from_slice(&[0, 0, 0, 2, b'h', b'i']);
        expected_header.extend_from_slice(&[0, 0, 0, 10, 0, 1, b'k', 0, 0, 0, 3, b'v', b'a', b'l']);
        let mut out = BytesMut::new();
        encode(&cmd, &mut out).expect("encodable");
        assert_eq!(out, raw_frame(1, &expected_header, b"BODY"));
        assert_eq!(decode_one(out), cmd);
    }

    #[test]
    fn binary_round_trip_keeps_everything() {
        let mut cmd = RemotingCommand::new_request(-7)
            .with_opaque(-1)
            .with_remark("ünïcode")
            .with_ext("topic", "TopicTest")
            .with_ext("", "")
            .with_serialize_type(SerializeType::RocketMq);
        cmd.language = LanguageCode::Unknown(99);
        cmd.version = mq_version::V3_4_9;
        assert_eq!(round_trip(&cmd), cmd);
    }

    #[test]
    fn binary_header_with_empty_remark_and_no_ext_is_minimal() {
        let cmd = RemotingCommand::new_request(request_code::HEART_BEAT)
            .with_serialize_type(SerializeType::RocketMq);
        let header = encode_header(&cmd).expect("encodable");
        assert_eq!(header.len(), 21, "2+1+2+4+4 fixed, 4 remark len, 4 ext len");
        assert_eq!(round_trip(&cmd), cmd);
    }

    #[test]
    fn a_response_is_encoded_the_way_its_request_came() {
        for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
            let request = RemotingCommand::new_request(request_code::GET_MAX_OFFSET)
                .with_opaque(42)
                .with_serialize_type(serialize_type);
            let request = round_trip(&request);
            let response = RemotingCommand::response_to(&request, response_code::SUCCESS, None)
                .with_ext("offset", "7");
            let mut buf = BytesMut::new();
            encode(&response, &mut buf).expect("encodable");
            assert_eq!(buf.get(4).copied(), Some(serialize_type.code()));
            let decoded = decode_one(buf);
            assert_eq!(decoded.serialize_type, serialize_type);
            assert_eq!((decoded.opaque, decoded.flag), (42, 1));
        }
    }

    #[test]
    fn incomplete_frames_wait_and_leave_the_buffer_alone() {
        let mut full = BytesMut::new();
        encode(
            &RemotingCommand::new_request(request_code::HEART_BEAT).with_body(&b"{}"[..]),
            &mut full,
        )
        .expect("encodable");
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(
                decode(&mut part, DEFAULT_MAX_FRAME)
                    .expect("no error yet")
                    .is_none()
            );
            assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn two_frames_in_one_buffer_decode_in_order() {
        let mut buf = BytesMut::new();
        for opaque in [1, 2] {
            encode(
                &RemotingCommand::new_request(request_code::HEART_BEAT).with_opaque(opaque),
                &mut buf,
            )
            .expect("encodable");
        }
        let first = decode(&mut buf, DEFAULT_MAX_FRAME)
            .expect("valid")
            .expect("complete");
        let second = decode(&mut buf, DEFAULT_MAX_FRAME)
            .expect("valid")
            .expect("complete");
        assert_eq!((first.opaque, second.opaque), (1, 2));
        assert!(
            decode(&mut buf, DEFAULT_MAX_FRAME)
                .expect("valid")
                .is_none()
        );
    }

    /// Decodes `buf` expecting an error.
    fn decode_err(mut buf: BytesMut, max: usize) -> FrameError {
        decode(&mut buf, max).expect_err("must be rejected")
    }

    #[test]
    fn length_prefix_errors() {
        assert!(matches!(
            decode_err(BytesMut::from(&[0xFF, 0xFF, 0xFF, 0xFF][..]), 100),
            FrameError::NegativeLength(-1)
        ));
        assert!(matches!(
            decode_err(BytesMut::from(&[0, 0, 0, 3][..]), 100),
            FrameError::TooShort(3)
        ));
        // Rejected from the prefix alone: nothing of the 1 GiB body has to arrive.
        let err = decode_err(BytesMut::from(&[0x40, 0, 0, 0][..]), DEFAULT_MAX_FRAME);
        assert!(
            matches!(err, FrameError::TooLarge { len, max } if len == 0x4000_0004 && max == DEFAULT_MAX_FRAME)
        );
        let err = decode_err(raw_frame(0, br#"{"code":1}"#, b""), 10);
        assert!(matches!(err, FrameError::TooLarge { len: 18, max: 10 }));
    }

    #[test]
    fn header_and_type_errors() {
        let mut buf = BytesMut::new();
        buf.put_i32(6);
        buf.put_u32(9); // JSON, header length 9, but only 2 bytes follow
        buf.extend_from_slice(b"{}");
        assert!(matches!(
            decode_err(buf, 100),
            FrameError::HeaderTooLong {
                header: 9,
                available: 2
            }
        ));
        assert!(matches!(
            decode_err(raw_frame(2, b"{}", b""), 100),
            FrameError::UnknownSerializeType(2)
        ));
        assert!(matches!(
            decode_err(raw_frame(0, b"{\"code\":", b""), 100),
            FrameError::Json(_)
        ));
        assert!(matches!(
            decode_err(raw_frame(0, b"[1,2]", b""), 100),
            FrameError::BadJsonField {
                field: "header",
                ..
            }
        ));
        assert!(matches!(
            decode_err(raw_frame(0, br#"{"code":"ten"}"#, b""), 100),
            FrameError::BadJsonField { field: "code", .. }
        ));
        assert!(matches!(
            decode_err(raw_frame(0, br#"{"opaque":3000000000}"#, b""), 100),
            FrameError::BadJsonField {
                field: "opaque",
                ..
            }
        ));
        assert!(matches!(
            decode_err(raw_frame(0, br#"{"extFields":[]}"#, b""), 100),
            FrameError::BadJsonField {
                field: "extFields",
                ..
            }
        ));
    }

    #[test]
    fn a_bad_header_consumes_only_its_own_frame() {
        let mut buf = raw_frame(0, b"not json", b"");
        encode(
            &RemotingCommand::new_request(request_code::HEART_BEAT).with_opaque(8),
            &mut buf,
        )
        .expect("encodable");
        assert!(decode(&mut buf, DEFAULT_MAX_FRAME).is_err());
        let next = decode(&mut buf, DEFAULT_MAX_FRAME)
            .expect("valid")
            .expect("complete");
        assert_eq!(next.opaque, 8);
    }

    #[test]
    fn truncated_binary_header_fields_are_errors() {
        let cmd = RemotingCommand::new_request(request_code::SEND_MESSAGE)
            .with_remark("remark")
            .with_ext("key", "value")
            .with_serialize_type(SerializeType::RocketMq);
        let header = encode_header(&cmd).expect("encodable");
        for cut in 0..header.len() {
            // A header length that ends early makes every later field run out of bytes.
            let err = decode_err(raw_frame(1, &header[..cut], b""), 1024);
            assert!(
                matches!(err, FrameError::Truncated(_)),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn negative_binary_lengths_are_errors() {
        let fixed = [0u8, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut header = fixed.to_vec();
        header.extend_from_slice(&(-5i32).to_be_bytes());
        let err = decode_err(raw_frame(1, &header, b""), 1024);
        assert!(matches!(
            err,
            FrameError::NegativeFieldLength {
                field: "remark",
                len: -5
            }
        ));

        let mut header = fixed.to_vec();
        header.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3, 0xFF, 0xFF, 0]);
        let err = decode_err(raw_frame(1, &header, b""), 1024);
        assert!(matches!(
            err,
            FrameError::NegativeFieldLength {
                field: "ext key",
                len: -1
            }
        ));

        let mut header = fixed.to_vec();
        header.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7, 0, 1, b'k', 0x80, 0, 0, 0]);
        let err = decode_err(raw_frame(1, &header, b""), 1024);
        assert!(matches!(
            err,
            FrameError::NegativeFieldLength {
                field: "ext value",
                ..
            }
        ));
    }

    #[test]
    fn binary_header_lengths_larger_than_the_header_are_errors() {
        let mut header = vec![0u8, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        header.extend_from_slice(&i32::MAX.to_be_bytes());
        let err = decode_err(raw_frame(1, &header, b""), 1024);
        assert!(matches!(err, FrameError::Truncated("remark")));
    }

    #[test]
    fn unencodable_binary_values_are_errors_not_truncation() {
        let cmd =
            RemotingCommand::new_request(200_050).with_serialize_type(SerializeType::RocketMq);
        assert!(matches!(
            encode_header(&cmd),
            Err(FrameError::Unencodable {
                field: "code",
                value: 200_050
            })
        ));
        let json = RemotingCommand::new_request(200_050);
        assert_eq!(
            round_trip(&json).code,
            200_050,
            "JSON headers carry any i32 code"
        );
        let long_key = "k".repeat(40_000);
        let cmd = RemotingCommand::new_request(1)
            .with_ext(long_key, "v")
            .with_serialize_type(SerializeType::RocketMq);
        assert!(matches!(
            encode_header(&cmd),
            Err(FrameError::Unencodable {
                field: "ext key length",
                ..
            })
        ));
    }
}

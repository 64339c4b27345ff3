//! The message object of the API (`OnsRestMessageDo`): body decompressed, text when UTF-8
//! else base64 (`bodyEncoding`), bodies of one answer capped together, and the capitalised
//! form the dead-letter endpoints use.

use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mq_broker::client::QueriedMessage;
use mq_broker::store::message;
use serde::Serialize;
use serde_json::Value;

use super::Target;

/// Most body bytes one answer carries (the rest of each body is cut, and says so).
pub const PAGE_BODY_BYTES: usize = 1 << 20;
/// Most bytes a compressed body may inflate to (a bomb stops there).
const MAX_INFLATED: u64 = 8 << 20;

/// Body bytes an answer may still carry.
#[derive(Clone, Copy, Debug)]
pub struct BodyBudget {
    left: usize,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self { left: bytes }
    }

    /// The budget of one answer ([`PAGE_BODY_BYTES`]).
    pub fn page() -> Self {
        Self::new(PAGE_BODY_BYTES)
    }
}

/// One property.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Property {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A message as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// Topic as the user named it.
    pub topic: String,
    /// Properties in stored order.
    pub property_list: Vec<Property>,
    /// Body: text, or base64 (see `body_encoding`).
    pub body: String,
    /// `text` or `base64`.
    pub body_encoding: &'static str,
    /// Whether the body was cut to fit the answer's budget.
    pub body_truncated: bool,
    /// Stored bytes of the message.
    pub store_size: i32,
    /// When the producer made it (ms).
    pub born_timestamp: i64,
    /// The producer's address.
    pub born_host: String,
    /// When the broker stored it (ms).
    pub store_timestamp: i64,
    /// The broker's address.
    pub store_host: String,
    /// The client's message id (`SendResult.msgId`), else the offset id.
    pub msg_id: String,
    /// The offset message id (store host + commit-log offset).
    pub offset_msg_id: String,
    /// CRC32 of the stored body (31 bits).
    #[serde(rename = "bodyCRC")]
    pub body_crc: i32,
    /// Times it was consumed again.
    pub reconsume_times: i32,
}

/// The body as the producer sent it: inflated when stored compressed (the stored bytes
/// when they do not inflate).
pub fn plain_body(m: &QueriedMessage) -> Vec<u8> {
    if !m.is_compressed() {
        return m.body.to_vec();
    }
    let mut out = Vec::new();
    let inflated = flate2::read::ZlibDecoder::new(&m.body[..])
        .take(MAX_INFLATED)
        .read_to_end(&mut out);
    match inflated {
        Ok(_) => out,
        Err(_) => m.body.to_vec(),
    }
}

/// `(body, encoding, truncated)`: text when UTF-8, else base64, cut to the budget.
pub fn encode_body(bytes: &[u8], budget: &mut BodyBudget) -> (String, &'static str, bool) {
    let keep = bytes.len().min(budget.left);
    budget.left -= keep;
    let truncated = keep < bytes.len();
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let mut end = keep;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            (text[..end].to_owned(), "text", truncated)
        }
        Err(_) => (STANDARD.encode(&bytes[..keep]), "base64", truncated),
    }
}

/// `m` as the API shows it, its body charged to `budget`.
pub fn view(t: &Target, m: &QueriedMessage, budget: &mut BodyBudget) -> MessageView {
    let (body, body_encoding, body_truncated) = encode_body(&plain_body(m), budget);
    let props =
        message::encode_properties(m.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let stored_topic = t.names.canonical(&m.topic);
    let store_size = message::stored_len(m.sys_flag, m.body.len(), stored_topic.len(), props.len());
    let offset_msg_id = m.offset_msg_id();
    MessageView {
        topic: t.bare(&m.topic),
        property_list: m
            .properties
            .iter()
            .map(|(name, value)| Property {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        body,
        body_encoding,
        body_truncated,
        store_size: i32::try_from(store_size).unwrap_or(i32::MAX),
        born_timestamp: m.born_timestamp,
        born_host: m.born_host.to_string(),
        store_timestamp: m.store_timestamp,
        store_host: m.store_host.to_string(),
        msg_id: m
            .uniq_key()
            .map_or_else(|| offset_msg_id.clone(), str::to_owned),
        offset_msg_id,
        body_crc: message::body_crc(&m.body) as i32,
        reconsume_times: m.reconsume_times,
    }
}

/// Every key of `v` (objects inside included) with its first letter upper-cased: the
/// dead-letter endpoints' spelling (`MsgId`, `PropertyList: [{Name, Value}]`).
pub fn capitalised(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (capital(&k), capitalised(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(capitalised).collect()),
        other => other,
    }
}

fn capital(k: &str) -> String {
    let mut chars = k.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mq_broker::names::Namespace;
    use serde_json::json;
    use std::io::Write;

    fn target(ns: Option<&str>) -> Target {
        Target {
            instance_id: "MQ_INST_1_x".into(),
            name_servers: vec![],
            credentials: None,
            names: Namespace::new(ns),
        }
    }

    fn stored(topic: &str, body: &[u8], compressed: bool) -> QueriedMessage {
        let addr: std::net::SocketAddr = "10.0.0.1:10911".parse().unwrap();
        QueriedMessage {
            topic: topic.into(),
            queue_id: 1,
            queue_offset: 7,
            phys_offset: 4096,
            sys_flag: if compressed {
                message::sysflag::COMPRESSED
            } else {
                0
            },
            flag: 0,
            born_timestamp: 1,
            born_host: addr,
            store_timestamp: 2,
            store_host: addr,
            reconsume_times: 0,
            body: body.to_vec().into(),
            properties: vec![
                ("UNIQ_KEY".into(), "U1".into()),
                ("TAGS".into(), "T".into()),
            ],
        }
    }

    #[test]
    fn compressed_bodies_are_inflated_and_text_stays_text() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all("héllo ".repeat(1000).as_bytes()).unwrap();
        let m = stored("MQ_INST_1_x%ORDERS", &z.finish().unwrap(), true);
        let v = view(&target(Some("MQ_INST_1_x")), &m, &mut BodyBudget::page());
        assert_eq!(v.body, "héllo ".repeat(1000));
        assert_eq!(v.body_encoding, "text");
        assert!(!v.body_truncated);
        assert_eq!(v.topic, "ORDERS", "the user's name, never instanceId%topic");
        assert_eq!(v.msg_id, "U1");
        assert_eq!(v.offset_msg_id, m.offset_msg_id());
        assert_eq!(v.body_crc as u32, message::body_crc(&m.body));
    }

    #[test]
    fn binary_bodies_are_base64_and_the_budget_cuts_them() {
        let m = stored("ORDERS", &[0xff, 0x00, 0xfe, 0x01], false);
        let mut budget = BodyBudget::new(6);
        let first = view(&target(None), &m, &mut budget);
        assert_eq!(first.body_encoding, "base64");
        assert_eq!(
            STANDARD.decode(&first.body).unwrap(),
            vec![0xff, 0x00, 0xfe, 0x01]
        );
        let second = view(&target(None), &m, &mut budget);
        assert!(second.body_truncated);
        assert_eq!(STANDARD.decode(&second.body).unwrap(), vec![0xff, 0x00]);
        let third = view(&target(None), &m, &mut budget);
        assert!(third.body_truncated && third.body.is_empty());
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        let mut budget = BodyBudget::new(2);
        let (body, enc, cut) = encode_body("éé".as_bytes(), &mut budget);
        assert_eq!((body.as_str(), enc, cut), ("é", "text", true));
    }

    #[test]
    fn a_body_that_does_not_inflate_is_shown_as_stored() {
        let m = stored("ORDERS", b"not zlib", true);
        assert_eq!(plain_body(&m), b"not zlib");
    }

    #[test]
    fn dead_letter_fields_are_capitalised_throughout() {
        let m = stored("%DLQ%GID_a", b"x", false);
        let v = capitalised(
            serde_json::to_value(view(&target(None), &m, &mut BodyBudget::page())).unwrap(),
        );
        for k in [
            "Topic",
            "PropertyList",
            "Body",
            "StoreSize",
            "BornTimestamp",
            "BornHost",
            "StoreTimestamp",
            "StoreHost",
            "MsgId",
            "BodyCRC",
            "ReconsumeTimes",
            "BodyEncoding",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        assert_eq!(
            v["PropertyList"][0],
            json!({"Name": "UNIQ_KEY", "Value": "U1"})
        );
    }
}

//! fastjson's non-standard JSON: maps keyed by objects or numbers, written unquoted.
//!
//! Java brokers serialise `HashMap<MessageQueue, _>` (ConsumeStats, TopicStatsTable,
//! ResetOffsetBody) with fastjson, which writes the key object itself as the key:
//! `{"offsetTable":{{"brokerName":"b","queueId":0,"topic":"t"}:{...}}}`. Number-keyed maps
//! come out as `{0:"10.0.0.1:10911"}`. Neither is JSON, so no standard parser reads them.
//!
//! Our choice:
//! - on the wire we **write** the fastjson form ([`MqMap::write_fastjson`]), because Java
//!   tools (mqadmin, the dashboard) read these bodies with fastjson and expect it;
//! - we **read** leniently ([`from_slice`]): [`normalize`] first turns any non-string key
//!   into a JSON string (`{"{\"brokerName\":…}":…}`), then serde reads the result, and an
//!   [`MqMap`] accepts that string-keyed form as well as a list of `[queue, value]` pairs;
//! - an [`MqMap`] **serialises** (serde) to that list form, standard JSON for scripts and the
//!   console (`mq-broker admin --output json`).

use super::body::MessageQueue;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// What the scanner is inside of.
enum Scope {
    /// An object; `want_key` while the next token is a key.
    Object { want_key: bool },
    /// An array.
    Array,
}

/// Rewrites fastjson output as standard JSON: every object key that is not a string (an
/// object, array, number or bare word) becomes a string holding its text. Standard JSON
/// passes through unchanged; input too broken to scan is returned as is, for serde to
/// report.
pub fn normalize(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut scopes: Vec<Scope> = vec![];
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if wants_key(&scopes) && !matches!(c, b'"' | b'}') && !c.is_ascii_whitespace() {
            let Some(end) = key_end(bytes, i) else {
                return Cow::Borrowed(text);
            };
            let quoted = serde_json::Value::String(text[i..end].trim().to_owned()).to_string();
            out.extend_from_slice(quoted.as_bytes());
            key_done(&mut scopes);
            changed = true;
            i = end;
            continue;
        }
        let end = match c {
            b'"' => string_end(bytes, i),
            _ => i + 1,
        };
        track(&mut scopes, c);
        out.extend_from_slice(&bytes[i..end]);
        i = end;
    }
    if !changed {
        return Cow::Borrowed(text);
    }
    // Only whole UTF-8 sequences were copied and ASCII inserted, so this cannot fail.
    String::from_utf8(out).map_or(Cow::Borrowed(text), Cow::Owned)
}

/// Parses a body Java may have written with fastjson (see [`normalize`]).
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    let text = String::from_utf8_lossy(body);
    serde_json::from_str(&normalize(&text))
}

fn wants_key(scopes: &[Scope]) -> bool {
    matches!(scopes.last(), Some(Scope::Object { want_key: true }))
}

fn key_done(scopes: &mut [Scope]) {
    if let Some(Scope::Object { want_key }) = scopes.last_mut() {
        *want_key = false;
    }
}

/// Updates the scope stack for one structural byte (or a string, starting with `"`).
fn track(scopes: &mut Vec<Scope>, c: u8) {
    match c {
        b'{' => scopes.push(Scope::Object { want_key: true }),
        b'[' => scopes.push(Scope::Array),
        b'}' | b']' => {
            scopes.pop();
        }
        b',' => {
            if let Some(Scope::Object { want_key }) = scopes.last_mut() {
                *want_key = true;
            }
        }
        b'"' => key_done(scopes),
        _ => {}
    }
}

/// End (exclusive) of the string literal starting at `start` (a `"`).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// End (exclusive) of a non-string key starting at `start`: a balanced object or array,
/// or a bare token up to the `:`.
fn key_end(bytes: &[u8], start: usize) -> Option<usize> {
    if !matches!(bytes[start], b'{' | b'[') {
        let len = bytes[start..].iter().position(|&b| b == b':')?;
        return Some(start + len);
    }
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(bytes, i);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// A map keyed by message queue (`HashMap<MessageQueue, V>` in Java), see the module docs
/// for its three forms.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MqMap<V>(pub BTreeMap<MessageQueue, V>);

impl<V: Serialize> MqMap<V> {
    /// Appends the map in fastjson's object-key form, keys sorted as fastjson sorts fields.
    pub fn write_fastjson(&self, out: &mut String) {
        out.push('{');
        for (n, (mq, value)) in self.0.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(&queue_key(mq));
            out.push(':');
            // Plain data structs with string keys always serialise.
            out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
        }
        out.push('}');
    }
}

/// A queue as fastjson writes it: fields in alphabetical order.
fn queue_key(mq: &MessageQueue) -> String {
    let text = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    format!(
        r#"{{"brokerName":{},"queueId":{},"topic":{}}}"#,
        text(&mq.broker_name),
        mq.queue_id,
        text(&mq.topic)
    )
}

impl<V: Serialize> Serialize for MqMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for entry in &self.0 {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

impl<'de, V: DeserializeOwned> Deserialize<'de> for MqMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = match serde_json::Value::deserialize(d)? {
            serde_json::Value::Null => vec![],
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(key, value)| Ok((serde_json::from_str(&key)?, value)))
                .collect::<Result<_, serde_json::Error>>()
                .map_err(de::Error::custom)?,
            serde_json::Value::Array(pairs) => pairs
                .into_iter()
                .map(serde_json::from_value::<(MessageQueue, serde_json::Value)>)
                .collect::<Result<_, _>>()
                .map_err(de::Error::custom)?,
            other => {
                return Err(de::Error::custom(format!(
                    "expected a queue-keyed map, got {other}"
                )));
            }
        };
        entries
            .into_iter()
            .map(|(mq, value)| Ok((mq, serde_json::from_value(value)?)))
            .collect::<Result<_, serde_json::Error>>()
            .map(MqMap)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(topic: &str, queue_id: i32) -> MessageQueue {
        MessageQueue {
            topic: topic.into(),
            broker_name: "broker-a".into(),
            queue_id,
        }
    }

    #[test]
    fn standard_json_passes_through_untouched() {
        let text = r#"{"a":[1,{"b":"x:{y}"}],"c":"\"q\""}"#;
        assert!(matches!(normalize(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn object_and_number_keys_become_strings() {
        let text = r#"{"t":{{"brokerName":"b","queueId":0,"topic":"t{}"}:{"n":1}}, "ids" : { 0 :"a",1:"b"}}"#;
        let value: serde_json::Value = serde_json::from_str(&normalize(text)).unwrap();
        assert_eq!(
            value["t"][r#"{"brokerName":"b","queueId":0,"topic":"t{}"}"#]["n"],
            1
        );
        assert_eq!(value["ids"]["0"], "a");
        assert_eq!(value["ids"]["1"], "b");
    }

    #[test]
    fn broken_input_is_left_for_serde_to_report() {
        let text = r#"{{"brokerName":"b""#;
        assert_eq!(normalize(text), text);
        assert!(from_slice::<serde_json::Value>(text.as_bytes()).is_err());
    }

    #[test]
    fn queue_maps_are_written_as_fastjson_and_read_back_in_every_form() {
        let map = MqMap([(mq("T", 1), 7i64), (mq("T", 0), 5)].into());
        let mut fastjson = String::new();
        map.write_fastjson(&mut fastjson);
        assert_eq!(
            fastjson,
            r#"{{"brokerName":"broker-a","queueId":0,"topic":"T"}:5,{"brokerName":"broker-a","queueId":1,"topic":"T"}:7}"#
        );
        let from_fastjson: MqMap<i64> = from_slice(fastjson.as_bytes()).unwrap();
        assert_eq!(from_fastjson, map);
        let list = serde_json::to_string(&map).unwrap();
        assert!(list.starts_with(r#"[[{"topic":"T","brokerName":"broker-a","queueId":0},5]"#));
        let from_list: MqMap<i64> = from_slice(list.as_bytes()).unwrap();
        assert_eq!(from_list, map);
        let empty: MqMap<i64> = from_slice(b"null").unwrap();
        assert!(empty.0.is_empty());
        assert!(from_slice::<MqMap<i64>>(b"3").is_err());
    }
}

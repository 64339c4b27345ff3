//! The RocketMQ 4.x stored-message format (spec remoting.md §6), message ids (§7) and
//! tag hashes (§8).
//!
//! Messages are kept on disk exactly as RocketMQ's `CommitLog` writes them, so a pull
//! response is the stored bytes concatenated and any RocketMQ client decodes it.
//! Layout (big-endian; offsets for IPv4 born/store hosts):
//!
//! ```text
//! @0  TOTALSIZE i32        @4  MAGICCODE 0xDAA320A7   @8  BODYCRC i32 (CRC32 & 0x7FFFFFFF)
//! @12 QUEUEID i32          @16 FLAG i32               @20 QUEUEOFFSET i64
//! @28 PHYSICALOFFSET i64   @36 SYSFLAG i32            @40 BORNTIMESTAMP i64
//! @48 BORNHOST ip+port i32 (8 bytes; 20 if SYSFLAG & 0x10)
//! @56 STORETIMESTAMP i64   @64 STOREHOST (8; 20 if SYSFLAG & 0x20)
//! @72 RECONSUMETIMES i32   @76 PREPARED TX OFFSET i64
//! @84 BODY i32 len + bytes, TOPIC i8 len + bytes, PROPERTIES i16 len + bytes
//! ```
//!
//! A segment that cannot take the next entry ends with the blank marker
//! `[remaining i32][0xCBD43194]`. [`encode`] builds an entry with everything the message
//! itself determines (including BODYCRC, computed outside the store's write lock);
//! [`patch_for_append`] fills the three fields only the store knows (QUEUEOFFSET,
//! PHYSICALOFFSET, STORETIMESTAMP). [`decode`] is pure, checks every length against
//! TOTALSIZE and the body CRC, and never panics on garbage.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use super::error::{DecodeError, EncodeError};

/// MAGICCODE of a RocketMQ 4.x message (v1).
pub const MESSAGE_MAGIC: u32 = 0xDAA3_20A7;
/// MAGICCODE of the blank marker that ends a commit-log segment.
pub const BLANK_MAGIC: u32 = 0xCBD4_3194;
/// Length of the blank marker written at the end of a segment.
pub const BLANK_LEN: usize = 8;
/// Longest topic the 1-byte length field allows.
pub const MAX_TOPIC_BYTES: usize = 127;
/// Longest serialized properties the 2-byte length field allows.
pub const MAX_PROPERTIES_BYTES: usize = i16::MAX as usize;
/// Default maximum body size (RocketMQ's `maxMessageSize`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Smallest possible entry: IPv4 hosts, empty body, topic and properties.
pub const MIN_ENTRY_LEN: usize = 91;

/// Byte position of QUEUEOFFSET.
pub const POS_QUEUE_OFFSET: usize = 20;
/// Byte position of PHYSICALOFFSET.
pub const POS_PHYS_OFFSET: usize = 28;
/// Byte position of SYSFLAG.
pub const POS_SYSFLAG: usize = 36;
/// Byte position of BORNHOST.
pub const POS_BORN_HOST: usize = 48;

/// SYSFLAG bits (common/sysflag/MessageSysFlag).
pub mod sysflag {
    /// Body is zlib-compressed.
    pub const COMPRESSED: i32 = 0x1;
    /// Several tags.
    pub const MULTI_TAGS: i32 = 0x2;
    /// Mask of the transaction type bits.
    pub const TRANSACTION_MASK: i32 = 0xC;
    /// Not a transaction message.
    pub const TRANSACTION_NOT: i32 = 0x0;
    /// Half (prepared) transaction message: stored, invisible to consumers.
    pub const TRANSACTION_PREPARED: i32 = 0x4;
    /// Committed transaction message.
    pub const TRANSACTION_COMMIT: i32 = 0x8;
    /// Rolled-back transaction message: stored, invisible to consumers.
    pub const TRANSACTION_ROLLBACK: i32 = 0xC;
    /// BORNHOST is IPv6 (16-byte address).
    pub const BORNHOST_V6: i32 = 0x10;
    /// STOREHOST is IPv6 (16-byte address).
    pub const STOREHOST_V6: i32 = 0x20;
}

/// Property names the store reads (common/message/MessageConst).
pub mod property {
    /// Space-separated business keys.
    pub const KEYS: &str = "KEYS";
    /// The message's tag.
    pub const TAGS: &str = "TAGS";
    /// Client-assigned unique message id.
    pub const UNIQ_KEY: &str = "UNIQ_KEY";
}

/// Separator between a property name and its value.
pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
/// Separator after each property.
pub const PROPERTY_SEPARATOR: char = '\u{2}';

/// A message as it arrives to be stored (what the send path knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageToStore {
    /// Topic (≤ 127 UTF-8 bytes).
    pub topic: String,
    /// Queue id within the topic.
    pub queue_id: i32,
    /// Client flag (opaque).
    pub flag: i32,
    /// SYSFLAG; the host IPv6 bits are set from the addresses by [`encode`].
    pub sys_flag: i32,
    /// Body as sent (possibly compressed, per SYSFLAG).
    pub body: Bytes,
    /// Serialized properties (`name\x01value\x02`…), kept byte for byte.
    pub properties: String,
    /// Producer timestamp (ms).
    pub born_timestamp: i64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// Times the message was redelivered.
    pub reconsume_times: i32,
    /// Commit-log offset of the half message this one commits or rolls back.
    pub prepared_transaction_offset: i64,
}

impl MessageToStore {
    /// A plain message with default metadata (tests, internal topics).
    pub fn new(topic: impl Into<String>, queue_id: i32, body: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            queue_id,
            flag: 0,
            sys_flag: 0,
            body: body.into(),
            properties: String::new(),
            born_timestamp: 0,
            born_host: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            reconsume_times: 0,
            prepared_transaction_offset: 0,
        }
    }

    /// Sets the serialized properties from pairs.
    pub fn with_properties<'a>(
        mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        self.properties = encode_properties(pairs);
        self
    }
}

/// Length of a host field (IPv4 8, IPv6 20).
fn host_len(v6: bool) -> usize {
    if v6 { 20 } else { 8 }
}

/// Byte position of STORETIMESTAMP for a SYSFLAG.
pub fn store_timestamp_pos(sys_flag: i32) -> usize {
    POS_BORN_HOST + host_len(sys_flag & sysflag::BORNHOST_V6 != 0)
}

/// Byte position of the BODY length for a SYSFLAG (84 for IPv4 hosts).
pub fn body_len_pos(sys_flag: i32) -> usize {
    store_timestamp_pos(sys_flag) + 8 + host_len(sys_flag & sysflag::STOREHOST_V6 != 0) + 4 + 8
}

/// Stored entry length (RocketMQ `calMsgLength`).
pub fn stored_len(sys_flag: i32, body: usize, topic: usize, properties: usize) -> usize {
    body_len_pos(sys_flag) + 4 + body + 1 + topic + 2 + properties
}

/// BODYCRC: CRC32 of the body masked to 31 bits (UtilAll.crc32).
pub fn body_crc(body: &[u8]) -> u32 {
    crc32fast::hash(body) & 0x7FFF_FFFF
}

/// Tag hash for the consume queue: Java `String.hashCode` of the TAGS value (UTF-16
/// code units, wrapping `i32`), widened to `i64`; 0 for no tag.
pub fn tags_code(tags: &str) -> i64 {
    let hash = tags.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    i64::from(hash)
}

/// Whether a SYSFLAG's transaction type makes the message invisible to consumers
/// (PREPARED or ROLLBACK: no consume-queue entry, QUEUEOFFSET 0).
pub fn is_invisible_transaction(sys_flag: i32) -> bool {
    matches!(
        sys_flag & sysflag::TRANSACTION_MASK,
        sysflag::TRANSACTION_PREPARED | sysflag::TRANSACTION_ROLLBACK
    )
}

/// Checks that a topic can be stored (length and path safety).
pub fn validate_topic(topic: &str) -> Result<(), EncodeError> {
    if topic.is_empty() {
        return Err(EncodeError::EmptyTopic);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(EncodeError::TopicTooLong { len: topic.len() });
    }
    if topic == "." || topic == ".." || topic.contains(['/', '\\', '\0']) {
        return Err(EncodeError::InvalidTopic(topic.to_owned()));
    }
    Ok(())
}

/// Encodes `msg` as a stored entry, with QUEUEOFFSET, PHYSICALOFFSET and STORETIMESTAMP
/// zero (see [`patch_for_append`]). Errors name the limit that was exceeded.
pub fn encode(
    msg: &MessageToStore,
    store_host: SocketAddr,
    max_body: usize,
) -> Result<Vec<u8>, EncodeError> {
    validate_topic(&msg.topic)?;
    if msg.properties.len() > MAX_PROPERTIES_BYTES {
        return Err(EncodeError::PropertiesTooLong {
            len: msg.properties.len(),
        });
    }
    if msg.body.len() > max_body {
        return Err(EncodeError::BodyTooLarge {
            len: msg.body.len(),
            max: max_body,
        });
    }
    let sys_flag = host_flags(msg.sys_flag, msg.born_host, store_host);
    let len = stored_len(
        sys_flag,
        msg.body.len(),
        msg.topic.len(),
        msg.properties.len(),
    );
    let mut buf = Vec::with_capacity(len);
    put_header(&mut buf, msg, sys_flag, len);
    put_host(&mut buf, msg.born_host);
    buf.extend_from_slice(&0i64.to_be_bytes()); // STORETIMESTAMP, patched
    put_host(&mut buf, store_host);
    put_tail(&mut buf, msg);
    debug_assert_eq!(buf.len(), len);
    Ok(buf)
}

fn host_flags(sys_flag: i32, born: SocketAddr, store: SocketAddr) -> i32 {
    let mut flag = sys_flag & !(sysflag::BORNHOST_V6 | sysflag::STOREHOST_V6);
    if born.is_ipv6() {
        flag |= sysflag::BORNHOST_V6;
    }
    if store.is_ipv6() {
        flag |= sysflag::STOREHOST_V6;
    }
    flag
}

fn put_header(buf: &mut Vec<u8>, msg: &MessageToStore, sys_flag: i32, len: usize) {
    buf.extend_from_slice(&(len as i32).to_be_bytes());
    buf.extend_from_slice(&MESSAGE_MAGIC.to_be_bytes());
    buf.extend_from_slice(&body_crc(&msg.body).to_be_bytes());
    buf.extend_from_slice(&msg.queue_id.to_be_bytes());
    buf.extend_from_slice(&msg.flag.to_be_bytes());
    buf.extend_from_slice(&0i64.to_be_bytes()); // QUEUEOFFSET, patched
    buf.extend_from_slice(&0i64.to_be_bytes()); // PHYSICALOFFSET, patched
    buf.extend_from_slice(&sys_flag.to_be_bytes());
    buf.extend_from_slice(&msg.born_timestamp.to_be_bytes());
}

fn put_host(buf: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => buf.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => buf.extend_from_slice(&ip.octets()),
    }
    buf.extend_from_slice(&i32::from(addr.port()).to_be_bytes());
}

fn put_tail(buf: &mut Vec<u8>, msg: &MessageToStore) {
    buf.extend_from_slice(&msg.reconsume_times.to_be_bytes());
    buf.extend_from_slice(&msg.prepared_transaction_offset.to_be_bytes());
    buf.extend_from_slice(&(msg.body.len() as i32).to_be_bytes());
    buf.extend_from_slice(&msg.body);
    buf.push(msg.topic.len() as u8);
    buf.extend_from_slice(msg.topic.as_bytes());
    buf.extend_from_slice(&(msg.properties.len() as i16).to_be_bytes());
    buf.extend_from_slice(msg.properties.as_bytes());
}

/// Fills the fields the store assigns at append time into an encoded entry.
pub fn patch_for_append(
    entry: &mut [u8],
    queue_offset: i64,
    phys_offset: i64,
    store_timestamp: i64,
) {
    let sys_flag = read_i32(entry, POS_SYSFLAG).unwrap_or(0);
    let ts_pos = store_timestamp_pos(sys_flag);
    entry[POS_QUEUE_OFFSET..POS_QUEUE_OFFSET + 8].copy_from_slice(&queue_offset.to_be_bytes());
    entry[POS_PHYS_OFFSET..POS_PHYS_OFFSET + 8].copy_from_slice(&phys_offset.to_be_bytes());
    entry[ts_pos..ts_pos + 8].copy_from_slice(&store_timestamp.to_be_bytes());
}

/// Big-endian `i32` at `pos`, if in bounds.
pub fn read_i32(buf: &[u8], pos: usize) -> Option<i32> {
    let bytes = buf.get(pos..pos.checked_add(4)?)?;
    Some(i32::from_be_bytes(bytes.try_into().ok()?))
}

/// Big-endian `i64` at `pos`, if in bounds.
pub fn read_i64(buf: &[u8], pos: usize) -> Option<i64> {
    let bytes = buf.get(pos..pos.checked_add(8)?)?;
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

/// STORETIMESTAMP of an entry from its first bytes (needs ≥ 76 bytes).
pub fn peek_store_timestamp(entry: &[u8]) -> Option<i64> {
    let sys_flag = read_i32(entry, POS_SYSFLAG)?;
    read_i64(entry, store_timestamp_pos(sys_flag))
}

/// A stored message decoded from bytes it borrows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedMessage<'a> {
    /// TOTALSIZE.
    pub store_size: i32,
    /// BODYCRC.
    pub body_crc: u32,
    /// QUEUEID.
    pub queue_id: i32,
    /// FLAG.
    pub flag: i32,
    /// QUEUEOFFSET.
    pub queue_offset: i64,
    /// PHYSICALOFFSET.
    pub phys_offset: i64,
    /// SYSFLAG.
    pub sys_flag: i32,
    /// BORNTIMESTAMP.
    pub born_timestamp: i64,
    /// BORNHOST.
    pub born_host: SocketAddr,
    /// STORETIMESTAMP.
    pub store_timestamp: i64,
    /// STOREHOST.
    pub store_host: SocketAddr,
    /// RECONSUMETIMES.
    pub reconsume_times: i32,
    /// PREPARED TRANSACTION OFFSET.
    pub prepared_transaction_offset: i64,
    /// BODY bytes.
    pub body: &'a [u8],
    /// TOPIC (invalid UTF-8 replaced).
    pub topic: Cow<'a, str>,
    /// Serialized PROPERTIES (invalid UTF-8 replaced).
    pub properties: Cow<'a, str>,
}

impl DecodedMessage<'_> {
    /// Value of a property (the last one wins, as in Java's map).
    pub fn property(&self, name: &str) -> Option<&str> {
        property_value(&self.properties, name)
    }
    /// The TAGS property.
    pub fn tags(&self) -> Option<&str> {
        self.property(property::TAGS)
    }
    /// The KEYS property split on spaces (empty tokens dropped).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        split_keys(self.property(property::KEYS).unwrap_or(""))
    }
    /// The UNIQ_KEY property.
    pub fn uniq_key(&self) -> Option<&str> {
        self.property(property::UNIQ_KEY)
    }
    /// The offset message id (store host + physical offset).
    pub fn msg_id(&self) -> String {
        offset_msg_id(self.store_host, self.phys_offset)
    }
}

/// Tokens of a KEYS value (space-separated, empty tokens dropped).
pub fn split_keys(keys: &str) -> impl Iterator<Item = &str> {
    keys.split(' ').filter(|k| !k.is_empty())
}

/// What the first bytes of a commit-log position hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryHead {
    /// A message of this TOTALSIZE.
    Message(usize),
    /// The blank marker declaring this many bytes to the segment end.
    Blank(usize),
}

/// Reads TOTALSIZE and MAGICCODE (8 bytes) without checking the rest.
pub fn peek_head(buf: &[u8]) -> Result<EntryHead, DecodeError> {
    let (Some(size), Some(magic)) = (read_i32(buf, 0), read_i32(buf, 4)) else {
        return Err(DecodeError::Truncated {
            need: 8,
            have: buf.len(),
        });
    };
    let Ok(size) = usize::try_from(size) else {
        return Err(DecodeError::NegativeLength {
            field: "TOTALSIZE",
            len: i64::from(size),
        });
    };
    match magic as u32 {
        MESSAGE_MAGIC => Ok(EntryHead::Message(size)),
        BLANK_MAGIC => Ok(EntryHead::Blank(size)),
        other => Err(DecodeError::BadMagic(other)),
    }
}

/// Decodes the entry at the start of `buf` (which may continue past it), checking
/// TOTALSIZE against the fields and the body CRC. Never panics.
pub fn decode(buf: &[u8]) -> Result<DecodedMessage<'_>, DecodeError> {
    let size = match peek_head(buf)? {
        EntryHead::Message(size) => size,
        EntryHead::Blank(_) => return Err(DecodeError::Blank),
    };
    if size < MIN_ENTRY_LEN {
        return Err(DecodeError::SizeMismatch {
            declared: size as i64,
            computed: MIN_ENTRY_LEN as i64,
        });
    }
    let entry = buf.get(..size).ok_or(DecodeError::Truncated {
        need: size,
        have: buf.len(),
    })?;
    let mut cur = Cursor { buf: entry, pos: 8 };
    let msg = decode_fields(&mut cur, size)?;
    if cur.pos != size {
        return Err(DecodeError::SizeMismatch {
            declared: size as i64,
            computed: cur.pos as i64,
        });
    }
    check_crc(&msg)?;
    Ok(msg)
}

fn check_crc(msg: &DecodedMessage<'_>) -> Result<(), DecodeError> {
    // Java skips the check for an empty body; so do we.
    if msg.body.is_empty() {
        return Ok(());
    }
    let computed = body_crc(msg.body);
    if computed != msg.body_crc {
        return Err(DecodeError::CrcMismatch {
            stored: msg.body_crc,
            computed,
        });
    }
    Ok(())
}

fn decode_fields<'a>(cur: &mut Cursor<'a>, size: usize) -> Result<DecodedMessage<'a>, DecodeError> {
    let body_crc = cur.i32()? as u32;
    let queue_id = cur.i32()?;
    let flag = cur.i32()?;
    let queue_offset = cur.i64()?;
    let phys_offset = cur.i64()?;
    let sys_flag = cur.i32()?;
    let born_timestamp = cur.i64()?;
    let born_host = cur.host(sys_flag & sysflag::BORNHOST_V6 != 0)?;
    let store_timestamp = cur.i64()?;
    let store_host = cur.host(sys_flag & sysflag::STOREHOST_V6 != 0)?;
    let reconsume_times = cur.i32()?;
    let prepared_transaction_offset = cur.i64()?;
    let body = cur.length_prefixed("BODY", 4)?;
    let topic = String::from_utf8_lossy(cur.length_prefixed("TOPIC", 1)?);
    let properties = String::from_utf8_lossy(cur.length_prefixed("PROPERTIES", 2)?);
    Ok(DecodedMessage {
        store_size: size as i32,
        body_crc,
        queue_id,
        flag,
        queue_offset,
        phys_offset,
        sys_flag,
        born_timestamp,
        born_host,
        store_timestamp,
        store_host,
        reconsume_times,
        prepared_transaction_offset,
        body,
        topic,
        properties,
    })
}

/// Bounds-checked big-endian reader.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let end = end.ok_or(DecodeError::Truncated {
            need: self.pos.saturating_add(n),
            have: self.buf.len(),
        })?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn host(&mut self, v6: bool) -> Result<SocketAddr, DecodeError> {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))
        };
        let port = self.i32()?;
        let port = u16::try_from(port).map_err(|_| DecodeError::BadPort(port))?;
        Ok(SocketAddr::new(ip, port))
    }
    /// A length field of `width` bytes (4, 2 or 1) followed by that many bytes.
    fn length_prefixed(
        &mut self,
        field: &'static str,
        width: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = match width {
            4 => i64::from(self.i32()?),
            2 => i64::from(i16::from_be_bytes(self.array()?)),
            _ => i64::from(self.array::<1>()?[0]),
        };
        let len = usize::try_from(len).map_err(|_| DecodeError::NegativeLength { field, len })?;
        self.take(len)
    }
}

/// Serializes properties as `name\x01value\x02` per pair (MessageDecoder).
pub fn encode_properties<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        out.push_str(name);
        out.push(NAME_VALUE_SEPARATOR);
        out.push_str(value);
        out.push(PROPERTY_SEPARATOR);
    }
    out
}

/// Iterates `(name, value)` pairs of serialized properties, liberally: items without
/// exactly one `\x01` or with an empty name are skipped (Java drops them too); empty
/// values are kept.
pub fn properties_iter(props: &str) -> impl Iterator<Item = (&str, &str)> {
    props.split(PROPERTY_SEPARATOR).filter_map(|item| {
        let (name, value) = item.split_once(NAME_VALUE_SEPARATOR)?;
        let well_formed = !name.is_empty() && !value.contains(NAME_VALUE_SEPARATOR);
        well_formed.then_some((name, value))
    })
}

/// Decodes serialized properties into owned pairs, in order (see [`properties_iter`]).
pub fn decode_properties(props: &str) -> Vec<(String, String)> {
    properties_iter(props)
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// Value of property `name` (the last occurrence wins, like Java's `HashMap`).
pub fn property_value<'a>(props: &'a str, name: &str) -> Option<&'a str> {
    properties_iter(props)
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .last()
}

/// Offset message id: upper-case hex of store IP (4 or 16 bytes), port (i32) and
/// commit-log offset (i64): 32 hex digits for IPv4, 56 for IPv6.
pub fn offset_msg_id(store_host: SocketAddr, phys_offset: i64) -> String {
    let mut raw = Vec::with_capacity(28);
    put_host(&mut raw, store_host);
    raw.extend_from_slice(&phys_offset.to_be_bytes());
    let mut out = String::with_capacity(raw.len() * 2);
    for b in raw {
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// Decodes an offset message id into the store host and commit-log offset.
pub fn decode_offset_msg_id(id: &str) -> Result<(SocketAddr, i64), DecodeError> {
    let bad = || DecodeError::BadMessageId(id.to_owned());
    let v6 = match id.len() {
        32 => false,
        56 => true,
        _ => return Err(bad()),
    };
    let raw = hex_decode(id).ok_or_else(bad)?;
    let mut cur = Cursor { buf: &raw, pos: 0 };
    let host = cur.host(v6).map_err(|_| bad())?;
    let offset = cur.i64().map_err(|_| bad())?;
    Ok((host, offset))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let digits = s.as_bytes();
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    digits
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::io::XorShift64;
    use std::net::SocketAddrV6;

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
    }

    fn sample() -> MessageToStore {
        let mut m = MessageToStore::new("TopicTest", 3, &b"Hello RocketMQ"[..]).with_properties([
            ("TAGS", "TagA"),
            ("KEYS", "k1 k2"),
            ("UNIQ_KEY", "AC1100"),
        ]);
        m.flag = 7;
        m.born_timestamp = 1_700_000_000_000;
        m.born_host = v4([10, 1, 2, 3], 54321);
        m.reconsume_times = 2;
        m
    }

    #[test]
    fn ipv4_layout_matches_the_spec_offsets() {
        let m = sample();
        let mut e =
            encode(&m, v4([192, 168, 0, 9], 10911), DEFAULT_MAX_BODY_BYTES).expect("encode");
        patch_for_append(&mut e, 42, 4096, 1_700_000_000_123);
        assert_eq!(
            e.len(),
            91 + m.body.len() + m.topic.len() + m.properties.len()
        );
        assert_eq!(read_i32(&e, 0), Some(e.len() as i32));
        assert_eq!(read_i32(&e, 4), Some(MESSAGE_MAGIC as i32));
        assert_eq!(read_i32(&e, 8), Some(body_crc(&m.body) as i32));
        assert_eq!(read_i32(&e, 12), Some(3));
        assert_eq!(read_i32(&e, 16), Some(7));
        assert_eq!(read_i64(&e, 20), Some(42));
        assert_eq!(read_i64(&e, 28), Some(4096));
        assert_eq!(read_i32(&e, 36), Some(0));
        assert_eq!(read_i64(&e, 40), Some(1_700_000_000_000));
        assert_eq!(&e[48..52], &[10, 1, 2, 3]);
        assert_eq!(read_i32(&e, 52), Some(54321));
        assert_eq!(read_i64(&e, 56), Some(1_700_000_000_123));
        assert_eq!(&e[64..68], &[192, 168, 0, 9]);
        assert_eq!(read_i32(&e, 68), Some(10911));
        assert_eq!(read_i32(&e, 72), Some(2));
        assert_eq!(read_i32(&e, 84), Some(m.body.len() as i32));
        assert_eq!(&e[88..88 + m.body.len()], &m.body[..]);
        let topic_at = 88 + m.body.len();
        assert_eq!(e[topic_at] as usize, m.topic.len());
        assert_eq!(peek_store_timestamp(&e), Some(1_700_000_000_123));
    }

    #[test]
    fn ipv6_hosts_set_sysflag_and_shift_fields() {
        let mut m = sample();
        m.born_host = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1234, 0, 0));
        let store = SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
            10911,
            0,
            0,
        ));
        let mut e = encode(&m, store, DEFAULT_MAX_BODY_BYTES).expect("encode");
        patch_for_append(&mut e, 1, 2, 3);
        let flag = read_i32(&e, 36).expect("sysflag");
        assert_eq!(flag & 0x30, 0x30);
        assert_eq!(
            read_i64(&e, 68),
            Some(3),
            "STORETIMESTAMP after a 20-byte born host"
        );
        assert_eq!(body_len_pos(flag), 108);
        assert_eq!(
            e.len(),
            91 + 24 + m.body.len() + m.topic.len() + m.properties.len()
        );
        let d = decode(&e).expect("decode");
        assert_eq!((d.born_host, d.store_host), (m.born_host, store));
        assert_eq!(d.msg_id().len(), 56);
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let m = sample();
        let host = v4([127, 0, 0, 1], 10911);
        let mut e = encode(&m, host, DEFAULT_MAX_BODY_BYTES).expect("encode");
        patch_for_append(&mut e, 5, 777, 99);
        let d = decode(&e).expect("decode");
        assert_eq!(d.store_size as usize, e.len());
        assert_eq!(
            (d.queue_id, d.flag, d.queue_offset, d.phys_offset),
            (3, 7, 5, 777)
        );
        assert_eq!(
            (d.born_timestamp, d.store_timestamp, d.reconsume_times),
            (m.born_timestamp, 99, 2)
        );
        assert_eq!((d.born_host, d.store_host), (m.born_host, host));
        assert_eq!(d.body, &m.body[..]);
        assert_eq!(d.topic, "TopicTest");
        assert_eq!(d.tags(), Some("TagA"));
        assert_eq!(d.keys().collect::<Vec<_>>(), vec!["k1", "k2"]);
        assert_eq!(d.uniq_key(), Some("AC1100"));
        assert_eq!(d.msg_id(), "7F00000100002A9F0000000000000309");
    }

    #[test]
    fn decode_rejects_damage_without_panicking() {
        let mut e = encode(&sample(), v4([1, 2, 3, 4], 1), DEFAULT_MAX_BODY_BYTES).expect("encode");
        patch_for_append(&mut e, 0, 0, 0);
        for cut in 0..e.len() {
            assert!(decode(&e[..cut]).is_err(), "prefix of {cut} bytes accepted");
        }
        let mut crc = e.clone();
        crc[90] ^= 1; // inside the body
        assert!(matches!(decode(&crc), Err(DecodeError::CrcMismatch { .. })));
        let mut magic = e.clone();
        magic[4] = 0;
        assert!(matches!(decode(&magic), Err(DecodeError::BadMagic(_))));
        let mut size = e.clone();
        size[3] = size[3].wrapping_add(1);
        assert!(decode(&size).is_err());
        let blank = [0, 0, 0, 16, 0xCB, 0xD4, 0x31, 0x94];
        assert_eq!(decode(&blank), Err(DecodeError::Blank));
        assert_eq!(peek_head(&blank), Ok(EntryHead::Blank(16)));
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = XorShift64::new(0xC0FFEE);
        let mut good =
            encode(&sample(), v4([1, 2, 3, 4], 1), DEFAULT_MAX_BODY_BYTES).expect("encode");
        patch_for_append(&mut good, 0, 0, 0);
        for _ in 0..20_000 {
            let mut buf = good.clone();
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let at = rng.below(buf.len() as u64) as usize;
                buf[at] = rng.next_u64() as u8;
            }
            let cut = rng.below(buf.len() as u64 + 1) as usize;
            let _ = decode(&buf[..cut]);
            let mut noise = vec![0u8; rng.below(300) as usize];
            rng.fill(&mut noise);
            let _ = decode(&noise);
        }
    }

    #[test]
    fn limits_give_clear_errors() {
        let host = v4([1, 1, 1, 1], 1);
        let mut m = sample();
        m.topic = "t".repeat(128);
        assert_eq!(
            encode(&m, host, 10),
            Err(EncodeError::TopicTooLong { len: 128 })
        );
        m.topic = "t".repeat(127);
        m.body = Bytes::from(vec![0u8; 11]);
        assert_eq!(
            encode(&m, host, 10),
            Err(EncodeError::BodyTooLarge { len: 11, max: 10 })
        );
        m.body = Bytes::new();
        m.properties = "x".repeat(32_768);
        assert_eq!(
            encode(&m, host, 10),
            Err(EncodeError::PropertiesTooLong { len: 32_768 })
        );
        m.properties = "x".repeat(32_767);
        assert!(encode(&m, host, 10).is_ok());
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b"] {
            m.topic = bad.to_owned();
            assert!(encode(&m, host, 10).is_err(), "{bad:?} accepted");
        }
        let err = EncodeError::TopicTooLong { len: 130 }.to_string();
        assert!(err.contains("127"), "{err}");
    }

    #[test]
    fn tag_hash_is_java_string_hash_code() {
        assert_eq!(tags_code("TagA"), 2_598_919);
        assert_eq!(tags_code(""), 0);
        // "标签" = U+6807 U+7B7E: 0x6807 * 31 + 0x7B7E.
        assert_eq!(tags_code("标签"), 0x6807 * 31 + 0x7B7E);
        // Wraps like Java: "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        assert_eq!(tags_code("polygenelubricants"), i64::from(i32::MIN));
        // Characters outside the BMP count as two UTF-16 units.
        let h = (0xD83Di32 * 31 + 0xDE00) as i64;
        assert_eq!(tags_code("😀"), h);
    }

    #[test]
    fn properties_decode_liberally() {
        let raw = "a\u{1}b\u{2}bad\u{2}c\u{1}d\u{1}e\u{2}\u{1}x\u{2}empty\u{1}\u{2}a\u{1}z\u{2}";
        let pairs = decode_properties(raw);
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "b".into()),
                ("empty".into(), String::new()),
                ("a".into(), "z".into())
            ]
        );
        assert_eq!(property_value(raw, "a"), Some("z"));
        assert_eq!(property_value("", "a"), None);
        let enc = encode_properties([("KEYS", "k"), ("TAGS", "t")]);
        assert_eq!(enc, "KEYS\u{1}k\u{2}TAGS\u{1}t\u{2}");
        assert_eq!(split_keys(" a  b ").collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn offset_message_ids_round_trip() {
        let host = v4([127, 0, 0, 1], 10911);
        let id = offset_msg_id(host, 0);
        assert_eq!(id, "7F00000100002A9F0000000000000000");
        assert_eq!(decode_offset_msg_id(&id), Ok((host, 0)));
        assert_eq!(decode_offset_msg_id(&id.to_lowercase()), Ok((host, 0)));
        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0, 0));
        let id6 = offset_msg_id(v6, i64::MAX);
        assert_eq!(id6.len(), 56);
        assert_eq!(decode_offset_msg_id(&id6), Ok((v6, i64::MAX)));
        for bad in ["", "XYZ", &"G".repeat(32), &"0".repeat(31)] {
            assert!(decode_offset_msg_id(bad).is_err(), "{bad:?}");
        }
    }
}

//! Fuzz entry points: one `check_*` function per decoder that reads untrusted bytes.
//!
//! Each takes arbitrary bytes, must never panic on them, and asserts the invariants that
//! hold for what it decodes (re-encoding a decoded value reads back the same value). The
//! fuzz targets in `fuzz/` (cargo-fuzz, outside the workspace) call them, and
//! `broker/tests/fuzz_corpus.rs` replays the committed corpus through them in the normal
//! test build. A panic here is a bug, in the decoder or in the invariant.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::acl::AclTable;
use crate::broker::groups::SubscriptionGroupConfig;
use crate::broker::minute_stats::{self, MinuteStats};
use crate::broker::timer_store::{self, TimerStore};
use crate::broker::transaction::RecoveryStart;
use crate::broker::{offsets, table};
use crate::names::Namespace;
use crate::remoting::admin::{ConsumeStats, TopicStatsTable};
use crate::remoting::body::TopicConfig;
use crate::remoting::body::{HeartbeatData, LockBatchRequestBody, TopicRouteData};
use crate::remoting::command::RemotingCommand;
use crate::remoting::header::CommandHeader;
use crate::remoting::{
    PullMessageRequestHeader, PullMessageResponseHeader, SendMessageRequestHeader,
    SendMessageResponseHeader, fastjson, frame,
};
use crate::store::checkpoint::{Checkpoint, CheckpointFile};
use crate::store::consumequeue::{CQ_ENTRY_LEN, ConsumeQueue, CqEntry};
use crate::store::index::{self, MessageIndex};
use crate::store::io::{FileSystem, SimFs};
use crate::store::{DecodeError, MessageToStore};
use crate::store::{commitlog, message};

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
    ("consume_queue", check_consume_queue),
    ("index", check_index),
    ("checkpoint", check_checkpoint),
    ("timer_store", check_timer_store),
    ("state_json", check_state_json),
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

// ---------------------------------------------------------------------------------
// The broker's own files, read back at startup (a damaged disk or a bit flip feeds
// them arbitrary bytes). The store's files are placed on a `SimFs`, and the component
// is opened on it, the way the store opens it after a crash.

/// A `SimFs` file with `bytes` as its durable content (its directory entry durable too).
fn place(fs: &SimFs, path: &Path, bytes: &[u8]) {
    let file = fs.open(path, true).expect("SimFs opens");
    file.set_len(0).expect("SimFs truncates");
    file.write_at(bytes, 0).expect("SimFs writes");
    file.sync().expect("SimFs syncs");
    if let Some(dir) = path.parent() {
        fs.create_dir_all(dir).expect("SimFs dirs");
        fs.sync_dir(dir).expect("SimFs syncs dirs");
    }
}

/// Splits `[len u8][bytes]...` into at most `max` pieces (a short last piece is cut).
fn pieces(mut data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        if out.len() == max {
            break;
        }
        let (piece, tail) = rest.split_at(usize::from(len).min(rest.len()));
        out.push(piece);
        data = tail;
    }
    out
}

/// A consume queue's files (`[layout][cut]` then per file `[step][len u8][bytes]`, up
/// to 4 files) opened and recovered as after a crash. Layout bits 0-1 pick the entries
/// per file (4, 5, 8, 12); a file's step says how many file ranges on it starts (bit 6:
/// 2^36 ranges on, a damaged digit in its name; bit 7: not on a file boundary). `cut` is
/// the durable commit-log end recovery cuts the queue back to.
///
/// Asserts: opening refuses with an error or yields min ≤ max, and every entry in a file
/// reads back as its 20 bytes (re-encoding to them); `truncate_before_phys` keeps a
/// prefix ending in a valid entry below the cut (or nothing), which a reopen finds
/// again; the recovered queue takes a new entry that survives a reopen; a time search
/// and the retention moves stay within [min, max].
pub fn check_consume_queue(data: &[u8]) {
    let [layout, cut, rest @ ..] = data else {
        return;
    };
    let segment_entries = [4u64, 5, 8, 12][usize::from(layout & 3)];
    let segment_bytes = segment_entries * CQ_ENTRY_LEN as u64;
    let cut = if *cut == 0xFF {
        u64::MAX
    } else {
        u64::from(*cut) * 50
    };
    let fs = SimFs::new();
    let root = Path::new("/s/consumequeue");
    let dir = root.join("T").join("0");
    let mut files: Vec<(u64, &[u8])> = Vec::new();
    let mut rest = rest;
    let mut range = 0u64;
    while let [step, body @ ..] = rest {
        let Some(&content) = pieces(body, 1).first() else {
            break;
        };
        rest = &body[1 + content.len()..];
        let gap = u64::from(step & 0x3F) + u64::from(!files.is_empty());
        let far = if step & 0x40 != 0 { 1 << 36 } else { 0 };
        let Some(next) = range.checked_add(gap).and_then(|r| r.checked_add(far)) else {
            break;
        };
        range = next;
        let Some(start) = range
            .checked_mul(segment_bytes)
            .and_then(|s| s.checked_add(u64::from(step >> 7)))
        else {
            break;
        };
        place(&fs, &dir.join(commitlog::file_name(start)), content);
        files.push((start, content));
        if files.len() == 4 {
            break;
        }
    }
    let open = || ConsumeQueue::open(Arc::new(fs.clone()), root, "T", 0, segment_entries);
    let Ok(cq) = open() else {
        return;
    };
    let (min, max) = (cq.min_offset(), cq.max_offset());
    assert!(min <= max, "min {min} ≤ max {max}");
    for (start, content) in &files {
        let first = start / CQ_ENTRY_LEN as u64;
        for (i, raw) in content.chunks_exact(CQ_ENTRY_LEN).enumerate() {
            let index = first + i as u64;
            if i as u64 >= segment_entries || index >= max {
                break;
            }
            let entry = cq.entry(index).expect("SimFs reads").expect("below max");
            assert_eq!(&entry.to_bytes()[..], raw, "entry {index} is its bytes");
        }
    }
    // Reads across gaps come back zeroed, never past what was asked.
    for from in [min, max.saturating_sub(8)] {
        let got = cq.read(from, 16).expect("SimFs reads");
        assert_eq!(got.len() as u64, 16.min(max - from));
    }
    let found = cq
        .search_by_time(cut as i64, |e| Ok(Some(e.phys_offset)))
        .expect("SimFs reads");
    assert!((min..=max).contains(&found));

    cq.truncate_before_phys(cut).expect("recovery cuts");
    let keep = cq.max_offset();
    assert!((min..=max).contains(&keep), "{min} ≤ {keep} ≤ {max}");
    assert_eq!(cq.min_offset(), min);
    let last = (keep > min).then(|| cq.entry(keep - 1).expect("reads").expect("kept"));
    if let Some(last) = last {
        assert!(
            last.is_valid() && last.phys() < cut,
            "kept up to a good entry"
        );
    }
    drop(cq);
    let cq = open().expect("a recovered queue reopens");
    assert_eq!((cq.min_offset(), cq.max_offset()), (min, keep));
    assert_eq!(
        (keep > min).then(|| cq.entry(keep - 1).expect("reads").expect("kept")),
        last
    );
    let next = CqEntry {
        phys_offset: i64::try_from(cut.min(1 << 40)).unwrap_or(0),
        size: 64,
        tags_code: 7,
    };
    assert_eq!(cq.append(next).expect("appends"), keep);
    cq.flush().expect("flushes");
    drop(cq);
    let cq = open().expect("reopens");
    assert_eq!(cq.max_offset(), keep + 1);
    assert_eq!(cq.entry(keep).expect("reads"), Some(next));
    cq.delete_expired(cut.min(1 << 40)).expect("retention");
    assert!(cq.min_offset() <= cq.max_offset());
    cq.correct_min_offset(0).expect("retention");
    assert!(cq.min_offset() <= cq.max_offset());
}

/// Key-index run files (`[layout][trunc]` then up to 4 files as `[len u8][bytes]`),
/// opened as at startup. Layout bits 0-1 pick the entries per run (1, 2, 4, 8); bit 2
/// puts both CRCs of each header right (a fuzzer cannot compute them). A file is named
/// by its header's begin when its magic is right, else by its position.
///
/// Asserts: opening never fails on a damaged file; a lookup returns at most what was
/// asked, and only offsets some file records under that hash (never an invented or
/// over-read one: the store then verifies each against the log); recovery's truncate
/// resumes at or before its end, and the index indexes and finds a new message after
/// it, also after a reopen.
pub fn check_index(data: &[u8]) {
    let [layout, trunc, rest @ ..] = data else {
        return;
    };
    let run_entries = 1 << (layout & 3);
    let trunc = if *trunc == 0xFF {
        u64::MAX
    } else {
        u64::from(*trunc) * 100
    };
    let fs = SimFs::new();
    let dir = Path::new("/s/index");
    let mut recorded: Vec<(u64, u64)> = Vec::new();
    for (i, piece) in pieces(rest, 4).into_iter().enumerate() {
        let mut file = piece.to_vec();
        if layout & 4 != 0 && file.len() >= 40 {
            let entries = crc32fast::hash(&file[40..]);
            file[32..36].copy_from_slice(&entries.to_be_bytes());
            let header = crc32fast::hash(&file[..36]);
            file[36..40].copy_from_slice(&header.to_be_bytes());
        }
        let begin = match file.get(..16) {
            Some(head) if head[..4] == *b"MQIX" => {
                u64::from_be_bytes(head[8..16].try_into().expect("8 bytes"))
            }
            _ => i as u64 * 1000,
        };
        place(&fs, &dir.join(commitlog::file_name(begin)), &file);
        for entry in file.get(40..).unwrap_or_default().chunks_exact(16) {
            let (hash, phys) = entry.split_at(8);
            recorded.push((
                u64::from_be_bytes(hash.try_into().expect("8 bytes")),
                u64::from_be_bytes(phys.try_into().expect("8 bytes")),
            ));
        }
    }
    let open = || MessageIndex::open(Arc::new(fs.clone()), dir, run_entries, 0);
    let index = open().expect("a damaged index opens (damaged runs are dropped)");
    let new_hash = index::key_hash("T", "fuzz-new-key");
    let mut hashes: Vec<u64> = recorded.iter().map(|(h, _)| *h).take(8).collect();
    hashes.push(new_hash);
    let lookups_are_recorded = |index: &MessageIndex, extra: Option<(u64, u64)>| {
        for &hash in &hashes {
            for max in [1, 64] {
                let hits = index.lookup(hash, max).expect("SimFs reads");
                assert!(hits.len() <= max);
                for phys in hits {
                    assert!(
                        recorded.contains(&(hash, phys)) || extra == Some((hash, phys)),
                        "hit {phys} under {hash:#x} is in no file"
                    );
                }
            }
        }
    };
    lookups_are_recorded(&index, None);
    let resume = index.truncate(trunc).expect("recovery truncates");
    assert!(resume <= trunc, "resumes at {resume}, before {trunc}");
    lookups_are_recorded(&index, None);
    let Some(end) = resume.checked_add(100) else {
        return;
    };
    index.add(resume, end, [new_hash]);
    assert_eq!(index.lookup(new_hash, 1).expect("reads"), [resume]);
    index.seal(true).expect("seals");
    assert_eq!(index.sealed_end(), Some(end));
    drop(index);
    let index = open().expect("reopens");
    assert_eq!(index.sealed_end(), Some(end));
    assert_eq!(index.lookup(new_hash, 1).expect("reads"), [resume]);
    lookups_are_recorded(&index, Some((new_hash, resume)));
}

/// The checkpoint file (`[fix]` then the file's bytes), opened as at startup; bit 0 of
/// `fix` puts each slot's CRC right (a fuzzer cannot compute it).
///
/// Asserts: opening never fails; a checkpoint read is byte for byte one of the slots
/// (it re-encodes to it); the next two checkpoints written win over whatever the file
/// held.
pub fn check_checkpoint(data: &[u8]) {
    let Some((&fix, file)) = data.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if fix & 1 != 0 {
        for slot in file.chunks_mut(128).filter(|s| s.len() >= 68) {
            let crc = crc32fast::hash(&slot[..64]);
            slot[64..68].copy_from_slice(&crc.to_be_bytes());
        }
    }
    let fs = SimFs::new();
    let path = Path::new("/s/checkpoint");
    place(&fs, path, &file);
    let (mut cpf, got) = CheckpointFile::open(&fs, path).expect("a damaged checkpoint opens");
    if let Some(cp) = got {
        let is_a_slot = file.chunks(128).any(|slot| {
            let seq = slot
                .get(8..16)
                .map(|s| u64::from_be_bytes(s.try_into().expect("8")));
            seq.is_some_and(|seq| slot.starts_with(&cp.encode(seq)))
        });
        assert!(is_a_slot, "{cp:?} is one of the slots");
    }
    for n in 1..=2u64 {
        let next = Checkpoint {
            phys_flushed: n,
            cq_offset: n,
            index_offset: n,
            phys_timestamp: -1,
            cq_timestamp: 0,
            index_timestamp: 1,
        };
        cpf.write(&next).expect("SimFs writes");
        let (again, got) = CheckpointFile::open(&fs, path).expect("reopens");
        assert_eq!(got, Some(next), "the checkpoint just written wins");
        cpf = again;
    }
}

/// A timer-store slot file (`[sel]` then its bytes; `sel` bit 0 puts the records' CRCs
/// right, walking them as the reader does; bit 1 adds a `progress` file from the first
/// 8 bytes; bits 2-3 pick the slot's name; bit 4 opens the store even when the scan kept
/// no record) and the `progress` file's decoder.
///
/// Asserts: the scan keeps a prefix of whole records, each of which decodes and
/// re-encodes to a record that decodes the same; the progress file round-trips; the
/// store opened on these files (in a temporary directory) delivers exactly the kept
/// records due after the progress, in time order, then holds nothing.
pub fn check_timer_store(data: &[u8]) {
    let Some((&sel, file)) = data.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if sel & 1 != 0 {
        let mut at = 0;
        while let Some(head) = file.get(at..at + 16) {
            let len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
            let Some(end) = at
                .checked_add(len)
                .filter(|&e| len >= 16 && e <= file.len())
            else {
                break;
            };
            let crc = crc32fast::hash(&file[at + 8..end]);
            file[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            at = end;
        }
    }
    let (records, valid) = timer_store::scan_slot_bytes(&file);
    assert!(valid <= file.len() as u64);
    let mut at = 0;
    let mut kept = Vec::new();
    for (deliver_ms, record) in &records {
        let start = record.as_ptr() as usize - file.as_ptr() as usize;
        assert!(start >= at, "records in file order");
        at = start + record.len();
        let (ms, msg) = timer_store::decode_record(record).expect("a kept record decodes");
        assert_eq!(ms, *deliver_ms);
        let again = timer_store::encode_record(ms, &msg);
        assert_eq!(
            timer_store::decode_record(&again),
            Some((ms, msg.clone())),
            "a kept record re-encodes"
        );
        kept.push((ms, msg));
    }
    assert!(at as u64 <= valid);
    let progress = timer_store::parse_progress(&file);
    if progress != i64::MIN {
        assert_eq!(timer_store::encode_progress(progress), file);
    }
    let progress = if sel & 2 != 0 {
        let value = file
            .get(..8)
            .map_or(0, |b| i64::from_le_bytes(b.try_into().expect("8")));
        Some(value)
    } else {
        None
    };
    let slot = [0, 10_000, i64::MAX, i64::MIN][usize::from((sel >> 2) & 3)];
    // The store on a real directory costs a dozen file operations: only for inputs with
    // a record to deliver, or when bit 4 asks (an empty or all-damaged slot file).
    if !kept.is_empty() || sel & 0x10 != 0 {
        timer_store_delivers(&file, slot, progress, kept);
    }
}

/// Opens a timer store on one slot file (and maybe a progress file) in a temporary
/// directory and drains it.
fn timer_store_delivers(
    file: &[u8],
    slot: i64,
    progress: Option<i64>,
    kept: Vec<(i64, MessageToStore)>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUN: AtomicU64 = AtomicU64::new(0);
    // tmpfs when there is one: this runs thousands of times a second under the fuzzer.
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!(
        "mq-fuzz-timer-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join(format!("slot-{slot}")), file).expect("temp file");
    if let Some(p) = progress {
        std::fs::write(dir.join("progress"), timer_store::encode_progress(p)).expect("temp file");
    }
    let from = progress.unwrap_or(i64::MIN);
    let mut expected: Vec<(i64, MessageToStore)> =
        kept.into_iter().filter(|(ms, _)| *ms > from).collect();
    expected.sort_by_key(|(ms, _)| *ms);
    let outcome = std::panic::catch_unwind(|| {
        let store = TimerStore::open(&dir, timer_store::SLOT, false).expect("opens");
        assert_eq!(store.pending(), expected.len() as u64);
        let mut delivered = Vec::new();
        for _ in 0..=expected.len() {
            let batch = store
                .take_due(i64::MAX, 3)
                .expect("a kept record is read back");
            if batch.messages.is_empty() {
                break;
            }
            store.commit(&batch, batch.messages.len()).expect("commits");
            delivered.extend(batch.messages);
        }
        let times: Vec<i64> = delivered.iter().map(|(ms, _)| *ms).collect();
        let want: Vec<i64> = expected.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(
            times, want,
            "every kept record due after the progress, in order"
        );
        assert_eq!(store.pending(), 0);
        assert_eq!(store.slot_count(), 0, "a delivered slot is deleted");
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The broker's JSON state files (`[kind]` then the file): topics and subscription
/// groups (`ConfigTable`), consumer offsets, the transaction recovery start, the minute
/// stats.
///
/// Asserts: what parses, written back as the broker writes it, parses to what writes
/// the same bytes again (the state a restart reads is the state it saves); minute stats
/// restored and saved reach a fixed point after one round.
pub fn check_state_json(data: &[u8]) {
    let Some((&kind, file)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => json_round_trips::<table::Stored<TopicConfig>>(file),
        1 => json_round_trips::<table::Stored<SubscriptionGroupConfig>>(file),
        2 => json_round_trips::<offsets::Stored>(file),
        3 => json_round_trips::<RecoveryStart>(file),
        _ => {
            let stats = MinuteStats::new(minute_stats::DEFAULT_BUCKET_MS, 64, None);
            if stats.restore_json(file).is_err() {
                return;
            }
            let once = stats.saved_json();
            let again = MinuteStats::new(minute_stats::DEFAULT_BUCKET_MS, 64, None);
            again.restore_json(&once).expect("saved stats re-read");
            assert_eq!(
                String::from_utf8_lossy(&again.saved_json()),
                String::from_utf8_lossy(&once),
                "restored stats save the same"
            );
        }
    }
}

fn json_round_trips<T: serde::Serialize + serde::de::DeserializeOwned>(file: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(file) else {
        return;
    };
    let written = serde_json::to_vec_pretty(&value).expect("state serializes");
    let again: T = serde_json::from_slice(&written).expect("written state re-reads");
    assert_eq!(
        String::from_utf8_lossy(&serde_json::to_vec_pretty(&again).expect("serializes")),
        String::from_utf8_lossy(&written),
        "state file round-trips"
    );
}

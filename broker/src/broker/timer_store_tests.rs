use super::*;

const S: i64 = 10_000;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mq-timer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn msg(body: &str) -> MessageToStore {
    MessageToStore {
        topic: "T".to_owned(),
        queue_id: 3,
        flag: 1,
        sys_flag: 0,
        body: Bytes::copy_from_slice(body.as_bytes()),
        properties: "UNIQ_KEY\u{1}K1\u{2}TAGS\u{1}a\u{2}".to_owned(),
        born_timestamp: 42,
        born_host: "10.0.0.1:5000".parse().unwrap(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
    }
}

fn open(dir: &Dir) -> TimerStore {
    TimerStore::open(&dir.0, Duration::from_millis(S as u64), false).expect("opens")
}

/// Takes and commits everything due at `now`; returns the bodies in delivery order.
fn drain(store: &TimerStore, now: i64) -> Vec<String> {
    let mut out = vec![];
    loop {
        let batch = store.take_due(now, 3).expect("take");
        if batch.messages.is_empty() {
            return out;
        }
        for (_, m) in &batch.messages {
            out.push(String::from_utf8_lossy(&m.body).into_owned());
        }
        store.commit(&batch, batch.messages.len()).expect("commit");
    }
}

#[test]
fn messages_come_due_in_time_order_never_early() {
    let dir = Dir::new("order");
    let store = open(&dir);
    let now = 1_000_000;
    for (at, body) in [
        (25_500, "c"),
        (5, "a"),
        (25_100, "b"),
        (3 * S, "d"),
        (6, "a2"),
    ] {
        assert!(store.add(now + at, now, &msg(body)).unwrap());
    }
    assert!(
        !store.add(now, now, &msg("now")).unwrap(),
        "due now: not kept"
    );
    assert_eq!(store.pending(), 5);
    assert!(drain(&store, now + 4).is_empty(), "nothing due yet");
    assert_eq!(drain(&store, now + 6), ["a", "a2"]);
    assert_eq!(drain(&store, now + 25_499), ["b"]);
    let batch = store.take_due(now + 26_000, 10).unwrap();
    let (at, m) = &batch.messages[0];
    assert_eq!(*at, now + 25_500);
    assert_eq!(m.topic, "T");
    assert_eq!(m.queue_id, 3);
    assert_eq!(m.properties, msg("c").properties);
    assert_eq!(m.born_host, msg("c").born_host);
    store.commit(&batch, 1).unwrap();
    assert_eq!(drain(&store, now + 3 * S), ["d"]);
    assert_eq!(store.pending(), 0);
    assert_eq!(store.delivered(), 5);
}

#[test]
fn a_message_added_to_the_slot_being_delivered_is_delivered_in_order() {
    let dir = Dir::new("late-add");
    let store = open(&dir);
    let base = 50 * S;
    store.add(base + 100, base, &msg("x")).unwrap();
    store.add(base + 900, base, &msg("z")).unwrap();
    assert_eq!(drain(&store, base + 200), ["x"]);
    store.add(base + 500, base + 300, &msg("y")).unwrap();
    // Due before the last delivery pass (a slow sender's clock): stored at once instead.
    assert!(!store.add(base + 150, base + 100, &msg("w")).unwrap());
    assert_eq!(drain(&store, base + 1_000), ["y", "z"]);
}

#[test]
fn pending_messages_survive_a_restart_and_delivered_ones_do_not_come_again() {
    let dir = Dir::new("restart");
    let now = 7 * S;
    {
        let store = open(&dir);
        for i in 0..10 {
            store
                .add(now + 100 * (i + 1), now, &msg(&i.to_string()))
                .unwrap();
        }
        assert_eq!(drain(&store, now + 400), ["0", "1", "2", "3"]);
    }
    let store = open(&dir);
    assert_eq!(store.pending(), 6);
    assert_eq!(drain(&store, now + 2 * S), ["4", "5", "6", "7", "8", "9"]);
    let again = open(&dir);
    assert_eq!(again.pending(), 0);
    assert_eq!(again.slot_count(), 0, "delivered slots are deleted");
}

#[test]
fn a_torn_tail_is_truncated_and_what_came_before_is_kept() {
    let dir = Dir::new("torn");
    let now = 3 * S;
    {
        let store = open(&dir);
        store.add(now + 10, now, &msg("kept")).unwrap();
        store.add(now + 20, now, &msg("torn")).unwrap();
    }
    let path = dir.0.join(format!("slot-{}", 3 * S));
    let len = fs::metadata(&path).unwrap().len();
    for cut in [len - 1, len - 30, len - 60] {
        let copy = fs::read(&path).unwrap();
        fs::write(&path, &copy[..cut as usize]).unwrap();
        let store = open(&dir);
        assert_eq!(store.pending(), 1, "cut at {cut}");
        // Later appends land after the valid prefix and are readable.
        store.add(now + 30, now, &msg("after")).unwrap();
        assert_eq!(store.pending(), 2);
        drop(store);
        // Restore the torn shape for the next cut.
        fs::write(&path, &copy).unwrap();
    }
    // Garbage in the middle of the last record (a bad CRC) is cut too.
    let mut bytes = fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let store = open(&dir);
    assert_eq!(drain(&store, now + S), ["kept"]);
}

#[test]
fn an_intact_record_that_does_not_decode_is_skipped_not_retried_forever() {
    // A record whose CRC is right but whose message does not decode (a born host that
    // is not an address): delivery used to fail on it at every pass, holding back every
    // later message; it is skipped when the store opens.
    let dir = Dir::new("undecodable");
    let now = 3 * S;
    let mut bad = encode_record(now + 20, &msg("bad"));
    let host = bad
        .windows(13)
        .position(|w| w == b"10.0.0.1:5000")
        .expect("host in the record");
    bad[host..host + 13].copy_from_slice(b"10.0.0.1:x000");
    let crc = crc32fast::hash(&bad[8..]);
    bad[4..8].copy_from_slice(&crc.to_le_bytes());
    let mut file = encode_record(now + 10, &msg("first"));
    file.extend_from_slice(&bad);
    file.extend_from_slice(&encode_record(now + 30, &msg("last")));
    fs::create_dir_all(&dir.0).unwrap();
    fs::write(dir.0.join(format!("slot-{now}")), &file).unwrap();
    let store = open(&dir);
    assert_eq!(store.pending(), 2);
    assert_eq!(drain(&store, now + S), ["first", "last"]);
    assert_eq!(store.pending(), 0);
}

#[test]
fn a_record_longer_than_the_file_is_a_torn_tail() {
    let (records, valid) = scan_slot_bytes(&[0xFF, 0xFF, 0xFF, 0x03, 0, 0, 0, 0]);
    assert_eq!((records.len(), valid), (0, 0));
    let mut file = encode_record(7, &msg("one"));
    let one = file.len() as u64;
    // A header claiming 64 MiB, of which the file holds none.
    file.extend_from_slice(&(64u32 << 20).to_le_bytes());
    file.extend_from_slice(&[0; 12]);
    let (records, valid) = scan_slot_bytes(&file);
    assert_eq!((records.len(), valid), (1, one));
    assert_eq!(decode_record(records[0].1), Some((7, msg("one"))));
}

#[test]
fn pending_messages_stay_on_disk_until_their_slot_comes_due() {
    let dir = Dir::new("memory");
    let store = open(&dir);
    let now = 100 * S;
    let body = "m".repeat(100);
    for i in 0..20_000i64 {
        // Over 20 slots, added in no particular order.
        let at = now + 1 + (i * 7919 % 20) * S + i % 1000;
        store.add(at, now, &msg(&body)).unwrap();
    }
    assert_eq!(store.pending(), 20_000);
    assert_eq!(
        store.memory_entries(),
        0,
        "nothing indexed in memory before due"
    );
    let batch = store.take_due(now + 5, 1).unwrap();
    assert_eq!(batch.messages.len(), 1);
    assert!(
        store.memory_entries() <= 1_000,
        "only the due slot is indexed: {}",
        store.memory_entries()
    );
    store.commit(&batch, 1).unwrap();
    let mut last = 0;
    let mut count = 1;
    loop {
        let batch = store.take_due(now + 21 * S, 500).unwrap();
        if batch.messages.is_empty() {
            break;
        }
        for (at, _) in &batch.messages {
            assert!(*at >= last, "delivery order");
            last = *at;
        }
        count += batch.messages.len();
        assert!(store.memory_entries() <= 1_000);
        store.commit(&batch, batch.messages.len()).unwrap();
    }
    assert_eq!(count, 20_000);
    assert_eq!(store.pending(), 0);
}

#[test]
fn concurrent_adds_and_deliveries_lose_nothing_and_deliver_once() {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let dir = Dir::new("concurrent");
    let store = Arc::new(TimerStore::open(&dir.0, Duration::from_millis(50), false).unwrap());
    let now = || crate::broker::table::now_millis();
    let done = Arc::new(AtomicBool::new(false));
    let deliverer = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = vec![];
            loop {
                let finished = done.load(Ordering::Acquire);
                let batch = store.take_due(now(), 64).unwrap();
                for (at, m) in &batch.messages {
                    assert!(*at <= now(), "never early");
                    seen.push(String::from_utf8_lossy(&m.body).into_owned());
                }
                store.commit(&batch, batch.messages.len()).unwrap();
                if finished && store.pending() == 0 {
                    return seen;
                }
                std::thread::yield_now();
            }
        })
    };
    let adders: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut direct = vec![];
                for i in 0..2_000i64 {
                    let body = format!("{t}-{i}");
                    let start = now();
                    if !store
                        .add(start + 1 + (i * 37) % 150, now(), &msg(&body))
                        .unwrap()
                    {
                        direct.push(body);
                    }
                }
                direct
            })
        })
        .collect();
    let direct: Vec<String> = adders.into_iter().flat_map(|a| a.join().unwrap()).collect();
    done.store(true, Ordering::Release);
    let seen = deliverer.join().unwrap();
    let unique: HashSet<&String> = seen.iter().chain(&direct).collect();
    assert_eq!(unique.len(), 8_000, "nothing lost");
    assert_eq!(seen.len() + direct.len(), 8_000, "nothing delivered twice");
}

#[test]
fn synchronous_adds_from_many_threads_are_all_kept() {
    let dir = Dir::new("sync");
    let now = 500 * S;
    {
        let store = std::sync::Arc::new(
            TimerStore::open(&dir.0, Duration::from_millis(S as u64), true).unwrap(),
        );
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..50i64 {
                        let at = now + 1 + (t * 50 + i) * 100;
                        assert!(store.add(at, now, &msg(&format!("{t}-{i}"))).unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.pending(), 400);
    }
    let store = open(&dir);
    assert_eq!(store.pending(), 400);
    assert_eq!(drain(&store, now + 100 * S).len(), 400);
}

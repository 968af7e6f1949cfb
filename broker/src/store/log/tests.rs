//! Tests of the queue log: round trips, acks, recovery from every kind of damage, and a
//! property test against a model.

use std::fs::{self, OpenOptions};

use proptest::prelude::*;

use super::*;

/// An owned record for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    exchange: Vec<u8>,
    routing_key: Vec<u8>,
    properties: Vec<u8>,
    body: Vec<u8>,
    expires_at_ms: Option<u64>,
    persistent: bool,
}

impl Msg {
    fn new(i: usize, body_len: usize) -> Self {
        Self {
            exchange: format!("ex{i}").into_bytes(),
            routing_key: vec![b'k'; i % 256],
            properties: vec![0x10, i as u8],
            body: (0..body_len).map(|j| (i + j) as u8).collect(),
            expires_at_ms: i.is_multiple_of(3).then_some(1_700_000_000_000 + i as u64),
            persistent: true,
        }
    }

    fn record(&self) -> Record<'_> {
        Record {
            exchange: &self.exchange,
            routing_key: &self.routing_key,
            properties: &self.properties,
            body: &self.body,
            expires_at_ms: self.expires_at_ms,
            persistent: self.persistent,
        }
    }

    fn assert_is(&self, m: &StoredMessage) {
        assert_eq!(&m.exchange[..], &self.exchange[..]);
        assert_eq!(&m.routing_key[..], &self.routing_key[..]);
        assert_eq!(&m.properties[..], &self.properties[..]);
        assert_eq!(&m.body[..], &self.body[..]);
        assert_eq!(m.expires_at_ms, self.expires_at_ms);
        assert_eq!(m.persistent, self.persistent);
    }
}

fn open(dir: &Path, size: u32) -> (QueueLog, Vec<StoredMessage>) {
    QueueLog::open(dir, size).expect("open")
}

fn flush(log: &mut QueueLog) {
    let p = log.take_pending();
    p.write(&log.dir, true).expect("write");
    assert!(!log.is_dirty());
}

fn seg_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Appends `msgs` to a fresh log in `dir` (one segment) and writes them.
fn write_all(dir: &Path, msgs: &[Msg]) -> Vec<Location> {
    let (mut log, got) = open(dir, 1 << 20);
    assert!(got.is_empty());
    let locs = msgs.iter().map(|m| log.append(&m.record())).collect();
    flush(&mut log);
    locs
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 4096;
    let sizes = [0, 1, 100, 1000, 3000, 10_000, 5, 4000, 0, 70];
    let msgs: Vec<Msg> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Msg::new(i, n))
        .collect();
    let (mut log, got) = open(dir.path(), size);
    assert!(got.is_empty());
    let locs: Vec<Location> = msgs.iter().map(|m| log.append(&m.record())).collect();
    assert!(
        locs.windows(2).all(|w| w[0] < w[1]),
        "locations grow: {locs:?}"
    );
    assert_eq!(log.live(), msgs.len() as u64);
    log.delivered(locs[2]);
    log.delivered(locs[5]);
    let pending = log.take_pending();
    assert!(!pending.is_empty());
    let disk = log.disk_bytes();
    pending.write(dir.path(), true).expect("write");
    let on_disk: u64 = fs::read_dir(dir.path())
        .expect("read_dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    assert_eq!(on_disk, disk);
    // The 10 000-byte body has a segment of its own.
    let big = locs[5];
    assert_eq!(big.offset, HEADER_LEN);
    assert_eq!(locs[6].segment, big.segment + 1);
    drop(log);

    let (log, got) = open(dir.path(), size);
    assert_eq!(got.len(), msgs.len());
    for ((m, g), loc) in msgs.iter().zip(&got).zip(&locs) {
        m.assert_is(g);
        assert_eq!(g.location, *loc);
        assert_eq!(g.delivered, *loc == locs[2] || *loc == locs[5]);
    }
    assert_eq!(log.live(), msgs.len() as u64);
    assert_eq!(log.disk_bytes(), disk);
    assert!(!log.is_dirty());
}

#[test]
fn appends_after_open_go_to_a_new_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msgs: Vec<Msg> = (0..4).map(|i| Msg::new(i, 10)).collect();
    let locs = write_all(dir.path(), &msgs[..2]);
    let (mut log, got) = open(dir.path(), 1 << 20);
    assert_eq!(got.len(), 2);
    let l2 = log.append(&msgs[2].record());
    let l3 = log.append(&msgs[3].record());
    assert_eq!(l2.segment, locs[0].segment + 1);
    log.ack(locs[0]);
    log.ack(l2);
    flush(&mut log);
    let (_, got) = open(dir.path(), 1 << 20);
    let got_locs: Vec<Location> = got.iter().map(|m| m.location).collect();
    assert_eq!(got_locs, vec![locs[1], l3]);
    msgs[1].assert_is(&got[0]);
    msgs[3].assert_is(&got[1]);
}

#[test]
fn acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msgs: Vec<Msg> = (0..6).map(|i| Msg::new(i, 40)).collect();
    // Small segments: two records each.
    let size = 200;
    let (mut log, _) = open(dir.path(), size);
    let locs: Vec<Location> = msgs.iter().map(|m| log.append(&m.record())).collect();
    assert_eq!(locs[1].segment, locs[0].segment);
    assert_eq!(locs[2].segment, locs[0].segment + 1);
    flush(&mut log);
    assert_eq!(seg_files(dir.path()).len(), 3);
    log.ack(Location {
        segment: 99,
        offset: 8,
    });
    log.ack(Location {
        segment: locs[0].segment,
        offset: 9,
    });
    assert!(!log.is_dirty(), "unknown locations are ignored");
    log.ack(locs[0]);
    log.ack(locs[0]);
    log.ack(locs[1]);
    log.ack(locs[3]);
    // The current segment is not deleted even when all of it is acked.
    log.ack(locs[4]);
    log.ack(locs[5]);
    assert_eq!(log.live(), 1);
    let before = log.disk_bytes();
    flush(&mut log);
    assert_eq!(
        seg_files(dir.path()),
        vec![
            "0000000002.ack",
            "0000000002.seg",
            "0000000003.ack",
            "0000000003.seg"
        ]
    );
    assert_eq!(log.disk_bytes(), before);
    drop(log);

    let (mut log, got) = open(dir.path(), size);
    assert_eq!(got.len(), 1);
    msgs[2].assert_is(&got[0]);
    // Segment 3 was fully acked: gone on open.
    assert_eq!(
        seg_files(dir.path()),
        vec!["0000000002.ack", "0000000002.seg"]
    );
    assert_eq!(log.live(), 1);
    log.ack(locs[2]);
    assert_eq!(log.live(), 0);
    flush(&mut log);
    assert!(seg_files(dir.path()).is_empty());
    assert_eq!(log.disk_bytes(), 0);
}

#[test]
fn fully_acked_segment_is_deleted_without_being_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), 200);
    let msgs: Vec<Msg> = (0..3).map(|i| Msg::new(i, 40)).collect();
    let locs: Vec<Location> = msgs.iter().map(|m| log.append(&m.record())).collect();
    log.ack(locs[0]);
    log.ack(locs[1]);
    let p = log.take_pending();
    assert_eq!(p.deletes, vec![locs[0].segment]);
    assert!(p.chunks.iter().all(|c| c.segment != locs[0].segment));
    p.write(dir.path(), true).expect("write");
    assert_eq!(seg_files(dir.path()), vec!["0000000002.seg"]);
}

#[test]
fn transient_records_are_not_recovered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut msgs: Vec<Msg> = (0..5).map(|i| Msg::new(i, 30)).collect();
    for m in msgs.iter_mut().step_by(2) {
        m.persistent = false;
    }
    let (mut log, _) = open(dir.path(), 1 << 20);
    let locs: Vec<Location> = msgs.iter().map(|m| log.append(&m.record())).collect();
    log.delivered(locs[0]);
    log.ack(locs[2]);
    assert_eq!(log.live(), 4);
    flush(&mut log);
    // Transient records still page back in while the log is open.
    let back = log.read_from(locs[0], 10).expect("read_from");
    assert_eq!(back.len(), 4);
    assert!(back[0].delivered && !back[0].persistent);
    assert!(!dir.path().join("0000000001.ack").exists());
    drop(log);
    let (log, got) = open(dir.path(), 1 << 20);
    assert_eq!(got.len(), 2);
    msgs[1].assert_is(&got[0]);
    msgs[3].assert_is(&got[1]);
    assert_eq!(log.live(), 2);
}

#[test]
fn all_transient_segment_is_deleted_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut m = Msg::new(1, 10);
    m.persistent = false;
    write_all(dir.path(), &[m]);
    let (_, got) = open(dir.path(), 1 << 20);
    assert!(got.is_empty());
    assert!(seg_files(dir.path()).is_empty());
}

#[test]
fn read_from_pages_in_live_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msgs: Vec<Msg> = (0..8).map(|i| Msg::new(i, 50)).collect();
    let (mut log, _) = open(dir.path(), 300);
    let locs: Vec<Location> = msgs.iter().map(|m| log.append(&m.record())).collect();
    assert!(log.read_from(locs[0], 10).expect("unwritten").is_empty());
    flush(&mut log);
    log.ack(locs[2]);
    log.ack(locs[3]);
    log.delivered(locs[4]);
    let got = log.read_from(locs[1], 3).expect("read_from");
    assert_eq!(got.len(), 3);
    for (g, i) in got.iter().zip([1, 4, 5]) {
        msgs[i].assert_is(g);
        assert_eq!(g.location, locs[i]);
    }
    assert!(got[1].delivered);
    // From a position between records, and up to the end.
    let mid = Location {
        segment: locs[5].segment,
        offset: locs[5].offset + 1,
    };
    let got = log.read_from(mid, 100).expect("read_from");
    let got_locs: Vec<Location> = got.iter().map(|m| m.location).collect();
    assert_eq!(got_locs, locs[6..]);
    // Appended but not yet written: stops there.
    let extra = Msg::new(9, 5);
    log.append(&extra.record());
    assert_eq!(log.read_from(locs[6], 100).expect("read_from").len(), 2);
    assert!(log.read_from(locs[0], 0).expect("max 0").is_empty());
}

#[test]
fn torn_tail_is_cut_at_every_offset() {
    let src = tempfile::tempdir().expect("tempdir");
    let msgs: Vec<Msg> = (0..5).map(|i| Msg::new(i, 20 + i)).collect();
    let locs = write_all(src.path(), &msgs);
    let seg = fs::read(src.path().join("0000000001.seg")).expect("read");
    let last = locs[4].offset as usize;
    for cut in last..seg.len() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0000000001.seg");
        fs::write(&path, &seg[..cut]).expect("write");
        let (mut log, got) = open(dir.path(), 1 << 20);
        assert_eq!(got.len(), 4, "cut at {cut}");
        for (m, g) in msgs.iter().zip(&got) {
            m.assert_is(g);
        }
        assert_eq!(fs::metadata(&path).expect("metadata").len(), last as u64);
        let loc = log.append(&msgs[4].record());
        assert_eq!(loc.segment, 2);
        flush(&mut log);
        drop(log);
        let (_, got) = open(dir.path(), 1 << 20);
        assert_eq!(got.len(), 5);
        msgs[4].assert_is(&got[4]);
        assert_eq!(fs::metadata(&path).expect("metadata").len(), last as u64);
    }
}

#[test]
fn zeroed_tail_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msgs: Vec<Msg> = (0..3).map(|i| Msg::new(i, 20)).collect();
    write_all(dir.path(), &msgs);
    let path = dir.path().join("0000000001.seg");
    let len = fs::metadata(&path).expect("metadata").len();
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(len + 4096).expect("extend");
    let (_, got) = open(dir.path(), 1 << 20);
    assert_eq!(got.len(), 3);
    assert_eq!(fs::metadata(&path).expect("metadata").len(), len);
}

#[test]
fn bit_flip_in_a_body_loses_only_that_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msgs: Vec<Msg> = (0..5).map(|i| Msg::new(i, 30)).collect();
    let locs = write_all(dir.path(), &msgs);
    let path = dir.path().join("0000000001.seg");
    let mut seg = fs::read(&path).expect("read");
    seg[locs[3].offset as usize - 1] ^= 0x40; // last body byte of record 2
    fs::write(&path, &seg).expect("write");
    let (_, got) = open(dir.path(), 1 << 20);
    let got_locs: Vec<Location> = got.iter().map(|m| m.location).collect();
    assert_eq!(got_locs, vec![locs[0], locs[1], locs[3], locs[4]]);
    for (g, i) in got.iter().zip([0, 1, 3, 4]) {
        msgs[i].assert_is(g);
    }
    // The damaged record stays in the file, skipped again on the next open.
    assert_eq!(fs::read(&path).expect("read"), seg);
    // The last record damaged: skipped, as it ends cleanly at the end of the file.
    let last = seg.len() - 1;
    seg[last] ^= 1;
    fs::write(&path, &seg).expect("write");
    let (_, got) = open(dir.path(), 1 << 20);
    assert_eq!(got.len(), 3);
}

#[test]
fn bit_flip_in_a_length_keeps_earlier_records() {
    let src = tempfile::tempdir().expect("tempdir");
    let msgs: Vec<Msg> = (0..5).map(|i| Msg::new(i, 30)).collect();
    let locs = write_all(src.path(), &msgs);
    let seg = fs::read(src.path().join("0000000001.seg")).expect("read");
    for byte in 0..4 {
        for bit in 0..8 {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut bad = seg.clone();
            bad[locs[2].offset as usize + byte] ^= 1 << bit;
            fs::write(dir.path().join("0000000001.seg"), &bad).expect("write");
            let (_, got) = open(dir.path(), 1 << 20);
            assert!(got.len() >= 2, "byte {byte} bit {bit}");
            msgs[0].assert_is(&got[0]);
            msgs[1].assert_is(&got[1]);
        }
    }
}

#[test]
fn flip_any_byte_keeps_every_record_before_it() {
    let src = tempfile::tempdir().expect("tempdir");
    let msgs: Vec<Msg> = (0..4).map(|i| Msg::new(i, 12)).collect();
    let locs = write_all(src.path(), &msgs);
    let seg = fs::read(src.path().join("0000000001.seg")).expect("read");
    for pos in 0..seg.len() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bad = seg.clone();
        bad[pos] ^= 0xff;
        fs::write(dir.path().join("0000000001.seg"), &bad).expect("write");
        let (_, got) = open(dir.path(), 1 << 20);
        let before = locs.iter().filter(|l| l.offset as usize <= pos).count();
        let intact = before.saturating_sub(1);
        assert!(got.len() >= intact, "flip at {pos}");
        for g in &got {
            let i = locs
                .iter()
                .position(|l| *l == g.location)
                .expect("a real location");
            msgs[i].assert_is(g);
        }
    }
}

#[test]
fn torn_ack_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msgs: Vec<Msg> = (0..4).map(|i| Msg::new(i, 10)).collect();
    let (mut log, _) = open(dir.path(), 1 << 20);
    let locs: Vec<Location> = msgs.iter().map(|m| log.append(&m.record())).collect();
    log.ack(locs[0]);
    log.delivered(locs[1]);
    log.delivered(locs[2]);
    flush(&mut log);
    drop(log);
    let ack = dir.path().join("0000000001.ack");
    let mut data = fs::read(&ack).expect("read");
    assert_eq!(data.len(), 12);
    // An entry naming no record, then a torn half of the last entry.
    data.truncate(8);
    data.extend_from_slice(&segment::ack_entry(12345, false));
    data.extend_from_slice(&segment::ack_entry(locs[3].offset, false)[..2]);
    fs::write(&ack, &data).expect("write");
    let (mut log, got) = open(dir.path(), 1 << 20);
    assert_eq!(fs::metadata(&ack).expect("metadata").len(), 12);
    let flags: Vec<(Location, bool)> = got.iter().map(|m| (m.location, m.delivered)).collect();
    assert_eq!(
        flags,
        vec![(locs[1], true), (locs[2], false), (locs[3], false)]
    );
    // Acks after recovery land after the cut.
    log.ack(locs[3]);
    flush(&mut log);
    drop(log);
    let (_, got) = open(dir.path(), 1 << 20);
    assert_eq!(got.len(), 2);
}

#[test]
fn orphan_ack_file_and_short_segment_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("0000000003.ack"), [8, 0, 0, 0]).expect("write");
    fs::write(dir.path().join("0000000004.seg"), &MAGIC[..5]).expect("write");
    fs::write(dir.path().join("notes.txt"), b"kept").expect("write");
    let (mut log, got) = open(dir.path(), 1 << 20);
    assert!(got.is_empty());
    assert_eq!(seg_files(dir.path()), vec!["notes.txt"]);
    let loc = log.append(&Msg::new(0, 1).record());
    assert_eq!(loc.segment, 5);
}

#[test]
fn write_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msgs: Vec<Msg> = (0..6).map(|i| Msg::new(i, 40)).collect();
    let (mut log, _) = open(dir.path(), 200);
    let locs: Vec<Location> = msgs.iter().map(|m| log.append(&m.record())).collect();
    flush(&mut log);
    log.ack(locs[0]);
    log.ack(locs[1]);
    log.delivered(locs[2]);
    log.append(&msgs[0].record());
    let p = log.take_pending();
    assert_ne!(p.len(), 0);
    p.write(dir.path(), false).expect("first");
    let files = seg_files(dir.path());
    let contents: Vec<Vec<u8>> = files
        .iter()
        .map(|f| fs::read(dir.path().join(f)).expect("read"))
        .collect();
    p.write(dir.path(), true).expect("retry");
    assert_eq!(seg_files(dir.path()), files);
    for (f, c) in files.iter().zip(&contents) {
        assert_eq!(&fs::read(dir.path().join(f)).expect("read"), c);
    }
    drop(log);
    let (_, got) = open(dir.path(), 200);
    assert_eq!(got.len(), 5);
    assert!(got[0].delivered);
}

#[test]
fn open_creates_the_directory_and_stays_clean() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("vhost").join("queue");
    let (mut log, got) = open(&dir, 1 << 20);
    assert!(got.is_empty() && dir.is_dir());
    assert!(!log.is_dirty());
    let p = log.take_pending();
    assert!(p.is_empty());
    assert_eq!(p.len(), 0);
    let loc = log.append(&Msg::new(0, 3).record());
    assert!(log.is_dirty());
    let p = log.take_pending();
    assert!(!log.is_dirty());
    assert_eq!(p.len() as u64, log.disk_bytes());
    p.write(&dir, true).expect("write");
    log.ack(loc);
    // The current segment stays even when all of it is acked.
    let p = log.take_pending();
    assert_eq!(p.len(), 4);
    p.write(&dir, true).expect("write");
    assert_eq!(log.live(), 0);
}

#[test]
fn pending_writes_go_to_another_thread() {
    fn send<T: Send + 'static>() {}
    send::<PendingWrites>();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), 1 << 20);
    log.append(&Msg::new(0, 3).record());
    let p = log.take_pending();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || p.write(&path, true))
        .join()
        .expect("sync thread")
        .expect("write");
    drop(log);
    assert_eq!(open(dir.path(), 1 << 20).1.len(), 1);
}

#[test]
fn unsupported_version_fails_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("0000000001.seg"), b"AMQRSEG\x09rest").expect("write");
    assert!(QueueLog::open(dir.path(), 1 << 20).is_err());
    assert_eq!(
        fs::read(dir.path().join("0000000001.seg")).expect("read"),
        b"AMQRSEG\x09rest"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        body: usize,
        persistent: bool,
        expiry: bool,
    },
    Ack(usize),
    Delivered(usize),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..300, any::<bool>(), any::<bool>())
            .prop_map(|(body, persistent, expiry)| Op::Append { body, persistent, expiry }),
        3 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::Delivered),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_segment_never_panics(
        magic in any::<bool>(),
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        ack in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut data = if magic { MAGIC.to_vec() } else { Vec::new() };
        data.extend_from_slice(&bytes);
        fs::write(dir.path().join("0000000001.seg"), &data).expect("write");
        fs::write(dir.path().join("0000000001.ack"), &ack).expect("write");
        if let Ok((mut log, _)) = QueueLog::open(dir.path(), 1 << 20) {
            log.append(&Msg::new(1, 3).record());
            flush(&mut log);
            drop(log);
            let (_, got) = QueueLog::open(dir.path(), 1 << 20).expect("reopen");
            prop_assert!(!got.is_empty());
        }
    }

    #[test]
    fn recovery_matches_a_model(ops in prop::collection::vec(op(), 0..80)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = open(dir.path(), 512);
        // (location, message, acked, delivered)
        let mut model: Vec<(Location, Msg, bool, bool)> = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { body, persistent, expiry } => {
                    let mut m = Msg::new(i, body);
                    m.persistent = persistent;
                    m.expires_at_ms = expiry.then_some(i as u64);
                    model.push((log.append(&m.record()), m, false, false));
                }
                Op::Ack(j) if !model.is_empty() => {
                    let n = model.len();
                    let e = &mut model[j % n];
                    log.ack(e.0);
                    e.2 = true;
                }
                Op::Delivered(j) if !model.is_empty() => {
                    let n = model.len();
                    let e = &mut model[j % n];
                    log.delivered(e.0);
                    e.3 = true;
                }
                Op::Flush => flush(&mut log),
                _ => {}
            }
            let live = model.iter().filter(|e| !e.2).count() as u64;
            prop_assert_eq!(log.live(), live);
        }
        flush(&mut log);
        let disk = log.disk_bytes();
        drop(log);
        let (log, got) = open(dir.path(), 512);
        let want: Vec<_> = model.iter().filter(|e| e.1.persistent && !e.2).collect();
        prop_assert_eq!(got.len(), want.len());
        for (g, e) in got.iter().zip(&want) {
            prop_assert_eq!(g.location, e.0);
            prop_assert_eq!(g.delivered, e.3);
            e.1.assert_is(g);
        }
        prop_assert!(log.disk_bytes() <= disk);
        let on_disk: u64 = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").metadata().expect("metadata").len())
            .sum();
        prop_assert_eq!(on_disk, log.disk_bytes());
    }
}

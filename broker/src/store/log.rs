//! The per-queue message log: append-only segment files plus one ack file per segment.
//!
//! The event loop owns a [`QueueLog`] and calls [`QueueLog::append`],
//! [`QueueLog::ack`] and [`QueueLog::delivered`], which only encode bytes into memory.
//! Now and then (group commit) it calls [`QueueLog::take_pending`] and hands the
//! [`PendingWrites`] to a sync thread, which calls [`PendingWrites::write`]. Every
//! byte's position is fixed when it is buffered, so a failed write (say `ENOSPC`) is
//! retried by writing the same batch again; batches must be written in order.
//!
//! # On-disk format
//!
//! A queue's directory holds, for each live segment `n` (numbered from 1 up):
//!
//! - `{n:010}.seg`: the 8-byte magic `b"AMQRSEG\x01"`, then records:
//!
//!   | field         | bytes                                            |
//!   |---------------|--------------------------------------------------|
//!   | `payload_len` | u32 LE                                           |
//!   | `crc`         | u32 LE, CRC-32 (IEEE) of the payload             |
//!   | payload       | `flags` u8 (bit 0 persistent, bit 1 has expiry)  |
//!   |               | `expires_at_ms` u64 LE, only with bit 1          |
//!   |               | exchange: u8 length + bytes                      |
//!   |               | routing key: u8 length + bytes                   |
//!   |               | properties: u32 LE length + bytes                |
//!   |               | body: u32 LE length + bytes                      |
//!
//!   A segment is never appended to again after a restart: new records go to a new
//!   segment, so a cut tail is never overwritten by records that acks could mistake.
//!   A record larger than the segment size gets a segment of its own.
//!
//! - `{n:010}.ack`: 4-byte LE entries, each a record's offset in `{n:010}.seg`; with
//!   the top bit set the entry means "delivered" (recovery marks it redelivered),
//!   clear means "acked" (gone). Entries that name no record are ignored.
//!
//! When every record of a segment other than the current one is acked, both files
//! are deleted (the `.seg` first, so a crash in between never brings messages back;
//! an `.ack` without its `.seg` is deleted on open).
//!
//! # Recovery
//!
//! [`QueueLog::open`] reads every segment. A record with a plausible length whose CRC
//! fails is skipped (logged as an error: that message is lost) if a good record or the
//! end of the file follows it; otherwise the file is cut at the first bad record
//! (a torn or zeroed tail, logged as a warning). Good records before damage are never
//! dropped. An ack file whose length is not a multiple of 4 is cut to whole entries.
//! Segments with no live persistent record left are deleted. A segment of another
//! format version makes `open` fail rather than be cut.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::segment::{
    self, AckEntry, Fields, FileKind, HEADER_LEN, MAGIC, MAX_OFFSET, RECORD_HEADER,
};

/// Where a record lives: segment number and byte offset of the record in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Segment number (from 1).
    pub segment: u32,
    /// Offset of the record's header in the segment file.
    pub offset: u32,
}

/// A message to append.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Exchange it was published to (an AMQP short string, at most 255 bytes).
    pub exchange: &'a [u8],
    /// Routing key it was published with (at most 255 bytes).
    pub routing_key: &'a [u8],
    /// Raw content-header property flags and fields; opaque here.
    pub properties: &'a [u8],
    /// The body.
    pub body: &'a [u8],
    /// When it expires, in unix epoch milliseconds.
    pub expires_at_ms: Option<u64>,
    /// Persistent records come back after a restart; others may be written (paged out)
    /// but are not returned by recovery.
    pub persistent: bool,
}

/// Live messages left on disk by [`QueueLog::open_paged`]: the first one's location
/// and how many there are.
pub type Paged = (Location, u64);

/// A message read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Where it lives, for [`QueueLog::ack`] and [`QueueLog::delivered`].
    pub location: Location,
    /// Exchange it was published to.
    pub exchange: Bytes,
    /// Routing key it was published with.
    pub routing_key: Bytes,
    /// Raw content-header property flags and fields.
    pub properties: Bytes,
    /// The body.
    pub body: Bytes,
    /// When it expires, in unix epoch milliseconds.
    pub expires_at_ms: Option<u64>,
    /// Whether it was appended as persistent.
    pub persistent: bool,
    /// Whether it was handed to a consumer before (so it goes out redelivered).
    pub delivered: bool,
}

impl StoredMessage {
    /// Slices a message out of `payload` (one record's payload).
    fn new(location: Location, payload: &Bytes, f: Fields, delivered: bool) -> Self {
        Self {
            location,
            exchange: payload.slice(f.exchange),
            routing_key: payload.slice(f.routing_key),
            properties: payload.slice(f.properties),
            body: payload.slice(f.body),
            expires_at_ms: f.expires_at_ms,
            persistent: f.persistent,
            delivered,
        }
    }
}

const ACKED: u8 = 1;
const DELIVERED: u8 = 2;
const PERSISTENT: u8 = 4;

/// A live segment's record in memory.
#[derive(Debug, Clone, Copy)]
struct Rec {
    offset: u32,
    payload_len: u32,
    flags: u8,
}

/// A live segment: its records and the bytes not yet handed out.
#[derive(Debug, Default)]
struct Segment {
    /// Records by increasing offset (after a restart, only the live ones).
    records: Vec<Rec>,
    /// Records not acked.
    live: u64,
    /// Length of the `.seg` file once everything buffered is written.
    len: u64,
    /// Length of the `.ack` file once everything buffered is written.
    ack_len: u64,
    /// Buffered `.seg` bytes, ending at `len`.
    seg_pending: Vec<u8>,
    /// Buffered `.ack` bytes, ending at `ack_len`.
    ack_pending: Vec<u8>,
    /// Listed in `QueueLog::dirty`.
    dirty: bool,
}

impl Segment {
    fn find(&mut self, offset: u32) -> Option<&mut Rec> {
        let i = self
            .records
            .binary_search_by_key(&offset, |r| r.offset)
            .ok()?;
        Some(&mut self.records[i])
    }
}

/// One durable queue's message log. See the [module docs](self).
pub struct QueueLog {
    dir: PathBuf,
    segment_size: u32,
    segments: BTreeMap<u32, Segment>,
    /// The segment appends go to; `None` until the first append after open.
    current: Option<u32>,
    next_segment: u32,
    /// Segments with buffered bytes.
    dirty: Vec<u32>,
    /// Segments to delete in the next batch.
    deletes: Vec<u32>,
    live: u64,
    disk_bytes: u64,
}

impl fmt::Debug for QueueLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("current", &self.current)
            .field("live", &self.live)
            .field("disk_bytes", &self.disk_bytes)
            .finish_non_exhaustive()
    }
}

/// Smallest segment size accepted (smaller values are raised to it).
const MIN_SEGMENT_SIZE: u32 = 64;
/// Largest segment size accepted (larger values are lowered to it), so that every
/// record starts below [`MAX_OFFSET`].
const MAX_SEGMENT_SIZE: u32 = MAX_OFFSET / 2;
/// Initial capacity of a segment's write buffer.
const BUFFER_RESERVE: usize = 16 * 1024;

fn path_of(dir: &Path, n: u32, kind: FileKind) -> PathBuf {
    dir.join(segment::file_name(n, kind))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn read_if_exists(path: &Path) -> io::Result<Vec<u8>> {
    match fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        r => r,
    }
}

fn cut_file(path: &Path, len: usize) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len as u64)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl QueueLog {
    /// Opens (creating `dir` if needed) the log in `dir`, recovers it (see the module
    /// docs), and returns it with the live persistent messages in log order. New
    /// appends go to a new segment. `segment_size` is clamped to 64 B ..= 1 GiB.
    pub fn open(dir: &Path, segment_size: u32) -> io::Result<(QueueLog, Vec<StoredMessage>)> {
        Self::open_paged(dir, segment_size, usize::MAX).map(|(log, messages, _)| (log, messages))
    }

    /// [`QueueLog::open`] that reads back at most `keep` messages; the rest stay on
    /// disk, and the third value says where they start and how many there are (for
    /// [`QueueLog::read_from`]).
    pub fn open_paged(
        dir: &Path,
        segment_size: u32,
        keep: usize,
    ) -> io::Result<(QueueLog, Vec<StoredMessage>, Option<Paged>)> {
        if !dir.is_dir() {
            fs::create_dir_all(dir)?;
            // Make the new directory's own entry durable.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let mut segs = BTreeSet::new();
        let mut acks = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            match name.to_str().and_then(segment::parse_name) {
                Some((n, FileKind::Seg)) => {
                    segs.insert(n);
                }
                Some((n, FileKind::Ack)) => acks.push(n),
                None => {}
            }
        }
        let mut log = QueueLog {
            dir: dir.to_path_buf(),
            segment_size: segment_size.clamp(MIN_SEGMENT_SIZE, MAX_SEGMENT_SIZE),
            segments: BTreeMap::new(),
            current: None,
            next_segment: segs
                .iter()
                .chain(acks.iter())
                .max()
                .map_or(1, |n| n.saturating_add(1)),
            dirty: Vec::new(),
            deletes: Vec::new(),
            live: 0,
            disk_bytes: 0,
        };
        let mut removed = false;
        for n in acks {
            if !segs.contains(&n) {
                tracing::warn!(segment = n, "ack file without its segment; deleting it");
                remove_if_exists(&path_of(dir, n, FileKind::Ack))?;
                removed = true;
            }
        }
        let mut messages = Vec::new();
        let mut rest = None;
        for &n in &segs {
            removed |= log.recover_segment(n, &mut messages, keep, &mut rest)?;
        }
        if removed {
            sync_dir(dir)?;
        }
        Ok((log, messages, rest))
    }

    /// Recovers segment `n`, pushing its live persistent messages. Returns whether it
    /// was deleted.
    fn recover_segment(
        &mut self,
        n: u32,
        out: &mut Vec<StoredMessage>,
        keep: usize,
        rest: &mut Option<(Location, u64)>,
    ) -> io::Result<bool> {
        let seg_path = path_of(&self.dir, n, FileKind::Seg);
        let ack_path = path_of(&self.dir, n, FileKind::Ack);
        let data = fs::read(&seg_path)?;
        let scan = segment::scan(&data, &seg_path)?;
        if scan.valid_len < data.len() {
            cut_file(&seg_path, scan.valid_len)?;
        }
        let mut records: Vec<Rec> = scan
            .records
            .iter()
            .map(|s| Rec {
                offset: s.offset,
                payload_len: s.payload_len,
                flags: if s.fields.persistent {
                    PERSISTENT
                } else {
                    ACKED
                },
            })
            .collect();
        let ack_data = read_if_exists(&ack_path)?;
        let ack_len = ack_data.len() / 4 * 4;
        if ack_len < ack_data.len() {
            tracing::warn!(
                file = %ack_path.display(),
                offset = ack_len,
                cut = ack_data.len() - ack_len,
                "ack file has a torn entry; cutting it"
            );
            cut_file(&ack_path, ack_len)?;
        }
        for AckEntry { offset, delivered } in segment::ack_entries(&ack_data) {
            if let Ok(i) = records.binary_search_by_key(&offset, |r| r.offset) {
                records[i].flags |= if delivered { DELIVERED } else { ACKED };
            }
        }
        let mut live = Vec::with_capacity(records.len());
        for (r, s) in records.iter().zip(scan.records) {
            if r.flags & ACKED != 0 {
                continue;
            }
            let location = Location {
                segment: n,
                offset: s.offset,
            };
            live.push(*r);
            if out.len() >= keep {
                // Left on disk: counted, read back later.
                rest.get_or_insert((location, 0)).1 += 1;
                continue;
            }
            let start = s.offset as usize + RECORD_HEADER;
            let payload = Bytes::copy_from_slice(&data[start..start + s.payload_len as usize]);
            out.push(StoredMessage::new(
                location,
                &payload,
                s.fields,
                r.flags & DELIVERED != 0,
            ));
        }
        if live.is_empty() {
            remove_if_exists(&seg_path)?;
            remove_if_exists(&ack_path)?;
            return Ok(true);
        }
        let seg = Segment {
            live: live.len() as u64,
            records: live,
            len: scan.valid_len as u64,
            ack_len: ack_len as u64,
            ..Segment::default()
        };
        self.live += seg.live;
        self.disk_bytes += seg.len + seg.ack_len;
        self.segments.insert(n, seg);
        Ok(false)
    }

    /// Encodes the record into the write buffer and returns where it will live. Rolls
    /// over to a new segment when the current one would grow past the segment size (a
    /// record bigger than that gets a segment of its own). No I/O.
    ///
    /// # Panics
    /// If the exchange or routing key is longer than 255 bytes or the record is 4 GiB
    /// or more.
    pub fn append(&mut self, rec: &Record<'_>) -> Location {
        let plen = segment::payload_len(rec);
        let total = RECORD_HEADER as u64 + u64::from(plen);
        let n = match self.current {
            Some(n)
                if self.segments.get(&n).is_some_and(|s| {
                    s.len == u64::from(HEADER_LEN) || s.len + total <= u64::from(self.segment_size)
                }) =>
            {
                n
            }
            _ => self.roll(),
        };
        let Some(seg) = self.segments.get_mut(&n) else {
            unreachable!("the current segment is live")
        };
        let offset = seg.len as u32;
        if seg.seg_pending.capacity() == 0 {
            seg.seg_pending.reserve(BUFFER_RESERVE);
        }
        segment::encode(rec, plen, &mut seg.seg_pending);
        seg.len += total;
        seg.live += 1;
        seg.records.push(Rec {
            offset,
            payload_len: plen,
            flags: if rec.persistent { PERSISTENT } else { 0 },
        });
        if !seg.dirty {
            seg.dirty = true;
            self.dirty.push(n);
        }
        self.live += 1;
        self.disk_bytes += total;
        Location { segment: n, offset }
    }

    /// Seals the current segment (deleting it if nothing in it is live) and starts a
    /// new one.
    fn roll(&mut self) -> u32 {
        if let Some(old) = self.current.take()
            && self.segments.get(&old).is_some_and(|s| s.live == 0)
        {
            self.delete_segment(old);
        }
        let n = self.next_segment;
        self.next_segment = n.saturating_add(1);
        let mut seg_pending = Vec::with_capacity(BUFFER_RESERVE);
        seg_pending.extend_from_slice(&MAGIC);
        self.segments.insert(
            n,
            Segment {
                len: u64::from(HEADER_LEN),
                seg_pending,
                dirty: true,
                ..Segment::default()
            },
        );
        self.dirty.push(n);
        self.disk_bytes += u64::from(HEADER_LEN);
        self.current = Some(n);
        n
    }

    fn delete_segment(&mut self, n: u32) {
        if let Some(seg) = self.segments.remove(&n) {
            self.disk_bytes -= seg.len + seg.ack_len;
            self.live -= seg.live;
            self.deletes.push(n);
        }
    }

    /// Records an ack entry (or a delivered marker) for the record at `loc`.
    fn mark(&mut self, loc: Location, delivered: bool) {
        let Some(seg) = self.segments.get_mut(&loc.segment) else {
            return;
        };
        let Some(r) = seg.find(loc.offset) else {
            return;
        };
        let flag = if delivered { DELIVERED } else { ACKED };
        if r.flags & (ACKED | flag) != 0 {
            return;
        }
        r.flags |= flag;
        // Transient records do not come back after a restart: nothing to write.
        let persistent = r.flags & PERSISTENT != 0;
        if !delivered {
            seg.live -= 1;
            self.live -= 1;
        }
        if seg.live == 0 && self.current != Some(loc.segment) {
            self.delete_segment(loc.segment);
            return;
        }
        if persistent {
            seg.ack_pending
                .extend_from_slice(&segment::ack_entry(loc.offset, delivered));
            seg.ack_len += 4;
            self.disk_bytes += 4;
            if !seg.dirty {
                seg.dirty = true;
                self.dirty.push(loc.segment);
            }
        }
    }

    /// Records that the message at `loc` was acked (or otherwise removed: purge,
    /// expiry). Once every record of a segment other than the current one is acked,
    /// its files are deleted by the next batch. Unknown locations are ignored. No I/O.
    pub fn ack(&mut self, loc: Location) {
        self.mark(loc, false);
    }

    /// Records that the message at `loc` was handed to a consumer, so that recovery
    /// marks it redelivered. Unknown or acked locations are ignored. No I/O.
    pub fn delivered(&mut self, loc: Location) {
        self.mark(loc, true);
    }

    /// Whether anything is waiting for [`take_pending`](Self::take_pending).
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.deletes.is_empty()
    }

    /// Takes everything buffered since the last call, to be written in order.
    pub fn take_pending(&mut self) -> PendingWrites {
        let mut chunks = Vec::with_capacity(self.dirty.len() * 2);
        for n in self.dirty.drain(..) {
            let Some(seg) = self.segments.get_mut(&n) else {
                continue; // deleted since
            };
            seg.dirty = false;
            for (kind, buf, end) in [
                (FileKind::Seg, &mut seg.seg_pending, seg.len),
                (FileKind::Ack, &mut seg.ack_pending, seg.ack_len),
            ] {
                if !buf.is_empty() {
                    let data = std::mem::take(buf);
                    chunks.push(Chunk {
                        segment: n,
                        kind,
                        offset: end - data.len() as u64,
                        data,
                    });
                }
            }
        }
        PendingWrites {
            chunks,
            deletes: std::mem::take(&mut self.deletes),
        }
    }

    /// Messages appended or recovered and not yet acked (transient ones included until
    /// a restart).
    pub fn live(&self) -> u64 {
        self.live
    }

    /// Bytes on disk, or about to be, across live segments and their ack files.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Acks every live record at or after `from` (a purge of messages that are on disk
    /// only); returns how many.
    pub fn ack_from(&mut self, from: Location) -> u64 {
        let mut locs = Vec::new();
        for (&n, seg) in self.segments.range(from.segment..) {
            let first = if n == from.segment {
                seg.records.partition_point(|r| r.offset < from.offset)
            } else {
                0
            };
            locs.extend(
                seg.records[first..]
                    .iter()
                    .filter(|r| r.flags & ACKED == 0)
                    .map(|r| Location {
                        segment: n,
                        offset: r.offset,
                    }),
            );
        }
        for &loc in &locs {
            self.ack(loc);
        }
        locs.len() as u64
    }

    /// Reads up to `max` records not acked, from `from` (inclusive) on in log order,
    /// to page messages back into memory. Only reads what is already in the files: it
    /// stops early at the first record not yet written. Errs if a record read back is
    /// damaged.
    pub fn read_from(&self, from: Location, max: usize) -> io::Result<Vec<StoredMessage>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        for (&n, seg) in self.segments.range(from.segment..) {
            let first = if n == from.segment {
                seg.records.partition_point(|r| r.offset < from.offset)
            } else {
                0
            };
            let path = path_of(&self.dir, n, FileKind::Seg);
            let mut file = None;
            for r in &seg.records[first..] {
                if r.flags & ACKED != 0 {
                    continue;
                }
                let f = match &mut file {
                    Some(f) => f,
                    None => match File::open(&path) {
                        Ok(f) => file.insert(f),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                        Err(e) => return Err(e),
                    },
                };
                let mut buf = vec![0; RECORD_HEADER + r.payload_len as usize];
                match f.read_exact_at(&mut buf, u64::from(r.offset)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
                    Err(e) => return Err(e),
                }
                let Some(fields) = segment::check_record(&buf) else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: damaged record at offset {}", path.display(), r.offset),
                    ));
                };
                let payload = Bytes::from(buf).slice(RECORD_HEADER..);
                let location = Location {
                    segment: n,
                    offset: r.offset,
                };
                out.push(StoredMessage::new(
                    location,
                    &payload,
                    fields,
                    r.flags & DELIVERED != 0,
                ));
                if out.len() == max {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }
}

/// Bytes for one file at a fixed position.
struct Chunk {
    segment: u32,
    kind: FileKind,
    offset: u64,
    data: Vec<u8>,
}

/// A batch of writes and deletions taken from a [`QueueLog`], for a sync thread.
pub struct PendingWrites {
    chunks: Vec<Chunk>,
    deletes: Vec<u32>,
}

impl fmt::Debug for PendingWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingWrites")
            .field("files", &self.chunks.len())
            .field("bytes", &self.len())
            .field("deletes", &self.deletes)
            .finish()
    }
}

impl PendingWrites {
    /// Whether there is nothing to write or delete.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.deletes.is_empty()
    }

    /// Number of bytes it writes.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.data.len()).sum()
    }

    /// Writes every buffered byte at its position in `dir` (creating files as needed),
    /// then deletes reclaimed segments, then, if `sync`, `sync_data`s every file
    /// written (and the directory if files were created or deleted). Idempotent: after
    /// an error the same batch may simply be written again.
    pub fn write(&self, dir: &Path, sync: bool) -> io::Result<()> {
        let written = self.write_unsynced(dir)?;
        if sync {
            for (_, f) in &written.files {
                f.sync_data()?;
            }
            if written.dir_changed {
                sync_dir(dir)?;
            }
        }
        Ok(())
    }

    /// [`PendingWrites::write`] without the sync: returns the files written (still
    /// open) so a caller merging several batches syncs each file once (group commit).
    pub fn write_unsynced(&self, dir: &Path) -> io::Result<Written> {
        let mut written = Written {
            files: Vec::with_capacity(self.chunks.len()),
            dir_changed: !self.deletes.is_empty(),
        };
        for c in &self.chunks {
            let path = path_of(dir, c.segment, c.kind);
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            file.write_all_at(&c.data, c.offset)?;
            written.dir_changed |= c.offset == 0;
            written.files.push((path, file));
        }
        for &n in &self.deletes {
            // The `.seg` first: a lone `.ack` is harmless, a lone `.seg` would come back.
            remove_if_exists(&path_of(dir, n, FileKind::Seg))?;
            remove_if_exists(&path_of(dir, n, FileKind::Ack))?;
        }
        Ok(written)
    }
}

/// What [`PendingWrites::write_unsynced`] wrote.
#[derive(Debug)]
pub struct Written {
    /// Each file written, still open, for syncing.
    pub files: Vec<(PathBuf, File)>,
    /// Files were created or deleted: the directory needs a sync too.
    pub dir_changed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
}

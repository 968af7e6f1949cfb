//! The per-queue message log: append-only segment files plus one ack file per segment.
//!
//! The event loop owns a [`QueueLog`] and calls [`QueueLog::append`],
//! [`QueueLog::ack`] and [`QueueLog::delivered`], which only encode bytes into memory.
//! Now and then (group commit) it calls [`QueueLog::take_pending`] and hands the
//! [`PendingWrites`] to a sync thread, which calls [`PendingWrites::write`]. Every
//! byte's position is fixed when it is buffered, so a failed write (say `ENOSPC`) is
//! retried by writing the same batch again; batches must be written in order.
//!
//! The files' format is described in `super::segment`.
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
use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;

mod pending;
mod recovery;

use pending::Chunk;
pub use pending::PendingWrites;

pub use super::segment::Record;
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

impl QueueLog {
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

    /// Marks every live persistent record delivered, in memory and (with the next
    /// batch) in the ack files: for recovery after an unclean shutdown, when a
    /// delivery may have happened whose marker was lost with the process.
    pub fn mark_all_delivered(&mut self) {
        let unmarked: Vec<Location> = self
            .segments
            .iter()
            .flat_map(|(&segment, seg)| {
                seg.records
                    .iter()
                    .filter(|r| r.flags & (ACKED | DELIVERED) == 0 && r.flags & PERSISTENT != 0)
                    .map(move |r| Location {
                        segment,
                        offset: r.offset,
                    })
            })
            .collect();
        for loc in unmarked {
            self.mark(loc, true);
        }
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
}

#[cfg(test)]
mod tests;

//! Reading the log back: recovery when a queue's log is opened (see the parent
//! module's "Recovery"), and paging records back into memory later.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::*;
use crate::store::fs::{create_dir_private, cut_file, read_if_exists, remove_if_exists, sync_dir};
use crate::store::segment::path_of;

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
            create_dir_private(dir)?;
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

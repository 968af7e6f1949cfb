//! Byte layout of segment and ack files: encoding records, decoding them, and scanning
//! a whole file for the valid prefix; [`super::log`] does the I/O and the recovery.
//!
//! Everything here is pure (no I/O) so that recovery decisions can be tested on bytes.
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

use std::ops::Range;
use std::path::{Path, PathBuf};

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

/// The first 8 bytes of every segment file.
pub(crate) const MAGIC: [u8; 8] = *b"AMQRSEG\x01";
/// The magic without its version byte: a file starting with this but another version
/// (and not followed by a record of this version) is refused rather than cut.
const MAGIC_PREFIX: &[u8] = b"AMQRSEG";
/// Length of the segment header.
pub(crate) const HEADER_LEN: u32 = 8;
/// `u32 payload_len` + `u32 crc32`.
pub(crate) const RECORD_HEADER: usize = 8;
/// flags + exchange len + routing key len + properties len + body len.
const MIN_PAYLOAD: usize = 1 + 1 + 1 + 4 + 4;
/// Records never start at or beyond this offset: the top bit of an ack entry is taken.
pub(crate) const MAX_OFFSET: u32 = 1 << 31;
/// Top bit of an ack entry: "delivered" rather than "acked".
pub(crate) const DELIVERED_BIT: u32 = 1 << 31;

const FLAG_PERSISTENT: u8 = 1;
const FLAG_EXPIRY: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_PERSISTENT | FLAG_EXPIRY;

/// Which of a segment's two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// `{n:010}.seg`: the records.
    Seg,
    /// `{n:010}.ack`: ack and delivered entries.
    Ack,
}

/// The path of segment `n`'s file of this kind in a queue's directory.
pub(crate) fn path_of(dir: &Path, n: u32, kind: FileKind) -> PathBuf {
    dir.join(file_name(n, kind))
}

/// The file name of segment `n`'s file of `kind`.
pub(crate) fn file_name(n: u32, kind: FileKind) -> String {
    match kind {
        FileKind::Seg => format!("{n:010}.seg"),
        FileKind::Ack => format!("{n:010}.ack"),
    }
}

/// Parses a file name written by [`file_name`]; anything else is `None`.
pub(crate) fn parse_name(name: &str) -> Option<(u32, FileKind)> {
    let (stem, kind) = if let Some(stem) = name.strip_suffix(".seg") {
        (stem, FileKind::Seg)
    } else {
        (name.strip_suffix(".ack")?, FileKind::Ack)
    };
    if stem.len() != 10 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = stem.parse().ok()?;
    (n != 0).then_some((n, kind))
}

/// The payload length `rec` encodes to.
///
/// # Panics
/// If the exchange or routing key is longer than 255 bytes (AMQP short strings never
/// are) or the payload would not fit a `u32` (bodies are at most
/// `Limits::MAX_MESSAGE_SIZE_CAP`, 512 MiB, which `BrokerBuilder::start` enforces).
pub(crate) fn payload_len(rec: &Record<'_>) -> u32 {
    assert!(
        rec.exchange.len() <= 255 && rec.routing_key.len() <= 255,
        "exchange and routing key are AMQP short strings"
    );
    let len = MIN_PAYLOAD
        + if rec.expires_at_ms.is_some() { 8 } else { 0 }
        + rec.exchange.len()
        + rec.routing_key.len()
        + rec.properties.len()
        + rec.body.len();
    u32::try_from(len).expect("a stored message is smaller than 4 GiB")
}

/// Appends the whole record (header and payload of `plen` bytes) to `buf`.
pub(crate) fn encode(rec: &Record<'_>, plen: u32, buf: &mut Vec<u8>) {
    buf.reserve(RECORD_HEADER + plen as usize);
    let start = buf.len();
    buf.extend_from_slice(&plen.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    let mut flags = 0;
    if rec.persistent {
        flags |= FLAG_PERSISTENT;
    }
    if rec.expires_at_ms.is_some() {
        flags |= FLAG_EXPIRY;
    }
    buf.push(flags);
    if let Some(at) = rec.expires_at_ms {
        buf.extend_from_slice(&at.to_le_bytes());
    }
    // Lengths were checked by `payload_len`.
    buf.push(rec.exchange.len() as u8);
    buf.extend_from_slice(rec.exchange);
    buf.push(rec.routing_key.len() as u8);
    buf.extend_from_slice(rec.routing_key);
    buf.extend_from_slice(&(rec.properties.len() as u32).to_le_bytes());
    buf.extend_from_slice(rec.properties);
    buf.extend_from_slice(&(rec.body.len() as u32).to_le_bytes());
    buf.extend_from_slice(rec.body);
    debug_assert_eq!(buf.len() - start, RECORD_HEADER + plen as usize);
    let crc = crc32fast::hash(&buf[start + RECORD_HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Where a payload's fields lie within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) persistent: bool,
    pub(crate) expires_at_ms: Option<u64>,
    pub(crate) exchange: Range<usize>,
    pub(crate) routing_key: Range<usize>,
    pub(crate) properties: Range<usize>,
    pub(crate) body: Range<usize>,
}

/// Reads fields off the front of a payload.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<Range<usize>> {
        let end = self.pos.checked_add(n)?;
        (end <= self.data.len()).then(|| {
            let r = self.pos..end;
            self.pos = end;
            r
        })
    }

    fn u8(&mut self) -> Option<u8> {
        let r = self.take(1)?;
        Some(self.data[r.start])
    }

    fn u32(&mut self) -> Option<u32> {
        let r = self.take(4)?;
        Some(u32::from_le_bytes(self.data[r].try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        let r = self.take(8)?;
        Some(u64::from_le_bytes(self.data[r].try_into().ok()?))
    }
}

/// Decodes a payload whose CRC already matched; `None` unless its fields account for
/// every byte exactly and its flags are known.
pub(crate) fn decode(payload: &[u8]) -> Option<Fields> {
    let mut c = Cursor {
        data: payload,
        pos: 0,
    };
    let flags = c.u8()?;
    if flags & !KNOWN_FLAGS != 0 {
        return None;
    }
    let expires_at_ms = if flags & FLAG_EXPIRY != 0 {
        Some(c.u64()?)
    } else {
        None
    };
    let n = c.u8()?;
    let exchange = c.take(n.into())?;
    let n = c.u8()?;
    let routing_key = c.take(n.into())?;
    let n = c.u32()?;
    let properties = c.take(n as usize)?;
    let n = c.u32()?;
    let body = c.take(n as usize)?;
    (c.pos == payload.len()).then_some(Fields {
        persistent: flags & FLAG_PERSISTENT != 0,
        expires_at_ms,
        exchange,
        routing_key,
        properties,
        body,
    })
}

/// Reads a `u32` LE at `pos`; `None` past the end.
fn le32(data: &[u8], pos: usize) -> Option<u32> {
    let bytes = data.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Checks the record header of a whole record `buf` (as read back from a file) and
/// decodes its payload, which is `buf[RECORD_HEADER..]`.
pub(crate) fn check_record(buf: &[u8]) -> Option<Fields> {
    let plen = le32(buf, 0)? as usize;
    let crc = le32(buf, 4)?;
    let payload = buf.get(RECORD_HEADER..)?;
    (payload.len() == plen && crc32fast::hash(payload) == crc)
        .then(|| decode(payload))
        .flatten()
}

/// What sits at a position of a segment.
enum At {
    /// A good record of this payload length.
    Valid(u32, Fields),
    /// A plausible length whose payload fails its CRC or does not decode.
    Bad(u32),
    /// No plausible record header: torn, zeroed or garbage.
    Implausible,
}

fn record_at(data: &[u8], pos: usize) -> At {
    if pos >= MAX_OFFSET as usize {
        return At::Implausible;
    }
    let (Some(plen), Some(crc)) = (le32(data, pos), le32(data, pos + 4)) else {
        return At::Implausible;
    };
    let start = pos + RECORD_HEADER;
    let Some(payload) = (plen as usize >= MIN_PAYLOAD)
        .then(|| data.get(start..start + plen as usize))
        .flatten()
    else {
        return At::Implausible;
    };
    match decode(payload) {
        Some(fields) if crc32fast::hash(payload) == crc => At::Valid(plen, fields),
        _ => At::Bad(plen),
    }
}

/// A good record found by [`scan`].
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) offset: u32,
    pub(crate) payload_len: u32,
    pub(crate) fields: Fields,
}

/// The outcome of scanning a segment file's bytes.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Good records in file order.
    pub(crate) records: Vec<Scanned>,
    /// Length of the good part; the file is to be cut here if shorter than it is.
    pub(crate) valid_len: usize,
}

/// Scans a whole segment file. Records with a bad CRC but a plausible length that are
/// followed by a good record (or by the end of the file) are skipped and logged as
/// lost; anything else bad ends the good part. Errs only for a segment of another
/// format version, which must not be cut.
pub(crate) fn scan(data: &[u8], path: &Path) -> Result<Scan, std::io::Error> {
    let mut records = Vec::new();
    if data.len() < HEADER_LEN as usize {
        // Torn while being created (or not ours): no records.
        if !MAGIC.starts_with(data) {
            tracing::warn!(file = %path.display(), len = data.len(), "segment too short for its header; no records");
        }
        return Ok(Scan {
            records,
            valid_len: data.len(),
        });
    }
    if data[..MAGIC.len()] != MAGIC {
        // Another version, unless a record of this one follows (a damaged header).
        let ours = data.len() == MAGIC.len()
            || matches!(record_at(data, HEADER_LEN as usize), At::Valid(..));
        if data.starts_with(MAGIC_PREFIX) && !ours {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: unsupported segment format version {}",
                    path.display(),
                    data[MAGIC_PREFIX.len()]
                ),
            ));
        }
        tracing::warn!(file = %path.display(), "segment header damaged; reading its records anyway");
    }
    let mut pos = HEADER_LEN as usize;
    while pos < data.len() {
        match record_at(data, pos) {
            At::Valid(plen, fields) => {
                records.push(Scanned {
                    offset: pos as u32,
                    payload_len: plen,
                    fields,
                });
                pos += RECORD_HEADER + plen as usize;
            }
            At::Bad(plen) => {
                let next = pos + RECORD_HEADER + plen as usize;
                if next == data.len() || matches!(record_at(data, next), At::Valid(..)) {
                    tracing::error!(
                        file = %path.display(),
                        offset = pos,
                        len = next - pos,
                        "corrupt record skipped: one message lost"
                    );
                    pos = next;
                } else {
                    break;
                }
            }
            At::Implausible => break,
        }
    }
    if pos < data.len() {
        let tail = &data[pos..];
        let what = if tail.iter().all(|&b| b == 0) {
            "zeroed or torn tail"
        } else {
            "torn or corrupt tail"
        };
        tracing::warn!(
            file = %path.display(),
            offset = pos,
            cut = tail.len(),
            "segment has a {what}; cutting it"
        );
    }
    Ok(Scan {
        records,
        valid_len: pos,
    })
}

/// One entry of an ack file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckEntry {
    /// Offset of the record it is about.
    pub(crate) offset: u32,
    /// Delivered marker (else: acked).
    pub(crate) delivered: bool,
}

/// The ack entry for a record at `offset`.
pub(crate) fn ack_entry(offset: u32, delivered: bool) -> [u8; 4] {
    let v = if delivered {
        offset | DELIVERED_BIT
    } else {
        offset
    };
    v.to_le_bytes()
}

/// The whole entries of an ack file; a torn last entry is left out (the caller cuts
/// the file to `data.len() / 4 * 4`).
pub(crate) fn ack_entries(data: &[u8]) -> impl Iterator<Item = AckEntry> + '_ {
    data.chunks_exact(4).map(|c| {
        let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        AckEntry {
            offset: v & !DELIVERED_BIT,
            delivered: v & DELIVERED_BIT != 0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(body: &'a [u8], expiry: Option<u64>) -> Record<'a> {
        Record {
            exchange: b"ex",
            routing_key: b"rk",
            properties: b"\x80\x00",
            body,
            expires_at_ms: expiry,
            persistent: true,
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        for expiry in [None, Some(u64::MAX)] {
            let r = rec(b"hello", expiry);
            let plen = payload_len(&r);
            let mut buf = Vec::new();
            encode(&r, plen, &mut buf);
            assert_eq!(buf.len(), RECORD_HEADER + plen as usize);
            let f = check_record(&buf).expect("valid record");
            let p = &buf[RECORD_HEADER..];
            assert_eq!(&p[f.exchange.clone()], b"ex");
            assert_eq!(&p[f.routing_key.clone()], b"rk");
            assert_eq!(&p[f.properties.clone()], b"\x80\x00");
            assert_eq!(&p[f.body.clone()], b"hello");
            assert_eq!(f.expires_at_ms, expiry);
            assert!(f.persistent);
        }
    }

    #[test]
    fn names() {
        assert_eq!(file_name(7, FileKind::Seg), "0000000007.seg");
        assert_eq!(parse_name("0000000007.ack"), Some((7, FileKind::Ack)));
        assert_eq!(parse_name("0000000000.seg"), None);
        assert_eq!(parse_name("7.seg"), None);
        assert_eq!(parse_name("+000000007.seg"), None);
        assert_eq!(parse_name("0000000007.tmp"), None);
    }

    #[test]
    fn other_version_is_refused_not_cut() {
        let mut data = b"AMQRSEG\x02".to_vec();
        data.extend_from_slice(&[1, 2, 3]);
        assert!(scan(&data, Path::new("x")).is_err());
    }
}

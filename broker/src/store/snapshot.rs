//! Snapshot files: small state kept whole in one file, replaced atomically and
//! guarded by a checksum. The topology (`definitions`), the vhost list
//! (`vhost-names`) and the user table (`users`, see [`crate::auth`]) are kept this way,
//! and as JSON ([`load_json`], [`save_json`]) the limits, policies, global parameters
//! and vhost metadata.
//!
//! Framing: an 8-byte magic naming the kind of file, the `u32` payload length, the
//! `u32` CRC-32 of the payload (both little-endian), then the payload. A file is
//! replaced by writing a temporary file, syncing it, renaming it over the old one and
//! syncing the directory, so a crash leaves either the old or the new file whole.

use std::io;
use std::path::Path;

use super::fs::{replace_file, sync_dir_if_exists};

/// Why a snapshot's framing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The file does not start with the expected magic.
    #[error("bad magic")]
    Magic,
    /// The file ends before its header or payload does.
    #[error("truncated")]
    Truncated,
    /// The payload's checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
}

/// The file contents for `payload`: magic, length, checksum, payload.
pub fn seal(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(magic);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of file contents made by [`seal`] with the same magic, once its
/// checksum has been verified.
pub fn unseal<'a>(magic: &[u8; 8], bytes: &'a [u8]) -> Result<&'a [u8], SnapshotError> {
    let rest = bytes.strip_prefix(magic).ok_or(SnapshotError::Magic)?;
    let word = |at: usize| {
        rest.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .ok_or(SnapshotError::Truncated)
    };
    let len = word(0)? as usize;
    let crc = word(4)?;
    let payload = rest
        .get(8..8usize.saturating_add(len))
        .ok_or(SnapshotError::Truncated)?;
    if crc32fast::hash(payload) != crc {
        return Err(SnapshotError::Checksum);
    }
    Ok(payload)
}

/// Atomically replaces `dir/name` with `bytes` and syncs `dir`.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    replace_file(&dir.join(name), bytes)?;
    sync_dir_if_exists(dir)
}

/// A JSON snapshot file: `dir/name` read and decoded, or `T::default()` when there is
/// none yet; a damaged or undecodable file is an error naming it. The broker's small
/// JSON state (limits, policies, global parameters, vhost metadata) is kept this way.
pub fn load_json<T: serde::de::DeserializeOwned + Default>(
    dir: &Path,
    name: &str,
    magic: &[u8; 8],
) -> io::Result<T> {
    let path = dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(T::default()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let bad = |e: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    };
    let payload = unseal(magic, &bytes).map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(payload).map_err(|e| bad(e.to_string()))
}

/// Replaces the JSON snapshot file `dir/name` with `value`.
pub fn save_json<T: serde::Serialize>(
    dir: &Path,
    name: &str,
    magic: &[u8; 8],
    value: &T,
) -> io::Result<()> {
    let payload = serde_json::to_vec(value).map_err(io::Error::other)?;
    write(dir, name, &seal(magic, &payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_payloads_come_back_and_damage_is_named() {
        let bytes = seal(b"TESTSNP1", b"hello");
        assert_eq!(unseal(b"TESTSNP1", &bytes), Ok(&b"hello"[..]));
        assert_eq!(unseal(b"OTHERSN1", &bytes), Err(SnapshotError::Magic));
        for cut in 8..bytes.len() {
            assert_eq!(
                unseal(b"TESTSNP1", &bytes[..cut]),
                Err(SnapshotError::Truncated),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[17] ^= 1;
        assert_eq!(unseal(b"TESTSNP1", &flipped), Err(SnapshotError::Checksum));
    }
}

//! Where each vhost keeps its durable state, and the list of vhosts that survives a
//! restart.
//!
//! The default vhost `/` uses the data directory itself (the layout from before there
//! were other vhosts, so old data directories still open). Every other vhost has its
//! own store under `DATA_DIR/vhosts/<dir name>/` (see [`dir_name`]: the escaped name,
//! or for a name too long for that, a digest of it), laid out the same way. The names
//! of those vhosts are kept in `DATA_DIR/vhost-names`, a [`super::snapshot`] file
//! replaced atomically as the topology snapshot is (temporary file, sync, rename,
//! directory sync).
//!
//! Format of `vhost-names`: magic `AMQRVHS1`, `u32` payload length, `u32` CRC-32 of the
//! payload, then the payload: a `u32` count and each name as a short string.

use std::io;
use std::path::{Path, PathBuf};

use super::snapshot;

const MAGIC: &[u8; 8] = b"AMQRVHS1";
/// The list file, in the data directory.
const LIST: &str = "vhost-names";
/// The directory holding every vhost's store but `/`'s.
const DIR: &str = "vhosts";

/// Longest file name the filesystems the broker runs on accept (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// The directory name a vhost's store gets: lowercase ASCII letters, digits, `-` and
/// `_` as they are, every other byte as `%XX`. Never empty (`%` marks the empty
/// name), and distinct names never collide, even on case-insensitive filesystems.
///
/// A name whose escaped form is longer than a file name may be (86 capitals, 29 CJK
/// characters) gets `~` and the SHA-256 of the name in hex instead: 65 bytes, and no
/// escaped name contains `~`. Every name that fitted before keeps its directory, so
/// data directories written before this rule open unchanged.
pub fn dir_name(vhost: &str) -> String {
    if vhost.is_empty() {
        return "%".to_owned();
    }
    let mut out = String::with_capacity(vhost.len());
    for b in vhost.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    if out.len() <= NAME_MAX {
        return out;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(vhost.as_bytes());
    let mut out = String::with_capacity(1 + 2 * digest.len());
    out.push('~');
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The store directory of `vhost` under the data directory `root`.
pub fn store_dir(root: &Path, vhost: &str) -> PathBuf {
    if vhost == "/" {
        root.to_path_buf()
    } else {
        root.join(DIR).join(dir_name(vhost))
    }
}

/// The vhosts other than `/` kept in `root` (none if the list was never written).
///
/// A damaged list stops the start-up with an error rather than starting without the
/// vhosts and then deleting their data as orphans.
pub fn read_list(root: &Path) -> io::Result<Vec<String>> {
    let path = root.join(LIST);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: damaged vhost list", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Replaces the list of vhosts kept in `root` (`/` is always there and not listed).
pub fn write_list(root: &Path, names: &[String]) -> io::Result<()> {
    let names: Vec<&String> = names.iter().filter(|n| n.as_str() != "/").collect();
    let mut p = Vec::new();
    p.extend_from_slice(&u32::try_from(names.len()).unwrap_or(u32::MAX).to_le_bytes());
    for n in names {
        // Vhost names are AMQP short strings (`connection.open`); longer ones are refused
        // before they get here.
        let b = &n.as_bytes()[..n.len().min(255)];
        p.push(b.len() as u8);
        p.extend_from_slice(b);
    }
    snapshot::write(root, LIST, &snapshot::seal(MAGIC, &p))
}

/// Deletes the store directories under `DATA_DIR/vhosts/` that belong to no listed
/// vhost (a vhost deleted just before a crash, whose data removal did not finish).
pub fn remove_orphans(root: &Path, names: &[String]) {
    let Ok(entries) = std::fs::read_dir(root.join(DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let known = entry
            .file_name()
            .to_str()
            .is_some_and(|d| names.iter().any(|n| dir_name(n) == d));
        if !known {
            tracing::info!(dir = %entry.path().display(), "removing the data of a deleted vhost");
            if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(%err, dir = %entry.path().display(), "could not remove");
            }
        }
    }
}

fn decode(bytes: &[u8]) -> Option<Vec<String>> {
    let payload = snapshot::unseal(MAGIC, bytes).ok()?;
    let count = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let mut at = 4;
    let mut names = Vec::new();
    for _ in 0..count {
        let n = usize::from(*payload.get(at)?);
        let name = std::str::from_utf8(payload.get(at + 1..at + 1 + n)?).ok()?;
        names.push(name.to_owned());
        at += 1 + n;
    }
    (at == payload.len()).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_are_safe_and_distinct() {
        assert_eq!(dir_name("orders"), "orders");
        assert_eq!(dir_name("a/b"), "a%2Fb");
        assert_eq!(dir_name(".."), "%2E%2E");
        assert_eq!(dir_name(""), "%");
        assert_ne!(dir_name("A"), dir_name("a"));
        assert_eq!(dir_name("é"), "%C3%A9");
        // The longest names that fitted keep their directory; longer ones are hashed.
        assert_eq!(dir_name(&"x".repeat(255)), "x".repeat(255));
        assert_eq!(dir_name(&"A".repeat(85)), "%41".repeat(85));
        for long in ["A".repeat(86), "漢".repeat(29), "y".repeat(256)] {
            let d = dir_name(&long);
            assert_eq!(d.len(), 65, "{d}");
            assert!(d.starts_with('~'));
        }
        assert_ne!(dir_name(&"A".repeat(86)), dir_name(&"A".repeat(87)));
    }

    #[test]
    fn list_round_trips_and_damage_is_refused() {
        let dir = std::env::temp_dir().join(format!("vhost-list-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(read_list(&dir).expect("missing is empty").is_empty());
        let names = vec!["/".to_owned(), "a".to_owned(), "b/c é".to_owned()];
        write_list(&dir, &names).expect("write");
        assert_eq!(read_list(&dir).expect("read"), names[1..].to_vec());
        let bytes = std::fs::read(dir.join(LIST)).expect("bytes");
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[18] ^= 1;
        assert!(decode(&flipped).is_none());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

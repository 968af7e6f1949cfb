//! The write side of a queue log: the bytes [`super::QueueLog::take_pending`] hands
//! out, each at its fixed position, and how the sync thread writes them (positioned
//! writes, so a failed batch is simply written again).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::store::fs::{remove_if_exists, sync_dir};
use crate::store::segment::{FileKind, path_of};

/// Bytes for one file at a fixed position.
pub(super) struct Chunk {
    pub(super) segment: u32,
    pub(super) kind: FileKind,
    pub(super) offset: u64,
    pub(super) data: Vec<u8>,
}

/// A batch of writes and deletions taken from a [`QueueLog`](super::QueueLog), for a sync thread.
pub struct PendingWrites {
    pub(super) chunks: Vec<Chunk>,
    pub(super) deletes: Vec<u32>,
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
                .mode(0o600)
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

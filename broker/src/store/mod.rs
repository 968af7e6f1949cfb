//! The durable store: what a publisher confirm promised survives restarts and crashes.
//!
//! Layout of a data directory:
//!
//! ```text
//! DATA_DIR/
//!   definitions           durable exchanges, queues, bindings (one snapshot, replaced atomically)
//!   queues/<id>/          one directory per durable queue
//!     0000000001.seg      append-only message records with checksums
//!     0000000001.ack      acks and delivery markers for that segment
//!   clean-shutdown        present only while the broker is stopped after a clean shutdown
//!   vhost-names           the vhosts other than `/` (see [`vhosts`])
//!   users                 users and permissions (see [`crate::auth`])
//!   vhosts/<name>/        each such vhost's own store, laid out as above
//! ```
//!
//! The default vhost `/` uses the data directory itself; one [`Store`] (with its own
//! sync thread) serves each vhost.
//!
//! The data path: the vhost appends a persistent message routed to a durable queue to
//! that queue's [`log::QueueLog`] (an in-memory buffer, no I/O) and the publisher's
//! confirm waits on a ticket. At the end of each read batch the vhost hands all
//! buffered writes to the [`writer::Syncer`] thread as one batch; the thread writes and
//! syncs, then marks the ticket synced, and the connection sends the confirms. Transient
//! messages never touch any of this.
//!
//! Delivery markers and acks are written lazily (with the next batch), so a crash can
//! lose a delivery's marker together with its ack. As RabbitMQ's queue index does,
//! recovery after an unclean shutdown (no `clean-shutdown` file, which
//! [`Store::close`] writes once everything is on disk and [`Store::open`] removes)
//! marks every recovered message delivered: it may have been, and it comes back with
//! `redelivered` set. After a clean shutdown the flags are exact.

pub mod definitions;
pub(crate) mod fs;
pub mod log;
mod segment;
pub mod snapshot;
pub mod vhosts;
pub mod writer;

use std::io;
use std::path::{Path, PathBuf};

use definitions::{Definitions, QueueDef};
use log::{QueueLog, StoredMessage};
use writer::Syncer;

/// The marker of a clean shutdown, in each store's directory.
const CLEAN: &str = "clean-shutdown";

/// Largest segment file before a new one is started.
pub const SEGMENT_SIZE: u32 = 8 * 1024 * 1024;

/// An open data directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    syncer: Syncer,
    /// The segment size of every queue log.
    segment_size: u32,
}

/// One durable queue read back.
#[derive(Debug)]
pub struct RecoveredQueue {
    /// Its definition.
    pub def: QueueDef,
    /// Its log, ready for appends.
    pub log: QueueLog,
    /// Its first live messages, at most [`crate::queue::PAGE_OUT_AT`].
    pub messages: Vec<StoredMessage>,
    /// The live messages left on disk: the first one's location, and their number.
    pub paged: Option<log::Paged>,
}

/// What was on disk at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The durable topology.
    pub definitions: Definitions,
    /// Each durable queue with its log and its first live messages in order, and
    /// where the rest start on disk and how many there are.
    pub queues: Vec<RecoveredQueue>,
}

impl Store {
    /// Opens (creating if needed) a data directory and reads back what it holds.
    ///
    /// A damaged definitions file stops the start-up with an error rather than
    /// starting empty and then overwriting what could still be rescued.
    pub fn open(root: &Path) -> io::Result<(Self, Recovered)> {
        Self::open_with_segment_size(root, SEGMENT_SIZE)
    }

    /// As [`open`](Self::open), with queue logs starting a new segment file at
    /// `segment_size` bytes instead of [`SEGMENT_SIZE`]. Space is reclaimed a whole
    /// segment at a time, so smaller segments give space back sooner (the disk alarm
    /// with a small `max_disk_bytes` needs that).
    pub fn open_with_segment_size(root: &Path, segment_size: u32) -> io::Result<(Self, Recovered)> {
        fs::create_dir_private(&root.join("queues"))?;
        let definitions = match std::fs::read(root.join("definitions")) {
            Ok(bytes) => Definitions::decode(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", root.join("definitions").display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Definitions::default(),
            Err(e) => return Err(e),
        };
        let clean = root.join(CLEAN).exists();
        if clean {
            // From now on a crash must be seen as one.
            std::fs::remove_file(root.join(CLEAN))?;
            fs::sync_dir_if_exists(root)?;
        }
        let mut queues = Vec::with_capacity(definitions.queues.len());
        let mut messages = 0u64;
        for def in &definitions.queues {
            let dir = queue_dir(root, def.dir_id);
            // A queue that keeps every ready message in memory loads them all.
            let keep = if crate::args::keeps_ready_in_memory(&def.arguments) {
                usize::MAX
            } else {
                crate::queue::PAGE_OUT_AT
            };
            let (mut log, mut live, paged) = QueueLog::open_paged(&dir, segment_size, keep)?;
            if !clean {
                log.mark_all_delivered();
                for m in &mut live {
                    m.delivered = true;
                }
            }
            messages += live.len() as u64 + paged.map_or(0, |(_, n)| n);
            queues.push(RecoveredQueue {
                def: def.clone(),
                log,
                messages: live,
                paged,
            });
        }
        remove_orphans(root, &definitions);
        tracing::info!(
            dir = %root.display(),
            exchanges = definitions.exchanges.len(),
            queues = queues.len(),
            bindings = definitions.bindings.len(),
            messages,
            clean,
            "recovered durable state"
        );
        let syncer = Syncer::start(root.to_path_buf())?;
        Ok((
            Self {
                root: root.to_path_buf(),
                syncer,
                segment_size,
            },
            Recovered {
                definitions,
                queues,
            },
        ))
    }

    /// The directory of the durable queue with this id.
    pub fn queue_dir(&self, dir_id: u64) -> PathBuf {
        queue_dir(&self.root, dir_id)
    }

    /// A log for a newly declared durable queue (its directory is created lazily by
    /// the sync thread; a leftover one is cleared).
    pub fn new_queue_log(&self, dir_id: u64) -> io::Result<QueueLog> {
        let dir = self.queue_dir(dir_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        QueueLog::open(&dir, self.segment_size).map(|(log, _)| log)
    }

    /// The sync thread.
    pub fn syncer(&self) -> &Syncer {
        &self.syncer
    }

    /// Shuts down cleanly: writes and syncs everything submitted, stops the sync
    /// thread, then leaves the `clean-shutdown` marker so that the next
    /// [`open`](Self::open) trusts the delivery markers. Submit the last batch first.
    pub fn close(&self) {
        self.syncer.shutdown();
        let marked = fs::create_private(&self.root.join(CLEAN))
            .and_then(|_| fs::sync_dir_if_exists(&self.root));
        if let Err(err) = marked {
            tracing::warn!(%err, dir = %self.root.display(), "could not mark the clean shutdown; the next start marks every message redelivered");
        }
    }
}

fn queue_dir(root: &Path, dir_id: u64) -> PathBuf {
    root.join("queues").join(dir_id.to_string())
}

/// Deletes queue directories no definition refers to (a queue deleted just before a
/// crash, whose directory removal did not happen).
fn remove_orphans(root: &Path, defs: &Definitions) {
    let Ok(entries) = std::fs::read_dir(root.join("queues")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let known = name
            .to_str()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|id| defs.queues.iter().any(|q| q.dir_id == id));
        if !known {
            tracing::info!(dir = %entry.path().display(), "removing the directory of a deleted queue");
            if let Err(err) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(%err, dir = %entry.path().display(), "could not remove");
            }
        }
    }
}

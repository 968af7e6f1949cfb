//! The sync thread: every byte the store writes goes through here, in order, and a
//! batch's ticket is reported synced only after `fdatasync` of every file it touched.
//!
//! Group commit: the event loop hands over batches (cheap: buffers already encoded)
//! and goes on; the thread takes every batch queued while it was busy, writes them
//! all, syncs each touched file once, and then wakes everyone waiting on any of those
//! tickets. Under load one sync serves every publisher of that moment.
//!
//! A failed write (a full disk, say) is retried, the same batches in the same order,
//! until it succeeds: writes are positioned, so a retry is idempotent. Meanwhile
//! nothing is reported synced, so no confirm goes out for data that is not on disk,
//! and [`Syncer::failing`] tells the broker to block publishers. A caller that must
//! know how its batch fared before answering (a durable `queue.declare`) waits with
//! [`Syncer::wait_written`], which also returns at the batch's first failed attempt.
//!
//! Files are created `0600` and directories `0700`: message bodies and the users
//! file's password hashes are for the broker's user only.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::fs::{create_dir_private, replace_file, sync_dir_if_exists};
use super::log::PendingWrites;

/// One unit of work for the sync thread.
#[derive(Debug)]
pub enum Job {
    /// Records and acks of one queue's log.
    Queue {
        /// The queue's directory.
        dir: PathBuf,
        /// What to write there.
        writes: PendingWrites,
    },
    /// A deleted queue: its directory goes.
    RemoveQueue {
        /// The queue's directory.
        dir: PathBuf,
    },
    /// A new snapshot of the durable topology.
    Definitions {
        /// The encoded snapshot.
        bytes: Vec<u8>,
    },
}

/// Jobs handed over together, with the ticket that reports them synced.
#[derive(Debug)]
pub struct Batch {
    /// Increases by one per batch.
    pub ticket: u64,
    /// In order.
    pub jobs: Vec<Job>,
}

#[derive(Debug, Default)]
struct SyncState {
    synced: AtomicU64,
    failing: AtomicBool,
    waiters: Mutex<Vec<(u64, Arc<Notify>)>>,
    /// The highest ticket of a batch whose write has failed at least once, and the
    /// error, for [`Syncer::wait_written`] (with `attempted` to wake it).
    failed: Mutex<(u64, Option<String>)>,
    attempted: parking_lot::Condvar,
}

/// Handle to the sync thread.
#[derive(Debug)]
pub struct Syncer {
    tx: Mutex<Option<mpsc::Sender<Batch>>>,
    state: Arc<SyncState>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// How long a failed write waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

impl Syncer {
    /// Starts the thread writing under `root`.
    pub fn start(root: PathBuf) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let state = Arc::new(SyncState::default());
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("broker-sync".into())
            .spawn(move || run(&root, &rx, &thread_state))?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            state,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hands a batch over. Batches must be submitted in ticket order.
    pub fn submit(&self, batch: Batch) {
        if let Some(tx) = self.tx.lock().as_ref()
            && tx.send(batch).is_err()
        {
            tracing::error!("store sync thread is gone; data will not be synced");
        }
    }

    /// The highest ticket whose batches are on disk.
    pub fn synced(&self) -> u64 {
        self.state.synced.load(Ordering::Acquire)
    }

    /// Whether writes are failing (full disk, I/O error) and being retried.
    pub fn failing(&self) -> bool {
        self.state.failing.load(Ordering::Acquire)
    }

    /// Blocks until the batch with `ticket` is synced (`Ok`), or its first write
    /// attempt failed (`Err`, the batch is still being retried and may land later),
    /// or `timeout` passed (`Err` too). For rare operations that must not be answered
    /// before their write (a durable `queue.declare`); never on the data path.
    pub fn wait_written(&self, ticket: u64, timeout: Duration) -> io::Result<()> {
        let until = std::time::Instant::now() + timeout;
        let mut failed = self.state.failed.lock();
        loop {
            if self.synced() >= ticket {
                return Ok(());
            }
            if failed.0 >= ticket {
                let err = failed.1.clone().unwrap_or_default();
                return Err(io::Error::other(err));
            }
            if self
                .state
                .attempted
                .wait_until(&mut failed, until)
                .timed_out()
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the store did not write in time",
                ));
            }
        }
    }

    /// Wakes `notify` once `ticket` is synced (at once if it already is).
    pub fn wake_when_synced(&self, ticket: u64, notify: &Arc<Notify>) {
        let mut waiters = self.state.waiters.lock();
        // Checked under the lock the thread takes to wake: no lost wake-up.
        if self.synced() >= ticket {
            notify.notify_one();
            return;
        }
        waiters.push((ticket, Arc::clone(notify)));
    }

    /// Writes and syncs everything submitted, then stops the thread.
    pub fn shutdown(&self) {
        drop(self.tx.lock().take());
        if let Some(thread) = self.thread.lock().take()
            && thread.join().is_err()
        {
            tracing::error!("store sync thread panicked");
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(root: &Path, rx: &mpsc::Receiver<Batch>, state: &SyncState) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        batches.extend(rx.try_iter());
        let mut attempt = 0u32;
        while let Err(err) = write_all(root, &batches) {
            if attempt == 0 {
                tracing::error!(%err, "store write failed; publishers are blocked until it succeeds");
            }
            attempt += 1;
            state.failing.store(true, Ordering::Release);
            if let Some(last) = batches.last() {
                *state.failed.lock() = (last.ticket, Some(err.to_string()));
                state.attempted.notify_all();
            }
            std::thread::sleep(RETRY_AFTER);
            batches.extend(rx.try_iter());
        }
        if attempt > 0 {
            tracing::info!(attempts = attempt + 1, "store writes succeed again");
            state.failing.store(false, Ordering::Release);
        }
        let Some(ticket) = batches.last().map(|b| b.ticket) else {
            continue;
        };
        {
            // Under the lock `wait_written` checks with: no lost wake-up.
            let _failed = state.failed.lock();
            state.synced.store(ticket, Ordering::Release);
            state.attempted.notify_all();
        }
        let mut waiters = state.waiters.lock();
        waiters.retain(|(t, notify)| {
            if *t <= ticket {
                notify.notify_one();
                false
            } else {
                true
            }
        });
    }
}

/// Performs every job in order, then syncs each file and directory written.
fn write_all(root: &Path, batches: &[Batch]) -> io::Result<()> {
    // Each file once, by path: a later batch's handle to the same file replaces the
    // earlier one (either syncs it).
    let mut files: BTreeMap<PathBuf, File> = BTreeMap::new();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for job in batches.iter().flat_map(|b| &b.jobs) {
        match job {
            Job::Queue { dir, writes } => {
                if !dir.exists() {
                    create_dir_private(dir)?;
                    dirs.insert(dir.parent().unwrap_or(root).to_path_buf());
                }
                let written = writes.write_unsynced(dir)?;
                if written.dir_changed {
                    dirs.insert(dir.clone());
                }
                files.extend(written.files);
            }
            Job::RemoveQueue { dir } => {
                files.retain(|f, _| !f.starts_with(dir));
                dirs.remove(dir);
                match fs::remove_dir_all(dir) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                dirs.insert(dir.parent().unwrap_or(root).to_path_buf());
            }
            Job::Definitions { bytes } => {
                replace_file(&root.join("definitions"), bytes)?;
                dirs.insert(root.to_path_buf());
            }
        }
    }
    // A file deleted after being written (a reclaimed segment) syncs harmlessly.
    for file in files.values() {
        file.sync_data()?;
    }
    for d in &dirs {
        sync_dir_if_exists(d)?;
    }
    Ok(())
}

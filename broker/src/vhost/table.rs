//! The broker's virtual hosts by name: each a [`VHost`] behind its own lock, with its
//! own store when the broker has a data directory (see [`crate::store::vhosts`] for
//! the layout).
//!
//! A connection looks its vhost up once, at `connection.open`, and keeps the
//! [`Arc<VHostEntry>`]: the data path takes the vhost's lock and nothing else, as with
//! a single vhost. The map itself is only read at `connection.open`, by the
//! housekeeping tick and by the management side, and written when a vhost is created
//! or deleted.
//!
//! With a data directory, one vhost whose store cannot be read (a damaged definitions
//! file) does not stop the start: it is logged, not served, and stays listed with its
//! data untouched, to be repaired by hand. Only `/`'s store is required. A vhost is
//! listed only once its store exists, so a failed creation leaves nothing behind.
//!
//! Deleting a vhost empties it (queues, messages, exchanges), stops its store's sync
//! thread and removes its data; connections still holding its entry see it marked
//! deleted and are closed by the caller (see `crate::shared::Shared::delete_vhost`).

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use super::VHost;
use crate::deprecated::DeprecatedFeatures;
use crate::limits::ConsumerTimeout;
use crate::store::{self, Store};

/// One vhost.
#[derive(Debug)]
pub(crate) struct VHostEntry {
    name: String,
    /// Its state: taken once per operation (see [`VHostEntry::lock`]).
    vhost: Mutex<VHost>,
    /// Its store, for confirms waiting on the sync thread without the vhost lock.
    pub(crate) store: Option<Arc<Store>>,
    deleted: AtomicBool,
}

impl VHostEntry {
    /// Takes the vhost's lock: one per operation, and nothing else on the data path.
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, VHost> {
        self.vhost.lock()
    }

    /// The lock itself, for a channel's context.
    pub(crate) fn state(&self) -> &Mutex<VHost> {
        &self.vhost
    }

    fn new(vhost: VHost) -> Self {
        Self {
            name: vhost.name().to_owned(),
            store: vhost.store().cloned(),
            vhost: Mutex::new(vhost),
            deleted: AtomicBool::new(false),
        }
    }

    /// The vhost's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether the vhost has been deleted (its connections are being closed).
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }
}

/// Where vhost stores live.
#[derive(Debug, Clone)]
struct DataDir {
    root: PathBuf,
    segment_size: u32,
}

/// Every vhost of a broker.
#[derive(Debug)]
pub(crate) struct VHosts {
    map: RwLock<BTreeMap<String, Arc<VHostEntry>>>,
    data: Option<DataDir>,
    /// Listed vhosts whose store could not be opened at start: kept in the list (so
    /// their data is never taken for an orphan) but not served.
    unavailable: Mutex<Vec<String>>,
    /// Serialises creations and deletions (which do file I/O outside the map's lock).
    admin: Mutex<()>,
    /// The deprecated features every vhost permits.
    deprecated: DeprecatedFeatures,
    /// Every vhost's consumer timeout.
    consumer_timeout: ConsumerTimeout,
}

impl VHosts {
    /// Opens `/` and, with a data directory, every vhost kept there, reading back
    /// their durable state; then creates each of `extra` that does not exist yet.
    /// Every vhost permits the `deprecated` features and has the consumer timeout.
    pub(crate) fn open(
        data_dir: Option<(PathBuf, u32)>,
        extra: &[String],
        (deprecated, consumer_timeout): (DeprecatedFeatures, ConsumerTimeout),
    ) -> io::Result<Self> {
        let data = data_dir.map(|(root, segment_size)| DataDir { root, segment_size });
        let vhosts = Self {
            map: RwLock::new(BTreeMap::new()),
            data,
            unavailable: Mutex::new(Vec::new()),
            admin: Mutex::new(()),
            deprecated,
            consumer_timeout,
        };
        let mut names = vec!["/".to_owned()];
        if let Some(d) = &vhosts.data {
            store::fs::create_dir_private(&d.root)?;
            names.extend(store::vhosts::read_list(&d.root)?);
            store::vhosts::remove_orphans(&d.root, &names);
        }
        for name in &names {
            match vhosts.open_one(name) {
                Ok(entry) => {
                    vhosts.map.write().insert(name.clone(), Arc::new(entry));
                }
                Err(err) if name != "/" => {
                    tracing::error!(vhost = %name, %err, "cannot open the vhost's store; not serving it (its data is kept)");
                    vhosts.unavailable.lock().push(name.clone());
                }
                Err(err) => return Err(err),
            }
        }
        for name in extra {
            if !vhosts.unavailable.lock().contains(name) {
                vhosts.create(name)?;
            }
        }
        Ok(vhosts)
    }

    /// Every vhost the list keeps: those served and those that could not be opened
    /// (whose permissions are kept too).
    pub(crate) fn listed(&self) -> Vec<String> {
        let mut names = self.names();
        names.extend(self.unavailable.lock().iter().cloned());
        names
    }

    fn open_one(&self, name: &str) -> io::Result<VHostEntry> {
        let mut vhost = match &self.data {
            Some(d) => {
                let dir = store::vhosts::store_dir(&d.root, name);
                let (store, recovered) = Store::open_with_segment_size(&dir, d.segment_size)?;
                VHost::with_store(name, Arc::new(store), recovered)
            }
            None => VHost::named(name),
        };
        vhost.deprecated = self.deprecated;
        vhost.consumer_timeout = self.consumer_timeout;
        Ok(VHostEntry::new(vhost))
    }

    /// The deprecated features every vhost permits.
    pub(crate) fn deprecated(&self) -> DeprecatedFeatures {
        self.deprecated
    }

    /// The vhosts whose data could not be opened, by name (they serve nothing).
    pub(crate) fn unavailable(&self) -> Vec<String> {
        let mut names: Vec<String> = self.unavailable.lock().iter().cloned().collect();
        names.sort();
        names
    }

    /// The vhost called `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<VHostEntry>> {
        self.map.read().get(name).cloned()
    }

    /// Every vhost, by name.
    pub(crate) fn all(&self) -> Vec<Arc<VHostEntry>> {
        self.map.read().values().cloned().collect()
    }

    /// Calls `f` on every vhost, by name, under the map's read lock (no allocation:
    /// the housekeeping tick runs this 40 times a second).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&VHostEntry)) {
        for entry in self.map.read().values() {
            f(entry);
        }
    }

    /// The names of every vhost, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.map.read().keys().cloned().collect()
    }

    /// Creates the vhost `name`, persisting it with a data directory; `false` if it
    /// already existed.
    pub(crate) fn create(&self, name: &str) -> io::Result<bool> {
        let _admin = self.admin.lock();
        if self.map.read().contains_key(name) {
            return Ok(false);
        }
        if name.len() > 255 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a vhost name is at most 255 bytes",
            ));
        }
        if self.unavailable.lock().iter().any(|n| n == name) {
            return Err(io::Error::other(format!(
                "vhost '{name}' exists but its store could not be opened at start"
            )));
        }
        // The store first, then the list: a failure (or a crash) in between leaves an
        // unlisted directory, removed as an orphan, never a listed vhost that cannot
        // open.
        let entry = Arc::new(self.open_one(name)?);
        if let Some(d) = &self.data {
            let mut names = self.listed();
            names.push(name.to_owned());
            if let Err(err) = store::vhosts::write_list(&d.root, &names) {
                if let Some(store) = &entry.store {
                    store.syncer().shutdown();
                }
                let _ = remove_if_present(&store::vhosts::store_dir(&d.root, name));
                return Err(err);
            }
        }
        self.map.write().insert(name.to_owned(), entry);
        tracing::info!(vhost = name, "vhost created");
        Ok(true)
    }

    /// Deletes the vhost `name`: it leaves the map, is marked deleted, loses its
    /// queues, messages and exchanges, and its data is removed. `None` if there was
    /// no such vhost.
    pub(crate) fn delete(&self, name: &str) -> io::Result<Option<Arc<VHostEntry>>> {
        let _admin = self.admin.lock();
        let Some(entry) = self.map.write().remove(name) else {
            return Ok(None);
        };
        entry.deleted.store(true, Ordering::SeqCst);
        let store = entry.lock().clear_for_deletion();
        if let Some(store) = store {
            // Whatever was submitted is written (and then removed); nothing more can be.
            store.syncer().shutdown();
        }
        if let Some(d) = &self.data {
            // Unlisted first: a crash before the removal leaves an orphan, removed at
            // the next start.
            store::vhosts::write_list(&d.root, &self.listed())?;
            let dir = store::vhosts::store_dir(&d.root, name);
            if name == "/" {
                // The default vhost's store is the data directory itself.
                remove_if_present(&dir.join("queues"))?;
                match std::fs::remove_file(dir.join("definitions")) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            } else {
                remove_if_present(&dir)?;
            }
        }
        tracing::info!(vhost = name, "vhost deleted");
        Ok(Some(entry))
    }
}

fn remove_if_present(dir: &std::path::Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_get_delete_in_memory() {
        let v = VHosts::open(None, &["extra".to_owned()], Default::default()).expect("open");
        assert_eq!(v.names(), ["/", "extra"]);
        assert!(v.create("b").expect("create"));
        assert!(!v.create("b").expect("again"));
        let b = v.get("b").expect("b");
        assert_eq!(b.name(), "b");
        assert!(!b.is_deleted());
        assert!(v.delete("b").expect("delete").is_some());
        assert!(b.is_deleted());
        assert!(v.get("b").is_none());
        assert!(v.delete("b").expect("delete again").is_none());
    }
}

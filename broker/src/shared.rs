//! The state every connection of one broker shares: the vhosts, the user table, the
//! limits, the alarms and the registry of live connections. The server owns it, every
//! connection task and the management API hold an `Arc` of it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::alarm::Alarms;
use crate::auth::Users;
use crate::limits::Limits;
use crate::policy::Policies;
use crate::resource_limits::ResourceLimits;
use crate::vhost::VHosts;

/// State shared by every connection of a broker.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The vhosts, each with its own lock and (with a data directory) its own store.
    pub(crate) vhosts: VHosts,
    /// Users, vhosts and permissions; changed at run time by the management side.
    pub(crate) users: parking_lot::RwLock<Users>,
    pub(crate) config: Limits,
    /// On while publishers must be blocked (see [`crate::alarm`]).
    pub(crate) alarm: Alarms,
    /// Live connections, for the management API.
    pub(crate) registry: crate::management::registry::Registry,
    /// With a data directory: where the user table is saved, and the generation of the
    /// table last written (see [`Shared::save_users`]).
    users_file: Option<(std::path::PathBuf, parking_lot::Mutex<u64>)>,
    next_id: AtomicU64,
    /// The listeners, as RabbitMQ names their protocols (`amqp`, `amqp/ssl`, `http`,
    /// `https`), for the overview and the listener health checks.
    pub(crate) listeners: Vec<Listener>,
    /// When the broker started, for the node's uptime.
    pub(crate) started: std::time::Instant,
    /// The counters' last samples, for the management API's rates.
    pub(crate) rates: crate::management::rates::Rates,
    /// Per-vhost and per-user limits (see [`crate::resource_limits`]).
    pub(crate) resource_limits: parking_lot::RwLock<ResourceLimits>,
    /// Policies and operator policies (see [`crate::policy`]); written only through
    /// [`Shared::change_policies`].
    pub(crate) policies: parking_lot::RwLock<Policies>,
    /// Held across a policy change and its save, so that saves go out in order.
    policies_save: parking_lot::Mutex<()>,
    /// Global runtime parameters (see [`crate::global_parameters`]); the mutex is
    /// held across a change and its save.
    pub(crate) global_parameters: parking_lot::Mutex<crate::global_parameters::GlobalParameters>,
    /// Vhost descriptions, tags and default queue types (see [`crate::vhost_metadata`]);
    /// the mutex is held across a change and its save.
    vhost_metadata: parking_lot::Mutex<crate::vhost_metadata::AllMetadata>,
    /// Authentication attempts by protocol (`/api/auth/attempts/{node}`).
    pub(crate) auth_attempts: crate::auth::AuthAttempts,
}

/// One listening socket.
#[derive(Debug, Clone)]
pub(crate) struct Listener {
    /// RabbitMQ's protocol name for it.
    pub(crate) protocol: &'static str,
    /// Where it listens.
    pub(crate) addr: std::net::SocketAddr,
}

impl Shared {
    /// The shared state; with `data_dir`, run-time changes to `users` are saved there
    /// by [`Shared::save_users`] (`users` as given is taken as already saved).
    pub(crate) fn new(
        mut users: Users,
        config: Limits,
        vhosts: VHosts,
        data_dir: Option<std::path::PathBuf>,
    ) -> Self {
        for name in vhosts.names() {
            users.add_vhost(&name);
        }
        let users_file = data_dir.map(|dir| (dir, parking_lot::Mutex::new(users.generation())));
        Self {
            users_file,
            vhosts,
            users: parking_lot::RwLock::new(users),
            config,
            alarm: Alarms::default(),
            registry: Default::default(),
            next_id: AtomicU64::new(1),
            listeners: Vec::new(),
            started: std::time::Instant::now(),
            rates: Default::default(),
            resource_limits: Default::default(),
            policies: Default::default(),
            policies_save: Default::default(),
            global_parameters: Default::default(),
            vhost_metadata: Default::default(),
            auth_attempts: Default::default(),
        }
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates a vhost (persisted with a data directory); `false` if it existed.
    pub(crate) fn create_vhost(&self, name: &str) -> std::io::Result<bool> {
        let created = self.vhosts.create(name)?;
        self.users.write().add_vhost(name);
        Ok(created)
    }

    /// Saves the user table with a data directory (a no-op without one, or if it has
    /// not changed since it was last saved). Call it after every run-time change to
    /// users or permissions; it does file I/O (blocking).
    ///
    /// The save lock is taken before the table is read, so whichever call writes last
    /// writes the newest table.
    pub(crate) fn save_users(&self) -> std::io::Result<()> {
        let Some((dir, written)) = &self.users_file else {
            return Ok(());
        };
        let mut written = written.lock();
        let (generation, bytes) = {
            let users = self.users.read();
            (users.generation(), users.encode())
        };
        if generation == *written {
            return Ok(());
        }
        crate::auth::save_file(dir, &bytes)?;
        *written = generation;
        Ok(())
    }

    /// Installs `limits`: each vhost's `max-queues` goes to the vhost, which checks
    /// it on declare.
    pub(crate) fn set_resource_limits(&self, limits: ResourceLimits) {
        for e in self.vhosts.all() {
            e.lock().max_queues = limits.max_queues(e.name());
        }
        *self.resource_limits.write() = limits;
    }

    /// Saves the resource limits with a data directory (a no-op without one); file
    /// I/O (blocking).
    pub(crate) fn save_resource_limits(&self) -> std::io::Result<()> {
        let Some((dir, _)) = &self.users_file else {
            return Ok(());
        };
        let limits = self.resource_limits.read().clone();
        limits.save(dir)
    }

    /// Changes the policies with `change` and applies them to the vhosts whose
    /// policies changed (each vhost's queues and exchanges at once); saves them with
    /// a data directory (blocking file I/O). Returns what `change` returned.
    pub(crate) fn change_policies<T>(
        &self,
        change: impl FnOnce(&mut Policies) -> T,
    ) -> std::io::Result<T> {
        let _saving = self.policies_save.lock();
        let (before, after, out) = {
            let mut policies = self.policies.write();
            let before = policies.clone();
            let out = change(&mut policies);
            (before, policies.clone(), out)
        };
        for e in self.vhosts.all() {
            let name = e.name();
            let same = |p: &Policies| (p.user.get(name).cloned(), p.operator.get(name).cloned());
            if same(&before) != same(&after) {
                let compiled = after.for_vhost(name);
                e.lock().set_policies(compiled);
            }
        }
        if before != after
            && let Some((dir, _)) = &self.users_file
        {
            after.save(dir)?;
        }
        Ok(out)
    }

    /// Changes the global parameters with `change` and saves them with a data
    /// directory (blocking file I/O); what `change` returned.
    pub(crate) fn change_global_parameters<T>(
        &self,
        change: impl FnOnce(&mut crate::global_parameters::GlobalParameters) -> T,
    ) -> std::io::Result<T> {
        let mut params = self.global_parameters.lock();
        let out = change(&mut params);
        if let Some((dir, _)) = &self.users_file {
            crate::global_parameters::save(dir, &params)?;
        }
        Ok(out)
    }

    /// A vhost's metadata (RabbitMQ's defaults if none was set).
    pub(crate) fn vhost_metadata(&self, vhost: &str) -> crate::vhost_metadata::Metadata {
        self.vhost_metadata
            .lock()
            .get(vhost)
            .cloned()
            .unwrap_or_else(|| crate::vhost_metadata::Metadata::default_for(vhost))
    }

    /// Sets a vhost's metadata (`None`: forgets it), tells the vhost its default queue
    /// type, and saves with a data directory (blocking file I/O).
    pub(crate) fn set_vhost_metadata(
        &self,
        vhost: &str,
        metadata: Option<crate::vhost_metadata::Metadata>,
    ) -> std::io::Result<()> {
        let mut all = self.vhost_metadata.lock();
        if let Some(e) = self.vhosts.get(vhost) {
            e.lock().quorum_by_default = metadata
                .as_ref()
                .is_some_and(crate::vhost_metadata::Metadata::quorum_by_default);
        }
        let changed = match metadata {
            Some(m) => all.insert(vhost.to_owned(), m.clone()) != Some(m),
            None => all.remove(vhost).is_some(),
        };
        if changed && let Some((dir, _)) = &self.users_file {
            crate::vhost_metadata::save(dir, &all)?;
        }
        Ok(())
    }

    /// Installs the metadata read at start (no save).
    pub(crate) fn install_vhost_metadata(&self, all: crate::vhost_metadata::AllMetadata) {
        for (name, m) in &all {
            if let Some(e) = self.vhosts.get(name) {
                e.lock().quorum_by_default = m.quorum_by_default();
            }
        }
        *self.vhost_metadata.lock() = all;
    }

    /// Installs the policies read at start (no save) on every vhost.
    pub(crate) fn install_policies(&self, policies: Policies) {
        for e in self.vhosts.all() {
            let compiled = policies.for_vhost(e.name());
            e.lock().set_policies(compiled);
        }
        *self.policies.write() = policies;
    }

    /// Deletes a vhost as RabbitMQ does: its permissions go first (no new
    /// connection gets in; saved with a data directory), then its queues, exchanges and
    /// data, and its connections are closed with 320 CONNECTION_FORCED "vhost 'NAME'
    /// is deleted". `false` if there was no such vhost.
    pub(crate) fn delete_vhost(&self, name: &str) -> std::io::Result<bool> {
        // Unknown to the user table is fine: the map decides.
        let _ = self.users.write().delete_vhost(name);
        self.save_users()?;
        let deleted = self.vhosts.delete(name)?;
        if deleted.is_some() {
            self.registry
                .close_vhost(name, &format!("vhost '{name}' is deleted"));
            // Its limits go with it, as RabbitMQ's do.
            if self.resource_limits.write().vhosts.remove(name).is_some() {
                self.save_resource_limits()?;
            }
            // And its metadata and policies.
            self.set_vhost_metadata(name, None)?;
            self.change_policies(|p| {
                p.user.remove(name);
                p.operator.remove(name);
            })?;
        }
        Ok(deleted.is_some())
    }
}

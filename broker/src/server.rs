//! The listeners: accepts sockets (plain AMQP, and AMQP over TLS when configured),
//! spawns a [`crate::connection`] task for each, runs the housekeeping tick (message
//! TTL, `x-expires`, the memory and disk alarms), and shuts everything down on request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::alarm::Alarms;
use crate::auth::Users;
use crate::vhosts::VHosts;

/// Limits offered in `connection.tune`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame, in bytes (RabbitMQ: 131072).
    pub frame_max: u32,
    /// Highest channel number (RabbitMQ: 2047).
    pub channel_max: u16,
    /// Suggested heartbeat, in seconds (RabbitMQ: 60).
    pub heartbeat: u16,
    /// Largest message body accepted, in bytes (RabbitMQ's `max_message_size`:
    /// 128 MiB). A larger one is refused from its content header, before any of the
    /// body is buffered, with 406 PRECONDITION_FAILED.
    pub max_message_size: u64,
    /// Most connections served at once (RabbitMQ's `connection_max`; `None`: no limit).
    /// As RabbitMQ 3.10's listener does, the broker stops accepting while at the limit:
    /// newcomers wait in the kernel's backlog, unanswered, until a connection closes.
    pub max_connections: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: crate::channel::MAX_MESSAGE_SIZE,
            max_connections: None,
        }
    }
}

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
        }
        Ok(deleted.is_some())
    }
}

/// How often queues are swept for expired messages and idle `x-expires` queues.
const SWEEP_INTERVAL: Duration = Duration::from_millis(25);

/// The TLS port's listener and the acceptor its handshakes use.
pub(crate) type TlsListener = (TcpListener, tokio_rustls::TlsAcceptor);

/// Accepts connections on the plain port and, if there is one, the TLS port until
/// `shutdown` turns true, then closes every connection. `max_connections` counts the
/// connections of both ports (a TLS one from its accept, handshake included).
pub(crate) async fn run(
    listener: TcpListener,
    tls: Option<TlsListener>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let room = shared
            .config
            .max_connections
            .is_none_or(|max| connections.len() < max);
        tokio::select! {
            accepted = listener.accept(), if room => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(crate::connection::serve(stream, peer, Arc::clone(&shared), shutdown.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
            accepted = accept_tls(tls.as_ref()), if room && tls.is_some() => match accepted {
                Ok((stream, peer, acceptor)) => {
                    // The handshake runs in the connection's task, never here.
                    connections.spawn(crate::connection::serve_tls(stream, acceptor, peer, Arc::clone(&shared), shutdown.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
            _ = sweep.tick() => {
                let now = std::time::Instant::now();
                let (mut bytes, mut failing) = (0, false);
                let [low_memory, _] = shared.alarm.state();
                shared.vhosts.for_each(|entry| {
                    let mut vhost = entry.vhost.lock();
                    vhost.set_memory_pressure(low_memory);
                    vhost.sweep(now);
                    bytes += vhost.store_bytes();
                    drop(vhost);
                    failing |= entry.store.as_ref().is_some_and(|s| s.syncer().failing());
                });
                shared.alarm.check(failing, bytes);
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    drop(tls);
    // Connections saw the same signal and are closing with 320 CONNECTION_FORCED.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
    shared.vhosts.for_each(|entry| {
        entry.vhost.lock().commit_store();
        if let Some(store) = &entry.store {
            store.close();
        }
    });
}

/// Accepts on the TLS port; never ready without one.
async fn accept_tls(
    tls: Option<&TlsListener>,
) -> std::io::Result<(TcpStream, SocketAddr, tokio_rustls::TlsAcceptor)> {
    match tls {
        Some((listener, acceptor)) => {
            let (stream, peer) = listener.accept().await?;
            Ok((stream, peer, acceptor.clone()))
        }
        None => std::future::pending().await,
    }
}

/// Out of file descriptors and the like: back off instead of spinning.
async fn accept_failed(err: std::io::Error) {
    tracing::warn!(%err, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Binds the listener (split out so callers learn the port before serving starts).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

//! Configuring and starting a broker: [`Broker::builder`], the builder's settings
//! (RabbitMQ's defaults until changed), and [`BrokerBuilder::start`], which binds the
//! listeners, opens the data directory and spawns the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::StartError;
use crate::limits::ConsumerTimeout;
use crate::{
    BrokerHandle, DeprecatedFeatures, Limits, ManagementLimits, MemoryWatermark, TlsConfig, alarm,
    auth, management, server, shared, store, vhost,
};

/// Entry point: `Broker::builder().listen(addr).start().await`.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// A builder with RabbitMQ's defaults, listening on `127.0.0.1:0`.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            users: auth::config::UserConfig::default(),
            limits: Limits::default(),
            data_dir: None,
            max_disk_bytes: None,
            disk_free_limit: None,
            management: None,
            tls: None,
            tls_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            management_tls: false,
            management_limits: management::ManagementLimits::default(),
            vhosts: Vec::new(),
            memory_high_watermark: MemoryWatermark::default(),
            memory_probe: alarm::resident_memory,
            deprecated: DeprecatedFeatures::default(),
            consumer_timeout: ConsumerTimeout::default(),
        }
    }
}

/// Configures a broker before it starts.
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    listen: SocketAddr,
    users: auth::config::UserConfig,
    limits: Limits,
    data_dir: Option<PathBuf>,
    max_disk_bytes: Option<u64>,
    disk_free_limit: Option<u64>,
    management: Option<SocketAddr>,
    tls: Option<TlsConfig>,
    tls_listen: SocketAddr,
    management_tls: bool,
    management_limits: management::ManagementLimits,
    vhosts: Vec<String>,
    memory_high_watermark: MemoryWatermark,
    memory_probe: alarm::MemoryProbe,
    deprecated: DeprecatedFeatures,
    consumer_timeout: ConsumerTimeout,
}

impl BrokerBuilder {
    /// Which of RabbitMQ's deprecated features are permitted (default: both, as
    /// RabbitMQ 3.x and 4.0 do). [`DeprecatedFeatures::denied`] runs the broker as
    /// RabbitMQ 4.3 does: transient non-exclusive queues are refused with
    /// `541 INTERNAL_ERROR` (closing the connection) and global QoS is applied per
    /// consumer. See [`DeprecatedFeatures`].
    pub fn deprecated_features(mut self, features: DeprecatedFeatures) -> Self {
        self.deprecated = features;
        self
    }

    /// How long a delivery may stay unacked before its channel is closed (RabbitMQ's
    /// `consumer_timeout`; default 30 minutes, `None` for no limit), or its consumer
    /// cancelled. A queue's `x-consumer-timeout` overrides it. See [`ConsumerTimeout`].
    pub fn consumer_timeout(mut self, timeout: ConsumerTimeout) -> Self {
        self.consumer_timeout = timeout;
        self
    }

    /// Also serves AMQP over TLS (`amqps`) with this certificate, on
    /// [`tls_listen`](Self::tls_listen) (see [`BrokerHandle::tls_addr`]). The plain
    /// port stays open. Off by default.
    pub fn tls(mut self, config: TlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// The address of the TLS port (default `127.0.0.1:0`; RabbitMQ's is 5671).
    /// Used only with [`tls`](Self::tls).
    pub fn tls_listen(mut self, addr: SocketAddr) -> Self {
        self.tls_listen = addr;
        self
    }

    /// Serves the management API as HTTPS with the [`tls`](Self::tls) certificate
    /// instead of plain HTTP. Starting fails if there is no certificate.
    pub fn management_tls(mut self, on: bool) -> Self {
        self.management_tls = on;
        self
    }

    /// Creates the vhost `name` at start (besides `/`, which always exists at first
    /// start), as `rabbitmqctl add_vhost`; existing (recovered from the data
    /// directory) is fine. [`permissions`](Self::permissions) may name it, or any
    /// vhost recovered from the data directory.
    pub fn vhost(mut self, name: &str) -> Self {
        if !self.vhosts.iter().any(|v| v == name) {
            self.vhosts.push(name.to_owned());
        }
        self
    }

    /// Also serves the management HTTP API and `/metrics` on `addr` (port 0 picks a
    /// free port; see [`BrokerHandle::management_addr`]). Off by default.
    pub fn management(mut self, addr: SocketAddr) -> Self {
        self.management = Some(addr);
        self
    }

    /// The management listener's connection cap and timeouts (default: RabbitMQ's,
    /// see [`ManagementLimits`]).
    pub fn management_limits(mut self, limits: ManagementLimits) -> Self {
        self.management_limits = limits;
        self
    }

    /// Keeps durable exchanges, queues and bindings, persistent messages in durable
    /// queues, vhosts, and users with their permissions in `dir`, and recovers them
    /// from it at start. Without it (the default) the broker keeps everything in memory.
    ///
    /// Users and permissions are kept as RabbitMQ keeps them: a fresh directory starts
    /// with `guest`/`guest`; after that what was changed at run time (management API,
    /// `broker ctl`) is what the next start has, `guest` deleted included, with the
    /// [`user`](Self::user), [`user_with_tags`](Self::user_with_tags) and
    /// [`permissions`](Self::permissions) given here applied on top. A damaged users
    /// file (`dir/users`) makes [`start`](Self::start) fail, naming it.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Raises the disk alarm while the durable queues' logs hold more than `bytes`
    /// (default: no limit): connections that publish are blocked, as RabbitMQ does,
    /// until consumers have drained enough. Needs [`data_dir`](Self::data_dir).
    ///
    /// Space is reclaimed a whole segment file at a time, and a queue's last segment
    /// only once a newer one starts; so that a drained queue cannot hold the store over
    /// the limit, segments are made at most a quarter of `bytes` (normally 8 MiB).
    ///
    /// The alarm is also raised, with or without a limit, while the store's writes fail
    /// (a full disk): nothing is confirmed then, and publishers are blocked until the
    /// writes succeed again.
    pub fn max_disk_bytes(mut self, bytes: u64) -> Self {
        self.max_disk_bytes = Some(bytes);
        self
    }

    /// Raises the disk alarm while the filesystem holding the data directory has fewer
    /// than `bytes` available, as RabbitMQ's `disk_free_limit` (default:
    /// 256 KiB, i.e. only a full disk). Checked from the start, so a
    /// broker started on a full disk blocks publishers at once and serves consumers.
    /// Needs [`data_dir`](Self::data_dir).
    pub fn disk_free_limit(mut self, bytes: u64) -> Self {
        self.disk_free_limit = Some(bytes);
        self
    }

    /// Raises the memory alarm while the broker uses more memory than this (RabbitMQ's
    /// `vm_memory_high_watermark`; default: 0.4 of the machine's RAM): connections
    /// that publish are blocked with `connection.blocked` ("low on memory") until
    /// consumers have drained enough, as RabbitMQ does. Checked every 25 ms.
    pub fn memory_high_watermark(mut self, watermark: MemoryWatermark) -> Self {
        self.memory_high_watermark = watermark;
        self
    }

    /// How the memory alarm measures the broker's memory (default:
    /// the process's resident set). A program that embeds
    /// the broker and knows better, such as the `broker` binary with its jemalloc
    /// statistics, passes its own.
    pub fn memory_probe(mut self, probe: alarm::MemoryProbe) -> Self {
        self.memory_probe = probe;
        self
    }

    /// The address to listen on; port 0 picks a free port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Adds a user (besides `guest`) with the `administrator` tag and full rights on
    /// `/`.
    ///
    /// With a [`data_dir`](Self::data_dir), this is applied at every start on top of
    /// the users kept there and wins: a stored user of that name gets this password,
    /// these tags and full rights on `/` again (its other permissions stay), and is
    /// saved so.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        let tags = vec!["administrator".to_owned()];
        self.users.user(name, password, tags, true);
        self
    }

    /// Adds a user with these tags and, as `rabbitmqctl add_user`, no permissions:
    /// grant them with [`BrokerBuilder::permissions`].
    ///
    /// With a [`data_dir`](Self::data_dir), this is applied at every start on top of
    /// the users kept there and wins: a stored user of that name gets this password
    /// and these tags (its stored permissions stay), and is saved so.
    pub fn user_with_tags(mut self, name: &str, password: &str, tags: &[&str]) -> Self {
        let tags = tags.iter().map(|t| (*t).to_owned()).collect();
        self.users.user(name, password, tags, false);
        self
    }

    /// Sets a user's rights in a vhost, as `rabbitmqctl set_permissions`: regular
    /// expressions matched (unanchored, as RabbitMQ does) against queue and exchange
    /// names. Fails now for an invalid pattern; an unknown user or vhost makes
    /// [`start`](Self::start) fail. The user may be one given here or one kept in the
    /// [`data_dir`](Self::data_dir); the vhost one given with [`vhost`](Self::vhost)
    /// or one recovered from the data directory.
    ///
    /// With a data directory, this is applied at every start on top of the stored
    /// permissions and wins for this (user, vhost), and is saved so.
    pub fn permissions(
        mut self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<Self, auth::AuthError> {
        self.users
            .permissions(user, vhost, configure, write, read)?;
        Ok(self)
    }

    /// Largest message body accepted, in bytes (RabbitMQ's `max_message_size`,
    /// default 128 MiB, at most 512 MiB: [`BrokerBuilder::start`] refuses more).
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// Most connections served at once (RabbitMQ's `connection_max`); beyond it new
    /// connections wait, unaccepted, until one closes.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.limits.max_connections = Some(max);
        self
    }

    /// Users that may only connect from loopback (default: `guest`).
    pub fn loopback_users(mut self, users: Vec<String>) -> Self {
        self.users.loopback_users(users);
        self
    }

    /// The limits offered in `connection.tune`.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Binds the listener and starts serving in the background on the current tokio
    /// runtime. The returned handle knows the bound address.
    ///
    /// # Errors
    /// A [`StartError`] naming what could not be done: a limit out of range, a port
    /// that cannot be bound, a data directory that cannot be read or recovered, or
    /// configured users and permissions that do not fit together.
    pub async fn start(self) -> Result<BrokerHandle, StartError> {
        if self.limits.max_message_size > Limits::MAX_MESSAGE_SIZE_CAP {
            return Err(StartError::MaxMessageSize {
                requested: self.limits.max_message_size,
                cap: Limits::MAX_MESSAGE_SIZE_CAP,
            });
        }
        if self.management_tls && self.tls.is_none() {
            return Err(StartError::ManagementTlsWithoutCertificate);
        }
        let listen = |listener: &'static str, addr: SocketAddr| {
            move |source| StartError::Listen {
                listener,
                addr,
                source,
            }
        };
        let listener = server::bind(self.listen)
            .await
            .map_err(listen("AMQP", self.listen))?;
        let addr = listener.local_addr().map_err(listen("AMQP", self.listen))?;
        let tls_listener = match &self.tls {
            Some(config) => Some((
                server::bind(self.tls_listen)
                    .await
                    .map_err(listen("AMQPS", self.tls_listen))?,
                config.amqp_acceptor(),
            )),
            None => None,
        };
        let tls_addr = tls_listener
            .as_ref()
            .map(|(l, _)| l.local_addr())
            .transpose()
            .map_err(listen("AMQPS", self.tls_listen))?;
        let management_tls = match &self.tls {
            Some(config) if self.management_tls => Some(config.http_acceptor()),
            _ => None,
        };
        let management = match self.management {
            Some(at) => Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(listen("the management API", at))?,
            ),
            None => None,
        };
        let management_addr = match (&management, self.management) {
            (Some(l), Some(at)) => Some(l.local_addr().map_err(listen("the management API", at))?),
            _ => None,
        };
        let segment_size = self.max_disk_bytes.map_or(store::SEGMENT_SIZE, |max| {
            u32::try_from(max / 4)
                .unwrap_or(u32::MAX)
                .min(store::SEGMENT_SIZE)
        });
        let data = self.data_dir.clone().map(|dir| (dir, segment_size));
        let vhosts =
            vhost::VHosts::open(data, &self.vhosts, (self.deprecated, self.consumer_timeout))
                .map_err(StartError::Store)?;
        let users = auth::config::open(self.data_dir.as_deref(), &vhosts.listed(), &self.users)?;
        let resource_limits = match self.data_dir.as_deref() {
            Some(dir) => {
                crate::resource_limits::ResourceLimits::load(dir).map_err(StartError::Store)?
            }
            None => Default::default(),
        };
        let policies = match self.data_dir.as_deref() {
            Some(dir) => crate::policy::Policies::load(dir).map_err(StartError::Store)?,
            None => Default::default(),
        };
        let mut shared = shared::Shared::new(users, self.limits, vhosts, self.data_dir.clone());
        shared.set_resource_limits(resource_limits);
        shared.install_policies(policies);
        if let Some(dir) = self.data_dir.as_deref() {
            *shared.global_parameters.lock() =
                crate::global_parameters::load(dir).map_err(StartError::Store)?;
            shared.install_vhost_metadata(
                crate::vhost_metadata::load(dir).map_err(StartError::Store)?,
            );
        }
        let memory_limit = self.memory_high_watermark.bytes(alarm::total_memory());
        match memory_limit {
            Some(bytes) => tracing::info!(bytes, "memory high-water mark"),
            None => tracing::warn!("machine memory unknown: no memory high-water mark"),
        }
        shared.alarm = alarm::Alarms::new(alarm::AlarmConfig {
            max_disk_bytes: self.max_disk_bytes,
            disk_free_limit: self.disk_free_limit,
            data_dir: self.data_dir.clone(),
            memory_limit,
            memory_probe: self.memory_probe,
        });
        // Before the first connection: a full disk holds publishers from the start.
        shared.alarm.check(false, 0);
        let listener_at = |protocol, addr| shared::Listener { protocol, addr };
        shared.listeners = std::iter::once(listener_at("amqp", addr))
            .chain(tls_addr.map(|a| listener_at("amqp/ssl", a)))
            .chain(
                management_addr
                    .map(|a| listener_at(if self.management_tls { "https" } else { "http" }, a)),
            )
            .collect();
        let shared = Arc::new(shared);
        let (tx, rx) = watch::channel(false);
        let management_task = management.map(|l| {
            tokio::spawn(management::serve(
                l,
                management_tls,
                Arc::clone(&shared),
                self.management_limits,
                rx.clone(),
            ))
        });
        let task = tokio::spawn(server::run(listener, tls_listener, shared, rx));
        tracing::info!(%addr, "broker listening");
        if let Some(at) = tls_addr {
            tracing::info!(%at, "broker listening for AMQP over TLS");
        }
        if let Some(at) = management_addr {
            let scheme = if self.management_tls { "https" } else { "http" };
            tracing::info!(%at, scheme, "management API listening");
        }
        Ok(BrokerHandle {
            addr,
            tls_addr,
            management_addr,
            shutdown: tx,
            task: Some(task),
            management_task,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_a_listen_error_that_names_the_listener_and_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let at = taken.local_addr().expect("addr");
        let err = Broker::builder()
            .listen(at)
            .start()
            .await
            .expect_err("the port is taken");
        match &err {
            StartError::Listen {
                listener,
                addr,
                source,
            } => {
                assert_eq!((*listener, *addr), ("AMQP", at));
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            }
            other => panic!("expected a listen error, got {other:?}"),
        }
        assert!(err.to_string().contains(&at.to_string()), "{err}");
        let err = Broker::builder()
            .management(at)
            .start()
            .await
            .expect_err("the management port is taken");
        assert!(
            matches!(err, StartError::Listen { listener: "the management API", addr, .. } if addr == at),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn management_over_https_without_a_certificate_is_refused() {
        let err = Broker::builder()
            .management("127.0.0.1:0".parse().expect("addr"))
            .management_tls(true)
            .start()
            .await
            .expect_err("no certificate");
        assert!(matches!(err, StartError::ManagementTlsWithoutCertificate));
    }
}

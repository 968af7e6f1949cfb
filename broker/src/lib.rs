//! The built-in AMQP 0-9-1 broker: a server that lapin, pika and amqplib accept as
//! RabbitMQ, small enough to start in-process for every test.
//!
//! ```no_run
//! # async fn demo() -> Result<(), broker::StartError> {
//! let broker = broker::Broker::builder().start().await?;   // 127.0.0.1:0
//! println!("connect to {}", broker.amqp_url());
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The public API is what an embedder needs: [`Broker::builder`] and its
//! [`BrokerBuilder`], the running [`BrokerHandle`], [`Endpoint`] for examples and tests,
//! the settings types ([`Limits`], [`TlsConfig`], [`MemoryWatermark`],
//! [`ManagementLimits`], [`DeprecatedFeatures`]) and [`StartError`]. Everything else is
//! private to the crate.
//!
//! # Layout
//!
//! Starting: `builder` (the settings, [`BrokerBuilder::start`]), `handle` (the
//! running broker), `endpoint`, `limits`, and `shared` (what every connection shares:
//! vhosts, users, limits, alarms, the registry of connections).
//!
//! The data path of a publish, from socket to socket:
//!
//! - `server`: accepts sockets and spawns one connection task each; sweeps TTLs and
//!   checks the memory and disk alarms (`alarm`), which block publishing connections
//!   while memory is over its high-water mark or the store is failing or full.
//! - `connection/`: handshake (start, tune, open), heartbeats, the read loop; hands
//!   each frame to its channel and turns errors into `channel.close` or
//!   `connection.close` as RabbitMQ does.
//! - `frame`: cuts frames off the read buffer (refusing oversized ones from the header
//!   alone) and encodes outgoing ones; `properties` checks a content header's
//!   properties in place and finds the few fields the broker acts on; `nesting`
//!   refuses field tables nested too deep before anything decodes them.
//! - `channel/`: applies a channel's methods, one file per class; assembles
//!   `basic.publish` content; coalesces publisher confirms; buffers transactions.
//! - `vhost/table`: the vhosts by name, each with its own lock and store; a connection
//!   picks its vhost once, at `connection.open`.
//! - `vhost/`: exchanges, queues and every channel's delivery state behind one lock;
//!   routes (`exchange/`), enqueues (`queue`, `message`, with `args` checking declare
//!   arguments) and delivers by writing `basic.deliver` straight into the consumer
//!   connection's `outbox`, whose writer task flushes it in one write.
//! - `store/`: with a data directory, durable topology and persistent messages of
//!   durable queues go to per-queue segment files; a sync thread group-commits them
//!   and only then are their publisher confirms sent.
//! - `auth/` and `error`: logins, users and permissions (kept in `DATA_DIR/users`
//!   with a data directory, configuration applied on top at each start), and errors
//!   that carry AMQP reply codes.
//! - `tls`: certificates, and the TLS handshake of the `amqps` port and of the
//!   management API over HTTPS.
//! - `management/`: the HTTP management API and `/metrics` (optional, own port); the
//!   binary's `broker ctl` (under `src/bin/broker/`) is a client of it.
//! - [`allocator`] (with the `jemalloc` feature): the binary's allocator, which gives
//!   memory back after a load and tells the memory alarm what is allocated.
//!
//! Without a data directory everything lives in memory and nothing survives a restart.

mod alarm;
#[cfg(all(feature = "jemalloc", unix, not(target_env = "msvc")))]
pub mod allocator;
mod args;
mod auth;
mod builder;
mod channel;
mod connection;
mod dead_letter;
mod deprecated;
mod endpoint;
mod error;
mod exchange;
mod frame;
mod global_parameters;
mod handle;
mod limits;
mod management;
mod message;
mod message_stats;
mod nesting;
mod outbox;
mod policy;
mod properties;
mod queue;
mod resource_limits;
mod server;
mod shared;
mod store;
mod tls;
mod vhost;
mod vhost_metadata;

pub use alarm::{MemoryProbe, MemoryWatermark};
pub use builder::{Broker, BrokerBuilder};
pub use deprecated::DeprecatedFeatures;
pub use endpoint::Endpoint;
pub use error::StartError;
pub use handle::BrokerHandle;
pub use limits::{ConsumerTimeout, Limits};
pub use management::ManagementLimits;
pub use tls::{TlsConfig, TlsError};

/// Hooks for the benchmarks and the integration tests that drive the broker's
/// internals directly (framing, routing, the store's vhost list). Not part of the API:
/// no stability promise, not documented.
#[doc(hidden)]
pub mod internals {
    /// Frame encoding and decoding.
    pub mod frame {
        pub use crate::frame::*;
    }
    /// A vhost's topology and routing, without a server.
    pub mod vhost {
        pub use crate::vhost::{ExchangeOptions, QueueOptions, VHost};
    }
    pub use crate::exchange::topic_matches;
    pub use crate::handle::encode_segment;
    pub use crate::management::PRODUCT_NAME;
    pub use crate::store::vhosts::write_list;
}

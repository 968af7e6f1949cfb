//! Shared setup of the end-to-end RPC tests: a broker (built-in, or `AMQP_URL`), a
//! connection, a unique service queue, and a test service whose methods provoke
//! every outcome.

#![allow(dead_code, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};

/// The bounded wait shared with the other test trees.
#[path = "../../broker/tests/common/poll.rs"]
pub mod poll;

/// How long a test waits for a handler to have started or finished.
pub const WAIT: Duration = Duration::from_secs(2);

/// The handler's typed error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum CalcError {
    #[error("division by zero")]
    DivByZero,
}

/// An argument that validates itself while decoding: 0..=10 only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "u8")]
pub struct Small(pub u8);

impl TryFrom<u8> for Small {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        if v <= 10 {
            Ok(Small(v))
        } else {
            Err(format!("{v} is out of range 0..=10"))
        }
    }
}

/// What a handler saw of its request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub correlation_id: Option<String>,
    pub method: Option<String>,
    pub redelivered: bool,
    pub remaining_ms: Option<u64>,
    pub trace_id: Option<String>,
    pub custom_header: Option<String>,
}

#[rpc_core::service]
pub trait Probe {
    /// a + b.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// a / b, or the handler's own error.
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    /// Sleeps, then returns `ms`.
    async fn sleep(&self, ms: u64) -> u64;
    /// Panics with `msg`.
    async fn explode(&self, msg: String);
    /// The handler's context.
    async fn seen(&self) -> Seen;
    /// Waits forever on first delivery; answers `true` once redelivered.
    async fn hang_unless_redelivered(&self) -> bool;
    /// Echoes a validated argument.
    async fn small(&self, n: Small) -> u8;
    /// How many calls this handler ran.
    async fn count(&self) -> usize;
    /// A map with tuple keys: MessagePack encodes it, JSON cannot.
    async fn pairs(&self) -> std::collections::BTreeMap<(u8, u8), u8>;
}

/// The test handler; counts calls.
#[derive(Default, Clone)]
pub struct Handler {
    pub calls: Arc<AtomicUsize>,
    /// `sleep` calls that ran to their end (their reply is published next).
    pub slept: Arc<AtomicUsize>,
    pub started: Arc<tokio::sync::Notify>,
}

impl Handler {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    pub fn slept(&self) -> usize {
        self.slept.load(Ordering::SeqCst)
    }
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.started.notify_waiters();
    }
}

impl Probe for Handler {
    async fn add(&self, a: i64, b: i64) -> i64 {
        self.tick();
        a + b
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        self.tick();
        if b == 0 {
            Err(CalcError::DivByZero)
        } else {
            Ok(a / b)
        }
    }
    async fn sleep(&self, ms: u64) -> u64 {
        self.tick();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.slept.fetch_add(1, Ordering::SeqCst);
        ms
    }
    async fn explode(&self, msg: String) {
        self.tick();
        panic!("{msg}");
    }
    async fn seen(&self) -> Seen {
        self.tick();
        let ctx = rpc_core::Context::current().expect("inside a handler");
        Seen {
            correlation_id: ctx.correlation_id().map(str::to_owned),
            method: ctx.method().map(str::to_owned),
            redelivered: ctx.redelivered(),
            remaining_ms: ctx.remaining().map(|d| d.as_millis() as u64),
            trace_id: ctx.traceparent().map(|t| t.trace_id.clone()),
            custom_header: rpc_core::wire::header_str(Some(ctx.headers()), "x-custom")
                .map(str::to_owned),
        }
    }
    async fn hang_unless_redelivered(&self) -> bool {
        self.tick();
        let ctx = rpc_core::Context::current().expect("inside a handler");
        if !ctx.redelivered() {
            std::future::pending::<()>().await;
        }
        true
    }
    async fn small(&self, n: Small) -> u8 {
        self.tick();
        n.0
    }
    async fn count(&self) -> usize {
        self.calls()
    }
    async fn pairs(&self) -> std::collections::BTreeMap<(u8, u8), u8> {
        self.tick();
        std::collections::BTreeMap::from([((1, 2), 3)])
    }
}

/// A broker, a connection and a queue of one's own.
pub struct Env {
    pub endpoint: broker::Endpoint,
    pub conn: Connection,
    pub queue: String,
}

impl Env {
    pub async fn new() -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "error".into()),
            )
            .with_test_writer()
            .try_init();
        let endpoint = broker::Endpoint::from_env().await.expect("broker");
        let conn = connect(endpoint.url()).await;
        let queue = format!("rpc_test_{}", uuid::Uuid::new_v4().simple());
        Env {
            endpoint,
            conn,
            queue,
        }
    }

    /// Another connection to the same broker.
    pub async fn connection(&self) -> Connection {
        connect(self.endpoint.url()).await
    }

    /// Starts a server of `handler` on this env's queue.
    pub async fn serve(&self, handler: Handler) -> rpc_core::ServerHandle {
        self.server(handler)
            .start(&self.conn)
            .await
            .expect("server starts")
    }

    /// A server of `handler` on this env's queue, not started.
    pub fn server(&self, handler: Handler) -> rpc_core::Server<ProbeServer<Handler>> {
        ProbeServer::new(handler)
            .into_server()
            .queue_name(self.queue.clone())
    }

    /// A client of this env's queue.
    pub async fn client(&self) -> ProbeClient {
        ProbeClient::connect(&self.conn)
            .await
            .expect("client")
            .with_queue(&self.queue)
    }

    /// Deletes the queue (it would outlive the test on RabbitMQ) and closes.
    pub async fn finish(self) {
        if let Ok(ch) = self.conn.create_channel().await {
            let _ = ch
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "OK".into()).await;
        self.endpoint.shutdown().await;
    }
}

/// Connects, bounded: a broker that never finishes the handshake fails the test.
pub async fn connect(url: &str) -> Connection {
    tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .expect("the broker answers the handshake within 10 s")
    .expect("connect")
}

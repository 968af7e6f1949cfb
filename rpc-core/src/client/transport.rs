//! The client's transport: publishes a [`Call`] and waits for its [`Reply`].
//!
//! One AMQP channel carries every call of a [`Transport`] and all its clones: requests
//! go out with `mandatory` set and publisher confirms on, replies come back on one
//! consumer (direct reply-to by default, or an exclusive callback queue named `rpc-reply-<uuid>`)
//! and are matched to their call by correlation id (`client::pending`). A second
//! channel probes the service queue's consumer count, so that a call to a queue
//! nobody consumes fails with [`RpcError::NoServer`] instead of waiting for its
//! deadline. `Transport` is a `tower::Service<Call>`, so client middleware stacks on
//! it with `ServiceBuilder`.
//!
//! Recovery: on a connection opened with lapin's `enable_auto_recover()` (what
//! [`TransportBuilder::connect_url`] does; `crate::recovery`) lapin reconnects and
//! replays the channels, confirms and the reply consumer. Here, when the reply
//! consumer reports the loss, every call waiting for a reply fails at once with
//! [`RpcError::ConnectionLost`]; a call made while the connection is down waits for it
//! within its own deadline and then fails with [`RpcError::Unreachable`]. A transport
//! that owns its connection does not depend on lapin alone: when lapin does not bring
//! the channel back (`client::rebuild`), it connects anew itself and goes on. On a
//! connection without auto-recover, the loss ends the transport: waiting calls fail
//! with `ConnectionLost`, later ones with [`RpcError::Disconnected`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ErrorKind};
use tokio::time::Instant;

use super::pending::{Pending, Slot};
use super::rebuild::{Opened, Params, Target};
pub use super::reply::ReplyMode;
use super::reply::open_reply_channel;
use super::watch::{GiveUp, Ready};
use super::{Call, Reply};
use crate::error::{Outcome, RpcError};
use crate::recovery::{self, Backoff, Recovery};
use crate::wire;

/// Configures a [`Transport`].
#[derive(Debug, Clone)]
pub struct TransportBuilder {
    reply_mode: ReplyMode,
    consumer_check: Option<Duration>,
    connect_timeout: Duration,
    connection_name: Option<String>,
}

impl Default for TransportBuilder {
    fn default() -> Self {
        TransportBuilder {
            reply_mode: ReplyMode::default(),
            consumer_check: Some(Duration::from_secs(1)),
            connect_timeout: Duration::from_secs(10),
            connection_name: None,
        }
    }
}

impl TransportBuilder {
    /// How replies come back (default: direct reply-to).
    pub fn reply_mode(mut self, mode: ReplyMode) -> Self {
        self.reply_mode = mode;
        self
    }

    /// Whether and how often to check that a service queue has consumers. With
    /// `Some(ttl)` (default one second) a call to a queue without consumers fails
    /// with [`RpcError::NoServer`]; a queue seen with consumers is not checked again
    /// for `ttl`. `None` turns the check off (the call then waits for its deadline).
    pub fn consumer_check(mut self, ttl: Option<Duration>) -> Self {
        self.consumer_check = ttl;
        self
    }

    /// How long [`TransportBuilder::connect_url`] waits for the broker to accept the
    /// connection (default 10 s; a broker that accepts the socket but never answers
    /// would otherwise hang the caller). Fails with [`RpcError::Timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The `connection_name` client property of a connection opened by
    /// [`TransportBuilder::connect_url`] (shown by `rabbitmqctl list_connections`).
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Builds the transport on a channel of `conn`.
    pub async fn connect(self, conn: &Connection) -> Result<Transport, RpcError> {
        self.build(conn, None).await
    }

    /// Connects to `url` and builds the transport; the connection lives as long as
    /// the transport and recovers by itself (lapin's auto-recover, see the module
    /// docs). `url` may be a comma-separated list of nodes (one cluster: same user and
    /// vhost): they are tried in turn, each for up to the connect timeout, none
    /// answering fails with [`RpcError::Unreachable`]; after a loss lapin's reconnect
    /// goes to the next node.
    pub async fn connect_url(self, url: &str) -> Result<Transport, RpcError> {
        let nodes = recovery::Nodes::parse(url)?;
        let conn = recovery::connect_any(
            &nodes,
            self.connection_name.as_deref(),
            self.connect_timeout,
            &mut Backoff::default(),
            Some(1),
        )
        .await?;
        let (requests, requested) = tokio::sync::mpsc::unbounded_channel();
        let give_up = GiveUp {
            wedged: nodes.latest_wedged(),
            rebuild: requests.clone(),
        };
        let rebuild = Owner {
            nodes,
            connection_name: self.connection_name.clone(),
            connect_timeout: self.connect_timeout,
            reply_mode: self.reply_mode,
            requests,
        };
        let mut transport = self.build(&conn, Some(give_up)).await?;
        match Arc::get_mut(&mut transport.inner) {
            Some(inner) => {
                inner.connection = Mutex::new(Some(conn));
                inner.rebuild = Some(rebuild);
            }
            // Unreachable: nobody else holds the fresh transport yet.
            None => return Err(RpcError::Disconnected),
        }
        let target: Arc<dyn Target> = transport.inner.clone();
        super::rebuild::spawn(Arc::downgrade(&target), requested);
        Ok(transport)
    }

    async fn build(
        self,
        conn: &Connection,
        give_up: Option<GiveUp>,
    ) -> Result<Transport, RpcError> {
        let (channel, consumer, reply_queue) =
            open_reply_channel(conn, self.reply_mode, None).await?;
        let probe = match self.consumer_check {
            Some(_) => Some(conn.create_channel().await?),
            None => None,
        };
        let pending = Pending::default();
        let recovery = Recovery::default();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let ready = Ready::default();
        // A transport that can connect anew never closes its table of calls.
        let closes = give_up.is_none();
        super::watch::spawn(
            conn,
            channel.clone(),
            pending.clone(),
            recovery.clone(),
            ready.clone(),
            stopped,
            give_up,
        );
        let reader = tokio::spawn(read_replies(
            consumer,
            pending.clone(),
            channel.clone(),
            recovery.clone(),
            closes,
        ));
        Ok(Transport {
            inner: Arc::new(Inner {
                channel: RwLock::new(channel),
                reply_to: reply_queue,
                pending,
                probe: tokio::sync::Mutex::new(probe),
                consumer_check: self.consumer_check,
                seen_consumers: Mutex::new(HashMap::new()),
                recovery,
                connection: Mutex::new(None),
                ready,
                stop_watch: Mutex::new(Some(stop)),
                reader: Mutex::new(Some(reader.abort_handle())),
                rebuild: None,
            }),
        })
    }
}

/// Publishes calls and routes their replies; cheap to clone (all clones share one
/// channel and one reply consumer).
#[derive(Debug, Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The reply channel, which requests go out on too (replaced when the transport
    /// connects anew: `client::rebuild`).
    channel: RwLock<Channel>,
    /// The `reply_to` every request carries.
    reply_to: String,
    pending: Pending,
    /// The channel for passive `queue.declare`; a separate one because a 404 closes
    /// the channel it happens on. `None` when the check is off or the channel died.
    probe: tokio::sync::Mutex<Option<Channel>>,
    consumer_check: Option<Duration>,
    /// Queues recently seen with consumers, so the probe runs at most once per TTL.
    seen_consumers: Mutex<HashMap<String, Instant>>,
    /// Outage counters; `is_down` while the connection recovers.
    recovery: Recovery,
    /// Kept alive for transports built from a URL.
    connection: Mutex<Option<Connection>>,
    /// Whether the reply channel may be published on (`client::watch`).
    ready: Ready,
    /// Dropped with the transport (or replaced by a new connection's): ends the
    /// connection watch (`client::watch`).
    stop_watch: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// The reply reader, aborted when a new connection's replaces it.
    reader: Mutex<Option<tokio::task::AbortHandle>>,
    /// How to connect anew, for a transport that owns its connection.
    rebuild: Option<Owner>,
}

/// What a transport that owns its connection needs to connect anew.
#[derive(Debug)]
struct Owner {
    nodes: Arc<recovery::Nodes>,
    connection_name: Option<String>,
    connect_timeout: Duration,
    reply_mode: ReplyMode,
    /// Where the watches ask (a clone goes to each).
    requests: tokio::sync::mpsc::UnboundedSender<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// The reply channel now.
    fn channel(&self) -> Channel {
        self.channel
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts a new connection in place of the lost one: its channel carries the calls
    /// from now on, its reader and watch replace the old ones, and calls waiting for
    /// the connection go on.
    async fn install_opened(&self, o: Opened) {
        if let Some(old) = lock(&self.reader).take() {
            old.abort();
        }
        *self.channel.write().unwrap_or_else(|e| e.into_inner()) = o.channel.clone();
        *self.probe.lock().await = o.probe;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        super::watch::spawn(
            &o.conn,
            o.channel.clone(),
            self.pending.clone(),
            self.recovery.clone(),
            self.ready.clone(),
            stopped,
            Some(o.give_up),
        );
        *lock(&self.stop_watch) = Some(stop);
        let reader = tokio::spawn(read_replies(
            o.consumer,
            self.pending.clone(),
            o.channel,
            self.recovery.clone(),
            false,
        ));
        *lock(&self.reader) = Some(reader.abort_handle());
        let old = lock(&self.connection).replace(o.conn);
        if self.recovery.is_down() {
            self.recovery.up("client");
        }
        self.ready.open();
        if let Some(old) = old {
            recovery::reap(old);
        }
    }
}

impl Transport {
    /// A builder, to choose the reply mode or the consumer check.
    pub fn builder() -> TransportBuilder {
        TransportBuilder::default()
    }

    /// A transport with default settings on a channel of `conn`.
    pub async fn connect(conn: &Connection) -> Result<Self, RpcError> {
        Self::builder().connect(conn).await
    }

    /// A transport with default settings on a new connection to `url`.
    pub async fn connect_url(url: &str) -> Result<Self, RpcError> {
        Self::builder().connect_url(url).await
    }

    /// How many calls wait for a reply right now.
    pub fn pending_calls(&self) -> usize {
        self.inner.pending.len()
    }

    /// The `reply_to` of this transport's requests (`amq.rabbitmq.reply-to` or the
    /// callback queue's name).
    pub fn reply_to(&self) -> &str {
        &self.inner.reply_to
    }

    /// The outage counters of this transport's connection.
    pub fn recovery(&self) -> &Recovery {
        &self.inner.recovery
    }

    /// Whether this transport owns its connection (built from a URL).
    pub fn owns_connection(&self) -> bool {
        lock(&self.inner.connection).is_some()
    }

    /// Sends one call and waits for its reply or its deadline.
    pub async fn send(&self, call: Call) -> Result<Reply, RpcError> {
        let deadline = call.deadline;
        match tokio::time::timeout_at(deadline, self.inner.send(call)).await {
            Ok(result) => result,
            // The request could not be sent: the deadline passed while the call
            // waited for the connection to come back.
            Err(_) if self.inner.recovery.is_down() => Err(RpcError::Unreachable {
                message: "the connection did not come back before the deadline".into(),
            }),
            Err(_) => Err(RpcError::Timeout),
        }
    }
}

impl tower::Service<Call> for Transport {
    type Response = Reply;
    type Error = RpcError;
    type Future = BoxFuture<'static, Result<Reply, RpcError>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), RpcError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.send(call).await })
    }
}

impl Inner {
    async fn send(&self, call: Call) -> Result<Reply, RpcError> {
        loop {
            // Registered before the publish, so that even an immediate reply finds it;
            // again after a reconnect, which forgets every registered call.
            // After a reconnect: until lapin has replayed the reply consumer.
            self.ready.wait().await;
            let mut slot = self.pending.register(&call.correlation_id)?;
            let confirm = match self.publish(&call).await {
                Ok(confirm) => confirm,
                Err(e) => {
                    // Not sent (the channel is recovering): wait for it, then send
                    // again. The caller's deadline bounds the wait (`Transport::send`).
                    drop(slot);
                    self.ready.clear();
                    if self.rebuild.is_none() {
                        self.channel().wait_for_recovery(e).await?;
                    }
                    // Else `ready` says when: lapin recovered the channel (the watch)
                    // or a new connection's is in place (`client::rebuild`).
                    continue;
                }
            };
            // The watch fails the slot when the connection drops: a call whose confirm
            // can no longer come must not wait for it either.
            let confirmed = tokio::select! {
                confirmed = confirm => confirmed,
                early = slot.settle() => return early,
            };
            let confirm = match confirmed {
                Ok(confirm) => confirm,
                // Sent, but the connection dropped before the broker confirmed it.
                Err(e) if e.can_be_recovered() => {
                    tracing::debug!(error = %e, "connection lost before the confirm");
                    return Err(RpcError::ConnectionLost {
                        outcome: Outcome::Unknown,
                    });
                }
                Err(e) => return Err(e.into()),
            };
            return self.finish(call, slot, confirm).await;
        }
    }

    async fn publish(&self, call: &Call) -> Result<lapin::PublisherConfirm, lapin::Error> {
        let remaining = call.deadline.saturating_duration_since(Instant::now());
        let mut headers = call.headers.clone();
        headers.insert(
            wire::DEADLINE_HEADER.into(),
            AMQPValue::LongLongInt(wire::unix_millis(call.wire_deadline)),
        );
        wire::insert_str(
            &mut headers,
            wire::TRACEPARENT_HEADER,
            &call.traceparent.to_string(),
        );
        let mut props = BasicProperties::default()
            .with_correlation_id(call.correlation_id.as_str().into())
            .with_reply_to(self.reply_to.as_str().into())
            .with_content_type(call.codec.content_type().into())
            .with_expiration(wire::expiration(remaining).into())
            .with_headers(headers);
        if !call.method.is_empty() {
            props = props.with_type(call.method.as_str().into());
        }
        self.channel()
            .basic_publish(
                "".into(),
                call.queue.as_ref().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &call.body,
                props,
            )
            .await
    }

    async fn finish(
        &self,
        call: Call,
        slot: Slot,
        confirm: Confirmation,
    ) -> Result<Reply, RpcError> {
        match confirm {
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                tracing::debug!(code = returned.reply_code, "request returned by the broker");
                return Err(RpcError::NoRoute {
                    queue: call.queue.to_string(),
                });
            }
            Confirmation::Nack(None) => {
                return Err(RpcError::Unavailable {
                    message: "the broker refused the request (basic.nack)".into(),
                });
            }
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
        }
        if !self.needs_probe(&call.queue) {
            return slot.wait(call.deadline).await;
        }
        // The request is queued; find out whether anyone consumes the queue while the
        // reply may already be on its way.
        let wait = slot.wait(call.deadline);
        tokio::pin!(wait);
        tokio::select! {
            // A reply that is already here wins over what the probe says.
            biased;
            reply = &mut wait => reply,
            probe = self.probe(&call.queue) => match probe {
                Some(0) => Err(RpcError::NoServer { queue: call.queue.to_string() }),
                _ => wait.await,
            },
        }
    }

    fn needs_probe(&self, queue: &str) -> bool {
        let Some(ttl) = self.consumer_check else {
            return false;
        };
        let seen = self
            .seen_consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        seen.get(queue).is_none_or(|at| at.elapsed() > ttl)
    }

    /// The queue's consumer count, or `None` when it cannot be known.
    async fn probe(&self, queue: &str) -> Option<u32> {
        let mut guard = self.probe.lock().await;
        let channel = guard.as_ref()?;
        let result = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        match result {
            Ok(q) => {
                let count = q.consumer_count();
                if count > 0 {
                    let mut seen = self
                        .seen_consumers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    // Bounded by the number of distinct queues this client calls.
                    seen.insert(queue.to_owned(), Instant::now());
                }
                Some(count)
            }
            Err(e) => {
                // The queue vanished between publish and probe (404) or the channel
                // failed: the probe channel is closed now; stop probing.
                let not_found = matches!(e.kind(), ErrorKind::ProtocolError(p)
                    if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND));
                tracing::warn!(error = %e, not_found, "consumer check failed; disabling it");
                *guard = None;
                None
            }
        }
    }
}

/// Routes every reply to its call until the consumer ends, then fails the rest.
///
/// A recoverable error from the consumer is the connection dropping: the calls in
/// flight fail at once (their replies, if any, would come to the old connection),
/// and the reader waits for lapin to replay the consumer, then goes on.
async fn read_replies(
    mut consumer: lapin::Consumer,
    pending: Pending,
    channel: Channel,
    recovery: Recovery,
    closes: bool,
) {
    while let Some(item) = consumer.next().await {
        match item {
            Ok(delivery) => match Reply::from_delivery(delivery) {
                Some(reply) => {
                    if let Err(reply) = pending.complete(reply) {
                        tracing::debug!(correlation_id = %reply.correlation_id, "dropping a reply nobody waits for");
                    }
                }
                None => tracing::debug!("dropping a reply without correlation id"),
            },
            Err(e) => {
                // Outages are counted by the watch (`client::watch`).
                recovery.lost(pending.fail_all());
                match channel.wait_for_recovery(e).await {
                    Ok(()) => {}
                    Err(e) if closes => {
                        tracing::warn!(error = %e, "reply consumer failed; the transport is closed");
                        break;
                    }
                    // The watch hands the transport to a new connection.
                    Err(e) => {
                        tracing::debug!(error = %e, "reply consumer failed; waiting for a new connection");
                        break;
                    }
                }
            }
        }
    }
    if closes {
        pending.close();
    }
}

impl Target for Inner {
    fn params(&self) -> Option<Params> {
        let o = self.rebuild.as_ref()?;
        Some(Params {
            nodes: o.nodes.clone(),
            connection_name: o.connection_name.clone(),
            connect_timeout: o.connect_timeout,
            reply_mode: o.reply_mode,
            requests: o.requests.clone(),
            reply_to: self.reply_to.clone(),
            probe: self.consumer_check.is_some(),
        })
    }

    fn install(&self, opened: Opened) -> BoxFuture<'_, ()> {
        Box::pin(self.install_opened(opened))
    }
}

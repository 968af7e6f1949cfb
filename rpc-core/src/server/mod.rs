//! The server side: consume the service queue, run each request through a tower
//! stack ending in the generated dispatcher, publish the reply, then ack.
//!
//! [`Server`] owns the settings (queue, concurrency) and the service stack;
//! [`Server::layer`] wraps the stack in tower middleware. The serve loop
//! ([`Server::serve`], [`Server::start`]) sets the prefetch to the concurrency
//! limit, spawns one task per delivery (`server::worker`) and, on shutdown, cancels the
//! consumer, finishes what it holds, and closes its channel.
//!
//! Recovery: on a connection with lapin's `enable_auto_recover()` lapin replays the
//! channel, its prefetch, the queue declaration and the consumer; the serve loop
//! waits for that and goes on. Handlers running when the connection dropped finish,
//! but their acks belong to the old channel: lapin refuses them (the acker is
//! poisoned), so nothing is acked on the wrong channel and the broker redelivers those
//! requests with `redelivered` set. A `basic.cancel` from the broker (queue deleted,
//! node down) makes the loop declare the queue and consume again. Without
//! auto-recover a lost connection ends [`Server::serve`] with an error; the URL entry
//! points ([`Server::serve_url`], [`Server::start_url`]) own their connection: lapin's
//! reconnects go to the next node of the list (`crate::recovery::Nodes`), and when
//! lapin gives up the server opens a new connection itself (backoff, for ever).

mod declare;
mod dispatch;
mod owned;
mod request;
mod worker;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower::{Layer, Service};

pub use declare::QueueType;
pub use dispatch::{DecodeError, run_handler};
pub use request::{Request, Response};

use crate::error::{BoxError, RpcError};
use crate::recovery::{self, Backoff, Recovery};
use owned::{Owned, RECOVERY_TICK, RECOVERY_WAIT, recovery_ends};

/// How many requests a server runs at once unless told otherwise (its prefetch).
pub const DEFAULT_CONCURRENCY: u16 = 32;

/// How long shutdown waits for deliveries still on their way after the cancel.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long graceful shutdown waits for handlers in flight unless told otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// A service stack bound to a queue, ready to serve.
#[derive(Debug, Clone)]
pub struct Server<S> {
    service: S,
    name: &'static str,
    queue: String,
    queue_type: QueueType,
    concurrency: u16,
    shutdown_timeout: Duration,
    connection_name: Option<String>,
    recovery: Recovery,
}

impl<S> Server<S> {
    /// Serves `service` (named `name` in traces) on `queue`.
    pub fn new(name: &'static str, queue: impl Into<String>, service: S) -> Self {
        Server {
            service,
            name,
            queue: queue.into(),
            queue_type: QueueType::default(),
            concurrency: DEFAULT_CONCURRENCY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            connection_name: None,
            recovery: Recovery::default(),
        }
    }

    /// How long graceful shutdown waits for handlers in flight (default 30 s). Those
    /// still running then are dropped unacked, and the broker redelivers their
    /// requests to another server when the channel closes.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How many requests run at once; also the prefetch count, so the broker hands
    /// other requests to other servers on the same queue. At least 1.
    pub fn concurrency(mut self, limit: u16) -> Self {
        self.concurrency = limit.max(1);
        self
    }

    /// Serves another queue.
    pub fn queue_name(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// The kind of service queue to declare: a durable classic queue (the default) or
    /// a quorum queue for a RabbitMQ cluster. A queue that already exists is served
    /// as it is, whatever its type.
    pub fn queue_type(mut self, kind: QueueType) -> Self {
        self.queue_type = kind;
        self
    }

    /// Wraps the service stack in a tower layer (concurrency limit, load shed,
    /// tracing, ...). The outermost layer is the last one added.
    pub fn layer<L: Layer<S>>(self, layer: L) -> Server<L::Service> {
        Server {
            service: layer.layer(self.service),
            name: self.name,
            queue: self.queue,
            queue_type: self.queue_type,
            concurrency: self.concurrency,
            shutdown_timeout: self.shutdown_timeout,
            connection_name: self.connection_name,
            recovery: self.recovery,
        }
    }

    /// The service queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The `connection_name` client property of the connection that
    /// [`Server::serve_url`] and [`Server::start_url`] open.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// The outage counters of this server (shared with its clones and its handle).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }
}

impl<S> Server<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    /// Serves until the connection closes. See [`Server::serve_with_shutdown`].
    pub async fn serve(self, conn: &Connection) -> Result<(), RpcError> {
        self.serve_with_shutdown(conn, std::future::pending()).await
    }

    /// Serves until `signal` completes, then shuts down gracefully: stop consuming,
    /// finish the requests in flight, reply, ack, close the channel. Returns an error
    /// if the channel or connection failed first.
    pub async fn serve_with_shutdown(
        self,
        conn: &Connection,
        signal: impl Future<Output = ()>,
    ) -> Result<(), RpcError> {
        let bound = self.bind(conn).await?;
        bound.run(signal).await
    }

    /// Starts serving in a background task once the consumer is registered, so a
    /// call made after this returns finds a server. Stop it with
    /// [`ServerHandle::shutdown`].
    pub async fn start(self, conn: &Connection) -> Result<ServerHandle, RpcError> {
        let bound = self.bind(conn).await?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.run(async move {
            let _ = rx.await;
        }));
        Ok(ServerHandle {
            shutdown: Some(tx),
            task,
        })
    }

    /// Serves on a connection of its own to `url` (a comma-separated list of nodes
    /// is tried in turn), recovering it for ever: lapin's auto-recover first, then a
    /// new connection to the next node, with a capped, jittered backoff. Returns only
    /// on an error that a reconnect cannot fix (the first connect finds no node, a
    /// channel error).
    pub async fn serve_url(self, url: &str) -> Result<(), RpcError> {
        self.serve_url_with_shutdown(url, std::future::pending())
            .await
    }

    /// [`Server::serve_url`] until `signal` completes, then a graceful shutdown.
    pub async fn serve_url_with_shutdown(
        self,
        url: &str,
        signal: impl Future<Output = ()>,
    ) -> Result<(), RpcError> {
        let mut owned = Owned::connect(&self, url).await?;
        let bound = owned.bind(self.clone()).await?;
        owned.serve(self, bound, signal).await
    }

    /// Starts [`Server::serve_url`] in the background once the consumer is
    /// registered; stop it with [`ServerHandle::shutdown`].
    pub async fn start_url(self, url: &str) -> Result<ServerHandle, RpcError> {
        let mut owned = Owned::connect(&self, url).await?;
        let bound = owned.bind(self.clone()).await?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            owned
                .serve(self, bound, async move {
                    let _ = rx.await;
                })
                .await
        });
        Ok(ServerHandle {
            shutdown: Some(tx),
            task,
        })
    }

    async fn bind(self, conn: &Connection) -> Result<Bound<S>, RpcError> {
        let channel = declare::service_queue(
            conn,
            self.name,
            &self.queue,
            self.queue_type,
            self.concurrency,
        )
        .await?;
        let consumer = consume(&self.queue, &channel).await?;
        tracing::info!(service = self.name, queue = %self.queue, concurrency = self.concurrency, "serving");
        Ok(Bound {
            server: self,
            channel,
            consumer,
            wedged: None,
        })
    }
}

async fn consume(queue: &str, channel: &Channel) -> Result<Consumer, RpcError> {
    Ok(channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?)
}

/// After a broker-sent `basic.cancel`: declare the queue and consume again, with
/// backoff while the channel stays open.
async fn resubscribe(
    queue: &str,
    kind: QueueType,
    concurrency: u16,
    channel: &Channel,
) -> Result<Consumer, RpcError> {
    let mut backoff = Backoff::default();
    loop {
        let attempt = async {
            declare::declare_on(channel, queue, kind, concurrency).await?;
            consume(queue, channel).await
        };
        match attempt.await {
            Ok(consumer) => return Ok(consumer),
            Err(e) if channel.status().connected() && backoff.attempts() < 8 => {
                tracing::debug!(error = %e, "consuming again failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A server whose consumer is registered.
struct Bound<S> {
    server: Server<S>,
    channel: Channel,
    consumer: Consumer,
    /// Set when lapin's recovery of an owned connection will not get through.
    wedged: Option<recovery::Wedged>,
}

impl<S> Bound<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    async fn run(self, signal: impl Future<Output = ()>) -> Result<(), RpcError> {
        let Bound {
            server,
            channel,
            mut consumer,
            wedged,
        } = self;
        let wedged = wedged.unwrap_or_default();
        let mut tasks = JoinSet::new();
        let mut outcome = Ok(());
        let mut shutting_down = false;
        // lapin's auto-recover tells the consumer nothing when the connection drops
        // (`client::watch`): read the channel's state to count and log the outage.
        let mut tick = tokio::time::interval(RECOVERY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down = false;
        // When the channel was last seen to go down (lapin recovering it).
        let mut down_since: Option<tokio::time::Instant> = None;
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal, if !shutting_down => {
                    shutting_down = true;
                    break;
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = tick.tick() => {
                    let status = channel.status();
                    if status.reconnecting() {
                        let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
                        if !down {
                            down = true;
                            if !server.recovery.is_down() {
                                server.recovery.down("server", &"the connection dropped");
                            }
                        }
                        if wedged.is_set() || since.elapsed() >= RECOVERY_WAIT {
                            outcome = Err(lapin_gave_up(server.name));
                            break;
                        }
                    } else if status.connected() {
                        down_since = None;
                        if down {
                            down = false;
                            if server.recovery.is_down() {
                                server.recovery.up("server");
                            }
                        }
                    }
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        tasks.spawn(worker::handle(
                            server.service.clone(),
                            channel.clone(),
                            delivery,
                            server.name,
                        ));
                    }
                    Some(Err(e)) => {
                        // The connection dropped: with auto-recover lapin replays the
                        // prefetch, the queue and this consumer; wait for that.
                        if !server.recovery.is_down() {
                            server.recovery.down("server", &e);
                        }
                        tokio::select! {
                            _ = &mut signal => {
                                shutting_down = true;
                                break;
                            }
                            // lapin wakes `wait_for_recovery` only when a recovery
                            // completes: a failed or wedged one would hold it for ever.
                            recovered = recovery_ends(&channel, down_since, &wedged) => {
                                if recovered {
                                    if server.recovery.is_down() {
                                        server.recovery.up("server");
                                    }
                                } else {
                                    outcome = Err(lapin_gave_up(server.name));
                                    break;
                                }
                            }
                            recovered = channel.wait_for_recovery(e) => match recovered {
                                Ok(()) => {
                                    if server.recovery.is_down() {
                                        server.recovery.up("server");
                                    }
                                }
                                Err(e) => {
                                    outcome = Err(RpcError::Amqp(e));
                                    break;
                                }
                            },
                        }
                    }
                    None if channel.status().connected() => {
                        // The broker cancelled the consumer (queue deleted, node down).
                        tracing::warn!(service = server.name, queue = %server.queue, "the broker cancelled the consumer; consuming again");
                        match resubscribe(&server.queue, server.queue_type, server.concurrency, &channel).await {
                            Ok(c) => consumer = c,
                            Err(e) => {
                                outcome = Err(e);
                                break;
                            }
                        }
                    }
                    None => {
                        outcome = Err(RpcError::Disconnected);
                        break;
                    }
                },
            }
        }
        if shutting_down {
            tracing::info!(
                service = server.name,
                in_flight = tasks.len(),
                "shutting down"
            );
            // Stop the broker sending more, then take what was already on its way.
            if channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await
                .is_ok()
            {
                while let Ok(Some(Ok(delivery))) =
                    tokio::time::timeout(DRAIN_TIMEOUT, consumer.next()).await
                {
                    tasks.spawn(worker::handle(
                        server.service.clone(),
                        channel.clone(),
                        delivery,
                        server.name,
                    ));
                }
            }
        }
        if !shutting_down {
            // The channel is gone: in-flight handlers can neither reply nor ack (the
            // broker requeues their requests), so there is nothing to wait for.
            tasks.abort_all();
        }
        let finish = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(server.shutdown_timeout, finish)
            .await
            .is_err()
        {
            tracing::warn!(
                service = server.name,
                "handlers still running at the shutdown timeout; dropping them unacked"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        if shutting_down {
            let _ = channel.close(200, "OK".into()).await;
        }
        outcome
    }
}

/// Logs that a serve loop stops waiting for lapin's recovery (see `owned`): the
/// outcome that makes it connect anew.
fn lapin_gave_up(service: &str) -> RpcError {
    tracing::warn!(service, waited = ?RECOVERY_WAIT, "lapin's recovery did not bring the channel back; connecting anew");
    RpcError::Disconnected
}

/// A server running in the background (from [`Server::start`]).
///
/// Dropping the handle shuts the server down gracefully in the background, as
/// [`ServerHandle::shutdown`] does without waiting; [`ServerHandle::wait`] keeps it
/// running until its connection closes.
#[derive(Debug)]
pub struct ServerHandle {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RpcError>>,
}

impl ServerHandle {
    /// Graceful shutdown: stop consuming, finish and ack what is in flight, close the
    /// channel; returns once done.
    pub async fn shutdown(mut self) -> Result<(), RpcError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.join().await
    }

    /// Waits until the server stops by itself (its connection closed).
    pub async fn wait(mut self) -> Result<(), RpcError> {
        let tx = self.shutdown.take();
        let result = self.join().await;
        drop(tx);
        result
    }

    async fn join(&mut self) -> Result<(), RpcError> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Disconnected),
        }
    }

    /// Whether the serve loop has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

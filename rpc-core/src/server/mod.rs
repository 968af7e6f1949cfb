//! The server side: consume the service queue, run each request through a tower
//! stack ending in the generated dispatcher, publish the reply, then ack.
//!
//! [`Server`] owns the settings (queue, concurrency) and the service stack;
//! [`Server::layer`] wraps the stack in tower middleware. The serve loop
//! ([`Server::serve`], [`Server::start`]) sets the prefetch to the concurrency
//! limit, spawns one task per delivery (`server::worker`) and, on shutdown, cancels the
//! consumer, finishes what it holds, and closes its channel.

mod declare;
mod dispatch;
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
        }
    }

    /// The service queue.
    pub fn queue(&self) -> &str {
        &self.queue
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

    async fn bind(self, conn: &Connection) -> Result<Bound<S>, RpcError> {
        let channel = declare::service_queue(
            conn,
            self.name,
            &self.queue,
            self.queue_type,
            self.concurrency,
        )
        .await?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(service = self.name, queue = %self.queue, concurrency = self.concurrency, "serving");
        Ok(Bound {
            server: self,
            channel,
            consumer,
        })
    }
}

/// A server whose consumer is registered.
struct Bound<S> {
    server: Server<S>,
    channel: Channel,
    consumer: Consumer,
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
        } = self;
        let mut tasks = JoinSet::new();
        let mut outcome = Ok(());
        let mut shutting_down = false;
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal, if !shutting_down => {
                    shutting_down = true;
                    break;
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
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
                        outcome = Err(RpcError::Amqp(e));
                        break;
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

//! Tower middleware on both sides of a call.
//!
//! Client: `ServiceBuilder` over the `Transport` — a buffer (so the stack is `Clone`),
//! a rate limit, a concurrency limit, a retry policy for `unavailable` replies, a
//! tower timeout, and this crate's `DeadlineLayer`.
//! Server: a concurrency limit of 2 with load shedding in front of it (excess calls
//! get an `unavailable` reply at once instead of queueing) and a small logging layer
//! written in tower's `Service` style.
//!
//! ```text
//! cargo run --release --example tower_layers
//! ```

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};
use rpc_core::layer::deadline::DeadlineLayer;
use rpc_core::server::{Request, Response};
use rpc_core::{Call, Reply, RpcError, Status, Transport};
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::retry::Policy;
use tower::{Layer, Service, ServiceBuilder};

/// A service whose calls take a while.
#[rpc_core::service]
pub trait Slow {
    /// Waits `ms` milliseconds, then echoes it.
    async fn work(&self, ms: u64) -> u64;
}

struct Worker;

impl Slow for Worker {
    async fn work(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// Retries calls the server refused as `unavailable`, up to `left` times, with a
/// short pause.
#[derive(Clone)]
struct RetryUnavailable {
    left: usize,
    retries: Arc<AtomicUsize>,
}

impl Policy<Call, Reply, RpcError> for RetryUnavailable {
    type Future = Pin<Box<tokio::time::Sleep>>;

    fn retry(
        &mut self,
        _call: &mut Call,
        result: &mut Result<Reply, RpcError>,
    ) -> Option<Self::Future> {
        let refused = matches!(result, Ok(r) if r.status == Some(Status::Unavailable));
        if refused && self.left > 0 {
            self.left -= 1;
            self.retries.fetch_add(1, Ordering::SeqCst);
            Some(Box::pin(tokio::time::sleep(Duration::from_millis(100))))
        } else {
            None
        }
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}

/// A server layer that logs each request's method and status: tower's
/// `Foo<S>` / `FooLayer` shape, the smallest useful example.
#[derive(Clone)]
struct Log<S> {
    inner: S,
}

#[derive(Clone)]
struct LogLayer;

impl<S> Layer<S> for LogLayer {
    type Service = Log<S>;
    fn layer(&self, inner: S) -> Log<S> {
        Log { inner }
    }
}

impl<S> Service<Request> for Log<S>
where
    S: Service<Request, Response = Response>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let method = req.method.clone().unwrap_or_default();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if let Ok(r) = &res {
                println!(
                    "    server: {method} -> {} in {} ms",
                    r.status.as_str(),
                    started.elapsed().as_millis()
                );
            }
            res
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,lapin=error".into()),
        )
        .init();
    let endpoint = broker::Endpoint::from_env().await?;
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(endpoint.url(), ConnectionProperties::default()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out connecting to the broker"))??;

    // Server: at most 2 handlers at once; the rest are shed, not queued. The
    // outermost layer is the last added: Log -> LoadShed -> ConcurrencyLimit -> SlowServer.
    let server = SlowServer::new(Worker)
        .into_server()
        .queue_name("tower_layers_slow")
        .concurrency(16)
        .layer(ConcurrencyLimitLayer::new(2))
        .layer(LoadShedLayer::new())
        .layer(LogLayer)
        .start(&conn)
        .await?;

    println!("[x] 6 concurrent calls, no retries: 2 run, 4 are shed");
    let bare = SlowClient::connect(&conn)
        .await?
        .with_queue("tower_layers_slow");
    let calls = (0..6).map(|_| bare.work(300));
    for r in futures::future::join_all(calls).await {
        match r {
            Ok(v) => println!("  ok: {v}"),
            Err(e @ RpcError::Unavailable { .. }) => println!("  shed: {e}"),
            Err(e) => anyhow::bail!("unexpected: {e}"),
        }
    }

    println!("[x] the same 6 calls through a client stack that retries `unavailable`");
    let retries = Arc::new(AtomicUsize::new(0));
    let transport = Transport::connect(&conn).await?;
    let stack = ServiceBuilder::new()
        .buffer(64)
        .rate_limit(100, Duration::from_secs(1))
        .concurrency_limit(8)
        .timeout(Duration::from_secs(10))
        .retry(RetryUnavailable {
            left: 10,
            retries: retries.clone(),
        })
        .layer(DeadlineLayer::new(Duration::from_secs(5)))
        .service(transport);
    let client = SlowClient::new(stack).with_queue("tower_layers_slow");
    let started = Instant::now();
    let calls = (0..6).map(|_| client.work(300));
    for r in futures::future::join_all(calls).await {
        println!("  ok: {}", r?);
    }
    println!(
        "  all 6 done in {} ms after {} retries",
        started.elapsed().as_millis(),
        retries.load(Ordering::SeqCst)
    );

    println!("[x] a tower timeout shorter than the call");
    let impatient = SlowClient::new(
        ServiceBuilder::new()
            .timeout(Duration::from_millis(100))
            .service(Transport::connect(&conn).await?),
    )
    .with_queue("tower_layers_slow");
    match impatient.work(1_000).await {
        Err(e @ RpcError::Timeout) => println!("  {e}"),
        other => anyhow::bail!("expected a timeout, got {other:?}"),
    }

    server.shutdown().await?;
    conn.close(200, "bye".into()).await?;
    endpoint.shutdown().await;
    Ok(())
}

//! The seed's Fibonacci RPC, all in one process, with its four open questions
//! answered on screen.
//!
//! Starts the built-in broker in-process (or uses `AMQP_URL` if set), two workers
//! sharing the `fib` queue, and a client that prints some results, then the
//! handler's own error, a timeout, and the errors for a missing server.
//!
//! ```text
//! cargo run --release --example fib
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --release --example fib
//! ```

use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};

/// Why a Fibonacci number cannot be computed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum FibError {
    /// fib(n) overflows a u64 for n > 93.
    #[error("fib({0}) does not fit in a u64 (n must be at most 93)")]
    TooLarge(u64),
}

/// The seed's service, on the queue `fib` (the trait name in snake_case). The
/// `fib_server` / `fib_client` examples use the seed's own queue, `rpc_queue`.
#[rpc_core::service]
pub trait Fib {
    /// The n-th Fibonacci number.
    async fn fib(&self, n: u64) -> Result<u64, FibError>;
}

/// fib(n), iteratively.
fn fib(n: u64) -> Result<u64, FibError> {
    if n > 93 {
        return Err(FibError::TooLarge(n));
    }
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    Ok(a)
}

/// A worker; `delay` makes it slow, to show a timeout.
struct Worker {
    id: usize,
    delay: Duration,
}

impl Fib for Worker {
    async fn fib(&self, n: u64) -> Result<u64, FibError> {
        println!("   worker {} computes fib({n})", self.id);
        tokio::time::sleep(self.delay).await;
        fib(n)
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
    println!(
        "broker: {} ({})",
        endpoint.url(),
        if endpoint.is_embedded() {
            "built-in, in this process"
        } else {
            "AMQP_URL"
        }
    );
    let props = || ConnectionProperties::default();
    let server_conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(endpoint.url(), props()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out connecting to the broker"))??;
    let client_conn = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(endpoint.url(), props()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out connecting to the broker"))??;

    // Two workers share the queue; each takes one request at a time (prefetch 1), so
    // the broker spreads the calls between them.
    let mut workers = Vec::new();
    for id in 1..=2 {
        let worker = Worker {
            id,
            delay: Duration::from_millis(20),
        };
        workers.push(
            FibServer::new(worker)
                .into_server()
                .concurrency(1)
                .start(&server_conn)
                .await?,
        );
    }
    // A slow worker on its own queue, to show a timeout.
    let slow = FibServer::new(Worker {
        id: 3,
        delay: Duration::from_millis(800),
    })
    .into_server()
    .queue_name("fib_slow")
    .start(&server_conn)
    .await?;

    let client = FibClient::connect(&client_conn).await?;

    println!("[x] requesting fib(n) for several n, concurrently");
    let ns = [0u64, 1, 10, 20, 30, 50, 90];
    let calls = ns.iter().map(|&n| {
        let client = client.clone();
        async move { (n, client.fib(n).await) }
    });
    for (n, result) in futures::future::join_all(calls).await {
        println!("[.] fib({n}) = {}", result?);
    }

    println!("[x] the handler's own error:");
    match client.fib(100).await {
        Err(rpc_core::RpcError::Handler(e)) => println!("[.] fib(100) failed: {e}"),
        other => anyhow::bail!("expected a handler error, got {other:?}"),
    }

    println!("[x] a timeout (deadline 200 ms, the worker needs 800 ms):");
    let started = Instant::now();
    let slow_client = client
        .with_queue("fib_slow")
        .with_deadline(Duration::from_millis(200));
    match slow_client.fib(30).await {
        Err(e @ rpc_core::RpcError::Timeout) => {
            println!("[.] {e} (after {} ms)", started.elapsed().as_millis())
        }
        other => anyhow::bail!("expected a timeout, got {other:?}"),
    }

    println!("[x] a queue no server ever declared:");
    match client.with_queue("fib_nobody_declared").fib(30).await {
        Err(e @ rpc_core::RpcError::NoRoute { .. }) => println!("[.] {e}"),
        other => anyhow::bail!("expected no route, got {other:?}"),
    }

    println!("[x] stopping the workers, then calling again:");
    for w in workers {
        w.shutdown().await?;
    }
    slow.shutdown().await?;
    // A fresh client: the old one remembers it saw consumers a moment ago.
    let client = FibClient::connect(&client_conn).await?;
    let started = Instant::now();
    match client.fib(30).await {
        Err(e @ rpc_core::RpcError::NoServer { .. }) => {
            println!(
                "[.] {e} (after {} ms, not at the deadline)",
                started.elapsed().as_millis()
            )
        }
        other => anyhow::bail!("expected no server, got {other:?}"),
    }

    client_conn.close(200, "bye".into()).await?;
    server_conn.close(200, "bye".into()).await?;
    endpoint.shutdown().await;
    Ok(())
}

//! A Fib worker process, like the seed's `rpc_server.py`: start two and the broker
//! splits the calls between them.
//!
//! ```text
//! cargo run --release --example fib_server                      # until ctrl-c
//! cargo run --release --example fib_server -- --max-requests 3  # exit after 3 calls
//! cargo run --release --example fib_server -- --exit-after 30   # exit after 30 s
//! ```
//!
//! Connects to `AMQP_URL` (a comma-separated list of nodes is tried in turn; default `amqp://guest:guest@127.0.0.1:5672/%2f`: this
//! machine's RabbitMQ, or `cargo run --release -p broker` listening there). The limits
//! can also come from `FIB_SERVER_MAX_REQUESTS` and `FIB_SERVER_EXIT_AFTER` (seconds).
//! For tests: `FIB_SERVER_QUEUE` (another queue than `rpc_queue`),
//! `FIB_SERVER_CONNECTION_NAME` (the connection's `connection_name`),
//! `FIB_SERVER_QUEUE_TYPE=quorum` (a quorum service queue, for a cluster) and
//! `FIB_SERVER_LOG_IDS` (print each handled request's correlation id).
//! Either way the worker shuts down gracefully: it stops consuming, answers what it
//! holds, acks, and exits 0.

mod fib_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use fib_common::{Fib, FibError, FibServer};
use tokio::sync::Notify;

/// Counts requests and says when the limit is reached.
struct Worker {
    served: AtomicU64,
    max: Option<u64>,
    done: Arc<Notify>,
    /// `FIB_SERVER_LOG_IDS` set: print each handled request's correlation id (the
    /// recovery tests count handler runs per request).
    log_ids: bool,
}

impl Fib for Worker {
    async fn fib(&self, n: u64) -> Result<u64, FibError> {
        println!(" [.] fib({n})");
        if self.log_ids
            && let Some(ctx) = rpc_core::Context::current()
        {
            let id = ctx.correlation_id().unwrap_or("-");
            println!(" [.] handled {id} redelivered={}", ctx.redelivered());
        }
        let count = self.served.fetch_add(1, Ordering::SeqCst) + 1;
        if self.max.is_some_and(|max| count >= max) {
            self.done.notify_one();
        }
        fib_common::fib(n)
    }
}

/// `--name value` or the environment variable `env`.
fn option(name: &str, env: &str) -> anyhow::Result<Option<u64>> {
    let args: Vec<String> = std::env::args().collect();
    let raw = match args.iter().position(|a| a == name) {
        Some(i) => Some(
            args.get(i + 1)
                .with_context(|| format!("{name} needs a value"))?
                .clone(),
        ),
        None => std::env::var(env).ok().filter(|v| !v.is_empty()),
    };
    raw.map(|v| {
        v.parse()
            .with_context(|| format!("{name}: not a number: {v}"))
    })
    .transpose()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fib_common::init_tracing();
    let max = option("--max-requests", "FIB_SERVER_MAX_REQUESTS")?;
    let exit_after = option("--exit-after", "FIB_SERVER_EXIT_AFTER")?;
    let url = fib_common::amqp_url();
    let done = Arc::new(Notify::new());
    let worker = Worker {
        served: AtomicU64::new(0),
        max,
        done: done.clone(),
        log_ids: std::env::var_os("FIB_SERVER_LOG_IDS").is_some(),
    };
    let stop = async move {
        let exit_timer = async {
            match exit_after {
                Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => println!(" [x] ctrl-c"),
            _ = done.notified() => println!(" [x] served {} requests", max.unwrap_or(0)),
            _ = exit_timer => println!(" [x] --exit-after elapsed"),
        }
    };
    // Prefetch 1, like the seed: a second worker gets the next request.
    let mut server = FibServer::new(worker).into_server().concurrency(1);
    // Tests on a shared broker: a queue and a connection name of their own.
    if let Some(queue) = std::env::var("FIB_SERVER_QUEUE")
        .ok()
        .filter(|q| !q.is_empty())
    {
        server = server.queue_name(queue);
    }
    // A RabbitMQ cluster: a replicated (quorum) service queue.
    if std::env::var("FIB_SERVER_QUEUE_TYPE").is_ok_and(|t| t == "quorum") {
        server = server.queue_type(rpc_core::QueueType::Quorum);
    }
    if let Ok(name) = std::env::var("FIB_SERVER_CONNECTION_NAME") {
        server = server.connection_name(name);
    }
    println!(" [x] Awaiting RPC requests on {} ({url})", server.queue());
    // The server owns its connection and recovers it (broker restarted, connection
    // closed): the next node of a comma-separated AMQP_URL, backoff, re-consume.
    server
        .serve_url_with_shutdown(&url, stop)
        .await
        .with_context(|| format!("serving on {url}"))?;
    Ok(())
}

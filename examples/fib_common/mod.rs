//! The Fib service shared by the `fib_server` and `fib_client` examples.

#![allow(dead_code)] // each example uses part of it

use serde::{Deserialize, Serialize};

/// The default broker of the two-process examples: this machine's RabbitMQ (or a
/// `broker` binary listening on 5672). Override with `AMQP_URL`.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// `AMQP_URL`, or [`DEFAULT_URL`]. It may list several nodes separated by commas
/// (`amqp://a:5672,amqp://b:5672`): the URL entry points try them in turn and a
/// reconnect moves to the next.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// Why a Fibonacci number cannot be computed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum FibError {
    /// fib(n) overflows a u64 for n > 93.
    #[error("fib({0}) does not fit in a u64 (n must be at most 93)")]
    TooLarge(u64),
}

/// The seed's service on the seed's queue, `rpc_queue`. One method, so seed-protocol
/// clients (body = the number as text, no method name) reach it.
#[rpc_core::service(queue = "rpc_queue")]
pub trait Fib {
    /// The n-th Fibonacci number.
    async fn fib(&self, n: u64) -> Result<u64, FibError>;
}

/// fib(n), iteratively.
pub fn fib(n: u64) -> Result<u64, FibError> {
    if n > 93 {
        return Err(FibError::TooLarge(n));
    }
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    Ok(a)
}

/// Sets up logging: `RUST_LOG` or warnings only.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,lapin=error".into()),
        )
        .init();
}

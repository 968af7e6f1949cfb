//! A service with several methods and its own error enum.
//!
//! Every method's failure comes back as `RpcError::Handler(CalcError::...)`, typed;
//! transport failures are the other `RpcError` variants. Arguments are validated while
//! decoding (`Percent` refuses values over 100), before the handler runs, and come back
//! as `RpcError::BadRequest`.
//!
//! ```text
//! cargo run --release --example calculator          # built-in broker
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --release --example calculator
//! ```

use lapin::{Connection, ConnectionProperties};
use rpc_core::{Codec, RpcError};
use serde::{Deserialize, Serialize};

/// What can go wrong in a calculation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum CalcError {
    /// Division by zero.
    #[error("division by zero")]
    DivideByZero,
    /// The result does not fit in an i64.
    #[error("{op} overflows")]
    Overflow {
        /// The operation.
        op: String,
    },
    /// Square root of a negative number.
    #[error("square root of negative number {0}")]
    NegativeSqrt(f64),
}

/// A percentage, 0 to 100; anything else fails to decode, so the server answers
/// `bad_request` without running the handler.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(try_from = "u8")]
pub struct Percent(u8);

impl TryFrom<u8> for Percent {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        if v <= 100 {
            Ok(Percent(v))
        } else {
            Err(format!("{v} is not a percentage"))
        }
    }
}

/// A calculator: queue `calculator` (the trait name in snake_case).
#[rpc_core::service]
pub trait Calculator {
    /// a + b.
    async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    /// a * b.
    async fn mul(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    /// a / b.
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    /// The square root.
    async fn sqrt(&self, x: f64) -> Result<f64, CalcError>;
    /// `p` percent of `of`.
    async fn percent(&self, p: Percent, of: f64) -> f64;
    /// The sum and mean of some numbers.
    async fn stats(&self, xs: Vec<f64>) -> Stats;
}

/// The result of [`Calculator::stats`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// Sum of the inputs.
    pub sum: f64,
    /// Mean of the inputs (`None` for none).
    pub mean: Option<f64>,
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        a.checked_add(b)
            .ok_or(CalcError::Overflow { op: "add".into() })
    }
    async fn mul(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        a.checked_mul(b)
            .ok_or(CalcError::Overflow { op: "mul".into() })
    }
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        if b == 0 {
            return Err(CalcError::DivideByZero);
        }
        a.checked_div(b)
            .ok_or(CalcError::Overflow { op: "div".into() })
    }
    async fn sqrt(&self, x: f64) -> Result<f64, CalcError> {
        if x < 0.0 {
            Err(CalcError::NegativeSqrt(x))
        } else {
            Ok(x.sqrt())
        }
    }
    async fn percent(&self, p: Percent, of: f64) -> f64 {
        of * f64::from(p.0) / 100.0
    }
    async fn stats(&self, xs: Vec<f64>) -> Stats {
        let sum: f64 = xs.iter().sum();
        let mean = (!xs.is_empty()).then(|| sum / xs.len() as f64);
        Stats { sum, mean }
    }
}

/// Prints a result, or the error with its variant.
fn show<T: std::fmt::Debug>(what: &str, r: Result<T, RpcError<CalcError>>) {
    match r {
        Ok(v) => println!("  {what} = {v:?}"),
        Err(RpcError::Handler(e)) => println!("  {what}: handler error: {e} ({e:?})"),
        Err(e) => println!("  {what}: rpc error: {e}"),
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
        std::time::Duration::from_secs(10),
        Connection::connect(endpoint.url(), ConnectionProperties::default()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out connecting to the broker"))??;
    let server = CalculatorServer::new(Calc).start(&conn).await?;
    println!("serving queue {:?}", CalculatorClient::QUEUE);

    let calc = CalculatorClient::connect(&conn).await?;
    show("add(2, 40)", calc.add(2, 40).await);
    show("mul(6, 7)", calc.mul(6, 7).await);
    show("div(84, 2)", calc.div(84, 2).await);
    show("sqrt(1764)", calc.sqrt(1764.0).await);
    show(
        "stats([1,2,3,4])",
        calc.stats(vec![1.0, 2.0, 3.0, 4.0])
            .await
            .map_err(RpcError::cast),
    );
    show(
        "percent(50, 84)",
        calc.percent(Percent(50), 84.0)
            .await
            .map_err(RpcError::cast),
    );
    println!("errors, each a distinct CalcError variant:");
    show("div(1, 0)", calc.div(1, 0).await);
    show("mul(i64::MAX, 2)", calc.mul(i64::MAX, 2).await);
    show("sqrt(-1)", calc.sqrt(-1.0).await);
    println!("invalid input, refused before the handler:");
    match calc.percent(Percent(250), 1.0).await {
        Err(RpcError::BadRequest { message }) => {
            println!("  percent(250, 1): bad request: {message}")
        }
        other => anyhow::bail!("expected a bad request, got {other:?}"),
    }
    println!("the same calls in JSON:");
    let json = calc.with_codec(Codec::Json);
    show("add(2, 40)", json.add(2, 40).await);
    show("div(1, 0)", json.div(1, 0).await);

    server.shutdown().await?;
    conn.close(200, "bye".into()).await?;
    endpoint.shutdown().await;
    Ok(())
}

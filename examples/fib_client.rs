//! A Fib client process, like the seed's `rpc_client.py`.
//!
//! ```text
//! cargo run --release --example fib_client              # fib(30)
//! cargo run --release --example fib_client -- 10 20 30  # several, concurrently
//! cargo run --release --example fib_client -- --text 30 # the seed's plain-text protocol
//! ```
//!
//! Connects to `AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`). Flags:
//! `--text` / `--json` pick the codec (default MessagePack; `--text` talks to the
//! seed's Python `rpc_server.py`), `--callback-queue` uses an exclusive callback
//! queue instead of direct reply-to, `--deadline-ms N` sets the deadline,
//! `--wait-ms N` (default 5000) keeps retrying while no server is up yet (handy when
//! a `fib_server` was just started in the background; 0 fails at once). Exits
//! non-zero on any error, printing it.

mod fib_common;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use fib_common::FibClient;
use rpc_core::{Codec, ReplyMode, Transport};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fib_common::init_tracing();
    let mut codec = Codec::MsgPack;
    let mut reply_mode = ReplyMode::DirectReplyTo;
    let mut deadline = Duration::from_secs(10);
    let mut wait = Duration::from_secs(5);
    let mut ns = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--text" => codec = Codec::Text,
            "--json" => codec = Codec::Json,
            "--callback-queue" => reply_mode = ReplyMode::CallbackQueue,
            "--deadline-ms" => {
                let ms: u64 = args
                    .next()
                    .context("--deadline-ms needs a value")?
                    .parse()?;
                deadline = Duration::from_millis(ms);
            }
            "--wait-ms" => {
                let ms: u64 = args.next().context("--wait-ms needs a value")?.parse()?;
                wait = Duration::from_millis(ms);
            }
            n => ns.push(
                n.parse::<u64>()
                    .with_context(|| format!("not a number: {n}"))?,
            ),
        }
    }
    if ns.is_empty() {
        ns.push(30);
    }
    let url = fib_common::amqp_url();
    let transport = Transport::builder()
        .reply_mode(reply_mode)
        .connect_url(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let client = FibClient::new(transport)
        .with_codec(codec)
        .with_deadline(deadline);
    let calls = ns.iter().map(|&n| {
        let client = client.clone();
        async move {
            println!(" [x] Requesting fib({n})");
            let give_up = Instant::now() + wait;
            loop {
                match client.fib(n).await {
                    // No server (yet): the broker told us at once; try again shortly.
                    Err(e) if e.is_no_server() && Instant::now() < give_up => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    result => break (n, result),
                }
            }
        }
    });
    let mut failed = false;
    for (n, result) in futures::future::join_all(calls).await {
        match result {
            Ok(v) => println!(" [.] Got {v}"),
            Err(e) => {
                println!(" [!] fib({n}) failed: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

//! Conformance suite: the built-in broker against RabbitMQ's observable behaviour.
//!
//! Every scenario is an `async fn(Ctx) -> anyhow::Result<()>`; the harness runs it against
//! the built-in broker (started in-process on `127.0.0.1:0`) and, when `AMQP_URL` is set,
//! against that broker too (CI: this machine's RabbitMQ, which is the spec).
//!
//! - `cargo test --test conformance`: built-in broker only (plus `AMQP_URL` if set).
//! - `CONFORMANCE_TARGET=external|embedded|both` selects targets (default `both`).
//! - `CONFORMANCE_TIMEOUT_SECS` changes the default per-scenario limit (30 s).
//!
//! Layout: `harness` (targets, timeouts, assertions), `raw` (a raw-socket client for what
//! lapin cannot express), then one module per protocol area and the seed's tutorials.
#![allow(clippy::unwrap_used, missing_docs, dead_code)]

#[path = "conformance/harness.rs"]
mod harness;
#[path = "conformance/raw.rs"]
mod raw;

#[path = "conformance/alternate.rs"]
mod alternate;
#[path = "conformance/args.rs"]
mod args;
#[path = "conformance/basic.rs"]
mod basic;
#[path = "conformance/channel.rs"]
mod channel;
#[path = "conformance/confirm_tx.rs"]
mod confirm_tx;
#[path = "conformance/connection.rs"]
mod connection;
#[path = "conformance/consumers.rs"]
mod consumers;
#[path = "conformance/dead_letter.rs"]
mod dead_letter;
#[path = "conformance/death.rs"]
mod death;
#[path = "conformance/direct_reply_to.rs"]
mod direct_reply_to;
#[path = "conformance/errors.rs"]
mod errors;
#[path = "conformance/exchange.rs"]
mod exchange;
#[path = "conformance/length.rs"]
mod length;
#[path = "conformance/length_bytes.rs"]
mod length_bytes;
#[path = "conformance/priority.rs"]
mod priority;
#[path = "conformance/properties.rs"]
mod properties;
#[path = "conformance/queue.rs"]
mod queue;
#[path = "conformance/queue_args.rs"]
mod queue_args;
#[path = "conformance/quorum.rs"]
mod quorum;
#[path = "conformance/ttl.rs"]
mod ttl;
#[path = "conformance/tutorials.rs"]
mod tutorials;

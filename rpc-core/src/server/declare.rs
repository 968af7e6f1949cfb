//! The service queue and the prefetch, set up before the server consumes.
//!
//! RabbitMQ 4.3 refuses, by default, what the seed did: a transient non-exclusive
//! queue (`541 INTERNAL_ERROR`, the connection closes) and global QoS (applied per
//! consumer). So the service queue is declared durable — a classic queue, or a quorum
//! queue with [`QueueType::Quorum`] — and the prefetch is per consumer.
//!
//! A queue already declared with other properties (say non-durable, by the seed's
//! Python `rpc_server.py` on RabbitMQ 3.x) makes the declare fail with
//! `406 PRECONDITION_FAILED`, which closes the channel: the server then opens another
//! channel, checks the queue exists with a passive declare and serves it as it is.

use lapin::options::{BasicQosOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};

use crate::error::RpcError;

/// The kind of queue a server declares for its service (see `docs/wire.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueType {
    /// A durable classic queue (the default): what a single broker, the built-in
    /// one included, serves.
    #[default]
    Classic,
    /// A quorum queue (`x-queue-type: quorum`), replicated across a RabbitMQ cluster.
    /// The built-in broker does not have quorum queues.
    Quorum,
}

impl QueueType {
    /// The `queue.declare` arguments for this type.
    fn arguments(self) -> FieldTable {
        let mut args = FieldTable::default();
        if self == QueueType::Quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        args
    }
}

/// Declares `queue` (durable, of type `kind`) on a new channel of `conn`, or uses the
/// queue as it is if it already exists with other properties; sets the per-consumer
/// prefetch to `prefetch`. Returns the channel to consume on.
pub(super) async fn service_queue(
    conn: &Connection,
    service: &'static str,
    queue: &str,
    kind: QueueType,
    prefetch: u16,
) -> Result<Channel, RpcError> {
    let channel = conn.create_channel().await?;
    match declare_on(&channel, queue, kind, prefetch).await {
        Ok(()) => Ok(channel),
        Err(e) if is_precondition_failed(&e) => {
            let channel = conn.create_channel().await?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await?;
            tracing::info!(
                service,
                queue,
                refused = %e,
                "the service queue exists with other properties; using it as it is"
            );
            channel
                .basic_qos(prefetch, BasicQosOptions { global: false })
                .await?;
            Ok(channel)
        }
        Err(e) => Err(e.into()),
    }
}

/// The durable declare of `queue` and the per-consumer prefetch on `channel`: at the
/// start, and again on the same channel after a broker-sent `basic.cancel` (the queue
/// was deleted, its node went down).
pub(super) async fn declare_on(
    channel: &Channel,
    queue: &str,
    kind: QueueType,
    prefetch: u16,
) -> Result<(), lapin::Error> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, kind.arguments())
        .await?;
    // Per consumer (global = false): RabbitMQ 4.3 does not apply global QoS.
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    Ok(())
}

/// Whether `e` is the broker closing the channel with 406 PRECONDITION_FAILED.
fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
        if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
}

//! The channel replies come back on: where they come back ([`ReplyMode`]) and opening
//! that channel on a connection (at the start, and again on a new connection:
//! `client::rebuild`).

use lapin::options::{BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use crate::error::RpcError;
use crate::wire;

/// Where replies come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplyMode {
    /// RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`): no queue to declare, the
    /// broker hands replies straight to this channel's consumer. The default.
    #[default]
    DirectReplyTo,
    /// An exclusive callback queue, as in the seed tutorial, named `rpc-reply-<uuid>`
    /// by the client (so that it can be declared again after a reconnect); deleted
    /// with the connection.
    CallbackQueue,
}

/// Opens the channel replies come back on: confirms on, the callback queue declared
/// (named `name` again after a reconnect, or a new `rpc-reply-<uuid>`), the reply
/// consumer registered. The channel, its consumer and the `reply_to`.
pub(super) async fn open_reply_channel(
    conn: &Connection,
    mode: ReplyMode,
    name: Option<&str>,
) -> Result<(Channel, lapin::Consumer, String), RpcError> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let reply_queue = match mode {
        ReplyMode::DirectReplyTo => wire::DIRECT_REPLY_TO.to_owned(),
        // Named here, not by the broker: lapin's recovery declares the queue again
        // by its name, and a broker-made `amq.gen-*` name is refused (403) when a
        // client declares it, which would end the transport at the first reconnect.
        ReplyMode::CallbackQueue => {
            let name = name.map_or_else(
                || format!("rpc-reply-{}", uuid::Uuid::new_v4().simple()),
                str::to_owned,
            );
            channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?
                .name()
                .to_string()
        }
    };
    let consumer = channel
        .basic_consume(
            reply_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer, reply_queue))
}

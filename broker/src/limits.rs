//! What a broker allows its clients: the values offered in `connection.tune`, the
//! largest message, the most connections, and how long a delivery may stay unacked.
//! Set on the builder, read by every connection and vhost.

use std::time::Duration;

/// Limits offered in `connection.tune`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame, in bytes (RabbitMQ: 131072).
    pub frame_max: u32,
    /// Highest channel number (RabbitMQ: 2047).
    pub channel_max: u16,
    /// Suggested heartbeat, in seconds (RabbitMQ: 60).
    pub heartbeat: u16,
    /// Largest message body accepted, in bytes (RabbitMQ's `max_message_size`:
    /// 128 MiB). A larger one is refused from its content header, before any of the
    /// body is buffered, with 406 PRECONDITION_FAILED.
    pub max_message_size: u64,
    /// Most connections served at once (RabbitMQ's `connection_max`; `None`: no limit).
    /// As RabbitMQ 3.10's listener does, the broker stops accepting while at the limit:
    /// newcomers wait in the kernel's backlog, unanswered, until a connection closes.
    pub max_connections: Option<usize>,
}

impl Limits {
    /// RabbitMQ's default `max_message_size` (128 MiB).
    pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 128 * 1024 * 1024;
    /// The largest `max_message_size` the broker accepts (RabbitMQ's cap, 512 MiB): a
    /// stored record's length is a `u32`, with room for the properties and names.
    pub const MAX_MESSAGE_SIZE_CAP: u64 = 512 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            max_connections: None,
        }
    }
}

/// RabbitMQ's default `consumer_timeout`.
pub const DEFAULT_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long a delivery may stay unacked, and what happens when it is over
/// ([`crate::BrokerBuilder::consumer_timeout`]). A queue's `x-consumer-timeout`
/// (milliseconds) overrides `default` for its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerTimeout {
    /// For queues without `x-consumer-timeout` (`None`: no limit).
    pub default: Option<Duration>,
    /// `false` (RabbitMQ's behaviour): close the channel with
    /// `406 PRECONDITION_FAILED - delivery acknowledgement on channel N timed out...`,
    /// which returns all its unacked deliveries to their queues. `true`: cancel only
    /// the consumer (`basic.cancel`) and return its deliveries; the channel stays open.
    pub cancels: bool,
}

impl Default for ConsumerTimeout {
    fn default() -> Self {
        Self {
            default: Some(DEFAULT_CONSUMER_TIMEOUT),
            cancels: false,
        }
    }
}

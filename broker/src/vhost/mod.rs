//! The virtual host: exchanges, queues, and every channel's delivery state, behind one
//! lock. The middle of the data path: a publish is routed here, enqueued, and handed to
//! consumers by writing `basic.deliver` straight into their connection's outbox, with no
//! task hop in between.
//!
//! Everything that two connections can race on (a queue's messages, a consumer's
//! prefetch credit, a channel's unacked deliveries) lives in [`VHost`], so one lock
//! taken per operation keeps it consistent. Connection-local state (content assembly,
//! confirm counters, transactions) stays in [`crate::channel`].
//!
//! This module holds the state and channel lifetimes; `deliver` hands ready messages
//! to consumers and sweeps expired ones; `publish` routes and enqueues; `topology`
//! declares and deletes exchanges, queues and bindings; `consume` handles consumers,
//! `basic.get`, qos and acknowledgements; `policy` applies the vhost's policies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::{FieldTable, ShortString};
use rand::Rng;

use crate::error::{AmqpError, code};
use crate::exchange::{Exchange, ExchangeKind};
use crate::frame;
use crate::message::Message;
use crate::outbox::Outbox;
use crate::queue::{ChannelKey, Queue};
use crate::store::log::Location;

mod api_get;
mod consume;
mod dead_letter;
mod timeout;

pub(crate) use crate::limits::ConsumerTimeout;
mod deliver;
mod durable;
mod inspect;
mod policy;
mod publish;
mod table;
mod topology;

pub use crate::message_stats::{MessageStats, QueueStats};
pub use api_get::AckMode;
pub use durable::StoreState;
pub use inspect::{
    BindingSnapshot, ChannelSnapshot, Churn, ConsumerSnapshot, ExchangeSnapshot, QueueSnapshot,
};
pub(crate) use table::{VHostEntry, VHosts};

/// The pseudo-queue a client consumes from to use direct reply-to.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// The prefix of the per-channel names `reply_to` is rewritten to.
pub const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// A delivery waiting for its ack.
#[derive(Debug)]
pub struct Unacked {
    /// The queue it came from (it goes back there on requeue).
    pub queue: ShortString,
    /// The consumer it went to (`None` for `basic.get`).
    pub consumer: Option<ShortString>,
    /// The message.
    pub message: Arc<Message>,
    /// Where the queue's copy is stored (persistent message, durable queue).
    pub loc: Option<Location>,
    /// How often it was delivered and came back before this delivery.
    pub deliveries: u32,
    /// When it went out: the consumer timeout runs from here.
    pub delivered_at: Instant,
}

/// What became of a publish.
#[derive(Debug)]
pub struct Routed {
    /// The message, when a mandatory publish must go back to the publisher: nothing
    /// routed it, or it went through direct reply-to, which RabbitMQ also returns with
    /// 312 although it delivers it.
    pub returned: Option<Message>,
    /// The store ticket to wait for before confirming: the message is persistent and
    /// went to at least one durable queue.
    pub ticket: Option<u64>,
    /// A queue it routed to was full and refuses publishes (`x-overflow:
    /// reject-publish`): a confirm-mode publisher gets `basic.nack`, as from RabbitMQ.
    pub rejected: bool,
}

/// A channel's delivery state, shared with the queues that deliver to it.
#[derive(Debug)]
pub struct ChannelState {
    /// Where its frames go.
    pub outbox: Arc<Outbox>,
    /// Negotiated frame size, for splitting bodies.
    pub frame_max: usize,
    /// Last delivery tag handed out.
    pub last_tag: u64,
    /// Deliveries not yet acked, by tag (ordered, for `multiple` and requeue order).
    pub unacked: BTreeMap<u64, Unacked>,
    /// `basic.qos` with `global = true`: a limit shared by all consumers (0 = none).
    pub prefetch_global: u16,
    /// `basic.qos` with `global = false`: the limit each new consumer gets.
    pub prefetch_consumer: u16,
    /// Deliveries counted against `prefetch_global`.
    pub unacked_global: u32,
    /// The client understands a server-sent `basic.cancel`.
    pub cancel_notify: bool,
    /// Direct reply-to: the consumer tag and the token of this channel's reply name.
    pub reply_consumer: Option<(ShortString, String)>,
    /// Queues this channel consumes from, by consumer tag.
    pub consumers: HashMap<ShortString, ShortString>,
    /// A delivery timed out and the connection was asked to close the channel.
    pub timed_out: bool,
    /// What the connection's side of the channel reports to the management API.
    pub stats: Arc<ChannelStats>,
}

/// The publisher side of a channel, which its connection owns, as the management API
/// lists it (RabbitMQ's `confirm` and `messages_unconfirmed`): written by the
/// connection when they change, read by the API, never locked.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// `confirm.select` was accepted.
    pub confirm: std::sync::atomic::AtomicBool,
    /// Confirm-mode publishes not confirmed yet.
    pub unconfirmed: std::sync::atomic::AtomicU32,
}

impl ChannelState {
    /// A fresh channel writing to `outbox`.
    pub fn new(outbox: Arc<Outbox>, frame_max: usize, cancel_notify: bool) -> Self {
        Self::with_stats(outbox, frame_max, cancel_notify, Arc::default())
    }

    /// A fresh channel whose publisher side reports to `stats`.
    pub fn with_stats(
        outbox: Arc<Outbox>,
        frame_max: usize,
        cancel_notify: bool,
        stats: Arc<ChannelStats>,
    ) -> Self {
        Self {
            outbox,
            frame_max,
            last_tag: 0,
            unacked: BTreeMap::new(),
            prefetch_global: 0,
            prefetch_consumer: 0,
            unacked_global: 0,
            cancel_notify,
            reply_consumer: None,
            consumers: HashMap::new(),
            timed_out: false,
            stats,
        }
    }

    fn global_credit(&self) -> bool {
        self.prefetch_global == 0 || self.unacked_global < u32::from(self.prefetch_global)
    }
}

/// What a declare reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue's name (server-generated if none was given).
    pub name: ShortString,
    /// Ready messages.
    pub messages: u32,
    /// Consumers.
    pub consumers: u32,
}

/// Options of `queue.declare`.
#[derive(Debug, Clone, Default)]
pub struct QueueOptions {
    /// Only check it exists.
    pub passive: bool,
    /// Durable flag.
    pub durable: bool,
    /// Exclusive to the declaring connection.
    pub exclusive: bool,
    /// Deleted when the last consumer goes.
    pub auto_delete: bool,
    /// `x-*` arguments.
    pub arguments: FieldTable,
}

/// A queue's counts, as `queue.declare-ok` and the management API give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready to deliver (expired ones at the head dropped first).
    pub ready: u32,
    /// Delivered and not yet acked.
    pub unacked: u32,
    /// Consumers.
    pub consumers: u32,
}

/// Options of `exchange.declare`.
#[derive(Debug, Clone)]
pub struct ExchangeOptions {
    /// Type name (`direct`, `fanout`, `topic`, `headers`).
    pub kind: String,
    /// Only check it exists.
    pub passive: bool,
    /// Durable flag.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Not publishable directly.
    pub internal: bool,
    /// Arguments.
    pub arguments: FieldTable,
}

/// Options of `basic.consume`.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// The tag, or empty for a server-generated one.
    pub tag: ShortString,
    /// No acks.
    pub no_ack: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// Do not send `consume-ok`.
    pub nowait: bool,
    /// `basic.consume` arguments (`x-priority`).
    pub arguments: FieldTable,
}

/// One virtual host.
#[derive(Debug)]
pub struct VHost {
    /// The vhost's name, as error texts and the management API give it.
    name: String,
    exchanges: HashMap<ShortString, Exchange>,
    queues: HashMap<ShortString, Queue>,
    channels: HashMap<ChannelKey, ChannelState>,
    reply_tokens: HashMap<String, ChannelKey>,
    store: Option<StoreState>,
    /// Message counters for the management API and `/metrics`.
    stats: MessageStats,
    churn: inspect::Churn,
    /// The vhost's `max-queues` limit (see [`crate::resource_limits`]).
    pub(crate) max_queues: Option<u64>,
    /// The vhost's policies and operator policies (see `policy`).
    policies: crate::policy::VhostPolicies,
    /// Its default queue type is quorum (see [`crate::vhost_metadata`]).
    pub(crate) quorum_by_default: bool,
    /// How long a delivery may stay unacked, and what happens then (see `timeout`).
    pub(crate) consumer_timeout: ConsumerTimeout,
    /// The deprecated features permitted here (see [`crate::deprecated`]).
    pub(crate) deprecated: crate::deprecated::DeprecatedFeatures,
    /// Dead-lettered messages waiting to be republished (see `dead_letter`).
    dead_work: std::collections::VecDeque<dead_letter::DeadWork>,
    /// The work list is being worked down by an outer call.
    dead_busy: bool,
}

impl Default for VHost {
    fn default() -> Self {
        Self::new()
    }
}

impl VHost {
    /// The default vhost, `/`, with the default exchange and the predeclared `amq.*`
    /// exchanges.
    pub fn new() -> Self {
        Self::named("/")
    }

    /// A vhost called `name`, with the default exchange and the predeclared `amq.*`
    /// exchanges.
    pub fn named(name: &str) -> Self {
        let mut exchanges = HashMap::new();
        for (name, kind) in [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
            ("amq.rabbitmq.trace", ExchangeKind::Topic),
        ] {
            let mut x = Exchange::new(name, kind, true);
            x.internal = name == "amq.rabbitmq.trace";
            exchanges.insert(ShortString::from(name), x);
        }
        Self {
            name: name.to_owned(),
            exchanges,
            queues: HashMap::new(),
            channels: HashMap::new(),
            reply_tokens: HashMap::new(),
            store: None,
            stats: MessageStats::default(),
            churn: inspect::Churn::default(),
            max_queues: None,
            policies: Default::default(),
            quorum_by_default: false,
            deprecated: crate::deprecated::DeprecatedFeatures::default(),
            consumer_timeout: ConsumerTimeout::default(),
            dead_work: std::collections::VecDeque::new(),
            dead_busy: false,
        }
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    // ----- channels and connections -------------------------------------------------

    /// Registers a newly opened channel.
    pub fn open_channel(&mut self, key: ChannelKey, state: ChannelState) {
        self.churn.channel_created += 1;
        self.channels.insert(key, state);
    }

    /// Forgets a channel: cancels its consumers and requeues its unacked deliveries in
    /// order, marked redelivered, as RabbitMQ does when a channel closes.
    pub fn close_channel(&mut self, key: ChannelKey) {
        let Some(mut ch) = self.channels.remove(&key) else {
            return;
        };
        self.churn.channel_closed += 1;
        if let Some((_, token)) = ch.reply_consumer.take() {
            self.reply_tokens.remove(&token);
        }
        let mut touched = HashSet::new();
        for (tag, queue) in ch.consumers.drain() {
            if let Some(q) = self.queues.get_mut(&queue) {
                q.consumers.retain(|c| !(c.channel == key && c.tag == tag));
                q.last_used = Instant::now();
                touched.insert(queue);
            }
        }
        let unacked = std::mem::take(&mut ch.unacked);
        self.requeue(unacked.into_values(), &mut touched);
        for name in touched {
            self.after_consumer_left(name.as_str());
            self.dispatch(name.as_str());
        }
    }

    /// Deletes the exclusive queues a closing connection owned.
    pub fn close_connection(&mut self, conn: u64) {
        let owned: Vec<ShortString> = self
            .queues
            .values()
            .filter(|q| q.exclusive_owner == Some(conn))
            .map(|q| q.name.clone())
            .collect();
        for name in owned {
            self.remove_queue(name.as_str());
        }
    }

    fn channel(&mut self, key: ChannelKey) -> Result<&mut ChannelState, AmqpError> {
        self.channels
            .get_mut(&key)
            .ok_or_else(|| AmqpError::connection(code::CHANNEL_ERROR, "channel is not open"))
    }

    /// A queue's counts, or `None` if there is no such queue.
    pub fn queue_counts(&mut self, name: &str) -> Option<QueueCounts> {
        let now = Instant::now();
        let unacked = self
            .channels
            .values()
            .flat_map(|c| c.unacked.values())
            .filter(|u| u.queue.as_str() == name)
            .count();
        let q = self.queues.get_mut(name)?;
        Some(QueueCounts {
            ready: q.ready(now),
            unacked: u32::try_from(unacked).unwrap_or(u32::MAX),
            consumers: q.consumer_count(),
        })
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }
}

fn send_consume_ok(ch: &ChannelState, channel: u16, tag: &ShortString, nowait: bool) {
    if nowait {
        return;
    }
    let ok = basic::ConsumeOk {
        consumer_tag: tag.clone(),
    };
    ch.outbox.push(|out| {
        frame::encode_method(
            out,
            channel,
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)),
        )
    });
}

fn unknown_type(kind: &str) -> AmqpError {
    AmqpError::connection(
        code::COMMAND_INVALID,
        format_args!("unknown exchange type '{kind}'"),
    )
}

fn unknown_tag(tag: u64) -> AmqpError {
    AmqpError::precondition(format_args!("unknown delivery tag {tag}"))
}

/// A server-generated name: `prefix` + 22 URL-safe random characters, as RabbitMQ's.
pub fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(prefix.len() + 22);
    s.push_str(prefix);
    for _ in 0..22 {
        s.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
    }
    s
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

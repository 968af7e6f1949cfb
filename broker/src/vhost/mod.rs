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
//! This module holds the state, channel lifetimes and dispatch; `publish` routes and
//! enqueues; `topology` declares and deletes exchanges, queues and bindings; `consume`
//! handles consumers, `basic.get`, qos and acknowledgements.

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

mod consume;
mod durable;
mod inspect;
mod publish;
mod topology;

pub use durable::StoreState;
pub use inspect::{
    BindingSnapshot, ChannelSnapshot, ConsumerSnapshot, ExchangeSnapshot, MessageStats,
    QueueSnapshot,
};

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
}

impl ChannelState {
    /// A fresh channel writing to `outbox`.
    pub fn new(outbox: Arc<Outbox>, frame_max: usize, cancel_notify: bool) -> Self {
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
    /// The deprecated features permitted here (see [`crate::deprecated`]).
    pub(crate) deprecated: crate::deprecated::DeprecatedFeatures,
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
            deprecated: crate::deprecated::DeprecatedFeatures::default(),
        }
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    // ----- channels and connections -------------------------------------------------

    /// Registers a newly opened channel.
    pub fn open_channel(&mut self, key: ChannelKey, state: ChannelState) {
        self.channels.insert(key, state);
    }

    /// Forgets a channel: cancels its consumers and requeues its unacked deliveries in
    /// order, marked redelivered, as RabbitMQ does when a channel closes.
    pub fn close_channel(&mut self, key: ChannelKey) {
        let Some(mut ch) = self.channels.remove(&key) else {
            return;
        };
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

    /// A connection's outbox came back under its limit: the queues its consumers read
    /// from may deliver again.
    pub fn resume(&mut self, conn: u64) {
        let queues: HashSet<ShortString> = self
            .channels
            .iter()
            .filter(|(key, _)| key.0 == conn)
            .flat_map(|(_, ch)| ch.consumers.values().cloned())
            .collect();
        for q in queues {
            self.dispatch(q.as_str());
        }
    }

    /// Hands ready messages of one queue to consumers with credit, round robin.
    pub fn dispatch(&mut self, name: &str) {
        self.dispatch_at(name, Instant::now());
    }

    /// [`VHost::dispatch`] as of `now`: messages expiring exactly at `now` (TTL 0 at
    /// publish) may still go out.
    fn dispatch_at(&mut self, name: &str, now: Instant) {
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        loop {
            q.drop_expired_before(now);
            if q.messages.is_empty() {
                q.page_in(now);
            }
            if q.messages.is_empty() || q.consumers.is_empty() {
                return;
            }
            let channels = &self.channels;
            let pick = q.consumers.iter().position(|c| {
                c.has_credit()
                    && channels
                        .get(&c.channel)
                        // As RabbitMQ 3.10 behaves: the channel-wide (global) limit
                        // applies to consumers that started without a limit of their own.
                        // A full outbox (its client not reading) takes nothing more.
                        .is_some_and(|ch| {
                            ch.outbox.has_room()
                                && (c.no_ack || c.prefetch > 0 || ch.global_credit())
                        })
            });
            let Some(i) = pick else { return };
            let Some(mut consumer) = q.consumers.remove(i) else {
                return;
            };
            let Some(qm) = q.messages.pop_front() else {
                return;
            };
            if let (Some(loc), Some(d)) = (qm.loc, q.log.as_mut()) {
                if consumer.no_ack {
                    d.log.ack(loc);
                } else if !qm.redelivered {
                    d.log.delivered(loc);
                }
            }
            if let Some(ch) = self.channels.get_mut(&consumer.channel) {
                self.stats
                    .count_delivery(consumer.no_ack, qm.redelivered, false);
                ch.last_tag += 1;
                let tag = ch.last_tag;
                let m = &qm.message;
                let frame_max = ch.frame_max;
                let id = consumer.channel.1;
                ch.outbox.push(|out| {
                    frame::encode_deliver(
                        out,
                        id,
                        consumer.tag.as_str(),
                        tag,
                        qm.redelivered,
                        m.exchange.as_str(),
                        m.routing_key.as_str(),
                    );
                    frame::encode_content(out, id, &m.properties, &m.body, frame_max);
                });
                if !consumer.no_ack {
                    consumer.unacked += 1;
                    ch.unacked_global += 1;
                    ch.unacked.insert(
                        tag,
                        Unacked {
                            queue: q.name.clone(),
                            consumer: Some(consumer.tag.clone()),
                            message: qm.message,
                            loc: qm.loc,
                        },
                    );
                }
            }
            q.consumers.push_back(consumer);
        }
    }

    // ----- housekeeping ---------------------------------------------------------------

    /// Drops expired messages at queue heads and deletes queues idle past `x-expires`.
    pub fn sweep(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut paged = Vec::new();
        for q in self.queues.values_mut() {
            q.drop_expired(now);
            if q.idle_expired(now) {
                expired.push(q.name.clone());
            }
            if q.paged.is_some() && q.messages.is_empty() {
                // Paged-out messages the sync thread has written since the last try.
                paged.push(q.name.clone());
            }
        }
        for name in paged {
            if let Some(q) = self.queues.get_mut(&name) {
                q.page_in(now);
            }
            self.dispatch_at(name.as_str(), now);
        }
        for name in expired {
            self.remove_queue(name.as_str());
        }
        self.commit_store();
    }

    /// Counts for tests and the management side: (ready, unacked, consumers).
    pub fn queue_counts(&mut self, name: &str) -> Option<(u32, u32, u32)> {
        let now = Instant::now();
        let unacked = self
            .channels
            .values()
            .flat_map(|c| c.unacked.values())
            .filter(|u| u.queue.as_str() == name)
            .count();
        let q = self.queues.get_mut(name)?;
        Some((q.ready(now), unacked as u32, q.consumer_count()))
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
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(body: &'static str) -> Message {
        Message {
            exchange: "".into(),
            routing_key: "q".into(),
            properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from_static(body.as_bytes()),
            ttl: None,
            expires_at: None,
            persistent: false,
        }
    }

    fn vhost_with_channel() -> (VHost, ChannelKey, Arc<Outbox>) {
        let mut v = VHost::new();
        let outbox = Arc::new(Outbox::default());
        let key = (1, 1);
        v.open_channel(key, ChannelState::new(Arc::clone(&outbox), 131072, true));
        (v, key, outbox)
    }

    fn consume(v: &mut VHost, key: ChannelKey, queue: &str) -> ShortString {
        v.consume(
            key,
            queue,
            ConsumeOptions {
                tag: "".into(),
                no_ack: false,
                exclusive: false,
                nowait: true,
            },
        )
        .expect("consume")
    }

    #[test]
    fn prefetch_limits_and_acks_release_credit() {
        let (mut v, key, _out) = vhost_with_channel();
        v.declare_queue(1, "q", QueueOptions::default())
            .expect("declare");
        v.qos(key, 2, false).expect("qos");
        consume(&mut v, key, "q");
        for _ in 0..5 {
            assert!(v.publish(&|| None, msg("m")).returned.is_none(), "routed");
        }
        assert_eq!(v.queue_counts("q"), Some((3, 2, 1)));
        v.ack(key, 2, true).expect("ack");
        assert_eq!(v.queue_counts("q"), Some((1, 2, 1)));
        assert_eq!(
            v.ack(key, 99, false).expect_err("unknown").code,
            code::PRECONDITION_FAILED
        );
    }

    #[test]
    fn closing_a_channel_requeues_in_order_as_redelivered() {
        let (mut v, key, _out) = vhost_with_channel();
        v.declare_queue(1, "q", QueueOptions::default())
            .expect("declare");
        consume(&mut v, key, "q");
        for b in ["a", "b", "c"] {
            v.publish(&|| None, msg(b));
        }
        v.close_channel(key);
        let q = v.queues.get("q").expect("queue");
        let bodies: Vec<&[u8]> = q.messages.iter().map(|m| &m.message.body[..]).collect();
        assert_eq!(bodies, vec![&b"a"[..], b"b", b"c"]);
        assert!(q.messages.iter().all(|m| m.redelivered));
    }

    #[test]
    fn auto_delete_queue_goes_with_its_last_consumer() {
        let (mut v, key, _out) = vhost_with_channel();
        let opts = QueueOptions {
            auto_delete: true,
            ..Default::default()
        };
        v.declare_queue(1, "q", opts).expect("declare");
        let tag = consume(&mut v, key, "q");
        v.cancel(key, tag.as_str()).expect("cancel");
        assert!(!v.queues.contains_key("q"));
    }

    #[test]
    fn exclusive_queue_is_locked_for_other_connections_and_dies_with_its_own() {
        let mut v = VHost::new();
        v.declare_queue(
            1,
            "q",
            QueueOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .expect("declare");
        let err = v
            .declare_queue(
                2,
                "q",
                QueueOptions {
                    exclusive: true,
                    ..Default::default()
                },
            )
            .expect_err("locked");
        assert_eq!(err.code, code::RESOURCE_LOCKED);
        v.close_connection(1);
        assert_eq!(v.queue_count(), 0);
    }

    #[test]
    fn exchange_to_exchange_routing_reaches_each_queue_once() {
        let mut v = VHost::new();
        let topic = |kind: &str| ExchangeOptions {
            kind: kind.into(),
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        };
        v.declare_exchange("a", topic("topic")).expect("a");
        v.declare_exchange("b", topic("fanout")).expect("b");
        v.declare_queue(1, "q", QueueOptions::default()).expect("q");
        v.bind_exchange("b", "a", "x.*", FieldTable::default())
            .expect("bind");
        v.bind_queue(1, "q", "b", "", FieldTable::default())
            .expect("bind");
        v.bind_queue(1, "q", "a", "#", FieldTable::default())
            .expect("bind");
        assert_eq!(v.route("a", "x.y", &|| None), vec![ShortString::from("q")]);
        assert!(v.route("missing", "x", &|| None).is_empty());
    }

    #[test]
    fn generated_names_look_like_rabbitmqs() {
        let n = generated_name("amq.gen-");
        assert_eq!(n.len(), "amq.gen-".len() + 22);
        assert_ne!(n, generated_name("amq.gen-"));
    }
}

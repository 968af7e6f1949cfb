//! The virtual host: exchanges, queues, and every channel's delivery state, behind one
//! lock. The middle of the data path: a publish is routed here, enqueued, and handed to
//! consumers by writing `basic.deliver` straight into their connection's outbox, with no
//! task hop in between.
//!
//! Everything that two connections can race on (a queue's messages, a consumer's
//! prefetch credit, a channel's unacked deliveries) lives in [`VHost`], so one lock
//! taken per operation keeps it consistent. Connection-local state (content assembly,
//! confirm counters, transactions) stays in [`crate::channel`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::{FieldTable, ShortString};
use rand::Rng;

use crate::error::{AmqpError, code};
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::frame;
use crate::message::{Message, QueuedMessage};
use crate::outbox::Outbox;
use crate::queue::{ChannelKey, Consumer, Queue};

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

/// The result of routing a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Reached at least one queue (or a direct reply-to consumer).
    Yes,
    /// Matched nothing: dropped, or returned if mandatory.
    No,
}

/// One virtual host.
#[derive(Debug)]
pub struct VHost {
    exchanges: HashMap<ShortString, Exchange>,
    queues: HashMap<ShortString, Queue>,
    channels: HashMap<ChannelKey, ChannelState>,
    reply_tokens: HashMap<String, ChannelKey>,
}

impl Default for VHost {
    fn default() -> Self {
        Self::new()
    }
}

impl VHost {
    /// A vhost with the default exchange and the predeclared `amq.*` exchanges.
    pub fn new() -> Self {
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
            exchanges,
            queues: HashMap::new(),
            channels: HashMap::new(),
            reply_tokens: HashMap::new(),
        }
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

    // ----- exchanges ------------------------------------------------------------------

    /// `exchange.declare`.
    pub fn declare_exchange(&mut self, name: &str, opts: ExchangeOptions) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        let kind = ExchangeKind::parse(&opts.kind);
        if let Some(x) = self.exchanges.get(name) {
            if opts.passive {
                return Ok(());
            }
            let received = kind.ok_or_else(|| unknown_type(&opts.kind))?;
            let inequivalent = |arg: &str, r: &dyn std::fmt::Display, c: &dyn std::fmt::Display| {
                AmqpError::precondition(format_args!(
                    "inequivalent arg '{arg}' for exchange '{name}' in vhost '/': received '{r}' but current is '{c}'"
                ))
            };
            if x.kind != received {
                return Err(inequivalent("type", &received.as_str(), &x.kind.as_str()));
            }
            if x.durable != opts.durable {
                return Err(inequivalent("durable", &opts.durable, &x.durable));
            }
            if x.auto_delete != opts.auto_delete {
                return Err(inequivalent(
                    "auto_delete",
                    &opts.auto_delete,
                    &x.auto_delete,
                ));
            }
            if x.internal != opts.internal {
                return Err(inequivalent("internal", &opts.internal, &x.internal));
            }
            return Ok(());
        }
        if opts.passive {
            return Err(AmqpError::not_found_exchange(name));
        }
        let kind = kind.ok_or_else(|| unknown_type(&opts.kind))?;
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let mut x = Exchange::new(name, kind, opts.durable);
        x.auto_delete = opts.auto_delete;
        x.internal = opts.internal;
        x.arguments = opts.arguments;
        self.exchanges.insert(name.into(), x);
        Ok(())
    }

    /// `exchange.delete`: deleting one that does not exist succeeds, as in RabbitMQ.
    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "deletion of system exchange '{name}' in vhost '/' not allowed"
            )));
        }
        let Some(x) = self.exchanges.get(name) else {
            return Ok(());
        };
        if if_unused && !x.bindings.is_empty() {
            return Err(AmqpError::precondition(format_args!(
                "exchange '{name}' in vhost '/' in use"
            )));
        }
        self.remove_exchange(name);
        Ok(())
    }

    fn remove_exchange(&mut self, name: &str) {
        self.exchanges.remove(name);
        let dest = Destination::Exchange(name.into());
        self.remove_bindings_to(&dest);
    }

    fn remove_bindings_to(&mut self, dest: &Destination) {
        let mut emptied = Vec::new();
        for x in self.exchanges.values_mut() {
            let before = x.bindings.len();
            x.bindings.retain(|b| &b.destination != dest);
            if x.auto_delete && before > 0 && x.bindings.is_empty() {
                emptied.push(x.name.clone());
            }
        }
        for name in emptied {
            self.remove_exchange(name.as_str());
        }
    }

    fn bindable_source(&self, name: &str) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if !self.exchanges.contains_key(name) {
            return Err(AmqpError::not_found_exchange(name));
        }
        Ok(())
    }

    /// `exchange.bind`: messages from `source` also go through `destination`.
    pub fn bind_exchange(
        &mut self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        self.bindable_source(source)?;
        if destination.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if !self.exchanges.contains_key(destination) {
            return Err(AmqpError::not_found_exchange(destination));
        }
        self.add_binding(
            source,
            Destination::Exchange(destination.into()),
            routing_key,
            arguments,
        );
        Ok(())
    }

    /// `exchange.unbind`.
    pub fn unbind_exchange(
        &mut self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if !self.exchanges.contains_key(destination) {
            return Err(AmqpError::not_found_exchange(destination));
        }
        if !self.exchanges.contains_key(source) {
            return Err(AmqpError::not_found_exchange(source));
        }
        self.remove_binding(
            source,
            &Destination::Exchange(destination.into()),
            routing_key,
            arguments,
        );
        Ok(())
    }

    fn add_binding(
        &mut self,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: FieldTable,
    ) {
        if let Some(x) = self.exchanges.get_mut(source) {
            let binding = Binding {
                destination,
                routing_key: routing_key.into(),
                arguments,
            };
            if !x.bindings.contains(&binding) {
                x.bindings.push(binding);
            }
        }
    }

    fn remove_binding(
        &mut self,
        source: &str,
        dest: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) {
        let Some(x) = self.exchanges.get_mut(source) else {
            return;
        };
        let before = x.bindings.len();
        x.bindings.retain(|b| {
            !(&b.destination == dest
                && b.routing_key.as_str() == routing_key
                && &b.arguments == arguments)
        });
        if x.auto_delete && before > x.bindings.len() && x.bindings.is_empty() {
            let name = x.name.clone();
            self.remove_exchange(name.as_str());
        }
    }

    // ----- queues ---------------------------------------------------------------------

    /// Checks that `conn` may use the queue (exclusive queues belong to one connection).
    fn accessible(&self, name: &str, conn: u64) -> Result<&Queue, AmqpError> {
        let q = self
            .queues
            .get(name)
            .ok_or_else(|| AmqpError::not_found_queue(name))?;
        match q.exclusive_owner {
            Some(owner) if owner != conn => Err(locked(name)),
            _ => Ok(q),
        }
    }

    fn accessible_mut(&mut self, name: &str, conn: u64) -> Result<&mut Queue, AmqpError> {
        self.accessible(name, conn)?;
        self.queues
            .get_mut(name)
            .ok_or_else(|| AmqpError::not_found_queue(name))
    }

    /// `queue.declare`.
    pub fn declare_queue(
        &mut self,
        conn: u64,
        name: &str,
        opts: QueueOptions,
    ) -> Result<QueueInfo, AmqpError> {
        let now = Instant::now();
        if name == REPLY_TO && opts.passive {
            // RabbitMQ reports the pseudo-queue as having one consumer.
            return Ok(QueueInfo {
                name: name.into(),
                messages: 0,
                consumers: 1,
            });
        }
        if self.queues.contains_key(name) {
            let q = self.accessible_mut(name, conn)?;
            if !opts.passive {
                q.check_equivalent(
                    opts.durable,
                    opts.exclusive,
                    opts.auto_delete,
                    &opts.arguments,
                )?;
            }
            q.last_used = now;
            return Ok(QueueInfo {
                name: q.name.clone(),
                messages: q.ready(now),
                consumers: q.consumer_count(),
            });
        }
        if opts.passive {
            return Err(AmqpError::not_found_queue(name));
        }
        let name: ShortString = if name.is_empty() {
            generated_name("amq.gen-").into()
        } else if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        } else {
            name.into()
        };
        let owner = opts.exclusive.then_some(conn);
        let q = Queue::new(
            name.clone(),
            opts.durable,
            owner,
            opts.auto_delete,
            opts.arguments,
        )?;
        self.queues.insert(name.clone(), q);
        Ok(QueueInfo {
            name,
            messages: 0,
            consumers: 0,
        })
    }

    /// `queue.bind`.
    pub fn bind_queue(
        &mut self,
        conn: u64,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        self.accessible(queue, conn)?;
        self.bindable_source(exchange)?;
        self.add_binding(
            exchange,
            Destination::Queue(queue.into()),
            routing_key,
            arguments,
        );
        Ok(())
    }

    /// `queue.unbind`: unbinding what is not bound succeeds.
    pub fn unbind_queue(
        &mut self,
        conn: u64,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        self.accessible(queue, conn)?;
        if exchange.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if !self.exchanges.contains_key(exchange) {
            return Err(AmqpError::not_found_exchange(exchange));
        }
        self.remove_binding(
            exchange,
            &Destination::Queue(queue.into()),
            routing_key,
            arguments,
        );
        Ok(())
    }

    /// `queue.purge`: drops the ready messages (not the unacked ones).
    pub fn purge_queue(&mut self, conn: u64, name: &str) -> Result<u32, AmqpError> {
        let q = self.accessible_mut(name, conn)?;
        let n = u32::try_from(q.messages.len()).unwrap_or(u32::MAX);
        q.messages.clear();
        Ok(n)
    }

    /// `queue.delete`: deleting one that does not exist succeeds, as in RabbitMQ.
    pub fn delete_queue(
        &mut self,
        conn: u64,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AmqpError> {
        if !self.queues.contains_key(name) {
            return Ok(0);
        }
        let q = self.accessible_mut(name, conn)?;
        if if_unused && !q.consumers.is_empty() {
            return Err(AmqpError::precondition(format_args!(
                "queue '{name}' in vhost '/' in use"
            )));
        }
        if if_empty && !q.messages.is_empty() {
            return Err(AmqpError::precondition(format_args!(
                "queue '{name}' in vhost '/' not empty"
            )));
        }
        Ok(self.remove_queue(name))
    }

    /// Removes a queue, its bindings and its consumers (who are told with a
    /// server-sent `basic.cancel` if they understand it). Returns its ready count.
    fn remove_queue(&mut self, name: &str) -> u32 {
        let Some(q) = self.queues.remove(name) else {
            return 0;
        };
        for c in &q.consumers {
            if let Some(ch) = self.channels.get_mut(&c.channel) {
                ch.consumers.remove(&c.tag);
                if ch.cancel_notify {
                    let cancel = basic::Cancel {
                        consumer_tag: c.tag.clone(),
                        nowait: true,
                    };
                    let id = c.channel.1;
                    ch.outbox.push(|out| {
                        frame::encode_method(
                            out,
                            id,
                            AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)),
                        );
                    });
                }
            }
        }
        self.remove_bindings_to(&Destination::Queue(q.name.clone()));
        u32::try_from(q.messages.len()).unwrap_or(u32::MAX)
    }

    fn after_consumer_left(&mut self, name: &str) {
        if self
            .queues
            .get(name)
            .is_some_and(|q| q.auto_delete && q.consumers.is_empty())
        {
            self.remove_queue(name);
        }
    }

    // ----- publishing -----------------------------------------------------------------

    /// Checks an exchange can be published to.
    pub fn check_publish(&self, exchange: &str) -> Result<(), AmqpError> {
        match self.exchanges.get(exchange) {
            None => Err(AmqpError::not_found_exchange(exchange)),
            Some(x) if x.internal => Err(AmqpError::access_refused(format_args!(
                "cannot publish to internal exchange '{exchange}' in vhost '/'"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Queues a message routes to, following exchange-to-exchange bindings, each once.
    ///
    /// `headers` decodes the message's header table; it is called only if a headers
    /// exchange is on the way.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: &dyn Fn() -> Option<FieldTable>,
    ) -> Vec<ShortString> {
        let mut queues = Vec::new();
        if exchange.is_empty() {
            if let Some((name, _)) = self.queues.get_key_value(routing_key) {
                queues.push(name.clone());
            }
            return queues;
        }
        let mut decoded: Option<Option<FieldTable>> = None;
        // Exchange-to-exchange bindings are rare: the work list starts empty and only
        // allocates when one is followed.
        let mut seen: Vec<&str> = Vec::new();
        let mut todo: Vec<&str> = Vec::new();
        let mut next = Some(exchange);
        while let Some(xname) = next.take().or_else(|| todo.pop()) {
            if seen.contains(&xname) {
                continue;
            }
            let Some(x) = self.exchanges.get(xname) else {
                continue;
            };
            if !todo.is_empty()
                || !seen.is_empty()
                || x.bindings
                    .iter()
                    .any(|b| matches!(b.destination, Destination::Exchange(_)))
            {
                seen.push(xname);
            }
            if x.kind == ExchangeKind::Headers && decoded.is_none() {
                decoded = Some(headers());
            }
            let table = match x.kind {
                ExchangeKind::Headers => decoded.as_ref().and_then(Option::as_ref),
                _ => None,
            };
            for dest in x.matching(routing_key, table) {
                match dest {
                    Destination::Queue(q) => {
                        if !queues.contains(q) && self.queues.contains_key(q) {
                            queues.push(q.clone());
                        }
                    }
                    Destination::Exchange(e) => todo.push(e.as_str()),
                }
            }
        }
        queues
    }

    /// Whether `reply_to = amq.rabbitmq.reply-to` may be used on this channel, and the
    /// name to rewrite it to.
    pub fn reply_name(&self, key: ChannelKey) -> Result<String, AmqpError> {
        match self
            .channels
            .get(&key)
            .and_then(|c| c.reply_consumer.as_ref())
        {
            Some((_, token)) => Ok(format!("{REPLY_TO_PREFIX}{token}")),
            None => Err(AmqpError::precondition(
                "fast reply consumer does not exist",
            )),
        }
    }

    /// Enqueues a routed message in each queue and hands it to consumers.
    pub fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        headers: &dyn Fn() -> Option<FieldTable>,
        message: Message,
    ) -> Routed {
        if exchange.is_empty()
            && let Some(token) = routing_key.strip_prefix(REPLY_TO_PREFIX)
        {
            return self.deliver_reply(token, message);
        }
        let queues = self.route(exchange, routing_key, headers);
        if queues.is_empty() {
            return Routed::No;
        }
        let now = Instant::now();
        let mut message = message;
        message.expires_at = message.ttl.map(|ttl| now + ttl);
        let message = Arc::new(message);
        for name in &queues {
            if let Some(q) = self.queues.get_mut(name) {
                let ttl_at = q.message_ttl.map(|ttl| now + ttl);
                let expires_at = match (message.expires_at, ttl_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                q.messages.push_back(QueuedMessage {
                    message: Arc::clone(&message),
                    redelivered: false,
                    expires_at,
                });
            }
            self.dispatch_at(name.as_str(), now);
            // A message that expires on arrival (TTL 0) lives only if it went out at once.
            if let Some(q) = self.queues.get_mut(name) {
                q.drop_expired(now);
            }
        }
        Routed::Yes
    }

    fn deliver_reply(&mut self, token: &str, message: Message) -> Routed {
        let Some(&key) = self.reply_tokens.get(token) else {
            return Routed::No;
        };
        let Some(ch) = self.channels.get_mut(&key) else {
            return Routed::No;
        };
        let Some((tag, _)) = ch.reply_consumer.as_ref() else {
            return Routed::No;
        };
        ch.last_tag += 1;
        let delivery_tag = ch.last_tag;
        let frame_max = ch.frame_max;
        ch.outbox.push(|out| {
            frame::encode_deliver(
                out,
                key.1,
                tag.as_str(),
                delivery_tag,
                false,
                message.exchange.as_str(),
                message.routing_key.as_str(),
            );
            frame::encode_content(out, key.1, &message.properties, &message.body, frame_max);
        });
        Routed::Yes
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
                        .is_some_and(|ch| c.no_ack || c.prefetch > 0 || ch.global_credit())
            });
            let Some(i) = pick else { return };
            let Some(mut consumer) = q.consumers.remove(i) else {
                return;
            };
            let Some(qm) = q.messages.pop_front() else {
                return;
            };
            if let Some(ch) = self.channels.get_mut(&consumer.channel) {
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
                        },
                    );
                }
            }
            q.consumers.push_back(consumer);
        }
    }

    // ----- consuming ------------------------------------------------------------------

    /// `basic.consume`: sends `consume-ok` (unless nowait) before any delivery.
    pub fn consume(
        &mut self,
        key: ChannelKey,
        queue: &str,
        opts: ConsumeOptions,
    ) -> Result<ShortString, AmqpError> {
        let tag: ShortString = if opts.tag.as_str().is_empty() {
            generated_name("amq.ctag-").into()
        } else {
            opts.tag.clone()
        };
        if self.channel(key)?.consumers.contains_key(tag.as_str())
            || self
                .channel(key)?
                .reply_consumer
                .as_ref()
                .is_some_and(|(t, _)| *t == tag)
        {
            return Err(AmqpError::connection(
                code::NOT_ALLOWED,
                format_args!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        if queue == REPLY_TO {
            if !opts.no_ack {
                return Err(AmqpError::precondition("reply consumer cannot acknowledge"));
            }
            let token = generated_name("");
            self.reply_tokens.insert(token.clone(), key);
            let ch = self.channel(key)?;
            ch.reply_consumer = Some((tag.clone(), token));
            send_consume_ok(ch, key.1, &tag, opts.nowait);
            return Ok(tag);
        }
        let q = self.accessible_mut(queue, key.0)?;
        if q.consumers.iter().any(|c| c.exclusive) || (opts.exclusive && !q.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format_args!(
                "queue '{queue}' in vhost '/' in exclusive use"
            )));
        }
        let qname = q.name.clone();
        let ch = self.channel(key)?;
        let prefetch = ch.prefetch_consumer;
        ch.consumers.insert(tag.clone(), qname.clone());
        send_consume_ok(ch, key.1, &tag, opts.nowait);
        if let Some(q) = self.queues.get_mut(&qname) {
            q.consumers.push_back(Consumer {
                tag: tag.clone(),
                channel: key,
                no_ack: opts.no_ack,
                exclusive: opts.exclusive,
                prefetch,
                unacked: 0,
            });
            q.last_used = Instant::now();
        }
        self.dispatch(qname.as_str());
        Ok(tag)
    }

    /// `basic.cancel`: unknown tags are fine. Unacked deliveries stay unacked.
    pub fn cancel(&mut self, key: ChannelKey, tag: &str) -> Result<(), AmqpError> {
        let ch = self.channel(key)?;
        if ch
            .reply_consumer
            .as_ref()
            .is_some_and(|(t, _)| t.as_str() == tag)
        {
            if let Some((_, token)) = ch.reply_consumer.take() {
                self.reply_tokens.remove(&token);
            }
            return Ok(());
        }
        let Some(queue) = ch.consumers.remove(tag) else {
            return Ok(());
        };
        if let Some(q) = self.queues.get_mut(&queue) {
            q.consumers
                .retain(|c| !(c.channel == key && c.tag.as_str() == tag));
            q.last_used = Instant::now();
        }
        self.after_consumer_left(queue.as_str());
        Ok(())
    }

    /// `basic.get`: writes `get-ok` with the content, or `get-empty`.
    pub fn get(&mut self, key: ChannelKey, queue: &str, no_ack: bool) -> Result<(), AmqpError> {
        let now = Instant::now();
        self.channel(key)?;
        let q = self.accessible_mut(queue, key.0)?;
        q.last_used = now;
        q.drop_expired(now);
        let qname = q.name.clone();
        let Some(qm) = q.messages.pop_front() else {
            let ch = self.channel(key)?;
            ch.outbox.push(|out| {
                frame::encode_method(
                    out,
                    key.1,
                    AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                );
            });
            return Ok(());
        };
        let remaining = q.ready(now);
        let ch = self.channel(key)?;
        ch.last_tag += 1;
        let tag = ch.last_tag;
        let frame_max = ch.frame_max;
        let m = &qm.message;
        ch.outbox.push(|out| {
            frame::encode_get_ok(
                out,
                key.1,
                tag,
                qm.redelivered,
                m.exchange.as_str(),
                m.routing_key.as_str(),
                remaining,
            );
            frame::encode_content(out, key.1, &m.properties, &m.body, frame_max);
        });
        if !no_ack {
            ch.unacked_global += 1;
            ch.unacked.insert(
                tag,
                Unacked {
                    queue: qname,
                    consumer: None,
                    message: qm.message,
                },
            );
        }
        Ok(())
    }

    /// `basic.qos`.
    pub fn qos(&mut self, key: ChannelKey, prefetch: u16, global: bool) -> Result<(), AmqpError> {
        let ch = self.channel(key)?;
        if global {
            ch.prefetch_global = prefetch;
        } else {
            ch.prefetch_consumer = prefetch;
        }
        let queues: Vec<ShortString> = ch.consumers.values().cloned().collect();
        for q in queues {
            self.dispatch(q.as_str());
        }
        Ok(())
    }

    /// Takes deliveries off a channel's unacked list: `tag` alone, or with `multiple`
    /// every tag up to it (0 = all). An unknown tag is a 406 channel error.
    fn take_unacked(
        &mut self,
        key: ChannelKey,
        tag: u64,
        multiple: bool,
    ) -> Result<Vec<Unacked>, AmqpError> {
        let ch = self.channel(key)?;
        let taken: Vec<Unacked> = if multiple {
            let keep = if tag == 0 {
                BTreeMap::new()
            } else {
                ch.unacked.split_off(&(tag + 1))
            };
            let upto = std::mem::replace(&mut ch.unacked, keep);
            if tag != 0 && upto.is_empty() {
                return Err(unknown_tag(tag));
            }
            upto.into_values().collect()
        } else {
            match ch.unacked.remove(&tag) {
                Some(u) => vec![u],
                None => return Err(unknown_tag(tag)),
            }
        };
        ch.unacked_global = ch.unacked_global.saturating_sub(taken.len() as u32);
        // Give credit back to each consumer.
        for u in &taken {
            if let (Some(ctag), Some(q)) = (&u.consumer, self.queues.get_mut(&u.queue))
                && let Some(c) = q
                    .consumers
                    .iter_mut()
                    .find(|c| c.channel == key && &c.tag == ctag)
            {
                c.unacked = c.unacked.saturating_sub(1);
            }
        }
        Ok(taken)
    }

    /// `basic.ack`.
    pub fn ack(&mut self, key: ChannelKey, tag: u64, multiple: bool) -> Result<(), AmqpError> {
        let taken = self.take_unacked(key, tag, multiple)?;
        self.redispatch(key, taken.iter().map(|u| u.queue.clone()).collect());
        Ok(())
    }

    /// `basic.nack` / `basic.reject`: requeued at the head (marked redelivered) or dropped.
    pub fn reject(
        &mut self,
        key: ChannelKey,
        tag: u64,
        multiple: bool,
        requeue: bool,
    ) -> Result<(), AmqpError> {
        let taken = self.take_unacked(key, tag, multiple)?;
        let mut touched: HashSet<ShortString> = taken.iter().map(|u| u.queue.clone()).collect();
        if requeue {
            self.requeue(taken.into_iter(), &mut touched);
        }
        self.redispatch(key, touched);
        Ok(())
    }

    /// `basic.recover` with requeue: every unacked delivery of the channel goes back.
    pub fn recover(&mut self, key: ChannelKey) -> Result<(), AmqpError> {
        let taken = self.take_unacked(key, 0, true)?;
        let mut touched = HashSet::new();
        self.requeue(taken.into_iter(), &mut touched);
        self.redispatch(key, touched);
        Ok(())
    }

    fn redispatch(&mut self, key: ChannelKey, mut queues: HashSet<ShortString>) {
        // Freed global credit may let any queue this channel consumes from deliver.
        if let Some(ch) = self.channels.get(&key) {
            queues.extend(ch.consumers.values().cloned());
        }
        for q in queues {
            self.dispatch(q.as_str());
        }
    }

    /// Puts deliveries back at the head of their queues in their original order.
    fn requeue(
        &mut self,
        deliveries: impl DoubleEndedIterator<Item = Unacked>,
        touched: &mut HashSet<ShortString>,
    ) {
        for u in deliveries.rev() {
            if let Some(q) = self.queues.get_mut(&u.queue) {
                q.messages.push_front(QueuedMessage {
                    expires_at: u.message.expires_at,
                    message: u.message,
                    redelivered: true,
                });
                touched.insert(u.queue);
            }
        }
    }

    // ----- housekeeping ---------------------------------------------------------------

    /// Drops expired messages at queue heads and deletes queues idle past `x-expires`.
    pub fn sweep(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for q in self.queues.values_mut() {
            q.drop_expired(now);
            if q.idle_expired(now) {
                expired.push(q.name.clone());
            }
        }
        for name in expired {
            self.remove_queue(name.as_str());
        }
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

    /// Number of open channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
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

pub(crate) fn locked(name: &str) -> AmqpError {
    AmqpError::channel(
        code::RESOURCE_LOCKED,
        format_args!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
        ),
    )
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
            assert_eq!(v.publish("", "q", &|| None, msg("m")), Routed::Yes);
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
            v.publish("", "q", &|| None, msg(b));
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

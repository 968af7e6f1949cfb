//! Publishing: a message is routed through the exchanges' binding indexes (following
//! exchange-to-exchange bindings), appended to each queue it reaches (or to the disk
//! only, for a durable queue that pages out) and handed to consumers at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};

use super::{REPLY_TO_PREFIX, Routed, VHost};
use crate::args::Overflow;
use crate::dead_letter::Reason;
use crate::error::AmqpError;
use crate::exchange::{Destination, Exchange, ExchangeKind};
use crate::frame;
use crate::message::{Message, QueuedMessage};
use crate::queue::ChannelKey;
use crate::store::log::Record;

/// What one queue did with a published message.
pub(super) struct Enqueued {
    /// It was written to the queue's log (its confirm waits for the sync).
    stored: bool,
    /// The queue was full and refuses publishes (`reject-publish`).
    rejected: bool,
}

impl VHost {
    /// Checks an exchange can be published to.
    pub fn check_publish(&self, exchange: &str) -> Result<(), AmqpError> {
        match self.exchanges.get(exchange) {
            None => Err(AmqpError::not_found_exchange(&self.name, exchange)),
            Some(x) if x.internal => Err(AmqpError::access_refused(format_args!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Queues a message routes to by `routing_key` and the `extra` keys (`CC`, `BCC`),
    /// following exchange-to-exchange bindings and alternate exchanges, each once.
    ///
    /// `headers` decodes the message's header table; it is called only if a headers
    /// exchange is on the way.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        extra: &[ShortString],
        headers: &dyn Fn() -> Option<FieldTable>,
    ) -> Vec<ShortString> {
        let mut queues: Vec<ShortString> = Vec::new();
        let keys = || std::iter::once(routing_key).chain(extra.iter().map(ShortString::as_str));
        if exchange.is_empty() {
            for key in keys() {
                if let Some((name, _)) = self.queues.get_key_value(key)
                    && !queues.contains(name)
                {
                    queues.push(name.clone());
                }
            }
            return queues;
        }
        let mut decoded: Option<Option<FieldTable>> = None;
        // Exchange-to-exchange bindings are rare: the work list starts empty and only
        // allocates when one is followed.
        let mut seen: Vec<&str> = Vec::new();
        let mut todo: Vec<&str> = Vec::new();
        let mut next = Some(exchange);
        let mut once: Option<HashSet<ShortString>> = None;
        while let Some(xname) = next.take().or_else(|| todo.pop()) {
            if seen.contains(&xname) {
                continue;
            }
            let Some(x) = self.exchanges.get(xname) else {
                continue;
            };
            if !todo.is_empty() || !seen.is_empty() || x.bindings.has_exchange_destinations() {
                seen.push(xname);
            }
            if x.kind == ExchangeKind::Headers && decoded.is_none() {
                decoded = Some(headers());
            }
            let table = match x.kind {
                ExchangeKind::Headers => decoded.as_ref().and_then(Option::as_ref),
                _ => None,
            };
            let mut routed = false;
            for key in keys() {
                let matched = x.matching(key, table);
                for dest in x.bindings.destinations(&matched) {
                    routed = true;
                    match dest {
                        Destination::Queue(q) if self.queues.contains_key(q) => {
                            // A short list is searched; a long one (fan-out to many
                            // queues) gets a set, so routing stays linear in the matches.
                            let new = match once.as_mut() {
                                Some(set) => set.insert(q.clone()),
                                None => !queues.contains(q),
                            };
                            if new {
                                queues.push(q.clone());
                                if once.is_none() && queues.len() > 16 {
                                    once = Some(queues.iter().cloned().collect());
                                }
                            }
                        }
                        Destination::Queue(_) => {}
                        Destination::Exchange(e) => todo.push(e.as_str()),
                    }
                }
            }
            if !routed {
                // Nothing bound matched: the alternate exchange gets the message, with
                // the same routing key (RabbitMQ's process_alternate).
                if let Some(ae) = alternate_exchange(x) {
                    if !seen.contains(&xname) {
                        seen.push(xname);
                    }
                    todo.push(ae);
                }
            }
        }
        queues
    }

    /// Queues a message routes to by its routing key and, if it has them, its `CC` and
    /// `BCC` keys, each queue once.
    pub(super) fn route_message(
        &self,
        message: &Message,
        headers: &dyn Fn() -> Option<FieldTable>,
    ) -> Vec<ShortString> {
        let extra: Vec<ShortString> = match &message.sender_keys {
            Some(keys) => keys.all().cloned().collect(),
            None => Vec::new(),
        };
        self.route(
            message.exchange.as_str(),
            message.routing_key.as_str(),
            &extra,
            headers,
        )
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

    /// Routes a message into its queues (or to a direct reply-to consumer) and hands
    /// it to consumers.
    pub fn publish(
        &mut self,
        headers: &dyn Fn() -> Option<FieldTable>,
        mut message: Message,
    ) -> Routed {
        let now = Instant::now();
        self.stats.publish += 1;
        message.expires_at = message.ttl.map(|ttl| now + ttl);
        let returned = |message| Routed {
            returned: Some(message),
            ticket: None,
            rejected: false,
        };
        if message.exchange.as_str().is_empty() && message.sender_keys.is_none() {
            // The default exchange: the queue named by the routing key, found without
            // building a route.
            if let Some(token) = message.routing_key.as_str().strip_prefix(REPLY_TO_PREFIX) {
                self.deliver_reply(token, &message);
                return returned(message);
            }
            if !self.queues.contains_key(message.routing_key.as_str()) {
                return returned(message);
            }
            let message = Arc::new(message);
            let e = self.enqueue(message.routing_key.as_str(), &message, now);
            return Routed {
                returned: None,
                ticket: self.ticket_if(e.stored),
                rejected: e.rejected,
            };
        }
        let queues = self.route_message(&message, headers);
        if queues.is_empty() {
            return returned(message);
        }
        let message = Arc::new(message);
        let (mut stored, mut rejected) = (false, false);
        for name in &queues {
            let e = self.enqueue(name.as_str(), &message, now);
            stored |= e.stored;
            rejected |= e.rejected;
        }
        Routed {
            returned: None,
            ticket: self.ticket_if(stored),
            rejected,
        }
    }

    /// Appends a message to one queue (its expiry the earlier of the message's and the
    /// queue's TTL) and dispatches; a full queue with `reject-publish` refuses it, one
    /// with `drop-head` drops its oldest.
    pub(super) fn enqueue(&mut self, name: &str, message: &Arc<Message>, now: Instant) -> Enqueued {
        let mut stored = false;
        if let Some(q) = self.queues.get_mut(name) {
            if q.rejects_publish(message.body.len()) {
                if q.limit.overflow == Overflow::RejectPublishDlx {
                    self.set_aside(name, Arc::clone(message), Reason::Maxlen);
                    self.dead_letter_from(name);
                }
                return Enqueued {
                    stored: false,
                    rejected: true,
                };
            }
            q.stats.counts.publish += 1;
            let ttl_at = q.message_ttl.map(|ttl| now + ttl);
            let expires_at = match (message.expires_at, ttl_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let pages_out = q.pages_out();
            let loc = match q.log.as_mut() {
                // A long queue keeps even transient messages on disk only, in order;
                // they are not recovered after a restart.
                Some(d) if message.persistent || pages_out => {
                    stored = message.persistent;
                    Some(d.log.append(&Record {
                        exchange: message.exchange.as_str().as_bytes(),
                        routing_key: message.routing_key.as_str().as_bytes(),
                        properties: &message.properties,
                        body: &message.body,
                        expires_at_ms: expires_at.map(|at| crate::message::unix_ms(at, now)),
                        persistent: message.persistent,
                    }))
                }
                _ => None,
            };
            match loc {
                Some(loc) if pages_out => q.paged_out(loc),
                _ => q.messages.push_back(QueuedMessage {
                    message: Arc::clone(message),
                    redelivered: false,
                    expires_at,
                    loc,
                    deliveries: 0,
                }),
            }
        }
        self.dispatch_ready(name, now);
        // A message that expires on arrival (TTL 0) lives only if it went out at once;
        // one that did not go out counts against the length limit. What either sets
        // aside (and what expired during the dispatch) is dead-lettered: one look-up
        // more only when there is some.
        let dead = self.queues.get_mut(name).is_some_and(|q| {
            q.drop_expired(now);
            q.drop_over_limit(now);
            !q.dead.is_empty()
        });
        if dead {
            self.dead_letter_from(name);
        }
        Enqueued {
            stored,
            rejected: false,
        }
    }

    /// Delivers to the channel whose direct reply-to name carries `token`; a reply for
    /// a channel that is gone is dropped, as in RabbitMQ.
    fn deliver_reply(&mut self, token: &str, message: &Message) {
        let Some(ch) = self
            .reply_tokens
            .get(token)
            .and_then(|key| self.channels.get_mut(key).map(|ch| (*key, ch)))
        else {
            return;
        };
        let (key, ch) = ch;
        let Some((tag, _)) = ch.reply_consumer.as_ref() else {
            return;
        };
        if ch.outbox.pending() >= crate::outbox::REPLY_LIMIT {
            // A reply cannot wait in a queue: to a client that does not read, it is
            // dropped rather than buffered without bound.
            tracing::debug!(
                conn = key.conn,
                channel = key.channel,
                "reply dropped: client not reading"
            );
            return;
        }
        ch.last_tag += 1;
        let delivery_tag = ch.last_tag;
        let frame_max = ch.frame_max;
        ch.outbox.push(|out| {
            frame::encode_deliver(
                out,
                key.channel,
                tag.as_str(),
                delivery_tag,
                false,
                message.exchange.as_str(),
                message.routing_key.as_str(),
            );
            frame::encode_content(
                out,
                key.channel,
                &message.properties,
                &message.body,
                frame_max,
            );
        });
    }
}

/// An exchange's `alternate-exchange`, borrowed from its arguments (checked to be a
/// string at the declare), or else from its policy.
fn alternate_exchange(x: &Exchange) -> Option<&str> {
    match x.arguments.inner().get("alternate-exchange") {
        Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok(),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str()),
        Some(_) => None,
        None => x.applied.alternate_exchange(),
    }
}

//! Consumers and acknowledgements: `basic.consume`/`cancel`/`get`/`qos`, and
//! ack, nack, reject and recover, which return credit and requeue in order.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::ShortString;

use super::{
    ConsumeOptions, REPLY_TO, Unacked, VHost, generated_name, send_consume_ok, unknown_tag,
};
use crate::dead_letter::Reason;
use crate::error::{AmqpError, code};
use crate::frame;
use crate::message::QueuedMessage;
use crate::queue::{ChannelKey, Consumer};

/// A message `basic.get` took.
#[derive(Debug)]
pub struct Got {
    /// Its delivery tag on the channel.
    pub tag: u64,
    /// It was delivered before.
    pub redelivered: bool,
    /// Ready messages left in the queue.
    pub remaining: u32,
    /// Its properties as delivered (with `x-delivery-count` where the queue adds it).
    pub properties: bytes::Bytes,
    /// The message.
    pub message: Arc<crate::message::Message>,
}

impl VHost {
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
            send_consume_ok(ch, key.channel, &tag, opts.nowait);
            return Ok(tag);
        }
        let vhost_name = self.name.clone();
        let q = self.accessible_mut(queue, key.conn)?;
        if q.consumers.iter().any(|c| c.exclusive) || (opts.exclusive && !q.consumers.is_empty()) {
            return Err(AmqpError::access_refused(format_args!(
                "queue '{queue}' in vhost '{}' in exclusive use",
                self.name
            )));
        }
        let priority = match opts.arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => crate::args::int_value(v)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| {
                    AmqpError::precondition(format_args!(
                        "invalid arg 'x-priority' for queue '{queue}' in vhost '{}': \"expected integer, got {}\"",
                        vhost_name,
                        crate::args::type_name(v)
                    ))
                })?,
        };
        let seq = q.next_consumer_seq;
        q.next_consumer_seq += 1;
        let qname = q.name.clone();
        let ch = self.channel(key)?;
        let prefetch = ch.prefetch_consumer;
        ch.consumers.insert(tag.clone(), qname.clone());
        send_consume_ok(ch, key.channel, &tag, opts.nowait);
        if let Some(q) = self.queues.get_mut(&qname) {
            q.consumers.push_back(Consumer {
                tag: tag.clone(),
                channel: key,
                no_ack: opts.no_ack,
                exclusive: opts.exclusive,
                prefetch,
                unacked: 0,
                priority,
                seq,
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
        let Some(got) = self.take_one(key, queue, no_ack)? else {
            let ch = self.channel(key)?;
            ch.outbox.push(|out| {
                frame::encode_method(
                    out,
                    key.channel,
                    AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                );
            });
            return Ok(());
        };
        let ch = self.channel(key)?;
        let frame_max = ch.frame_max;
        let m = &got.message;
        ch.outbox.push(|out| {
            frame::encode_get_ok(
                out,
                key.channel,
                got.tag,
                got.redelivered,
                m.exchange.as_str(),
                m.routing_key.as_str(),
                got.remaining,
            );
            frame::encode_content(out, key.channel, &got.properties, &m.body, frame_max);
        });
        Ok(())
    }

    /// The head of `queue` taken as `basic.get` takes it, on channel `key` (unacked
    /// there unless `no_ack`); `None` when the queue is empty.
    pub(super) fn take_one(
        &mut self,
        key: ChannelKey,
        queue: &str,
        no_ack: bool,
    ) -> Result<Option<Got>, AmqpError> {
        let now = Instant::now();
        self.channel(key)?;
        let q = self.accessible_mut(queue, key.conn)?;
        q.last_used = now;
        q.drop_expired(now);
        let qname = q.name.clone();
        q.page_in(now);
        let Some(qm) = q.messages.pop_front() else {
            self.dead_letter_from(qname.as_str());
            return Ok(None);
        };
        if let (Some(loc), Some(d)) = (qm.loc, q.log.as_mut()) {
            if no_ack {
                d.log.ack(loc);
            } else if !qm.redelivered {
                d.log.delivered(loc);
            }
        }
        let remaining = q.ready(now);
        let properties = q.delivery_properties(&qm);
        q.stats.counts.count_delivery(no_ack, qm.redelivered, true);
        self.stats.count_delivery(no_ack, qm.redelivered, true);
        let ch = self.channel(key)?;
        ch.last_tag += 1;
        let tag = ch.last_tag;
        let got = Got {
            tag,
            redelivered: qm.redelivered,
            remaining,
            properties,
            message: Arc::clone(&qm.message),
        };
        if !no_ack {
            ch.unacked_global += 1;
            ch.unacked.insert(
                tag,
                Unacked {
                    queue: qname.clone(),
                    consumer: None,
                    message: qm.message,
                    loc: qm.loc,
                    deliveries: qm.deliveries,
                    delivered_at: now,
                },
            );
        }
        self.dead_letter_from(qname.as_str());
        Ok(Some(got))
    }

    /// `basic.qos`. With global QoS denied (see [`crate::deprecated`]) a global one is
    /// applied per consumer, as RabbitMQ 4.3 does.
    pub fn qos(&mut self, key: ChannelKey, prefetch: u16, global: bool) -> Result<(), AmqpError> {
        let permitted = self.deprecated.global_qos;
        if global && !permitted {
            tracing::warn!(
                prefetch,
                "global QoS is denied (deprecated_features.permit.global_qos = false): applied per consumer"
            );
        }
        let ch = self.channel(key)?;
        if global && permitted {
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
    /// every tag up to it (0 = all); `acked` counts them as acks of their queues. An
    /// unknown tag is a 406 channel error.
    pub(super) fn take_unacked(
        &mut self,
        key: ChannelKey,
        tag: u64,
        multiple: bool,
        acked: bool,
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
        // Give credit back to each consumer; count the acks per queue.
        for u in &taken {
            if u.consumer.is_none() && !acked {
                continue;
            }
            let Some(q) = self.queues.get_mut(&u.queue) else {
                continue;
            };
            q.stats.counts.ack += u64::from(acked);
            if let Some(ctag) = &u.consumer
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
        let taken = self.take_unacked(key, tag, multiple, true)?;
        self.stats.ack += taken.len() as u64;
        self.forget(&taken);
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
        let taken = self.take_unacked(key, tag, multiple, false)?;
        let mut touched: HashSet<ShortString> = taken.iter().map(|u| u.queue.clone()).collect();
        if requeue {
            self.requeue(taken.into_iter(), &mut touched);
        } else {
            self.forget(&taken);
            for u in taken {
                self.set_aside(u.queue.as_str(), u.message, Reason::Rejected);
            }
        }
        self.redispatch(key, touched);
        Ok(())
    }

    /// `basic.recover` with requeue: every unacked delivery of the channel goes back.
    pub fn recover(&mut self, key: ChannelKey) -> Result<(), AmqpError> {
        let taken = self.take_unacked(key, 0, true, false)?;
        let mut touched = HashSet::new();
        self.requeue(taken.into_iter(), &mut touched);
        self.redispatch(key, touched);
        Ok(())
    }

    pub(super) fn redispatch(&mut self, key: ChannelKey, mut queues: HashSet<ShortString>) {
        // Freed global credit may let any queue this channel consumes from deliver.
        if let Some(ch) = self.channels.get(&key) {
            queues.extend(ch.consumers.values().cloned());
        }
        for q in queues {
            self.dispatch(q.as_str());
        }
    }

    /// Records on disk that these deliveries are done with.
    fn forget(&mut self, taken: &[Unacked]) {
        for u in taken.iter().filter(|u| u.loc.is_some()) {
            if let Some(q) = self.queues.get_mut(&u.queue) {
                q.forget_at(u.loc);
            }
        }
    }

    /// Puts deliveries back at the head of their queues in their original order (a
    /// priority queue: at the head of their priority), dropping the head of a queue
    /// that is over its length limit then; the caller dispatches `touched`, which
    /// dead-letters what left.
    pub(super) fn requeue(
        &mut self,
        deliveries: impl DoubleEndedIterator<Item = Unacked>,
        touched: &mut HashSet<ShortString>,
    ) {
        for u in deliveries.rev() {
            if let Some(q) = self.queues.get_mut(&u.queue) {
                let qm = QueuedMessage {
                    expires_at: u.message.expires_at,
                    message: u.message,
                    redelivered: true,
                    loc: u.loc,
                    deliveries: u.deliveries.saturating_add(1),
                };
                if q.delivery_limit.is_some_and(|limit| qm.deliveries > limit) {
                    // Returned once more than `x-delivery-limit` allows: it leaves.
                    q.discard(qm, Reason::DeliveryLimit);
                } else {
                    q.messages.push_front(qm);
                }
                touched.insert(u.queue);
            }
        }
        // Back in the queue, they count against `x-max-length` again: with drop-head
        // the oldest go (RabbitMQ's requeue_and_run drops the head too).
        let now = Instant::now();
        for name in touched.iter() {
            if let Some(q) = self.queues.get_mut(name) {
                q.drop_over_limit(now);
            }
        }
    }
}

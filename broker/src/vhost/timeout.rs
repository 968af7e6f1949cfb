//! Consumer timeouts: a delivery left unacked longer than its queue's
//! `x-consumer-timeout` (milliseconds) or the broker's default (RabbitMQ's
//! `consumer_timeout`, 30 minutes) closes its channel with RabbitMQ's 406, so every
//! unacked delivery of the channel goes back to its queue, redelivered. With
//! `ConsumerTimeout::cancels` only the consumer is cancelled instead (a server-sent
//! `basic.cancel`), and its own deliveries go back; the channel stays open. A
//! `basic.get` delivery has no consumer to cancel and is left alone then.
//!
//! Checked on the housekeeping sweep: delivery tags grow with delivery time, so each
//! channel is read only up to its first delivery younger than the shortest timeout.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::ShortString;

use super::VHost;
use crate::error::AmqpError;
use crate::frame;
use crate::queue::ChannelKey;

/// RabbitMQ's text for a timed-out delivery (406, class and method 0).
fn timed_out(channel: u16, limit: Duration) -> AmqpError {
    AmqpError::precondition(format_args!(
        "delivery acknowledgement on channel {channel} timed out. Timeout value used: {} ms. This timeout value can be configured, see consumers doc guide to learn more",
        limit.as_millis()
    ))
}

impl VHost {
    /// Closes the channels (or cancels the consumers) whose oldest deliveries are over
    /// their timeout at `now`.
    pub(super) fn check_consumer_timeouts(&mut self, now: Instant) {
        let default = self.consumer_timeout.default;
        let Some(shortest) = self
            .queues
            .values()
            .filter_map(|q| q.consumer_timeout)
            .chain(default)
            .min()
        else {
            return;
        };
        let mut over: Vec<(ChannelKey, Option<ShortString>, Duration)> = Vec::new();
        for (key, ch) in &self.channels {
            if ch.timed_out {
                continue;
            }
            for u in ch.unacked.values() {
                let age = now.saturating_duration_since(u.delivered_at);
                if age < shortest {
                    break;
                }
                let limit = self
                    .queues
                    .get(&u.queue)
                    .and_then(|q| q.consumer_timeout)
                    .or(default);
                if let Some(limit) = limit.filter(|l| age >= *l) {
                    over.push((*key, u.consumer.clone(), limit));
                    if !self.consumer_timeout.cancels {
                        break;
                    }
                }
            }
        }
        let mut cancelled = HashSet::new();
        for (key, consumer, limit) in over {
            if !self.consumer_timeout.cancels {
                if let Some(ch) = self.channels.get_mut(&key) {
                    tracing::warn!(
                        conn = key.conn,
                        channel = key.channel,
                        ms = limit.as_millis() as u64,
                        "consumer timeout: closing the channel"
                    );
                    ch.timed_out = true;
                    ch.outbox
                        .fail_channel(key.channel, timed_out(key.channel, limit));
                }
            } else if let Some(tag) = consumer
                && cancelled.insert((key, tag.clone()))
            {
                tracing::warn!(conn = key.conn, channel = key.channel, consumer = %tag, ms = limit.as_millis() as u64, "consumer timeout: cancelling the consumer");
                self.cancel_timed_out(key, &tag);
            }
        }
    }

    /// Cancels a consumer from the broker's side: `basic.cancel` to the client (if it
    /// understands one), and the consumer's unacked deliveries back to the queue.
    fn cancel_timed_out(&mut self, key: ChannelKey, tag: &ShortString) {
        let Some(ch) = self.channels.get_mut(&key) else {
            return;
        };
        let Some(queue) = ch.consumers.remove(tag) else {
            return;
        };
        if ch.cancel_notify {
            let cancel = basic::Cancel {
                consumer_tag: tag.clone(),
                nowait: true,
            };
            ch.outbox.push(|out| {
                frame::encode_method(
                    out,
                    key.channel,
                    AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)),
                );
            });
        }
        let tags: Vec<u64> = ch
            .unacked
            .iter()
            .filter(|(_, u)| u.consumer.as_ref() == Some(tag))
            .map(|(t, _)| *t)
            .collect();
        let back: Vec<_> = tags.iter().filter_map(|t| ch.unacked.remove(t)).collect();
        ch.unacked_global = ch.unacked_global.saturating_sub(back.len() as u32);
        if let Some(q) = self.queues.get_mut(&queue) {
            q.consumers.retain(|c| !(c.channel == key && &c.tag == tag));
        }
        let mut touched = HashSet::from([queue.clone()]);
        self.requeue(back.into_iter(), &mut touched);
        self.after_consumer_left(queue.as_str());
        for name in touched {
            self.dispatch(name.as_str());
        }
    }
}

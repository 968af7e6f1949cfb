//! Delivery: hands a queue's ready messages to consumers with credit, round robin,
//! writing `basic.deliver` into their connection's outbox; and the housekeeping sweep
//! (expired messages at queue heads, queues idle past `x-expires`, paging back in).

use std::collections::HashSet;
use std::time::Instant;

use amq_protocol::types::ShortString;

use super::{Unacked, VHost};
use crate::frame;

impl VHost {
    /// A connection's outbox came back under its limit: the queues its consumers read
    /// from may deliver again.
    pub fn resume(&mut self, conn: u64) {
        let queues: HashSet<ShortString> = self
            .channels
            .iter()
            .filter(|(key, _)| key.conn == conn)
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
    pub(super) fn dispatch_at(&mut self, name: &str, now: Instant) {
        // Messages that expired at the head on the way.
        if self.dispatch_ready(name, now) {
            self.dead_letter_from(name);
        }
    }

    /// Returns whether the queue has set messages aside to dead-letter (expired at
    /// its head on the way), so that the caller looks it up again only then.
    pub(super) fn dispatch_ready(&mut self, name: &str, now: Instant) -> bool {
        let Some(q) = self.queues.get_mut(name) else {
            return false;
        };
        loop {
            q.drop_expired_before(now);
            if q.messages.is_empty() {
                q.page_in(now);
            }
            if q.messages.is_empty() || q.consumers.is_empty() {
                break;
            }
            let channels = &self.channels;
            let pick = q.pick_consumer(|c| {
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
            let Some(i) = pick else { break };
            let Some(mut consumer) = q.consumers.remove(i) else {
                break;
            };
            let Some(qm) = q.messages.pop_front() else {
                break;
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
                q.stats
                    .counts
                    .count_delivery(consumer.no_ack, qm.redelivered, false);
                ch.last_tag += 1;
                let tag = ch.last_tag;
                let m = &qm.message;
                let properties = q.delivery_properties(&qm);
                let frame_max = ch.frame_max;
                let id = consumer.channel.channel;
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
                    frame::encode_content(out, id, &properties, &m.body, frame_max);
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
                            deliveries: qm.deliveries,
                            delivered_at: now,
                        },
                    );
                }
            }
            q.consumers.push_back(consumer);
        }
        !q.dead.is_empty()
    }

    /// Drops expired messages at queue heads and ready messages over `x-max-length`, and
    /// deletes queues idle past `x-expires`.
    pub fn sweep(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut paged = Vec::new();
        for q in self.queues.values_mut() {
            q.drop_expired(now);
            // Paged-out heads the last publish could not read back yet.
            q.drop_over_limit(now);
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
        let dead: Vec<ShortString> = self
            .queues
            .values()
            .filter(|q| !q.dead.is_empty())
            .map(|q| q.name.clone())
            .collect();
        for name in dead {
            self.dead_letter_from(name.as_str());
        }
        for name in expired {
            self.remove_queue(name.as_str());
        }
        self.check_consumer_timeouts(now);
        self.commit_store();
    }
}

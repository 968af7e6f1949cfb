//! A queue: ready messages in order, and the consumers they are handed to in turn.
//!
//! The queue itself only keeps order and counts; handing a message to a consumer
//! (delivery tags, prefetch, the consumer's outbox) needs the consumer's channel and is
//! done by [`crate::vhost::VHost::dispatch`], which owns both.
//!
//! - `paging`: how a durable queue keeps a bounded head in memory and the rest on disk;
//! - `equivalent`: the redeclare checks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::types::{FieldTable, ShortString};

use crate::args::{Overflow, duration_arg, length_limit};
use crate::dead_letter::{DeadLetterTo, Reason};
use crate::error::AmqpError;
use crate::message::{Message, QueuedMessage, Ready};
use crate::store::log::{Location, Paged, QueueLog};

mod equivalent;
mod paging;

pub(crate) use equivalent::locked;

/// A durable queue keeps at most this many ready messages in memory; beyond it, new
/// messages stay on disk only and are read back in order as the queue drains.
pub const PAGE_OUT_AT: usize = 8192;
/// Paged-out messages are read back once fewer than this many are in memory.
const PAGE_IN_BELOW: usize = PAGE_OUT_AT / 2;
/// A durable queue also keeps at most this many bytes of ready messages in memory
/// ([`QueuedMessage::size`]), whatever their count: 8,192 large messages would be
/// hundreds of MiB per queue.
pub const PAGE_OUT_BYTES: usize = 4 << 20;
/// The bytes a durable queue keeps in memory while the memory alarm is on: the rest
/// goes back to disk, as RabbitMQ pages queues out under memory pressure.
pub const PAGE_OUT_BYTES_LOW_MEMORY: usize = 256 << 10;
/// Most messages read back from disk in one go.
const PAGE_IN_BATCH: usize = 256;

/// A channel broker-wide: its connection's id and its number on that connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    /// The connection's id.
    pub conn: u64,
    /// The channel number.
    pub channel: u16,
}

impl ChannelKey {
    /// The key of channel `channel` on connection `conn`.
    pub fn new(conn: u64, channel: u16) -> Self {
        Self { conn, channel }
    }
}

/// A consumer attached to a queue.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// The consumer tag, unique on its channel.
    pub tag: ShortString,
    /// The channel deliveries go to.
    pub channel: ChannelKey,
    /// Deliveries need no ack.
    pub no_ack: bool,
    /// Asked for exclusive access to the queue.
    pub exclusive: bool,
    /// Per-consumer prefetch (0 = unlimited), fixed when the consumer starts.
    pub prefetch: u16,
    /// Deliveries not yet acked.
    pub unacked: u32,
}

impl Consumer {
    /// Whether this consumer may take one more delivery under its own limit.
    pub fn has_credit(&self) -> bool {
        self.no_ack || self.prefetch == 0 || self.unacked < u32::from(self.prefetch)
    }
}

/// A queue.
#[derive(Debug)]
pub struct Queue {
    /// Name.
    pub name: ShortString,
    /// Survives restarts (kept for the durable store).
    pub durable: bool,
    /// The connection that owns it, for an exclusive queue.
    pub exclusive_owner: Option<u64>,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// Declare arguments, compared on redeclare.
    pub arguments: FieldTable,
    /// `x-message-ttl`.
    pub message_ttl: Option<Duration>,
    /// `x-expires`: deleted after this long unused.
    pub expires: Option<Duration>,
    /// `x-max-length`: the most ready messages it holds (unacked ones do not count).
    pub max_length: Option<u64>,
    /// `x-overflow`: what a full queue does with one more.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange` and `-routing-key`: where messages that leave for
    /// good (rejected, expired, over the limit) are republished.
    pub dead_letter: Option<DeadLetterTo>,
    /// Messages that left for good and wait for the vhost to dead-letter them (only
    /// with `dead_letter`): the queue cannot reach the exchanges itself.
    pub dead: Vec<(Arc<Message>, Reason)>,
    /// Ready messages in memory, oldest first.
    pub messages: Ready,
    /// Consumers, the next to serve first.
    pub consumers: VecDeque<Consumer>,
    /// Last declare, consume or get: the `x-expires` clock.
    pub last_used: Instant,
    /// The on-disk log of a durable queue, when the broker has a data directory.
    pub log: Option<DurableLog>,
    /// Ready messages on disk only, after those in `messages`: where the first is and
    /// how many there are.
    pub paged: Option<Paged>,
    /// The bytes of ready messages a durable queue keeps in memory before paging out
    /// ([`PAGE_OUT_BYTES`], less under the memory alarm).
    pub memory_budget: usize,
}

/// A durable queue's place in the store.
#[derive(Debug)]
pub struct DurableLog {
    /// Its directory id (names are not file names).
    pub dir_id: u64,
    /// Its log of persistent messages.
    pub log: QueueLog,
}

impl Queue {
    /// A new empty queue; arguments are validated.
    pub fn new(
        vhost: &str,
        name: ShortString,
        durable: bool,
        exclusive_owner: Option<u64>,
        auto_delete: bool,
        arguments: FieldTable,
    ) -> Result<Self, AmqpError> {
        let message_ttl = duration_arg(vhost, name.as_str(), &arguments, "x-message-ttl", true)?;
        let expires = duration_arg(vhost, name.as_str(), &arguments, "x-expires", false)?;
        let (max_length, overflow) = length_limit(&arguments);
        let dead_letter = DeadLetterTo::from_args(&arguments);
        Ok(Self {
            name,
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            message_ttl,
            expires,
            max_length,
            overflow,
            dead_letter,
            dead: Vec::new(),
            messages: Ready::default(),
            consumers: VecDeque::new(),
            last_used: Instant::now(),
            log: None,
            paged: None,
            memory_budget: PAGE_OUT_BYTES,
        })
    }

    /// Drops expired messages from the head, as RabbitMQ does; returns how many.
    pub fn drop_expired(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while self.messages.front().is_some_and(|m| m.expired(now)) {
            if let Some(qm) = self.messages.pop_front() {
                self.discard(qm, Reason::Expired);
            }
            n += 1;
        }
        n
    }

    /// Records on disk that a message left the queue for good (acked, expired, purged).
    pub fn forget(&mut self, qm: &QueuedMessage) {
        self.forget_at(qm.loc);
    }

    /// A message leaves for good for `reason`: forgotten on disk, and kept for the
    /// vhost to dead-letter if the queue has a dead-letter exchange.
    pub fn discard(&mut self, qm: QueuedMessage, reason: Reason) {
        self.forget(&qm);
        if self.dead_letter.is_some() {
            self.dead.push((qm.message, reason));
        }
    }

    /// [`Queue::forget`] by location.
    pub fn forget_at(&mut self, loc: Option<Location>) {
        if let (Some(loc), Some(d)) = (loc, self.log.as_mut()) {
            d.log.ack(loc);
        }
    }

    /// Drops every ready message (`queue.purge`); returns how many.
    pub fn purge(&mut self) -> u32 {
        let n = self.ready_len();
        let purged = self.messages.take();
        for qm in &purged {
            self.forget(qm);
        }
        if let (Some((from, _)), Some(d)) = (self.paged.take(), self.log.as_mut()) {
            d.log.ack_from(from);
        }
        n
    }

    /// Ready messages, in memory and paged out (expired ones not yet dropped included).
    pub fn ready_len(&self) -> u32 {
        let paged = self.paged.map_or(0, |(_, n)| n);
        u32::try_from(self.messages.len() as u64 + paged).unwrap_or(u32::MAX)
    }

    /// Drops messages that expired strictly before `now`: a message published with
    /// TTL 0 at `now` may still go to a consumer that is ready at that instant.
    pub fn drop_expired_before(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while self
            .messages
            .front()
            .is_some_and(|m| m.expires_at.is_some_and(|at| at < now))
        {
            if let Some(qm) = self.messages.pop_front() {
                self.discard(qm, Reason::Expired);
            }
            n += 1;
        }
        n
    }

    /// Ready messages (after dropping expired ones at the head).
    pub fn ready(&mut self, now: Instant) -> u32 {
        self.drop_expired(now);
        self.ready_len()
    }

    /// Number of consumers.
    pub fn consumer_count(&self) -> u32 {
        u32::try_from(self.consumers.len()).unwrap_or(u32::MAX)
    }

    /// Whether a queue that refuses publishes when full (`reject-publish`) is full:
    /// one more would go over `x-max-length`.
    pub fn rejects_publish(&self) -> bool {
        self.overflow != Overflow::DropHead
            && self
                .max_length
                .is_some_and(|max| u64::from(self.ready_len()) >= max)
    }

    /// With `drop-head`, drops the oldest ready messages while the queue is over
    /// `x-max-length`. Paged-out messages come after those in memory, so the oldest
    /// are read back first if memory holds none.
    pub fn drop_over_limit(&mut self, now: Instant) {
        let Some(max) = self
            .max_length
            .filter(|_| self.overflow == Overflow::DropHead)
        else {
            return;
        };
        while u64::from(self.ready_len()) > max {
            if self.messages.is_empty() {
                self.page_in(now);
            }
            let Some(qm) = self.messages.pop_front() else {
                // Not written back by the sync thread yet: the next publish or the
                // housekeeping tick drops the rest.
                break;
            };
            self.discard(qm, Reason::Maxlen);
        }
    }

    /// Whether `x-expires` has run out at `now`.
    pub fn idle_expired(&self, now: Instant) -> bool {
        self.consumers.is_empty()
            && self
                .expires
                .is_some_and(|ttl| now.duration_since(self.last_used) >= ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_arguments_are_validated() {
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(-1));
        let err = Queue::new("/", "q".into(), false, None, false, args).expect_err("negative ttl");
        assert_eq!(err.code, crate::error::code::PRECONDITION_FAILED);
        let mut args = FieldTable::default();
        args.insert("x-expires".into(), AMQPValue::LongInt(0));
        assert!(Queue::new("/", "q".into(), false, None, false, args).is_err());
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::ShortShortUInt(0));
        let q = Queue::new("/", "q".into(), false, None, false, args).expect("zero ttl is fine");
        assert_eq!(q.message_ttl, Some(Duration::ZERO));
    }

    #[test]
    fn redeclare_equivalence() {
        let q =
            Queue::new("/", "q".into(), true, None, false, FieldTable::default()).expect("queue");
        assert!(
            q.check_equivalent("/", true, false, false, &FieldTable::default())
                .is_ok()
        );
        let err = q
            .check_equivalent("/", false, false, false, &FieldTable::default())
            .expect_err("durable");
        assert_eq!(
            err.text,
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'false' but current is 'true'"
        );
    }
}

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

use amq_protocol::types::{AMQPValue, FieldTable, ShortString};

use crate::args::{
    LengthLimit, Overflow, duration_arg, int_value, keeps_ready_in_memory, max_priority,
};
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
/// A quorum queue's `x-delivery-limit` when it is not given (RabbitMQ 4's).
const DEFAULT_DELIVERY_LIMIT: u32 = 20;
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
    /// `x-priority`: while a consumer of a higher priority can take a message, those
    /// of lower ones get none.
    pub priority: i64,
    /// The order consumers came in: a single-active-consumer queue serves the first.
    pub seq: u64,
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
    /// `x-max-length`, `x-max-length-bytes` and `x-overflow`: the most ready messages
    /// and body bytes it holds (unacked ones do not count), and what a full queue does
    /// with one more.
    pub limit: LengthLimit,
    /// A priority queue or one with a byte limit keeps every ready message in memory
    /// (never pages out): its order or its byte count need them all.
    pub in_memory_only: bool,
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
    /// The next [`Consumer::seq`].
    pub next_consumer_seq: u64,
    /// `x-consumer-timeout`: how long a delivery from this queue may stay unacked
    /// (the broker's default otherwise).
    pub consumer_timeout: Option<Duration>,
    /// `x-queue-type: quorum`: deliveries of returned messages carry
    /// `x-delivery-count`.
    pub quorum: bool,
    /// `x-delivery-limit` (a quorum queue's default: 20, as RabbitMQ 4's): a message
    /// returned more often leaves the queue (dead-lettered as `delivery_limit`).
    pub delivery_limit: Option<u32>,
    /// `x-single-active-consumer`: only the consumer that came first gets messages;
    /// when it goes, the next one takes over.
    pub single_active: bool,
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
    /// The policy and operator policy that apply (see [`crate::policy`]); the
    /// settings above are read from `arguments` with them resolved in.
    pub applied: crate::policy::Applied,
    /// Message counters and their rates, for the management API.
    pub stats: crate::message_stats::QueueStats,
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
        let quorum = crate::args::is_quorum(&arguments);
        let single_active = matches!(
            arguments.inner().get("x-single-active-consumer"),
            Some(AMQPValue::Boolean(true))
        );
        let messages = Ready::new(max_priority(&arguments));
        let mut q = Self {
            name,
            durable,
            exclusive_owner,
            auto_delete,
            arguments: FieldTable::default(),
            message_ttl: None,
            expires: None,
            limit: LengthLimit::default(),
            in_memory_only: false,
            dead_letter: None,
            dead: Vec::new(),
            messages,
            consumers: VecDeque::new(),
            next_consumer_seq: 0,
            single_active,
            quorum,
            delivery_limit: None,
            consumer_timeout: None,
            last_used: Instant::now(),
            log: None,
            paged: None,
            memory_budget: PAGE_OUT_BYTES,
            applied: Default::default(),
            stats: Default::default(),
        };
        q.read_settings(vhost, &arguments)?;
        q.arguments = arguments;
        Ok(q)
    }

    /// Reads the settings that come from arguments (declared, or with a policy's
    /// resolved in) from `args`, checking them.
    fn read_settings(&mut self, vhost: &str, args: &FieldTable) -> Result<(), AmqpError> {
        let name = self.name.as_str();
        self.message_ttl = duration_arg(vhost, name, args, "x-message-ttl", true)?;
        self.expires = duration_arg(vhost, name, args, "x-expires", false)?;
        self.limit = LengthLimit::from_args(args);
        self.in_memory_only = keeps_ready_in_memory(args);
        self.consumer_timeout = args
            .inner()
            .get("x-consumer-timeout")
            .and_then(int_value)
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis);
        self.delivery_limit = match args.inner().get("x-delivery-limit").and_then(int_value) {
            Some(n) => u32::try_from(n).ok(),
            None => self.quorum.then_some(DEFAULT_DELIVERY_LIMIT),
        };
        self.dead_letter = DeadLetterTo::from_args(args);
        Ok(())
    }

    /// Applies `applied` (the policies that match this queue now): the settings are
    /// read again from the declared arguments with the policies resolved in. A value
    /// the queue's checks refuse leaves the declared settings. A byte limit brought
    /// by a policy stops paging; messages already paged out count towards it once
    /// they are read back.
    pub fn apply_policy(&mut self, vhost: &str, applied: crate::policy::Applied) {
        if applied == self.applied {
            return;
        }
        let resolved = applied.queue_arguments(&self.arguments);
        if self.read_settings(vhost, &resolved).is_err() {
            let declared = std::mem::take(&mut self.arguments);
            let _ = self.read_settings(vhost, &declared);
            self.arguments = declared;
        }
        self.applied = applied;
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

    /// The consumer the next message goes to, among those `available` (credit, room in
    /// their channel): with a single active consumer, the first that came if it is
    /// available; otherwise the next in turn of the highest priority available.
    pub fn pick_consumer(&self, available: impl Fn(&Consumer) -> bool) -> Option<usize> {
        if self.single_active {
            let (i, first) = self
                .consumers
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.seq)?;
            return available(first).then_some(i);
        }
        let top = self.consumers.iter().map(|c| c.priority).max()?;
        let mut best: Option<(usize, i64)> = None;
        for (i, c) in self.consumers.iter().enumerate() {
            if best.is_some_and(|(_, p)| c.priority <= p) || !available(c) {
                continue;
            }
            best = Some((i, c.priority));
            if c.priority == top {
                // Nobody outranks it (without priorities: the first available).
                break;
            }
        }
        best.map(|(i, _)| i)
    }

    /// The properties a delivery of `qm` carries: the message's own, with
    /// `x-delivery-count` (a long long) in the headers for a quorum queue's message
    /// that came back before, as RabbitMQ 4 sends it (not on the first delivery).
    pub fn delivery_properties(&self, qm: &QueuedMessage) -> bytes::Bytes {
        let own = &qm.message.properties;
        if !self.quorum || qm.deliveries == 0 {
            return own.clone();
        }
        let Ok(props) = crate::properties::Properties::scan(own.clone()) else {
            return own.clone();
        };
        let mut headers = props.headers().unwrap_or_default();
        headers.insert(
            "x-delivery-count".into(),
            AMQPValue::LongLongInt(i64::from(qm.deliveries)),
        );
        let encoded = crate::frame::encode_table(&headers);
        props
            .with_headers(&encoded, false)
            .map_or_else(|_| own.clone(), |p| p.raw().clone())
    }

    /// Number of consumers.
    pub fn consumer_count(&self) -> u32 {
        u32::try_from(self.consumers.len()).unwrap_or(u32::MAX)
    }

    /// Whether a queue that refuses publishes when full (`reject-publish`) refuses a
    /// message of `body_len` bytes: it would go over `x-max-length` or
    /// `x-max-length-bytes` (even an empty queue refuses a body over the byte limit).
    pub fn rejects_publish(&self, body_len: usize) -> bool {
        self.limit.overflow != Overflow::DropHead
            && self.limit.exceeded(
                u64::from(self.ready_len()) + 1,
                (self.messages.body_bytes() + body_len) as u64,
            )
    }

    /// With `drop-head`, drops the oldest ready messages while the queue is over
    /// `x-max-length` or `x-max-length-bytes` (a message over the byte limit by itself
    /// drops itself). Paged-out messages come after those in memory, so the oldest are
    /// read back first if memory holds none; a byte-limited queue does not page.
    pub fn drop_over_limit(&mut self, now: Instant) {
        if self.limit.overflow != Overflow::DropHead {
            return;
        }
        while self.limit.exceeded(
            u64::from(self.ready_len()),
            self.messages.body_bytes() as u64,
        ) {
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

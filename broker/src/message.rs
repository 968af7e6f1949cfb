//! A published message as the broker holds it: routing facts, raw properties, body.
//!
//! One `Arc<Message>` is shared by every queue the message was routed to; the body is
//! a `Bytes` cut from the publisher's read buffer, the properties are the publisher's
//! own bytes, so fan-out copies nothing and consumers receive what was sent.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amq_protocol::types::ShortString;
use bytes::Bytes;

use crate::store::log::StoredMessage;

/// A message routed into one or more queues.
#[derive(Debug)]
pub struct Message {
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: ShortString,
    /// The routing key it was published with.
    pub routing_key: ShortString,
    /// The `priority` property (0 when unset), for priority queues.
    pub priority: u8,
    /// The content header's property flags and fields, as the publisher sent them.
    pub properties: Bytes,
    /// The body.
    pub body: Bytes,
    /// The per-message `expiration`, if set.
    pub ttl: Option<Duration>,
    /// When that runs out: set by the vhost at the moment it enqueues the message.
    pub expires_at: Option<Instant>,
    /// `delivery_mode = 2`: kept for the durable store.
    pub persistent: bool,
    /// The `CC` and `BCC` headers' routing keys (sender-selected distribution), when
    /// it had any: it routes by these too.
    pub sender_keys: Option<Box<crate::properties::SenderKeys>>,
}

/// The largest TTL RabbitMQ accepts, for `expiration`, `x-message-ttl` and
/// `x-expires` alike: ten years, in milliseconds.
pub const MAX_EXPIRY_MS: u64 = 315_360_000_000;

/// Parses the `expiration` property as RabbitMQ does: an integer of ms from 0 to
/// [`MAX_EXPIRY_MS`]. The error is RabbitMQ's reason, for the text of the 406
/// (`invalid expiration '{value}': {reason}`).
pub fn parse_expiration(value: &str) -> Result<Duration, String> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("no_integer".to_owned());
    }
    let zero = digits.bytes().all(|b| b == b'0');
    if digits.len() < value.len() && !zero {
        return Err(format!("{{value_negative,{value}}}"));
    }
    match digits.parse::<u64>() {
        Ok(ms) if ms <= MAX_EXPIRY_MS => Ok(Duration::from_millis(ms)),
        // Digits only, so the value is too large even when it does not fit a u64.
        _ => Err(format!(
            "{{value_too_large,{}}}",
            digits.trim_start_matches('0')
        )),
    }
}

/// A message in a queue: shared content plus this queue's view of it.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// The message.
    pub message: std::sync::Arc<Message>,
    /// Whether it has been delivered before (set on requeue).
    pub redelivered: bool,
    /// The earlier of the message's own expiry and the queue's `x-message-ttl`.
    pub expires_at: Option<Instant>,
    /// Where this queue's copy is stored, for a persistent message in a durable queue.
    pub loc: Option<crate::store::log::Location>,
    /// How often it was delivered and came back (a quorum queue's `x-delivery-count`).
    pub deliveries: u32,
}

impl QueuedMessage {
    /// Whether the message has expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The memory it holds, as far as paging is concerned: content, names and a share
    /// for the bookkeeping around them.
    pub fn size(&self) -> usize {
        let m = &self.message;
        m.body.len()
            + m.properties.len()
            + m.exchange.as_str().len()
            + m.routing_key.as_str().len()
            + 128
    }

    /// A message read back from a queue's log (recovery, paging in), as the queue holds it.
    pub fn from_stored(m: StoredMessage, now: Instant) -> Self {
        let expires_at = m
            .expires_at_ms
            .map(|ms| instant_of(ms, now, SystemTime::now()));
        let short = |b: &[u8]| ShortString::from(String::from_utf8_lossy(b).into_owned());
        Self {
            message: std::sync::Arc::new(Message {
                exchange: short(&m.exchange),
                routing_key: short(&m.routing_key),
                priority: crate::properties::Properties::scan(m.properties.clone())
                    .ok()
                    .and_then(|p| p.priority())
                    .unwrap_or(0),
                properties: m.properties,
                body: m.body,
                ttl: None,
                expires_at,
                persistent: m.persistent,
                // `BCC` was not stored; `CC` is read again for dead-lettering.
                sender_keys: None,
            }),
            redelivered: m.delivered,
            expires_at,
            loc: Some(m.location),
            deliveries: 0,
        }
    }
}

/// A queue's ready messages in memory in delivery order, and the bytes they hold, which
/// decide when a durable queue pages out and whether `x-max-length-bytes` is reached.
/// Reading goes through `Deref` to the `VecDeque`; every change goes through these
/// methods, which keep the counts and the order.
///
/// A plain queue delivers oldest first. A priority queue (`x-max-priority`) delivers
/// the highest priority first and, within a priority, oldest first: the messages are
/// kept sorted by priority, highest first, so a new one goes after the last of its
/// level (a binary search; at the end when every message has the same priority) and a
/// requeued one before the first of its level, as RabbitMQ does. A priority above the
/// queue's maximum counts as the maximum; the message keeps its own property.
#[derive(Debug, Default)]
pub struct Ready {
    items: VecDeque<QueuedMessage>,
    /// [`QueuedMessage::size`] summed.
    bytes: usize,
    /// Body bytes summed: what `x-max-length-bytes` counts.
    body_bytes: usize,
    /// `x-max-priority`, for a priority queue.
    max_priority: Option<u8>,
}

impl std::ops::Deref for Ready {
    type Target = VecDeque<QueuedMessage>;

    fn deref(&self) -> &Self::Target {
        &self.items
    }
}

impl Ready {
    /// An empty list; `max_priority` makes it a priority queue's.
    pub fn new(max_priority: Option<u8>) -> Self {
        Self {
            max_priority,
            ..Self::default()
        }
    }

    /// The bytes the messages hold ([`QueuedMessage::size`] summed).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The bytes of the messages' bodies.
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    fn level(&self, qm: &QueuedMessage) -> u8 {
        self.max_priority
            .map_or(0, |max| qm.message.priority.min(max))
    }

    fn count_in(&mut self, qm: &QueuedMessage) {
        self.bytes += qm.size();
        self.body_bytes += qm.message.body.len();
    }

    fn count_out(&mut self, qm: &QueuedMessage) {
        self.bytes -= qm.size();
        self.body_bytes -= qm.message.body.len();
    }

    /// Adds a message after those it does not go before (in a plain queue, last).
    pub fn push_back(&mut self, qm: QueuedMessage) {
        self.count_in(&qm);
        if self.max_priority.is_none() {
            return self.items.push_back(qm);
        }
        let p = self.level(&qm);
        if self.items.back().is_none_or(|last| self.level(last) >= p) {
            return self.items.push_back(qm);
        }
        let at = self.items.partition_point(|m| self.level(m) >= p);
        self.items.insert(at, qm);
    }

    /// Puts a message back before the others of its priority (a requeue; in a plain
    /// queue, first).
    pub fn push_front(&mut self, qm: QueuedMessage) {
        self.count_in(&qm);
        if self.max_priority.is_none() {
            return self.items.push_front(qm);
        }
        let p = self.level(&qm);
        let at = self.items.partition_point(|m| self.level(m) > p);
        self.items.insert(at, qm);
    }

    /// Takes the next message to deliver.
    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let qm = self.items.pop_front()?;
        self.count_out(&qm);
        Some(qm)
    }

    /// Takes the last message in delivery order.
    pub fn pop_back(&mut self) -> Option<QueuedMessage> {
        let qm = self.items.pop_back()?;
        self.count_out(&qm);
        Some(qm)
    }

    /// Takes every message.
    pub fn take(&mut self) -> VecDeque<QueuedMessage> {
        self.bytes = 0;
        self.body_bytes = 0;
        std::mem::take(&mut self.items)
    }
}

impl Extend<QueuedMessage> for Ready {
    fn extend<I: IntoIterator<Item = QueuedMessage>>(&mut self, iter: I) {
        for qm in iter {
            self.push_back(qm);
        }
    }
}

/// Wall-clock milliseconds of the instant `at`, given that `now` is the present: how
/// an expiry is stored, so it keeps running across a restart.
pub fn unix_ms(at: Instant, now: Instant) -> u64 {
    let wall = SystemTime::now();
    let t = if at >= now {
        wall + (at - now)
    } else {
        wall.checked_sub(now - at).unwrap_or(UNIX_EPOCH)
    };
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The instant of wall-clock milliseconds `ms`, given `now` and `wall` are the present.
fn instant_of(ms: u64, now: Instant, wall: SystemTime) -> Instant {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    match t.duration_since(wall) {
        Ok(ahead) => now + ahead,
        // Already past: expired on arrival.
        Err(_) => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_accepts_only_digits_up_to_ten_years() {
        let ms = Duration::from_millis;
        assert_eq!(parse_expiration("1500"), Ok(ms(1500)));
        assert_eq!(parse_expiration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_expiration("315360000000"), Ok(ms(MAX_EXPIRY_MS)));
        let err = |s: &str| Err(s.to_owned());
        assert_eq!(parse_expiration("-1"), err("{value_negative,-1}"));
        assert_eq!(parse_expiration("1.5"), err("no_integer"));
        assert_eq!(parse_expiration(""), err("no_integer"));
        assert_eq!(parse_expiration("-"), err("no_integer"));
        assert_eq!(
            parse_expiration("315360000001"),
            err("{value_too_large,315360000001}")
        );
        assert_eq!(
            parse_expiration("9223372036854775808"),
            err("{value_too_large,9223372036854775808}")
        );
        assert_eq!(
            parse_expiration("18446744073709551616"),
            err("{value_too_large,18446744073709551616}")
        );
    }

    fn queued(body: &str, priority: u8) -> QueuedMessage {
        QueuedMessage {
            message: std::sync::Arc::new(Message {
                exchange: "".into(),
                routing_key: "q".into(),
                priority,
                properties: Bytes::new(),
                body: Bytes::from(body.to_owned()),
                ttl: None,
                expires_at: None,
                persistent: false,
                sender_keys: None,
            }),
            redelivered: false,
            expires_at: None,
            loc: None,
            deliveries: 0,
        }
    }

    fn bodies(r: &Ready) -> Vec<&[u8]> {
        r.iter().map(|qm| &qm.message.body[..]).collect()
    }

    #[test]
    fn a_priority_list_orders_by_priority_then_arrival_and_requeues_first_in_level() {
        let mut r = Ready::new(Some(5));
        for (body, p) in [("a", 1), ("b", 3), ("c", 9), ("d", 1), ("e", 0), ("f", 5)] {
            r.push_back(queued(body, p));
        }
        // 9 counts as 5, so "c" stays ahead of the later "f".
        assert_eq!(bodies(&r), [b"c", b"f", b"b", b"a", b"d", b"e"]);
        r.push_front(queued("g", 1));
        assert_eq!(bodies(&r), [b"c", b"f", b"b", b"g", b"a", b"d", b"e"]);
        assert_eq!(r.body_bytes(), 7);
        let first = r.pop_front().map(|qm| qm.message.priority);
        assert_eq!(first, Some(9), "the property itself is kept");
        assert_eq!(r.body_bytes(), 6);
    }

    #[test]
    fn a_plain_list_ignores_priorities() {
        let mut r = Ready::new(None);
        r.push_back(queued("a", 0));
        r.push_back(queued("b", 9));
        r.push_front(queued("c", 5));
        assert_eq!(bodies(&r), [b"c", b"a", b"b"]);
    }
}

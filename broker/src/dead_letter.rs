//! Dead-lettering, the message side: how a message that leaves a queue for good
//! (rejected without requeue, expired, dropped for the length limit, over its delivery
//! limit) is rewritten before it is republished to the queue's dead-letter exchange,
//! and the check that drops it instead when it would go round an automatic cycle.
//!
//! RabbitMQ's rules, which this follows:
//! - The `x-death` header is an array of tables, the latest death first, one per
//!   queue and reason: `count` (long), `reason`, `queue`, `time` (timestamp, seconds),
//!   `exchange`, `routing-keys` (array of long strings) and, for a message that had a
//!   per-message TTL, `original-expiration` (the `expiration` property is removed).
//!   Dying again in the same queue for the same reason adds one to that entry's
//!   `count` and moves it first.
//! - `x-first-death-reason`, `-queue` and `-exchange` are set at the first death and
//!   never change; `x-last-death-*` (RabbitMQ 3.13 and 4) follow every death.
//! - The message is republished with the queue's `x-dead-letter-routing-key`, or with
//!   its own routing key when there is none.
//! - A message about to reach a queue it already died in is dropped for that queue if
//!   no death in between was a rejection: nothing but the broker moves it, so it would
//!   cycle for ever. A message that was rejected is never dropped this way.
//!
//! The queue and vhost side (which queues hold what, when to republish) is
//! `crate::vhost::dead_letter`.

use std::borrow::Cow;

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

use crate::args::{int_value, str_value};
use crate::message::Message;
use crate::properties::{Properties, SenderKeys, header_keys};

/// Why a message was dead-lettered, with RabbitMQ's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `basic.reject` or `basic.nack` with `requeue = false`.
    Rejected,
    /// Its TTL (the queue's or its own) ran out.
    Expired,
    /// Dropped from the head of a full queue, or refused by `reject-publish-dlx`.
    Maxlen,
    /// Delivered more often than the queue's `x-delivery-limit`.
    DeliveryLimit,
}

impl Reason {
    /// The name in `x-death`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Maxlen => "maxlen",
            Self::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Where a queue dead-letters to: `x-dead-letter-exchange` and
/// `x-dead-letter-routing-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterTo {
    /// The exchange (`""` is the default exchange).
    pub exchange: ShortString,
    /// The routing key to use instead of the message's own.
    pub routing_key: Option<ShortString>,
}

impl DeadLetterTo {
    /// Where a queue with these declare arguments dead-letters to, read leniently as
    /// [`crate::args::length_limit`] is (the declare checks refused wrong types).
    pub fn from_args(args: &FieldTable) -> Option<Self> {
        let text = |key: &str| {
            args.inner()
                .get(key)
                .and_then(str_value)
                .map(|s| ShortString::from(s.into_owned()))
        };
        Some(Self {
            exchange: text("x-dead-letter-exchange")?,
            routing_key: text("x-dead-letter-routing-key"),
        })
    }
}

/// A message rewritten for dead-lettering, and what the cycle check needs.
#[derive(Debug)]
pub struct Rewritten {
    /// The message to republish.
    pub message: Message,
    /// The `x-death` entries, latest first: queue name and whether it was a rejection
    /// (`None` for an entry a client wrote that is not a table, which ends any
    /// automatic cycle).
    deaths: Vec<Option<(String, bool)>>,
    /// This death's reason.
    reason: Reason,
}

impl Rewritten {
    /// Whether republishing to `queue` would go round a cycle with no rejection in it,
    /// so the message must not go there.
    pub fn cycles_to(&self, queue: &str) -> bool {
        if self.reason == Reason::Rejected {
            return false;
        }
        let Some(at) = self
            .deaths
            .iter()
            .position(|d| d.as_ref().is_some_and(|(q, _)| q == queue))
        else {
            return false;
        };
        self.deaths[..=at]
            .iter()
            .all(|d| d.as_ref().is_some_and(|(_, rejected)| !rejected))
    }
}

fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn field<'a>(t: &'a FieldTable, key: &str) -> Option<Cow<'a, str>> {
    t.inner().get(key).and_then(str_value)
}

/// `message` as dead-lettered from `queue` for `reason` to `to` at `now_secs` (Unix
/// seconds); `None` if its stored properties do not parse, which `Properties::scan`
/// refused at publish and cannot happen for a message the broker accepted.
pub fn rewrite(
    message: &Message,
    queue: &str,
    reason: Reason,
    to: &DeadLetterTo,
    now_secs: u64,
) -> Option<Rewritten> {
    let props = Properties::scan(message.properties.clone()).ok()?;
    let mut headers = props.headers().unwrap_or_default();
    let exchange = message.exchange.as_str();
    let old: Option<Vec<AMQPValue>> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => Some(a.as_slice().to_vec()),
        _ => None,
    };
    let is_this = |v: &AMQPValue| match v {
        AMQPValue::FieldTable(t) => {
            field(t, "queue").as_deref() == Some(queue)
                && field(t, "reason").as_deref() == Some(reason.name())
        }
        _ => false,
    };
    let mut entries = old.clone().unwrap_or_default();
    let entry = match entries.iter().position(is_this) {
        Some(i) => {
            let mut t = match entries.remove(i) {
                AMQPValue::FieldTable(t) => t,
                _ => FieldTable::default(),
            };
            let count = t.inner().get("count").and_then(int_value).unwrap_or(0);
            let count = i64::try_from(count).unwrap_or(i64::MAX).saturating_add(1);
            t.insert("count".into(), AMQPValue::LongLongInt(count));
            t
        }
        None => {
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), long_str(reason.name()));
            t.insert("queue".into(), long_str(queue));
            t.insert("time".into(), AMQPValue::Timestamp(now_secs));
            t.insert("exchange".into(), long_str(exchange));
            // The original key and the `CC` keys, never the `BCC` ones.
            let cc = message
                .sender_keys
                .as_ref()
                .map_or_else(|| header_keys(&headers, "CC"), |k| k.cc.clone());
            let keys = std::iter::once(&message.routing_key)
                .chain(&cc)
                .map(|k| long_str(k.as_str()))
                .collect::<Vec<_>>();
            t.insert(
                "routing-keys".into(),
                AMQPValue::FieldArray(FieldArray::from(keys)),
            );
            if let Some(exp) = props.expiration() {
                t.insert("original-expiration".into(), long_str(exp));
            }
            t
        }
    };
    entries.insert(0, AMQPValue::FieldTable(entry));
    if old.is_none() {
        headers.insert("x-first-death-reason".into(), long_str(reason.name()));
        headers.insert("x-first-death-queue".into(), long_str(queue));
        headers.insert("x-first-death-exchange".into(), long_str(exchange));
    }
    headers.insert("x-last-death-reason".into(), long_str(reason.name()));
    headers.insert("x-last-death-queue".into(), long_str(queue));
    headers.insert("x-last-death-exchange".into(), long_str(exchange));
    let deaths = entries
        .iter()
        .map(|v| match v {
            AMQPValue::FieldTable(t) => Some((
                field(t, "queue").unwrap_or_default().into_owned(),
                field(t, "reason").as_deref() == Some(Reason::Rejected.name()),
            )),
            _ => None,
        })
        .collect();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(entries)),
    );
    let encoded = crate::frame::encode_table(&headers);
    let props = props.with_headers(&encoded, true).ok()?;
    // With `x-dead-letter-routing-key` the copy goes by that key alone; without, by
    // its own key and its `CC` and `BCC` keys (`CC` read back from the headers for a
    // message recovered from disk).
    let (routing_key, sender_keys) = match &to.routing_key {
        // No extra keys from now on, though `CC` stays in the headers: the next
        // death's `routing-keys` is this key alone, as RabbitMQ has it.
        Some(key) => (key.clone(), Some(Box::default())),
        None => (
            message.routing_key.clone(),
            message.sender_keys.clone().or_else(|| {
                let cc = header_keys(&headers, "CC");
                (!cc.is_empty()).then(|| {
                    Box::new(SenderKeys {
                        cc,
                        bcc: Vec::new(),
                    })
                })
            }),
        ),
    };
    Some(Rewritten {
        message: Message {
            exchange: to.exchange.clone(),
            routing_key,
            priority: message.priority,
            properties: props.raw().clone(),
            body: message.body.clone(),
            ttl: None,
            expires_at: None,
            persistent: message.persistent,
            sender_keys,
        },
        deaths,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::{AMQPProperties, parse_properties};
    use bytes::Bytes;

    fn message(props: AMQPProperties) -> Message {
        Message {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            priority: 0,
            properties: crate::frame::encode_properties(&props),
            body: Bytes::from_static(b"hi"),
            ttl: None,
            expires_at: None,
            persistent: false,
            sender_keys: None,
        }
    }

    fn to(exchange: &str) -> DeadLetterTo {
        DeadLetterTo {
            exchange: exchange.into(),
            routing_key: None,
        }
    }

    fn headers(m: &Message) -> FieldTable {
        let (_, p) = parse_properties(&m.properties[..]).expect("properties");
        p.headers().clone().expect("headers")
    }

    fn deaths(h: &FieldTable) -> Vec<FieldTable> {
        match h.inner().get("x-death") {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .map(|v| match v {
                    AMQPValue::FieldTable(t) => t.clone(),
                    other => panic!("not a table: {other:?}"),
                })
                .collect(),
            other => panic!("no x-death: {other:?}"),
        }
    }

    #[test]
    fn first_death_writes_x_death_and_removes_expiration() {
        let m = message(AMQPProperties::default().with_expiration("5000".into()));
        let r = rewrite(&m, "q1", Reason::Expired, &to("dlx"), 1_700_000_000).expect("rewrite");
        assert_eq!(r.message.exchange.as_str(), "dlx");
        assert_eq!(r.message.routing_key.as_str(), "rk");
        let (_, p) = parse_properties(&r.message.properties[..]).expect("properties");
        assert_eq!(p.expiration(), &None);
        let h = headers(&r.message);
        let d = deaths(&h);
        assert_eq!(d.len(), 1);
        let e = &d[0];
        assert_eq!(e.inner().get("count"), Some(&AMQPValue::LongLongInt(1)));
        assert_eq!(e.inner().get("reason"), Some(&long_str("expired")));
        assert_eq!(e.inner().get("queue"), Some(&long_str("q1")));
        assert_eq!(e.inner().get("exchange"), Some(&long_str("ex")));
        assert_eq!(
            e.inner().get("time"),
            Some(&AMQPValue::Timestamp(1_700_000_000))
        );
        assert_eq!(
            e.inner().get("original-expiration"),
            Some(&long_str("5000"))
        );
        assert_eq!(
            e.inner().get("routing-keys"),
            Some(&AMQPValue::FieldArray(vec![long_str("rk")].into()))
        );
        assert_eq!(h.inner().get("x-first-death-queue"), Some(&long_str("q1")));
        assert_eq!(
            h.inner().get("x-last-death-reason"),
            Some(&long_str("expired"))
        );
    }

    #[test]
    fn dying_again_counts_and_moves_first() {
        let m = message(AMQPProperties::default());
        let once = rewrite(&m, "a", Reason::Rejected, &to("x"), 1).expect("a");
        let twice = rewrite(&once.message, "b", Reason::Expired, &to("x"), 2).expect("b");
        let thrice = rewrite(&twice.message, "a", Reason::Rejected, &to("x"), 3).expect("a");
        let h = headers(&thrice.message);
        let d = deaths(&h);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].inner().get("queue"), Some(&long_str("a")));
        assert_eq!(d[0].inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(d[1].inner().get("queue"), Some(&long_str("b")));
        // The first death's headers stay; the last death's follow.
        assert_eq!(h.inner().get("x-first-death-queue"), Some(&long_str("a")));
        assert_eq!(
            h.inner().get("x-first-death-exchange"),
            Some(&long_str("ex"))
        );
        assert_eq!(h.inner().get("x-last-death-exchange"), Some(&long_str("x")));
    }

    #[test]
    fn automatic_cycles_are_detected_rejections_break_them() {
        let m = message(AMQPProperties::default());
        let dl = DeadLetterTo {
            exchange: "".into(),
            routing_key: Some("a".into()),
        };
        let r = rewrite(&m, "a", Reason::Expired, &dl, 1).expect("a");
        assert_eq!(r.message.routing_key.as_str(), "a");
        assert!(
            r.cycles_to("a"),
            "a queue dead-lettering to itself on expiry"
        );
        assert!(!r.cycles_to("b"));
        let r = rewrite(&r.message, "b", Reason::Maxlen, &dl, 1).expect("b");
        assert!(r.cycles_to("a"), "a -> b -> a, all automatic");
        let rejected = rewrite(&m, "a", Reason::Rejected, &dl, 1).expect("a");
        assert!(!rejected.cycles_to("a"), "a rejection is never a cycle");
        let r = rewrite(&rejected.message, "b", Reason::Expired, &dl, 1).expect("b");
        assert!(!r.cycles_to("a"), "a rejection in the cycle");
        assert!(r.cycles_to("b"));
    }
}

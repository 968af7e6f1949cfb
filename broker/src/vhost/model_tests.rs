//! A model of a length-limited priority queue that dead-letters, run against the
//! vhost under random operation sequences: publishes of any priority and size into a
//! queue with `x-max-priority`, `x-max-length`, `x-max-length-bytes` and either
//! overflow, gets, acks, and rejections with and without requeue. After every step the
//! queue's ready messages (in delivery order) and the dead-letter queue's (with the
//! reason in their `x-death`) must be the model's.

use std::collections::VecDeque;
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use proptest::prelude::*;

use super::{ChannelState, QueueOptions, VHost};
use crate::message::Message;
use crate::outbox::Outbox;
use crate::queue::ChannelKey;

#[derive(Debug, Clone)]
enum Op {
    Publish { priority: u8, extra: usize },
    Get,
    Ack,
    Requeue,
    Reject,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..10, 0usize..6).prop_map(|(priority, extra)| Op::Publish { priority, extra }),
        2 => Just(Op::Get),
        1 => Just(Op::Ack),
        1 => Just(Op::Requeue),
        1 => Just(Op::Reject),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u32,
    level: u8,
    len: usize,
}

/// What RabbitMQ does, written plainly.
#[derive(Debug)]
struct Model {
    max_priority: u8,
    max_len: usize,
    max_bytes: usize,
    /// `reject-publish-dlx` (else `drop-head`).
    rejects: bool,
    ready: Vec<Entry>,
    unacked: VecDeque<(u64, Entry)>,
    dead: Vec<(u32, &'static str)>,
    next_tag: u64,
}

impl Model {
    fn bytes(&self) -> usize {
        self.ready.iter().map(|e| e.len).sum()
    }

    fn over(&self, len: usize, bytes: usize) -> bool {
        len > self.max_len || bytes > self.max_bytes
    }

    fn drop_head(&mut self) {
        while !self.rejects && self.over(self.ready.len(), self.bytes()) {
            let e = self.ready.remove(0);
            self.dead.push((e.id, "maxlen"));
        }
    }

    /// Whether the publish was refused.
    fn publish(&mut self, e: Entry) -> bool {
        if self.rejects && self.over(self.ready.len() + 1, self.bytes() + e.len) {
            self.dead.push((e.id, "maxlen"));
            return true;
        }
        let at = self.ready.partition_point(|m| m.level >= e.level);
        self.ready.insert(at, e);
        self.drop_head();
        false
    }

    fn get(&mut self) -> bool {
        if self.ready.is_empty() {
            return false;
        }
        let e = self.ready.remove(0);
        self.next_tag += 1;
        self.unacked.push_back((self.next_tag, e));
        true
    }

    fn requeue(&mut self, e: Entry) {
        let at = self.ready.partition_point(|m| m.level > e.level);
        self.ready.insert(at, e);
        self.drop_head();
    }
}

fn body(id: u32, extra: usize) -> Bytes {
    Bytes::from(format!("{id:04}{}", "x".repeat(extra)))
}

fn id_of(body: &[u8]) -> u32 {
    std::str::from_utf8(&body[..4])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u32::MAX)
}

fn reason_of(m: &Message) -> String {
    let headers = crate::properties::Properties::scan(m.properties.clone())
        .ok()
        .and_then(|p| p.headers())
        .unwrap_or_default();
    match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => match a.as_slice().first() {
            Some(AMQPValue::FieldTable(t)) => t
                .inner()
                .get("reason")
                .and_then(crate::args::str_value)
                .map(|r| r.into_owned())
                .unwrap_or_default(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

fn setup(m: &Model) -> (VHost, ChannelKey) {
    let mut v = VHost::new();
    let key = ChannelKey::new(1, 1);
    v.open_channel(
        key,
        ChannelState::new(Arc::new(Outbox::default()), 131072, true),
    );
    let text = |s: &str| AMQPValue::LongString(s.into());
    let mut args = FieldTable::default();
    args.insert(
        "x-max-priority".into(),
        AMQPValue::LongInt(m.max_priority.into()),
    );
    args.insert("x-max-length".into(), AMQPValue::LongInt(m.max_len as i32));
    args.insert(
        "x-max-length-bytes".into(),
        AMQPValue::LongInt(m.max_bytes as i32),
    );
    let overflow = if m.rejects {
        "reject-publish-dlx"
    } else {
        "drop-head"
    };
    args.insert("x-overflow".into(), text(overflow));
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text("dead"));
    let opts = QueueOptions {
        arguments: args,
        ..QueueOptions::default()
    };
    v.declare_queue(1, "q", opts).expect("declare q");
    v.declare_queue(1, "dead", QueueOptions::default())
        .expect("declare dead");
    (v, key)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_limited_priority_queue_that_dead_letters_behaves_as_the_model(
        max_priority in 0u8..6,
        max_len in 1usize..5,
        max_bytes in 8usize..25,
        rejects in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut model = Model {
            max_priority, max_len, max_bytes, rejects,
            ready: Vec::new(), unacked: VecDeque::new(), dead: Vec::new(), next_tag: 0,
        };
        let (mut v, key) = setup(&model);
        for (id, op) in (0u32..).zip(ops) {
            match op {
                Op::Publish { priority, extra } => {
                    let e = Entry { id, level: priority.min(max_priority), len: 4 + extra };
                    let refused = model.publish(e);
                    let routed = v.publish(&|| None, Message {
                        exchange: "".into(),
                        routing_key: "q".into(),
                        priority,
                        properties: Bytes::from_static(&[0, 0]),
                        body: body(id, extra),
                        ttl: None,
                        expires_at: None,
                        persistent: false,
                        sender_keys: None,
                    });
                    prop_assert_eq!(routed.rejected, refused, "publish {}", id);
                }
                Op::Get => {
                    let before = v.queues["q"].ready_len();
                    let got = model.get();
                    v.get(key, "q", false).expect("get");
                    prop_assert_eq!(v.queues["q"].ready_len() < before, got);
                }
                Op::Ack => if let Some((tag, _)) = model.unacked.pop_front() {
                    v.ack(key, tag, false).expect("ack");
                },
                Op::Requeue => if let Some((tag, e)) = model.unacked.pop_front() {
                    model.requeue(e);
                    v.reject(key, tag, false, true).expect("requeue");
                },
                Op::Reject => if let Some((tag, e)) = model.unacked.pop_front() {
                    model.dead.push((e.id, "rejected"));
                    v.reject(key, tag, false, false).expect("reject");
                },
            }
            let ready: Vec<u32> = v.queues["q"].messages.iter().map(|qm| id_of(&qm.message.body)).collect();
            let want: Vec<u32> = model.ready.iter().map(|e| e.id).collect();
            prop_assert_eq!(ready, want);
            let dead: Vec<(u32, String)> = v.queues["dead"]
                .messages
                .iter()
                .map(|qm| (id_of(&qm.message.body), reason_of(&qm.message)))
                .collect();
            let want: Vec<(u32, String)> = model.dead.iter().map(|(i, r)| (*i, (*r).to_owned())).collect();
            prop_assert_eq!(dead, want);
        }
    }
}

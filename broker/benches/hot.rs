//! Criterion benchmarks of the broker's per-message hot functions: frame decode and
//! encode, topic matching, and routing through a vhost.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::FieldTable;
use broker::internals::frame;
use broker::internals::topic_matches;
use broker::internals::vhost::{ExchangeOptions, QueueOptions, VHost};
use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};

fn publish_frames() -> Vec<u8> {
    let mut out = Vec::new();
    let publish = basic::Publish {
        exchange: "".into(),
        routing_key: "rpc_queue".into(),
        mandatory: true,
        immediate: false,
    };
    frame::encode_method(
        &mut out,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
    );
    let props = basic::AMQPProperties::default()
        .with_correlation_id("0123456789abcdef".into())
        .with_reply_to("amq.rabbitmq.reply-to".into());
    frame::encode_content(
        &mut out,
        1,
        &frame::encode_properties(&props),
        &[7u8; 16],
        131_072,
    );
    out
}

fn decode(c: &mut Criterion) {
    let bytes = publish_frames();
    c.bench_function("frame decode: publish + header + 16 B body", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(f)) = frame::decode(&mut buf, 131_072) {
                black_box(f);
            }
        })
    });
}

fn encode(c: &mut Criterion) {
    let props = frame::encode_properties(
        &basic::AMQPProperties::default().with_correlation_id("0123456789abcdef".into()),
    );
    let mut out = Vec::with_capacity(4096);
    c.bench_function("frame encode: deliver + header + 16 B body", |b| {
        b.iter(|| {
            out.clear();
            frame::encode_deliver(
                &mut out,
                1,
                "amq.ctag-abcdefghijklmnopqrstuv",
                42,
                false,
                "",
                "rpc_queue",
            );
            frame::encode_content(&mut out, 1, &props, &[7u8; 16], 131_072);
            black_box(&out);
        })
    });
}

fn topic(c: &mut Criterion) {
    c.bench_function("topic match: lazy.# vs lazy.orange.male.rabbit", |b| {
        b.iter(|| topic_matches(black_box("lazy.#"), black_box("lazy.orange.male.rabbit")))
    });
    c.bench_function("topic match: *.*.rabbit vs quick.orange.fox", |b| {
        b.iter(|| topic_matches(black_box("*.*.rabbit"), black_box("quick.orange.fox")))
    });
}

fn routing(c: &mut Criterion) {
    let mut v = VHost::new();
    let opts = ExchangeOptions {
        kind: "topic".into(),
        passive: false,
        durable: false,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    };
    v.declare_exchange("logs", opts).expect("exchange");
    for (q, keys) in [
        ("q1", &["*.orange.*"][..]),
        ("q2", &["*.*.rabbit", "lazy.#"][..]),
    ] {
        v.declare_queue(1, q, QueueOptions::default())
            .expect("queue");
        for k in keys {
            v.bind_queue(1, q, "logs", k, FieldTable::default())
                .expect("bind");
        }
    }
    c.bench_function("route: topic exchange, 3 bindings", |b| {
        b.iter(|| black_box(v.route("logs", black_box("quick.orange.rabbit"), &[], &|| None)))
    });
    c.bench_function("route: default exchange", |b| {
        b.iter(|| black_box(v.route("", black_box("q1"), &[], &|| None)))
    });
}

/// A vhost with one queue `target` bound by `*.orange.*` (topic) and `target`
/// (direct), and `n - 1` more bindings of each kind that the routed key does not match.
fn many_bindings(n: usize) -> VHost {
    let mut v = VHost::new();
    for (x, kind) in [("t", "topic"), ("d", "direct")] {
        let opts = ExchangeOptions {
            kind: kind.into(),
            passive: false,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        };
        v.declare_exchange(x, opts).expect("exchange");
    }
    v.declare_queue(1, "target", QueueOptions::default())
        .expect("queue");
    v.bind_queue(1, "target", "t", "*.orange.*", FieldTable::default())
        .expect("bind");
    v.bind_queue(1, "target", "d", "target", FieldTable::default())
        .expect("bind");
    for q in 0..100 {
        v.declare_queue(1, &format!("q{q}"), QueueOptions::default())
            .expect("queue");
    }
    for i in 1..n {
        let q = format!("q{}", i % 100);
        v.bind_queue(1, &q, "t", &format!("w{i}.*.rabbit"), FieldTable::default())
            .expect("bind");
        v.bind_queue(1, &q, "d", &format!("k{i}"), FieldTable::default())
            .expect("bind");
    }
    v
}

fn routing_scale(c: &mut Criterion) {
    for n in [1, 100_000] {
        let v = many_bindings(n);
        c.bench_function(&format!("route: topic exchange, {n} bindings"), |b| {
            b.iter(|| black_box(v.route("t", black_box("quick.orange.rabbit"), &[], &|| None)))
        });
        c.bench_function(&format!("route: direct exchange, {n} bindings"), |b| {
            b.iter(|| black_box(v.route("d", black_box("target"), &[], &|| None)))
        });
    }
}

criterion_group!(benches, decode, encode, topic, routing, routing_scale);
criterion_main!(benches);

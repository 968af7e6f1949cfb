//! Drives the connection state machine with random method sequences, random bytes and
//! deeply nested argument tables.
//!
//! After each sequence: no task panicked, the fuzzing socket was answered or closed in
//! bounded time (never left hanging), and the broker still serves a fresh client.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use amq_protocol::frame::{AMQPFrame, gen_frame};
use amq_protocol::protocol::{AMQPClass, basic, channel, confirm, connection, exchange, queue, tx};
use amq_protocol::types::{AMQPValue, FieldTable};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
enum Op {
    Method(u16, AMQPClass),
    Content {
        channel: u16,
        body: usize,
        class_id: u16,
    },
    Garbage(Vec<u8>),
    /// A method whose arguments table nests `depth` levels (tables or arrays), as raw
    /// bytes: past 32 levels the broker must refuse it, never decode it recursively.
    Deep {
        channel: u16,
        class_method: (u16, u16),
        depth: usize,
        arrays: bool,
    },
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("q1".to_owned()),
        Just("q2".to_owned()),
        Just("amq.direct".to_owned()),
        Just("x1".to_owned())
    ]
}

fn args() -> impl Strategy<Value = FieldTable> {
    prop_oneof![
        Just(FieldTable::default()),
        (-2i32..3).prop_map(|ttl| {
            let mut t = FieldTable::default();
            t.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl));
            t
        }),
        (0i32..3).prop_map(|e| {
            let mut t = FieldTable::default();
            t.insert("x-expires".into(), AMQPValue::LongInt(e));
            t
        }),
    ]
}

fn method() -> impl Strategy<Value = AMQPClass> {
    let b = any::<bool>;
    prop_oneof![
        (name(), b(), b(), b(), b(), b(), args()).prop_map(
            |(q, passive, durable, exclusive, auto_delete, nowait, arguments)| {
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: q.into(),
                    passive,
                    durable,
                    exclusive,
                    auto_delete,
                    nowait,
                    arguments,
                }))
            }
        ),
        (name(), name(), name()).prop_map(|(q, x, k)| AMQPClass::Queue(queue::AMQPMethod::Bind(
            queue::Bind {
                queue: q.into(),
                exchange: x.into(),
                routing_key: k.into(),
                nowait: false,
                arguments: FieldTable::default()
            }
        ))),
        (name(), name()).prop_map(|(q, x)| AMQPClass::Queue(queue::AMQPMethod::Unbind(
            queue::Unbind {
                queue: q.into(),
                exchange: x.into(),
                routing_key: "".into(),
                arguments: FieldTable::default()
            }
        ))),
        name().prop_map(|q| AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: q.into(),
            nowait: false
        }))),
        (name(), b(), b()).prop_map(|(q, if_unused, if_empty)| AMQPClass::Queue(
            queue::AMQPMethod::Delete(queue::Delete {
                queue: q.into(),
                if_unused,
                if_empty,
                nowait: false
            })
        )),
        (
            name(),
            prop_oneof![
                Just("direct"),
                Just("fanout"),
                Just("topic"),
                Just("headers"),
                Just("bogus")
            ],
            b(),
            b(),
            b()
        )
            .prop_map(|(x, kind, passive, durable, internal)| {
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: x.into(),
                    kind: kind.into(),
                    passive,
                    durable,
                    auto_delete: false,
                    internal,
                    nowait: false,
                    arguments: FieldTable::default(),
                }))
            }),
        (name(), b()).prop_map(
            |(x, if_unused)| AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
                exchange: x.into(),
                if_unused,
                nowait: false
            }))
        ),
        (name(), name()).prop_map(|(d, s)| AMQPClass::Exchange(exchange::AMQPMethod::Bind(
            exchange::Bind {
                destination: d.into(),
                source: s.into(),
                routing_key: "#".into(),
                nowait: false,
                arguments: FieldTable::default()
            }
        ))),
        (name(), name(), b(), b()).prop_map(|(x, k, mandatory, immediate)| AMQPClass::Basic(
            basic::AMQPMethod::Publish(basic::Publish {
                exchange: x.into(),
                routing_key: k.into(),
                mandatory,
                immediate
            })
        )),
        (
            prop_oneof![name(), Just("amq.rabbitmq.reply-to".to_owned())],
            b(),
            b()
        )
            .prop_map(|(q, no_ack, exclusive)| AMQPClass::Basic(
                basic::AMQPMethod::Consume(basic::Consume {
                    queue: q.into(),
                    consumer_tag: "".into(),
                    no_local: false,
                    no_ack,
                    exclusive,
                    nowait: false,
                    arguments: FieldTable::default()
                })
            )),
        (name(), b()).prop_map(|(q, no_ack)| AMQPClass::Basic(basic::AMQPMethod::Get(
            basic::Get {
                queue: q.into(),
                no_ack
            }
        ))),
        (0u64..5, b()).prop_map(|(t, multiple)| AMQPClass::Basic(basic::AMQPMethod::Ack(
            basic::Ack {
                delivery_tag: t,
                multiple
            }
        ))),
        (0u64..5, b(), b()).prop_map(|(t, multiple, requeue)| AMQPClass::Basic(
            basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: t,
                multiple,
                requeue
            })
        )),
        (0u64..5, b()).prop_map(|(t, requeue)| AMQPClass::Basic(basic::AMQPMethod::Reject(
            basic::Reject {
                delivery_tag: t,
                requeue
            }
        ))),
        b().prop_map(
            |requeue| AMQPClass::Basic(basic::AMQPMethod::Recover(basic::Recover { requeue }))
        ),
        (0u16..3, b()).prop_map(|(n, global)| AMQPClass::Basic(basic::AMQPMethod::Qos(
            basic::Qos {
                prefetch_count: n,
                global
            }
        ))),
        Just(AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: "amq.ctag-x".into(),
            nowait: false
        }))),
        Just(AMQPClass::Channel(channel::AMQPMethod::Open(
            channel::Open {}
        ))),
        Just(AMQPClass::Channel(channel::AMQPMethod::Close(
            channel::Close {
                reply_code: 200,
                reply_text: "bye".into(),
                class_id: 0,
                method_id: 0
            }
        ))),
        Just(AMQPClass::Channel(channel::AMQPMethod::CloseOk(
            channel::CloseOk {}
        ))),
        b().prop_map(
            |active| AMQPClass::Channel(channel::AMQPMethod::Flow(channel::Flow { active }))
        ),
        Just(AMQPClass::Confirm(confirm::AMQPMethod::Select(
            confirm::Select { nowait: false }
        ))),
        Just(AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {}))),
        Just(AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {}))),
        Just(AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {}))),
        Just(AMQPClass::Connection(connection::AMQPMethod::Blocked(
            connection::Blocked { reason: "x".into() }
        ))),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u16..4, method()).prop_map(|(c, m)| Op::Method(c, m)),
        2 => (0u16..4, 0usize..300_000, prop_oneof![Just(60u16), Just(10u16)]).prop_map(|(channel, body, class_id)| Op::Content { channel, body, class_id }),
        1 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(Op::Garbage),
        1 => (
            0u16..3,
            prop_oneof![Just((50u16, 10u16)), Just((40, 10)), Just((60, 20)), Just((50, 20))],
            prop_oneof![1usize..40, 1usize..6000],
            any::<bool>(),
        )
            .prop_map(|(channel, class_method, depth, arrays)| Op::Deep { channel, class_method, depth, arrays }),
    ]
}

fn encode(frame: &AMQPFrame) -> Vec<u8> {
    match gen_frame(frame)(Vec::new().into()) {
        Ok(ctx) => ctx.into_inner().0,
        Err(_) => Vec::new(),
    }
}

fn content(channel: u16, class_id: u16, body: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let header_size: u32 = 2 + 2 + 8 + 2;
    out.push(2);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&header_size.to_be_bytes());
    out.extend_from_slice(&class_id.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(body as u64).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.push(0xCE);
    for chunk in vec![7u8; body].chunks(131_064) {
        out.push(3);
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
        out.push(0xCE);
    }
    out
}

/// A raw method frame: the fixed fields of `class_method` (names `q`, `x`), then a
/// table nested `depth` levels.
fn deep_method(channel: u16, (class, method): (u16, u16), depth: usize, arrays: bool) -> Vec<u8> {
    use common::raw::{method_frame, short};
    let mut args = vec![0, 0];
    match (class, method) {
        (40, 10) => {
            short(&mut args, "x");
            short(&mut args, "direct");
        }
        (60, 20) => {
            short(&mut args, "q");
            short(&mut args, "");
        }
        (50, 20) => {
            short(&mut args, "q");
            short(&mut args, "amq.direct");
            short(&mut args, "k");
        }
        _ => short(&mut args, "q"),
    }
    args.push(0);
    args.extend(common::deep_table(depth, arrays));
    method_frame(channel, class, method, &args)
}

async fn handshake(addr: std::net::SocketAddr) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let start_ok = AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
        client_properties: FieldTable::default(),
        mechanism: "PLAIN".into(),
        response: "\0guest\0guest".into(),
        locale: "en_US".into(),
    }));
    let tune_ok = AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
        channel_max: 8,
        frame_max: 131_072,
        heartbeat: 0,
    }));
    let open = AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
        virtual_host: "/".into(),
    }));
    for m in [start_ok, tune_ok, open] {
        s.write_all(&encode(&AMQPFrame::Method(0, m))).await?;
    }
    Ok(s)
}

async fn still_serves(url: &str) -> anyhow::Result<()> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    ch.basic_publish(
        "".into(),
        q.name().clone(),
        Default::default(),
        b"ping",
        Default::default(),
    )
    .await?;
    let got = ch
        .basic_get(
            q.name().clone(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await?;
    anyhow::ensure!(
        got.map(|m| m.delivery.data) == Some(b"ping".to_vec()),
        "round trip failed"
    );
    conn.close(200, "ok".into()).await?;
    Ok(())
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    rt.block_on(async move {
        let broker = broker::Broker::builder()
            .start()
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut s = handshake(broker.local_addr())
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut bytes = Vec::new();
        // Channel 1 open to begin with, so most methods reach channel logic.
        bytes.extend(encode(&AMQPFrame::Method(
            1,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )));
        for op in &ops {
            match op {
                Op::Method(c, m) => bytes.extend(encode(&AMQPFrame::Method(*c, m.clone()))),
                Op::Content {
                    channel,
                    body,
                    class_id,
                } => bytes.extend(content(*channel, *class_id, *body)),
                Op::Garbage(g) => bytes.extend_from_slice(g),
                Op::Deep {
                    channel,
                    class_method,
                    depth,
                    arrays,
                } => bytes.extend(deep_method(*channel, *class_method, *depth, *arrays)),
            }
        }
        // The broker may close on us half-way: a write error is an acceptable outcome.
        let _ = s.write_all(&bytes).await;
        // Drain until the broker closes or goes quiet; it must not stall forever.
        let mut buf = vec![0u8; 65536];
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => continue,
                    Err(_) => break, // quiet: the connection is alive and idle
                }
            }
        })
        .await;
        prop_assert!(drained.is_ok(), "broker kept streaming for 10 s");
        drop(s);
        let served =
            tokio::time::timeout(Duration::from_secs(10), still_serves(&broker.amqp_url())).await;
        prop_assert!(
            matches!(served, Ok(Ok(()))),
            "broker stopped serving: {served:?}"
        );
        broker.shutdown().await;
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a broker task panicked");
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn random_method_sequences_never_break_the_broker(ops in proptest::collection::vec(op(), 1..40)) {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let prev = Arc::new(std::panic::take_hook());
            std::panic::set_hook(Box::new(move |info| {
                PANICS.fetch_add(1, Ordering::SeqCst);
                prev(info);
            }));
        });
        run_case(ops)?;
    }
}

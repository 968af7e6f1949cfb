//! The wire contract (docs/wire.md) checked with raw lapin on one side: what a
//! client in another language sends and sees.

#![allow(clippy::unwrap_used)]

mod rpc_common;

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};
use rpc_common::{Env, Handler, ProbeClient};
use rpc_core::wire;

/// A raw client: one channel consuming direct reply-to.
async fn raw_client(env: &Env) -> (Channel, Consumer) {
    let ch = env.conn.create_channel().await.unwrap();
    let replies = ch
        .basic_consume(
            wire::DIRECT_REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    (ch, replies)
}

async fn publish(ch: &Channel, queue: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await
    .unwrap();
}

async fn next_reply(replies: &mut Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .expect("a reply within 5 s")
        .unwrap()
        .unwrap()
}

fn status(d: &lapin::message::Delivery) -> Option<&str> {
    wire::header_str(d.properties.headers().as_ref(), wire::STATUS_HEADER)
}

fn props(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_correlation_id(id.into())
        .with_reply_to(wire::DIRECT_REPLY_TO.into())
}

/// The seed's single-method service.
mod seed {
    #[rpc_core::service]
    pub trait Fib {
        async fn fib(&self, n: u64) -> u64;
    }
    pub struct F;
    impl Fib for F {
        async fn fib(&self, n: u64) -> u64 {
            (0..n).fold((0u64, 1u64), |(a, b), _| (b, a + b)).0
        }
    }
}

#[tokio::test]
async fn seed_protocol_text_body_no_type_no_content_type() {
    let env = Env::new().await;
    let server = seed::FibServer::new(seed::F)
        .into_server()
        .queue_name(env.queue.clone())
        .start(&env.conn)
        .await
        .unwrap();
    let (ch, mut replies) = raw_client(&env).await;
    publish(&ch, &env.queue, b"30", props("seed-1")).await;
    let reply = next_reply(&mut replies).await;
    assert_eq!(reply.data, b"832040");
    assert_eq!(
        reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("seed-1")
    );
    assert_eq!(status(&reply), Some("ok"));
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn json_request_gets_a_json_reply_with_status() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let (ch, mut replies) = raw_client(&env).await;
    let json = |id: &str, method: &str| {
        props(id)
            .with_type(method.into())
            .with_content_type("application/json".into())
    };
    publish(&ch, &env.queue, br#"{"a":40,"b":2}"#, json("j1", "add")).await;
    let r = next_reply(&mut replies).await;
    assert_eq!(
        (status(&r), r.data.as_slice()),
        (Some("ok"), b"42".as_slice())
    );
    assert_eq!(
        r.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    publish(&ch, &env.queue, br#"{"a":1,"b":0}"#, json("j2", "div")).await;
    let r = next_reply(&mut replies).await;
    assert_eq!(
        (status(&r), r.data.as_slice()),
        (Some("error"), br#""DivByZero""#.as_slice())
    );
    publish(&ch, &env.queue, b"{}", json("j3", "nope")).await;
    let r = next_reply(&mut replies).await;
    assert_eq!(
        (status(&r), r.data.as_slice()),
        (Some("unknown_method"), br#""nope""#.as_slice())
    );
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn poison_messages_get_one_error_reply_and_are_never_redelivered() {
    let env = Env::new().await;
    let handler = Handler::default();
    let server = env.serve(handler.clone()).await;
    let (ch, mut replies) = raw_client(&env).await;
    let garbage = props("p1")
        .with_type("add".into())
        .with_content_type("application/msgpack".into());
    publish(&ch, &env.queue, &[0xc1, 0xff, 0x00], garbage).await;
    let r = next_reply(&mut replies).await;
    assert_eq!(status(&r), Some("bad_request"));
    let unknown_ct = props("p2")
        .with_type("add".into())
        .with_content_type("application/xml".into());
    publish(&ch, &env.queue, b"<a/>", unknown_ct).await;
    let r = next_reply(&mut replies).await;
    assert_eq!(status(&r), Some("bad_request"));
    assert_eq!(
        r.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    // No reply_to at all: handled, acked, nothing sent.
    let no_reply_to = BasicProperties::default()
        .with_type("add".into())
        .with_content_type("application/json".into());
    publish(&ch, &env.queue, br#"{"a":1,"b":1}"#, no_reply_to).await;
    // Nothing else arrives: no redelivery loop, no second reply.
    let extra = tokio::time::timeout(Duration::from_millis(500), replies.next()).await;
    assert!(extra.is_err(), "unexpected extra reply: {extra:?}");
    assert_eq!(handler.calls(), 1, "only the well-formed request ran");
    // Everything was acked: the queue is empty and the server still answers.
    let q = ch
        .queue_declare(
            env.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    let client = env.client().await;
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn expired_requests_are_answered_without_running_the_handler() {
    let env = Env::new().await;
    let handler = Handler::default();
    let server = env.serve(handler.clone()).await;
    let (ch, mut replies) = raw_client(&env).await;
    let mut headers = FieldTable::default();
    headers.insert(
        wire::DEADLINE_HEADER.into(),
        AMQPValue::LongLongInt(wire::unix_millis(
            SystemTime::now() - Duration::from_secs(5),
        )),
    );
    let late = props("late")
        .with_type("add".into())
        .with_content_type("application/json".into())
        .with_headers(headers);
    publish(&ch, &env.queue, br#"{"a":1,"b":1}"#, late).await;
    let r = next_reply(&mut replies).await;
    assert_eq!(status(&r), Some("deadline_exceeded"));
    assert_eq!(handler.calls(), 0);
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn requests_carry_the_documented_properties() {
    let env = Env::new().await;
    // A raw "server": declare the queue, look at one request, reply twice (plus a
    // stray reply), as a misbehaving server in another language might.
    let ch = env.conn.create_channel().await.unwrap();
    ch.queue_declare(
        env.queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut requests = ch
        .basic_consume(
            env.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let client = env.client().await.with_deadline(Duration::from_secs(5));
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.add(20, 22).await }
    });
    let req = tokio::time::timeout(Duration::from_secs(5), requests.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let p = &req.properties;
    assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some("add"));
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/msgpack")
    );
    let reply_to = p.reply_to().as_ref().unwrap().to_string();
    assert!(reply_to.starts_with(wire::DIRECT_REPLY_TO), "{reply_to}");
    let id = p.correlation_id().as_ref().unwrap().to_string();
    let expiration: u64 = p.expiration().as_ref().unwrap().as_str().parse().unwrap();
    assert!(expiration > 3_000 && expiration <= 5_000, "{expiration}");
    let headers = p.headers().as_ref();
    let deadline = wire::header_i64(headers, wire::DEADLINE_HEADER).unwrap();
    let left = deadline - wire::unix_millis(SystemTime::now());
    assert!(left > 3_000 && left <= 5_000, "{left}");
    let tp = wire::header_str(headers, wire::TRACEPARENT_HEADER).unwrap();
    assert!(wire::TraceParent::parse(tp).is_some(), "{tp}");
    let args: std::collections::BTreeMap<String, i64> =
        rpc_core::Codec::MsgPack.decode(&req.data).unwrap();
    assert_eq!(args.get("a"), Some(&20));
    // Reply: a stray one, the real one, and a duplicate.
    let reply = |cid: &str, body: &[u8]| {
        let ch = ch.clone();
        let (to, cid, body) = (reply_to.clone(), cid.to_owned(), body.to_vec());
        async move {
            ch.basic_publish(
                "".into(),
                to.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_correlation_id(cid.as_str().into())
                    .with_content_type("application/json".into()),
            )
            .await
            .unwrap();
        }
    };
    reply("someone-else", b"1").await;
    reply(&id, b"42").await;
    reply(&id, b"43").await;
    req.acker.ack(BasicAckOptions::default()).await.unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 42);
    assert_eq!(client.transport().pending_calls(), 0);
    // The duplicate is dropped and it still works: the next reply comes after the
    // duplicate (one publishing channel, one reply consumer), so by the time the next
    // call is answered the duplicate has been handled.
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.add(1, 1).await }
    });
    let req = tokio::time::timeout(Duration::from_secs(5), requests.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let id = req
        .properties
        .correlation_id()
        .as_ref()
        .unwrap()
        .to_string();
    reply(&id, b"2").await;
    req.acker.ack(BasicAckOptions::default()).await.unwrap();
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(client.transport().pending_calls(), 0);
    env.finish().await;
}

#[tokio::test]
async fn a_rust_text_client_calls_a_seed_style_server() {
    let env = Env::new().await;
    // A seed-style server: reads the body as a number, replies with text, sets
    // nothing but the correlation id (like the tutorial's rpc_server.py; durable, as
    // RabbitMQ 4.3 refuses a transient non-exclusive queue).
    let ch = env.conn.create_channel().await.unwrap();
    ch.queue_declare(
        env.queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut requests = ch
        .basic_consume(
            env.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        let req = requests.next().await.unwrap().unwrap();
        let n: u64 = std::str::from_utf8(&req.data).unwrap().parse().unwrap();
        let fib = (0..n).fold((0u64, 1u64), |(a, b), _| (b, a + b)).0;
        let p = &req.properties;
        ch.basic_publish(
            "".into(),
            p.reply_to().as_ref().unwrap().as_str().into(),
            BasicPublishOptions::default(),
            fib.to_string().as_bytes(),
            BasicProperties::default().with_correlation_id(p.correlation_id().clone().unwrap()),
        )
        .await
        .unwrap();
        req.acker.ack(BasicAckOptions::default()).await.unwrap();
    });
    let client = seed::FibClient::connect(&env.conn)
        .await
        .unwrap()
        .with_queue(&env.queue)
        .with_codec(rpc_core::Codec::Text);
    assert_eq!(client.fib(30).await.unwrap(), 832040);
    server.await.unwrap();
    let _ = ProbeClient::QUEUE;
    env.finish().await;
}

#[tokio::test]
async fn a_request_nobody_consumes_expires_with_its_deadline() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    server.shutdown().await.unwrap();
    let client = env.client().await.with_deadline(Duration::from_millis(300));
    assert!(matches!(
        client.add(1, 2).await,
        Err(rpc_core::RpcError::NoServer { .. })
    ));
    let ch = env.conn.create_channel().await.unwrap();
    let count = || async {
        ch.queue_declare(
            env.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
    };
    assert_eq!(count().await, 1, "the request waits in the queue");
    rpc_common::poll::until(
        Duration::from_millis(800),
        "the broker to drop the request at its expiration",
        || async { (count().await == 0).then_some(()) },
    )
    .await
    .unwrap();
    env.finish().await;
}

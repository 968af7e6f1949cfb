//! Every `RpcError` variant, provoked end to end (built-in broker, or `AMQP_URL`).

#![allow(clippy::unwrap_used)]

mod rpc_common;

use std::time::{Duration, Instant, SystemTime};

use rpc_common::{CalcError, Env, Handler, Small, WAIT, poll};
use rpc_core::{Call, RpcError};
use tower::ServiceBuilder;

/// A service the test server does not implement, to provoke unknown methods, bad
/// requests and undecodable replies on the same queue.
mod other {
    #[rpc_core::service]
    pub trait Other {
        /// Not a method of `Probe`.
        async fn missing(&self) -> u8;
        /// `Probe::add` takes integers.
        async fn add(&self, a: String, b: String) -> i64;
    }

    #[rpc_core::service]
    pub trait WrongResult {
        /// `Probe::add` returns an integer, not a string.
        async fn add(&self, a: i64, b: i64) -> String;
    }
}

#[tokio::test]
async fn handler_error_arrives_typed() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let client = env.client().await;
    assert_eq!(client.div(7, 2).await.unwrap(), 3);
    match client.div(1, 0).await {
        Err(RpcError::Handler(CalcError::DivByZero)) => {}
        other => panic!("expected the handler's error, got {other:?}"),
    }
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn no_route_when_no_server_ever_declared_the_queue() {
    let env = Env::new().await;
    let client = env.client().await;
    let started = Instant::now();
    match client.add(1, 2).await {
        Err(RpcError::NoRoute { queue }) => assert_eq!(queue, env.queue),
        other => panic!("expected no route, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast");
    env.finish().await;
}

#[tokio::test]
async fn no_server_when_the_queue_has_no_consumer() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    server.shutdown().await.unwrap();
    let client = env.client().await;
    let started = Instant::now();
    match client.add(1, 2).await {
        Err(RpcError::NoServer { queue }) => assert_eq!(queue, env.queue),
        other => panic!("expected no server, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast");
    env.finish().await;
}

#[tokio::test]
async fn timeout_at_the_client_deadline() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let client = env.client().await;
    let started = Instant::now();
    match client
        .with_deadline(Duration::from_millis(150))
        .sleep(2_000)
        .await
    {
        Err(RpcError::Timeout) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(150) && took < Duration::from_millis(1_500));
    assert_eq!(client.transport().pending_calls(), 0);
    drop(server);
    env.finish().await;
}

#[tokio::test]
async fn timeout_from_a_tower_timeout_layer() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let transport = rpc_core::Transport::connect(&env.conn).await.unwrap();
    let stack = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .service(transport);
    let client = rpc_common::ProbeClient::new(stack).with_queue(&env.queue);
    match client.sleep(2_000).await {
        Err(RpcError::Timeout) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    drop(server);
    env.finish().await;
}

#[tokio::test]
async fn deadline_exceeded_when_the_server_sees_it_too_late() {
    let env = Env::new().await;
    let handler = Handler::default();
    let server = env.serve(handler.clone()).await;
    // Clock skew: the server's clock is a second ahead of the deadline we send.
    let transport = rpc_core::Transport::connect(&env.conn).await.unwrap();
    let skewed = ServiceBuilder::new()
        .map_request(|mut call: Call| {
            call.wire_deadline = SystemTime::now() - Duration::from_secs(1);
            call
        })
        .service(transport);
    let client = rpc_common::ProbeClient::new(skewed).with_queue(&env.queue);
    match client.add(1, 2).await {
        Err(RpcError::DeadlineExceeded) => {}
        other => panic!("expected deadline exceeded, got {other:?}"),
    }
    assert_eq!(handler.calls(), 0, "the handler never started");
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn panic_is_caught_and_the_worker_survives() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let client = env.client().await;
    match client.explode("kaboom".into()).await {
        Err(RpcError::Panicked { message }) => assert_eq!(message, "kaboom"),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn bad_reply_when_the_handler_value_does_not_encode() {
    let env = Env::new().await;
    let handler = Handler::default();
    let server = env.serve(handler.clone()).await;
    let client = env.client().await;
    // MessagePack has maps with any keys; JSON only string keys.
    assert_eq!(client.pairs().await.unwrap().get(&(1, 2)), Some(&3));
    match client.with_codec(rpc_core::Codec::Json).pairs().await {
        Err(RpcError::BadReply { message }) => assert!(message.contains("key"), "{message}"),
        other => panic!("expected a bad reply, got {other:?}"),
    }
    // The handler ran both times (not a panic, not a bad request).
    assert_eq!(handler.calls(), 2);
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn unknown_method() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let client = other::OtherClient::connect(&env.conn)
        .await
        .unwrap()
        .with_queue(&env.queue);
    match client.missing().await {
        Err(RpcError::UnknownMethod { method }) => assert_eq!(method, "missing"),
        other => panic!("expected unknown method, got {other:?}"),
    }
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn bad_request_for_undecodable_arguments() {
    let env = Env::new().await;
    let handler = Handler::default();
    let server = env.serve(handler.clone()).await;
    let client = other::OtherClient::connect(&env.conn)
        .await
        .unwrap()
        .with_queue(&env.queue);
    match client.add("one".into(), "two".into()).await {
        Err(RpcError::BadRequest { message }) => assert!(!message.is_empty()),
        other => panic!("expected bad request, got {other:?}"),
    }
    assert_eq!(handler.calls(), 0, "decoded before the handler runs");
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn bad_request_for_arguments_that_fail_validation() {
    let env = Env::new().await;
    let handler = Handler::default();
    let server = env.serve(handler.clone()).await;
    let client = env.client().await;
    assert_eq!(client.small(Small(7)).await.unwrap(), 7);
    // Small(99) serializes fine; the server's decoder refuses it.
    match client.small(Small(99)).await {
        Err(RpcError::BadRequest { message }) => assert!(message.contains("out of range")),
        other => panic!("expected bad request, got {other:?}"),
    }
    assert_eq!(handler.calls(), 1, "validation happened before the handler");
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn unavailable_when_a_server_layer_sheds_load() {
    let env = Env::new().await;
    let handler = Handler::default();
    let server = env
        .server(handler.clone())
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .layer(tower::load_shed::LoadShedLayer::new())
        .start(&env.conn)
        .await
        .unwrap();
    let client = env.client().await;
    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(500).await }
    });
    poll::until_true(WAIT, "the slow call to start", || handler.calls() == 1)
        .await
        .unwrap();
    match client.add(1, 1).await {
        Err(RpcError::Unavailable { message }) => assert!(!message.is_empty()),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(slow.await.unwrap().unwrap(), 500);
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn codec_error_when_the_reply_does_not_decode() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let client = other::WrongResultClient::connect(&env.conn)
        .await
        .unwrap()
        .with_queue(&env.queue);
    match client.add(1, 2).await {
        Err(RpcError::Codec(_)) => {}
        other => panic!("expected a codec error, got {other:?}"),
    }
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn unreachable_error_when_the_broker_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    // At once (nothing listens), not after lapin's reconnect backoff.
    let connecting = rpc_common::ProbeClient::connect_url(&url);
    match tokio::time::timeout(std::time::Duration::from_secs(5), connecting).await {
        Ok(Err(RpcError::Unreachable { .. })) => {}
        other => panic!(
            "expected Unreachable, got {:?}",
            other.map(|r| r.map(|_| ()))
        ),
    }
}

#[tokio::test]
async fn disconnected_when_the_connection_closes_mid_call() {
    let env = Env::new().await;
    let handler = Handler::default();
    let server = env.serve(handler.clone()).await;
    let conn = env.connection().await;
    let client = rpc_common::ProbeClient::connect(&conn)
        .await
        .unwrap()
        .with_queue(&env.queue);
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(1_000).await }
    });
    poll::until_true(WAIT, "the call to start", || handler.calls() == 1)
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    match call.await.unwrap() {
        Err(RpcError::Disconnected) => {}
        other => panic!("expected disconnected, got {other:?}"),
    }
    // The server's reply goes to a reply-to whose consumer is gone (it publishes it
    // once the handler is done); the broker drops it and the server lives on.
    poll::until_true(Duration::from_secs(5), "the handler to finish", || {
        handler.slept() == 1
    })
    .await
    .unwrap();
    let other = env.client().await;
    assert_eq!(other.add(1, 1).await.unwrap(), 2);
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn middleware_error_from_a_client_layer() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let transport = rpc_core::Transport::connect(&env.conn).await.unwrap();
    let stack = ServiceBuilder::new()
        .filter(|call: Call| {
            if call.method == "explode" {
                Err("explosions are not allowed from this client")
            } else {
                Ok(call)
            }
        })
        .service(transport);
    let client = rpc_common::ProbeClient::new(stack).with_queue(&env.queue);
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    match client.explode("x".into()).await {
        Err(RpcError::Middleware(e)) => assert!(e.to_string().contains("not allowed")),
        other => panic!("expected a middleware error, got {other:?}"),
    }
    server.shutdown().await.unwrap();
    env.finish().await;
}

//! End-to-end behaviour of typed RPC: codecs, multiplexing, reply modes, load
//! splitting, context, graceful shutdown, redelivery, tower stacks.

#![allow(clippy::unwrap_used)]

mod rpc_common;

use std::time::Duration;

use rpc_common::{Env, Handler, ProbeClient, WAIT, poll};
use rpc_core::{Codec, ReplyMode, RpcError, Transport};
use tower::ServiceBuilder;

#[tokio::test]
async fn calls_round_trip_in_every_codec() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let client = env.client().await;
    for codec in [Codec::MsgPack, Codec::Json, Codec::Text] {
        let c = client.with_codec(codec);
        assert_eq!(c.add(40, 2).await.unwrap(), 42, "{codec:?}");
        assert_eq!(c.sleep(1).await.unwrap(), 1, "{codec:?}");
        assert!(
            matches!(c.div(1, 0).await, Err(RpcError::Handler(_))),
            "{codec:?}"
        );
    }
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn many_concurrent_calls_share_one_channel() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let client = env.client().await;
    let calls = (0..200i64).map(|i| {
        let client = client.clone();
        async move { (i, client.add(i, i).await) }
    });
    for (i, result) in futures::future::join_all(calls).await {
        assert_eq!(result.unwrap(), 2 * i);
    }
    assert_eq!(client.transport().pending_calls(), 0);
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn callback_queue_mode_works_like_the_seed() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let transport = Transport::builder()
        .reply_mode(ReplyMode::CallbackQueue)
        .connect(&env.conn)
        .await
        .unwrap();
    // An exclusive queue of the client's naming (declared again after a reconnect).
    assert!(
        transport.reply_to().starts_with("rpc-reply-"),
        "{}",
        transport.reply_to()
    );
    let client = ProbeClient::new(transport).with_queue(&env.queue);
    let calls = (0..20i64).map(|i| client.add(i, 1));
    let results = futures::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as i64 + 1);
    }
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn two_servers_split_the_load() {
    let env = Env::new().await;
    let (a, b) = (Handler::default(), Handler::default());
    let conn_b = env.connection().await;
    let server_a = env
        .server(a.clone())
        .concurrency(1)
        .start(&env.conn)
        .await
        .unwrap();
    let server_b = env
        .server(b.clone())
        .concurrency(1)
        .start(&conn_b)
        .await
        .unwrap();
    let client = env.client().await;
    let calls = (0..20).map(|_| client.sleep(20));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap(), 20);
    }
    assert_eq!(a.calls() + b.calls(), 20);
    assert!(
        a.calls() >= 5 && b.calls() >= 5,
        "split {} / {}",
        a.calls(),
        b.calls()
    );
    server_a.shutdown().await.unwrap();
    server_b.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn the_handler_sees_its_context() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let client = env.client().await;
    let seen = client
        .with_deadline(Duration::from_secs(5))
        .seen()
        .await
        .unwrap();
    assert_eq!(seen.method.as_deref(), Some("seen"));
    assert_eq!(seen.correlation_id.as_ref().map(String::len), Some(32));
    assert!(!seen.redelivered);
    let left = seen.remaining_ms.unwrap();
    assert!(left > 3_000 && left <= 5_000, "{left}");
    assert_eq!(seen.trace_id.as_ref().map(String::len), Some(32));
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn custom_headers_reach_the_handler() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let transport = Transport::connect(&env.conn).await.unwrap();
    let stack = ServiceBuilder::new()
        .map_request(|mut call: rpc_core::Call| {
            rpc_core::wire::insert_str(&mut call.headers, "x-custom", "tenant-7");
            call
        })
        .service(transport);
    let client = ProbeClient::new(stack).with_queue(&env.queue);
    let seen = client.seen().await.unwrap();
    assert_eq!(seen.custom_header.as_deref(), Some("tenant-7"));
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_what_is_in_flight() {
    let env = Env::new().await;
    let handler = Handler::default();
    let server = env.serve(handler.clone()).await;
    let client = env.client().await;
    let handler_started = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(300).await }
    });
    poll::until_true(WAIT, "the call to start", || handler.calls() == 1)
        .await
        .unwrap();
    server.shutdown().await.unwrap();
    assert_eq!(handler_started.await.unwrap().unwrap(), 300);
    // Nobody consumes any more.
    let fresh = env.client().await;
    assert!(matches!(
        fresh.add(1, 1).await,
        Err(RpcError::NoServer { .. })
    ));
    env.finish().await;
}

#[tokio::test]
async fn dropping_a_call_removes_its_bookkeeping() {
    let env = Env::new().await;
    let handler = Handler::default();
    let server = env.serve(handler.clone()).await;
    let client = env.client().await;
    let gave_up = tokio::time::timeout(Duration::from_millis(100), client.sleep(400)).await;
    assert!(gave_up.is_err());
    assert_eq!(client.transport().pending_calls(), 0);
    // The late reply is published once the handler is done (after ~400 ms), ahead of
    // the next call's reply on the same reply queue: it is dropped quietly; calls go on.
    poll::until_true(
        Duration::from_secs(5),
        "the abandoned call's handler to finish",
        || handler.slept() == 1,
    )
    .await
    .unwrap();
    assert_eq!(client.add(1, 2).await.unwrap(), 3);
    assert_eq!(client.transport().pending_calls(), 0);
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn a_dying_workers_request_is_redelivered_to_another() {
    let env = Env::new().await;
    let first = Handler::default();
    let doomed_conn = env.connection().await;
    let doomed = env.server(first.clone()).start(&doomed_conn).await.unwrap();
    let client = env.client().await;
    let call = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .with_deadline(Duration::from_secs(10))
                .hang_unless_redelivered()
                .await
        }
    });
    poll::until_true(WAIT, "the first worker to start", || first.calls() == 1)
        .await
        .unwrap();
    let second = Handler::default();
    let survivor = env.serve(second.clone()).await;
    // The first worker dies without acking.
    doomed_conn.close(200, "dying".into()).await.unwrap();
    assert!(
        call.await.unwrap().unwrap(),
        "answered by the survivor, flagged redelivered"
    );
    assert_eq!(second.calls(), 1);
    let _ = doomed.wait().await;
    survivor.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn tower_stack_on_the_client() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    let transport = Transport::connect(&env.conn).await.unwrap();
    let stack = ServiceBuilder::new()
        .buffer(64)
        .rate_limit(1_000, Duration::from_secs(1))
        .concurrency_limit(4)
        .timeout(Duration::from_secs(5))
        .layer(rpc_core::layer::deadline::DeadlineLayer::new(
            Duration::from_secs(2),
        ))
        .service(transport);
    let client = ProbeClient::new(stack).with_queue(&env.queue);
    let calls = (0..16i64).map(|i| client.add(i, 0));
    for (i, r) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.unwrap(), i as i64);
    }
    // The deadline layer capped the wire deadline at 2 s even though the client's is 30 s.
    let seen = client.seen().await.unwrap();
    assert!(seen.remaining_ms.unwrap() <= 2_000);
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn server_concurrency_limit_runs_handlers_in_parallel() {
    let env = Env::new().await;
    let server = env
        .server(Handler::default())
        .concurrency(8)
        .start(&env.conn)
        .await
        .unwrap();
    let client = env.client().await;
    let started = std::time::Instant::now();
    let calls = (0..8).map(|_| client.sleep(200));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn shutdown_gives_up_on_a_stuck_handler_and_its_request_is_redelivered() {
    let env = Env::new().await;
    let stuck = Handler::default();
    let stuck_conn = env.connection().await;
    let server = env
        .server(stuck.clone())
        .shutdown_timeout(Duration::from_millis(200))
        .start(&stuck_conn)
        .await
        .unwrap();
    let client = env.client().await;
    let call = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .with_deadline(Duration::from_secs(10))
                .hang_unless_redelivered()
                .await
        }
    });
    poll::until_true(WAIT, "the handler to start", || stuck.calls() == 1)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    server.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the timeout"
    );
    // The request was never acked: once the channel is closed it goes to the next server.
    let next = env.serve(Handler::default()).await;
    assert!(call.await.unwrap().unwrap());
    next.shutdown().await.unwrap();
    env.finish().await;
}

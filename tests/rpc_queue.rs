//! The service queue as RabbitMQ 4.3 accepts it: durable (classic, or quorum on
//! request), and a queue someone else declared first is served as it is.

#![allow(clippy::unwrap_used)]

mod rpc_common;

use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use rpc_common::{Env, Handler};
use rpc_core::server::QueueType;

/// Declares `queue` on a fresh channel of a fresh connection, as a plain client
/// would; the broker's refusal, if any.
async fn declare(
    env: &Env,
    queue: &str,
    durable: bool,
    arguments: FieldTable,
) -> Result<(), lapin::Error> {
    let conn = env.connection().await;
    let ch = conn.create_channel().await.unwrap();
    let options = QueueDeclareOptions {
        durable,
        ..QueueDeclareOptions::default()
    };
    let result = ch
        .queue_declare(queue.into(), options, arguments)
        .await
        .map(drop);
    let _ = conn.close(200, "OK".into()).await;
    result
}

fn is_precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
        if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
}

fn queue_type(kind: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    args
}

#[tokio::test]
async fn the_service_queue_is_durable() {
    let env = Env::new().await;
    let server = env.serve(Handler::default()).await;
    // A durable redeclare is equivalent; a transient one is not.
    declare(&env, &env.queue, true, FieldTable::default())
        .await
        .expect("the service queue is durable");
    let transient = declare(&env, &env.queue, false, FieldTable::default()).await;
    assert!(
        transient.as_ref().is_err_and(is_precondition_failed),
        "{transient:?}"
    );
    assert_eq!(env.client().await.add(1, 2).await.unwrap(), 3);
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn a_queue_declared_non_durable_first_is_served_as_it_is() {
    let env = Env::new().await;
    // The seed's rpc_server.py: `queue_declare(queue='rpc_queue')`, non-durable.
    if let Err(e) = declare(&env, &env.queue, false, FieldTable::default()).await {
        // RabbitMQ 4.3 (or the built-in broker run as it) refuses the seed's queue, so
        // no server can meet it there: what is left to check is that refusal.
        assert!(
            e.to_string().contains("transient_nonexcl_queues"),
            "refused for another reason: {e}"
        );
        env.finish().await;
        return;
    }
    let server = env.serve(Handler::default()).await;
    let client = env.client().await;
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    // It is still the queue the plain client declared.
    declare(&env, &env.queue, false, FieldTable::default())
        .await
        .expect("the queue is still non-durable");
    server.shutdown().await.unwrap();
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs RabbitMQ (the built-in broker has no quorum queues): AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo test --test rpc_queue -- --ignored"]
async fn a_quorum_service_queue_on_rabbitmq() {
    let env = Env::new().await;
    assert!(
        !env.endpoint.is_embedded(),
        "set AMQP_URL to a RabbitMQ: the built-in broker has no quorum queues"
    );
    let server = env
        .server(Handler::default())
        .queue_type(QueueType::Quorum)
        .start(&env.conn)
        .await
        .unwrap();
    assert_eq!(env.client().await.add(1, 1).await.unwrap(), 2);
    declare(&env, &env.queue, true, queue_type("quorum"))
        .await
        .expect("the service queue is a quorum queue");
    let classic = declare(&env, &env.queue, true, queue_type("classic")).await;
    assert!(
        classic.as_ref().is_err_and(is_precondition_failed),
        "{classic:?}"
    );
    server.shutdown().await.unwrap();
    env.finish().await;
}

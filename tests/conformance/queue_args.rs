//! More `queue.declare` argument validation, as RabbitMQ words it: `x-queue-mode`
//! values, `x-queue-type` values (case-sensitive; `stream` declares, with the
//! properties and arguments a stream refuses), integer arguments given other types,
//! `x-queue-version`, unknown arguments, and arguments that belong to another queue
//! type.

use anyhow::{Result, ensure};
use lapin::{
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable},
};

use crate::death::with;
use crate::harness::{Ctx, amqp_error, cleanup, expect_code, scenarios};

scenarios! {
    queue_mode_values,
    queue_type_values,
    stream_declare_properties,
    stream_refuses_queue_arguments_406,
    argument_types_and_values_406,
}

fn one(k: &str, v: AMQPValue) -> FieldTable {
    with(FieldTable::default(), k, v)
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// `invalid arg '<key>' for queue '<q>' in vhost '/': <why>`.
fn invalid(key: &str, q: &str, why: &str) -> String {
    format!("PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {why}")
}

/// `invalid arg '<key>' for queue '<q>' in vhost '/' of queue type <ty>`.
fn of_type(key: &str, q: &str, ty: &str) -> String {
    format!(
        "PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/' of queue type {ty}"
    )
}

/// Declares on a fresh connection and expects a 406 with `want`.
async fn refused(
    ctx: &Ctx,
    q: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
    want: &str,
) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let res = ch.queue_declare(q.into(), options, args).await;
    expect_code(res, 406, Some(want))?;
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

/// Declares (and deletes) on a fresh connection: the arguments are accepted.
async fn accepted(
    ctx: &Ctx,
    q: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let res = ch.queue_declare(q.into(), options, args.clone()).await;
    ensure!(res.is_ok(), "{args:?} refused: {res:?}");
    ch.queue_delete(q.into(), Default::default()).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

/// A stream declare RabbitMQ accepts: the built-in broker, which has no streams,
/// refuses it with 540 NOT_IMPLEMENTED (closing the connection) instead.
async fn stream_accepted(ctx: &Ctx, q: &str) -> Result<()> {
    if !ctx.is_builtin() {
        return accepted(ctx, q, durable(), one("x-queue-type", s("stream"))).await;
    }
    let (_conn, ch) = ctx.open().await?;
    let res = ch
        .queue_declare(q.into(), durable(), one("x-queue-type", s("stream")))
        .await;
    let want = format!(
        "NOT_IMPLEMENTED - queue type 'stream' is not implemented by this broker (queue '{q}' in vhost '/')"
    );
    expect_code(res, 540, Some(&want))
}

async fn queue_mode_values(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qargs.mode");
    for mode in ["default", "lazy"] {
        accepted(&ctx, &q, exclusive(), one("x-queue-mode", s(mode))).await?;
    }
    for mode in ["bogus", "LAZY", ""] {
        let want = invalid(
            "x-queue-mode",
            &q,
            &format!("\"unsupported queue mode '{mode}'\""),
        );
        refused(&ctx, &q, exclusive(), one("x-queue-mode", s(mode)), &want).await?;
    }
    let want = invalid("x-queue-mode", &q, "{unacceptable_type,signedint}");
    refused(
        &ctx,
        &q,
        exclusive(),
        one("x-queue-mode", AMQPValue::LongInt(1)),
        &want,
    )
    .await
}

async fn queue_type_values(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qargs.type");
    for ty in ["QUORUM", "Classic", "", "streams"] {
        let want = invalid(
            "x-queue-type",
            &q,
            &format!("\"unsupported queue type '{ty}'\""),
        );
        refused(&ctx, &q, durable(), one("x-queue-type", s(ty)), &want).await?;
    }
    let want = invalid("x-queue-type", &q, "{unacceptable_type,bool}");
    refused(
        &ctx,
        &q,
        exclusive(),
        one("x-queue-type", AMQPValue::Boolean(true)),
        &want,
    )
    .await?;
    let res = async {
        accepted(&ctx, &q, exclusive(), one("x-queue-type", s("classic"))).await?;
        stream_accepted(&ctx, &q).await
    }
    .await;
    cleanup(&ctx, &[&q], &[]).await;
    res
}

async fn stream_declare_properties(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qargs.stream");
    let stream = || one("x-queue-type", s("stream"));
    let property = |p: &str| {
        format!("PRECONDITION_FAILED - invalid property '{p}' for queue '{q}' in vhost '/'")
    };
    let res = async {
        let excl = QueueDeclareOptions {
            durable: true,
            exclusive: true,
            ..Default::default()
        };
        refused(&ctx, &q, excl, stream(), &property("exclusive-owner")).await?;
        let auto = QueueDeclareOptions {
            durable: true,
            auto_delete: true,
            ..Default::default()
        };
        refused(&ctx, &q, auto, stream(), &property("auto-delete")).await?;
        // Non-durable: 406, unless RabbitMQ 4 denies transient non-exclusive queues
        // first (541, closing the connection).
        let (conn, ch) = ctx.open().await?;
        let res = ch
            .queue_declare(q.as_str().into(), Default::default(), stream())
            .await;
        match res.as_ref().err().and_then(amqp_error) {
            Some((541, text)) if ctx.rabbitmq_version().is_some_and(|(m, _)| m >= 4) => ensure!(
                text.starts_with(
                    "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated"
                ),
                "{text}"
            ),
            _ => expect_code(res, 406, Some(&property("non-durable")))?,
        }
        let _ = conn.close(200, "bye".into()).await;
        // Durable, and redeclared the same.
        if ctx.is_builtin() {
            return stream_accepted(&ctx, &q).await;
        }
        let (conn, ch) = ctx.open().await?;
        ch.queue_declare(q.as_str().into(), durable(), stream())
            .await?;
        ch.queue_declare(q.as_str().into(), durable(), stream())
            .await?;
        conn.close(200, "bye".into()).await?;
        anyhow::Ok(())
    }
    .await;
    cleanup(&ctx, &[&q], &[]).await;
    res
}

async fn stream_refuses_queue_arguments_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qargs.stream.args");
    let cases = [
        ("x-max-priority", AMQPValue::LongInt(3)),
        ("x-dead-letter-exchange", s("x")),
        ("x-max-length", AMQPValue::LongInt(5)),
        ("x-overflow", s("reject-publish")),
        ("x-single-active-consumer", AMQPValue::Boolean(true)),
        ("x-message-ttl", AMQPValue::LongInt(1000)),
    ];
    for (key, v) in cases {
        let args = with(one("x-queue-type", s("stream")), key, v);
        let want = of_type(key, &q, "rabbit_stream_queue");
        refused(&ctx, &q, durable(), args, &want).await?;
    }
    Ok(())
}

async fn argument_types_and_values_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qargs.types");
    let expected = |got: &str| format!("\"expected integer, got {got}\"");
    let cases = [
        ("x-message-ttl", s("100"), expected("longstr")),
        ("x-expires", AMQPValue::Boolean(true), expected("bool")),
        ("x-max-length", AMQPValue::Boolean(true), expected("bool")),
        ("x-queue-version", s("2"), expected("longstr")),
        (
            "x-queue-version",
            AMQPValue::LongInt(3),
            "\"unsupported queue version '3'\"".to_owned(),
        ),
    ];
    for (key, v, why) in cases {
        refused(&ctx, &q, exclusive(), one(key, v), &invalid(key, &q, &why)).await?;
    }
    for v in [1, 2] {
        accepted(
            &ctx,
            &q,
            exclusive(),
            one("x-queue-version", AMQPValue::LongInt(v)),
        )
        .await?;
    }
    // Unknown arguments are kept, not checked.
    accepted(&ctx, &q, exclusive(), one("x-bogus-arg", s("whatever"))).await?;
    // Arguments of other queue types.
    for (key, v) in [
        ("x-dead-letter-strategy", s("at-least-once")),
        ("x-max-age", s("1D")),
    ] {
        let want = of_type(key, &q, "rabbit_classic_queue");
        refused(&ctx, &q, exclusive(), one(key, v), &want).await?;
    }
    let args = with(
        one("x-queue-type", s("quorum")),
        "x-queue-version",
        AMQPValue::LongInt(2),
    );
    let want = of_type("x-queue-version", &q, "rabbit_quorum_queue");
    refused(&ctx, &q, durable(), args, &want).await
}

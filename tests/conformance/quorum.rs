//! Quorum queues (`x-queue-type: quorum`): the properties and arguments they refuse
//! (and `x-delivery-limit` on a classic queue), the `x-delivery-count` header,
//! `x-delivery-limit` dead-lettering as `delivery_limit`, the default delivery limit,
//! where a requeued message goes, `x-max-length` and rejection dead-lettering,
//! redeclaring across queue types, and global QoS. Where RabbitMQ 3.10 and 4.x
//! differ the scenario says so; the built-in broker follows 4.x.

use std::future::Future;

use anyhow::{Result, bail, ensure};
use lapin::{
    BasicProperties, Channel,
    options::{BasicNackOptions, BasicQosOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::death::{body, deaths, dlx, excl_queue, reject, wait_get, with};
use crate::exchange::{drain, publish_confirmed};
use crate::harness::{
    Ctx, amqp_error, cleanup, ensure_eq, expect_code, next_delivery, no_delivery, scenarios,
};

scenarios! {
    declare_properties_refused_406,
    arguments_of_the_other_type_refused_406,
    delivery_count_header_counts_returns,
    delivery_limit_dead_letters_as_delivery_limit,
    default_delivery_limit = 60,
    requeued_message_position,
    max_length_and_rejection_dead_letter,
    redeclare_across_queue_types_406,
    global_qos_on_quorum_queue,
}

fn qtype(t: &str) -> FieldTable {
    with(
        FieldTable::default(),
        "x-queue-type",
        AMQPValue::LongString(t.into()),
    )
}

fn quorum() -> FieldTable {
    qtype("quorum")
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

async fn declare(
    ch: &Channel,
    q: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
) -> Result<()> {
    ch.queue_declare(q.into(), options, args).await?;
    Ok(())
}

/// Runs `body`, then deletes `queues` (durable queues outlive the connection).
async fn cleaned<F: Future<Output = Result<()>>>(
    ctx: &Ctx,
    queues: &[&str],
    body: F,
) -> Result<()> {
    let res = body.await;
    cleanup(ctx, queues, &[]).await;
    res
}

async fn confirming(ctx: &Ctx) -> Result<(lapin::Connection, Channel)> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    Ok((conn, ch))
}

fn delivery_count(props: &BasicProperties) -> Result<Option<i64>> {
    let h = props.headers().clone().unwrap_or_default();
    match h.inner().get("x-delivery-count") {
        None => Ok(None),
        Some(AMQPValue::LongLongInt(n)) => Ok(Some(*n)),
        Some(other) => bail!("x-delivery-count is not a long long: {other:?}"),
    }
}

/// What a first delivery carries: no header on RabbitMQ 4 (and the built-in broker),
/// `x-delivery-count = 0` on RabbitMQ 3.10.
fn first_count(ctx: &Ctx) -> Option<i64> {
    (!ctx.like_rabbitmq_4()).then_some(0)
}

async fn declare_properties_refused_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qq.props");
    let invalid = |p: &str| {
        format!("PRECONDITION_FAILED - invalid property '{p}' for queue '{q}' in vhost '/'")
    };
    let cases = [
        (QueueDeclareOptions::default(), "non-durable"),
        (
            QueueDeclareOptions {
                durable: true,
                exclusive: true,
                ..Default::default()
            },
            "exclusive-owner",
        ),
        (
            QueueDeclareOptions {
                durable: true,
                auto_delete: true,
                ..Default::default()
            },
            "auto-delete",
        ),
    ];
    for (options, prop) in cases {
        let (_conn, ch) = ctx.open().await?;
        let res = ch.queue_declare(q.as_str().into(), options, quorum()).await;
        // RabbitMQ 4 with `transient_nonexcl_queues` denied (as 4.3 has it by default)
        // refuses a non-durable, non-exclusive declare before it looks at the type.
        if prop == "non-durable"
            && ctx.rabbitmq_version().is_some_and(|(major, _)| major >= 4)
            && let Err(e) = &res
            && let Some((541, text)) = amqp_error(e)
        {
            ensure!(
                text.starts_with(
                    "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated"
                ),
                "{text}"
            );
            continue;
        }
        expect_code(res, 406, Some(&invalid(prop)))?;
    }
    Ok(())
}

async fn arguments_of_the_other_type_refused_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qq.args");
    let of_type = |arg: &str, ty: &str| {
        format!(
            "PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in vhost '/' of queue type {ty}"
        )
    };
    let cases = [
        (
            with(quorum(), "x-max-priority", AMQPValue::LongInt(5)),
            durable(),
            of_type("x-max-priority", "rabbit_quorum_queue"),
        ),
        (
            with(
                quorum(),
                "x-queue-mode",
                AMQPValue::LongString("lazy".into()),
            ),
            durable(),
            of_type("x-queue-mode", "rabbit_quorum_queue"),
        ),
        (
            with(
                FieldTable::default(),
                "x-delivery-limit",
                AMQPValue::LongInt(2),
            ),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            of_type("x-delivery-limit", "rabbit_classic_queue"),
        ),
    ];
    for (args, options, want) in cases {
        let (_conn, ch) = ctx.open().await?;
        let res = ch.queue_declare(q.as_str().into(), options, args).await;
        expect_code(res, 406, Some(&want))?;
    }
    Ok(())
}

async fn delivery_count_header_counts_returns(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qq.count");
    cleaned(&ctx, &[&q], async {
        let (conn, ch) = confirming(&ctx).await?;
        declare(&ch, &q, durable(), quorum()).await?;
        publish_confirmed(&ch, "", &q, b"m", BasicProperties::default()).await?;
        let m = wait_get(&ch, &q).await?.delivery;
        ensure!(!m.redelivered);
        ensure_eq!(
            delivery_count(&m.properties)?,
            first_count(&ctx),
            "first delivery"
        );
        // Returned by reject, by nack, then by closing the channel that holds it.
        reject(&ch, m.delivery_tag, true).await?;
        let m = wait_get(&ch, &q).await?.delivery;
        ensure!(m.redelivered);
        ensure_eq!(delivery_count(&m.properties)?, Some(1), "after a reject");
        let requeue = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        ch.basic_nack(m.delivery_tag, requeue).await?;
        let other = conn.create_channel().await?;
        let m = wait_get(&other, &q).await?.delivery;
        ensure_eq!(delivery_count(&m.properties)?, Some(2), "after a nack");
        other.close(200, "bye".into()).await?;
        let m = wait_get(&ch, &q).await?.delivery;
        ensure!(m.redelivered);
        ensure_eq!(
            delivery_count(&m.properties)?,
            Some(3),
            "after a channel close"
        );
        ch.basic_ack(m.delivery_tag, Default::default()).await?;
        conn.close(200, "bye".into()).await?;
        anyhow::Ok(())
    })
    .await
}

async fn delivery_limit_dead_letters_as_delivery_limit(ctx: Ctx) -> Result<()> {
    let (q, dlq) = (ctx.name("qq.limit"), ctx.name("qq.dlq"));
    cleaned(&ctx, &[&q], async {
        let (conn, ch) = confirming(&ctx).await?;
        excl_queue(&ch, &dlq, FieldTable::default()).await?;
        let args = with(
            with(quorum(), "x-delivery-limit", AMQPValue::LongInt(2)),
            "x-dead-letter-exchange",
            AMQPValue::LongString("".into()),
        );
        let args = with(
            args,
            "x-dead-letter-routing-key",
            AMQPValue::LongString(dlq.as_str().into()),
        );
        declare(&ch, &q, durable(), args).await?;
        publish_confirmed(&ch, "", &q, b"m", BasicProperties::default()).await?;
        let mut counts = Vec::new();
        for _ in 0..3 {
            let m = wait_get(&ch, &q).await?.delivery;
            counts.push(delivery_count(&m.properties)?);
            reject(&ch, m.delivery_tag, true).await?;
        }
        ensure_eq!(counts, vec![first_count(&ctx), Some(1), Some(2)]);
        // The third return is one too many: dead-lettered, not requeued.
        let d = wait_get(&ch, &dlq).await?.delivery;
        ensure_eq!(body(&d), "m");
        let ds = deaths(&d.properties)?;
        ensure_eq!(ds.len(), 1, "{ds:?}");
        ds[0].check(&q, "delivery_limit", 1, "", &[&q])?;
        ensure_eq!(drain(&ch, &q).await?.len(), 0);
        conn.close(200, "bye".into()).await?;
        anyhow::Ok(())
    })
    .await
}

async fn default_delivery_limit(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qq.default");
    cleaned(&ctx, &[&q], async {
        let (conn, ch) = confirming(&ctx).await?;
        declare(&ch, &q, durable(), quorum()).await?;
        publish_confirmed(&ch, "", &q, b"m", BasicProperties::default()).await?;
        // Delivered 21 times: the first, then 20 returns.
        for n in 0..=20 {
            let m = wait_get(&ch, &q).await?.delivery;
            let want = if n == 0 { first_count(&ctx) } else { Some(n) };
            ensure_eq!(delivery_count(&m.properties)?, want);
            reject(&ch, m.delivery_tag, true).await?;
        }
        // The marker is enqueued after the last return was applied.
        publish_confirmed(&ch, "", &q, b"marker", BasicProperties::default()).await?;
        let mut left = drain(&ch, &q).await?;
        left.sort();
        // RabbitMQ 4 limits deliveries to 20 returns by default (and drops the message
        // without a dead-letter exchange); RabbitMQ 3.10 has no default limit.
        let want: &[&str] = if ctx.like_rabbitmq_4() {
            &["marker"]
        } else {
            &["m", "marker"]
        };
        ensure_eq!(left, want.to_vec());
        conn.close(200, "bye".into()).await?;
        anyhow::Ok(())
    })
    .await
}

async fn requeued_message_position(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qq.requeue");
    cleaned(&ctx, &[&q], async {
        let (conn, ch) = confirming(&ctx).await?;
        declare(&ch, &q, durable(), quorum()).await?;
        for b in ["a", "b", "c"] {
            publish_confirmed(&ch, "", &q, b.as_bytes(), BasicProperties::default()).await?;
        }
        let m = wait_get(&ch, &q).await?.delivery;
        ensure_eq!(body(&m), "a");
        reject(&ch, m.delivery_tag, true).await?;
        // RabbitMQ 4 returns it to the head; RabbitMQ 3.10 to the back.
        let want = if ctx.like_rabbitmq_4() {
            ["a", "b", "c"]
        } else {
            ["b", "c", "a"]
        };
        ensure_eq!(drain(&ch, &q).await?, want.to_vec());
        conn.close(200, "bye".into()).await?;
        anyhow::Ok(())
    })
    .await
}

async fn max_length_and_rejection_dead_letter(ctx: Ctx) -> Result<()> {
    let (q, dlq) = (ctx.name("qq.maxlen"), ctx.name("qq.dlq"));
    cleaned(&ctx, &[&q], async {
        let (conn, ch) = confirming(&ctx).await?;
        excl_queue(&ch, &dlq, FieldTable::default()).await?;
        let mut args = with(quorum(), "x-max-length", AMQPValue::LongInt(2));
        for (k, v) in dlx("", Some(&dlq)).inner() {
            args.insert(k.clone(), v.clone());
        }
        declare(&ch, &q, durable(), args).await?;
        for b in ["a", "b", "c"] {
            publish_confirmed(&ch, "", &q, b.as_bytes(), BasicProperties::default()).await?;
        }
        let d = wait_get(&ch, &dlq).await?.delivery;
        ensure_eq!(body(&d), "a");
        deaths(&d.properties)?[0].check(&q, "maxlen", 1, "", &[&q])?;
        let m = wait_get(&ch, &q).await?.delivery;
        ensure_eq!(body(&m), "b");
        reject(&ch, m.delivery_tag, false).await?;
        let d = wait_get(&ch, &dlq).await?.delivery;
        ensure_eq!(body(&d), "b");
        ensure!(!d.redelivered);
        deaths(&d.properties)?[0].check(&q, "rejected", 1, "", &[&q])?;
        ensure_eq!(drain(&ch, &q).await?, vec!["c"]);
        conn.close(200, "bye".into()).await?;
        anyhow::Ok(())
    })
    .await
}

async fn redeclare_across_queue_types_406(ctx: Ctx) -> Result<()> {
    let (classic, qq) = (ctx.name("qq.was.classic"), ctx.name("qq.was.quorum"));
    cleaned(&ctx, &[&classic, &qq], async {
        let conn = ctx.connect().await?;
        let ch = conn.create_channel().await?;
        declare(&ch, &classic, durable(), FieldTable::default()).await?;
        declare(&ch, &qq, durable(), quorum()).await?;
        declare(&ch, &qq, durable(), quorum()).await?;
        let four = ctx.like_rabbitmq_4();
        let quorum_over_classic = if four {
            "received 'quorum' but current is 'classic'"
        } else {
            "received the value 'quorum' of type 'longstr' but current is none"
        };
        let none_over_quorum = if four {
            "received 'classic' but current is 'quorum'"
        } else {
            "received none but current is the value 'quorum' of type 'longstr'"
        };
        let cases = [
            (&classic, quorum(), quorum_over_classic),
            (&qq, qtype("classic"), "received 'classic' but current is 'quorum'"),
            (&qq, FieldTable::default(), none_over_quorum),
        ];
        for (q, args, why) in cases {
            let ch = conn.create_channel().await?;
            let res = ch.queue_declare(q.as_str().into(), durable(), args).await;
            let want = format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q}' in vhost '/': {why}"
            );
            expect_code(res, 406, Some(&want))?;
        }
        conn.close(200, "bye".into()).await?;
        anyhow::Ok(())
    })
    .await
}

async fn global_qos_on_quorum_queue(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qq.qos");
    cleaned(&ctx, &[&q], async {
        let (conn, ch) = confirming(&ctx).await?;
        declare(&ch, &q, durable(), quorum()).await?;
        let cch = conn.create_channel().await?;
        let global = BasicQosOptions { global: true };
        cch.basic_qos(1, global).await?;
        let res = cch
            .basic_consume(
                q.as_str().into(),
                "c".into(),
                Default::default(),
                Default::default(),
            )
            .await;
        if !ctx.like_rabbitmq_4() {
            // RabbitMQ 3.10 closes the connection.
            let want =
                format!("NOT_IMPLEMENTED - queue '{q}' in vhost '/' does not support global qos");
            return expect_code(res, 540, Some(&want));
        }
        // RabbitMQ 4 accepts it (applied per consumer, global QoS being deprecated).
        let mut c = res?;
        publish_confirmed(&ch, "", &q, b"m", BasicProperties::default()).await?;
        ensure_eq!(body(&next_delivery(&mut c, 5).await?), "m");
        no_delivery(&mut c, 100).await?;
        conn.close(200, "bye".into()).await?;
        anyhow::Ok(())
    })
    .await
}

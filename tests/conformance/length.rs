//! Queue length limits: `x-max-length` with `x-overflow` `drop-head` (the default: the
//! oldest ready messages go) and `reject-publish` (the new one is refused, and a
//! confirm-mode publisher gets `basic.nack`); unacked messages do not count; the
//! argument's validation and its redeclare equivalence, as RabbitMQ words them; a
//! requeue into a full queue drops the head. Exclusive queues, so they run on RabbitMQ
//! 4.3's defaults too.

use anyhow::{Result, ensure};
use lapin::{
    BasicProperties, Channel,
    options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
};

use crate::exchange::drain;
use crate::harness::{Ctx, cleanup, expect_code, message_count_on, scenarios};

scenarios! {
    drop_head_keeps_the_newest,
    max_length_zero_keeps_nothing_ready,
    reject_publish_nacks_when_full,
    unacked_messages_do_not_count,
    requeue_into_a_full_queue_drops_the_head,
    overflow_invalid_406,
    overflow_redeclare_inequivalent_406,
}

fn limit(max: i32, overflow: Option<&str>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-max-length".into(), AMQPValue::LongInt(max));
    if let Some(o) = overflow {
        t.insert(
            "x-overflow".into(),
            AMQPValue::LongString(LongString::from(o.as_bytes().to_vec())),
        );
    }
    t
}

async fn declare(ch: &Channel, q: &str, args: FieldTable) -> Result<()> {
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(q.into(), exclusive, args).await?;
    Ok(())
}

/// Publishes `bodies` in confirm mode; whether each was acked.
async fn publish_all(ch: &Channel, q: &str, bodies: &[&str]) -> Result<Vec<bool>> {
    let mut acked = Vec::new();
    for b in bodies {
        let confirm = ch
            .basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                BasicProperties::default(),
            )
            .await?
            .await?;
        acked.push(confirm.is_ack());
    }
    Ok(acked)
}

async fn drop_head_keeps_the_newest(ctx: Ctx) -> Result<()> {
    let q = ctx.name("len.drop");
    let (_conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    for overflow in [None, Some("drop-head")] {
        declare(&ch, &q, limit(2, overflow)).await?;
        let acked = publish_all(&ch, &q, &["0", "1", "2", "3", "4"]).await?;
        ensure!(
            acked.iter().all(|a| *a),
            "drop-head acks every publish: {acked:?}"
        );
        ensure!(message_count_on(&ch, &q).await? == 2);
        let bodies = drain(&ch, &q).await?;
        ensure!(bodies == ["3", "4"], "{overflow:?}: kept {bodies:?}");
        ch.queue_delete(q.as_str().into(), Default::default())
            .await?;
    }
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

async fn max_length_zero_keeps_nothing_ready(ctx: Ctx) -> Result<()> {
    let q = ctx.name("len.zero");
    let (_conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    declare(&ch, &q, limit(0, None)).await?;
    let acked = publish_all(&ch, &q, &["z"]).await?;
    ensure!(acked == [true], "{acked:?}");
    ensure!(message_count_on(&ch, &q).await? == 0);
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

async fn reject_publish_nacks_when_full(ctx: Ctx) -> Result<()> {
    let q = ctx.name("len.reject");
    let (_conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    declare(&ch, &q, limit(1, Some("reject-publish"))).await?;
    let acked = publish_all(&ch, &q, &["a", "b", "c"]).await?;
    ensure!(acked == [true, false, false], "confirms {acked:?}");
    let bodies = drain(&ch, &q).await?;
    ensure!(bodies == ["a"], "the queue kept {bodies:?}");
    // Room again; publishes in flight together are confirmed one by one, in order.
    let mut pending = Vec::new();
    for b in ["d", "e", "f"] {
        let confirm = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        pending.push(confirm);
    }
    let mut acked = Vec::new();
    for confirm in pending {
        acked.push(confirm.await?.is_ack());
    }
    ensure!(acked == [true, false, false], "pipelined: {acked:?}");
    ensure!(drain(&ch, &q).await? == ["d"]);
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

async fn unacked_messages_do_not_count(ctx: Ctx) -> Result<()> {
    let q = ctx.name("len.unacked");
    let (_conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    declare(&ch, &q, limit(1, Some("reject-publish"))).await?;
    ensure!(publish_all(&ch, &q, &["a"]).await? == [true]);
    let got = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
        .await?;
    ensure!(got.is_some(), "basic.get took nothing");
    // "a" is out with this channel, unacked: the queue holds no ready message.
    ensure!(publish_all(&ch, &q, &["b"]).await? == [true]);
    ensure!(publish_all(&ch, &q, &["c"]).await? == [false]);
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

async fn overflow_invalid_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("len.invalid");
    for (value, why) in [
        (
            AMQPValue::LongString(LongString::from(b"foo".to_vec())),
            "invalid_overflow",
        ),
        (AMQPValue::LongInt(1), "{unacceptable_type,signedint}"),
    ] {
        let (_conn, ch) = ctx.open().await?;
        let mut args = FieldTable::default();
        args.insert("x-overflow".into(), value);
        let res = ch
            .queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
            .await;
        let text = format!(
            "PRECONDITION_FAILED - invalid arg 'x-overflow' for queue '{q}' in vhost '/': {why}"
        );
        expect_code(res, 406, Some(&text))?;
    }
    Ok(())
}

async fn overflow_redeclare_inequivalent_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("len.equiv");
    {
        let (_conn, ch) = ctx.open().await?;
        declare(&ch, &q, limit(1, None)).await?;
        let res = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                limit(1, Some("reject-publish")),
            )
            .await;
        let text = format!(
            "PRECONDITION_FAILED - inequivalent arg 'x-overflow' for queue '{q}' in vhost '/': received the value 'reject-publish' of type 'longstr' but current is none"
        );
        expect_code(res, 406, Some(&text))?;
    }
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

/// A requeued message counts again: the queue drops its head, which is the requeued
/// message itself (it went back first).
async fn requeue_into_a_full_queue_drops_the_head(ctx: Ctx) -> Result<()> {
    let q = ctx.name("len.requeue");
    let (_conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    declare(&ch, &q, limit(2, None)).await?;
    publish_all(&ch, &q, &["a", "b"]).await?;
    let a = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await?
        .ok_or_else(|| anyhow::anyhow!("empty"))?;
    ensure!(a.delivery.data == b"a");
    publish_all(&ch, &q, &["c"]).await?;
    a.delivery
        .nack(lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await?;
    let bodies = drain(&ch, &q).await?;
    ensure!(bodies == ["b", "c"], "kept {bodies:?}");
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

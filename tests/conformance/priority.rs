//! Priority queues: `x-max-priority` (0..=255, and RabbitMQ's texts for what it refuses);
//! delivery by priority, then arrival; a priority above the maximum counts as the
//! maximum but is delivered as published; no priority is priority 0; a queue without
//! `x-max-priority` ignores priorities; a requeued message goes back to the front of its
//! priority level; redeclare equivalence.

use anyhow::Result;
use lapin::{
    BasicProperties, Channel,
    options::{BasicGetOptions, BasicRejectOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::death::{excl_queue, with};
use crate::exchange::publish_confirmed;
use crate::harness::{Ctx, ensure_eq, expect_code, scenarios};

scenarios! {
    max_priority_range_and_errors,
    delivered_by_priority_then_arrival,
    priority_above_max_counts_as_max,
    no_priority_is_zero,
    requeued_message_back_to_front_of_its_level,
    redeclare_other_max_priority_406,
}

fn max_priority(v: AMQPValue) -> FieldTable {
    with(FieldTable::default(), "x-max-priority", v)
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

/// Publishes `(body, priority)` pairs with confirms.
async fn publish(ch: &Channel, q: &str, msgs: &[(&str, Option<u8>)]) -> Result<()> {
    for (b, p) in msgs {
        let props = match p {
            Some(p) => BasicProperties::default().with_priority(*p),
            None => BasicProperties::default(),
        };
        publish_confirmed(ch, "", q, b.as_bytes(), props).await?;
    }
    Ok(())
}

/// Takes everything with `basic.get` (no-ack): `(body, priority property)` in order.
async fn drain_with_priority(ch: &Channel, q: &str) -> Result<Vec<(String, Option<u8>)>> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await?
    {
        let d = m.delivery;
        out.push((
            String::from_utf8_lossy(&d.data).into(),
            *d.properties.priority(),
        ));
        anyhow::ensure!(out.len() <= 100, "{q} does not drain");
    }
    Ok(out)
}

async fn bodies(ch: &Channel, q: &str) -> Result<Vec<String>> {
    Ok(drain_with_priority(ch, q)
        .await?
        .into_iter()
        .map(|(b, _)| b)
        .collect())
}

async fn confirming(ctx: &Ctx) -> Result<(lapin::Connection, Channel)> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    Ok((conn, ch))
}

async fn max_priority_range_and_errors(ctx: Ctx) -> Result<()> {
    let q = ctx.name("prio.range");
    {
        let (_conn, ch) = ctx.open().await?;
        for v in [0, 1, 10, 255] {
            excl_queue(&ch, &q, max_priority(AMQPValue::LongInt(v))).await?;
            ch.queue_delete(q.as_str().into(), Default::default())
                .await?;
        }
        excl_queue(&ch, &q, max_priority(AMQPValue::ShortShortUInt(7))).await?;
        ch.queue_delete(q.as_str().into(), Default::default())
            .await?;
    }
    let invalid = |why: &str| {
        format!(
            "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{q}' in vhost '/': {why}"
        )
    };
    let cases = [
        (AMQPValue::LongInt(256), invalid("{max_value_exceeded,256}")),
        (AMQPValue::LongInt(-1), invalid("{value_negative,-1}")),
        (
            AMQPValue::LongString("5".into()),
            invalid("\"expected integer, got longstr\""),
        ),
    ];
    for (v, want) in cases {
        let (_conn, ch) = ctx.open().await?;
        let res = ch
            .queue_declare(q.as_str().into(), exclusive(), max_priority(v))
            .await;
        expect_code(res, 406, Some(&want))?;
    }
    Ok(())
}

async fn delivered_by_priority_then_arrival(ctx: Ctx) -> Result<()> {
    let q = ctx.name("prio.order");
    let (conn, ch) = confirming(&ctx).await?;
    excl_queue(&ch, &q, max_priority(AMQPValue::LongInt(10))).await?;
    let msgs = [
        ("a1", Some(1)),
        ("b5", Some(5)),
        ("c1", Some(1)),
        ("d10", Some(10)),
        ("e5", Some(5)),
        ("f0", Some(0)),
        ("g10", Some(10)),
    ];
    publish(&ch, &q, &msgs).await?;
    let got = drain_with_priority(&ch, &q).await?;
    let want: Vec<(String, Option<u8>)> = [
        ("d10", 10),
        ("g10", 10),
        ("b5", 5),
        ("e5", 5),
        ("a1", 1),
        ("c1", 1),
        ("f0", 0),
    ]
    .iter()
    .map(|(b, p)| (b.to_string(), Some(*p)))
    .collect();
    ensure_eq!(got, want);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn priority_above_max_counts_as_max(ctx: Ctx) -> Result<()> {
    let q = ctx.name("prio.over");
    let (conn, ch) = confirming(&ctx).await?;
    excl_queue(&ch, &q, max_priority(AMQPValue::LongInt(3))).await?;
    let msgs = [
        ("low", Some(2)),
        ("max", Some(3)),
        ("over", Some(9)),
        ("max2", Some(3)),
    ];
    publish(&ch, &q, &msgs).await?;
    let got = drain_with_priority(&ch, &q).await?;
    // 9 is queued at 3, in arrival order with the other 3s, and delivered as 9.
    let want: Vec<(String, Option<u8>)> = [("max", 3), ("over", 9), ("max2", 3), ("low", 2)]
        .iter()
        .map(|(b, p)| (b.to_string(), Some(*p)))
        .collect();
    ensure_eq!(got, want);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn no_priority_is_zero(ctx: Ctx) -> Result<()> {
    let (q, plain) = (ctx.name("prio.none"), ctx.name("prio.plain"));
    let (conn, ch) = confirming(&ctx).await?;
    excl_queue(&ch, &q, max_priority(AMQPValue::LongInt(5))).await?;
    excl_queue(&ch, &plain, FieldTable::default()).await?;
    let msgs = [
        ("n1", None),
        ("z", Some(0)),
        ("one", Some(1)),
        ("n2", None),
        ("five", Some(5)),
    ];
    publish(&ch, &q, &msgs).await?;
    let got = drain_with_priority(&ch, &q).await?;
    let want: Vec<(String, Option<u8>)> = [
        ("five", Some(5)),
        ("one", Some(1)),
        ("n1", None),
        ("z", Some(0)),
        ("n2", None),
    ]
    .iter()
    .map(|(b, p)| (b.to_string(), *p))
    .collect();
    ensure_eq!(got, want);
    // Without x-max-priority, priorities are ignored.
    publish(&ch, &plain, &msgs).await?;
    ensure_eq!(
        bodies(&ch, &plain).await?,
        vec!["n1", "z", "one", "n2", "five"]
    );
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn requeued_message_back_to_front_of_its_level(ctx: Ctx) -> Result<()> {
    let q = ctx.name("prio.requeue");
    let (conn, ch) = confirming(&ctx).await?;
    excl_queue(&ch, &q, max_priority(AMQPValue::LongInt(5))).await?;
    publish(
        &ch,
        &q,
        &[("x1", Some(1)), ("a5", Some(5)), ("b5", Some(5))],
    )
    .await?;
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
        .await?
        .ok_or_else(|| anyhow::anyhow!("get-empty"))?;
    ensure_eq!(m.delivery.data, b"a5".to_vec());
    publish(&ch, &q, &[("c5", Some(5)), ("y1", Some(1))]).await?;
    ch.basic_reject(
        m.delivery.delivery_tag,
        BasicRejectOptions { requeue: true },
    )
    .await?;
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
    {
        got.push((
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            m.delivery.redelivered,
        ));
        anyhow::ensure!(got.len() <= 10, "does not drain");
    }
    let want: Vec<(String, bool)> = [
        ("a5", true),
        ("b5", false),
        ("c5", false),
        ("x1", false),
        ("y1", false),
    ]
    .iter()
    .map(|(b, r)| (b.to_string(), *r))
    .collect();
    ensure_eq!(got, want);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn redeclare_other_max_priority_406(ctx: Ctx) -> Result<()> {
    let five = || max_priority(AMQPValue::LongInt(5));
    let cases = [
        (
            five(),
            max_priority(AMQPValue::LongInt(6)),
            "received '6' but current is '5'",
        ),
        (
            five(),
            FieldTable::default(),
            "received none but current is the value '5' of type 'signedint'",
        ),
        (
            FieldTable::default(),
            five(),
            "received the value '5' of type 'signedint' but current is none",
        ),
    ];
    let conn = ctx.connect().await?;
    for (i, (first, second, why)) in cases.into_iter().enumerate() {
        // A 406 closes the channel: one channel per case.
        let ch = conn.create_channel().await?;
        let q = ctx.name(&format!("prio.equiv{i}"));
        excl_queue(&ch, &q, first.clone()).await?;
        excl_queue(&ch, &q, first).await?;
        let res = ch
            .queue_declare(q.as_str().into(), exclusive(), second)
            .await;
        let want = format!(
            "PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue '{q}' in vhost '/': {why}"
        );
        expect_code(res, 406, Some(&want))?;
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

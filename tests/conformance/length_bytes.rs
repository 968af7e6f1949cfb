//! Queue byte limits: `x-max-length-bytes` counts message bodies only (not headers or
//! properties); drop-head drops from the head until the rest fits, a body larger than
//! the limit included; `reject-publish` refuses what does not fit; together with
//! `x-max-length` whichever limit is reached first applies; bytes dropped from the head
//! dead-letter as `maxlen`; redeclare equivalence.

use anyhow::{Result, ensure};
use lapin::{
    BasicProperties, Channel,
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable, LongString},
};

use crate::death::{bind, body, deaths, dlx, excl_queue, fanout, wait_get, with};
use crate::exchange::drain;
use crate::harness::{Ctx, cleanup, ensure_eq, expect_code, message_count_on, scenarios};

scenarios! {
    counts_body_bytes_only,
    oversized_body_drops_itself,
    limit_zero_keeps_empty_bodies,
    with_max_length_first_limit_applies,
    reject_publish_nacks_what_does_not_fit,
    drop_head_dead_letters_as_maxlen,
    redeclare_other_limit_406,
}

fn bytes_limit(n: i32) -> FieldTable {
    with(
        FieldTable::default(),
        "x-max-length-bytes",
        AMQPValue::LongInt(n),
    )
}

fn overflow(t: FieldTable, mode: &str) -> FieldTable {
    with(
        t,
        "x-overflow",
        AMQPValue::LongString(LongString::from(mode.as_bytes().to_vec())),
    )
}

/// Publishes `bodies` in confirm mode; whether each was acked.
async fn publish_all(ch: &Channel, q: &str, bodies: &[&str]) -> Result<Vec<bool>> {
    publish_with(ch, q, bodies, BasicProperties::default()).await
}

async fn publish_with(
    ch: &Channel,
    q: &str,
    bodies: &[&str],
    props: BasicProperties,
) -> Result<Vec<bool>> {
    let mut acked = Vec::new();
    for b in bodies {
        let confirm = ch
            .basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                props.clone(),
            )
            .await?
            .await?;
        acked.push(confirm.is_ack());
    }
    Ok(acked)
}

async fn confirming(ctx: &Ctx) -> Result<(lapin::Connection, Channel)> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    Ok((conn, ch))
}

async fn counts_body_bytes_only(ctx: Ctx) -> Result<()> {
    let q = ctx.name("lenb.body");
    let (conn, ch) = confirming(&ctx).await?;
    excl_queue(&ch, &q, bytes_limit(10)).await?;
    // Large headers and properties do not count.
    let mut h = FieldTable::default();
    h.insert("pad".into(), AMQPValue::LongString("x".repeat(500).into()));
    let props = BasicProperties::default()
        .with_headers(h)
        .with_correlation_id("c".repeat(200).as_str().into());
    let acked = publish_with(&ch, &q, &["12345", "67890"], props).await?;
    ensure_eq!(acked, vec![true, true]);
    ensure_eq!(
        message_count_on(&ch, &q).await?,
        2,
        "10 body bytes fit in 10"
    );
    ensure_eq!(publish_all(&ch, &q, &["1"]).await?, vec![true]);
    ensure_eq!(drain(&ch, &q).await?, vec!["67890", "1"]);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn oversized_body_drops_itself(ctx: Ctx) -> Result<()> {
    let q = ctx.name("lenb.over");
    let (conn, ch) = confirming(&ctx).await?;
    for args in [bytes_limit(10), overflow(bytes_limit(10), "drop-head")] {
        excl_queue(&ch, &q, args.clone()).await?;
        ensure_eq!(publish_all(&ch, &q, &["abc"]).await?, vec![true]);
        // 11 bytes never fit: everything ahead of it goes, then it goes too; still acked.
        let acked = publish_all(&ch, &q, &["0123456789X"]).await?;
        ensure_eq!(acked, vec![true], "{args:?}");
        ensure_eq!(message_count_on(&ch, &q).await?, 0, "{args:?}");
        ensure_eq!(publish_all(&ch, &q, &["0123456789"]).await?, vec![true]);
        ensure_eq!(drain(&ch, &q).await?, vec!["0123456789"], "10 bytes fit");
        ch.queue_delete(q.as_str().into(), Default::default())
            .await?;
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn limit_zero_keeps_empty_bodies(ctx: Ctx) -> Result<()> {
    let q = ctx.name("lenb.zero");
    let (conn, ch) = confirming(&ctx).await?;
    excl_queue(&ch, &q, bytes_limit(0)).await?;
    let acked = publish_all(&ch, &q, &["", "x", "", ""]).await?;
    ensure_eq!(acked, vec![true, true, true, true]);
    // "x" does not fit: the head goes ("" ahead of it, then "x" itself); the last two
    // empty bodies stay.
    ensure_eq!(
        message_count_on(&ch, &q).await?,
        2,
        "the later empty bodies stay"
    );
    ensure_eq!(drain(&ch, &q).await?, vec!["", ""]);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn with_max_length_first_limit_applies(ctx: Ctx) -> Result<()> {
    let q = ctx.name("lenb.both");
    let (conn, ch) = confirming(&ctx).await?;
    let args = with(bytes_limit(10), "x-max-length", AMQPValue::LongInt(2));
    excl_queue(&ch, &q, args).await?;
    publish_all(&ch, &q, &["1", "2", "3"]).await?;
    // The length limit: [2, 3].
    ensure_eq!(message_count_on(&ch, &q).await?, 2);
    // Three messages are too many: [3, aaaaaaaaa] (10 bytes).
    publish_all(&ch, &q, &["aaaaaaaaa"]).await?;
    ensure_eq!(message_count_on(&ch, &q).await?, 2);
    // Too many again, then 11 bytes are too many: [bb].
    publish_all(&ch, &q, &["bb"]).await?;
    ensure_eq!(drain(&ch, &q).await?, vec!["bb"]);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn reject_publish_nacks_what_does_not_fit(ctx: Ctx) -> Result<()> {
    let q = ctx.name("lenb.reject");
    let (conn, ch) = confirming(&ctx).await?;
    excl_queue(&ch, &q, overflow(bytes_limit(10), "reject-publish")).await?;
    // Even on an empty queue a body over the limit is refused.
    let acked = publish_all(&ch, &q, &["0123456789X", "01234567", "89", "!"]).await?;
    ensure_eq!(acked, vec![false, true, true, false]);
    ensure_eq!(drain(&ch, &q).await?, vec!["01234567", "89"]);
    ensure_eq!(publish_all(&ch, &q, &["0123456789"]).await?, vec![true]);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn drop_head_dead_letters_as_maxlen(ctx: Ctx) -> Result<()> {
    let (x, q, dlq) = (ctx.name("lenb.x"), ctx.name("lenb.q"), ctx.name("lenb.dlq"));
    let (conn, ch) = confirming(&ctx).await?;
    fanout(&ch, &x).await?;
    excl_queue(&ch, &dlq, FieldTable::default()).await?;
    bind(&ch, &dlq, &x, "").await?;
    let args = with(dlx(&x, None), "x-max-length-bytes", AMQPValue::LongInt(4));
    excl_queue(&ch, &q, args).await?;
    publish_all(&ch, &q, &["ab", "cd", "ef"]).await?;
    let d = wait_get(&ch, &dlq).await?.delivery;
    ensure_eq!(body(&d), "ab");
    deaths(&d.properties)?[0].check(&q, "maxlen", 1, "", &[&q])?;
    // The oversized body dead-letters too, with whatever it pushed out first.
    publish_all(&ch, &q, &["12345"]).await?;
    for want in ["cd", "ef", "12345"] {
        let d = wait_get(&ch, &dlq).await?.delivery;
        ensure_eq!(body(&d), want);
        ensure!(deaths(&d.properties)?[0].reason == "maxlen");
    }
    ensure_eq!(message_count_on(&ch, &q).await?, 0);
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn redeclare_other_limit_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("lenb.equiv");
    let (_conn, ch) = ctx.open().await?;
    excl_queue(&ch, &q, bytes_limit(10)).await?;
    excl_queue(&ch, &q, bytes_limit(10)).await?;
    let options = lapin::options::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let res = ch
        .queue_declare(q.as_str().into(), options, bytes_limit(11))
        .await;
    let text = format!(
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length-bytes' for queue '{q}' in vhost '/': received '11' but current is '10'"
    );
    expect_code(res, 406, Some(&text))
}

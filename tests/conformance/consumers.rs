//! Consumer selection: consumer priorities (`x-priority` on `basic.consume`: the
//! highest-priority consumer with room in its prefetch gets each message) and single
//! active consumer (`x-single-active-consumer` on the queue: one consumer gets
//! everything; cancelling or closing hands over to the next, with the unacked messages
//! handed over only when the channel goes), with RabbitMQ's texts for bad arguments.

use anyhow::{Result, ensure};
use lapin::{
    BasicProperties, Channel, Connection, Consumer,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::death::{body, excl_queue, with};
use crate::exchange::{drain, publish_confirmed};
use crate::harness::{
    Ctx, ensure_eq, expect_code, message_count_on, next_delivery, no_delivery, scenarios,
};

scenarios! {
    higher_priority_consumer_first_until_prefetch_full,
    consumer_priority_invalid_406,
    single_active_consumer_gets_everything,
    single_active_cancel_hands_over_new_messages,
    single_active_channel_close_hands_over_unacked,
    single_active_false_round_robin,
    single_active_invalid_406,
    single_active_redeclare_406,
}

fn sac(v: AMQPValue) -> FieldTable {
    with(FieldTable::default(), "x-single-active-consumer", v)
}

/// A new channel of `conn` with `prefetch` (0: none) consuming `q`, acks on.
async fn consumer(
    conn: &Connection,
    q: &str,
    tag: &str,
    prefetch: u16,
    args: FieldTable,
) -> Result<(Channel, Consumer)> {
    let ch = conn.create_channel().await?;
    if prefetch > 0 {
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    }
    let c = ch
        .basic_consume(q.into(), tag.into(), BasicConsumeOptions::default(), args)
        .await?;
    Ok((ch, c))
}

fn priority(p: i32) -> FieldTable {
    with(FieldTable::default(), "x-priority", AMQPValue::LongInt(p))
}

async fn publish(ch: &Channel, q: &str, bodies: &[&str]) -> Result<()> {
    for b in bodies {
        publish_confirmed(ch, "", q, b.as_bytes(), BasicProperties::default()).await?;
    }
    Ok(())
}

/// The next `n` deliveries of `c`: `(body, redelivered, tag)`.
async fn take(c: &mut Consumer, n: usize) -> Result<Vec<(String, bool, u64)>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let d = next_delivery(c, 5).await?;
        out.push((body(&d), d.redelivered, d.delivery_tag));
    }
    Ok(out)
}

fn bodies(got: &[(String, bool, u64)]) -> Vec<&str> {
    got.iter().map(|(b, _, _)| b.as_str()).collect()
}

async fn take_bodies(c: &mut Consumer, n: usize) -> Result<Vec<String>> {
    Ok(take(c, n).await?.into_iter().map(|(b, _, _)| b).collect())
}

async fn setup(ctx: &Ctx, q: &str, args: FieldTable) -> Result<(Connection, Channel)> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    excl_queue(&ch, q, args).await?;
    Ok((conn, ch))
}

async fn higher_priority_consumer_first_until_prefetch_full(ctx: Ctx) -> Result<()> {
    let q = ctx.name("cons.prio");
    let (conn, ch) = setup(&ctx, &q, FieldTable::default()).await?;
    let (_lch, mut low) = consumer(&conn, &q, "low", 0, priority(-1)).await?;
    let (_dch, mut dflt) = consumer(&conn, &q, "default", 0, FieldTable::default()).await?;
    let (hch, mut high) = consumer(&conn, &q, "high", 2, priority(10)).await?;
    publish(&ch, &q, &["m0", "m1", "m2", "m3", "m4"]).await?;
    let got = take(&mut high, 2).await?;
    ensure_eq!(
        bodies(&got),
        vec!["m0", "m1"],
        "the high consumer until full"
    );
    ensure_eq!(
        take_bodies(&mut dflt, 3).await?,
        vec!["m2", "m3", "m4"],
        "then the default (0) one, which has no limit"
    );
    no_delivery(&mut high, 200).await?;
    no_delivery(&mut low, 0).await?;
    // Room again for the high one: an ack, which the queue has seen once a passive
    // declare on the same channel is answered.
    hch.basic_ack(got[0].2, BasicAckOptions::default()).await?;
    message_count_on(&hch, &q).await?;
    publish(&ch, &q, &["m5"]).await?;
    ensure_eq!(take_bodies(&mut high, 1).await?, vec!["m5"]);
    no_delivery(&mut dflt, 200).await?;
    no_delivery(&mut low, 0).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn consumer_priority_invalid_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("cons.badprio");
    let (conn, _ch) = setup(&ctx, &q, FieldTable::default()).await?;
    for (v, got) in [
        (AMQPValue::LongString("5".into()), "longstr"),
        (AMQPValue::Boolean(true), "bool"),
    ] {
        let ch = conn.create_channel().await?;
        let args = with(FieldTable::default(), "x-priority", v);
        let res = ch
            .basic_consume(q.as_str().into(), "c".into(), Default::default(), args)
            .await;
        let want = format!(
            "PRECONDITION_FAILED - invalid arg 'x-priority' for queue '{q}' in vhost '/': \"expected integer, got {got}\""
        );
        expect_code(res, 406, Some(&want))?;
    }
    // Any integer is a priority, negative and 64-bit too.
    for p in [AMQPValue::LongInt(-5), AMQPValue::LongLongInt(1 << 40)] {
        let ch = conn.create_channel().await?;
        let args = with(FieldTable::default(), "x-priority", p);
        ch.basic_consume(q.as_str().into(), "".into(), Default::default(), args)
            .await?;
        // Closed here, not by drop: lapin 4.12 closes a dropped channel from a task of
        // its own, and if `conn.close` below has already begun, that task fails the
        // connection close with "invalid channel state: Closing".
        ch.close(200, "bye".into()).await?;
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn single_active_consumer_gets_everything(ctx: Ctx) -> Result<()> {
    let q = ctx.name("cons.sac");
    let (conn, ch) = setup(&ctx, &q, sac(AMQPValue::Boolean(true))).await?;
    let (_ach, mut a) = consumer(&conn, &q, "a", 0, FieldTable::default()).await?;
    // A higher consumer priority does not make b the active one on a classic queue.
    let (_bch, mut b) = consumer(&conn, &q, "b", 0, priority(10)).await?;
    publish(&ch, &q, &["m0", "m1", "m2", "m3"]).await?;
    ensure_eq!(take_bodies(&mut a, 4).await?, vec!["m0", "m1", "m2", "m3"]);
    no_delivery(&mut b, 300).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn single_active_cancel_hands_over_new_messages(ctx: Ctx) -> Result<()> {
    let q = ctx.name("cons.sac.cancel");
    let (conn, ch) = setup(&ctx, &q, sac(AMQPValue::Boolean(true))).await?;
    let (ach, mut a) = consumer(&conn, &q, "a", 0, FieldTable::default()).await?;
    let (_bch, mut b) = consumer(&conn, &q, "b", 0, FieldTable::default()).await?;
    publish(&ch, &q, &["m0", "m1"]).await?;
    let held = take(&mut a, 2).await?;
    ensure_eq!(bodies(&held), vec!["m0", "m1"]);
    ach.basic_cancel("a".into(), Default::default()).await?;
    publish(&ch, &q, &["m2", "m3"]).await?;
    let got = take(&mut b, 2).await?;
    ensure_eq!(bodies(&got), vec!["m2", "m3"], "b is active now");
    ensure!(
        got.iter().all(|(_, r, _)| !r),
        "new messages, not redelivered"
    );
    // m0 and m1 are still a's channel's: acked there, they are gone.
    no_delivery(&mut b, 300).await?;
    for (_, _, tag) in &held {
        ach.basic_ack(*tag, BasicAckOptions::default()).await?;
    }
    ensure_eq!(message_count_on(&ach, &q).await?, 0);
    no_delivery(&mut b, 200).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn single_active_channel_close_hands_over_unacked(ctx: Ctx) -> Result<()> {
    let q = ctx.name("cons.sac.close");
    let (conn, ch) = setup(&ctx, &q, sac(AMQPValue::Boolean(true))).await?;
    let (ach, mut a) = consumer(&conn, &q, "a", 0, FieldTable::default()).await?;
    let (_bch, mut b) = consumer(&conn, &q, "b", 0, FieldTable::default()).await?;
    publish(&ch, &q, &["m0", "m1", "m2"]).await?;
    ensure_eq!(take_bodies(&mut a, 3).await?, vec!["m0", "m1", "m2"]);
    no_delivery(&mut b, 100).await?;
    ach.close(200, "bye".into()).await?;
    let got = take(&mut b, 3).await?;
    ensure_eq!(
        bodies(&got),
        vec!["m0", "m1", "m2"],
        "a's unacked, in order"
    );
    ensure!(got.iter().all(|(_, r, _)| *r), "redelivered: {got:?}");
    publish(&ch, &q, &["m3"]).await?;
    let got = take(&mut b, 1).await?;
    ensure_eq!(bodies(&got), vec!["m3"]);
    ensure!(!got[0].1, "a new message is not redelivered");
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn single_active_false_round_robin(ctx: Ctx) -> Result<()> {
    let q = ctx.name("cons.sac.false");
    let (conn, ch) = setup(&ctx, &q, sac(AMQPValue::Boolean(false))).await?;
    let (_ach, mut a) = consumer(&conn, &q, "a", 0, FieldTable::default()).await?;
    let (_bch, mut b) = consumer(&conn, &q, "b", 0, FieldTable::default()).await?;
    publish(&ch, &q, &["m0", "m1", "m2", "m3"]).await?;
    ensure_eq!(take_bodies(&mut a, 2).await?, vec!["m0", "m2"]);
    ensure_eq!(take_bodies(&mut b, 2).await?, vec!["m1", "m3"]);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn single_active_invalid_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("cons.sac.bad");
    for (v, ty) in [
        (AMQPValue::LongString("true".into()), "longstr"),
        (AMQPValue::LongInt(1), "signedint"),
    ] {
        let (_conn, ch) = ctx.open().await?;
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        let res = ch.queue_declare(q.as_str().into(), options, sac(v)).await;
        let want = format!(
            "PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue '{q}' in vhost '/': {{unacceptable_type,{ty}}}"
        );
        expect_code(res, 406, Some(&want))?;
    }
    Ok(())
}

async fn single_active_redeclare_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("cons.sac.equiv");
    let (conn, ch) = setup(&ctx, &q, sac(AMQPValue::Boolean(true))).await?;
    excl_queue(&ch, &q, sac(AMQPValue::Boolean(true))).await?;
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let res = ch
        .queue_declare(q.as_str().into(), options, sac(AMQPValue::Boolean(false)))
        .await;
    let want = format!(
        "PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue '{q}' in vhost '/': received 'false' but current is 'true'"
    );
    expect_code(res, 406, Some(&want))?;
    let ch = conn.create_channel().await?;
    ensure_eq!(drain(&ch, &q).await?.len(), 0);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

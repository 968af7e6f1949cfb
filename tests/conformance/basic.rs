//! Basic class: publish/consume, get, ack/nack/reject, requeue with `redelivered`, recover,
//! qos (per consumer and `global`), cancel both ways, exclusive consumers, mandatory returns.

use anyhow::{Result, bail};
use lapin::{
    Channel, Confirmation,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions,
        BasicNackOptions, BasicPublishOptions, BasicQosOptions, BasicRecoverOptions,
        BasicRejectOptions, QueueDeclareOptions,
    },
};

use crate::exchange::publish_confirmed;
use crate::harness::{
    Ctx, WAIT, consume, ensure_eq, exclusive_queue, expect_code, message_count, next_delivery,
    no_delivery, poll, scenarios,
};

scenarios! {
    publish_consume_in_order,
    server_generated_consumer_tag,
    get_and_get_empty,
    ack_multiple,
    nack_multiple_requeue_in_order,
    reject_requeue_and_drop,
    channel_close_requeues_unacked_in_order,
    connection_close_requeues_unacked,
    recover_requeues_with_redelivered,
    no_ack_consumer_removes_messages,
    round_robin_between_consumers,
    prefetch_per_consumer,
    prefetch_global_per_channel,
    prefetch_global_then_per_consumer,
    prefetch_zero_is_unlimited,
    exclusive_consumer_403,
    client_cancel_stops_deliveries,
    server_cancels_consumer_when_queue_deleted,
    unknown_delivery_tag_406,
    consumer_tag_reuse_530,
    consume_missing_queue_404,
    mandatory_unroutable_returned_312,
    large_message_multiple_frames,
    empty_body,
}

async fn fill(ch: &Channel, q: &str, n: usize) -> Result<()> {
    ch.confirm_select(Default::default()).await.ok();
    for i in 0..n {
        publish_confirmed(ch, "", q, format!("m{i}").as_bytes(), Default::default()).await?;
    }
    Ok(())
}

fn body(d: &lapin::message::Delivery) -> String {
    String::from_utf8_lossy(&d.data).to_string()
}

async fn publish_consume_in_order(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    let mut c = consume(&ch, q.as_str().into(), "ctag".into()).await?;
    ensure_eq!(c.tag().to_string(), "ctag");
    for i in 0..200 {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            format!("m{i}").as_bytes(),
            Default::default(),
        )
        .await?;
    }
    for i in 0..200u64 {
        let d = next_delivery(&mut c, 5).await?;
        ensure_eq!(body(&d), format!("m{i}"));
        ensure_eq!(d.delivery_tag, i + 1);
        ensure_eq!(d.redelivered, false);
        ensure_eq!(d.exchange.as_str(), "");
        ensure_eq!(d.routing_key.as_str(), q.as_str());
    }
    ch.basic_ack(200, BasicAckOptions { multiple: true })
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn server_generated_consumer_tag(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    let c1 = consume(&ch, q.as_str().into(), "".into()).await?;
    let c2 = consume(&ch, q.as_str().into(), "".into()).await?;
    for c in [&c1, &c2] {
        if !c.tag().as_str().starts_with("amq.ctag-") {
            bail!("server-generated consumer tag {:?}", c.tag());
        }
    }
    if c1.tag() == c2.tag() {
        bail!("duplicate consumer tags");
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn get_and_get_empty(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    ensure_eq!(
        ch.basic_get(q.as_str().into(), Default::default())
            .await?
            .is_none(),
        true
    );
    fill(&ch, &q, 3).await?;
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
        .await?
        .expect("get-ok");
    ensure_eq!(body(&m.delivery), "m0");
    ensure_eq!(m.message_count, 2);
    ensure_eq!(m.delivery.delivery_tag, 1);
    ensure_eq!(m.delivery.redelivered, false);
    ensure_eq!(m.delivery.routing_key.as_str(), q.as_str());
    let m2 = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
        .expect("get-ok");
    ensure_eq!(
        (body(&m2.delivery), m2.message_count),
        ("m1".to_string(), 1)
    );
    // Reject the first: requeued at the head, redelivered.
    ch.basic_reject(1, BasicRejectOptions { requeue: true })
        .await?;
    let m3 = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
        .expect("get-ok");
    ensure_eq!(
        (
            body(&m3.delivery),
            m3.delivery.redelivered,
            m3.message_count
        ),
        ("m0".to_string(), true, 1)
    );
    let m4 = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
        .expect("get-ok");
    ensure_eq!(
        (body(&m4.delivery), m4.message_count),
        ("m2".to_string(), 0)
    );
    ensure_eq!(
        ch.basic_get(q.as_str().into(), Default::default())
            .await?
            .is_none(),
        true
    );
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn ack_multiple(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    fill(&ch, &q, 5).await?;
    let ch2 = conn.create_channel().await?;
    let mut c = consume(&ch2, q.as_str().into(), "".into()).await?;
    for _ in 0..5 {
        next_delivery(&mut c, 5).await?;
    }
    ch2.basic_ack(3, BasicAckOptions { multiple: true }).await?;
    let _ = ch2.close(200, "bye".into()).await;
    // 4 and 5 were unacked: back in the queue.
    poll::try_until(WAIT, "2 messages back", || {
        let conn = &conn;
        let q = q.clone();
        async move { anyhow::Ok((message_count(conn, &q).await? == 2).then_some(())) }
    })
    .await?;
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
        .expect("get-ok");
    ensure_eq!(
        (body(&m.delivery), m.delivery.redelivered),
        ("m3".to_string(), true)
    );
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn nack_multiple_requeue_in_order(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    fill(&ch, &q, 5).await?;
    let ch2 = conn.create_channel().await?;
    let mut c = consume(&ch2, q.as_str().into(), "".into()).await?;
    for _ in 0..5 {
        next_delivery(&mut c, 5).await?;
    }
    // Nack 1..=3 with requeue, then they come back first, in order, redelivered.
    ch2.basic_nack(
        3,
        BasicNackOptions {
            multiple: true,
            requeue: true,
        },
    )
    .await?;
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = next_delivery(&mut c, 5).await?;
        got.push((body(&d), d.redelivered, d.delivery_tag));
    }
    ensure_eq!(
        got,
        vec![
            ("m0".to_string(), true, 6),
            ("m1".to_string(), true, 7),
            ("m2".to_string(), true, 8)
        ]
    );
    // Nack without requeue drops.
    ch2.basic_nack(
        8,
        BasicNackOptions {
            multiple: true,
            requeue: false,
        },
    )
    .await?;
    no_delivery(&mut c, 300).await?;
    ensure_eq!(message_count(&conn, &q).await?, 0);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn reject_requeue_and_drop(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    fill(&ch, &q, 2).await?;
    let ch2 = conn.create_channel().await?;
    let mut c = consume(&ch2, q.as_str().into(), "".into()).await?;
    let d1 = next_delivery(&mut c, 5).await?;
    let d2 = next_delivery(&mut c, 5).await?;
    ch2.basic_reject(d1.delivery_tag, BasicRejectOptions { requeue: false })
        .await?;
    ch2.basic_reject(d2.delivery_tag, BasicRejectOptions { requeue: true })
        .await?;
    let d3 = next_delivery(&mut c, 5).await?;
    ensure_eq!((body(&d3), d3.redelivered), ("m1".to_string(), true));
    ch2.basic_ack(d3.delivery_tag, Default::default()).await?;
    no_delivery(&mut c, 300).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn channel_close_requeues_unacked_in_order(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    fill(&ch, &q, 10).await?;
    let ch2 = conn.create_channel().await?;
    let mut c = consume(&ch2, q.as_str().into(), "".into()).await?;
    for _ in 0..10 {
        next_delivery(&mut c, 5).await?;
    }
    // Ack a few in the middle; the rest go back in their original order.
    ch2.basic_ack(2, Default::default()).await?;
    ch2.basic_ack(5, Default::default()).await?;
    let _ = ch2.close(200, "bye".into()).await;
    let ch3 = conn.create_channel().await?;
    let mut c3 = consume(&ch3, q.as_str().into(), "".into()).await?;
    let mut got = Vec::new();
    for _ in 0..8 {
        let d = next_delivery(&mut c3, 5).await?;
        got.push((body(&d), d.redelivered));
    }
    let want: Vec<(String, bool)> = [0, 2, 3, 5, 6, 7, 8, 9]
        .iter()
        .map(|i| (format!("m{i}"), true))
        .collect();
    ensure_eq!(got, want);
    // New messages after the requeued ones are not redelivered.
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"fresh",
        Default::default(),
    )
    .await?
    .await?;
    let d = next_delivery(&mut c3, 5).await?;
    ensure_eq!((body(&d), d.redelivered), ("fresh".to_string(), false));
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn connection_close_requeues_unacked(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ctx.name("q");
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await?;
    fill(&ch, &q, 3).await?;
    let (c2, ch2) = ctx.open().await?;
    let mut c = consume(&ch2, q.as_str().into(), "".into()).await?;
    for _ in 0..3 {
        next_delivery(&mut c, 5).await?;
    }
    let _ = c2.close(200, "bye".into()).await;
    poll::try_until(WAIT, "3 messages requeued", || {
        let conn = &conn;
        let q = q.clone();
        async move { anyhow::Ok((message_count(conn, &q).await? == 3).then_some(())) }
    })
    .await?;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await?
            .expect("get-ok");
        got.push((body(&m.delivery), m.delivery.redelivered));
    }
    ensure_eq!(
        got,
        vec![
            ("m0".to_string(), true),
            ("m1".to_string(), true),
            ("m2".to_string(), true)
        ]
    );
    ch.queue_delete(q.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn recover_requeues_with_redelivered(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    fill(&ch, &q, 2).await?;
    let ch2 = conn.create_channel().await?;
    let mut c = consume(&ch2, q.as_str().into(), "".into()).await?;
    next_delivery(&mut c, 5).await?;
    next_delivery(&mut c, 5).await?;
    ch2.basic_recover(BasicRecoverOptions { requeue: true })
        .await?;
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = next_delivery(&mut c, 5).await?;
        got.push((body(&d), d.redelivered));
        ch2.basic_ack(d.delivery_tag, Default::default()).await?;
    }
    ensure_eq!(
        got,
        vec![("m0".to_string(), true), ("m1".to_string(), true)]
    );
    no_delivery(&mut c, 300).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn no_ack_consumer_removes_messages(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    fill(&ch, &q, 3).await?;
    let ch2 = conn.create_channel().await?;
    let mut c = ch2
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    for _ in 0..3 {
        next_delivery(&mut c, 5).await?;
    }
    let _ = ch2.close(200, "bye".into()).await;
    ensure_eq!(message_count(&conn, &q).await?, 0);
    // Nor do they come back with the channel gone: a new consumer gets nothing.
    let ch3 = conn.create_channel().await?;
    let mut again = consume(&ch3, q.as_str().into(), "".into()).await?;
    no_delivery(&mut again, 200).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn round_robin_between_consumers(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    let ch2 = conn.create_channel().await?;
    let mut a = consume(&ch2, q.as_str().into(), "a".into()).await?;
    let mut b = consume(&ch2, q.as_str().into(), "b".into()).await?;
    fill(&ch, &q, 6).await?;
    let mut ga = Vec::new();
    let mut gb = Vec::new();
    for _ in 0..3 {
        ga.push(body(&next_delivery(&mut a, 5).await?));
        gb.push(body(&next_delivery(&mut b, 5).await?));
    }
    ensure_eq!(ga, vec!["m0", "m2", "m4"]);
    ensure_eq!(gb, vec!["m1", "m3", "m5"]);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn prefetch_per_consumer(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    fill(&ch, &q, 10).await?;
    let ch2 = conn.create_channel().await?;
    ch2.basic_qos(2, BasicQosOptions { global: false }).await?;
    let mut a = consume(&ch2, q.as_str().into(), "a".into()).await?;
    let mut b = consume(&ch2, q.as_str().into(), "b".into()).await?;
    // Each consumer gets 2 (limit per consumer), then nothing more until it acks.
    let a1 = next_delivery(&mut a, 5).await?;
    next_delivery(&mut a, 5).await?;
    next_delivery(&mut b, 5).await?;
    next_delivery(&mut b, 5).await?;
    no_delivery(&mut a, 300).await?;
    no_delivery(&mut b, 100).await?;
    ensure_eq!(message_count(&conn, &q).await?, 6);
    ch2.basic_ack(a1.delivery_tag, Default::default()).await?;
    next_delivery(&mut a, 5).await?;
    no_delivery(&mut a, 300).await?;
    no_delivery(&mut b, 100).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

/// Counts deliveries to two consumers during `ms`; returns (a, b, tags).
async fn count_two(
    a: &mut lapin::Consumer,
    b: &mut lapin::Consumer,
    ms: u64,
) -> (usize, usize, Vec<u64>) {
    let (mut na, mut nb, mut tags) = (0, 0, Vec::new());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
    loop {
        tokio::select! {
            d = next_delivery(a, 1) => { if let Ok(d) = d { na += 1; tags.push(d.delivery_tag); } }
            d = next_delivery(b, 1) => { if let Ok(d) = d { nb += 1; tags.push(d.delivery_tag); } }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    (na, nb, tags)
}

/// Two queues of 5 messages each, a channel with the given qos calls, one consumer per queue.
async fn two_consumers(
    ctx: &Ctx,
    qos: &[(u16, bool)],
) -> Result<(lapin::Connection, Channel, lapin::Consumer, lapin::Consumer)> {
    let (conn, ch) = ctx.open().await?;
    let q1 = exclusive_queue(&ch, "").await?;
    let q2 = exclusive_queue(&ch, "").await?;
    fill(&ch, &q1, 5).await?;
    fill(&ch, &q2, 5).await?;
    let ch2 = conn.create_channel().await?;
    for (n, global) in qos {
        ch2.basic_qos(*n, BasicQosOptions { global: *global })
            .await?;
    }
    let a = consume(&ch2, q1.as_str().into(), "a".into()).await?;
    let b = consume(&ch2, q2.as_str().into(), "b".into()).await?;
    Ok((conn, ch2, a, b))
}

async fn prefetch_global_per_channel(ctx: Ctx) -> Result<()> {
    // global=true: one limit shared by all consumers of the channel.
    let (conn, ch2, mut a, mut b) = two_consumers(&ctx, &[(3, true)]).await?;
    let (na, nb, tags) = count_two(&mut a, &mut b, 800).await;
    ensure_eq!(na + nb, 3, "channel-wide prefetch 3: a={na} b={nb}");
    ch2.basic_ack(tags[0], Default::default()).await?;
    let (ma, mb, _) = count_two(&mut a, &mut b, 800).await;
    ensure_eq!(ma + mb, 1, "deliveries after one ack");
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn prefetch_global_then_per_consumer(ctx: Ctx) -> Result<()> {
    // As RabbitMQ 3.10 behaves: after qos(3, global) then qos(2, per consumer), each new
    // consumer is limited to 2 and the channel-wide 3 does not cap their sum.
    let (conn, _ch2, mut a, mut b) = two_consumers(&ctx, &[(3, true), (2, false)]).await?;
    let (na, nb, _) = count_two(&mut a, &mut b, 800).await;
    ensure_eq!((na, nb), (2, 2));
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn prefetch_zero_is_unlimited(ctx: Ctx) -> Result<()> {
    let (conn, _ch2, mut a, mut b) = two_consumers(&ctx, &[(1, false), (0, false)]).await?;
    let (na, nb, _) = count_two(&mut a, &mut b, 800).await;
    ensure_eq!((na, nb), (5, 5));
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn exclusive_consumer_403(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let ch = conn.create_channel().await?;
    let q = exclusive_queue(&ch, "").await?;
    let c = ch
        .basic_consume(
            q.as_str().into(),
            "x1".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    let ch2 = conn.create_channel().await?;
    let res = ch2
        .basic_consume(
            q.as_str().into(),
            "x2".into(),
            Default::default(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        403,
        Some(&format!(
            "ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"
        )),
    )?;
    ch.basic_cancel(c.tag(), Default::default()).await?;
    let _plain = consume(&ch, q.as_str().into(), "p".into()).await?;
    let ch3 = conn.create_channel().await?;
    let res = ch3
        .basic_consume(
            q.as_str().into(),
            "x3".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    expect_code(
        res,
        403,
        Some(&format!(
            "ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"
        )),
    )?;
    conn.close(200, "bye".into()).await.ok();
    Ok(())
}

async fn client_cancel_stops_deliveries(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    let ch2 = conn.create_channel().await?;
    let mut c = consume(&ch2, q.as_str().into(), "c".into()).await?;
    fill(&ch, &q, 1).await?;
    let d = next_delivery(&mut c, 5).await?;
    ch2.basic_cancel(c.tag(), BasicCancelOptions::default())
        .await?;
    fill(&ch, &q, 1).await?;
    // Confirmed, so routed: it stays queued, the cancelled consumer does not get it.
    let taken = poll::never(std::time::Duration::from_millis(200), || async {
        let n = message_count(&conn, &q).await?;
        anyhow::Ok((n != 1).then_some(n))
    })
    .await?;
    ensure_eq!(taken, None, "ready count moved off 1 after the cancel");
    ensure_eq!(message_count(&conn, &q).await?, 1);
    // Acking after cancel is still valid.
    ch2.basic_ack(d.delivery_tag, Default::default()).await?;
    ch2.basic_qos(1, Default::default()).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn server_cancels_consumer_when_queue_deleted(ctx: Ctx) -> Result<()> {
    use futures::StreamExt;
    let (conn, ch) = ctx.open().await?;
    let q = ctx.name("q");
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await?;
    let ch2 = conn.create_channel().await?;
    let mut c = consume(&ch2, q.as_str().into(), "c".into()).await?;
    ch.queue_delete(q.as_str().into(), Default::default())
        .await?;
    // consumer_cancel_notify: the server sends basic.cancel; lapin ends the stream.
    match tokio::time::timeout(std::time::Duration::from_secs(5), c.next()).await {
        Ok(None) => {}
        Ok(Some(other)) => bail!("expected consumer stream to end, got {other:?}"),
        Err(_) => bail!("consumer not cancelled within 5s of queue deletion"),
    }
    // The channel stays open.
    ch2.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn unknown_delivery_tag_406(ctx: Ctx) -> Result<()> {
    use crate::raw::{Enc, Raw};
    use lapin::protocol::{AMQPClass, channel};
    // Raw, because lapin reports the asynchronous channel close as a state error.
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send_method(1, &Enc::method(60, 80).u64(42).u8(0).bytes())
        .await?;
    let close = |f: (u16, AMQPClass)| match f {
        (1, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => Ok((
            c.reply_code,
            c.reply_text.to_string(),
            c.class_id,
            c.method_id,
        )),
        other => bail!("expected channel.close, got {other:?}"),
    };
    ensure_eq!(
        close(raw.expect_method(5).await?)?,
        (
            406,
            "PRECONDITION_FAILED - unknown delivery tag 42".to_string(),
            60,
            80
        )
    );
    raw.send_method(1, &Enc::method(20, 41).bytes()).await?;
    // Double ack of a real delivery.
    raw.open_channel(1).await?;
    let q = ctx.name("q");
    raw.send_method(
        1,
        &Enc::method(50, 10)
            .u16(0)
            .short(&q)
            .u8(0b1000)
            .empty_table()
            .bytes(),
    )
    .await?;
    raw.expect_method(5).await?;
    // Confirmed, so queued before the basic.get.
    raw.send_method(1, &Enc::method(85, 10).u8(0).bytes())
        .await?;
    match raw.expect_method(5).await? {
        (1, AMQPClass::Confirm(_)) => {}
        other => bail!("expected confirm.select-ok, got {other:?}"),
    }
    raw.send(&crate::confirm_tx::publish_frames(1, "", &q, false, b"m"))
        .await?;
    match raw.expect_method(5).await? {
        (1, AMQPClass::Basic(lapin::protocol::basic::AMQPMethod::Ack(_))) => {}
        other => bail!("expected the publish's basic.ack, got {other:?}"),
    }
    raw.send_method(1, &Enc::method(60, 70).u16(0).short(&q).u8(0).bytes())
        .await?;
    let tag = match raw.expect_method(5).await? {
        (1, AMQPClass::Basic(lapin::protocol::basic::AMQPMethod::GetOk(g))) => {
            raw.next(5).await?;
            raw.next(5).await?;
            g.delivery_tag
        }
        other => bail!("basic.get did not return the message: {other:?}"),
    };
    raw.send_method(1, &Enc::method(60, 80).u64(tag).u8(0).bytes())
        .await?;
    raw.send_method(1, &Enc::method(60, 80).u64(tag).u8(0).bytes())
        .await?;
    ensure_eq!(
        close(raw.expect_method(5).await?)?,
        (
            406,
            format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
            60,
            80
        )
    );
    Ok(())
}

async fn consumer_tag_reuse_530(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    let _c = consume(&ch, q.as_str().into(), "same".into()).await?;
    let res = ch
        .basic_consume(
            q.as_str().into(),
            "same".into(),
            Default::default(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        530,
        Some("NOT_ALLOWED - attempt to reuse consumer tag 'same'"),
    )?;
    poll::until_true(
        WAIT,
        "connection closed (530 is a connection error)",
        || !conn.status().connected(),
    )
    .await?;
    Ok(())
}

async fn consume_missing_queue_404(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    let q = ctx.name("missing");
    let res = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        404,
        Some(&format!("NOT_FOUND - no queue '{q}' in vhost '/'")),
    )?;
    let (_conn, ch) = ctx.open().await?;
    let res = ch.basic_get(q.as_str().into(), Default::default()).await;
    expect_code(
        res,
        404,
        Some(&format!("NOT_FOUND - no queue '{q}' in vhost '/'")),
    )
}

async fn mandatory_unroutable_returned_312(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let props = lapin::BasicProperties::default().with_correlation_id("c1".into());
    let conf = ch
        .basic_publish(
            "amq.direct".into(),
            ctx.name("nobody").as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            props,
        )
        .await?
        .await?;
    match conf {
        Confirmation::Ack(Some(ret)) => {
            ensure_eq!(ret.reply_code, 312);
            ensure_eq!(ret.reply_text.as_str(), "NO_ROUTE");
            ensure_eq!(ret.delivery.data, b"lost".to_vec());
            ensure_eq!(ret.delivery.exchange.as_str(), "amq.direct");
            ensure_eq!(
                ret.delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|s| s.to_string()),
                Some("c1".to_string())
            );
        }
        other => bail!("expected ack with a returned message, got {other:?}"),
    }
    // Not mandatory: dropped silently, still acked.
    let conf = ch
        .basic_publish(
            "amq.direct".into(),
            ctx.name("nobody").as_str().into(),
            Default::default(),
            b"lost",
            Default::default(),
        )
        .await?
        .await?;
    ensure_eq!(conf, Confirmation::Ack(None));
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn large_message_multiple_frames(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    ch.confirm_select(Default::default()).await?;
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        &big,
        Default::default(),
    )
    .await?
    .await?;
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
        .expect("get-ok");
    if m.delivery.data != big {
        bail!("1 MB body differs (len {})", m.delivery.data.len());
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn empty_body(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    let mut c = consume(&ch, q.as_str().into(), "".into()).await?;
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"",
        Default::default(),
    )
    .await?;
    let d = next_delivery(&mut c, 5).await?;
    ensure_eq!(d.data.len(), 0);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

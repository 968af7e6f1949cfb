//! Dead-lettering: `x-dead-letter-exchange` / `x-dead-letter-routing-key` on a queue.
//! What dead-letters (reject and nack without requeue, per-message and queue TTL
//! expiry, `x-max-length` drop-head, `x-overflow` `reject-publish-dlx`), the `x-death`
//! history and the `x-first-death-*` / `x-last-death-*` headers, how the copy is routed
//! (its original key and CC, or the dead-letter routing key; the default exchange;
//! a missing exchange), cycle detection, persistence, and the declare errors.

use anyhow::{Result, ensure};
use lapin::{
    BasicProperties, Channel,
    options::{BasicConsumeOptions, BasicNackOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
};

use crate::death::{
    bind, body, cc, check_first_last, deaths, direct, dlx, excl_queue, fanout, headers, reject,
    wait_get, with,
};
use crate::exchange::{drain, publish_confirmed};
use crate::harness::{
    Ctx, WAIT, cleanup, consume, ensure_eq, expect_code, message_count_on, next_delivery,
    no_delivery, poll, scenarios,
};

scenarios! {
    reject_dead_letters_as_rejected,
    nack_dead_letters_each_message,
    per_message_expiry_dead_letters_as_expired,
    queue_ttl_dead_letters_as_expired,
    max_length_drop_head_dead_letters_as_maxlen,
    reject_publish_dlx_nacks_and_dead_letters,
    repeat_death_bumps_count_and_moves_first,
    original_key_and_cc_route_the_copy,
    dead_letter_routing_key_replaces_the_key,
    missing_dead_letter_exchange_drops,
    default_exchange_routes_by_queue_name,
    expiry_cycle_back_to_itself_dropped,
    cycle_detection_is_per_target_queue,
    rejection_cycle_is_kept,
    durable_target_keeps_persistence,
    declare_errors_406,
}

/// A confirming channel with a fanout dead-letter exchange `x` bound to the exclusive
/// queue `dlq`.
async fn dl_setup(ctx: &Ctx, x: &str, dlq: &str) -> Result<(lapin::Connection, Channel)> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    fanout(&ch, x).await?;
    excl_queue(&ch, dlq, FieldTable::default()).await?;
    bind(&ch, dlq, x, "").await?;
    Ok((conn, ch))
}

fn long(n: i32) -> AMQPValue {
    AMQPValue::LongInt(n)
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

async fn reject_dead_letters_as_rejected(ctx: Ctx) -> Result<()> {
    let (x, q, dlq) = (ctx.name("dl.x"), ctx.name("dl.q"), ctx.name("dl.dlq"));
    let (conn, ch) = dl_setup(&ctx, &x, &dlq).await?;
    excl_queue(&ch, &q, dlx(&x, None)).await?;
    publish_confirmed(&ch, "", &q, b"m", BasicProperties::default()).await?;
    // Requeued first: the copy is still not marked redelivered.
    let m = wait_get(&ch, &q).await?;
    reject(&ch, m.delivery.delivery_tag, true).await?;
    let m = wait_get(&ch, &q).await?;
    ensure!(
        m.delivery.redelivered,
        "the requeued message is redelivered"
    );
    reject(&ch, m.delivery.delivery_tag, false).await?;
    let d = wait_get(&ch, &dlq).await?.delivery;
    ensure_eq!(body(&d), "m");
    ensure!(!d.redelivered, "the dead-lettered copy is not redelivered");
    ensure_eq!(d.exchange.as_str(), x.as_str());
    ensure_eq!(d.routing_key.as_str(), q.as_str());
    let ds = deaths(&d.properties)?;
    ensure_eq!(ds.len(), 1, "{ds:?}");
    ds[0].check(&q, "rejected", 1, "", &[&q])?;
    ensure_eq!(ds[0].original_expiration, None);
    check_first_last(
        &ctx,
        &d.properties,
        (&q, "rejected", ""),
        (&q, "rejected", ""),
    )?;
    ensure_eq!(message_count_on(&ch, &q).await?, 0);
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn nack_dead_letters_each_message(ctx: Ctx) -> Result<()> {
    let (x, q, dlq) = (ctx.name("dl.x"), ctx.name("dl.q"), ctx.name("dl.dlq"));
    let (conn, ch) = dl_setup(&ctx, &x, &dlq).await?;
    excl_queue(&ch, &q, dlx(&x, None)).await?;
    for b in ["a", "b", "c", "d"] {
        publish_confirmed(&ch, "", &q, b.as_bytes(), BasicProperties::default()).await?;
    }
    let cch = conn.create_channel().await?;
    let mut c = consume(&cch, q.as_str().into(), "c".into()).await?;
    let mut tags = Vec::new();
    for want in ["a", "b", "c", "d"] {
        let d = next_delivery(&mut c, 5).await?;
        ensure_eq!(body(&d), want);
        tags.push(d.delivery_tag);
    }
    // nack multiple up to "c" (a, b, c), then a single nack of "d".
    let multiple = BasicNackOptions {
        multiple: true,
        requeue: false,
    };
    cch.basic_nack(tags[2], multiple).await?;
    cch.basic_nack(tags[3], BasicNackOptions::default()).await?;
    for want in ["a", "b", "c", "d"] {
        let d = wait_get(&ch, &dlq).await?.delivery;
        ensure_eq!(body(&d), want);
        let ds = deaths(&d.properties)?;
        ensure_eq!(ds.len(), 1, "{ds:?}");
        ds[0].check(&q, "rejected", 1, "", &[&q])?;
    }
    ensure_eq!(message_count_on(&ch, &dlq).await?, 0);
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn per_message_expiry_dead_letters_as_expired(ctx: Ctx) -> Result<()> {
    let (x, q, dlq) = (ctx.name("dl.x"), ctx.name("dl.q"), ctx.name("dl.dlq"));
    let (conn, ch) = dl_setup(&ctx, &x, &dlq).await?;
    excl_queue(&ch, &q, dlx(&x, None)).await?;
    let props = BasicProperties::default().with_expiration("20".into());
    publish_confirmed(&ch, "", &q, b"e", props).await?;
    let d = wait_get(&ch, &dlq).await?.delivery;
    ensure_eq!(body(&d), "e");
    let ds = deaths(&d.properties)?;
    ensure_eq!(ds.len(), 1, "{ds:?}");
    ds[0].check(&q, "expired", 1, "", &[&q])?;
    ensure_eq!(ds[0].original_expiration.as_deref(), Some("20"));
    ensure_eq!(
        d.properties.expiration().clone(),
        None,
        "expiration removed"
    );
    check_first_last(
        &ctx,
        &d.properties,
        (&q, "expired", ""),
        (&q, "expired", ""),
    )?;
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn queue_ttl_dead_letters_as_expired(ctx: Ctx) -> Result<()> {
    let (x, q, dlq) = (ctx.name("dl.x"), ctx.name("dl.q"), ctx.name("dl.dlq"));
    let (conn, ch) = dl_setup(&ctx, &x, &dlq).await?;
    excl_queue(&ch, &q, with(dlx(&x, None), "x-message-ttl", long(20))).await?;
    publish_confirmed(&ch, "", &q, b"plain", BasicProperties::default()).await?;
    let d = wait_get(&ch, &dlq).await?.delivery;
    ensure_eq!(body(&d), "plain");
    let ds = deaths(&d.properties)?;
    ensure_eq!(ds.len(), 1, "{ds:?}");
    ds[0].check(&q, "expired", 1, "", &[&q])?;
    ensure_eq!(ds[0].original_expiration, None, "no expiration to keep");
    // Expired by the queue TTL, a message with its own (longer) expiration still has
    // it moved to original-expiration.
    let props = BasicProperties::default().with_expiration("60000".into());
    publish_confirmed(&ch, "", &q, b"own", props).await?;
    let d = wait_get(&ch, &dlq).await?.delivery;
    ensure_eq!(body(&d), "own");
    let ds = deaths(&d.properties)?;
    ds[0].check(&q, "expired", 1, "", &[&q])?;
    ensure_eq!(ds[0].original_expiration.as_deref(), Some("60000"));
    ensure_eq!(
        d.properties.expiration().clone(),
        None,
        "expiration removed"
    );
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn max_length_drop_head_dead_letters_as_maxlen(ctx: Ctx) -> Result<()> {
    let (x, q, dlq) = (ctx.name("dl.x"), ctx.name("dl.q"), ctx.name("dl.dlq"));
    let (conn, ch) = dl_setup(&ctx, &x, &dlq).await?;
    excl_queue(&ch, &q, with(dlx(&x, None), "x-max-length", long(1))).await?;
    for b in ["a", "b", "c"] {
        publish_confirmed(&ch, "", &q, b.as_bytes(), BasicProperties::default()).await?;
    }
    for want in ["a", "b"] {
        let d = wait_get(&ch, &dlq).await?.delivery;
        ensure_eq!(body(&d), want);
        deaths(&d.properties)?[0].check(&q, "maxlen", 1, "", &[&q])?;
        check_first_last(&ctx, &d.properties, (&q, "maxlen", ""), (&q, "maxlen", ""))?;
    }
    ensure_eq!(drain(&ch, &q).await?, vec!["c"]);
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn reject_publish_dlx_nacks_and_dead_letters(ctx: Ctx) -> Result<()> {
    let (x, q, dlq) = (ctx.name("dl.x"), ctx.name("dl.q"), ctx.name("dl.dlq"));
    let plain = ctx.name("dl.plain");
    let (conn, ch) = dl_setup(&ctx, &x, &dlq).await?;
    let full = |overflow: &str| {
        with(
            with(dlx(&x, None), "x-max-length", long(1)),
            "x-overflow",
            text(overflow),
        )
    };
    excl_queue(&ch, &q, full("reject-publish-dlx")).await?;
    excl_queue(&ch, &plain, full("reject-publish")).await?;
    let publish = |q: String, b: &'static str| {
        let ch = ch.clone();
        async move {
            let c = ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    Default::default(),
                    b.as_bytes(),
                    BasicProperties::default(),
                )
                .await?
                .await?;
            anyhow::Ok(c.is_ack())
        }
    };
    ensure!(publish(q.clone(), "a").await?, "room for a");
    ensure!(
        !publish(q.clone(), "b").await?,
        "b is refused with basic.nack"
    );
    let d = wait_get(&ch, &dlq).await?.delivery;
    ensure_eq!(body(&d), "b");
    deaths(&d.properties)?[0].check(&q, "maxlen", 1, "", &[&q])?;
    ensure_eq!(drain(&ch, &q).await?, vec!["a"]);
    // reject-publish refuses without dead-lettering.
    ensure!(publish(plain.clone(), "c").await?, "room for c");
    ensure!(!publish(plain.clone(), "d").await?, "d is refused");
    let mut watch = consume(&ch, dlq.as_str().into(), "watch".into()).await?;
    no_delivery(&mut watch, 300).await?;
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn repeat_death_bumps_count_and_moves_first(ctx: Ctx) -> Result<()> {
    let (x, q1, q2) = (ctx.name("dl.x"), ctx.name("dl.q1"), ctx.name("dl.q2"));
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    direct(&ch, &x).await?;
    // q1 dead-letters to q2 and q2 back to q1, through `x`: a cycle with rejections.
    excl_queue(&ch, &q1, dlx(&x, Some("to2"))).await?;
    excl_queue(&ch, &q2, dlx(&x, Some("to1"))).await?;
    bind(&ch, &q1, &x, "to1").await?;
    bind(&ch, &q2, &x, "to2").await?;
    let props = BasicProperties::default().with_headers(cc(&[&ctx.name("dl.cc")]));
    publish_confirmed(&ch, "", &q1, b"m", props).await?;
    let keys1 = [q1.as_str(), &ctx.name("dl.cc")];
    let m = wait_get(&ch, &q1).await?;
    reject(&ch, m.delivery.delivery_tag, false).await?;
    let m = wait_get(&ch, &q2).await?;
    let ds = deaths(&m.delivery.properties)?;
    ensure_eq!(ds.len(), 1, "{ds:?}");
    ds[0].check(&q1, "rejected", 1, "", &keys1)?;
    reject(&ch, m.delivery.delivery_tag, false).await?;
    let m = wait_get(&ch, &q1).await?;
    ensure_eq!(m.delivery.routing_key.as_str(), "to1");
    let ds = deaths(&m.delivery.properties)?;
    ensure_eq!(ds.len(), 2, "{ds:?}");
    ds[0].check(&q2, "rejected", 1, &x, &["to2"])?;
    ds[1].check(&q1, "rejected", 1, "", &keys1)?;
    let props = &m.delivery.properties;
    check_first_last(&ctx, props, (&q1, "rejected", ""), (&q2, "rejected", &x))?;
    // Rejected in q1 again: its entry counts 2, keeps the exchange and keys of the first
    // death there, and goes first; x-last-death-exchange is this death's (x).
    reject(&ch, m.delivery.delivery_tag, false).await?;
    let m = wait_get(&ch, &q2).await?;
    let ds = deaths(&m.delivery.properties)?;
    ensure_eq!(ds.len(), 2, "{ds:?}");
    ds[0].check(&q1, "rejected", 2, "", &keys1)?;
    ds[1].check(&q2, "rejected", 1, &x, &["to2"])?;
    let props = &m.delivery.properties;
    check_first_last(&ctx, props, (&q1, "rejected", ""), (&q1, "rejected", &x))?;
    ensure!(!m.delivery.redelivered);
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

/// Source queue `src` dead-lettering to the direct exchange `x`, with queues bound to
/// it by key `k`, `cc` and `other` (the dead-letter routing key, if set); one message
/// published to `src` with CC `[k, cc]`, then rejected. Returns the channel, a consumer per bound queue and the keys.
async fn route_setup(
    ctx: &Ctx,
    with_routing_key: bool,
) -> Result<(
    lapin::Connection,
    Channel,
    Vec<lapin::Consumer>,
    Vec<String>,
)> {
    let (x, src) = (ctx.name("dl.x"), ctx.name("dl.src"));
    let keys: Vec<String> = ["dl.k", "dl.cc", "dl.other"]
        .iter()
        .map(|k| ctx.name(k))
        .collect();
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    direct(&ch, &x).await?;
    let dlrk = with_routing_key.then_some(keys[2].as_str());
    excl_queue(&ch, &src, dlx(&x, dlrk)).await?;
    let mut consumers = Vec::new();
    for k in &keys {
        let q = format!("{k}.q");
        excl_queue(&ch, &q, FieldTable::default()).await?;
        bind(&ch, &q, &x, k).await?;
        let opts = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        consumers.push(
            ch.basic_consume(
                q.as_str().into(),
                k.as_str().into(),
                opts,
                Default::default(),
            )
            .await?,
        );
    }
    let props = BasicProperties::default().with_headers(cc(&[&keys[0], &keys[1]]));
    publish_confirmed(&ch, "", &src, b"m", props).await?;
    let m = wait_get(&ch, &src).await?;
    reject(&ch, m.delivery.delivery_tag, false).await?;
    Ok((conn, ch, consumers, keys))
}

async fn original_key_and_cc_route_the_copy(ctx: Ctx) -> Result<()> {
    let src = ctx.name("dl.src");
    let (conn, _ch, mut cs, keys) = route_setup(&ctx, false).await?;
    for c in &mut cs[..2] {
        let d = next_delivery(c, 5).await?;
        ensure_eq!(
            d.routing_key.as_str(),
            src.as_str(),
            "routed by its own key"
        );
        deaths(&d.properties)?[0].check(&src, "rejected", 1, "", &[&src, &keys[0], &keys[1]])?;
        ensure!(headers(&d.properties).inner().contains_key("CC"), "CC kept");
    }
    no_delivery(&mut cs[2], 300).await?;
    for c in &mut cs[..2] {
        no_delivery(c, 100).await?;
    }
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&ctx.name("dl.x")]).await;
    Ok(())
}

async fn dead_letter_routing_key_replaces_the_key(ctx: Ctx) -> Result<()> {
    let src = ctx.name("dl.src");
    let (conn, _ch, mut cs, keys) = route_setup(&ctx, true).await?;
    let d = next_delivery(&mut cs[2], 5).await?;
    ensure_eq!(d.routing_key.as_str(), keys[2].as_str());
    // x-death keeps the keys the message was published with.
    deaths(&d.properties)?[0].check(&src, "rejected", 1, "", &[&src, &keys[0], &keys[1]])?;
    // RabbitMQ 3 drops the CC header from the copy; RabbitMQ 4 keeps it (not routed by).
    let has_cc = headers(&d.properties).inner().contains_key("CC");
    ensure_eq!(has_cc, ctx.like_rabbitmq_4(), "CC header on the copy");
    for c in &mut cs[..2] {
        no_delivery(c, 300).await?;
    }
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&ctx.name("dl.x")]).await;
    Ok(())
}

async fn missing_dead_letter_exchange_drops(ctx: Ctx) -> Result<()> {
    let (q, none) = (ctx.name("dl.q"), ctx.name("dl.none"));
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    excl_queue(&ch, &q, dlx(&none, None)).await?;
    publish_confirmed(&ch, "", &q, b"m", BasicProperties::default()).await?;
    let m = wait_get(&ch, &q).await?;
    reject(&ch, m.delivery.delivery_tag, false).await?;
    // Dropped without an error: the channel goes on, the queue is empty.
    ensure_eq!(message_count_on(&ch, &q).await?, 0);
    publish_confirmed(&ch, "", &q, b"n", BasicProperties::default()).await?;
    ensure_eq!(drain(&ch, &q).await?, vec!["n"]);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn default_exchange_routes_by_queue_name(ctx: Ctx) -> Result<()> {
    let (q, dlq) = (ctx.name("dl.q"), ctx.name("dl.dlq"));
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    excl_queue(&ch, &dlq, FieldTable::default()).await?;
    excl_queue(&ch, &q, dlx("", Some(&dlq))).await?;
    publish_confirmed(&ch, "", &q, b"m", BasicProperties::default()).await?;
    let m = wait_get(&ch, &q).await?;
    reject(&ch, m.delivery.delivery_tag, false).await?;
    let d = wait_get(&ch, &dlq).await?.delivery;
    ensure_eq!(body(&d), "m");
    ensure_eq!(d.exchange.as_str(), "");
    ensure_eq!(d.routing_key.as_str(), dlq.as_str());
    deaths(&d.properties)?[0].check(&q, "rejected", 1, "", &[&q])?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn expiry_cycle_back_to_itself_dropped(ctx: Ctx) -> Result<()> {
    let a = ctx.name("dl.a");
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    // a expires its messages into the default exchange, by key, back to a.
    excl_queue(&ch, &a, with(dlx("", Some(&a)), "x-message-ttl", long(100))).await?;
    publish_confirmed(&ch, "", &a, b"m", BasicProperties::default()).await?;
    poll::try_until(WAIT, "the message expired", || async {
        anyhow::Ok((message_count_on(&ch, &a).await? == 0).then_some(()))
    })
    .await?;
    // Back in a, it would be there for another 100 ms: it never is.
    let back = poll::never(std::time::Duration::from_millis(600), || async {
        anyhow::Ok((message_count_on(&ch, &a).await? > 0).then_some(()))
    })
    .await?;
    ensure!(back.is_none(), "the expired message came back to its queue");
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn cycle_detection_is_per_target_queue(ctx: Ctx) -> Result<()> {
    let (x, a, b, w) = (
        ctx.name("dl.x"),
        ctx.name("dl.a"),
        ctx.name("dl.b"),
        ctx.name("dl.w"),
    );
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    fanout(&ch, &x).await?;
    // a expires into b; b expires into the fanout x, bound to a (a cycle) and w (not).
    excl_queue(&ch, &a, with(dlx("", Some(&b)), "x-message-ttl", long(20))).await?;
    excl_queue(&ch, &b, with(dlx(&x, None), "x-message-ttl", long(20))).await?;
    excl_queue(&ch, &w, FieldTable::default()).await?;
    bind(&ch, &a, &x, "").await?;
    bind(&ch, &w, &x, "").await?;
    let mut c = consume(&ch, w.as_str().into(), "w".into()).await?;
    publish_confirmed(&ch, "", &a, b"m", BasicProperties::default()).await?;
    let d = next_delivery(&mut c, 5).await?;
    let ds = deaths(&d.properties)?;
    ensure_eq!(ds.len(), 2, "{ds:?}");
    ds[0].check(&b, "expired", 1, "", &[&b])?;
    ds[1].check(&a, "expired", 1, "", &[&a])?;
    // The copy for a was dropped: nothing comes round again.
    no_delivery(&mut c, 500).await?;
    ensure_eq!(message_count_on(&ch, &a).await?, 0);
    ensure_eq!(message_count_on(&ch, &b).await?, 0);
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn rejection_cycle_is_kept(ctx: Ctx) -> Result<()> {
    let q = ctx.name("dl.q");
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    // The default exchange and the message's own key: back to q.
    excl_queue(&ch, &q, dlx("", None)).await?;
    publish_confirmed(&ch, "", &q, b"m", BasicProperties::default()).await?;
    let m = wait_get(&ch, &q).await?;
    reject(&ch, m.delivery.delivery_tag, false).await?;
    for count in [1, 2] {
        let m = wait_get(&ch, &q).await?;
        ensure_eq!(body(&m.delivery), "m");
        ensure!(!m.delivery.redelivered);
        let ds = deaths(&m.delivery.properties)?;
        ensure_eq!(ds.len(), 1, "{ds:?}");
        ds[0].check(&q, "rejected", count, "", &[&q])?;
        reject(&ch, m.delivery.delivery_tag, false).await?;
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn durable_target_keeps_persistence(ctx: Ctx) -> Result<()> {
    let (x, q, dlq) = (ctx.name("dl.x"), ctx.name("dl.q"), ctx.name("dl.dlq"));
    let res = async {
        let (conn, ch) = ctx.open().await?;
        ch.confirm_select(Default::default()).await?;
        fanout(&ch, &x).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(dlq.as_str().into(), durable, FieldTable::default())
            .await?;
        ch.queue_declare(q.as_str().into(), durable, dlx(&x, None))
            .await?;
        bind(&ch, &dlq, &x, "").await?;
        for (b, mode) in [("persistent", 2), ("transient", 1)] {
            let props = BasicProperties::default().with_delivery_mode(mode);
            publish_confirmed(&ch, "", &q, b.as_bytes(), props).await?;
            let m = wait_get(&ch, &q).await?;
            reject(&ch, m.delivery.delivery_tag, false).await?;
            let d = wait_get(&ch, &dlq).await?.delivery;
            ensure_eq!(body(&d), b);
            ensure_eq!(*d.properties.delivery_mode(), Some(mode));
            deaths(&d.properties)?[0].check(&q, "rejected", 1, "", &[&q])?;
        }
        conn.close(200, "bye".into()).await?;
        anyhow::Ok(())
    }
    .await;
    cleanup(&ctx, &[&q, &dlq], &[&x]).await;
    res
}

async fn declare_errors_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("dl.bad");
    let invalid = |key: &str, why: &str| {
        format!("PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {why}")
    };
    let bad_type = |ty: &str| {
        format!(
            "PRECONDITION_FAILED - invalid type '{ty}' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"
        )
    };
    let rk = |v: AMQPValue| with(FieldTable::default(), "x-dead-letter-routing-key", v);
    let dx = |v: AMQPValue| with(FieldTable::default(), "x-dead-letter-exchange", v);
    let cases = [
        (
            rk(text("k")),
            invalid(
                "x-dead-letter-routing-key",
                "routing_key_but_no_dlx_defined",
            ),
        ),
        (dx(long(5)), bad_type("signedint")),
        (dx(AMQPValue::Boolean(true)), bad_type("bool")),
        (
            with(dlx("x", None), "x-dead-letter-routing-key", long(5)),
            invalid("x-dead-letter-routing-key", "{unacceptable_type,signedint}"),
        ),
    ];
    for (args, want) in cases {
        let (_conn, ch) = ctx.open().await?;
        let options = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        let res = ch.queue_declare(q.as_str().into(), options, args).await;
        expect_code(res, 406, Some(&want))?;
    }
    // Redeclared with another dead-letter exchange.
    let (_conn, ch) = ctx.open().await?;
    excl_queue(&ch, &q, dlx("a", None)).await?;
    let res = excl_queue(&ch, &q, dlx("b", None)).await;
    let want = format!(
        "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue '{q}' in vhost '/': received 'b' but current is 'a'"
    );
    match res {
        Ok(()) => anyhow::bail!("redeclare with another x-dead-letter-exchange succeeded"),
        Err(e) => {
            let e = e.downcast::<lapin::Error>()?;
            expect_code::<()>(Err(e), 406, Some(&want))
        }
    }
}

//! Alternate exchanges: the `alternate-exchange` exchange argument. A message the
//! exchange cannot route goes to its alternate exchange (and on down a chain of them)
//! with its exchange and routing key unchanged; a mandatory publish comes back with
//! 312 NO_ROUTE only when the alternate exchange is missing, cannot route it either, or
//! the chain loops; routable messages never go there; declare errors as RabbitMQ words
//! them.

use anyhow::{Result, bail, ensure};
use lapin::{
    BasicProperties, Channel, Confirmation, ExchangeKind,
    options::{BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::death::{bind, body, cc, excl_queue, headers, with};
use crate::harness::{Ctx, cleanup, ensure_eq, expect_code, next_delivery, no_delivery, scenarios};

scenarios! {
    unroutable_goes_to_alternate_exchange,
    routable_message_skips_alternate_exchange,
    missing_alternate_exchange_returns_312,
    alternate_that_cannot_route_returns_312,
    alternate_chain_is_followed,
    alternate_cycle_returns_312,
    alternate_exchange_declare_errors_406,
}

fn ae(name: &str) -> FieldTable {
    with(
        FieldTable::default(),
        "alternate-exchange",
        AMQPValue::LongString(name.into()),
    )
}

async fn exchange(ch: &Channel, x: &str, kind: ExchangeKind, args: FieldTable) -> Result<()> {
    ch.exchange_declare(x.into(), kind, ExchangeDeclareOptions::default(), args)
        .await?;
    Ok(())
}

/// Publishes with confirms; `Some((code, text))` when the message came back.
async fn publish(
    ch: &Channel,
    x: &str,
    key: &str,
    mandatory: bool,
    props: BasicProperties,
) -> Result<Option<(u16, String)>> {
    let options = BasicPublishOptions {
        mandatory,
        ..Default::default()
    };
    let confirm = ch
        .basic_publish(x.into(), key.into(), options, b"m", props)
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) => Ok(None),
        Confirmation::Ack(Some(r)) => Ok(Some((r.reply_code, r.reply_text.to_string()))),
        other => bail!("publish not acked: {other:?}"),
    }
}

/// The routing key of the next delivery.
async fn key_of(c: &mut lapin::Consumer) -> Result<String> {
    Ok(next_delivery(c, 5).await?.routing_key.to_string())
}

fn no_route() -> Option<(u16, String)> {
    Some((312, "NO_ROUTE".to_string()))
}

/// A confirming channel and a no-ack consumer of the exclusive queue `q`.
async fn watched(ctx: &Ctx, q: &str) -> Result<(lapin::Connection, Channel, lapin::Consumer)> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    excl_queue(&ch, q, FieldTable::default()).await?;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let c = ch
        .basic_consume(q.into(), "w".into(), options, Default::default())
        .await?;
    Ok((conn, ch, c))
}

async fn unroutable_goes_to_alternate_exchange(ctx: Ctx) -> Result<()> {
    let (x, alt, aq) = (ctx.name("ae.x"), ctx.name("ae.alt"), ctx.name("ae.q"));
    let (conn, ch, mut c) = watched(&ctx, &aq).await?;
    exchange(&ch, &alt, ExchangeKind::Fanout, FieldTable::default()).await?;
    bind(&ch, &aq, &alt, "").await?;
    exchange(&ch, &x, ExchangeKind::Direct, ae(&alt)).await?;
    let props = BasicProperties::default().with_headers(cc(&["nor-this"]));
    // Mandatory, and not returned: the alternate exchange routed it.
    ensure_eq!(publish(&ch, &x, "nowhere", true, props).await?, None);
    let d = next_delivery(&mut c, 5).await?;
    ensure_eq!(body(&d), "m");
    ensure_eq!(d.exchange.as_str(), x.as_str(), "the original exchange");
    ensure_eq!(d.routing_key.as_str(), "nowhere", "the original key");
    ensure!(headers(&d.properties).inner().contains_key("CC"));
    no_delivery(&mut c, 100).await?;
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x, &alt]).await;
    Ok(())
}

async fn routable_message_skips_alternate_exchange(ctx: Ctx) -> Result<()> {
    let (x, alt, aq, q) = (
        ctx.name("ae.x"),
        ctx.name("ae.alt"),
        ctx.name("ae.aq"),
        ctx.name("ae.q"),
    );
    let (conn, ch, mut alt_c) = watched(&ctx, &aq).await?;
    exchange(&ch, &alt, ExchangeKind::Fanout, FieldTable::default()).await?;
    bind(&ch, &aq, &alt, "").await?;
    exchange(&ch, &x, ExchangeKind::Topic, ae(&alt)).await?;
    excl_queue(&ch, &q, FieldTable::default()).await?;
    bind(&ch, &q, &x, "a.*").await?;
    let mut qc = ch
        .basic_consume(
            q.as_str().into(),
            "q".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    ensure_eq!(
        publish(&ch, &x, "a.b", true, Default::default()).await?,
        None
    );
    ensure_eq!(key_of(&mut qc).await?, "a.b");
    // Routed by a CC key alone, it is routed: not for the alternate exchange either.
    let props = BasicProperties::default().with_headers(cc(&["a.c"]));
    ensure_eq!(publish(&ch, &x, "z", true, props).await?, None);
    ensure_eq!(key_of(&mut qc).await?, "z");
    no_delivery(&mut alt_c, 300).await?;
    ensure_eq!(
        publish(&ch, &x, "b.a", true, Default::default()).await?,
        None
    );
    ensure_eq!(key_of(&mut alt_c).await?, "b.a");
    no_delivery(&mut qc, 100).await?;
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x, &alt]).await;
    Ok(())
}

async fn missing_alternate_exchange_returns_312(ctx: Ctx) -> Result<()> {
    let (x, none) = (ctx.name("ae.x"), ctx.name("ae.none"));
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    exchange(&ch, &x, ExchangeKind::Direct, ae(&none)).await?;
    ensure_eq!(
        publish(&ch, &x, "k", true, Default::default()).await?,
        no_route()
    );
    // Not mandatory: dropped, acked, and the channel goes on.
    ensure_eq!(
        publish(&ch, &x, "k", false, Default::default()).await?,
        None
    );
    ensure_eq!(
        publish(&ch, &x, "k", true, Default::default()).await?,
        no_route()
    );
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn alternate_that_cannot_route_returns_312(ctx: Ctx) -> Result<()> {
    let (x, alt, aq) = (ctx.name("ae.x"), ctx.name("ae.alt"), ctx.name("ae.q"));
    let (conn, ch, mut c) = watched(&ctx, &aq).await?;
    exchange(&ch, &alt, ExchangeKind::Direct, FieldTable::default()).await?;
    bind(&ch, &aq, &alt, "only").await?;
    exchange(&ch, &x, ExchangeKind::Direct, ae(&alt)).await?;
    ensure_eq!(
        publish(&ch, &x, "other", true, Default::default()).await?,
        no_route()
    );
    // The alternate exchange routes by the original key.
    ensure_eq!(
        publish(&ch, &x, "only", true, Default::default()).await?,
        None
    );
    ensure_eq!(key_of(&mut c).await?, "only");
    no_delivery(&mut c, 100).await?;
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x, &alt]).await;
    Ok(())
}

async fn alternate_chain_is_followed(ctx: Ctx) -> Result<()> {
    let (x, a1, a2, aq) = (
        ctx.name("ae.x"),
        ctx.name("ae.a1"),
        ctx.name("ae.a2"),
        ctx.name("ae.q"),
    );
    let (conn, ch, mut c) = watched(&ctx, &aq).await?;
    exchange(&ch, &a2, ExchangeKind::Fanout, FieldTable::default()).await?;
    bind(&ch, &aq, &a2, "").await?;
    exchange(&ch, &a1, ExchangeKind::Direct, ae(&a2)).await?;
    exchange(&ch, &x, ExchangeKind::Direct, ae(&a1)).await?;
    ensure_eq!(publish(&ch, &x, "k", true, Default::default()).await?, None);
    let d = next_delivery(&mut c, 5).await?;
    ensure_eq!(
        (d.exchange.as_str(), d.routing_key.as_str()),
        (x.as_str(), "k")
    );
    no_delivery(&mut c, 100).await?;
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x, &a1, &a2]).await;
    Ok(())
}

async fn alternate_cycle_returns_312(ctx: Ctx) -> Result<()> {
    let (x, y, q) = (ctx.name("ae.x"), ctx.name("ae.y"), ctx.name("ae.q"));
    let (conn, ch, mut c) = watched(&ctx, &q).await?;
    // x and y are each other's alternate; neither has a binding that matches.
    exchange(&ch, &x, ExchangeKind::Direct, ae(&y)).await?;
    exchange(&ch, &y, ExchangeKind::Direct, ae(&x)).await?;
    bind(&ch, &q, &y, "y-only").await?;
    ensure_eq!(
        publish(&ch, &x, "k", true, Default::default()).await?,
        no_route()
    );
    // Through the cycle to y, which routes it.
    ensure_eq!(
        publish(&ch, &x, "y-only", true, Default::default()).await?,
        None
    );
    let d = next_delivery(&mut c, 5).await?;
    ensure_eq!(d.exchange.as_str(), x.as_str());
    no_delivery(&mut c, 100).await?;
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x, &y]).await;
    Ok(())
}

async fn alternate_exchange_declare_errors_406(ctx: Ctx) -> Result<()> {
    let (x, a1, a2) = (ctx.name("ae.x"), ctx.name("ae.a1"), ctx.name("ae.a2"));
    let conn = ctx.connect().await?;
    for (v, ty) in [
        (AMQPValue::LongInt(5), "signedint"),
        (AMQPValue::Boolean(true), "bool"),
    ] {
        let ch = conn.create_channel().await?;
        let args = with(FieldTable::default(), "alternate-exchange", v);
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Direct,
                Default::default(),
                args,
            )
            .await;
        let want = format!(
            "PRECONDITION_FAILED - invalid type '{ty}' for arg 'alternate-exchange' in exchange '{x}' in vhost '/'"
        );
        expect_code(res, 406, Some(&want))?;
    }
    let ch = conn.create_channel().await?;
    // An alternate exchange that does not exist yet is fine.
    exchange(&ch, &x, ExchangeKind::Direct, ae(&a1)).await?;
    exchange(&ch, &x, ExchangeKind::Direct, ae(&a1)).await?;
    let head = format!(
        "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/'"
    );
    for (args, why) in [
        (ae(&a2), format!("received '{a2}' but current is '{a1}'")),
        (
            FieldTable::default(),
            format!("received none but current is the value '{a1}' of type 'longstr'"),
        ),
    ] {
        let ch = conn.create_channel().await?;
        let res = ch
            .exchange_declare(
                x.as_str().into(),
                ExchangeKind::Direct,
                Default::default(),
                args,
            )
            .await;
        expect_code(res, 406, Some(&format!("{head}: {why}")))?;
    }
    conn.close(200, "bye".into()).await?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

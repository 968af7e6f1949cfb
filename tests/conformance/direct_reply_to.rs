//! Direct reply-to: the pseudo-queue `amq.rabbitmq.reply-to`, as RabbitMQ documents it.

use anyhow::{Result, bail};
use lapin::{
    BasicProperties, Confirmation,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
};

use crate::harness::{Ctx, amqp_error, consume, ensure_eq, expect_code, next_delivery, scenarios};

scenarios! {
    round_trip,
    pipelined_calls,
    consume_with_acks_406,
    publish_without_reply_consumer_406,
    passive_declare_pseudo_queue,
    reply_to_unknown_suffix_dropped,
    reply_after_requester_left_dropped,
}

const REPLY_TO: &str = "amq.rabbitmq.reply-to";

fn no_ack() -> BasicConsumeOptions {
    BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    }
}

async fn round_trip(ctx: Ctx) -> Result<()> {
    let (sconn, sch) = ctx.open().await?;
    let q = sch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    let mut requests = consume(&sch, q.name().clone(), "".into()).await?;

    let (cconn, cch) = ctx.open().await?;
    let mut replies = cch
        .basic_consume(REPLY_TO.into(), "".into(), no_ack(), Default::default())
        .await?;
    let props = BasicProperties::default()
        .with_reply_to(REPLY_TO.into())
        .with_correlation_id("c-1".into());
    cch.basic_publish(
        "".into(),
        q.name().clone(),
        Default::default(),
        b"ping",
        props,
    )
    .await?;

    let req = next_delivery(&mut requests, 5).await?;
    let reply_to = req
        .properties
        .reply_to()
        .clone()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if !reply_to.starts_with("amq.rabbitmq.reply-to.") || reply_to.len() <= REPLY_TO.len() + 1 {
        bail!("request reply_to rewritten to {reply_to:?}, want amq.rabbitmq.reply-to.<token>");
    }
    ensure_eq!(
        req.properties
            .correlation_id()
            .clone()
            .map(|s| s.to_string()),
        Some("c-1".to_string())
    );
    sch.basic_ack(req.delivery_tag, Default::default()).await?;
    sch.confirm_select(Default::default()).await?;
    let conf = sch
        .basic_publish(
            "".into(),
            reply_to.as_str().into(),
            BasicPublishOptions::default(),
            b"pong",
            BasicProperties::default().with_correlation_id("c-1".into()),
        )
        .await?
        .await?;
    ensure_eq!(
        conf,
        Confirmation::Ack(None),
        "reply to a live requester is routed"
    );
    let rep = next_delivery(&mut replies, 5).await?;
    ensure_eq!(rep.data, b"pong".to_vec());
    ensure_eq!(
        rep.properties
            .correlation_id()
            .clone()
            .map(|s| s.to_string()),
        Some("c-1".to_string())
    );
    ensure_eq!(rep.exchange.as_str(), "");
    ensure_eq!(rep.routing_key.to_string(), reply_to);
    ensure_eq!(rep.redelivered, false);
    // RabbitMQ quirk kept for compatibility: a *mandatory* reply through direct reply-to
    // is delivered and also returned with 312 NO_ROUTE (no queue is involved).
    let conf = sch
        .basic_publish(
            "".into(),
            reply_to.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"pong2",
            BasicProperties::default(),
        )
        .await?
        .await?;
    match conf {
        Confirmation::Ack(Some(r)) if r.reply_code == 312 => {}
        other => bail!("mandatory direct reply: expected ack + return 312, got {other:?}"),
    }
    let rep = crate::harness::next_delivery(&mut replies, 5).await;
    ensure_eq!(rep?.data, b"pong2".to_vec());
    cconn.close(200, "bye".into()).await?;
    sconn.close(200, "bye".into()).await?;
    Ok(())
}

async fn pipelined_calls(ctx: Ctx) -> Result<()> {
    let (sconn, sch) = ctx.open().await?;
    let q = sch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    let mut requests = sch
        .basic_consume(q.name().clone(), "".into(), no_ack(), Default::default())
        .await?;
    let (cconn, cch) = ctx.open().await?;
    let mut replies = cch
        .basic_consume(REPLY_TO.into(), "".into(), no_ack(), Default::default())
        .await?;
    const N: usize = 50;
    for i in 0..N {
        let props = BasicProperties::default()
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id(format!("{i}").into());
        cch.basic_publish(
            "".into(),
            q.name().clone(),
            Default::default(),
            format!("{i}").as_bytes(),
            props,
        )
        .await?;
    }
    let mut tokens = std::collections::HashSet::new();
    for _ in 0..N {
        let req = next_delivery(&mut requests, 5).await?;
        let rt = req.properties.reply_to().clone().expect("reply_to");
        tokens.insert(rt.to_string());
        let props = BasicProperties::default()
            .with_correlation_id(req.properties.correlation_id().clone().expect("cid"));
        sch.basic_publish("".into(), rt, Default::default(), &req.data, props)
            .await?;
    }
    ensure_eq!(tokens.len(), 1, "one reply-to token per channel");
    let mut got = Vec::new();
    for _ in 0..N {
        let rep = next_delivery(&mut replies, 5).await?;
        got.push(String::from_utf8_lossy(&rep.data).to_string());
    }
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    ensure_eq!(got, want);
    cconn.close(200, "bye".into()).await?;
    sconn.close(200, "bye".into()).await?;
    Ok(())
}

async fn consume_with_acks_406(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    let res = ch
        .basic_consume(
            REPLY_TO.into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        406,
        Some("PRECONDITION_FAILED - reply consumer cannot acknowledge"),
    )
}

async fn publish_without_reply_consumer_406(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let props = BasicProperties::default().with_reply_to(REPLY_TO.into());
    let res = async {
        ch.basic_publish(
            "".into(),
            "whatever".into(),
            Default::default(),
            b"x",
            props,
        )
        .await?
        .await
    }
    .await;
    expect_code(
        res,
        406,
        Some("PRECONDITION_FAILED - fast reply consumer does not exist"),
    )?;
    if !conn.status().connected() {
        bail!("channel error closed the connection");
    }
    Ok(())
}

async fn passive_declare_pseudo_queue(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ch
        .queue_declare(
            REPLY_TO.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    ensure_eq!(q.name().as_str(), REPLY_TO);
    // RabbitMQ answers a passive declare of the pseudo-queue with 0 messages, 1 consumer.
    ensure_eq!((q.message_count(), q.consumer_count()), (0, 1));
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn reply_to_unknown_suffix_dropped(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let res = async {
        ch.basic_publish(
            "".into(),
            "amq.rabbitmq.reply-to.bm90LWEtdG9rZW4".into(),
            Default::default(),
            b"x",
            Default::default(),
        )
        .await?
        .await
    }
    .await;
    match res {
        Ok(c) => ensure_eq!(c, Confirmation::Ack(None)),
        Err(e) => bail!(
            "expected a silent drop, got {:?}",
            amqp_error(&e).unwrap_or((0, e.to_string()))
        ),
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn reply_after_requester_left_dropped(ctx: Ctx) -> Result<()> {
    let (sconn, sch) = ctx.open().await?;
    let q = sch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    let mut requests = sch
        .basic_consume(q.name().clone(), "".into(), no_ack(), Default::default())
        .await?;
    let (cconn, cch) = ctx.open().await?;
    let _replies = cch
        .basic_consume(REPLY_TO.into(), "".into(), no_ack(), Default::default())
        .await?;
    let props = BasicProperties::default().with_reply_to(REPLY_TO.into());
    cch.basic_publish("".into(), q.name().clone(), Default::default(), b"x", props)
        .await?;
    let req = next_delivery(&mut requests, 5).await?;
    cconn.close(200, "bye".into()).await?;
    sch.confirm_select(Default::default()).await?;
    let c = sch
        .basic_publish(
            "".into(),
            req.properties.reply_to().clone().expect("reply_to"),
            Default::default(),
            b"late",
            Default::default(),
        )
        .await?
        .await?;
    ensure_eq!(c, Confirmation::Ack(None));
    // The responder's channel is unaffected.
    sch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    sconn.close(200, "bye".into()).await?;
    Ok(())
}

//! Expiry: per-message `expiration`, queue `x-message-ttl`, queue `x-expires`.

use std::time::Duration;

use anyhow::{Result, bail};
use lapin::{
    BasicProperties, Confirmation,
    options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::exchange::publish_confirmed;
use crate::harness::{
    Ctx, WAIT, consume, ensure_eq, expect_code, expect_code_prefix, message_count, next_delivery,
    poll, queue_exists, scenarios,
};

scenarios! {
    per_message_expiration,
    expiration_zero_without_consumer_dropped,
    expiration_zero_with_consumer_delivered,
    queue_message_ttl,
    queue_expires_when_unused,
    queue_expires_not_while_consumed,
    invalid_expiration_406,
    invalid_message_ttl_406,
    expired_message_not_delivered_behind_live_one,
}

fn args(k: &str, v: i32) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(k.into(), AMQPValue::LongInt(v));
    t
}

async fn excl(ch: &lapin::Channel, a: FieldTable) -> Result<String> {
    Ok(ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            a,
        )
        .await?
        .name()
        .to_string())
}

fn exp(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ms.into())
}

async fn per_message_expiration(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let q = excl(&ch, Default::default()).await?;
    publish_confirmed(&ch, "", &q, b"short", exp("200")).await?;
    publish_confirmed(&ch, "", &q, b"long", exp("60000")).await?;
    count_reaches(
        &conn,
        &q,
        1,
        Duration::from_millis(500),
        "the 200 ms message expired",
    )
    .await?;
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
        .expect("get-ok");
    ensure_eq!(m.delivery.data, b"long".to_vec());
    // The expiration property is delivered as published.
    ensure_eq!(
        m.delivery
            .properties
            .expiration()
            .clone()
            .map(|s| s.to_string()),
        Some("60000".to_string())
    );
    ensure_eq!(m.message_count, 0);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn expiration_zero_without_consumer_dropped(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let q = excl(&ch, Default::default()).await?;
    publish_confirmed(&ch, "", &q, b"now-or-never", exp("0")).await?;
    count_reaches(
        &conn,
        &q,
        0,
        Duration::from_millis(100),
        "the message dropped",
    )
    .await?;
    ensure_eq!(
        ch.basic_get(q.as_str().into(), Default::default())
            .await?
            .is_none(),
        true
    );
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn expiration_zero_with_consumer_delivered(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = excl(&ch, Default::default()).await?;
    let ch2 = conn.create_channel().await?;
    let mut c = consume(&ch2, q.as_str().into(), "".into()).await?;
    ch.confirm_select(Default::default()).await?;
    publish_confirmed(&ch, "", &q, b"now", exp("0")).await?;
    let d = next_delivery(&mut c, 5).await?;
    ensure_eq!(d.data, b"now".to_vec());
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn queue_message_ttl(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let q = excl(&ch, args("x-message-ttl", 200)).await?;
    for i in 0..3 {
        publish_confirmed(&ch, "", &q, format!("{i}").as_bytes(), Default::default()).await?;
    }
    ensure_eq!(message_count(&conn, &q).await?, 3);
    poll::try_until(WAIT, "messages expired by x-message-ttl", || {
        let conn = &conn;
        let q = q.clone();
        async move { anyhow::Ok((message_count(conn, &q).await? == 0).then_some(())) }
    })
    .await?;
    ensure_eq!(
        ch.basic_get(q.as_str().into(), Default::default())
            .await?
            .is_none(),
        true
    );
    // The lower of per-message expiration and the queue TTL applies.
    publish_confirmed(&ch, "", &q, b"x", exp("60000")).await?;
    count_reaches(
        &conn,
        &q,
        0,
        Duration::from_millis(500),
        "the queue TTL applied",
    )
    .await?;
    ensure_eq!(
        ch.basic_get(q.as_str().into(), Default::default())
            .await?
            .is_none(),
        true
    );
    conn.close(200, "bye".into()).await?;
    Ok(())
}

/// Waits up to `limit` for `q` to hold `n` ready messages.
async fn count_reaches(
    conn: &lapin::Connection,
    q: &str,
    n: u32,
    limit: Duration,
    what: &str,
) -> Result<()> {
    poll::try_until(limit, what, || async move {
        anyhow::Ok((message_count(conn, q).await? == n).then_some(()))
    })
    .await
}

/// A confirming channel that tells whether a queue is gone without using it.
///
/// A passive declare counts as use and restarts the `x-expires` timer (RabbitMQ, and
/// the built-in broker likewise); a publish does not (RabbitMQ's
/// `queue_expires_sanity_SUITE`: publishing to a queue does not reset the timer). A
/// mandatory publish through the default exchange comes back once the queue is gone.
struct Probe(lapin::Connection, lapin::Channel);

impl Probe {
    async fn open(ctx: &Ctx) -> Result<Self> {
        let (conn, ch) = ctx.open().await?;
        ch.confirm_select(Default::default()).await?;
        Ok(Probe(conn, ch))
    }

    async fn gone(&self, q: &str) -> Result<bool> {
        let confirm = self
            .1
            .basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                b"probe",
                Default::default(),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(returned) => Ok(returned.is_some()),
            other => bail!("probe not acked: {other:?}"),
        }
    }

    async fn close(self) {
        let _ = self.0.close(200, "bye".into()).await;
    }
}

async fn gone_within(ctx: &Ctx, q: &str, what: &str) -> Result<()> {
    let probe = Probe::open(ctx).await?;
    let gone = poll::try_until(WAIT, what, || async {
        anyhow::Ok(probe.gone(q).await?.then_some(()))
    })
    .await;
    probe.close().await;
    gone
}

async fn queue_expires_when_unused(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ctx.name("expires");
    ch.queue_declare(
        q.as_str().into(),
        Default::default(),
        // Long enough that the existence check right after, on a new connection,
        // lands in time on a busy machine.
        args("x-expires", 600),
    )
    .await?;
    if !queue_exists(&ctx, &q).await? {
        bail!("queue gone immediately");
    }
    // A passive declare counts as use and restarts the timer: poll slower than x-expires.
    gone_within(&ctx, &q, "queue deleted by x-expires").await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn queue_expires_not_while_consumed(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ctx.name("expires");
    ch.queue_declare(
        q.as_str().into(),
        Default::default(),
        args("x-expires", 300),
    )
    .await?;
    let c = consume(&ch, q.as_str().into(), "c".into()).await?;
    // Three times x-expires, watched without counting as use.
    let probe = Probe::open(&ctx).await?;
    let expired = poll::never(Duration::from_millis(900), || async {
        anyhow::Ok(probe.gone(&q).await?.then_some(()))
    })
    .await;
    probe.close().await;
    if expired?.is_some() {
        bail!("queue with a consumer expired");
    }
    ch.basic_cancel(c.tag(), Default::default()).await?;
    gone_within(
        &ctx,
        &q,
        "queue deleted by x-expires after its consumer left",
    )
    .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn invalid_expiration_406(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let res = async {
        ch.basic_publish(
            "".into(),
            "nowhere".into(),
            Default::default(),
            b"x",
            exp("soon"),
        )
        .await?
        .await
    }
    .await;
    expect_code(
        res,
        406,
        Some("PRECONDITION_FAILED - invalid expiration 'soon': no_integer"),
    )?;
    let (_conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let res = async {
        ch.basic_publish(
            "".into(),
            "nowhere".into(),
            Default::default(),
            b"x",
            exp("-5"),
        )
        .await?
        .await
    }
    .await;
    expect_code(
        res,
        406,
        Some("PRECONDITION_FAILED - invalid expiration '-5': {value_negative,-5}"),
    )
}

async fn invalid_message_ttl_406(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    let q = ctx.name("badttl");
    let res = ch
        .queue_declare(
            q.as_str().into(),
            Default::default(),
            args("x-message-ttl", -1),
        )
        .await;
    expect_code_prefix(
        res,
        406,
        &format!("PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '{q}' in vhost '/'"),
    )?;
    let (_conn, ch) = ctx.open().await?;
    let res = ch
        .queue_declare(q.as_str().into(), Default::default(), args("x-expires", 0))
        .await;
    expect_code_prefix(
        res,
        406,
        &format!("PRECONDITION_FAILED - invalid arg 'x-expires' for queue '{q}' in vhost '/'"),
    )
}

async fn expired_message_not_delivered_behind_live_one(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let q = excl(&ch, Default::default()).await?;
    publish_confirmed(&ch, "", &q, b"live", Default::default()).await?;
    publish_confirmed(&ch, "", &q, b"dies", exp("100")).await?;
    publish_confirmed(&ch, "", &q, b"live2", Default::default()).await?;
    // Nothing to wait on: RabbitMQ drops an expired message only when it reaches the
    // head, so the count stays 3. The time itself has to pass, on the real clock (a
    // paused clock needs the broker in the test's runtime: its unit tests' job).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
    {
        got.push(String::from_utf8_lossy(&m.delivery.data).to_string());
        if got.len() > 5 {
            break;
        }
    }
    ensure_eq!(got, vec!["live", "live2"]);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

//! Publisher confirms (`confirm.select`, acks with `multiple`) and transactions (`tx.*`).

use anyhow::{Result, bail};
use lapin::{
    Confirmation,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions},
    protocol::{AMQPClass, basic},
};

use crate::harness::{
    Ctx, ensure_eq, exclusive_queue, expect_code, message_count, message_count_on, scenarios,
};
use crate::raw::{Enc, FRAME_BODY, FRAME_HEADER, Raw, frame};

scenarios! {
    confirms_ack_every_publish,
    confirm_acks_cover_all_tags_raw,
    mandatory_return_precedes_ack_raw,
    tx_commit_publishes,
    tx_rollback_discards,
    tx_acks_commit_and_rollback,
    confirm_then_tx_406,
    tx_then_confirm_406,
    tx_commit_without_select_406,
}

async fn confirms_ack_every_publish(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    ch.confirm_select(Default::default()).await?;
    let mut pending = Vec::new();
    for i in 0..500 {
        pending.push(
            ch.basic_publish(
                "".into(),
                q.name().clone(),
                Default::default(),
                format!("{i}").as_bytes(),
                Default::default(),
            )
            .await?,
        );
    }
    for p in pending {
        let c = p.await?;
        if c != Confirmation::Ack(None) {
            bail!("expected plain ack, got {c:?}");
        }
    }
    ensure_eq!(message_count(&conn, q.name().as_str()).await?, 500);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

/// Raw: publish N messages in confirm mode, collect basic.ack frames; every tag 1..=N must
/// be covered exactly once, tags increase, and `multiple` acks cover everything up to them.
async fn confirm_acks_cover_all_tags_raw(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send_method(1, &Enc::method(85, 10).u8(0).bytes())
        .await?;
    match raw.expect_method(5).await? {
        (1, AMQPClass::Confirm(_)) => {}
        other => bail!("expected confirm.select-ok, got {other:?}"),
    }
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
    const N: u64 = 200;
    let mut batch = Vec::new();
    for _ in 0..N {
        batch.extend(publish_frames(1, "", &q, false, b"x"));
    }
    raw.send(&batch).await?;
    let mut acked = 0u64;
    while acked < N {
        match raw.expect_method(5).await? {
            (1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => {
                if a.delivery_tag <= acked {
                    bail!(
                        "ack for tag {} after {} was already covered",
                        a.delivery_tag,
                        acked
                    );
                }
                if !a.multiple && a.delivery_tag != acked + 1 {
                    bail!("single ack for {} skips {}", a.delivery_tag, acked + 1);
                }
                acked = a.delivery_tag;
            }
            other => bail!("expected basic.ack, got {other:?}"),
        }
    }
    ensure_eq!(acked, N);
    Ok(())
}

/// basic.publish + content header + body frames for a small message.
pub fn publish_frames(ch: u16, x: &str, rk: &str, mandatory: bool, body: &[u8]) -> Vec<u8> {
    let mut out = frame(
        crate::raw::FRAME_METHOD,
        ch,
        &Enc::method(60, 40)
            .u16(0)
            .short(x)
            .short(rk)
            .u8(mandatory as u8)
            .bytes(),
    );
    out.extend(frame(
        FRAME_HEADER,
        ch,
        &Enc::default()
            .u16(60)
            .u16(0)
            .u64(body.len() as u64)
            .u16(0)
            .bytes(),
    ));
    if !body.is_empty() {
        out.extend(frame(FRAME_BODY, ch, body));
    }
    out
}

async fn mandatory_return_precedes_ack_raw(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send_method(1, &Enc::method(85, 10).u8(0).bytes())
        .await?;
    raw.expect_method(5).await?;
    raw.send(&publish_frames(
        1,
        "amq.direct",
        &ctx.name("nobody"),
        true,
        b"lost",
    ))
    .await?;
    match raw.expect_method(5).await? {
        (1, AMQPClass::Basic(basic::AMQPMethod::Return(r))) => {
            ensure_eq!(r.reply_code, 312);
            ensure_eq!(r.reply_text.as_str(), "NO_ROUTE");
            ensure_eq!(r.exchange.as_str(), "amq.direct");
        }
        other => bail!("expected basic.return first, got {other:?}"),
    }
    let h = raw.next(5).await?.ok_or_else(|| anyhow::anyhow!("eof"))?;
    ensure_eq!(h.kind, FRAME_HEADER);
    let b = raw.next(5).await?.ok_or_else(|| anyhow::anyhow!("eof"))?;
    ensure_eq!((b.kind, b.payload.clone()), (FRAME_BODY, b"lost".to_vec()));
    match raw.expect_method(5).await? {
        (1, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) => ensure_eq!(a.delivery_tag, 1),
        other => bail!("expected basic.ack after the return, got {other:?}"),
    }
    Ok(())
}

async fn tx_commit_publishes(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    ch.tx_select().await?;
    for i in 0..3 {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            format!("{i}").as_bytes(),
            Default::default(),
        )
        .await?;
    }
    // Asked on the publishing channel, so after the publishes on both brokers (a
    // channel's methods are handled in order; RabbitMQ's channel process casts each
    // publish to the queue before it calls it for the count).
    ensure_eq!(message_count_on(&ch, &q).await?, 0, "visible before commit");
    ch.tx_commit().await?;
    ensure_eq!(message_count(&conn, &q).await?, 3);
    // The channel stays transactional: the next batch also waits for commit.
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"4",
        Default::default(),
    )
    .await?;
    ch.tx_commit().await?;
    ensure_eq!(message_count(&conn, &q).await?, 4);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn tx_rollback_discards(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    ch.tx_select().await?;
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"gone",
        Default::default(),
    )
    .await?;
    ch.tx_rollback().await?;
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"kept",
        Default::default(),
    )
    .await?;
    ch.tx_commit().await?;
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
        .expect("get-ok");
    ensure_eq!(m.delivery.data, b"kept".to_vec());
    ensure_eq!(m.message_count, 0);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn tx_acks_commit_and_rollback(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = exclusive_queue(&ch, "").await?;
    for i in 0..2 {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            format!("{i}").as_bytes(),
            Default::default(),
        )
        .await?;
    }
    let ch2 = conn.create_channel().await?;
    ch2.tx_select().await?;
    let m1 = ch2
        .basic_get(q.as_str().into(), Default::default())
        .await?
        .expect("get-ok");
    let m2 = ch2
        .basic_get(q.as_str().into(), Default::default())
        .await?
        .expect("get-ok");
    ch2.basic_ack(m1.delivery.delivery_tag, BasicAckOptions::default())
        .await?;
    ch2.tx_rollback().await?;
    // Rolled back ack: m1 is still unacked; acking m2 and committing acks only m2.
    ch2.basic_ack(m2.delivery.delivery_tag, BasicAckOptions::default())
        .await?;
    ch2.tx_commit().await?;
    let _ = ch2.close(200, "bye".into()).await;
    // Closing the channel requeues m1 (its ack was rolled back).
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await?;
    let Some(m) = m else {
        bail!("m1 not requeued after rolled-back ack")
    };
    ensure_eq!(
        (
            m.delivery.data.clone(),
            m.delivery.redelivered,
            m.message_count
        ),
        (b"0".to_vec(), true, 0)
    );
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn confirm_then_tx_406(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    expect_code(
        ch.tx_select().await,
        406,
        Some("PRECONDITION_FAILED - cannot switch from confirm to tx mode"),
    )
}

async fn tx_then_confirm_406(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    ch.tx_select().await?;
    expect_code(
        ch.confirm_select(Default::default()).await,
        406,
        Some("PRECONDITION_FAILED - cannot switch from tx to confirm mode"),
    )
}

async fn tx_commit_without_select_406(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let ch = conn.create_channel().await?;
    expect_code(
        ch.tx_commit().await,
        406,
        Some("PRECONDITION_FAILED - channel is not transactional"),
    )?;
    let ch = conn.create_channel().await?;
    expect_code(
        ch.tx_rollback().await,
        406,
        Some("PRECONDITION_FAILED - channel is not transactional"),
    )?;
    let _ = BasicPublishOptions::default();
    Ok(())
}

//! Channel class: open/close, many channels per connection, independent failures, flow,
//! and the connection-level errors a misbehaving client gets for channel misuse.

use anyhow::{Result, bail};
use lapin::{
    options::{ChannelFlowOptions, QueueDeclareOptions},
    protocol::{AMQPClass, channel},
};

use crate::harness::{Ctx, ensure_eq, expect_code, scenarios};
use crate::raw::{Enc, End, Raw};

scenarios! {
    many_channels_fail_independently,
    channel_error_closes_only_that_channel_raw,
    channel_number_reusable_after_close,
    second_channel_open_504,
    method_on_unopened_channel_504,
    channel_above_channel_max_rejected,
    channel_number_above_channel_max_accepted,
    channel_flow_active_true,
    close_ok_for_client_close,
}

async fn many_channels_fail_independently(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let mut chans = Vec::new();
    for _ in 0..10 {
        chans.push(conn.create_channel().await?);
    }
    let missing = ctx.name("missing");
    let res = chans[3]
        .queue_declare(
            missing.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    expect_code(
        res,
        404,
        Some(&format!("NOT_FOUND - no queue '{missing}' in vhost '/'")),
    )?;
    for (i, ch) in chans.iter().enumerate() {
        if i == 3 {
            continue;
        }
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    }
    if !conn.status().connected() {
        bail!("a channel error closed the connection");
    }
    // A fresh channel still opens.
    conn.create_channel().await?;
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

async fn channel_error_closes_only_that_channel_raw(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.open_channel(2).await?;
    let q = ctx.name("missing");
    // queue.declare passive on channel 1
    raw.send_method(
        1,
        &Enc::method(50, 10)
            .u16(0)
            .short(&q)
            .u8(1)
            .empty_table()
            .bytes(),
    )
    .await?;
    match raw.expect_method(5).await? {
        (1, AMQPClass::Channel(channel::AMQPMethod::Close(c))) => {
            ensure_eq!(c.reply_code, 404);
            ensure_eq!(
                c.reply_text.to_string(),
                format!("NOT_FOUND - no queue '{q}' in vhost '/'")
            );
            ensure_eq!((c.class_id, c.method_id), (50, 10));
        }
        other => bail!("expected channel.close on 1, got {other:?}"),
    }
    raw.send_method(1, &Enc::method(20, 41).bytes()).await?;
    // Channel 2 still works: declare a server-named exclusive queue.
    raw.send_method(
        2,
        &Enc::method(50, 10)
            .u16(0)
            .short("")
            .u8(0b1000)
            .empty_table()
            .bytes(),
    )
    .await?;
    match raw.expect_method(5).await? {
        (2, AMQPClass::Queue(lapin::protocol::queue::AMQPMethod::DeclareOk(d))) => {
            if !d.queue.as_str().starts_with("amq.gen-") {
                bail!("server-named queue {:?}", d.queue);
            }
        }
        other => bail!("expected queue.declare-ok on 2, got {other:?}"),
    }
    // Channel 1 can be reopened after close-ok.
    raw.open_channel(1).await
}

async fn channel_number_reusable_after_close(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    for _ in 0..3 {
        raw.open_channel(7).await?;
        raw.send_method(
            7,
            &Enc::method(20, 40)
                .u16(200)
                .short("ok")
                .u16(0)
                .u16(0)
                .bytes(),
        )
        .await?;
        match raw.expect_method(5).await? {
            (7, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {}
            other => bail!("expected channel.close-ok, got {other:?}"),
        }
    }
    Ok(())
}

async fn second_channel_open_504(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send_method(1, &Enc::method(20, 10).short("").bytes())
        .await?;
    match raw.expect_end(5).await? {
        End::Close(504, text, 20, 10) if text == "CHANNEL_ERROR - second 'channel.open' seen" => {
            Ok(())
        }
        other => bail!("expected connection.close 504 second 'channel.open' seen, got {other:?}"),
    }
}

async fn method_on_unopened_channel_504(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.send_method(
        5,
        &Enc::method(50, 10)
            .u16(0)
            .short("")
            .u8(0)
            .empty_table()
            .bytes(),
    )
    .await?;
    match raw.expect_end(5).await? {
        End::Close(504, text, 50, 10) if text == "CHANNEL_ERROR - expected 'channel.open'" => {
            Ok(())
        }
        other => bail!("expected connection.close 504 expected 'channel.open', got {other:?}"),
    }
}

async fn channel_above_channel_max_rejected(ctx: Ctx) -> Result<()> {
    // RabbitMQ enforces channel_max as a count of open channels (a channel *number* above
    // it is accepted); the client may lower it in tune-ok.
    let mut raw = Raw::connect(ctx.addr).await?;
    raw.start().await?;
    raw.start_ok_plain("guest", "guest").await?;
    let mut tune = raw.tune().await?;
    tune.channel_max = 2;
    tune.heartbeat = 0;
    raw.tune_ok_open(tune, "/").await?;
    raw.open_channel(1).await?;
    raw.open_channel(5).await?;
    raw.send_method(3, &Enc::method(20, 10).short("").bytes())
        .await?;
    match raw.expect_end(5).await? {
        End::Close(530, text, 0, 0)
            if text
                == "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)" =>
        {
            Ok(())
        }
        other => bail!("expected connection.close 530 channel_max (0,0), got {other:?}"),
    }
}

async fn channel_number_above_channel_max_accepted(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(2048).await?;
    raw.open_channel(65535).await
}

async fn channel_flow_active_true(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let active = ch.channel_flow(ChannelFlowOptions { active: true }).await?;
    ensure_eq!(active, true);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn close_ok_for_client_close(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.close(200, "bye".into()).await?;
    if ch.status().connected() {
        bail!("channel still connected after close");
    }
    if !conn.status().connected() {
        bail!("connection closed with the channel");
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

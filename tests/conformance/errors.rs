//! Bad input at the socket level: oversized, malformed and out-of-order frames, random
//! bytes. Every case must end in a proper connection.close (or a closed socket), never a
//! hang, and the broker must keep serving other connections. Plus 1,000 connections.

use anyhow::{Result, bail};

use crate::confirm_tx::publish_frames;
use crate::harness::{Ctx, ensure_eq, scenarios};
use crate::raw::{Enc, End, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Raw, frame};

scenarios! {
    frame_larger_than_frame_max_501,
    huge_frame_size_closed_before_buffering_501,
    lowered_frame_max_enforced_501,
    bad_frame_end_501,
    unknown_frame_type_501,
    content_header_without_publish_505,
    body_without_header_505,
    method_while_expecting_body_505,
    heartbeat_on_channel_505,
    unknown_method_540,
    connection_method_on_channel_503,
    random_bytes_after_handshake = 120,
    random_bytes_instead_of_header,
    truncated_frame_then_eof,
    thousand_connections = 180,
}

/// Asserts the broker still accepts a connection and routes a message.
async fn still_serves(ctx: &Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    ch.confirm_select(Default::default()).await?;
    ch.basic_publish(
        "".into(),
        q.name().clone(),
        Default::default(),
        b"alive",
        Default::default(),
    )
    .await?
    .await?;
    let m = ch
        .basic_get(
            q.name().clone(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await?;
    if m.map(|m| m.delivery.data) != Some(b"alive".to_vec()) {
        bail!("broker no longer routes messages");
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn expect_close_code(raw: &mut Raw, code: u16) -> Result<String> {
    match raw.expect_end(10).await? {
        End::Close(c, text, _, _) if c == code => Ok(text),
        other => bail!("expected connection.close {code}, got {other:?}"),
    }
}

async fn frame_larger_than_frame_max_501(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    let size = raw.frame_max as usize + 100;
    let mut payload = Enc::method(60, 40)
        .u16(0)
        .short("")
        .short("q")
        .u8(0)
        .bytes();
    payload.resize(size, 0);
    raw.send(&frame(FRAME_METHOD, 1, &payload)).await?;
    let text = expect_close_code(&mut raw, 501).await?;
    if !text.starts_with("FRAME_ERROR") {
        bail!("reply text {text:?}");
    }
    still_serves(&ctx).await
}

async fn huge_frame_size_closed_before_buffering_501(ctx: Ctx) -> Result<()> {
    // Announce a 1 GiB body frame but send only the 7-byte frame header: the broker must
    // refuse it from the header alone instead of waiting to buffer a gigabyte.
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    let mut hdr = vec![FRAME_BODY];
    hdr.extend_from_slice(&1u16.to_be_bytes());
    hdr.extend_from_slice(&(1u32 << 30).to_be_bytes());
    raw.send(&hdr).await?;
    raw.send(&[0u8; 1024]).await?;
    expect_close_code(&mut raw, 501).await?;
    still_serves(&ctx).await
}

async fn lowered_frame_max_enforced_501(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::connect(ctx.addr).await?;
    raw.start().await?;
    raw.start_ok_plain("guest", "guest").await?;
    let mut tune = raw.tune().await?;
    tune.frame_max = 4096;
    tune.heartbeat = 0;
    raw.tune_ok_open(tune, "/").await?;
    raw.open_channel(1).await?;
    // A frame of exactly frame_max (payload + 8) is fine.
    let q = ctx.name("fm");
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
    let mut out = frame(
        FRAME_METHOD,
        1,
        &Enc::method(60, 40).u16(0).short("").short(&q).u8(0).bytes(),
    );
    out.extend(frame(
        FRAME_HEADER,
        1,
        &Enc::default().u16(60).u16(0).u64(4088).u16(0).bytes(),
    ));
    out.extend(frame(FRAME_BODY, 1, &[7u8; 4088]));
    raw.send(&out).await?;
    // RabbitMQ compares the frame *payload* size with frame_max: a payload of exactly
    // frame_max is accepted, one byte more is a 501.
    let mut out = frame(
        FRAME_METHOD,
        1,
        &Enc::method(60, 40).u16(0).short("").short(&q).u8(0).bytes(),
    );
    out.extend(frame(
        FRAME_HEADER,
        1,
        &Enc::default().u16(60).u16(0).u64(4096).u16(0).bytes(),
    ));
    out.extend(frame(FRAME_BODY, 1, &[7u8; 4096]));
    raw.send(&out).await?;
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
        // Still open: the 4096-byte payload was accepted.
        (
            1,
            lapin::protocol::AMQPClass::Queue(lapin::protocol::queue::AMQPMethod::DeclareOk(_)),
        ) => {}
        other => bail!("expected declare-ok, got {other:?}"),
    }
    let mut out = frame(
        FRAME_METHOD,
        1,
        &Enc::method(60, 40).u16(0).short("").short(&q).u8(0).bytes(),
    );
    out.extend(frame(
        FRAME_HEADER,
        1,
        &Enc::default().u16(60).u16(0).u64(4097).u16(0).bytes(),
    ));
    out.extend(frame(FRAME_BODY, 1, &[7u8; 4097]));
    raw.send(&out).await?;
    let text = expect_close_code(&mut raw, 501).await?;
    if !text.starts_with("FRAME_ERROR") {
        bail!("reply text {text:?}");
    }
    Ok(())
}

async fn bad_frame_end_501(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    let mut f = frame(FRAME_METHOD, 1, &Enc::method(20, 10).short("").bytes());
    let n = f.len();
    f[n - 1] = 0x00;
    raw.send(&f).await?;
    expect_close_code(&mut raw, 501).await?;
    still_serves(&ctx).await
}

async fn unknown_frame_type_501(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.send(&frame(9, 0, b"hello")).await?;
    let end = raw.expect_end(10).await?;
    match end {
        End::Close(501, _, _, _) => Ok(()),
        other => bail!("expected connection.close 501 for frame type 9, got {other:?}"),
    }
}

async fn content_header_without_publish_505(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send(&frame(
        FRAME_HEADER,
        1,
        &Enc::default().u16(60).u16(0).u64(1).u16(0).bytes(),
    ))
    .await?;
    let text = expect_close_code(&mut raw, 505).await?;
    ensure_eq!(
        text,
        "UNEXPECTED_FRAME - expected method frame, got non method frame instead"
    );
    Ok(())
}

async fn body_without_header_505(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send(&frame(
        FRAME_METHOD,
        1,
        &Enc::method(60, 40)
            .u16(0)
            .short("")
            .short("q")
            .u8(0)
            .bytes(),
    ))
    .await?;
    raw.send(&frame(FRAME_BODY, 1, b"body")).await?;
    let text = expect_close_code(&mut raw, 505).await?;
    if !text.starts_with("UNEXPECTED_FRAME") {
        bail!("reply text {text:?}");
    }
    Ok(())
}

async fn method_while_expecting_body_505(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send(&frame(
        FRAME_METHOD,
        1,
        &Enc::method(60, 40)
            .u16(0)
            .short("")
            .short("q")
            .u8(0)
            .bytes(),
    ))
    .await?;
    raw.send(&frame(
        FRAME_HEADER,
        1,
        &Enc::default().u16(60).u16(0).u64(10).u16(0).bytes(),
    ))
    .await?;
    raw.send(&frame(FRAME_METHOD, 1, &Enc::method(85, 10).u8(0).bytes()))
        .await?;
    let text = expect_close_code(&mut raw, 505).await?;
    if !text.starts_with("UNEXPECTED_FRAME") {
        bail!("reply text {text:?}");
    }
    Ok(())
}

async fn heartbeat_on_channel_505(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send(&frame(FRAME_HEARTBEAT, 1, &[])).await?;
    let text = expect_close_code(&mut raw, 505).await?;
    if !text.starts_with("UNEXPECTED_FRAME") {
        bail!("reply text {text:?}");
    }
    Ok(())
}

async fn unknown_method_540(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send_method(1, &Enc::method(60, 999).bytes()).await?;
    match raw.expect_end(10).await? {
        // RabbitMQ 3.10 drops the socket; a connection.close 540/503 is also acceptable.
        End::Eof | End::Close(540, _, _, _) | End::Close(503, _, _, _) => {}
        other => bail!("expected a connection error for an unknown method, got {other:?}"),
    }
    still_serves(&ctx).await
}

async fn connection_method_on_channel_503(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    raw.send_method(1, &Enc::method(10, 40).short("/").short("").u8(0).bytes())
        .await?;
    match raw.expect_end(10).await? {
        End::Close(503, _, _, _) | End::Close(504, _, _, _) => Ok(()),
        other => {
            bail!("expected a connection error for connection.open on channel 1, got {other:?}")
        }
    }
}

/// xorshift64*: deterministic bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

async fn random_bytes_after_handshake(ctx: Ctx) -> Result<()> {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut raw = Raw::handshake(ctx.addr, 0).await?;
        if seed % 2 == 0 {
            raw.open_channel(1).await?;
        }
        let n = 16 + (rng.next() % 2048) as usize;
        let mut junk = rng.bytes(n);
        if seed % 4 == 1 {
            // Plausible frame header with garbage payload.
            junk[0] = 1;
            junk[1] = 0;
            junk[2] = 1;
        }
        let _ = raw.send(&junk).await;
        // Either a connection.close (answered), or the socket closes; never silence.
        match raw.expect_end(10).await {
            Ok(_) => {}
            Err(e) => {
                // A partial frame may leave the broker waiting for the rest: finishing
                // the stream (EOF) must then end the connection.
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut raw.stream).await;
                if raw.expect_eof(10).await.is_err() {
                    bail!("seed {seed}: no close and socket still open: {e}");
                }
            }
        }
    }
    still_serves(&ctx).await
}

async fn random_bytes_instead_of_header(ctx: Ctx) -> Result<()> {
    for seed in 1..=10u64 {
        let mut rng = Rng(seed * 7919);
        let mut raw = Raw::connect(ctx.addr).await?;
        let _ = raw.send(&rng.bytes(64)).await;
        let got = raw.read_raw(5).await?;
        if !(got.is_empty() || got == crate::raw::HEADER) {
            bail!("seed {seed}: unexpected answer {got:?}");
        }
    }
    still_serves(&ctx).await
}

async fn truncated_frame_then_eof(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    let f = publish_frames(1, "", "q", false, b"hello");
    raw.send(&f[..f.len() - 5]).await?;
    // EOF mid-frame; the broker has dealt with it once it closes its end too.
    tokio::io::AsyncWriteExt::shutdown(&mut raw.stream).await?;
    raw.expect_eof(5).await?;
    drop(raw);
    still_serves(&ctx).await
}

async fn open_close(ctx: &Ctx, n: usize) -> Result<()> {
    use futures::StreamExt;
    let results: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(|_| async {
            let conn = ctx.connect().await?;
            let ch = conn.create_channel().await?;
            ch.queue_declare(
                "".into(),
                lapin::options::QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await?;
            conn.close(200, "bye".into()).await?;
            Ok(())
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

async fn thousand_connections(ctx: Ctx) -> Result<()> {
    // Memory across connections is measured where nothing else shares the process:
    // broker/tests/memory.rs. Here: 1,000 open/close cycles, and the broker still serves.
    open_close(&ctx, 1000).await?;
    still_serves(&ctx).await
}

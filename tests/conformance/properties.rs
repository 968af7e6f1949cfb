//! Message properties: all 14 basic properties and header tables of every field type
//! survive the trip, decoded (lapin) and byte for byte (raw content header).

use anyhow::{Result, bail};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, QueueDeclareOptions},
    protocol::{AMQPClass, basic},
    types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable},
};

use crate::confirm_tx::publish_frames;
use crate::harness::{Ctx, ensure_eq, expect_code, scenarios};
use crate::raw::{Enc, FRAME_BODY, FRAME_HEADER, FRAME_METHOD, Raw, frame};

scenarios! {
    all_properties_round_trip,
    header_table_every_field_type,
    no_properties_round_trip,
    content_header_byte_for_byte_raw,
    user_id_must_match_406,
}

fn every_type_table() -> FieldTable {
    let mut inner = FieldTable::default();
    inner.insert("nested".into(), AMQPValue::LongString("deep".into()));
    inner.insert("n".into(), AMQPValue::LongInt(-7));
    let mut t = FieldTable::default();
    t.insert("bool".into(), AMQPValue::Boolean(true));
    t.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    t.insert("u8".into(), AMQPValue::ShortShortUInt(200));
    t.insert("i16".into(), AMQPValue::ShortInt(-1600));
    t.insert("u16".into(), AMQPValue::ShortUInt(60000));
    t.insert("i32".into(), AMQPValue::LongInt(-320000));
    t.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    t.insert("i64".into(), AMQPValue::LongLongInt(-6_400_000_000_000));
    t.insert("f32".into(), AMQPValue::Float(1.5));
    t.insert("f64".into(), AMQPValue::Double(-2.25e100));
    t.insert(
        "decimal".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    t.insert(
        "longstr".into(),
        AMQPValue::LongString("héllo\0world".into()),
    );
    t.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString("two".into()),
            AMQPValue::Boolean(false),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Void])),
        ])),
    );
    t.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    t.insert("table".into(), AMQPValue::FieldTable(inner));
    t.insert("void".into(), AMQPValue::Void);
    t.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2, 255])),
    );
    t.insert("empty".into(), AMQPValue::LongString("".into()));
    t
}

fn full_props() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(every_type_table())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-1".into())
        .with_reply_to("reply.q".into())
        .with_expiration("3600000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("my.type".into())
        .with_user_id("guest".into())
        .with_app_id("conformance".into())
        .with_cluster_id("cluster-x".into())
}

async fn round_trip(ctx: &Ctx, props: BasicProperties) -> Result<BasicProperties> {
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
    ch.basic_publish(
        "".into(),
        q.name().clone(),
        Default::default(),
        b"body",
        props,
    )
    .await?
    .await?;
    let m = ch
        .basic_get(q.name().clone(), BasicGetOptions { no_ack: true })
        .await?
        .expect("get-ok");
    conn.close(200, "bye".into()).await?;
    Ok(m.delivery.properties)
}

async fn all_properties_round_trip(ctx: Ctx) -> Result<()> {
    let sent = full_props();
    let got = round_trip(&ctx, sent.clone()).await?;
    ensure_eq!(got, sent);
    Ok(())
}

async fn header_table_every_field_type(ctx: Ctx) -> Result<()> {
    let sent = BasicProperties::default().with_headers(every_type_table());
    let got = round_trip(&ctx, sent).await?;
    let Some(h) = got.headers() else {
        bail!("headers lost")
    };
    let want = every_type_table();
    for (k, v) in want.inner() {
        ensure_eq!(h.inner().get(k), Some(v), "header {k}");
    }
    ensure_eq!(h.inner().len(), want.inner().len());
    Ok(())
}

async fn no_properties_round_trip(ctx: Ctx) -> Result<()> {
    let got = round_trip(&ctx, BasicProperties::default()).await?;
    ensure_eq!(got, BasicProperties::default());
    Ok(())
}

/// Builds a content header payload by hand: the headers table in a deliberately unsorted
/// key order with every field type, so that any re-encoding shows up.
fn raw_content_header(body_len: u64) -> Vec<u8> {
    let mut tbl = Enc::default();
    tbl.short("zz").u8(b'S').long(b"last");
    tbl.short("aa").u8(b't').u8(1);
    tbl.short("b").u8(b'b').u8(0xF8);
    tbl.short("B").u8(b'B').u8(200);
    tbl.short("s").u8(b's').u16(0xFFF0);
    tbl.short("u").u8(b'u').u16(60000);
    tbl.short("I").u8(b'I').u32(0xFFFF_FF00);
    tbl.short("i").u8(b'i').u32(4_000_000_000);
    tbl.short("l").u8(b'l').u64(0xFFFF_FFFF_FFFF_0000);
    tbl.short("f").u8(b'f').u32(1.5f32.to_bits());
    tbl.short("d").u8(b'd').u64((-2.25f64).to_bits());
    tbl.short("D").u8(b'D').u8(2).u32(12345);
    tbl.short("T").u8(b'T').u64(1_700_000_000);
    tbl.short("V").u8(b'V');
    tbl.short("x").u8(b'x').long(&[0, 1, 2, 255]);
    let mut arr = Enc::default();
    arr.u8(b'I').u32(1).u8(b'S').long(b"two").u8(b'V');
    let arr = arr.bytes();
    tbl.short("A").u8(b'A').long(&arr);
    let mut inner = Enc::default();
    inner
        .short("y")
        .u8(b'S')
        .long(b"deep")
        .short("a")
        .u8(b'I')
        .u32(7);
    let inner = inner.bytes();
    tbl.short("F").u8(b'F').long(&inner);
    let tbl = tbl.bytes();
    let mut p = Enc::default();
    p.u16(60).u16(0).u64(body_len);
    // All 14 property flags set (bits 15..2).
    p.u16(0xFFFC);
    p.short("text/plain").short("utf-8").long(&tbl).u8(2).u8(5);
    p.short("corr")
        .short("rq")
        .short("60000")
        .short("mid")
        .u64(1_700_000_000);
    p.short("t").short("guest").short("app").short("cl");
    p.bytes()
}

async fn content_header_byte_for_byte_raw(ctx: Ctx) -> Result<()> {
    let mut raw = Raw::handshake(ctx.addr, 0).await?;
    raw.open_channel(1).await?;
    let q = ctx.name("bytes");
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
    let header = raw_content_header(4);
    let mut out = frame(
        FRAME_METHOD,
        1,
        &Enc::method(60, 40).u16(0).short("").short(&q).u8(0).bytes(),
    );
    out.extend(frame(FRAME_HEADER, 1, &header));
    out.extend(frame(FRAME_BODY, 1, b"body"));
    raw.send(&out).await?;
    // basic.consume no-ack
    raw.send_method(
        1,
        &Enc::method(60, 20)
            .u16(0)
            .short(&q)
            .short("t")
            .u8(0b0010)
            .empty_table()
            .bytes(),
    )
    .await?;
    match raw.expect_method(5).await? {
        (1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))) => {}
        other => bail!("expected consume-ok, got {other:?}"),
    }
    match raw.expect_method(5).await? {
        (1, AMQPClass::Basic(basic::AMQPMethod::Deliver(_))) => {}
        other => bail!("expected deliver, got {other:?}"),
    }
    let h = raw.next(5).await?.ok_or_else(|| anyhow::anyhow!("eof"))?;
    ensure_eq!(h.kind, FRAME_HEADER);
    if h.payload != header {
        bail!(
            "content header differs:\n sent {:02x?}\n  got {:02x?}",
            header,
            h.payload
        );
    }
    let b = raw.next(5).await?.ok_or_else(|| anyhow::anyhow!("eof"))?;
    ensure_eq!(b.payload, b"body".to_vec());
    let _ = publish_frames;
    Ok(())
}

async fn user_id_must_match_406(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let props = BasicProperties::default().with_user_id("mallory".into());
    let res = async {
        ch.basic_publish("".into(), "nowhere".into(), Default::default(), b"x", props)
            .await?
            .await
    }
    .await;
    expect_code(
        res,
        406,
        Some(
            "PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated user was 'guest'",
        ),
    )
}

//! Argument validation: out-of-range or unknown `queue.declare` arguments, per-message
//! `expiration` and headers-binding `x-match` values that RabbitMQ refuses with 406,
//! beside the edge values it accepts.

use anyhow::Result;
use lapin::{
    BasicProperties,
    options::{ExchangeDeclareOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::exchange::publish_confirmed;
use crate::harness::{Ctx, cleanup, expect_code, expect_code_prefix, scenarios};

scenarios! {
    ttl_args_too_large_406,
    ttl_args_largest_accepted,
    max_length_negative_406,
    queue_type_unknown_406,
    expiration_too_large_406,
    x_match_unknown_406,
}

/// RabbitMQ's largest TTL-like value: ten years in milliseconds.
const MAX_EXPIRY_MS: i64 = 315_360_000_000;

fn table(k: &str, v: AMQPValue) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(k.into(), v);
    t
}

fn auto_delete() -> QueueDeclareOptions {
    QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    }
}

async fn declare_fails(ctx: &Ctx, q: &str, args: FieldTable, text: &str) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    let res = ch.queue_declare(q.into(), auto_delete(), args).await;
    expect_code(res, 406, Some(text))
}

async fn ttl_args_too_large_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("ttl.large");
    for key in ["x-message-ttl", "x-expires"] {
        for v in [i64::MAX, MAX_EXPIRY_MS + 1] {
            let text = format!(
                "PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {{value_too_large,{v}}}"
            );
            declare_fails(&ctx, &q, table(key, AMQPValue::LongLongInt(v)), &text).await?;
        }
    }
    Ok(())
}

async fn ttl_args_largest_accepted(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    let q = ctx.name("ttl.max");
    for key in ["x-message-ttl", "x-expires"] {
        let args = table(key, AMQPValue::LongLongInt(MAX_EXPIRY_MS));
        ch.queue_declare(q.as_str().into(), auto_delete(), args)
            .await?;
        ch.queue_delete(q.as_str().into(), Default::default())
            .await?;
    }
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

async fn max_length_negative_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("maxlen");
    for key in ["x-max-length", "x-max-length-bytes"] {
        let text = format!(
            "PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {{value_negative,-1}}"
        );
        declare_fails(&ctx, &q, table(key, AMQPValue::LongInt(-1)), &text).await?;
        let text = format!(
            "PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': \"expected integer, got longstr\""
        );
        let args = table(key, AMQPValue::LongString("5".into()));
        declare_fails(&ctx, &q, args, &text).await?;
    }
    // Zero is a valid limit.
    let (_conn, ch) = ctx.open().await?;
    let args = table("x-max-length", AMQPValue::LongInt(0));
    ch.queue_declare(q.as_str().into(), auto_delete(), args)
        .await?;
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

async fn queue_type_unknown_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("qtype");
    let text = format!(
        "PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{q}' in vhost '/': \"unsupported queue type 'bogus'\""
    );
    let args = table("x-queue-type", AMQPValue::LongString("bogus".into()));
    declare_fails(&ctx, &q, args, &text).await?;
    let text = format!(
        "PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{q}' in vhost '/': {{unacceptable_type,signedint}}"
    );
    declare_fails(
        &ctx,
        &q,
        table("x-queue-type", AMQPValue::LongInt(5)),
        &text,
    )
    .await?;
    let (_conn, ch) = ctx.open().await?;
    let args = table("x-queue-type", AMQPValue::LongString("classic".into()));
    ch.queue_declare(q.as_str().into(), auto_delete(), args)
        .await?;
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

async fn expiration_too_large_406(ctx: Ctx) -> Result<()> {
    let q = ctx.name("exp.large");
    let (conn, ch) = ctx.open().await?;
    ch.queue_declare(q.as_str().into(), auto_delete(), Default::default())
        .await?;
    ch.confirm_select(Default::default()).await?;
    let max = MAX_EXPIRY_MS.to_string();
    publish_confirmed(&ch, "", &q, b"x", props(&max)).await?;
    let over = (MAX_EXPIRY_MS + 1).to_string();
    for (e, exact) in [
        (over.as_str(), true),
        ("9223372036854775808", false),
        ("18446744073709551616", false),
    ] {
        let ch = conn.create_channel().await?;
        ch.confirm_select(Default::default()).await?;
        let res = async {
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                b"x",
                props(e),
            )
            .await?
            .await
        }
        .await;
        // RabbitMQ wraps long numbers over two lines in its text: compare the head.
        let head = format!("PRECONDITION_FAILED - invalid expiration '{e}': {{value_too_large,");
        if exact {
            let text = format!("{head}{e}}}");
            expect_code(res, 406, Some(&text))?;
        } else {
            expect_code_prefix(res, 406, &head)?;
        }
    }
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

fn props(expiration: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(expiration.into())
}

async fn x_match_unknown_406(ctx: Ctx) -> Result<()> {
    let x = ctx.name("xmatch.x");
    let other = ctx.name("xmatch.d");
    let q = ctx.name("xmatch.q");
    let (conn, ch) = ctx.open().await?;
    let opts = ExchangeDeclareOptions {
        auto_delete: false,
        ..Default::default()
    };
    ch.exchange_declare(
        x.as_str().into(),
        lapin::ExchangeKind::Headers,
        opts,
        Default::default(),
    )
    .await?;
    ch.exchange_declare(
        other.as_str().into(),
        lapin::ExchangeKind::Direct,
        opts,
        Default::default(),
    )
    .await?;
    ch.queue_declare(q.as_str().into(), auto_delete(), Default::default())
        .await?;
    let s = |v: &str| AMQPValue::LongString(v.into());
    for mode in ["all", "any", "all-with-x", "any-with-x"] {
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "".into(),
            Default::default(),
            table("x-match", s(mode)),
        )
        .await?;
    }
    // Other exchange types do not look at x-match.
    ch.queue_bind(
        q.as_str().into(),
        other.as_str().into(),
        "k".into(),
        Default::default(),
        table("x-match", s("bogus")),
    )
    .await?;
    for value in ["bogus", "ANY", ""] {
        let ch = conn.create_channel().await?;
        let res = ch
            .queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                "".into(),
                Default::default(),
                table("x-match", s(value)),
            )
            .await;
        // Erlang prints the empty binary as `<<>>`.
        let shown = match value {
            "" => "<<>>".to_owned(),
            v => format!("<<\"{v}\">>"),
        };
        let text = format!(
            "PRECONDITION_FAILED - Invalid x-match field value {shown}; expected all, any, all-with-x, or any-with-x"
        );
        expect_code(res, 406, Some(&text))?;
    }
    let ch = conn.create_channel().await?;
    let res = ch
        .exchange_bind(
            other.as_str().into(),
            x.as_str().into(),
            "".into(),
            Default::default(),
            table("x-match", s("bogus")),
        )
        .await;
    let text = "PRECONDITION_FAILED - Invalid x-match field value <<\"bogus\">>; expected all, any, all-with-x, or any-with-x";
    expect_code(res, 406, Some(text))?;
    let ch = conn.create_channel().await?;
    let res = ch
        .queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "".into(),
            Default::default(),
            table("x-match", AMQPValue::LongInt(5)),
        )
        .await;
    let text =
        "PRECONDITION_FAILED - Invalid x-match field type signedint (value 5); expected longstr";
    expect_code(res, 406, Some(text))?;
    cleanup(&ctx, &[&q], &[&x, &other]).await;
    Ok(())
}

//! Exchange class: declare (passive, durable, auto-delete, internal), equivalence, delete
//! (if-unused), the predeclared exchanges, routing by type, exchange-to-exchange bindings.

use anyhow::{Result, bail};
use lapin::{
    BasicProperties, Channel, ExchangeKind,
    options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions,
        ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};

use crate::harness::{
    Ctx, cleanup, ensure_eq, exchange_exists, expect_code, expect_code_prefix, scenarios,
};

scenarios! {
    declare_every_type_and_passive,
    passive_missing_404,
    redeclare_other_type_406,
    redeclare_other_durable_406,
    redeclare_same_ok,
    predeclared_exchanges_exist,
    reserved_prefix_403,
    unknown_type_503_connection_error,
    default_exchange_cannot_be_bound_or_deleted,
    direct_routing_same_key_two_queues,
    fanout_ignores_routing_key,
    topic_routing_table,
    headers_match_all_and_any,
    exchange_to_exchange_bindings,
    internal_exchange_refuses_publish,
    delete_if_unused,
    delete_missing_exchange_ok,
    auto_delete_exchange_goes_with_last_binding,
    publish_to_missing_exchange_404,
    amq_predeclared_routing,
}

fn xopts() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions::default()
}

/// Declares a non-durable exchange of `kind` with default options.
async fn declare(ch: &Channel, name: &str, kind: ExchangeKind) -> Result<()> {
    Ok(ch
        .exchange_declare(name.into(), kind, xopts(), Default::default())
        .await?)
}

/// Declares an exclusive server-named queue bound to `x` with each key.
pub async fn bound_queue(ch: &Channel, x: &str, keys: &[&str], args: FieldTable) -> Result<String> {
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
    for k in keys {
        ch.queue_bind(
            q.name().clone(),
            x.into(),
            (*k).into(),
            QueueBindOptions::default(),
            args.clone(),
        )
        .await?;
    }
    Ok(q.name().to_string())
}

/// Publishes with confirms (so routing is complete when it returns).
pub async fn publish_confirmed(
    ch: &Channel,
    x: &str,
    rk: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<()> {
    let c = ch
        .basic_publish(
            x.into(),
            rk.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await?
        .await?;
    if !c.is_ack() {
        bail!("publish not acked: {c:?}");
    }
    Ok(())
}

/// Drains a queue with basic.get (no-ack), returning the bodies in order.
pub async fn drain(ch: &Channel, q: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await?
        {
            Some(m) => out.push(String::from_utf8_lossy(&m.delivery.data).to_string()),
            None => return Ok(out),
        }
    }
    bail!("queue {q} did not drain")
}

async fn declare_every_type_and_passive(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let kinds = [
        ("direct", ExchangeKind::Direct),
        ("fanout", ExchangeKind::Fanout),
        ("topic", ExchangeKind::Topic),
        ("headers", ExchangeKind::Headers),
    ];
    let mut names = Vec::new();
    for (n, k) in kinds.iter() {
        let x = ctx.name(n);
        ch.exchange_declare(x.as_str().into(), k.clone(), xopts(), Default::default())
            .await?;
        // Passive with any type succeeds (the type is not checked on passive).
        ch.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
        names.push(x);
    }
    for x in &names {
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
        if exchange_exists(&ctx, x).await? {
            bail!("exchange {x} still exists after delete");
        }
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn passive_missing_404(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    let x = ctx.name("nox");
    let res = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    expect_code(
        res,
        404,
        Some(&format!("NOT_FOUND - no exchange '{x}' in vhost '/'")),
    )
}

async fn redeclare_other_type_406(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let ch = conn.create_channel().await?;
    let x = ctx.name("x");
    declare(&ch, &x, ExchangeKind::Direct).await?;
    let res = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            xopts(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        406,
        Some(&format!(
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in vhost '/': received 'fanout' but current is 'direct'"
        )),
    )?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn redeclare_other_durable_406(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let ch = conn.create_channel().await?;
    let x = ctx.name("x");
    declare(&ch, &x, ExchangeKind::Direct).await?;
    let res = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    expect_code(
        res,
        406,
        Some(&format!(
            "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{x}' in vhost '/': received 'true' but current is 'false'"
        )),
    )?;
    let ch = conn.create_channel().await?;
    let res = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await;
    expect_code(
        res,
        406,
        Some(&format!(
            "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for exchange '{x}' in vhost '/': received 'true' but current is 'false'"
        )),
    )?;
    cleanup(&ctx, &[], &[&x]).await;
    Ok(())
}

async fn redeclare_same_ok(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let x = ctx.name("x");
    let o = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Topic,
        o,
        Default::default(),
    )
    .await?;
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Topic,
        o,
        Default::default(),
    )
    .await?;
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn predeclared_exchanges_exist(ctx: Ctx) -> Result<()> {
    for (x, k) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        let (conn, ch) = ctx.open().await?;
        ch.exchange_declare(
            x.into(),
            k.clone(),
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
        // Active redeclare with the same (durable) properties is allowed.
        ch.exchange_declare(
            x.into(),
            k,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
        conn.close(200, "bye".into()).await?;
    }
    Ok(())
}

async fn reserved_prefix_403(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    let x = format!("amq.{}", ctx.name("x"));
    let res = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            xopts(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        403,
        Some(&format!(
            "ACCESS_REFUSED - exchange name '{x}' contains reserved prefix 'amq.*'"
        )),
    )
}

async fn unknown_type_503_connection_error(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let x = ctx.name("x");
    let res = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Custom("x-no-such-type".into()),
            xopts(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        503,
        Some("COMMAND_INVALID - unknown exchange type 'x-no-such-type'"),
    )?;
    crate::harness::poll::until_true(crate::harness::WAIT, "connection closed", || {
        !conn.status().connected()
    })
    .await?;
    Ok(())
}

async fn default_exchange_cannot_be_bound_or_deleted(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let ch = conn.create_channel().await?;
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
    let res = ch
        .queue_bind(
            q.name().clone(),
            "".into(),
            "k".into(),
            Default::default(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        403,
        Some("ACCESS_REFUSED - operation not permitted on the default exchange"),
    )?;
    let ch = conn.create_channel().await?;
    let res = ch.exchange_delete("".into(), Default::default()).await;
    expect_code(
        res,
        403,
        Some("ACCESS_REFUSED - operation not permitted on the default exchange"),
    )?;
    let ch = conn.create_channel().await?;
    let res = ch
        .exchange_delete("amq.direct".into(), Default::default())
        .await;
    expect_code_prefix(res, 403, "ACCESS_REFUSED")?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn direct_routing_same_key_two_queues(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let x = ctx.name("direct");
    declare(&ch, &x, ExchangeKind::Direct).await?;
    let q1 = bound_queue(&ch, &x, &["orange", "black"], Default::default()).await?;
    let q2 = bound_queue(&ch, &x, &["black", "green"], Default::default()).await?;
    for rk in ["orange", "black", "green", "blue", ""] {
        publish_confirmed(&ch, &x, rk, rk.as_bytes(), Default::default()).await?;
    }
    ensure_eq!(drain(&ch, &q1).await?, vec!["orange", "black"]);
    ensure_eq!(drain(&ch, &q2).await?, vec!["black", "green"]);
    // Unbind stops routing.
    ch.queue_unbind(
        q1.as_str().into(),
        x.as_str().into(),
        "black".into(),
        FieldTable::default(),
    )
    .await?;
    publish_confirmed(&ch, &x, "black", b"black2", Default::default()).await?;
    ensure_eq!(drain(&ch, &q1).await?, Vec::<String>::new());
    ensure_eq!(drain(&ch, &q2).await?, vec!["black2"]);
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn fanout_ignores_routing_key(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let x = ctx.name("fanout");
    declare(&ch, &x, ExchangeKind::Fanout).await?;
    let q1 = bound_queue(&ch, &x, &[""], Default::default()).await?;
    let q2 = bound_queue(&ch, &x, &["whatever"], Default::default()).await?;
    let q3 = bound_queue(&ch, &x, &["a", "b"], Default::default()).await?;
    publish_confirmed(&ch, &x, "anything", b"m1", Default::default()).await?;
    publish_confirmed(&ch, &x, "", b"m2", Default::default()).await?;
    ensure_eq!(drain(&ch, &q1).await?, vec!["m1", "m2"]);
    ensure_eq!(drain(&ch, &q2).await?, vec!["m1", "m2"]);
    // Two bindings to the same queue still deliver each message once.
    ensure_eq!(drain(&ch, &q3).await?, vec!["m1", "m2"]);
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn topic_routing_table(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let x = ctx.name("topic");
    declare(&ch, &x, ExchangeKind::Topic).await?;
    let bindings: &[(&str, &[&str])] = &[
        ("q_hash", &["#"]),
        ("q_star", &["*"]),
        ("q_a_hash", &["a.#"]),
        ("q_hash_z", &["#.z"]),
        ("q_a_star_z", &["a.*.z"]),
        ("q_a_hash_z", &["a.#.z"]),
        ("q_exact", &["a.b.c"]),
        ("q_empty", &[""]),
        ("q_star_star", &["*.*"]),
        ("q_hash_hash", &["#.#"]),
        ("q_a_star_hash", &["a.*.#"]),
    ];
    let mut queues = Vec::new();
    for (label, keys) in bindings {
        queues.push((
            *label,
            bound_queue(&ch, &x, keys, Default::default()).await?,
        ));
    }
    let keys = [
        "a", "a.b", "a.b.c", "a.z", "a.b.z", "a.b.c.z", "z", "", "b.a", "a..z", "a.b.c.d",
    ];
    for k in keys {
        publish_confirmed(&ch, &x, k, k.as_bytes(), Default::default()).await?;
    }
    let expect: &[(&str, &[&str])] = &[
        (
            "q_hash",
            &[
                "a", "a.b", "a.b.c", "a.z", "a.b.z", "a.b.c.z", "z", "", "b.a", "a..z", "a.b.c.d",
            ],
        ),
        ("q_star", &["a", "z"]),
        (
            "q_a_hash",
            &[
                "a", "a.b", "a.b.c", "a.z", "a.b.z", "a.b.c.z", "a..z", "a.b.c.d",
            ],
        ),
        ("q_hash_z", &["a.z", "a.b.z", "a.b.c.z", "z", "a..z"]),
        ("q_a_star_z", &["a.b.z", "a..z"]),
        ("q_a_hash_z", &["a.z", "a.b.z", "a.b.c.z", "a..z"]),
        ("q_exact", &["a.b.c"]),
        ("q_empty", &[""]),
        ("q_star_star", &["a.b", "a.z", "b.a"]),
        (
            "q_hash_hash",
            &[
                "a", "a.b", "a.b.c", "a.z", "a.b.z", "a.b.c.z", "z", "", "b.a", "a..z", "a.b.c.d",
            ],
        ),
        (
            "q_a_star_hash",
            &["a.b", "a.b.c", "a.z", "a.b.z", "a.b.c.z", "a..z", "a.b.c.d"],
        ),
    ];
    let mut errors = Vec::new();
    for ((label, q), (label2, want)) in queues.iter().zip(expect) {
        assert_eq!(label, label2);
        let got = drain(&ch, q).await?;
        if got != *want {
            errors.push(format!("{label}: got {got:?}, want {want:?}"));
        }
    }
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    if !errors.is_empty() {
        bail!("topic routing: {}", errors.join("; "));
    }
    Ok(())
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

async fn headers_match_all_and_any(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let x = ctx.name("headers");
    declare(&ch, &x, ExchangeKind::Headers).await?;
    let q_all = bound_queue(
        &ch,
        &x,
        &[""],
        table(&[
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
    )
    .await?;
    let q_any = bound_queue(
        &ch,
        &x,
        &[""],
        table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
    )
    .await?;
    let q_default = bound_queue(
        &ch,
        &x,
        &[""],
        table(&[("format", s("pdf")), ("type", s("report"))]),
    )
    .await?;
    let q_int = bound_queue(&ch, &x, &[""], table(&[("n", AMQPValue::LongInt(5))])).await?;
    let q_void = bound_queue(
        &ch,
        &x,
        &[""],
        table(&[("x-match", s("all")), ("flag", AMQPValue::Void)]),
    )
    .await?;
    let q_empty_all = bound_queue(&ch, &x, &[""], table(&[("x-match", s("all"))])).await?;
    let msgs: &[(&str, FieldTable)] = &[
        (
            "both",
            table(&[("format", s("pdf")), ("type", s("report"))]),
        ),
        (
            "both+extra",
            table(&[("format", s("pdf")), ("type", s("report")), ("x", s("y"))]),
        ),
        ("format", table(&[("format", s("pdf"))])),
        ("wrong", table(&[("format", s("zip")), ("type", s("log"))])),
        ("none", FieldTable::default()),
        ("n5", table(&[("n", AMQPValue::LongInt(5))])),
        ("flag", table(&[("flag", s("whatever"))])),
    ];
    for (body, h) in msgs {
        let props = BasicProperties::default().with_headers(h.clone());
        publish_confirmed(&ch, &x, "ignored", body.as_bytes(), props).await?;
    }
    let mut errors = Vec::new();
    for (label, q, want) in [
        ("all", &q_all, vec!["both", "both+extra"]),
        ("any", &q_any, vec!["both", "both+extra", "format"]),
        ("default(all)", &q_default, vec!["both", "both+extra"]),
        ("int", &q_int, vec!["n5"]),
        ("void(presence)", &q_void, vec!["flag"]),
        (
            "empty all",
            &q_empty_all,
            vec![
                "both",
                "both+extra",
                "format",
                "wrong",
                "none",
                "n5",
                "flag",
            ],
        ),
    ] {
        let got = drain(&ch, q).await?;
        if got != want {
            errors.push(format!("{label}: got {got:?}, want {want:?}"));
        }
    }
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    if !errors.is_empty() {
        bail!("headers routing: {}", errors.join("; "));
    }
    Ok(())
}

async fn exchange_to_exchange_bindings(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let src = ctx.name("src");
    let dst = ctx.name("dst");
    declare(&ch, &src, ExchangeKind::Topic).await?;
    declare(&ch, &dst, ExchangeKind::Fanout).await?;
    ch.exchange_bind(
        dst.as_str().into(),
        src.as_str().into(),
        "a.*".into(),
        ExchangeBindOptions::default(),
        Default::default(),
    )
    .await?;
    let q = bound_queue(&ch, &dst, &[""], Default::default()).await?;
    let q_direct = bound_queue(&ch, &src, &["a.x"], Default::default()).await?;
    publish_confirmed(&ch, &src, "a.x", b"ax", Default::default()).await?;
    publish_confirmed(&ch, &src, "b.x", b"bx", Default::default()).await?;
    ensure_eq!(drain(&ch, &q).await?, vec!["ax"]);
    ensure_eq!(drain(&ch, &q_direct).await?, vec!["ax"]);
    // A cycle does not loop or duplicate.
    ch.exchange_bind(
        src.as_str().into(),
        dst.as_str().into(),
        "".into(),
        ExchangeBindOptions::default(),
        Default::default(),
    )
    .await?;
    publish_confirmed(&ch, &src, "a.y", b"ay", Default::default()).await?;
    ensure_eq!(drain(&ch, &q).await?, vec!["ay"]);
    ch.exchange_unbind(
        src.as_str().into(),
        dst.as_str().into(),
        "".into(),
        ExchangeUnbindOptions::default(),
        Default::default(),
    )
    .await?;
    ch.exchange_unbind(
        dst.as_str().into(),
        src.as_str().into(),
        "a.*".into(),
        ExchangeUnbindOptions::default(),
        Default::default(),
    )
    .await?;
    publish_confirmed(&ch, &src, "a.z", b"az", Default::default()).await?;
    ensure_eq!(drain(&ch, &q).await?, Vec::<String>::new());
    // Binding to a missing source is a 404.
    let missing = ctx.name("missing");
    let res = ch
        .exchange_bind(
            dst.as_str().into(),
            missing.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        404,
        Some(&format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")),
    )?;
    cleanup(&ctx, &[], &[&src, &dst]).await;
    conn.close(200, "bye".into()).await.ok();
    Ok(())
}

async fn internal_exchange_refuses_publish(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let src = ctx.name("src");
    let internal = ctx.name("internal");
    declare(&ch, &src, ExchangeKind::Fanout).await?;
    ch.exchange_declare(
        internal.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    ch.exchange_bind(
        internal.as_str().into(),
        src.as_str().into(),
        "".into(),
        Default::default(),
        Default::default(),
    )
    .await?;
    let q = bound_queue(&ch, &internal, &[""], Default::default()).await?;
    // Routed through another exchange: fine.
    publish_confirmed(&ch, &src, "", b"via-src", Default::default()).await?;
    ensure_eq!(drain(&ch, &q).await?, vec!["via-src"]);
    // Published directly: 403, channel closed.
    let ch2 = conn.create_channel().await?;
    ch2.confirm_select(ConfirmSelectOptions::default()).await?;
    let res = async {
        ch2.basic_publish(
            internal.as_str().into(),
            "".into(),
            Default::default(),
            b"direct",
            Default::default(),
        )
        .await?
        .await
    }
    .await;
    expect_code(
        res,
        403,
        Some(&format!(
            "ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'"
        )),
    )?;
    cleanup(&ctx, &[], &[&src, &internal]).await;
    Ok(())
}

async fn delete_if_unused(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let ch = conn.create_channel().await?;
    let x = ctx.name("x");
    declare(&ch, &x, ExchangeKind::Direct).await?;
    let q = bound_queue(&ch, &x, &["k"], Default::default()).await?;
    let res = ch
        .exchange_delete(
            x.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await;
    expect_code(
        res,
        406,
        Some(&format!(
            "PRECONDITION_FAILED - exchange '{x}' in vhost '/' in use"
        )),
    )?;
    let ch = conn.create_channel().await?;
    ch.queue_unbind(
        q.as_str().into(),
        x.as_str().into(),
        "k".into(),
        FieldTable::default(),
    )
    .await?;
    ch.exchange_delete(
        x.as_str().into(),
        ExchangeDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    )
    .await?;
    if exchange_exists(&ctx, &x).await? {
        bail!("exchange still exists");
    }
    // Deleting an exchange removes its bindings: a queue bound to a deleted exchange
    // does not get messages from a new exchange of the same name.
    declare(&ch, &x, ExchangeKind::Direct).await?;
    ch.queue_bind(
        q.as_str().into(),
        x.as_str().into(),
        "k".into(),
        Default::default(),
        Default::default(),
    )
    .await?;
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    declare(&ch, &x, ExchangeKind::Direct).await?;
    ch.confirm_select(Default::default()).await?;
    publish_confirmed(&ch, &x, "k", b"m", Default::default()).await?;
    ensure_eq!(drain(&ch, &q).await?, Vec::<String>::new());
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn delete_missing_exchange_ok(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.exchange_delete(ctx.name("never").as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn auto_delete_exchange_goes_with_last_binding(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let x = ctx.name("ad");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    // Not deleted before it ever had a binding.
    if !exchange_exists(&ctx, &x).await? {
        bail!("auto-delete exchange deleted before first binding");
    }
    let q1 = bound_queue(&ch, &x, &["a"], Default::default()).await?;
    let q2 = bound_queue(&ch, &x, &["b"], Default::default()).await?;
    ch.queue_unbind(
        q1.as_str().into(),
        x.as_str().into(),
        "a".into(),
        FieldTable::default(),
    )
    .await?;
    if !exchange_exists(&ctx, &x).await? {
        bail!("auto-delete exchange deleted while it still had a binding");
    }
    ch.queue_unbind(
        q2.as_str().into(),
        x.as_str().into(),
        "b".into(),
        FieldTable::default(),
    )
    .await?;
    if exchange_exists(&ctx, &x).await? {
        bail!("auto-delete exchange still exists after its last binding went");
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn publish_to_missing_exchange_404(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let x = ctx.name("missing");
    let res = async {
        ch.basic_publish(
            x.as_str().into(),
            "k".into(),
            Default::default(),
            b"m",
            Default::default(),
        )
        .await?
        .await
    }
    .await;
    expect_code(
        res,
        404,
        Some(&format!("NOT_FOUND - no exchange '{x}' in vhost '/'")),
    )?;
    if !conn.status().connected() {
        bail!("a channel error closed the connection");
    }
    Ok(())
}

async fn amq_predeclared_routing(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let key = ctx.name("k");
    let q1 = bound_queue(&ch, "amq.direct", &[&key], Default::default()).await?;
    let q2 = bound_queue(&ch, "amq.topic", &[&format!("{key}.#")], Default::default()).await?;
    publish_confirmed(&ch, "amq.direct", &key, b"d", Default::default()).await?;
    publish_confirmed(
        &ch,
        "amq.topic",
        &format!("{key}.x"),
        b"t",
        Default::default(),
    )
    .await?;
    ensure_eq!(drain(&ch, &q1).await?, vec!["d"]);
    ensure_eq!(drain(&ch, &q2).await?, vec!["t"]);
    // The default exchange routes by queue name.
    publish_confirmed(&ch, "", &q1, b"default", Default::default()).await?;
    ensure_eq!(drain(&ch, &q1).await?, vec!["default"]);
    conn.close(200, "bye".into()).await?;
    Ok(())
}

//! Queue class: declare (server-named, passive, exclusive, auto-delete, durable), counts,
//! equivalence, bind/unbind, purge, delete (if-unused, if-empty), lifetimes.

use anyhow::{Result, bail};
use lapin::{
    options::{BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions},
    types::{AMQPValue, FieldTable},
};

use crate::exchange::publish_confirmed;
use crate::harness::{
    Ctx, WAIT, amqp_error, cleanup, consume, ensure_eq, exclusive_queue, expect_code, poll,
    queue_exists, scenarios,
};

scenarios! {
    server_named_queue,
    declare_ok_reports_counts,
    passive_missing_404,
    redeclare_other_durable_406,
    redeclare_other_arguments_406,
    redeclare_same_ok,
    reserved_prefix_403,
    exclusive_queue_locked_for_other_connections_405,
    exclusive_queue_dies_with_connection,
    auto_delete_when_last_consumer_leaves,
    bind_missing_queue_or_exchange_404,
    purge_returns_count,
    delete_returns_count,
    delete_if_unused_406,
    delete_if_empty_406,
    delete_missing_queue_ok,
    deleted_queue_removes_bindings,
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

async fn server_named_queue(ctx: Ctx) -> Result<()> {
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
    let name = q.name().to_string();
    if !name.starts_with("amq.gen-") || name.len() != 30 {
        bail!("server-named queue {name:?}: want amq.gen- + 22 characters");
    }
    ensure_eq!(q.message_count(), 0);
    ensure_eq!(q.consumer_count(), 0);
    let q2 = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    if q2.name().as_str() == name {
        bail!("two server-named queues share a name");
    }
    // Usable by name through the default exchange.
    ch.confirm_select(Default::default()).await?;
    publish_confirmed(&ch, "", &name, b"m", Default::default()).await?;
    ensure_eq!(
        ch.queue_declare(name.as_str().into(), passive(), Default::default())
            .await?
            .message_count(),
        1
    );
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn declare_ok_reports_counts(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let q = ctx.name("q");
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await?;
    for i in 0..3 {
        publish_confirmed(&ch, "", &q, format!("{i}").as_bytes(), Default::default()).await?;
    }
    let d = ch
        .queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await?;
    ensure_eq!((d.message_count(), d.consumer_count()), (3, 0));
    let ch2 = conn.create_channel().await?;
    ch2.basic_qos(1, Default::default()).await?;
    let _c = ch2
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await?;
    let _c2 = ch2
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await?;
    // Two consumers with prefetch 1 hold two messages unacked: ready count is 1.
    poll::try_until(WAIT, "declare-ok counts 1 ready / 2 consumers", || {
        let ch = ch.clone();
        let q = q.clone();
        async move {
            let d = ch
                .queue_declare(q.as_str().into(), passive(), Default::default())
                .await?;
            anyhow::Ok(((d.message_count(), d.consumer_count()) == (1, 2)).then_some(()))
        }
    })
    .await?;
    ch.queue_delete(q.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await.ok();
    Ok(())
}

async fn passive_missing_404(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ctx.name("missing");
    let res = ch
        .queue_declare(q.as_str().into(), passive(), Default::default())
        .await;
    expect_code(
        res,
        404,
        Some(&format!("NOT_FOUND - no queue '{q}' in vhost '/'")),
    )?;
    if !conn.status().connected() {
        bail!("404 closed the connection");
    }
    Ok(())
}

async fn redeclare_other_durable_406(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let q = ctx.name("q");
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    let res = ch
        .queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await;
    expect_code(
        res,
        406,
        Some(&format!(
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'false' but current is 'true'"
        )),
    )?;
    let ch = conn.create_channel().await?;
    let res = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
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
            "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': received 'true' but current is 'false'"
        )),
    )?;
    // Passive declare ignores the other flags.
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            passive: true,
            auto_delete: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

async fn redeclare_other_arguments_406(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let q = ctx.name("q");
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(60000));
    ch.queue_declare(q.as_str().into(), Default::default(), args.clone())
        .await?;
    let res = ch
        .queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await;
    expect_code(
        res,
        406,
        Some(&format!(
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': received none but current is the value '60000' of type 'signedint'"
        )),
    )?;
    let ch = conn.create_channel().await?;
    let mut other = FieldTable::default();
    other.insert("x-message-ttl".into(), AMQPValue::LongInt(1000));
    let res = ch
        .queue_declare(q.as_str().into(), Default::default(), other)
        .await;
    expect_code(
        res,
        406,
        Some(&format!(
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '{q}' in vhost '/': received '1000' but current is '60000'"
        )),
    )?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(q.as_str().into(), Default::default(), args)
        .await?;
    cleanup(&ctx, &[&q], &[]).await;
    Ok(())
}

async fn redeclare_same_ok(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ctx.name("q");
    let o = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(q.as_str().into(), o, Default::default())
        .await?;
    ch.queue_declare(q.as_str().into(), o, Default::default())
        .await?;
    ch.queue_delete(q.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn reserved_prefix_403(ctx: Ctx) -> Result<()> {
    let (_conn, ch) = ctx.open().await?;
    let q = format!("amq.{}", ctx.name("q"));
    let res = ch
        .queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await;
    expect_code(
        res,
        403,
        Some(&format!(
            "ACCESS_REFUSED - queue name '{q}' contains reserved prefix 'amq.*'"
        )),
    )
}

async fn exclusive_queue_locked_for_other_connections_405(ctx: Ctx) -> Result<()> {
    let owner = ctx.connect().await?;
    let och = owner.create_channel().await?;
    let q = ctx.name("excl");
    exclusive_queue(&och, &q).await?;
    let locked = format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
    );
    let other = ctx.connect().await?;
    let ch = other.create_channel().await?;
    expect_code(
        ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
            .await,
        405,
        Some(&locked),
    )?;
    let ch = other.create_channel().await?;
    expect_code(
        ch.queue_declare(q.as_str().into(), passive(), Default::default())
            .await,
        405,
        Some(&locked),
    )?;
    let ch = other.create_channel().await?;
    expect_code(
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await,
        405,
        Some(&locked),
    )?;
    let ch = other.create_channel().await?;
    expect_code(
        ch.queue_delete(q.as_str().into(), Default::default()).await,
        405,
        Some(&locked),
    )?;
    let ch = other.create_channel().await?;
    expect_code(
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await,
        405,
        Some(&locked),
    )?;
    let ch = other.create_channel().await?;
    expect_code(
        ch.queue_bind(
            q.as_str().into(),
            "amq.direct".into(),
            "k".into(),
            Default::default(),
            Default::default(),
        )
        .await,
        405,
        Some(&locked),
    )?;
    // Publishing to it from another connection is allowed.
    let ch = other.create_channel().await?;
    ch.confirm_select(Default::default()).await?;
    publish_confirmed(&ch, "", &q, b"from-other", Default::default()).await?;
    ensure_eq!(
        och.queue_declare(q.as_str().into(), passive(), Default::default())
            .await?
            .message_count(),
        1
    );
    // The owner, on another channel, may use it freely.
    let och2 = owner.create_channel().await?;
    exclusive_queue(&och2, &q).await?;
    other.close(200, "bye".into()).await.ok();
    owner.close(200, "bye".into()).await?;
    Ok(())
}

async fn exclusive_queue_dies_with_connection(ctx: Ctx) -> Result<()> {
    let owner = ctx.connect().await?;
    let ch = owner.create_channel().await?;
    let q = ctx.name("excl");
    exclusive_queue(&ch, &q).await?;
    // Closing the declaring channel does not delete it.
    let _ = ch.close(200, "bye".into()).await;
    if !queue_exists_owner(&owner, &q).await? {
        bail!("exclusive queue deleted when its channel closed");
    }
    let _ = owner.close(200, "bye".into()).await;
    poll::try_until(WAIT, "exclusive queue deleted with its connection", || {
        let ctx = ctx.clone();
        let q = q.clone();
        async move { anyhow::Ok((!queue_exists(&ctx, &q).await?).then_some(())) }
    })
    .await
}

async fn queue_exists_owner(conn: &lapin::Connection, q: &str) -> Result<bool> {
    let ch = conn.create_channel().await?;
    match ch
        .queue_declare(q.into(), passive(), Default::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if amqp_error(&e).map(|c| c.0) == Some(404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn auto_delete_when_last_consumer_leaves(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ctx.name("ad");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    // Never consumed: stays.
    let deleted = poll::never(std::time::Duration::from_millis(200), || async {
        anyhow::Ok((!queue_exists(&ctx, &q).await?).then_some(()))
    })
    .await?;
    if deleted.is_some() {
        bail!("auto-delete queue deleted before it had a consumer");
    }
    let c1 = consume(&ch, q.as_str().into(), "c1".into()).await?;
    let c2 = consume(&ch, q.as_str().into(), "c2".into()).await?;
    ch.basic_cancel(c1.tag(), Default::default()).await?;
    if !queue_exists(&ctx, &q).await? {
        bail!("auto-delete queue deleted while a consumer remains");
    }
    ch.basic_cancel(c2.tag(), Default::default()).await?;
    poll::try_until(WAIT, "auto-delete queue deleted after last cancel", || {
        let ctx = ctx.clone();
        let q = q.clone();
        async move { anyhow::Ok((!queue_exists(&ctx, &q).await?).then_some(())) }
    })
    .await?;
    // Also when the consumer's channel closes.
    let q2 = ctx.name("ad2");
    ch.queue_declare(
        q2.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    let ch2 = conn.create_channel().await?;
    let _c = consume(&ch2, q2.as_str().into(), "".into()).await?;
    let _ = ch2.close(200, "bye".into()).await;
    poll::try_until(
        WAIT,
        "auto-delete queue deleted when its consumer's channel closed",
        || {
            let ctx = ctx.clone();
            let q = q2.clone();
            async move { anyhow::Ok((!queue_exists(&ctx, &q).await?).then_some(())) }
        },
    )
    .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn bind_missing_queue_or_exchange_404(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let ch = conn.create_channel().await?;
    let q = ctx.name("missingq");
    let res = ch
        .queue_bind(
            q.as_str().into(),
            "amq.direct".into(),
            "k".into(),
            Default::default(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        404,
        Some(&format!("NOT_FOUND - no queue '{q}' in vhost '/'")),
    )?;
    let ch = conn.create_channel().await?;
    let real = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    let x = ctx.name("missingx");
    let res = ch
        .queue_bind(
            real.name().clone(),
            x.as_str().into(),
            "k".into(),
            Default::default(),
            Default::default(),
        )
        .await;
    expect_code(
        res,
        404,
        Some(&format!("NOT_FOUND - no exchange '{x}' in vhost '/'")),
    )?;
    conn.close(200, "bye".into()).await.ok();
    Ok(())
}

async fn purge_returns_count(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let q = exclusive_queue(&ch, "").await?;
    for i in 0..5 {
        publish_confirmed(&ch, "", &q, format!("{i}").as_bytes(), Default::default()).await?;
    }
    ensure_eq!(
        ch.queue_purge(q.as_str().into(), Default::default())
            .await?,
        5
    );
    ensure_eq!(
        ch.queue_declare(q.as_str().into(), passive(), Default::default())
            .await?
            .message_count(),
        0
    );
    ensure_eq!(
        ch.queue_purge(q.as_str().into(), Default::default())
            .await?,
        0
    );
    // Unacked messages are not purged.
    publish_confirmed(&ch, "", &q, b"held", Default::default()).await?;
    let held = ch.basic_get(q.as_str().into(), Default::default()).await?;
    if held.is_none() {
        bail!("basic.get empty");
    }
    ensure_eq!(
        ch.queue_purge(q.as_str().into(), Default::default())
            .await?,
        0
    );
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn delete_returns_count(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let q = ctx.name("q");
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await?;
    for i in 0..4 {
        publish_confirmed(&ch, "", &q, format!("{i}").as_bytes(), Default::default()).await?;
    }
    ensure_eq!(
        ch.queue_delete(q.as_str().into(), Default::default())
            .await?,
        4
    );
    if queue_exists(&ctx, &q).await? {
        bail!("queue still exists");
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn delete_if_unused_406(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let ch = conn.create_channel().await?;
    let q = ctx.name("q");
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await?;
    let cch = conn.create_channel().await?;
    let c = consume(&cch, q.as_str().into(), "".into()).await?;
    let res = ch
        .queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await;
    expect_code(
        res,
        406,
        Some(&format!(
            "PRECONDITION_FAILED - queue '{q}' in vhost '/' in use"
        )),
    )?;
    cch.basic_cancel(c.tag(), Default::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_delete(
        q.as_str().into(),
        QueueDeleteOptions {
            if_unused: true,
            ..Default::default()
        },
    )
    .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn delete_if_empty_406(ctx: Ctx) -> Result<()> {
    let conn = ctx.connect().await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(Default::default()).await?;
    let q = ctx.name("q");
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await?;
    publish_confirmed(&ch, "", &q, b"m", Default::default()).await?;
    let res = ch
        .queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await;
    expect_code(
        res,
        406,
        Some(&format!(
            "PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty"
        )),
    )?;
    let ch = conn.create_channel().await?;
    ch.queue_purge(q.as_str().into(), Default::default())
        .await?;
    ch.queue_delete(
        q.as_str().into(),
        QueueDeleteOptions {
            if_empty: true,
            ..Default::default()
        },
    )
    .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn delete_missing_queue_ok(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ensure_eq!(
        ch.queue_delete(ctx.name("never").as_str().into(), Default::default())
            .await?,
        0
    );
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn deleted_queue_removes_bindings(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let x = ctx.name("x");
    let q = ctx.name("q");
    ch.exchange_declare(
        x.as_str().into(),
        lapin::ExchangeKind::Direct,
        Default::default(),
        Default::default(),
    )
    .await?;
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await?;
    ch.queue_bind(
        q.as_str().into(),
        x.as_str().into(),
        "k".into(),
        Default::default(),
        Default::default(),
    )
    .await?;
    ch.queue_delete(q.as_str().into(), Default::default())
        .await?;
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await?;
    publish_confirmed(&ch, &x, "k", b"m", Default::default()).await?;
    ensure_eq!(
        ch.queue_declare(q.as_str().into(), passive(), Default::default())
            .await?
            .message_count(),
        0
    );
    ch.queue_delete(q.as_str().into(), Default::default())
        .await?;
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

//! The seed's tutorials as assertions: hello world, work queues, publish/subscribe,
//! routing, topics (the whole table), RPC with a callback queue.

use anyhow::{Result, bail};
use lapin::{
    BasicProperties, ExchangeKind,
    options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions},
};

use crate::exchange::{bound_queue, drain, publish_confirmed};
use crate::harness::{Ctx, consume, ensure_eq, next_delivery, no_delivery, scenarios};

scenarios! {
    hello_world,
    work_queue_fair_dispatch_and_redelivery,
    publish_subscribe_fanout,
    routing_direct,
    topics_table,
    rpc_callback_queue,
}

async fn hello_world(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ctx.name("hello");
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await?;
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"Hello World!",
        Default::default(),
    )
    .await?;
    ensure_eq!(
        next_delivery(&mut c, 5).await?.data,
        b"Hello World!".to_vec()
    );
    ch.queue_delete(q.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn work_queue_fair_dispatch_and_redelivery(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    let q = ctx.name("task_queue");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    let (c1, w1) = ctx.open().await?;
    let (c2, w2) = ctx.open().await?;
    for w in [&w1, &w2] {
        w.basic_qos(1, BasicQosOptions::default()).await?;
    }
    let mut a = consume(&w1, q.as_str().into(), "a".into()).await?;
    let mut b = consume(&w2, q.as_str().into(), "b".into()).await?;
    ch.confirm_select(Default::default()).await?;
    for t in ["t1", "t2", "t3", "t4"] {
        publish_confirmed(
            &ch,
            "",
            &q,
            t.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?;
    }
    // prefetch 1: each worker holds exactly one task.
    let da = next_delivery(&mut a, 5).await?;
    let db = next_delivery(&mut b, 5).await?;
    ensure_eq!(
        (da.data.clone(), db.data.clone()),
        (b"t1".to_vec(), b"t2".to_vec())
    );
    ensure_eq!(da.properties.delivery_mode(), &Some(2));
    no_delivery(&mut a, 300).await?;
    // Worker a dies holding t1: it is redelivered to b after b acks t2.
    let _ = c1.close(320, "worker died".into()).await;
    w2.basic_ack(db.delivery_tag, Default::default()).await?;
    let mut got = Vec::new();
    for _ in 0..3 {
        let d = next_delivery(&mut b, 5).await?;
        got.push((String::from_utf8_lossy(&d.data).to_string(), d.redelivered));
        w2.basic_ack(d.delivery_tag, Default::default()).await?;
    }
    ensure_eq!(
        got,
        vec![
            ("t1".to_string(), true),
            ("t3".to_string(), false),
            ("t4".to_string(), false)
        ]
    );
    let _ = c2.close(200, "bye".into()).await;
    ch.queue_delete(q.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn publish_subscribe_fanout(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let x = ctx.name("logs");
    // Published before anyone subscribed: lost (the seed's warning).
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Fanout,
        Default::default(),
        Default::default(),
    )
    .await?;
    publish_confirmed(&ch, &x, "", b"early", Default::default()).await?;
    let q1 = bound_queue(&ch, &x, &[""], Default::default()).await?;
    let q2 = bound_queue(&ch, &x, &[""], Default::default()).await?;
    for q in [&q1, &q2] {
        if !q.starts_with("amq.gen-") {
            bail!("not server-named: {q}");
        }
    }
    publish_confirmed(&ch, &x, "", b"log1", Default::default()).await?;
    publish_confirmed(&ch, &x, "", b"log2", Default::default()).await?;
    ensure_eq!(drain(&ch, &q1).await?, vec!["log1", "log2"]);
    ensure_eq!(drain(&ch, &q2).await?, vec!["log1", "log2"]);
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn routing_direct(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let x = ctx.name("direct_logs");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Direct,
        Default::default(),
        Default::default(),
    )
    .await?;
    let q1 = bound_queue(&ch, &x, &["error"], Default::default()).await?;
    let q2 = bound_queue(&ch, &x, &["info", "warning", "error"], Default::default()).await?;
    for sev in ["info", "warning", "error", "debug"] {
        publish_confirmed(&ch, &x, sev, sev.as_bytes(), Default::default()).await?;
    }
    ensure_eq!(drain(&ch, &q1).await?, vec!["error"]);
    ensure_eq!(drain(&ch, &q2).await?, vec!["info", "warning", "error"]);
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

async fn topics_table(ctx: Ctx) -> Result<()> {
    let (conn, ch) = ctx.open().await?;
    ch.confirm_select(Default::default()).await?;
    let x = ctx.name("topic_logs");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Topic,
        Default::default(),
        Default::default(),
    )
    .await?;
    let q1 = bound_queue(&ch, &x, &["*.orange.*"], Default::default()).await?;
    let q2 = bound_queue(&ch, &x, &["*.*.rabbit", "lazy.#"], Default::default()).await?;
    let keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "quick.brown.fox",
        "orange",
        "quick.orange.male.rabbit",
        "lazy.orange.male.rabbit",
    ];
    for k in keys {
        publish_confirmed(&ch, &x, k, k.as_bytes(), Default::default()).await?;
    }
    ensure_eq!(
        drain(&ch, &q1).await?,
        vec![
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox"
        ]
    );
    ensure_eq!(
        drain(&ch, &q2).await?,
        vec![
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.male.rabbit"
        ]
    );
    ch.exchange_delete(x.as_str().into(), Default::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

async fn rpc_callback_queue(ctx: Ctx) -> Result<()> {
    let rpc_queue = ctx.name("rpc_queue");
    let (sconn, sch) = ctx.open().await?;
    sch.queue_declare(
        rpc_queue.as_str().into(),
        Default::default(),
        Default::default(),
    )
    .await?;
    sch.basic_qos(1, Default::default()).await?;
    let mut requests = consume(&sch, rpc_queue.as_str().into(), "".into()).await?;
    let server = tokio::spawn(async move {
        for _ in 0..3 {
            let d = next_delivery(&mut requests, 10).await?;
            let n: u64 = String::from_utf8_lossy(&d.data).parse()?;
            let props = BasicProperties::default()
                .with_correlation_id(d.properties.correlation_id().clone().unwrap_or_default());
            let reply_to = d.properties.reply_to().clone().unwrap_or_default();
            sch.basic_publish(
                "".into(),
                reply_to,
                Default::default(),
                fib(n).to_string().as_bytes(),
                props,
            )
            .await?;
            sch.basic_ack(d.delivery_tag, Default::default()).await?;
        }
        anyhow::Ok(sch)
    });
    let (cconn, cch) = ctx.open().await?;
    let cb = cch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    let mut replies = cch
        .basic_consume(
            cb.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    for n in [0u64, 10, 30] {
        let corr = uuid::Uuid::new_v4().to_string();
        let props = BasicProperties::default()
            .with_reply_to(cb.name().clone())
            .with_correlation_id(corr.as_str().into());
        cch.basic_publish(
            "".into(),
            rpc_queue.as_str().into(),
            Default::default(),
            n.to_string().as_bytes(),
            props,
        )
        .await?;
        let r = next_delivery(&mut replies, 10).await?;
        ensure_eq!(
            r.properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string()),
            Some(corr)
        );
        ensure_eq!(
            String::from_utf8_lossy(&r.data).to_string(),
            fib(n).to_string()
        );
    }
    let sch = server.await??;
    sch.queue_delete(rpc_queue.as_str().into(), Default::default())
        .await?;
    cconn.close(200, "bye".into()).await?;
    sconn.close(200, "bye".into()).await?;
    Ok(())
}

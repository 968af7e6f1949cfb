//! Tutorial 4, "Routing": the direct exchange `direct_logs`; one subscriber wants only
//! `error`, the other `info`, `warning` and `error` — so `error` (bound by both queues
//! with the same key) reaches both, like a fanout.
//!
//! `cargo run --example tut4_routing`
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use lapin::{Connection, ConnectionProperties, ExchangeKind, options::*};

async fn subscriber(
    conn: &Connection,
    name: &'static str,
    severities: &[&str],
) -> Result<tokio::task::JoinHandle<Vec<String>>> {
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        "direct_logs".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        Default::default(),
    )
    .await?;
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
    for s in severities {
        ch.queue_bind(
            q.name().clone(),
            "direct_logs".into(),
            (*s).into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await?;
    }
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    Ok(tokio::spawn(async move {
        let mut got = Vec::new();
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_millis(700), consumer.next()).await
        {
            let line = format!("{}:{}", d.routing_key, String::from_utf8_lossy(&d.data));
            println!(" [{name}] {line}");
            got.push(line);
        }
        // Close the channel here, so the connection's close never races a channel
        // close lapin would otherwise start when the last handle drops.
        let _ = ch.close(200, "done".into()).await;
        got
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let endpoint = broker::Endpoint::from_env().await?;
    let conn = Connection::connect(endpoint.url(), ConnectionProperties::default()).await?;
    let errors_only = subscriber(&conn, "errors-to-disk", &["error"]).await?;
    let all = subscriber(&conn, "console", &["info", "warning", "error"]).await?;
    let ch = conn.create_channel().await?;
    for (sev, msg) in [
        ("info", "Hello"),
        ("warning", "Careful"),
        ("error", "Run"),
        ("debug", "nobody listens"),
    ] {
        ch.basic_publish(
            "direct_logs".into(),
            sev.into(),
            BasicPublishOptions::default(),
            msg.as_bytes(),
            Default::default(),
        )
        .await?;
        println!(" [x] Sent {sev}:{msg}");
    }
    let (e, a) = (errors_only.await?, all.await?);
    anyhow::ensure!(e == ["error:Run"], "errors-only got {e:?}");
    anyhow::ensure!(
        a == ["info:Hello", "warning:Careful", "error:Run"],
        "console got {a:?}"
    );
    ch.exchange_delete("direct_logs".into(), ExchangeDeleteOptions::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

//! Tutorial 3, "Publish/Subscribe": `emit_log` publishes to the fanout exchange `logs`;
//! two `receive_logs` subscribers each bind a server-named exclusive queue and both get
//! every message.
//!
//! `cargo run --example tut3_publish_subscribe`
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use lapin::{Connection, ConnectionProperties, ExchangeKind, options::*};

async fn receive_logs(
    conn: &Connection,
    name: &'static str,
    n: usize,
) -> Result<tokio::task::JoinHandle<Result<Vec<String>>>> {
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        "logs".into(),
        ExchangeKind::Fanout,
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
    println!(" [{name}] bound server-named queue {}", q.name());
    ch.queue_bind(
        q.name().clone(),
        "logs".into(),
        "".into(),
        QueueBindOptions::default(),
        Default::default(),
    )
    .await?;
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
        while got.len() < n {
            let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
            else {
                break;
            };
            let body = String::from_utf8_lossy(&d?.data).to_string();
            println!(" [{name}] {body}");
            got.push(body);
        }
        // Close the channel here, so the connection's close never races a channel
        // close lapin would otherwise start when the last handle drops.
        ch.close(200, "done".into()).await?;
        Ok(got)
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let endpoint = broker::Endpoint::from_env().await?;
    let conn = Connection::connect(endpoint.url(), ConnectionProperties::default()).await?;
    let logs = [
        "info: Hello World!",
        "warning: disk 80% full",
        "error: out of cheese",
    ];
    let a = receive_logs(&conn, "subscriber-1", logs.len()).await?;
    let b = receive_logs(&conn, "subscriber-2", logs.len()).await?;
    let ch = conn.create_channel().await?;
    for log in logs {
        ch.basic_publish(
            "logs".into(),
            "".into(),
            BasicPublishOptions::default(),
            log.as_bytes(),
            Default::default(),
        )
        .await?;
        println!(" [x] Sent {log:?}");
    }
    let (a, b) = (a.await??, b.await??);
    anyhow::ensure!(
        a == logs && b == logs,
        "each subscriber must get every log: {a:?} {b:?}"
    );
    ch.exchange_delete("logs".into(), ExchangeDeleteOptions::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

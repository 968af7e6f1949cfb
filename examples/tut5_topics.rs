//! Tutorial 5, "Topics": the topic exchange `topic_logs` with Q1 bound to `*.orange.*` and
//! Q2 bound to `*.*.rabbit` and `lazy.#`; publishes the tutorial's whole table of routing
//! keys (including the one-word and four-word ones) and prints which queue got what.
//!
//! `cargo run --example tut5_topics`
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use lapin::{Connection, ConnectionProperties, ExchangeKind, options::*};

/// (routing key, delivered to Q1, delivered to Q2) exactly as the tutorial describes.
const TABLE: &[(&str, bool, bool)] = &[
    ("quick.orange.rabbit", true, true),
    ("lazy.orange.elephant", true, true),
    ("quick.orange.fox", true, false),
    ("lazy.brown.fox", false, true),
    ("lazy.pink.rabbit", false, true),
    ("quick.brown.fox", false, false),
    ("orange", false, false),
    ("quick.orange.male.rabbit", false, false),
    ("lazy.orange.male.rabbit", false, true),
];

async fn queue(
    conn: &Connection,
    name: &'static str,
    keys: &[&str],
) -> Result<tokio::task::JoinHandle<Vec<String>>> {
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        "topic_logs".into(),
        ExchangeKind::Topic,
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
    for k in keys {
        ch.queue_bind(
            q.name().clone(),
            "topic_logs".into(),
            (*k).into(),
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
            println!(" [{name}] {}", d.routing_key);
            got.push(d.routing_key.to_string());
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
    let q1 = queue(&conn, "Q1 *.orange.*", &["*.orange.*"]).await?;
    let q2 = queue(&conn, "Q2 *.*.rabbit lazy.#", &["*.*.rabbit", "lazy.#"]).await?;
    let ch = conn.create_channel().await?;
    for (key, _, _) in TABLE {
        ch.basic_publish(
            "topic_logs".into(),
            (*key).into(),
            BasicPublishOptions::default(),
            key.as_bytes(),
            Default::default(),
        )
        .await?;
    }
    let (got1, got2) = (q1.await?, q2.await?);
    println!("{:<26} {:>4} {:>4}", "routing key", "Q1", "Q2");
    for (key, w1, w2) in TABLE {
        let (g1, g2) = (got1.iter().any(|k| k == key), got2.iter().any(|k| k == key));
        println!(
            "{key:<26} {:>4} {:>4}",
            if g1 { "yes" } else { "-" },
            if g2 { "yes" } else { "-" }
        );
        anyhow::ensure!(
            (g1, g2) == (*w1, *w2),
            "{key}: got ({g1}, {g2}), tutorial says ({w1}, {w2})"
        );
    }
    // "lazy.pink.rabbit" matches both of Q2's bindings but is delivered once.
    anyhow::ensure!(
        got2.iter().filter(|k| *k == "lazy.pink.rabbit").count() == 1,
        "duplicate delivery"
    );
    ch.exchange_delete("topic_logs".into(), ExchangeDeleteOptions::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

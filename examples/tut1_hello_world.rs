//! Tutorial 1, "Hello World": one producer sends a message to the queue `hello`, one
//! consumer prints it. Runs against the built-in broker, or `AMQP_URL` if set.
//!
//! `cargo run --example tut1_hello_world`
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use lapin::{Connection, ConnectionProperties, options::*};

#[tokio::main]
async fn main() -> Result<()> {
    let endpoint = broker::Endpoint::from_env().await?;
    let conn = Connection::connect(endpoint.url(), ConnectionProperties::default()).await?;

    // receive.py: declare the queue (idempotent) and consume with auto-ack.
    let consumer_ch = conn.create_channel().await?;
    consumer_ch
        .queue_declare(
            "hello".into(),
            // Durable: RabbitMQ 4.3 refuses a transient non-exclusive queue.
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    let mut consumer = consumer_ch
        .basic_consume(
            "hello".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    println!(" [*] Waiting for messages.");

    // send.py: publish through the default exchange with routing key = queue name.
    let ch = conn.create_channel().await?;
    ch.basic_publish(
        "".into(),
        "hello".into(),
        BasicPublishOptions::default(),
        b"Hello World!",
        Default::default(),
    )
    .await?;
    println!(" [x] Sent 'Hello World!'");

    let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .context("no message within 5 s")?
        .context("consumer ended")??;
    println!(
        " [x] Received {:?}",
        String::from_utf8_lossy(&delivery.data)
    );
    ch.queue_delete("hello".into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

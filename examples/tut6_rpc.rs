//! Tutorial 6, "RPC" (the seed's raw version, without the framework): a server consumes
//! `rpc_queue` with prefetch 1 and answers `fib(n)` to the request's `reply_to` with the
//! same `correlation_id`; the client uses an exclusive server-named callback queue.
//!
//! `cargo run --example tut6_rpc`
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use lapin::{BasicProperties, Connection, ConnectionProperties, options::*};

fn fib(n: u64) -> u64 {
    match n {
        0 => 0,
        1 => 1,
        n => fib(n - 1) + fib(n - 2),
    }
}

async fn rpc_server(url: String) -> Result<()> {
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        "rpc_queue".into(),
        // Durable: RabbitMQ 4.3 refuses a transient non-exclusive queue.
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    ch.basic_qos(1, BasicQosOptions::default()).await?;
    let mut requests = ch
        .basic_consume(
            "rpc_queue".into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await?;
    println!(" [x] Awaiting RPC requests");
    while let Some(delivery) = requests.next().await {
        let delivery = delivery?;
        let n: u64 = String::from_utf8_lossy(&delivery.data)
            .trim()
            .parse()
            .unwrap_or(0);
        println!(" [.] fib({n})");
        let props = BasicProperties::default().with_correlation_id(
            delivery
                .properties
                .correlation_id()
                .clone()
                .unwrap_or_default(),
        );
        if let Some(reply_to) = delivery.properties.reply_to().clone() {
            ch.basic_publish(
                "".into(),
                reply_to,
                BasicPublishOptions::default(),
                fib(n).to_string().as_bytes(),
                props,
            )
            .await?;
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

struct FibonacciRpcClient {
    channel: lapin::Channel,
    callback_queue: String,
    replies: lapin::Consumer,
}

impl FibonacciRpcClient {
    async fn new(conn: &Connection) -> Result<Self> {
        let channel = conn.create_channel().await?;
        let q = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await?;
        let replies = channel
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
        Ok(Self {
            channel,
            callback_queue: q.name().to_string(),
            replies,
        })
    }

    async fn call(&mut self, n: u64) -> Result<u64> {
        let corr_id = uuid::Uuid::new_v4().to_string();
        let props = BasicProperties::default()
            .with_reply_to(self.callback_queue.as_str().into())
            .with_correlation_id(corr_id.as_str().into());
        self.channel
            .basic_publish(
                "".into(),
                "rpc_queue".into(),
                BasicPublishOptions::default(),
                n.to_string().as_bytes(),
                props,
            )
            .await?;
        loop {
            let d = tokio::time::timeout(Duration::from_secs(10), self.replies.next())
                .await
                .context("no reply within 10 s")?
                .context("reply consumer ended")??;
            if d.properties.correlation_id().as_ref().map(|c| c.as_str()) == Some(corr_id.as_str())
            {
                return Ok(String::from_utf8_lossy(&d.data).parse()?);
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let endpoint = broker::Endpoint::from_env().await?;
    let conn = Connection::connect(endpoint.url(), ConnectionProperties::default()).await?;
    let setup = conn.create_channel().await?;
    setup
        .queue_declare(
            "rpc_queue".into(),
            // Durable: RabbitMQ 4.3 refuses a transient non-exclusive queue.
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    let server = tokio::spawn(rpc_server(endpoint.url().to_string()));
    let mut client = FibonacciRpcClient::new(&conn).await?;
    for n in [1u64, 10, 30] {
        println!(" [x] Requesting fib({n})");
        let v = client.call(n).await?;
        println!(" [.] Got {v}");
        anyhow::ensure!(v == fib(n), "fib({n}) = {v}?");
    }
    server.abort();
    setup
        .queue_delete("rpc_queue".into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

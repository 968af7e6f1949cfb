//! Tutorial 2, "Work queues": a durable `task_queue`, persistent messages, manual acks and
//! `prefetch 1` (fair dispatch) across two workers; one worker dies holding a task, which
//! is redelivered (with `redelivered = true`) to the surviving worker.
//!
//! `cargo run --example tut2_work_queues`
use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use futures::StreamExt;
use lapin::{BasicProperties, Connection, ConnectionProperties, options::*};

const QUEUE: &str = "task_queue";
const DIES_ON: &str = "Third message....";

/// A worker: its own connection, prefetch 1, sleeps one "unit" per dot, then acks.
/// The first worker to receive `DIES_ON` (first delivery) dies: its connection drops
/// without acking, so the broker redelivers the task to the other worker.
async fn worker(
    url: String,
    name: &'static str,
    death: Arc<AtomicBool>,
) -> Result<Vec<(String, bool)>> {
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    ch.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            QUEUE.into(),
            name.into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await?;
    let mut done = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(1500), consumer.next()).await;
        let Ok(Some(delivery)) = next else { break };
        let delivery = delivery?;
        let body = String::from_utf8_lossy(&delivery.data).to_string();
        println!(
            " [{name}] Received {body:?}{}",
            if delivery.redelivered {
                " (redelivered)"
            } else {
                ""
            }
        );
        if body == DIES_ON && !delivery.redelivered && !death.swap(true, Ordering::SeqCst) {
            println!(" [{name}] dies while working on {body:?}");
            drop(consumer);
            conn.close(320, "worker died".into()).await.ok();
            return Ok(done);
        }
        let dots = body.chars().filter(|c| *c == '.').count() as u64;
        tokio::time::sleep(Duration::from_millis(50 * dots)).await;
        println!(" [{name}] Done");
        delivery.ack(BasicAckOptions::default()).await?;
        done.push((body, delivery.redelivered));
    }
    conn.close(200, "bye".into()).await.ok();
    Ok(done)
}

#[tokio::main]
async fn main() -> Result<()> {
    let endpoint = broker::Endpoint::from_env().await?;
    let url = endpoint.url().to_string();
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await?;
    ch.queue_purge(QUEUE.into(), QueuePurgeOptions::default())
        .await?;

    let death = Arc::new(AtomicBool::new(false));
    let w1 = tokio::spawn(worker(url.clone(), "worker-1", death.clone()));
    let w2 = tokio::spawn(worker(url.clone(), "worker-2", death.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // new_task.py: persistent messages (delivery_mode 2) to the durable queue.
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    for task in [
        "First message.",
        "Second message..",
        "Third message....",
        "Fourth message.",
        "Fifth message...",
    ] {
        ch.basic_publish(
            "".into(),
            QUEUE.into(),
            BasicPublishOptions::default(),
            task.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
        println!(" [x] Sent {task:?}");
    }
    let r1 = tokio::time::timeout(Duration::from_secs(20), w1)
        .await
        .context("worker-1 hung")???;
    let r2 = tokio::time::timeout(Duration::from_secs(20), w2)
        .await
        .context("worker-2 hung")???;
    let mut all: BTreeMap<String, bool> = BTreeMap::new();
    for (task, redelivered) in r1.iter().chain(r2.iter()) {
        all.insert(task.clone(), *redelivered);
    }
    println!(
        " [=] worker-1 did {:?}",
        r1.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    println!(
        " [=] worker-2 did {:?}",
        r2.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    anyhow::ensure!(all.len() == 5, "not every task was done: {all:?}");
    anyhow::ensure!(
        all.get(DIES_ON) == Some(&true),
        "the dead worker's task was not redelivered"
    );
    println!(" [=] all 5 tasks done; the dead worker's task was redelivered");
    ch.queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

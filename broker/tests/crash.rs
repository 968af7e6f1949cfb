//! The crash test: publishers with confirms and consumers with acks run while the
//! broker process is killed with SIGKILL and restarted on the same data directory,
//! round after round. At the end every confirmed message has been consumed or is
//! still queued: zero lost. Duplicates are counted (a consumer's ack can be lost with
//! the process, so its message comes back) but never a message that was not published.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::process::BrokerProcess;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use parking_lot::Mutex;

const QUEUE: &str = "crash_test";
const ROUNDS: usize = 6;

/// The broker binary on a data directory.
fn start(dir: &Path) -> anyhow::Result<BrokerProcess> {
    BrokerProcess::on_data_dir(dir)
}

#[derive(Default)]
struct Ledger {
    next_id: u64,
    confirmed: BTreeSet<u64>,
    consumed: BTreeMap<u64, u32>,
}

async fn publisher(url: String, ledger: Arc<Mutex<Ledger>>) -> anyhow::Result<()> {
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < 64 {
            let id = {
                let mut l = ledger.lock();
                l.next_id += 1;
                l.next_id
            };
            let confirm = ch
                .basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    id.to_string().as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            in_flight.push(async move { (id, confirm.await) });
        }
        if let Some((id, confirm)) = in_flight.next().await
            && confirm?.is_ack()
        {
            ledger.lock().confirmed.insert(id);
        }
    }
}

async fn consumer(url: String, ledger: Arc<Mutex<Ledger>>) -> anyhow::Result<()> {
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(50, BasicQosOptions::default()).await?;
    let mut deliveries = ch
        .basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(d) = deliveries.next().await {
        let d = d?;
        let id: u64 = std::str::from_utf8(&d.data)?.parse()?;
        *ledger.lock().consumed.entry(id).or_default() += 1;
        d.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

async fn declare(url: &str) -> anyhow::Result<()> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    conn.close(200, "ok".into()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_repeated_kill_9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    for round in 0..ROUNDS {
        let broker = start(dir.path())?;
        declare(&broker.url).await?;
        let p = tokio::spawn(publisher(broker.url.clone(), Arc::clone(&ledger)));
        // The consumer joins late in some rounds, so messages pile up and stay queued.
        let c = (round % 2 == 0)
            .then(|| tokio::spawn(consumer(broker.url.clone(), Arc::clone(&ledger))));
        let run_for = Duration::from_millis(300 + 150 * (round as u64 % 4));
        tokio::time::sleep(run_for).await;
        broker.kill()?;
        // Both clients now fail on the dead socket; what they recorded stands.
        let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
        if let Some(c) = c {
            let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
        }
        let l = ledger.lock();
        eprintln!(
            "round {round}: published {} confirmed {} consumed {}",
            l.next_id,
            l.confirmed.len(),
            l.consumed.len()
        );
    }
    // Drain what is left after the last kill.
    let broker = start(dir.path())?;
    let conn = Connection::connect(&broker.url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    while let Some(m) = ch
        .basic_get(QUEUE.into(), BasicGetOptions { no_ack: true })
        .await?
    {
        let id: u64 = std::str::from_utf8(&m.delivery.data)?.parse()?;
        *ledger.lock().consumed.entry(id).or_default() += 1;
    }
    broker.kill()?;
    let l = ledger.lock();
    let lost: Vec<u64> = l
        .confirmed
        .iter()
        .filter(|id| !l.consumed.contains_key(id))
        .copied()
        .collect();
    let duplicates = l.consumed.values().filter(|&&n| n > 1).count();
    let unknown = l
        .consumed
        .keys()
        .filter(|&&id| id == 0 || id > l.next_id)
        .count();
    eprintln!(
        "{ROUNDS} kills in {:?}: {} confirmed, {} consumed, {} lost, {} duplicates",
        started.elapsed(),
        l.confirmed.len(),
        l.consumed.len(),
        lost.len(),
        duplicates
    );
    assert!(l.confirmed.len() > 100, "the test must confirm a real load");
    assert!(lost.is_empty(), "confirmed messages lost: {lost:?}");
    assert_eq!(unknown, 0, "a message nobody published was consumed");
    Ok(())
}

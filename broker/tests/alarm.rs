//! The disk alarm, seen from lapin clients: a publishing connection is blocked (with
//! `connection.blocked`, reason "low on disk") while the store is over
//! `max_disk_bytes` or its writes fail; consumers keep being served meanwhile; once
//! the alarm clears the publisher gets `connection.unblocked` and its publishes are
//! confirmed, and nothing confirmed is lost.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Event};
use tokio::sync::mpsc;
use tokio::time::timeout;

const BODY: usize = 1024;

async fn connect(b: &broker::BrokerHandle) -> anyhow::Result<Connection> {
    Ok(Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Message `i`: its number, padded to [`BODY`] bytes.
fn body(i: u32) -> Vec<u8> {
    let mut b = i.to_be_bytes().to_vec();
    b.resize(BODY, b'x');
    b
}

fn number(data: &[u8]) -> anyhow::Result<u32> {
    let head: [u8; 4] = data.get(..4).context("short body")?.try_into()?;
    Ok(u32::from_be_bytes(head))
}

/// Publishes persistent messages `range` to `q` one at a time, each waiting for its
/// confirm, and reports each confirmed number.
fn spawn_publisher(
    ch: Channel,
    range: std::ops::Range<u32>,
    confirmed: mpsc::UnboundedSender<u32>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        for i in range {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    "q".into(),
                    BasicPublishOptions::default(),
                    &body(i),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
            anyhow::ensure!(confirm.is_ack(), "message {i} was nacked");
            let _ = confirmed.send(i);
        }
        Ok(())
    })
}

/// Waits for the next blocked (`true`) or unblocked (`false`) event.
async fn next_blocking_event(
    events: &mut (impl futures::Stream<Item = Event> + Unpin),
    within: Duration,
) -> anyhow::Result<(bool, String)> {
    timeout(within, async {
        while let Some(ev) = events.next().await {
            match ev {
                Event::ConnectionBlocked(reason) => return Ok((true, reason)),
                Event::ConnectionUnblocked => return Ok((false, String::new())),
                Event::Error(e) => anyhow::bail!("connection error: {e}"),
                _ => {}
            }
        }
        anyhow::bail!("event stream ended")
    })
    .await
    .context("no connection.blocked / connection.unblocked in time")?
}

fn drain(rx: &mut mpsc::UnboundedReceiver<u32>, into: &mut Vec<u32>) {
    while let Ok(i) = rx.try_recv() {
        into.push(i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_blocked_over_max_disk_bytes_until_consumers_drain() -> anyhow::Result<()> {
    const TOTAL: u32 = 200; // 200 KiB of bodies: the 64 KiB limit must be hit
    let dir = tempfile::tempdir()?;
    let b = broker::Broker::builder()
        .data_dir(dir.path())
        .max_disk_bytes(64 * 1024)
        .start()
        .await?;

    let publisher_conn = connect(&b).await?;
    let mut events = publisher_conn.events_listener();
    let pch = publisher_conn.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    pch.queue_declare("q".into(), durable(), FieldTable::default())
        .await?;
    let (tx, mut confirmed_rx) = mpsc::unbounded_channel();
    // The test keeps its own handle: a channel dropped with the task would close itself
    // and race with the connection close at the end (lapin then fails that close).
    let publisher = spawn_publisher(pch.clone(), 0..TOTAL, tx);

    // Nobody consumes: the store grows past the limit and the publisher is blocked.
    let (blocked, reason) = next_blocking_event(&mut events, Duration::from_secs(20)).await?;
    anyhow::ensure!(blocked, "expected connection.blocked first");
    assert_eq!(reason, "low on disk");
    assert!(publisher_conn.status().blocked());

    // Its publishes stop being confirmed. The publisher waits for each confirm, so
    // only the publish that blocked it was in flight: its confirm may still come.
    let mut confirmed = Vec::new();
    drain(&mut confirmed_rx, &mut confirmed);
    if let Ok(Some(i)) = timeout(Duration::from_millis(300), confirmed_rx.recv()).await {
        confirmed.push(i);
    }
    let at_block = confirmed.len();
    let more = timeout(Duration::from_millis(700), confirmed_rx.recv()).await;
    assert!(more.is_err(), "confirms went on while blocked: {more:?}");
    assert!(at_block < TOTAL as usize);
    assert!(at_block >= 40, "blocked early: {at_block} confirmed");
    assert!(!publisher.is_finished());

    // Another connection consumes: it is served while the alarm is on, and drains.
    let consumer_conn = connect(&b).await?;
    let cch = consumer_conn.create_channel().await?;
    cch.basic_qos(20, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            "q".into(),
            "drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut seen = HashSet::new();
    let mut while_blocked = 0usize;
    let mut unblocked = false;
    timeout(Duration::from_secs(60), async {
        while seen.len() < TOTAL as usize {
            tokio::select! {
                d = consumer.next() => {
                    let d = d.context("consumer cancelled")??;
                    let i = number(&d.data)?;
                    anyhow::ensure!(seen.insert(i), "message {i} delivered twice");
                    if publisher_conn.status().blocked() {
                        while_blocked += 1;
                    }
                    d.ack(BasicAckOptions::default()).await?;
                }
                ev = next_blocking_event(&mut events, Duration::from_secs(60)), if !unblocked => {
                    let (blocked, _) = ev?;
                    unblocked = !blocked;
                }
            }
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("drained only {} messages", seen.len()))??;
    assert!(unblocked, "no connection.unblocked");
    assert!(
        while_blocked > 0,
        "the consumer got nothing while the publisher was blocked"
    );

    // Every publish was confirmed once the alarm cleared, and each message came once.
    timeout(Duration::from_secs(10), publisher)
        .await
        .context("publisher still stuck")???;
    drain(&mut confirmed_rx, &mut confirmed);
    assert_eq!(confirmed, (0..TOTAL).collect::<Vec<_>>());
    assert_eq!(seen, (0..TOTAL).collect::<HashSet<_>>());
    let q = cch
        .queue_declare(
            "q".into(),
            QueueDeclareOptions {
                passive: true,
                ..durable()
            },
            FieldTable::default(),
        )
        .await?;
    assert_eq!(q.message_count(), 0);

    publisher_conn.close(200, "bye".into()).await?;
    consumer_conn.close(200, "bye".into()).await?;
    b.shutdown().await;
    Ok(())
}

/// The directory of the only durable queue under `data`.
fn only_queue_dir(data: &Path) -> anyhow::Result<PathBuf> {
    let mut dirs = std::fs::read_dir(data.join("queues"))?
        .map(|e| Ok(e?.path()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(dirs.len() == 1, "expected one queue directory: {dirs:?}");
    dirs.pop().context("no queue directory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_store_writes_block_publishers_and_confirm_nothing_until_they_succeed()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Heartbeats every second: a blocked client (lapin sends nothing while blocked)
    // must not be dropped for missing them.
    let limits = broker::Limits {
        heartbeat: 1,
        ..broker::Limits::default()
    };
    let b = broker::Broker::builder()
        .data_dir(dir.path())
        .limits(limits.clone())
        .start()
        .await?;
    let conn = connect(&b).await?;
    let mut events = conn.events_listener();
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare("q".into(), durable(), FieldTable::default())
        .await?;

    // Make the queue's writes fail: a file where its (still empty) directory was.
    let qdir = only_queue_dir(dir.path())?;
    std::fs::remove_dir(&qdir)?;
    std::fs::write(&qdir, b"not a directory")?;

    let (tx, mut confirmed_rx) = mpsc::unbounded_channel();
    let first = spawn_publisher(ch.clone(), 0..1, tx.clone());
    let confirm = timeout(Duration::from_millis(800), confirmed_rx.recv()).await;
    assert!(confirm.is_err(), "confirmed a failed write: {confirm:?}");
    // The alarm is on: the next publish blocks the connection.
    let rest = spawn_publisher(ch.clone(), 1..2, tx.clone());
    let (blocked, reason) = next_blocking_event(&mut events, Duration::from_secs(10)).await?;
    anyhow::ensure!(blocked, "expected connection.blocked first");
    assert_eq!(reason, "low on disk");
    // Blocked for over two heartbeat intervals (the broker's heartbeat deadline, on
    // the real clock): nothing confirmed, still connected.
    let confirm = timeout(Duration::from_secs(3), confirmed_rx.recv()).await;
    assert!(confirm.is_err(), "confirmed a failed write: {confirm:?}");
    assert!(conn.status().connected(), "a blocked client was dropped");

    // Space returns: the writes succeed, the confirms go out, publishing resumes.
    std::fs::remove_file(&qdir)?;
    let (blocked, _) = next_blocking_event(&mut events, Duration::from_secs(10)).await?;
    anyhow::ensure!(!blocked, "expected connection.unblocked");
    timeout(Duration::from_secs(10), first)
        .await
        .context("first publish never confirmed")???;
    timeout(Duration::from_secs(10), rest)
        .await
        .context("second publish never confirmed")???;
    timeout(
        Duration::from_secs(10),
        spawn_publisher(ch.clone(), 2..5, tx),
    )
    .await
    .context("later publishes not confirmed")???;
    let mut confirmed = Vec::new();
    drain(&mut confirmed_rx, &mut confirmed);
    confirmed.sort_unstable();
    assert_eq!(confirmed, vec![0, 1, 2, 3, 4]);
    conn.close(200, "bye".into()).await?;
    b.shutdown().await;

    // Nothing confirmed was lost: all of it is on disk.
    let b = broker::Broker::builder()
        .data_dir(dir.path())
        .start()
        .await?;
    let conn = connect(&b).await?;
    let ch = conn.create_channel().await?;
    let mut got = Vec::new();
    while let Some(m) = ch
        .basic_get("q".into(), BasicGetOptions { no_ack: true })
        .await?
    {
        got.push(number(&m.delivery.data)?);
        anyhow::ensure!(got.len() <= 5, "more messages than published: {got:?}");
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    conn.close(200, "bye".into()).await?;
    b.shutdown().await;
    Ok(())
}

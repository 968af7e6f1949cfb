//! The memory alarm under a flood, with the real `broker` binary (its jemalloc
//! statistics are what the alarm measures): a publisher pushes far more than the
//! high-water mark into a queue nobody consumes. It gets `connection.blocked` ("low on
//! memory"), the broker's resident memory stays bounded near the mark instead of
//! holding the whole flood, and once a consumer drains the queue the publisher is
//! unblocked and finishes. Every confirmed message is consumed: none is lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

mod common;

use anyhow::Context;
use common::process::BrokerProcess;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, Event};
use tokio::time::{sleep, timeout};

/// The high-water mark given to the broker.
const WATERMARK_MIB: u64 = 48;
/// Messages of [`BODY`] bytes: 160 MiB in all, over three times the mark.
const TOTAL: u64 = 5120;
const BODY: usize = 32 * 1024;

fn body(i: u64) -> Vec<u8> {
    let mut b = i.to_be_bytes().to_vec();
    b.resize(BODY, b'x');
    b
}

/// Publishes `0..TOTAL` with up to 128 unconfirmed, counting confirms.
async fn publish_all(conn: &Connection, confirmed: Arc<AtomicU64>) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut in_flight = FuturesUnordered::new();
    for i in 0..TOTAL {
        if in_flight.len() >= 128
            && let Some(confirm) = in_flight.next().await
        {
            let confirm: lapin::Confirmation = confirm?;
            anyhow::ensure!(confirm.is_ack(), "a publish was nacked");
            confirmed.fetch_add(1, Ordering::Relaxed);
        }
        let confirm = ch
            .basic_publish(
                "".into(),
                "flood".into(),
                BasicPublishOptions::default(),
                &body(i),
                BasicProperties::default(),
            )
            .await?;
        in_flight.push(confirm);
    }
    while let Some(confirm) = in_flight.next().await {
        anyhow::ensure!(confirm?.is_ack(), "a publish was nacked");
        confirmed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_held_at_the_memory_high_watermark_and_nothing_is_lost() -> anyhow::Result<()> {
    let broker = Arc::new(BrokerProcess::start([
        "--listen",
        "127.0.0.1:0",
        "--management-listen",
        "off",
        "--log",
        "warn",
        "--memory-high-watermark",
        &format!("{WATERMARK_MIB}MiB"),
    ])?);
    let idle = broker.rss_bytes().context("no RSS for the broker")?;

    // Sample the broker's resident memory all along.
    let peak = Arc::new(AtomicU64::new(idle));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (broker, peak, sampling) = (broker.clone(), peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(rss) = broker.rss_bytes() {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let conn = Connection::connect(&broker.url, ConnectionProperties::default()).await?;
    let mut events = conn.events_listener();
    conn.create_channel()
        .await?
        .queue_declare(
            "flood".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let confirmed = Arc::new(AtomicU64::new(0));
    let publisher = {
        let confirmed = confirmed.clone();
        tokio::spawn(async move {
            let r = publish_all(&conn, confirmed).await;
            (conn, r)
        })
    };

    // Nobody consumes: the queue grows to the mark and the publisher is blocked.
    let reason = timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.next().await {
            match ev {
                Event::ConnectionBlocked(reason) => return Ok(reason),
                Event::Error(e) => anyhow::bail!("connection error: {e}"),
                _ => {}
            }
        }
        anyhow::bail!("event stream ended")
    })
    .await
    .context("no connection.blocked within 30 s")??;
    assert_eq!(reason, "low on memory");

    // While blocked, the flood stops: confirms stop and memory stays near the mark.
    // Up to 128 publishes were in flight when it was blocked and the broker may still
    // confirm those it had taken; how many is not visible from here, so they get a
    // grace period. After it the count must not move for a second.
    sleep(Duration::from_millis(500)).await;
    let at_block = confirmed.load(Ordering::Relaxed);
    let moved = common::poll::never(Duration::from_millis(1000), || async {
        let now = confirmed.load(Ordering::Relaxed);
        Ok::<_, std::convert::Infallible>((now != at_block).then_some(now))
    })
    .await;
    assert_eq!(
        moved,
        Ok(None),
        "publishes were confirmed while blocked (after {at_block})"
    );
    let held = at_block * BODY as u64;
    assert!(
        held >= (WATERMARK_MIB - 8) << 20 && held < TOTAL * BODY as u64 / 2,
        "blocked after {} MiB of confirmed messages, watermark {WATERMARK_MIB} MiB",
        held >> 20
    );
    assert!(!publisher.is_finished());

    // A consumer drains: the publisher is unblocked (perhaps blocked again as the
    // queue refills) and finishes; every message arrives exactly once.
    let cconn = Connection::connect(&broker.url, ConnectionProperties::default()).await?;
    let cch = cconn.create_channel().await?;
    cch.basic_qos(256, BasicQosOptions::default()).await?;
    let mut deliveries = cch
        .basic_consume(
            "flood".into(),
            "drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut seen = BTreeSet::new();
    let drained = timeout(Duration::from_secs(60), async {
        while (seen.len() as u64) < TOTAL {
            let d = deliveries.next().await.context("consumer ended")??;
            let head: [u8; 8] = d.data.get(..8).context("short body")?.try_into()?;
            anyhow::ensure!(d.data.len() == BODY, "body changed size");
            anyhow::ensure!(
                seen.insert(u64::from_be_bytes(head)),
                "a message came twice"
            );
            d.ack(BasicAckOptions::default()).await?;
        }
        Ok(())
    })
    .await;
    drained.with_context(|| format!("drained only {} of {TOTAL}", seen.len()))??;
    let (conn, published) = timeout(Duration::from_secs(30), publisher)
        .await
        .context("publisher did not finish after the drain")??;
    published?;
    assert_eq!(confirmed.load(Ordering::Relaxed), TOTAL);
    assert_eq!(seen, (0..TOTAL).collect::<BTreeSet<_>>());
    assert!(!conn.status().blocked(), "still blocked after the drain");

    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let peak = peak.load(Ordering::Relaxed);
    // Without the alarm the broker would hold the whole 160 MiB flood. Resident memory
    // runs above the allocated bytes the alarm measures while the queue churns (jemalloc
    // purges freed pages within seconds, not at once): seen here, about 75 MiB when
    // blocked and a peak near 100 MiB during the drain, on an idle 19 MiB debug build.
    let bound = idle + ((2 * WATERMARK_MIB) << 20);
    assert!(
        peak < bound,
        "broker RSS peaked at {} MiB (idle {} MiB), bound {} MiB",
        peak >> 20,
        idle >> 20,
        bound >> 20
    );
    let _ = cconn.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

//! The data directory on a full disk, with the real binary on a small tmpfs (needs
//! root, see `common::tmpfs`): the broker starts after `kill -9` with its disk full
//! and lets consumers drain; a durable `queue.declare` that cannot be written fails
//! instead of answering `declare-ok` for a queue that would not survive; and acked
//! messages that come back after `kill -9` (their acks never reached the disk) come
//! back marked `redelivered`.

use std::path::Path;

mod common;

use common::process::BrokerProcess;
use common::tmpfs::Tmpfs;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const QUEUE: &str = "full_disk";

fn start(dir: &Path) -> anyhow::Result<BrokerProcess> {
    BrokerProcess::on_data_dir(dir)
}

async fn channel(b: &BrokerProcess) -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(&b.url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// Declares the durable queue and publishes `n` persistent messages, each confirmed.
async fn fill_queue(b: &BrokerProcess, n: usize) -> anyhow::Result<()> {
    let (conn, ch) = channel(b).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(QUEUE.into(), durable(), FieldTable::default())
        .await?;
    for i in 0..n {
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        anyhow::ensure!(confirm.is_ack(), "message {i} not confirmed");
    }
    conn.close(200, "ok".into()).await?;
    Ok(())
}

/// Every message left in the queue, as (body, redelivered), taken without ack.
async fn drain(b: &BrokerProcess) -> anyhow::Result<Vec<(String, bool)>> {
    let (conn, ch) = channel(b).await?;
    let mut seen = Vec::new();
    while let Some(m) = ch
        .basic_get(QUEUE.into(), BasicGetOptions { no_ack: true })
        .await?
    {
        let body = String::from_utf8_lossy(&m.delivery.data).into_owned();
        seen.push((body, m.delivery.redelivered));
    }
    conn.close(200, "ok".into()).await?;
    Ok(seen)
}

#[tokio::test]
async fn after_kill_9_on_a_full_disk_the_broker_starts_with_the_alarm_on_and_consumers_drain()
-> anyhow::Result<()> {
    let fs = Tmpfs::mount("4m")?;
    let dir = fs.join("data");
    let b = start(&dir)?;
    fill_queue(&b, 100).await?;
    b.kill()?;
    fs.fill()?;

    let b = start(&dir)?;
    let log = b.log_once_it_has("disk alarm");
    assert!(
        log.contains("disk alarm"),
        "the disk alarm is on from the start: {log}"
    );
    let seen = drain(&b).await?;
    let want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    let got: Vec<String> = seen.into_iter().map(|(body, _)| body).collect();
    assert_eq!(got, want, "consumers drain the queue");
    b.kill()?;
    Ok(())
}

#[tokio::test]
async fn a_durable_declare_that_cannot_be_written_fails_and_no_queue_is_promised()
-> anyhow::Result<()> {
    let fs = Tmpfs::mount("4m")?;
    let dir = fs.join("data");
    let b = start(&dir)?;
    let (_conn, ch) = channel(&b).await?;
    fs.fill()?;
    let declared = ch
        .queue_declare(
            "declared_on_a_full_disk".into(),
            durable(),
            FieldTable::default(),
        )
        .await;
    let err = declared.expect_err("declare-ok for a queue that was not written");
    let (code, text) = common::amqp_error(&err).expect("a protocol error");
    assert_eq!(code, 541, "{text}");
    assert!(
        text.starts_with("INTERNAL_ERROR") && text.contains("declared_on_a_full_disk"),
        "{text}"
    );
    b.kill()?;
    fs.free()?;

    let b = start(&dir)?;
    let (_conn, ch) = channel(&b).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let back = ch
        .queue_declare(
            "declared_on_a_full_disk".into(),
            passive,
            FieldTable::default(),
        )
        .await;
    common::expect_error(
        back,
        404,
        "NOT_FOUND - no queue 'declared_on_a_full_disk' in vhost '/'",
    );
    // With space again, the same declare succeeds and survives.
    let (_conn, ch) = channel(&b).await?;
    ch.queue_declare(
        "declared_on_a_full_disk".into(),
        durable(),
        FieldTable::default(),
    )
    .await?;
    b.kill()?;
    let b = start(&dir)?;
    let (_conn, ch) = channel(&b).await?;
    ch.queue_declare(
        "declared_on_a_full_disk".into(),
        passive,
        FieldTable::default(),
    )
    .await?;
    b.kill()?;
    Ok(())
}

#[tokio::test]
async fn acked_messages_back_after_kill_9_are_marked_redelivered() -> anyhow::Result<()> {
    let fs = Tmpfs::mount("4m")?;
    let dir = fs.join("data");
    let b = start(&dir)?;
    fill_queue(&b, 50).await?;
    // With the disk full neither the delivery markers nor the acks can be written:
    // the at-least-once window held open.
    fs.fill()?;
    let (_conn, ch) = channel(&b).await?;
    let mut consumer = ch
        .basic_consume(
            QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for i in 0..50 {
        let d = common::next_delivery(&mut consumer).await?;
        assert_eq!(d.data, format!("m{i}").as_bytes());
        assert!(!d.redelivered);
        d.ack(BasicAckOptions::default()).await?;
    }
    b.kill()?;
    fs.free()?;

    let b = start(&dir)?;
    let seen = drain(&b).await?;
    assert_eq!(
        seen.len(),
        50,
        "acks never written: every message comes back"
    );
    let unmarked: Vec<&String> = seen.iter().filter(|(_, r)| !r).map(|(b, _)| b).collect();
    assert!(
        unmarked.is_empty(),
        "delivered before the crash, back without redelivered: {unmarked:?}"
    );
    b.kill()?;
    Ok(())
}

//! Durability through a restart of the in-process broker on the same data directory:
//! what survives (durable topology, persistent messages in durable queues, with their
//! properties and order, delivered-but-unacked ones marked redelivered) and what does
//! not (transient entities and messages, acked messages).

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

async fn start(dir: &Path) -> anyhow::Result<broker::BrokerHandle> {
    Ok(broker::Broker::builder().data_dir(dir).start().await?)
}

async fn channel(b: &broker::BrokerHandle) -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

/// Starts the broker on `dir` and opens a confirming channel with durable queue `queue`.
async fn confirming(
    dir: &Path,
    queue: &str,
) -> anyhow::Result<(broker::BrokerHandle, Connection, Channel)> {
    let b = start(dir).await?;
    let (conn, ch) = channel(&b).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(queue.into(), durable(), FieldTable::default())
        .await?;
    Ok((b, conn, ch))
}

/// Every message left in `queue` (taken without ack).
async fn drain(ch: &Channel, queue: &str) -> anyhow::Result<Vec<lapin::message::BasicGetMessage>> {
    let mut seen = Vec::new();
    while let Some(m) = get(ch, queue).await? {
        seen.push(m);
    }
    Ok(seen)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes with confirms and waits for each confirm.
async fn publish(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> anyhow::Result<()> {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await?
        .await?;
    anyhow::ensure!(confirm.is_ack(), "publish was not confirmed: {confirm:?}");
    Ok(())
}

async fn get(ch: &Channel, queue: &str) -> anyhow::Result<Option<lapin::message::BasicGetMessage>> {
    Ok(ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await?)
}

#[tokio::test]
async fn durable_topology_and_persistent_messages_survive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut headers = FieldTable::default();
    headers.insert("k".into(), AMQPValue::LongString("v".into()));
    let rich = persistent()
        .with_content_type("application/json".into())
        .with_correlation_id("c-1".into())
        .with_reply_to("replies".into())
        .with_message_id("m-1".into())
        .with_priority(3)
        .with_timestamp(1_700_000_000)
        .with_headers(headers);
    {
        let b = start(dir.path()).await?;
        let (conn, ch) = channel(&b).await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        ch.exchange_declare(
            "logs".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            "scratch".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare("tasks".into(), durable(), FieldTable::default())
            .await?;
        ch.queue_declare(
            "temp".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            "tasks".into(),
            "logs".into(),
            "kern.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        publish(&ch, "", "tasks", b"first", rich.clone()).await?;
        publish(&ch, "", "tasks", b"transient", BasicProperties::default()).await?;
        publish(&ch, "logs", "kern.info", b"second", persistent()).await?;
        publish(&ch, "", "temp", b"in a transient queue", persistent()).await?;
        let big = vec![7u8; 300_000];
        publish(&ch, "", "tasks", &big, persistent()).await?;
        conn.close(200, "bye".into()).await?;
        b.shutdown().await;
    }
    let b = start(dir.path()).await?;
    let (_conn, ch) = channel(&b).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare("tasks".into(), passive, FieldTable::default())
        .await?;
    assert_eq!(q.message_count(), 3, "persistent messages only");
    assert!(
        ch.queue_declare("temp".into(), passive, FieldTable::default())
            .await
            .is_err(),
        "a transient queue does not come back"
    );
    let (_conn, ch) = channel(&b).await?;
    let m = get(&ch, "tasks").await?.expect("first");
    assert_eq!(m.delivery.data, b"first");
    assert_eq!(m.delivery.properties, rich, "every property survives");
    assert!(!m.delivery.redelivered, "it was never delivered");
    let m = get(&ch, "tasks").await?.expect("second");
    assert_eq!(m.delivery.data, b"second");
    assert_eq!(m.delivery.exchange.as_str(), "logs");
    assert_eq!(m.delivery.routing_key.as_str(), "kern.info");
    let m = get(&ch, "tasks").await?.expect("big");
    assert_eq!(m.delivery.data.len(), 300_000);
    assert!(get(&ch, "tasks").await?.is_none());
    // The binding came back with the durable exchange; the transient exchange did not.
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    publish(&ch, "logs", "kern.warn", b"routed", persistent()).await?;
    assert_eq!(
        get(&ch, "tasks").await?.expect("routed").delivery.data,
        b"routed"
    );
    let passive_x = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let gone = ch
        .exchange_declare(
            "scratch".into(),
            ExchangeKind::Fanout,
            passive_x,
            FieldTable::default(),
        )
        .await;
    assert!(gone.is_err(), "a transient exchange does not come back");
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unacked_come_back_redelivered_and_acked_do_not() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (b, conn, ch) = confirming(dir.path(), "work").await?;
        for body in ["a", "b", "c"] {
            publish(&ch, "", "work", body.as_bytes(), persistent()).await?;
        }
        let cch = conn.create_channel().await?;
        cch.basic_qos(3, Default::default()).await?;
        let mut consumer = cch
            .basic_consume(
                "work".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut tags = Vec::new();
        for _ in 0..3 {
            let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
                .await?
                .expect("delivery")?;
            tags.push(d.delivery_tag);
        }
        // Ack "a" only; "b" and "c" stay delivered and unacked; "d" is never delivered.
        cch.basic_cancel(consumer.tag(), Default::default()).await?;
        cch.basic_ack(tags[0], BasicAckOptions::default()).await?;
        publish(&ch, "", "work", b"d", persistent()).await?;
        b.shutdown().await;
        drop(conn);
    }
    let b = start(dir.path()).await?;
    let (_conn, ch) = channel(&b).await?;
    let seen: Vec<(String, bool)> = drain(&ch, "work")
        .await?
        .into_iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.delivery.data).into_owned();
            (text, m.delivery.redelivered)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("b".to_owned(), true),
            ("c".to_owned(), true),
            ("d".to_owned(), false)
        ]
    );
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_deleted_durable_queue_stays_deleted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (b, _conn, ch) = confirming(dir.path(), "gone").await?;
        publish(&ch, "", "gone", b"x", persistent()).await?;
        ch.queue_delete("gone".into(), Default::default()).await?;
        ch.queue_declare("kept".into(), durable(), FieldTable::default())
            .await?;
        b.shutdown().await;
    }
    let b = start(dir.path()).await?;
    let (_conn, ch) = channel(&b).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    assert!(
        ch.queue_declare("gone".into(), passive, FieldTable::default())
            .await
            .is_err()
    );
    let (_conn, ch) = channel(&b).await?;
    ch.queue_declare("kept".into(), passive, FieldTable::default())
        .await?;
    let queues = std::fs::read_dir(dir.path().join("queues"))?.count();
    assert_eq!(queues, 1, "the deleted queue's directory is gone");
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn message_ttl_keeps_running_across_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (b, _conn, ch) = confirming(dir.path(), "ttl").await?;
        publish(
            &ch,
            "",
            "ttl",
            b"short",
            persistent().with_expiration("300".into()),
        )
        .await?;
        publish(
            &ch,
            "",
            "ttl",
            b"long",
            persistent().with_expiration("60000".into()),
        )
        .await?;
        b.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = start(dir.path()).await?;
    let (_conn, ch) = channel(&b).await?;
    let m = get(&ch, "ttl").await?.expect("long");
    assert_eq!(
        m.delivery.data, b"long",
        "the short-lived one expired meanwhile"
    );
    assert!(get(&ch, "ttl").await?.is_none());
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_committed_transaction_is_on_disk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let b = start(dir.path()).await?;
        let (_conn, ch) = channel(&b).await?;
        ch.queue_declare("tx".into(), durable(), FieldTable::default())
            .await?;
        ch.tx_select().await?;
        for body in ["one", "two"] {
            ch.basic_publish(
                "".into(),
                "tx".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                persistent(),
            )
            .await?;
        }
        ch.tx_commit().await?;
        ch.basic_publish(
            "".into(),
            "tx".into(),
            BasicPublishOptions::default(),
            b"rolled back",
            persistent(),
        )
        .await?;
        ch.tx_rollback().await?;
        b.shutdown().await;
    }
    let b = start(dir.path()).await?;
    let (_conn, ch) = channel(&b).await?;
    let seen: Vec<Vec<u8>> = drain(&ch, "tx")
        .await?
        .into_iter()
        .map(|m| m.delivery.data)
        .collect();
    assert_eq!(seen, vec![b"one".to_vec(), b"two".to_vec()]);
    b.shutdown().await;
    Ok(())
}

/// The segment files of the one durable queue in `dir`.
fn segments(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut segs = Vec::new();
    for q in std::fs::read_dir(dir.join("queues"))? {
        for f in std::fs::read_dir(q?.path())? {
            let p = f?.path();
            if p.extension().is_some_and(|e| e == "seg") {
                segs.push(p);
            }
        }
    }
    segs.sort();
    Ok(segs)
}

async fn fill(dir: &Path, n: usize) -> anyhow::Result<()> {
    let (b, _conn, ch) = confirming(dir, "q").await?;
    for i in 0..n {
        publish(
            &ch,
            "",
            "q",
            format!("message {i:03}").as_bytes(),
            persistent(),
        )
        .await?;
    }
    b.shutdown().await;
    Ok(())
}

async fn bodies(dir: &Path) -> anyhow::Result<Vec<String>> {
    let b = start(dir).await?;
    let (_conn, ch) = channel(&b).await?;
    let mut seen = Vec::new();
    for m in drain(&ch, "q").await? {
        seen.push(String::from_utf8(m.delivery.data)?);
    }
    b.shutdown().await;
    Ok(seen)
}

#[tokio::test]
async fn a_torn_segment_tail_is_cut_and_everything_before_it_served() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    fill(dir.path(), 20).await?;
    let seg = segments(dir.path())?.pop().expect("a segment");
    let len = std::fs::metadata(&seg)?.len();
    // Cut the last record in half, as a crash during its write would.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)?
        .set_len(len - 10)?;
    let seen = bodies(dir.path()).await?;
    let expected: Vec<String> = (0..19).map(|i| format!("message {i:03}")).collect();
    assert_eq!(seen, expected);
    Ok(())
}

#[tokio::test]
async fn a_flipped_bit_loses_only_its_own_message() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    fill(dir.path(), 20).await?;
    let seg = segments(dir.path())?.pop().expect("a segment");
    let mut data = std::fs::read(&seg)?;
    let at = data
        .windows(11)
        .position(|w| w == b"message 007")
        .expect("record 7");
    data[at + 10] ^= 0x01;
    std::fs::write(&seg, &data)?;
    let seen = bodies(dir.path()).await?;
    let expected: Vec<String> = (0..20)
        .filter(|&i| i != 7)
        .map(|i| format!("message {i:03}"))
        .collect();
    assert_eq!(seen, expected, "the damaged record alone is dropped");
    Ok(())
}

//! Clients that stop reading, start bodies they never finish, or vanish while blocked,
//! against the real `broker` binary: what the broker holds for them stays bounded,
//! nobody else waits for them, and the memory alarm clears once they are gone.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use common::process::BrokerProcess;
use common::raw;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const MIB: u64 = 1 << 20;

async fn connect(broker: &BrokerProcess) -> anyhow::Result<Connection> {
    let conn = timeout(
        Duration::from_secs(5),
        Connection::connect(&broker.url, ConnectionProperties::default()),
    )
    .await??;
    Ok(conn)
}

/// Ready messages in `q`, by a passive declare.
async fn ready(ch: &Channel, q: &str) -> anyhow::Result<u32> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    Ok(ch
        .queue_declare(q.into(), opts, FieldTable::default())
        .await?
        .message_count())
}

/// Polls `ready(q)` until it has not moved for 25 samples in a row (half a second; at
/// most 10 s): the broker has stopped handing the queue out.
async fn settled_ready(ch: &Channel, q: &str) -> anyhow::Result<u32> {
    // (last count, samples in a row it has stayed the same)
    let state = std::cell::Cell::new((ready(ch, q).await?, 0u32));
    // Still moving after 10 s: the caller's assertion on the count tells.
    let _ = common::poll::until(
        Duration::from_secs(10),
        "the ready count to settle",
        || async {
            let now = ready(ch, q).await.ok()?;
            let (last, same) = state.get();
            let same = if now == last { same + 1 } else { 0 };
            state.set((now, same));
            (same >= 25).then_some(())
        },
    )
    .await;
    Ok(state.get().0)
}

/// Runs a case for at most a minute: a broker that lets a hostile client stall it
/// fails the test instead of hanging it.
async fn bounded(
    case: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    timeout(Duration::from_secs(60), case)
        .await
        .context("the case did not finish within 60 s")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_does_not_read_leaves_the_queue_queued() -> anyhow::Result<()> {
    bounded(a_consumer_that_does_not_read_leaves_the_queue_queued_case()).await
}

async fn a_consumer_that_does_not_read_leaves_the_queue_queued_case() -> anyhow::Result<()> {
    const COUNT: usize = 4096;
    const SIZE: usize = 16 * 1024; // 64 MiB in all
    let broker = BrokerProcess::quiet(&[])?;
    let conn = connect(&broker).await?;
    let ch = conn.create_channel().await?;
    common::fill_queue(&ch, "stalled", COUNT, SIZE).await?;
    let before = broker.rss_bytes().context("rss")?;

    // A no_ack consumer (unlimited credit) that never reads its socket.
    let mut stalled = common::open(broker.addr, 0).await?;
    stalled.write_all(&raw::channel_open(1)).await?;
    stalled.write_all(&raw::consume(1, "stalled", true)).await?;
    let left = settled_ready(&ch, "stalled").await?;
    let handed_out = (COUNT as u64 - u64::from(left)) * SIZE as u64;
    // The outbox limit (1 MiB) plus what the two sockets' kernel buffers took.
    assert!(
        handed_out < 24 * MIB,
        "{} MiB of the queue went to a client that reads nothing",
        handed_out / MIB
    );
    let grown = broker.rss_bytes().context("rss")?.saturating_sub(before);
    assert!(grown < 24 * MIB, "broker RSS grew {} MiB", grown / MIB);

    // Everyone else is served meanwhile.
    let other = conn.create_channel().await?;
    other
        .queue_declare(
            "other".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = other
        .basic_consume(
            "other".into(),
            "c".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    other
        .basic_publish(
            "".into(),
            "other".into(),
            BasicPublishOptions::default(),
            b"hi",
            BasicProperties::default(),
        )
        .await?;
    let got = common::next_delivery(&mut consumer).await?;
    assert_eq!(got.data, b"hi");

    // Once it reads, deliveries resume until the whole queue has come.
    let mut delivered = 0;
    timeout(Duration::from_secs(60), async {
        while delivered < COUNT {
            let f = raw::read_frame(&mut stalled).await?;
            if raw::is_method(&f, 60, 60) {
                delivered += 1;
            }
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("only {delivered} of {COUNT} delivered after reading"))??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_recover_from_a_client_that_does_not_read_is_not_amplified() -> anyhow::Result<()> {
    bounded(basic_recover_from_a_client_that_does_not_read_is_not_amplified_case()).await
}

async fn basic_recover_from_a_client_that_does_not_read_is_not_amplified_case() -> anyhow::Result<()>
{
    let broker = BrokerProcess::quiet(&[])?;
    let conn = connect(&broker).await?;
    let ch = conn.create_channel().await?;
    common::fill_queue(&ch, "rec", 1000, 1024).await?;
    let before = broker.rss_bytes().context("rss")?;

    let mut s = common::open(broker.addr, 0).await?;
    s.write_all(&raw::channel_open(1)).await?;
    s.write_all(&raw::consume(1, "rec", false)).await?;
    // 13 KB of recovers: each once requeued and resent every unacked message.
    let recovers: Vec<u8> = (0..1000).flat_map(|_| raw::recover(1)).collect();
    s.write_all(&recovers).await?;
    let peak = broker.peak_rss(Duration::from_secs(3)).await;
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 48 * MIB,
        "broker RSS peaked {} MiB above idle",
        grown / MIB
    );
    // And it still answers everybody else at once.
    timeout(Duration::from_secs(5), ready(&ch, "rec")).await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_body_sizes_reserve_nothing_and_raise_no_alarm() -> anyhow::Result<()> {
    bounded(announced_body_sizes_reserve_nothing_and_raise_no_alarm_case()).await
}

async fn announced_body_sizes_reserve_nothing_and_raise_no_alarm_case() -> anyhow::Result<()> {
    let broker = BrokerProcess::quiet(&["--memory-high-watermark", "256MiB"])?;
    // 80 channels, each announcing a 128 MiB body and sending two bytes of it.
    let mut s = common::open_with(broker.addr, 0, 100).await?;
    let mut bytes = Vec::new();
    for id in 1..=80u16 {
        bytes.extend(raw::channel_open(id));
        bytes.extend(raw::publish(id, "", "nowhere", false, 128 * MIB, b"a"));
        bytes.extend(raw::frame(3, id, b"b"));
    }
    // One more channel: its open-ok says every frame before it was applied.
    bytes.extend(raw::channel_open(81));
    s.write_all(&bytes).await?;
    timeout(Duration::from_secs(5), async {
        loop {
            let f = raw::read_frame(&mut s).await?;
            if f.1 == 81 && raw::is_method(&f, 20, 11) {
                return anyhow::Ok(());
            }
        }
    })
    .await??;

    // Another publisher is never blocked: a second of confirmed publishes, each
    // answered promptly (the alarm is checked every 25 ms).
    let conn = connect(&broker).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let confirm = ch
            .basic_publish(
                "".into(),
                "nowhere".into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default(),
            )
            .await?;
        timeout(Duration::from_secs(3), confirm)
            .await
            .context("a publisher was blocked: the announced sizes set off the alarm")??;
    }
    assert!(!conn.status().blocked());
    Ok(())
}

#[tokio::test]
async fn unfinished_bodies_on_one_connection_are_bounded() -> anyhow::Result<()> {
    bounded(unfinished_bodies_on_one_connection_are_bounded_case()).await
}

async fn unfinished_bodies_on_one_connection_are_bounded_case() -> anyhow::Result<()> {
    let broker = BrokerProcess::quiet(&["--max-message-size", "1048576"])?;
    let mut s = common::open(broker.addr, 0).await?;
    // Three channels each send all but one byte of a 1 MiB body: past the second the
    // connection holds more than two of the largest messages, and is closed.
    let almost = vec![7u8; 131_064];
    let mut bytes = Vec::new();
    for id in 1..=3u16 {
        bytes.extend(raw::channel_open(id));
        bytes.extend(raw::publish(id, "", "q", false, MIB, b""));
        let mut left = MIB as usize - 1;
        while left > 0 {
            let n = left.min(almost.len());
            bytes.extend(raw::frame(3, id, &almost[..n]));
            left -= n;
        }
    }
    // The broker may close before it has read everything.
    let _ = s.write_all(&bytes).await;
    let closed = raw::until_closed(&mut s).await?;
    assert_eq!(
        closed,
        Some((
            506,
            "RESOURCE_ERROR - message bodies still arriving on this connection exceed 2097152 bytes"
                .to_owned()
        ))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_publishers_that_hang_up_are_gone_at_once() -> anyhow::Result<()> {
    bounded(blocked_publishers_that_hang_up_are_gone_at_once_case()).await
}

async fn blocked_publishers_that_hang_up_are_gone_at_once_case() -> anyhow::Result<()> {
    // A mark below what the broker uses idle: the alarm is on from the start.
    let broker = BrokerProcess::quiet(&["--memory-high-watermark", "1MiB"])?;
    let baseline = broker.fd_count().context("fds")?;
    let mut sockets = Vec::new();
    for _ in 0..50 {
        let mut s = common::open(broker.addr, 0).await?;
        s.write_all(&raw::channel_open(1)).await?;
        s.write_all(&raw::publish(1, "", "q", false, 1, b"x"))
            .await?;
        sockets.push(s);
    }
    // Each got blocked; the broker holds a descriptor for each.
    assert!(broker.fd_count().context("fds")? >= baseline + 50);
    drop(sockets);
    let gone = common::poll::until(
        Duration::from_secs(5),
        "the descriptors of hung-up publishers to close",
        || async { broker.fd_count().filter(|open| *open <= baseline + 2) },
    )
    .await;
    let open = broker.fd_count().context("fds")?;
    assert!(
        gone.is_ok(),
        "{} descriptors still open for publishers that hung up",
        open.saturating_sub(baseline)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_returns_of_a_vanished_client_do_not_hold_the_alarm() -> anyhow::Result<()> {
    bounded(unread_returns_of_a_vanished_client_do_not_hold_the_alarm_case()).await
}

async fn unread_returns_of_a_vanished_client_do_not_hold_the_alarm_case() -> anyhow::Result<()> {
    let broker = BrokerProcess::quiet(&["--memory-high-watermark", "64MiB"])?;
    // Mandatory publishes nothing routes: each comes back as basic.return, which this
    // client never reads. It writes until the broker stops taking its bytes (or 128
    // MiB have gone), then hangs up.
    let mut s: TcpStream = common::open(broker.addr, 0).await?;
    s.write_all(&raw::channel_open(1)).await?;
    let body = vec![b'r'; 64 * 1024];
    let one = raw::publish(1, "", "nowhere", true, body.len() as u64, &body);
    for _ in 0..2048 {
        match timeout(Duration::from_secs(1), s.write_all(&one)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break, // the broker stopped reading, or closed
        }
    }
    drop(s);

    // With that client gone, publishers are not blocked.
    let conn = connect(&broker).await?;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        "after".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    for _ in 0..50 {
        let confirm = ch
            .basic_publish(
                "".into(),
                "after".into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default(),
            )
            .await?;
        timeout(Duration::from_secs(10), confirm)
            .await
            .context("still blocked: the vanished client's returns hold the alarm")??;
    }
    Ok(())
}

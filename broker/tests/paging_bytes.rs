//! Durable queues page out by bytes, not only by count, with the real `broker` binary
//! (its jemalloc statistics are what the memory alarm measures): large persistent
//! messages into a durable queue that nobody consumes must not pile up in memory. Once
//! the publisher has gone, the memory alarm is off (a new publisher is confirmed), the
//! broker's resident memory is far below what the queue holds, and a consumer then
//! gets every message, in order.

use std::time::Duration;

mod common;

use amq_protocol::protocol::{AMQPClass, basic, channel};
use anyhow::Context;
use broker::internals::frame;
use common::process::BrokerProcess;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// The high-water mark given to the broker.
const WATERMARK_MIB: u64 = 48;
/// Messages of [`BODY`] bytes: 96 MiB in all, twice the mark.
const TOTAL: u64 = 6144;
const BODY: usize = 16 * 1024;
const QUEUE: &str = "paged";

fn body(i: u64) -> Vec<u8> {
    let mut b = i.to_be_bytes().to_vec();
    b.resize(BODY, b'x');
    b
}

/// Publishes persistent messages `0..TOTAL` on a raw socket, without confirms, and
/// drops the connection: as soon as they are all written, or once the broker has
/// stopped reading (blocked by an alarm that does not clear) for 5 s. Returns how many
/// were written.
async fn publish_and_leave(addr: std::net::SocketAddr) -> anyhow::Result<u64> {
    let mut s = common::open(addr, 0).await?;
    let mut out = Vec::new();
    frame::encode_method(
        &mut out,
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    s.write_all(&out).await?;
    let props = frame::encode_properties(&BasicProperties::default().with_delivery_mode(2));
    for i in 0..TOTAL {
        out.clear();
        let publish = basic::Publish {
            exchange: "".into(),
            routing_key: QUEUE.into(),
            mandatory: false,
            immediate: false,
        };
        frame::encode_method(
            &mut out,
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
        );
        frame::encode_content(&mut out, 1, &props, &body(i), 131_072);
        if timeout(Duration::from_secs(5), s.write_all(&out))
            .await
            .is_err()
        {
            return Ok(i);
        }
    }
    s.write_all(&common::close_frame()).await?;
    s.flush().await?;
    // close-ok (class 10, method 51) comes once the broker has read everything before.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == [0, 10, 0, 51]) {
        let n = timeout(Duration::from_secs(30), s.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed before close-ok");
        got.extend_from_slice(&buf[..n]);
    }
    Ok(TOTAL)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_persistent_messages_page_out_by_bytes_and_the_alarm_clears() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = BrokerProcess::quiet(&[
        "--memory-high-watermark",
        &format!("{WATERMARK_MIB}MiB"),
        "--data-dir",
        dir.path().to_str().context("temp dir path")?,
    ])?;
    let idle = broker.rss_bytes().context("no RSS for the broker")?;
    let setup = Connection::connect(&broker.url, ConnectionProperties::default()).await?;
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    setup
        .create_channel()
        .await?
        .queue_declare(QUEUE.into(), opts, FieldTable::default())
        .await?;

    let written = publish_and_leave(broker.addr).await?;

    // Nobody is connected who publishes: a new publisher must not be blocked.
    let conn = Connection::connect(&broker.url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let confirm = timeout(Duration::from_secs(20), async {
        ch.basic_publish(
            "".into(),
            QUEUE.into(),
            BasicPublishOptions::default(),
            &body(written),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await
    })
    .await
    .context("a new publisher is still blocked: the memory alarm did not clear")??;
    assert!(confirm.is_ack());

    // The queue holds 96 MiB; the broker's memory falls well below that.
    let bound = idle + (32 << 20);
    let under = common::poll::until(
        Duration::from_secs(20),
        "the broker's RSS to fall under the bound",
        || async { broker.rss_bytes().filter(|rss| *rss < bound) },
    )
    .await;
    let rss = match under {
        Ok(rss) => rss,
        Err(_) => broker.rss_bytes().context("no RSS")?,
    };
    assert!(
        rss < bound,
        "broker RSS {} MiB with the queue idle (idle broker {} MiB), bound {} MiB",
        rss >> 20,
        idle >> 20,
        bound >> 20
    );

    // Every message comes out, in order, the new publisher's last.
    let cch = conn.create_channel().await?;
    cch.basic_qos(256, BasicQosOptions::default()).await?;
    let mut deliveries = cch
        .basic_consume(
            QUEUE.into(),
            "drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for want in 0..=written {
        let d = timeout(Duration::from_secs(10), deliveries.next())
            .await
            .with_context(|| format!("no message {want}"))?
            .context("consumer ended")??;
        let head: [u8; 8] = d.data.get(..8).context("short body")?.try_into()?;
        assert_eq!(u64::from_be_bytes(head), want, "out of order");
        assert_eq!(d.data.len(), BODY, "body changed size");
        d.ack(BasicAckOptions::default()).await?;
    }
    assert_eq!(written, TOTAL, "the publisher was blocked for good");
    let _ = conn.close(200, "done".into()).await;
    let _ = setup.close(200, "done".into()).await;
    Ok(())
}

//! Broker memory across many connections, in a test binary of its own so that no
//! other test shares the process whose RSS is read.

use std::time::Duration;

use amq_protocol::frame::{AMQPFrame, gen_frame};
use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::FieldTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn encode(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(Vec::new().into())
        .map(|c| c.into_inner().0)
        .unwrap_or_default()
}

async fn open(addr: std::net::SocketAddr, heartbeat: u16) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let methods = [
        connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        }),
        connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 8,
            frame_max: 131_072,
            heartbeat,
        }),
        connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        }),
    ];
    for m in methods {
        s.write_all(&encode(&AMQPFrame::Method(0, AMQPClass::Connection(m))))
            .await?;
    }
    // Read until open-ok (class 10, method 41) has arrived.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == [0, 10, 0, 41]) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed during handshake");
        got.extend_from_slice(&buf[..n]);
    }
    Ok(s)
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_thousand_connections_leave_memory_where_it_was() -> anyhow::Result<()> {
    let b = broker::Broker::builder().start().await?;
    let cycle = |n: usize| {
        let addr = b.local_addr();
        async move {
            for _ in 0..n {
                let mut s = open(addr, 0).await?;
                s.write_all(&encode(&AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                        reply_code: 200,
                        reply_text: "bye".into(),
                        class_id: 0,
                        method_id: 0,
                    })),
                )))
                .await?;
                // Read until close-ok (10, 51), then close our end as clients do.
                let mut got = Vec::new();
                let mut buf = [0u8; 256];
                while !got.windows(4).any(|w| w == [0, 10, 0, 51]) {
                    let n =
                        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
                    anyhow::ensure!(n > 0, "EOF before close-ok");
                    got.extend_from_slice(&buf[..n]);
                }
            }
            anyhow::Ok(())
        }
    };
    cycle(200).await?; // warm up allocator pools
    let before = rss_kib();
    cycle(1000).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = rss_kib();
    if let (Some(before), Some(after)) = (before, after) {
        let growth = after.saturating_sub(before);
        assert!(
            growth < 4096,
            "RSS grew by {growth} KiB over 1,000 connections ({before} -> {after})"
        );
    }
    Ok(())
}

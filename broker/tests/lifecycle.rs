//! Connection lifecycle at the socket level: heartbeats and a clean shutdown.

use std::time::{Duration, Instant};

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

#[tokio::test]
async fn broker_sends_heartbeats_and_drops_a_silent_client() -> anyhow::Result<()> {
    let b = broker::Broker::builder().start().await?;
    let mut s = open(b.local_addr(), 1).await?;
    let started = Instant::now();
    let mut beats = 0;
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(6), s.read(&mut buf)).await? {
            Ok(0) | Err(_) => break,
            Ok(n) => beats += buf[..n].chunks(8).filter(|f| f[0] == 8).count(),
        }
    }
    let closed_after = started.elapsed();
    assert!(beats >= 1, "no heartbeat frame received");
    // Heartbeat 1 s: a client silent for two intervals is dropped, as RabbitMQ does.
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(5),
        "closed after {closed_after:?}"
    );
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_clients_with_connection_forced() -> anyhow::Result<()> {
    let b = broker::Broker::builder().start().await?;
    let mut s = open(b.local_addr(), 0).await?;
    let shutdown = tokio::spawn(b.shutdown());
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    // Answer nothing: the broker gives up waiting for close-ok and closes the socket.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await? {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    // connection.close (10, 50) with reply code 320.
    assert!(
        got.windows(6).any(|w| w == [0, 10, 0, 50, 1, 64]),
        "no close 320 in {got:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), shutdown).await??;
    Ok(())
}

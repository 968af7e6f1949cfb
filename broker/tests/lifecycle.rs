//! Connection lifecycle at the socket level: heartbeats and a clean shutdown.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

mod common;

use common::open;

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

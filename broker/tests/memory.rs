//! Broker memory across many connections, in a test binary of its own so that no
//! other test shares the process whose RSS is read.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::{close_frame, open};

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_thousand_connections_leave_memory_where_it_was() -> anyhow::Result<()> {
    let (b, api) = common::http::start_with_api(broker::Broker::builder()).await?;
    // The broker tears a connection down after its close-ok: what is measured is the
    // memory once the last one is gone, so wait until none is listed.
    let all_gone = || {
        common::poll::try_until(Duration::from_secs(10), "no connection listed", || async {
            let listed = common::http::get_json(&api, "/api/connections").await?;
            anyhow::Ok((listed == serde_json::json!([])).then_some(()))
        })
    };
    let cycle = |n: usize| {
        let addr = b.local_addr();
        async move {
            for _ in 0..n {
                let mut s = open(addr, 0).await?;
                s.write_all(&close_frame()).await?;
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
    all_gone().await?;
    let before = rss_kib().ok_or_else(|| anyhow::anyhow!("VmRSS not readable from /proc"))?;
    cycle(1000).await?;
    all_gone().await?;
    let after = rss_kib().ok_or_else(|| anyhow::anyhow!("VmRSS not readable from /proc"))?;
    let growth = after.saturating_sub(before);
    assert!(
        growth < 4096,
        "RSS grew by {growth} KiB over 1,000 connections ({before} -> {after})"
    );
    Ok(())
}

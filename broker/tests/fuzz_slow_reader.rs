//! Random method sequences from a client that never reads its socket, against the real
//! `broker` binary: whatever it asks for (consumers with and without acks, `basic.get`,
//! `basic.recover`, mandatory publishes that come back, prefetch changes), what the
//! broker buffers for it stays bounded, and the broker still serves everyone else.

mod common;

use std::time::Duration;

use common::process::BrokerProcess;
use common::raw;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone)]
enum Op {
    Consume {
        no_ack: bool,
    },
    Get {
        no_ack: bool,
    },
    Recover,
    /// Mandatory, to a routing key nothing is bound to: it comes back.
    Unroutable {
        size: usize,
    },
    Qos {
        prefetch: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<bool>().prop_map(|no_ack| Op::Consume { no_ack }),
        any::<bool>().prop_map(|no_ack| Op::Get { no_ack }),
        Just(Op::Recover),
        (1usize..32 * 1024).prop_map(|size| Op::Unroutable { size }),
        (0u16..100).prop_map(|prefetch| Op::Qos { prefetch }),
    ]
}

fn encode(op: &Op) -> Vec<u8> {
    match op {
        Op::Consume { no_ack } => raw::consume(1, "f", *no_ack),
        Op::Get { no_ack } => {
            let mut args = vec![0, 0];
            raw::short(&mut args, "f");
            args.push(u8::from(*no_ack));
            raw::method_frame(1, 60, 70, &args)
        }
        Op::Recover => raw::recover(1),
        Op::Unroutable { size } => {
            raw::publish(1, "", "nowhere", true, *size as u64, &vec![b'u'; *size])
        }
        Op::Qos { prefetch } => {
            let mut args = vec![0, 0, 0, 0];
            args.extend_from_slice(&prefetch.to_be_bytes());
            args.push(0);
            raw::method_frame(1, 60, 10, &args)
        }
    }
}

async fn case(ops: Vec<(Op, usize)>) -> anyhow::Result<()> {
    let broker = BrokerProcess::quiet(&[])?;
    let conn =
        lapin::Connection::connect(&broker.url, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    // 4 MiB queued for the client to ask for, again and again.
    common::fill_queue(&ch, "f", 512, 8 * 1024).await?;
    let before = broker.rss_bytes().unwrap_or(0);

    let mut s = common::open(broker.addr, 0).await?;
    s.write_all(&raw::channel_open(1)).await?;
    let mut bytes = Vec::new();
    for (op, times) in &ops {
        for _ in 0..*times {
            bytes.extend(encode(op));
        }
    }
    // The broker stops taking bytes once it has paused this client: write what it
    // takes within a second.
    let _ = tokio::time::timeout(Duration::from_secs(1), s.write_all(&bytes)).await;
    let grown = broker
        .peak_rss(Duration::from_millis(500))
        .await
        .saturating_sub(before);
    anyhow::ensure!(
        grown < 32 * MIB,
        "broker RSS grew {} MiB for a client that reads nothing",
        grown / MIB
    );
    // Everyone else is still answered at once.
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    tokio::time::timeout(
        Duration::from_secs(5),
        ch.queue_declare("f".into(), passive, lapin::types::FieldTable::default()),
    )
    .await??;
    drop(s);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn a_client_that_never_reads_costs_a_bounded_amount(
        ops in proptest::collection::vec((op(), 1usize..300), 1..8)
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let outcome = rt.block_on(case(ops));
        prop_assert!(outcome.is_ok(), "{:?}", outcome);
    }
}

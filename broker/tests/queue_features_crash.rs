//! The queue features across `kill -9`: the broker binary, on a data directory, holds
//! a priority queue, a length-limited queue that dead-letters, its durable
//! dead-letter queue and a byte-limited queue; it is killed with SIGKILL and started
//! again. What was confirmed (and the dead-lettered copies written with it) is all
//! there: the priority order, the limits still applied, the dead-lettered messages
//! persistent with their `x-death`.

mod common;

use std::path::Path;

use common::process::BrokerProcess;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

fn start(dir: &Path) -> anyhow::Result<BrokerProcess> {
    BrokerProcess::on_data_dir(dir)
}

async fn channel(b: &BrokerProcess) -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(&b.url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// The four durable queues, declared the same before and after the crash.
async fn declare(ch: &Channel) -> anyhow::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let queues = [
        ("prio", args(&[("x-max-priority", AMQPValue::LongInt(5))])),
        (
            "limited",
            args(&[
                ("x-max-length", AMQPValue::LongInt(3)),
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text("dead")),
            ]),
        ),
        ("dead", FieldTable::default()),
        (
            "bytes",
            args(&[("x-max-length-bytes", AMQPValue::LongInt(10))]),
        ),
    ];
    for (q, a) in queues {
        ch.queue_declare(q.into(), durable, a).await?;
    }
    Ok(())
}

async fn publish(ch: &Channel, queue: &str, body: &str, priority: u8) -> anyhow::Result<()> {
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(priority);
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await?
        .await?;
    anyhow::ensure!(confirm.is_ack(), "{queue} {body}: {confirm:?}");
    Ok(())
}

/// Every message of `queue`, taken without ack: body, delivery mode and the reasons
/// in its `x-death` (latest first).
async fn drain(
    ch: &Channel,
    queue: &str,
) -> anyhow::Result<Vec<(String, Option<u8>, Vec<String>)>> {
    let mut seen = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await?
    {
        let p = &m.delivery.properties;
        let reasons = match p
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-death").cloned())
        {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .filter_map(|e| match e {
                    AMQPValue::FieldTable(t) => match t.inner().get("reason") {
                        Some(AMQPValue::LongString(r)) => Some(r.to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        seen.push((
            String::from_utf8_lossy(&m.delivery.data).into_owned(),
            *p.delivery_mode(),
            reasons,
        ));
    }
    Ok(seen)
}

fn bodies(v: &[(String, Option<u8>, Vec<String>)]) -> Vec<&str> {
    v.iter().map(|(b, _, _)| b.as_str()).collect()
}

#[tokio::test]
async fn priority_limited_and_dead_lettered_queues_survive_kill_9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let b = start(dir.path())?;
    let (_conn, ch) = channel(&b).await?;
    declare(&ch).await?;
    for (body, p) in [("p1", 1), ("p5a", 5), ("p0", 0), ("p3", 3), ("p5b", 5)] {
        publish(&ch, "prio", body, p).await?;
    }
    // Five into a queue of three: m0 and m1 are dead-lettered as maxlen.
    for i in 0..5 {
        publish(&ch, "limited", &format!("m{i}"), 0).await?;
    }
    // m2 rejected without requeue: dead-lettered as rejected.
    let m2 = ch
        .basic_get("limited".into(), BasicGetOptions::default())
        .await?
        .ok_or_else(|| anyhow::anyhow!("limited is empty"))?;
    assert_eq!(m2.delivery.data, b"m2");
    m2.delivery
        .nack(BasicNackOptions {
            requeue: false,
            ..Default::default()
        })
        .await?;
    for body in ["12345", "67890", "1"] {
        publish(&ch, "bytes", body, 0).await?;
    }
    // A confirmed publish after the nack: its sync covers the rejected copy too.
    publish(&ch, "prio", "marker", 0).await?;
    b.kill()?;

    let b = start(dir.path())?;
    let (_conn, ch) = channel(&b).await?;
    declare(&ch).await?;
    let prio = drain(&ch, "prio").await?;
    assert_eq!(bodies(&prio), ["p5a", "p5b", "p3", "p1", "p0", "marker"]);
    let limited = drain(&ch, "limited").await?;
    assert_eq!(bodies(&limited), ["m3", "m4"]);
    let dead = drain(&ch, "dead").await?;
    assert_eq!(
        dead,
        [
            ("m0".to_owned(), Some(2), vec!["maxlen".to_owned()]),
            ("m1".to_owned(), Some(2), vec!["maxlen".to_owned()]),
            ("m2".to_owned(), Some(2), vec!["rejected".to_owned()]),
        ]
    );
    assert_eq!(bodies(&drain(&ch, "bytes").await?), ["67890", "1"]);
    // The limits still hold after the restart.
    for i in 0..4 {
        publish(&ch, "limited", &format!("n{i}"), 0).await?;
    }
    assert_eq!(bodies(&drain(&ch, "limited").await?), ["n1", "n2", "n3"]);
    assert_eq!(bodies(&drain(&ch, "dead").await?), ["n0"]);
    for body in ["123456", "7890", "x"] {
        publish(&ch, "bytes", body, 0).await?;
    }
    assert_eq!(bodies(&drain(&ch, "bytes").await?), ["7890", "x"]);
    b.kill()?;
    Ok(())
}

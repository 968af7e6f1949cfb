//! RabbitMQ's deprecated-feature switches: with `transient_nonexcl_queues` and
//! `global_qos` denied the broker behaves as RabbitMQ 4.3 does by default (the texts
//! and outcomes are RabbitMQ 4.0.5's, configured so).

mod common;

use std::process::Command;

use broker::{Broker, DeprecatedFeatures};
use lapin::options::QueueDeclareOptions;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// RabbitMQ 4.0.5's `connection.close` text, cut to 255 bytes as RabbitMQ cuts it.
const DENIED: &str = "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\n\
    Its use is not permitted per the configuration (overriding the default, which is permitted):\n    \
    \"deprecated_features.permit.transient_nonexcl_queues = false\"\n\
    Its use will not be permit...";

fn options(durable: bool, exclusive: bool) -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable,
        exclusive,
        ..QueueDeclareOptions::default()
    }
}

/// Declares `name` on a new connection to `url`: the broker's refusal (code, text) and
/// whether it closed the connection.
async fn declare(url: &str, name: &str, opts: QueueDeclareOptions) -> Option<(u16, String, bool)> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .ok()?;
    let ch = conn.create_channel().await.ok()?;
    let result = ch
        .queue_declare(name.into(), opts, FieldTable::default())
        .await;
    let outcome = match result {
        Ok(_) => None,
        Err(e) => {
            let (code, text) = common::amqp_error(&e)?;
            Some((code, text, !conn.status().connected()))
        }
    };
    let _ = conn.close(200, "OK".into()).await;
    outcome
}

/// Two queues of 3 messages, `basic.qos(1, global)` and a consumer on each: how many
/// messages each queue still has ready once both consumers are registered.
async fn ready_after_global_qos(url: &str) -> anyhow::Result<Vec<u32>> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let mut queues = Vec::new();
    for _ in 0..2 {
        let q = ch
            .queue_declare("".into(), options(false, true), FieldTable::default())
            .await?;
        for i in 0..3 {
            ch.basic_publish(
                "".into(),
                q.name().as_str().into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        }
        queues.push(q.name().to_string());
    }
    ch.basic_qos(1, BasicQosOptions { global: true }).await?;
    let mut consumers = Vec::new();
    for q in &queues {
        consumers.push(
            ch.basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?,
        );
    }
    // The broker dispatches when each consumer registers, before consume-ok; a
    // passive declare on another channel, after, sees what is left.
    let probe = conn.create_channel().await?;
    let mut ready = Vec::new();
    for q in &queues {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let info = probe
            .queue_declare(q.as_str().into(), passive, FieldTable::default())
            .await?;
        ready.push(info.message_count());
    }
    drop(consumers);
    conn.close(200, "OK".into()).await?;
    Ok(ready)
}

#[tokio::test]
async fn denied_transient_nonexclusive_queues_close_the_connection_with_541() {
    let broker = Broker::builder()
        .deprecated_features(DeprecatedFeatures::denied())
        .start()
        .await
        .expect("start");
    let url = broker.amqp_url();
    for (name, opts) in [
        ("t1", options(false, false)),
        (
            "t2",
            QueueDeclareOptions {
                auto_delete: true,
                ..options(false, false)
            },
        ),
        ("", options(false, false)),
    ] {
        assert_eq!(
            declare(&url, name, opts).await,
            Some((541, DENIED.to_owned(), true)),
            "queue {name:?}"
        );
    }
    // Durable and exclusive queues are fine.
    assert_eq!(declare(&url, "d", options(true, false)).await, None);
    assert_eq!(declare(&url, "", options(false, true)).await, None);
    // An existing queue is checked for equivalence first, as RabbitMQ does: 406.
    let refused = declare(&url, "d", options(false, false)).await;
    assert_eq!(
        refused.map(|(code, _, closed)| (code, closed)),
        Some((406, false))
    );
    // The reserved prefix is checked first too.
    let refused = declare(&url, "amq.x", options(false, false)).await;
    assert_eq!(refused.map(|(code, _, _)| code), Some(403));
    broker.shutdown().await;
}

#[tokio::test]
async fn transient_nonexclusive_queues_are_permitted_by_default() {
    let broker = Broker::builder().start().await.expect("start");
    let url = broker.amqp_url();
    assert_eq!(declare(&url, "t", options(false, false)).await, None);
    broker.shutdown().await;
}

#[tokio::test]
async fn denied_global_qos_is_applied_per_consumer() {
    let broker = Broker::builder()
        .deprecated_features(DeprecatedFeatures::denied())
        .start()
        .await
        .expect("start");
    // One delivery per consumer: 2 + 2 left.
    assert_eq!(
        ready_after_global_qos(&broker.amqp_url())
            .await
            .expect("run"),
        [2, 2]
    );
    broker.shutdown().await;
    // Permitted (the default), the prefetch of 1 is the channel's: 2 + 3 left.
    let broker = Broker::builder().start().await.expect("start");
    assert_eq!(
        ready_after_global_qos(&broker.amqp_url())
            .await
            .expect("run"),
        [2, 3]
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn the_binary_takes_rabbitmqs_keys_as_flags_and_config_keys() -> anyhow::Result<()> {
    // A flag for one, the config file's dotted key for the other.
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "deprecated_features.permit.global_qos = false\n")?;
    let config = config.to_string_lossy().into_owned();
    let broker = common::process::BrokerProcess::start([
        "--listen",
        "127.0.0.1:0",
        "--management-listen",
        "off",
        "--config",
        &config,
        "--deprecated-features.permit.transient-nonexcl-queues",
        "false",
    ])?;
    assert_eq!(
        declare(&broker.url, "t", options(false, false)).await,
        Some((541, DENIED.to_owned(), true))
    );
    assert_eq!(ready_after_global_qos(&broker.url).await?, [2, 2]);
    broker.kill()?;
    Ok(())
}

#[test]
fn the_environment_variables_and_a_table_set_them_too() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "[deprecated_features.permit]\ntransient_nonexcl_queues = false\n",
    )?;
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--config", &config.to_string_lossy(), "--print-config"])
        .env("BROKER_DEPRECATED_FEATURES_PERMIT_GLOBAL_QOS", "false")
        .env_remove("BROKER_DEPRECATED_FEATURES_PERMIT_TRANSIENT_NONEXCL_QUEUES")
        .output()?;
    let printed = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{printed}");
    assert!(
        printed
            .contains("deprecated_features.permit.transient_nonexcl_queues = false # config file"),
        "{printed}"
    );
    assert!(
        printed.contains("deprecated_features.permit.global_qos = false # environment"),
        "{printed}"
    );
    Ok(())
}

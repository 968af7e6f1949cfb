//! End-to-end checks of the built-in broker with lapin, the client the framework uses.
//! The cross-broker conformance suite lives in the workspace's `tests/conformance`.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

async fn connect() -> anyhow::Result<(broker::BrokerHandle, Connection)> {
    let b = broker::Broker::builder().start().await?;
    let conn = Connection::connect(&b.amqp_url(), ConnectionProperties::default()).await?;
    Ok((b, conn))
}

#[tokio::test]
async fn publish_consume_ack_with_confirms() -> anyhow::Result<()> {
    let (_b, conn) = connect().await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for i in 0..10u8 {
        let confirm = ch
            .basic_publish(
                "".into(),
                q.name().clone(),
                BasicPublishOptions::default(),
                &[i; 300_000],
                BasicProperties::default().with_correlation_id(format!("c{i}").into()),
            )
            .await?
            .await?;
        assert!(confirm.is_ack());
    }
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for i in 0..10u8 {
        let d = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await?
            .expect("delivery")?;
        assert_eq!(d.data.len(), 300_000);
        assert_eq!(d.data[0], i);
        assert_eq!(
            d.properties
                .correlation_id()
                .as_ref()
                .map(|s| s.as_str().to_owned()),
            Some(format!("c{i}"))
        );
        d.ack(BasicAckOptions::default()).await?;
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}

#[tokio::test]
async fn direct_reply_to_round_trip() -> anyhow::Result<()> {
    let (_b, conn) = connect().await?;
    let server = conn.create_channel().await?;
    server
        .queue_declare(
            "rpc".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut requests = server
        .basic_consume(
            "rpc".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let client = conn.create_channel().await?;
    let mut replies = client
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    client
        .basic_publish(
            "".into(),
            "rpc".into(),
            BasicPublishOptions::default(),
            b"30",
            BasicProperties::default()
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id("x".into()),
        )
        .await?;
    let req = tokio::time::timeout(Duration::from_secs(5), requests.next())
        .await?
        .expect("request")?;
    let reply_to = req.properties.reply_to().clone().expect("reply_to");
    assert!(reply_to.as_str().starts_with("amq.rabbitmq.reply-to."));
    server
        .basic_publish(
            "".into(),
            reply_to,
            BasicPublishOptions::default(),
            b"832040",
            BasicProperties::default().with_correlation_id("x".into()),
        )
        .await?;
    req.ack(BasicAckOptions::default()).await?;
    let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await?
        .expect("reply")?;
    assert_eq!(&reply.data[..], b"832040");
    Ok(())
}

#[tokio::test]
async fn passive_declare_of_a_missing_queue_closes_the_channel_with_404() -> anyhow::Result<()> {
    let (_b, conn) = connect().await?;
    let ch = conn.create_channel().await?;
    let err = ch
        .queue_declare(
            "nope".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("404");
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");
    // The connection survives a channel error.
    let ch2 = conn.create_channel().await?;
    ch2.queue_declare(
        "yes".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

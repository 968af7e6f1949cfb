//! Consumer timeouts end to end with lapin against the embedded broker: a delivery
//! left unacked past `x-consumer-timeout` closes its channel with RabbitMQ's 406 and
//! the message goes back to the queue; with the broker's timeout set to cancel, only
//! the consumer is cancelled and the channel keeps working.
//!
//! Embedded only: RabbitMQ checks consumer timeouts on a minute-long tick (neither 3.10
//! nor 4.0.5 closed a channel within 100 s of a 1 s `x-consumer-timeout`), which is too
//! slow for a test; the text is the one RabbitMQ's own consumer-timeout closes carry.

mod common;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

async fn open(b: &broker::BrokerHandle) -> anyhow::Result<(Connection, Channel)> {
    let url = format!("amqp://guest:guest@{}/%2f", b.local_addr());
    let conn = Connection::connect(&url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

async fn queue_with_message(ch: &Channel, q: &str, args: FieldTable) -> anyhow::Result<()> {
    ch.queue_declare(q.into(), QueueDeclareOptions::default(), args)
        .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        b"work",
        BasicProperties::default(),
    )
    .await?
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_unacked_delivery_past_x_consumer_timeout_closes_the_channel_and_goes_back()
-> anyhow::Result<()> {
    let b = broker::Broker::builder().start().await?;
    let (conn, ch) = open(&b).await?;
    let mut args = FieldTable::default();
    args.insert("x-consumer-timeout".into(), AMQPValue::LongInt(300));
    queue_with_message(&ch, "slow", args).await?;
    let mut consumer = ch
        .basic_consume(
            "slow".into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let first = common::next_delivery(&mut consumer).await?;
    assert!(!first.redelivered);
    // Not acked: the broker closes the channel, which ends the consumer with the error.
    let end = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await?;
    let err = match end {
        Some(Err(e)) => e,
        other => anyhow::bail!("expected the channel's close, got {other:?}"),
    };
    assert_eq!(
        common::amqp_error(&err),
        Some((
            406,
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 300 ms. This timeout value can be configured, see consumers doc guide to learn more".to_owned()
        ))
    );
    // The message is back, redelivered, for the next consumer.
    let ch2 = conn.create_channel().await?;
    let got = ch2
        .basic_get("slow".into(), BasicGetOptions { no_ack: true })
        .await?
        .ok_or_else(|| anyhow::anyhow!("the message did not go back"))?;
    assert!(got.delivery.redelivered);
    assert_eq!(got.delivery.data, b"work");
    conn.close(200, "bye".into()).await?;
    Ok(())
}

#[tokio::test]
async fn in_cancel_mode_the_consumer_is_cancelled_and_the_channel_stays() -> anyhow::Result<()> {
    let b = broker::Broker::builder()
        .consumer_timeout(broker::ConsumerTimeout {
            default: Some(Duration::from_millis(300)),
            cancels: true,
        })
        .start()
        .await?;
    let (conn, ch) = open(&b).await?;
    queue_with_message(&ch, "slow", FieldTable::default()).await?;
    let mut consumer = ch
        .basic_consume(
            "slow".into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    common::next_delivery(&mut consumer).await?;
    // basic.cancel from the broker ends lapin's consumer stream without an error.
    let end = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await?;
    assert!(end.is_none(), "expected the consumer's cancel, got {end:?}");
    assert!(ch.status().connected(), "the channel stays open");
    let mut next = ch
        .basic_consume(
            "slow".into(),
            "worker-2".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let again = common::next_delivery(&mut next).await?;
    assert!(
        again.redelivered,
        "the cancelled consumer's delivery went back"
    );
    again.ack(BasicAckOptions::default()).await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

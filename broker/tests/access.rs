//! Access control and protective limits, end to end with lapin against the embedded
//! broker: logins, vhost access at `connection.open`, per-resource permissions with
//! RabbitMQ's 403 texts, `max_connections` and `max_message_size`.
//!
//! Embedded only: these scenarios need users and limits set up on the broker, which the
//! cross-broker conformance suite does not do on RabbitMQ. Every expected text below was
//! observed on RabbitMQ 3.10 with users made by `rabbitmqctl`.

mod common;

use common::{amqp_error, expect_error};

use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn url(b: &broker::BrokerHandle, user: &str, password: &str) -> String {
    format!("amqp://{user}:{password}@{}/%2f", b.local_addr())
}

async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    Connection::connect(url, ConnectionProperties::default()).await
}

/// A broker with user `app` (password `pw`) limited to `app.*` names, and `nobody`
/// (password `pw`) with no permissions at all.
async fn broker_with_users(
    configure: &str,
    write: &str,
    read: &str,
) -> anyhow::Result<broker::BrokerHandle> {
    Ok(broker::Broker::builder()
        .user_with_tags("app", "pw", &["monitoring"])
        .permissions("app", "/", configure, write, read)?
        .user_with_tags("nobody", "pw", &[])
        .start()
        .await?)
}

async fn declare(ch: &Channel, name: &str) -> Result<lapin::Queue, lapin::Error> {
    ch.queue_declare(name.into(), Default::default(), FieldTable::default())
        .await
}

#[tokio::test]
async fn bad_password_is_refused_403_at_login() -> anyhow::Result<()> {
    let b = broker_with_users(".*", ".*", ".*").await?;
    expect_error(
        connect(&url(&b, "app", "wrong")).await.map(drop),
        403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
    );
    // The right password gets in.
    connect(&url(&b, "app", "pw"))
        .await?
        .close(200, "bye".into())
        .await?;
    Ok(())
}

#[tokio::test]
async fn user_without_permissions_is_refused_530_at_open() -> anyhow::Result<()> {
    let b = broker_with_users(".*", ".*", ".*").await?;
    expect_error(
        connect(&url(&b, "nobody", "pw")).await.map(drop),
        530,
        "NOT_ALLOWED - access to vhost '/' refused for user 'nobody'",
    );
    // An unknown vhost is reported as such, before permissions (as RabbitMQ does).
    let other = format!("amqp://app:pw@{}/nope", b.local_addr());
    expect_error(
        connect(&other).await.map(drop),
        530,
        "NOT_ALLOWED - vhost nope not found",
    );
    Ok(())
}

#[tokio::test]
async fn configure_pattern_limits_declares_and_the_connection_survives() -> anyhow::Result<()> {
    let b = broker_with_users("^app\\..*", "^app\\..*", "^app\\..*").await?;
    // Made by guest, for the passive declare below.
    let guest = connect(&b.amqp_url()).await?;
    declare(&guest.create_channel().await?, "other.q").await?;

    let conn = connect(&url(&b, "app", "pw")).await?;
    let ch = conn.create_channel().await?;
    declare(&ch, "app.q").await?;
    expect_error(
        declare(&ch, "other.new").await,
        403,
        "ACCESS_REFUSED - access to queue 'other.new' in vhost '/' refused for user 'app'",
    );
    assert!(!ch.status().connected(), "the channel is closed");
    // The connection survives; passive declares are not checked.
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        "other.q".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    // A server-named queue is checked under its generated name.
    let res = declare(&ch, "").await;
    let (code, text) = res
        .err()
        .and_then(|e| amqp_error(&e))
        .expect("server-named refused");
    assert_eq!(code, 403);
    assert!(
        text.starts_with("ACCESS_REFUSED - access to queue 'amq.gen-")
            && text.ends_with("' in vhost '/' refused for user 'app'"),
        "{text}"
    );
    // Exchanges: configure on declare and delete.
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        "app.x".into(),
        lapin::ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await?;
    expect_error(
        ch.exchange_declare(
            "other.x".into(),
            lapin::ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await,
        403,
        "ACCESS_REFUSED - access to exchange 'other.x' in vhost '/' refused for user 'app'",
    );
    let ch = conn.create_channel().await?;
    expect_error(
        ch.queue_delete("other.q".into(), Default::default()).await,
        403,
        "ACCESS_REFUSED - access to queue 'other.q' in vhost '/' refused for user 'app'",
    );
    // Binding: write on the queue, then read on the exchange.
    let ch = conn.create_channel().await?;
    ch.queue_bind(
        "app.q".into(),
        "app.x".into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await?;
    expect_error(
        ch.queue_bind(
            "app.q".into(),
            "amq.fanout".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await,
        403,
        "ACCESS_REFUSED - access to exchange 'amq.fanout' in vhost '/' refused for user 'app'",
    );
    let ch = conn.create_channel().await?;
    expect_error(
        ch.queue_bind(
            "other.q".into(),
            "app.x".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await,
        403,
        "ACCESS_REFUSED - access to queue 'other.q' in vhost '/' refused for user 'app'",
    );
    conn.close(200, "bye".into()).await?;
    Ok(())
}

#[tokio::test]
async fn write_denied_publish_is_403() -> anyhow::Result<()> {
    let b = broker_with_users(".*", "^app\\.", ".*").await?;
    let conn = connect(&url(&b, "app", "pw")).await?;
    let ch = conn.create_channel().await?;
    declare(&ch, "app.q").await?;
    ch.exchange_declare(
        "app.x".into(),
        lapin::ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await?;
    ch.confirm_select(Default::default()).await?;
    common::publish_confirmed(&ch, "app.x", b"ok").await?;
    // The default exchange is checked as `amq.default`.
    expect_error(
        common::publish_confirmed(&ch, "", b"no").await,
        403,
        "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'app'",
    );
    // Permission is checked before the exchange's existence.
    let ch = conn.create_channel().await?;
    ch.confirm_select(Default::default()).await?;
    expect_error(
        common::publish_confirmed(&ch, "missing", b"no").await,
        403,
        "ACCESS_REFUSED - access to exchange 'missing' in vhost '/' refused for user 'app'",
    );
    Ok(())
}

#[tokio::test]
async fn publish_permission_cache_does_not_leak_to_other_exchanges() -> anyhow::Result<()> {
    // Run-time changes of the user table invalidate the cache: unit-tested in channel.rs.
    let b = broker_with_users(".*", "^app\\.x$", ".*").await?;
    let conn = connect(&url(&b, "app", "pw")).await?;
    let ch = conn.create_channel().await?;
    for x in ["app.x", "app.y"] {
        ch.exchange_declare(
            x.into(),
            lapin::ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.confirm_select(Default::default()).await?;
    common::publish_confirmed(&ch, "app.x", b"1").await?;
    common::publish_confirmed(&ch, "app.x", b"2").await?;
    expect_error(
        common::publish_confirmed(&ch, "app.y", b"3").await,
        403,
        "ACCESS_REFUSED - access to exchange 'app.y' in vhost '/' refused for user 'app'",
    );
    Ok(())
}

#[tokio::test]
async fn read_denied_consume_get_and_purge_are_403() -> anyhow::Result<()> {
    let b = broker_with_users(".*", ".*", "^app\\.").await?;
    let conn = connect(&url(&b, "app", "pw")).await?;
    let ch = conn.create_channel().await?;
    declare(&ch, "app.q").await?;
    declare(&ch, "other.q").await?;
    ch.basic_get("app.q".into(), Default::default()).await?;
    let refused = "ACCESS_REFUSED - access to queue 'other.q' in vhost '/' refused for user 'app'";
    expect_error(
        ch.basic_consume(
            "other.q".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .map(drop),
        403,
        refused,
    );
    let ch = conn.create_channel().await?;
    expect_error(
        ch.basic_get("other.q".into(), Default::default()).await,
        403,
        refused,
    );
    let ch = conn.create_channel().await?;
    expect_error(
        ch.queue_purge("other.q".into(), Default::default()).await,
        403,
        refused,
    );
    // Direct reply-to is not a queue permissions apply to.
    let ch = conn.create_channel().await?;
    ch.basic_consume(
        "amq.rabbitmq.reply-to".into(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn max_connections_leaves_newcomers_unanswered_until_one_closes() -> anyhow::Result<()> {
    let b = broker::Broker::builder().max_connections(1).start().await?;
    let first = connect(&b.amqp_url()).await?;
    // As RabbitMQ 3.10 (ranch's max_connections): the socket connects (kernel backlog)
    // but nothing answers the protocol header while the broker is full.
    let mut second = tokio::net::TcpStream::connect(b.local_addr()).await?;
    second.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(700), second.read(&mut buf)).await;
    assert!(read.is_err(), "no connection.start while full: {read:?}");
    drop(second);
    first.close(200, "bye".into()).await?;
    let third = tokio::time::timeout(Duration::from_secs(5), connect(&b.amqp_url())).await??;
    third.close(200, "bye".into()).await?;
    Ok(())
}

#[tokio::test]
async fn max_message_size_is_406_and_the_connection_survives() -> anyhow::Result<()> {
    let b = broker::Broker::builder()
        .max_message_size(1000)
        .start()
        .await?;
    let conn = connect(&b.amqp_url()).await?;
    let ch = conn.create_channel().await?;
    declare(&ch, "app.q").await?;
    ch.confirm_select(Default::default()).await?;
    common::publish_confirmed(&ch, "", &[7; 1000]).await?;
    expect_error(
        common::publish_confirmed(&ch, "", &[7; 1001]).await,
        406,
        "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000",
    );
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            "app.q".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    assert_eq!(q.message_count(), 1, "only the message within the limit");
    Ok(())
}

#[tokio::test]
async fn max_message_size_above_512_mib_is_refused_at_start() {
    // RabbitMQ caps `max_message_size` at 512 MiB; the store's record length is a u32.
    for bytes in [512 * 1024 * 1024 + 1, 5 * 1024 * 1024 * 1024] {
        match broker::Broker::builder()
            .max_message_size(bytes)
            .start()
            .await
        {
            Err(e) => {
                assert!(
                    matches!(e, broker::StartError::MaxMessageSize { requested, cap }
                        if requested == bytes && cap == 512 * 1024 * 1024),
                    "{e:?}"
                );
                assert!(e.to_string().contains("max_message_size"), "{e}");
            }
            Ok(b) => panic!(
                "started with max_message_size {bytes} on {}",
                b.local_addr()
            ),
        }
    }
    let ok = broker::Broker::builder()
        .max_message_size(512 * 1024 * 1024)
        .start()
        .await
        .expect("512 MiB is allowed");
    drop(ok);
}

#[tokio::test]
async fn oversized_body_is_refused_from_its_header_alone() -> anyhow::Result<()> {
    use amq_protocol::frame::AMQPFrame;
    use amq_protocol::protocol::{AMQPClass, basic, channel};
    let b = broker::Broker::builder()
        .max_message_size(1000)
        .start()
        .await?;
    let mut s = common::open(b.local_addr(), 0).await?;
    let mut out = common::encode(&AMQPFrame::Method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    ));
    out.extend(common::encode(&AMQPFrame::Method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: false,
        })),
    )));
    // A content header announcing 1 TiB; no body follows.
    let size: u64 = 1 << 40;
    out.extend([2, 0, 1, 0, 0, 0, 14, 0, 60, 0, 0]);
    out.extend(size.to_be_bytes());
    out.extend([0, 0, 0xce]);
    s.write_all(&out).await?;
    let want = format!(
        "PRECONDITION_FAILED - message size {size} is larger than configured max size 1000"
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(want.len()).any(|w| w == want.as_bytes()) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed before channel.close");
        got.extend_from_slice(&buf[..n]);
    }
    // channel.close 406 for basic.publish (60, 40).
    let at = got
        .windows(4)
        .position(|w| w == [0, 20, 0, 40])
        .expect("channel.close");
    assert_eq!(&got[at + 4..at + 6], &406u16.to_be_bytes());
    Ok(())
}

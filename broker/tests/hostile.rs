//! Hostile clients against the real `broker` binary: deeply nested field tables, which
//! once overflowed the stack and aborted the process before any login.
//!
//! Each test sends what a hostile peer sends, checks what it gets back (the error that
//! names the limit), and then that the same process still serves a well-behaved client.

mod common;

use std::time::Duration;

use common::process::BrokerProcess;
use common::raw::{long, method_frame, short, until_closed};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Far past any stack: 7 bytes a level, 70 KB for the whole table.
const LEVELS: usize = 10_000;

/// `connection.start-ok` with these client properties, mechanism and response.
fn start_ok(props: &[u8], mechanism: &str, response: &[u8]) -> Vec<u8> {
    let mut args = props.to_vec();
    short(&mut args, mechanism);
    long(&mut args, response);
    short(&mut args, "en_US");
    method_frame(0, 10, 11, &args)
}

/// The process is alive and a lapin client can log in and declare a queue.
async fn still_serves(broker: &BrokerProcess) -> anyhow::Result<()> {
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        lapin::Connection::connect(&broker.url, lapin::ConnectionProperties::default()),
    )
    .await??;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    conn.close(200, "bye".into()).await?;
    Ok(())
}

const LIMIT_TEXT: &str = "field table nested deeper than 32 levels";

#[tokio::test]
async fn deep_client_properties_before_login_do_not_kill_the_broker() -> anyhow::Result<()> {
    let broker = BrokerProcess::start(["--listen", "127.0.0.1:0"])?;
    for arrays in [false, true] {
        let mut s = TcpStream::connect(broker.addr).await?;
        s.write_all(b"AMQP\x00\x00\x09\x01").await?;
        s.write_all(&start_ok(
            &common::deep_table(LEVELS, arrays),
            "PLAIN",
            b"\0guest\0guest",
        ))
        .await?;
        // Before login RabbitMQ just closes the socket on a syntax error; so do we.
        until_closed(&mut s).await?;
        still_serves(&broker).await?;
    }
    // The AMQPLAIN response is a table too (its entries, without the length prefix).
    let mut s = TcpStream::connect(broker.addr).await?;
    s.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let deep = common::deep_table(LEVELS, false);
    s.write_all(&start_ok(&[0, 0, 0, 0], "AMQPLAIN", &deep[4..]))
        .await?;
    until_closed(&mut s).await?;
    still_serves(&broker).await?;
    let log = broker.log_once_it_has(LIMIT_TEXT);
    assert!(log.contains(LIMIT_TEXT), "the log names the limit: {log}");
    Ok(())
}

#[tokio::test]
async fn deep_arguments_after_login_close_with_the_limit_named() -> anyhow::Result<()> {
    let broker = BrokerProcess::start(["--listen", "127.0.0.1:0"])?;
    let table = common::deep_table(LEVELS, false);
    let arrays = common::deep_table(LEVELS, true);
    let with = |prefix: &dyn Fn(&mut Vec<u8>), table: &[u8]| {
        let mut args = Vec::new();
        prefix(&mut args);
        args.extend_from_slice(table);
        args
    };
    let queue_declare = |a: &mut Vec<u8>| {
        a.extend_from_slice(&[0, 0]);
        short(a, "q");
        a.push(0);
    };
    let exchange_declare = |a: &mut Vec<u8>| {
        a.extend_from_slice(&[0, 0]);
        short(a, "x");
        short(a, "direct");
        a.push(0);
    };
    let consume = |a: &mut Vec<u8>| {
        a.extend_from_slice(&[0, 0]);
        short(a, "q");
        short(a, "");
        a.push(0);
    };
    let queue_bind = |a: &mut Vec<u8>| {
        a.extend_from_slice(&[0, 0]);
        short(a, "q");
        short(a, "amq.direct");
        short(a, "k");
        a.push(0);
    };
    let cases = [
        ("queue.declare", 50, 10, with(&queue_declare, &table)),
        (
            "queue.declare (arrays)",
            50,
            10,
            with(&queue_declare, &arrays),
        ),
        ("exchange.declare", 40, 10, with(&exchange_declare, &table)),
        ("basic.consume", 60, 20, with(&consume, &table)),
        ("queue.bind", 50, 20, with(&queue_bind, &arrays)),
    ];
    for (name, class, method, args) in cases {
        let mut s = common::open(broker.addr, 0).await?;
        s.write_all(&method_frame(1, 20, 10, &[0])).await?; // channel.open
        s.write_all(&method_frame(1, class, method, &args)).await?;
        let closed = until_closed(&mut s).await?;
        assert_eq!(
            closed,
            Some((502, format!("SYNTAX_ERROR - {LIMIT_TEXT}"))),
            "{name}"
        );
        still_serves(&broker).await?;
    }
    Ok(())
}

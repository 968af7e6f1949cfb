//! Helpers shared by the broker's tests: raw-socket handshakes, lapin error checks,
//! (in [`http`]) a management API client, (in [`definitions`]) a broker's
//! definitions as its listings show them, (in [`poll`]) the bounded wait shared with the
//! root package's tests, (in [`process`]) the `broker` binary as a child process, and (in
//! [`raw`]) frames by hand.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

pub mod ctl;
pub mod definitions;
pub mod http;
pub mod poll;
pub mod process;
pub mod raw;
pub mod tmpfs;

use std::time::Duration;

use amq_protocol::frame::{AMQPFrame, gen_frame};
use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::FieldTable;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Encodes one frame.
pub fn encode(frame: &AMQPFrame) -> Vec<u8> {
    gen_frame(frame)(Vec::new().into())
        .map(|c| c.into_inner().0)
        .unwrap_or_default()
}

/// Opens a connection by hand (PLAIN guest/guest, the given heartbeat) and waits for
/// open-ok.
pub async fn open(addr: std::net::SocketAddr, heartbeat: u16) -> anyhow::Result<TcpStream> {
    open_with(addr, heartbeat, 8).await
}

/// [`open`] asking for `channel_max` channels.
pub async fn open_with(
    addr: std::net::SocketAddr,
    heartbeat: u16,
    channel_max: u16,
) -> anyhow::Result<TcpStream> {
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
            channel_max,
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

/// A field table (with its length prefix) nesting `levels` tables, or a table holding
/// arrays nested `levels` deep, built by hand (an encoder would recurse as deep).
pub fn deep_table(levels: usize, arrays: bool) -> Vec<u8> {
    let mut inner: Vec<u8> = if arrays {
        vec![b'A', 0, 0, 0, 0]
    } else {
        vec![0, 0, 0, 0]
    };
    for _ in 1..levels {
        inner = if arrays {
            let mut v = vec![b'A'];
            v.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            v.extend_from_slice(&inner);
            v
        } else {
            let mut entry = vec![1, b'k', b'F'];
            entry.extend_from_slice(&inner);
            let mut t = (entry.len() as u32).to_be_bytes().to_vec();
            t.extend_from_slice(&entry);
            t
        };
    }
    if arrays {
        let mut entry = vec![1, b'k'];
        entry.extend_from_slice(&inner);
        let mut t = (entry.len() as u32).to_be_bytes().to_vec();
        t.extend_from_slice(&entry);
        t
    } else {
        inner
    }
}

/// `connection.close` 200.
pub fn close_frame() -> Vec<u8> {
    encode(&AMQPFrame::Method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    ))
}

/// The reply code and text of a lapin protocol error.
pub fn amqp_error(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some((p.get_id(), p.get_message().to_string())),
        _ => None,
    }
}

/// Asserts `res` failed with `code` and exactly `text`.
pub fn expect_error<T: std::fmt::Debug>(res: Result<T, lapin::Error>, code: u16, text: &str) {
    match res {
        Ok(v) => panic!("expected {code} {text:?}, got Ok({v:?})"),
        Err(e) => assert_eq!(
            amqp_error(&e),
            Some((code, text.to_owned())),
            "unexpected error: {e}"
        ),
    }
}

/// The first error event of a connection (what the broker closed it with).
pub async fn closed_with(
    events: &mut (impl futures::Stream<Item = lapin::Event> + Unpin),
) -> anyhow::Result<(u16, String)> {
    let err = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = events.next().await {
            if let lapin::Event::Error(e) = e {
                return Some(e);
            }
        }
        None
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("no error event"))?;
    amqp_error(&err).ok_or_else(|| anyhow::anyhow!("not a protocol error: {err}"))
}

/// The consumer's next delivery, within 5 s.
pub async fn next_delivery(
    consumer: &mut lapin::Consumer,
) -> anyhow::Result<lapin::message::Delivery> {
    tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("consumer ended"))?
        .map_err(Into::into)
}

/// Publishes `body` to `exchange` with routing key `app.q` and waits for the broker's
/// answer (the confirm, or the channel error).
pub async fn publish_confirmed(
    ch: &lapin::Channel,
    exchange: &str,
    body: &[u8],
) -> Result<(), lapin::Error> {
    ch.basic_publish(
        exchange.into(),
        "app.q".into(),
        lapin::options::BasicPublishOptions::default(),
        body,
        lapin::BasicProperties::default(),
    )
    .await?
    .await
    .map(drop)
}

/// Publishes `count` messages of `size` bytes to queue `q` (declared here), all
/// confirmed.
pub async fn fill_queue(
    ch: &lapin::Channel,
    q: &str,
    count: usize,
    size: usize,
) -> anyhow::Result<()> {
    ch.queue_declare(
        q.into(),
        lapin::options::QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let body = vec![b'x'; size];
    let mut in_flight = futures::stream::FuturesUnordered::new();
    for _ in 0..count {
        if in_flight.len() >= 256
            && let Some(c) = in_flight.next().await
        {
            let c: lapin::Confirmation = c?;
            anyhow::ensure!(c.is_ack(), "nacked");
        }
        let confirm = ch
            .basic_publish(
                "".into(),
                q.into(),
                lapin::options::BasicPublishOptions::default(),
                &body,
                lapin::BasicProperties::default(),
            )
            .await?;
        in_flight.push(confirm);
    }
    while let Some(c) = in_flight.next().await {
        anyhow::ensure!(c?.is_ack(), "nacked");
    }
    Ok(())
}

/// Percent-encodes one path segment of a management API URL (a vhost or connection
/// name), as `broker ctl` does.
#[allow(unused_imports)]
pub use broker::internals::encode_segment;

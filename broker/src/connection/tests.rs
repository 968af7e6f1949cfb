//! The connection's phase machine and deadlines, driven over an in-memory socket
//! (`tokio::io::duplex`) with byte fixtures for the client's frames, under paused
//! time: a handshake timeout or a heartbeat deadline passes in no real time at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::{FieldTable, LongString};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Accepted, HANDSHAKE_TIMEOUT, serve_stream};
use crate::frame::{self, Frame};
use crate::limits::Limits;
use crate::shared::Shared;
use crate::vhost::VHosts;

/// The client's end of the socket, and the task serving the other end.
struct Client {
    io: DuplexStream,
    buf: BytesMut,
    served: JoinHandle<()>,
    /// Kept so the broker is not told to shut down by a dropped sender.
    _shutdown: watch::Sender<bool>,
}

fn shared() -> Arc<Shared> {
    let vhosts = VHosts::open(None, &[], Default::default()).expect("in-memory vhosts");
    let users = crate::auth::config::open(None, &vhosts.listed(), &Default::default())
        .expect("default users");
    Arc::new(Shared::new(users, Limits::default(), vhosts, None))
}

/// Accepts a connection over an in-memory socket, as the listener does.
fn accept() -> Client {
    let (io, server) = tokio::io::duplex(1 << 20);
    let (rd, wr) = tokio::io::split(server);
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    let accepted = Accepted {
        peer,
        local: SocketAddr::from(([127, 0, 0, 1], 5672)),
        tls: None,
        handshake_deadline: Instant::now() + HANDSHAKE_TIMEOUT,
    };
    let (tx, rx) = watch::channel(false);
    let served = tokio::spawn(serve_stream(rd, wr, accepted, shared(), rx));
    Client {
        io,
        buf: BytesMut::new(),
        served,
        _shutdown: tx,
    }
}

impl Client {
    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("in-memory write");
    }

    async fn send(&mut self, method: connection::AMQPMethod) {
        let mut out = Vec::new();
        frame::encode_method(&mut out, 0, AMQPClass::Connection(method));
        self.send_bytes(&out).await;
    }

    /// The next frame from the broker, or `None` once it closed the socket.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            match frame::decode(&mut self.buf, 1 << 20) {
                Ok(Some(f)) => return Some(f),
                Ok(None) => {}
                Err(e) => panic!("undecodable frame from the broker: {e}"),
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next connection-class method, skipping heartbeats.
    async fn method(&mut self) -> Option<connection::AMQPMethod> {
        loop {
            match self.frame().await? {
                Frame::Method(0, AMQPClass::Connection(m)) => return Some(m),
                Frame::Heartbeat(0) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Reads until the broker closes the socket; how many heartbeats came first.
    async fn until_closed(&mut self) -> usize {
        let mut beats = 0;
        while let Some(f) = self.frame().await {
            match f {
                Frame::Heartbeat(0) => beats += 1,
                other => panic!("unexpected frame {other:?}"),
            }
        }
        beats
    }

    /// Sends the protocol header and logs in as guest, up to `connection.tune`.
    async fn login(&mut self) {
        self.send_bytes(frame::PROTOCOL_HEADER).await;
        assert!(matches!(
            self.method().await,
            Some(connection::AMQPMethod::Start(_))
        ));
        self.send(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(b"\0guest\0guest".to_vec()),
            locale: "en_US".into(),
        }))
        .await;
        assert!(matches!(
            self.method().await,
            Some(connection::AMQPMethod::Tune(_))
        ));
    }

    /// Sends `connection.close` and expects `close-ok`: the connection was open.
    async fn close(&mut self) {
        self.send(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        }))
        .await;
        assert!(matches!(
            self.method().await,
            Some(connection::AMQPMethod::CloseOk(_))
        ));
    }

    /// Sends the protocol header, logs in as guest, tunes with `heartbeat` and opens
    /// the default vhost.
    async fn open(&mut self, heartbeat: u16) {
        self.login().await;
        self.send(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 0,
            frame_max: 131_072,
            heartbeat,
        }))
        .await;
        self.send(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        }))
        .await;
        assert!(matches!(
            self.method().await,
            Some(connection::AMQPMethod::OpenOk(_))
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn a_wrong_protocol_header_is_answered_with_ours_and_the_socket_closed() {
    let mut c = accept();
    c.send_bytes(b"AMQP\x00\x00\x08\x00").await;
    let mut got = Vec::new();
    c.io.read_to_end(&mut got).await.expect("in-memory read");
    assert_eq!(got, frame::PROTOCOL_HEADER);
    c.served.await.expect("connection task");
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_at_the_handshake_timeout() {
    let start = Instant::now();
    let mut c = accept();
    c.send_bytes(frame::PROTOCOL_HEADER).await;
    assert!(matches!(
        c.method().await,
        Some(connection::AMQPMethod::Start(_))
    ));
    // No start-ok: the socket closes at the deadline, not before.
    assert_eq!(c.until_closed().await, 0);
    assert_eq!(start.elapsed(), HANDSHAKE_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn the_handshake_deadline_counts_from_the_accept_not_from_each_frame() {
    let start = Instant::now();
    let mut c = accept();
    tokio::time::sleep(HANDSHAKE_TIMEOUT - Duration::from_secs(1)).await;
    // A header just in time still leaves only a second for the rest.
    c.send_bytes(frame::PROTOCOL_HEADER).await;
    assert!(c.method().await.is_some());
    assert_eq!(c.until_closed().await, 0);
    assert_eq!(start.elapsed(), HANDSHAKE_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_go_out_every_half_interval_and_a_silent_client_is_dropped_after_two() {
    let mut c = accept();
    c.open(4).await;
    let opened = Instant::now();
    // We beat every 2 s; the client says nothing, so after 2 x 4 s it is gone.
    let beats = c.until_closed().await;
    assert_eq!(opened.elapsed(), Duration::from_secs(8));
    assert_eq!(beats, 3, "beats at 2, 4 and 6 s before the deadline at 8 s");
    c.served.await.expect("connection task");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_beats_stays_connected() {
    let mut c = accept();
    c.open(4).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        c.send_bytes(&[8, 0, 0, 0, 0, 0, 0, 0xCE]).await;
    }
    assert!(
        !c.served.is_finished(),
        "30 s of heartbeats every 3 s keep it open"
    );
    // Still answering: the close handshake completes (past the broker's heartbeats).
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn without_heartbeats_an_idle_connection_stays_open() {
    let mut c = accept();
    c.open(0).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!c.served.is_finished());
    c.close().await;
}

#[tokio::test(start_paused = true)]
async fn after_a_connection_error_the_socket_closes_when_close_ok_never_comes() {
    let mut c = accept();
    c.open(0).await;
    // A heartbeat on channel 1 is a connection error (505 UNEXPECTED_FRAME).
    c.send_bytes(&[8, 0, 1, 0, 0, 0, 0, 0xCE]).await;
    let Some(connection::AMQPMethod::Close(close)) = c.method().await else {
        panic!("expected connection.close");
    };
    assert_eq!(close.reply_code, 505);
    let sent = Instant::now();
    assert_eq!(c.until_closed().await, 0);
    assert_eq!(sent.elapsed(), super::CLOSE_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn channel_frames_before_open_close_the_connection() {
    let mut c = accept();
    c.login().await;
    let mut out = Vec::new();
    frame::encode_method(
        &mut out,
        1,
        AMQPClass::Channel(amq_protocol::protocol::channel::AMQPMethod::Open(
            amq_protocol::protocol::channel::Open {},
        )),
    );
    c.send_bytes(&out).await;
    let Some(connection::AMQPMethod::Close(close)) = c.method().await else {
        panic!("expected connection.close");
    };
    assert_eq!(close.reply_code, 504, "{}", close.reply_text);
}

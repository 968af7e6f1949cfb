//! One client connection: handshake, the read loop, heartbeats, and closing.
//!
//! A plain TCP socket is split into owned halves (no lock between reader and writer);
//! a socket of the TLS port first does its TLS handshake here, in the connection's
//! task, within the same handshake timeout as the AMQP handshake, and is then split
//! with `tokio::io::split`. Everything after that is the same code for both.
//!
//! Bytes come off the socket into one buffer, [`crate::frame::decode`] cuts frames from
//! it, connection-class methods are handled here and everything else goes to its
//! [`crate::channel::Channel`]. Replies and deliveries are appended to the connection's
//! [`Outbox`], which a separate writer task flushes with one write per wake-up.
//! Publisher confirms are coalesced once per read batch.
//!
//! While a memory or disk alarm is on (see `crate::alarm`), a connection that publishes is
//! blocked as RabbitMQ blocks it: from the `basic.publish` on, it gets
//! `connection.blocked` (if it announced that capability) and its frames are no longer
//! applied until the alarm clears, when it gets `connection.unblocked`. Deliveries,
//! confirms and our heartbeats still go out, and the client's missed heartbeats are
//! not held against it meanwhile. Connections that only consume are never blocked.
//!
//! A connection whose outbox is full (its client does not read; see [`Outbox`]) pauses
//! the same way until the writer drains it. A paused connection still reads its socket,
//! up to one frame plus `READ_AHEAD` bytes, so a peer that hangs up is seen at once
//! and its resources go; a writer that fails ends the connection too.
//!
//! Errors follow RabbitMQ: a channel error closes one channel, a connection error sends
//! `connection.close` and waits (briefly) for `close-ok`. Whatever ends the connection,
//! its channels' unacked messages go back to their queues and its exclusive queues go.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, basic, channel, connection};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::alarm::Resource;
use crate::auth;
use crate::channel::{Channel, Ctx};
use crate::error::{AmqpError, Scope, code};
use crate::frame::{self, Frame};
use crate::outbox::Outbox;
use crate::server::Shared;
use crate::vhost::ChannelState;
use crate::vhosts::VHostEntry;

/// How long a client has to finish the handshake, as RabbitMQ's `handshake_timeout`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long we wait for `close-ok` after sending `connection.close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Frame size allowed before tune-ok (the spec's minimum frame size).
const HANDSHAKE_FRAME_MAX: u32 = 4096 * 32;
/// How far past one whole frame the read buffer may fill while frames wait unapplied
/// (the connection is blocked by an alarm, or its outbox is full). Reading on that
/// far is how a paused connection still sees its peer close the socket.
const READ_AHEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    StartOk,
    TuneOk,
    Open,
    Running,
    /// We sent `connection.close` and wait for `close-ok`.
    Closing,
    /// Finished: stop reading.
    Done,
}

/// The state of one connection.
struct Connection {
    id: u64,
    peer: SocketAddr,
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    phase: Phase,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    user: String,
    /// The vhost named in `connection.open`, resolved once there (`None` before).
    vhost: Option<Arc<VHostEntry>>,
    cancel_notify: bool,
    /// The client understands `connection.blocked` and `connection.unblocked`.
    blocked_notify: bool,
    /// The alarm that is on, if any (memory or disk): the next `basic.publish` blocks
    /// the connection.
    alarm_on: Option<Resource>,
    /// Blocked by the alarm: the socket is not read until it clears.
    blocked: bool,
    /// The client understands `connection.close` after a refused login.
    auth_failure_close: bool,
    /// The client sent `connection.close` and got `close-ok`.
    client_closed: bool,
    channels: HashMap<u16, Channel>,
    /// Bytes of message bodies still arriving, over all channels: bounded, so a
    /// client that starts bodies and never finishes them cannot hold more than that.
    partial: usize,
    close_deadline: Option<Instant>,
    /// Woken by the store's sync thread when a ticket confirms wait on is synced.
    synced: Arc<tokio::sync::Notify>,
    /// The ticket `synced` is registered for.
    awaiting: Option<u64>,
    /// Woken when the management API asks this connection to close.
    kill: Arc<tokio::sync::Notify>,
}

/// Serves one accepted plain-TCP socket until it closes.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let handshake_deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    // Owned halves: no lock between the reader and the writer task.
    let (rd, wr) = stream.into_split();
    let accepted = Accepted {
        peer,
        local,
        tls: None,
        handshake_deadline,
    };
    serve_stream(rd, wr, accepted, shared, shutdown).await;
}

/// Serves one socket accepted on the TLS port: the TLS handshake first, in this task
/// and within the AMQP handshake timeout (which the AMQP handshake then shares).
pub(crate) async fn serve_tls(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let handshake_deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    // Gives up at the deadline, or at once when the broker shuts down.
    let limit = async {
        let _ = tokio::time::timeout_at(handshake_deadline, shutdown.wait_for(|stop| *stop)).await;
    };
    let (tls, info) = match crate::tls::handshake(&acceptor, stream, limit).await {
        Ok(done) => done,
        Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {
            tracing::info!(%peer, "TLS handshake timeout");
            return;
        }
        Err(err) => {
            tracing::debug!(%peer, %err, "TLS handshake failed");
            return;
        }
    };
    tracing::debug!(%peer, protocol = info.protocol, cipher = info.cipher, "TLS established");
    let (rd, wr) = tokio::io::split(tls);
    let accepted = Accepted {
        peer,
        local,
        tls: Some(info),
        handshake_deadline,
    };
    serve_stream(rd, wr, accepted, shared, shutdown).await;
}

/// Where an accepted connection came from.
struct Accepted {
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<crate::tls::TlsInfo>,
    /// When the AMQP handshake must be done by (counted from the accept).
    handshake_deadline: Instant,
}

/// Serves one connection, whatever carries its bytes, until it closes.
async fn serve_stream<R, W>(
    mut rd: R,
    wr: W,
    accepted: Accepted,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Accepted {
        peer,
        local,
        tls,
        handshake_deadline,
    } = accepted;
    let outbox = Arc::new(Outbox::default());
    let writer = tokio::spawn(write_loop(wr, Arc::clone(&outbox)));
    let id = shared.next_connection_id();
    let kill = shared.registry.register(id, peer, local, tls);
    let mut conn = Connection {
        id,
        peer,
        shared,
        outbox,
        phase: Phase::StartOk,
        frame_max: HANDSHAKE_FRAME_MAX,
        channel_max: 0,
        heartbeat: 0,
        user: String::new(),
        vhost: None,
        cancel_notify: false,
        blocked_notify: false,
        alarm_on: None,
        blocked: false,
        auth_failure_close: false,
        client_closed: false,
        channels: HashMap::new(),
        partial: 0,
        close_deadline: None,
        synced: Arc::new(tokio::sync::Notify::new()),
        awaiting: None,
        kill,
    };
    tracing::debug!(conn = id, %peer, "accepted");

    let mut buf = BytesMut::with_capacity(64 * 1024);
    if conn
        .read_protocol_header(&mut rd, &mut buf, handshake_deadline)
        .await
    {
        conn.send_start();
        let mut alarm = conn.shared.alarm.subscribe();
        conn.read_loop(
            &mut rd,
            &mut buf,
            handshake_deadline,
            &mut shutdown,
            &mut alarm,
        )
        .await;
        if conn.phase == Phase::Done && conn.client_closed {
            // As RabbitMQ: after close-ok, let the client close the socket first (up to
            // its heartbeat timeout, at most 30 s), so it never sees EOF before close-ok.
            let limit = match conn.heartbeat {
                0 => Duration::from_secs(30),
                hb => Duration::from_secs(u64::from(hb).min(30)),
            };
            let mut sink = [0u8; 512];
            let drain = async { while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(limit, drain).await;
        }
    }
    conn.release();
    conn.shared.registry.unregister(id);
    conn.outbox.close();
    let _ = writer.await;
    tracing::debug!(conn = id, %peer, "closed");
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, outbox: Arc<Outbox>) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        outbox.take_into(&mut spare);
        if spare.is_empty() {
            if outbox.is_closed() {
                break;
            }
            outbox.wait().await;
            continue;
        }
        if let Err(err) = wr.write_all(&spare).await {
            // The peer is gone: the connection ends rather than buffer for it.
            tracing::debug!(%err, "write failed");
            outbox.fail();
            return;
        }
        outbox.written(spare.len());
        spare.clear();
        if spare.capacity() > 4 * 1024 * 1024 {
            spare = Vec::with_capacity(64 * 1024);
        }
    }
    let _ = wr.shutdown().await;
}

impl Connection {
    /// Reads the 8-byte protocol header; a wrong one is answered with ours.
    async fn read_protocol_header<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        buf: &mut BytesMut,
        deadline: Instant,
    ) -> bool {
        while buf.len() < 8 {
            match tokio::time::timeout_at(deadline, rd.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return false,
            }
        }
        if &buf[..8] != frame::PROTOCOL_HEADER {
            tracing::debug!(conn = self.id, header = ?&buf[..8], "bad protocol header");
            self.outbox
                .push(|out| out.extend_from_slice(frame::PROTOCOL_HEADER));
            return false;
        }
        let _ = buf.split_to(8);
        true
    }

    fn send(&self, channel: u16, method: AMQPClass) {
        self.outbox
            .push(|out| frame::encode_method(out, channel, method));
    }

    fn send_start(&self) {
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()));
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        props.insert("product".into(), s("amqp-rpc broker"));
        props.insert("version".into(), s(env!("CARGO_PKG_VERSION")));
        props.insert("platform".into(), s("Rust"));
        props.insert("cluster_name".into(), s("amqp-rpc@localhost"));
        props.insert("copyright".into(), s("the amqp-rpc authors"));
        props.insert(
            "information".into(),
            s("An AMQP 0-9-1 broker that behaves like RabbitMQ"),
        );
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                mechanisms: "PLAIN AMQPLAIN".into(),
                locales: "en_US".into(),
            })),
        );
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        buf: &mut BytesMut,
        handshake_deadline: Instant,
        shutdown: &mut watch::Receiver<bool>,
        alarm: &mut watch::Receiver<Option<Resource>>,
    ) {
        let mut last_read = Instant::now();
        self.alarm_on = *alarm.borrow_and_update();
        let mut alarm_open = true;
        let mut next_beat: Option<Instant> = None;
        let mut shutting_down = *shutdown.borrow();
        if shutting_down {
            return;
        }
        // One timer for heartbeats and deadlines, re-armed only when it fires or a
        // deadline moves earlier: no timer churn per read on the hot path.
        let timer = tokio::time::sleep_until(handshake_deadline);
        let kill = Arc::clone(&self.kill);
        let outbox = Arc::clone(&self.outbox);
        tokio::pin!(timer);
        loop {
            // Frames already buffered first: a batch is processed before confirms flush.
            self.process(buf);
            self.flush_confirms();
            if self.phase == Phase::Done {
                return;
            }
            let beat = Duration::from_secs(u64::from(self.heartbeat).div_ceil(2));
            if self.heartbeat > 0 && next_beat.is_none() {
                // Heartbeats start once tune-ok has set an interval.
                next_beat = Some(Instant::now() + beat);
            }
            let deadline = self.read_deadline(handshake_deadline, last_read);
            let wake = next_beat.map_or(deadline, |b| b.min(deadline));
            if wake < timer.deadline() {
                timer.as_mut().reset(wake);
            }
            let synced = Arc::clone(&self.synced);
            // Frames that wait unapplied (blocked, or the outbox full) are read only
            // up to a bound: enough to see the peer close, never the whole stream.
            let reading = buf.len() < self.frame_max as usize + READ_AHEAD;
            tokio::select! {
                () = synced.notified() => self.awaiting = None,
                () = outbox.event() => {
                    if outbox.is_failed() {
                        tracing::info!(conn = self.id, peer = %self.peer, "socket write failed, closing");
                        return;
                    }
                    // Back under the limit: the connection's consumers may take more.
                    if let Some(v) = &self.vhost {
                        v.vhost.lock().resume(self.id);
                    }
                }
                () = kill.notified() => {
                    let reason = self.shared.registry.close_reason(self.id);
                    self.close_with(AmqpError::connection(code::CONNECTION_FORCED, reason));
                }
                read = rd.read_buf(buf), if reading => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => last_read = Instant::now(),
                },
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= self.read_deadline(handshake_deadline, last_read) {
                        match self.phase {
                            Phase::Running => tracing::info!(conn = self.id, peer = %self.peer, "missed heartbeats from client, closing"),
                            Phase::Closing => {}
                            _ => tracing::info!(conn = self.id, peer = %self.peer, "handshake timeout"),
                        }
                        return;
                    }
                    if next_beat.is_some_and(|b| now >= b) {
                        self.outbox.push(frame::encode_heartbeat);
                        next_beat = Some(now + beat);
                    }
                    let deadline = self.read_deadline(handshake_deadline, last_read);
                    timer.as_mut().reset(next_beat.map_or(deadline, |b| b.min(deadline)));
                }
                changed = alarm.changed(), if alarm_open => {
                    if changed.is_err() {
                        alarm_open = false;
                    }
                    self.alarm_on = *alarm.borrow_and_update();
                    if self.alarm_on.is_none() && self.blocked {
                        self.unblock();
                        // The client's silence while we did not read is not held against it.
                        last_read = Instant::now();
                    }
                }
                changed = shutdown.changed(), if !shutting_down => {
                    shutting_down = true;
                    if changed.is_err() || *shutdown.borrow() {
                        self.close_with(AmqpError::connection(
                            code::CONNECTION_FORCED,
                            "broker forced connection closure with reason 'shutdown'",
                        ));
                    }
                }
            }
        }
    }

    /// When the connection gives up on a silent peer: the handshake deadline, the
    /// close-ok deadline, or two missed heartbeat intervals.
    fn read_deadline(&self, handshake_deadline: Instant, last_read: Instant) -> Instant {
        match self.phase {
            Phase::StartOk | Phase::TuneOk | Phase::Open => handshake_deadline,
            Phase::Closing => self
                .close_deadline
                .unwrap_or_else(|| Instant::now() + CLOSE_TIMEOUT),
            // We do not read a blocked client, so cannot tell whether it is silent (as
            // RabbitMQ, which pauses its heartbeat monitor then).
            _ if self.heartbeat > 0 && !self.blocked => {
                last_read + Duration::from_secs(u64::from(self.heartbeat) * 2)
            }
            _ => Instant::now() + Duration::from_secs(86400),
        }
    }

    /// Whether frames wait unapplied: the alarm blocked the connection, or its outbox
    /// is full (the client does not read what it asked for).
    fn paused(&self) -> bool {
        (self.blocked && self.phase == Phase::Running) || !self.outbox.has_room()
    }

    /// Decodes and applies the complete frames in `buf`, until the connection pauses.
    fn process(&mut self, buf: &mut BytesMut) {
        while self.phase != Phase::Done && !self.paused() {
            match frame::decode(buf, self.frame_max) {
                Ok(Some(f)) => {
                    if let Err(e) = self.frame(f) {
                        self.fail(e);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    // The stream cannot be resynchronised after a framing error.
                    buf.clear();
                    self.fail(e);
                    if self.phase == Phase::Closing {
                        // Nothing more can be parsed: close once close-ok or the timeout comes.
                        return;
                    }
                }
            }
        }
    }

    fn frame(&mut self, f: Frame) -> Result<(), AmqpError> {
        if self.phase == Phase::Closing {
            // Only close-ok (or a crossing close) matters now.
            if let Frame::Method(0, AMQPClass::Connection(m)) = f {
                match m {
                    connection::AMQPMethod::CloseOk(_) => self.phase = Phase::Done,
                    connection::AMQPMethod::Close(_) => {
                        self.send(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        );
                        self.phase = Phase::Done;
                    }
                    _ => {}
                }
            }
            return Ok(());
        }
        match f {
            Frame::Heartbeat(0) => Ok(()),
            Frame::Heartbeat(_) => Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "heartbeat frame on a non-zero channel",
            )),
            Frame::Method(0, AMQPClass::Connection(m)) => self.connection_method(m),
            Frame::Method(0, other) => Err(AmqpError::connection(
                code::COMMAND_INVALID,
                format_args!(
                    "method {}.{} is not allowed on channel 0",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id()
                ),
            )
            .on_method(other.get_amqp_class_id(), other.get_amqp_method_id())),
            _ if self.phase != Phase::Running => Err(AmqpError::connection(
                code::CHANNEL_ERROR,
                "channel frame before the connection was opened",
            )),
            Frame::Method(id, AMQPClass::Channel(m)) => self.channel_method(id, m),
            Frame::Method(_, AMQPClass::Connection(m)) => Err(AmqpError::connection(
                code::COMMAND_INVALID,
                "connection method on a non-zero channel",
            )
            .on_method(10, connection_method_id(&m))),
            Frame::Method(id, method) => {
                if self.alarm_on.is_some()
                    && matches!(method, AMQPClass::Basic(basic::AMQPMethod::Publish(_)))
                {
                    self.block();
                }
                let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
                self.with_channel(id, |ch, ctx| ch.method(ctx, method))
                    .map_err(|e| e.on_method(ids.0, ids.1))
            }
            Frame::Header(0, _) | Frame::Body(0, _) => Err(AmqpError::connection(
                code::COMMAND_INVALID,
                "content frame on channel 0",
            )),
            Frame::Header(id, h) => self.with_channel(id, |ch, ctx| ch.header(ctx, h)),
            Frame::Body(id, b) => {
                let before = self.partial_of(id);
                let applied = self.with_channel(id, |ch, ctx| ch.body(ctx, b));
                self.partial = (self.partial + self.partial_of(id)).saturating_sub(before);
                applied?;
                let limit = self.partial_limit();
                if self.partial > limit {
                    return Err(AmqpError::connection(
                        code::RESOURCE_ERROR,
                        format_args!(
                            "message bodies still arriving on this connection exceed {limit} bytes"
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// What one channel holds of a body still arriving.
    fn partial_of(&self, id: u16) -> usize {
        self.channels.get(&id).map_or(0, Channel::partial_len)
    }

    /// How much of unfinished bodies one connection may hold: two of the largest
    /// messages accepted.
    fn partial_limit(&self) -> usize {
        usize::try_from(self.shared.config.max_message_size.saturating_mul(2)).unwrap_or(usize::MAX)
    }

    /// Forgets a channel, and what it held of an unfinished body.
    fn remove_channel(&mut self, id: u16) -> Option<Channel> {
        let ch = self.channels.remove(&id)?;
        self.partial = self.partial.saturating_sub(ch.partial_len());
        Some(ch)
    }

    fn with_channel(
        &mut self,
        id: u16,
        f: impl FnOnce(&mut Channel, &Ctx<'_>) -> Result<(), AmqpError>,
    ) -> Result<(), AmqpError> {
        let Some(ch) = self.channels.get_mut(&id) else {
            return Err(AmqpError::connection(
                code::CHANNEL_ERROR,
                "expected 'channel.open'",
            ));
        };
        if ch.closing {
            return Ok(());
        }
        let Some(vhost) = self.vhost.as_deref() else {
            return Err(not_open());
        };
        let ctx = Ctx {
            conn: self.id,
            user: &self.user,
            outbox: &self.outbox,
            vhost: &vhost.vhost,
            frame_max: self.frame_max as usize,
            store: vhost.store.as_deref(),
            users: &self.shared.users,
            vhost_name: vhost.name(),
            max_message_size: self.shared.config.max_message_size,
        };
        match f(ch, &ctx) {
            Err(e) if e.scope == Scope::Channel => {
                self.close_channel_with(id, e);
                Ok(())
            }
            other => other,
        }
    }

    fn close_channel_with(&mut self, id: u16, e: AmqpError) {
        tracing::debug!(conn = self.id, channel = id, error = %e, "channel error");
        if let Some(v) = &self.vhost {
            v.vhost.lock().close_channel((self.id, id));
        }
        if let Some(ch) = self.channels.get_mut(&id) {
            ch.closing = true;
        }
        self.send(
            id,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: e.text.into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }

    fn channel_method(&mut self, id: u16, m: channel::AMQPMethod) -> Result<(), AmqpError> {
        match m {
            channel::AMQPMethod::Open(_) => {
                if self.channels.contains_key(&id) {
                    return Err(AmqpError::connection(
                        code::CHANNEL_ERROR,
                        "second 'channel.open' seen",
                    )
                    .on_method(20, 10));
                }
                // RabbitMQ counts open channels against channel_max; the channel
                // *number* may be anything.
                if self.channel_max > 0 && self.channels.len() >= usize::from(self.channel_max) {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format_args!(
                            "number of channels opened ({}) has reached the negotiated channel_max ({})",
                            self.channels.len(),
                            self.channel_max
                        ),
                    ));
                }
                let Some(vhost) = &self.vhost else {
                    return Err(not_open());
                };
                let state = ChannelState::new(
                    Arc::clone(&self.outbox),
                    self.frame_max as usize,
                    self.cancel_notify,
                );
                vhost.vhost.lock().open_channel((self.id, id), state);
                self.channels.insert(id, Channel::new(id));
                self.send(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                Ok(())
            }
            channel::AMQPMethod::Close(_) => {
                if self.remove_channel(id).is_none() {
                    return Err(AmqpError::connection(
                        code::CHANNEL_ERROR,
                        "expected 'channel.open'",
                    )
                    .on_method(20, 40));
                }
                if let Some(v) = &self.vhost {
                    v.vhost.lock().close_channel((self.id, id));
                }
                self.send(
                    id,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                Ok(())
            }
            channel::AMQPMethod::CloseOk(_) => {
                if self.channels.get(&id).is_some_and(|c| c.closing) {
                    self.remove_channel(id);
                }
                Ok(())
            }
            other => self.with_channel(id, |ch, ctx| ch.method(ctx, AMQPClass::Channel(other))),
        }
    }

    fn connection_method(&mut self, m: connection::AMQPMethod) -> Result<(), AmqpError> {
        use connection::AMQPMethod as M;
        match (self.phase, m) {
            (Phase::StartOk, M::StartOk(ok)) => self.start_ok(ok),
            (Phase::TuneOk, M::TuneOk(t)) => {
                if t.frame_max != 0 && t.frame_max < 4096 {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format_args!("frame_max={} < 4096 min size", t.frame_max),
                    ));
                }
                let limits = &self.shared.config;
                if t.frame_max > limits.frame_max {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format_args!("frame_max={} > {} max size", t.frame_max, limits.frame_max),
                    ));
                }
                self.frame_max = if t.frame_max == 0 {
                    limits.frame_max
                } else {
                    t.frame_max
                };
                self.channel_max = if t.channel_max == 0 {
                    limits.channel_max
                } else {
                    t.channel_max.min(limits.channel_max)
                };
                self.heartbeat = t.heartbeat;
                self.phase = Phase::Open;
                Ok(())
            }
            (Phase::Open, M::Open(open)) => {
                let vhost = open.virtual_host.as_str();
                let not_found = || {
                    AmqpError::connection(
                        code::NOT_ALLOWED,
                        format_args!("vhost {vhost} not found"),
                    )
                    .on_method(10, 40)
                };
                // The vhost table decides what exists; the user table who may enter.
                let entry = self.shared.vhosts.get(vhost).ok_or_else(not_found)?;
                self.shared
                    .users
                    .read()
                    .check_vhost(&self.user, vhost)
                    .map_err(|e| e.on_method(10, 40))?;
                self.shared.registry.opened(
                    self.id,
                    &self.user,
                    vhost,
                    (self.frame_max, self.channel_max, self.heartbeat),
                );
                // Deleted between the look-up and the registration: the deletion may
                // not have seen this connection in the registry, so refuse it here.
                if entry.is_deleted() {
                    return Err(not_found());
                }
                self.vhost = Some(entry);
                self.phase = Phase::Running;
                self.send(0, AMQPClass::Connection(M::OpenOk(connection::OpenOk {})));
                Ok(())
            }
            (_, M::Close(_)) => {
                self.release();
                self.send(0, AMQPClass::Connection(M::CloseOk(connection::CloseOk {})));
                self.phase = Phase::Done;
                self.client_closed = true;
                Ok(())
            }
            (_, M::CloseOk(_)) => {
                self.phase = Phase::Done;
                Ok(())
            }
            (Phase::Running, M::Blocked(_) | M::Unblocked(_)) => Ok(()),
            (Phase::Running, M::UpdateSecret(_)) => {
                self.send(
                    0,
                    AMQPClass::Connection(M::UpdateSecretOk(connection::UpdateSecretOk {})),
                );
                Ok(())
            }
            (_, other) => Err(AmqpError::connection(
                code::COMMAND_INVALID,
                format_args!(
                    "unexpected connection method {}",
                    connection_method_id(&other)
                ),
            )
            .on_method(10, connection_method_id(&other))),
        }
    }

    fn start_ok(&mut self, ok: connection::StartOk) -> Result<(), AmqpError> {
        if let Some(AMQPValue::FieldTable(caps)) = ok.client_properties.inner().get("capabilities")
        {
            let flag =
                |name: &str| matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)));
            self.cancel_notify = flag("consumer_cancel_notify");
            self.blocked_notify = flag("connection.blocked");
            self.auth_failure_close = flag("authentication_failure_close");
        }
        let mechanism = ok.mechanism.as_str();
        let creds = auth::parse_response(mechanism, ok.response.as_bytes())?;
        self.shared
            .users
            .read()
            .authenticate(&creds, mechanism, self.peer)?;
        self.user = creds.user;
        let limits = &self.shared.config;
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
                channel_max: limits.channel_max,
                frame_max: limits.frame_max,
                heartbeat: limits.heartbeat,
            })),
        );
        self.phase = Phase::TuneOk;
        Ok(())
    }

    /// Handles an error raised while applying a frame.
    fn fail(&mut self, e: AmqpError) {
        match e.scope {
            Scope::Channel => {
                // Channel errors raised outside a channel context are treated as fatal.
                self.close_with(AmqpError {
                    scope: Scope::Connection,
                    ..e
                });
            }
            Scope::Connection => self.close_with(e),
        }
    }

    /// Sends `connection.close` and waits for `close-ok`; resources go right away.
    fn close_with(&mut self, e: AmqpError) {
        if matches!(self.phase, Phase::Closing | Phase::Done) {
            return;
        }
        tracing::info!(conn = self.id, peer = %self.peer, code = e.code, text = %e.text, "closing connection");
        let authenticating = self.phase == Phase::StartOk;
        if authenticating && !(e.code == code::ACCESS_REFUSED && self.auth_failure_close) {
            // As RabbitMQ: a client that did not ask for `authentication_failure_close`
            // (or sent an unknown mechanism) just sees the socket close.
            self.phase = Phase::Done;
            return;
        }
        self.release();
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: e.code,
                reply_text: e.text.into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
        if authenticating {
            // RabbitMQ closes the socket right after refusing a login.
            self.phase = Phase::Done;
        } else {
            self.phase = Phase::Closing;
            self.close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
        }
    }

    /// A publish came while the alarm is on: stop reading after this batch.
    fn block(&mut self) {
        let Some(resource) = self.alarm_on else {
            return;
        };
        if self.blocked {
            return;
        }
        self.blocked = true;
        tracing::debug!(conn = self.id, peer = %self.peer, reason = resource.reason(), "blocked by an alarm");
        if self.blocked_notify {
            self.send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: resource.reason().into(),
                })),
            );
        }
    }

    /// The alarm cleared: read again.
    fn unblock(&mut self) {
        self.blocked = false;
        tracing::debug!(conn = self.id, peer = %self.peer, "unblocked");
        if self.blocked_notify && !matches!(self.phase, Phase::Closing | Phase::Done) {
            self.send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
            );
        }
    }

    fn flush_confirms(&mut self) {
        // A batch that stored a persistent message hands the store's writes to the sync
        // thread at once, so its confirms go out as soon as they can. Everything else
        // (acks, delivery markers, topology) rides along, or goes with the 25 ms
        // housekeeping tick: no vhost lock per batch for transient traffic.
        let mut stored = false;
        for ch in self.channels.values_mut() {
            stored |= ch.take_stored();
        }
        let Some(vhost) = self.vhost.as_deref() else {
            return;
        };
        if stored {
            vhost.vhost.lock().commit_store();
        }
        let ctx = Ctx {
            conn: self.id,
            user: &self.user,
            outbox: &self.outbox,
            vhost: &vhost.vhost,
            frame_max: self.frame_max as usize,
            store: vhost.store.as_deref(),
            users: &self.shared.users,
            vhost_name: vhost.name(),
            max_message_size: self.shared.config.max_message_size,
        };
        let mut awaited: Option<u64> = None;
        for ch in self.channels.values_mut() {
            if !ch.closing
                && let Some(t) = ch.flush_confirms(&ctx)
            {
                awaited = Some(awaited.map_or(t, |a| a.min(t)));
            }
        }
        // Confirms wait on the store: ask to be woken when the oldest ticket is synced.
        if let (Some(t), Some(store)) = (awaited, ctx.store)
            && self.awaiting != Some(t)
        {
            self.awaiting = Some(t);
            store.syncer().wake_when_synced(t, &self.synced);
        }
    }

    /// Gives back everything the connection holds. Safe to call more than once.
    fn release(&mut self) {
        let Some(entry) = &self.vhost else {
            return;
        };
        let mut vhost = entry.vhost.lock();
        for id in self.channels.keys() {
            vhost.close_channel((self.id, *id));
        }
        vhost.close_connection(self.id);
        vhost.commit_store();
        drop(vhost);
        for ch in self.channels.values_mut() {
            ch.closing = true;
        }
    }
}

/// A channel method before `connection.open` succeeded (the read loop refuses those
/// earlier; this is the fallback).
fn not_open() -> AmqpError {
    AmqpError::connection(
        code::CHANNEL_ERROR,
        "channel frame before the connection was opened",
    )
}

fn connection_method_id(m: &connection::AMQPMethod) -> u16 {
    AMQPClass::Connection(m.clone()).get_amqp_method_id()
}

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
//!
//! # Layout
//!
//! - this module: the connection's state, accepting a socket, and the read loop with
//!   its one timer (heartbeats, handshake and close deadlines);
//! - `dispatch`: decodes buffered frames and hands each to its handler;
//! - `handshake`: the protocol header, start/tune/open, and the other
//!   connection-class methods;
//! - `channels`: `channel.open`/`close` and running a channel's methods in its
//!   context;
//! - `flow`: pausing on alarms and full outboxes, and flushing publisher confirms;
//! - `close`: errors that end the connection, and giving back what it holds.
//!
//! The writer task that flushes the outbox lives beside it, in [`crate::outbox`].

mod channels;
mod close;
mod dispatch;
mod flow;
mod handshake;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::AMQPClass;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::alarm::Alarm;
use crate::channel::{Channel, Ctx};
use crate::error::{AmqpError, code};
use crate::frame;
use crate::outbox::Outbox;
use crate::shared::Shared;
use crate::vhost::VHostEntry;

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
    /// Who the connection is and where it is: what every channel method sees (see
    /// [`Session::ctx`]). Kept apart from `channels` so both can be borrowed at once.
    session: Session,
    /// Where the connection is in its life; decides which frames are accepted.
    phase: Phase,
    /// Negotiated at tune-ok: how many channels may be open at once (0: no limit).
    channel_max: u16,
    /// Negotiated at tune-ok, in seconds (0: none). Both our heartbeats and the
    /// deadline for the client's come from it.
    heartbeat: u16,
    /// The client wants `basic.cancel` when a queue it consumes from goes.
    cancel_notify: bool,
    /// The client understands `connection.blocked` and `connection.unblocked`.
    blocked_notify: bool,
    /// The alarm that is on, if any (memory or disk): the next `basic.publish` blocks
    /// the connection.
    alarm_on: Option<Alarm>,
    /// Blocked by the alarm: the socket is not read until it clears.
    blocked: bool,
    /// The client understands `connection.close` after a refused login.
    auth_failure_close: bool,
    /// The client sent `connection.close` and got `close-ok`.
    client_closed: bool,
    /// The open channels by number.
    channels: HashMap<u16, Channel>,
    /// Bytes of message bodies still arriving, over all channels: bounded, so a
    /// client that starts bodies and never finishes them cannot hold more than that.
    partial: usize,
    /// When we give up waiting for `close-ok` after sending `connection.close`.
    close_deadline: Option<Instant>,
    /// Woken by the store's sync thread when a ticket confirms wait on is synced.
    synced: Arc<tokio::sync::Notify>,
    /// The ticket `synced` is registered for.
    awaiting: Option<u64>,
    /// Woken when the management API asks this connection to close.
    kill: Arc<tokio::sync::Notify>,
}

/// What channel methods see of their connection: its identity, its outbox and, once
/// `connection.open` succeeded, its vhost.
struct Session {
    /// The broker-wide connection number (the management API's and the vhost's key).
    id: u64,
    /// The client's address, for logs and the loopback-only users.
    peer: SocketAddr,
    /// What all connections share: vhosts, users, limits, alarms, the registry.
    shared: Arc<Shared>,
    /// Where replies and deliveries go; the writer task flushes it.
    outbox: Arc<Outbox>,
    /// The user who logged in (empty before start-ok).
    user: String,
    /// The vhost named in `connection.open`, resolved once there (`None` before).
    vhost: Option<Arc<VHostEntry>>,
    /// The negotiated frame size (the spec's minimum before tune-ok).
    frame_max: u32,
}

impl Session {
    /// The context channel methods run in; `None` before `connection.open`.
    fn ctx(&self) -> Option<Ctx<'_>> {
        let vhost = self.vhost.as_deref()?;
        Some(Ctx {
            conn: self.id,
            user: &self.user,
            outbox: &self.outbox,
            vhost: vhost.state(),
            frame_max: self.frame_max as usize,
            store: vhost.store.as_deref(),
            users: &self.shared.users,
            vhost_name: vhost.name(),
            max_message_size: self.shared.config.max_message_size,
        })
    }

    fn send(&self, channel: u16, method: AMQPClass) {
        self.outbox
            .push(|out| frame::encode_method(out, channel, method));
    }
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
    let writer = tokio::spawn(crate::outbox::write_loop(wr, Arc::clone(&outbox)));
    let id = shared.next_connection_id();
    let kill = shared.registry.register(id, peer, local, tls);
    let mut conn = Connection {
        session: Session {
            id,
            peer,
            shared,
            outbox,
            user: String::new(),
            vhost: None,
            frame_max: HANDSHAKE_FRAME_MAX,
        },
        phase: Phase::StartOk,
        channel_max: 0,
        heartbeat: 0,
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
        let mut alarm = conn.session.shared.alarm.subscribe();
        conn.read_loop(
            &mut rd,
            &mut buf,
            handshake_deadline,
            &mut shutdown,
            &mut alarm,
        )
        .await;
        conn.linger(&mut rd).await;
    }
    conn.release();
    conn.session.shared.registry.unregister(id);
    conn.session.outbox.close();
    let _ = writer.await;
    tracing::debug!(conn = id, %peer, "closed");
}

impl Connection {
    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        buf: &mut BytesMut,
        handshake_deadline: Instant,
        shutdown: &mut watch::Receiver<bool>,
        alarm: &mut watch::Receiver<Option<Alarm>>,
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
        let outbox = Arc::clone(&self.session.outbox);
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
            let reading = buf.len() < self.session.frame_max as usize + READ_AHEAD;
            tokio::select! {
                () = synced.notified() => self.awaiting = None,
                () = outbox.event() => {
                    if outbox.is_failed() {
                        tracing::info!(conn = self.session.id, peer = %self.session.peer, "socket write failed, closing");
                        return;
                    }
                    for (id, e) in outbox.take_channel_errors() {
                        if self.channels.get(&id).is_some_and(|c| !c.closing) {
                            self.close_channel_with(id, e);
                        }
                    }
                    // Back under the limit: the connection's consumers may take more.
                    if let Some(v) = &self.session.vhost {
                        v.lock().resume(self.session.id);
                    }
                }
                () = kill.notified() => {
                    let reason = self.session.shared.registry.close_reason(self.session.id);
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
                            Phase::Running => tracing::info!(conn = self.session.id, peer = %self.session.peer, "missed heartbeats from client, closing"),
                            Phase::Closing => {}
                            _ => tracing::info!(conn = self.session.id, peer = %self.session.peer, "handshake timeout"),
                        }
                        return;
                    }
                    if next_beat.is_some_and(|b| now >= b) {
                        self.session.outbox.push(frame::encode_heartbeat);
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
}

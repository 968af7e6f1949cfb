//! How a connection ends: errors that close it (sending `connection.close` and
//! waiting for `close-ok`, as RabbitMQ), and giving back what it holds so its
//! unacked messages go back to their queues.

use std::time::Duration;

use amq_protocol::protocol::{AMQPClass, connection};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::{CLOSE_TIMEOUT, Connection, Phase};
use crate::error::{AmqpError, Scope, code};
use crate::queue::ChannelKey;

impl Connection {
    /// Handles an error raised while applying a frame.
    pub(super) fn fail(&mut self, e: AmqpError) {
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
    pub(super) fn close_with(&mut self, e: AmqpError) {
        if matches!(self.phase, Phase::Closing | Phase::Done) {
            return;
        }
        tracing::info!(conn = self.session.id, peer = %self.session.peer, code = e.code, text = %e.text, "closing connection");
        let authenticating = self.phase == Phase::StartOk;
        if authenticating && !(e.code == code::ACCESS_REFUSED && self.auth_failure_close) {
            // As RabbitMQ: a client that did not ask for `authentication_failure_close`
            // (or sent an unknown mechanism) just sees the socket close.
            self.phase = Phase::Done;
            return;
        }
        self.release();
        self.session.send(
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

    /// Gives back everything the connection holds. Safe to call more than once.
    pub(super) fn release(&mut self) {
        let Some(entry) = &self.session.vhost else {
            return;
        };
        let mut vhost = entry.lock();
        for id in self.channels.keys() {
            vhost.close_channel(ChannelKey::new(self.session.id, *id));
        }
        vhost.close_connection(self.session.id);
        vhost.commit_store();
        drop(vhost);
        for ch in self.channels.values_mut() {
            ch.closing = true;
        }
    }

    /// As RabbitMQ: after our `close-ok` to a client's `connection.close`, lets the
    /// client close the socket first (up to its heartbeat timeout, at most 30 s), so
    /// it never sees EOF before `close-ok`.
    pub(super) async fn linger<R: AsyncRead + Unpin>(&self, rd: &mut R) {
        if !(self.phase == Phase::Done && self.client_closed) {
            return;
        }
        let limit = match self.heartbeat {
            0 => Duration::from_secs(30),
            hb => Duration::from_secs(u64::from(hb).min(30)),
        };
        let mut sink = [0u8; 512];
        let drain = async { while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(limit, drain).await;
    }
}

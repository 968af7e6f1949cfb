//! The handshake and the other connection-class methods: the protocol header,
//! `connection.start`/`start-ok` (login), `tune`/`tune-ok`, `open` (the vhost), and
//! close, blocked and update-secret once running.

use amq_protocol::protocol::{AMQPClass, connection};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::dispatch::connection_method_id;
use super::{Connection, Phase};
use crate::auth;
use crate::error::{AmqpError, code, method};
use crate::frame;

impl Connection {
    /// Reads the 8-byte protocol header; a wrong one is answered with ours.
    pub(super) async fn read_protocol_header<R: AsyncRead + Unpin>(
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
            tracing::debug!(conn = self.session.id, header = ?&buf[..8], "bad protocol header");
            self.session
                .outbox
                .push(|out| out.extend_from_slice(frame::PROTOCOL_HEADER));
            return false;
        }
        let _ = buf.split_to(8);
        true
    }

    pub(super) fn send_start(&self) {
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
        self.session.send(
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

    pub(super) fn connection_method(&mut self, m: connection::AMQPMethod) -> Result<(), AmqpError> {
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
                let limits = &self.session.shared.config;
                if t.frame_max > limits.frame_max {
                    return Err(AmqpError::connection(
                        code::NOT_ALLOWED,
                        format_args!("frame_max={} > {} max size", t.frame_max, limits.frame_max),
                    ));
                }
                self.session.frame_max = if t.frame_max == 0 {
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
                    .during(method::CONNECTION_OPEN)
                };
                // The vhost table decides what exists; the user table who may enter.
                let entry = self
                    .session
                    .shared
                    .vhosts
                    .get(vhost)
                    .ok_or_else(not_found)?;
                self.session
                    .shared
                    .users
                    .read()
                    .check_vhost(&self.session.user, vhost)
                    .map_err(|e| e.during(method::CONNECTION_OPEN))?;
                let shared = &self.session.shared;
                let (id, user) = (self.session.id, self.session.user.as_str());
                shared
                    .resource_limits
                    .read()
                    .check_connection(
                        vhost,
                        user,
                        || shared.registry.open_others(id, |c| c.vhost == vhost),
                        || shared.registry.open_others(id, |c| c.user == user),
                    )
                    .map_err(|e| e.during(method::CONNECTION_OPEN))?;
                self.session.shared.registry.opened(
                    self.session.id,
                    &self.session.user,
                    vhost,
                    (self.session.frame_max, self.channel_max, self.heartbeat),
                );
                // Deleted between the look-up and the registration: the deletion may
                // not have seen this connection in the registry, so refuse it here.
                if entry.is_deleted() {
                    return Err(not_found());
                }
                self.session.vhost = Some(entry);
                self.phase = Phase::Running;
                self.session
                    .send(0, AMQPClass::Connection(M::OpenOk(connection::OpenOk {})));
                Ok(())
            }
            (_, M::Close(_)) => {
                self.release();
                self.session
                    .send(0, AMQPClass::Connection(M::CloseOk(connection::CloseOk {})));
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
                self.session.send(
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

    pub(super) fn start_ok(&mut self, ok: connection::StartOk) -> Result<(), AmqpError> {
        if let Some(AMQPValue::FieldTable(caps)) = ok.client_properties.inner().get("capabilities")
        {
            let flag =
                |name: &str| matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)));
            self.cancel_notify = flag("consumer_cancel_notify");
            self.blocked_notify = flag("connection.blocked");
            self.auth_failure_close = flag("authentication_failure_close");
        }
        self.session
            .shared
            .registry
            .started(self.session.id, &ok.client_properties);
        let mechanism = ok.mechanism.as_str();
        let creds = auth::parse_response(mechanism, ok.response.as_bytes())?;
        let login =
            self.session
                .shared
                .users
                .read()
                .authenticate(&creds, mechanism, self.session.peer);
        self.session.shared.auth_attempts.amqp(login.is_ok());
        login?;
        self.session.user = creds.user;
        let limits = &self.session.shared.config;
        self.session.send(
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
}

//! Frames to their handlers: decodes what is buffered and routes each frame by its
//! channel and class, stopping when the connection pauses.

use amq_protocol::protocol::{AMQPClass, basic, connection};
use bytes::BytesMut;

use super::{Connection, Phase};
use crate::error::{AmqpError, code};
use crate::frame::{self, Frame};

impl Connection {
    /// Decodes and applies the complete frames in `buf`, until the connection pauses.
    pub(super) fn process(&mut self, buf: &mut BytesMut) {
        while self.phase != Phase::Done && !self.paused() {
            match frame::decode(buf, self.session.frame_max) {
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

    pub(super) fn frame(&mut self, f: Frame) -> Result<(), AmqpError> {
        if self.phase == Phase::Closing {
            // Only close-ok (or a crossing close) matters now.
            if let Frame::Method(0, AMQPClass::Connection(m)) = f {
                match m {
                    connection::AMQPMethod::CloseOk(_) => self.phase = Phase::Done,
                    connection::AMQPMethod::Close(_) => {
                        self.session.send(
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
}

pub(super) fn connection_method_id(m: &connection::AMQPMethod) -> u16 {
    AMQPClass::Connection(m.clone()).get_amqp_method_id()
}

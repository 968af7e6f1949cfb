//! Publishing: a `basic.publish` and the content that follows (a header, then body
//! frames, assembled without reserving anything from the announced size), then the
//! complete message is checked and routed; unroutable mandatory messages go back as
//! `basic.return`.

use amq_protocol::protocol::{AMQPClass, basic};
use bytes::{Bytes, BytesMut};

use super::{Channel, Ctx, TxOp};
use crate::error::{AmqpError, code, method};
use crate::frame::{self, ContentHeader};
use crate::message::{Message, parse_expiration};
use crate::vhost::REPLY_TO;

/// Bodies at least this large are kept as slices of the read buffer, not copied. A
/// slice pins the whole buffer allocation it came from (64 KiB or more) for as long as
/// the message waits in a queue, so below that size a copy costs less memory: the
/// flood test saw 32 KiB bodies pin about 2.4 bytes each when shared.
const SHARE_BODY_FROM: usize = 64 * 1024;

/// A publish whose content is still arriving.
#[derive(Debug)]
pub(super) struct Pending {
    publish: basic::Publish,
    header: Option<ContentHeader>,
    /// The body frames so far, as they came off the read buffer. Nothing is reserved
    /// from the announced size: memory follows the bytes that really arrived, and a
    /// body that stalls holds only those.
    chunks: Vec<Bytes>,
    /// Their total length.
    pub(super) received: usize,
}

/// A complete publish.
#[derive(Debug)]
pub(super) struct Publish {
    publish: basic::Publish,
    header: ContentHeader,
    body: Bytes,
}

impl Channel {
    /// `basic.publish`: its content (header, then body frames) follows.
    pub(super) fn start_publish(&mut self, p: basic::Publish) -> Result<(), AmqpError> {
        if p.immediate {
            return Err(AmqpError::connection(
                code::NOT_IMPLEMENTED,
                "immediate=true",
            ));
        }
        self.pending = Some(Pending {
            publish: p,
            header: None,
            chunks: Vec::new(),
            received: 0,
        });
        Ok(())
    }

    /// Applies a content header frame.
    pub fn header(&mut self, ctx: &Ctx<'_>, header: ContentHeader) -> Result<(), AmqpError> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected method frame, got non method frame instead",
            ));
        };
        if pending.header.is_some() {
            return Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected content body, got non content body frame instead",
            ));
        }
        if header.class_id != frame::CLASS_BASIC {
            return Err(AmqpError::connection(
                code::FRAME_ERROR,
                format_args!(
                    "content header for class {} does not match method class 60",
                    header.class_id
                ),
            ));
        }
        if header.body_size > ctx.max_message_size {
            // RabbitMQ checks once the body is in; the header already tells, so none of
            // it is buffered (the rest of it is dropped with the closing channel).
            self.pending = None;
            return Err(AmqpError::precondition(format_args!(
                "message size {} is larger than configured max size {}",
                header.body_size, ctx.max_message_size
            ))
            .during(method::BASIC_PUBLISH));
        }
        let done = header.body_size == 0;
        pending.header = Some(header);
        if done {
            self.finish(ctx)?;
        }
        Ok(())
    }

    /// Applies a content body frame.
    pub fn body(&mut self, ctx: &Ctx<'_>, chunk: Bytes) -> Result<(), AmqpError> {
        let Some(pending) = self.pending.as_mut() else {
            return Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected method frame, got non method frame instead",
            ));
        };
        let Some(header) = pending.header.as_ref() else {
            return Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected content header for class 60, got non content header frame instead",
            ));
        };
        let total = pending.received as u64 + chunk.len() as u64;
        if total > header.body_size {
            return Err(AmqpError::connection(
                code::FRAME_ERROR,
                format_args!(
                    "content body exceeds the announced size {}",
                    header.body_size
                ),
            ));
        }
        pending.received += chunk.len();
        pending.chunks.push(chunk);
        if total == header.body_size {
            self.finish(ctx)?;
        }
        Ok(())
    }

    pub(super) fn finish(&mut self, ctx: &Ctx<'_>) -> Result<(), AmqpError> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        let Some(header) = pending.header else {
            return Ok(());
        };
        let mut chunks = pending.chunks;
        let body = match chunks.len() {
            0 => Bytes::new(),
            // One frame: a small body is copied out so it does not pin the
            // connection's 64 KiB read buffer while it waits in a queue; a large one is
            // shared as is.
            1 => match chunks.pop() {
                Some(first) if first.len() < SHARE_BODY_FROM => Bytes::copy_from_slice(&first),
                Some(first) => first,
                None => Bytes::new(),
            },
            // Several: joined once, into exactly the size that arrived.
            _ => {
                let mut body = BytesMut::with_capacity(pending.received);
                for c in &chunks {
                    body.extend_from_slice(c);
                }
                body.freeze()
            }
        };
        let p = Publish {
            publish: pending.publish,
            header,
            body,
        };
        if self.confirm {
            self.publish_seq += 1;
        }
        if self.tx.is_none() {
            return self.route(ctx, p).map(drop);
        }
        // Validate now so the error surfaces at publish time, not at commit.
        self.check_publish(ctx, &p.publish.exchange, p.publish.routing_key.as_str())
            .map_err(|e| e.during(method::BASIC_PUBLISH))?;
        ctx.vhost
            .lock()
            .check_publish(p.publish.exchange.as_str())
            .map_err(|e| e.during(method::BASIC_PUBLISH))?;
        if let Some(ops) = self.tx.as_mut() {
            ops.push(TxOp::Publish(Box::new(p)));
        }
        Ok(())
    }

    /// Routes a complete publish; returns it if unroutable and mandatory; records the
    /// confirm. Returns the store ticket it waits for, if it was stored.
    pub(super) fn route(&mut self, ctx: &Ctx<'_>, p: Publish) -> Result<Option<u64>, AmqpError> {
        let Publish {
            publish,
            mut header,
            body,
        } = p;
        let fail = |e: AmqpError| e.during(method::BASIC_PUBLISH);
        // RabbitMQ's order: size (at the header), write permission, the exchange,
        // user_id, expiration.
        self.check_publish(ctx, &publish.exchange, publish.routing_key.as_str())
            .map_err(fail)?;
        if let Some(uid) = header.properties.user_id()
            && uid != ctx.user
        {
            return Err(fail(AmqpError::precondition(format_args!(
                "user_id property set to '{uid}' but authenticated user was '{}'",
                ctx.user
            ))));
        }
        let ttl = match header.properties.expiration() {
            None => None,
            Some(e) => match parse_expiration(e) {
                Ok(ttl) => Some(ttl),
                Err(why) => {
                    return Err(fail(AmqpError::precondition(format_args!(
                        "invalid expiration '{e}': {why}"
                    ))));
                }
            },
        };
        let mut vhost = ctx.vhost.lock();
        vhost
            .check_publish(publish.exchange.as_str())
            .map_err(fail)?;
        if header.properties.reply_to() == Some(REPLY_TO) {
            let name = vhost.reply_name(self.key(ctx)).map_err(fail)?;
            header.properties = header
                .properties
                .with_reply_to(&name)
                .map_err(|_| fail(AmqpError::precondition("reply_to could not be rewritten")))?;
        }
        let sender_keys = match header.properties.sender_keys() {
            None => None,
            Some((keys, without_bcc)) => {
                if let Some(t) = without_bcc {
                    let encoded = crate::frame::encode_table(&t);
                    header.properties =
                        header
                            .properties
                            .with_headers(&encoded, false)
                            .map_err(|_| {
                                fail(AmqpError::precondition("headers could not be rewritten"))
                            })?;
                }
                Some(Box::new(keys))
            }
        };
        let persistent = header.properties.delivery_mode() == Some(2);
        let mandatory = publish.mandatory;
        let message = Message {
            exchange: publish.exchange,
            routing_key: publish.routing_key,
            priority: header.properties.priority().unwrap_or(0),
            properties: header.properties.raw().clone(),
            body,
            ttl,
            expires_at: None,
            persistent,
            sender_keys,
        };
        let routed = vhost.publish(&|| header.properties.headers(), message);
        drop(vhost);
        if let (true, Some(ticket)) = (self.confirm, routed.ticket) {
            self.unsynced.push_back((self.publish_seq, ticket));
        }
        if self.confirm && routed.rejected {
            self.nacked.push_back(self.publish_seq);
        }
        if let Some(m) = routed.returned.filter(|_| mandatory) {
            let (id, frame_max) = (self.id, ctx.frame_max);
            ctx.outbox.push(|out| {
                let ret = basic::Return {
                    reply_code: code::NO_ROUTE,
                    reply_text: "NO_ROUTE".into(),
                    exchange: m.exchange,
                    routing_key: m.routing_key,
                };
                frame::encode_method(out, id, AMQPClass::Basic(basic::AMQPMethod::Return(ret)));
                frame::encode_content(out, id, &m.properties, &m.body, frame_max);
            });
        }
        self.stored |= routed.ticket.is_some();
        Ok(routed.ticket)
    }
}

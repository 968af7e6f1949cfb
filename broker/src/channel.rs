//! One channel of a connection: applies its methods and assembles published content.
//!
//! Sits between [`crate::connection`], which hands it the frames of its channel number,
//! and [`crate::vhost`], where its methods take effect. What only this channel can
//! touch stays here: the publish being assembled (method, header, body frames), the
//! publisher-confirm counters (acks are coalesced with `multiple` once per read batch),
//! and the buffered work of a transaction.

use std::collections::VecDeque;
use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, basic, channel, confirm, exchange, queue, tx};
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};

use crate::auth::{Access, Resource, Users};
use crate::error::{AmqpError, code};
use crate::frame::{self, ContentHeader};
use crate::message::{Message, parse_expiration};
use crate::outbox::Outbox;
use crate::queue::ChannelKey;
use crate::store::Store;
use crate::vhost::{
    ConsumeOptions, ExchangeOptions, QueueOptions, REPLY_TO, VHost, generated_name,
};

/// Bodies at least this large are kept as slices of the read buffer, not copied. A
/// slice pins the whole buffer allocation it came from (64 KiB or more) for as long as
/// the message waits in a queue, so below that size a copy costs less memory: the
/// flood test saw 32 KiB bodies pin about 2.4 bytes each when shared.
const SHARE_BODY_FROM: usize = 64 * 1024;

/// What a channel needs from its connection to apply a method.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Connection id.
    pub conn: u64,
    /// The authenticated user (checked against the `user_id` property).
    pub user: &'a str,
    /// The connection's outbox.
    pub outbox: &'a Arc<Outbox>,
    /// The vhost.
    pub vhost: &'a Mutex<VHost>,
    /// Negotiated frame size.
    pub frame_max: usize,
    /// The durable store, whose sync progress gates confirms of persistent messages.
    pub store: Option<&'a Store>,
    /// Users and permissions, read when a method is checked.
    pub users: &'a RwLock<Users>,
    /// The vhost the connection opened, for permission checks.
    pub vhost_name: &'a str,
    /// Largest message body accepted.
    pub max_message_size: u64,
}

/// A publish whose content is still arriving.
#[derive(Debug)]
struct Pending {
    publish: basic::Publish,
    header: Option<ContentHeader>,
    /// The body frames so far, as they came off the read buffer. Nothing is reserved
    /// from the announced size: memory follows the bytes that really arrived, and a
    /// body that stalls holds only those.
    chunks: Vec<Bytes>,
    /// Their total length.
    received: usize,
}

/// A complete publish.
#[derive(Debug)]
struct Publish {
    publish: basic::Publish,
    header: ContentHeader,
    body: Bytes,
}

/// Work a transaction defers until `tx.commit`.
#[derive(Debug)]
enum TxOp {
    Publish(Box<Publish>),
    Ack {
        tag: u64,
        multiple: bool,
    },
    Reject {
        tag: u64,
        multiple: bool,
        requeue: bool,
    },
}

/// Connection-local state of one open channel.
#[derive(Debug)]
pub struct Channel {
    id: u16,
    /// We sent `channel.close` and wait for `close-ok`; everything else is dropped.
    pub closing: bool,
    pending: Option<Pending>,
    confirm: bool,
    /// Sequence number of the last publish in confirm mode.
    publish_seq: u64,
    /// Highest sequence number confirmed to the client.
    confirmed: u64,
    /// Publishes written to the store, oldest first: (sequence number, store ticket).
    /// Their confirms, and those of every later publish, wait until it is synced.
    unsynced: VecDeque<(u64, u64)>,
    tx: Option<Vec<TxOp>>,
    /// Committed transactions whose `commit-ok` waits for this store ticket.
    commits: VecDeque<u64>,
    /// A publish went to the store since [`Channel::take_stored`] last ran.
    stored: bool,
    /// The exchange last published to with write permission, and the user table's
    /// generation then: publishing there again skips the pattern match.
    write_allowed: Option<(u64, ShortString)>,
}

impl Channel {
    /// A newly opened channel.
    pub fn new(id: u16) -> Self {
        Self {
            id,
            closing: false,
            pending: None,
            confirm: false,
            publish_seq: 0,
            confirmed: 0,
            unsynced: VecDeque::new(),
            tx: None,
            commits: VecDeque::new(),
            stored: false,
            write_allowed: None,
        }
    }

    fn key(&self, ctx: &Ctx<'_>) -> ChannelKey {
        (ctx.conn, self.id)
    }

    /// A permission check, as RabbitMQ's channel makes it (403 ACCESS_REFUSED).
    fn check(
        ctx: &Ctx<'_>,
        resource: Resource,
        name: &str,
        access: Access,
    ) -> Result<(), AmqpError> {
        ctx.users
            .read()
            .check_access(ctx.user, ctx.vhost_name, resource, name, access)
    }

    /// `basic.publish`'s write permission on the exchange, cached per channel.
    fn check_write(&mut self, ctx: &Ctx<'_>, exchange: &ShortString) -> Result<(), AmqpError> {
        let users = ctx.users.read();
        let generation = users.generation();
        if let Some((g, x)) = &self.write_allowed
            && *g == generation
            && x == exchange
        {
            return Ok(());
        }
        users.check_access(
            ctx.user,
            ctx.vhost_name,
            Resource::Exchange,
            exchange.as_str(),
            Access::Write,
        )?;
        self.write_allowed = Some((generation, exchange.clone()));
        Ok(())
    }

    /// The checks of binding `destination` to `source` (queue or exchange bind and
    /// unbind), in RabbitMQ's order: write on the destination, neither may be the
    /// default exchange, read on the source.
    fn check_binding(
        ctx: &Ctx<'_>,
        destination: (Resource, &str),
        source: &str,
    ) -> Result<(), AmqpError> {
        Self::check(ctx, destination.0, destination.1, Access::Write)?;
        if source.is_empty() || destination == (Resource::Exchange, "") {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        Self::check(ctx, Resource::Exchange, source, Access::Read)
    }

    fn reply(&self, ctx: &Ctx<'_>, method: AMQPClass) {
        let id = self.id;
        ctx.outbox.push(|out| frame::encode_method(out, id, method));
    }

    /// Whether a publish is waiting for its header or body.
    pub fn expecting_content(&self) -> bool {
        self.pending.is_some()
    }

    /// Bytes of a body still arriving, held until it is complete.
    pub fn partial_len(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.received)
    }

    /// Applies a method frame.
    pub fn method(&mut self, ctx: &Ctx<'_>, method: AMQPClass) -> Result<(), AmqpError> {
        if self.pending.is_some() {
            return Err(AmqpError::connection(
                code::UNEXPECTED_FRAME,
                "expected content header for class 60, got non content header frame instead",
            ));
        }
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        self.apply(ctx, method)
            .map_err(|e| e.on_method(class_id, method_id))
    }

    fn apply(&mut self, ctx: &Ctx<'_>, method: AMQPClass) -> Result<(), AmqpError> {
        use AMQPClass as C;
        let key = self.key(ctx);
        match method {
            C::Basic(basic::AMQPMethod::Publish(p)) => {
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
            }
            C::Basic(basic::AMQPMethod::Ack(a)) => self.ack_like(
                ctx,
                TxOp::Ack {
                    tag: a.delivery_tag,
                    multiple: a.multiple,
                },
            )?,
            C::Basic(basic::AMQPMethod::Nack(n)) => self.ack_like(
                ctx,
                TxOp::Reject {
                    tag: n.delivery_tag,
                    multiple: n.multiple,
                    requeue: n.requeue,
                },
            )?,
            C::Basic(basic::AMQPMethod::Reject(r)) => self.ack_like(
                ctx,
                TxOp::Reject {
                    tag: r.delivery_tag,
                    multiple: false,
                    requeue: r.requeue,
                },
            )?,
            C::Basic(basic::AMQPMethod::Consume(c)) => {
                if c.queue.as_str() != REPLY_TO {
                    Self::check(ctx, Resource::Queue, c.queue.as_str(), Access::Read)?;
                }
                let opts = ConsumeOptions {
                    tag: c.consumer_tag,
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    nowait: c.nowait,
                };
                ctx.vhost.lock().consume(key, c.queue.as_str(), opts)?;
            }
            C::Basic(basic::AMQPMethod::Cancel(c)) => {
                ctx.vhost.lock().cancel(key, c.consumer_tag.as_str())?;
                if !c.nowait {
                    self.reply(
                        ctx,
                        C::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
            }
            C::Basic(basic::AMQPMethod::Get(g)) => {
                Self::check(ctx, Resource::Queue, g.queue.as_str(), Access::Read)?;
                ctx.vhost.lock().get(key, g.queue.as_str(), g.no_ack)?
            }
            C::Basic(basic::AMQPMethod::Qos(q)) => {
                ctx.vhost.lock().qos(key, q.prefetch_count, q.global)?;
                self.reply(ctx, C::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
            }
            C::Basic(basic::AMQPMethod::Recover(r)) => {
                if !r.requeue {
                    return Err(AmqpError::connection(
                        code::NOT_IMPLEMENTED,
                        "requeue=false",
                    ));
                }
                // recover-ok goes out before the redeliveries, as RabbitMQ sends it.
                self.reply(
                    ctx,
                    C::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
                ctx.vhost.lock().recover(key)?;
            }
            C::Basic(basic::AMQPMethod::RecoverAsync(r)) => {
                if !r.requeue {
                    return Err(AmqpError::connection(
                        code::NOT_IMPLEMENTED,
                        "requeue=false",
                    ));
                }
                ctx.vhost.lock().recover(key)?;
            }
            C::Queue(queue::AMQPMethod::Declare(d)) => {
                // As RabbitMQ: a server-named queue is named first and checked by that
                // name; `amq.*` names are refused before permissions; passive: no check.
                let server_named = !d.passive && d.queue.as_str().is_empty();
                let name = if server_named {
                    ShortString::from(generated_name("amq.gen-"))
                } else {
                    d.queue.clone()
                };
                if !d.passive && (server_named || !name.as_str().starts_with("amq.")) {
                    Self::check(ctx, Resource::Queue, name.as_str(), Access::Configure)?;
                    if let Some(dlx) = string_arg(&d.arguments, "x-dead-letter-exchange")
                        && !ctx.vhost.lock().has_queue(name.as_str())
                    {
                        Self::check(ctx, Resource::Queue, name.as_str(), Access::Read)?;
                        Self::check(ctx, Resource::Exchange, &dlx, Access::Write)?;
                    }
                }
                let opts = QueueOptions {
                    passive: d.passive,
                    durable: d.durable,
                    exclusive: d.exclusive,
                    auto_delete: d.auto_delete,
                    arguments: d.arguments,
                };
                let info = if server_named {
                    ctx.vhost
                        .lock()
                        .declare_server_named_queue(ctx.conn, name, opts)?
                } else {
                    ctx.vhost
                        .lock()
                        .declare_queue(ctx.conn, name.as_str(), opts)?
                };
                if !d.nowait {
                    self.reply(
                        ctx,
                        C::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                            queue: info.name,
                            message_count: info.messages,
                            consumer_count: info.consumers,
                        })),
                    );
                }
            }
            C::Queue(queue::AMQPMethod::Bind(b)) => {
                Self::check_binding(
                    ctx,
                    (Resource::Queue, b.queue.as_str()),
                    b.exchange.as_str(),
                )?;
                ctx.vhost.lock().bind_queue(
                    ctx.conn,
                    b.queue.as_str(),
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                    b.arguments,
                )?;
                if !b.nowait {
                    self.reply(ctx, C::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})));
                }
            }
            C::Queue(queue::AMQPMethod::Unbind(u)) => {
                Self::check_binding(
                    ctx,
                    (Resource::Queue, u.queue.as_str()),
                    u.exchange.as_str(),
                )?;
                ctx.vhost.lock().unbind_queue(
                    ctx.conn,
                    u.queue.as_str(),
                    u.exchange.as_str(),
                    u.routing_key.as_str(),
                    &u.arguments,
                )?;
                self.reply(
                    ctx,
                    C::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                );
            }
            C::Queue(queue::AMQPMethod::Purge(p)) => {
                Self::check(ctx, Resource::Queue, p.queue.as_str(), Access::Read)?;
                let n = ctx.vhost.lock().purge_queue(ctx.conn, p.queue.as_str())?;
                if !p.nowait {
                    self.reply(
                        ctx,
                        C::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                            message_count: n,
                        })),
                    );
                }
            }
            C::Queue(queue::AMQPMethod::Delete(d)) => {
                Self::check(ctx, Resource::Queue, d.queue.as_str(), Access::Configure)?;
                let n = ctx.vhost.lock().delete_queue(
                    ctx.conn,
                    d.queue.as_str(),
                    d.if_unused,
                    d.if_empty,
                )?;
                if !d.nowait {
                    self.reply(
                        ctx,
                        C::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                            message_count: n,
                        })),
                    );
                }
            }
            C::Exchange(exchange::AMQPMethod::Declare(d)) => {
                // The default exchange is refused first; passive declares are unchecked;
                // `amq.*` names are checked (RabbitMQ refuses them after the check).
                let name = d.exchange.as_str();
                if !d.passive && !name.is_empty() {
                    Self::check(ctx, Resource::Exchange, name, Access::Configure)?;
                    if let Some(ae) = string_arg(&d.arguments, "alternate-exchange")
                        && !ctx.vhost.lock().has_exchange(name)
                    {
                        Self::check(ctx, Resource::Exchange, name, Access::Read)?;
                        Self::check(ctx, Resource::Exchange, &ae, Access::Write)?;
                    }
                }
                let opts = ExchangeOptions {
                    kind: d.kind.as_str().to_owned(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: d.arguments,
                };
                ctx.vhost
                    .lock()
                    .declare_exchange(d.exchange.as_str(), opts)?;
                if !d.nowait {
                    self.reply(
                        ctx,
                        C::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
                    );
                }
            }
            C::Exchange(exchange::AMQPMethod::Delete(d)) => {
                let name = d.exchange.as_str();
                // The default and `amq.*` exchanges are refused before the check.
                if !name.is_empty() && !name.starts_with("amq.") {
                    Self::check(ctx, Resource::Exchange, name, Access::Configure)?;
                }
                ctx.vhost
                    .lock()
                    .delete_exchange(d.exchange.as_str(), d.if_unused)?;
                if !d.nowait {
                    self.reply(
                        ctx,
                        C::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
            }
            C::Exchange(exchange::AMQPMethod::Bind(b)) => {
                Self::check_binding(
                    ctx,
                    (Resource::Exchange, b.destination.as_str()),
                    b.source.as_str(),
                )?;
                ctx.vhost.lock().bind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    b.arguments,
                )?;
                if !b.nowait {
                    self.reply(
                        ctx,
                        C::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                    );
                }
            }
            C::Exchange(exchange::AMQPMethod::Unbind(u)) => {
                Self::check_binding(
                    ctx,
                    (Resource::Exchange, u.destination.as_str()),
                    u.source.as_str(),
                )?;
                ctx.vhost.lock().unbind_exchange(
                    u.destination.as_str(),
                    u.source.as_str(),
                    u.routing_key.as_str(),
                    &u.arguments,
                )?;
                if !u.nowait {
                    self.reply(
                        ctx,
                        C::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                    );
                }
            }
            C::Confirm(confirm::AMQPMethod::Select(s)) => {
                if self.tx.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                self.confirm = true;
                if !s.nowait {
                    self.reply(
                        ctx,
                        C::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            C::Tx(tx::AMQPMethod::Select(_)) => {
                if self.confirm {
                    return Err(AmqpError::precondition(
                        "cannot switch from confirm to tx mode",
                    ));
                }
                self.tx.get_or_insert_with(Vec::new);
                self.reply(ctx, C::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
            }
            C::Tx(tx::AMQPMethod::Commit(_)) => {
                let Some(ops) = self.tx.as_mut().map(std::mem::take) else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                let mut ticket = None;
                for op in ops {
                    match op {
                        TxOp::Publish(p) => ticket = self.route(ctx, *p)?.or(ticket),
                        other => self.apply_ack(ctx, other)?,
                    }
                }
                match ticket {
                    // Persistent messages went to the store: commit-ok once synced.
                    Some(t) => self.commits.push_back(t),
                    None => self.reply(ctx, C::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}))),
                }
            }
            C::Tx(tx::AMQPMethod::Rollback(_)) => {
                let Some(ops) = self.tx.as_mut() else {
                    return Err(AmqpError::precondition("channel is not transactional"));
                };
                ops.clear();
                self.reply(ctx, C::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
            }
            C::Channel(channel::AMQPMethod::Flow(f)) => {
                if !f.active {
                    return Err(AmqpError::connection(code::NOT_IMPLEMENTED, "active=false"));
                }
                self.reply(
                    ctx,
                    C::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: true,
                    })),
                );
            }
            C::Access(_) => {
                // Deprecated in 0-9-1; RabbitMQ answers request-ok.
                self.reply(
                    ctx,
                    C::Access(amq_protocol::protocol::access::AMQPMethod::RequestOk(
                        amq_protocol::protocol::access::RequestOk {},
                    )),
                );
            }
            other => {
                return Err(AmqpError::connection(
                    code::COMMAND_INVALID,
                    format_args!(
                        "unexpected method {}.{} on a channel",
                        other.get_amqp_class_id(),
                        other.get_amqp_method_id()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn ack_like(&mut self, ctx: &Ctx<'_>, op: TxOp) -> Result<(), AmqpError> {
        match self.tx.as_mut() {
            Some(ops) => {
                ops.push(op);
                Ok(())
            }
            None => self.apply_ack(ctx, op),
        }
    }

    fn apply_ack(&mut self, ctx: &Ctx<'_>, op: TxOp) -> Result<(), AmqpError> {
        let key = self.key(ctx);
        match op {
            TxOp::Ack { tag, multiple } => ctx.vhost.lock().ack(key, tag, multiple),
            TxOp::Reject {
                tag,
                multiple,
                requeue,
            } => ctx.vhost.lock().reject(key, tag, multiple, requeue),
            TxOp::Publish(_) => Ok(()),
        }
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
            .on_method(60, 40));
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

    fn finish(&mut self, ctx: &Ctx<'_>) -> Result<(), AmqpError> {
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
        self.check_write(ctx, &p.publish.exchange)
            .map_err(|e| e.on_method(60, 40))?;
        ctx.vhost
            .lock()
            .check_publish(p.publish.exchange.as_str())
            .map_err(|e| e.on_method(60, 40))?;
        if let Some(ops) = self.tx.as_mut() {
            ops.push(TxOp::Publish(Box::new(p)));
        }
        Ok(())
    }

    /// Routes a complete publish; returns it if unroutable and mandatory; records the
    /// confirm. Returns the store ticket it waits for, if it was stored.
    fn route(&mut self, ctx: &Ctx<'_>, p: Publish) -> Result<Option<u64>, AmqpError> {
        let Publish {
            publish,
            mut header,
            body,
        } = p;
        let fail = |e: AmqpError| e.on_method(60, 40);
        // RabbitMQ's order: size (at the header), write permission, the exchange,
        // user_id, expiration.
        self.check_write(ctx, &publish.exchange).map_err(fail)?;
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
        let persistent = header.properties.delivery_mode() == Some(2);
        let mandatory = publish.mandatory;
        let message = Message {
            exchange: publish.exchange,
            routing_key: publish.routing_key,
            properties: header.properties.raw().clone(),
            body,
            ttl,
            expires_at: None,
            persistent,
        };
        let routed = vhost.publish(&|| header.properties.headers(), message);
        drop(vhost);
        if let (true, Some(ticket)) = (self.confirm, routed.ticket) {
            self.unsynced.push_back((self.publish_seq, ticket));
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

    /// Whether a publish went to the store since the last call.
    pub fn take_stored(&mut self) -> bool {
        std::mem::take(&mut self.stored)
    }

    /// Sends the confirms owed since the last call, coalesced into one `basic.ack`:
    /// every publish up to the first one whose store write is not synced yet. Also
    /// sends the `commit-ok`s whose transactions' store writes are synced.
    ///
    /// Returns the store ticket the next confirm waits for, if any.
    pub fn flush_confirms(&mut self, ctx: &Ctx<'_>) -> Option<u64> {
        let synced = || ctx.store.map_or(u64::MAX, |s| s.syncer().synced());
        if !self.commits.is_empty() {
            let synced = synced();
            while self.commits.front().is_some_and(|&t| t <= synced) {
                self.commits.pop_front();
                self.reply(
                    ctx,
                    AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
                );
            }
            if let Some(&t) = self.commits.front() {
                return Some(t);
            }
        }
        if !self.confirm {
            return None;
        }
        if !self.unsynced.is_empty() {
            let synced = synced();
            while self.unsynced.front().is_some_and(|&(_, t)| t <= synced) {
                self.unsynced.pop_front();
            }
        }
        let upto = self
            .unsynced
            .front()
            .map_or(self.publish_seq, |&(seq, _)| seq - 1);
        if upto > self.confirmed {
            let multiple = upto - self.confirmed > 1;
            let id = self.id;
            ctx.outbox
                .push(|out| frame::encode_ack(out, id, upto, multiple));
            self.confirmed = upto;
        }
        self.unsynced.front().map(|&(_, t)| t)
    }
}

/// A string argument (`x-dead-letter-exchange`, `alternate-exchange`), if set as one.
fn string_arg(args: &FieldTable, key: &str) -> Option<String> {
    match args.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_permission_is_reread_after_the_user_table_changes() {
        let mut users = Users::default();
        users.add_user("u", "pw", vec![]);
        users
            .set_permissions("u", "/", "", "^app\\.", "")
            .expect("permissions");
        let users = RwLock::new(users);
        let outbox = Arc::new(Outbox::default());
        let vhost = Mutex::new(VHost::new());
        let ctx = Ctx {
            conn: 1,
            user: "u",
            outbox: &outbox,
            vhost: &vhost,
            frame_max: 131_072,
            store: None,
            users: &users,
            vhost_name: "/",
            max_message_size: crate::Limits::DEFAULT_MAX_MESSAGE_SIZE,
        };
        let mut ch = Channel::new(1);
        let x = ShortString::from("app.x");
        assert!(ch.check_write(&ctx, &x).is_ok());
        assert!(ch.check_write(&ctx, &x).is_ok(), "cached");
        users
            .write()
            .set_permissions("u", "/", "", "^other\\.", "")
            .expect("permissions");
        let err = ch.check_write(&ctx, &x).expect_err("revoked");
        assert_eq!(
            err.text,
            "ACCESS_REFUSED - access to exchange 'app.x' in vhost '/' refused for user 'u'"
        );
        users.write().clear_permissions("u", "/");
        assert!(ch.check_write(&ctx, &ShortString::from("other.x")).is_err());
    }
}

//! The basic class but for publishing: consume, cancel, get, qos, recover, and the
//! acks and rejects of deliveries (deferred to `tx.commit` in a transaction).

use amq_protocol::protocol::{AMQPClass, basic};

use super::{Channel, Ctx, TxOp, unexpected};
use crate::auth::{Access, Resource};
use crate::error::{AmqpError, code};
use crate::vhost::{ConsumeOptions, REPLY_TO};

impl Channel {
    /// Applies a basic-class method; `basic.publish` only starts a publish (see
    /// `publish`), acks and rejects wait for `tx.commit` in a transaction.
    pub(super) fn basic_method(
        &mut self,
        ctx: &Ctx<'_>,
        method: basic::AMQPMethod,
    ) -> Result<(), AmqpError> {
        use AMQPClass as C;
        use basic::AMQPMethod as M;
        let key = self.key(ctx);
        match method {
            M::Publish(p) => self.start_publish(p)?,
            M::Ack(a) => self.ack_like(
                ctx,
                TxOp::Ack {
                    tag: a.delivery_tag,
                    multiple: a.multiple,
                },
            )?,
            M::Nack(n) => self.ack_like(
                ctx,
                TxOp::Reject {
                    tag: n.delivery_tag,
                    multiple: n.multiple,
                    requeue: n.requeue,
                },
            )?,
            M::Reject(r) => self.ack_like(
                ctx,
                TxOp::Reject {
                    tag: r.delivery_tag,
                    multiple: false,
                    requeue: r.requeue,
                },
            )?,
            M::Consume(c) => {
                if c.queue.as_str() != REPLY_TO {
                    Self::check(ctx, Resource::Queue, c.queue.as_str(), Access::Read)?;
                }
                let opts = ConsumeOptions {
                    tag: c.consumer_tag,
                    no_ack: c.no_ack,
                    exclusive: c.exclusive,
                    nowait: c.nowait,
                    arguments: c.arguments,
                };
                ctx.vhost.lock().consume(key, c.queue.as_str(), opts)?;
            }
            M::Cancel(c) => {
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
            M::Get(g) => {
                Self::check(ctx, Resource::Queue, g.queue.as_str(), Access::Read)?;
                ctx.vhost.lock().get(key, g.queue.as_str(), g.no_ack)?
            }
            M::Qos(q) => {
                ctx.vhost.lock().qos(key, q.prefetch_count, q.global)?;
                self.reply(ctx, C::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
            }
            M::Recover(r) => {
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
            M::RecoverAsync(r) => {
                if !r.requeue {
                    return Err(AmqpError::connection(
                        code::NOT_IMPLEMENTED,
                        "requeue=false",
                    ));
                }
                ctx.vhost.lock().recover(key)?;
            }
            other => return Err(unexpected(&AMQPClass::Basic(other))),
        }
        Ok(())
    }

    pub(super) fn ack_like(&mut self, ctx: &Ctx<'_>, op: TxOp) -> Result<(), AmqpError> {
        match self.tx.as_mut() {
            Some(ops) => {
                ops.push(op);
                Ok(())
            }
            None => self.apply_ack(ctx, op),
        }
    }

    pub(super) fn apply_ack(&mut self, ctx: &Ctx<'_>, op: TxOp) -> Result<(), AmqpError> {
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
}

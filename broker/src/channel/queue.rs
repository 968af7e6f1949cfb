//! The queue class: declare (naming server-named queues), bind, unbind, purge and
//! delete, each after RabbitMQ's permission checks in RabbitMQ's order.

use amq_protocol::protocol::{AMQPClass, queue};
use amq_protocol::types::ShortString;

use super::{Channel, Ctx, string_arg, unexpected};
use crate::auth::{Access, Resource};
use crate::error::AmqpError;
use crate::vhost::{QueueOptions, generated_name};

impl Channel {
    /// Applies a queue-class method, after RabbitMQ's permission checks.
    pub(super) fn queue_method(
        &mut self,
        ctx: &Ctx<'_>,
        method: queue::AMQPMethod,
    ) -> Result<(), AmqpError> {
        use AMQPClass as C;
        use queue::AMQPMethod as M;
        match method {
            M::Declare(d) => {
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
            M::Bind(b) => {
                Self::check_binding(
                    ctx,
                    (Resource::Queue, b.queue.as_str()),
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
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
            M::Unbind(u) => {
                Self::check_binding(
                    ctx,
                    (Resource::Queue, u.queue.as_str()),
                    u.exchange.as_str(),
                    u.routing_key.as_str(),
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
            M::Purge(p) => {
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
            M::Delete(d) => {
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
            other => return Err(unexpected(&AMQPClass::Queue(other))),
        }
        Ok(())
    }
}

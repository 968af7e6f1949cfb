//! The exchange class: declare, delete, and exchange-to-exchange bindings, each after
//! RabbitMQ's permission checks in RabbitMQ's order.

use amq_protocol::protocol::{AMQPClass, exchange};

use super::{Channel, Ctx, string_arg, unexpected};
use crate::auth::{Access, Resource};
use crate::error::AmqpError;
use crate::vhost::ExchangeOptions;

impl Channel {
    /// Applies an exchange-class method, after RabbitMQ's permission checks.
    pub(super) fn exchange_method(
        &mut self,
        ctx: &Ctx<'_>,
        method: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        use AMQPClass as C;
        use exchange::AMQPMethod as M;
        match method {
            M::Declare(d) => {
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
            M::Delete(d) => {
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
            M::Bind(b) => {
                Self::check_binding(
                    ctx,
                    (Resource::Exchange, b.destination.as_str()),
                    b.source.as_str(),
                    b.routing_key.as_str(),
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
            M::Unbind(u) => {
                Self::check_binding(
                    ctx,
                    (Resource::Exchange, u.destination.as_str()),
                    u.source.as_str(),
                    u.routing_key.as_str(),
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
            other => return Err(unexpected(&AMQPClass::Exchange(other))),
        }
        Ok(())
    }
}

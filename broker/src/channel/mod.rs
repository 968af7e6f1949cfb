//! One channel of a connection: applies its methods and assembles published content.
//!
//! Sits between [`crate::connection`], which hands it the frames of its channel number,
//! and [`crate::vhost`], where its methods take effect. What only this channel can
//! touch stays here: the publish being assembled (method, header, body frames), the
//! publisher-confirm counters (acks are coalesced with `multiple` once per read batch),
//! and the buffered work of a transaction.
//!
//! # Layout
//!
//! This module holds the channel's state, its permission checks and the dispatch by
//! class; one file per class applies its methods: `basic` (consume, get, acks),
//! `publish` (`basic.publish` and its content, then routing), `queue`, `exchange`,
//! `confirm` (publisher confirms) and `tx` (transactions).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use amq_protocol::protocol::{AMQPClass, access, channel};
use amq_protocol::types::{FieldTable, ShortString};
use parking_lot::{Mutex, RwLock};

use crate::auth::{Access, Resource, Users};
use crate::error::{AmqpError, code};
use crate::frame;
use crate::outbox::Outbox;
use crate::queue::ChannelKey;
use crate::store::Store;
use crate::vhost::{ChannelStats, VHost};

mod basic;
mod confirm;
mod exchange;
mod publish;
mod queue;
mod tx;

use publish::{Pending, Publish};

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
    /// Publishes a full queue refused (`x-overflow: reject-publish`), oldest first:
    /// nacked, in order, when the confirms get to them.
    nacked: VecDeque<u64>,
    tx: Option<Vec<TxOp>>,
    /// Committed transactions whose `commit-ok` waits for this store ticket.
    commits: VecDeque<u64>,
    /// A publish went to the store since [`Channel::take_stored`] last ran.
    stored: bool,
    /// The exchange last published to with write permission, and the user table's
    /// generation then: publishing there again skips the pattern match.
    write_allowed: Option<(u64, ShortString)>,
    /// The user-table generation at which the user was seen to have no topic
    /// permissions in this vhost: the publish path then checks no routing key.
    no_topic_permissions: Option<u64>,
    /// Confirm mode and the confirms owed, for the management API.
    stats: Arc<ChannelStats>,
}

impl Channel {
    /// A newly opened channel.
    #[cfg(test)]
    pub fn new(id: u16) -> Self {
        Self::with_stats(id, Arc::default())
    }

    /// A newly opened channel that reports confirm mode and the confirms it owes to
    /// `stats` (which the vhost's side of the channel shares).
    pub fn with_stats(id: u16, stats: Arc<ChannelStats>) -> Self {
        Self {
            id,
            closing: false,
            pending: None,
            confirm: false,
            publish_seq: 0,
            confirmed: 0,
            unsynced: VecDeque::new(),
            nacked: VecDeque::new(),
            tx: None,
            commits: VecDeque::new(),
            stored: false,
            write_allowed: None,
            no_topic_permissions: None,
            stats,
        }
    }

    fn key(&self, ctx: &Ctx<'_>) -> ChannelKey {
        ChannelKey::new(ctx.conn, self.id)
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

    /// `basic.publish`'s permissions, with one read of the user table: write on the
    /// exchange (cached per channel), and the topic permission of the routing key when
    /// the user has topic permissions in this vhost (whether it has none is cached per
    /// channel too, so a publish without them costs nothing more).
    fn check_publish(
        &mut self,
        ctx: &Ctx<'_>,
        exchange: &ShortString,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        let topic = {
            let users = ctx.users.read();
            let generation = users.generation();
            let cached =
                matches!(&self.write_allowed, Some((g, x)) if *g == generation && x == exchange);
            if !cached {
                users.check_access(
                    ctx.user,
                    ctx.vhost_name,
                    Resource::Exchange,
                    exchange.as_str(),
                    Access::Write,
                )?;
                self.write_allowed = Some((generation, exchange.clone()));
            }
            if self.no_topic_permissions == Some(generation) {
                false
            } else if users.has_topic_permissions(ctx.user, ctx.vhost_name) {
                true
            } else {
                self.no_topic_permissions = Some(generation);
                false
            }
        };
        if topic {
            Self::check_topic(ctx, exchange.as_str(), routing_key, Access::Write)
        } else {
            Ok(())
        }
    }

    /// The topic permission of `key` on `exchange`, if it is a topic exchange (for a
    /// user known to have topic permissions in this vhost).
    fn check_topic(
        ctx: &Ctx<'_>,
        exchange: &str,
        key: &str,
        access: Access,
    ) -> Result<(), AmqpError> {
        if !ctx.vhost.lock().exchange_is_topic(exchange) {
            return Ok(());
        }
        ctx.users
            .read()
            .check_topic(ctx.user, ctx.vhost_name, exchange, key, access)
    }

    /// The checks of binding `destination` to `source` with `key` (queue or exchange
    /// bind and unbind), in RabbitMQ's order: write on the destination, neither may be
    /// the default exchange, read on the source, the topic permission on the key.
    fn check_binding(
        ctx: &Ctx<'_>,
        destination: (Resource, &str),
        source: &str,
        key: &str,
    ) -> Result<(), AmqpError> {
        Self::check(ctx, destination.0, destination.1, Access::Write)?;
        if source.is_empty() || destination == (Resource::Exchange, "") {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        Self::check(ctx, Resource::Exchange, source, Access::Read)?;
        if ctx
            .users
            .read()
            .has_topic_permissions(ctx.user, ctx.vhost_name)
        {
            Self::check_topic(ctx, source, key, Access::Read)?;
        }
        Ok(())
    }

    fn reply(&self, ctx: &Ctx<'_>, method: AMQPClass) {
        let id = self.id;
        ctx.outbox.push(|out| frame::encode_method(out, id, method));
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
        match method {
            C::Basic(m) => self.basic_method(ctx, m),
            C::Queue(m) => self.queue_method(ctx, m),
            C::Exchange(m) => self.exchange_method(ctx, m),
            C::Confirm(m) => self.confirm_method(ctx, m),
            C::Tx(m) => self.tx_method(ctx, m),
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
                Ok(())
            }
            C::Access(_) => {
                // Deprecated in 0-9-1; RabbitMQ answers request-ok.
                self.reply(
                    ctx,
                    C::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// A method this channel does not take (a connection error, as RabbitMQ).
fn unexpected(method: &AMQPClass) -> AmqpError {
    AmqpError::connection(
        code::COMMAND_INVALID,
        format_args!(
            "unexpected method {}.{} on a channel",
            method.get_amqp_class_id(),
            method.get_amqp_method_id()
        ),
    )
}

/// A string argument (`x-dead-letter-exchange`, `alternate-exchange`), if set as one.
fn string_arg(args: &FieldTable, key: &str) -> Option<String> {
    args.inner()
        .get(key)
        .and_then(crate::args::str_value)
        .map(Cow::into_owned)
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
        assert!(ch.check_publish(&ctx, &x, "").is_ok());
        assert!(ch.check_publish(&ctx, &x, "").is_ok(), "cached");
        users
            .write()
            .set_permissions("u", "/", "", "^other\\.", "")
            .expect("permissions");
        let err = ch.check_publish(&ctx, &x, "").expect_err("revoked");
        assert_eq!(
            err.text,
            "ACCESS_REFUSED - access to exchange 'app.x' in vhost '/' refused for user 'u'"
        );
        users.write().clear_permissions("u", "/");
        assert!(
            ch.check_publish(&ctx, &ShortString::from("other.x"), "")
                .is_err()
        );
    }
}

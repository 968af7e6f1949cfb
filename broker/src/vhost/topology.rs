//! Topology: declaring, binding and deleting exchanges and queues, with RabbitMQ's
//! equivalence checks, reserved names and exclusive-queue locking.

use std::borrow::Cow;
use std::time::Instant;

use amq_protocol::protocol::{AMQPClass, basic};
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};

use super::{
    ExchangeOptions, QueueInfo, QueueOptions, REPLY_TO, VHost, generated_name, unknown_type,
};
use crate::error::AmqpError;
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::frame;
use crate::queue::{Queue, locked};

impl VHost {
    // ----- exchanges ------------------------------------------------------------------

    /// `exchange.declare`.
    pub fn declare_exchange(&mut self, name: &str, opts: ExchangeOptions) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        let kind = ExchangeKind::parse(&opts.kind);
        if !opts.passive {
            crate::args::check_exchange_arguments(&self.name, name, &opts.arguments)?;
        }
        if let Some(x) = self.exchanges.get(name) {
            if opts.passive {
                return Ok(());
            }
            let received = kind.ok_or_else(|| unknown_type(&opts.kind))?;
            let inequivalent = |arg: &str, r: &dyn std::fmt::Display, c: &dyn std::fmt::Display| {
                AmqpError::precondition(format_args!(
                    "inequivalent arg '{arg}' for exchange '{name}' in vhost '{}': received '{r}' but current is '{c}'",
                    self.name
                ))
            };
            if x.kind != received {
                return Err(inequivalent("type", &received.as_str(), &x.kind.as_str()));
            }
            if x.durable != opts.durable {
                return Err(inequivalent("durable", &opts.durable, &x.durable));
            }
            if x.auto_delete != opts.auto_delete {
                return Err(inequivalent(
                    "auto_delete",
                    &opts.auto_delete,
                    &x.auto_delete,
                ));
            }
            if x.internal != opts.internal {
                return Err(inequivalent("internal", &opts.internal, &x.internal));
            }
            let key = "alternate-exchange";
            if let Some((received, current)) =
                crate::args::differs(key, &opts.arguments, &x.arguments)
            {
                return Err(AmqpError::precondition(format_args!(
                    "inequivalent arg '{key}' for exchange '{name}' in vhost '{}': received {received} but current is {current}",
                    self.name
                )));
            }
            return Ok(());
        }
        if opts.passive {
            return Err(AmqpError::not_found_exchange(&self.name, name));
        }
        let kind = kind.ok_or_else(|| unknown_type(&opts.kind))?;
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let mut x = Exchange::new(name, kind, opts.durable);
        x.auto_delete = opts.auto_delete;
        x.internal = opts.internal;
        x.arguments = opts.arguments;
        x.applied = self.policies.applied(name, crate::policy::Target::Exchange);
        self.exchanges.insert(name.into(), x);
        if opts.durable {
            self.definitions_changed();
        }
        Ok(())
    }

    /// `exchange.delete`: deleting one that does not exist succeeds, as in RabbitMQ.
    pub fn delete_exchange(&mut self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format_args!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let Some(x) = self.exchanges.get(name) else {
            return Ok(());
        };
        if if_unused && !x.bindings.is_empty() {
            return Err(AmqpError::precondition(format_args!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        self.remove_exchange(name);
        Ok(())
    }

    pub(super) fn remove_exchange(&mut self, name: &str) {
        if self.exchanges.remove(name).is_some_and(|x| x.durable) {
            self.definitions_changed();
        }
        let dest = Destination::Exchange(name.into());
        self.remove_bindings_to(&dest);
    }

    pub(super) fn remove_bindings_to(&mut self, dest: &Destination) {
        let mut emptied = Vec::new();
        for x in self.exchanges.values_mut() {
            let removed = x.bindings.remove_destination(dest);
            if x.auto_delete && removed > 0 && x.bindings.is_empty() {
                emptied.push(x.name.clone());
            }
        }
        for name in emptied {
            self.remove_exchange(name.as_str());
        }
    }

    pub(super) fn bindable_source(&self, name: &str) -> Result<(), AmqpError> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if !self.exchanges.contains_key(name) {
            return Err(AmqpError::not_found_exchange(&self.name, name));
        }
        Ok(())
    }

    /// `exchange.bind`: messages from `source` also go through `destination`.
    pub fn bind_exchange(
        &mut self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        self.bindable_source(source)?;
        if destination.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if !self.exchanges.contains_key(destination) {
            return Err(AmqpError::not_found_exchange(&self.name, destination));
        }
        self.add_binding(
            source,
            Destination::Exchange(destination.into()),
            routing_key,
            arguments,
        )
    }

    /// `exchange.unbind`.
    pub fn unbind_exchange(
        &mut self,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        if !self.exchanges.contains_key(destination) {
            return Err(AmqpError::not_found_exchange(&self.name, destination));
        }
        if !self.exchanges.contains_key(source) {
            return Err(AmqpError::not_found_exchange(&self.name, source));
        }
        self.remove_binding(
            source,
            &Destination::Exchange(destination.into()),
            routing_key,
            arguments,
        );
        Ok(())
    }

    pub(super) fn add_binding(
        &mut self,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        let durable = self.durable_exchange(source) && self.durable_destination(&destination);
        if let Some(x) = self.exchanges.get_mut(source) {
            x.validate_binding(&arguments)?;
            let binding = Binding {
                destination,
                routing_key: routing_key.into(),
                arguments,
            };
            if x.bindings.insert(binding) && durable {
                self.definitions_changed();
            }
        }
        Ok(())
    }

    pub(super) fn remove_binding(
        &mut self,
        source: &str,
        dest: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) {
        let durable = self.durable_exchange(source) && self.durable_destination(dest);
        let Some(x) = self.exchanges.get_mut(source) else {
            return;
        };
        let removed = x.bindings.remove(dest, routing_key, arguments);
        if durable && removed {
            self.definitions_changed();
        }
        let Some(x) = self.exchanges.get_mut(source) else {
            return;
        };
        if x.auto_delete && removed && x.bindings.is_empty() {
            let name = x.name.clone();
            self.remove_exchange(name.as_str());
        }
    }

    // ----- queues ---------------------------------------------------------------------

    /// Checks that `conn` may use the queue (exclusive queues belong to one connection).
    pub(super) fn accessible(&self, name: &str, conn: u64) -> Result<&Queue, AmqpError> {
        let q = self
            .queues
            .get(name)
            .ok_or_else(|| AmqpError::not_found_queue(&self.name, name))?;
        match q.exclusive_owner {
            Some(owner) if owner != conn => Err(locked(&self.name, name)),
            _ => Ok(q),
        }
    }

    pub(super) fn accessible_mut(
        &mut self,
        name: &str,
        conn: u64,
    ) -> Result<&mut Queue, AmqpError> {
        self.accessible(name, conn)?;
        self.queues
            .get_mut(name)
            .ok_or_else(|| AmqpError::not_found_queue(&self.name, name))
    }

    /// Whether a queue of this name exists.
    pub fn has_queue(&self, name: &str) -> bool {
        self.queues.contains_key(name)
    }

    /// Whether an exchange of this name exists.
    pub fn has_exchange(&self, name: &str) -> bool {
        self.exchanges.contains_key(name)
    }

    /// Whether `name` is a topic exchange (topic permissions apply to those only).
    pub fn exchange_is_topic(&self, name: &str) -> bool {
        self.exchanges
            .get(name)
            .is_some_and(|x| x.kind == ExchangeKind::Topic)
    }

    /// `queue.declare`.
    pub fn declare_queue(
        &mut self,
        conn: u64,
        name: &str,
        opts: QueueOptions,
    ) -> Result<QueueInfo, AmqpError> {
        self.declare_queue_as(conn, name, false, opts)
    }

    /// `queue.declare` of a server-named queue under the name the caller generated
    /// (with [`super::generated_name`]), e.g. to check permissions on it first.
    pub fn declare_server_named_queue(
        &mut self,
        conn: u64,
        name: ShortString,
        opts: QueueOptions,
    ) -> Result<QueueInfo, AmqpError> {
        self.declare_queue_as(conn, name.as_str(), true, opts)
    }

    fn declare_queue_as(
        &mut self,
        conn: u64,
        name: &str,
        server_named: bool,
        mut opts: QueueOptions,
    ) -> Result<QueueInfo, AmqpError> {
        let now = Instant::now();
        if name == REPLY_TO && opts.passive {
            // RabbitMQ reports the pseudo-queue as having one consumer.
            return Ok(QueueInfo {
                name: name.into(),
                messages: 0,
                consumers: 1,
            });
        }
        if !opts.passive {
            self.churn.queue_declared += 1;
        }
        if self.queues.contains_key(name) {
            self.accessible(name, conn)?;
            let Some(q) = self.queues.get_mut(name) else {
                return Err(AmqpError::not_found_queue(&self.name, name));
            };
            if !opts.passive {
                // Without a type in a vhost whose default is quorum, the redeclare
                // names none: it matches the queue's own (which may predate the
                // default), as in RabbitMQ 4.
                let mut received = Cow::Borrowed(&opts.arguments);
                if self.quorum_by_default
                    && !opts.arguments.inner().contains_key("x-queue-type")
                    && let Some(t) = q.arguments.inner().get("x-queue-type")
                {
                    received.to_mut().insert("x-queue-type".into(), t.clone());
                }
                q.check_equivalent(
                    &self.name,
                    opts.durable,
                    opts.exclusive,
                    opts.auto_delete,
                    &received,
                )?;
            }
            q.last_used = now;
            return Ok(QueueInfo {
                name: q.name.clone(),
                messages: q.ready(now),
                consumers: q.consumer_count(),
            });
        }
        if opts.passive {
            return Err(AmqpError::not_found_queue(&self.name, name));
        }
        let name: ShortString = if name.is_empty() {
            generated_name("amq.gen-").into()
        } else if name.starts_with("amq.") && !server_named {
            return Err(AmqpError::access_refused(format_args!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        } else {
            name.into()
        };
        if let Some(max) = self.max_queues
            && self.queues.len() as u64 >= max
        {
            return Err(crate::resource_limits::queue_limit_reached(
                &self.name,
                name.as_str(),
                max,
            ));
        }
        if self.quorum_by_default
            && opts.durable
            && !opts.exclusive
            && !opts.auto_delete
            && !opts.arguments.inner().contains_key("x-queue-type")
        {
            // The vhost's default queue type (see `crate::vhost_metadata`).
            opts.arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        crate::args::check_declare_arguments(&self.name, name.as_str(), &opts.arguments)?;
        let flags = (opts.durable, opts.exclusive, opts.auto_delete);
        crate::args::check_queue_type(&self.name, name.as_str(), flags, &opts.arguments)?;
        if !opts.durable && !opts.exclusive && !self.deprecated.transient_nonexcl_queues {
            return Err(crate::deprecated::transient_nonexcl_queue_denied());
        }
        let owner = opts.exclusive.then_some(conn);
        let mut q = Queue::new(
            &self.name,
            name.clone(),
            opts.durable,
            owner,
            opts.auto_delete,
            opts.arguments,
        )?;
        let durable = self.wants_log(opts.durable, opts.exclusive);
        if durable {
            self.attach_log(&mut q)?;
        }
        self.queues.insert(name.clone(), q);
        self.apply_queue_policy(name.as_str());
        self.churn.queue_created += 1;
        if durable {
            self.write_declared_queue(&name)?;
        }
        Ok(QueueInfo {
            name,
            messages: 0,
            consumers: 0,
        })
    }

    /// `queue.bind`.
    pub fn bind_queue(
        &mut self,
        conn: u64,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), AmqpError> {
        self.accessible(queue, conn)?;
        self.bindable_source(exchange)?;
        self.add_binding(
            exchange,
            Destination::Queue(queue.into()),
            routing_key,
            arguments,
        )
    }

    /// `queue.unbind`: unbinding what is not bound succeeds.
    pub fn unbind_queue(
        &mut self,
        conn: u64,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<(), AmqpError> {
        self.accessible(queue, conn)?;
        if exchange.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if !self.exchanges.contains_key(exchange) {
            return Err(AmqpError::not_found_exchange(&self.name, exchange));
        }
        self.remove_binding(
            exchange,
            &Destination::Queue(queue.into()),
            routing_key,
            arguments,
        );
        Ok(())
    }

    /// `queue.purge`: drops the ready messages (not the unacked ones).
    pub fn purge_queue(&mut self, conn: u64, name: &str) -> Result<u32, AmqpError> {
        Ok(self.accessible_mut(name, conn)?.purge())
    }

    /// `queue.delete`: deleting one that does not exist succeeds, as in RabbitMQ.
    pub fn delete_queue(
        &mut self,
        conn: u64,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AmqpError> {
        if !self.queues.contains_key(name) {
            return Ok(0);
        }
        let q = self.accessible_mut(name, conn)?;
        if if_unused && !q.consumers.is_empty() {
            return Err(AmqpError::precondition(format_args!(
                "queue '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        if if_empty && q.ready_len() > 0 {
            return Err(AmqpError::precondition(format_args!(
                "queue '{name}' in vhost '{}' not empty",
                self.name
            )));
        }
        Ok(self.remove_queue(name))
    }

    /// Removes a queue, its bindings and its consumers (who are told with a
    /// server-sent `basic.cancel` if they understand it). Returns its ready count.
    pub(super) fn remove_queue(&mut self, name: &str) -> u32 {
        let Some(q) = self.queues.remove(name) else {
            return 0;
        };
        self.churn.queue_deleted += 1;
        self.detach_log(&q);
        for c in &q.consumers {
            if let Some(ch) = self.channels.get_mut(&c.channel) {
                ch.consumers.remove(&c.tag);
                if ch.cancel_notify {
                    let cancel = basic::Cancel {
                        consumer_tag: c.tag.clone(),
                        nowait: true,
                    };
                    let id = c.channel.channel;
                    ch.outbox.push(|out| {
                        frame::encode_method(
                            out,
                            id,
                            AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)),
                        );
                    });
                }
            }
        }
        self.remove_bindings_to(&Destination::Queue(q.name.clone()));
        q.ready_len()
    }

    pub(super) fn after_consumer_left(&mut self, name: &str) {
        if self
            .queues
            .get(name)
            .is_some_and(|q| q.auto_delete && q.consumers.is_empty())
        {
            self.remove_queue(name);
        }
    }
}

//! Read-only snapshots of the vhost for the management API and `/metrics`, the
//! message counters behind them, and the two administrative queue operations the
//! management API offers (delete, purge), which act on any queue, exclusive or not,
//! as RabbitMQ's management plugin does.
//!
//! Every snapshot is taken under the vhost lock the caller already holds and copies
//! only small fields, never message bodies.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use amq_protocol::types::FieldTable;

use super::VHost;
use crate::error::AmqpError;
use crate::exchange::Destination;
use crate::message_stats::{MessageStats, QueueStats};
use crate::queue::ChannelKey;

/// Channel and queue churn since the broker started (RabbitMQ's `churn_rates` names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Churn {
    /// Channels opened.
    pub channel_created: u64,
    /// Channels closed.
    pub channel_closed: u64,
    /// `queue.declare`s that were not passive, of new and existing queues.
    pub queue_declared: u64,
    /// Queues created.
    pub queue_created: u64,
    /// Queues deleted (by a client, the API, auto-delete or expiry).
    pub queue_deleted: u64,
}

impl Churn {
    /// Adds another vhost's counters to these.
    pub fn add(&mut self, other: &Churn) {
        self.channel_created += other.channel_created;
        self.channel_closed += other.channel_closed;
        self.queue_declared += other.queue_declared;
        self.queue_created += other.queue_created;
        self.queue_deleted += other.queue_deleted;
    }
}

/// A queue as the management API shows it.
#[derive(Debug, Clone)]
pub struct QueueSnapshot {
    /// Name.
    pub name: String,
    /// Durable flag.
    pub durable: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Exclusive to one connection.
    pub exclusive: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// `x-queue-type: quorum` (else classic).
    pub quorum: bool,
    /// Ready messages.
    pub messages_ready: u32,
    /// Delivered, not yet acknowledged.
    pub messages_unacknowledged: u32,
    /// Consumers.
    pub consumers: u32,
    /// The policies that apply.
    pub applied: crate::policy::Applied,
    /// Message counters and rates.
    pub stats: QueueStats,
}

/// An exchange as the management API shows it.
#[derive(Debug, Clone)]
pub struct ExchangeSnapshot {
    /// Name (`""` for the default exchange).
    pub name: String,
    /// Type name.
    pub kind: &'static str,
    /// Durable flag.
    pub durable: bool,
    /// Auto-delete flag.
    pub auto_delete: bool,
    /// Internal flag.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
    /// The policy that applies, by name.
    pub policy: Option<String>,
}

/// A binding, including the default exchange's implicit ones.
#[derive(Debug, Clone)]
pub struct BindingSnapshot {
    /// Source exchange.
    pub source: String,
    /// Destination queue or exchange.
    pub destination: String,
    /// Whether the destination is a queue (else an exchange).
    pub to_queue: bool,
    /// Binding key.
    pub routing_key: String,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// A channel's delivery state.
#[derive(Debug, Clone)]
pub struct ChannelSnapshot {
    /// Connection id and channel number.
    pub key: ChannelKey,
    /// Consumers on it.
    pub consumers: u32,
    /// Deliveries not yet acknowledged.
    pub unacked: u32,
    /// Per-consumer prefetch (`basic.qos` global = false).
    pub prefetch_count: u16,
    /// Channel-wide prefetch (`basic.qos` global = true).
    pub global_prefetch_count: u16,
    /// In confirm mode.
    pub confirm: bool,
    /// Confirm-mode publishes not confirmed yet.
    pub unconfirmed: u32,
}

/// A consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSnapshot {
    /// The queue it consumes from.
    pub queue: String,
    /// Its tag.
    pub tag: String,
    /// Its channel.
    pub channel: ChannelKey,
    /// Whether deliveries must be acknowledged.
    pub ack_required: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// Its prefetch limit (0 = none).
    pub prefetch_count: u16,
    /// Its `x-priority` (0 without).
    pub priority: i64,
    /// Gets deliveries: always, except a waiting one of a single-active-consumer queue.
    pub active: bool,
    /// How long a delivery may stay unacked (the queue's `x-consumer-timeout`, else
    /// the broker's default; `None`: no limit).
    pub timeout: Option<std::time::Duration>,
}

impl VHost {
    /// Samples every queue's message counters at `now` (the management API's sampler,
    /// every 5 s): their rates become the change since the last sample.
    pub(crate) fn sample_stats(&mut self, now: Instant) {
        for q in self.queues.values_mut() {
            q.stats.sample(now);
        }
    }
}

impl VHost {
    /// Every queue, by name, with its counts (expired heads are dropped first).
    pub fn queue_snapshots(&mut self) -> Vec<QueueSnapshot> {
        let now = Instant::now();
        let mut unacked: HashMap<&str, u32> = HashMap::new();
        for u in self.channels.values().flat_map(|c| c.unacked.values()) {
            *unacked.entry(u.queue.as_str()).or_default() += 1;
        }
        let unacked: HashMap<String, u32> = unacked
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let mut out: Vec<QueueSnapshot> = self
            .queues
            .values_mut()
            .map(|q| QueueSnapshot {
                name: q.name.as_str().to_owned(),
                durable: q.durable,
                auto_delete: q.auto_delete,
                exclusive: q.exclusive_owner.is_some(),
                arguments: q.arguments.clone(),
                quorum: q.quorum,
                messages_ready: q.ready(now),
                messages_unacknowledged: unacked.get(q.name.as_str()).copied().unwrap_or(0),
                consumers: q.consumer_count(),
                applied: q.applied.clone(),
                stats: q.stats.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every exchange, by name.
    pub fn exchange_snapshots(&self) -> Vec<ExchangeSnapshot> {
        let mut out: Vec<ExchangeSnapshot> = self
            .exchanges
            .values()
            .map(|x| ExchangeSnapshot {
                name: x.name.as_str().to_owned(),
                kind: x.kind.as_str(),
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
                policy: x.applied.policy.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every binding: first the default exchange's implicit binding of each queue (as
    /// RabbitMQ lists them), then the declared ones by source exchange.
    pub fn binding_snapshots(&self) -> Vec<BindingSnapshot> {
        let mut queues: Vec<&str> = self.queues.keys().map(|k| k.as_str()).collect();
        queues.sort_unstable();
        let mut out: Vec<BindingSnapshot> = queues
            .into_iter()
            .map(|q| BindingSnapshot {
                source: String::new(),
                destination: q.to_owned(),
                to_queue: true,
                routing_key: q.to_owned(),
                arguments: FieldTable::default(),
            })
            .collect();
        let mut declared: Vec<BindingSnapshot> = self
            .exchanges
            .values()
            .flat_map(|x| {
                x.bindings.iter().map(move |b| {
                    let (destination, to_queue) = match &b.destination {
                        Destination::Queue(q) => (q.as_str().to_owned(), true),
                        Destination::Exchange(e) => (e.as_str().to_owned(), false),
                    };
                    BindingSnapshot {
                        source: x.name.as_str().to_owned(),
                        destination,
                        to_queue,
                        routing_key: b.routing_key.as_str().to_owned(),
                        arguments: b.arguments.clone(),
                    }
                })
            })
            .collect();
        declared.sort_by(|a, b| {
            (&a.source, &a.destination, &a.routing_key).cmp(&(
                &b.source,
                &b.destination,
                &b.routing_key,
            ))
        });
        out.extend(declared);
        out
    }

    /// Every open channel, by key.
    pub fn channel_snapshots(&self) -> Vec<ChannelSnapshot> {
        let mut out: Vec<ChannelSnapshot> = self
            .channels
            .iter()
            .map(|(key, ch)| ChannelSnapshot {
                key: *key,
                consumers: u32::try_from(ch.consumers.len()).unwrap_or(u32::MAX),
                unacked: u32::try_from(ch.unacked.len()).unwrap_or(u32::MAX),
                prefetch_count: ch.prefetch_consumer,
                global_prefetch_count: ch.prefetch_global,
                confirm: ch.stats.confirm.load(Ordering::Relaxed),
                unconfirmed: ch.stats.unconfirmed.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by_key(|c| c.key);
        out
    }

    /// Every consumer, by queue then tag.
    pub fn consumer_snapshots(&self) -> Vec<ConsumerSnapshot> {
        let mut out: Vec<ConsumerSnapshot> = self
            .queues
            .values()
            .flat_map(|q| {
                let first = q.consumers.iter().map(|c| c.seq).min();
                let timeout = q.consumer_timeout.or(self.consumer_timeout.default);
                q.consumers.iter().map(move |c| ConsumerSnapshot {
                    queue: q.name.as_str().to_owned(),
                    tag: c.tag.as_str().to_owned(),
                    channel: c.channel,
                    ack_required: !c.no_ack,
                    exclusive: c.exclusive,
                    prefetch_count: c.prefetch,
                    priority: c.priority,
                    active: !q.single_active || Some(c.seq) == first,
                    timeout,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.queue, &a.tag).cmp(&(&b.queue, &b.tag)));
        out
    }

    /// The message counters.
    pub fn message_stats(&self) -> MessageStats {
        self.stats
    }

    /// The churn counters.
    pub fn churn(&self) -> Churn {
        self.churn
    }

    /// Purges a queue whoever owns it; `None` if there is no such queue.
    pub fn admin_purge_queue(&mut self, name: &str) -> Option<u32> {
        let n = self.queues.get_mut(name)?.purge();
        self.commit_store();
        Some(n)
    }

    /// Deletes a queue whoever owns it (its consumers are cancelled). A missing queue
    /// is a 404 error, a queue in use (`if_unused`) or not empty (`if_empty`) a 406.
    pub fn admin_delete_queue(
        &mut self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32, AmqpError> {
        let q = self
            .queues
            .get(name)
            .ok_or_else(|| AmqpError::not_found_queue(&self.name, name))?;
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
        let n = self.remove_queue(name);
        self.commit_store();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhost::{ExchangeOptions, QueueOptions};

    #[test]
    fn bindings_include_the_default_exchange_and_snapshots_count() {
        let mut v = VHost::new();
        v.declare_queue(1, "b", QueueOptions::default())
            .expect("declare");
        v.declare_queue(1, "a", QueueOptions::default())
            .expect("declare");
        v.declare_exchange(
            "x",
            ExchangeOptions {
                kind: "topic".into(),
                passive: false,
                durable: false,
                auto_delete: false,
                internal: false,
                arguments: FieldTable::default(),
            },
        )
        .expect("exchange");
        v.bind_queue(1, "a", "x", "k.#", FieldTable::default())
            .expect("bind");
        let b = v.binding_snapshots();
        let rows: Vec<(&str, &str, &str)> = b
            .iter()
            .map(|b| {
                (
                    b.source.as_str(),
                    b.destination.as_str(),
                    b.routing_key.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![("", "a", "a"), ("", "b", "b"), ("x", "a", "k.#")]
        );
        let q = v.queue_snapshots();
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].name, "a");
        assert!(v.exchange_snapshots().iter().any(|x| x.name == "x"));
        assert_eq!(v.admin_purge_queue("a"), Some(0));
        assert_eq!(v.admin_purge_queue("nope"), None);
        assert!(v.admin_delete_queue("a", false, false).is_ok());
        assert_eq!(
            v.admin_delete_queue("a", false, false)
                .expect_err("gone")
                .code,
            crate::error::code::NOT_FOUND
        );
    }
}

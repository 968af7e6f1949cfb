//! The vhost's side of the durable store: rebuilding state at start-up, noting which
//! topology changes must be written, and handing buffered writes to the sync thread
//! at the end of each read batch (one [`Batch`] per commit, tickets in order).

use std::sync::Arc;
use std::time::Instant;

use amq_protocol::types::ShortString;

use super::VHost;
use crate::error::AmqpError;
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind};
use crate::message::QueuedMessage;
use crate::queue::{DurableLog, PAGE_OUT_BYTES, PAGE_OUT_BYTES_LOW_MEMORY, Queue};
use crate::store::definitions::{BindingDef, Definitions, ExchangeDef, QueueDef};
use crate::store::log::Location;
use crate::store::writer::{Batch, Job};
use crate::store::{Recovered, RecoveredQueue, Store};

/// The vhost's bookkeeping for its store.
#[derive(Debug)]
pub struct StoreState {
    store: Arc<Store>,
    /// The ticket the next batch will carry.
    next_ticket: u64,
    /// The id the next durable queue's directory gets.
    next_dir_id: u64,
    /// A durable exchange, queue or binding changed since the last commit.
    definitions_changed: bool,
    /// Jobs queued outside any log (queue directories to remove).
    jobs: Vec<Job>,
    /// Names of the queues that have a log.
    durable: Vec<ShortString>,
}

impl VHost {
    /// The vhost `name` rebuilt from its data directory's contents, writing to `store`
    /// from now on.
    pub fn with_store(name: &str, store: Arc<Store>, recovered: Recovered) -> Self {
        let mut v = Self::named(name);
        let Recovered {
            definitions,
            queues,
        } = recovered;
        for x in definitions.exchanges {
            let Some(kind) = ExchangeKind::parse(&x.kind) else {
                tracing::warn!(exchange = %x.name, kind = %x.kind, "unknown exchange type in definitions; skipped");
                continue;
            };
            let mut e = Exchange::new(x.name.as_str(), kind, true);
            e.auto_delete = x.auto_delete;
            e.internal = x.internal;
            e.arguments = x.arguments;
            v.exchanges.insert(x.name, e);
        }
        let now = Instant::now();
        let mut durable = Vec::new();
        for RecoveredQueue {
            def,
            log,
            messages,
            paged,
        } in queues
        {
            let mut q = match Queue::new(
                &v.name,
                def.name.clone(),
                true,
                None,
                def.auto_delete,
                def.arguments,
            ) {
                Ok(q) => q,
                Err(err) => {
                    tracing::warn!(queue = %def.name, %err, "stored queue no longer valid; skipped");
                    continue;
                }
            };
            q.log = Some(DurableLog {
                dir_id: def.dir_id,
                log,
            });
            // The store loads a count of messages; keep only the bytes' worth. They are
            // in log order and none is out with a consumer yet, so whatever is past the
            // budget simply joins the paged-out run (even when a crash marked them all
            // redelivered, which `Queue::page_out_excess` would leave in memory).
            let mut excess: Option<(Location, u64)> = None;
            for m in messages {
                let qm = QueuedMessage::from_stored(m, now);
                let room = q.in_memory_only
                    || (q.messages.len() < crate::queue::PAGE_OUT_AT
                        && q.messages.bytes() < q.memory_budget);
                match (&mut excess, qm.loc) {
                    (None, _) if room => q.messages.push_back(qm),
                    (None, Some(loc)) => excess = Some((loc, 1)),
                    (Some((_, n)), _) => *n += 1,
                    (None, None) => q.messages.push_back(qm),
                }
            }
            q.paged = match (excess, paged) {
                (Some((first, n)), Some((_, more))) => Some((first, n + more)),
                (excess, paged) => excess.or(paged),
            };
            q.drop_expired(now);
            durable.push(def.name.clone());
            v.queues.insert(def.name, q);
        }
        for b in definitions.bindings {
            let destination = if b.to_exchange {
                Destination::Exchange(b.destination)
            } else {
                Destination::Queue(b.destination)
            };
            if let Some(x) = v.exchanges.get_mut(&b.source) {
                x.bindings.insert(Binding {
                    destination,
                    routing_key: b.routing_key,
                    arguments: b.arguments,
                });
            }
        }
        v.store = Some(StoreState {
            store,
            next_ticket: 1,
            next_dir_id: definitions.next_dir_id,
            definitions_changed: false,
            jobs: Vec::new(),
            durable,
        });
        v
    }

    /// Empties the vhost because it is being deleted: every queue with its messages
    /// and every exchange but the predeclared ones go, and the store is detached and
    /// returned (the caller stops its sync thread and removes its data). Channels stay
    /// until their connections close; from now on nothing is written to disk.
    pub(crate) fn clear_for_deletion(&mut self) -> Option<Arc<Store>> {
        self.queues.clear();
        self.exchanges = Self::named(&self.name).exchanges;
        self.store.take().map(|s| s.store)
    }

    /// The store, if this vhost keeps durable state.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref().map(|s| &s.store)
    }

    /// Whether a new queue with these flags gets a log.
    pub(super) fn wants_log(&self, durable: bool, exclusive: bool) -> bool {
        // As RabbitMQ: exclusive queues die with their connection, so never recover.
        self.store.is_some() && durable && !exclusive
    }

    /// Gives a new durable queue its log; fails (541, closing the connection) if the
    /// log cannot be made, rather than declaring a durable queue that would not
    /// survive a restart.
    pub(super) fn attach_log(&mut self, q: &mut Queue) -> Result<(), AmqpError> {
        let Some(s) = self.store.as_mut() else {
            return Ok(());
        };
        let dir_id = s.next_dir_id;
        match s.store.new_queue_log(dir_id) {
            Ok(log) => {
                s.next_dir_id += 1;
                q.log = Some(DurableLog { dir_id, log });
                s.durable.push(q.name.clone());
                s.definitions_changed = true;
                Ok(())
            }
            Err(err) => Err(not_stored(&self.name, q.name.as_str(), &err)),
        }
    }

    /// Writes the definitions with the just declared durable queue `name` and waits
    /// until they are on disk, so `declare-ok` is a promise that it survives a
    /// restart, as in RabbitMQ. If the write fails (a full disk), or writes are
    /// already failing, the queue is taken back and the declare fails with 541
    /// INTERNAL_ERROR (closing the connection) naming the cause.
    ///
    /// This blocks the vhost for one write and sync of the definitions: durable
    /// declares are rare, and the data path never comes here.
    pub(super) fn write_declared_queue(&mut self, name: &ShortString) -> Result<(), AmqpError> {
        let Some(s) = self.store.as_ref() else {
            return Ok(());
        };
        let outcome = if s.store.syncer().failing() {
            Err(std::io::Error::other(
                "store writes are failing (disk full?)",
            ))
        } else {
            self.commit_store();
            match self.store.as_ref() {
                Some(s) => s
                    .store
                    .syncer()
                    .wait_written(s.next_ticket - 1, DECLARE_WRITE_TIMEOUT),
                None => Ok(()),
            }
        };
        let Err(err) = outcome else {
            return Ok(());
        };
        if let Some(q) = self.queues.remove(name) {
            // The next batch writes the definitions without it and removes its files.
            self.detach_log(&q);
        }
        tracing::error!(vhost = %self.name, queue = %name, %err, "durable queue.declare refused: could not write it");
        Err(not_stored(&self.name, name.as_str(), &err))
    }

    /// Notes that a durable queue went: its directory is removed in order with the
    /// other writes.
    pub(super) fn detach_log(&mut self, q: &Queue) {
        let (Some(s), Some(d)) = (self.store.as_mut(), q.log.as_ref()) else {
            return;
        };
        s.durable.retain(|n| n != &q.name);
        s.jobs.push(Job::RemoveQueue {
            dir: s.store.queue_dir(d.dir_id),
        });
        s.definitions_changed = true;
    }

    /// Notes that a durable exchange or binding changed.
    pub(super) fn definitions_changed(&mut self) {
        if let Some(s) = self.store.as_mut() {
            s.definitions_changed = true;
        }
    }

    /// Whether an exchange is durable (bindings from it to durable queues are stored).
    pub(super) fn durable_exchange(&self, name: &str) -> bool {
        self.store.is_some() && self.exchanges.get(name).is_some_and(|x| x.durable)
    }

    /// Whether a binding destination is durable.
    pub(super) fn durable_destination(&self, dest: &Destination) -> bool {
        match dest {
            Destination::Queue(q) => self.queues.get(q).is_some_and(|q| q.log.is_some()),
            Destination::Exchange(x) => self.durable_exchange(x.as_str()),
        }
    }

    /// The ticket a publish must wait for, if it wrote to a log.
    pub(super) fn ticket_if(&self, stored: bool) -> Option<u64> {
        self.store
            .as_ref()
            .filter(|_| stored)
            .map(|s| s.next_ticket)
    }

    /// Hands everything buffered since the last commit to the sync thread.
    pub fn commit_store(&mut self) {
        let Some(s) = self.store.as_mut() else {
            return;
        };
        let mut jobs = std::mem::take(&mut s.jobs);
        if s.definitions_changed {
            s.definitions_changed = false;
            let defs = snapshot(&self.exchanges, &self.queues, s.next_dir_id);
            // Topology first: a queue's records never land before the queue exists.
            jobs.insert(
                0,
                Job::Definitions {
                    bytes: defs.encode(),
                },
            );
        }
        for name in &s.durable {
            if let Some(d) = self.queues.get_mut(name).and_then(|q| q.log.as_mut())
                && d.log.is_dirty()
            {
                jobs.push(Job::Queue {
                    dir: s.store.queue_dir(d.dir_id),
                    writes: d.log.take_pending(),
                });
            }
        }
        if jobs.is_empty() {
            return;
        }
        let ticket = s.next_ticket;
        s.next_ticket += 1;
        s.store.syncer().submit(Batch { ticket, jobs });
    }

    /// Bytes the durable queues' logs hold on disk (or are about to), for the disk
    /// alarm's `max_disk_bytes`. 0 without a store.
    pub fn store_bytes(&self) -> u64 {
        let Some(s) = self.store.as_ref() else {
            return 0;
        };
        s.durable
            .iter()
            .filter_map(|name| self.queues.get(name)?.log.as_ref())
            .map(|d| d.log.disk_bytes())
            .sum()
    }

    /// Follows the memory alarm (called on every sweep tick): while it is on, durable
    /// queues keep at most [`PAGE_OUT_BYTES_LOW_MEMORY`] of ready messages in memory
    /// and page the rest out, as RabbitMQ does under memory pressure; once it clears
    /// they keep up to [`PAGE_OUT_BYTES`] again.
    pub fn set_memory_pressure(&mut self, on: bool) {
        let budget = if on {
            PAGE_OUT_BYTES_LOW_MEMORY
        } else {
            PAGE_OUT_BYTES
        };
        for q in self.queues.values_mut() {
            q.memory_budget = budget;
            if on {
                q.page_out_excess();
            }
        }
    }
}

/// How long a durable `queue.declare` waits for its definitions to be written.
const DECLARE_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The error of a durable queue that could not be stored.
fn not_stored(vhost: &str, queue: &str, err: &std::io::Error) -> AmqpError {
    AmqpError::connection(
        crate::error::code::INTERNAL_ERROR,
        format_args!("cannot store durable queue '{queue}' in vhost '{vhost}': {err}"),
    )
}

/// The durable part of the topology.
fn snapshot(
    exchanges: &std::collections::HashMap<ShortString, Exchange>,
    queues: &std::collections::HashMap<ShortString, Queue>,
    next_dir_id: u64,
) -> Definitions {
    let durable_dest = |d: &Destination| match d {
        Destination::Queue(q) => queues.get(q).is_some_and(|q| q.log.is_some()),
        Destination::Exchange(x) => exchanges.get(x).is_some_and(|x| x.durable),
    };
    let mut defs = Definitions {
        next_dir_id,
        ..Default::default()
    };
    for x in exchanges.values().filter(|x| x.durable) {
        if !x.name.as_str().is_empty() && !x.name.as_str().starts_with("amq.") {
            defs.exchanges.push(ExchangeDef {
                name: x.name.clone(),
                kind: x.kind.as_str().to_owned(),
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
            });
        }
        for b in x.bindings.iter().filter(|b| durable_dest(&b.destination)) {
            let (to_exchange, destination) = match &b.destination {
                Destination::Queue(q) => (false, q.clone()),
                Destination::Exchange(e) => (true, e.clone()),
            };
            defs.bindings.push(BindingDef {
                source: x.name.clone(),
                to_exchange,
                destination,
                routing_key: b.routing_key.clone(),
                arguments: b.arguments.clone(),
            });
        }
    }
    for q in queues.values() {
        if let Some(d) = &q.log {
            defs.queues.push(QueueDef {
                name: q.name.clone(),
                dir_id: d.dir_id,
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
            });
        }
    }
    defs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::queue::{PAGE_OUT_AT, PAGE_OUT_BYTES, PAGE_OUT_BYTES_LOW_MEMORY};
    use crate::vhost::QueueOptions;
    use bytes::Bytes;
    use std::time::Duration;

    fn message(i: usize, persistent: bool) -> Message {
        Message {
            exchange: "".into(),
            routing_key: "long".into(),
            priority: 0,
            properties: Bytes::from_static(&[0, 0]),
            body: Bytes::from(i.to_string()),
            ttl: None,
            expires_at: None,
            persistent,
            sender_keys: None,
        }
    }

    fn open(dir: &std::path::Path) -> VHost {
        let (store, recovered) = Store::open(dir).expect("open store");
        VHost::with_store("/", Arc::new(store), recovered)
    }

    /// Commits and waits until the sync thread has written everything.
    fn settle(v: &mut VHost) {
        v.commit_store();
        let s = v.store.as_ref().expect("store");
        let want = s.next_ticket - 1;
        for _ in 0..500 {
            if s.store.syncer().synced() >= want {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("store did not sync");
    }

    /// Takes every ready message in order, paging in as a consumer would.
    fn drain(v: &mut VHost) -> Vec<String> {
        let q = v.queues.get_mut("long").expect("queue");
        let mut out = Vec::new();
        loop {
            q.page_in(Instant::now());
            let Some(qm) = q.messages.pop_front() else {
                return out;
            };
            assert!(q.messages.len() <= PAGE_OUT_AT, "memory stays bounded");
            assert!(
                q.messages.bytes() <= q.memory_budget + 64 * 1024,
                "bytes too"
            );
            q.forget(&qm);
            out.push(String::from_utf8_lossy(&qm.message.body).into_owned());
        }
    }

    #[test]
    fn a_long_queue_keeps_a_bounded_head_in_memory_and_pages_the_rest_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let total = PAGE_OUT_AT * 3;
        let mut v = open(dir.path());
        let opts = QueueOptions {
            durable: true,
            ..Default::default()
        };
        v.declare_queue(1, "long", opts).expect("declare");
        // Every 10th message is transient: it pages out too, in order, but is not
        // recovered after a restart.
        for i in 0..total {
            v.publish(&|| None, message(i, i % 10 != 0));
        }
        settle(&mut v);
        let q = v.queues.get_mut("long").expect("queue");
        assert_eq!(q.messages.len(), PAGE_OUT_AT);
        assert_eq!(q.ready(Instant::now()) as usize, total);

        // Take half now, then restart: the rest comes back, persistent ones only.
        let mut got = Vec::new();
        {
            let q = v.queues.get_mut("long").expect("queue");
            for _ in 0..total / 2 {
                q.page_in(Instant::now());
                let qm = q.messages.pop_front().expect("message");
                q.forget(&qm);
                got.push(String::from_utf8_lossy(&qm.message.body).into_owned());
            }
        }
        let expected: Vec<String> = (0..total / 2).map(|i| i.to_string()).collect();
        assert_eq!(got, expected);
        settle(&mut v);
        drop(v);

        let mut v = open(dir.path());
        let q = v.queues.get_mut("long").expect("queue");
        assert!(q.messages.len() <= PAGE_OUT_AT);
        let rest: Vec<String> = (total / 2..total)
            .filter(|i| i % 10 != 0)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(q.ready(Instant::now()) as usize, rest.len());
        assert_eq!(drain(&mut v), rest);
    }

    #[test]
    fn purging_a_paged_queue_forgets_what_is_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut v = open(dir.path());
        let opts = QueueOptions {
            durable: true,
            ..Default::default()
        };
        v.declare_queue(1, "long", opts).expect("declare");
        for i in 0..PAGE_OUT_AT + 100 {
            v.publish(&|| None, message(i, true));
        }
        assert_eq!(
            v.purge_queue(1, "long").expect("purge") as usize,
            PAGE_OUT_AT + 100
        );
        v.publish(&|| None, message(7, true));
        settle(&mut v);
        drop(v);
        let mut v = open(dir.path());
        assert_eq!(drain(&mut v), vec!["7".to_owned()]);
    }

    fn large(i: usize) -> Message {
        let mut body = i.to_string().into_bytes();
        body.resize(16 * 1024, b' ');
        let mut m = message(i, true);
        m.body = Bytes::from(body);
        m
    }

    /// 16 KiB messages: a few MiB of them stay in memory, not 8,192; under the memory
    /// alarm fewer still; after a restart, the same bound; and all come out in order.
    #[test]
    fn large_messages_page_out_by_bytes_and_more_under_memory_pressure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let total = 2000; // 31 MiB
        let mut v = open(dir.path());
        let opts = QueueOptions {
            durable: true,
            ..Default::default()
        };
        v.declare_queue(1, "long", opts).expect("declare");
        for i in 0..total {
            v.publish(&|| None, large(i));
        }
        settle(&mut v);
        let q = v.queues.get_mut("long").expect("queue");
        // Paging starts once the budget is reached: one message may go past it.
        let one = 17 * 1024;
        assert!(q.messages.bytes() <= PAGE_OUT_BYTES + one);
        assert!(q.messages.len() > 100, "a few MiB stay in memory");
        assert_eq!(q.ready(Instant::now()) as usize, total);

        v.set_memory_pressure(true);
        let q = v.queues.get_mut("long").expect("queue");
        assert!(q.messages.bytes() <= PAGE_OUT_BYTES_LOW_MEMORY);
        assert_eq!(q.ready(Instant::now()) as usize, total);
        let mut got = Vec::new();
        for _ in 0..500 {
            q.page_in(Instant::now());
            let qm = q.messages.pop_front().expect("message");
            assert!(q.messages.bytes() <= PAGE_OUT_BYTES_LOW_MEMORY + one);
            q.forget(&qm);
            got.push(
                String::from_utf8_lossy(&qm.message.body)
                    .trim_end()
                    .to_owned(),
            );
        }
        v.set_memory_pressure(false);
        settle(&mut v);
        drop(v);

        let mut v = open(dir.path());
        let q = v.queues.get_mut("long").expect("queue");
        assert!(
            q.messages.bytes() <= PAGE_OUT_BYTES + one,
            "recovered within the bytes"
        );
        let rest: Vec<String> = drain(&mut v)
            .into_iter()
            .map(|b| b.trim_end().to_owned())
            .collect();
        got.extend(rest);
        let expected: Vec<String> = (0..total).map(|i| i.to_string()).collect();
        assert_eq!(got, expected);
    }
}

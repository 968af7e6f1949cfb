//! Dead-lettering, the vhost side: messages a queue set aside (see
//! [`Queue::discard`](crate::queue::Queue::discard)) are rewritten
//! ([`crate::dead_letter`]) and republished to the queue's dead-letter exchange.
//!
//! A republish can make another queue dead-letter in turn (its TTL is 0, it is full).
//! Rather than recursing, the vhost keeps one work list: whoever finds a queue with
//! set-aside messages adds them, and only the outermost call works the list down. A
//! chain ends because every hop records a death and the cycle check drops a message
//! that comes back automatically. As in RabbitMQ for classic queues, the republish is
//! at most once: it joins the store's same batch as the source's removal, and a
//! target that refuses it (`reject-publish`) or a missing exchange drops it.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use amq_protocol::types::ShortString;

use super::VHost;
use crate::dead_letter::{self, DeadLetterTo, Reason};
use crate::message::Message;

/// A message waiting to be republished: the queue it died in, where that queue
/// dead-letters to, why.
#[derive(Debug)]
pub(crate) struct DeadWork {
    queue: ShortString,
    to: DeadLetterTo,
    message: Arc<Message>,
    reason: Reason,
}

impl VHost {
    /// Republishes what queue `name` has set aside, and whatever that causes.
    pub(super) fn dead_letter_from(&mut self, name: &str) {
        let Some(q) = self.queues.get_mut(name) else {
            return;
        };
        if q.dead.is_empty() {
            return;
        }
        let Some(to) = q.dead_letter.clone() else {
            q.dead.clear();
            return;
        };
        for (message, reason) in q.dead.drain(..) {
            self.dead_work.push_back(DeadWork {
                queue: q.name.clone(),
                to: to.clone(),
                message,
                reason,
            });
        }
        if self.dead_busy {
            return;
        }
        self.dead_busy = true;
        while let Some(work) = self.dead_work.pop_front() {
            self.republish_dead(work);
        }
        self.dead_busy = false;
    }

    /// Sets a message aside to be dead-lettered from `queue` (a rejection, a refused
    /// publish): nothing happens if the queue has no dead-letter exchange.
    pub(super) fn set_aside(&mut self, queue: &str, message: Arc<Message>, reason: Reason) {
        if let Some(q) = self.queues.get_mut(queue)
            && q.dead_letter.is_some()
        {
            q.dead.push((message, reason));
        }
    }

    fn republish_dead(&mut self, work: DeadWork) {
        let exchange = work.to.exchange.as_str();
        if !self.exchanges.contains_key(exchange) {
            // RabbitMQ drops it too (and logs nothing either).
            return;
        }
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some(rewritten) = dead_letter::rewrite(
            &work.message,
            work.queue.as_str(),
            work.reason,
            &work.to,
            now_secs,
        ) else {
            tracing::warn!(queue = %work.queue, "dead-lettered message dropped: properties do not parse");
            return;
        };
        let message = &rewritten.message;
        let headers = || {
            crate::properties::Properties::scan(message.properties.clone())
                .ok()
                .and_then(|p| p.headers())
        };
        let queues = self.route_message(message, &headers);
        let queues: Vec<ShortString> = queues
            .into_iter()
            .filter(|q| !rewritten.cycles_to(q.as_str()))
            .collect();
        if queues.is_empty() {
            return;
        }
        let message = Arc::new(rewritten.message);
        let now = Instant::now();
        for q in &queues {
            self.enqueue(q.as_str(), &message, now);
        }
    }
}

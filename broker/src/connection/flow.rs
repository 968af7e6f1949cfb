//! Flow control: a connection that publishes while an alarm is on is blocked (and
//! told so), one whose outbox is full pauses, and publisher confirms are flushed once
//! per read batch.

use amq_protocol::protocol::{AMQPClass, connection};

use super::{Connection, Phase};

impl Connection {
    /// Whether frames wait unapplied: the alarm blocked the connection, or its outbox
    /// is full (the client does not read what it asked for).
    pub(super) fn paused(&self) -> bool {
        (self.blocked && self.phase == Phase::Running) || !self.session.outbox.has_room()
    }

    /// A publish came while the alarm is on: stop reading after this batch.
    pub(super) fn block(&mut self) {
        let Some(resource) = self.alarm_on else {
            return;
        };
        if self.blocked {
            return;
        }
        self.blocked = true;
        tracing::debug!(conn = self.session.id, peer = %self.session.peer, reason = resource.reason(), "blocked by an alarm");
        if self.blocked_notify {
            self.session.send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: resource.reason().into(),
                })),
            );
        }
    }

    /// The alarm cleared: read again.
    pub(super) fn unblock(&mut self) {
        self.blocked = false;
        tracing::debug!(conn = self.session.id, peer = %self.session.peer, "unblocked");
        if self.blocked_notify && !matches!(self.phase, Phase::Closing | Phase::Done) {
            self.session.send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
            );
        }
    }

    /// Sends the publisher confirms this batch made ready, or asks to be woken when the
    /// store has synced what they wait on.
    pub(super) fn flush_confirms(&mut self) {
        // A batch that stored a persistent message hands the store's writes to the sync
        // thread at once, so its confirms go out as soon as they can. Everything else
        // (acks, delivery markers, topology) rides along, or goes with the 25 ms
        // housekeeping tick: no vhost lock per batch for transient traffic.
        let mut stored = false;
        for ch in self.channels.values_mut() {
            stored |= ch.take_stored();
        }
        let Some(ctx) = self.session.ctx() else {
            return;
        };
        if stored {
            ctx.vhost.lock().commit_store();
        }
        let mut awaited: Option<u64> = None;
        for ch in self.channels.values_mut() {
            if !ch.closing
                && let Some(t) = ch.flush_confirms(&ctx)
            {
                awaited = Some(awaited.map_or(t, |a| a.min(t)));
            }
        }
        // Confirms wait on the store: ask to be woken when the oldest ticket is synced.
        if let (Some(t), Some(store)) = (awaited, ctx.store)
            && self.awaiting != Some(t)
        {
            self.awaiting = Some(t);
            store.syncer().wake_when_synced(t, &self.synced);
        }
    }
}

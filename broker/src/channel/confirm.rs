//! Publisher confirms: `confirm.select`, and the acks owed, coalesced with `multiple`
//! once per read batch; a persistent message's confirm waits until the store has
//! synced it (as do the `commit-ok`s of transactions that stored one).

use std::sync::atomic::Ordering;

use amq_protocol::protocol::{AMQPClass, confirm, tx};

use super::{Channel, Ctx, unexpected};
use crate::error::AmqpError;
use crate::frame;

impl Channel {
    /// Applies `confirm.select`.
    pub(super) fn confirm_method(
        &mut self,
        ctx: &Ctx<'_>,
        method: confirm::AMQPMethod,
    ) -> Result<(), AmqpError> {
        use AMQPClass as C;
        use confirm::AMQPMethod as M;
        match method {
            M::Select(s) => {
                if self.tx.is_some() {
                    return Err(AmqpError::precondition(
                        "cannot switch from tx to confirm mode",
                    ));
                }
                self.confirm = true;
                self.stats.confirm.store(true, Ordering::Relaxed);
                if !s.nowait {
                    self.reply(
                        ctx,
                        C::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            other => return Err(unexpected(&AMQPClass::Confirm(other))),
        }
        Ok(())
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
        let id = self.id;
        // A refused publish is nacked in its place: the acks before it are sent first,
        // so no sequence number is confirmed twice.
        while let Some(&n) = self.nacked.front().filter(|&&n| n <= upto) {
            if n - 1 > self.confirmed {
                let (to, multiple) = (n - 1, n - 1 - self.confirmed > 1);
                ctx.outbox
                    .push(|out| frame::encode_ack(out, id, to, multiple));
            }
            ctx.outbox.push(|out| frame::encode_nack(out, id, n));
            self.confirmed = n;
            self.nacked.pop_front();
        }
        if upto > self.confirmed {
            let multiple = upto - self.confirmed > 1;
            ctx.outbox
                .push(|out| frame::encode_ack(out, id, upto, multiple));
            self.confirmed = upto;
        }
        let owed = u32::try_from(self.publish_seq - self.confirmed).unwrap_or(u32::MAX);
        self.stats.unconfirmed.store(owed, Ordering::Relaxed);
        self.unsynced.front().map(|&(_, t)| t)
    }
}

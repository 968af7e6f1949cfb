//! Paging: a durable queue keeps at most [`PAGE_OUT_AT`] messages and its memory
//! budget of ready messages in memory; the rest stay on disk only and are read back in
//! order as the queue drains.

use std::time::Instant;

use super::{PAGE_IN_BATCH, PAGE_IN_BELOW, PAGE_OUT_AT, Queue};
use crate::message::QueuedMessage;
use crate::store::log::Location;

impl Queue {
    /// Whether a new message must stay on disk only: the queue holds many messages or
    /// many bytes in memory (or is already paging, so order is kept).
    pub fn pages_out(&self) -> bool {
        self.log.is_some()
            && !self.in_memory_only
            && (self.paged.is_some()
                || self.messages.len() >= PAGE_OUT_AT
                || self.messages.bytes() >= self.memory_budget)
    }

    /// Moves the newest ready messages from memory back to disk only until the queue
    /// is within `PAGE_OUT_AT` and its memory budget; returns how many went. Only
    /// messages in log order just before the paged-out ones can go (not transient
    /// ones, which are not on disk, nor redelivered ones, which are out of order).
    pub fn page_out_excess(&mut self) -> usize {
        if self.log.is_none() || self.in_memory_only {
            return 0;
        }
        let mut n = 0;
        while self.messages.len() > PAGE_OUT_AT || self.messages.bytes() > self.memory_budget {
            let Some(loc) = self
                .messages
                .back()
                .filter(|qm| !qm.redelivered)
                .and_then(|qm| qm.loc)
            else {
                break;
            };
            if self.paged.is_some_and(|(first, _)| loc >= first) {
                break;
            }
            self.messages.pop_back();
            let count = self.paged.map_or(0, |(_, count)| count);
            self.paged = Some((loc, count + 1));
            n += 1;
        }
        n
    }

    /// Notes a message appended to the log but not kept in memory.
    pub fn paged_out(&mut self, loc: Location) {
        self.paged.get_or_insert((loc, 0)).1 += 1;
    }

    /// Reads paged-out messages back into memory, in order, when memory runs low.
    /// Messages the sync thread has not written yet are read on a later call (every
    /// dispatch and the housekeeping tick try again).
    pub fn page_in(&mut self, now: Instant) {
        if self.paged.is_none()
            || self.messages.len() >= PAGE_IN_BELOW
            || self.messages.bytes() >= self.memory_budget / 2
        {
            return;
        }
        // One message first, to learn their size; then batches that fill the budget.
        let mut want = 1;
        while let (Some((from, count)), Some(d)) = (self.paged, self.log.as_ref()) {
            let room = PAGE_OUT_AT.saturating_sub(self.messages.len());
            let want_now = want
                .min(room)
                .min(usize::try_from(count).unwrap_or(usize::MAX));
            if want_now == 0 || self.messages.bytes() >= self.memory_budget {
                return;
            }
            let read = match d.log.read_from(from, want_now) {
                Ok(read) => read,
                Err(err) => {
                    tracing::error!(queue = %self.name, %err, "could not read paged-out messages");
                    return;
                }
            };
            let Some(last) = read.last().map(|m| m.location) else {
                return;
            };
            let got = read.len();
            let left = count.saturating_sub(got as u64);
            self.paged = (left > 0).then_some((
                Location {
                    segment: last.segment,
                    offset: last.offset + 1,
                },
                left,
            ));
            let before = self.messages.bytes();
            for m in read {
                self.messages.push_back(QueuedMessage::from_stored(m, now));
            }
            if got < want_now {
                // The rest is not written yet: a later call reads it.
                return;
            }
            let each = ((self.messages.bytes() - before) / got).max(1);
            let left_in_budget = self.memory_budget.saturating_sub(self.messages.bytes());
            want = (left_in_budget / each).clamp(1, PAGE_IN_BATCH);
        }
    }
}

//! A connection's outbound buffer: the last stage of the data path.
//!
//! Whoever produces frames for a connection (its own task answering methods, or a
//! publisher's task delivering into one of its queues) appends encoded bytes here under
//! a short lock. The connection's writer task takes the whole buffer at each wake-up
//! and writes it with one syscall, so a burst of deliveries costs one write.
//!
//! The outbox is also where a slow reader is noticed. It counts the bytes pushed and
//! not yet written to the socket; at [`LIMIT`] it is full. A full outbox gets no more
//! deliveries (the vhost's dispatch skips its consumers and the messages stay queued,
//! on disk if they were), and its own connection stops applying the client's frames,
//! whose answers would land here too. When the writer brings it back under the limit
//! it wakes the connection, which asks its vhost to deliver again. So a client that
//! stops reading costs the broker at most [`LIMIT`] plus one message, as RabbitMQ's
//! credit flow bounds it, and nobody else waits for it.
//!
//! A writer that fails (the peer is gone) marks the outbox failed and wakes the
//! connection, which then ends: nothing more is buffered for a dead socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Unwritten bytes at which an outbox is full. Large enough that a fast consumer
/// never sees it (the writer empties the buffer at every wake-up), small enough that
/// a thousand stalled consumers cost a bounded amount.
pub const LIMIT: usize = 1 << 20;

/// Unwritten bytes past which even direct reply-to replies, which cannot wait in a
/// queue, are dropped as undeliverable (RabbitMQ drops them when the channel is gone).
pub const REPLY_LIMIT: usize = 8 * LIMIT;

/// Frames waiting to be written to one connection's socket.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Mutex<Vec<u8>>,
    /// Wakes the writer: there is something to write, or the outbox closed.
    notify: Notify,
    /// Set once the connection is finished: the writer flushes what is left and stops.
    closed: AtomicBool,
    /// Bytes pushed and not yet written (in `buf` or in the writer's hands): what the
    /// peer has still to take. Compared with [`LIMIT`].
    pending: AtomicUsize,
    /// The writer could not write: the socket is gone, and pushes are dropped.
    failed: AtomicBool,
    /// Wakes the connection's task: the outbox came back under [`LIMIT`] after being
    /// full, the writer failed, or a channel must be closed.
    events: Notify,
    /// Channels the broker closes on its own (a consumer timeout), with the error,
    /// for the connection's task to close: it owns the channels' state.
    channel_errors: Mutex<Vec<(u16, crate::error::AmqpError)>>,
}

impl Outbox {
    /// Appends frames with `f` and wakes the writer if it was idle.
    pub fn push(&self, f: impl FnOnce(&mut Vec<u8>)) {
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        let mut buf = self.buf.lock();
        let before = buf.len();
        f(&mut buf);
        let added = buf.len().saturating_sub(before);
        drop(buf);
        if added > 0 {
            self.pending.fetch_add(added, Ordering::AcqRel);
            if before == 0 {
                self.notify.notify_one();
            }
        }
    }

    /// Whether deliveries may go in: the peer has taken all but less than [`LIMIT`]
    /// bytes, and the socket has not failed.
    pub fn has_room(&self) -> bool {
        self.pending.load(Ordering::Acquire) < LIMIT && !self.failed.load(Ordering::Acquire)
    }

    /// Bytes pushed and not yet written.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Swaps the pending bytes into `spare` (which must be empty).
    pub fn take_into(&self, spare: &mut Vec<u8>) {
        std::mem::swap(&mut *self.buf.lock(), spare);
    }

    /// The writer wrote `n` bytes: if that brought a full outbox back under the limit,
    /// the connection is woken to resume deliveries.
    pub fn written(&self, n: usize) {
        let before = self.pending.fetch_sub(n, Ordering::AcqRel);
        if before >= LIMIT && before - n < LIMIT {
            self.events.notify_one();
        }
    }

    /// The writer could not write: drop what is buffered and wake the connection.
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
        self.buf.lock().clear();
        self.events.notify_one();
    }

    /// Asks the connection to close channel `id` with `error`, as if the client had
    /// caused it.
    pub fn fail_channel(&self, id: u16, error: crate::error::AmqpError) {
        self.channel_errors.lock().push((id, error));
        self.events.notify_one();
    }

    /// The channels to close, from [`Outbox::fail_channel`].
    pub fn take_channel_errors(&self) -> Vec<(u16, crate::error::AmqpError)> {
        std::mem::take(&mut *self.channel_errors.lock())
    }

    /// Whether the writer failed.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Waits until there is something to write or the outbox is closed.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Waits until the outbox drained under [`LIMIT`] after being full, or failed.
    pub async fn event(&self) {
        self.events.notified().await;
    }

    /// Tells the writer to flush and stop.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether [`Outbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The connection's writer task: flushes the outbox with one write per wake-up until
/// it is closed (then shuts the socket down) or a write fails (then marks it failed,
/// which ends the connection).
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, outbox: Arc<Outbox>) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        outbox.take_into(&mut spare);
        if spare.is_empty() {
            if outbox.is_closed() {
                break;
            }
            outbox.wait().await;
            continue;
        }
        if let Err(err) = wr.write_all(&spare).await {
            // The peer is gone: the connection ends rather than buffer for it.
            tracing::debug!(%err, "write failed");
            outbox.fail();
            return;
        }
        outbox.written(spare.len());
        spare.clear();
        if spare.capacity() > 4 * 1024 * 1024 {
            spare = Vec::with_capacity(64 * 1024);
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_at_the_limit_and_woken_once_back_under_it() {
        let out = Outbox::default();
        out.push(|b| b.resize(LIMIT - 1, 0));
        assert!(out.has_room());
        out.push(|b| b.push(1));
        assert!(!out.has_room(), "full at the limit");
        let mut spare = Vec::new();
        out.take_into(&mut spare);
        assert_eq!(spare.len(), LIMIT);
        assert!(!out.has_room(), "taken is not written");
        out.written(spare.len());
        assert!(out.has_room());
        // The wake-up is stored for the connection.
        let woken = futures_now(out.event());
        assert!(woken, "the connection is told");
    }

    #[test]
    fn a_failed_outbox_drops_pushes_and_has_no_room() {
        let out = Outbox::default();
        out.push(|b| b.extend_from_slice(b"abc"));
        out.fail();
        out.push(|b| b.extend_from_slice(b"def"));
        let mut spare = Vec::new();
        out.take_into(&mut spare);
        assert!(spare.is_empty());
        assert!(!out.has_room() && out.is_failed());
        assert!(futures_now(out.event()));
    }

    /// Polls `f` once: whether it was ready.
    fn futures_now(f: impl std::future::Future<Output = ()>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut cx).is_ready()
    }

    proptest! {
        /// Any interleaving of pushes, takes and writes: `pending` is exactly what
        /// was pushed and not written, and room follows the limit.
        #[test]
        fn pending_counts_what_the_peer_has_not_taken(ops in proptest::collection::vec((0u8..3, 0usize..(LIMIT / 2)), 1..40)) {
            let out = Outbox::default();
            let mut in_buf = 0usize;
            let mut in_hand = 0usize;
            for (op, n) in ops {
                match op {
                    0 => { out.push(|b| b.resize(b.len() + n, 0)); in_buf += n; }
                    1 if in_hand == 0 => {
                        let mut spare = Vec::new();
                        out.take_into(&mut spare);
                        prop_assert_eq!(spare.len(), in_buf);
                        in_hand = in_buf;
                        in_buf = 0;
                    }
                    _ => { out.written(in_hand); in_hand = 0; }
                }
                prop_assert_eq!(out.pending(), in_buf + in_hand);
                prop_assert_eq!(out.has_room(), in_buf + in_hand < LIMIT);
            }
        }
    }
}

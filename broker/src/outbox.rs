//! A connection's outbound buffer: the last stage of the data path.
//!
//! Whoever produces frames for a connection (its own task answering methods, or a
//! publisher's task delivering into one of its queues) appends encoded bytes here under
//! a short lock. The connection's writer task takes the whole buffer at each wake-up
//! and writes it with one syscall, so a burst of deliveries costs one write.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Frames waiting to be written to one connection's socket.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Mutex<Vec<u8>>,
    notify: Notify,
    /// Set once the connection is finished: the writer flushes what is left and stops.
    closed: AtomicBool,
}

impl Outbox {
    /// Appends frames with `f` and wakes the writer if it was idle.
    pub fn push(&self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = self.buf.lock();
        let was_empty = buf.is_empty();
        f(&mut buf);
        let now_empty = buf.is_empty();
        drop(buf);
        if was_empty && !now_empty {
            self.notify.notify_one();
        }
    }

    /// Swaps the pending bytes into `spare` (which must be empty).
    pub fn take_into(&self, spare: &mut Vec<u8>) {
        std::mem::swap(&mut *self.buf.lock(), spare);
    }

    /// Waits until there is something to write or the outbox is closed.
    pub async fn wait(&self) {
        self.notify.notified().await;
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

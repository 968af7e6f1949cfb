//! Counts of authentication attempts by protocol, as RabbitMQ keeps them for
//! `/api/auth/attempts/{node}`: every AMQP login (`connection.start-ok`) and every
//! management API request, succeeded or failed. Not by source: RabbitMQ tracks
//! sources only when configured to, and by default lists none.

use std::sync::atomic::{AtomicU64, Ordering};

/// Succeeded and failed attempts of one protocol.
#[derive(Debug, Default)]
struct Counts {
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn count(&self, ok: bool) {
        let c = if ok { &self.succeeded } else { &self.failed };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The counters (shared by every connection and the API).
#[derive(Debug, Default)]
pub(crate) struct AuthAttempts {
    amqp: Counts,
    http: Counts,
}

impl AuthAttempts {
    /// One AMQP login.
    pub(crate) fn amqp(&self, ok: bool) {
        self.amqp.count(ok);
    }

    /// One management API request's credentials.
    pub(crate) fn http(&self, ok: bool) {
        self.http.count(ok);
    }

    /// (RabbitMQ's protocol name, succeeded, failed) for each protocol.
    pub(crate) fn counts(&self) -> [(&'static str, u64, u64); 2] {
        let read = |c: &Counts| {
            (
                c.succeeded.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
            )
        };
        let (h, a) = (read(&self.http), read(&self.amqp));
        [("http", h.0, h.1), ("amqp091", a.0, a.1)]
    }

    /// Starts over (`DELETE /api/auth/attempts/{node}`).
    pub(crate) fn reset(&self) {
        for c in [&self.amqp, &self.http] {
            c.succeeded.store(0, Ordering::Relaxed);
            c.failed.store(0, Ordering::Relaxed);
        }
    }
}

//! Reads the broker-wide counters that rates are computed from, and samples every
//! queue's own, every [`rates::INTERVAL`], for as long as the management API runs.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::rates::{self, Counters};
use crate::shared::Shared;
use crate::vhost::{Churn, MessageStats};

/// The counters of `shared` now, by RabbitMQ's names.
pub(crate) fn read(shared: &Shared) -> Counters {
    read_and_sample(shared, None)
}

/// [`read`], and with `sample_at` every queue's own counters sampled in the same pass
/// over the vhosts (one lock of each).
fn read_and_sample(shared: &Shared, sample_at: Option<Instant>) -> Counters {
    let mut m = MessageStats::default();
    let mut c = Churn::default();
    shared.vhosts.for_each(|e| {
        let mut v = e.lock();
        m.add(&v.message_stats());
        c.add(&v.churn());
        if let Some(now) = sample_at {
            v.sample_stats(now);
        }
    });
    let (opened, closed) = shared.registry.totals();
    Counters::new(vec![
        ("publish", m.publish),
        ("deliver", m.deliver),
        ("deliver_no_ack", m.deliver_no_ack),
        ("get", m.get),
        ("get_no_ack", m.get_no_ack),
        ("deliver_get", m.deliver_get()),
        ("ack", m.ack),
        ("redeliver", m.redeliver),
        ("connection_created", opened),
        ("connection_closed", closed),
        ("channel_created", c.channel_created),
        ("channel_closed", c.channel_closed),
        ("queue_declared", c.queue_declared),
        ("queue_created", c.queue_created),
        ("queue_deleted", c.queue_deleted),
    ])
}

/// Samples the counters every [`rates::INTERVAL`] until `shutdown` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(rates::INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let counters = read_and_sample(&shared, Some(now));
                shared.rates.record(now, counters);
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

//! Message counters as RabbitMQ's management plugin names them (`message_stats`):
//! a vhost's totals ([`MessageStats`]) and one queue's own with their rates over the
//! last sampling interval ([`QueueStats`]). Counted on the data path under the vhost
//! lock (an increment each), read by the management API and `/metrics`.

use std::time::Instant;

/// Message counters since the broker started (RabbitMQ's `message_stats` names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageStats {
    /// Messages published (routed or not).
    pub publish: u64,
    /// Deliveries to consumers that must ack.
    pub deliver: u64,
    /// Deliveries to `no_ack` consumers.
    pub deliver_no_ack: u64,
    /// `basic.get` answered with a message, ack required.
    pub get: u64,
    /// `basic.get` answered with a message, `no_ack`.
    pub get_no_ack: u64,
    /// Deliveries acknowledged.
    pub ack: u64,
    /// Deliveries (and gets) of messages marked redelivered.
    pub redeliver: u64,
}

impl MessageStats {
    /// Adds another vhost's counters to these (for broker-wide totals).
    pub fn add(&mut self, other: &MessageStats) {
        self.publish += other.publish;
        self.deliver += other.deliver;
        self.deliver_no_ack += other.deliver_no_ack;
        self.get += other.get;
        self.get_no_ack += other.get_no_ack;
        self.ack += other.ack;
        self.redeliver += other.redeliver;
    }

    /// Every delivery and get, as RabbitMQ's `deliver_get`.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }

    /// Counts one delivery (`get`: answered a `basic.get`).
    pub(crate) fn count_delivery(&mut self, no_ack: bool, redelivered: bool, get: bool) {
        match (get, no_ack) {
            (false, false) => self.deliver += 1,
            (false, true) => self.deliver_no_ack += 1,
            (true, false) => self.get += 1,
            (true, true) => self.get_no_ack += 1,
        }
        self.redeliver += u64::from(redelivered);
    }
}

impl MessageStats {
    /// RabbitMQ's names of the counters, in the order of [`MessageStats::values`].
    pub const NAMES: [&'static str; 8] = [
        "publish",
        "deliver",
        "deliver_no_ack",
        "get",
        "get_no_ack",
        "deliver_get",
        "ack",
        "redeliver",
    ];

    /// The counters in the order of [`MessageStats::NAMES`].
    pub fn values(&self) -> [u64; 8] {
        [
            self.publish,
            self.deliver,
            self.deliver_no_ack,
            self.get,
            self.get_no_ack,
            self.deliver_get(),
            self.ack,
            self.redeliver,
        ]
    }
}

/// One queue's message counters and their rates over the last sampling interval
/// (RabbitMQ's per-queue `message_stats`): counted on the data path under the vhost
/// lock (an increment each), sampled by the management API's sampler.
#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    /// Counters since the queue was created.
    pub counts: MessageStats,
    /// The counters at the last sample, and when it was taken.
    last: Option<(Instant, [u64; 8])>,
    /// Per second over the last interval, in the order of [`MessageStats::NAMES`].
    pub rates: [f64; 8],
}

impl QueueStats {
    /// Takes a sample at `now`: the rates become the change since the last one.
    pub fn sample(&mut self, now: Instant) {
        let values = self.counts.values();
        if let Some((at, before)) = self.last {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            if secs > 0.0 {
                for (rate, (v, b)) in self.rates.iter_mut().zip(values.iter().zip(before)) {
                    *rate = v.saturating_sub(b) as f64 / secs;
                }
            }
        }
        self.last = Some((now, values));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_rate_is_the_change_since_the_last_sample() {
        let mut stats = QueueStats::default();
        let t = Instant::now();
        stats.counts.publish = 10;
        stats.sample(t);
        assert_eq!(stats.rates, [0.0; 8], "one sample: no rate yet");
        stats.counts.publish = 30;
        stats.counts.count_delivery(false, false, false);
        stats.counts.count_delivery(true, true, true);
        stats.sample(t + std::time::Duration::from_secs(5));
        let rate = |name: &str| {
            let i = MessageStats::NAMES
                .iter()
                .position(|n| *n == name)
                .expect("a name");
            stats.rates[i]
        };
        assert!((rate("publish") - 4.0).abs() < 1e-9);
        assert!((rate("deliver") - 0.2).abs() < 1e-9);
        assert!((rate("deliver_get") - 0.4).abs() < 1e-9);
        assert!((rate("redeliver") - 0.2).abs() < 1e-9);
        assert_eq!(rate("ack"), 0.0);
    }
}

//! Rates as RabbitMQ's management plugin shows them (`publish_details.rate` and the
//! like, and `churn_rates`): the broker-wide counters are sampled every 5 s
//! (RabbitMQ's default `collect_statistics_interval`), and a rate is the change
//! between the last two samples divided by the time between them, per second. The
//! sampling itself is in `sampler`.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Map, Value, json};

/// How often the counters are sampled.
pub(crate) const INTERVAL: Duration = Duration::from_secs(5);

/// The broker-wide counters at one instant, by RabbitMQ's name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counters(Vec<(&'static str, u64)>);

impl Counters {
    /// Counters by name.
    pub(crate) fn new(counters: Vec<(&'static str, u64)>) -> Self {
        Self(counters)
    }

    fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }
}

/// Counters and when they were read.
type Sample = (Instant, Counters);

/// The last two samples.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    samples: Mutex<Option<(Sample, Option<Sample>)>>,
}

impl Rates {
    /// Records a sample taken at `at`.
    pub(crate) fn record(&self, at: Instant, counters: Counters) {
        let mut s = self.samples.lock();
        let previous = s.take().map(|(last, _)| last);
        *s = Some(((at, counters), previous));
    }

    /// The rate of `name`, per second, over the last sample interval (0 before two
    /// samples).
    pub(crate) fn rate(&self, name: &str) -> f64 {
        let s = self.samples.lock();
        let Some(((t1, c1), Some((t0, c0)))) = s.as_ref() else {
            return 0.0;
        };
        let secs = t1.duration_since(*t0).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        c1.get(name).saturating_sub(c0.get(name)) as f64 / secs
    }

    /// `{name: count, name_details: {rate}}` for each of `names`, counts from `now`.
    pub(crate) fn with_details(&self, now: &Counters, names: &[&str]) -> Value {
        let mut m = Map::new();
        for name in names {
            m.insert((*name).to_owned(), json!(now.get(name)));
            m.insert(
                format!("{name}_details"),
                json!({ "rate": self.rate(name) }),
            );
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(publish: u64) -> Counters {
        Counters(vec![("publish", publish)])
    }

    #[test]
    fn a_rate_is_the_change_over_the_last_interval() {
        let r = Rates::default();
        let t = Instant::now();
        assert_eq!(r.rate("publish"), 0.0);
        r.record(t, counters(100));
        assert_eq!(r.rate("publish"), 0.0, "one sample: no rate yet");
        r.record(t + Duration::from_secs(5), counters(150));
        assert!((r.rate("publish") - 10.0).abs() < 1e-9);
        r.record(t + Duration::from_secs(10), counters(150));
        assert_eq!(r.rate("publish"), 0.0, "only the last interval counts");
        assert_eq!(r.rate("ack"), 0.0, "an unknown counter has no rate");
    }

    #[test]
    fn details_carry_the_count_and_the_rate() {
        let r = Rates::default();
        let t = Instant::now();
        r.record(t, counters(0));
        r.record(t + Duration::from_secs(2), counters(4));
        let v = r.with_details(&counters(7), &["publish"]);
        assert_eq!(v["publish"], 7);
        assert_eq!(v["publish_details"]["rate"], 2.0);
    }
}

//! `/metrics` and `/metrics/per-object`: Prometheus text exposition with the metric
//! names of RabbitMQ's prometheus plugin. As there, `/metrics` aggregates the queue
//! gauges over all queues (no labels, so no queue or vhost names) and
//! `/metrics/per-object` gives them per queue, labelled by vhost and queue.

use std::fmt::Write;

use crate::shared::Shared;

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Reads one per-queue gauge off a snapshot.
type QueueGauge = fn(&crate::vhost::QueueSnapshot) -> u64;

/// The whole exposition: queue gauges per queue with `per_object`, else summed.
pub(crate) fn render(shared: &Shared, per_object: bool) -> String {
    // (vhost, queue) pairs, by vhost name then queue name.
    let mut queues = Vec::new();
    let (mut channels, mut consumers) = (0, 0);
    let mut stats = crate::vhost::MessageStats::default();
    for entry in shared.vhosts.all() {
        let mut v = entry.lock();
        queues.extend(
            v.queue_snapshots()
                .into_iter()
                .map(|q| (entry.name().to_owned(), q)),
        );
        channels += v.channel_snapshots().len();
        consumers += v.consumer_snapshots().len();
        stats.add(&v.message_stats());
    }
    let connections = shared.registry.snapshot().len();
    let (opened, closed) = shared.registry.totals();
    let mut out = String::with_capacity(1024 + queues.len() * 300);
    let per_queue: [(&str, &str, QueueGauge); 4] = [
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            |q| u64::from(q.messages_ready),
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            |q| u64::from(q.messages_unacknowledged),
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages",
            |q| u64::from(q.messages_ready) + u64::from(q.messages_unacknowledged),
        ),
        ("rabbitmq_queue_consumers", "Consumers on a queue", |q| {
            u64::from(q.consumers)
        }),
    ];
    for (name, help, get) in per_queue {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        if !per_object {
            let total: u64 = queues.iter().map(|(_, q)| get(q)).sum();
            let _ = writeln!(out, "{name} {total}");
            continue;
        }
        for (vhost, q) in &queues {
            let _ = writeln!(
                out,
                "{name}{{vhost=\"{}\",queue=\"{}\"}} {}",
                label(vhost),
                label(&q.name),
                get(q)
            );
        }
    }
    metric(
        &mut out,
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        queues.len() as u64,
    );
    metric(
        &mut out,
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        connections as u64,
    );
    metric(
        &mut out,
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        channels as u64,
    );
    metric(
        &mut out,
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        consumers as u64,
    );
    metric(
        &mut out,
        "rabbitmq_connections_opened_total",
        "counter",
        "Total number of connections opened",
        opened,
    );
    metric(
        &mut out,
        "rabbitmq_connections_closed_total",
        "counter",
        "Total number of connections closed or terminated",
        closed,
    );
    metric(
        &mut out,
        "rabbitmq_global_messages_received_total",
        "counter",
        "Total number of messages received from publishers",
        stats.publish,
    );
    metric(
        &mut out,
        "rabbitmq_global_messages_delivered_total",
        "counter",
        "Total number of messages delivered to consumers (consume and get, with and without ack)",
        stats.deliver_get(),
    );
    metric(
        &mut out,
        "rabbitmq_global_messages_delivered_consume_manual_ack_total",
        "counter",
        "Total number of messages delivered to consumers using manual acknowledgement mode",
        stats.deliver,
    );
    metric(
        &mut out,
        "rabbitmq_global_messages_delivered_consume_auto_ack_total",
        "counter",
        "Total number of messages delivered to consumers using automatic acknowledgement mode",
        stats.deliver_no_ack,
    );
    metric(
        &mut out,
        "rabbitmq_global_messages_acknowledged_total",
        "counter",
        "Total number of messages acknowledged by consumers",
        stats.ack,
    );
    metric(
        &mut out,
        "rabbitmq_global_messages_redelivered_total",
        "counter",
        "Total number of messages redelivered to consumers",
        stats.redeliver,
    );
    if let Some(rss) = crate::alarm::resident_memory() {
        metric(
            &mut out,
            "rabbitmq_process_resident_memory_bytes",
            "gauge",
            "Memory used in bytes",
            rss,
        );
    }
    if let Some(limit) = shared.alarm.memory_limit() {
        metric(
            &mut out,
            "rabbitmq_resident_memory_limit_bytes",
            "gauge",
            "Memory high watermark in bytes",
            limit,
        );
    }
    let [memory, disk] = shared.alarm.state();
    metric(
        &mut out,
        "rabbitmq_alarms_memory_used_watermark",
        "gauge",
        "is set to 1 when the memory alarm is on (publishers blocked)",
        u64::from(memory),
    );
    metric(
        &mut out,
        "rabbitmq_alarms_free_disk_space_watermark",
        "gauge",
        "is set to 1 when the disk alarm is on (publishers blocked)",
        u64::from(disk),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_rss_is_read() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        if cfg!(target_os = "linux") {
            assert!(crate::alarm::resident_memory().is_some_and(|b| b > 0));
        }
    }
}

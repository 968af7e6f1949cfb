//! The report: a table with ratios and targets, JSON, and an SVG picture.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{BrokerResults, IN_FLIGHT, RpcResults};

/// A whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Loopback TCP ping-pong p50, microseconds.
    pub floor_p50_us: f64,
    /// Publishes the pipelined one-way publisher keeps outstanding.
    pub pipeline_window: usize,
    /// Persistent publishes awaiting their confirm at once.
    pub confirm_window: usize,
    /// Built-in broker first, then the reference.
    pub brokers: Vec<BrokerResults>,
    /// The built-in broker's store with a long queue, through `kill -9`.
    pub recovery: crate::Recovery,
}

fn tput(r: &RpcResults, n: usize) -> f64 {
    r.throughput
        .iter()
        .find(|(k, _)| *k == n)
        .map_or(f64::NAN, |(_, v)| *v)
}

impl Report {
    /// Prints the side-by-side table and the issue's targets.
    pub fn print_table(&self) {
        let [ours, theirs] = [&self.brokers[0], &self.brokers[1]];
        println!(
            "loopback TCP ping-pong p50 (the floor): {:.0} us\n",
            self.floor_p50_us
        );
        println!(
            "{:<50} {:>12} {:>12} {:>9}",
            "", ours.name, theirs.name, "ratio"
        );
        let row = |label: &str, a: f64, b: f64| {
            println!("{label:<50} {a:>12.1} {b:>12.1} {:>8.2}x", a / b);
        };
        row("one-way 16 B, msg/s", ours.oneway_16, theirs.oneway_16);
        row("one-way 4 KiB, msg/s", ours.oneway_4k, theirs.oneway_4k);
        row(
            "broker CPU per one-way 16 B msg (awaited), us",
            ours.cpu_us_per_msg,
            theirs.cpu_us_per_msg,
        );
        let w = self.pipeline_window;
        row(
            &format!("one-way pipelined ({w} outstanding) 16 B, msg/s"),
            ours.oneway_pipelined_16,
            theirs.oneway_pipelined_16,
        );
        row(
            &format!("one-way pipelined ({w} outstanding) 4 KiB, msg/s"),
            ours.oneway_pipelined_4k,
            theirs.oneway_pipelined_4k,
        );
        row(
            "broker CPU per pipelined one-way 16 B msg, us",
            ours.cpu_us_per_msg_pipelined,
            theirs.cpu_us_per_msg_pipelined,
        );
        row(
            "broker CPU per RPC call (framework, 64), us",
            ours.cpu_us_per_call,
            theirs.cpu_us_per_call,
        );
        row(
            "loopback TCP p50 right before the RPC runs, us",
            ours.floor_p50_us,
            theirs.floor_p50_us,
        );
        row(
            "hand-written client RPC sequential p50, us",
            ours.wire_seq_us[0],
            theirs.wire_seq_us[0],
        );
        row(
            "hand-written client RPC sequential p99, us",
            ours.wire_seq_us[1],
            theirs.wire_seq_us[1],
        );
        for (i, label) in ["hand-written", "raw lapin", "framework"]
            .into_iter()
            .enumerate()
        {
            row(
                &format!("client ctx switches per call, {label}"),
                ours.switches_per_call[i],
                theirs.switches_per_call[i],
            );
        }
        for (label, pick) in [("raw lapin", 0usize), ("framework", 1)] {
            let (a, b) = if pick == 0 {
                (&ours.raw, &theirs.raw)
            } else {
                (&ours.framework, &theirs.framework)
            };
            row(
                &format!("{label} RPC sequential p50, us"),
                a.seq_us[0],
                b.seq_us[0],
            );
            row(
                &format!("{label} RPC sequential p99, us"),
                a.seq_us[2],
                b.seq_us[2],
            );
            for n in IN_FLIGHT {
                row(
                    &format!("{label} RPC {n} in flight, calls/s"),
                    tput(a, n),
                    tput(b, n),
                );
            }
        }
        row(
            "broker RSS idle (before the load), KiB",
            ours.rss_kib[0] as f64,
            theirs.rss_kib[0] as f64,
        );
        println!(
            "{:<44} {:>12} {:>12}",
            "broker RSS with 1,000 idle connections, KiB", ours.rss_kib[1], "n/a"
        );
        row(
            "broker RSS after the load, KiB",
            ours.rss_kib[2] as f64,
            theirs.rss_kib[2] as f64,
        );
        let (a, b) = (&ours.persistent, &theirs.persistent);
        let cw = self.confirm_window;
        println!("\npersistent publish with confirms (durable queue, no consumer):");
        row(
            &format!("persistent 16 B, {cw} unconfirmed, msg/s"),
            a.msgs_per_sec_16,
            b.msgs_per_sec_16,
        );
        row(
            &format!("persistent 16 B, {cw} unconfirmed, confirm p50, us"),
            a.confirm_us_16[0],
            b.confirm_us_16[0],
        );
        row(
            &format!("persistent 16 B, {cw} unconfirmed, confirm p99, us"),
            a.confirm_us_16[1],
            b.confirm_us_16[1],
        );
        row(
            &format!("persistent 4 KiB, {cw} unconfirmed, msg/s"),
            a.msgs_per_sec_4k,
            b.msgs_per_sec_4k,
        );
        row(
            &format!("persistent 4 KiB, {cw} unconfirmed, confirm p50, us"),
            a.confirm_us_4k[0],
            b.confirm_us_4k[0],
        );
        row(
            &format!("persistent 4 KiB, {cw} unconfirmed, confirm p99, us"),
            a.confirm_us_4k[1],
            b.confirm_us_4k[1],
        );
        row(
            "persistent 16 B, one at a time, confirm p50, us",
            a.confirm_us_seq[0],
            b.confirm_us_seq[0],
        );
        row(
            "persistent 16 B, one at a time, confirm p99, us",
            a.confirm_us_seq[1],
            b.confirm_us_seq[1],
        );
        println!("\ntargets (issue 4):");
        let check =
            |ok: bool, text: String| println!("  [{}] {text}", if ok { "met" } else { "MISSED" });
        let cpu_call = ours.cpu_us_per_call / theirs.cpu_us_per_call;
        check(
            cpu_call <= 0.1,
            format!(
                "broker CPU per RPC call <= 1/10 of RabbitMQ's: {:.3}x ({:.1} vs {:.1} us)",
                cpu_call, ours.cpu_us_per_call, theirs.cpu_us_per_call
            ),
        );
        check(
            ours.cpu_us_per_msg <= 1.5,
            format!(
                "broker CPU per one-way 16 B message <= 1.5 us (each publish awaited): {:.2} us",
                ours.cpu_us_per_msg
            ),
        );
        check(
            ours.cpu_us_per_msg_pipelined <= 1.5,
            format!(
                "broker CPU per one-way 16 B message <= 1.5 us (pipelined, {w} publishes \
                 outstanding): {:.2} us",
                ours.cpu_us_per_msg_pipelined
            ),
        );
        let x = tput(&ours.framework, 64) / tput(&theirs.raw, 64);
        check(
            x >= 3.0,
            format!("framework on ours at 64 in flight >= 3x raw lapin on RabbitMQ: {x:.2}x"),
        );
        let p = ours.framework.seq_us[0] / ours.floor_p50_us;
        check(
            p <= 3.0,
            format!(
                "sequential RPC p50 on ours <= 3x the TCP round trip: {p:.2}x ({:.0} us vs {:.0} us)",
                ours.framework.seq_us[0], ours.floor_p50_us
            ),
        );
        let w = ours.wire_seq_us[0] / ours.floor_p50_us;
        println!(
            "         (the broker's part: with hand-written clients the same call takes \
             {:.0} us = {w:.2}x the TCP round trip; the rest is the client library)",
            ours.wire_seq_us[0]
        );
        let f = tput(&ours.framework, 64) / tput(&ours.raw, 64);
        check(
            f >= 0.9,
            format!("framework >= 0.9x raw lapin on the same broker (64 in flight): {f:.2}x"),
        );
        check(
            ours.rss_kib[0] <= 10 * 1024,
            format!(
                "idle broker RSS <= 10 MB: {:.1} MB",
                ours.rss_kib[0] as f64 / 1024.0
            ),
        );
        let extra = ours.rss_kib[1].saturating_sub(ours.rss_kib[0]);
        check(
            extra <= 50 * 1024,
            format!(
                "1,000 idle connections add <= 50 MB: {:.1} MB",
                extra as f64 / 1024.0
            ),
        );
        let (idle, after) = (ours.rss_kib[0] as f64, ours.rss_kib[2] as f64);
        check(
            after <= idle * 1.25,
            format!(
                "broker RSS back near the start after the load (within 25%): {:.1} MB \
                 against {:.1} MB idle, {:.1} s after the load",
                after / 1024.0,
                idle / 1024.0,
                ours.settle_secs
            ),
        );
        println!("\ntargets (persistence):");
        let x = a.msgs_per_sec_16 / b.msgs_per_sec_16;
        check(
            x >= 2.0,
            format!(
                "persistent publish with confirms 16 B: at least 2x RabbitMQ: {x:.2}x \
                 ({:.0} vs {:.0} msg/s)",
                a.msgs_per_sec_16, b.msgs_per_sec_16
            ),
        );
        check(
            a.confirm_us_16[0] <= b.confirm_us_16[0],
            format!(
                "confirm latency p50 no worse than RabbitMQ (16 B, {cw} unconfirmed): \
                 {:.0} vs {:.0} us",
                a.confirm_us_16[0], b.confirm_us_16[0]
            ),
        );
        let r = &self.recovery;
        println!(
            "\nbuilt-in store, one durable queue of {} persistent 16 B messages:\n  \
             filled at {:.0} msg/s (confirmed); broker RSS {:.1} MB with them queued\n  \
             kill -9, then restart until the queue reports them all: {:.2} s; RSS after: {:.1} MB, \
             3 s later: {:.1} MB",
            r.messages,
            r.fill_msgs_per_sec,
            r.rss_kib_loaded as f64 / 1024.0,
            r.restart_secs,
            r.rss_kib_recovered as f64 / 1024.0,
            r.rss_kib_settled as f64 / 1024.0
        );
    }

    /// Two panels: sequential latency percentiles, and throughput against calls in flight.
    pub fn svg(&self) -> String {
        let series: Vec<(String, &RpcResults, &str)> = {
            let colors = ["#1b9e77", "#66c2a5", "#d95f02", "#fc8d62"];
            let mut v = Vec::new();
            let mut i = 0;
            for b in &self.brokers {
                for (kind, r) in [("framework", &b.framework), ("raw lapin", &b.raw)] {
                    v.push((format!("{kind} on {}", b.name), r, colors[i % colors.len()]));
                    i += 1;
                }
            }
            v
        };
        let (w, h) = (1160.0, 380.0);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        // Panel 1: latency bars.
        let (x0, y0, pw, ph) = (60.0, 40.0, 360.0, 280.0);
        let _ = write!(
            s,
            r#"<text x="{}" y="20" font-weight="bold">Sequential RPC latency (us; floor {:.0} us)</text>"#,
            x0, self.floor_p50_us
        );
        let max_lat = series
            .iter()
            .flat_map(|(_, r, _)| r.seq_us)
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max);
        let groups = ["p50", "p90", "p99", "p99.9"];
        let gw = pw / groups.len() as f64;
        let bw = gw / (series.len() as f64 + 1.0);
        for (gi, g) in groups.iter().enumerate() {
            let gx = x0 + gi as f64 * gw;
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{g}</text>"#,
                gx + gw / 2.0,
                y0 + ph + 16.0
            );
            for (si, (_, r, color)) in series.iter().enumerate() {
                let v = r.seq_us[gi];
                if !v.is_finite() {
                    continue;
                }
                let bh = ph * v / max_lat;
                let _ = write!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{v:.0} us</title></rect>"#,
                    gx + bw * (si as f64 + 0.5),
                    y0 + ph - bh,
                    bw * 0.9,
                    bh
                );
            }
        }
        axis(&mut s, x0, y0, pw, ph, max_lat, "us");
        // Panel 2: throughput lines.
        let (x1, y1, pw2, ph2) = (500.0, 40.0, 360.0, 280.0);
        let _ = write!(
            s,
            r#"<text x="{x1}" y="20" font-weight="bold">RPC throughput (calls/s) vs calls in flight</text>"#
        );
        let max_t = series
            .iter()
            .flat_map(|(_, r, _)| r.throughput.iter().map(|(_, v)| *v))
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max);
        let xs = |i: usize| x1 + pw2 * i as f64 / (IN_FLIGHT.len() - 1) as f64;
        for (i, n) in IN_FLIGHT.iter().enumerate() {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{n}</text>"#,
                xs(i),
                y1 + ph2 + 16.0
            );
        }
        for (_, r, color) in &series {
            let pts: Vec<String> = IN_FLIGHT
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{:.1},{:.1}", xs(i), y1 + ph2 - ph2 * tput(r, *n) / max_t))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2.5" points="{}"/>"#,
                pts.join(" ")
            );
        }
        axis(&mut s, x1, y1, pw2, ph2, max_t, "/s");
        // Panel 3: persistent publish with confirms, 16 B, one bar per broker.
        let (x2, y2, pw3, ph3) = (950.0, 40.0, 170.0, 280.0);
        let _ = write!(
            s,
            r#"<text x="{}" y="20" font-weight="bold">Persistent + confirms, 16 B (msg/s)</text>"#,
            x2 - 40.0
        );
        let max_p = self
            .brokers
            .iter()
            .map(|b| b.persistent.msgs_per_sec_16)
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max);
        let bw = pw3 / self.brokers.len().max(1) as f64;
        for (i, b) in self.brokers.iter().enumerate() {
            let v = b.persistent.msgs_per_sec_16;
            let bx = x2 + bw * i as f64;
            let color = ["#1b9e77", "#d95f02"][i % 2];
            if v.is_finite() {
                let bh = ph3 * v / max_p;
                let _ = write!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{v:.0} msg/s</title></rect>"#,
                    bx + bw * 0.15,
                    y2 + ph3 - bh,
                    bw * 0.7,
                    bh
                );
            }
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
                bx + bw / 2.0,
                y2 + ph3 + 16.0,
                b.name
            );
        }
        axis(&mut s, x2, y2, pw3, ph3, max_p, "");
        // Legend.
        for (i, (label, _, color)) in series.iter().enumerate() {
            let lx = 60.0 + 210.0 * i as f64;
            let _ = write!(
                s,
                r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}">{label}</text>"#,
                h - 24.0,
                lx + 16.0,
                h - 14.0
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn axis(s: &mut String, x: f64, y: f64, w: f64, h: f64, max: f64, unit: &str) {
    let _ = write!(
        s,
        r##"<line x1="{x}" y1="{y}" x2="{x}" y2="{}" stroke="#444"/><line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="#444"/>"##,
        y + h,
        y + h,
        x + w,
        y + h
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let ty = y + h - h * k as f64 / 4.0;
        let _ = write!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="end" fill="#444">{:.0}{unit}</text>"##,
            x - 4.0,
            ty + 4.0,
            v
        );
    }
}

//! Tallies from every load-generator thread, merged and printed: the
//! summary, the latency percentile distribution (.hgrm) and JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::storm::StormResult;

/// What one thread saw. Latency, order and the window's loss are the
/// sample's (the receivers that check every delivery); `arrived` counts
/// every receiver.
#[derive(Debug)]
pub struct Tally {
    /// End-to-end latency (publish to receive) of counted deliveries, ns.
    pub latency: Histogram<u64>,
    /// The same, for messages sent while a connect storm ran.
    pub storm_latency: Histogram<u64>,
    /// WebSocket connect + upgrade time per connection, ns.
    pub connect: Histogram<u64>,
    /// Publishes sent inside the measurement window.
    pub published: u64,
    /// Deliveries due to the sampled receivers for those publishes.
    pub expected: u64,
    /// Deliveries the sampled receivers got for those publishes.
    pub delivered: u64,
    /// Deliveries to every receiver that arrived inside the window (by the
    /// receiver's clock), counted by their headers.
    pub arrived: u64,
    /// Messages that arrived with a sequence number not above the last one
    /// seen from the same publisher on the same channel.
    pub out_of_order: u64,
    /// Messages a sampled receiver got from its own client's publisher.
    pub echoes: u64,
    /// Deliveries the sample got as positional `1r`s (`--positions` on a
    /// channel with history).
    pub positional: u64,
    /// Of those, positions not above the last on their channel, or (for a
    /// receiver that does not publish) not the last + 1: a gap or a repeat.
    pub offset_errors: u64,
    /// Publishes whose reply said how many receivers they reached (Redis).
    pub receivers_checked: u64,
    /// Of those, publishes that reached another number than due.
    pub receivers_mismatched: u64,
    /// Connections the nexus closed, or that failed.
    pub closed: u64,
    /// Connections that could not be opened.
    pub connect_errors: u64,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            latency: Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds"),
            storm_latency: Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds"),
            connect: Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds"),
            published: 0,
            expected: 0,
            delivered: 0,
            arrived: 0,
            out_of_order: 0,
            echoes: 0,
            positional: 0,
            offset_errors: 0,
            receivers_checked: 0,
            receivers_mismatched: 0,
            closed: 0,
            connect_errors: 0,
        }
    }

    /// Adds another thread's tally to this one.
    pub fn merge(&mut self, other: &Tally) {
        self.latency.add(&other.latency).expect("same bounds");
        self.storm_latency
            .add(&other.storm_latency)
            .expect("same bounds");
        self.connect.add(&other.connect).expect("same bounds");
        self.published += other.published;
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.arrived += other.arrived;
        self.out_of_order += other.out_of_order;
        self.echoes += other.echoes;
        self.positional += other.positional;
        self.offset_errors += other.offset_errors;
        self.receivers_checked += other.receivers_checked;
        self.receivers_mismatched += other.receivers_mismatched;
        self.closed += other.closed;
        self.connect_errors += other.connect_errors;
    }

    /// Deliveries due to the sample in the window but not received.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

/// The run's settings and timings, for the report.
#[derive(Debug)]
pub struct RunInfo {
    /// The command line's settings, as `key=value` text.
    pub settings: Vec<(&'static str, String)>,
    /// Time to open and upgrade every connection, seconds.
    pub connect_seconds: f64,
    /// Measured window, seconds.
    pub window_seconds: f64,
    /// The window's start and end, seconds since the Unix epoch.
    pub window_unix: (f64, f64),
    /// CPU seconds (user + system) this process used in the window (the
    /// storm's thread included).
    pub cpu_seconds: f64,
    /// The connect storm, if one ran.
    pub storm: Option<StormResult>,
    /// Receivers that checked every delivery.
    pub sampled_receivers: u64,
    /// Deliveries due to every receiver for everything published (warm-up
    /// included).
    pub expected_all: u64,
    /// Deliveries every receiver counted, once the run drained.
    pub delivered_all: u64,
}

impl RunInfo {
    /// Deliveries due to any receiver that never came.
    pub fn lost_all(&self) -> u64 {
        self.expected_all.saturating_sub(self.delivered_all)
    }

    /// Deliveries beyond those due (a publisher's own, or duplicates).
    pub fn extra_all(&self) -> u64 {
        self.delivered_all.saturating_sub(self.expected_all)
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The human-readable summary.
pub fn summary(tally: &Tally, info: &RunInfo) -> String {
    let mut out = String::new();
    let settings: Vec<String> = info
        .settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(out, "settings: {}", settings.join(" "));
    let _ = writeln!(
        out,
        "connect: {:.2} s for all; per connection p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors {}",
        info.connect_seconds,
        ms(tally.connect.value_at_quantile(0.5)),
        ms(tally.connect.value_at_quantile(0.99)),
        ms(tally.connect.max()),
        tally.connect_errors
    );
    let w = info.window_seconds.max(1e-9);
    let _ = writeln!(
        out,
        "publish rate: {:.0} msg/s ({} in {:.1} s)",
        tally.published as f64 / w,
        tally.published,
        info.window_seconds
    );
    let _ = writeln!(
        out,
        "deliveries: {:.0} /s in the window; all receivers: {} delivered of {} due (warm-up and drain included; lost {}, extra {}); \
         sample ({} receivers): {} of {} due in the window (lost {}, out of order {}, own messages {}); connections closed {}",
        tally.arrived as f64 / w,
        info.delivered_all,
        info.expected_all,
        info.lost_all(),
        info.extra_all(),
        info.sampled_receivers,
        tally.delivered,
        tally.expected,
        tally.lost(),
        tally.out_of_order,
        tally.echoes,
        tally.closed
    );
    if tally.positional > 0 || tally.offset_errors > 0 {
        let _ = writeln!(
            out,
            "positions (sample): {} positional deliveries, {} gaps or repeats",
            tally.positional, tally.offset_errors
        );
    }
    if tally.receivers_checked > 0 {
        let _ = writeln!(
            out,
            "publish replies: {} said how many receivers a publish reached; {} differed from the due count",
            tally.receivers_checked, tally.receivers_mismatched
        );
    }
    let h = &tally.latency;
    let _ = writeln!(
        out,
        "latency ms (sample): p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (n={})",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len()
    );
    let _ = writeln!(
        out,
        "load generator cpu: {:.2} s in the window ({:.0}% of one core)",
        info.cpu_seconds,
        100.0 * info.cpu_seconds / w
    );
    if let Some(storm) = &info.storm {
        let errors: Vec<String> = storm
            .errors
            .iter()
            .map(|(kind, n)| format!("{n}× {kind}"))
            .collect();
        let _ = writeln!(
            out,
            "connect storm: {} of {} upgraded in {:.2} s; per connection p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors {}{}",
            storm.upgraded,
            storm.connections,
            storm.seconds,
            ms(storm.connect.value_at_quantile(0.5)),
            ms(storm.connect.value_at_quantile(0.99)),
            ms(storm.connect.max()),
            storm.failed(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join(", "))
            }
        );
        let s = &tally.storm_latency;
        let _ = writeln!(
            out,
            "latency ms during the storm: p50 {:.3}  p99 {:.3}  max {:.3}  (n={}); storm thread cpu {:.2} s ({:.0}% of its {:.2} s)",
            ms(s.value_at_quantile(0.5)),
            ms(s.value_at_quantile(0.99)),
            ms(s.max()),
            s.len(),
            storm.cpu_seconds,
            100.0 * storm.cpu_seconds / storm.seconds.max(1e-9),
            storm.seconds
        );
    }
    out
}

/// The storm's figures as a JSON object (`null` without a storm).
fn storm_json(tally: &Tally, storm: Option<&StormResult>) -> String {
    let Some(storm) = storm else {
        return "null".into();
    };
    let s = &tally.storm_latency;
    serde_json::json!({
        "connections": storm.connections,
        "upgraded": storm.upgraded,
        "errors": storm.failed(),
        "error_kinds": storm.errors,
        "seconds_to_all": storm.seconds,
        "start_unix": storm.unix.0,
        "end_unix": storm.unix.1,
        "connect_ms": {
            "p50": ms(storm.connect.value_at_quantile(0.5)),
            "p99": ms(storm.connect.value_at_quantile(0.99)),
            "max": ms(storm.connect.max()),
        },
        "bystander_latency_ms": {
            "p50": ms(s.value_at_quantile(0.5)),
            "p99": ms(s.value_at_quantile(0.99)),
            "max": ms(s.max()),
            "count": s.len(),
        },
        "client_cpu_seconds": storm.cpu_seconds,
    })
    .to_string()
}

/// Everything as one JSON object.
pub fn json(tally: &Tally, info: &RunInfo) -> String {
    let w = info.window_seconds.max(1e-9);
    let h = &tally.latency;
    let settings: Vec<String> = info
        .settings
        .iter()
        .map(|(k, v)| format!("\"{k}\": \"{}\"", v.replace('"', "'")))
        .collect();
    format!(
        "{{\"settings\": {{{}}}, \"connect_seconds\": {:.3}, \"connect_p99_ms\": {:.3}, \"connect_errors\": {}, \
         \"window_seconds\": {:.3}, \"window_start_unix\": {:.3}, \"window_end_unix\": {:.3}, \"published\": {}, \"publish_rate\": {:.1}, \"expected\": {}, \"delivered\": {}, \
         \"deliveries_per_second\": {:.1}, \"lost\": {}, \"extra\": {}, \"out_of_order\": {}, \"connections_closed\": {}, \
         \"sample\": {}, \"publish_receivers\": {}, \
         \"latency_ms\": {{\"p50\": {:.4}, \"p90\": {:.4}, \"p99\": {:.4}, \"p99_9\": {:.4}, \"max\": {:.4}, \"count\": {}}}, \
         \"client_cpu_seconds\": {:.3}, \"client_cpu_percent\": {:.1}, \"storm\": {}}}\n",
        settings.join(", "),
        info.connect_seconds,
        ms(tally.connect.value_at_quantile(0.99)),
        tally.connect_errors,
        info.window_seconds,
        info.window_unix.0,
        info.window_unix.1,
        tally.published,
        tally.published as f64 / w,
        info.expected_all,
        info.delivered_all,
        tally.arrived as f64 / w,
        info.lost_all().max(tally.lost()),
        info.extra_all(),
        tally.out_of_order,
        tally.closed,
        serde_json::json!({
            "receivers": info.sampled_receivers,
            "every": info.settings.iter().find(|(k, _)| *k == "sample_every").map(|(_, v)| v.clone()),
            "expected": tally.expected,
            "delivered": tally.delivered,
            "lost": tally.lost(),
            "own_messages": tally.echoes,
            "positional": tally.positional,
            "position_errors": tally.offset_errors,
        }),
        if tally.receivers_checked > 0 {
            serde_json::json!({
                "checked": tally.receivers_checked,
                "mismatched": tally.receivers_mismatched,
            })
        } else {
            serde_json::Value::Null
        },
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len(),
        info.cpu_seconds,
        100.0 * info.cpu_seconds / w,
        storm_json(tally, info.storm.as_ref())
    )
}

//! Per-shard counters: plain cells bumped on the hot path, read on demand.
//!
//! No counter is shared between shards: a scrape or the console's `stats`
//! asks every shard for a [`StatsSnapshot`] over the rings and adds them up,
//! so counting costs the hot path one non-atomic add.

use std::cell::Cell;
use std::fmt::Write as _;

/// Why a connection was closed for breaking the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolErrorKind {
    /// Version other than `1` (1002).
    Version,
    /// Unknown message kind (1002).
    Kind,
    /// Malformed fields (1002).
    Malformed,
    /// `1c`/`1t` before `1h` (1008).
    Unidentified,
    /// A binary frame (1003).
    Binary,
    /// Invalid UTF-8 in a text frame (1007).
    Utf8,
    /// A WebSocket framing error: unmasked frame, bad opcode… (1002).
    WebSocket,
}

impl ProtocolErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ProtocolErrorKind; 7] = [
        ProtocolErrorKind::Version,
        ProtocolErrorKind::Kind,
        ProtocolErrorKind::Malformed,
        ProtocolErrorKind::Unidentified,
        ProtocolErrorKind::Binary,
        ProtocolErrorKind::Utf8,
        ProtocolErrorKind::WebSocket,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            ProtocolErrorKind::Version => "version",
            ProtocolErrorKind::Kind => "kind",
            ProtocolErrorKind::Malformed => "malformed",
            ProtocolErrorKind::Unidentified => "unidentified",
            ProtocolErrorKind::Binary => "binary",
            ProtocolErrorKind::Utf8 => "utf8",
            ProtocolErrorKind::WebSocket => "websocket",
        }
    }
}

/// Counters one shard keeps about its own traffic.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// WebSocket connections upgraded.
    pub connections_opened: Cell<u64>,
    /// Text messages received from clients.
    pub messages_in: Cell<u64>,
    /// Publishes (`1t` and console pushes) started on this shard.
    pub publishes: Cell<u64>,
    /// `1r` frames queued to subscribers on this shard.
    pub deliveries: Cell<u64>,
    /// Bytes read from client sockets.
    pub bytes_in: Cell<u64>,
    /// Bytes written to client sockets.
    pub bytes_out: Cell<u64>,
    /// Connections closed as slow consumers.
    pub slow_consumers: Cell<u64>,
    /// Connections closed for passing a size or count limit.
    pub limit_closures: Cell<u64>,
    /// Connections closed because they stopped answering pings.
    pub keepalive_closures: Cell<u64>,
    /// Connections refused with HTTP 503 (`--max-connections`).
    pub refused_connections: Cell<u64>,
    /// Connections closed for a protocol error, by kind.
    protocol_errors: [Cell<u64>; 7],
}

impl ShardStats {
    /// Counts one protocol error of `kind`.
    pub fn protocol_error(&self, kind: ProtocolErrorKind) {
        bump(&self.protocol_errors[kind as usize], 1);
    }

    /// Protocol errors so far, in [`ProtocolErrorKind::ALL`] order.
    pub fn protocol_errors(&self) -> [u64; 7] {
        std::array::from_fn(|i| self.protocol_errors[i].get())
    }
}

/// Adds `n` to a counter cell.
pub fn bump(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

/// One shard's figures at one moment: gauges and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// The shard.
    pub shard: usize,
    /// Open WebSocket connections.
    pub connections_open: u64,
    /// Of those, identified with `1h`.
    pub connections_identified: u64,
    /// Live subscriptions.
    pub subscriptions: u64,
    /// Channels with subscribers on this shard.
    pub channels: u64,
    /// See [`ShardStats`].
    pub connections_opened: u64,
    /// See [`ShardStats`].
    pub messages_in: u64,
    /// See [`ShardStats`].
    pub publishes: u64,
    /// See [`ShardStats`].
    pub deliveries: u64,
    /// See [`ShardStats`].
    pub bytes_in: u64,
    /// See [`ShardStats`].
    pub bytes_out: u64,
    /// Messages handed to rings toward other shards.
    pub ring_messages: u64,
    /// Sends that found a ring full.
    pub ring_full: u64,
    /// See [`ShardStats`].
    pub slow_consumers: u64,
    /// See [`ShardStats`].
    pub limit_closures: u64,
    /// See [`ShardStats`].
    pub keepalive_closures: u64,
    /// See [`ShardStats`].
    pub refused_connections: u64,
    /// By [`ProtocolErrorKind::ALL`] order.
    pub protocol_errors: [u64; 7],
}

/// (metric name, help, type, value getter) for every per-shard series.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&StatsSnapshot) -> u64,
);

const SERIES: [Series; 16] = [
    (
        "easechat_connections_open",
        "Open WebSocket connections.",
        "gauge",
        |s| s.connections_open,
    ),
    (
        "easechat_connections_identified",
        "Open connections that sent 1h.",
        "gauge",
        |s| s.connections_identified,
    ),
    (
        "easechat_subscriptions",
        "Live subscriptions.",
        "gauge",
        |s| s.subscriptions,
    ),
    (
        "easechat_channels",
        "Channels with subscribers on the shard.",
        "gauge",
        |s| s.channels,
    ),
    (
        "easechat_connections_opened_total",
        "WebSocket connections upgraded.",
        "counter",
        |s| s.connections_opened,
    ),
    (
        "easechat_messages_received_total",
        "Text messages received from clients.",
        "counter",
        |s| s.messages_in,
    ),
    (
        "easechat_publishes_total",
        "Publishes started on the shard (1t and console push).",
        "counter",
        |s| s.publishes,
    ),
    (
        "easechat_deliveries_total",
        "1r frames queued to subscribers.",
        "counter",
        |s| s.deliveries,
    ),
    (
        "easechat_bytes_received_total",
        "Bytes read from client sockets.",
        "counter",
        |s| s.bytes_in,
    ),
    (
        "easechat_bytes_sent_total",
        "Bytes written to client sockets.",
        "counter",
        |s| s.bytes_out,
    ),
    (
        "easechat_ring_messages_total",
        "Messages sent to other shards over the rings.",
        "counter",
        |s| s.ring_messages,
    ),
    (
        "easechat_ring_full_total",
        "Ring sends that found the ring full and waited.",
        "counter",
        |s| s.ring_full,
    ),
    (
        "easechat_slow_consumer_closures_total",
        "Connections closed as slow consumers.",
        "counter",
        |s| s.slow_consumers,
    ),
    (
        "easechat_limit_closures_total",
        "Connections closed for passing a size or count limit.",
        "counter",
        |s| s.limit_closures,
    ),
    (
        "easechat_keepalive_closures_total",
        "Connections closed for not answering pings.",
        "counter",
        |s| s.keepalive_closures,
    ),
    (
        "easechat_refused_connections_total",
        "Connections refused with HTTP 503 (connection cap).",
        "counter",
        |s| s.refused_connections,
    ),
];

/// The Prometheus text exposition of every shard's snapshot.
pub fn render_prometheus(snapshots: &[StatsSnapshot]) -> String {
    let mut out = String::new();
    for (name, help, kind, get) in SERIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in snapshots {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
        }
    }
    let name = "easechat_protocol_errors_total";
    let _ = writeln!(
        out,
        "# HELP {name} Connections closed for a protocol error, by kind.\n# TYPE {name} counter"
    );
    for s in snapshots {
        for (i, kind) in ProtocolErrorKind::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{}\",kind=\"{}\"}} {}",
                s.shard,
                kind.label(),
                s.protocol_errors[i]
            );
        }
    }
    out
}

/// The console's `stats`: totals, then one line per shard.
pub fn render_console(snapshots: &[StatsSnapshot]) -> String {
    let mut out = String::from("stats (total over shards):");
    for (name, _, _, get) in SERIES {
        let total: u64 = snapshots.iter().map(get).sum();
        let per_shard: Vec<String> = snapshots.iter().map(|s| get(s).to_string()).collect();
        let _ = write!(
            out,
            "\n  {:<36} {:>14}   per shard: {}",
            name.trim_start_matches("easechat_"),
            total,
            per_shard.join(" / ")
        );
    }
    for (i, kind) in ProtocolErrorKind::ALL.iter().enumerate() {
        let total: u64 = snapshots.iter().map(|s| s.protocol_errors[i]).sum();
        let _ = write!(
            out,
            "\n  {:<36} {:>14}",
            format!("protocol_errors{{{}}}", kind.label()),
            total
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_a_series_per_shard_and_kind() {
        let mut a = StatsSnapshot {
            shard: 0,
            deliveries: 7,
            ..Default::default()
        };
        a.protocol_errors[ProtocolErrorKind::Binary as usize] = 2;
        let b = StatsSnapshot {
            shard: 1,
            deliveries: 5,
            ..Default::default()
        };
        let text = render_prometheus(&[a.clone(), b.clone()]);
        assert!(text.contains("# TYPE easechat_deliveries_total counter"));
        assert!(text.contains("easechat_deliveries_total{shard=\"0\"} 7\n"));
        assert!(text.contains("easechat_deliveries_total{shard=\"1\"} 5\n"));
        assert!(text.contains("easechat_protocol_errors_total{shard=\"0\",kind=\"binary\"} 2\n"));
        let console = render_console(&[a, b]);
        assert!(console.contains("deliveries_total"));
        assert!(console.contains("12   per shard: 7 / 5"), "{console}");
    }
}

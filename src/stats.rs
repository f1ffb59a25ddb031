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
    pub const ALL: &'static [ProtocolErrorKind] = &[
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

/// Declares every per-shard series once: its variant, Prometheus name, type
/// and help. The counters, the snapshot, `/metrics`, the console's `stats`
/// and the admin API all read this one table, so they cannot drift apart.
macro_rules! metrics {
    ($($variant:ident => $name:literal, $kind:ident, $help:literal;)*) => {
        /// One per-shard series (a gauge or a counter).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Metric {
            $(#[doc = $help] $variant,)*
        }

        impl Metric {
            /// Every series, in exposition order.
            pub const ALL: &'static [Metric] = &[$(Metric::$variant,)*];

            /// The Prometheus metric name.
            pub fn name(self) -> &'static str {
                match self { $(Metric::$variant => $name,)* }
            }

            /// The Prometheus `# HELP` text.
            pub fn help(self) -> &'static str {
                match self { $(Metric::$variant => $help,)* }
            }

            /// The name in JSON (`/api/stats`): the metric name without
            /// `easechat_` and `_total`.
            pub fn json_key(self) -> &'static str {
                let name = self.name();
                let name = name.strip_prefix("easechat_").unwrap_or(name);
                name.strip_suffix("_total").unwrap_or(name)
            }

            /// `gauge` or `counter`.
            pub fn kind(self) -> &'static str {
                match self { $(Metric::$variant => stringify!($kind),)* }
            }
        }
    };
}

metrics! {
    ConnectionsOpen => "easechat_connections_open", gauge, "Open WebSocket connections.";
    ConnectionsIdentified => "easechat_connections_identified", gauge, "Open connections that sent 1h.";
    Subscriptions => "easechat_subscriptions", gauge, "Live subscriptions.";
    Channels => "easechat_channels", gauge, "Channels with subscribers on the shard.";
    SubscriptionBytes => "easechat_subscription_bytes", gauge, "Budget bytes held by subscriptions (--max-subscription-bytes).";
    PartialInputBytes => "easechat_partial_input_bytes", gauge, "Bytes of incomplete client messages held (--max-partial-bytes).";
    RingBacklogBytes => "easechat_ring_backlog_bytes", gauge, "Bytes queued for other shards whose rings were full.";
    RingInFlightBytes => "easechat_ring_in_flight_bytes", gauge, "Bytes handed to other shards and not yet handled (--max-ring-backlog-bytes per peer).";
    OwedInterestUpdates => "easechat_owed_interest_updates", gauge, "Interest updates waiting for ring room.";
    PausedConnections => "easechat_paused_connections", gauge, "Connections whose reading waits for room toward other shards.";
    ConnectionsOpened => "easechat_connections_opened_total", counter, "WebSocket connections upgraded.";
    MessagesIn => "easechat_messages_received_total", counter, "Text messages received from clients.";
    Publishes => "easechat_publishes_total", counter, "Publishes started on the shard (1t and console push).";
    Deliveries => "easechat_deliveries_total", counter, "1r frames queued to subscribers.";
    BytesIn => "easechat_bytes_received_total", counter, "Bytes read from client sockets.";
    BytesOut => "easechat_bytes_sent_total", counter, "Bytes written to client sockets.";
    CoalescedRounds => "easechat_coalesced_rounds_total", counter, "Write rounds that waited (--coalesce-max-us) so each send carries more frames.";
    RingMessages => "easechat_ring_messages_total", counter, "Messages sent to other shards over the rings.";
    RingFull => "easechat_ring_full_total", counter, "Messages that found their ring full and waited.";
    Pauses => "easechat_pauses_total", counter, "Times a connection's reading paused for room toward other shards.";
    SlowConsumers => "easechat_slow_consumer_closures_total", counter, "Connections closed as slow consumers.";
    LimitClosures => "easechat_limit_closures_total", counter, "Connections closed for passing a size, count, time or budget limit.";
    KeepaliveClosures => "easechat_keepalive_closures_total", counter, "Connections closed for not answering pings.";
    RefusedConnections => "easechat_refused_connections_total", counter, "Connections refused with HTTP 503 (connection caps).";
    AuthRefused => "easechat_auth_refused_total", counter, "Upgrades refused by access control (HTTP 401 or 403).";
    AccessDenied => "easechat_access_denied_total", counter, "Connections closed (1008) for a name, channel or quota their token does not allow.";
    TokenClosures => "easechat_token_closures_total", counter, "Connections closed because their token expired or was revoked.";
    RatePauses => "easechat_rate_pauses_total", counter, "Publishes that waited for their identity's publish rate quota.";
    TlsHandshakes => "easechat_tls_handshakes_total", counter, "wss TLS handshakes completed (--tls-listen).";
    TlsHandshakeFailed => "easechat_tls_handshake_failures_total", counter, "wss TLS handshakes that failed, were refused or timed out.";
    HistoryChannels => "easechat_history_channels", gauge, "Channels whose history this shard keeps (--history).";
    HistoryMessages => "easechat_history_messages", gauge, "Messages held in channel histories.";
    HistoryBytes => "easechat_history_bytes", gauge, "Bytes held in channel histories (--history-bytes, --history-total-bytes).";
    HistoryEvictions => "easechat_history_evictions_total", counter, "Channel histories evicted (their epoch ended) for --history-channels or --history-total-bytes.";
    Recovered => "easechat_recoveries_total", counter, "Subscriptions from a position that recovered every missed message.";
    NotRecovered => "easechat_recoveries_failed_total", counter, "Subscriptions from a position that could not recover (other epoch, evicted, too many, too big, future).";
    Replayed => "easechat_replayed_messages_total", counter, "Messages replayed by recoveries.";
}

/// Counters one shard keeps about its own traffic: one cell per [`Metric`]
/// (gauges are filled in when a snapshot is taken).
#[derive(Debug)]
pub struct ShardStats {
    values: [Cell<u64>; Metric::ALL.len()],
    protocol_errors: [Cell<u64>; ProtocolErrorKind::ALL.len()],
}

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            values: std::array::from_fn(|_| Cell::new(0)),
            protocol_errors: std::array::from_fn(|_| Cell::new(0)),
        }
    }
}

impl ShardStats {
    /// Adds `n` to a counter: one non-atomic add.
    pub fn add(&self, metric: Metric, n: u64) {
        let cell = &self.values[metric as usize];
        cell.set(cell.get().wrapping_add(n));
    }

    /// Sets a gauge.
    pub fn set(&self, metric: Metric, value: u64) {
        self.values[metric as usize].set(value);
    }

    /// Counts one protocol error of `kind`.
    pub fn protocol_error(&self, kind: ProtocolErrorKind) {
        let cell = &self.protocol_errors[kind as usize];
        cell.set(cell.get() + 1);
    }

    /// Every value now, for shard `shard` (set the gauges first).
    pub fn snapshot(&self, shard: usize) -> StatsSnapshot {
        StatsSnapshot {
            shard,
            values: std::array::from_fn(|i| self.values[i].get()),
            protocol_errors: std::array::from_fn(|i| self.protocol_errors[i].get()),
        }
    }
}

/// One shard's figures at one moment: gauges and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// The shard.
    pub shard: usize,
    values: [u64; Metric::ALL.len()],
    /// By [`ProtocolErrorKind::ALL`] order.
    pub protocol_errors: [u64; ProtocolErrorKind::ALL.len()],
}

impl StatsSnapshot {
    /// An all-zero snapshot of `shard`.
    pub fn empty(shard: usize) -> Self {
        ShardStats::default().snapshot(shard)
    }

    /// The value of `metric`.
    pub fn get(&self, metric: Metric) -> u64 {
        self.values[metric as usize]
    }

    /// Sets the value of `metric` (tests and gauges).
    pub fn set(&mut self, metric: Metric, value: u64) {
        self.values[metric as usize] = value;
    }
}

/// The Prometheus text exposition of every shard's snapshot.
pub fn render_prometheus(snapshots: &[StatsSnapshot]) -> String {
    let mut out = String::new();
    for &metric in Metric::ALL {
        let (name, help, kind) = (metric.name(), metric.help(), metric.kind());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in snapshots {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, s.get(metric));
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
    for &metric in Metric::ALL {
        let total: u64 = snapshots.iter().map(|s| s.get(metric)).sum();
        let per_shard: Vec<String> = snapshots
            .iter()
            .map(|s| s.get(metric).to_string())
            .collect();
        let _ = write!(
            out,
            "\n  {:<36} {:>14}   per shard: {}",
            metric.name().trim_start_matches("easechat_"),
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
        let mut a = StatsSnapshot::empty(0);
        a.set(Metric::Deliveries, 7);
        a.protocol_errors[ProtocolErrorKind::Binary as usize] = 2;
        let mut b = StatsSnapshot::empty(1);
        b.set(Metric::Deliveries, 5);
        let text = render_prometheus(&[a.clone(), b.clone()]);
        assert!(text.contains("# TYPE easechat_deliveries_total counter"));
        assert!(text.contains("easechat_deliveries_total{shard=\"0\"} 7\n"));
        assert!(text.contains("easechat_deliveries_total{shard=\"1\"} 5\n"));
        assert!(text.contains("easechat_protocol_errors_total{shard=\"0\",kind=\"binary\"} 2\n"));
        let console = render_console(&[a, b]);
        assert!(console.contains("deliveries_total"));
        assert!(console.contains("12   per shard: 7 / 5"), "{console}");
    }

    #[test]
    fn every_series_is_exposed_once_with_a_unique_name() {
        let text = render_prometheus(&[StatsSnapshot::empty(0)]);
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        for name in &names {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
    }
}

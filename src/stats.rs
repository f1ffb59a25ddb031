//! Per-shard counters: plain cells bumped on the hot path, read on demand.

use std::cell::Cell;

/// Counters one shard keeps about its own traffic. Never shared, never
/// locked: other shards and the console ask for a snapshot over the rings.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// WebSocket connections accepted and upgraded.
    pub connections_opened: Cell<u64>,
    /// Text messages received from clients.
    pub messages_in: Cell<u64>,
    /// `1t` publishes received from clients (and the console).
    pub publishes: Cell<u64>,
    /// `1r` frames queued to subscribers on this shard.
    pub deliveries: Cell<u64>,
    /// Connections closed as slow consumers.
    pub slow_consumers: Cell<u64>,
    /// Connections closed for a protocol error.
    pub protocol_errors: Cell<u64>,
    /// Connections closed for passing a limit.
    pub limit_closures: Cell<u64>,
    /// Connections closed because they stopped answering pings.
    pub keepalive_closures: Cell<u64>,
    /// Connections refused with HTTP 503 (`--max-connections`).
    pub refused_connections: Cell<u64>,
}

/// Adds `n` to a counter cell.
pub fn bump(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

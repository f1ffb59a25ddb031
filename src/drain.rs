//! Lame-duck drain (SIGUSR2 or the console's `drain`), as NATS does it: the
//! nexus leaves the listen group at once (the accept loop retires its
//! listener, see [`shards::listener`]), `/healthz` answers 503, and after
//! `--lame-duck-grace` the open connections are closed with 1001
//! `server draining`, spread evenly with jitter over `--lame-duck-duration`,
//! so reconnecting clients reach the successor process a few at a time.
//! Then shard 0 stops the nexus, which exits 0.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use crate::router::ShardMsg;
use crate::shard::ShardState;

/// The close reason of a drain's closes.
pub const DRAIN_REASON: &str = "server draining";
/// The close code of a drain's closes (going away: reconnect elsewhere).
pub const DRAIN_CODE: u16 = 1001;
/// Slack after the duration before shard 0 stops the nexus, so every shard
/// has made its last scheduled close.
const STOP_SLACK: Duration = Duration::from_millis(200);

/// When each of `count` connections is closed, as offsets from the start
/// of the close phase: connection `i` gets a random instant in the `i`-th of
/// `count` equal slots of `duration`, so the closes are even overall and
/// never synchronised. `unit` yields numbers in `[0, 1)`.
pub fn close_offsets(
    count: usize,
    duration: Duration,
    mut unit: impl FnMut() -> f64,
) -> Vec<Duration> {
    let slot = duration.as_secs_f64() / count.max(1) as f64;
    (0..count)
        .map(|i| Duration::from_secs_f64(slot * (i as f64 + unit())))
        .collect()
}

/// Starts a drain on every shard (from shard 0: console or SIGUSR2).
pub fn start(shard: &ShardState) {
    if shard.draining.reason().is_some() {
        return;
    }
    info!(
        duration = ?shard.config.live.lame_duck_duration(),
        grace = ?shard.config.live.lame_duck_grace(),
        "draining: leaving the listen group, /healthz 503, then closing every connection with 1001"
    );
    for peer in shard.router.links().peers() {
        shard.router.send(peer, ShardMsg::Drain);
    }
    shard.begin_drain();
}

/// One shard's drain task: waits for the drain, then closes this shard's
/// connections on schedule; on shard 0 it then stops the nexus.
pub async fn run(state: Rc<ShardState>) {
    futures_lite::future::or(state.draining.wait(), state.shutdown.wait()).await;
    if state.shutdown.reason().is_some() {
        return;
    }
    let started = Instant::now();
    let grace = state.config.live.lame_duck_grace();
    let duration = state.config.live.lame_duck_duration();
    if !sleep_unless_stopped(&state, grace).await {
        return;
    }
    let close_phase = Instant::now();
    let connections = state.open_connections();
    let offsets = close_offsets(connections.len(), duration, fastrand::f64);
    let mut order: Vec<_> = offsets.into_iter().zip(connections).collect();
    order.sort_by_key(|(offset, _)| *offset);
    info!(
        shard = state.id,
        connections = order.len(),
        "draining: closing connections"
    );
    for (offset, conn) in order {
        let wait = (close_phase + offset).saturating_duration_since(Instant::now());
        if !sleep_unless_stopped(&state, wait).await {
            return;
        }
        conn.outbox.close(DRAIN_CODE, DRAIN_REASON);
    }
    // Connections upgraded after the list was taken (queued at the start).
    for conn in state.open_connections() {
        conn.outbox.close(DRAIN_CODE, DRAIN_REASON);
    }
    if state.id == 0 {
        let end = close_phase + duration + STOP_SLACK;
        if !sleep_unless_stopped(&state, end.saturating_duration_since(Instant::now())).await {
            return;
        }
        info!(elapsed = ?started.elapsed(), "drained: stopping");
        let reason: Arc<str> = Arc::from(DRAIN_REASON);
        for peer in state.router.links().peers() {
            state.router.send(peer, ShardMsg::Shutdown(reason.clone()));
        }
        state.begin_shutdown(reason);
    }
}

/// Sleeps `wait`; false if the nexus started stopping meanwhile.
async fn sleep_unless_stopped(state: &ShardState, wait: Duration) -> bool {
    futures_lite::future::or(
        async {
            glommio::timer::sleep(wait).await;
            true
        },
        async {
            state.shutdown.wait().await;
            false
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_spread_evenly_over_the_duration() {
        let duration = Duration::from_secs(10);
        let mut next = 0.0;
        let offsets = close_offsets(4, duration, || {
            next = (next + 0.37) % 1.0;
            next
        });
        assert_eq!(offsets.len(), 4);
        for (i, offset) in offsets.iter().enumerate() {
            let slot = Duration::from_millis(2500);
            assert!(*offset >= slot * i as u32 && *offset < slot * (i as u32 + 1));
        }
        assert!(close_offsets(0, duration, fastrand::f64).is_empty());
        let all_at_once = close_offsets(3, Duration::ZERO, fastrand::f64);
        assert!(all_at_once.iter().all(|o| o.is_zero()));
    }
}

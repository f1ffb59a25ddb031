//! A lock-free token bucket (GCRA, the generic cell rate algorithm): one
//! atomic "theoretical arrival time" per identity, shared by every shard.
//!
//! Unlike a limiter built once with a fixed quota, the rate and burst are
//! passed on each call, so a policy reload changes them for live
//! connections. The clock is passed in (nanoseconds on any monotonic scale).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One identity's publish budget (messages or bytes).
#[derive(Debug, Default)]
pub struct RateMeter {
    /// When the bucket would be full again, in the caller's nanoseconds.
    tat: AtomicU64,
}

impl RateMeter {
    /// Takes `cost` units at `now` for a bucket refilling at `rate` units
    /// per second and holding `burst` units; returns how long the caller
    /// must wait before going ahead (zero when within the budget). The
    /// units are taken either way: a caller that waits has paid.
    pub fn take(&self, now: u64, cost: f64, rate: f64, burst: f64) -> Duration {
        let per_unit = 1e9 / rate;
        let increment = (cost * per_unit) as u64;
        // A burst of at least one message (or one message's bytes).
        let tolerance = (burst.max(cost) * per_unit) as u64;
        let mut current = self.tat.load(Ordering::Relaxed);
        loop {
            let tat = current.max(now);
            let next = tat.saturating_add(increment);
            match self
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    let ready_at = next.saturating_sub(tolerance);
                    return Duration::from_nanos(ready_at.saturating_sub(now));
                }
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let meter = RateMeter::default();
        let t0 = 10 * S;
        for _ in 0..10 {
            assert_eq!(meter.take(t0, 1.0, 10.0, 10.0), Duration::ZERO);
        }
        // The 11th within the same instant waits one interval (100 ms).
        assert_eq!(meter.take(t0, 1.0, 10.0, 10.0), Duration::from_millis(100));
        // After a full second the bucket has refilled.
        assert_eq!(meter.take(t0 + 3 * S, 1.0, 10.0, 10.0), Duration::ZERO);
    }

    #[test]
    fn over_a_long_run_the_average_is_the_rate() {
        let meter = RateMeter::default();
        let mut now = S;
        let mut waited = Duration::ZERO;
        for _ in 0..1000 {
            let wait = meter.take(now, 1.0, 100.0, 1.0);
            waited += wait;
            now += wait.as_nanos() as u64;
        }
        // 1,000 messages at 100/s take about 10 s.
        assert!((9.9..=10.1).contains(&waited.as_secs_f64()), "{waited:?}");
    }

    #[test]
    fn a_message_larger_than_the_burst_still_passes_alone() {
        let meter = RateMeter::default();
        assert_eq!(meter.take(S, 5000.0, 1000.0, 100.0), Duration::ZERO);
        assert!(meter.take(S, 1.0, 1000.0, 100.0) > Duration::from_millis(4000));
    }
}

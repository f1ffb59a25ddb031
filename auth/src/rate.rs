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
    /// per second and holding `burst` units. [`Taken::Go`]: the units are
    /// taken; go ahead after the wait it says (zero within the budget).
    /// [`Taken::Retry`]: going ahead would mean waiting longer than
    /// `max_wait`, so nothing was taken; wait that long and ask again. So
    /// the debt never passes `max_wait`, however many callers ask.
    pub fn take(&self, now: u64, cost: f64, rate: f64, burst: f64, max_wait: Duration) -> Taken {
        let per_unit = 1e9 / rate;
        let increment = (cost * per_unit) as u64;
        // A burst of at least one message (or one message's bytes).
        let tolerance = (burst.max(cost) * per_unit) as u64;
        let mut current = self.tat.load(Ordering::Relaxed);
        loop {
            let tat = current.max(now);
            let next = tat.saturating_add(increment);
            let wait = Duration::from_nanos(next.saturating_sub(tolerance).saturating_sub(now));
            if wait > max_wait {
                return Taken::Retry(max_wait);
            }
            match self
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Taken::Go(wait),
                Err(seen) => current = seen,
            }
        }
    }
}

/// What [`RateMeter::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Taken: go ahead after this wait.
    Go(Duration),
    /// Not taken: wait this long, then ask again.
    Retry(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const CAP: Duration = Duration::from_secs(5);

    fn wait(taken: Taken) -> Duration {
        match taken {
            Taken::Go(w) => w,
            Taken::Retry(w) => panic!("retry after {w:?}"),
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let meter = RateMeter::default();
        let t0 = 10 * S;
        for _ in 0..10 {
            assert_eq!(wait(meter.take(t0, 1.0, 10.0, 10.0, CAP)), Duration::ZERO);
        }
        // The 11th within the same instant waits one interval (100 ms).
        assert_eq!(
            wait(meter.take(t0, 1.0, 10.0, 10.0, CAP)),
            Duration::from_millis(100)
        );
        // After a full second the bucket has refilled.
        assert_eq!(
            wait(meter.take(t0 + 3 * S, 1.0, 10.0, 10.0, CAP)),
            Duration::ZERO
        );
    }

    #[test]
    fn over_a_long_run_the_average_is_the_rate() {
        let meter = RateMeter::default();
        let mut now = S;
        let mut waited = Duration::ZERO;
        for _ in 0..1000 {
            let w = wait(meter.take(now, 1.0, 100.0, 1.0, CAP));
            waited += w;
            now += w.as_nanos() as u64;
        }
        // 1,000 messages at 100/s take about 10 s.
        assert!((9.9..=10.1).contains(&waited.as_secs_f64()), "{waited:?}");
    }

    #[test]
    fn a_message_larger_than_the_burst_still_passes_alone() {
        let meter = RateMeter::default();
        assert_eq!(
            wait(meter.take(S, 5000.0, 1000.0, 100.0, CAP)),
            Duration::ZERO
        );
        assert!(wait(meter.take(S, 1.0, 1000.0, 100.0, CAP)) > Duration::from_millis(4000));
    }

    #[test]
    fn many_callers_cannot_run_up_a_debt_past_the_cap() {
        // 100 connections of one identity at 1 message/s: over 60 s, about
        // 60 messages (plus the cap's worth), not 100 per 5 s.
        let meter = RateMeter::default();
        let mut next_try = vec![0u64; 100];
        let mut sent = 0;
        let mut now = 0;
        while now < 60 * S {
            for t in next_try.iter_mut().filter(|t| **t <= now) {
                match meter.take(now, 1.0, 1.0, 1.0, CAP) {
                    Taken::Go(w) => {
                        sent += 1;
                        *t = now + w.as_nanos() as u64;
                    }
                    Taken::Retry(w) => *t = now + w.as_nanos() as u64,
                }
            }
            now += S / 10;
        }
        assert!((60..=67).contains(&sent), "{sent} messages in 60 s at 1/s");
    }
}

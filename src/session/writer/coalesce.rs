//! The flusher's adaptive coalescing delay: when to wait before a round of
//! writes, and how long.
//!
//! Two signals, both averaged over rounds so one late round (a scheduling
//! hiccup) does not switch anything:
//! - **frames per send**: near one, the shard writes each frame as it comes;
//!   above one, frames piled up while the previous round was being written;
//! - **duty**: the share of time the flusher spends writing — a round's
//!   length against the time from the end of the previous round to the end
//!   of this one.
//!
//! Waiting starts when frames pile up *and* the flusher is busy most of the
//! time (the shard cannot write one send per frame any more); it stops when
//! sends carry about one frame again. While it lasts, each round waits one
//! and a half times as long as the last round's writing took (so the shard
//! spends at most about 40% of its time in `send`, each carrying that many
//! more frames), never longer than the bound.

use std::time::Duration;

/// Average frames per send above which frames count as piling up.
const PILE_UP: f64 = 1.5;
/// Average frames per send below which waiting stops.
const CAUGHT_UP: f64 = 1.2;
/// Average duty above which the flusher counts as busy.
const BUSY_DUTY: f64 = 0.7;
/// Weight of the latest round in the moving averages.
const WEIGHT: f64 = 0.125;
/// The wait before a busy round, as a multiple of the last round's writing
/// time. Measured on the 2-CPU VM (350 clients, 1 channel; 2026-11-25):
/// 1.5 with a 1.5 ms bound took the closed loop from 0.57 to 0.50 core at
/// the same p99 as 1.0 with a 1 ms bound.
const WAIT_PER_ROUND: f64 = 1.5;
/// After this long without a round, the load is gone: start afresh.
const FORGET_AFTER: Duration = Duration::from_millis(100);

/// The delay controller of one flusher.
#[derive(Debug, Clone)]
pub struct Coalescer {
    max: Duration,
    frames_per_send: f64,
    duty: f64,
    waiting: bool,
    delay: Duration,
}

impl Coalescer {
    /// A controller whose delay never exceeds `max` (zero: never waits).
    pub fn new(max: Duration) -> Self {
        Coalescer {
            max,
            frames_per_send: 1.0,
            duty: 0.0,
            waiting: false,
            delay: Duration::ZERO,
        }
    }

    /// The wait before the next round.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Takes in one round: `frames` written with `sends` sends in `round`,
    /// after `idle` without a round (from the previous round's end to this
    /// one's start, the deliberate delay included).
    pub fn observe(&mut self, frames: usize, sends: usize, round: Duration, idle: Duration) {
        if sends == 0 {
            return;
        }
        if idle >= FORGET_AFTER {
            *self = Coalescer::new(self.max);
        }
        let latest = frames as f64 / sends as f64;
        self.frames_per_send += (latest - self.frames_per_send) * WEIGHT;
        let total = (round + idle).as_secs_f64();
        let duty = if total > 0.0 {
            round.as_secs_f64() / total
        } else {
            1.0
        };
        self.duty += (duty - self.duty) * WEIGHT;
        if self.waiting {
            self.waiting = self.frames_per_send >= CAUGHT_UP;
        } else {
            self.waiting = self.frames_per_send >= PILE_UP && self.duty >= BUSY_DUTY;
        }
        self.delay = if self.waiting {
            round.mul_f64(WAIT_PER_ROUND).min(self.max)
        } else {
            Duration::ZERO
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const MAX: Duration = Duration::from_micros(1000);

    #[test]
    fn production_load_never_waits() {
        // One frame per send, half the time idle; even an occasional pile-up
        // (a scheduling hiccup) does not start the delay.
        let mut c = Coalescer::new(MAX);
        for i in 0..200 {
            let frames = if i % 20 == 0 { 4 * 349 } else { 349 };
            c.observe(frames, 349, MS * 13 / 10, MS * 12 / 10);
            assert_eq!(c.delay(), Duration::ZERO, "round {i}");
        }
    }

    #[test]
    fn sustained_pile_up_waits_within_the_bound_then_stops() {
        let mut c = Coalescer::new(MAX);
        // Busy: frames pile up and rounds follow each other at once.
        for _ in 0..50 {
            c.observe(6 * 349, 349, MS * 2, Duration::from_micros(50));
        }
        assert_eq!(c.delay(), MAX, "waits, capped at the bound");
        c.observe(6 * 349, 349, Duration::from_micros(400), Duration::ZERO);
        assert_eq!(
            c.delay(),
            Duration::from_micros(600),
            "one and a half times the last round"
        );
        // The load drops: one frame per send again.
        for _ in 0..50 {
            c.observe(349, 349, MS, MS);
        }
        assert_eq!(c.delay(), Duration::ZERO);
    }

    #[test]
    fn a_pause_in_the_load_forgets_the_past() {
        let mut c = Coalescer::new(MAX);
        for _ in 0..50 {
            c.observe(6 * 349, 349, MS * 2, Duration::ZERO);
        }
        assert_eq!(c.delay(), MAX);
        c.observe(349, 349, MS, Duration::from_secs(1));
        assert_eq!(c.delay(), Duration::ZERO);
    }

    #[test]
    fn a_zero_bound_never_waits() {
        let mut c = Coalescer::new(Duration::ZERO);
        for _ in 0..50 {
            c.observe(10 * 349, 349, MS * 5, Duration::ZERO);
        }
        assert_eq!(c.delay(), Duration::ZERO);
    }
}

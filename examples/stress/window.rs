//! The run's timeline in ns since the tool's origin: a lead-in, the
//! warm-up, then the measured window. Shared by `stress` and `floor`
//! (included there by path).

/// When each phase starts, ns since the origin.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Load starts.
    pub start: u64,
    /// Counting starts (after the warm-up).
    pub measure_from: u64,
    /// Counting and load stop.
    pub end: u64,
}

impl Window {
    /// Starts `lead_ns` after `now_ns`, warms up for `warmup` seconds and
    /// measures for `duration` seconds.
    pub fn new(now_ns: u64, lead_ns: u64, warmup: f64, duration: f64) -> Window {
        let start = now_ns + lead_ns;
        let measure_from = start + (warmup * 1e9) as u64;
        let end = measure_from + (duration * 1e9) as u64;
        Window {
            start,
            measure_from,
            end,
        }
    }
}

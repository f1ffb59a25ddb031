//! SIGTERM, SIGINT and SIGUSR2, turned into console controls.
//!
//! SIGTERM stops gracefully at once (what `docker stop` and systemd send).
//! SIGUSR2 starts a lame-duck drain (see [`crate::drain`]).
//! SIGHUP reloads the `--config` file and the access policy (see
//! [`crate::reload`]).
//! The old nexus's 3,432-hour run was ended by one stray Ctrl-C, so the
//! first SIGINT only warns; a second within [`CTRL_C_WINDOW`] stops.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;
use tracing::warn;

use crate::console::{Control, DEFAULT_STOP_REASON};

/// Two Ctrl-C within this window stop the nexus.
pub const CTRL_C_WINDOW: Duration = Duration::from_secs(5);

/// Remembers the last Ctrl-C and decides whether this one stops.
#[derive(Debug, Default)]
pub struct CtrlC {
    last: Option<Instant>,
}

impl CtrlC {
    /// Records a Ctrl-C at `now`; true when it is the second within the window.
    pub fn press(&mut self, now: Instant) -> bool {
        match self.last {
            Some(last) if now.duration_since(last) <= CTRL_C_WINDOW => true,
            _ => {
                self.last = Some(now);
                false
            }
        }
    }
}

/// What a first Ctrl-C tells the operator, with the window from
/// [`CTRL_C_WINDOW`].
fn again_hint() -> String {
    format!(
        "press Ctrl-C again within {} s, or type stop",
        CTRL_C_WINDOW.as_secs_f64()
    )
}

/// Starts the thread that turns signals into [`Control::Stop`].
/// Starts the thread that turns signals into [`Control::Stop`] and
/// [`Control::Drain`].
pub fn spawn_handler(control: Sender<Control>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR2, SIGHUP])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut ctrl_c = CtrlC::default();
            for signal in signals.forever() {
                let stop = match signal {
                    SIGHUP => {
                        if control.send(Control::Reload).is_err() {
                            return;
                        }
                        false
                    }
                    SIGUSR2 => {
                        if control.send(Control::Drain).is_err() {
                            return;
                        }
                        false
                    }
                    SIGTERM => true,
                    _ if ctrl_c.press(Instant::now()) => true,
                    _ => {
                        let hint = again_hint();
                        warn!("Ctrl-C ignored: {hint}");
                        // Never eprintln!: it panics when standard error is gone.
                        let _ = writeln!(std::io::stderr(), "{hint}");
                        false
                    }
                };
                if stop
                    && control
                        .send(Control::Stop(DEFAULT_STOP_REASON.into()))
                        .is_err()
                {
                    return;
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_second_ctrl_c_within_the_window_stops() {
        let t0 = Instant::now();
        let mut ctrl_c = CtrlC::default();
        assert!(!ctrl_c.press(t0));
        assert!(
            !ctrl_c.press(t0 + Duration::from_secs(6)),
            "too late: warns again"
        );
        assert!(ctrl_c.press(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn the_hint_states_the_window() {
        assert_eq!(
            again_hint(),
            format!(
                "press Ctrl-C again within {} s, or type stop",
                CTRL_C_WINDOW.as_secs()
            )
        );
    }
}

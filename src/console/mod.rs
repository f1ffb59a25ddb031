//! The operator console: commands typed on standard input, run on shard 0.
//!
//! A plain thread reads standard input and hands lines to shard 0 over a
//! crossbeam channel, which shard 0 polls every [`POLL_INTERVAL`] (a glommio
//! executor cannot be woken cheaply from a foreign thread). Answers are
//! gathered from every shard over the rings. End of standard input (no
//! terminal, e.g. in a container) only ends the reader thread: the nexus
//! keeps running and is stopped by `stop` or SIGTERM.
//!
//! Signals and the admin console's requests arrive on the same channel
//! (see [`crate::signals`], [`crate::admin`]).

pub mod command;
mod exec;

use std::io::BufRead;
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use tracing::info;

pub use exec::{reload, serve};

/// The close reason of a stop that gives none (`stop`, SIGTERM, Ctrl-C twice).
pub const DEFAULT_STOP_REASON: &str = "server shutdown";

/// How often shard 0 looks for console input: the worst-case delay before a
/// command starts.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What reaches shard 0 from outside the executors.
#[derive(Debug)]
pub enum Control {
    /// A console line to parse and run.
    Line(String),
    /// Stop gracefully with this close reason (SIGTERM, second Ctrl-C).
    Stop(String),
    /// Start a lame-duck drain (SIGUSR2).
    Drain,
    /// A question or command from the admin console's thread.
    Admin(crate::admin::AdminRequest),
    /// Reload the access policy (SIGHUP).
    Reload,
}

/// Starts the thread that reads standard input line by line.
pub fn spawn_stdin_reader(control: Sender<Control>) -> std::io::Result<()> {
    thread::Builder::new()
        .name("console-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                if control.send(Control::Line(line)).is_err() {
                    return;
                }
            }
            info!("standard input closed: console off, the nexus keeps running (stop it with SIGTERM)");
        })
        .map(|_| ())
}

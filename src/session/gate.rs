//! The shard's start gate: the CPU work of starting connections — TLS
//! handshake steps, the WebSocket upgrade's decision and the session's
//! set-up — one connection at a time, with a pause for the reactor after
//! each slice of such work.
//!
//! glommio runs its run queue to the end (or to its 100 ms preemption
//! timer) before it polls I/O again. A storm of connections whose input
//! one I/O poll completed would otherwise run all their starts back to
//! back, and every other connection of the shard would wait for the whole
//! storm. Through the gate, only one start is runnable at a time, and
//! after [`GATE_SLICE`] of start work the executor polls I/O and runs
//! everyone else first: a bystander waits for at most one slice.

use std::cell::Cell;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;

/// Once the steps run since the last pause took this long (one RSA
/// signature, two ECDSA ones, many cheap steps), the shard's other tasks
/// and its I/O completions get the executor before the next step.
const GATE_SLICE: Duration = Duration::from_micros(200);
/// The pause after an expensive step: a timer wait, so the executor polls
/// I/O before the next step runs (`yield_now` would not).
const HANDSHAKE_PAUSE: Duration = Duration::from_micros(50);
/// Handshake steps that may wait for their turn on one shard; a newcomer
/// beyond it is refused at once (its client retries) rather than queued
/// past its deadline with work already spent on it.
pub const MAX_WAITING_STEPS: usize = 4096;

/// Paces a shard's TLS handshakes: one handshake step at a time, and once
/// the steps since the last pause did [`GATE_SLICE`] of work (an RSA
/// signature alone takes about a millisecond) a short timer pause, so the
/// executor polls I/O and runs everyone else before the next. Without it, a storm of ClientHellos made
/// runnable by one I/O poll would run back to back, holding every
/// bystander's delivery for the whole storm.
#[derive(Debug)]
pub struct StartGate {
    turn: Semaphore,
    waiting: Cell<usize>,
    /// Work done by steps since the last pause.
    since_pause: Cell<Duration>,
}

impl Default for StartGate {
    fn default() -> Self {
        StartGate {
            turn: Semaphore::new(1),
            waiting: Cell::new(0),
            since_pause: Cell::new(Duration::ZERO),
        }
    }
}

/// Counts a step waiting for its turn, also when its future is dropped.
struct Waiting<'a>(&'a Cell<usize>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl StartGate {
    /// Waits for this connection's turn; `None` when [`MAX_WAITING_STEPS`]
    /// already wait (shed the connection). Work done while the [`Turn`] is
    /// held counts toward the next pause; [`Turn::leave`] ends it.
    pub async fn enter(&self) -> Option<Turn<'_>> {
        if self.waiting.get() >= MAX_WAITING_STEPS {
            return None;
        }
        self.waiting.set(self.waiting.get() + 1);
        let waiting = Waiting(&self.waiting);
        // The semaphore is never closed, so the permit always comes.
        let permit = self.turn.acquire_permit(1).await.ok();
        drop(waiting);
        Some(Turn {
            gate: self,
            _permit: permit,
            started: Instant::now(),
        })
    }

    /// Runs one handshake step's `work` in a turn of its own; `None` when
    /// the connection is shed.
    pub async fn step<T>(&self, work: impl FnOnce() -> T) -> Option<T> {
        let turn = self.enter().await?;
        let result = work();
        turn.leave().await;
        Some(result)
    }
}

/// One connection's turn at the [`StartGate`].
pub struct Turn<'a> {
    gate: &'a StartGate,
    _permit: Option<glommio::sync::Permit<'a>>,
    started: Instant,
}

impl Turn<'_> {
    /// Ends the turn: after [`GATE_SLICE`] of work since the last pause
    /// (this turn's and earlier ones'), a timer pause first.
    pub async fn leave(self) {
        let gate = self.gate;
        let busy = gate.since_pause.get() + self.started.elapsed();
        if busy >= GATE_SLICE {
            gate.since_pause.set(Duration::ZERO);
            glommio::timer::sleep(HANDSHAKE_PAUSE).await;
        } else {
            gate.since_pause.set(busy);
        }
    }
}

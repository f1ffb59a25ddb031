//! A shard's work gates: bulk CPU work one connection at a time, with a
//! pause for the reactor after each slice of such work. Each shard has two:
//! the start gate (TLS handshake steps, the WebSocket upgrade's decision and
//! the session's set-up) and the bulk gate (reads of connections that have
//! more input than their share per turn: floods, large or fragmented
//! messages).
//!
//! glommio runs its run queue to the end (or to its 100 ms preemption
//! timer) before it polls I/O again. A storm of connections whose input
//! one I/O poll completed would otherwise run all their work back to
//! back, and every other connection of the shard would wait for the whole
//! storm. Through a gate, only one such connection is runnable at a time,
//! and after [`GATE_SLICE`] of its work the executor polls I/O and runs
//! everyone else first: a bystander waits for at most one slice.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;

/// Once the steps run since the last pause took this long (one RSA
/// signature, two ECDSA ones, many cheap steps), the shard's other tasks
/// and its I/O completions get the executor before the next step.
const GATE_SLICE: Duration = Duration::from_micros(200);
/// The pause after a slice of work: a timer wait, so the executor polls
/// I/O before the next turn runs (`yield_now` would not).
const PAUSE: Duration = Duration::from_micros(50);
/// Turns that may wait at one gate; beyond it [`WorkGate::enter`] answers
/// `None` at once: the start gate then sheds the newcomer (its client
/// retries) rather than queue it past its deadline with work already spent
/// on it, and a reader at the bulk gate reads without a turn.
pub const MAX_WAITING_STEPS: usize = 4096;

/// Paces one kind of a shard's bulk work: one turn at a time, and once the
/// turns since the last pause did [`GATE_SLICE`] of work (an RSA signature
/// alone takes about a millisecond; 1,800 sockets each delivering a 32 KiB
/// fragment take tens of) a short timer pause, so the executor polls I/O
/// and runs everyone else before the next. Without it, a storm of
/// ClientHellos or of large messages made runnable by one I/O poll would
/// run back to back, holding every bystander's delivery for the whole
/// storm.
#[derive(Debug)]
pub struct WorkGate {
    turn: Semaphore,
    waiting: Cell<usize>,
    /// Work done by steps since the last pause.
    since_pause: Cell<Duration>,
}

impl Default for WorkGate {
    fn default() -> Self {
        WorkGate {
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

impl WorkGate {
    /// Waits for this connection's turn; `None` when [`MAX_WAITING_STEPS`]
    /// already wait. Work done while the [`Turn`] is
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

/// Polls `work` holding `turn` for as long as the work runs without
/// waiting: if it has to wait (a read that finds no input), the turn is
/// given up at once, so a connection never holds the gate while idle.
pub async fn held_while_running<F: Future>(turn: &mut Option<Turn<'_>>, work: F) -> F::Output {
    let mut work = pin!(work);
    poll_fn(|cx| {
        let polled = work.as_mut().poll(cx);
        if polled.is_pending() {
            if let Some(turn) = turn.take() {
                turn.release();
            }
        }
        polled
    })
    .await
}

/// One connection's turn at the [`WorkGate`].
pub struct Turn<'a> {
    gate: &'a WorkGate,
    _permit: Option<glommio::sync::Permit<'a>>,
    started: Instant,
}

impl Turn<'_> {
    /// Ends the turn without a pause; its work still counts toward the
    /// next one.
    pub fn release(self) {
        let gate = self.gate;
        gate.since_pause
            .set(gate.since_pause.get() + self.started.elapsed());
    }

    /// Ends the turn: after [`GATE_SLICE`] of work since the last pause
    /// (this turn's and earlier ones'), a timer pause first.
    pub async fn leave(self) {
        let gate = self.gate;
        let busy = gate.since_pause.get() + self.started.elapsed();
        if busy >= GATE_SLICE {
            gate.since_pause.set(Duration::ZERO);
            glommio::timer::sleep(PAUSE).await;
        } else {
            gate.since_pause.set(busy);
        }
    }
}

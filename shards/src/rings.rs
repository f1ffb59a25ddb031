//! The mesh of bounded SPSC rings joining every pair of shards.
//!
//! Each ordered pair of shards (a, b) has its own ring of `ring_size` slots,
//! so a message from a to b never contends with any other producer. A full
//! ring makes the sender wait (back-pressure), it never drops.
//!
//! Beside the rings sits one shared table of byte counters, one per ordered
//! pair: the sender charges what it hands over, the receiver discharges what
//! it has handled, so a sender knows how much of its output is still held by
//! the ring or the peer without asking it (see [`crate::links`]).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::{GlommioError, ResourceType};

/// One inbound ring: messages from shard `from` to this shard.
pub type Inbound<M> = (usize, ConnectedReceiver<M>);

/// The peer's end of a ring is gone (the peer shard stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring to shard {0} is closed")]
pub struct RingClosed(pub usize);

/// Why [`Rings::try_send`] did not send.
#[derive(Debug)]
pub enum TrySendError<M> {
    /// The ring is full; the message is handed back.
    Full(M),
    /// The peer's end is gone; the message is handed back.
    Closed(M),
    /// No such shard (or this shard itself).
    Invalid(usize),
}

/// Counters of one shard's outbound ring traffic, read for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Messages handed to a ring.
    pub sent: u64,
    /// Messages that found their ring full (counted once per message, however
    /// long it then waited).
    pub full_waits: u64,
}

/// One counter on its own cache line, so two shards' counters never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
struct PaddedCounter(AtomicUsize);

/// Bytes handed from shard `from` to shard `to` and not yet handled by `to`,
/// for every ordered pair of shards; shared by all shards.
#[derive(Debug)]
pub struct InFlight {
    shards: usize,
    cells: Box<[PaddedCounter]>,
}

impl InFlight {
    /// A zeroed table for `shards` shards.
    pub fn new(shards: usize) -> Self {
        InFlight {
            shards,
            cells: (0..shards * shards)
                .map(|_| PaddedCounter::default())
                .collect(),
        }
    }

    fn cell(&self, from: usize, to: usize) -> &AtomicUsize {
        &self.cells[from * self.shards + to].0
    }
}

/// This shard's view of the mesh: senders to every peer, receivers from them.
pub struct Rings<M: Send> {
    senders: Senders<M>,
    receivers: Option<Receivers<M>>,
    in_flight: Arc<InFlight>,
    sent: Cell<u64>,
    full_waits: Cell<u64>,
}

impl<M: Send> fmt::Debug for Rings<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rings")
            .field("shard", &self.shard_id())
            .field("shards", &self.nr_shards())
            .field("stats", &self.stats())
            .finish()
    }
}

impl<M: Send + 'static> Rings<M> {
    /// Joins the mesh; every shard must call this with a clone of `mesh`.
    pub(crate) async fn join(
        mesh: MeshBuilder<M, Full>,
        in_flight: Arc<InFlight>,
    ) -> Result<Self, GlommioError<()>> {
        let (senders, receivers) = mesh.join().await?;
        Ok(Rings {
            senders,
            receivers: Some(receivers),
            in_flight,
            sent: Cell::new(0),
            full_waits: Cell::new(0),
        })
    }
}

impl<M: Send> Rings<M> {
    /// This shard's index in the mesh, `0..nr_shards()`; it is the shard id.
    pub fn shard_id(&self) -> usize {
        self.senders.peer_id()
    }

    /// How many shards the mesh joins (including this one).
    pub fn nr_shards(&self) -> usize {
        self.senders.nr_consumers()
    }

    /// The ids of every other shard.
    pub fn peers(&self) -> impl Iterator<Item = usize> + '_ {
        let me = self.shard_id();
        (0..self.nr_shards()).filter(move |&id| id != me)
    }

    /// Sends `msg` to shard `to`, waiting while its ring is full. A wait is
    /// counted in [`RingStats::full_waits`] unless `counted` says the caller
    /// already counted this message as having found the ring full.
    pub async fn send(&self, to: usize, msg: M, counted: bool) -> Result<(), RingClosed> {
        let sent = match self.senders.try_send_to(to, msg) {
            Ok(()) => Ok(()),
            Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                if !counted {
                    self.full_waits.set(self.full_waits.get() + 1);
                }
                self.senders
                    .send_to(to, msg)
                    .await
                    .map_err(|_| RingClosed(to))
            }
            Err(_) => Err(RingClosed(to)),
        };
        if sent.is_ok() {
            self.sent.set(self.sent.get() + 1);
        }
        sent
    }

    /// Sends `msg` to shard `to` if its ring has room; hands it back if not.
    /// A full ring is not counted here: the caller that queues the message
    /// counts it once with [`Rings::note_full`].
    pub fn try_send(&self, to: usize, msg: M) -> Result<(), TrySendError<M>> {
        match self.senders.try_send_to(to, msg) {
            Ok(()) => {
                self.sent.set(self.sent.get() + 1);
                Ok(())
            }
            Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                Err(TrySendError::Full(msg))
            }
            Err(GlommioError::Closed(ResourceType::Channel(msg))) => Err(TrySendError::Closed(msg)),
            Err(_) => Err(TrySendError::Invalid(to)),
        }
    }

    /// Takes the inbound rings (once); the caller drains each in its own task.
    pub fn take_inbound(&mut self) -> Vec<Inbound<M>> {
        self.receivers
            .take()
            .map(|mut r| r.streams())
            .unwrap_or_default()
    }

    /// Records `bytes` handed to shard `to` (in its ring or queued for it).
    pub fn charge(&self, to: usize, bytes: usize) {
        self.in_flight
            .cell(self.shard_id(), to)
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records that this shard handled `bytes` that shard `from` had charged.
    pub fn discharge(&self, from: usize, bytes: usize) {
        self.in_flight
            .cell(from, self.shard_id())
            .fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Takes back a charge for bytes that will never reach shard `to`
    /// (its ring closed).
    pub fn discharge_own(&self, to: usize, bytes: usize) {
        self.in_flight
            .cell(self.shard_id(), to)
            .fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Counts one message that found its ring full and had to wait.
    pub fn note_full(&self) {
        self.full_waits.set(self.full_waits.get() + 1);
    }

    /// Bytes handed to shard `to` that it has not handled yet.
    pub fn in_flight(&self, to: usize) -> usize {
        self.in_flight
            .cell(self.shard_id(), to)
            .load(Ordering::Relaxed)
    }

    /// Counters of outbound traffic so far.
    pub fn stats(&self) -> RingStats {
        RingStats {
            sent: self.sent.get(),
            full_waits: self.full_waits.get(),
        }
    }
}

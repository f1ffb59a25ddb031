//! The mesh of bounded SPSC rings joining every pair of shards.
//!
//! Each ordered pair of shards (a, b) has its own ring of `ring_size` slots,
//! so a message from a to b never contends with any other producer. A full
//! ring makes the sender wait (back-pressure), it never drops: the wait is
//! counted so operators can see when `--ring-size` is too small.

use std::cell::Cell;
use std::fmt;

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
    /// Sends that found the ring full (the sender then waited or queued).
    pub full_waits: u64,
}

/// This shard's view of the mesh: senders to every peer, receivers from them.
pub struct Rings<M: Send> {
    senders: Senders<M>,
    receivers: Option<Receivers<M>>,
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
    pub(crate) async fn join(mesh: MeshBuilder<M, Full>) -> Result<Self, GlommioError<()>> {
        let (senders, receivers) = mesh.join().await?;
        Ok(Rings {
            senders,
            receivers: Some(receivers),
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

    /// Sends `msg` to shard `to`, waiting while its ring is full.
    pub async fn send(&self, to: usize, msg: M) -> Result<(), RingClosed> {
        self.sent.set(self.sent.get() + 1);
        match self.senders.try_send_to(to, msg) {
            Ok(()) => Ok(()),
            Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                self.full_waits.set(self.full_waits.get() + 1);
                self.senders
                    .send_to(to, msg)
                    .await
                    .map_err(|_| RingClosed(to))
            }
            Err(_) => Err(RingClosed(to)),
        }
    }

    /// Sends `msg` to shard `to` if its ring has room; hands it back if not.
    pub fn try_send(&self, to: usize, msg: M) -> Result<(), TrySendError<M>> {
        match self.senders.try_send_to(to, msg) {
            Ok(()) => {
                self.sent.set(self.sent.get() + 1);
                Ok(())
            }
            Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                self.full_waits.set(self.full_waits.get() + 1);
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

    /// Counters of outbound traffic so far.
    pub fn stats(&self) -> RingStats {
        RingStats {
            sent: self.sent.get(),
            full_waits: self.full_waits.get(),
        }
    }
}

//! Ordered, never-blocking sends to every peer shard, with a byte budget per
//! peer and waiting for room per sender.
//!
//! [`Links::send`] puts a message straight into the peer's ring when it has
//! a free slot and nothing is queued before it; otherwise the message joins
//! that peer's backlog, which a pump task moves into the ring in order as
//! room appears. Nothing is dropped or reordered, and the caller never waits.
//!
//! What bounds memory is the budget: every message is charged its
//! [`Weighed::weight`] from the moment it is handed over until the peer has
//! handled it (ring and backlog together). A sender that must not outrun a
//! peer asks [`Links::has_room`] before sending and otherwise waits in
//! [`Links::room`]: only that sender waits, and only for the peers it sends
//! to, so a congested peer never pauses traffic meant for another.
//!
//! A pump also asks a [`Deferred`] source for messages that are better sent
//! late than queued early: state whose latest value is all that matters
//! (the application keeps it coalesced, so churn costs no memory here).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::{future, StreamExt};
use glommio::channels::shared_channel::ConnectedReceiver;

use crate::rings::{RingStats, Rings, TrySendError};

/// How often a pump looks whether a peer made room while senders wait for it.
/// The peer discharges from its own thread, which cannot wake this one
/// cheaply; polling happens only while somebody waits.
const ROOM_POLL: Duration = Duration::from_micros(500);

/// Ring messages a drain handles before it lets other tasks run.
const DRAIN_BATCH: usize = 64;

/// The bytes a message holds while it travels: what budgets count.
pub trait Weighed {
    /// Approximate heap and inline bytes of this message.
    fn weight(&self) -> usize;
}

/// Messages produced on demand when a pump has room, instead of being
/// queued ahead of time.
pub trait Deferred<M> {
    /// The next message owed to `peer`, if any.
    fn next_for(&self, peer: usize) -> Option<M>;
}

/// No deferred messages.
#[derive(Debug, Default)]
pub struct NothingDeferred;

impl<M> Deferred<M> for NothingDeferred {
    fn next_for(&self, _peer: usize) -> Option<M> {
        None
    }
}

/// One peer's queue and the tasks waiting on it.
struct Peer<M> {
    backlog: RefCell<VecDeque<M>>,
    /// Bytes of the messages in `backlog`.
    backlog_bytes: Cell<usize>,
    /// The pump holds a message while it waits for a ring slot, so a new
    /// message must queue behind it even though `backlog` looks empty.
    holding: Cell<bool>,
    /// The pump task, asleep while there is nothing to move.
    pump: Cell<Option<Waker>>,
    /// Senders waiting for this peer's in-flight bytes to fall below budget.
    room_waiters: RefCell<Vec<Waker>>,
}

impl<M> Default for Peer<M> {
    fn default() -> Self {
        Peer {
            backlog: RefCell::new(VecDeque::new()),
            backlog_bytes: Cell::new(0),
            holding: Cell::new(false),
            pump: Cell::new(None),
            room_waiters: RefCell::new(Vec::new()),
        }
    }
}

impl<M> Peer<M> {
    fn is_clear(&self) -> bool {
        !self.holding.get() && self.backlog.borrow().is_empty()
    }

    fn wake_pump(&self) {
        if let Some(pump) = self.pump.take() {
            pump.wake();
        }
    }

    fn wake_room_waiters(&self) {
        for waker in self.room_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

/// A shard's ordered, budgeted links to every other shard; see the module docs.
pub struct Links<M: Send + Weighed + 'static> {
    rings: Rc<Rings<M>>,
    peers: Vec<Rc<Peer<M>>>,
    budget: usize,
}

impl<M: Send + Weighed + 'static> std::fmt::Debug for Links<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("shard", &self.rings.shard_id())
            .field("budget", &self.budget)
            .field("backlog_bytes", &self.backlog_bytes())
            .finish()
    }
}

impl<M: Send + Weighed + 'static> Links<M> {
    /// Wraps `rings` with a budget of `budget` in-flight bytes per peer and
    /// starts one pump task per peer (call it inside the shard's executor).
    pub fn new(rings: Rings<M>, budget: usize, deferred: Rc<dyn Deferred<M>>) -> Self {
        let rings = Rc::new(rings);
        let peers: Vec<Rc<Peer<M>>> = (0..rings.nr_shards()).map(|_| Rc::default()).collect();
        for peer in rings.peers() {
            glommio::spawn_local(pump(
                rings.clone(),
                peer,
                peers[peer].clone(),
                deferred.clone(),
                budget,
            ))
            .detach();
        }
        Links {
            rings,
            peers,
            budget,
        }
    }

    /// This shard's id.
    pub fn shard_id(&self) -> usize {
        self.rings.shard_id()
    }

    /// Number of shards.
    pub fn nr_shards(&self) -> usize {
        self.rings.nr_shards()
    }

    /// The ids of every other shard.
    pub fn peers(&self) -> impl Iterator<Item = usize> + '_ {
        self.rings.peers()
    }

    /// Sends `msg` to shard `to`, in order after anything queued for it.
    /// Never waits and never drops (except for a peer that has stopped).
    pub fn send(&self, to: usize, msg: M) {
        let Some(peer) = self.peers.get(to).filter(|_| to != self.shard_id()) else {
            return;
        };
        let weight = msg.weight();
        self.rings.charge(to, weight);
        let msg = if peer.is_clear() {
            match self.rings.try_send(to, msg) {
                Ok(()) => return,
                Err(TrySendError::Full(msg)) => msg,
                // A closed ring means that shard is stopping: nothing to deliver.
                Err(_) => {
                    self.rings.discharge_own(to, weight);
                    return;
                }
            }
        } else {
            msg
        };
        self.rings.note_full();
        peer.backlog.borrow_mut().push_back(msg);
        peer.backlog_bytes.set(peer.backlog_bytes.get() + weight);
        peer.wake_pump();
    }

    /// Asks the pump for `to` to look at the [`Deferred`] source again.
    pub fn kick(&self, to: usize) {
        if let Some(peer) = self.peers.get(to) {
            peer.wake_pump();
        }
    }

    /// True when shard `to` holds less than the budget of this shard's bytes.
    pub fn has_room(&self, to: usize) -> bool {
        to == self.shard_id() || self.rings.in_flight(to) < self.budget
    }

    /// Waits until every peer in `peers` has room. Only the caller waits.
    pub async fn room(&self, peers: impl Iterator<Item = usize> + Clone) {
        poll_fn(|cx| {
            let mut ready = true;
            for to in peers.clone() {
                if !self.has_room(to) {
                    ready = false;
                    let peer = &self.peers[to];
                    peer.room_waiters.borrow_mut().push(cx.waker().clone());
                    peer.wake_pump();
                }
            }
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Waits until every backlog has been moved into the rings (shutdown).
    pub async fn flush(&self) {
        poll_fn(|cx| {
            for peer in &self.peers {
                if !peer.is_clear() {
                    peer.room_waiters.borrow_mut().push(cx.waker().clone());
                    return Poll::Pending;
                }
            }
            Poll::Ready(())
        })
        .await
    }

    /// Bytes queued in backlogs toward every peer (a gauge).
    pub fn backlog_bytes(&self) -> usize {
        self.peers.iter().map(|p| p.backlog_bytes.get()).sum()
    }

    /// Bytes handed to other shards and not yet handled by them (a gauge).
    pub fn in_flight_bytes(&self) -> usize {
        self.rings.peers().map(|to| self.rings.in_flight(to)).sum()
    }

    /// Outbound ring counters.
    pub fn stats(&self) -> RingStats {
        self.rings.stats()
    }

    /// Handles every message arriving from shard `from` with `handle`, in
    /// order, until that shard's end of the ring closes. Each message is
    /// discharged from the sender's budget once handled. A message `ready`
    /// says cannot be handled yet (it would pass a budget of its own) waits,
    /// and the messages behind it with it: the sender's budget then fills
    /// and its own senders pause, so back-pressure crosses shards.
    pub fn drain<F, R>(
        &self,
        from: usize,
        mut ring: ConnectedReceiver<M>,
        mut ready: R,
        mut handle: F,
    ) -> impl Future<Output = ()> + 'static
    where
        F: FnMut(usize, M) + 'static,
        R: FnMut(&M) -> bool + 'static,
    {
        let rings = self.rings.clone();
        async move {
            let mut handled = 0usize;
            while let Some(msg) = ring.next().await {
                while !ready(&msg) {
                    glommio::timer::sleep(ROOM_POLL).await;
                }
                let weight = msg.weight();
                handle(from, msg);
                rings.discharge(from, weight);
                handled += 1;
                if handled.is_multiple_of(DRAIN_BATCH) {
                    // A busy ring never makes `next` wait: let others run.
                    future::yield_now().await;
                }
            }
        }
    }
}

/// Moves one peer's backlog (and its deferred messages) into its ring, in
/// order, waiting for room; wakes senders waiting for the peer's budget.
async fn pump<M: Send + Weighed + 'static>(
    rings: Rc<Rings<M>>,
    to: usize,
    peer: Rc<Peer<M>>,
    deferred: Rc<dyn Deferred<M>>,
    budget: usize,
) {
    // Alternate between the backlog and the deferred source, so neither
    // starves the other.
    let mut deferred_first = true;
    loop {
        let next = poll_fn(|cx| {
            let from_backlog = || {
                let msg = peer.backlog.borrow_mut().pop_front()?;
                peer.backlog_bytes
                    .set(peer.backlog_bytes.get().saturating_sub(msg.weight()));
                Some((msg, true))
            };
            let from_deferred = || {
                let msg = deferred.next_for(to)?;
                rings.charge(to, msg.weight());
                Some((msg, false))
            };
            let msg = if deferred_first {
                from_deferred().or_else(from_backlog)
            } else {
                from_backlog().or_else(from_deferred)
            };
            if let Some(msg) = msg {
                return Poll::Ready(Some(msg));
            }
            if !peer.room_waiters.borrow().is_empty() {
                if rings.in_flight(to) < budget {
                    peer.wake_room_waiters();
                } else {
                    return Poll::Ready(None); // look again after ROOM_POLL
                }
            }
            peer.pump.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await;
        deferred_first = !deferred_first;
        let Some((msg, counted)) = next else {
            glommio::timer::sleep(ROOM_POLL).await;
            continue;
        };
        let weight = msg.weight();
        peer.holding.set(true);
        let sent = rings.send(to, msg, counted).await;
        peer.holding.set(false);
        if sent.is_err() {
            // The peer stopped: drop what was meant for it.
            rings.discharge_own(to, weight);
            let dropped: usize = peer
                .backlog
                .borrow_mut()
                .drain(..)
                .map(|m| m.weight())
                .sum();
            rings.discharge_own(to, dropped);
            peer.backlog_bytes.set(0);
        }
        if peer.is_clear() || rings.in_flight(to) < budget {
            peer.wake_room_waiters();
        }
    }
}

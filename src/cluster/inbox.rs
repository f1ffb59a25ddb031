//! The bridge's way into a shard: a bounded queue plus a doorbell.
//!
//! The bridge thread pushes [`Inbound`] messages without waiting; a full
//! queue (a shard far behind) drops the message and counts it. The
//! doorbell is rung only when the push made the queue non-empty, so a
//! busy shard is not woken once per message: the shard drains the whole
//! queue each time it wakes and only then waits on the doorbell again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use shards::doorbell::{doorbell, Bell, Ringer};
use tracing::warn;

use super::jetstream::{Numbered, Window};
use super::wire::Remote;
use super::ClusterStats;

/// What the bridge hands a shard.
#[derive(Debug)]
pub enum Inbound {
    /// A message from another node (core NATS), for the shard's
    /// subscribers (or, on a history channel, for its home shard to number).
    Publish(Arc<Remote>),
    /// A history message JetStream numbered, for its home shard.
    Numbered(Box<Numbered>),
    /// A local history publish JetStream could not take: the home shard
    /// numbers it itself.
    Unnumbered(Arc<Remote>),
    /// A channel's window read back from JetStream, for its home shard.
    Window(Box<Window>),
}

impl Inbound {
    /// What it holds while queued.
    pub fn weight(&self) -> usize {
        match self {
            Inbound::Publish(remote) | Inbound::Unnumbered(remote) => remote.weight(),
            Inbound::Numbered(numbered) => numbered.weight(),
            Inbound::Window(window) => {
                64 + window.messages.iter().map(|m| m.weight()).sum::<usize>()
            }
        }
    }
}

/// Messages from NATS one shard may have waiting.
pub const INBOX_CAPACITY: usize = 16 * 1024;
/// Bytes of messages from NATS one shard may have waiting: with
/// [`INBOX_CAPACITY`], what bounds a shard's inbox memory.
pub const INBOX_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The bridge's side of one shard's inbox.
#[derive(Debug)]
pub struct ShardInbox {
    shard: usize,
    queue: Sender<Inbound>,
    ringer: Ringer,
    /// Bytes waiting (shared with the shard, which takes them off).
    bytes: Arc<AtomicUsize>,
    /// Set while messages are being dropped, for one log line per episode.
    overflowing: AtomicBool,
}

/// The shard's side of its inbox, sent to the shard's thread.
#[derive(Debug)]
pub struct InboxReceiver {
    /// Messages from NATS, in arrival order.
    pub queue: Receiver<Inbound>,
    /// Rung when the queue became non-empty.
    pub bell: Bell,
    /// Bytes waiting: the shard subtracts each message's weight once
    /// delivered.
    pub bytes: Arc<AtomicUsize>,
}

/// A new inbox for `shard`.
pub fn inbox(shard: usize) -> std::io::Result<(ShardInbox, InboxReceiver)> {
    let (ringer, bell) = doorbell()?;
    let (tx, rx) = crossbeam_channel::bounded(INBOX_CAPACITY);
    let bytes = Arc::new(AtomicUsize::new(0));
    Ok((
        ShardInbox {
            shard,
            queue: tx,
            ringer,
            bytes: bytes.clone(),
            overflowing: AtomicBool::new(false),
        },
        InboxReceiver {
            queue: rx,
            bell,
            bytes,
        },
    ))
}

impl ShardInbox {
    /// Queues `msg` for the shard, or drops and counts it if the queue is full.
    pub fn push(&self, msg: Inbound, stats: &ClusterStats) {
        let weight = msg.weight();
        let sent = if self.bytes.load(Ordering::Relaxed) + weight > INBOX_MAX_BYTES {
            Err(TrySendError::Full(msg))
        } else {
            self.bytes.fetch_add(weight, Ordering::Relaxed);
            self.queue.try_send(msg).inspect_err(|_| {
                self.bytes.fetch_sub(weight, Ordering::Relaxed);
            })
        };
        match sent {
            Ok(()) => {
                // Length 1 right after our push: the queue was empty, so the
                // shard may be asleep on the doorbell. Longer: a message
                // was already waiting and the shard drains us with it.
                if self.queue.len() <= 1 {
                    self.ringer.ring();
                }
                if self.overflowing.swap(false, Ordering::Relaxed) {
                    warn!(shard = self.shard, "cluster inbox has room again");
                }
            }
            Err(TrySendError::Full(_)) => {
                stats.count_dropped(1);
                if !self.overflowing.swap(true, Ordering::Relaxed) {
                    warn!(
                        shard = self.shard,
                        capacity = INBOX_CAPACITY,
                        "cluster inbox full: dropping messages from other nodes for this shard"
                    );
                }
            }
            // The shard stopped: nothing to deliver.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

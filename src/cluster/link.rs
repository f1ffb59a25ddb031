//! A shard's handle on the bridge, and the shard task that delivers
//! messages from other nodes.
//!
//! Everything here runs on the shard's thread and never waits on the
//! bridge: a publish is one `try_send` on the bounded queue to the bridge
//! (dropped and counted when it is full). tokio's bounded channel takes a
//! permit and queues with atomics; only when the bridge thread is idle does
//! the send also wake it (tokio's remote wake: an uncontended lock and an
//! eventfd write), so a busy bridge costs the shard no lock. Interest is
//! state, not events: a shard keeps the latest bit per channel that it could
//! not send yet and retries until the bridge has it, so an interest change
//! is never lost, however full the queue was.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;
use tracing::{info, warn};

use super::bridge::ToBridge;
use super::inbox::Inbound;
use super::inbox::InboxReceiver;
use super::wire::{publish_weight, Remote};
use super::ClusterStats;
use crate::protocol::frame::encode_receive_frame;
use crate::router::Publication;
use crate::shard::ShardState;

/// How often interest the bridge has not taken yet is offered again.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// Bytes of publishes all shards together may have queued for the bridge
/// (beside the queue's message count): past it, publishes for other nodes
/// are counted as dropped.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// Messages from other nodes delivered before the inbox task yields.
const INBOX_BATCH: usize = 64;

/// What one shard needs to join the bridge; crosses to the shard's thread.
#[derive(Debug)]
pub struct LinkParts {
    pub(super) shard: usize,
    pub(super) to_bridge: Sender<ToBridge>,
    pub(super) inbox: InboxReceiver,
    pub(super) stats: Arc<ClusterStats>,
}

/// A shard's side of the cluster bridge.
#[derive(Debug)]
pub struct ClusterLink {
    shard: usize,
    /// The queue to the bridge; `None` once the shard stopped ([`Self::close`]).
    to_bridge: RefCell<Option<Sender<ToBridge>>>,
    /// Interest changes the bridge has not taken yet: the latest per channel.
    pending: RefCell<HashMap<Box<str>, bool>>,
    /// True while publishes are being dropped, for one log line per episode.
    dropping: Cell<bool>,
    stats: Arc<ClusterStats>,
    /// Taken once by [`serve_inbox`].
    inbox: RefCell<Option<InboxReceiver>>,
}

impl ClusterLink {
    /// The shard's link, from the parts [`super::start`] made for it.
    pub fn new(parts: LinkParts) -> Self {
        ClusterLink {
            shard: parts.shard,
            to_bridge: RefCell::new(Some(parts.to_bridge)),
            pending: RefCell::default(),
            dropping: Cell::new(false),
            stats: parts.stats,
            inbox: RefCell::new(Some(parts.inbox)),
        }
    }

    /// The bridge's counters, for `/metrics` and the console's `stats`
    /// (an `Arc`, so an admin server on another thread can keep a clone).
    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.stats
    }

    /// Whether channel history is shared through JetStream right now
    /// (see [`super::jetstream`]).
    pub fn shares_history(&self) -> bool {
        self.stats.history_shared.load(Ordering::Relaxed)
    }

    /// Hands a local publish on a history channel to the bridge, to be
    /// numbered in JetStream (it comes back to the home shard numbered).
    /// False when the bridge cannot take it (the caller numbers it locally).
    pub fn publish_history(&self, sender: &str, channel: &str, text: &str) -> bool {
        self.send_publish(sender, channel, text, true)
    }

    /// Asks the bridge to read `channel`'s window back from JetStream for
    /// this shard (its home); the answer arrives as [`Inbound::Window`].
    /// False when the bridge cannot take the question now.
    pub fn read_window(&self, channel: &str) -> bool {
        let ask = ToBridge::ReadWindow {
            shard: self.shard,
            channel: channel.into(),
        };
        self.try_send(ask).is_ok()
    }

    /// Hands a local publish to the bridge for the other nodes.
    pub fn publish(&self, sender: &str, channel: &str, text: &str) {
        self.send_publish(sender, channel, text, false);
    }

    /// Queues a publish for the bridge; false (and counted) when it cannot.
    fn send_publish(&self, sender: &str, channel: &str, text: &str, history: bool) -> bool {
        let weight = publish_weight(sender, channel, text);
        let queued = &self.stats.queued_bytes;
        let sent = if queued.load(Ordering::Relaxed) + weight > MAX_QUEUED_BYTES {
            Err(TrySendError::Full(()))
        } else {
            queued.fetch_add(weight, Ordering::Relaxed);
            let (sender, channel, text) = (sender.into(), channel.into(), text.into());
            let msg = if history {
                ToBridge::History {
                    sender,
                    channel,
                    text,
                }
            } else {
                ToBridge::Publish {
                    sender,
                    channel,
                    text,
                }
            };
            self.try_send(msg).map_err(|e| {
                queued.fetch_sub(weight, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => TrySendError::Full(()),
                    TrySendError::Closed(_) => TrySendError::Closed(()),
                }
            })
        };
        match sent {
            Ok(()) => {
                if self.dropping.replace(false) {
                    info!(shard = self.shard, "cluster bridge keeps up again");
                }
                true
            }
            Err(e) => {
                self.stats.count_dropped(1);
                if !self.dropping.replace(true) {
                    let why = match e {
                        TrySendError::Full(_) => "its queue is full",
                        TrySendError::Closed(_) => "it stopped",
                    };
                    warn!(
                        shard = self.shard,
                        "cluster bridge cannot take publishes ({why}): dropping messages \
                         for other nodes; local delivery goes on"
                    );
                }
                false
            }
        }
    }

    fn try_send(&self, msg: ToBridge) -> Result<(), TrySendError<ToBridge>> {
        match &*self.to_bridge.borrow() {
            Some(sender) => sender.try_send(msg),
            None => Err(TrySendError::Closed(msg)),
        }
    }

    /// Lets go of the bridge once the shard has stopped: when every shard
    /// has, the bridge flushes what they published and ends.
    pub fn close(&self) {
        self.to_bridge.borrow_mut().take();
        self.pending.borrow_mut().clear();
    }

    /// Records that this shard gained or lost its subscribers on `channel`.
    pub fn interest(&self, channel: &str, interested: bool) {
        self.pending.borrow_mut().insert(channel.into(), interested);
        self.offer_pending();
    }

    /// Offers every pending interest change to the bridge; what does not
    /// fit stays pending.
    fn offer_pending(&self) {
        let mut full = false;
        self.pending.borrow_mut().retain(|channel, interested| {
            if full {
                return true;
            }
            let msg = ToBridge::Interest {
                shard: self.shard,
                channel: channel.clone(),
                interested: *interested,
            };
            match self.try_send(msg) {
                Ok(()) => false,
                Err(TrySendError::Full(_)) => {
                    full = true;
                    true
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
    }
}

/// The shard's cluster tasks: delivers messages from other nodes and
/// retries pending interest, until the bridge goes away. Spawn it once
/// per shard when the cluster is on.
pub async fn serve(state: Rc<ShardState>) {
    let Some(link) = state.cluster.as_ref() else {
        return;
    };
    let Some(inbox) = link.inbox.borrow_mut().take() else {
        return;
    };
    glommio::spawn_local(retry_pending(state.clone())).detach();
    let mut bell = inbox.bell.adopt();
    loop {
        let mut handled = 0;
        while let Ok(inbound) = inbox.queue.try_recv() {
            let weight = inbound.weight();
            match inbound {
                Inbound::Publish(remote) => deliver(&state, &remote),
                Inbound::Unnumbered(remote) => {
                    let publication =
                        Publication::new(&remote.sender, &remote.channel, &remote.text);
                    state.sequence(Arc::new(publication));
                }
                Inbound::Numbered(numbered) => state.mirror_numbered(*numbered),
                Inbound::Window(window) => state.on_window(*window),
            }
            inbox.bytes.fetch_sub(weight, Ordering::Relaxed);
            handled += 1;
            if handled % INBOX_BATCH == 0 {
                future::yield_now().await;
            }
        }
        if !bell.wait().await {
            if state.shutdown.reason().is_none() {
                warn!(
                    shard = state.id,
                    "cluster bridge gone: messages from other nodes no longer reach this shard"
                );
            }
            return;
        }
    }
}

/// Delivers a message from another node to this shard's subscribers,
/// encoding its `1r` once.
fn deliver(state: &ShardState, remote: &Remote) {
    if let Some(home) = state.history_home(&remote.channel) {
        // The bridge sends a channel with history to its home shard only.
        if home == state.id {
            let publication = Publication::new(&remote.sender, &remote.channel, &remote.text);
            state.sequence(Arc::new(publication));
        }
        return;
    }
    let frame = state.frames.frame(&encode_receive_frame(
        &remote.sender,
        &remote.channel,
        &remote.text,
    ));
    state.deliver(&remote.sender, &remote.channel, &frame);
}

async fn retry_pending(state: Rc<ShardState>) {
    while state.shutdown.reason().is_none() {
        glommio::timer::sleep(RETRY_INTERVAL).await;
        if let Some(link) = &state.cluster {
            if !link.pending.borrow().is_empty() {
                link.offer_pending();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::inbox::inbox;

    fn link(capacity: usize) -> (ClusterLink, tokio::sync::mpsc::Receiver<ToBridge>) {
        let (to_bridge, queue) = tokio::sync::mpsc::channel(capacity);
        let (_, receiver) = inbox(0).unwrap();
        let parts = LinkParts {
            shard: 3,
            to_bridge,
            inbox: receiver,
            stats: Arc::default(),
        };
        (ClusterLink::new(parts), queue)
    }

    fn interest(msg: ToBridge) -> (String, bool) {
        match msg {
            ToBridge::Interest {
                shard: 3,
                channel,
                interested,
            } => (channel.into(), interested),
            other => panic!("expected interest, got {other:?}"),
        }
    }

    #[test]
    fn interest_is_kept_while_the_queue_is_full_and_the_latest_state_wins() {
        let (link, mut queue) = link(1);
        link.publish("alice", "c", "fills the queue");
        link.interest("a", true);
        link.interest("b", true);
        link.interest("a", false);
        assert_eq!(link.pending.borrow().len(), 2);
        assert!(matches!(queue.try_recv(), Ok(ToBridge::Publish { .. })));
        let mut seen = Vec::new();
        while !link.pending.borrow().is_empty() {
            link.offer_pending();
            seen.push(interest(queue.try_recv().unwrap()));
        }
        seen.sort();
        assert_eq!(seen, [("a".into(), false), ("b".into(), true)]);
    }

    #[test]
    fn publishes_that_do_not_fit_are_counted_as_dropped() {
        let (link, _queue) = link(2);
        for _ in 0..5 {
            link.publish("alice", "c", "hi");
        }
        assert_eq!(
            link.stats()
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }
}

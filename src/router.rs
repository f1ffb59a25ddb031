//! What travels over the rings between shards, and the cross-shard side of
//! publishing and interest.
//!
//! A publish reaches another shard only if that shard announced interest in
//! the channel (it has live subscribers there). The [`Router`] owns this
//! shard's [`Links`] (ordered, budgeted, never-blocking sends), its view of
//! remote interest, and what it still owes its peers about its own interest
//! (sent as state when a ring has room, never queued as a stream of events).

use std::cell::RefCell;
use std::future::poll_fn;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use glommio::channels::shared_channel::ConnectedReceiver;
use shards::{Deferred, Links, RingStats, Weighed};

use crate::history::Sequenced;
use crate::protocol::decimal_len;
use crate::protocol::frame::{encode_receive_frame, receive_payload_len};
use crate::state::interest::{shard_ids, Interest, InterestOwed};
use crate::state::views::{Answer, Query};

/// Interest updates queued for one peer beyond which a connection whose
/// `1c` would add another waits (see [`Router::interest_room`]).
pub const MAX_OWED_INTEREST_PER_PEER: usize = 1024;

/// A message published on one shard for the subscribers of others: the
/// complete `1r` WebSocket frame, encoded once, which also carries the
/// sender and channel (read back through byte ranges, never copied).
#[derive(Debug)]
pub struct Publication {
    frame: Box<[u8]>,
    sender: Range<usize>,
    channel: Range<usize>,
    text_start: usize,
}

impl Publication {
    /// Encodes the `1r` frame for `text` on `channel` from `sender`.
    pub fn new(sender: &str, channel: &str, text: &str) -> Self {
        let frame = encode_receive_frame(sender, channel, text).into_boxed_slice();
        let payload = frame.len() - receive_payload_len(sender, channel, text);
        // `1r|<len>|<sender>|<len>|<channel>|…`
        let sender_start = payload + "1r|".len() + decimal_len(sender.len() as u64) + 1;
        let sender_range = sender_start..sender_start + sender.len();
        let channel_start = sender_range.end + 1 + decimal_len(channel.len() as u64) + 1;
        let channel_range = channel_start..channel_start + channel.len();
        debug_assert_eq!(&frame[sender_range.clone()], sender.as_bytes());
        debug_assert_eq!(&frame[channel_range.clone()], channel.as_bytes());
        let text_start = frame.len() - text.len();
        Publication {
            frame,
            sender: sender_range,
            channel: channel_range,
            text_start,
        }
    }

    /// The whole WebSocket frame, ready to write.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// The publisher's name (for sender exclusion).
    pub fn sender(&self) -> &str {
        std::str::from_utf8(&self.frame[self.sender.clone()]).unwrap_or_default()
    }

    /// The channel (to find the subscribers).
    pub fn channel(&self) -> &str {
        std::str::from_utf8(&self.frame[self.channel.clone()]).unwrap_or_default()
    }

    /// The text (to build the positional frame of a channel with history).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.frame[self.text_start..]).unwrap_or_default()
    }
}

/// Everything that crosses a ring. Rare, large payloads are boxed so every
/// ring slot (allocated up front, `--ring-size` per peer) stays small.
#[derive(Debug)]
pub enum ShardMsg {
    /// Deliver to this shard's subscribers of the channel.
    Publish(Arc<Publication>),
    /// A publish on a channel with history, for its home shard to number,
    /// keep and fan out (see [`crate::history`]).
    Sequence(Arc<Publication>),
    /// A numbered publish from the channel's home shard: deliver it.
    Sequenced(Arc<Sequenced>),
    /// A subscriber here asks the channel's home shard where the channel
    /// stands and, with a position, for what it missed.
    Recover(Box<RecoverAsk>),
    /// The home shard's answer to [`ShardMsg::Recover`].
    Recovered(Box<RecoverReply>),
    /// The sending shard now has (true) or no longer has (false)
    /// subscribers on a channel.
    Interest {
        /// The channel.
        channel: Box<str>,
        /// Whether the sender now has subscribers there.
        interested: bool,
    },
    /// A question from another shard.
    Query {
        /// Matches the answer to the question.
        id: u64,
        /// The question.
        query: Box<Query>,
    },
    /// An answer to a question this shard asked.
    Answer {
        /// The question's id.
        id: u64,
        /// The answer.
        answer: Box<Answer>,
    },
    /// Close every connection with 1000 and this reason, then stop.
    Shutdown(Arc<str>),
    /// Start a lame-duck drain (see [`crate::drain`]).
    Drain,
}

/// A subscriber's question to a channel's home shard (see
/// [`crate::shard::history`]).
#[derive(Debug)]
pub struct RecoverAsk {
    /// The subscribing connection, on the asking shard.
    pub conn: crate::state::subscriptions::ConnId,
    /// Which of the connection's asks this is (only the newest is answered).
    pub ask: u64,
    /// The channel.
    pub channel: Box<str>,
    /// The client's last position and its epoch, or `None` for a plain
    /// subscription that only learns where the channel stands.
    pub after: Option<(u64, Box<str>)>,
    /// Most bytes the replay may take (room in the subscriber's outbox).
    pub max_bytes: usize,
}

/// The home shard's answer: where the channel stood when the subscription
/// started, and the replay or why there is none.
#[derive(Debug)]
pub struct RecoverReply {
    /// The asking connection.
    pub conn: crate::state::subscriptions::ConnId,
    /// The ask this answers.
    pub ask: u64,
    /// The channel.
    pub channel: Box<str>,
    /// Whether a position was asked for (a plain subscription's answer
    /// reports `Subscribed`).
    pub asked: bool,
    /// The outcome.
    pub recovery: crate::state::history::Recovery<Arc<Sequenced>>,
}

/// Ring slots are allocated up front: keep them at four words.
const _: () = assert!(std::mem::size_of::<ShardMsg>() <= 32);

impl Weighed for ShardMsg {
    fn weight(&self) -> usize {
        let slot = std::mem::size_of::<ShardMsg>();
        match self {
            ShardMsg::Publish(p) | ShardMsg::Sequence(p) => {
                slot + std::mem::size_of::<Publication>() + p.frame.len()
            }
            ShardMsg::Sequenced(s) => slot + s.weight(),
            ShardMsg::Recover(ask) => slot + ask.channel.len(),
            ShardMsg::Recovered(reply) => slot + reply.channel.len(),
            ShardMsg::Interest { channel, .. } => slot + channel.len(),
            ShardMsg::Query { .. }
            | ShardMsg::Answer { .. }
            | ShardMsg::Shutdown(_)
            | ShardMsg::Drain => slot,
        }
    }
}

/// What this shard owes its peers about its own interest, handed to the
/// pumps on demand; connections whose `1c` must wait for it wait here.
struct OwedUpdates {
    owed: RefCell<InterestOwed>,
    waiters: RefCell<Vec<Waker>>,
}

impl Deferred<ShardMsg> for OwedUpdates {
    fn next_for(&self, peer: usize) -> Option<ShardMsg> {
        let (channel, interested) = self.owed.borrow_mut().next_for(peer)?;
        if self.owed.borrow().longest_queue() < MAX_OWED_INTEREST_PER_PEER {
            for waker in self.waiters.borrow_mut().drain(..) {
                waker.wake();
            }
        }
        Some(ShardMsg::Interest {
            channel: channel.as_ref().into(),
            interested,
        })
    }
}

/// This shard's links to the others plus what it knows of their interest
/// and owes them of its own.
pub struct Router {
    links: Links<ShardMsg>,
    remote: RefCell<Interest>,
    owed: Rc<OwedUpdates>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("links", &self.links)
            .field("remote_channels", &self.remote.borrow().len())
            .finish()
    }
}

impl Router {
    /// Wraps the shard's rings with a budget of `budget` in-flight bytes per
    /// peer (call it inside the shard's executor).
    pub fn new(rings: shards::Rings<ShardMsg>, budget: usize) -> Self {
        let owed = Rc::new(OwedUpdates {
            owed: RefCell::new(InterestOwed::new(rings.nr_shards(), rings.shard_id())),
            waiters: RefCell::new(Vec::new()),
        });
        Router {
            links: Links::new(rings, budget, owed.clone()),
            remote: RefCell::new(Interest::default()),
            owed,
        }
    }

    /// This shard's id.
    pub fn shard_id(&self) -> usize {
        self.links.shard_id()
    }

    /// Number of shards.
    pub fn nr_shards(&self) -> usize {
        self.links.nr_shards()
    }

    /// The links, for sending and asking.
    pub fn links(&self) -> &Links<ShardMsg> {
        &self.links
    }

    /// Records an interest change announced by shard `from`.
    pub fn on_interest(&self, from: usize, channel: &str, interested: bool) {
        self.remote.borrow_mut().set(channel, from, interested);
    }

    /// The remote shards with subscribers on `channel`, as a bit set.
    pub fn interested_shards(&self, channel: &str) -> u64 {
        self.remote.borrow().shards_for(channel)
    }

    /// Sends `publication` to every shard in `shards` (a bit set): one `Arc`
    /// clone per shard, no copy.
    pub fn forward(&self, shards: u64, publication: Arc<Publication>) {
        for shard in shard_ids(shards) {
            self.links
                .send(shard, ShardMsg::Publish(publication.clone()));
        }
    }

    /// Sends a numbered publish to each shard in `shards`.
    pub fn forward_sequenced(&self, shards: u64, sequenced: &Arc<Sequenced>) {
        for shard in shard_ids(shards) {
            self.links
                .send(shard, ShardMsg::Sequenced(sequenced.clone()));
        }
    }

    /// True when every shard in `shards` can take more of this shard's
    /// messages (in-flight bytes under `--max-ring-backlog-bytes`).
    pub fn has_room(&self, shards: u64) -> bool {
        shard_ids(shards).all(|s| self.links.has_room(s))
    }

    /// Waits until every shard in `shards` has room.
    pub async fn room(&self, shards: u64) {
        self.links.room(shard_ids(shards)).await
    }

    /// Records that this shard gained or lost its subscribers on `channel`;
    /// the peers are told when their rings have room.
    pub fn set_local_interest(&self, channel: &Rc<str>, interested: bool) {
        let wake = self.owed.owed.borrow_mut().set_local(channel, interested);
        for peer in shard_ids(wake) {
            self.links.kick(peer);
        }
    }

    /// True while no peer has too many interest updates queued.
    pub fn has_interest_room(&self) -> bool {
        self.owed.owed.borrow().longest_queue() < MAX_OWED_INTEREST_PER_PEER
    }

    /// Waits until no peer has too many interest updates queued.
    pub async fn interest_room(&self) {
        poll_fn(|cx| {
            if self.has_interest_room() {
                Poll::Ready(())
            } else {
                self.owed.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Sends a control message (query, answer, shutdown) to shard `to`.
    pub fn send(&self, to: usize, msg: ShardMsg) {
        self.links.send(to, msg);
    }

    /// Runs `handle` on every message from shard `from`, in order, each
    /// once `ready` says it can be (see [`shards::Links::drain`]).
    pub fn drain(
        &self,
        from: usize,
        ring: ConnectedReceiver<ShardMsg>,
        ready: impl FnMut(&ShardMsg) -> bool + 'static,
        handle: impl FnMut(usize, ShardMsg) + 'static,
    ) -> impl std::future::Future<Output = ()> + 'static {
        self.links.drain(from, ring, ready, handle)
    }

    /// Bytes waiting in backlogs toward other shards.
    pub fn backlog_bytes(&self) -> usize {
        self.links.backlog_bytes()
    }

    /// Bytes handed to other shards and not yet handled by them.
    pub fn in_flight_bytes(&self) -> usize {
        self.links.in_flight_bytes()
    }

    /// Interest updates not yet sent, over all peers.
    pub fn owed_interest(&self) -> usize {
        let owed = self.owed.owed.borrow();
        (0..self.nr_shards()).map(|p| owed.queued_for(p)).sum()
    }

    /// Outbound ring counters.
    pub fn ring_stats(&self) -> RingStats {
        self.links.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_reads_sender_and_channel_from_its_frame() {
        for (sender, channel, text) in [
            ("alice", "c/lobby", "hello"),
            ("", "", ""),
            ("名前|x", "ch|1", "你好|"),
            (&"s".repeat(1_000)[..], &"c".repeat(70_000)[..], "t"),
        ] {
            let p = Publication::new(sender, channel, text);
            assert_eq!(p.sender(), sender);
            assert_eq!(p.channel(), channel);
            assert_eq!(p.frame(), &encode_receive_frame(sender, channel, text)[..]);
        }
    }

    #[test]
    fn a_publish_weighs_what_it_holds() {
        let p = Arc::new(Publication::new("a", "c", &"x".repeat(1_000)));
        assert!(ShardMsg::Publish(p).weight() > 1_000);
    }
}

//! What travels over the rings between shards, and the cross-shard side of
//! publishing.
//!
//! A publish reaches another shard only if that shard announced interest in
//! the channel (it has live subscribers there); interest changes travel over
//! the same rings, so they stay ordered with the publishes that follow them.
//! The [`Router`] owns this shard's rings and its view of remote interest.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use shards::{RingStats, Rings, TrySendError};

use crate::shard::interest::{shard_ids, Interest};
use crate::shard::queries::{ChannelList, ChannelQuery, ClientList, ClientQuery};
use crate::stats::StatsSnapshot;

/// A message published on one shard for the subscribers of another.
#[derive(Debug)]
pub struct Publication {
    /// The publisher's name, to skip subscribers with the same name.
    pub sender: Box<str>,
    /// The channel, to find the subscribers.
    pub channel: Box<str>,
    /// The complete `1r` WebSocket frame, encoded once by the publisher's shard.
    pub frame: Box<[u8]>,
}

/// A console question a shard answers about itself.
#[derive(Debug, Clone)]
pub enum Query {
    /// Counts and channel names, for `list`.
    Summary,
    /// What an endpoint listens to and who listens to a channel, for `list KEYWORD`.
    Keyword(Arc<str>),
    /// Counters and gauges, for `stats`, `/metrics` and `/healthz`.
    Stats,
    /// Top channels with subscriber counts, for the admin console.
    Channels(ChannelQuery),
    /// Connections, for the admin console.
    Clients(ClientQuery),
}

/// One shard's answer to a [`Query`].
#[derive(Debug, Clone)]
pub enum Answer {
    /// For [`Query::Summary`].
    Summary(ShardSummary),
    /// For [`Query::Keyword`].
    Keyword(KeywordReport),
    /// For [`Query::Stats`].
    Stats(StatsSnapshot),
    /// For [`Query::Channels`].
    Channels(ChannelList),
    /// For [`Query::Clients`].
    Clients(ClientList),
}

/// One shard's counts for `list`.
#[derive(Debug, Clone, Default)]
pub struct ShardSummary {
    /// The answering shard.
    pub shard: usize,
    /// Open WebSocket connections.
    pub connections: usize,
    /// Connections that said `1h`.
    pub identified: usize,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Channels with live subscribers on this shard.
    pub channels: Vec<String>,
}

/// A subscription as the console shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    /// `s<shard>#<connection id>`.
    pub connection: String,
    /// The endpoint's name.
    pub name: String,
    /// The channel.
    pub channel: String,
    /// Time left before it expires.
    pub expires_in: Duration,
}

/// One shard's answer for `list KEYWORD`.
#[derive(Debug, Clone, Default)]
pub struct KeywordReport {
    /// Subscriptions of endpoints named KEYWORD.
    pub endpoint_channels: Vec<SubscriptionView>,
    /// Subscriptions of the channel named KEYWORD.
    pub channel_subscribers: Vec<SubscriptionView>,
}

/// Everything that crosses a ring.
#[derive(Debug)]
pub enum ShardMsg {
    /// Deliver to this shard's subscribers of the channel.
    Publish(Arc<Publication>),
    /// The sending shard gained (true) or lost (false) its subscribers on a channel.
    Interest {
        /// The channel.
        channel: Box<str>,
        /// Whether the sender now has subscribers there.
        interested: bool,
    },
    /// A console question from shard 0.
    Query {
        /// Matches the answer to the question.
        id: u64,
        /// The question.
        query: Query,
    },
    /// An answer to shard 0.
    Answer {
        /// The question's id.
        id: u64,
        /// The answer.
        answer: Answer,
    },
    /// Close every connection with 1000 and this reason, then stop.
    Shutdown(Arc<str>),
}

/// Messages for one peer that found its ring full, kept in order.
#[derive(Default)]
struct Backlog {
    queue: RefCell<VecDeque<ShardMsg>>,
    /// The pump holds the front message while it waits for room, so a new
    /// message must queue behind it even though `queue` looks empty.
    in_flight: Cell<bool>,
    /// The pump task, asleep while there is nothing to move.
    pump: Cell<Option<Waker>>,
}

impl Backlog {
    fn is_clear(&self) -> bool {
        !self.in_flight.get() && self.queue.borrow().is_empty()
    }
}

/// This shard's rings plus what it knows of other shards' interest.
///
/// Sending never blocks the caller: a message goes straight into the ring
/// when it has room and nothing is queued before it; otherwise it joins the
/// peer's backlog, which a pump task moves into the ring in order as room
/// appears. A publisher whose message was queued waits for the backlogs to
/// clear before reading its socket again ([`Router::wait_for_room`]): the
/// back-pressure reaches the publisher, and nothing is dropped or reordered.
pub struct Router {
    rings: Rc<Rings<ShardMsg>>,
    interest: RefCell<Interest>,
    /// One per shard id (this shard's own slot stays empty).
    backlogs: Vec<Rc<Backlog>>,
    /// Publishers waiting for every backlog to clear.
    room_waiters: Rc<RefCell<Vec<Waker>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("shard", &self.shard_id())
            .field("remote_channels", &self.interest.borrow().len())
            .finish()
    }
}

impl Router {
    /// Wraps the shard's rings and starts one pump task per peer (call it
    /// inside the shard's executor).
    pub fn new(rings: Rings<ShardMsg>) -> Self {
        let rings = Rc::new(rings);
        let backlogs: Vec<Rc<Backlog>> = (0..rings.nr_shards()).map(|_| Rc::default()).collect();
        let room_waiters: Rc<RefCell<Vec<Waker>>> = Rc::default();
        for peer in rings.peers() {
            glommio::spawn_local(pump(
                rings.clone(),
                peer,
                backlogs[peer].clone(),
                room_waiters.clone(),
            ))
            .detach();
        }
        Router {
            rings,
            interest: RefCell::new(Interest::default()),
            backlogs,
            room_waiters,
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
    pub fn peers(&self) -> Vec<usize> {
        self.rings.peers().collect()
    }

    /// Records an interest change announced by shard `from`.
    pub fn on_interest(&self, from: usize, channel: &str, interested: bool) {
        self.interest.borrow_mut().set(channel, from, interested);
    }

    /// The remote shards with subscribers on `channel`, as a bit set.
    pub fn interested_shards(&self, channel: &str) -> u64 {
        self.interest.borrow().shards_for(channel)
    }

    /// Sends `msg` to shard `to`, in order after anything queued for it.
    pub fn send(&self, to: usize, msg: ShardMsg) {
        let Some(backlog) = self.backlogs.get(to) else {
            return;
        };
        let msg = if backlog.is_clear() {
            match self.rings.try_send(to, msg) {
                Ok(()) => return,
                Err(TrySendError::Full(msg)) => msg,
                // A closed ring means that shard is stopping: nothing to deliver.
                Err(_) => return,
            }
        } else {
            msg
        };
        backlog.queue.borrow_mut().push_back(msg);
        if let Some(pump) = backlog.pump.take() {
            pump.wake();
        }
    }

    /// Sends `publication` to every shard in `shards` (a bit set): one `Arc`
    /// clone per shard, no copy.
    pub fn forward(&self, shards: u64, publication: Arc<Publication>) {
        for shard in shard_ids(shards) {
            self.send(shard, ShardMsg::Publish(publication.clone()));
        }
    }

    /// Tells every other shard that this one gained or lost `channel`.
    pub fn announce(&self, channel: &str, interested: bool) {
        for peer in self.rings.peers() {
            self.send(
                peer,
                ShardMsg::Interest {
                    channel: channel.into(),
                    interested,
                },
            );
        }
    }

    /// True when some peer's ring was full and messages wait in its backlog.
    pub fn is_backed_up(&self) -> bool {
        self.backlogs.iter().any(|b| !b.is_clear())
    }

    /// Waits until every backlog has been moved into the rings.
    pub async fn wait_for_room(&self) {
        poll_fn(|cx| {
            if self.is_backed_up() {
                self.room_waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// Outbound ring counters.
    pub fn ring_stats(&self) -> RingStats {
        self.rings.stats()
    }
}

/// Moves one peer's backlog into its ring, waiting for room, in order.
async fn pump(
    rings: Rc<Rings<ShardMsg>>,
    peer: usize,
    backlog: Rc<Backlog>,
    room_waiters: Rc<RefCell<Vec<Waker>>>,
) {
    loop {
        let msg = poll_fn(|cx| match backlog.queue.borrow_mut().pop_front() {
            Some(msg) => Poll::Ready(msg),
            None => {
                backlog.pump.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        backlog.in_flight.set(true);
        let sent = rings.send(peer, msg).await;
        backlog.in_flight.set(false);
        if sent.is_err() {
            // The peer stopped: drop what was meant for it.
            backlog.queue.borrow_mut().clear();
        }
        if backlog.queue.borrow().is_empty() {
            for waker in room_waiters.borrow_mut().drain(..) {
                waker.wake();
            }
        }
    }
}

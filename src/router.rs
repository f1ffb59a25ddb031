//! What travels over the rings between shards, and the cross-shard side of
//! publishing.
//!
//! A publish reaches another shard only if that shard announced interest in
//! the channel (it has live subscribers there); interest changes travel over
//! the same rings, so they stay ordered with the publishes that follow them.
//! The [`Router`] owns this shard's rings and its view of remote interest.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use shards::{RingClosed, RingStats, Rings};

use crate::shard::interest::{shard_ids, Interest};

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
}

/// One shard's answer to a [`Query`].
#[derive(Debug, Clone)]
pub enum Answer {
    /// For [`Query::Summary`].
    Summary(ShardSummary),
    /// For [`Query::Keyword`].
    Keyword(KeywordReport),
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

/// This shard's rings plus what it knows of other shards' interest.
#[derive(Debug)]
pub struct Router {
    rings: Rings<ShardMsg>,
    interest: RefCell<Interest>,
}

impl Router {
    /// Wraps the shard's rings.
    pub fn new(rings: Rings<ShardMsg>) -> Self {
        Router {
            rings,
            interest: RefCell::new(Interest::default()),
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

    /// Records an interest change announced by shard `from`.
    pub fn on_interest(&self, from: usize, channel: &str, interested: bool) {
        self.interest.borrow_mut().set(channel, from, interested);
    }

    /// The remote shards with subscribers on `channel`, as a bit set.
    pub fn interested_shards(&self, channel: &str) -> u64 {
        self.interest.borrow().shards_for(channel)
    }

    /// Sends `publication` to every shard in `shards` (a bit set), waiting
    /// while a ring is full. One `Arc` clone per shard, no copy.
    pub async fn forward(&self, shards: u64, publication: Arc<Publication>) {
        for shard in shard_ids(shards) {
            // A closed ring means that shard is stopping: nothing to deliver.
            let _ = self
                .rings
                .send(shard, ShardMsg::Publish(publication.clone()))
                .await;
        }
    }

    /// Tells every other shard that this one gained or lost `channel`.
    pub async fn announce(&self, channel: &str, interested: bool) {
        for peer in self.rings.peers() {
            let _ = self
                .rings
                .send(
                    peer,
                    ShardMsg::Interest {
                        channel: channel.into(),
                        interested,
                    },
                )
                .await;
        }
    }

    /// Sends any message to one shard.
    pub async fn send(&self, to: usize, msg: ShardMsg) -> Result<(), RingClosed> {
        self.rings.send(to, msg).await
    }

    /// The ids of every other shard.
    pub fn peers(&self) -> Vec<usize> {
        self.rings.peers().collect()
    }

    /// Outbound ring counters.
    pub fn ring_stats(&self) -> RingStats {
        self.rings.stats()
    }
}

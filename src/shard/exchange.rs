//! Subscribing and publishing on one shard: the subscription index, local
//! fan-out to outboxes, and forwarding to the shards that listen.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::ShardState;
use crate::config;
use crate::outbox::{Frame, Push};
use crate::protocol::frame::receive_payload_len;
use crate::router::Publication;
use crate::state::connection::Connection;
use crate::state::subscriptions::{subscription_cost, Subscribed};
use crate::stats::Metric;

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The connection already listens to the maximum number of channels.
    #[error("too many subscriptions (limit {0})")]
    TooMany(usize),
    /// The shard's subscriptions hold their whole byte budget.
    #[error("subscription budget of this server exhausted ({0} bytes)")]
    Budget(usize),
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The `1r` built from it would not fit the receivers' frame limit.
    #[error("message too big: the 1r would exceed {0} bytes")]
    TooBig(usize),
}

impl ShardState {
    /// Subscribes, renews, or (zero TTL) unsubscribes `conn` to `channel`.
    pub fn subscribe(
        &self,
        conn: &Rc<Connection>,
        channel: &str,
        ttl: Duration,
    ) -> Result<(), SubscribeError> {
        if ttl.is_zero() {
            let emptied = self.index.borrow_mut().unsubscribe(conn.id, channel);
            if emptied {
                self.set_local_interest(&Rc::from(channel), false);
            }
            return Ok(());
        }
        // MAX_TTL_CAP keeps the addition far from `Instant` overflow even
        // for a `Config` built without the CLI's check.
        let expires = Instant::now() + ttl.min(self.config.live.max_ttl()).min(config::MAX_TTL_CAP);
        let outcome = {
            let mut index = self.index.borrow_mut();
            if !index.contains(conn.id, channel) {
                if index.count_of(conn.id) >= self.config.live.max_subscriptions() {
                    return Err(SubscribeError::TooMany(
                        self.config.live.max_subscriptions(),
                    ));
                }
                let budget = self.config.live.max_subscription_bytes();
                if index.cost_bytes() + subscription_cost(channel) > budget {
                    return Err(SubscribeError::Budget(budget));
                }
            }
            index.subscribe(conn.id, channel, expires, conn.clone())
        };
        if outcome == Subscribed::FirstOnShard {
            let key = self.index.borrow().channel_key(channel);
            if let Some(key) = key {
                self.set_local_interest(&key, true);
            }
        }
        Ok(())
    }

    /// Records that this shard gained (true) or lost (false) its
    /// subscribers on `channel`: the other shards and the cluster bridge
    /// are told.
    pub fn set_local_interest(&self, channel: &Rc<str>, interested: bool) {
        self.router.set_local_interest(channel, interested);
        if let Some(cluster) = &self.cluster {
            // A home shard keeps listening to the other nodes while it
            // keeps the channel's history.
            cluster.interest(channel, interested || self.holds_history(channel));
        }
    }

    /// Whether a `1c` of `conn` on `channel` with this TTL would change
    /// what this shard tells the others (first subscriber or last one gone).
    pub fn subscribe_changes_interest(
        &self,
        conn: &Connection,
        channel: &str,
        ttl: Duration,
    ) -> bool {
        let index = self.index.borrow();
        if ttl.is_zero() {
            index.contains(conn.id, channel) && index.subscriber_count(channel) == 1
        } else {
            !index.has_channel(channel)
        }
    }

    /// The other shards a publish on `channel` goes to, as a bit set (a
    /// channel with history numbered on another shard: that home shard,
    /// which forwards it once it has room, see [`ShardState::can_take`]).
    pub fn publish_targets(&self, channel: &str) -> u64 {
        match self.history_home(channel) {
            Some(home) if home != self.id => 1 << home,
            // Numbered here: forwarded to the shards that listen, as in v1.
            _ => self.router.interested_shards(channel),
        }
    }

    /// Checks that a publish of `text` on `channel` as `sender` can be
    /// delivered: its `1r` must fit the receivers' frame limit.
    pub fn check_publish(
        &self,
        sender: &str,
        channel: &str,
        text: &str,
    ) -> Result<(), PublishError> {
        let limit = self.config.max_message_bytes;
        if receive_payload_len(sender, channel, text) > limit {
            return Err(PublishError::TooBig(limit));
        }
        Ok(())
    }

    /// Publishes `text` on `channel` as `sender`: encodes the `1r` frame
    /// once, queues it to local subscribers and forwards it to the shards
    /// that listen to the channel, and to the cluster bridge when `--nats`
    /// is on. Never waits; callers that must respect
    /// the other shards' budget wait for [`crate::router::Router::room`] first.
    pub fn publish(&self, sender: &str, channel: &str, text: &str) {
        self.stats.add(Metric::Publishes, 1);
        if let Some(home) = self.history_home(channel) {
            match &self.cluster {
                // Numbered by JetStream for the whole cluster; it comes back
                // to the home shard, which delivers it.
                Some(cluster)
                    if cluster.shares_history()
                        && cluster.publish_history(sender, channel, text) =>
                {
                    return;
                }
                Some(cluster) => cluster.publish(sender, channel, text),
                None => {}
            }
            self.publish_to_home(home, Arc::new(Publication::new(sender, channel, text)));
            return;
        }
        if let Some(cluster) = &self.cluster {
            cluster.publish(sender, channel, text);
        }
        let remote = self.router.interested_shards(channel);
        let local = self.index.borrow().has_channel(channel);
        if remote == 0 && !local {
            return;
        }
        let publication = Publication::new(sender, channel, text);
        if local {
            let frame = self.frames.frame(publication.frame());
            self.deliver(sender, channel, &frame);
        }
        if remote != 0 {
            self.router.forward(remote, Arc::new(publication));
        }
    }

    /// Delivers a publication that arrived from another shard.
    pub fn deliver_remote(&self, publication: &Publication) {
        let channel = publication.channel();
        if self.index.borrow().has_channel(channel) {
            let frame = self.frames.frame(publication.frame());
            self.deliver(publication.sender(), channel, &frame);
        }
    }

    /// Queues `frame` to every live local subscriber of `channel` not named
    /// `sender`. A subscriber whose outbox overflows is closed as a slow
    /// consumer; the others are not affected.
    pub fn deliver(&self, sender: &str, channel: &str, frame: &Frame) {
        let now = Instant::now();
        let mut delivered = 0;
        for subscriber in self.index.borrow().subscribers(channel, now) {
            if subscriber.is_named(sender) {
                continue;
            }
            match subscriber.outbox.push(frame) {
                Push::Queued => delivered += 1,
                Push::Closed => {}
                Push::Overflow => self.close_slow_consumer(subscriber),
            }
        }
        self.stats.add(Metric::Deliveries, delivered);
    }

    /// Closes `conn` with 1008 `slow consumer`, dropping its backlog.
    pub fn close_slow_consumer(&self, conn: &Connection) {
        let queued = conn.outbox.queued_bytes();
        if conn.outbox.close_discarding(1008, "slow consumer") {
            self.stats.add(Metric::SlowConsumers, 1);
            let limit = self.config.max_outbox_bytes;
            self.conn_span(conn).in_scope(|| {
                warn!(queued_bytes = queued, limit, "closing slow consumer (1008)");
            });
        }
    }
}

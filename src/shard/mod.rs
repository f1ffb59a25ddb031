//! A shard's own state: its connection table, its subscription index, and
//! the local half of publishing. Owned by one executor thread, so plain
//! `RefCell`s are enough: no lock is ever taken.
//!
//! - [`subscriptions`]: who listens to what until when (pure).
//! - [`interest`]: which other shards listen to what.
//! - [`connection`]: one client connection's name and outbox.

pub mod connection;
pub mod interest;
pub mod subscriptions;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Gate;
use tracing::{debug, info, warn};

use crate::cluster::ClusterLink;
use crate::config::{self, Config};
use crate::outbox::{Frame, Push};
use crate::protocol::frame::{encode_receive_frame, PING_FRAME};
use crate::router::{
    Answer, KeywordReport, Publication, Query, Router, ShardMsg, ShardSummary, SubscriptionView,
};
use crate::session::with_timeout;
use crate::shutdown::ShutdownSignal;
use crate::stats::{bump, ShardStats, StatsSnapshot};
pub use connection::{Connection, Liveness};
use subscriptions::{ConnId, Subscribed, SubscriptionIndex};

/// Size of the read buffer all of a shard's connections share: a read
/// copies what the socket has into it and parses it before the next await,
/// so idle connections hold no read buffer of their own.
const SCRATCH_BYTES: usize = 64 * 1024;

/// One of the `--max-connections` slots; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The connection already listens to the maximum number of channels.
    #[error("too many subscriptions (limit {0})")]
    TooMany(usize),
}

/// Everything one shard owns.
pub struct ShardState {
    /// This shard's id.
    pub id: usize,
    /// The core it is pinned to.
    pub core: usize,
    /// Limits and settings.
    pub config: Config,
    /// Rings to other shards and their interest.
    pub router: Router,
    /// Read buffer shared by every connection of the shard.
    pub scratch: RefCell<Vec<u8>>,
    /// Traffic counters.
    pub stats: ShardStats,
    /// Fires when the nexus stops.
    pub shutdown: ShutdownSignal,
    /// Every session holds a pass; closing the gate waits for them.
    pub sessions: Gate,
    /// Connections open on every shard (the `--max-connections` count).
    open_connections: Arc<AtomicUsize>,
    connections: RefCell<HashMap<ConnId, Rc<Connection>>>,
    index: RefCell<SubscriptionIndex<Rc<Connection>>>,
    next_conn_id: Cell<ConnId>,
    /// Questions awaiting answers from other shards (console and metrics).
    pending_answers: RefCell<HashMap<u64, LocalSender<Answer>>>,
    /// Id of the last question asked.
    next_query_id: Cell<u64>,
    /// This shard's handle on the cluster bridge, when `--nats` is on.
    pub cluster: Option<ClusterLink>,
}

impl ShardState {
    /// A shard with no connections; `open_connections` is shared by all shards.
    pub fn new(
        core: usize,
        config: Config,
        router: Router,
        open_connections: Arc<AtomicUsize>,
    ) -> Self {
        ShardState {
            id: router.shard_id(),
            core,
            config,
            router,
            scratch: RefCell::new(vec![0; SCRATCH_BYTES]),
            stats: ShardStats::default(),
            shutdown: ShutdownSignal::default(),
            sessions: Gate::new(),
            open_connections,
            connections: RefCell::new(HashMap::new()),
            index: RefCell::new(SubscriptionIndex::new()),
            next_conn_id: Cell::new(1),
            pending_answers: RefCell::new(HashMap::new()),
            next_query_id: Cell::new(0),
            cluster: None,
        }
    }

    /// Takes one of the `--max-connections` slots, if one is free; the slot
    /// is given back when the returned guard drops.
    pub fn admit(&self) -> Option<ConnectionSlot> {
        let open = self.open_connections.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(self.open_connections.clone());
        if open >= self.config.max_connections {
            bump(&self.stats.refused_connections, 1);
            return None; // dropping `slot` gives the count back
        }
        Some(slot)
    }

    /// Adds an upgraded connection to the table.
    pub fn register(&self, peer: SocketAddr) -> Rc<Connection> {
        let id = self.next_conn_id.get();
        self.next_conn_id.set(id + 1);
        let conn = Rc::new(Connection::new(id, peer, self.config.max_outbox_bytes));
        self.connections.borrow_mut().insert(id, conn.clone());
        bump(&self.stats.connections_opened, 1);
        if let Some(reason) = self.shutdown.reason() {
            // Upgraded while the shard was stopping: close it like the rest.
            conn.outbox.close(1000, &reason);
        }
        conn
    }

    /// Removes a connection and all its subscriptions (and only its own).
    pub fn unregister(&self, conn: &Connection) {
        self.connections.borrow_mut().remove(&conn.id);
        let emptied = self.index.borrow_mut().remove_connection(conn.id);
        for channel in emptied {
            self.announce(&channel, false);
        }
    }

    /// Tells the other shards, and the cluster bridge, that this shard
    /// gained (true) or lost (false) its subscribers on `channel`.
    fn announce(&self, channel: &str, interested: bool) {
        self.router.announce(channel, interested);
        if let Some(cluster) = &self.cluster {
            cluster.interest(channel, interested);
        }
    }

    /// `s<shard>#<id>`: how the console names a connection.
    pub fn label(&self, conn: ConnId) -> String {
        format!("s{}#{}", self.id, conn)
    }

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
                self.announce(channel, false);
            }
            return Ok(());
        }
        // MAX_TTL_CAP keeps the addition far from `Instant` overflow even
        // for a `Config` built without the CLI's check.
        let expires = Instant::now() + ttl.min(self.config.max_ttl).min(config::MAX_TTL_CAP);
        let outcome = {
            let mut index = self.index.borrow_mut();
            if index.count_of(conn.id) >= self.config.max_subscriptions
                && !index.contains(conn.id, channel)
            {
                return Err(SubscribeError::TooMany(self.config.max_subscriptions));
            }
            index.subscribe(conn.id, channel, expires, conn.clone())
        };
        if outcome == Subscribed::FirstOnShard {
            self.announce(channel, true);
        }
        Ok(())
    }

    /// Publishes `text` on `channel` as `sender`: encodes the `1r` frame
    /// once, queues it to local subscribers and forwards it to the shards
    /// that listen to the channel, and to the cluster bridge when `--nats`
    /// is on. Never waits; see [`Router::wait_for_room`].
    pub fn publish(&self, sender: &str, channel: &str, text: &str) {
        bump(&self.stats.publishes, 1);
        if let Some(cluster) = &self.cluster {
            cluster.publish(sender, channel, text);
        }
        let remote = self.router.interested_shards(channel);
        let local = self.index.borrow().has_channel(channel);
        if remote == 0 && !local {
            return;
        }
        let encoded = encode_receive_frame(sender, channel, text);
        if local {
            let frame: Frame = Rc::from(&encoded[..]);
            self.deliver(sender, channel, &frame);
        }
        if remote != 0 {
            let publication = Arc::new(Publication {
                sender: sender.into(),
                channel: channel.into(),
                frame: encoded.into_boxed_slice(),
            });
            self.router.forward(remote, publication);
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
        bump(&self.stats.deliveries, delivered);
    }

    /// Closes `conn` with 1008 `slow consumer`, dropping its backlog.
    pub fn close_slow_consumer(&self, conn: &Connection) {
        let queued = conn.outbox.queued_bytes();
        if conn.outbox.close_discarding(1008, "slow consumer") {
            bump(&self.stats.slow_consumers, 1);
            warn!(
                conn = %self.label(conn.id),
                peer = %conn.peer,
                name = conn.name().as_deref().unwrap_or(""),
                queued_bytes = queued,
                limit = self.config.max_outbox_bytes,
                "closing slow consumer (1008)"
            );
        }
    }

    /// The next connection on `listener`, or `None` once the nexus stops.
    pub async fn accept(&self, listener: &TcpListener) -> Option<std::io::Result<TcpStream>> {
        future::or(
            async { Some(listener.accept().await.map_err(std::io::Error::from)) },
            async {
                self.shutdown.wait().await;
                None
            },
        )
        .await
    }

    /// Pings connections that have been silent for `--keepalive` and closes
    /// (1001) those that then stay silent for `--keepalive-timeout`: a game
    /// server that lost power must not hold its subscriptions forever.
    pub fn sweep_keepalive(&self) {
        let now = Instant::now();
        let (idle, timeout) = (self.config.keepalive, self.config.keepalive_timeout);
        for conn in self.connections.borrow().values() {
            match conn.check_liveness(now, idle, timeout) {
                Liveness::Alive => {}
                Liveness::Ping => {
                    if conn.outbox.push_control(PING_FRAME.to_vec()) == Push::Overflow {
                        self.close_slow_consumer(conn);
                    }
                }
                Liveness::Dead => {
                    if conn.outbox.close_discarding(1001, "keepalive timeout") {
                        bump(&self.stats.keepalive_closures, 1);
                        info!(
                            conn = %self.label(conn.id),
                            peer = %conn.peer,
                            name = conn.name().as_deref().unwrap_or(""),
                            "closing silent connection: keepalive timeout (1001)"
                        );
                    }
                }
            }
        }
    }

    /// Drops subscriptions whose time is up and tells other shards about
    /// channels this shard no longer listens to.
    pub fn purge_expired(&self) {
        let emptied = self.index.borrow_mut().purge_expired(Instant::now());
        for channel in emptied {
            debug!(
                shard = self.id,
                channel = &*channel,
                "last subscription expired"
            );
            self.announce(&channel, false);
        }
    }

    /// Handles one message from another shard's ring.
    pub fn on_ring_message(&self, from: usize, msg: ShardMsg) {
        match msg {
            ShardMsg::Publish(publication) => {
                if self.index.borrow().has_channel(&publication.channel) {
                    let frame: Frame = Rc::from(&publication.frame[..]);
                    self.deliver(&publication.sender, &publication.channel, &frame);
                }
            }
            ShardMsg::Interest {
                channel,
                interested,
            } => self.router.on_interest(from, &channel, interested),
            ShardMsg::Query { id, query } => {
                let answer = self.answer(&query);
                self.router.send(from, ShardMsg::Answer { id, answer });
            }
            ShardMsg::Answer { id, answer } => {
                if let Some(waiting) = self.pending_answers.borrow().get(&id) {
                    let _ = waiting.try_send(answer);
                }
            }
            ShardMsg::Shutdown(reason) => self.begin_shutdown(reason),
        }
    }

    /// This shard's answer to a console question.
    pub fn answer(&self, query: &Query) -> Answer {
        let now = Instant::now();
        match query {
            Query::Summary => {
                let connections = self.connections.borrow();
                let index = self.index.borrow();
                Answer::Summary(ShardSummary {
                    shard: self.id,
                    connections: connections.len(),
                    identified: connections.values().filter(|c| c.name().is_some()).count(),
                    subscriptions: index.subscription_count(),
                    channels: index.channel_names().map(|c| c.to_string()).collect(),
                })
            }
            Query::Stats => Answer::Stats(self.snapshot()),
            Query::Keyword(keyword) => {
                let connections = self.connections.borrow();
                let index = self.index.borrow();
                let mut report = KeywordReport::default();
                for conn in connections.values().filter(|c| c.is_named(keyword)) {
                    for (channel, expires) in index.channels_of(conn.id, now) {
                        report.endpoint_channels.push(SubscriptionView {
                            connection: self.label(conn.id),
                            name: keyword.to_string(),
                            channel: channel.to_string(),
                            expires_in: expires - now,
                        });
                    }
                }
                for (id, expires, conn) in index.subscribers_with_expiry(keyword, now) {
                    report.channel_subscribers.push(SubscriptionView {
                        connection: self.label(id),
                        name: conn.name().as_deref().unwrap_or("").to_string(),
                        channel: keyword.to_string(),
                        expires_in: expires - now,
                    });
                }
                Answer::Keyword(report)
            }
        }
    }

    /// This shard's counters and gauges now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let connections = self.connections.borrow();
        let index = self.index.borrow();
        let s = &self.stats;
        let rings = self.router.ring_stats();
        StatsSnapshot {
            shard: self.id,
            connections_open: connections.len() as u64,
            connections_identified: connections.values().filter(|c| c.name().is_some()).count()
                as u64,
            subscriptions: index.subscription_count() as u64,
            channels: index.channel_count() as u64,
            connections_opened: s.connections_opened.get(),
            messages_in: s.messages_in.get(),
            publishes: s.publishes.get(),
            deliveries: s.deliveries.get(),
            bytes_in: s.bytes_in.get(),
            bytes_out: s.bytes_out.get(),
            ring_messages: rings.sent,
            ring_full: rings.full_waits,
            slow_consumers: s.slow_consumers.get(),
            limit_closures: s.limit_closures.get(),
            keepalive_closures: s.keepalive_closures.get(),
            refused_connections: s.refused_connections.get(),
            protocol_errors: s.protocol_errors(),
        }
    }

    /// Asks every shard (this one directly, the others over the rings) and
    /// collects the answers that arrive within `timeout`. The flag is false
    /// when some shard did not answer in time.
    pub async fn gather(&self, query: Query, timeout: Duration) -> (Vec<Answer>, bool) {
        let id = self.next_query_id.get() + 1;
        self.next_query_id.set(id);
        let peers = self.router.peers();
        let (sender, receiver) = local_channel::new_bounded(peers.len().max(1));
        self.pending_answers.borrow_mut().insert(id, sender);
        let mut answers = vec![self.answer(&query)];
        for &peer in &peers {
            self.router.send(
                peer,
                ShardMsg::Query {
                    id,
                    query: query.clone(),
                },
            );
        }
        // Answers are kept as they arrive, so a late shard costs only its own.
        let got = RefCell::new(Vec::with_capacity(peers.len()));
        let collect = async {
            while got.borrow().len() < peers.len() {
                match receiver.recv().await {
                    Some(answer) => got.borrow_mut().push(answer),
                    None => break,
                }
            }
        };
        let complete = with_timeout(timeout, collect).await.is_some();
        answers.extend(got.into_inner());
        self.pending_answers.borrow_mut().remove(&id);
        (answers, complete)
    }

    /// Every shard's [`StatsSnapshot`], in shard order, and whether all
    /// answered within `timeout`.
    pub async fn gather_stats(&self, timeout: Duration) -> (Vec<StatsSnapshot>, bool) {
        let (answers, complete) = self.gather(Query::Stats, timeout).await;
        let mut snapshots: Vec<StatsSnapshot> = answers
            .into_iter()
            .filter_map(|a| match a {
                Answer::Stats(s) => Some(s),
                _ => None,
            })
            .collect();
        snapshots.sort_by_key(|s| s.shard);
        (snapshots, complete)
    }

    /// Starts stopping this shard: no new connections, and every open one
    /// is closed with 1000 and `reason` after what is already queued.
    pub fn begin_shutdown(&self, reason: Arc<str>) {
        if !self.shutdown.trigger(reason.clone()) {
            return;
        }
        info!(shard = self.id, reason = &*reason, "shard stopping");
        for conn in self.connections.borrow().values() {
            conn.outbox.close(1000, &reason);
        }
    }
}

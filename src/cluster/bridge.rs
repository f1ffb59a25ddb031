//! The bridge thread: one NATS connection shared by every shard.
//!
//! It runs on its own thread with a current-thread tokio runtime (the NATS
//! client, async-nats, needs tokio; the shards stay glommio). Shards hand it
//! publishes and interest changes over one bounded queue and never wait on
//! it; it hands messages from NATS to the interested shards' inboxes.
//!
//! - Publishing: every local publish is sent to the channel's subject
//!   (NATS drops it when no node listens). While NATS is down, publishes are
//!   counted as dropped, not queued.
//! - Subscribing by interest: a channel's subject is subscribed while some
//!   shard has subscribers on it, and unsubscribed [`LINGER`] after the last
//!   one goes, so a subscriber that churns does not churn the subscription.
//! - Loops: the connection is `no_echo`, and messages carrying this node's
//!   id are dropped; a message from NATS is only ever delivered locally.
//! - Outages: async-nats reconnects on its own and re-subscribes what is
//!   subscribed; interest that changed meanwhile is applied as the queued
//!   subscribe and unsubscribe commands go out after the reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subscriber};
use futures_lite::StreamExt;
use std::thread::JoinHandle;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::directory::{self, DirectoryQuery, DIRECTORY_SUBJECT};
use super::inbox::{Inbound, ShardInbox};
use super::jetstream::SharedHistory;
use super::subject::{subject_for, MAX_SUBJECT_BYTES};
use super::wire::{self, Ignored};
use super::{ClusterConfig, ClusterStats};
use crate::state::interest::shard_ids;

/// How long a channel stays subscribed after its last local subscriber.
pub const LINGER: Duration = Duration::from_secs(2);
/// How often lingering subscriptions are checked (and failed ones retried).
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// How often sharing history through JetStream is tried again after it
/// could not be set up or failed.
const HISTORY_RETRY: Duration = Duration::from_secs(10);
/// Longest pause between two reconnect attempts: cross-node delivery is
/// back within about this long after NATS is.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Commands the NATS client may have queued for its connection.
const CLIENT_CAPACITY: usize = 8192;
/// Queued messages handled in one go before events and the sweep get a turn.
const BATCH: usize = 256;
/// How long a stopping bridge waits to flush what it published.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// What a shard hands the bridge.
#[derive(Debug)]
pub enum ToBridge {
    /// A local publish, to send to the channel's subject.
    Publish {
        /// The publisher's name.
        sender: Box<str>,
        /// The channel.
        channel: Box<str>,
        /// The text.
        text: Box<str>,
    },
    /// A local publish on a history channel, to number in JetStream.
    History {
        /// The publisher's name.
        sender: Box<str>,
        /// The channel.
        channel: Box<str>,
        /// The text.
        text: Box<str>,
    },
    /// Read a history channel's window back from JetStream for its home
    /// shard.
    ReadWindow {
        /// The home shard.
        shard: usize,
        /// The channel.
        channel: Box<str>,
    },
    /// The latest state of one shard's interest in one channel.
    Interest {
        /// The shard.
        shard: usize,
        /// The channel.
        channel: Box<str>,
        /// Whether the shard has live subscribers there.
        interested: bool,
    },
}

/// Starts the bridge thread; it ends once every shard's link is dropped
/// and what was published is flushed.
pub fn spawn(
    config: ClusterConfig,
    servers: Vec<ServerAddr>,
    queue: mpsc::Receiver<ToBridge>,
    questions: mpsc::Receiver<DirectoryQuery>,
    inboxes: Vec<ShardInbox>,
    stats: Arc<ClusterStats>,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("cluster-bridge".into())
        .spawn(move || {
            runtime.block_on(run(
                config,
                servers,
                queue,
                questions,
                inboxes.into(),
                stats,
            ));
        })
}

/// One channel the bridge knows of.
struct Channel {
    /// The shards with subscribers there, read by the forwarder per message.
    shards: Arc<AtomicU64>,
    /// The task reading the channel's subscription, while subscribed.
    forwarder: Option<tokio::task::JoinHandle<()>>,
    /// When the last shard lost interest, while lingering.
    idle_since: Option<Instant>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        // Dropping the forwarder's `Subscriber` unsubscribes.
        if let Some(task) = self.forwarder.take() {
            task.abort();
        }
    }
}

struct Bridge {
    /// History shared through JetStream, when the server has it.
    shared: Option<SharedHistory>,
    /// When to try sharing history again (see `retry_shared_history`).
    next_history_try: Instant,
    /// `--history`: messages of those channels go to their home shard.
    history: Option<Arc<crate::history::HistoryConfig>>,
    client: Client,
    node: Arc<str>,
    inboxes: Arc<[ShardInbox]>,
    stats: Arc<ClusterStats>,
    channels: HashMap<Box<str>, Channel>,
    /// Whether the connection was ever up (a later `Connected` is a reconnect).
    ever_connected: bool,
    /// `dropped` when the current outage began, to report its losses.
    dropped_at_outage: u64,
    /// Whether the current outage (or the wait for the first connection)
    /// has had its log line: one per outage, not one per retry.
    outage_logged: bool,
    /// One warning for channels too long to bridge.
    warned_long_subject: bool,
}

async fn run(
    config: ClusterConfig,
    servers: Vec<ServerAddr>,
    mut queue: mpsc::Receiver<ToBridge>,
    mut questions: mpsc::Receiver<DirectoryQuery>,
    inboxes: Arc<[ShardInbox]>,
    stats: Arc<ClusterStats>,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let options = match &config.user {
        Some(user) => {
            ConnectOptions::with_user_and_password(user.user.clone(), user.password.clone())
        }
        None => ConnectOptions::new(),
    };
    let options = options
        .name(format!("easechat-nexus {}", config.node_id))
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .client_capacity(CLIENT_CAPACITY)
        .reconnect_delay_callback(|attempts| {
            (Duration::from_millis(100) * attempts.min(10) as u32).min(MAX_RECONNECT_DELAY)
        })
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                let _ = events_tx.send(event);
            }
        });
    let client = match options.connect(servers).await {
        Ok(client) => client,
        Err(e) => {
            error!(error = %e, "cluster bridge cannot start; cross-node delivery is off");
            return;
        }
    };
    info!(node = &*config.node_id, servers = ?config.servers, "cluster bridge started");
    let shared = match &config.history {
        Some(history) => {
            SharedHistory::start(
                &client,
                Arc::from(config.node_id.as_str()),
                history.clone(),
                inboxes.clone(),
                stats.clone(),
                true,
            )
            .await
        }
        None => None,
    };
    let mut bridge = Bridge {
        next_history_try: Instant::now() + HISTORY_RETRY,
        shared,
        history: config.history.clone(),
        client,
        node: Arc::from(config.node_id.as_str()),
        inboxes,
        stats,
        channels: HashMap::new(),
        ever_connected: false,
        dropped_at_outage: 0,
        outage_logged: false,
        warned_long_subject: false,
    };
    // Other nodes' admin consoles ask which channels this node listens to.
    let mut directory_requests = match bridge.client.subscribe(DIRECTORY_SUBJECT).await {
        Ok(subscriber) => Some(subscriber),
        Err(e) => {
            warn!(error = %e, "cluster directory unavailable: other nodes' consoles will not see this node's channels");
            None
        }
    };
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = queue.recv() => match msg {
                Some(msg) => {
                    bridge.handle(msg).await;
                    // Take what else is queued before looking at the rest.
                    for _ in 0..BATCH {
                        let Ok(msg) = queue.try_recv() else { break };
                        bridge.handle(msg).await;
                    }
                }
                None => break,
            },
            Some(event) = events.recv() => bridge.on_event(event),
            Some(request) = next_request(&mut directory_requests) => bridge.answer_directory(request).await,
            Some(query) = questions.recv() => {
                let client = bridge.client.clone();
                tokio::spawn(async move {
                    let counts = directory::gather(client, query.filter).await;
                    let _ = query.reply.send(counts);
                });
            }
            _ = sweep.tick() => bridge.sweep().await,
        }
    }
    // Every shard is gone: send what was published before stopping.
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, bridge.client.flush()).await;
    info!("cluster bridge stopped");
}

/// The next directory request, or never when there is no subscription.
async fn next_request(requests: &mut Option<Subscriber>) -> Option<async_nats::Message> {
    match requests {
        Some(requests) => requests.next().await,
        None => std::future::pending().await,
    }
}

impl Bridge {
    /// Answers another node's directory request with this node's channels.
    async fn answer_directory(&mut self, request: async_nats::Message) {
        let Some(reply) = request.reply else {
            return;
        };
        let filter = std::str::from_utf8(&request.payload).unwrap_or("");
        let listening = self
            .channels
            .iter()
            .filter(|(_, c)| c.shards.load(Ordering::Relaxed) != 0)
            .map(|(name, _)| &**name);
        let body = directory::answer(listening, filter);
        if let Err(e) = self.client.publish(reply, body.into()).await {
            debug!(error = %e, "cluster directory answer not sent");
        }
    }

    async fn handle(&mut self, msg: ToBridge) {
        match msg {
            ToBridge::Publish {
                sender,
                channel,
                text,
            } => {
                let weight = super::wire::publish_weight(&sender, &channel, &text);
                self.stats.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
                self.publish(&sender, &channel, text).await
            }
            ToBridge::Interest {
                shard,
                channel,
                interested,
            } => self.on_interest(shard, channel, interested).await,
            ToBridge::History {
                sender,
                channel,
                text,
            } => {
                let weight = super::wire::publish_weight(&sender, &channel, &text);
                self.stats.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
                match &mut self.shared {
                    Some(shared) => shared.publish(sender, channel, text).await,
                    None => {
                        // JetStream went away between the shard's look and
                        // now: the home shard numbers it, others get it plain.
                        let home = crate::history::home_shard(&channel, self.inboxes.len());
                        let remote = super::wire::Remote {
                            sender: sender.clone(),
                            channel: Arc::from(&*channel),
                            text: text.clone(),
                        };
                        if let Some(inbox) = self.inboxes.get(home) {
                            inbox.push(Inbound::Unnumbered(Arc::new(remote)), &self.stats);
                        }
                        self.publish(&sender, &channel, text).await
                    }
                }
            }
            ToBridge::ReadWindow { shard, channel } => match &self.shared {
                Some(shared) => shared.read_window(channel, shard),
                None => {
                    let window = super::jetstream::Window {
                        channel,
                        messages: Vec::new(),
                        read: false,
                        seq: 0,
                    };
                    if let Some(inbox) = self.inboxes.get(shard) {
                        inbox.push(Inbound::Window(Box::new(window)), &self.stats);
                    }
                }
            },
        }
    }

    async fn publish(&mut self, sender: &str, channel: &str, text: Box<str>) {
        if self.client.connection_state() != State::Connected {
            // Counted; the outage's single log line comes from `on_event`.
            self.stats.count_dropped(1);
            return;
        }
        let Some(subject) = self.subject(channel) else {
            self.stats.count_dropped(1);
            return;
        };
        let headers = wire::headers(&self.node, sender);
        let payload = String::from(text).into_bytes();
        match self
            .client
            .publish_with_headers(subject, headers, payload.into())
            .await
        {
            Ok(()) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                debug!(error = %e, "publish to NATS failed");
                self.stats.count_dropped(1);
            }
        }
    }

    /// The subject of `channel`, unless it is too long for NATS.
    fn subject(&mut self, channel: &str) -> Option<String> {
        let subject = subject_for(channel);
        if subject.len() <= MAX_SUBJECT_BYTES {
            return Some(subject);
        }
        if !self.warned_long_subject {
            self.warned_long_subject = true;
            warn!(
                channel_bytes = channel.len(),
                "channel name too long for a NATS subject: it stays local to this node \
                 (lower --max-name-bytes to at most 2300 to avoid this)"
            );
        }
        None
    }

    async fn on_interest(&mut self, shard: usize, channel: Box<str>, interested: bool) {
        let bit = 1u64 << shard;
        let entry = match self.channels.get_mut(&channel) {
            Some(entry) => entry,
            None if !interested => return,
            None => self.channels.entry(channel.clone()).or_insert(Channel {
                shards: Arc::default(),
                forwarder: None,
                idle_since: None,
            }),
        };
        let shards = if interested {
            entry.shards.fetch_or(bit, Ordering::Relaxed) | bit
        } else {
            entry.shards.fetch_and(!bit, Ordering::Relaxed) & !bit
        };
        if shards == 0 {
            entry.idle_since.get_or_insert_with(Instant::now);
        } else {
            entry.idle_since = None;
            if entry.forwarder.is_none() {
                self.subscribe(&channel).await;
            }
        }
    }

    /// Subscribes to `channel`'s subject and starts its forwarder.
    async fn subscribe(&mut self, channel: &str) {
        let Some(subject) = self.subject(channel) else {
            return;
        };
        let subscriber = match self.client.subscribe(subject).await {
            Ok(subscriber) => subscriber,
            Err(e) => {
                // Retried by the next sweep.
                warn!(error = %e, "cannot subscribe to NATS; retrying");
                return;
            }
        };
        let Some(entry) = self.channels.get_mut(channel) else {
            return;
        };
        debug!(channel, "subscribed on NATS");
        let shards = self.inboxes.len();
        let home = self.history.as_ref().and_then(|h| h.home(channel, shards));
        entry.forwarder = Some(tokio::spawn(forward(
            subscriber,
            Arc::from(channel),
            home,
            entry.shards.clone(),
            self.node.clone(),
            self.inboxes.clone(),
            self.stats.clone(),
        )));
    }

    /// Unsubscribes channels idle for [`LINGER`]; retries failed subscribes.
    async fn sweep(&mut self) {
        let now = Instant::now();
        self.channels.retain(|channel, entry| {
            let expired = entry
                .idle_since
                .is_some_and(|since| now.duration_since(since) >= LINGER);
            if expired {
                debug!(channel = &**channel, "unsubscribing on NATS");
            }
            !expired
        });
        let unsubscribed: Vec<Box<str>> = self
            .channels
            .iter()
            .filter(|(_, e)| e.forwarder.is_none() && e.idle_since.is_none())
            .map(|(c, _)| c.clone())
            .collect();
        for channel in unsubscribed {
            self.subscribe(&channel).await;
        }
        self.retry_shared_history(now).await;
    }

    /// Shares history through JetStream once it can: the stream is set up
    /// again when it could not be at start, and after JetStream refused a
    /// publish, numbering returns to it once it answers again.
    async fn retry_shared_history(&mut self, now: Instant) {
        let connected = self.client.connection_state() == State::Connected;
        if !connected || now < self.next_history_try {
            return;
        }
        self.next_history_try = now + HISTORY_RETRY;
        match (&self.shared, &self.history) {
            (None, Some(history)) => {
                self.shared = SharedHistory::start(
                    &self.client,
                    self.node.clone(),
                    history.clone(),
                    self.inboxes.clone(),
                    self.stats.clone(),
                    false,
                )
                .await;
            }
            (Some(shared), _) if !self.stats.history_shared.load(Ordering::Relaxed) => {
                let back = shared.answers().await;
                self.stats.history_shared.store(back, Ordering::Relaxed);
                if back {
                    info!("JetStream answers again: channel history is shared again");
                }
            }
            _ => {}
        }
    }

    fn on_event(&mut self, event: Event) {
        let stats = &self.stats;
        match event {
            Event::Connected => {
                stats.connected.store(1, Ordering::Relaxed);
                if self.ever_connected {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    let dropped = stats.dropped.load(Ordering::Relaxed) - self.dropped_at_outage;
                    info!(
                        dropped_during_outage = dropped,
                        "NATS connection back: cross-node delivery resumes"
                    );
                } else {
                    info!("connected to NATS");
                }
                self.ever_connected = true;
                self.outage_logged = false;
            }
            Event::Disconnected => {
                stats.connected.store(0, Ordering::Relaxed);
                self.dropped_at_outage = stats.dropped.load(Ordering::Relaxed);
                self.outage_logged = true;
                warn!(
                    "NATS connection lost: local delivery goes on; cross-node messages \
                     are dropped until it is back"
                );
            }
            Event::ClientError(e) if !self.outage_logged => {
                self.outage_logged = true;
                warn!(
                    error = %e,
                    "cannot reach NATS; retrying every second at most; cross-node messages \
                     are dropped until it is reached"
                );
            }
            Event::ClientError(e) => debug!(error = %e, "NATS still unreachable"),
            Event::SlowConsumer(_) => {
                warn!("NATS client overflowed: some messages from other nodes were dropped");
            }
            other => info!(event = %other, "NATS event"),
        }
    }
}

/// Hands every message of one channel's subscription to the shards that
/// listen to the channel, or, for a channel with history, to its home
/// shard (`home`), which numbers it and forwards it over the rings.
async fn forward(
    mut subscriber: Subscriber,
    channel: Arc<str>,
    home: Option<usize>,
    shards: Arc<AtomicU64>,
    node: Arc<str>,
    inboxes: Arc<[ShardInbox]>,
    stats: Arc<ClusterStats>,
) {
    while let Some(msg) = subscriber.next().await {
        match wire::decode(&node, &channel, msg.headers.as_ref(), &msg.payload) {
            Ok(remote) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                let remote = Arc::new(remote);
                let targets = match home {
                    Some(home) => 1 << home,
                    None => shards.load(Ordering::Relaxed),
                };
                for shard in shard_ids(targets) {
                    if let Some(inbox) = inboxes.get(shard) {
                        inbox.push(Inbound::Publish(remote.clone()), &stats);
                    }
                }
            }
            Err(Ignored::OwnEcho) => {}
            Err(Ignored::Foreign) => {
                debug!(subject = %msg.subject, "ignoring a message not in the EaseChat format");
            }
        }
    }
}

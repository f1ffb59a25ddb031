//! What the admin thread asks shard 0, and how shard 0 answers.
//!
//! Each request carries a tokio oneshot sender: shard 0 (glommio) sends
//! the answer without needing a tokio runtime, and the admin thread awaits
//! it with a timeout. A dropped sender (the nexus is stopping) reads as
//! "no answer".

use std::rc::Rc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::access::unix_now;
use crate::shard::ShardState;
use crate::state::listing::{merge_channels, ChannelQuery, ChannelRow, ClientQuery, ClientView};
use crate::state::views::{Answer, Query};
use crate::stats::StatsSnapshot;
use easechat_auth::{Credential, Operation};

/// How long shard 0 waits for the other shards on an API question.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// A question or command from the admin thread to shard 0.
#[derive(Debug)]
pub enum AdminRequest {
    /// Every shard's counters, gathered within `timeout`.
    Stats {
        /// How long to wait for the other shards.
        timeout: Duration,
        /// Where the answer goes.
        reply: oneshot::Sender<StatsReply>,
    },
    /// The top channels across shards.
    Channels {
        /// Filter, order and cap.
        query: ChannelQuery,
        /// Where the answer goes.
        reply: oneshot::Sender<ChannelsReply>,
    },
    /// Connections across shards.
    Clients {
        /// Filter and cap.
        query: ClientQuery,
        /// Where the answer goes.
        reply: oneshot::Sender<ClientsReply>,
    },
    /// Publish like the console's `push`.
    Publish {
        /// The name receivers see.
        sender: String,
        /// Where to publish.
        channel: String,
        /// What to publish.
        text: String,
        /// `Err` with the reason when a check refused it.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Reload the access policy (`POST /api/reload`).
    Reload {
        /// The new policy's summary, or why the reload was refused.
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// Every shard's figures.
#[derive(Debug, Clone)]
pub struct StatsReply {
    /// The shards that answered, in shard order.
    pub shards: Vec<StatsSnapshot>,
    /// False when some shard did not answer in time.
    pub complete: bool,
    /// True once the nexus is stopping.
    pub stopping: bool,
    /// True once a lame-duck drain started (`/healthz` answers 503).
    pub draining: bool,
    /// The cluster bridge's counters in Prometheus text, with `--nats`.
    pub cluster: Option<String>,
    /// Shards in the nexus.
    pub nr_shards: usize,
}

/// The channel list across shards.
#[derive(Debug, Clone)]
pub struct ChannelsReply {
    /// Top channels in the query's order.
    pub channels: Vec<ChannelRow>,
    /// Matching channels before the cap, summed over shards (a channel on
    /// two shards counts twice: an upper bound).
    pub matching: usize,
    /// False when some shard did not answer in time.
    pub complete: bool,
}

/// The clients list across shards.
#[derive(Debug, Clone)]
pub struct ClientsReply {
    /// Connections, by shard then age.
    pub clients: Vec<ClientView>,
    /// Matching connections before the cap.
    pub matching: usize,
    /// False when some shard did not answer in time.
    pub complete: bool,
}

/// The checks a console `push` or an API publish passes before it is
/// published: names present and within `--max-name-bytes`, a `1r` within
/// `--max-message-bytes` (what a client's `1t` must also pass), and with
/// access control on, the console identity's publish permission.
pub fn check_publish(
    shard: &ShardState,
    sender: &str,
    channel: &str,
    text: &str,
) -> Result<(), String> {
    if sender.is_empty() || channel.is_empty() {
        return Err("sender and channel must not be empty".into());
    }
    let limit = shard.config.live.max_name_bytes();
    for (what, name) in [("sender", sender), ("channel", channel)] {
        if name.len() > limit {
            return Err(format!(
                "{what} too long: {} bytes, limit {limit}",
                name.len()
            ));
        }
    }
    if let Some(access) = &shard.config.access {
        let grant = access
            .policy()
            .authenticate(Credential::Console, unix_now())
            .map_err(|e| e.to_string())?;
        if !grant.may(Operation::Publish, channel) {
            return Err(format!(
                "publish to {channel:?} denied for the console identity by the access policy"
            ));
        }
    }
    shard
        .check_publish(sender, channel, text)
        .map_err(|e| e.to_string())
}

/// Answers one request on shard 0 (spawned, so a slow gather does not hold
/// up the console).
pub async fn answer(shard: Rc<ShardState>, request: AdminRequest) {
    match request {
        AdminRequest::Stats { timeout, reply } => {
            let (shards, complete) = shard.gather_stats(timeout).await;
            let _ = reply.send(StatsReply {
                shards,
                complete,
                stopping: shard.shutdown.reason().is_some(),
                draining: shard.draining.reason().is_some(),
                cluster: shard
                    .cluster
                    .as_ref()
                    .map(|c| c.stats().render_prometheus()),
                nr_shards: shard.router.nr_shards(),
            });
        }
        AdminRequest::Channels { query, reply } => {
            let (answers, complete) = shard
                .gather(Query::Channels(query.clone()), GATHER_TIMEOUT)
                .await;
            let lists: Vec<_> = answers
                .into_iter()
                .filter_map(|a| match a {
                    Answer::Channels(list) => Some(list),
                    _ => None,
                })
                .collect();
            let _ = reply.send(ChannelsReply {
                channels: merge_channels(&lists, &query),
                matching: lists.iter().map(|l| l.matching).sum(),
                complete,
            });
        }
        AdminRequest::Clients { query, reply } => {
            let (answers, complete) = shard.gather(Query::Clients(query), GATHER_TIMEOUT).await;
            let mut clients = Vec::new();
            let mut matching = 0;
            for answer in answers {
                if let Answer::Clients(list) = answer {
                    matching += list.matching;
                    clients.extend(list.clients);
                }
            }
            clients.sort_by_key(|c| (c.shard, c.connected_at));
            let _ = reply.send(ClientsReply {
                clients,
                matching,
                complete,
            });
        }
        AdminRequest::Publish {
            sender,
            channel,
            text,
            reply,
        } => {
            let result = check_publish(&shard, &sender, &channel, &text);
            if result.is_ok() {
                shard.publish(&sender, &channel, &text);
            }
            let _ = reply.send(result);
        }
        AdminRequest::Reload { reply } => {
            let _ = reply.send(crate::console::reload(&shard));
        }
    }
}

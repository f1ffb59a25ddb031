//! Questions the console, the metrics endpoint and the admin API ask every
//! shard, and the answers each shard gives about itself. Plain data: they
//! travel over the rings and are rendered by the console and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use crate::state::history::HistoryView;
use crate::state::listing::{ChannelList, ChannelQuery, ClientList, ClientQuery};
use crate::stats::StatsSnapshot;

/// A question a shard answers about itself.
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
    Stats(Box<StatsSnapshot>),
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
    /// The history of the channel named KEYWORD, from the shard that holds
    /// it (its home shard, `--history`); `None` from every other shard.
    pub history: Option<HeldHistory>,
}

/// A channel's history and the shard that holds it, for `list KEYWORD`
/// and `/api/channels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldHistory {
    /// The shard that holds it (the channel's home shard).
    pub shard: usize,
    /// Position, epoch, messages and bytes held.
    pub view: HistoryView,
}

//! Message history and recovery (`--history PATTERN`): which channels keep
//! one, which shard keeps it, and the frames it holds.
//!
//! A channel with history has a *home shard* (a hash of its name): every
//! publish on it, from any shard or from another node, goes to the home
//! shard first, which gives it the channel's next offset, keeps it, and
//! fans it out to its own subscribers and to the other shards that listen.
//! One shard numbering the channel is what keeps its offsets contiguous
//! while publishers sit on every shard; the price is one ring hop for
//! publishes made off the home shard (measured in `bench-results/`).
//! Channels without history never take that path.
//!
//! The home shard keeps each message as a [`Sequenced`]: the v1 `1r` frame
//! built once by the publisher's shard, and the positional `1r` built once
//! by the home shard, shared by every subscriber and by every recovery.
//! The pure bookkeeping (offsets, epochs, bounds, all-or-nothing recovery)
//! is [`crate::state::history`]; the shard's side is `crate::shard::history`.

use std::sync::Arc;
use std::time::Duration;

use easechat_auth::pattern::PatternSet;

use crate::protocol::frame::encode_text_frame;
use crate::protocol::Message;
use crate::router::Publication;
use crate::state::history::HistoryLimits;

/// Default `--history-size`: messages kept per channel.
pub const DEFAULT_SIZE: usize = 1000;
/// Default `--history-bytes`: bytes kept per channel.
pub const DEFAULT_BYTES: usize = 1024 * 1024;
/// Default `--history-ttl`: seconds a message is kept.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default `--history-channels`: channels with history per shard.
pub const DEFAULT_CHANNELS: usize = 10_000;
/// Default `--history-total-bytes`: bytes of history per shard.
pub const DEFAULT_TOTAL_BYTES: usize = 256 * 1024 * 1024;
/// Default `--recover-max`: messages one recovery may replay.
pub const DEFAULT_RECOVER_MAX: u64 = 1000;

/// The `--history` settings: which channels keep history, and how much.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Channels matching any of these keep history (`*` = any run).
    pub patterns: PatternSet,
    /// Per-channel and per-shard bounds.
    pub limits: HistoryLimits,
}

impl HistoryConfig {
    /// The home shard of `channel` among `nr_shards`, if it keeps history.
    pub fn home(&self, channel: &str, nr_shards: usize) -> Option<usize> {
        self.patterns
            .matches(channel)
            .then(|| home_shard(channel, nr_shards))
    }
}

/// The shard that numbers and keeps `channel`'s history: FNV-1a of the
/// name, so every shard (and the cluster bridge) agrees without asking.
pub fn home_shard(channel: &str, nr_shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in channel.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % nr_shards.max(1) as u64) as usize
}

/// A message on a channel with history, at its position: shared by the
/// home shard's history, every shard it is forwarded to and every replay.
#[derive(Debug)]
pub struct Sequenced {
    /// The v1 `1r` frame (for subscribers that did not ask for positions),
    /// with the sender and channel.
    pub publication: Arc<Publication>,
    /// The `1r` frame with `|<offset>|<len>|<epoch>` appended.
    positional: Box<[u8]>,
    /// Its offset in the channel's epoch.
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: Arc<str>,
}

impl Sequenced {
    /// Builds the positional frame for `publication` at `offset` in `epoch`.
    pub fn new(publication: Arc<Publication>, offset: u64, epoch: Arc<str>) -> Self {
        let positional = encode_text_frame(&Message::ReceiveAt {
            sender: publication.sender(),
            channel: publication.channel(),
            text: publication.text(),
            offset,
            epoch: &epoch,
        })
        .into_boxed_slice();
        Sequenced {
            publication,
            positional,
            offset,
            epoch,
        }
    }

    /// A message to hold at `offset` in `epoch`, shared, and what holding
    /// it costs (the figure the history's bounds count).
    pub fn held(publication: Arc<Publication>, offset: u64, epoch: Arc<str>) -> (Arc<Self>, usize) {
        let sequenced = Arc::new(Sequenced::new(publication, offset, epoch));
        let weight = sequenced.weight();
        (sequenced, weight)
    }

    /// The frame for a subscriber that asked for positions.
    pub fn positional(&self) -> &[u8] {
        &self.positional
    }

    /// What holding it costs: both frames plus bookkeeping (the figure the
    /// history's byte bounds count).
    pub fn weight(&self) -> usize {
        self.publication.frame().len() + self.positional.len() + HELD_OVERHEAD
    }
}

/// Bytes of bookkeeping per held message besides its two frames (the
/// `Arc`s, the history entry, the offsets); measured figure in README.
pub const HELD_OVERHEAD: usize = 160;

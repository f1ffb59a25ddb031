//! Per-channel message history and recovery: pure data, no I/O, the clock
//! passed in.
//!
//! A channel's history is a window of its latest messages, each at an
//! *offset*: offsets are contiguous (1, 2, 3 …) within an *epoch*, and the
//! epoch is a fresh random string whenever the channel's history starts
//! over (the nexus restarted, or the channel's history was evicted), so a
//! position from an older history never passes for a current one. The
//! window is bounded by count, bytes and age ([`HistoryLimits`]); trimming
//! it keeps the epoch (offsets stay meaningful, old ones are simply no
//! longer held).
//!
//! Recovery is all or nothing ([`Histories::recover`]): a client that last
//! saw offset P in epoch E gets every message after P, or none of them and
//! the reason. The shard that owns the channel's history
//! (`crate::shard::history`) answers it in one step, between two
//! publishes, so nothing can slip between the replay and the live stream.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much history one channel keeps, and what a recovery may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages held per channel (`--history-size`).
    pub size: usize,
    /// Bytes held per channel (`--history-bytes`).
    pub bytes: usize,
    /// Age past which a message is dropped (`--history-ttl`).
    pub ttl: Duration,
    /// Channels with history per shard (`--history-channels`): past it the
    /// least recently published ones are evicted (their epoch ends).
    pub channels: usize,
    /// Most messages one recovery replays (`--recover-max`).
    pub recover_max: u64,
    /// Bytes of history per shard, all channels together
    /// (`--history-total-bytes`): past it the least recently used
    /// channels are evicted.
    pub total_bytes: usize,
}

/// Why a recovery did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecovered {
    /// The client's epoch is not the channel's (restart, eviction, or a
    /// position from another node).
    OtherEpoch,
    /// The client's offset is past the channel's last one.
    Future,
    /// Some of the missed messages are no longer held.
    Evicted,
    /// More messages were missed than one recovery returns.
    TooMany,
    /// The replay would not fit the subscriber's outbound queue.
    TooBig,
}

impl NotRecovered {
    /// For logs and the client's report.
    pub fn as_str(self) -> &'static str {
        match self {
            NotRecovered::OtherEpoch => "other epoch",
            NotRecovered::Future => "position from the future",
            NotRecovered::Evicted => "missed messages no longer held",
            NotRecovered::TooMany => "more missed than --recover-max",
            NotRecovered::TooBig => "replay larger than the outbound queue",
        }
    }
}

/// The answer to a recovery: where the channel stands, and either every
/// missed message (oldest first) or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery<T> {
    /// The channel's last offset now: live messages follow from `top + 1`.
    pub top: u64,
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// `Ok(missed messages)` or `Err(why)`; never a partial replay.
    pub outcome: Result<Vec<T>, NotRecovered>,
}

#[derive(Debug)]
struct Entry<T> {
    offset: u64,
    at: Instant,
    bytes: usize,
    item: T,
}

/// One channel's history.
#[derive(Debug)]
struct ChannelHistory<T> {
    epoch: Arc<str>,
    /// The last offset given out (0: none yet in this epoch).
    top: u64,
    entries: VecDeque<Entry<T>>,
    bytes: usize,
    /// For eviction of the least recently used channels.
    last_used: Instant,
    /// Numbered elsewhere (JetStream, see [`Histories::append_at`]): this
    /// is a mirror, and numbering a message here would collide.
    mirrored: bool,
    /// The stream sequence of the last message mirrored (JetStream's).
    last_seq: u64,
}

impl<T> ChannelHistory<T> {
    /// Starts the channel over in `epoch` just before `offset` (a new
    /// epoch, or a gap the mirror cannot fill).
    fn restart(&mut self, epoch: Arc<str>, top: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.epoch = epoch;
        self.top = top;
    }

    /// Appends `item` at `offset` (the new top).
    fn push(&mut self, offset: u64, item: T, bytes: usize, now: Instant) {
        self.top = offset;
        self.entries.push_back(Entry {
            offset,
            at: now,
            bytes,
            item,
        });
        self.bytes += bytes;
    }

    /// Drops what is past the channel's bounds (count, bytes, age) from
    /// the front.
    fn trim(&mut self, limits: &HistoryLimits, now: Instant) {
        while let Some(front) = self.entries.front() {
            let old = now.saturating_duration_since(front.at) >= limits.ttl;
            if !old && self.entries.len() <= limits.size && self.bytes <= limits.bytes {
                break;
            }
            self.bytes -= front.bytes;
            self.entries.pop_front();
        }
    }
}

/// Every channel's history on one shard (the channels whose home it is).
#[derive(Debug)]
pub struct Histories<T> {
    channels: HashMap<Arc<str>, ChannelHistory<T>>,
    limits: HistoryLimits,
    messages: usize,
    bytes: usize,
    evicted_channels: u64,
    epochs: EpochSource,
    /// Channels whose history started or was evicted since the last
    /// [`Histories::take_changes`] (the cluster bridge's interest follows).
    started: Vec<Arc<str>>,
    evicted: Vec<Arc<str>>,
}

/// What one channel's history looks like, for the console and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryView {
    /// The channel.
    pub channel: String,
    /// Its epoch.
    pub epoch: String,
    /// Its last offset.
    pub top: u64,
    /// Messages held.
    pub messages: usize,
    /// Bytes held.
    pub bytes: usize,
}

impl<T: Clone> Histories<T> {
    /// No history yet; `seed` makes this shard's epochs differ from other
    /// shards' and other runs' (take it from the OS's random source).
    pub fn new(limits: HistoryLimits, seed: u64) -> Self {
        Histories {
            channels: HashMap::new(),
            limits,
            messages: 0,
            bytes: 0,
            evicted_channels: 0,
            epochs: EpochSource(seed),
            started: Vec::new(),
            evicted: Vec::new(),
        }
    }

    /// The channel's history, started now (new epoch) if there is none.
    fn channel(&mut self, channel: &str, now: Instant) -> &mut ChannelHistory<T> {
        if !self.channels.contains_key(channel) {
            if self.channels.len() >= self.limits.channels {
                self.evict_least_used();
            }
            let history = ChannelHistory {
                epoch: self.epochs.next(),
                top: 0,
                entries: VecDeque::new(),
                bytes: 0,
                last_used: now,
                mirrored: false,
                last_seq: 0,
            };
            self.channels.insert(Arc::from(channel), history);
            self.started.push(Arc::from(channel));
        }
        self.channels.get_mut(channel).expect("inserted above")
    }

    /// Runs `change` on `channel`'s history (started if there is none) and
    /// keeps the shard's totals in step with what it added or dropped;
    /// past `--history-total-bytes` the least recently used channels go.
    fn change<R>(
        &mut self,
        channel: &str,
        now: Instant,
        change: impl FnOnce(&mut ChannelHistory<T>, &HistoryLimits) -> R,
    ) -> R {
        let limits = self.limits;
        let history = self.channel(channel, now);
        history.last_used = now;
        let before = (history.entries.len(), history.bytes);
        let result = change(history, &limits);
        let after = (history.entries.len(), history.bytes);
        self.messages = self.messages - before.0 + after.0;
        self.bytes = self.bytes - before.1 + after.1;
        while self.bytes > limits.total_bytes && self.channels.len() > 1 {
            self.evict_least_used();
        }
        result
    }

    /// Evicts the least recently used tenth of the channels in one pass,
    /// so a stream of new channels costs O(log n) each, not a scan each.
    fn evict_least_used(&mut self) {
        // Histories holding nothing go first (a client subscribing to many
        // names cannot push out the channels that hold messages), then the
        // least recently used.
        let mut by_use: Vec<((bool, Instant), Arc<str>)> = self
            .channels
            .iter()
            .map(|(name, h)| ((!h.entries.is_empty(), h.last_used), name.clone()))
            .collect();
        let evict = (by_use.len() / 10).max(1);
        by_use.select_nth_unstable_by_key(evict - 1, |(key, _)| *key);
        for (_, name) in by_use.into_iter().take(evict) {
            if let Some(history) = self.channels.remove(&name) {
                self.messages -= history.entries.len();
                self.bytes -= history.bytes;
                self.evicted_channels += 1;
                self.evicted.push(name);
            }
        }
    }

    /// Appends `item` (of `bytes` bytes) to `channel`'s history; returns
    /// its offset and the epoch.
    pub fn append(
        &mut self,
        channel: &str,
        item: T,
        bytes: usize,
        now: Instant,
    ) -> (u64, Arc<str>) {
        let mut position = (0, Arc::from(""));
        self.append_with(channel, now, |offset, epoch| {
            position = (offset, epoch.clone());
            (item, bytes)
        });
        position
    }

    /// Appends what `make` builds for the channel's next offset and epoch
    /// (an item and its size in bytes), and returns the item. Past the
    /// shard's total bytes the least recently used channels are evicted.
    pub fn append_with(
        &mut self,
        channel: &str,
        now: Instant,
        make: impl FnOnce(u64, &Arc<str>) -> (T, usize),
    ) -> T {
        // Numbered here while it mirrored another numbering (the shared
        // one is unavailable): a new epoch, so no position of the mirror
        // passes for one here.
        let mirrored = self.channels.get(channel).is_some_and(|h| h.mirrored);
        let fresh = mirrored.then(|| self.epochs.next());
        self.change(channel, now, |history, limits| {
            if let Some(epoch) = fresh {
                history.restart(epoch, 0);
                history.mirrored = false;
            }
            let offset = history.top + 1;
            let (item, bytes) = make(offset, &history.epoch);
            history.push(offset, item.clone(), bytes, now);
            history.trim(limits, now);
            item
        })
    }

    /// Appends an item numbered elsewhere (JetStream) at `offset` in
    /// `epoch`: the history mirrors that numbering. A duplicate (at or
    /// below the top, same epoch) is ignored (`None`); another epoch, or a
    /// gap, starts the mirror over at this offset.
    pub fn append_at(
        &mut self,
        channel: &str,
        (offset, seq): (u64, u64),
        epoch: &str,
        now: Instant,
        make: impl FnOnce(&Arc<str>) -> (T, usize),
    ) -> Option<T> {
        self.change(channel, now, |history, limits| {
            history.last_seq = history.last_seq.max(seq);
            let same_epoch = history.mirrored && *history.epoch == *epoch;
            if same_epoch && offset <= history.top {
                return None;
            }
            if !same_epoch || Some(offset) != history.top.checked_add(1) {
                let epoch = if same_epoch {
                    history.epoch.clone()
                } else {
                    Arc::from(epoch)
                };
                history.restart(epoch, offset.saturating_sub(1));
                history.mirrored = true;
            }
            let (item, bytes) = make(&history.epoch);
            history.push(offset, item.clone(), bytes, now);
            history.trim(limits, now);
            Some(item)
        })
    }

    /// Completes a mirror with the window read back from JetStream
    /// (`entries`: consecutive offsets of `epoch`, oldest first, the last at
    /// stream sequence `window_seq`), read after the mirror had taken every
    /// message up to `window_seq`: entries older than the mirror's go in
    /// front; a channel the mirror does not know starts from the window; a
    /// window older than the mirror's last message changes nothing else.
    pub fn merge_window(
        &mut self,
        channel: &str,
        epoch: &str,
        entries: Vec<(u64, T, usize)>,
        window_seq: u64,
        now: Instant,
    ) {
        let Some(&(last, _, _)) = entries.last() else {
            // Nothing held there: the mirror stays as it is, or learns
            // nothing (an unknown channel stays unknown).
            return;
        };
        let known = self.channels.get(channel).is_some_and(|h| h.mirrored);
        self.change(channel, now, |history, limits| {
            if !known || (*history.epoch != *epoch && history.last_seq < window_seq) {
                history.restart(Arc::from(epoch), last);
                history.mirrored = true;
                history.last_seq = window_seq;
            } else if *history.epoch != *epoch {
                return;
            }
            for (offset, item, bytes) in entries.into_iter().rev() {
                let front = history
                    .entries
                    .front()
                    .map_or(history.top + 1, |e| e.offset);
                if offset >= front {
                    continue;
                }
                if offset + 1 != front {
                    break;
                }
                history.entries.push_front(Entry {
                    offset,
                    at: now,
                    bytes,
                    item,
                });
                history.bytes += bytes;
            }
            history.trim(limits, now);
        });
    }

    /// The channel's position if it keeps history here, without starting one.
    pub fn known_position(&self, channel: &str) -> Option<(u64, Arc<str>)> {
        self.channels.get(channel).map(|h| (h.top, h.epoch.clone()))
    }

    /// Where `channel` stands (its last offset and epoch), starting its
    /// history if it has none (a new subscriber learns the epoch to come).
    pub fn position(&mut self, channel: &str, now: Instant) -> (u64, Arc<str>) {
        self.change(channel, now, |history, _| {
            (history.top, history.epoch.clone())
        })
    }

    /// Everything published on `channel` after `after` in `epoch`, or why
    /// not; at most `recover_max` messages, and at most `max_bytes` bytes
    /// as `sent_bytes` counts what replaying an item sends.
    pub fn recover(
        &mut self,
        channel: &str,
        after: u64,
        epoch: &str,
        max_bytes: usize,
        sent_bytes: impl Fn(&T) -> usize,
        now: Instant,
    ) -> Recovery<T> {
        self.change(channel, now, |history, limits| {
            history.trim(limits, now);
            let top = history.top;
            // `0` in epoch "" is "from the start": a client that subscribed
            // before the channel had any message.
            let from_start = after == 0 && epoch.is_empty();
            let outcome = if *history.epoch != *epoch && !from_start {
                Err(NotRecovered::OtherEpoch)
            } else if after > top {
                Err(NotRecovered::Future)
            } else if top - after > limits.recover_max {
                Err(NotRecovered::TooMany)
            } else if after < top && history.entries.front().is_none_or(|e| e.offset > after + 1) {
                Err(NotRecovered::Evicted)
            } else {
                let missed = (top - after) as usize;
                let start = history.entries.len() - missed;
                let replay = history.entries.range(start..);
                if replay.clone().map(|e| sent_bytes(&e.item)).sum::<usize>() > max_bytes {
                    Err(NotRecovered::TooBig)
                } else {
                    Ok(replay.map(|e| e.item.clone()).collect())
                }
            };
            Recovery {
                top,
                epoch: history.epoch.clone(),
                outcome,
            }
        })
    }

    /// Drops messages past their age on every channel (upkeep).
    pub fn expire(&mut self, now: Instant) {
        let limits = self.limits;
        for history in self.channels.values_mut() {
            let (messages, bytes) = (history.entries.len(), history.bytes);
            history.trim(&limits, now);
            self.messages = self.messages - messages + history.entries.len();
            self.bytes = self.bytes - bytes + history.bytes;
        }
    }

    /// The channels whose history started, and those evicted, since the
    /// last call.
    pub fn take_changes(&mut self) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        (
            std::mem::take(&mut self.started),
            std::mem::take(&mut self.evicted),
        )
    }

    /// Messages held, all channels together.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Bytes held, all channels together.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Channels with history.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Channels whose history was evicted (their epoch ended) so far.
    pub fn evicted_channels(&self) -> u64 {
        self.evicted_channels
    }

    /// Whether `channel` has a history here (kept or started).
    pub fn holds(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    /// `channel`'s history, for the console and the API.
    pub fn view(&self, channel: &str) -> Option<HistoryView> {
        self.channels.get(channel).map(|h| HistoryView {
            channel: channel.to_string(),
            epoch: h.epoch.to_string(),
            top: h.top,
            messages: h.entries.len(),
            bytes: h.bytes,
        })
    }

    /// Every channel's history whose name contains `filter`, at most `limit`.
    pub fn views(&self, filter: &str, limit: usize) -> Vec<HistoryView> {
        let mut names: Vec<&Arc<str>> = self
            .channels
            .keys()
            .filter(|name| name.contains(filter))
            .collect();
        names.sort();
        names
            .into_iter()
            .take(limit)
            .filter_map(|name| self.view(name))
            .collect()
    }
}

/// Epoch strings: 12 hex digits from a seeded SplitMix64 sequence, so
/// starting a channel's history costs no system call.
#[derive(Debug)]
struct EpochSource(u64);

impl EpochSource {
    fn next(&mut self) -> Arc<str> {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Arc::from(format!("{:012x}", z >> 16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> HistoryLimits {
        HistoryLimits {
            size: 5,
            bytes: 1000,
            ttl: Duration::from_secs(60),
            channels: 100,
            recover_max: 4,
            total_bytes: 1 << 20,
        }
    }

    fn filled(n: u64) -> (Histories<u64>, Arc<str>, Instant) {
        let mut h = Histories::new(limits(), 7);
        let now = Instant::now();
        let (_, epoch) = h.position("c", now);
        for i in 1..=n {
            assert_eq!(h.append("c", i, 10, now), (i, epoch.clone()));
        }
        (h, epoch, now)
    }

    #[test]
    fn the_recovery_table() {
        let (mut h, epoch, now) = filled(7); // holds 3..=7
        let r = |h: &mut Histories<u64>, after, epoch: &str| {
            h.recover("c", after, epoch, usize::MAX, |_| 10, now)
                .outcome
        };
        assert_eq!(r(&mut h, 7, &epoch), Ok(vec![]), "same position");
        assert_eq!(r(&mut h, 4, &epoch), Ok(vec![5, 6, 7]), "from a position");
        assert_eq!(
            r(&mut h, 2, &epoch),
            Err(NotRecovered::TooMany),
            "5 missed, limit 4"
        );
        assert_eq!(
            r(&mut h, 1, &epoch),
            Err(NotRecovered::TooMany),
            "limit exceeded"
        );
        assert_eq!(
            r(&mut h, 8, &epoch),
            Err(NotRecovered::Future),
            "from the future"
        );
        assert_eq!(
            r(&mut h, 5, "other"),
            Err(NotRecovered::OtherEpoch),
            "wrong epoch"
        );
        let recovery = h.recover("c", 4, &epoch, 25, |_| 10, now);
        assert_eq!(recovery.outcome, Err(NotRecovered::TooBig), "30 bytes > 25");
        assert_eq!((recovery.top, recovery.epoch), (7, epoch.clone()));
        // Evicted: a bigger recovery limit, so only the window decides.
        let mut big = Histories::new(
            HistoryLimits {
                recover_max: 100,
                ..limits()
            },
            7,
        );
        let (_, e) = big.position("c", now);
        for i in 1..=7 {
            big.append("c", i, 10, now);
        }
        assert_eq!(
            big.recover("c", 1, &e, usize::MAX, |_| 10, now).outcome,
            Err(NotRecovered::Evicted)
        );
        assert_eq!(
            big.recover("c", 2, &e, usize::MAX, |_| 10, now).outcome,
            Ok(vec![3, 4, 5, 6, 7])
        );
    }

    #[test]
    fn an_empty_history_recovers_its_start_and_nothing_else() {
        let mut h: Histories<u64> = Histories::new(limits(), 1);
        let now = Instant::now();
        let (top, epoch) = h.position("c", now);
        assert_eq!(top, 0);
        let r = h.recover("c", 0, &epoch, usize::MAX, |_| 10, now);
        assert_eq!(r.outcome, Ok(vec![]));
        assert_eq!(
            h.recover("c", 1, &epoch, usize::MAX, |_| 10, now).outcome,
            Err(NotRecovered::Future)
        );
    }

    #[test]
    fn age_and_bytes_trim_the_window_but_keep_the_epoch() {
        let mut h = Histories::new(
            HistoryLimits {
                bytes: 25,
                ..limits()
            },
            3,
        );
        let start = Instant::now();
        let (_, epoch) = h.position("c", start);
        for i in 1..=4 {
            h.append("c", i, 10, start);
        }
        assert_eq!(
            (h.messages(), h.bytes()),
            (2, 20),
            "25 bytes hold two of 10"
        );
        h.expire(start + Duration::from_secs(61));
        assert_eq!((h.messages(), h.bytes()), (0, 0));
        let later = start + Duration::from_secs(62);
        assert_eq!(
            h.recover("c", 4, &epoch, usize::MAX, |_| 10, later).outcome,
            Ok(vec![])
        );
        assert_eq!(
            h.recover("c", 3, &epoch, usize::MAX, |_| 10, later).outcome,
            Err(NotRecovered::Evicted)
        );
        assert_eq!(h.append("c", 5, 10, later), (5, epoch));
    }

    #[test]
    fn evicted_channels_start_a_new_epoch_and_empty_ones_go_first() {
        let mut h = Histories::new(
            HistoryLimits {
                channels: 10,
                ..limits()
            },
            9,
        );
        let now = Instant::now();
        let (_, first) = h.position("c0", now);
        let (_, first_c1) = h.position("c1", now);
        h.append("c0", 1, 10, now);
        for i in 2..=10 {
            h.position(&format!("c{i}"), now + Duration::from_millis(i));
        }
        assert!(h.channel_count() <= 10);
        assert_eq!(h.evicted_channels(), 1);
        assert!(h.holds("c0"), "the oldest, but it holds a message");
        assert!(!h.holds("c1"), "the oldest of those holding nothing");
        assert_eq!((h.messages(), h.bytes()), (1, 10));
        let (top, epoch) = h.position("c1", now + Duration::from_secs(1));
        assert_ne!(epoch, first_c1);
        assert_eq!(top, 0);
        let r = h.recover("c1", 0, &first_c1, usize::MAX, |_| 10, now);
        assert_eq!(r.outcome, Err(NotRecovered::OtherEpoch));
        assert_eq!(h.known_position("c0"), Some((1, first)));
    }

    #[test]
    fn a_mirror_follows_numbers_given_elsewhere() {
        let mut h: Histories<u64> = Histories::new(limits(), 5);
        let now = Instant::now();
        let at = |h: &mut Histories<u64>, offset, epoch: &str| {
            h.append_at("c", (offset, offset), epoch, now, |_| (offset, 10))
        };
        assert_eq!(at(&mut h, 7, "js"), Some(7), "starts mid-stream");
        assert_eq!(at(&mut h, 8, "js"), Some(8));
        assert_eq!(at(&mut h, 8, "js"), None, "a duplicate is dropped");
        assert_eq!(
            h.known_position("c").map(|(t, e)| (t, e.to_string())),
            Some((8, "js".into()))
        );
        let r = h.recover("c", 7, "js", usize::MAX, |_| 10, now);
        assert_eq!(r.outcome, Ok(vec![8]));
        assert_eq!(at(&mut h, 11, "js"), Some(11), "a gap starts over");
        assert_eq!(
            h.recover("c", 8, "js", usize::MAX, |_| 10, now).outcome,
            Err(NotRecovered::Evicted)
        );
        // The window read back fills what the mirror lacks, in front.
        h.merge_window("c", "js", (6..=11).map(|o| (o, o, 10)).collect(), 11, now);
        assert_eq!(
            h.recover("c", 8, "js", usize::MAX, |_| 10, now).outcome,
            Ok(vec![9, 10, 11])
        );
        assert_eq!(h.messages(), 5, "the size bound holds (7..=11)");
        // A window of an older epoch than the mirror's changes nothing.
        h.merge_window("c", "old", vec![(3, 3, 10)], 2, now);
        assert_eq!(
            h.known_position("c").map(|(t, e)| (t, e.to_string())),
            Some((11, "js".into()))
        );
        // Another epoch replaces the mirror; local numbering after it
        // starts an epoch of its own.
        assert_eq!(at(&mut h, 1, "js2"), Some(1));
        let (offset, local) = h.append("c", 99, 10, now);
        assert_eq!(offset, 1);
        assert_ne!(&*local, "js2");
        assert_eq!((h.messages(), h.bytes()), (1, 10));
    }

    proptest! {
        /// Offsets go up by one within an epoch, and a recovery either
        /// replays exactly the offsets after the client's, in order, or
        /// nothing at all.
        #[test]
        fn offsets_are_contiguous_and_recovery_is_all_or_nothing(
            ops in proptest::collection::vec((0u8..4, 0u64..12, 1usize..40), 1..200),
        ) {
            let mut h = Histories::new(
                HistoryLimits { size: 6, bytes: 120, ttl: Duration::from_secs(5), channels: 2, recover_max: 5, total_bytes: 200 },
                11,
            );
            let start = Instant::now();
            let mut last: HashMap<String, (u64, Arc<str>)> = HashMap::new();
            for (step, (op, arg, bytes)) in ops.into_iter().enumerate() {
                let now = start + Duration::from_millis(step as u64 * 300);
                let channel = format!("c{}", arg % 3);
                match op {
                    0 | 1 => {
                        let (offset, epoch) = h.append(&channel, (0, 0), bytes, now);
                        if let Some((prev, prev_epoch)) = last.get(&channel) {
                            if *prev_epoch == epoch {
                                prop_assert_eq!(offset, prev + 1);
                            } else {
                                prop_assert_eq!(offset, 1);
                            }
                        }
                        last.insert(channel.clone(), (offset, epoch.clone()));
                        // The item remembers its own position.
                        h.channels.get_mut(channel.as_str()).unwrap().entries.back_mut().unwrap().item = (offset, 0);
                    }
                    2 => {
                        let (top, epoch) = h.position(&channel, now);
                        let after = top.saturating_sub(arg % 8);
                        let r = h.recover(&channel, after, &epoch, usize::MAX, |_| 10, now);
                        if let Ok(replay) = r.outcome {
                            let offsets: Vec<u64> = replay.iter().map(|(o, _)| *o).collect();
                            let expected: Vec<u64> = (after + 1..=top).collect();
                            prop_assert_eq!(offsets, expected);
                        }
                        let r = h.recover(&channel, after, "not-an-epoch", usize::MAX, |_| 10, now);
                        prop_assert_eq!(r.outcome, Err(NotRecovered::OtherEpoch));
                    }
                    _ => h.expire(now),
                }
                let held: usize = h.channels.values().map(|c| c.entries.len()).sum();
                let bytes: usize = h.channels.values().map(|c| c.bytes).sum();
                prop_assert_eq!(h.messages(), held);
                prop_assert_eq!(h.bytes(), bytes);
                for c in h.channels.values() {
                    prop_assert!(c.entries.len() <= 6 && c.bytes <= 120);
                }
            }
        }
    }
}

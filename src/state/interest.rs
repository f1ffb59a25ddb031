//! Interest between shards: which other shards have live subscribers on
//! which channel ([`Interest`]), and what this shard still owes its peers
//! about its own channels ([`InterestOwed`]).
//!
//! A shard tells its peers when a channel gains its first local subscriber
//! and when it loses its last; every shard keeps the resulting bit set per
//! channel, so a publish is sent only to shards that want it. What a shard
//! owes a peer is state, not a stream of events: the latest bit per channel,
//! so subscribe/unsubscribe churn collapses to at most one pending update
//! per channel per peer, however fast it goes and however full the rings are.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Bit sets of interested remote shards, per channel.
#[derive(Debug, Default)]
pub struct Interest {
    shards_by_channel: HashMap<Box<str>, u64>,
}

impl Interest {
    /// Records that `shard` gained (or lost) subscribers on `channel`.
    pub fn set(&mut self, channel: &str, shard: usize, interested: bool) {
        let bit = 1u64 << shard;
        if interested {
            *self.shards_by_channel.entry(channel.into()).or_default() |= bit;
        } else if let Some(mask) = self.shards_by_channel.get_mut(channel) {
            *mask &= !bit;
            if *mask == 0 {
                self.shards_by_channel.remove(channel);
            }
        }
    }

    /// The remote shards with subscribers on `channel`, as a bit set.
    pub fn shards_for(&self, channel: &str) -> u64 {
        self.shards_by_channel.get(channel).copied().unwrap_or(0)
    }

    /// Number of channels some remote shard listens to.
    pub fn len(&self) -> usize {
        self.shards_by_channel.len()
    }

    /// True when no remote shard listens to anything.
    pub fn is_empty(&self) -> bool {
        self.shards_by_channel.is_empty()
    }
}

/// One channel's standing with the peers.
#[derive(Debug, Default, Clone, Copy)]
struct Owed {
    /// Whether this shard has subscribers on the channel now.
    local: bool,
    /// Peers last told "interested".
    announced: u64,
    /// Peers with this channel in their queue.
    queued: u64,
}

impl Owed {
    fn is_idle(&self) -> bool {
        !self.local && self.announced == 0 && self.queued == 0
    }
}

/// What this shard still owes each peer about its own channels; pure.
///
/// Entries exist only for channels this shard listens to, has announced, or
/// has queued for some peer; each peer's queue holds a channel at most once.
#[derive(Debug)]
pub struct InterestOwed {
    peers: u64,
    channels: HashMap<Rc<str>, Owed>,
    queues: Vec<VecDeque<Rc<str>>>,
}

impl InterestOwed {
    /// For shard `me` of `nr_shards` (at most 64).
    pub fn new(nr_shards: usize, me: usize) -> Self {
        let all = if nr_shards >= 64 {
            u64::MAX
        } else {
            (1u64 << nr_shards) - 1
        };
        InterestOwed {
            peers: all & !(1u64 << me),
            channels: HashMap::new(),
            queues: (0..nr_shards).map(|_| VecDeque::new()).collect(),
        }
    }

    /// Records that this shard now has (or no longer has) subscribers on
    /// `channel`. Returns the peers that got something new to be told.
    pub fn set_local(&mut self, channel: &Rc<str>, interested: bool) -> u64 {
        let owed = self.channels.entry(channel.clone()).or_default();
        owed.local = interested;
        let mut newly_queued = 0;
        for peer in shard_ids(self.peers) {
            let bit = 1u64 << peer;
            let announced = owed.announced & bit != 0;
            if announced != interested && owed.queued & bit == 0 {
                owed.queued |= bit;
                self.queues[peer].push_back(channel.clone());
                newly_queued |= bit;
            }
        }
        if owed.is_idle() {
            self.channels.remove(channel);
        }
        newly_queued
    }

    /// The next update owed to `peer`, as (channel, interested); it counts
    /// as told from here on. Entries whose bit flipped back are skipped.
    pub fn next_for(&mut self, peer: usize) -> Option<(Rc<str>, bool)> {
        let bit = 1u64 << peer;
        while let Some(channel) = self.queues.get_mut(peer)?.pop_front() {
            let Some(owed) = self.channels.get_mut(&channel) else {
                continue;
            };
            owed.queued &= !bit;
            let announced = owed.announced & bit != 0;
            let update = (announced != owed.local).then(|| {
                owed.announced ^= bit;
                owed.local
            });
            if owed.is_idle() {
                self.channels.remove(&channel);
            }
            if let Some(interested) = update {
                return Some((channel, interested));
            }
        }
        None
    }

    /// Updates queued for `peer`.
    pub fn queued_for(&self, peer: usize) -> usize {
        self.queues.get(peer).map_or(0, VecDeque::len)
    }

    /// The longest queue of any peer.
    pub fn longest_queue(&self) -> usize {
        self.queues.iter().map(VecDeque::len).max().unwrap_or(0)
    }

    /// Channels tracked (listened to, announced or queued).
    pub fn tracked(&self) -> usize {
        self.channels.len()
    }
}

/// The shard ids set in `mask`, lowest first.
pub fn shard_ids(mut mask: u64) -> impl Iterator<Item = usize> + Clone {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let id = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gains_and_losses_per_shard() {
        let mut interest = Interest::default();
        interest.set("c", 1, true);
        interest.set("c", 3, true);
        assert_eq!(
            shard_ids(interest.shards_for("c")).collect::<Vec<_>>(),
            vec![1, 3]
        );
        interest.set("c", 1, false);
        assert_eq!(
            shard_ids(interest.shards_for("c")).collect::<Vec<_>>(),
            vec![3]
        );
        interest.set("c", 3, false);
        assert!(
            interest.is_empty(),
            "no entry kept for a channel nobody wants"
        );
        interest.set("x", 2, false);
        assert_eq!(interest.shards_for("x"), 0);
    }

    fn drain(owed: &mut InterestOwed, peer: usize) -> Vec<(String, bool)> {
        std::iter::from_fn(|| owed.next_for(peer))
            .map(|(c, i)| (c.to_string(), i))
            .collect()
    }

    #[test]
    fn churn_collapses_to_the_latest_bit_per_peer() {
        let mut owed = InterestOwed::new(3, 0);
        let c: Rc<str> = Rc::from("c");
        for _ in 0..1_000 {
            owed.set_local(&c, true);
            owed.set_local(&c, false);
        }
        owed.set_local(&c, true);
        assert_eq!(owed.queued_for(1), 1, "one entry per channel per peer");
        assert_eq!(owed.queued_for(2), 1);
        assert_eq!(drain(&mut owed, 1), vec![("c".into(), true)]);
        // Peer 2 is told nothing until it asks, then only the latest bit.
        owed.set_local(&c, false);
        assert_eq!(drain(&mut owed, 2), vec![]);
        assert_eq!(drain(&mut owed, 1), vec![("c".into(), false)]);
        assert_eq!(owed.tracked(), 0, "nothing kept once every peer is even");
    }

    #[test]
    fn fresh_channels_churned_while_a_peer_is_slow_leave_nothing_behind() {
        let mut owed = InterestOwed::new(2, 1);
        for i in 0..10_000 {
            let c: Rc<str> = Rc::from(format!("fresh-{i}"));
            owed.set_local(&c, true);
            owed.set_local(&c, false);
        }
        // Each was queued once; when the peer finally reads, nothing is owed.
        assert_eq!(owed.queued_for(0), 10_000);
        assert_eq!(drain(&mut owed, 0), vec![]);
        assert_eq!(owed.tracked(), 0);
        assert_eq!(owed.longest_queue(), 0);
    }

    #[test]
    fn newly_queued_names_the_peers_to_wake() {
        let mut owed = InterestOwed::new(3, 1);
        let c: Rc<str> = Rc::from("c");
        assert_eq!(owed.set_local(&c, true), 0b101);
        assert_eq!(owed.set_local(&c, false), 0, "already queued");
        assert_eq!(owed.set_local(&c, true), 0);
        assert_eq!(drain(&mut owed, 0), vec![("c".into(), true)]);
        assert_eq!(drain(&mut owed, 2), vec![("c".into(), true)]);
        assert_eq!(owed.set_local(&c, true), 0, "peers already know");
    }
}

//! A shard's subscription index: who listens to which channel, until when.
//!
//! Pure data: it is handed the current [`Instant`] rather than reading the
//! clock, so expiry is tested deterministically. Every entry has exactly one
//! expiry key, so renewals replace rather than accumulate, and purging
//! expired entries frees them: memory follows live subscriptions only.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Instant;

/// A connection's id, unique within its shard.
pub type ConnId = u64;

/// What one subscription costs beside its channel name's bytes: its entries
/// in the three maps below (measured order of magnitude, for budgets).
pub const SUBSCRIPTION_OVERHEAD_BYTES: usize = 160;

/// The budget charge of one subscription to `channel`.
pub fn subscription_cost(channel: &str) -> usize {
    channel.len() + SUBSCRIPTION_OVERHEAD_BYTES
}

/// One live subscription of a channel.
#[derive(Debug)]
struct Entry<S> {
    expires: Instant,
    subscriber: S,
}

/// The channels one shard's connections listen to, with their expiries.
#[derive(Debug)]
pub struct SubscriptionIndex<S> {
    /// channel → subscribers of this shard.
    channels: HashMap<Rc<str>, HashMap<ConnId, Entry<S>>>,
    /// connection → channels it listens to (for closing and per-connection limits).
    by_connection: HashMap<ConnId, Vec<Rc<str>>>,
    /// Every subscription ordered by expiry, for purging.
    expiries: BTreeSet<(Instant, ConnId, Rc<str>)>,
    /// Sum of [`subscription_cost`] over every subscription held.
    cost_bytes: usize,
}

/// What a subscribe call changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// A new subscription; the channel had no subscriber on this shard before.
    FirstOnShard,
    /// A new subscription on a channel this shard already listened to.
    Added,
    /// An existing subscription got a new expiry.
    Renewed,
}

impl<S> Default for SubscriptionIndex<S> {
    fn default() -> Self {
        SubscriptionIndex {
            channels: HashMap::new(),
            by_connection: HashMap::new(),
            expiries: BTreeSet::new(),
            cost_bytes: 0,
        }
    }
}

impl<S> SubscriptionIndex<S> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `conn` to `channel` until `expires`, or renews it.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        channel: &str,
        expires: Instant,
        subscriber: S,
    ) -> Subscribed {
        let existing = self.channels.get_key_value(channel).map(|(k, _)| k.clone());
        let Some(key) = existing else {
            self.insert(conn, Rc::from(channel), expires, subscriber);
            return Subscribed::FirstOnShard;
        };
        // Channels without subscribers are dropped, so a present one has some.
        let subs = self.channels.get_mut(&key).expect("key just found");
        if let Some(entry) = subs.get_mut(&conn) {
            self.expiries.remove(&(entry.expires, conn, key.clone()));
            entry.expires = expires;
            self.expiries.insert((expires, conn, key));
            return Subscribed::Renewed;
        }
        self.insert(conn, key, expires, subscriber);
        Subscribed::Added
    }

    fn insert(&mut self, conn: ConnId, channel: Rc<str>, expires: Instant, subscriber: S) {
        self.channels.entry(channel.clone()).or_default().insert(
            conn,
            Entry {
                expires,
                subscriber,
            },
        );
        self.by_connection
            .entry(conn)
            .or_default()
            .push(channel.clone());
        self.cost_bytes += subscription_cost(&channel);
        self.expiries.insert((expires, conn, channel));
    }

    /// Ends `conn`'s subscription to `channel`. Returns true when that was
    /// the channel's last subscriber on this shard.
    pub fn unsubscribe(&mut self, conn: ConnId, channel: &str) -> bool {
        let Some(subs) = self.channels.get_mut(channel) else {
            return false;
        };
        let Some(entry) = subs.remove(&conn) else {
            return false;
        };
        let key = self
            .channels
            .get_key_value(channel)
            .map(|(k, _)| k.clone())
            .expect("channel present");
        self.expiries.remove(&(entry.expires, conn, key.clone()));
        self.cost_bytes -= subscription_cost(channel);
        if let Some(list) = self.by_connection.get_mut(&conn) {
            list.retain(|c| **c != *channel);
            if list.is_empty() {
                self.by_connection.remove(&conn);
            }
        }
        self.drop_if_empty(&key)
    }

    fn drop_if_empty(&mut self, channel: &Rc<str>) -> bool {
        if self.channels.get(channel).is_some_and(|s| s.is_empty()) {
            self.channels.remove(channel);
            true
        } else {
            false
        }
    }

    /// Removes every subscription of `conn`; returns the channels that lost
    /// their last subscriber on this shard.
    pub fn remove_connection(&mut self, conn: ConnId) -> Vec<Rc<str>> {
        let mut emptied = Vec::new();
        for channel in self.by_connection.remove(&conn).unwrap_or_default() {
            if let Some(entry) = self
                .channels
                .get_mut(&channel)
                .and_then(|s| s.remove(&conn))
            {
                self.expiries
                    .remove(&(entry.expires, conn, channel.clone()));
                self.cost_bytes -= subscription_cost(&channel);
            }
            if self.drop_if_empty(&channel) {
                emptied.push(channel);
            }
        }
        emptied
    }

    /// Removes every subscription that expired at or before `now`; returns
    /// the channels that lost their last subscriber on this shard.
    pub fn purge_expired(&mut self, now: Instant) -> Vec<Rc<str>> {
        self.purge_expired_with(now, |_| {})
    }

    /// [`SubscriptionIndex::purge_expired`], calling `removed` with the
    /// connection of each subscription it drops.
    pub fn purge_expired_with(
        &mut self,
        now: Instant,
        mut removed: impl FnMut(ConnId),
    ) -> Vec<Rc<str>> {
        let mut emptied = Vec::new();
        while let Some(first) = self.expiries.first() {
            if first.0 > now {
                break;
            }
            let (_, conn, channel) = self.expiries.pop_first().expect("first exists");
            removed(conn);
            if let Some(subs) = self.channels.get_mut(&channel) {
                subs.remove(&conn);
            }
            self.cost_bytes -= subscription_cost(&channel);
            if let Some(list) = self.by_connection.get_mut(&conn) {
                list.retain(|c| *c != channel);
                if list.is_empty() {
                    self.by_connection.remove(&conn);
                }
            }
            if self.drop_if_empty(&channel) {
                emptied.push(channel);
            }
        }
        emptied
    }

    /// The live subscribers of `channel` at `now` (expired ones not yet
    /// purged are skipped).
    pub fn subscribers<'a>(&'a self, channel: &str, now: Instant) -> impl Iterator<Item = &'a S> {
        self.channels
            .get(channel)
            .into_iter()
            .flat_map(|subs| subs.values())
            .filter(move |e| e.expires > now)
            .map(|e| &e.subscriber)
    }

    /// Live subscribers of `channel` with their ids and expiries.
    pub fn subscribers_with_expiry<'a>(
        &'a self,
        channel: &str,
        now: Instant,
    ) -> impl Iterator<Item = (ConnId, Instant, &'a S)> {
        self.channels
            .get(channel)
            .into_iter()
            .flat_map(|subs| subs.iter())
            .filter(move |(_, e)| e.expires > now)
            .map(|(id, e)| (*id, e.expires, &e.subscriber))
    }

    /// The channels `conn` listens to at `now`, with their expiries.
    pub fn channels_of(&self, conn: ConnId, now: Instant) -> Vec<(Rc<str>, Instant)> {
        self.by_connection
            .get(&conn)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let expires = self.channels.get(c)?.get(&conn)?.expires;
                (expires > now).then(|| (c.clone(), expires))
            })
            .collect()
    }

    /// How many channels `conn` listens to (including expired, unpurged).
    pub fn count_of(&self, conn: ConnId) -> usize {
        self.by_connection.get(&conn).map_or(0, Vec::len)
    }

    /// Whether `conn` holds a subscription to `channel` (live or not yet purged).
    pub fn contains(&self, conn: ConnId, channel: &str) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|subs| subs.contains_key(&conn))
    }

    /// How many subscriptions `channel` has here (live or not yet purged).
    pub fn subscriber_count(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, HashMap::len)
    }

    /// Whether `channel` has a subscriber here (used for remote interest).
    pub fn has_channel(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    /// The channels with at least one subscriber on this shard.
    pub fn channel_names(&self) -> impl Iterator<Item = &Rc<str>> {
        self.channels.keys()
    }

    /// Number of channels with subscribers here.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Number of subscriptions here.
    pub fn subscription_count(&self) -> usize {
        self.expiries.len()
    }

    /// What every subscription held costs, in budget bytes
    /// ([`subscription_cost`] each).
    pub fn cost_bytes(&self) -> usize {
        self.cost_bytes
    }

    /// The channel's key as stored, so others can share the allocation.
    pub fn channel_key(&self, channel: &str) -> Option<Rc<str>> {
        self.channels.get_key_value(channel).map(|(k, _)| k.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn subscribe_renew_and_unsubscribe() {
        let t0 = Instant::now();
        let mut index = SubscriptionIndex::new();
        assert_eq!(
            index.subscribe(1, "c", t0 + secs(10), 'a'),
            Subscribed::FirstOnShard
        );
        assert_eq!(
            index.subscribe(2, "c", t0 + secs(10), 'b'),
            Subscribed::Added
        );
        assert_eq!(
            index.subscribe(1, "c", t0 + secs(20), 'a'),
            Subscribed::Renewed
        );
        assert_eq!(
            index.subscription_count(),
            2,
            "renewal replaces, never adds"
        );
        let mut live: Vec<_> = index.subscribers("c", t0 + secs(15)).copied().collect();
        assert_eq!(live, vec!['a']);
        assert!(!index.unsubscribe(1, "c"));
        assert!(index.unsubscribe(2, "c"), "last subscriber gone");
        assert!(!index.has_channel("c"));
        live = index.subscribers("c", t0).copied().collect();
        assert!(live.is_empty());
        assert_eq!(index.subscription_count(), 0);
    }

    #[test]
    fn expiry_hides_then_purges() {
        let t0 = Instant::now();
        let mut index = SubscriptionIndex::new();
        index.subscribe(1, "c", t0 + secs(1), ());
        index.subscribe(2, "c", t0 + secs(5), ());
        index.subscribe(1, "d", t0 + secs(1), ());
        assert_eq!(index.subscribers("c", t0 + secs(2)).count(), 1);
        let mut emptied = index.purge_expired(t0 + secs(2));
        emptied.sort();
        assert_eq!(emptied, vec![Rc::from("d")]);
        assert_eq!(index.count_of(1), 0);
        assert_eq!(index.purge_expired(t0 + secs(5)), vec![Rc::from("c")]);
        assert_eq!(index.channel_count(), 0);
        assert_eq!(index.subscription_count(), 0);
        assert!(index.by_connection.is_empty());
    }

    #[test]
    fn closing_a_connection_removes_only_its_own() {
        let t0 = Instant::now();
        let mut index = SubscriptionIndex::new();
        index.subscribe(1, "a", t0 + secs(9), ());
        index.subscribe(1, "b", t0 + secs(9), ());
        index.subscribe(2, "b", t0 + secs(9), ());
        assert_eq!(index.remove_connection(1), vec![Rc::from("a")]);
        assert_eq!(index.channels_of(2, t0).len(), 1);
        assert_eq!(index.subscription_count(), 1);
    }

    #[test]
    fn churn_does_not_grow_memory() {
        let t0 = Instant::now();
        let mut index = SubscriptionIndex::new();
        for round in 0..1_000u64 {
            for conn in 0..10 {
                index.subscribe(conn, "c", t0 + secs(round + 1), ());
            }
        }
        assert_eq!(index.subscription_count(), 10);
        assert_eq!(index.expiries.len(), 10);
        for conn in 0..10 {
            index.remove_connection(conn);
        }
        assert!(index.channels.is_empty() && index.expiries.is_empty());
        assert_eq!(index.cost_bytes(), 0);
    }

    #[test]
    fn cost_follows_every_way_a_subscription_ends() {
        let t0 = Instant::now();
        let mut index = SubscriptionIndex::new();
        index.subscribe(1, "abc", t0 + secs(1), ());
        index.subscribe(1, "abc", t0 + secs(2), ()); // renewal costs nothing
        index.subscribe(2, "abc", t0 + secs(9), ());
        index.subscribe(2, "de", t0 + secs(9), ());
        index.subscribe(3, "f", t0 + secs(9), ());
        assert_eq!(
            index.cost_bytes(),
            2 * subscription_cost("abc") + subscription_cost("de") + subscription_cost("f")
        );
        index.purge_expired(t0 + secs(3));
        index.unsubscribe(3, "f");
        assert_eq!(
            index.cost_bytes(),
            subscription_cost("abc") + subscription_cost("de")
        );
        index.remove_connection(2);
        assert_eq!(index.cost_bytes(), 0);
    }
}

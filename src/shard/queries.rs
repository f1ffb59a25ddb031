//! Messages from other shards, and questions about this shard: what the
//! console, `/metrics` and the admin API ask, answered here and gathered
//! from every shard over the rings.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::ShardState;
use crate::router::ShardMsg;
use crate::state::history::HistoryView;
use crate::state::listing::{
    top, ChannelList, ChannelQuery, ClientList, ClientQuery, ClientView, MAX_LIMIT,
};
use crate::state::views::{
    Answer, HeldHistory, KeywordReport, Query, ShardSummary, SubscriptionView,
};
use crate::stats::{Metric, StatsSnapshot};

impl ShardState {
    /// Handles one message from another shard's ring.
    pub fn on_ring_message(&self, from: usize, msg: ShardMsg) {
        match msg {
            ShardMsg::Publish(publication) => self.deliver_remote(&publication),
            ShardMsg::Sequence(publication) => self.sequence(publication),
            ShardMsg::Sequenced(sequenced) => {
                if self
                    .index
                    .borrow()
                    .has_channel(sequenced.publication.channel())
                {
                    self.deliver_sequenced(&sequenced);
                }
            }
            ShardMsg::Recover(ask) => self.answer_recover(from, *ask),
            ShardMsg::Recovered(reply) => self.on_recovered(*reply),
            ShardMsg::Interest {
                channel,
                interested,
            } => self.router.on_interest(from, &channel, interested),
            ShardMsg::Query { id, query } => {
                let answer = Box::new(self.answer(&query));
                self.router.send(from, ShardMsg::Answer { id, answer });
            }
            ShardMsg::Answer { id, answer } => self.asks.answered(id, *answer),
            ShardMsg::Shutdown(reason) => self.begin_shutdown(reason),
            ShardMsg::Drain => self.begin_drain(),
        }
    }

    /// This shard's answer to a question.
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
            Query::Stats => Answer::Stats(Box::new(self.snapshot())),
            Query::Keyword(keyword) => Answer::Keyword(self.keyword_report(keyword, now)),
            Query::Channels(query) => Answer::Channels(self.answer_channels(query, now)),
            Query::Clients(query) => Answer::Clients(self.answer_clients(query)),
        }
    }

    fn keyword_report(&self, keyword: &str, now: Instant) -> KeywordReport {
        let connections = self.connections.borrow();
        let index = self.index.borrow();
        let mut report = KeywordReport::default();
        for conn in connections.values().filter(|c| c.is_named(keyword)) {
            for (channel, expires) in index.channels_of(conn.id, now) {
                report.endpoint_channels.push(SubscriptionView {
                    connection: self.console_label(conn),
                    name: keyword.to_string(),
                    channel: channel.to_string(),
                    expires_in: expires - now,
                });
            }
        }
        for (id, expires, conn) in index.subscribers_with_expiry(keyword, now) {
            report.channel_subscribers.push(SubscriptionView {
                connection: match connections.get(&id) {
                    Some(conn) => self.console_label(conn),
                    None => self.label(id),
                },
                name: conn.name().as_deref().unwrap_or("").to_string(),
                channel: keyword.to_string(),
                expires_in: expires - now,
            });
        }
        // Only the channel's home shard holds its history.
        report.history = self
            .histories
            .as_ref()
            .and_then(|h| h.borrow().view(keyword))
            .map(|view| HeldHistory {
                shard: self.id,
                view,
            });
        report
    }

    /// This shard's top channels matching `query`, with the histories it
    /// holds of them (a channel whose history is held here is listed even
    /// without a subscriber here).
    fn answer_channels(&self, query: &ChannelQuery, now: Instant) -> ChannelList {
        let index = self.index.borrow();
        let mut matching: Vec<(String, usize)> = index
            .channel_names()
            .filter(|name| name.contains(&*query.filter))
            .map(|name| (name.to_string(), index.subscribers(name, now).count()))
            .filter(|(_, count)| *count > 0)
            .collect();
        let mut held: HashMap<String, HistoryView> = HashMap::new();
        if let Some(histories) = &self.histories {
            held = histories
                .borrow()
                .views(&query.filter, usize::MAX)
                .into_iter()
                .map(|view| (view.channel.clone(), view))
                .collect();
            let listed: HashSet<&str> = matching.iter().map(|(name, _)| name.as_str()).collect();
            let history_only: Vec<String> = held
                .keys()
                .filter(|name| !listed.contains(name.as_str()))
                .cloned()
                .collect();
            matching.extend(history_only.into_iter().map(|name| (name, 0)));
        }
        let total = matching.len();
        let channels = top(matching, query.sort, query.limit.min(MAX_LIMIT));
        let histories = if held.is_empty() {
            Vec::new()
        } else {
            channels
                .iter()
                .filter_map(|(name, _)| held.remove(name))
                .collect()
        };
        ChannelList {
            shard: self.id,
            channels,
            histories,
            matching: total,
        }
    }

    /// This shard's connections whose name or address contains the filter.
    fn answer_clients(&self, query: &ClientQuery) -> ClientList {
        let connections = self.connections.borrow();
        let index = self.index.borrow();
        let mut matching: Vec<_> = connections
            .values()
            .filter(|c| {
                query.filter.is_empty()
                    || c.name().is_some_and(|n| n.contains(&*query.filter))
                    || c.peer.to_string().contains(&*query.filter)
            })
            .collect();
        let total = matching.len();
        matching.sort_by_key(|c| c.id);
        matching.truncate(query.limit.min(MAX_LIMIT));
        ClientList {
            clients: matching
                .into_iter()
                .map(|c| ClientView {
                    shard: self.id,
                    connection: self.label(c.id),
                    name: c.name().map(|n| n.to_string()),
                    identity: c.access.as_ref().map(|a| a.identity().to_string()),
                    token_id: c
                        .access
                        .as_ref()
                        .and_then(|a| a.token_id())
                        .map(|t| t.to_string()),
                    peer: c.peer,
                    subscriptions: index.count_of(c.id),
                    connected_at: c.connected_at,
                })
                .collect(),
            matching: total,
        }
    }

    /// This shard's counters and gauges now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let connections = self.connections.borrow();
        let index = self.index.borrow();
        let rings = self.router.ring_stats();
        let identified = connections.values().filter(|c| c.name().is_some()).count();
        let gauges = [
            (Metric::ConnectionsOpen, connections.len()),
            (Metric::ConnectionsIdentified, identified),
            (Metric::Subscriptions, index.subscription_count()),
            (Metric::Channels, index.channel_count()),
            (Metric::SubscriptionBytes, index.cost_bytes()),
            (Metric::PartialInputBytes, self.partial_bytes.get()),
            (Metric::RingBacklogBytes, self.router.backlog_bytes()),
            (Metric::RingInFlightBytes, self.router.in_flight_bytes()),
            (Metric::OwedInterestUpdates, self.router.owed_interest()),
            (Metric::PausedConnections, self.paused.get()),
        ];
        for (metric, value) in gauges {
            self.stats.set(metric, value as u64);
        }
        if let Some(histories) = &self.histories {
            let histories = histories.borrow();
            self.stats
                .set(Metric::HistoryChannels, histories.channel_count() as u64);
            self.stats
                .set(Metric::HistoryMessages, histories.messages() as u64);
            self.stats
                .set(Metric::HistoryBytes, histories.bytes() as u64);
            self.stats
                .set(Metric::HistoryEvictions, histories.evicted_channels());
        }
        self.stats.set(Metric::RingMessages, rings.sent);
        self.stats.set(Metric::RingFull, rings.full_waits);
        self.stats.snapshot(self.id)
    }

    /// Asks every shard (this one directly, the others over the rings) and
    /// collects the answers that arrive within `timeout`. The flag is false
    /// when some shard did not answer in time.
    pub async fn gather(&self, query: Query, timeout: Duration) -> (Vec<Answer>, bool) {
        let local = self.answer(&query);
        let question = |id| ShardMsg::Query {
            id,
            query: Box::new(query.clone()),
        };
        self.asks
            .ask_all(self.router.links(), local, question, timeout)
            .await
    }

    /// Every shard's [`StatsSnapshot`], in shard order, and whether all
    /// answered within `timeout`.
    pub async fn gather_stats(&self, timeout: Duration) -> (Vec<StatsSnapshot>, bool) {
        let (answers, complete) = self.gather(Query::Stats, timeout).await;
        let mut snapshots: Vec<StatsSnapshot> = answers
            .into_iter()
            .filter_map(|a| match a {
                Answer::Stats(s) => Some(*s),
                _ => None,
            })
            .collect();
        snapshots.sort_by_key(|s| s.shard);
        (snapshots, complete)
    }
}

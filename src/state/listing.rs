//! The admin console's listings: a shard's channels with subscriber
//! counts (and, with `--history`, the histories it holds), and its
//! clients. Capped on the shard side, so 100,000 channels never build a
//! huge answer on a ring; merged across shards here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::state::history::HistoryView;
use crate::state::views::HeldHistory;

/// Largest `limit` a channel or client question may ask for.
pub const MAX_LIMIT: usize = 1000;

/// How the channel list is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelSort {
    /// Most subscribers first (ties by name).
    Subscribers,
    /// By name.
    Name,
}

/// Which channels to list, for `/api/channels`.
#[derive(Debug, Clone)]
pub struct ChannelQuery {
    /// Substring the name must contain (empty: every channel).
    pub filter: Arc<str>,
    /// The order, which also decides which `limit` channels are kept.
    pub sort: ChannelSort,
    /// At most this many channels (at most [`MAX_LIMIT`]).
    pub limit: usize,
}

/// One shard's channels: its top `limit` matching ones.
#[derive(Debug, Clone, Default)]
pub struct ChannelList {
    /// The answering shard.
    pub shard: usize,
    /// (channel, live subscribers on this shard), in the query's order. A
    /// channel whose history this shard holds is listed even with no
    /// subscriber here (count 0).
    pub channels: Vec<(String, usize)>,
    /// The histories this shard holds of the channels in `channels`.
    pub histories: Vec<HistoryView>,
    /// Matching channels on this shard before the cap.
    pub matching: usize,
}

/// Which clients to list, for `/api/clients`.
#[derive(Debug, Clone)]
pub struct ClientQuery {
    /// Substring the name or address must contain (empty: every client).
    pub filter: Arc<str>,
    /// At most this many clients per shard (at most [`MAX_LIMIT`]).
    pub limit: usize,
}

/// One connection, as the clients list shows it.
#[derive(Debug, Clone)]
pub struct ClientView {
    /// The shard that owns it.
    pub shard: usize,
    /// `s<shard>#<id>`, as the console names it.
    pub connection: String,
    /// Its `1h` name, if it said one.
    pub name: Option<String>,
    /// Who its token says it is (access control on).
    pub identity: Option<String>,
    /// Its token's id (`jti`), if any.
    pub token_id: Option<String>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Channels it listens to.
    pub subscriptions: usize,
    /// When the WebSocket upgrade completed.
    pub connected_at: SystemTime,
}

/// One shard's clients.
#[derive(Debug, Clone, Default)]
pub struct ClientList {
    /// Up to `limit` matching connections, oldest first.
    pub clients: Vec<ClientView>,
    /// Matching connections before the cap.
    pub matching: usize,
}

/// A channel across every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRow {
    /// The channel.
    pub name: String,
    /// Subscribers on every shard together.
    pub subscribers: usize,
    /// shard → subscribers there (shards with subscribers only).
    pub per_shard: BTreeMap<usize, usize>,
    /// The channel's history, when a shard holds one (`--history`).
    pub history: Option<HeldHistory>,
}

fn order(sort: ChannelSort) -> impl Fn(&(String, usize), &(String, usize)) -> std::cmp::Ordering {
    move |a, b| match sort {
        ChannelSort::Subscribers => b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)),
        ChannelSort::Name => a.0.cmp(&b.0),
    }
}

/// Keeps the first `limit` of `items` in `sort` order, sorted: a partial
/// selection, so a shard with 100,000 channels sorts only what it sends.
pub fn top(
    mut items: Vec<(String, usize)>,
    sort: ChannelSort,
    limit: usize,
) -> Vec<(String, usize)> {
    let cmp = order(sort);
    if items.len() > limit && limit > 0 {
        items.select_nth_unstable_by(limit - 1, &cmp);
    }
    items.truncate(limit);
    items.sort_by(&cmp);
    items
}

/// Adds the shards' lists up by channel and keeps the top `limit`. With
/// [`ChannelSort::Subscribers`] the result is exact for the channels shown
/// when every shard's top `limit` holds them (the usual case: a busy channel
/// is busy everywhere); a channel just outside one shard's cut may show
/// fewer subscribers than it has. A channel's history comes from the one
/// shard that holds it; a channel with history and no subscriber is a row
/// with 0 subscribers.
pub fn merge_channels(lists: &[ChannelList], query: &ChannelQuery) -> Vec<ChannelRow> {
    let mut rows: BTreeMap<&str, ChannelRow> = BTreeMap::new();
    for list in lists {
        for (name, count) in &list.channels {
            let row = rows.entry(name).or_insert_with(|| ChannelRow {
                name: name.clone(),
                subscribers: 0,
                per_shard: BTreeMap::new(),
                history: None,
            });
            row.subscribers += count;
            if *count > 0 {
                row.per_shard.insert(list.shard, *count);
            }
        }
        for view in &list.histories {
            if let Some(row) = rows.get_mut(view.channel.as_str()) {
                row.history = Some(HeldHistory {
                    shard: list.shard,
                    view: view.clone(),
                });
            }
        }
    }
    let totals: Vec<(String, usize)> = rows
        .values()
        .map(|r| (r.name.clone(), r.subscribers))
        .collect();
    top(totals, query.sort, query.limit.min(MAX_LIMIT))
        .into_iter()
        .filter_map(|(name, _)| rows.remove(name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(shard: usize, channels: &[(&str, usize)]) -> ChannelList {
        ChannelList {
            shard,
            channels: channels.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            histories: Vec::new(),
            matching: channels.len(),
        }
    }

    fn view(channel: &str, top: u64) -> HistoryView {
        HistoryView {
            channel: channel.into(),
            epoch: "3f9a0c1d2e4b".into(),
            top,
            messages: 2,
            bytes: 300,
        }
    }

    #[test]
    fn top_keeps_the_first_in_order() {
        let items = vec![("b".into(), 1), ("a".into(), 5), ("c".into(), 3)];
        let kept = top(items.clone(), ChannelSort::Subscribers, 2);
        assert_eq!(kept, vec![("a".to_string(), 5), ("c".to_string(), 3)]);
        let kept = top(items, ChannelSort::Name, 2);
        assert_eq!(kept, vec![("a".to_string(), 5), ("b".to_string(), 1)]);
    }

    #[test]
    fn merge_adds_shards_up() {
        let query = ChannelQuery {
            filter: "".into(),
            sort: ChannelSort::Subscribers,
            limit: 2,
        };
        let rows = merge_channels(
            &[
                list(0, &[("x", 2), ("y", 1)]),
                list(1, &[("y", 4), ("z", 1)]),
            ],
            &query,
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "y");
        assert_eq!(rows[0].subscribers, 5);
        assert_eq!(rows[0].per_shard, BTreeMap::from([(0, 1), (1, 4)]));
        assert_eq!(rows[1].name, "x");
    }

    #[test]
    fn histories_join_their_rows_and_history_only_channels_show() {
        let query = ChannelQuery {
            filter: "".into(),
            sort: ChannelSort::Subscribers,
            limit: 10,
        };
        let mut home = list(1, &[("h/a", 0), ("h/b", 0), ("c", 1)]);
        home.histories = vec![view("h/a", 42), view("h/b", 7)];
        let rows = merge_channels(&[list(0, &[("h/a", 3)]), home], &query);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["h/a", "c", "h/b"]);
        assert_eq!(rows[0].subscribers, 3);
        assert_eq!(rows[0].per_shard, BTreeMap::from([(0, 3)]), "no 0 counts");
        assert_eq!(
            rows[0].history,
            Some(HeldHistory {
                shard: 1,
                view: view("h/a", 42)
            })
        );
        assert_eq!(rows[1].history, None);
        assert_eq!((rows[2].subscribers, rows[2].per_shard.len()), (0, 0));
        assert_eq!(rows[2].history.as_ref().map(|h| h.view.top), Some(7));
    }
}

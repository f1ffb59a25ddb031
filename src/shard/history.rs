//! The shard's side of channel history (see [`crate::history`]): numbering
//! publishes on the channels whose home this shard is, delivering numbered
//! frames, and starting positions clients' subscriptions — where the
//! channel stands and, when asked, the replay of what they missed.
//!
//! How the seam between replay and live messages is closed: the home shard
//! answers a subscription in one step between two publishes, so every
//! message numbered up to the answer's `top` is in the replay (or was
//! sent before the subscription), and every later one reaches the
//! subscriber live. When the subscriber sits on another shard, the
//! channel's numbered frames that reach it while the question and answer
//! cross the rings are dropped: the ring from the home shard keeps order,
//! so each was fanned out before the answer and is in its replay (or older
//! than the position the answer reports). Each connection's ask has an id,
//! and only the answer to its newest ask is taken. With history shared
//! through JetStream, a window read back is handed over only once the
//! node's mirror has taken every message up to the window's end, so the
//! window never runs ahead of what the node delivers live.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::ShardState;
use crate::cluster::jetstream::{Numbered, Window};
use crate::history::Sequenced;
use crate::outbox::{Frame, Push};
use crate::protocol::frame::encode_text_frame;
use crate::protocol::{Message, PositionStatus};
use crate::router::{Publication, RecoverAsk, RecoverReply, ShardMsg};
use crate::state::connection::Connection;
use crate::state::history::{NotRecovered, Recovery};
use crate::stats::Metric;

/// Longest a recovery waits for a channel's window from JetStream before it
/// is answered from what the home shard holds (the read-back gives up
/// after 5 s).
const WINDOW_PATIENCE: Duration = Duration::from_secs(6);

impl ShardState {
    /// The home shard of `channel` when it keeps history (`--history`).
    pub fn history_home(&self, channel: &str) -> Option<usize> {
        self.config
            .history
            .as_ref()?
            .home(channel, self.router.nr_shards())
    }

    /// Whether this shard keeps `channel`'s history now.
    pub fn holds_history(&self, channel: &str) -> bool {
        self.histories
            .as_ref()
            .is_some_and(|h| h.borrow().holds(channel))
    }

    /// Whether a message from another shard can be handled now: a publish
    /// to number here waits while a shard it would be forwarded to has no
    /// room, so the budget toward that shard bounds history channels too
    /// (the publisher's shard then fills its budget toward this one and its
    /// publishers pause).
    pub fn can_take(&self, msg: &ShardMsg) -> bool {
        match msg {
            ShardMsg::Sequence(publication) => {
                let targets = self.router.interested_shards(publication.channel());
                self.router.has_room(targets)
            }
            _ => true,
        }
    }

    /// Hands a publish on a channel with history to its home shard.
    pub(super) fn publish_to_home(&self, home: usize, publication: Arc<Publication>) {
        if home == self.id {
            self.sequence(publication);
        } else {
            self.router.send(home, ShardMsg::Sequence(publication));
        }
    }

    /// On the home shard: numbers `publication`, keeps it, delivers it here
    /// and forwards it to the shards that listen.
    pub fn sequence(&self, publication: Arc<Publication>) {
        let Some(histories) = &self.histories else {
            return;
        };
        let sequenced = histories.borrow_mut().append_with(
            publication.channel(),
            Instant::now(),
            |offset, epoch| Sequenced::held(publication.clone(), offset, epoch.clone()),
        );
        self.follow_history_changes();
        self.fan_out_sequenced(&sequenced);
    }

    /// On the home shard, with history shared through JetStream: mirrors a
    /// message JetStream numbered, then delivers and forwards it like
    /// [`ShardState::sequence`] does (a duplicate is dropped).
    pub fn mirror_numbered(&self, numbered: Numbered) {
        let Some(histories) = &self.histories else {
            return;
        };
        let publication = Arc::new(Publication::new(
            &numbered.sender,
            &numbered.channel,
            &numbered.text,
        ));
        let offset = numbered.offset;
        let sequenced = histories.borrow_mut().append_at(
            &numbered.channel,
            (offset, numbered.seq),
            &numbered.epoch,
            Instant::now(),
            |epoch| Sequenced::held(publication.clone(), offset, epoch.clone()),
        );
        self.follow_history_changes();
        if let Some(sequenced) = sequenced {
            self.fan_out_sequenced(&sequenced);
        }
    }

    /// Delivers a numbered publish here and forwards it to the shards
    /// that listen.
    fn fan_out_sequenced(&self, sequenced: &Arc<Sequenced>) {
        let channel = sequenced.publication.channel();
        if self.index.borrow().has_channel(channel) {
            self.deliver_sequenced(sequenced);
        }
        let remote = self.router.interested_shards(channel);
        if remote != 0 {
            self.router.forward_sequenced(remote, sequenced);
        }
    }

    /// Queues a numbered publish to this shard's subscribers: the
    /// positional frame to positions clients (held while their
    /// subscription waits for its answer), the v1 frame to the others.
    /// Each frame is copied into shared memory once, and only if needed.
    pub fn deliver_sequenced(&self, sequenced: &Arc<Sequenced>) {
        let publication = &sequenced.publication;
        let (sender, channel) = (publication.sender(), publication.channel());
        let (mut plain, mut positional): (Option<Frame>, Option<Frame>) = (None, None);
        let mut delivered = 0;
        for subscriber in self.index.borrow().subscribers(channel, Instant::now()) {
            if subscriber.is_named(sender) {
                continue;
            }
            let frame = if subscriber.positions() {
                if subscriber.is_waiting(channel) {
                    continue;
                }
                positional.get_or_insert_with(|| self.frames.frame(sequenced.positional()))
            } else {
                plain.get_or_insert_with(|| self.frames.frame(publication.frame()))
            };
            match subscriber.outbox.push(frame) {
                Push::Queued => delivered += 1,
                Push::Closed => {}
                Push::Overflow => self.close_slow_consumer(subscriber),
            }
        }
        self.stats.add(Metric::Deliveries, delivered);
    }

    /// After a positions client's first subscription on a channel, or any
    /// subscription from a position (`after`): tells it where the channel
    /// stands (`1p`) and replays what it missed, all or nothing. A channel
    /// without history answers a recovery with "not recovered", epoch "".
    pub fn start_position(&self, conn: &Rc<Connection>, channel: &str, after: Option<(u64, &str)>) {
        let Some(home) = self.history_home(channel) else {
            if after.is_some() {
                self.stats.add(Metric::NotRecovered, 1);
                self.push_position(conn, channel, PositionStatus::NotRecovered, 0, "");
            }
            return;
        };
        // The replay must fit the room left in the subscriber's outbox.
        let used = conn.outbox.queued_bytes();
        let max_bytes = self.config.max_outbox_bytes.saturating_sub(used);
        let ask = RecoverAsk {
            ask: conn.start_waiting(channel),
            conn: conn.id,
            channel: channel.into(),
            after: after.map(|(offset, epoch)| (offset, epoch.into())),
            max_bytes,
        };
        if home == self.id {
            self.handle_ask(self.id, ask, false);
        } else {
            self.router.send(home, ShardMsg::Recover(Box::new(ask)));
        }
    }

    /// The home shard's answer: where `channel` stands and, with `after`,
    /// the replay or why not; `None` when the answer needs the channel's
    /// window from JetStream first (`final_answer` rules that out).
    fn recover_here(
        &self,
        channel: &str,
        after: Option<(u64, &str)>,
        max_bytes: usize,
        final_answer: bool,
    ) -> Option<Recovery<Arc<Sequenced>>> {
        let histories = self.histories.as_ref().expect("history is on");
        let now = Instant::now();
        let shared = self.cluster.as_ref().is_some_and(|c| c.shares_history());
        if shared && histories.borrow().known_position(channel).is_none() {
            // Numbered by JetStream, never seen here: read it back first;
            // after that, a channel JetStream holds nothing of has no epoch.
            if !final_answer {
                return None;
            }
            let outcome = match after {
                None | Some((0, _)) => Ok(Vec::new()),
                Some(_) => Err(NotRecovered::OtherEpoch),
            };
            return Some(Recovery {
                top: 0,
                epoch: Arc::from(""),
                outcome,
            });
        }
        let recovery = match after {
            Some((offset, epoch)) => histories.borrow_mut().recover(
                channel,
                offset,
                epoch,
                max_bytes,
                |s| s.positional().len(),
                now,
            ),
            None => {
                let (top, epoch) = histories.borrow_mut().position(channel, now);
                Recovery {
                    top,
                    epoch,
                    outcome: Ok(Vec::new()),
                }
            }
        };
        self.follow_history_changes();
        let window_may_help = matches!(
            recovery.outcome,
            Err(NotRecovered::OtherEpoch | NotRecovered::Evicted | NotRecovered::Future)
        );
        if shared && window_may_help && !final_answer {
            return None;
        }
        Some(recovery)
    }

    /// On the home shard: answers a subscriber on shard `from` (this one
    /// included), now or once JetStream's window for the channel is read.
    fn handle_ask(&self, from: usize, ask: RecoverAsk, final_answer: bool) {
        let after = ask
            .after
            .as_ref()
            .map(|(offset, epoch)| (*offset, &**epoch));
        match self.recover_here(&ask.channel, after, ask.max_bytes, final_answer) {
            Some(recovery) => self.reply(from, ask, recovery),
            None => {
                let channel = ask.channel.clone();
                let mut waiting = self.window_asks.borrow_mut();
                let (_, asks) = waiting
                    .entry(channel.clone())
                    .or_insert_with(|| (Instant::now(), Vec::new()));
                asks.push((from, ask));
                let first = asks.len() == 1;
                drop(waiting);
                if first
                    && !self
                        .cluster
                        .as_ref()
                        .is_some_and(|c| c.read_window(&channel))
                {
                    self.answer_window_asks(&channel);
                }
            }
        }
    }

    /// Sends the answer to the asking shard (or takes it here).
    fn reply(&self, from: usize, ask: RecoverAsk, recovery: Recovery<Arc<Sequenced>>) {
        let reply = RecoverReply {
            conn: ask.conn,
            ask: ask.ask,
            asked: ask.after.is_some(),
            channel: ask.channel,
            recovery,
        };
        if from == self.id {
            self.on_recovered(reply);
        } else {
            self.router.send(from, ShardMsg::Recovered(Box::new(reply)));
        }
    }

    /// On the home shard: JetStream's window for a channel arrived; the
    /// mirror takes what it lacked and the asks waiting for it are answered.
    pub fn on_window(&self, window: Window) {
        if let (Some(histories), true) = (&self.histories, window.read) {
            let now = Instant::now();
            if let Some(epoch) = window.messages.last().map(|m| Arc::<str>::from(&*m.epoch)) {
                let entries = window
                    .messages
                    .into_iter()
                    .map(|m| {
                        let publication =
                            Arc::new(Publication::new(&m.sender, &m.channel, &m.text));
                        let (sequenced, weight) =
                            Sequenced::held(publication, m.offset, epoch.clone());
                        (m.offset, sequenced, weight)
                    })
                    .collect();
                histories.borrow_mut().merge_window(
                    &window.channel,
                    &epoch,
                    entries,
                    window.seq,
                    now,
                );
                self.follow_history_changes();
            }
        }
        self.answer_window_asks(&window.channel);
    }

    fn answer_window_asks(&self, channel: &str) {
        let asks = self.window_asks.borrow_mut().remove(channel);
        for (from, ask) in asks.map(|(_, asks)| asks).unwrap_or_default() {
            self.handle_ask(from, ask, true);
        }
    }

    /// Answers, from what this shard holds, the asks whose window has not
    /// come within [`WINDOW_PATIENCE`] (a window lost on a full inbox, or
    /// JetStream gone): no subscription waits for ever (upkeep).
    pub fn answer_late_window_asks(&self, now: Instant) {
        let late: Vec<Box<str>> = self
            .window_asks
            .borrow()
            .iter()
            .filter(|(_, (since, _))| now.saturating_duration_since(*since) >= WINDOW_PATIENCE)
            .map(|(channel, _)| channel.clone())
            .collect();
        for channel in late {
            self.answer_window_asks(&channel);
        }
    }

    /// On the home shard: answers a subscriber on shard `from`.
    pub fn answer_recover(&self, from: usize, ask: RecoverAsk) {
        // From this answer on, every publish here must reach `from`: its
        // subscriber exists already, while its interest announcement may
        // still be on the way. (If that subscriber left in the same
        // instant, `from` gets this channel's frames until its interest
        // next changes, and drops them: harmless.)
        self.router.on_interest(from, &ask.channel, true);
        self.handle_ask(from, ask, false);
    }

    /// On the subscriber's shard: the home shard's answer arrived.
    pub fn on_recovered(&self, reply: RecoverReply) {
        let conn = self.connections.borrow().get(&reply.conn).cloned();
        let Some(conn) = conn else {
            return;
        };
        // Not waiting for this answer any more: unsubscribed, or asked
        // again, meanwhile.
        if !conn.finish_waiting(&reply.channel, Some(reply.ask)) {
            return;
        }
        self.finish_position(&conn, &reply.channel, reply.asked, reply.recovery);
    }

    /// Sends the `1p` and, when recovered, the replay.
    fn finish_position(
        &self,
        conn: &Connection,
        channel: &str,
        asked: bool,
        recovery: Recovery<Arc<Sequenced>>,
    ) {
        let status = match (&recovery.outcome, asked) {
            (_, false) => PositionStatus::Subscribed,
            (Ok(_), true) => PositionStatus::Recovered,
            (Err(_), true) => PositionStatus::NotRecovered,
        };
        if asked {
            let metric = match status {
                PositionStatus::Recovered => Metric::Recovered,
                _ => Metric::NotRecovered,
            };
            self.stats.add(metric, 1);
        }
        match &recovery.outcome {
            Ok(replay) if asked => debug!(
                channel,
                replayed = replay.len(),
                top = recovery.top,
                "recovered"
            ),
            Err(why) => debug!(
                channel,
                why = why.as_str(),
                top = recovery.top,
                "not recovered"
            ),
            Ok(_) => {}
        }
        if !self.push_position(conn, channel, status, recovery.top, &recovery.epoch) {
            return;
        }
        let replay = recovery.outcome.as_deref().unwrap_or_default();
        let mut replayed = 0;
        for sequenced in replay {
            if conn.is_named(sequenced.publication.sender()) {
                continue;
            }
            match conn.outbox.push(&self.frames.frame(sequenced.positional())) {
                Push::Queued => replayed += 1,
                Push::Closed => return,
                Push::Overflow => {
                    self.close_slow_consumer(conn);
                    return;
                }
            }
        }
        self.stats
            .add(Metric::Replayed, replay.len().min(replayed) as u64);
        self.stats.add(Metric::Deliveries, replayed as u64);
    }

    /// Queues a `1p`; false when the connection is closing or overflowed.
    fn push_position(
        &self,
        conn: &Connection,
        channel: &str,
        status: PositionStatus,
        offset: u64,
        epoch: &str,
    ) -> bool {
        let frame = Frame::from(encode_text_frame(&Message::Position {
            channel,
            status,
            offset,
            epoch,
        }));
        match conn.outbox.push(&frame) {
            Push::Queued => true,
            Push::Closed => false,
            Push::Overflow => {
                self.close_slow_consumer(conn);
                false
            }
        }
    }

    /// Keeps the cluster bridge's interest in step with the histories this
    /// shard keeps: a node keeps receiving a channel's messages from other
    /// nodes while it keeps the channel's history, so a client that
    /// recovers here misses nothing published elsewhere.
    fn follow_history_changes(&self) {
        let Some(histories) = &self.histories else {
            return;
        };
        let (started, evicted) = histories.borrow_mut().take_changes();
        let Some(cluster) = &self.cluster else {
            return;
        };
        for channel in started.iter().chain(&evicted) {
            let interested =
                histories.borrow().holds(channel) || self.index.borrow().has_channel(channel);
            cluster.interest(channel, interested);
        }
    }
}

//! History shared by the nodes of a cluster, kept by NATS JetStream
//! (`--nats` with `--history`): one numbering per channel for the whole
//! cluster, so a client drained from one node recovers on another.
//!
//! - One stream, [`STREAM`], over the subjects `easechat.v1.hist.<token>`
//!   (the channel token of [`super::subject`]), with per-subject limits
//!   from `--history-size` and `--history-ttl`.
//! - Numbering: each node's publishes on a channel go, in order, through
//!   one sequencer task per channel, which publishes with the channel's
//!   next offset and epoch in headers and JetStream's
//!   `Nats-Expected-Last-Subject-Sequence`: a publish numbered from a stale
//!   view (another node published meanwhile) is refused by JetStream, the
//!   sequencer reads the subject's last message and numbers again. Offsets
//!   are therefore contiguous per channel across every node; the price is
//!   one JetStream round trip per publish on a history channel, and one
//!   publish in flight per channel per node. The epoch is a fresh random
//!   string whenever the subject holds nothing.
//! - Delivery: every node reads the whole stream with one ordered
//!   consumer, from the time it starts, and hands each message to the
//!   channel's home shard, which mirrors the numbering
//!   ([`crate::state::history::Histories::append_at`]) and fans it out.
//! - Read-back: a recovery the home shard's mirror cannot answer (the
//!   node started after the client's position, or never held the channel)
//!   reads the channel's window back with an ordered consumer filtered on
//!   the subject ([`read_window`]); concurrent asks for one channel share
//!   one read.
//! - Without JetStream on the server, or while NATS is unreachable, a
//!   history publish falls back to the node's own numbering (a local
//!   epoch) and plain cross-node delivery, so nothing is lost; positions
//!   from then on recover on this node only.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{self as js, Context};
use async_nats::{Client, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_lite::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::inbox::{Inbound, ShardInbox};
use super::wire::Remote;
use super::ClusterStats;
use crate::history::HistoryConfig;

/// The stream that keeps every history channel's messages.
pub const STREAM: &str = "EASECHAT_HISTORY";
/// The prefix of a history channel's subject.
pub const HISTORY_PREFIX: &str = "easechat.v1.hist.";
/// Header: the message's offset in its channel.
pub const OFFSET_HEADER: &str = "EaseChat-Offset";
/// Header: the channel's epoch.
pub const EPOCH_HEADER: &str = "EaseChat-Epoch";
/// How long a publish may keep being numbered again (each refusal means
/// another node's publish got in first, so the channel makes progress)
/// before the sequencer falls back to local numbering for it.
const RENUMBER_PATIENCE: Duration = Duration::from_secs(5);
/// A sequencer with nothing to do for this long ends (and is started
/// again by the next publish).
const SEQUENCER_IDLE: Duration = Duration::from_secs(60);
/// Publishes one channel's sequencer may have waiting.
const SEQUENCER_QUEUE: usize = 4096;
/// Longest a window read-back may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The subject of `channel`'s history.
pub fn history_subject(channel: &str) -> String {
    let mut subject = String::from(HISTORY_PREFIX);
    URL_SAFE_NO_PAD.encode_string(channel.as_bytes(), &mut subject);
    // The empty channel's token would be empty; a lone `_` is no
    // base64url encoding (one character never is), so it cannot collide.
    if channel.is_empty() {
        subject.push('_');
    }
    subject
}

/// The channel of a history subject.
pub fn channel_of_history(subject: &str) -> Option<String> {
    let token = subject.strip_prefix(HISTORY_PREFIX)?;
    if token == "_" {
        return Some(String::new());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok()
}

/// A message JetStream numbered, for its channel's home shard.
#[derive(Debug)]
pub struct Numbered {
    /// The channel.
    pub channel: Box<str>,
    /// The publisher's name.
    pub sender: Box<str>,
    /// The text.
    pub text: Box<str>,
    /// Its offset in the channel.
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: Box<str>,
    /// Its stream sequence in JetStream.
    pub seq: u64,
}

impl Numbered {
    /// What it holds while queued (the inboxes' byte budget).
    pub fn weight(&self) -> usize {
        self.channel.len() + self.sender.len() + self.text.len() + self.epoch.len() + 96
    }
}

/// A channel's window read back from JetStream, for its home shard.
#[derive(Debug)]
pub struct Window {
    /// The channel.
    pub channel: Box<str>,
    /// The messages held, oldest first, all of the latest epoch; empty
    /// when the subject holds nothing or could not be read.
    pub messages: Vec<Numbered>,
    /// False when JetStream could not be read (the asks are answered from
    /// what the node holds).
    pub read: bool,
    /// The stream sequence the window was read up to: the node's mirror
    /// had taken every message up to it before the window was handed over.
    pub seq: u64,
}

/// Most bytes of messages one window hands a home shard (the newest
/// messages that fit; older positions then do not recover).
const MAX_WINDOW_BYTES: usize = 8 * 1024 * 1024;

/// A publish waiting for its channel's sequencer: sender and text.
type Pending = (Box<str>, Box<str>);

/// What the bridge needs to keep history in JetStream.
pub struct SharedHistory {
    client: Client,
    context: Context,
    node: Arc<str>,
    inboxes: Arc<[ShardInbox]>,
    stats: Arc<ClusterStats>,
    sequencers: HashMap<Box<str>, mpsc::Sender<Pending>>,
}

impl std::fmt::Debug for SharedHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHistory")
            .field("sequencers", &self.sequencers.len())
            .finish()
    }
}

impl SharedHistory {
    /// Creates (or finds) the stream and starts the node's mirror consumer;
    /// `None` when JetStream is not available (history stays per node).
    pub async fn start(
        client: &Client,
        node: Arc<str>,
        history: Arc<HistoryConfig>,
        inboxes: Arc<[ShardInbox]>,
        stats: Arc<ClusterStats>,
        first: bool,
    ) -> Option<SharedHistory> {
        let context = js::new(client.clone());
        let limits = history.limits;
        let config = stream::Config {
            name: STREAM.to_string(),
            subjects: vec![format!("{HISTORY_PREFIX}>")],
            max_messages_per_subject: limits.size as i64,
            max_age: limits.ttl,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            allow_direct: true,
            ..Default::default()
        };
        let stream = match context.get_or_create_stream(config).await {
            Ok(stream) => stream,
            Err(e) if first => {
                warn!(
                    error = %e,
                    "JetStream unavailable: channel history stays per node (a client \
                     recovers only on the node it left; run nats-server with -js to share \
                     it); tried again every 10 s"
                );
                return None;
            }
            Err(e) => {
                debug!(error = %e, "JetStream still unavailable");
                return None;
            }
        };
        // Read from just after the stream's last message now: every later
        // one reaches the mirror, and a window read up to a sequence at or
        // below it has nothing the mirror could still be handed.
        let mut stream = stream;
        let last = match stream.info().await {
            Ok(info) => info.state.last_sequence,
            Err(e) => {
                warn!(error = %e, "cannot read the history stream: history stays per node");
                return None;
            }
        };
        stats.history_position.store(last, Ordering::Relaxed);
        let consumer = pull::OrderedConfig {
            filter_subject: format!("{HISTORY_PREFIX}>"),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            ..Default::default()
        };
        let messages = match stream.create_consumer(consumer).await {
            Ok(consumer) => consumer.messages().await,
            Err(e) => {
                warn!(error = %e, "cannot read the history stream: history stays per node");
                return None;
            }
        };
        let messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                warn!(error = %e, "cannot read the history stream: history stays per node");
                return None;
            }
        };
        stats.history_shared.store(true, Ordering::Relaxed);
        info!(stream = STREAM, "channel history shared through JetStream");
        tokio::spawn(mirror(messages, history, inboxes.clone(), stats.clone()));
        Some(SharedHistory {
            client: client.clone(),
            context,
            node,
            inboxes,
            stats,
            sequencers: HashMap::new(),
        })
    }

    /// Numbers and keeps a local publish on a history channel (in order
    /// per channel; it reaches this node's subscribers through the mirror).
    /// Never waits: a channel whose sequencer is that far behind has the
    /// message numbered by its home shard instead (see [`Sequencer::fall_back`]).
    pub async fn publish(&mut self, sender: Box<str>, channel: Box<str>, text: Box<str>) {
        let queued = match self.sequencers.get(&channel) {
            Some(queue) => queue.try_send((sender, text)).map_err(|e| match e {
                mpsc::error::TrySendError::Full(m) => (m, true),
                mpsc::error::TrySendError::Closed(m) => (m, false),
            }),
            None => Err(((sender, text), false)),
        };
        let Err(((sender, text), full)) = queued else {
            return;
        };
        if full {
            let sequencer = self.sequencer(&channel);
            sequencer
                .fall_back(&sender, &text, "its channel's queue is full")
                .await;
            return;
        }
        // No sequencer yet (or it ended): start one.
        let (queue, pending) = mpsc::channel(SEQUENCER_QUEUE);
        tokio::spawn(self.sequencer(&channel).run(pending));
        let _ = queue.try_send((sender, text));
        self.sequencers.retain(|_, queue| !queue.is_closed());
        self.sequencers.insert(channel, queue);
    }

    fn sequencer(&self, channel: &str) -> Sequencer {
        Sequencer {
            client: self.client.clone(),
            context: self.context.clone(),
            node: self.node.clone(),
            channel: Arc::from(channel),
            subject: history_subject(channel),
            home: self.home(channel),
            inboxes: self.inboxes.clone(),
            stats: self.stats.clone(),
        }
    }

    /// Whether JetStream answers (the stream is there).
    pub async fn answers(&self) -> bool {
        self.context.get_stream_no_info(STREAM).await.is_ok()
            && self.context.query_account().await.is_ok()
    }

    /// Reads `channel`'s window back for its home shard `shard`.
    pub fn read_window(&self, channel: Box<str>, shard: usize) {
        let context = self.context.clone();
        let inboxes = self.inboxes.clone();
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let read = async {
                let (messages, seq) = read_window(&context, &channel).await?;
                // The mirror first takes everything up to the window's end,
                // so the window is never ahead of what the node fanned out.
                while stats.history_position.load(Ordering::Relaxed) < seq {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok::<_, String>((messages, seq))
            };
            let (messages, read, seq) = match tokio::time::timeout(READ_TIMEOUT, read).await {
                Ok(Ok((messages, seq))) => (messages, true, seq),
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot read a channel's history back from JetStream");
                    (Vec::new(), false, 0)
                }
                Err(_) => {
                    warn!("reading a channel's history back from JetStream timed out");
                    (Vec::new(), false, 0)
                }
            };
            let window = Window {
                channel,
                messages,
                read,
                seq,
            };
            if let Some(inbox) = inboxes.get(shard) {
                inbox.push(Inbound::Window(Box::new(window)), &stats);
            }
        });
    }

    fn home(&self, channel: &str) -> usize {
        crate::history::home_shard(channel, self.inboxes.len())
    }
}

/// One channel's numbering on this node: publishes in order, each with the
/// next offset, renumbered when another node got there first.
struct Sequencer {
    client: Client,
    context: Context,
    node: Arc<str>,
    channel: Arc<str>,
    subject: String,
    home: usize,
    inboxes: Arc<[ShardInbox]>,
    stats: Arc<ClusterStats>,
}

impl Sequencer {
    async fn run(self, mut pending: mpsc::Receiver<Pending>) {
        // (stream sequence, offset, epoch) of the subject's last message.
        let mut last: Option<(u64, u64, Arc<str>)> = None;
        while let Ok(Some((sender, text))) =
            tokio::time::timeout(SEQUENCER_IDLE, pending.recv()).await
        {
            let started = tokio::time::Instant::now();
            let mut renumbered = 0u32;
            loop {
                let (seq, offset, epoch) = match &last {
                    Some(known) => known.clone(),
                    None => match self.read_last().await {
                        Ok(known) => known,
                        Err(e) => {
                            self.fall_back(&sender, &text, &e).await;
                            break;
                        }
                    },
                };
                match self.publish(&sender, &text, seq, offset + 1, &epoch).await {
                    Ok(stored) => {
                        last = Some((stored, offset + 1, epoch));
                        break;
                    }
                    Err(e)
                        if e.kind() == PublishErrorKind::WrongLastSequence
                            && started.elapsed() < RENUMBER_PATIENCE =>
                    {
                        renumbered += 1;
                        last = None;
                        if renumbered > 2 {
                            // Two nodes taking turns losing: a random pause
                            // (up to 2 ms) lets one of them through.
                            let mut jitter = [0u8; 1];
                            let _ = getrandom::fill(&mut jitter);
                            let pause = Duration::from_micros(u64::from(jitter[0]) * 8);
                            tokio::time::sleep(pause).await;
                        }
                    }
                    Err(e) => {
                        last = None;
                        self.fall_back(&sender, &text, &e.to_string()).await;
                        break;
                    }
                }
            }
        }
    }

    /// The subject's last message, or a new epoch at offset 0 when it
    /// holds nothing.
    async fn read_last(&self) -> Result<(u64, u64, Arc<str>), String> {
        let stream = self
            .context
            .get_stream_no_info(STREAM)
            .await
            .map_err(|e| e.to_string())?;
        match stream.direct_get_last_for_subject(&self.subject).await {
            Ok(message) => {
                let offset = header_number(&message.headers, OFFSET_HEADER).ok_or("no offset")?;
                let epoch = message
                    .headers
                    .get(EPOCH_HEADER)
                    .map(|v| Arc::from(v.as_str()))
                    .ok_or("no epoch")?;
                Ok((message.sequence, offset, epoch))
            }
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok((0, 0, new_epoch())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Publishes at `offset` if the subject's last message is still `seq`;
    /// the stream sequence it got.
    async fn publish(
        &self,
        sender: &str,
        text: &str,
        seq: u64,
        offset: u64,
        epoch: &str,
    ) -> Result<u64, async_nats::jetstream::context::PublishError> {
        let mut headers = super::wire::headers(&self.node, sender);
        headers.insert(OFFSET_HEADER, offset.to_string());
        headers.insert(EPOCH_HEADER, epoch);
        let message = PublishMessage::build()
            .payload(text.as_bytes().to_vec().into())
            .headers(headers)
            .expected_last_subject_sequence(seq);
        let ack = self
            .context
            .send_publish(self.subject.clone(), message)
            .await?
            .await?;
        self.stats.published.fetch_add(1, Ordering::Relaxed);
        Ok(ack.sequence)
    }

    /// JetStream failed for this message: the home shard numbers it (a
    /// local epoch), so it is delivered here all the same, and the other
    /// nodes get it the way they get any message.
    async fn fall_back(&self, sender: &str, text: &str, why: &str) {
        let subject = super::subject::subject_for(&self.channel);
        let headers = super::wire::headers(&self.node, sender);
        let payload = text.as_bytes().to_vec();
        if self
            .client
            .publish_with_headers(subject, headers, payload.into())
            .await
            .is_err()
        {
            self.stats.count_dropped(1);
        }
        if self.stats.history_shared.swap(false, Ordering::Relaxed) {
            warn!(
                error = why,
                "JetStream refused a history publish: numbering on this node until it is back"
            );
        }
        debug!(
            channel = &*self.channel,
            error = why,
            "history publish numbered locally"
        );
        let remote = Remote {
            sender: sender.into(),
            channel: self.channel.clone(),
            text: text.into(),
        };
        if let Some(inbox) = self.inboxes.get(self.home) {
            inbox.push(Inbound::Unnumbered(Arc::new(remote)), &self.stats);
        }
    }
}

/// The node's reading of the whole stream: every numbered message goes to
/// its channel's home shard.
async fn mirror(
    mut messages: pull::Ordered,
    history: Arc<HistoryConfig>,
    inboxes: Arc<[ShardInbox]>,
    stats: Arc<ClusterStats>,
) {
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                warn!(error = %e, "reading the history stream failed; the ordered consumer resumes");
                continue;
            }
        };
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let numbered = decode(
            &message.subject,
            message.headers.as_ref(),
            &message.payload,
            seq,
        );
        if let Some(numbered) = numbered {
            stats.received.fetch_add(1, Ordering::Relaxed);
            let home = history.home(&numbered.channel, inboxes.len()).unwrap_or(0);
            if let Some(inbox) = inboxes.get(home) {
                inbox.push(Inbound::Numbered(Box::new(numbered)), &stats);
            }
        }
        // Handed over (or not ours): windows read up to here may go now.
        stats.history_position.fetch_max(seq, Ordering::Relaxed);
    }
}

/// A numbered message from the stream, or `None` if it is not ours.
fn decode(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    seq: u64,
) -> Option<Numbered> {
    let headers = headers?;
    let channel = channel_of_history(subject)?;
    let sender = super::wire::sender_of(headers)?;
    let offset = header_number(headers, OFFSET_HEADER).filter(|&o| o > 0)?;
    let epoch = headers.get(EPOCH_HEADER)?.as_str().to_string();
    let text = std::str::from_utf8(payload).ok()?;
    Some(Numbered {
        channel: channel.into(),
        sender: sender.into(),
        text: text.into(),
        offset,
        epoch: epoch.into(),
        seq,
    })
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.as_str().trim().parse().ok()
}

/// Every message the stream holds on `channel`, oldest first, of the epoch
/// of its last one (the newest that fit [`MAX_WINDOW_BYTES`]), and the
/// stream sequence of the last.
async fn read_window(context: &Context, channel: &str) -> Result<(Vec<Numbered>, u64), String> {
    let subject = history_subject(channel);
    let stream = context
        .get_stream_no_info(STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let last = match stream.direct_get_last_for_subject(&subject).await {
        Ok(last) => last,
        Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e.to_string()),
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut window = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let sequence = message
            .info()
            .map(|i| i.stream_sequence)
            .unwrap_or(u64::MAX);
        let numbered = decode(
            &message.subject,
            message.headers.as_ref(),
            &message.payload,
            sequence,
        );
        if let Some(numbered) = numbered {
            window.push(numbered);
        }
        if sequence >= last.sequence {
            break;
        }
    }
    // Only the last epoch counts (older ones cannot be recovered into).
    if let Some(epoch) = window.last().map(|m| m.epoch.clone()) {
        window.retain(|m| m.epoch == epoch);
    }
    let mut bytes = 0;
    let keep = window
        .iter()
        .rev()
        .take_while(|m| {
            bytes += m.weight();
            bytes <= MAX_WINDOW_BYTES
        })
        .count();
    window.drain(..window.len() - keep);
    Ok((window, last.sequence))
}

/// A fresh epoch for a channel whose subject holds nothing.
fn new_epoch() -> Arc<str> {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    Arc::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_subjects_round_trip() {
        for channel in ["c/lobby", "", "a.b*>", "你好"] {
            let subject = history_subject(channel);
            assert!(subject.starts_with(HISTORY_PREFIX));
            assert_eq!(channel_of_history(&subject).as_deref(), Some(channel));
        }
    }
}

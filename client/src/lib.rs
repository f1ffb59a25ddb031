//! A blocking EaseChat client: connect, name yourself, subscribe with
//! automatic renewal, publish, receive, disconnect — and, opt-in, reconnect
//! with back-off and re-subscribe, as the deployed Java client does.
//!
//! It speaks `ws://` and `wss://` (TLS by rustls; the system's trust roots,
//! or those of a private CA named by [`Options::ca`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use easechat::{Client, Options};
//!
//! let mut client = Client::connect("ws://127.0.0.1:6500", "tool", Options::default())?;
//! client.subscribe("c/lobby", Duration::from_secs(600))?;
//! client.transmit("c/lobby", "hello")?;
//! while let Some(message) = client.recv(Duration::from_secs(1))? {
//!     println!("{}: {}", message.sender, message.text);
//! }
//! client.disconnect("done")?;
//! # Ok::<(), easechat::ClientError>(())
//! ```
//!
//! The client is single-threaded: `recv` must be called regularly (it also
//! renews subscriptions and answers the nexus's pings). Publishing from one
//! thread while another receives needs two clients.
//!
//! # Recovery (opt-in)
//!
//! With [`Options::positions`] the client asks the nexus for the
//! *positions* extension (`docs/protocol.md`, "Positions and recovery"):
//! on channels where the nexus keeps history, each message comes with its
//! [`Position`] (offset and epoch), and the client remembers the last one
//! per channel. When it reconnects ([`Options::reconnect`]) it re-subscribes
//! those channels "from that position", and the nexus first sends exactly
//! what was missed, then live messages, or says it could not
//! ([`RecoveryReport`]). [`Client::recv_event`] returns messages with their
//! positions and those reports; [`Client::recv`] returns only messages and
//! keeps the reports for [`Client::take_reports`]. A position saved by a
//! previous run (`easechat sub --resume-file`, see [`resume`]) is handed to
//! [`Client::set_position`] before subscribing.
//!
//! ```no_run
//! use std::time::Duration;
//! use easechat::{Client, Event, Options, Position};
//!
//! let options = Options { positions: true, reconnect: true, ..Options::default() };
//! let mut client = Client::connect("ws://127.0.0.1:6500", "tool", options)?;
//! // Saved by an earlier run: recover what was published since.
//! client.set_position("h/lobby", Position { offset: 17, epoch: "k3x".into() });
//! client.subscribe("h/lobby", Duration::from_secs(600))?;
//! loop {
//!     match client.recv_event(Duration::from_secs(1))? {
//!         Some(Event::Message { message, position }) => {
//!             println!("{} at {position:?}", message.text)
//!         }
//!         Some(Event::Report(report)) if !report.recovered() => {
//!             eprintln!("{}: {:?}", report.channel, report.problem())
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok::<(), easechat::ClientError>(())
//! ```
//!
//! The crate also holds [`record`] (saving traffic to SQLite) and the
//! `easechat` command (`sub`, `pub`, `record`). It speaks the protocol
//! through the `easechat_protocol` codec and does not depend on the nexus,
//! so the nexus does not link SQLite.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connection;
pub mod record;
pub mod resume;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub use connection::{tls_config, Connection, WSS_DEFAULT_PORT, WS_DEFAULT_PORT};
/// How a subscription started, as the nexus's `1p` says (re-exported so
/// callers need not depend on the codec crate).
pub use easechat_protocol::PositionStatus;
/// The rustls this crate is built with, for [`Connection::open_with`]'s
/// `ClientConfig`.
pub use rustls;

/// What `1h` asks for when [`Options::positions`] is on.
pub const POSITIONS_OPTION: &str = "positions";

/// How many [`RecoveryReport`]s [`Client::recv`] keeps for
/// [`Client::take_reports`]: the oldest are dropped beyond it, so a caller
/// that never asks cannot grow the client without bound.
pub const KEPT_REPORTS: usize = 1024;

/// One message received on a subscribed channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The publisher's name.
    pub sender: String,
    /// The channel.
    pub channel: String,
    /// The text.
    pub text: String,
}

/// A place in a channel's history: what a client recovers from.
///
/// Offsets are contiguous within an epoch (the first message is 1); the
/// nexus changes the epoch whenever the history could have lost messages
/// (a restart, an eviction), so a position only means something together
/// with its epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The message's offset on its channel (0: before the first message).
    pub offset: u64,
    /// The channel history's epoch (never empty in a stored position).
    pub epoch: String,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in epoch {}", self.offset, self.epoch)
    }
}

/// The nexus's `1p`: how a subscription of a positions client started.
/// Sent after the first subscription on a channel with history and after
/// every recovery; [`Client`] fills in [`RecoveryReport::from`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The channel.
    pub channel: String,
    /// Subscribed (nothing asked), recovered, or not recovered.
    pub status: PositionStatus,
    /// The channel's last offset when the subscription started: live
    /// messages follow from `offset + 1` (after any replayed ones).
    pub offset: u64,
    /// The channel history's epoch; empty when the channel keeps none.
    pub epoch: String,
    /// The position the client asked to recover from (`None` for a plain
    /// subscription), so a failure can say what was lost.
    pub from: Option<Position>,
}

impl RecoveryReport {
    /// Whether everything after [`RecoveryReport::from`] follows.
    pub fn recovered(&self) -> bool {
        self.status == PositionStatus::Recovered
    }

    /// For a failed recovery ([`PositionStatus::NotRecovered`]), what was
    /// asked, where the channel stands and the likely reason, in words a
    /// person can act on; `None` otherwise.
    pub fn problem(&self) -> Option<String> {
        if self.status != PositionStatus::NotRecovered {
            return None;
        }
        let asked = match &self.from {
            Some(from) => format!("resumed from {from}"),
            None => "no position was asked for".to_string(),
        };
        if self.epoch.is_empty() {
            return Some(format!("{asked}, but the channel keeps no history"));
        }
        let why = match &self.from {
            Some(from) if from.epoch != self.epoch => {
                " (the channel's history was restarted or evicted since)"
            }
            Some(from) if from.offset > self.offset => " (the position is ahead of the channel)",
            Some(_) => {
                " (the missed messages are no longer all held, or more than the nexus replays)"
            }
            None => "",
        };
        Some(format!(
            "{asked}, channel now at {} in epoch {}{why}",
            self.offset, self.epoch
        ))
    }
}

/// What [`Client::recv_event`] (and [`Connection::recv_event`]) return.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message on a subscribed channel.
    Message {
        /// The message, as [`Client::recv`] returns it.
        message: Received,
        /// Its position, on a channel where the nexus keeps history, when
        /// [`Options::positions`] is on; `None` otherwise.
        position: Option<Position>,
    },
    /// How a subscription started or a recovery went (`1p`).
    Report(RecoveryReport),
}

/// What can go wrong, with what the nexus said when it closed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `ws://host[:port][/path]` or `wss://host[:port][/path]`.
    #[error("invalid URL {0:?}: expected ws://host[:port][/path] or wss://host[:port][/path]")]
    Url(String),
    /// The CA file for `wss://` ([`Options::ca`]) cannot be read or holds no
    /// usable certificate.
    #[error("CA file {}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS cannot be set up (the system has no trust roots…).
    #[error("TLS: {0}")]
    Tls(String),
    /// TCP, the TLS handshake (a certificate that does not verify…) or the
    /// WebSocket upgrade failed.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// The nexus closed the connection, with its close code and reason.
    #[error("closed by the nexus: {code} {reason}")]
    Closed {
        /// WebSocket close code (1000 normal, 1002 protocol, 1008 policy…).
        code: u16,
        /// The nexus's reason.
        reason: String,
    },
    /// The connection broke without a close frame.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The nexus sent something that is not EaseChat protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// How a [`Client`] behaves. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct Options {
    /// Reconnect (with back-off) and re-subscribe when the connection is
    /// lost. Off by default: errors are returned instead.
    pub reconnect: bool,
    /// First reconnect delay; doubles per failed attempt.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Renew a subscription when this fraction of its TTL has passed (the
    /// Java client uses 90 %).
    pub renew_at: f64,
    /// The access token presented at every (re)connect, as
    /// `Authorization: Bearer`; the default comes from `EASECHAT_TOKEN`.
    pub token: Option<String>,
    /// For `wss://`: a PEM file of the CA certificates to trust (exactly
    /// those); `None` trusts the system's roots. Read once, at
    /// [`Client::connect`], and used for every reconnect.
    pub ca: Option<PathBuf>,
    /// Ask for the positions extension (`1h` with `positions`): messages
    /// on channels with history carry their [`Position`], and (with
    /// [`Options::reconnect`]) a reconnect recovers what was missed. Off by
    /// default: the client then speaks plain v1, byte for byte. Needs a
    /// nexus that knows the extension (an older one closes with 1002).
    pub positions: bool,
}

/// The environment variable holding the client's access token.
pub const TOKEN_ENV: &str = "EASECHAT_TOKEN";

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("reconnect", &self.reconnect)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("renew_at", &self.renew_at)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca", &self.ca)
            .field("positions", &self.positions)
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reconnect: false,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            renew_at: 0.9,
            token: std::env::var(TOKEN_ENV)
                .ok()
                .filter(|t| !t.trim().is_empty()),
            ca: None,
            positions: false,
        }
    }
}

/// One reconnect, kept so a caller can see how long it was away and whether
/// any attempt failed (refused, reset, upgrade not answered): the
/// handover test measures its gap and counts failed attempts from this.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    /// When the lost connection was noticed.
    pub lost: Instant,
    /// When the new connection had said `1h` and re-sent every `1c`.
    pub resubscribed: Instant,
    /// Attempts that failed before the one that worked.
    pub failed_attempts: u32,
}

/// A subscription the client keeps alive.
#[derive(Debug, Clone, Copy)]
struct Subscription {
    ttl: Duration,
    renew_due: Instant,
}

/// A named endpoint with subscriptions it renews by itself.
#[derive(Debug)]
pub struct Client {
    url: String,
    name: String,
    options: Options,
    /// The TLS settings of a `wss://` URL (or of a given CA), built once.
    tls: Option<Arc<rustls::ClientConfig>>,
    connection: Connection,
    subscriptions: BTreeMap<String, Subscription>,
    reconnects: u64,
    last_outage: Option<Outage>,
    /// The last position received per channel (with
    /// [`Options::positions`]), or handed in by [`Client::set_position`]:
    /// what a re-subscription after a reconnect recovers from.
    positions: BTreeMap<String, Position>,
    /// The position each outstanding recovery asked for, until its `1p`
    /// arrives: becomes [`RecoveryReport::from`].
    recovering: BTreeMap<String, Position>,
    /// Reports [`Client::recv`] received, for [`Client::take_reports`]
    /// (at most [`KEPT_REPORTS`]).
    reports: VecDeque<RecoveryReport>,
}

impl Client {
    /// Connects to `url` (`ws://` or `wss://`) and says `1h` with `name`.
    ///
    /// For `wss://`, the trust roots ([`Options::ca`], else the system's)
    /// are loaded here, once; a CA file is checked even for `ws://`, so a
    /// bad one is reported whatever the URL.
    pub fn connect(url: &str, name: &str, options: Options) -> Result<Client, ClientError> {
        let tls = if options.ca.is_some() || url.starts_with("wss://") {
            Some(tls_config(options.ca.as_deref())?)
        } else {
            None
        };
        let mut connection = Connection::open_with(url, options.token.as_deref(), tls.as_ref())?;
        hello(&mut connection, name, &options)?;
        Ok(Client {
            url: url.to_string(),
            name: name.to_string(),
            options,
            tls,
            connection,
            subscriptions: BTreeMap::new(),
            reconnects: 0,
            last_outage: None,
            positions: BTreeMap::new(),
            recovering: BTreeMap::new(),
            reports: VecDeque::new(),
        })
    }

    /// The name this client says `1h` with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many times the connection was re-established (with
    /// [`Options::reconnect`]).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The latest reconnect, if any.
    pub fn last_outage(&self) -> Option<Outage> {
        self.last_outage
    }

    /// Subscribes to `channel` for `ttl`, renewed automatically by [`recv`].
    ///
    /// With [`Options::positions`], a channel not yet subscribed that has a
    /// position from [`Client::set_position`] is subscribed *from* it (the
    /// nexus replays what came after, or reports that it cannot); calling
    /// it again for a subscribed channel only renews.
    ///
    /// [`recv`]: Client::recv
    pub fn subscribe(&mut self, channel: &str, ttl: Duration) -> Result<(), ClientError> {
        let from = if self.subscriptions.contains_key(channel) {
            None // a renewal is never a recovery
        } else {
            self.recoverable(channel).cloned()
        };
        match from {
            Some(from) => {
                self.connection.recover(channel, ttl, &from)?;
                self.recovering.insert(channel.to_string(), from);
            }
            None => self.connection.subscribe(channel, ttl)?,
        }
        self.subscriptions.insert(
            channel.to_string(),
            Subscription {
                ttl,
                renew_due: Instant::now() + ttl.mul_f64(self.options.renew_at),
            },
        );
        Ok(())
    }

    /// Ends the subscription to `channel` (`1c` with TTL `0|0`) and forgets
    /// its position: subscribing again starts afresh.
    pub fn unsubscribe(&mut self, channel: &str) -> Result<(), ClientError> {
        self.subscriptions.remove(channel);
        self.positions.remove(channel);
        self.recovering.remove(channel);
        self.connection.subscribe(channel, Duration::ZERO)
    }

    /// The last position received on `channel` (or set by
    /// [`Client::set_position`]): what a reconnect would recover from.
    /// `None` on a channel without history or before anything arrived.
    pub fn position(&self, channel: &str) -> Option<&Position> {
        self.positions.get(channel)
    }

    /// Every channel's position, e.g. to save them for a later run.
    pub fn positions(&self) -> &BTreeMap<String, Position> {
        &self.positions
    }

    /// Sets the position `channel` recovers from: call it before
    /// [`Client::subscribe`] with a position saved by an earlier run (a
    /// subscribed channel uses it at the next reconnect). Needs
    /// [`Options::positions`]; a position with an empty epoch is ignored,
    /// as it cannot be recovered from.
    pub fn set_position(&mut self, channel: &str, position: Position) {
        if position.epoch.is_empty() {
            self.positions.remove(channel);
        } else {
            self.positions.insert(channel.to_string(), position);
        }
    }

    /// The reports (`1p`) that [`Client::recv`] received since the last
    /// call, oldest first (at most [`KEPT_REPORTS`]).
    /// [`Client::recv_event`] returns them instead of keeping them.
    pub fn take_reports(&mut self) -> Vec<RecoveryReport> {
        self.reports.drain(..).collect()
    }

    /// The position to recover `channel` from, if recovery is on and one
    /// is known.
    fn recoverable(&self, channel: &str) -> Option<&Position> {
        if !self.options.positions {
            return None;
        }
        self.positions.get(channel).filter(|p| !p.epoch.is_empty())
    }

    /// Publishes `text` on `channel`.
    pub fn transmit(&mut self, channel: &str, text: &str) -> Result<(), ClientError> {
        self.connection.transmit(channel, text)
    }

    /// Waits up to `wait` for the next message; renews due subscriptions
    /// and answers pings meanwhile. `Ok(None)` when nothing came in time.
    /// With [`Options::reconnect`], a lost connection is re-established
    /// (and re-subscribed) here instead of returned as an error.
    ///
    /// Positions and reports are left out (it returns what a v1 client
    /// sees): reports are kept for [`Client::take_reports`], and
    /// [`Client::recv_event`] gives both.
    pub fn recv(&mut self, wait: Duration) -> Result<Option<Received>, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_event(left)? {
                Some(Event::Message { message, .. }) => return Ok(Some(message)),
                Some(Event::Report(report)) => {
                    if self.reports.len() >= KEPT_REPORTS {
                        self.reports.pop_front();
                    }
                    self.reports.push_back(report);
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                None => return Ok(None),
            }
        }
    }

    /// Like [`Client::recv`], but returns every [`Event`]: messages with
    /// their positions, and the nexus's reports on how subscriptions and
    /// recoveries started. The client's positions are updated before the
    /// event is returned.
    pub fn recv_event(&mut self, wait: Duration) -> Result<Option<Event>, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Err(e) = self.renew_due() {
                self.recover(e)?;
                continue;
            }
            let next_renewal = self.subscriptions.values().map(|s| s.renew_due).min();
            let until = next_renewal.map_or(deadline, |r| r.min(deadline));
            let slice = until.saturating_duration_since(Instant::now());
            match self
                .connection
                .recv_event(slice.max(Duration::from_millis(1)))
            {
                Ok(Some(event)) => return Ok(Some(self.track(event))),
                Ok(None) if Instant::now() >= deadline => return Ok(None),
                Ok(None) => continue,
                Err(e) => self.recover(e)?,
            }
        }
    }

    /// Says `1d` with `reason` and waits for the nexus to close.
    pub fn disconnect(mut self, reason: &str) -> Result<(), ClientError> {
        self.connection.disconnect(reason)
    }

    /// Updates the channel's position from `event` and fills in a report's
    /// `from`. Only subscribed channels are tracked: a message still in
    /// flight after [`Client::unsubscribe`] must not revive a position.
    fn track(&mut self, mut event: Event) -> Event {
        match &mut event {
            Event::Message {
                message,
                position: Some(position),
            } if self.subscriptions.contains_key(&message.channel) => {
                self.positions
                    .insert(message.channel.clone(), position.clone());
            }
            Event::Message { .. } => {}
            Event::Report(report) => {
                report.from = self.recovering.remove(&report.channel);
                if self.subscriptions.contains_key(&report.channel) {
                    self.track_report(report);
                }
            }
        }
        event
    }

    /// A `1p` sets the position to where the channel stood, except after a
    /// successful recovery: the replayed messages are still to come, so the
    /// position stays where it was until each arrives (a reconnect during
    /// the replay then recovers the rest instead of skipping it).
    fn track_report(&mut self, report: &RecoveryReport) {
        if report.epoch.is_empty() {
            self.positions.remove(&report.channel); // no history, nothing to recover
            return;
        }
        let keep = report.recovered()
            && self
                .positions
                .get(&report.channel)
                .is_some_and(|p| p.epoch == report.epoch && p.offset <= report.offset);
        if !keep {
            self.positions.insert(
                report.channel.clone(),
                Position {
                    offset: report.offset,
                    epoch: report.epoch.clone(),
                },
            );
        }
    }

    fn renew_due(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        for (channel, sub) in self.subscriptions.iter_mut() {
            if sub.renew_due <= now {
                self.connection.subscribe(channel, sub.ttl)?;
                sub.renew_due = now + sub.ttl.mul_f64(self.options.renew_at);
            }
        }
        Ok(())
    }

    /// Reconnects (when enabled) after `error`, or returns it. Every delay
    /// is jittered (half to all of the back-off), so clients dropped
    /// together do not come back together. A 1001 close (a nexus draining or
    /// going away: its successor is already listening) is followed by a
    /// first attempt after a random fraction of the initial back-off.
    fn recover(&mut self, error: ClientError) -> Result<(), ClientError> {
        // 1008: the nexus refused something this client does (a name or a
        // channel its token does not allow, an expired token); 1002: it does
        // not understand what this client sends (the positions extension
        // asked of a nexus without it). Reconnecting would be refused again.
        if !self.options.reconnect
            || matches!(
                error,
                ClientError::Closed {
                    code: 1008 | 1002,
                    ..
                }
            )
        {
            return Err(error);
        }
        let lost = Instant::now();
        let going_away = matches!(error, ClientError::Closed { code: 1001, .. });
        let mut delay = self.options.backoff_initial;
        let mut first = true;
        let mut failed_attempts = 0;
        loop {
            let wait = if first && going_away {
                delay.mul_f64(fastrand::f64())
            } else {
                delay.mul_f64(0.5 + fastrand::f64() / 2.0)
            };
            first = false;
            thread::sleep(wait);
            match self.reopen() {
                Ok(()) => {
                    self.reconnects += 1;
                    self.last_outage = Some(Outage {
                        lost,
                        resubscribed: Instant::now(),
                        failed_attempts,
                    });
                    return Ok(());
                }
                Err(_) => {
                    failed_attempts += 1;
                    delay = (delay * 2).min(self.options.backoff_max);
                }
            }
        }
    }

    /// A new connection: `1h`, then every subscription again, each from
    /// its position when there is one to recover from (a plain `1c`
    /// otherwise).
    fn reopen(&mut self) -> Result<(), ClientError> {
        let mut connection =
            Connection::open_with(&self.url, self.options.token.as_deref(), self.tls.as_ref())?;
        hello(&mut connection, &self.name, &self.options)?;
        let now = Instant::now();
        let mut recovering = BTreeMap::new();
        for (channel, sub) in &self.subscriptions {
            match self.recoverable(channel) {
                Some(from) => {
                    connection.recover(channel, sub.ttl, from)?;
                    recovering.insert(channel.clone(), from.clone());
                }
                None => connection.subscribe(channel, sub.ttl)?,
            }
        }
        for sub in self.subscriptions.values_mut() {
            sub.renew_due = now + sub.ttl.mul_f64(self.options.renew_at);
        }
        self.recovering = recovering;
        self.connection = connection;
        Ok(())
    }
}

/// `1h`, asking for positions when the options say so.
fn hello(connection: &mut Connection, name: &str, options: &Options) -> Result<(), ClientError> {
    if options.positions {
        connection.hello_with(name, POSITIONS_OPTION)
    } else {
        connection.hello(name)
    }
}

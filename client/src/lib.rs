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
//! The crate also holds [`record`] (saving traffic to SQLite) and the
//! `easechat` command (`sub`, `pub`, `record`). It speaks the protocol
//! through the `easechat_protocol` codec and does not depend on the nexus,
//! so the nexus does not link SQLite.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connection;
pub mod record;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub use connection::{tls_config, Connection, WSS_DEFAULT_PORT, WS_DEFAULT_PORT};
/// The rustls this crate is built with, for [`Connection::open_with`]'s
/// `ClientConfig`.
pub use rustls;

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
        connection.hello(name)?;
        Ok(Client {
            url: url.to_string(),
            name: name.to_string(),
            options,
            tls,
            connection,
            subscriptions: BTreeMap::new(),
            reconnects: 0,
            last_outage: None,
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
    /// [`recv`]: Client::recv
    pub fn subscribe(&mut self, channel: &str, ttl: Duration) -> Result<(), ClientError> {
        self.connection.subscribe(channel, ttl)?;
        self.subscriptions.insert(
            channel.to_string(),
            Subscription {
                ttl,
                renew_due: Instant::now() + ttl.mul_f64(self.options.renew_at),
            },
        );
        Ok(())
    }

    /// Ends the subscription to `channel` (`1c` with TTL `0|0`).
    pub fn unsubscribe(&mut self, channel: &str) -> Result<(), ClientError> {
        self.subscriptions.remove(channel);
        self.connection.subscribe(channel, Duration::ZERO)
    }

    /// Publishes `text` on `channel`.
    pub fn transmit(&mut self, channel: &str, text: &str) -> Result<(), ClientError> {
        self.connection.transmit(channel, text)
    }

    /// Waits up to `wait` for the next message; renews due subscriptions
    /// and answers pings meanwhile. `Ok(None)` when nothing came in time.
    /// With [`Options::reconnect`], a lost connection is re-established
    /// (and re-subscribed) here instead of returned as an error.
    pub fn recv(&mut self, wait: Duration) -> Result<Option<Received>, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Err(e) = self.renew_due() {
                self.recover(e)?;
                continue;
            }
            let next_renewal = self.subscriptions.values().map(|s| s.renew_due).min();
            let until = next_renewal.map_or(deadline, |r| r.min(deadline));
            let slice = until.saturating_duration_since(Instant::now());
            match self.connection.recv(slice.max(Duration::from_millis(1))) {
                Ok(Some(message)) => return Ok(Some(message)),
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
        // channel its token does not allow, an expired token): reconnecting
        // would be refused again.
        if !self.options.reconnect || matches!(error, ClientError::Closed { code: 1008, .. }) {
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

    fn reopen(&mut self) -> Result<(), ClientError> {
        let mut connection =
            Connection::open_with(&self.url, self.options.token.as_deref(), self.tls.as_ref())?;
        connection.hello(&self.name)?;
        let now = Instant::now();
        for (channel, sub) in self.subscriptions.iter_mut() {
            connection.subscribe(channel, sub.ttl)?;
            sub.renew_due = now + sub.ttl.mul_f64(self.options.renew_at);
        }
        self.connection = connection;
        Ok(())
    }
}

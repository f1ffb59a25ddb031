//! Run-time configuration: every limit a client could otherwise push on.
//!
//! Built from the command line by [`crate::cli`]; the defaults are chosen
//! for an intranet nexus serving hundreds of game servers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Default listen address, as the old nexus used.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:6500";
/// Default slots per SPSC ring between two shards. A ring slot carries one
/// publish or interest change; 1,024 slots absorb a burst of that many
/// cross-shard publishes before the publisher waits, at 32 bytes per slot.
pub const DEFAULT_RING_SIZE: usize = 1024;
/// Default listen backlog per shard: room for a reconnect storm.
pub const DEFAULT_BACKLOG: u32 = 4096;
/// Default largest WebSocket message, in or out: 64 KiB, what the Java
/// client's frame decoder accepts.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Default bound of one connection's outbound queue, in bytes.
pub const DEFAULT_MAX_OUTBOX_BYTES: usize = 1024 * 1024;
/// Default number of channels one connection may listen to.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1024;
/// Default time a client has to complete the WebSocket upgrade.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest subscription TTL honoured; longer requests are cut to it.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default cap on open connections (all shards together).
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Default silence after which the nexus pings a connection.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
/// Default time a pinged connection has to answer before it is closed.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest `--max-ttl` accepted (ten years): `Instant` arithmetic stays
/// far from overflow.
pub const MAX_TTL_CAP: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Default longest endpoint or channel name, in bytes.
pub const DEFAULT_MAX_NAME_BYTES: usize = 1024;
/// Default bound of the adaptive coalescing delay: when a shard is busy,
/// its flusher waits at most this long before a round of writes so each
/// `send` carries more frames. 0 turns the delay off (writes still leave
/// once per executor round).
pub const DEFAULT_COALESCE_MAX: Duration = Duration::from_micros(1500);
/// The largest `--coalesce-max-us` accepted: 100 ms.
pub const COALESCE_MAX_CAP: Duration = Duration::from_millis(100);
/// How many shards the ring mesh can address (interest is a 64-bit mask).
pub const MAX_SHARDS: usize = shards::MAX_SHARDS;
/// Default bytes one shard may have in flight toward one other shard (in
/// its ring and backlog, not yet handled there); past it, connections whose
/// publishes go there pause their reading until the peer catches up.
pub const DEFAULT_MAX_RING_BACKLOG_BYTES: usize = 4 * 1024 * 1024;
/// Default time a client has to finish a message it started sending.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bytes of incomplete client messages one shard holds in all.
pub const DEFAULT_MAX_PARTIAL_BYTES: usize = 32 * 1024 * 1024;
/// Pause after an accept error (e.g. out of file descriptors) before
/// retrying, on the client listeners and the admin listener alike.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Default bytes of subscriptions (names plus bookkeeping) one shard holds.
pub const DEFAULT_MAX_SUBSCRIPTION_BYTES: usize = 32 * 1024 * 1024;

/// Default cap on open admin connections (`--admin-max-connections`): the
/// admin listener must not eat the file table.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;

/// Lame-duck drain: time over which connections are closed (`--lame-duck-duration`).
pub const DEFAULT_LAME_DUCK_DURATION: Duration = Duration::from_secs(30);
/// Lame-duck drain: pause before the first close (`--lame-duck-grace`).
pub const DEFAULT_LAME_DUCK_GRACE: Duration = Duration::from_secs(5);
/// Longest lame-duck duration or grace accepted.
pub const MAX_LAME_DUCK: Duration = Duration::from_secs(3600);

/// Everything a nexus needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where every shard listens.
    pub listen: SocketAddr,
    /// CPU ids, one shard pinned to each, in shard order.
    pub cores: Vec<usize>,
    /// Slots per SPSC ring between two shards.
    pub ring_size: usize,
    /// Listen backlog per shard.
    pub backlog: u32,
    /// Largest message accepted from a client and largest `1r` sent to one.
    pub max_message_bytes: usize,
    /// A subscriber whose queued output passes this is a slow consumer.
    pub max_outbox_bytes: usize,
    /// Most channels one connection may listen to at once.
    pub max_subscriptions: usize,
    /// Time allowed for the WebSocket upgrade.
    pub handshake_timeout: Duration,
    /// Cap on a subscription's time to live.
    pub max_ttl: Duration,
    /// Connections beyond this are refused with HTTP 503 at the upgrade.
    pub max_connections: usize,
    /// A connection silent this long is pinged.
    pub keepalive: Duration,
    /// A pinged connection that sends nothing for this long is closed.
    pub keepalive_timeout: Duration,
    /// Where to serve the admin console, its API, `/metrics` and
    /// `/healthz`, if anywhere (`--admin`, alias `--metrics`).
    pub metrics: Option<SocketAddr>,
    /// The admin token (required on a non-loopback admin address).
    pub admin_token: Option<easechat_auth::secret::AdminToken>,
    /// Where the admin token was read from (`--admin-token-file`), for
    /// `--print-config`.
    pub admin_token_file: Option<String>,
    /// Access control (`--auth optional|required`); `None` trusts every
    /// connection, as before access control (`--auth off`).
    pub access: Option<std::sync::Arc<crate::access::Access>>,
    /// Open admin connections allowed; more are closed at once.
    pub admin_max_connections: usize,
    /// Longest endpoint (`1h`) or channel (`1c`, `1t`) name: names are
    /// kept in tables and copied to every shard's interest map.
    pub max_name_bytes: usize,
    /// In-flight bytes toward one other shard before publishers there pause.
    pub max_ring_backlog_bytes: usize,
    /// Time allowed to finish a message once its first byte arrived.
    pub message_timeout: Duration,
    /// Bytes of incomplete messages one shard holds, all connections together.
    pub max_partial_bytes: usize,
    /// Bytes of subscriptions one shard holds (see `subscription_cost`).
    pub max_subscription_bytes: usize,
    /// Connections from one client address (0: no cap).
    pub max_connections_per_ip: usize,
    /// A drain spreads its closes over this long, so clients reconnecting
    /// elsewhere do not stampede.
    pub lame_duck_duration: Duration,
    /// A drain waits this long after leaving the listen group before its
    /// first close (load balancers see `/healthz` 503 meanwhile).
    pub lame_duck_grace: Duration,
    /// The cluster bridge (`--nats`), if this node joins a cluster.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Upper bound of the flusher's adaptive coalescing delay (0: none).
    pub coalesce_max: Duration,
    /// Write each connection with its own `send()` instead of one io_uring
    /// submission per group of connections.
    pub plain_sends: bool,
    /// The limits a reload changes live (see [`LiveLimits`]); the fields
    /// above are what the nexus started with, these are what it applies.
    pub live: Arc<LiveLimits>,
    /// Re-reads the configuration on SIGHUP, `reload`, `POST /api/reload`
    /// (set by the binary; without it a reload re-reads the access policy only).
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    /// Where every shard also listens for wss (`--tls-listen`).
    pub tls_listen: Option<SocketAddr>,
    /// The certificates of wss and of `--admin-tls` (`--tls-cert`,
    /// `--tls-key`, `--tls-client-ca`), swapped by a reload.
    pub tls: Option<Arc<crate::tls::Certificates>>,
    /// Serve the admin console over HTTPS with the same certificate.
    pub admin_tls: bool,
    /// Channels that keep history for recovery (`--history`), if any.
    pub history: Option<Arc<crate::history::HistoryConfig>>,
}

impl Config {
    /// A configuration with every default, listening on `listen`, on `cores`.
    pub fn new(listen: SocketAddr, cores: Vec<usize>) -> Self {
        Config {
            listen,
            cores,
            ring_size: DEFAULT_RING_SIZE,
            backlog: DEFAULT_BACKLOG,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_outbox_bytes: DEFAULT_MAX_OUTBOX_BYTES,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_ttl: DEFAULT_MAX_TTL,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            keepalive: DEFAULT_KEEPALIVE,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            metrics: None,
            admin_token: None,
            admin_token_file: None,
            access: None,
            admin_max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            max_ring_backlog_bytes: DEFAULT_MAX_RING_BACKLOG_BYTES,
            message_timeout: DEFAULT_MESSAGE_TIMEOUT,
            max_partial_bytes: DEFAULT_MAX_PARTIAL_BYTES,
            max_subscription_bytes: DEFAULT_MAX_SUBSCRIPTION_BYTES,
            max_connections_per_ip: 0,
            lame_duck_duration: DEFAULT_LAME_DUCK_DURATION,
            lame_duck_grace: DEFAULT_LAME_DUCK_GRACE,
            cluster: None,
            coalesce_max: DEFAULT_COALESCE_MAX,
            plain_sends: false,
            live: Arc::default(),
            reloader: None,
            tls_listen: None,
            tls: None,
            admin_tls: false,
            history: None,
        }
    }

    /// Makes [`Config::live`] hold this configuration's values (after its
    /// fields were set; `server::run` does it before the shards start).
    pub fn sync_live(&self) {
        self.live.apply(self);
    }
}

/// The configuration as a `--config` file would say it: every key, with
/// its effective value (file, flags and defaults together), so
/// `--print-config` output can be saved and used as a config file. Secrets
/// are not printed (the admin token is read from a file or the environment
/// and only its presence is shown).
pub fn render_toml(config: &Config, log: Option<&str>) -> String {
    use std::fmt::Write;
    let mut out = String::from("# EaseChat Nexus: effective configuration (--print-config)\n");
    let mut key = |k: &str, v: String| {
        let _ = writeln!(out, "{k} = {v}");
    };
    let q = |s: &str| format!("{s:?}");
    let secs = |d: Duration| {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{}", s as u64)
        } else {
            format!("{s}")
        }
    };
    key("listen", q(&config.listen.to_string()));
    key("cores", config.cores.len().to_string());
    key("ring-size", config.ring_size.to_string());
    key("backlog", config.backlog.to_string());
    key("max-message-bytes", config.max_message_bytes.to_string());
    key("max-outbox-bytes", config.max_outbox_bytes.to_string());
    key("max-subscriptions", config.max_subscriptions.to_string());
    key("handshake-timeout", secs(config.handshake_timeout));
    key("max-ttl", secs(config.max_ttl));
    key("max-connections", config.max_connections.to_string());
    key("keepalive", secs(config.keepalive));
    key("keepalive-timeout", secs(config.keepalive_timeout));
    key("max-name-bytes", config.max_name_bytes.to_string());
    key(
        "max-ring-backlog-bytes",
        config.max_ring_backlog_bytes.to_string(),
    );
    key("message-timeout", secs(config.message_timeout));
    key("max-partial-bytes", config.max_partial_bytes.to_string());
    key(
        "max-subscription-bytes",
        config.max_subscription_bytes.to_string(),
    );
    key(
        "max-connections-per-ip",
        config.max_connections_per_ip.to_string(),
    );
    key("lame-duck-duration", secs(config.lame_duck_duration));
    key("lame-duck-grace", secs(config.lame_duck_grace));
    key(
        "coalesce-max-us",
        config.coalesce_max.as_micros().to_string(),
    );
    key("plain-sends", config.plain_sends.to_string());
    if let Some(addr) = config.metrics {
        key("admin", q(&addr.to_string()));
    }
    if let Some(history) = &config.history {
        let patterns: Vec<String> = history.patterns.texts().iter().map(|p| q(p)).collect();
        let limits = &history.limits;
        key("history", format!("[{}]", patterns.join(", ")));
        key("history-size", limits.size.to_string());
        key("history-bytes", limits.bytes.to_string());
        key("history-ttl", secs(limits.ttl));
        key("history-channels", limits.channels.to_string());
        key("history-total-bytes", limits.total_bytes.to_string());
        key("recover-max", limits.recover_max.to_string());
    }
    key(
        "admin-max-connections",
        config.admin_max_connections.to_string(),
    );
    match (&config.admin_token_file, &config.admin_token) {
        (Some(path), _) => {
            let _ = writeln!(out, "admin-token-file = {}", q(path));
        }
        (None, Some(_)) => out.push_str("# admin token: from EASECHAT_ADMIN_TOKEN (not shown)\n"),
        (None, None) => {}
    }
    if let Some(cluster) = &config.cluster {
        // A user:password in a URL is never printed.
        let servers: Vec<String> = cluster
            .servers
            .iter()
            .map(|s| q(&crate::cluster::redact_url(s)))
            .collect();
        let _ = writeln!(out, "nats = [{}]", servers.join(", "));
        if cluster.node_id_given {
            let _ = writeln!(out, "node-id = {}", q(&cluster.node_id));
        } else {
            let _ = writeln!(
                out,
                "# node-id: {} (the default: host, pid, start time)",
                cluster.node_id
            );
        }
        if let Some(path) = &cluster.user_file {
            let _ = writeln!(out, "nats-user-file = {}", q(path));
        }
    }
    match &config.access {
        Some(access) => {
            let files = access.files();
            let _ = writeln!(out, "auth = {}", q(files.mode.as_str()));
            if let Some(path) = &files.key_file {
                let _ = writeln!(out, "auth-key-file = {}", q(&path.display().to_string()));
            }
            if let Some(path) = &files.policy_file {
                let _ = writeln!(out, "auth-policy = {}", q(&path.display().to_string()));
            }
        }
        None => out.push_str("auth = \"off\"\n"),
    }
    if let Some(addr) = config.tls_listen {
        let _ = writeln!(out, "tls-listen = {}", q(&addr.to_string()));
    }
    if let Some(tls) = &config.tls {
        let files = tls.settings();
        let _ = writeln!(out, "tls-cert = {}", q(&files.cert.display().to_string()));
        let _ = writeln!(out, "tls-key = {}", q(&files.key.display().to_string()));
        if let Some(path) = &files.client_ca {
            let _ = writeln!(out, "tls-client-ca = {}", q(&path.display().to_string()));
        }
        let _ = writeln!(out, "admin-tls = {}", config.admin_tls);
    }
    if let Some(filter) = log {
        let _ = writeln!(out, "log = {}", q(filter));
    }
    out
}

/// [`render_toml`] with the log format too (what `--print-config` prints).
pub fn render_toml_with_format(config: &Config, log: Option<&str>, json_logs: bool) -> String {
    let mut out = render_toml(config, log);
    out.push_str(if json_logs {
        "log-format = \"json\"\n"
    } else {
        "log-format = \"text\"\n"
    });
    out
}

/// The limits a reload may change on a running nexus, shared by every
/// shard: each is one relaxed atomic read where it is used (on a `1c`, a
/// message deadline, a sweep), so a reload takes effect everywhere at once
/// without a lock or a message per shard.
#[derive(Debug, Default)]
pub struct LiveLimits {
    max_subscriptions: AtomicUsize,
    max_subscription_bytes: AtomicUsize,
    max_partial_bytes: AtomicUsize,
    max_name_bytes: AtomicUsize,
    max_ttl_ms: AtomicU64,
    message_timeout_ms: AtomicU64,
    keepalive_ms: AtomicU64,
    keepalive_timeout_ms: AtomicU64,
    lame_duck_duration_ms: AtomicU64,
    lame_duck_grace_ms: AtomicU64,
}

/// The keys (flag names) [`LiveLimits`] holds: what a reload applies.
pub const LIVE_KEYS: &[&str] = &[
    // The certificate files are read again on every reload; new names too.
    // (`tls-client-ca`: its file is re-read, but turning mutual TLS on or
    // off, or naming another file, needs a restart.)
    "tls-cert",
    "tls-key",
    "max-subscriptions",
    "max-subscription-bytes",
    "max-partial-bytes",
    "max-name-bytes",
    "max-ttl",
    "message-timeout",
    "keepalive",
    "keepalive-timeout",
    "lame-duck-duration",
    "lame-duck-grace",
];

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl LiveLimits {
    /// Takes the values of `config`.
    pub fn apply(&self, config: &Config) {
        let set = |a: &AtomicUsize, v: usize| a.store(v, Ordering::Relaxed);
        let set_ms = |a: &AtomicU64, v: Duration| a.store(millis(v), Ordering::Relaxed);
        set(&self.max_subscriptions, config.max_subscriptions);
        set(&self.max_subscription_bytes, config.max_subscription_bytes);
        set(&self.max_partial_bytes, config.max_partial_bytes);
        set(&self.max_name_bytes, config.max_name_bytes);
        set_ms(&self.max_ttl_ms, config.max_ttl);
        set_ms(&self.message_timeout_ms, config.message_timeout);
        set_ms(&self.keepalive_ms, config.keepalive);
        set_ms(&self.keepalive_timeout_ms, config.keepalive_timeout);
        set_ms(&self.lame_duck_duration_ms, config.lame_duck_duration);
        set_ms(&self.lame_duck_grace_ms, config.lame_duck_grace);
    }

    fn ms(a: &AtomicU64) -> Duration {
        Duration::from_millis(a.load(Ordering::Relaxed))
    }

    /// `--max-subscriptions`.
    pub fn max_subscriptions(&self) -> usize {
        self.max_subscriptions.load(Ordering::Relaxed)
    }
    /// `--max-subscription-bytes`.
    pub fn max_subscription_bytes(&self) -> usize {
        self.max_subscription_bytes.load(Ordering::Relaxed)
    }
    /// `--max-partial-bytes`.
    pub fn max_partial_bytes(&self) -> usize {
        self.max_partial_bytes.load(Ordering::Relaxed)
    }
    /// `--max-name-bytes`.
    pub fn max_name_bytes(&self) -> usize {
        self.max_name_bytes.load(Ordering::Relaxed)
    }
    /// `--max-ttl`.
    pub fn max_ttl(&self) -> Duration {
        Self::ms(&self.max_ttl_ms)
    }
    /// `--message-timeout`.
    pub fn message_timeout(&self) -> Duration {
        Self::ms(&self.message_timeout_ms)
    }
    /// `--keepalive`.
    pub fn keepalive(&self) -> Duration {
        Self::ms(&self.keepalive_ms)
    }
    /// `--keepalive-timeout`.
    pub fn keepalive_timeout(&self) -> Duration {
        Self::ms(&self.keepalive_timeout_ms)
    }
    /// `--lame-duck-duration`.
    pub fn lame_duck_duration(&self) -> Duration {
        Self::ms(&self.lame_duck_duration_ms)
    }
    /// `--lame-duck-grace`.
    pub fn lame_duck_grace(&self) -> Duration {
        Self::ms(&self.lame_duck_grace_ms)
    }
}

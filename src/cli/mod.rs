//! The command line: flags (and `--config FILE`, see [`file`]) into a
//! [`Config`], or one clear error line.

pub mod file;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use argh::FromArgs;

use easechat_auth::pattern::PatternSet;
use easechat_auth::secret::{load_token, TOKEN_ENV};
use easechat_auth::{Mode, PolicyFiles};

use crate::access::Access;
use crate::cluster::ClusterConfig;
use crate::config::{self, Config, MAX_SHARDS};
use crate::history::HistoryConfig;
use crate::state::history::HistoryLimits;

/// EaseChat Nexus: a thread-per-core WebSocket channel message exchange.
///
/// Console commands on standard input: list [KEYWORD], push SENDER CHANNEL
/// MESSAGE…, stats, reload, stop [REASON…], drain, huaji. SIGUSR2 drains
/// too, SIGHUP reloads (the --config file and the access policy). Log
/// level: RUST_LOG (e.g. debug,
/// ease_chat_nexus=debug) or --log.
#[derive(FromArgs, Debug)]
pub struct Args {
    /// listen address (default 0.0.0.0:6500)
    #[argh(positional)]
    pub addr: Option<String>,

    /// number of shards, one pinned per core (default: every core this
    /// process may run on)
    #[argh(option)]
    pub cores: Option<usize>,

    /// slots per SPSC ring between two shards (default 1024)
    #[argh(option, default = "config::DEFAULT_RING_SIZE")]
    pub ring_size: usize,

    /// listen backlog per shard (default 4096)
    #[argh(option, default = "config::DEFAULT_BACKLOG")]
    pub backlog: u32,

    /// largest message in bytes, received or sent (default 65536)
    #[argh(option, default = "config::DEFAULT_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: usize,

    /// outbound queue bound per connection in bytes; past it the connection
    /// is closed as a slow consumer (default 1048576)
    #[argh(option, default = "config::DEFAULT_MAX_OUTBOX_BYTES")]
    pub max_outbox_bytes: usize,

    /// channels one connection may listen to (default 1024)
    #[argh(option, default = "config::DEFAULT_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: usize,

    /// seconds a client has to complete the WebSocket upgrade (default 10)
    #[argh(option, default = "config::DEFAULT_HANDSHAKE_TIMEOUT.as_secs()")]
    pub handshake_timeout: u64,

    /// longest subscription TTL in seconds; longer ones are cut (default 86400)
    #[argh(option, default = "config::DEFAULT_MAX_TTL.as_secs()")]
    pub max_ttl: u64,

    /// open connections allowed, all shards together; more are refused
    /// with HTTP 503 (default 20000)
    #[argh(option, default = "config::DEFAULT_MAX_CONNECTIONS")]
    pub max_connections: usize,

    /// seconds of silence before the nexus pings a connection (default 30)
    #[argh(option, default = "config::DEFAULT_KEEPALIVE.as_secs()")]
    pub keepalive: u64,

    /// seconds a pinged connection has to answer before it is closed
    /// (default 30)
    #[argh(option, default = "config::DEFAULT_KEEPALIVE_TIMEOUT.as_secs()")]
    pub keepalive_timeout: u64,

    /// longest endpoint or channel name in bytes (default 1024)
    #[argh(option, default = "config::DEFAULT_MAX_NAME_BYTES")]
    pub max_name_bytes: usize,

    /// bytes one shard may have in flight toward each other shard before
    /// the connections publishing there pause (default 4194304)
    #[argh(option, default = "config::DEFAULT_MAX_RING_BACKLOG_BYTES")]
    pub max_ring_backlog_bytes: usize,

    /// seconds a client has to finish a message it started (default 10)
    #[argh(option, default = "config::DEFAULT_MESSAGE_TIMEOUT.as_secs()")]
    pub message_timeout: u64,

    /// bytes of incomplete messages one shard holds over all its
    /// connections (default 33554432)
    #[argh(option, default = "config::DEFAULT_MAX_PARTIAL_BYTES")]
    pub max_partial_bytes: usize,

    /// bytes of subscriptions one shard holds: name length plus 160 each
    /// (default 33554432)
    #[argh(option, default = "config::DEFAULT_MAX_SUBSCRIPTION_BYTES")]
    pub max_subscription_bytes: usize,

    /// open connections allowed from one client address; more are refused
    /// with HTTP 503 (default 0: no cap; many game servers share a host)
    #[argh(option, default = "0")]
    pub max_connections_per_ip: usize,

    /// seconds a drain (SIGUSR2, console drain) spreads its closes over
    /// (default 30)
    #[argh(option, default = "config::DEFAULT_LAME_DUCK_DURATION.as_secs_f64()")]
    pub lame_duck_duration: f64,

    /// seconds a drain waits after leaving the listen group before its
    /// first close (default 5)
    #[argh(option, default = "config::DEFAULT_LAME_DUCK_GRACE.as_secs_f64()")]
    pub lame_duck_grace: f64,
    /// longest adaptive write-coalescing delay in microseconds: a busy
    /// shard waits up to this long before a round of writes so each send
    /// carries more frames; 0 = never wait (default 1500, at most 100000)
    #[argh(option, default = "config::DEFAULT_COALESCE_MAX.as_micros() as u64")]
    pub coalesce_max_us: u64,

    /// write each connection with its own send() instead of one io_uring
    /// submission per round of writes (for comparison; off by default)
    #[argh(switch)]
    pub plain_sends: bool,

    /// serve the browser console, its JSON API, /metrics and /healthz on
    /// this address (off by default); a bare port means 127.0.0.1:PORT. A
    /// non-loopback address needs a token (--admin-token-file or
    /// EASECHAT_ADMIN_TOKEN)
    #[argh(option)]
    pub admin: Option<String>,

    /// alias of --admin
    #[argh(option)]
    pub metrics: Option<String>,

    /// file holding the admin console's token (or set EASECHAT_ADMIN_TOKEN)
    #[argh(option)]
    pub admin_token_file: Option<String>,

    /// open admin connections allowed; more are closed at once (default 64)
    #[argh(option, default = "config::DEFAULT_ADMIN_MAX_CONNECTIONS")]
    pub admin_max_connections: usize,
    /// join a cluster through this NATS server, e.g. nats://127.0.0.1:4222
    /// (repeatable or comma-separated: any of them will do)
    #[argh(option)]
    pub nats: Vec<String>,

    /// this node's id in the cluster (default: host, pid and start time)
    #[argh(option)]
    pub node_id: Option<String>,

    /// file holding USER:PASSWORD for the NATS server (--nats); never on
    /// the command line
    #[argh(option)]
    pub nats_user_file: Option<String>,

    /// access control: off (trust every connection, the default), optional
    /// (check tokens when given; others act as the anonymous identity) or
    /// required (every connection needs a valid token)
    #[argh(option, default = "Mode::Off")]
    pub auth: Mode,

    /// file holding the HMAC secret that verifies tokens (at least 32
    /// bytes); with it alone, tokens carry their own permissions
    #[argh(option)]
    pub auth_key_file: Option<String>,

    /// the access policy (TOML): keys by kid, identities, permissions,
    /// revocations, quotas; reloaded on SIGHUP, console reload, POST /api/reload
    #[argh(option)]
    pub auth_policy: Option<String>,

    /// also serve wss on this address (every shard, like the ws address),
    /// e.g. 0.0.0.0:6543; needs --tls-cert and --tls-key
    #[argh(option)]
    pub tls_listen: Option<String>,

    /// PEM certificate chain for wss and --admin-tls, leaf first;
    /// re-read on SIGHUP, console reload and POST /api/reload
    #[argh(option)]
    pub tls_cert: Option<String>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 RSA or SEC1 EC;
    /// RSA, ECDSA or Ed25519)
    #[argh(option)]
    pub tls_key: Option<String>,

    /// PEM CA certificates for mutual TLS: every wss client must present a
    /// certificate that chains to one; its subject (CN) can stand in for a
    /// token's identity
    #[argh(option)]
    pub tls_client_ca: Option<String>,

    /// serve the admin console over HTTPS with --tls-cert
    #[argh(switch)]
    pub admin_tls: bool,

    /// keep history on channels matching this pattern (repeatable; `*`
    /// matches any run of characters), so clients that ask for positions
    /// recover what they missed after a reconnect
    #[argh(option)]
    pub history: Vec<String>,

    /// messages kept per channel with history (default 1000)
    #[argh(option, default = "crate::history::DEFAULT_SIZE")]
    pub history_size: usize,

    /// bytes kept per channel with history (default 1048576)
    #[argh(option, default = "crate::history::DEFAULT_BYTES")]
    pub history_bytes: usize,

    /// seconds a message stays in a channel's history (default 300)
    #[argh(option, default = "crate::history::DEFAULT_TTL.as_secs()")]
    pub history_ttl: u64,

    /// channels with history per shard; past it the least recently used
    /// lose theirs (default 10000)
    #[argh(option, default = "crate::history::DEFAULT_CHANNELS")]
    pub history_channels: usize,

    /// bytes of history per shard, all channels together; past it the
    /// least recently used channels lose theirs (default 268435456)
    #[argh(option, default = "crate::history::DEFAULT_TOTAL_BYTES")]
    pub history_total_bytes: usize,

    /// most messages one recovery replays; a client that missed more is
    /// told it did not recover (default 1000)
    #[argh(option, default = "crate::history::DEFAULT_RECOVER_MAX")]
    pub recover_max: u64,

    /// log filter, overriding RUST_LOG (error, warn, info, debug, trace)
    #[argh(option)]
    pub log: Option<String>,

    /// read settings from this TOML file: each key is a flag's long name
    /// without the dashes (max-subscriptions = 2, listen = "0.0.0.0:6500");
    /// flags on the command line win
    #[argh(option)]
    pub config: Option<String>,

    /// print the effective configuration (file, flags and defaults) as TOML
    /// and exit
    #[argh(switch)]
    pub print_config: bool,

    /// log line format: text (default) or json (one object per line, with
    /// the connection's fields, for log shippers)
    #[argh(option, default = "LogFormat::Text")]
    pub log_format: LogFormat,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("--log-format must be text or json, got {other:?}")),
        }
    }
}

impl Args {
    /// Checks every value and builds the configuration; `available` are the
    /// CPU ids this process may run on.
    pub fn into_config(self, available: &[usize]) -> Result<Config, String> {
        let listen = parse_addr(self.addr.as_deref().unwrap_or(config::DEFAULT_LISTEN))?;
        let shards = self.cores.unwrap_or(available.len().min(MAX_SHARDS));
        if shards == 0 || shards > MAX_SHARDS {
            return Err(format!(
                "--cores must be between 1 and {MAX_SHARDS}, got {shards}"
            ));
        }
        if available.is_empty() {
            return Err("no CPU is available to this process".into());
        }
        // More shards than cores share cores (round robin); main() warns.
        let cores = (0..shards)
            .map(|i| available[i % available.len()])
            .collect();
        let mut config = Config::new(listen, cores);
        config.ring_size = positive("--ring-size", self.ring_size)?;
        config.backlog = positive("--backlog", self.backlog as usize)? as u32;
        config.max_message_bytes = positive("--max-message-bytes", self.max_message_bytes)?;
        if config.max_message_bytes < 64 {
            return Err("--max-message-bytes must be at least 64".into());
        }
        config.max_outbox_bytes = positive("--max-outbox-bytes", self.max_outbox_bytes)?;
        config.max_subscriptions = positive("--max-subscriptions", self.max_subscriptions)?;
        config.handshake_timeout = Duration::from_secs(positive(
            "--handshake-timeout",
            self.handshake_timeout as usize,
        )? as u64);
        config.max_ttl = Duration::from_secs(positive("--max-ttl", self.max_ttl as usize)? as u64);
        if config.max_ttl > config::MAX_TTL_CAP {
            return Err(format!(
                "--max-ttl must be at most {} seconds (ten years)",
                config::MAX_TTL_CAP.as_secs()
            ));
        }
        config.max_name_bytes = positive("--max-name-bytes", self.max_name_bytes)?;
        config.max_connections = positive("--max-connections", self.max_connections)?;
        config.max_ring_backlog_bytes =
            positive("--max-ring-backlog-bytes", self.max_ring_backlog_bytes)?;
        config.message_timeout = Duration::from_secs(positive(
            "--message-timeout",
            self.message_timeout as usize,
        )? as u64);
        config.max_partial_bytes = positive("--max-partial-bytes", self.max_partial_bytes)?;
        config.max_subscription_bytes =
            positive("--max-subscription-bytes", self.max_subscription_bytes)?;
        config.max_connections_per_ip = self.max_connections_per_ip;
        config.metrics = match (self.admin.as_deref(), self.metrics.as_deref()) {
            (Some(_), Some(_)) => return Err("give --admin or --metrics, not both".into()),
            (Some(text), None) | (None, Some(text)) => Some(parse_admin_addr(text)?),
            (None, None) => None,
        };
        config.admin_max_connections =
            positive("--admin-max-connections", self.admin_max_connections)?;
        if let Some(addr) = config.metrics {
            config.admin_token_file = self.admin_token_file.clone();
            config.admin_token = load_token(
                self.admin_token_file.as_deref().map(Path::new),
                std::env::var(TOKEN_ENV).ok(),
            )?;
            if !addr.ip().is_loopback() && config.admin_token.is_none() {
                return Err(format!(
                    "--admin {addr} is not a loopback address: it needs a token \
                     (--admin-token-file PATH or {TOKEN_ENV}), or bind 127.0.0.1"
                ));
            }
        }
        config.history = history_from_flags(&self)?;
        config.access = access_from_flags(self.auth, self.auth_key_file, self.auth_policy)?;
        tls_from_flags(
            &mut config,
            &self.tls_listen,
            &self.tls_cert,
            &self.tls_key,
            &self.tls_client_ca,
            self.admin_tls,
        )?;
        config.coalesce_max = Duration::from_micros(self.coalesce_max_us);
        config.plain_sends = self.plain_sends;
        if config.coalesce_max > config::COALESCE_MAX_CAP {
            return Err(format!(
                "--coalesce-max-us must be at most {}",
                config::COALESCE_MAX_CAP.as_micros()
            ));
        }
        config.keepalive =
            Duration::from_secs(positive("--keepalive", self.keepalive as usize)? as u64);
        config.keepalive_timeout = Duration::from_secs(positive(
            "--keepalive-timeout",
            self.keepalive_timeout as usize,
        )? as u64);
        config.lame_duck_duration = seconds("--lame-duck-duration", self.lame_duck_duration)?;
        config.lame_duck_grace = seconds("--lame-duck-grace", self.lame_duck_grace)?;
        config.cluster = match (self.nats.is_empty(), self.node_id) {
            (true, None) => None,
            (true, Some(_)) => return Err("--node-id needs --nats".into()),
            (false, node_id) => Some(ClusterConfig::from_flags(&self.nats, node_id)?),
        };
        match (&mut config.cluster, &self.nats_user_file) {
            (Some(cluster), Some(path)) => {
                cluster.user = Some(crate::cluster::NatsUser::from_file(Path::new(path))?);
                cluster.user_file = Some(path.clone());
            }
            (None, Some(_)) => return Err("--nats-user-file needs --nats".into()),
            _ => {}
        }
        if let Some(cluster) = &mut config.cluster {
            cluster.history = config.history.clone();
        }
        config.sync_live();
        Ok(config)
    }
}

/// The `--history` settings, `None` without a pattern.
fn history_from_flags(args: &Args) -> Result<Option<std::sync::Arc<HistoryConfig>>, String> {
    if args.history.is_empty() {
        return Ok(None);
    }
    let patterns = PatternSet::new(&args.history).map_err(|e| format!("--history: {e}"))?;
    let limits = HistoryLimits {
        size: positive("--history-size", args.history_size)?,
        bytes: positive("--history-bytes", args.history_bytes)?,
        ttl: Duration::from_secs(positive("--history-ttl", args.history_ttl as usize)? as u64),
        channels: positive("--history-channels", args.history_channels)?,
        recover_max: positive("--recover-max", args.recover_max as usize)? as u64,
        total_bytes: positive("--history-total-bytes", args.history_total_bytes)?,
    };
    if limits.total_bytes < limits.bytes {
        return Err(format!(
            "--history-total-bytes ({}) must be at least --history-bytes ({})",
            limits.total_bytes, limits.bytes
        ));
    }
    if limits.ttl > config::MAX_TTL_CAP {
        return Err("--history-ttl must be at most ten years".into());
    }
    Ok(Some(std::sync::Arc::new(HistoryConfig {
        patterns,
        limits,
    })))
}

/// Loads the access policy named by `--auth`, `--auth-key-file` and
/// `--auth-policy`; `None` with `--auth off`.
fn access_from_flags(
    mode: Mode,
    key_file: Option<String>,
    policy_file: Option<String>,
) -> Result<Option<std::sync::Arc<Access>>, String> {
    if mode == Mode::Off {
        if key_file.is_some() || policy_file.is_some() {
            return Err(
                "--auth-key-file and --auth-policy need --auth optional or --auth required".into(),
            );
        }
        return Ok(None);
    }
    let files = PolicyFiles {
        mode,
        key_file: key_file.map(Into::into),
        policy_file: policy_file.map(Into::into),
    };
    Access::load(files).map(Some)
}

/// A duration flag in seconds (fractions allowed), 0 up to [`config::MAX_LAME_DUCK`].
fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    let max = config::MAX_LAME_DUCK.as_secs_f64();
    if value.is_finite() && (0.0..=max).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!(
            "{flag} must be between 0 and {max} seconds, got {value}"
        ))
    }
}

fn positive(flag: &str, value: usize) -> Result<usize, String> {
    if value == 0 {
        Err(format!("{flag} must be at least 1"))
    } else {
        Ok(value)
    }
}

/// An admin address: `HOST:PORT`, or a bare port on loopback.
fn parse_admin_addr(text: &str) -> Result<SocketAddr, String> {
    match text.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => parse_addr(text),
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            format!("invalid listen address {text:?}: expected HOST:PORT, e.g. 0.0.0.0:6500")
        })
}

/// What the command line and its config file decided.
#[derive(Debug)]
pub struct Invocation {
    /// The configuration to run with.
    pub config: Config,
    /// `--log`.
    pub log: Option<String>,
    /// `--print-config`: print and exit.
    pub print_config: bool,
    /// `--log-format`.
    pub log_format: LogFormat,
}

/// The exit code for a bad flag or configuration.
const BAD_CONFIG: i32 = 2;

/// Parses the process arguments and the `--config` file they name, checks
/// every value and builds the configuration; `available` are the CPU ids
/// this process may run on. On error or `--help`: the text to print and the
/// exit code (0 for help, 2 for a bad flag or file).
pub fn load(argv: &[String], available: &[usize]) -> Result<Invocation, (String, i32)> {
    let args = parse_args(argv)?;
    let Some(path) = args.config.clone() else {
        return invocation(args, available, &Default::default(), "");
    };
    let bad = |e: String| (format!("error: {e}"), BAD_CONFIG);
    let text = read_config(&path).map_err(bad)?;
    let known = file::flags_of_usage(&usage());
    let rest: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let given = given_keys(&rest, &known);
    let from_file = file::file_args(&path, &text, &known, &given).map_err(bad)?;
    // Each key alone first, so a bad value names its line.
    let mut i = 0;
    while i < from_file.argv.len() {
        let flag = &from_file.argv[i];
        let takes_value = flag.starts_with("--")
            && flag != "--"
            && known
                .get(&flag[2..])
                .is_some_and(|k| *k != file::Kind::Switch);
        let step = if flag == "--" || takes_value { 2 } else { 1 };
        let alone: Vec<&str> = from_file.argv[i..(i + step).min(from_file.argv.len())]
            .iter()
            .map(String::as_str)
            .collect();
        if let Err(exit) = Args::from_args(&["ease_chat_nexus"], &alone) {
            let line = from_file.lines.get(flag).copied().unwrap_or(0);
            let first = exit
                .output
                .lines()
                .next()
                .unwrap_or("invalid value")
                .to_string();
            return Err(bad(format!("{path} line {line}: {first}")));
        }
        i += step;
    }
    let mut merged = vec![argv.first().cloned().unwrap_or_default()];
    merged.extend(from_file.argv.iter().cloned());
    merged.extend(argv.iter().skip(1).cloned());
    if let Some(addr) = &from_file.listen {
        // After the command line's flags; `--` keeps an odd address (one
        // starting with a dash) from reading as a flag.
        merged.push("--".into());
        merged.push(addr.clone());
    }
    let args = parse_args(&merged)?;
    invocation(args, available, &from_file.lines, &path)
}

fn invocation(
    args: Args,
    available: &[usize],
    lines: &std::collections::BTreeMap<String, usize>,
    path: &str,
) -> Result<Invocation, (String, i32)> {
    let log = args.log.clone();
    if let Some(filter) = &log {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
            let origin = lines
                .get("--log")
                .map(|line| format!(" (log is set in {path} line {line})"))
                .unwrap_or_default();
            return Err((format!("error: --log {filter:?}: {e}{origin}"), BAD_CONFIG));
        }
    }
    let print_config = args.print_config;
    let log_format = args.log_format;
    let config = args.into_config(available).map_err(|e| {
        // Say where a value that came from the file was set.
        let origin = lines
            .iter()
            .find(|(flag, _)| names_flag(&e, flag))
            .map(|(flag, line)| format!(" ({} is set in {path} line {line})", &flag[2..]))
            .unwrap_or_default();
        (format!("error: {e}{origin}"), BAD_CONFIG)
    })?;
    Ok(Invocation {
        config,
        log,
        print_config,
        log_format,
    })
}

/// Most bytes of a `--config` file.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The text of a `--config` file, bounded in size.
fn read_config(path: &str) -> Result<String, String> {
    let bytes = easechat_auth::load::read_bounded(Path::new(path), MAX_CONFIG_BYTES)
        .map_err(|e| format!("--config: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("--config {path}: not UTF-8"))
}

/// Whether `message` names `flag` as a whole (`--keepalive` is not named
/// by `--keepalive-timeout`); the file's address counts as `--listen`,
/// which error messages call the "listen address".
fn names_flag(message: &str, flag: &str) -> bool {
    if flag == "--listen" {
        return message.contains("listen address");
    }
    message.match_indices(flag).any(|(at, _)| {
        !message[at + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// The keys the command line sets (flags without dashes; `listen` for the
/// positional address).
fn given_keys(rest: &[&str], known: &std::collections::HashMap<String, file::Kind>) -> Vec<String> {
    let mut given = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let arg = rest[i];
        if arg == "--" {
            if i + 1 < rest.len() {
                given.push(file::LISTEN_KEY.to_string());
            }
            break;
        }
        if let Some(name) = arg.strip_prefix("--") {
            given.push(name.to_string());
            // --admin and --metrics are one setting.
            match name {
                "admin" => given.push("metrics".into()),
                "metrics" => given.push("admin".into()),
                _ => {}
            }
            if known.get(name).is_some_and(|k| *k != file::Kind::Switch) {
                i += 1;
            }
        } else {
            given.push(file::LISTEN_KEY.to_string());
        }
        i += 1;
    }
    given
}

/// argh's usage line (the flags it knows).
fn usage() -> String {
    match Args::from_args(&["ease_chat_nexus"], &["--help"]) {
        Err(exit) => exit.output.lines().next().unwrap_or_default().to_string(),
        Ok(_) => String::new(),
    }
}

/// Parses the process arguments; on error or `--help` returns the text to
/// print and the exit code (0 for help, 2 for a bad flag).
pub fn parse_args(args: &[String]) -> Result<Args, (String, i32)> {
    let command = args
        .first()
        .map(String::as_str)
        .unwrap_or("ease_chat_nexus");
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    Args::from_args(&[command], &rest).map_err(|exit| match exit.status {
        Ok(()) => (exit.output, 0),
        Err(()) => {
            let first = exit
                .output
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .to_string();
            (format!("error: {first} (see --help)"), 2)
        }
    })
}

/// `--tls-listen`, `--tls-cert`, `--tls-key`, `--tls-client-ca`,
/// `--admin-tls`: the certificates are read and checked now, so a bad file
/// refuses to start with a message naming it.
fn tls_from_flags(
    config: &mut Config,
    listen: &Option<String>,
    cert: &Option<String>,
    key: &Option<String>,
    client_ca: &Option<String>,
    admin_tls: bool,
) -> Result<(), String> {
    config.tls_listen = listen.as_deref().map(parse_addr).transpose()?;
    config.admin_tls = admin_tls;
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            if config.tls_listen.is_some() || admin_tls {
                return Err(format!(
                    "{} needs --tls-cert FILE and --tls-key FILE",
                    if admin_tls {
                        "--admin-tls"
                    } else {
                        "--tls-listen"
                    }
                ));
            }
            if client_ca.is_some() {
                return Err("--tls-client-ca needs --tls-listen, --tls-cert and --tls-key".into());
            }
            return Ok(());
        }
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    if config.tls_listen.is_none() && !admin_tls {
        return Err("--tls-cert and --tls-key need --tls-listen ADDR or --admin-tls".into());
    }
    if admin_tls && config.metrics.is_none() {
        return Err("--admin-tls needs --admin ADDR".into());
    }
    if config.tls_listen == Some(config.listen) && config.listen.port() != 0 {
        return Err(format!(
            "--tls-listen {} is the ws address too: give wss a port of its own",
            config.listen
        ));
    }
    let settings = crate::tls::TlsSettings {
        cert: cert.into(),
        key: key.into(),
        client_ca: client_ca.as_ref().map(Into::into),
    };
    config.tls = Some(crate::tls::Certificates::load(&settings).map_err(|e| e.to_string())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, (String, i32)> {
        let mut all = vec!["ease_chat_nexus".to_string()];
        all.extend(list.iter().map(|s| s.to_string()));
        parse_args(&all)
    }

    #[test]
    fn defaults_match_the_old_nexus() {
        let config = args(&[]).unwrap().into_config(&[0, 1]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:6500".parse().unwrap());
        assert_eq!(config.cores, vec![0, 1]);
        assert_eq!(config.ring_size, config::DEFAULT_RING_SIZE);
    }

    #[test]
    fn address_and_cores() {
        let config = args(&["127.0.0.1:16500", "--cores", "1"])
            .unwrap()
            .into_config(&[0, 1])
            .unwrap();
        assert_eq!(config.listen.port(), 16500);
        assert_eq!(config.cores, vec![0]);
    }

    #[test]
    fn nats_flags_make_a_cluster_config() {
        let config = args(&["--nats", "nats://127.0.0.1:4222,nats://127.0.0.1:4223"])
            .unwrap()
            .into_config(&[0])
            .unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.servers.len(), 2);
        assert!(!cluster.node_id.is_empty());
        let none = args(&[]).unwrap().into_config(&[0]).unwrap();
        assert!(none.cluster.is_none());
        assert!(args(&["--node-id", "a"])
            .unwrap()
            .into_config(&[0])
            .is_err());
        assert!(args(&["--nats", "nats://h:1", "--node-id", "a b"])
            .unwrap()
            .into_config(&[0])
            .is_err());
        assert!(args(&["--nats", "nats://h:notaport"])
            .unwrap()
            .into_config(&[0])
            .is_err());
    }

    #[test]
    fn bad_input_is_exit_code_2() {
        assert_eq!(args(&["--frobnicate"]).unwrap_err().1, 2);
        assert_eq!(args(&["--cores", "x"]).unwrap_err().1, 2);
        assert_eq!(args(&["--help"]).unwrap_err().1, 0);
        assert!(args(&["not-an-address"])
            .unwrap()
            .into_config(&[0])
            .is_err());
        assert!(args(&["--cores", "0"]).unwrap().into_config(&[0]).is_err());
        assert!(args(&["--ring-size", "0"])
            .unwrap()
            .into_config(&[0])
            .is_err());
        assert!(args(&["--lame-duck-duration", "-1"])
            .unwrap()
            .into_config(&[0])
            .is_err());
        assert!(args(&["--lame-duck-grace", "NaN"])
            .unwrap()
            .into_config(&[0])
            .is_err());
    }

    #[test]
    fn lame_duck_flags() {
        let config = args(&[]).unwrap().into_config(&[0]).unwrap();
        assert_eq!(config.lame_duck_duration, Duration::from_secs(30));
        assert_eq!(config.lame_duck_grace, Duration::from_secs(5));
        let config = args(&["--lame-duck-duration", "2.5", "--lame-duck-grace", "0"])
            .unwrap()
            .into_config(&[0])
            .unwrap();
        assert_eq!(config.lame_duck_duration, Duration::from_millis(2500));
        assert_eq!(config.lame_duck_grace, Duration::ZERO);
    }

    #[test]
    fn help_lists_every_console_command() {
        let (help, _) = args(&["--help"]).unwrap_err();
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        let commands = crate::console::command::COMMANDS;
        assert!(words(&help).contains(commands), "{help}");
    }

    #[test]
    fn admin_binds_loopback_unless_given_a_token() {
        let config = args(&["--admin", "9650"])
            .unwrap()
            .into_config(&[0])
            .unwrap();
        assert_eq!(config.metrics, Some("127.0.0.1:9650".parse().unwrap()));
        let config = args(&["--metrics", "127.0.0.1:0"])
            .unwrap()
            .into_config(&[0])
            .unwrap();
        assert!(config.metrics.is_some());
        let err = args(&[
            "--admin",
            "0.0.0.0:9650",
            "--admin-token-file",
            "/nonexistent/token",
        ])
        .unwrap()
        .into_config(&[0])
        .unwrap_err();
        assert!(err.contains("/nonexistent/token"), "{err}");
        assert!(args(&["--admin", "1", "--metrics", "2"])
            .unwrap()
            .into_config(&[0])
            .is_err());
    }
}

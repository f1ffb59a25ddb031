//! The command line: flags into a [`Config`], or one clear error line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use argh::FromArgs;

use crate::config::{self, Config, MAX_SHARDS};

/// EaseChat Nexus: a thread-per-core WebSocket channel message exchange.
///
/// Console commands on standard input: list [KEYWORD], push SENDER CHANNEL
/// MESSAGE…, stop [REASON…], huaji. Log level: RUST_LOG (e.g. debug,
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

    /// longest adaptive write-coalescing delay in microseconds: a busy
    /// shard waits up to this long before a round of writes so each send
    /// carries more frames; 0 = never wait (default 1000, at most 100000)
    #[argh(option, default = "config::DEFAULT_COALESCE_MAX.as_micros() as u64")]
    pub coalesce_max_us: u64,

    /// write each connection with its own send() instead of one io_uring
    /// submission per round of writes (for comparison; off by default)
    #[argh(switch)]
    pub plain_sends: bool,

    /// serve Prometheus /metrics and /healthz on this address (off by
    /// default), e.g. 127.0.0.1:9650
    #[argh(option)]
    pub metrics: Option<String>,

    /// log filter, overriding RUST_LOG (error, warn, info, debug, trace)
    #[argh(option)]
    pub log: Option<String>,
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
        config.coalesce_max = Duration::from_micros(self.coalesce_max_us);
        config.plain_sends = self.plain_sends;
        if config.coalesce_max > config::COALESCE_MAX_CAP {
            return Err(format!(
                "--coalesce-max-us must be at most {}",
                config::COALESCE_MAX_CAP.as_micros()
            ));
        }
        config.metrics = self.metrics.as_deref().map(parse_addr).transpose()?;
        config.keepalive =
            Duration::from_secs(positive("--keepalive", self.keepalive as usize)? as u64);
        config.keepalive_timeout = Duration::from_secs(positive(
            "--keepalive-timeout",
            self.keepalive_timeout as usize,
        )? as u64);
        Ok(config)
    }
}

fn positive(flag: &str, value: usize) -> Result<usize, String> {
    if value == 0 {
        Err(format!("{flag} must be at least 1"))
    } else {
        Ok(value)
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
    }
}

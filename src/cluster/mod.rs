//! The cluster bridge (`--nats URL`): several nexus processes act as one
//! exchange through a NATS server or cluster.
//!
//! - [`subject`]: channel names to NATS subjects (base64url, collision-free).
//! - [`wire`]: a cross-node message on NATS (text payload, origin and
//!   sender headers).
//! - [`bridge`]: the bridge thread, a peer of the shards with its own tokio
//!   runtime and one NATS connection; subscribes by interest.
//! - [`inbox`]: the bridge's way into a shard (bounded queue + doorbell).
//! - [`link`]: a shard's handle on the bridge and its delivery task.
//!
//! Shards never wait on the bridge and take no lock per message; when the
//! bridge cannot keep up, or NATS is down, cross-node messages are counted
//! in [`ClusterStats::dropped`] and dropped, and local delivery goes on.

pub mod bridge;
pub mod directory;
pub mod inbox;
pub mod jetstream;
pub mod link;
pub mod subject;
pub mod wire;

use std::fmt::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::ServerAddr;

pub use directory::Directory;
pub use link::{serve, ClusterLink, LinkParts};

/// Publishes and interest changes all shards together may have queued for
/// the bridge before publishes are dropped.
pub const BRIDGE_QUEUE: usize = 64 * 1024;
/// Longest `--node-id`.
pub const MAX_NODE_ID_BYTES: usize = 128;

/// What the bridge needs: where NATS is and who this node is.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`), any of which will do.
    pub servers: Vec<String>,
    /// This node's id, carried by every message it publishes.
    pub node_id: String,
    /// The NATS user this node connects as (`--nats-user-file`).
    pub user: Option<NatsUser>,
    /// Whether `--node-id` was given (the default differs per process and
    /// is not printed by `--print-config`).
    pub node_id_given: bool,
    /// Where the NATS user was read from (printed by `--print-config`).
    pub user_file: Option<String>,
    /// Which channels keep history (`--history`): the bridge hands their
    /// messages from other nodes to their home shard only, which numbers
    /// them and forwards them to the shards that listen.
    pub history: Option<Arc<crate::history::HistoryConfig>>,
}

/// A NATS URL fit for logs and printed configuration: a `user:password@`
/// part is replaced by `<redacted>@`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}<redacted>{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A NATS user and password, read from a file (never the command line);
/// its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUser {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for NatsUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NatsUser({:?}, <redacted>)", self.user)
    }
}

impl NatsUser {
    /// Reads `USER:PASSWORD` (one line; a final newline is ignored) from
    /// `path`.
    pub fn from_file(path: &std::path::Path) -> Result<NatsUser, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--nats-user-file {}: {e}", path.display()))?;
        let line = text.trim_end_matches(['\n', '\r']);
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !line.contains('\n') => Ok(NatsUser {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err(format!(
                "--nats-user-file {}: expected one line USER:PASSWORD",
                path.display()
            )),
        }
    }
}

impl ClusterConfig {
    /// Checks `--nats` values (repeatable, each comma-separated) and the
    /// node id, defaulting it to host, pid and start time.
    pub fn from_flags(nats: &[String], node_id: Option<String>) -> Result<Self, String> {
        let servers: Vec<String> = nats
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if servers.is_empty() {
            return Err("--nats needs a URL, e.g. nats://127.0.0.1:4222".into());
        }
        for server in &servers {
            ServerAddr::from_str(server)
                .map_err(|e| format!("invalid --nats URL {:?}: {e}", redact_url(server)))?;
        }
        let node_id_given = node_id.is_some();
        let node_id = node_id.unwrap_or_else(default_node_id);
        check_node_id(&node_id)?;
        Ok(ClusterConfig {
            servers,
            node_id,
            user: None,
            node_id_given,
            user_file: None,
            history: None,
        })
    }
}

/// `<host>-<pid>-<unix start time>`: unique per process run on a host.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    let host = if host.is_empty() {
        "nexus".into()
    } else {
        host
    };
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{host}-{}-{started}", std::process::id())
}

/// A node id goes into a NATS header: printable ASCII without spaces.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_NODE_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--node-id must be 1 to {MAX_NODE_ID_BYTES} characters of A-Z a-z 0-9 . - _ :, got {id:?}"
        ))
    }
}

/// The bridge's counters: atomics the bridge thread and the shards bump,
/// read by `/metrics` and the console.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// 1 while connected to NATS, else 0.
    pub connected: AtomicU64,
    /// Connections re-established after a loss.
    pub reconnects: AtomicU64,
    /// Messages published to NATS.
    pub published: AtomicU64,
    /// Messages from other nodes received from NATS.
    pub received: AtomicU64,
    /// Cross-node messages dropped: bridge queue full, NATS down, a
    /// shard's inbox full, or a channel name too long for a subject.
    pub dropped: AtomicU64,
    /// Bytes of publishes queued for the bridge by every shard (a budget,
    /// not exported).
    pub queued_bytes: std::sync::atomic::AtomicUsize,
    /// True while channel history is shared through JetStream (read by the
    /// shards for every history publish; see [`jetstream`]).
    pub history_shared: std::sync::atomic::AtomicBool,
    /// The last stream sequence the node's history mirror handed over (see
    /// [`jetstream`]).
    pub history_position: AtomicU64,
}

/// The counters' names, help and kinds, in output order.
const SERIES: [(&str, &str, &str); 5] = [
    (
        "easechat_cluster_connected",
        "1 while the cluster bridge is connected to NATS.",
        "gauge",
    ),
    (
        "easechat_cluster_reconnects_total",
        "NATS connections re-established after a loss.",
        "counter",
    ),
    (
        "easechat_cluster_published_total",
        "Messages published to NATS for other nodes.",
        "counter",
    ),
    (
        "easechat_cluster_received_total",
        "Messages from other nodes received from NATS.",
        "counter",
    ),
    (
        "easechat_cluster_dropped_total",
        "Cross-node messages dropped (NATS down, bridge or inbox full).",
        "counter",
    ),
];

impl ClusterStats {
    /// Adds `n` to the dropped count.
    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn values(&self) -> [u64; 5] {
        [
            &self.connected,
            &self.reconnects,
            &self.published,
            &self.received,
            &self.dropped,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition of the counters.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        for ((name, help, kind), value) in SERIES.iter().zip(self.values()) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }

    /// The console's `stats` lines for the cluster.
    pub fn render_console(&self) -> String {
        let mut out = String::from("cluster (NATS bridge):");
        for ((name, _, _), value) in SERIES.iter().zip(self.values()) {
            let _ = write!(
                out,
                "\n  {:<36} {:>14}",
                name.trim_start_matches("easechat_"),
                value
            );
        }
        out
    }
}

/// A running bridge thread.
#[derive(Debug)]
pub struct Bridge(std::thread::JoinHandle<()>, Directory);

impl Bridge {
    /// The handle the admin console asks which other nodes listen where.
    pub fn directory(&self) -> Directory {
        self.1.clone()
    }

    /// After the shards stopped (dropping their links), waits up to
    /// `timeout` for the bridge to flush what they published to NATS, so
    /// messages sent just before a stop still reach the other nodes.
    pub fn wait_stopped(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.0.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Starts the bridge thread for `shards` shards; returns it and each
/// shard's parts, in shard order, for [`ClusterLink::new`].
pub fn start(config: ClusterConfig, shards: usize) -> std::io::Result<(Bridge, Vec<LinkParts>)> {
    let servers = config
        .servers
        .iter()
        .map(|s| ServerAddr::from_str(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let stats = Arc::new(ClusterStats::default());
    let (to_bridge, queue) = tokio::sync::mpsc::channel(BRIDGE_QUEUE);
    let mut inboxes = Vec::with_capacity(shards);
    let mut parts = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (inbox, receiver) = inbox::inbox(shard)?;
        inboxes.push(inbox);
        parts.push(LinkParts {
            shard,
            to_bridge: to_bridge.clone(),
            inbox: receiver,
            stats: stats.clone(),
        });
    }
    drop(to_bridge);
    let (directory, questions) = directory::channel();
    let thread = bridge::spawn(config, servers, queue, questions, inboxes, stats)?;
    Ok((Bridge(thread, directory), parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_split_on_commas_and_check_urls_and_ids() {
        let config = ClusterConfig::from_flags(
            &["nats://a:4222,nats://b:4222".into(), "nats://c:4222".into()],
            Some("node-1".into()),
        )
        .unwrap();
        assert_eq!(config.servers.len(), 3);
        assert_eq!(config.node_id, "node-1");
        assert!(ClusterConfig::from_flags(&[",".into()], None).is_err());
        assert!(ClusterConfig::from_flags(&["nats://a:4222".into()], Some("a b".into())).is_err());
        assert!(ClusterConfig::from_flags(&["nats://a:4222".into()], Some(String::new())).is_err());
        let default = ClusterConfig::from_flags(&["nats://a:4222".into()], None).unwrap();
        assert!(
            check_node_id(&default.node_id).is_ok(),
            "{}",
            default.node_id
        );
    }

    #[test]
    fn counters_render_for_prometheus_and_the_console() {
        let stats = ClusterStats::default();
        stats.connected.store(1, Ordering::Relaxed);
        stats.count_dropped(3);
        let text = stats.render_prometheus();
        assert!(text
            .contains("# TYPE easechat_cluster_connected gauge\neasechat_cluster_connected 1\n"));
        assert!(text.contains("easechat_cluster_dropped_total 3\n"));
        assert!(stats.render_console().contains("cluster_dropped_total"));
    }
}

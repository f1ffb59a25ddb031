//! One shard's live exchange: its connection table, subscription index and
//! router, owned by one executor thread, so plain `RefCell`s are enough and
//! no lock is ever taken. Each job has its own file:
//!
//! - [`access`]: access control on live connections (expiry, reloads).
//! - [`admission`]: connection slots (`--max-connections`, per address).
//! - [`exchange`]: subscribing and publishing, local fan-out, forwarding.
//! - [`history`]: channel history on its home shard, positions, recovery.
//! - [`queries`]: answering other shards, asking all of them.
//! - [`upkeep`]: keepalive, expiry purge, shutdown.
//!
//! The data itself is plain and tested without I/O in [`crate::state`].

pub mod access;
pub mod admission;
pub mod exchange;
pub mod history;
pub mod queries;
pub mod upkeep;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Gate;
use shards::Asks;

use crate::access::ConnectionAccess;
use crate::cluster::ClusterLink;
use crate::config::Config;
use crate::history::Sequenced;
use crate::router::Router;
use crate::shutdown::ShutdownSignal;
pub use crate::state::connection::{Connection, Liveness};
use crate::state::history::Histories;
use crate::state::subscriptions::{ConnId, SubscriptionIndex};
use crate::state::views::Answer;
use crate::stats::{Metric, ShardStats};
pub use admission::{Admission, ConnectionSlot};
pub use exchange::SubscribeError;

/// Size of the read buffer all of a shard's connections share: a read
/// copies what the socket has into it and parses it before the next await,
/// so idle connections hold no read buffer of their own.
const SCRATCH_BYTES: usize = 64 * 1024;

/// A recovery asked by shard `.0`, waiting for JetStream's window.
type WindowAsk = (usize, crate::router::RecoverAsk);
/// A channel's recoveries waiting for its window, since when.
type WindowAsks = (std::time::Instant, Vec<WindowAsk>);

/// Everything one shard owns.
pub struct ShardState {
    /// This shard's id.
    pub id: usize,
    /// The core it is pinned to.
    pub core: usize,
    /// Limits and settings.
    pub config: Config,
    /// Links to other shards and their interest.
    pub router: Router,
    /// Read buffer shared by every connection of the shard.
    pub scratch: RefCell<Vec<u8>>,
    /// Where this shard's outgoing frames are written once, to be queued to
    /// many outboxes as ranges.
    pub frames: crate::outbox::FrameLog,
    /// The frames of a wss connection's round, between the outbox and
    /// their encryption; shared like `scratch`.
    pub tls_plaintext: RefCell<Vec<u8>>,
    /// Paces this shard's connection starts (TLS handshakes, upgrades).
    pub start_gate: crate::session::gate::WorkGate,
    /// Paces the reads of connections with more input than their share
    /// per turn (floods, large and fragmented messages).
    pub bulk_gate: crate::session::gate::WorkGate,
    /// Traffic counters.
    pub stats: ShardStats,
    /// Fires when the nexus stops.
    pub shutdown: ShutdownSignal,
    /// Fires when a lame-duck drain starts (see [`crate::drain`]).
    pub draining: ShutdownSignal,
    /// Every session holds a pass; closing the gate waits for them.
    pub sessions: Gate,
    /// Connection caps shared by every shard.
    admission: Admission,
    connections: RefCell<HashMap<ConnId, Rc<Connection>>>,
    index: RefCell<SubscriptionIndex<Rc<Connection>>>,
    next_conn_id: Cell<ConnId>,
    /// Questions this shard asked the others (console, metrics).
    asks: Asks<Answer>,
    /// Bytes of incomplete client messages held by this shard's
    /// connections (`--max-partial-bytes`).
    partial_bytes: Cell<usize>,
    /// Connections whose reading waits for room toward other shards.
    paused: Cell<usize>,
    /// This shard's handle on the cluster bridge, when `--nats` is on.
    pub cluster: Option<ClusterLink>,
    /// Token expiries and policy reloads seen by this shard.
    access_sweep: access::AccessSweep,
    /// The histories of the channels whose home this shard is (`--history`).
    histories: Option<RefCell<Histories<Arc<Sequenced>>>>,
    /// Recoveries waiting for a channel's window from JetStream, by channel.
    window_asks: RefCell<HashMap<Box<str>, WindowAsks>>,
}

impl ShardState {
    /// A shard with no connections; `admission` is shared by all shards.
    pub fn new(core: usize, config: Config, router: Router, admission: Admission) -> Self {
        let histories = config.history.as_ref().map(|history| {
            // Epochs differ between shards and runs: a position from before
            // a restart never passes for a current one.
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            let seed = u64::from_le_bytes(seed) ^ router.shard_id() as u64;
            RefCell::new(Histories::new(history.limits, seed))
        });
        ShardState {
            id: router.shard_id(),
            core,
            config,
            router,
            scratch: RefCell::new(vec![0; SCRATCH_BYTES]),
            frames: crate::outbox::FrameLog::default(),
            tls_plaintext: RefCell::new(Vec::new()),
            start_gate: crate::session::gate::WorkGate::default(),
            bulk_gate: crate::session::gate::WorkGate::default(),
            stats: ShardStats::default(),
            shutdown: ShutdownSignal::default(),
            draining: ShutdownSignal::default(),
            sessions: Gate::new(),
            admission,
            connections: RefCell::new(HashMap::new()),
            index: RefCell::new(SubscriptionIndex::new()),
            next_conn_id: Cell::new(1),
            asks: Asks::default(),
            partial_bytes: Cell::new(0),
            paused: Cell::new(0),
            cluster: None,
            access_sweep: access::AccessSweep::default(),
            histories,
            window_asks: RefCell::default(),
        }
    }

    /// `s<shard>#<id>`: how the console names a connection.
    pub fn label(&self, conn: ConnId) -> String {
        format!("s{}#{}", self.id, conn)
    }

    /// How the console shows a connection: its label, and with access
    /// control on, `as IDENTITY` and the token id (`s0#3 as gs-eu token t-17`).
    pub fn console_label(&self, conn: &Connection) -> String {
        let label = self.label(conn.id);
        let Some(access) = &conn.access else {
            return label;
        };
        match access.token_id() {
            Some(id) => format!("{label} as {} token {id}", access.identity()),
            None => format!("{label} as {}", access.identity()),
        }
    }

    /// The per-connection span (as a session's), for logs the shard writes
    /// about a connection outside its session task, so each field is stated once.
    pub fn conn_span(&self, conn: &Connection) -> tracing::Span {
        tracing::info_span!(
            "session",
            conn = %self.label(conn.id),
            peer = %conn.peer,
            endpoint = conn.name().as_deref().unwrap_or(""),
        )
    }

    /// Adds an upgraded connection, with its rights, to the table.
    pub fn register(&self, peer: SocketAddr, access: Option<ConnectionAccess>) -> Rc<Connection> {
        let id = self.next_conn_id.get();
        self.next_conn_id.set(id + 1);
        let conn = Rc::new(Connection::new(
            id,
            peer,
            self.config.max_outbox_bytes,
            access,
        ));
        if let Some(access) = &conn.access {
            // Admitted before a reload that landed during its 101: check
            // it against the policy in force now.
            if let Err(refusal) = access.refresh(crate::access::unix_now()) {
                conn.outbox
                    .close(1008, &crate::access::revoked_reason(&refusal));
            }
        }
        self.note_token_expiry(conn.access.as_ref().and_then(|a| a.closes_at()));
        self.connections.borrow_mut().insert(id, conn.clone());
        self.stats.add(Metric::ConnectionsOpened, 1);
        if let Some(reason) = self.shutdown.reason() {
            // Upgraded while the shard was stopping: close it like the rest.
            conn.outbox.close(1000, &reason);
        }
        conn
    }

    /// Removes a connection and all its subscriptions (and only its own).
    pub fn unregister(&self, conn: &Connection) {
        self.connections.borrow_mut().remove(&conn.id);
        if let Some(access) = &conn.access {
            access.release();
        }
        let emptied = self.index.borrow_mut().remove_connection(conn.id);
        for channel in emptied {
            self.set_local_interest(&channel, false);
        }
    }

    /// Changes the shard's count of partial-input bytes by `delta` (a
    /// connection's buffered bytes grew or shrank); false when growth would
    /// pass `--max-partial-bytes`, in which case nothing is recorded.
    pub fn charge_partial(&self, old: usize, new: usize) -> bool {
        let others = self.partial_bytes.get().saturating_sub(old);
        if new > old && others + new > self.config.live.max_partial_bytes() {
            return false;
        }
        self.partial_bytes.set(others + new);
        true
    }

    /// The connections open now (the drain closes them one by one).
    pub fn open_connections(&self) -> Vec<Rc<Connection>> {
        self.connections.borrow().values().cloned().collect()
    }

    /// Runs `wait` counted as a paused connection (a gauge and a counter),
    /// also when it is cut short.
    pub async fn paused<T>(&self, wait: impl std::future::Future<Output = T>) -> T {
        struct Paused<'a>(&'a Cell<usize>);
        impl Drop for Paused<'_> {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        self.paused.set(self.paused.get() + 1);
        self.stats.add(Metric::Pauses, 1);
        let _paused = Paused(&self.paused);
        wait.await
    }
}

//! Starting the nexus: one shard per core, each accepting its own
//! connections, draining its rings and purging expired subscriptions.
//!
//! [`run`] takes its configuration and its control channel as arguments, so
//! tests and the binary start it the same way.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use futures_lite::{future, StreamExt};
use glommio::channels::shared_channel::ConnectedReceiver;
use glommio::net::TcpListener;
use shards::listener::{adopt, bind_reuseport};
use shards::{launch, LaunchError, RuntimeConfig, Shard};
use socket2::Socket;
use tracing::{error, info, warn};

use crate::cluster::{self, ClusterLink, LinkParts};
use crate::config::Config;
use crate::console::{self, Control, DEFAULT_STOP_REASON};
use crate::metrics;
use crate::router::{Router, ShardMsg};
use crate::session::{self, with_timeout};
use crate::shard::ShardState;

/// How often a shard purges expired subscriptions. Expired subscriptions
/// stop receiving at once (delivery checks the time); this only frees them.
const PURGE_INTERVAL: Duration = Duration::from_millis(250);
/// How long a stopping shard waits for its sessions to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped nexus waits for the cluster bridge to flush.
const BRIDGE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after an accept error (e.g. out of file descriptors) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Why the nexus stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The shards could not start.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The `--metrics` address could not be bound.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsBind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The cluster bridge could not start.
    #[error("cannot start the cluster bridge: {0}")]
    Cluster(std::io::Error),
    /// A shard thread panicked.
    #[error("shard {0} panicked; see the log above")]
    ShardPanicked(usize),
}

/// Starts the shards and blocks until they stop; `on_listening` is called
/// with the bound address once every shard is running.
pub fn run(
    config: Config,
    control: Receiver<Control>,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), RunError> {
    let runtime = RuntimeConfig {
        listen: config.listen,
        cores: config.cores.clone(),
        ring_size: config.ring_size,
        backlog: config.backlog,
    };
    let admin = match config.metrics {
        Some(addr) => {
            let socket = bind_reuseport(addr, 1, 128)
                .map_err(|source| RunError::MetricsBind { addr, source })?
                .pop()
                .expect("one socket");
            let bound = socket.local_addr().ok().and_then(|a| a.as_socket());
            info!(addr = %bound.unwrap_or(addr), "metrics listening (/metrics, /healthz)");
            Some(socket)
        }
        None => None,
    };
    // Handed to shard 0 once; the mutex is touched only at start-up.
    let admin = Arc::new(Mutex::new(admin));
    // One link per shard, taken by each shard at start-up (same pattern).
    let (bridge, cluster_links) = match config.cluster.clone() {
        Some(cluster) => {
            let (bridge, parts) =
                cluster::start(cluster, config.cores.len()).map_err(RunError::Cluster)?;
            (Some(bridge), parts.into_iter().map(Some).collect())
        }
        None => (None, Vec::new()),
    };
    let cluster_links = Arc::new(Mutex::new(cluster_links));
    let open_connections = Arc::new(AtomicUsize::new(0));
    let running = launch(&runtime, move |shard: Shard<ShardMsg>| {
        shard_main(
            shard,
            config,
            control,
            open_connections,
            admin,
            cluster_links,
        )
    })?;
    on_listening(running.local_addr());
    for result in running.join() {
        if let Err(shard) = result {
            return Err(RunError::ShardPanicked(shard));
        }
    }
    if let Some(bridge) = bridge {
        bridge.wait_stopped(BRIDGE_FLUSH_TIMEOUT);
    }
    Ok(())
}

async fn shard_main(
    mut shard: Shard<ShardMsg>,
    config: Config,
    control: Receiver<Control>,
    open_connections: Arc<AtomicUsize>,
    admin: Arc<Mutex<Option<Socket>>>,
    cluster_links: Arc<Mutex<Vec<Option<LinkParts>>>>,
) {
    let inbound = shard.rings.take_inbound();
    let id = shard.id();
    let listener = shard.listener;
    let mut state = ShardState::new(
        shard.core,
        config,
        Router::new(shard.rings),
        open_connections,
    );
    state.cluster = cluster_link(&cluster_links, id);
    let state = Rc::new(state);
    info!(shard = id, core = shard.core, "shard started");
    for (from, ring) in inbound {
        glommio::spawn_local(drain_ring(state.clone(), from, ring)).detach();
    }
    glommio::spawn_local(purge_loop(state.clone())).detach();
    if state.cluster.is_some() {
        glommio::spawn_local(cluster::serve(state.clone())).detach();
    }
    glommio::spawn_local(keepalive_loop(state.clone())).detach();
    if id == 0 {
        glommio::spawn_local(console::serve(state.clone(), control)).detach();
        let admin = admin.lock().ok().and_then(|mut socket| socket.take());
        if let Some(socket) = admin {
            glommio::spawn_local(metrics::serve(state.clone(), adopt(socket))).detach();
        }
    }
    accept_loop(&state, &listener).await;
    drop(listener);
    // Shutdown messages to other shards may wait in a backlog: deliver
    // them before this executor (and its pump tasks) goes away.
    if with_timeout(DRAIN_TIMEOUT, state.router.wait_for_room())
        .await
        .is_none()
    {
        warn!(
            shard = id,
            "some messages to other shards were not delivered"
        );
    }
    if with_timeout(DRAIN_TIMEOUT, state.sessions.close())
        .await
        .is_none()
    {
        warn!(shard = id, "some connections did not close in time");
    }
    if let Some(cluster) = &state.cluster {
        cluster.close();
    }
    info!(shard = id, "shard stopped");
}

/// Shard `id`'s link to the cluster bridge, if `--nats` is on.
fn cluster_link(links: &Mutex<Vec<Option<LinkParts>>>, id: usize) -> Option<ClusterLink> {
    let parts = links.lock().ok()?.get_mut(id)?.take()?;
    Some(ClusterLink::new(parts))
}

async fn accept_loop(state: &Rc<ShardState>, listener: &TcpListener) {
    loop {
        match state.accept(listener).await {
            None => return,
            Some(Ok(stream)) => {
                let Ok(pass) = state.sessions.enter() else {
                    return;
                };
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                let shard = state.clone();
                let slot = state.admit();
                glommio::spawn_local(async move {
                    session::serve(shard, stream, peer, slot).await;
                    drop(pass);
                })
                .detach();
            }
            Some(Err(e)) => {
                error!(shard = state.id, error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Ring messages handled before the drain yields to other tasks.
const RING_BATCH: usize = 64;

async fn drain_ring(state: Rc<ShardState>, from: usize, mut ring: ConnectedReceiver<ShardMsg>) {
    let mut handled = 0;
    while let Some(msg) = ring.next().await {
        state.on_ring_message(from, msg);
        handled += 1;
        if handled % RING_BATCH == 0 {
            // A full ring never makes `next` wait: let writers run.
            future::yield_now().await;
        }
    }
    // The other shard is gone; a nexus missing a shard must not linger.
    state.begin_shutdown(Arc::from(DEFAULT_STOP_REASON));
}

async fn keepalive_loop(state: Rc<ShardState>) {
    // Sweep four times per the shorter of the two periods, so a dead peer
    // is found within about a quarter period of its deadline.
    let period = state.config.keepalive.min(state.config.keepalive_timeout) / 4;
    let period = period.clamp(Duration::from_millis(100), Duration::from_secs(5));
    while state.shutdown.reason().is_none() {
        glommio::timer::sleep(period).await;
        state.sweep_keepalive();
    }
}

async fn purge_loop(state: Rc<ShardState>) {
    while state.shutdown.reason().is_none() {
        glommio::timer::sleep(PURGE_INTERVAL).await;
        state.purge_expired();
    }
}

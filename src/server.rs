//! Starting the nexus: one shard per core, each accepting its own
//! connections, draining its rings and purging expired subscriptions.
//!
//! [`run`] takes its configuration and its control channel as arguments, so
//! the binary and an embedding program (`tests/embedded.rs`) start it the
//! same way.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use futures_lite::future;
use glommio::net::TcpStream;
use shards::listener::{Accepted, Listener};
use shards::preflight::{
    disable_transparent_huge_pages, raise_open_files_limit, reserve_descriptor_table,
};
use shards::{launch, with_timeout, LaunchError, RuntimeConfig, Shard};
use tracing::{error, info, warn};

use crate::admin::{self, routes::App};
use crate::cluster::{self, ClusterLink, LinkParts};
use crate::config::{Config, ACCEPT_BACKOFF};
use crate::console::{self, Control, DEFAULT_STOP_REASON};
use crate::drain;
use crate::router::{Router, ShardMsg};
use crate::session;
use crate::shard::{Admission, ShardState};

/// How often a shard purges expired subscriptions. Expired subscriptions
/// stop receiving at once (delivery checks the time); this only frees them.
const PURGE_INTERVAL: Duration = Duration::from_millis(250);
/// Connections a shard accepts (and starts) in a row before it lets the
/// executor poll I/O: a connect storm then delays the shard's other
/// connections by about this many upgrades at a time.
const ACCEPT_BURST: usize = 16;
/// The pause after such a burst: a timer wait, which puts the accept loop
/// behind the executor's next I/O poll.
const ACCEPT_PAUSE: Duration = Duration::from_micros(50);
/// How long a stopping shard waits for its sessions to close.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped nexus waits for the cluster bridge to flush.
const BRIDGE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Files the process needs beside its client connections: listeners, the
/// io_uring instances, standard streams, the admin listener and its
/// connections, and refused clients being answered 503.
pub const FILES_HEADROOM: usize = 256;

/// Why the nexus stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The shards could not start.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The `--admin` (`--metrics`) address could not be bound.
    #[error("cannot listen for the admin console on {addr}: {source}")]
    MetricsBind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The admin console's thread could not start.
    #[error("cannot start the admin console: {0}")]
    AdminThread(std::io::Error),
    /// The cluster bridge could not start.
    #[error("cannot start the cluster bridge: {0}")]
    Cluster(std::io::Error),
    /// A shard thread panicked.
    #[error("shard {0} panicked; see the log above")]
    ShardPanicked(usize),
}

/// Starts the shards and blocks until they stop; `on_listening` is called
/// with the bound address once every shard is running. `control` is the
/// channel shard 0 polls (both ends: the admin console sends on it too).
pub fn run(
    config: Config,
    (control_tx, control): (Sender<Control>, Receiver<Control>),
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), RunError> {
    let mut config = config;
    if let Err(e) = disable_transparent_huge_pages() {
        warn!(error = %e, "cannot turn transparent huge pages off: large first touches of memory may stall the shards");
    }
    fit_connections_to_open_files(&mut config);
    config.sync_live();
    let runtime = RuntimeConfig {
        listen: config.listen,
        second_listen: config.tls_listen,
        cores: config.cores.clone(),
        ring_size: config.ring_size,
        backlog: config.backlog,
        preempt_timer: RuntimeConfig::DEFAULT_PREEMPT_TIMER,
    };
    // Bound before the shards start: a taken port refuses to start.
    let admin_listener = match config.metrics {
        Some(addr) => {
            let listener =
                admin::bind(addr).map_err(|source| RunError::MetricsBind { addr, source })?;
            let bound = listener.local_addr().unwrap_or(addr);
            info!(addr = %bound, token = config.admin_token.is_some(), https = config.admin_tls, "admin console and metrics listening (/, /api, /metrics, /healthz)");
            Some(listener)
        }
        None => None,
    };
    let admin_token = config.admin_token.clone();
    let access = config.access.clone();
    if let Some(access) = &access {
        info!(mode = access.mode().as_str(), policy = %access.policy().summary, "access control on");
    }
    let admin_max_connections = config.admin_max_connections;
    let max_connections = config.max_connections;
    let reloader = config.reloader.clone();
    let tls = config.tls.clone();
    let admin_tls = config.admin_tls;
    let admission = Admission::new(config.max_connections, config.max_connections_per_ip);
    // One link per shard, taken by each shard at start-up; the mutex is
    // touched only then.
    let (bridge, cluster_links) = match config.cluster.clone() {
        Some(cluster) => {
            let (bridge, parts) =
                cluster::start(cluster, config.cores.len()).map_err(RunError::Cluster)?;
            (Some(bridge), parts.into_iter().map(Some).collect())
        }
        None => (None, Vec::new()),
    };
    let cluster_links = Arc::new(Mutex::new(cluster_links));
    let running = launch(&runtime, move |shard: Shard<ShardMsg>| {
        shard_main(shard, config, control, admission, cluster_links)
    })?;
    let admin_thread = match admin_listener {
        Some(listener) => {
            let directory = bridge.as_ref().map(cluster::Bridge::directory);
            let mut app = App::new(
                control_tx,
                admin_token,
                running.local_addr(),
                directory,
                access,
            );
            app.max_connections = Some(max_connections);
            app.reloader = reloader;
            app.tls = tls.clone();
            let admin_tls = tls.clone().filter(|_| admin_tls);
            match admin::spawn(listener, app, admin_max_connections, admin_tls) {
                Ok(thread) => Some(thread),
                Err(e) => {
                    error!(error = %e, "cannot start the admin console");
                    return Err(RunError::AdminThread(e));
                }
            }
        }
        None => None,
    };
    if let (Some(addr), Some(tls)) = (running.second_local_addr(), &tls) {
        info!(%addr, certificate = %tls.summary(), "serving wss");
    }
    on_listening(running.local_addr());
    let results = running.join();
    if let Some(thread) = admin_thread {
        thread.stop();
    }
    for result in results {
        if let Err(shard) = result {
            return Err(RunError::ShardPanicked(shard));
        }
    }
    if let Some(bridge) = bridge {
        bridge.wait_stopped(BRIDGE_FLUSH_TIMEOUT);
    }
    Ok(())
}

/// Lowers `--max-connections` to what the open-files limit allows (after
/// raising the soft limit to the hard one), so clients past it are answered
/// 503 instead of finding the process out of descriptors; then grows the
/// descriptor table to that size at once (see [`reserve_descriptor_table`]).
fn fit_connections_to_open_files(config: &mut Config) {
    let Some(limit) = raise_open_files_limit() else {
        return;
    };
    let headroom = FILES_HEADROOM + 4 * config.cores.len();
    let fits = (limit as usize).saturating_sub(headroom).max(1);
    if fits < config.max_connections {
        warn!(
            open_files_limit = limit,
            max_connections = config.max_connections,
            lowered_to = fits,
            "the open-files limit is below --max-connections plus {headroom}: connections \
             are capped at {fits}. Remedy: raise it (ulimit -n, systemd LimitNOFILE=, \
             docker run --ulimit nofile=)"
        );
        config.max_connections = fits;
    }
    let needed = (config.max_connections + headroom) as u64;
    if let Err(e) = reserve_descriptor_table(needed.min(limit)) {
        warn!(error = %e, descriptors = needed, "cannot grow the descriptor table ahead: the first connect storm may stall the shards briefly");
    }
}

async fn shard_main(
    mut shard: Shard<ShardMsg>,
    config: Config,
    control: Receiver<Control>,
    admission: Admission,
    cluster_links: Arc<Mutex<Vec<Option<LinkParts>>>>,
) {
    let inbound = shard.rings.take_inbound();
    let id = shard.id();
    let listener = shard.listener;
    let budget = config.max_ring_backlog_bytes;
    let mut state = ShardState::new(
        shard.core,
        config,
        Router::new(shard.rings, budget),
        admission,
    );
    state.cluster = cluster_link(&cluster_links, id);
    let state = Rc::new(state);
    info!(shard = id, core = shard.core, "shard started");
    for (from, ring) in inbound {
        let handler = state.clone();
        let gate = state.clone();
        let drain = state.router.drain(
            from,
            ring,
            move |msg| gate.can_take(msg),
            move |from, msg| handler.on_ring_message(from, msg),
        );
        let stopper = state.clone();
        glommio::spawn_local(async move {
            drain.await;
            // The other shard is gone; a nexus missing a shard must not linger.
            stopper.begin_shutdown(Arc::from(DEFAULT_STOP_REASON));
        })
        .detach();
    }
    glommio::spawn_local(purge_loop(state.clone())).detach();
    if state.cluster.is_some() {
        glommio::spawn_local(cluster::serve(state.clone())).detach();
    }
    glommio::spawn_local(keepalive_loop(state.clone())).detach();
    glommio::spawn_local(drain::run(state.clone())).detach();
    if id == 0 {
        glommio::spawn_local(console::serve(state.clone(), control)).detach();
    }
    let wss = shard.second_listener.map(|listener| {
        let state = state.clone();
        glommio::spawn_local(async move {
            accept_loop(&state, &listener, Transport::Tls).await;
        })
    });
    accept_loop(&state, &listener, Transport::Plain).await;
    drop(listener);
    if let Some(wss) = wss {
        wss.await;
    }
    // A drain keeps serving until its last close; then shard 0 stops all.
    state.shutdown.wait().await;
    // Shutdown messages to other shards may wait in a backlog: deliver
    // them before this executor (and its pump tasks) goes away.
    if with_timeout(DRAIN_TIMEOUT, state.router.links().flush())
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

/// Accepts until the nexus stops or drains; then the listener leaves the
/// listen group and the connections it had queued are served (and closed
/// like the rest), never reset.
async fn accept_loop(state: &Rc<ShardState>, listener: &Listener, transport: Transport) {
    let mut failing: Option<(Instant, u64)> = None;
    let mut burst = 0;
    loop {
        // A storm of connections never makes `accept` wait, and each new
        // session's first turn (its upgrade, when the request is already
        // there) runs before the executor polls I/O again: after a burst
        // of accepts, everyone else's completions are reaped first.
        burst += 1;
        if burst > ACCEPT_BURST {
            burst = 0;
            glommio::timer::sleep(ACCEPT_PAUSE).await;
        }
        let stop = future::or(state.shutdown.wait(), state.draining.wait());
        match listener.accept_until(stop).await {
            Accepted::Retired(queued) => {
                info!(
                    shard = state.id,
                    queued = queued.len(),
                    "listener left the listen group"
                );
                for stream in queued {
                    serve(state, stream, transport);
                }
                return;
            }
            Accepted::Connection(Ok(stream)) => {
                if let Some((since, failures)) = failing.take() {
                    info!(
                        shard = state.id,
                        failures,
                        for_ms = since.elapsed().as_millis() as u64,
                        "accepting again"
                    );
                }
                serve(state, stream, transport);
            }
            Accepted::Connection(Err(e)) => {
                // One line per outage (e.g. out of file descriptors), not
                // one per failed accept.
                match &mut failing {
                    Some((_, failures)) => *failures += 1,
                    None => {
                        error!(shard = state.id, error = %e, "accept failing; retrying every {} ms", ACCEPT_BACKOFF.as_millis());
                        failing = Some((Instant::now(), 1));
                    }
                }
                glommio::timer::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// `ws`: the listen address.
    Plain,
    /// `wss`: `--tls-listen`.
    Tls,
}

fn serve(state: &Rc<ShardState>, stream: TcpStream, transport: Transport) {
    let Ok(pass) = state.sessions.enter() else {
        return;
    };
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let shard = state.clone();
    let slot = state.admit(peer.ip());
    glommio::spawn_local(async move {
        let tls = match (transport, &shard.config.tls) {
            (Transport::Plain, _) => None,
            (Transport::Tls, Some(certificates)) => {
                Some((certificates.current(), certificates.max_handshake_bytes()))
            }
            // A wss listener without certificates (an embedder's mistake)
            // serves nothing rather than plaintext.
            (Transport::Tls, None) => return,
        };
        session::serve(shard, stream, peer, slot, tls).await;
        drop(pass);
    })
    .detach();
}

async fn keepalive_loop(state: Rc<ShardState>) {
    // Sweep four times per the shorter of the two periods, so a dead peer
    // is found within about a quarter period of its deadline.
    while state.shutdown.reason().is_none() {
        // Recomputed each round: a reload may change either period.
        let live = &state.config.live;
        let period = live.keepalive().min(live.keepalive_timeout()) / 4;
        let period = period.clamp(Duration::from_millis(100), Duration::from_secs(5));
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

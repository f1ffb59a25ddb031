//! Starting, pinning and joining the shards.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::listener::{adopt, bind_reuseport, Listener};
use crate::preflight::{self, PreflightError};
use crate::rings::{InFlight, Rings};

/// glommio reserves this much DMA memory per executor for file I/O; the
/// shards only do network I/O, so a small pool is plenty.
const IO_MEMORY_BYTES: usize = 1 << 20;

/// Most shards one runtime starts: applications keep per-peer sets as 64-bit
/// masks, so this is the one place the limit lives.
pub const MAX_SHARDS: usize = 64;

/// What to start: where to listen, on which cores, with which ring size.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Address every shard listens on (port 0 picks one port for all).
    pub listen: SocketAddr,
    /// A second address every shard also listens on, with a listener of
    /// its own in the same `SO_REUSEPORT` group (the nexus serves wss there).
    pub second_listen: Option<SocketAddr>,
    /// CPU ids to pin shards to, one shard per entry, in shard order.
    pub cores: Vec<usize>,
    /// Slots per SPSC ring between two shards.
    pub ring_size: usize,
    /// Listen backlog of each shard's socket.
    pub backlog: u32,
    /// How long a task queue runs before the executor reaps I/O completions
    /// again (glommio's preemption timer). A task that always has input
    /// never waits on I/O, so without preemption its neighbours' completed
    /// reads sit unseen this long; applications should not rely on it and
    /// instead make busy tasks wait for the reactor now and then.
    pub preempt_timer: Duration,
}

impl RuntimeConfig {
    /// glommio's own default. Shorter timers (1 ms) made executors miss
    /// their timers and hang at start-up in about one run in three here
    /// (glommio 0.9.0 shares one io_uring timeout between the preemption
    /// timer and the sleep timer), so the runtime keeps the default.
    pub const DEFAULT_PREEMPT_TIMER: Duration = Duration::from_millis(100);
}

/// Everything one shard owns when its body starts.
pub struct Shard<M: Send> {
    /// CPU this shard's thread is pinned to.
    pub core: usize,
    /// This shard's own `SO_REUSEPORT` listener.
    pub listener: Listener,
    /// The address all shards listen on (port resolved).
    pub local_addr: SocketAddr,
    /// This shard's listener on [`RuntimeConfig::second_listen`].
    pub second_listener: Option<Listener>,
    /// Rings to and from every other shard.
    pub rings: Rings<M>,
}

impl<M: Send> Shard<M> {
    /// This shard's id, `0..nr_shards()`.
    pub fn id(&self) -> usize {
        self.rings.shard_id()
    }

    /// How many shards run.
    pub fn nr_shards(&self) -> usize {
        self.rings.nr_shards()
    }
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The host cannot run glommio (io_uring or memlock); see the message.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// Binding the listening sockets failed (address in use, bad address…).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid runtime configuration: {0}")]
    Config(&'static str),
    /// glommio refused to create an executor.
    #[error("cannot start shard {shard} on core {core}: {reason}")]
    Executor {
        /// The shard that failed.
        shard: usize,
        /// The core it was to be pinned to.
        core: usize,
        /// glommio's explanation.
        reason: String,
    },
}

/// The CPU ids this process may run on (its affinity mask), in order.
pub fn available_cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    if ids.is_empty() {
        ids.push(0);
    }
    ids
}

/// Shards that are running; [`Running::join`] waits for all of them.
pub struct Running<T: Send + 'static> {
    local_addr: SocketAddr,
    second_local_addr: Option<SocketAddr>,
    handles: Vec<ExecutorJoinHandle<T>>,
}

impl<T: Send + 'static> Running<T> {
    /// The address every shard listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The second address every shard listens on (port resolved), if any.
    pub fn second_local_addr(&self) -> Option<SocketAddr> {
        self.second_local_addr
    }

    /// Waits until every shard's body returned. A shard whose thread
    /// panicked yields `Err` with its index, so the caller decides the policy.
    pub fn join(self) -> Vec<Result<T, usize>> {
        self.handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| h.join().map_err(|_| i))
            .collect()
    }
}

/// Binds the listeners, starts one pinned executor per entry of
/// `config.cores`, joins them in a ring mesh and runs `body` on each.
///
/// Returns once every shard is running; the caller joins them.
pub fn launch<M, G, F, T>(config: &RuntimeConfig, body: G) -> Result<Running<T>, LaunchError>
where
    M: Send + 'static,
    G: FnOnce(Shard<M>) -> F + Send + Clone + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    if config.cores.is_empty() {
        return Err(LaunchError::Config("at least one core is needed"));
    }
    if config.cores.len() > MAX_SHARDS {
        return Err(LaunchError::Config("at most 64 shards"));
    }
    if config.ring_size == 0 {
        return Err(LaunchError::Config("ring size must be at least 1"));
    }
    preflight::check()?;
    let sockets =
        bind_reuseport(config.listen, config.cores.len(), config.backlog).map_err(|source| {
            LaunchError::Bind {
                addr: config.listen,
                source,
            }
        })?;
    let local_addr = bound_addr(&sockets, config.listen);
    let (second_sockets, second_local_addr): (Vec<Option<socket2::Socket>>, _) =
        match config.second_listen {
            Some(addr) => {
                let sockets = bind_reuseport(addr, config.cores.len(), config.backlog)
                    .map_err(|source| LaunchError::Bind { addr, source })?;
                let bound = bound_addr(&sockets, addr);
                (sockets.into_iter().map(Some).collect(), Some(bound))
            }
            None => (
                (0..config.cores.len())
                    .map(|_| None::<socket2::Socket>)
                    .collect(),
                None,
            ),
        };
    let mesh = MeshBuilder::full(config.cores.len(), config.ring_size);
    let in_flight = Arc::new(InFlight::new(config.cores.len()));
    let mut handles = Vec::with_capacity(config.cores.len());
    let sockets = sockets.into_iter().zip(second_sockets);
    for (index, ((socket, second), &core)) in sockets.zip(&config.cores).enumerate() {
        let mesh = mesh.clone();
        let in_flight = in_flight.clone();
        let body = body.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core))
            .name(&format!("shard-{index}"))
            .io_memory(IO_MEMORY_BYTES)
            .preempt_timer(config.preempt_timer)
            .spawn(move || async move {
                let listener = adopt(socket);
                let second_listener = second.map(adopt);
                let rings = Rings::join(mesh, in_flight)
                    .await
                    .expect("every shard joins the mesh exactly once");
                body(Shard {
                    core,
                    listener,
                    local_addr,
                    second_listener,
                    rings,
                })
                .await
            })
            .map_err(|e| LaunchError::Executor {
                shard: index,
                core,
                reason: e.to_string(),
            })?;
        handles.push(handle);
    }
    Ok(Running {
        local_addr,
        second_local_addr,
        handles,
    })
}

/// The address the first of `sockets` is bound to (the port 0 resolved).
fn bound_addr(sockets: &[socket2::Socket], asked: SocketAddr) -> SocketAddr {
    sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .and_then(|a| a.as_socket())
        .unwrap_or(asked)
}

//! `--connect-storm N`: N new connections opened at the same instant (a
//! fleet reconnecting after a restart) while the run's own clients keep
//! publishing and receiving, so their latency during the storm says what a
//! storm of (TLS) handshakes costs everyone else on the nexus.
//!
//! The storm runs on a thread of its own with a runtime of its own, at
//! `SCHED_IDLE`: the bystanders' thread, on the same CPU, preempts it the
//! moment it has something to read, so the storm's client-side crypto does
//! not show up as bystander latency. Its connect times then include any
//! time it waited for the CPU, and its thread's CPU time is reported, so a
//! storm bounded by the load generator rather than the nexus can be told.
//! Each connection is timed from its TCP connect to the `101` of its
//! upgrade, then held, silent, until the end of the measured window.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::transport::{self, Plain, Scheme, Secure, Target, Tls};
use crate::Shared;

/// What the storm does.
#[derive(Debug, Clone)]
pub struct StormPlan {
    /// Connections opened at once.
    pub connections: usize,
    /// Where (`--storm-url`, else `--url`).
    pub target: Target,
    /// When it starts, ns since the run's origin.
    pub start_ns: u64,
    /// How long one connection may take before it counts as an error.
    pub timeout: Duration,
}

/// What the storm saw.
#[derive(Debug)]
pub struct StormResult {
    /// Connections attempted.
    pub connections: usize,
    /// Connections that got their `101`.
    pub upgraded: usize,
    /// Failures by what went wrong.
    pub errors: BTreeMap<String, usize>,
    /// TCP connect to `101`, per upgraded connection, ns.
    pub connect: Histogram<u64>,
    /// From the storm's start to its last connection's end (upgraded or
    /// failed), seconds.
    pub seconds: f64,
    /// The storm's start and end, seconds since the Unix epoch.
    pub unix: (f64, f64),
    /// CPU seconds the storm's thread used (its handshakes' client side).
    pub cpu_seconds: f64,
}

impl StormResult {
    /// Connections that failed.
    pub fn failed(&self) -> usize {
        self.errors.values().sum()
    }
}

/// Starts the storm's thread; it returns once the storm is over and the
/// measured window has ended (its connections are closed then).
pub fn spawn(
    plan: StormPlan,
    config: Option<Arc<rustls::ClientConfig>>,
    shared: Arc<Shared>,
) -> Result<std::thread::JoinHandle<StormResult>, String> {
    std::thread::Builder::new()
        .name("stress-storm".into())
        .spawn(move || {
            idle_priority();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, run(plan, Tls::new(config), shared))
        })
        .map_err(|e| e.to_string())
}

/// This thread at `SCHED_IDLE` (best effort: the storm still runs without).
fn idle_priority() {
    // SAFETY: sched_setscheduler on the calling thread with a zeroed
    // sched_param, as SCHED_IDLE requires priority 0.
    let status = unsafe {
        let param: libc::sched_param = std::mem::zeroed();
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param)
    };
    if status != 0 {
        eprintln!(
            "stress: storm thread stays at normal priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// CPU seconds the calling thread has used.
fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The first line of an error, short enough to count errors by.
fn kind_of(error: &str) -> String {
    let line = error.lines().next().unwrap_or("");
    line.chars().take(96).collect()
}

/// One storm connection, opened, upgraded and held (both halves, so it
/// stays open until dropped).
type Held = Box<dyn std::any::Any>;

async fn open(target: &Target, tls: &Tls, scratch: &RefCell<Vec<u8>>) -> Result<Held, String> {
    Ok(match target.scheme {
        Scheme::Ws => Box::new(transport::open_upgraded::<Plain>(target, tls, scratch).await?),
        Scheme::Wss => Box::new(transport::open_upgraded::<Secure>(target, tls, scratch).await?),
        Scheme::Redis | Scheme::Nats => return Err("a connect storm speaks ws or wss".into()),
    })
}

async fn run(plan: StormPlan, tls: Tls, shared: Arc<Shared>) -> StormResult {
    let now = shared.now_ns();
    if plan.start_ns > now {
        tokio::time::sleep(Duration::from_nanos(plan.start_ns - now)).await;
    }
    let cpu_before = thread_cpu_seconds();
    let started = Instant::now();
    let started_unix = crate::unix_seconds();
    shared
        .storm_from_ns
        .store(shared.now_ns(), Ordering::Release);
    let plan = Rc::new(plan);
    let scratch = Rc::new(RefCell::new(vec![0u8; 64 * 1024]));
    let tasks: Vec<_> = (0..plan.connections)
        .map(|_| {
            let (plan, tls, scratch) = (plan.clone(), tls.clone(), scratch.clone());
            tokio::task::spawn_local(async move {
                let begun = Instant::now();
                let result = tokio::time::timeout(plan.timeout, open(&plan.target, &tls, &scratch))
                    .await
                    .unwrap_or_else(|_| Err(format!("no 101 within {:?}", plan.timeout)));
                (result, begun.elapsed(), Instant::now())
            })
        })
        .collect();
    let mut connect = Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("bounds");
    let mut errors = BTreeMap::new();
    let mut held = Vec::new();
    let mut last = started;
    for task in tasks {
        let (result, took, ended) = match task.await {
            Ok(done) => done,
            Err(e) => (Err(e.to_string()), Duration::ZERO, Instant::now()),
        };
        last = last.max(ended);
        match result {
            Ok(conn) => {
                let _ = connect.record((took.as_nanos() as u64).max(1_000));
                held.push(conn);
            }
            Err(e) => *errors.entry(kind_of(&e)).or_insert(0) += 1,
        }
    }
    let ended_ns =
        shared.now_ns() - Instant::now().saturating_duration_since(last).as_nanos() as u64;
    shared.storm_until_ns.store(ended_ns, Ordering::Release);
    let seconds = last.duration_since(started).as_secs_f64();
    let cpu_seconds = thread_cpu_seconds() - cpu_before;
    let result = StormResult {
        connections: plan.connections,
        upgraded: held.len(),
        errors,
        connect,
        seconds,
        unix: (started_unix, started_unix + seconds),
        cpu_seconds,
    };
    // Held, silent, until the window ends (shorter than the nexus's 30 s
    // keepalive in any bench run), then closed.
    let end = shared.end_ns.load(Ordering::Acquire);
    let now = shared.now_ns();
    if end > now {
        tokio::time::sleep(Duration::from_nanos(end - now)).await;
    }
    drop(held);
    result
}

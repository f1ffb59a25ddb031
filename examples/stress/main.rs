//! `stress`: a load generator for EaseChat Nexus that measures fan-out
//! throughput, end-to-end latency and correctness.
//!
//! Every client says `1h` with a unique name and subscribes to one channel
//! (client i to channel i mod channels); the first `--publishers` clients also
//! publish, round-robin over the channels, paced to `--target-rate` in total
//! (0: closed loop, as fast as the nexus delivers, with a bounded number of
//! deliveries in flight so no subscriber is pushed into slow-consumer
//! territory). Each text carries publisher, channel, a per-(publisher,
//! channel) sequence number and its send time. Only messages sent inside
//! the measured window (after `--warmup`) are counted; the run exits 1 if any
//! of them was lost or arrived out of order.
//!
//! So that the tool is not the bottleneck it measures, only a sample of the
//! receivers (every `--sample-every`th subscriber of each channel, default
//! 10) parses every delivery and checks its latency, order and sender;
//! the others count deliveries by their frame headers alone. Loss is
//! checked twice: the sample's, message by message in the window, and every
//! receiver's count against the deliveries due for everything published
//! (warm-up included) once the run has drained.
//!
//! `--url redis://HOST:PORT` and `nats://HOST:PORT` load Redis pub/sub and
//! NATS the same way, with the same stamped texts, every publish reaching
//! the same receivers as on the nexus (see `proto`).
//!
//! ```sh
//! cargo run --release --example stress -- --url ws://127.0.0.1:6500 --clients 350 \
//!     --publishers 10 --channels 10 --target-rate 3500 --duration 30
//! ```
//!
//! `--positions` (ws/wss) makes every client ask for the positions
//! extension at `1h` (docs/protocol.md): against a nexus with `--history`,
//! each subscription is answered by a `1p` (not counted as a delivery) and
//! every `1r` carries its channel position, which the sampled receivers
//! check: strictly increasing, and contiguous for a receiver that does not
//! publish (the nexus never delivers a publisher's own messages to it).
//!
//! `--url wss://…` (and `--publish-url wss://…`) speak TLS, trusting the CA
//! of `--ca FILE` (see `transport`). `--connect-storm N` opens N more
//! connections at once during the window while the clients above keep
//! publishing, and reports how long the storm took and what the clients'
//! latency was during it (see `storm`):
//!
//! ```sh
//! cargo run --release --example stress -- --url ws://127.0.0.1:6500 --clients 50 \
//!     --publishers 5 --channels 1 --target-rate 200 --duration 10 \
//!     --connect-storm 2000 --storm-url wss://127.0.0.1:6543 --ca ca.pem
//! ```

mod exit;
mod hgrm;
mod payload;
mod proto;
mod report;
mod storm;
mod transport;
mod window;
mod ws;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;
use tokio::sync::{Mutex, Semaphore};

use payload::Stamp;
use proto::{Event, Protocol};
use report::{RunInfo, Tally};
use transport::{Plain, RecvHalf, Scheme, Secure, SendHalf, Target, Tls, Transport};
use window::Window;

/// Load generator for EaseChat Nexus (see the module docs).
#[derive(FromArgs, Debug, Clone)]
struct Args {
    /// server URL: the nexus at ws://HOST:PORT[/PATH] or wss://…, or a
    /// peer at redis://HOST:PORT or nats://HOST:PORT (default
    /// ws://127.0.0.1:6500)
    #[argh(option, default = "String::from(\"ws://127.0.0.1:6500\")")]
    url: String,
    /// where the publishing clients connect instead of --url (a cluster
    /// run: publish on one node, subscribe on another); the same protocol
    /// as --url
    #[argh(option)]
    publish_url: Option<String>,
    /// PEM file of the CA certificate(s) to trust for wss:// (needed by any
    /// wss URL; only these CAs are trusted)
    #[argh(option)]
    ca: Option<String>,
    /// open this many more connections at once during the window, while
    /// the clients keep publishing (default 0: no storm)
    #[argh(option, default = "0")]
    connect_storm: usize,
    /// where the storm connects (default --url)
    #[argh(option)]
    storm_url: Option<String>,
    /// seconds into the measured window the storm starts (default 1)
    #[argh(option, default = "1.0")]
    storm_at: f64,
    /// seconds one storm connection may take to get its 101 before it
    /// counts as an error (default 30)
    #[argh(option, default = "30.0")]
    storm_timeout: f64,
    /// subscribing clients, publishers included (default 350)
    #[argh(option, default = "350")]
    clients: usize,
    /// clients that also publish (default 10)
    #[argh(option, default = "10")]
    publishers: usize,
    /// channels (default 10)
    #[argh(option, default = "10")]
    channels: usize,
    /// measured seconds (default 30)
    #[argh(option, default = "30.0")]
    duration: f64,
    /// seconds of load before measuring (default 2)
    #[argh(option, default = "2.0")]
    warmup: f64,
    /// text bytes per message (default 64)
    #[argh(option, default = "64")]
    message_size: usize,
    /// published messages per second in total; 0 = as fast as the nexus
    /// delivers them (default 3500)
    #[argh(option, default = "3500.0")]
    target_rate: f64,
    /// connections being opened at once (default 64)
    #[argh(option, default = "64")]
    connect_parallel: usize,
    /// load generator threads (default 1)
    #[argh(option, default = "1")]
    threads: usize,
    /// deliveries allowed in flight in closed-loop mode (default 32 per client)
    #[argh(option)]
    in_flight: Option<u64>,
    /// one subscriber in this many on each channel parses and checks every
    /// delivery (latency, order, sender, loss in the window); the others
    /// count deliveries by their headers (default 10; 1: all check)
    #[argh(option, default = "10")]
    sample_every: usize,
    /// write the results as JSON here
    #[argh(option)]
    json: Option<String>,
    /// write the latency percentile distribution (.hgrm) here
    #[argh(option)]
    hgrm: Option<String>,
    /// name prefix for this run's clients (default stress-<pid>)
    #[argh(option)]
    name_prefix: Option<String>,
    /// every client asks for positions (`1h` with the option `positions`,
    /// ws/wss only): on channels with history it receives positional `1r`s
    #[argh(switch)]
    positions: bool,
}

/// How long to wait after the window for in-flight deliveries.
const DRAIN: Duration = Duration::from_secs(5);
/// How often idle readers look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Every client's subscription TTL (as the Java client's), longer than a run.
pub(crate) const SUBSCRIPTION_TTL: Duration = Duration::from_secs(600);

/// Everything a worker thread needs to know, fixed for the run.
#[derive(Debug, Clone)]
struct Plan {
    args: Args,
    /// Where subscribers connect (`--url`).
    target: Target,
    /// Where publishers connect: `--publish-url`, else `--url`.
    publish_target: Target,
    /// TLS client settings when any URL is wss (`--ca`).
    tls: Option<Arc<rustls::ClientConfig>>,
    prefix: String,
    /// Subscribers per channel.
    subscribers_on: Vec<u64>,
    /// Sampled subscribers (those that check every delivery) per channel.
    sampled_on: Vec<u64>,
    /// Messages per second per publisher (0: closed loop).
    rate_per_publisher: f64,
    in_flight: u64,
}

/// Cross-thread coordination; touched once per batch, not per message.
#[derive(Debug)]
struct Shared {
    origin: Instant,
    /// Worker threads done connecting.
    ready: AtomicUsize,
    /// When publishing starts, ns since origin (0 = not yet).
    start_ns: AtomicU64,
    measure_from_ns: AtomicU64,
    end_ns: AtomicU64,
    /// Deliveries due so far (all messages), for the closed loop and drain.
    expected_all: AtomicU64,
    delivered_all: AtomicU64,
    stop: AtomicBool,
    /// When the connect storm began, ns since origin (0 = no storm yet).
    storm_from_ns: AtomicU64,
    /// When its last connection was done (`u64::MAX` until then).
    storm_until_ns: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

fn main() {
    let args: Args = argh::from_env();
    exit::exit_on_error("stress", run(args));
}

fn run(args: Args) -> Result<(), String> {
    if args.clients == 0
        || args.channels == 0
        || args.publishers > args.clients
        || args.threads == 0
        || args.sample_every == 0
    {
        return Err(
            "need clients >= 1, channels >= 1, threads >= 1, sample-every >= 1, publishers <= clients"
                .into(),
        );
    }
    let target = Target::parse(&args.url)?;
    let publish_target = match &args.publish_url {
        Some(url) => Target::parse(url)?,
        None => target.clone(),
    };
    let storm_target = match &args.storm_url {
        Some(url) => Target::parse(url)?,
        None => target.clone(),
    };
    if args.connect_storm > 0 && !(args.storm_at >= 0.0 && args.storm_at < args.duration) {
        return Err("--storm-at must fall inside the window (0 <= storm-at < duration)".into());
    }
    if args.positions && target.scheme.family() != "ws" {
        return Err("--positions is an EaseChat extension: it needs a ws:// or wss:// URL".into());
    }
    if publish_target.scheme.family() != target.scheme.family() {
        return Err("--publish-url must speak the protocol of --url".into());
    }
    if args.connect_storm > 0 && storm_target.scheme.family() != "ws" {
        return Err("a connect storm (--storm-url, else --url) speaks ws:// or wss://".into());
    }
    let any_wss = [&target, &publish_target]
        .into_iter()
        .chain((args.connect_storm > 0).then_some(&storm_target))
        .any(|t| t.scheme == Scheme::Wss);
    let tls = match (&args.ca, any_wss) {
        (Some(ca), _) => Some(transport::client_config(ca)?),
        (None, true) => return Err("a wss:// URL needs --ca FILE (the CA to trust)".into()),
        (None, false) => None,
    };
    raise_nofile();
    let mut subscribers_on = vec![0u64; args.channels];
    let mut sampled_on = vec![0u64; args.channels];
    for i in 0..args.clients {
        subscribers_on[i % args.channels] += 1;
        if is_sampled(i, &args) {
            sampled_on[i % args.channels] += 1;
        }
    }
    let plan = Plan {
        target,
        publish_target,
        tls: tls.clone(),
        prefix: args
            .name_prefix
            .clone()
            .unwrap_or_else(|| format!("stress-{}", std::process::id())),
        subscribers_on,
        sampled_on,
        rate_per_publisher: if args.publishers == 0 {
            0.0
        } else {
            args.target_rate / args.publishers as f64
        },
        in_flight: args.in_flight.unwrap_or(32 * args.clients as u64).max(1),
        args: args.clone(),
    };
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        ready: AtomicUsize::new(0),
        start_ns: AtomicU64::new(0),
        measure_from_ns: AtomicU64::new(0),
        end_ns: AtomicU64::new(0),
        expected_all: AtomicU64::new(0),
        delivered_all: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        storm_from_ns: AtomicU64::new(0),
        storm_until_ns: AtomicU64::new(u64::MAX),
    });
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let plan = plan.clone();
        let shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("stress-{t}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, worker(t, plan, shared))
            })
            .map_err(|e| e.to_string())?;
        handles.push(handle);
    }

    // Connect phase.
    let connect_started = Instant::now();
    while shared.ready.load(Ordering::Acquire) < args.threads {
        std::thread::sleep(Duration::from_millis(5));
    }
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    eprintln!(
        "stress: {} connections open in {connect_seconds:.2} s",
        args.clients
    );

    // Timeline, then the measured window.
    let Window {
        start,
        measure_from,
        end,
    } = Window::new(shared.now_ns(), 50_000_000, args.warmup, args.duration);
    shared
        .measure_from_ns
        .store(measure_from, Ordering::Release);
    shared.end_ns.store(end, Ordering::Release);
    shared.start_ns.store(start, Ordering::Release);
    let storm = if args.connect_storm > 0 {
        let plan = storm::StormPlan {
            connections: args.connect_storm,
            target: storm_target,
            start_ns: measure_from + (args.storm_at * 1e9) as u64,
            timeout: Duration::from_secs_f64(args.storm_timeout),
        };
        Some(storm::spawn(plan, tls, shared.clone())?)
    } else {
        None
    };
    sleep_until(&shared, measure_from);
    let cpu_before = cpu_seconds();
    let window_start_unix = unix_seconds();
    sleep_until(&shared, end);
    let cpu_used = cpu_seconds() - cpu_before;
    let window_end_unix = unix_seconds();
    let storm = match storm {
        Some(handle) => Some(
            handle
                .join()
                .map_err(|_| "the storm's thread panicked".to_string())?,
        ),
        None => None,
    };
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline
        && shared.delivered_all.load(Ordering::Acquire)
            < shared.expected_all.load(Ordering::Acquire)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.stop.store(true, Ordering::Release);

    let mut total = Tally::new();
    for handle in handles {
        let tally = handle
            .join()
            .map_err(|_| "a worker thread panicked".to_string())?;
        total.merge(&tally);
    }
    let info = RunInfo {
        settings: vec![
            ("url", args.url.clone()),
            ("publish_url", args.publish_url.clone().unwrap_or_default()),
            ("clients", args.clients.to_string()),
            ("publishers", args.publishers.to_string()),
            ("channels", args.channels.to_string()),
            ("duration", args.duration.to_string()),
            ("warmup", args.warmup.to_string()),
            ("message_size", args.message_size.to_string()),
            ("target_rate", args.target_rate.to_string()),
            ("threads", args.threads.to_string()),
            ("connect_storm", args.connect_storm.to_string()),
            ("storm_url", args.storm_url.clone().unwrap_or_default()),
            ("sample_every", args.sample_every.to_string()),
            ("positions", args.positions.to_string()),
        ],
        sampled_receivers: plan.sampled_on.iter().sum::<u64>(),
        expected_all: shared.expected_all.load(Ordering::Acquire),
        delivered_all: shared.delivered_all.load(Ordering::Acquire),
        connect_seconds,
        window_seconds: args.duration,
        window_unix: (window_start_unix, window_end_unix),
        cpu_seconds: cpu_used,
        storm,
    };
    print!("{}", report::summary(&total, &info));
    if let Some(path) = &args.json {
        std::fs::write(path, report::json(&total, &info)).map_err(|e| format!("{path}: {e}"))?;
    }
    let distribution = hgrm::hgrm(&total.latency);
    if let Some(path) = &args.hgrm {
        std::fs::write(path, &distribution).map_err(|e| format!("{path}: {e}"))?;
    }
    let storm_failed = info.storm.as_ref().map_or(0, |s| s.failed());
    if total.lost() > 0
        || info.lost_all() > 0
        || info.extra_all() > 0
        || total.out_of_order > 0
        || total.offset_errors > 0
        || total.echoes > 0
        || total.receivers_mismatched > 0
        || total.connect_errors > 0
        || total.closed > 0
        || storm_failed > 0
    {
        eprintln!(
            "stress: FAILED: lost {} (sample, window) / {} (all), extra {}, out of order {}, position gaps or repeats {}, \
             own messages received {}, publishes reaching another number of receivers {}, connect errors {}, closed {}, \
             storm connections failed {storm_failed}",
            total.lost(),
            info.lost_all(),
            info.extra_all(),
            total.out_of_order,
            total.offset_errors,
            total.echoes,
            total.receivers_mismatched,
            total.connect_errors,
            total.closed
        );
        std::process::exit(1);
    }
    Ok(())
}

/// Whether client `index` checks every delivery: every `--sample-every`th
/// subscriber of each channel (client i is the i / channels-th of channel
/// i mod channels), so that every channel has its share of the sample.
fn is_sampled(index: usize, args: &Args) -> bool {
    (index / args.channels).is_multiple_of(args.sample_every)
}

/// Lets this process hold thousands of sockets (a storm, 10,000 clients).
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn sleep_until(shared: &Shared, ns: u64) {
    let now = shared.now_ns();
    if ns > now {
        std::thread::sleep(Duration::from_nanos(ns - now));
    }
}

/// Wall-clock seconds since the Unix epoch, so scripts can line the
/// measured window up with their own samples of the server's CPU time.
fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// User + system CPU seconds this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What every client task of one thread shares.
#[derive(Clone)]
struct Common {
    plan: Rc<Plan>,
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
    /// The thread's read buffer: a client borrows it only between a
    /// readiness wake-up and the frames it read, so idle connections cost
    /// no read buffer.
    scratch: Rc<RefCell<Vec<u8>>>,
    tls: Tls,
    permits: Rc<Semaphore>,
    connected: Rc<RefCell<usize>>,
    /// Every connection's goodbye, sent at the end.
    goodbyes: Rc<RefCell<Vec<Goodbye>>>,
    /// The publishing tasks (and the readers of publishing connections of
    /// their own).
    publishers: Rc<RefCell<Vec<tokio::task::JoinHandle<()>>>>,
}

/// A connection's goodbye, ready to send (whatever its connection's type).
type Goodbye = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>>>;

async fn worker(thread: usize, plan: Plan, shared: Arc<Shared>) -> Tally {
    let common = Common {
        permits: Rc::new(Semaphore::new(
            (plan.args.connect_parallel / plan.args.threads).max(1),
        )),
        tls: Tls::new(plan.tls.clone()),
        plan: Rc::new(plan),
        shared,
        tally: Rc::new(RefCell::new(Tally::new())),
        scratch: Rc::new(RefCell::new(vec![0u8; 64 * 1024])),
        connected: Rc::new(RefCell::new(0usize)),
        goodbyes: Rc::new(RefCell::new(Vec::new())),
        publishers: Rc::new(RefCell::new(Vec::new())),
    };
    let plan = common.plan.clone();
    let mine: Vec<usize> = (0..plan.args.clients)
        .filter(|i| i % plan.args.threads == thread)
        .collect();
    let total = mine.len();
    let mut tasks = Vec::new();
    for index in mine {
        let target = if index < plan.args.publishers {
            &plan.publish_target
        } else {
            &plan.target
        };
        // One branch per client, then a task specialised for its transport
        // and protocol.
        let c = common.clone();
        tasks.push(match target.scheme {
            Scheme::Ws => tokio::task::spawn_local(client::<Plain, proto::Ws>(index, c)),
            Scheme::Wss => tokio::task::spawn_local(client::<Secure, proto::Ws>(index, c)),
            Scheme::Redis => tokio::task::spawn_local(client::<Plain, proto::Resp>(index, c)),
            Scheme::Nats => tokio::task::spawn_local(client::<Plain, proto::Nats>(index, c)),
        });
    }
    while *common.connected.borrow() < total {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    common.shared.ready.fetch_add(1, Ordering::AcqRel);
    // At the end every connection says goodbye and the server closes it,
    // which ends its reader.
    while !common.shared.stop.load(Ordering::Acquire) {
        tokio::time::sleep(STOP_POLL).await;
    }
    let all: Vec<Goodbye> = common.goodbyes.borrow_mut().drain(..).collect();
    for goodbye in all {
        goodbye().await;
    }
    for task in tasks {
        let _ = task.await;
    }
    let publishing: Vec<_> = common.publishers.borrow_mut().drain(..).collect();
    for task in publishing {
        let _ = task.await;
    }
    let Common { tally, .. } = common;
    Rc::try_unwrap(tally).expect("all tasks done").into_inner()
}

/// A connection's halves and the bytes read past its handshake.
type Opened<T> = (<T as Transport>::Recv, <T as Transport>::Send, Vec<u8>);

/// Who a receiving connection is.
#[derive(Debug, Clone, Copy)]
struct Receiver {
    /// Its client's index (the publisher index its own texts carry).
    index: u32,
    /// Whether it checks every delivery (else it counts them).
    sampled: bool,
    /// Whether it asked for positions (`--positions`).
    positions: bool,
    /// Whether its client publishes (its own messages are not delivered to
    /// it, so its positions skip them).
    publishes: bool,
}

/// One client: connects (at most `--connect-parallel` at once), publishes
/// if it is one of the first `--publishers`, and receives until the end.
async fn client<T: Transport, P: Protocol>(index: usize, common: Common) {
    let Common {
        plan,
        shared,
        tally,
        scratch,
        tls,
        permits,
        connected,
        goodbyes,
        publishers,
    } = common;
    let publishes = index < plan.args.publishers;
    let opened = {
        let _permit = permits.acquire().await.expect("semaphore open");
        let started = Instant::now();
        let result = match connect::<T, P>(&plan, &tls, &scratch, index).await {
            Ok(subscribed) if publishes && P::SEPARATE_PUBLISHER => {
                match P::open::<T>(&plan.publish_target, &tls, &scratch).await {
                    Ok(publishing) => Ok((subscribed, Some(publishing))),
                    Err(e) => Err(format!("publishing connection: {e}")),
                }
            }
            Ok(subscribed) => Ok((subscribed, None)),
            Err(e) => Err(e),
        };
        *connected.borrow_mut() += 1;
        match result {
            Ok(c) => {
                let _ = tally
                    .borrow_mut()
                    .connect
                    .record(started.elapsed().as_nanos() as u64);
                Some(c)
            }
            Err(e) => {
                eprintln!("stress: client {index}: {e}");
                tally.borrow_mut().connect_errors += 1;
                None
            }
        }
    };
    let Some(((reader, writer, leftover), own_publishing)) = opened else {
        return;
    };
    let writer: Writer<T::Send> = Rc::new(Mutex::new(writer));
    add_goodbye::<P, _>(&goodbyes, writer.clone());
    if publishes {
        let task = match own_publishing {
            Some::<Opened<T>>((replies_in, publishing, leftover)) => {
                let publishing: Writer<T::Send> = Rc::new(Mutex::new(publishing));
                add_goodbye::<P, _>(&goodbyes, publishing.clone());
                let dues = Dues::default();
                publishers
                    .borrow_mut()
                    .push(tokio::task::spawn_local(replies::<P, _>(
                        replies_in,
                        leftover,
                        dues.clone(),
                        shared.clone(),
                        tally.clone(),
                        scratch.clone(),
                    )));
                tokio::task::spawn_local(publish::<P, _>(
                    index,
                    publishing,
                    Some(dues),
                    plan.clone(),
                    shared.clone(),
                    tally.clone(),
                ))
            }
            None => tokio::task::spawn_local(publish::<P, _>(
                index,
                writer.clone(),
                None,
                plan.clone(),
                shared.clone(),
                tally.clone(),
            )),
        };
        publishers.borrow_mut().push(task);
    }
    let me = Receiver {
        index: index as u32,
        sampled: is_sampled(index, &plan.args),
        positions: plan.args.positions,
        publishes,
    };
    receive::<P, _, _>(reader, writer, leftover, me, shared, tally, scratch).await;
}

/// A connection's write half, shared by its publisher (if any), its reader
/// (pongs) and the worker (the goodbye).
type Writer<W> = Rc<Mutex<W>>;

/// The receivers each publish of a publishing connection of its own is
/// due to reach, in order, until the server's reply says how many it did.
type Dues = Rc<RefCell<VecDeque<u64>>>;

fn add_goodbye<P: Protocol, W: SendHalf>(goodbyes: &RefCell<Vec<Goodbye>>, writer: Writer<W>) {
    goodbyes.borrow_mut().push(Box::new(move || {
        Box::pin(async move {
            let _ = say_goodbye::<P, W>(&writer).await;
        })
    }));
}

async fn say_goodbye<P: Protocol, W: SendHalf>(writer: &Writer<W>) -> std::io::Result<()> {
    let mut writer = writer.lock().await;
    match P::goodbye() {
        Some(bye) => writer.send(&bye).await,
        None => writer.shutdown().await,
    }
}

/// The channels client `index` subscribes to: `bench/C` for its channel C,
/// and where the server would deliver a publisher's texts back to it
/// (Redis), each other publisher's own name for C (see `proto`).
fn subscriptions(plan: &Plan, index: usize, echoes: bool) -> Vec<String> {
    let channels = plan.args.channels;
    let own = index % channels;
    let mut names = vec![format!("bench/{own}")];
    if echoes {
        names.extend(
            (0..plan.args.publishers)
                .filter(|&q| q % channels == own && q != index)
                .map(|q| format!("bench/{own}/p{q}")),
        );
    }
    names
}

/// Opens, upgrades (ws), names the connection and subscribes; for a
/// protocol that confirms subscriptions, waits for the confirmation.
/// Returns the stream halves and any bytes read past the handshake.
async fn connect<T: Transport, P: Protocol>(
    plan: &Plan,
    tls: &Tls,
    scratch: &RefCell<Vec<u8>>,
    index: usize,
) -> Result<Opened<T>, String> {
    let target = if index < plan.args.publishers {
        &plan.publish_target
    } else {
        &plan.target
    };
    let (mut reader, mut writer, leftover) = P::open::<T>(target, tls, scratch).await?;
    let name = format!("{}-{index}", plan.prefix);
    let mut hello = Vec::new();
    let confirmations = P::subscribe(
        &mut hello,
        &name,
        &subscriptions(plan, index, P::ECHOES),
        plan.args.positions,
    );
    writer.send(&hello).await.map_err(|e| e.to_string())?;
    let leftover = if confirmations > 0 {
        await_ready::<P, _, _>(&mut reader, &mut writer, leftover, confirmations, scratch).await?
    } else {
        leftover
    };
    Ok((reader, writer, leftover))
}

/// Reads until `wanted` [`Event::Ready`]s came (answering pings); returns
/// the bytes after them.
async fn await_ready<P: Protocol, R: RecvHalf, W: SendHalf>(
    reader: &mut R,
    writer: &mut W,
    mut pending: Vec<u8>,
    mut wanted: usize,
    scratch: &RefCell<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    loop {
        let mut used = 0;
        let mut pongs = Vec::new();
        while wanted > 0 {
            let Some((event, len)) = P::next(&pending[used..]) else {
                break;
            };
            match event {
                Event::Ready => wanted -= 1,
                Event::Ping(payload) => P::push_pong(&mut pongs, payload),
                Event::Close(code, text) => {
                    return Err(format!(
                        "closed while subscribing: {code:?} {}",
                        String::from_utf8_lossy(text)
                    ))
                }
                // Nothing is published before every client is ready; if
                // it were, the receiver counts it.
                Event::Delivery(_) => {
                    wanted = 0;
                    break;
                }
                Event::Receivers(_) | Event::Other => {}
            }
            used += len;
        }
        pending.drain(..used);
        if !pongs.is_empty() {
            writer.send(&pongs).await.map_err(|e| e.to_string())?;
        }
        if wanted == 0 {
            return Ok(pending);
        }
        reader.readable().await.map_err(|e| e.to_string())?;
        let buf = &mut *scratch.borrow_mut();
        match reader.try_read(&mut buf[..]) {
            Ok(0) => return Err("closed while subscribing".into()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn publish<P: Protocol, W: SendHalf>(
    index: usize,
    stream: Writer<W>,
    dues: Option<Dues>,
    plan: Rc<Plan>,
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
) {
    let channels = plan.args.channels;
    let own_channel = index % channels;
    let names: Vec<String> = (0..channels)
        .map(|c| {
            if P::ECHOES && c == own_channel {
                format!("bench/{c}/p{index}")
            } else {
                format!("bench/{c}")
            }
        })
        .collect();
    let self_sampled = u64::from(is_sampled(index, &plan.args));
    let mut seqs = vec![0u64; channels];
    let mut next_channel = index % channels;
    let mut batch = Vec::with_capacity(64 * 1024);
    while shared.start_ns.load(Ordering::Acquire) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Publishers are spread over the interval between two messages of one
    // publisher, so the aggregate rate is even rather than bursts of
    // `--publishers` messages at the same instant.
    let phase = if plan.rate_per_publisher > 0.0 {
        (1e9 / plan.rate_per_publisher * index as f64 / plan.args.publishers as f64) as u64
    } else {
        0
    };
    let start = shared.start_ns.load(Ordering::Acquire) + phase;
    let measure_from = shared.measure_from_ns.load(Ordering::Acquire);
    let end = shared.end_ns.load(Ordering::Acquire);
    let now = shared.now_ns();
    if start > now {
        tokio::time::sleep(Duration::from_nanos(start - now)).await;
    }
    let mut sent: u64 = 0;
    loop {
        let now = shared.now_ns();
        if now >= end || shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let n = if plan.rate_per_publisher > 0.0 {
            let due = ((now - start) as f64 * plan.rate_per_publisher / 1e9) as u64 + 1;
            if due <= sent {
                // tokio's timer has millisecond resolution: sleep until the
                // next due message, at least 1 ms, and send what came due.
                let next_due = start + ((sent as f64) * 1e9 / plan.rate_per_publisher) as u64;
                let wait = next_due.saturating_sub(shared.now_ns()).max(1_000_000);
                tokio::time::sleep(Duration::from_nanos(wait)).await;
                continue;
            }
            (due - sent).min(256)
        } else {
            let in_flight = shared
                .expected_all
                .load(Ordering::Acquire)
                .saturating_sub(shared.delivered_all.load(Ordering::Acquire));
            if in_flight >= plan.in_flight {
                tokio::time::sleep(Duration::from_micros(50)).await;
                continue;
            }
            16
        };
        batch.clear();
        let mut due_deliveries = 0;
        let (mut counted_publishes, mut counted_deliveries) = (0, 0);
        for _ in 0..n {
            let channel = next_channel;
            next_channel = (next_channel + 1) % channels;
            let sent_ns = shared.now_ns();
            let stamp = Stamp {
                publisher: index as u32,
                channel: channel as u32,
                seq: seqs[channel],
                sent_ns,
            };
            seqs[channel] += 1;
            P::push_publish(&mut batch, &names[channel], stamp, plan.args.message_size);
            let own = u64::from(channel == own_channel);
            let due = plan.subscribers_on[channel] - own;
            due_deliveries += due;
            if let Some(dues) = &dues {
                dues.borrow_mut().push_back(due);
            }
            if sent_ns >= measure_from && sent_ns < end {
                counted_publishes += 1;
                counted_deliveries += plan.sampled_on[channel] - own * self_sampled;
            }
        }
        sent += n;
        shared
            .expected_all
            .fetch_add(due_deliveries, Ordering::AcqRel);
        {
            let mut t = tally.borrow_mut();
            t.published += counted_publishes;
            t.expected += counted_deliveries;
        }
        if stream.lock().await.send(&batch).await.is_err() {
            return;
        }
    }
}

/// Reads a publishing connection of its own (Redis): every reply says how
/// many receivers a publish reached, checked against how many it was due.
async fn replies<P: Protocol, R: RecvHalf>(
    mut stream: R,
    mut pending: Vec<u8>,
    dues: Dues,
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
    scratch: Rc<RefCell<Vec<u8>>>,
) {
    loop {
        let mut used = 0;
        {
            let mut t = tally.borrow_mut();
            let mut dues = dues.borrow_mut();
            while let Some((event, len)) = P::next(&pending[used..]) {
                used += len;
                match event {
                    Event::Receivers(n) => {
                        t.receivers_checked += 1;
                        if dues.pop_front() != Some(n) {
                            t.receivers_mismatched += 1;
                        }
                    }
                    Event::Close(code, text) => {
                        eprintln!(
                            "stress: the server answered a publishing connection with {code:?} {}",
                            String::from_utf8_lossy(text)
                        );
                        t.closed += 1;
                        return;
                    }
                    _ => {}
                }
            }
        }
        pending.drain(..used);
        if stream.readable().await.is_err() {
            tally.borrow_mut().closed += 1;
            return;
        }
        let buf = &mut *scratch.borrow_mut();
        match stream.try_read(&mut buf[..]) {
            Ok(0) => {
                if !shared.stop.load(Ordering::Acquire) {
                    tally.borrow_mut().closed += 1;
                }
                return;
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                tally.borrow_mut().closed += 1;
                return;
            }
        }
    }
}

async fn receive<P: Protocol, R: RecvHalf, W: SendHalf>(
    mut stream: R,
    writer: Writer<W>,
    mut pending: Vec<u8>,
    me: Receiver,
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
    scratch: Rc<RefCell<Vec<u8>>>,
) {
    let mut seen = Seen::default();
    let mut pongs = Vec::new();
    // The receiver's kind is chosen once per wake-up, not per message.
    let consume = if me.sampled {
        consume::<P, true>
    } else {
        consume::<P, false>
    };
    loop {
        if !pending.is_empty() {
            match consume(&pending, me, &shared, &tally, &mut seen, &mut pongs) {
                Some(used) => {
                    pending.drain(..used);
                }
                None => return,
            }
        }
        if !pongs.is_empty() {
            // Answer the server's keepalive pings, as any client does.
            let _ = writer.lock().await.send(&pongs).await;
            pongs.clear();
        }
        // Wait for readiness without holding a buffer, then read into the
        // thread's shared scratch: idle connections cost no read buffer.
        if stream.readable().await.is_err() {
            tally.borrow_mut().closed += 1;
            return;
        }
        let buf = &mut *scratch.borrow_mut();
        let n = match stream.try_read(&mut buf[..]) {
            Ok(0) => {
                if !shared.stop.load(Ordering::Acquire) {
                    tally.borrow_mut().closed += 1;
                }
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                tally.borrow_mut().closed += 1;
                return;
            }
        };
        if pending.is_empty() {
            match consume(&buf[..n], me, &shared, &tally, &mut seen, &mut pongs) {
                Some(used) => pending.extend_from_slice(&buf[used..n]),
                None => return,
            }
        } else {
            pending.extend_from_slice(&buf[..n]);
        }
    }
}

/// What a sampled receiver saw last.
#[derive(Debug, Default)]
struct Seen {
    /// The last sequence number per (publisher, channel).
    seq: HashMap<(u32, u32), u64>,
    /// The last position per channel (`--positions`).
    offset: HashMap<u32, u64>,
}

/// Handles every complete unit at the start of `buf`; returns the bytes
/// used, or `None` when the server closed the connection. `FULL`: read
/// every delivery's stamp (and position) and check it (the sample);
/// otherwise count deliveries by their headers.
fn consume<P: Protocol, const FULL: bool>(
    buf: &[u8],
    me: Receiver,
    shared: &Shared,
    tally: &RefCell<Tally>,
    seen: &mut Seen,
    pongs: &mut Vec<u8>,
) -> Option<usize> {
    let Seen {
        seq: last_seq,
        offset: last_offset,
    } = seen;
    let now = shared.now_ns();
    let measure_from = shared.measure_from_ns.load(Ordering::Relaxed);
    let end = shared.end_ns.load(Ordering::Relaxed);
    let storm_from = shared.storm_from_ns.load(Ordering::Relaxed);
    let storm_until = shared.storm_until_ns.load(Ordering::Relaxed);
    let mut t = tally.borrow_mut();
    let mut used = 0;
    let mut delivered = 0;
    let mut open = true;
    while let Some((event, len)) = P::next(&buf[used..]) {
        used += len;
        match event {
            Event::Delivery(_) if !FULL => delivered += 1,
            Event::Delivery(body) => {
                let Some((stamp, offset)) = P::stamp(body, me.positions) else {
                    continue;
                };
                delivered += 1;
                if let Some(offset) = offset {
                    t.positional += 1;
                    // Contiguous for a receiver that does not publish;
                    // increasing for one that does (its own are skipped).
                    match last_offset.insert(stamp.channel, offset) {
                        Some(prev) if offset <= prev => t.offset_errors += 1,
                        Some(prev) if !me.publishes && offset != prev + 1 => t.offset_errors += 1,
                        _ => {}
                    }
                }
                if stamp.publisher == me.index {
                    t.echoes += 1;
                }
                let key = (stamp.publisher, stamp.channel);
                match last_seq.get(&key) {
                    Some(&last) if stamp.seq <= last => t.out_of_order += 1,
                    _ => {
                        last_seq.insert(key, stamp.seq);
                    }
                }
                if stamp.sent_ns >= measure_from && stamp.sent_ns < end && measure_from > 0 {
                    t.delivered += 1;
                    let latency = now.saturating_sub(stamp.sent_ns).max(1_000);
                    let _ = t.latency.record(latency);
                    if storm_from > 0 && stamp.sent_ns >= storm_from && stamp.sent_ns <= storm_until
                    {
                        let _ = t.storm_latency.record(latency);
                    }
                }
            }
            Event::Close(code, text) => {
                if !shared.stop.load(Ordering::Acquire) {
                    eprintln!(
                        "stress: the server closed a connection: {code:?} {}",
                        String::from_utf8_lossy(text)
                    );
                    t.closed += 1;
                }
                open = false;
                break;
            }
            Event::Ping(payload) => P::push_pong(pongs, payload),
            Event::Ready | Event::Receivers(_) | Event::Other => {}
        }
    }
    shared.delivered_all.fetch_add(delivered, Ordering::AcqRel);
    if measure_from > 0 && now >= measure_from && now < end {
        t.arrived += delivered;
    }
    open.then_some(used)
}

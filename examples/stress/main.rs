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
//! ```sh
//! cargo run --release --example stress -- --url ws://127.0.0.1:6500 --clients 350 \
//!     --publishers 10 --channels 10 --target-rate 3500 --duration 30
//! ```

mod exit;
mod hgrm;
mod payload;
mod report;
mod window;
mod ws;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;
use easechat_protocol::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};

use payload::Stamp;
use report::{RunInfo, Tally};
use window::Window;
use ws::Incoming;

/// Load generator for EaseChat Nexus (see the module docs).
#[derive(FromArgs, Debug, Clone)]
struct Args {
    /// nexus URL (default ws://127.0.0.1:6500)
    #[argh(option, default = "String::from(\"ws://127.0.0.1:6500\")")]
    url: String,
    /// where the publishing clients connect instead of --url (a cluster
    /// run: publish on one node, subscribe on another)
    #[argh(option)]
    publish_url: Option<String>,
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
    /// write the results as JSON here
    #[argh(option)]
    json: Option<String>,
    /// write the latency percentile distribution (.hgrm) here
    #[argh(option)]
    hgrm: Option<String>,
    /// name prefix for this run's clients (default stress-<pid>)
    #[argh(option)]
    name_prefix: Option<String>,
}

/// How long to wait after the window for in-flight deliveries.
const DRAIN: Duration = Duration::from_secs(5);
/// How often idle readers look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Every client's subscription TTL (as the Java client's), longer than a run.
const SUBSCRIPTION_TTL: Duration = Duration::from_secs(600);

/// Everything a worker thread needs to know, fixed for the run.
#[derive(Debug, Clone)]
struct Plan {
    args: Args,
    addr: SocketAddr,
    host_port: String,
    path: String,
    /// Where publishers connect: `--publish-url`, else the same as above.
    publish_target: (SocketAddr, String, String),
    prefix: String,
    /// Subscribers per channel.
    subscribers_on: Vec<u64>,
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
    {
        return Err("need clients >= 1, channels >= 1, threads >= 1, publishers <= clients".into());
    }
    let (addr, host_port, path) = parse_url(&args.url)?;
    let publish_target = match &args.publish_url {
        Some(url) => parse_url(url)?,
        None => (addr, host_port.clone(), path.clone()),
    };
    let mut subscribers_on = vec![0u64; args.channels];
    for i in 0..args.clients {
        subscribers_on[i % args.channels] += 1;
    }
    let plan = Plan {
        addr,
        host_port,
        path,
        publish_target,
        prefix: args
            .name_prefix
            .clone()
            .unwrap_or_else(|| format!("stress-{}", std::process::id())),
        subscribers_on,
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
    sleep_until(&shared, measure_from);
    let cpu_before = cpu_seconds();
    let window_start_unix = unix_seconds();
    sleep_until(&shared, end);
    let cpu_used = cpu_seconds() - cpu_before;
    let window_end_unix = unix_seconds();
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
            ("clients", args.clients.to_string()),
            ("publishers", args.publishers.to_string()),
            ("channels", args.channels.to_string()),
            ("duration", args.duration.to_string()),
            ("warmup", args.warmup.to_string()),
            ("message_size", args.message_size.to_string()),
            ("target_rate", args.target_rate.to_string()),
            ("threads", args.threads.to_string()),
        ],
        connect_seconds,
        window_seconds: args.duration,
        window_unix: (window_start_unix, window_end_unix),
        cpu_seconds: cpu_used,
    };
    print!("{}", report::summary(&total, &info));
    if let Some(path) = &args.json {
        std::fs::write(path, report::json(&total, &info)).map_err(|e| format!("{path}: {e}"))?;
    }
    let distribution = hgrm::hgrm(&total.latency);
    if let Some(path) = &args.hgrm {
        std::fs::write(path, &distribution).map_err(|e| format!("{path}: {e}"))?;
    }
    if total.lost() > 0 || total.out_of_order > 0 || total.connect_errors > 0 || total.closed > 0 {
        eprintln!(
            "stress: FAILED: lost {}, out of order {}, connect errors {}, closed {}",
            total.lost(),
            total.out_of_order,
            total.connect_errors,
            total.closed
        );
        std::process::exit(1);
    }
    Ok(())
}

/// `ws://host:port/path` into the address, `host:port` and path.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or(format!("{url}: a URL must start with ws://"))?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    };
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("{host_port}: {e}"))?
        .next()
        .ok_or("no address")?;
    Ok((addr, host_port, path))
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

async fn worker(thread: usize, plan: Plan, shared: Arc<Shared>) -> Tally {
    let plan = Rc::new(plan);
    let tally = Rc::new(RefCell::new(Tally::new()));
    let scratch = Rc::new(RefCell::new(vec![0u8; 64 * 1024]));
    let permits = Rc::new(Semaphore::new(
        (plan.args.connect_parallel / plan.args.threads).max(1),
    ));
    let mine: Vec<usize> = (0..plan.args.clients)
        .filter(|i| i % plan.args.threads == thread)
        .collect();
    let connected = Rc::new(RefCell::new(0usize));
    // Every client's write half, to say `1d` at the end.
    let writers: Rc<RefCell<Vec<Writer>>> = Rc::new(RefCell::new(Vec::new()));
    let publishers: Rc<RefCell<Vec<tokio::task::JoinHandle<()>>>> =
        Rc::new(RefCell::new(Vec::new()));
    let total = mine.len();
    let mut tasks = Vec::new();
    for index in mine {
        let (plan, shared, tally, scratch, permits, connected, writers, publishers) = (
            plan.clone(),
            shared.clone(),
            tally.clone(),
            scratch.clone(),
            permits.clone(),
            connected.clone(),
            writers.clone(),
            publishers.clone(),
        );
        tasks.push(tokio::task::spawn_local(async move {
            let opened = {
                let _permit = permits.acquire().await.expect("semaphore open");
                let started = Instant::now();
                let result = connect(&plan, index).await;
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
            let Some((reader, writer, leftover)) = opened else {
                return;
            };
            let writer: Writer = Rc::new(Mutex::new(writer));
            writers.borrow_mut().push(writer.clone());
            if index < plan.args.publishers {
                publishers
                    .borrow_mut()
                    .push(tokio::task::spawn_local(publish(
                        index,
                        writer.clone(),
                        plan.clone(),
                        shared.clone(),
                        tally.clone(),
                    )));
            }
            receive(reader, writer, leftover, shared, tally, scratch).await;
        }));
    }
    while *connected.borrow() < total {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    shared.ready.fetch_add(1, Ordering::AcqRel);
    // At the end every client says `1d` and the nexus closes it, which ends
    // its reader.
    while !shared.stop.load(Ordering::Acquire) {
        tokio::time::sleep(STOP_POLL).await;
    }
    let all: Vec<Writer> = writers.borrow_mut().drain(..).collect();
    for writer in all {
        let _ = say_goodbye(&writer).await;
    }
    for task in tasks {
        let _ = task.await;
    }
    let publishing: Vec<_> = publishers.borrow_mut().drain(..).collect();
    for task in publishing {
        let _ = task.await;
    }
    Rc::try_unwrap(tally).expect("all tasks done").into_inner()
}

/// A connection's write half, shared by its publisher (if any), its reader
/// (pongs) and the worker (the final `1d`).
type Writer = Rc<Mutex<OwnedWriteHalf>>;

async fn say_goodbye(writer: &Writer) -> std::io::Result<()> {
    let mut bye = Vec::new();
    ws::push_message(&mut bye, Message::Disconnect { reason: "done" });
    writer.lock().await.write_all(&bye).await
}

/// Opens, upgrades, says `1h` and subscribes; returns the stream halves and
/// any bytes that followed the upgrade response.
async fn connect(
    plan: &Plan,
    index: usize,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, Vec<u8>), String> {
    let (addr, host_port, path) = if index < plan.args.publishers {
        (
            plan.publish_target.0,
            &plan.publish_target.1,
            &plan.publish_target.2,
        )
    } else {
        (plan.addr, &plan.host_port, &plan.path)
    };
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    tcp.write_all(&ws::upgrade_request(host_port, path))
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 512];
    let used = loop {
        let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut chunk)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during upgrade".into());
        }
        response.extend_from_slice(&chunk[..n]);
        if let Some(used) = ws::parse_upgrade_response(&response).map_err(|e| e.to_string())? {
            break used;
        }
    };
    let name = format!("{}-{index}", plan.prefix);
    let channel = format!("bench/{}", index % plan.args.channels);
    let mut hello = Vec::new();
    ws::push_message(&mut hello, Message::Hello { name: &name });
    ws::push_message(
        &mut hello,
        Message::Subscribe {
            channel: &channel,
            ttl: SUBSCRIPTION_TTL,
        },
    );
    tcp.write_all(&hello).await.map_err(|e| e.to_string())?;
    let (reader, writer) = tcp.into_split();
    Ok((reader, writer, response.split_off(used)))
}

async fn publish(
    index: usize,
    stream: Writer,
    plan: Rc<Plan>,
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
) {
    let channels = plan.args.channels;
    let own_channel = index % channels;
    let names: Vec<String> = (0..channels).map(|c| format!("bench/{c}")).collect();
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
            let mut text = Vec::with_capacity(plan.args.message_size + 64);
            payload::write_transmit(&mut text, &names[channel], stamp, plan.args.message_size);
            ws::push_text_frame(&mut batch, &text);
            let due = plan.subscribers_on[channel] - u64::from(channel == own_channel);
            due_deliveries += due;
            if sent_ns >= measure_from && sent_ns < end {
                counted_publishes += 1;
                counted_deliveries += due;
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
        if stream.lock().await.write_all(&batch).await.is_err() {
            return;
        }
    }
}

async fn receive(
    stream: OwnedReadHalf,
    writer: Writer,
    mut pending: Vec<u8>,
    shared: Arc<Shared>,
    tally: Rc<RefCell<Tally>>,
    scratch: Rc<RefCell<Vec<u8>>>,
) {
    let mut last_seq: HashMap<(u32, u32), u64> = HashMap::new();
    let mut pongs = Vec::new();
    loop {
        if !pending.is_empty() {
            match consume(&pending, &shared, &tally, &mut last_seq, &mut pongs) {
                Some(used) => {
                    pending.drain(..used);
                }
                None => return,
            }
        }
        if !pongs.is_empty() {
            // Answer the nexus's keepalive pings, as any WebSocket client does.
            let _ = writer.lock().await.write_all(&pongs).await;
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
            match consume(&buf[..n], &shared, &tally, &mut last_seq, &mut pongs) {
                Some(used) => pending.extend_from_slice(&buf[used..n]),
                None => return,
            }
        } else {
            pending.extend_from_slice(&buf[..n]);
        }
    }
}

/// Handles every complete frame at the start of `buf`; returns the bytes
/// used, or `None` when the nexus closed the connection.
fn consume(
    buf: &[u8],
    shared: &Shared,
    tally: &RefCell<Tally>,
    last_seq: &mut HashMap<(u32, u32), u64>,
    pongs: &mut Vec<u8>,
) -> Option<usize> {
    let now = shared.now_ns();
    let measure_from = shared.measure_from_ns.load(Ordering::Relaxed);
    let end = shared.end_ns.load(Ordering::Relaxed);
    let mut t = tally.borrow_mut();
    let mut used = 0;
    let mut delivered = 0;
    while let Some((frame, len)) = ws::next_frame(&buf[used..]) {
        used += len;
        match frame {
            Incoming::Text(payload) => {
                let Some(stamp) = payload::parse_receive(payload) else {
                    continue;
                };
                delivered += 1;
                let key = (stamp.publisher, stamp.channel);
                match last_seq.get(&key) {
                    Some(&last) if stamp.seq <= last => t.out_of_order += 1,
                    _ => {
                        last_seq.insert(key, stamp.seq);
                    }
                }
                if stamp.sent_ns >= measure_from && stamp.sent_ns < end && measure_from > 0 {
                    t.delivered += 1;
                    let _ = t
                        .latency
                        .record(now.saturating_sub(stamp.sent_ns).max(1_000));
                }
            }
            Incoming::Close(code) => {
                if !shared.stop.load(Ordering::Acquire) {
                    eprintln!("stress: nexus closed a connection with {code:?}");
                    t.closed += 1;
                }
                shared.delivered_all.fetch_add(delivered, Ordering::AcqRel);
                return None;
            }
            Incoming::Ping(payload) => ws::push_pong_frame(pongs, payload),
            Incoming::Other => {}
        }
    }
    shared.delivered_all.fetch_add(delivered, Ordering::AcqRel);
    Some(used)
}

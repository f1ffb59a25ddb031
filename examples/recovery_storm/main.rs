//! `recovery_storm`: what history and recovery cost the nexus (issue 24),
//! measured from outside like any client sees it. Two modes:
//!
//! **`storm`**: `--clients` clients ask for positions (`1h` with the option
//! `positions`) and subscribe to `storm/C` (client i to channel i mod
//! `--channels`), a channel with history, while a v1 publisher publishes
//! `--rate` messages a second over the channels. Each cycle: the publisher
//! pauses until every client has everything; all clients drop their
//! connections at once (a network blip); the publisher publishes exactly
//! `--gap` more messages on each channel at the same rate, which a witness
//! per channel (a positions client that stays) confirms were numbered;
//! then all clients reconnect at once, each subscribing from its last
//! position (`1c` with offset and epoch), while the publisher goes on at
//! its steady rate. A client has recovered when it got its `1p` (status 1,
//! recovered) and every replayed message up to the `1p`'s offset: from
//! there on it is live. Measured per cycle: the time from the reconnect's
//! start until the last client recovered, each client's time, the nexus's
//! CPU over that window (`--server-pid`: the sum of its threads'
//! `/proc/PID/task/*/schedstat`, nanoseconds), its RSS sampled every 2 ms
//! in the window and its VmHWM. Every client checks every offset it gets,
//! across all cycles: +1 each time within the epoch, so any gap or
//! duplicate at a seam is counted; after the last cycle the publisher
//! pauses and every client must reach the channel's last offset. Exits 1
//! on any gap, duplicate, failed recovery, error or timeout.
//!
//! ```sh
//! ease_chat_nexus 127.0.0.1:6500 --cores 1 --history '*' &
//! cargo run --release --example recovery_storm -- storm --url ws://127.0.0.1:6500 \
//!     --clients 300 --gap 300 --rate 400 --cycles 3 --server-pid $!
//! ```
//!
//! **`retain`**: memory per retained message. One v1 publisher publishes
//! `--messages` texts of `--message-size` bytes over `--channels`
//! channels of a nexus that keeps all of them (`--history '*'` with large
//! `--history-size`, `--history-bytes`, `--history-total-bytes`), in
//! `--steps` steps; after each step it waits until `/metrics` (`--admin`)
//! shows them held and reads the nexus's VmRSS. Reports the RSS growth per
//! retained message and `easechat_history_bytes` per retained message.
//!
//! ```sh
//! ease_chat_nexus 127.0.0.1:6500 --cores 1 --admin 127.0.0.1:6590 --history '*' \
//!     --history-size 1000000 --history-bytes 1000000000 --history-total-bytes 4000000000 &
//! cargo run --release --example recovery_storm -- retain --url ws://127.0.0.1:6500 \
//!     --admin 127.0.0.1:6590 --messages 200000 --server-pid $!
//! ```

use std::cell::{Cell, RefCell};
use std::io::{Read as _, Write as _};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;
use easechat_protocol::{parse, Message as Wire, PositionStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use ws::Incoming;

// The load generator's minimal WebSocket client side.
#[path = "../stress/ws.rs"]
mod ws;

/// History and recovery under load (see the module docs).
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Storm(StormArgs),
    Retain(RetainArgs),
}

/// A reconnect storm with a gap: time until every client recovered.
#[derive(FromArgs, Clone)]
#[argh(subcommand, name = "storm")]
struct StormArgs {
    /// the nexus: ws://HOST:PORT[/PATH] (default ws://127.0.0.1:6500)
    #[argh(option, default = "String::from(\"ws://127.0.0.1:6500\")")]
    url: String,
    /// recovering clients (default 300)
    #[argh(option, default = "300")]
    clients: usize,
    /// channels storm/0 … (client i on channel i mod channels; default 1)
    #[argh(option, default = "1")]
    channels: usize,
    /// messages published on each channel while the clients are away
    /// (default 300)
    #[argh(option, default = "300")]
    gap: u64,
    /// messages per second over all channels, steady (default 400)
    #[argh(option, default = "400.0")]
    rate: f64,
    /// disconnect / reconnect cycles (default 3)
    #[argh(option, default = "3")]
    cycles: usize,
    /// seconds of steady publishing before each disconnect (default 1)
    #[argh(option, default = "1.0")]
    live: f64,
    /// seconds of steady publishing after every client recovered (default 0.5)
    #[argh(option, default = "0.5")]
    tail: f64,
    /// text bytes per message (default 64)
    #[argh(option, default = "64")]
    message_size: usize,
    /// the nexus's process id, for its CPU and memory (default: not measured)
    #[argh(option)]
    server_pid: Option<u32>,
    /// the nexus's admin address HOST:PORT (`--admin`), for the recovery
    /// counters of /metrics (default: not read)
    #[argh(option)]
    admin: Option<String>,
    /// seconds one phase may take before the run fails (default 30)
    #[argh(option, default = "30.0")]
    timeout: f64,
    /// connections opened at once when the clients first connect (the
    /// reconnect opens all at once; default 64)
    #[argh(option, default = "64")]
    connect_parallel: usize,
    /// channel name prefix (default storm/)
    #[argh(option, default = "String::from(\"storm/\")")]
    channel_prefix: String,
    /// client name prefix (default storm-<pid>)
    #[argh(option)]
    name_prefix: Option<String>,
    /// write the results as JSON here
    #[argh(option)]
    json: Option<String>,
}

/// Memory per retained message.
#[derive(FromArgs)]
#[argh(subcommand, name = "retain")]
struct RetainArgs {
    /// the nexus: ws://HOST:PORT[/PATH] (default ws://127.0.0.1:6500)
    #[argh(option, default = "String::from(\"ws://127.0.0.1:6500\")")]
    url: String,
    /// the nexus's admin address HOST:PORT (`--admin`), for /metrics
    #[argh(option)]
    admin: String,
    /// the nexus's process id, for its VmRSS
    #[argh(option)]
    server_pid: u32,
    /// messages to publish and keep (default 200000)
    #[argh(option, default = "200_000")]
    messages: u64,
    /// messages published (and kept) before the first reading, so that
    /// the first allocations do not count (default 2000)
    #[argh(option, default = "2000")]
    warmup: u64,
    /// channels retain/0 … the messages go to, round-robin (default 10)
    #[argh(option, default = "10")]
    channels: usize,
    /// text bytes per message (default 64)
    #[argh(option, default = "64")]
    message_size: usize,
    /// readings after the warm-up (default 4)
    #[argh(option, default = "4")]
    steps: u64,
    /// seconds to wait for the nexus to hold a step's messages (default 60)
    #[argh(option, default = "60.0")]
    timeout: f64,
    /// write the results as JSON here
    #[argh(option)]
    json: Option<String>,
}

fn main() {
    let args: Args = argh::from_env();
    let result = match args.command {
        Command::Storm(a) => storm(a),
        Command::Retain(a) => retain(a),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("recovery_storm: {e}");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------
// What the nexus process uses.

/// CPU time of every thread of `pid`, nanoseconds: the first field of
/// `/proc/PID/task/*/schedstat`, else utime + stime of `/proc/PID/stat`.
fn server_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path().join("schedstat");
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Some(ns) = text
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.parse::<u64>().ok())
                {
                    total += ns;
                    any = true;
                }
            }
        }
    }
    if any {
        return Some(total);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / hz)
}

/// A `/proc/PID/status` field in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// This process's user + system CPU seconds.
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Samples `pid`'s VmRSS every 2 ms on a thread of its own until stopped;
/// the peak in KiB.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                peak = peak.max(status_kib(pid, "VmRSS").unwrap_or(0));
                if flag.load(Ordering::Acquire) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        RssSampler { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap_or(0)
    }
}

/// The sum over shards of each named metric from `GET /metrics` at `admin`.
fn scrape(admin: &str, names: &[&str]) -> Result<Vec<f64>, String> {
    let addr = admin.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .map_err(|e| format!("/metrics: {e}"))?;
    if !body.starts_with("HTTP/1.1 200") {
        return Err(format!("/metrics: {}", body.lines().next().unwrap_or("")));
    }
    Ok(names
        .iter()
        .map(|name| {
            body.lines()
                .filter(|line| {
                    line.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                })
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .collect())
}

/// A text of `size` bytes that starts with `seq`.
fn text(seq: u64, size: usize) -> String {
    let mut text = format!("{seq}|");
    while text.len() < size {
        text.push(if text.len().is_multiple_of(8) {
            '|'
        } else {
            'x'
        });
    }
    text
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// `ws://HOST:PORT[/PATH]` → (`HOST:PORT`, the path, at least `/`).
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_string(), path.to_string()))
}

// ---------------------------------------------------------------------------
// The storm.

/// Where the storm stands; every client follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connected and receiving.
    Run,
    /// Drop the connection (cycle number).
    Away(usize),
    /// Reconnect from the last position (cycle number).
    Back(usize),
    /// The end.
    Stop,
}

/// What the publisher does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publishing {
    Paused,
    Steady,
    /// At the steady rate, this many more, then pause.
    Exactly(u64),
    Stop,
}

/// One client's view, across all its connections.
#[derive(Debug, Default)]
struct Client {
    channel: usize,
    witness: bool,
    /// Its last position and epoch.
    last: Option<u64>,
    epoch: String,
    /// Offsets that never came (a gap at a seam or anywhere).
    missing: u64,
    duplicates: u64,
    epoch_changes: u64,
    not_recovered: u64,
    received: u64,
    /// This cycle: the recovery's answer, the replay counted so far.
    top: Option<u64>,
    replayed: u64,
    connected_at: Option<Instant>,
    recovered_at: Option<Instant>,
    /// This cycle: connected and subscribed from its position.
    away: bool,
}

struct Storm {
    args: StormArgs,
    /// `HOST:PORT` and the upgrade's path.
    host: String,
    path: String,
    prefix: String,
    clients: RefCell<Vec<Client>>,
    phase: watch::Sender<Phase>,
    publishing: Cell<Publishing>,
    /// Messages published per channel.
    published: RefCell<Vec<u64>>,
    /// Each channel's offset when the first client subscribed.
    base: RefCell<Vec<Option<u64>>>,
    /// Clients connected and subscribed; clients that dropped their
    /// connection; clients recovered this cycle.
    subscribed: Cell<usize>,
    gone: Cell<usize>,
    recovered: Cell<usize>,
    /// Woken whenever a client or the publisher made progress.
    progress: Notify,
    errors: RefCell<Vec<String>>,
    permits: tokio::sync::Semaphore,
}

impl Storm {
    fn error(&self, e: String) {
        eprintln!("recovery_storm: {e}");
        self.errors.borrow_mut().push(e);
        self.progress.notify_one();
    }

    fn channel_name(&self, c: usize) -> String {
        format!("{}{c}", self.args.channel_prefix)
    }

    /// Waits until `done` holds, up to `--timeout`.
    async fn wait_for(&self, what: &str, done: impl Fn(&Storm) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs_f64(self.args.timeout);
        loop {
            if done(self) {
                return Ok(());
            }
            if !self.errors.borrow().is_empty() {
                return Err(format!("{what}: stopped by an error"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{what}: not done within {} s", self.args.timeout));
            }
            // Progress, or a look every 50 ms whatever happens.
            let _ = tokio::time::timeout(
                left.min(Duration::from_millis(50)),
                self.progress.notified(),
            )
            .await;
        }
    }

    /// The offset every subscriber of channel `c` must reach: where it
    /// stood plus what was published since.
    fn head(&self, c: usize) -> Option<u64> {
        Some(self.base.borrow()[c]? + self.published.borrow()[c])
    }

    /// Every client (witnesses included, or only them) has the head of its
    /// channel.
    fn all_at_head(&self, witnesses_only: bool) -> bool {
        let clients = self.clients.borrow();
        clients
            .iter()
            .filter(|c| c.witness || !witnesses_only)
            .all(|c| c.last.is_some() && c.last == self.head(c.channel))
    }
}

/// One WebSocket connection to the nexus, spoken with the load
/// generator's own minimal client side (`examples/stress/ws.rs`: no
/// per-connection key, no allocation per frame), so that the storm's
/// handshakes cost the load generator as little as they can.
struct Conn {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    /// Bytes read and not yet used.
    pending: Vec<u8>,
}

/// Opens and upgrades a connection, then says `first`.
async fn open(storm: &Storm, first: &[Wire<'_>]) -> Result<Conn, String> {
    let tcp = TcpStream::connect(&storm.host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let (mut read, mut write) = tcp.into_split();
    write
        .write_all(&ws::upgrade_request(&storm.host, &storm.path))
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let mut pending = Vec::with_capacity(4096);
    loop {
        let n = read
            .read_buf(&mut pending)
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        if n == 0 {
            return Err("closed during the upgrade".into());
        }
        if let Some(used) = ws::parse_upgrade_response(&pending).map_err(|e| e.to_string())? {
            pending.drain(..used);
            break;
        }
        pending.reserve(4096);
    }
    let mut out = Vec::new();
    for m in first {
        ws::push_message(&mut out, *m);
    }
    write.write_all(&out).await.map_err(|e| e.to_string())?;
    Ok(Conn {
        read,
        write,
        pending,
    })
}

const TTL: Duration = Duration::from_secs(3600);

/// One recovering client (or a witness, which stays connected).
async fn client(storm: Rc<Storm>, index: usize) {
    let (name, channel, witness) = {
        let clients = storm.clients.borrow();
        let c = &clients[index];
        let name = if c.witness {
            format!("{}-w{}", storm.prefix, c.channel)
        } else {
            format!("{}-{index}", storm.prefix)
        };
        (name, storm.channel_name(c.channel), c.witness)
    };
    let mut phase = storm.phase.subscribe();
    let first = {
        let _permit = storm.permits.acquire().await.expect("open semaphore");
        open(
            &storm,
            &[
                Wire::HelloWith {
                    name: &name,
                    options: "positions",
                },
                Wire::Subscribe {
                    channel: &channel,
                    ttl: TTL,
                },
            ],
        )
        .await
    };
    let mut conn = match first {
        Ok(conn) => conn,
        Err(e) => return storm.error(format!("{name}: {e}")),
    };
    let mut pongs = Vec::new();
    loop {
        // Every complete frame read so far.
        let mut used = 0;
        while let Some((frame, len)) = ws::next_frame(&conn.pending[used..]) {
            used += len;
            match frame {
                Incoming::Text(payload) => {
                    let checked = std::str::from_utf8(payload)
                        .map_err(|e| e.to_string())
                        .and_then(|frame| on_frame(&storm, index, frame));
                    if let Err(e) = checked {
                        return storm.error(format!("{name}: {e}"));
                    }
                }
                Incoming::Ping(payload) => ws::push_pong_frame(&mut pongs, payload),
                Incoming::Close(code) => {
                    return storm.error(format!("{name}: closed by the nexus: {code:?}"))
                }
                Incoming::Other => {}
            }
        }
        conn.pending.drain(..used);
        if !pongs.is_empty() {
            if let Err(e) = conn.write.write_all(&pongs).await {
                return storm.error(format!("{name}: {e}"));
            }
            pongs.clear();
        }
        conn.pending.reserve(16 * 1024);
        let event = tokio::select! {
            biased;
            changed = phase.changed() => match changed {
                Ok(()) => Err(*phase.borrow_and_update()),
                Err(_) => Err(Phase::Stop),
            },
            read = conn.read.read_buf(&mut conn.pending) => Ok(read),
        };
        match event {
            Err(Phase::Stop) => return,
            Err(Phase::Away(_)) if !witness => {
                drop(conn);
                storm.clients.borrow_mut()[index].away = true;
                storm.gone.set(storm.gone.get() + 1);
                storm.progress.notify_one();
                // Back when told.
                loop {
                    if phase.changed().await.is_err() {
                        return;
                    }
                    let now = *phase.borrow_and_update();
                    match now {
                        Phase::Back(_) => break,
                        Phase::Stop => return,
                        _ => {}
                    }
                }
                conn = match reconnect(&storm, index, &name, &channel).await {
                    Ok(conn) => conn,
                    Err(e) => return storm.error(format!("{name}: reconnecting: {e}")),
                };
            }
            Err(_) => {}
            Ok(Ok(0)) => return storm.error(format!("{name}: the connection ended")),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return storm.error(format!("{name}: {e}")),
        }
    }
}

/// Opens a new connection and subscribes from the client's last position.
async fn reconnect(storm: &Storm, index: usize, name: &str, channel: &str) -> Result<Conn, String> {
    let (last, epoch) = {
        let clients = storm.clients.borrow();
        let c = &clients[index];
        (
            c.last.ok_or("no position to recover from")?,
            c.epoch.clone(),
        )
    };
    let conn = open(
        storm,
        &[
            Wire::HelloWith {
                name,
                options: "positions",
            },
            Wire::Recover {
                channel,
                ttl: TTL,
                offset: last,
                epoch: &epoch,
            },
        ],
    )
    .await?;
    storm.clients.borrow_mut()[index].connected_at = Some(Instant::now());
    Ok(conn)
}

/// Checks one frame against what the client saw before.
fn on_frame(storm: &Storm, index: usize, frame: &str) -> Result<(), String> {
    let now = Instant::now();
    let mut clients = storm.clients.borrow_mut();
    let c = &mut clients[index];
    let mut recovered_now = false;
    let mut subscribed_now = false;
    match parse(frame) {
        Ok(Wire::Position {
            status,
            offset,
            epoch,
            ..
        }) => match status {
            PositionStatus::Subscribed => {
                if c.last.is_some() {
                    return Err(format!("a second plain subscription answer: {frame}"));
                }
                c.last = Some(offset);
                c.epoch = epoch.to_string();
                let mut base = storm.base.borrow_mut();
                match base[c.channel] {
                    None => base[c.channel] = Some(offset),
                    // Nothing is published before every client subscribed.
                    Some(b) if b != offset => {
                        return Err(format!("channel at {offset}, another client saw {b}"))
                    }
                    Some(_) => {}
                }
                subscribed_now = true;
            }
            PositionStatus::Recovered => {
                if epoch != c.epoch {
                    c.epoch_changes += 1;
                    return Err(format!("recovered into epoch {epoch}, was {}", c.epoch));
                }
                c.top = Some(offset);
                if c.last == Some(offset) {
                    recovered_now = true;
                }
            }
            PositionStatus::NotRecovered => {
                c.not_recovered += 1;
                eprintln!(
                    "recovery_storm: client {index} not recovered from {:?} ({}); channel at {offset} ({epoch})",
                    c.last, c.epoch
                );
                c.last = Some(offset);
                c.epoch = epoch.to_string();
                recovered_now = true;
            }
        },
        Ok(Wire::ReceiveAt { offset, epoch, .. }) => {
            if epoch != c.epoch {
                c.epoch_changes += 1;
                c.epoch = epoch.to_string();
            } else {
                match c.last {
                    Some(last) if offset <= last => c.duplicates += 1,
                    Some(last) => c.missing += offset - last - 1,
                    None => {}
                }
            }
            c.last = Some(c.last.map_or(offset, |last| last.max(offset)));
            c.received += 1;
            if let Some(top) = c.top {
                if offset <= top {
                    c.replayed += 1;
                }
                if offset >= top {
                    recovered_now = true;
                }
            }
        }
        Ok(other) => return Err(format!("unexpected {other:?}")),
        Err(e) => return Err(format!("{e}: {frame}")),
    }
    if recovered_now && c.away {
        c.top = None;
        c.away = false;
        c.recovered_at = Some(now);
        storm.recovered.set(storm.recovered.get() + 1);
    }
    if subscribed_now {
        storm.subscribed.set(storm.subscribed.get() + 1);
    }
    drop(clients);
    storm.progress.notify_one();
    Ok(())
}

/// The v1 publisher: round-robin over the channels at `--rate`, as the
/// storm's [`Publishing`] says.
async fn publisher(storm: Rc<Storm>, conn: Conn) {
    let Conn {
        mut read,
        write: mut sink,
        ..
    } = conn;
    // Reads until the end (the nexus has nothing to say to a publisher
    // that never goes silent).
    tokio::task::spawn_local(async move {
        let mut buf = vec![0u8; 4096];
        while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let mut batch = Vec::new();
    let channels: Vec<String> = (0..storm.args.channels)
        .map(|c| storm.channel_name(c))
        .collect();
    let rate = storm.args.rate;
    let mut next_channel = 0;
    let mut seq = 0u64;
    let mut schedule: Option<(Instant, u64)> = None;
    loop {
        let mode = storm.publishing.get();
        match mode {
            Publishing::Stop => return,
            Publishing::Paused => {
                schedule = None;
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            Publishing::Steady | Publishing::Exactly(_) => {}
        }
        let (start, sent) = schedule.get_or_insert((Instant::now(), 0));
        let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
        if due <= *sent {
            let next = *start + Duration::from_secs_f64(*sent as f64 / rate);
            tokio::time::sleep_until(next.max(Instant::now() + Duration::from_millis(1)).into())
                .await;
            continue;
        }
        let mut n = (due - *sent).min(256);
        if let Publishing::Exactly(left) = mode {
            n = n.min(left);
        }
        batch.clear();
        for _ in 0..n {
            let message = Wire::Transmit {
                channel: &channels[next_channel],
                text: &text(seq, storm.args.message_size),
            };
            ws::push_message(&mut batch, message);
            storm.published.borrow_mut()[next_channel] += 1;
            next_channel = (next_channel + 1) % channels.len();
            seq += 1;
        }
        if let Err(e) = sink.write_all(&batch).await {
            return storm.error(format!("publisher: {e}"));
        }
        *sent += n;
        if let Publishing::Exactly(left) = mode {
            storm.publishing.set(if left == n {
                Publishing::Paused
            } else {
                Publishing::Exactly(left - n)
            });
        }
        storm.progress.notify_one();
    }
}

/// One cycle's figures.
#[derive(Debug)]
struct CycleResult {
    cycle: usize,
    seconds_to_all: f64,
    recovery_ms: Vec<f64>,
    connect_ms: Vec<f64>,
    replayed: Vec<u64>,
    server_cpu_seconds: Option<f64>,
    loadgen_cpu_seconds: f64,
    rss_before_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
    metrics: Option<Vec<f64>>,
}

const RECOVERY_METRICS: [&str; 3] = [
    "easechat_recoveries_total",
    "easechat_recoveries_failed_total",
    "easechat_replayed_messages_total",
];

fn storm(args: StormArgs) -> Result<bool, String> {
    if args.clients == 0 || args.channels == 0 || args.cycles == 0 || args.rate <= 0.0 {
        return Err("need --clients, --channels, --cycles and --rate above 0".into());
    }
    let (host, path) = split_url(&args.url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_storm(args, host, path))
}

async fn run_storm(args: StormArgs, host: String, path: String) -> Result<bool, String> {
    let mut clients: Vec<Client> = (0..args.clients)
        .map(|i| Client {
            channel: i % args.channels,
            ..Client::default()
        })
        .collect();
    // The witnesses: one per channel, never away.
    clients.extend((0..args.channels).map(|c| Client {
        channel: c,
        witness: true,
        ..Client::default()
    }));
    let (phase, _) = watch::channel(Phase::Run);
    let storm = Rc::new(Storm {
        prefix: args
            .name_prefix
            .clone()
            .unwrap_or_else(|| format!("storm-{}", std::process::id())),
        host,
        path,
        clients: RefCell::new(clients),
        phase,
        publishing: Cell::new(Publishing::Paused),
        published: RefCell::new(vec![0; args.channels]),
        base: RefCell::new(vec![None; args.channels]),
        subscribed: Cell::new(0),
        gone: Cell::new(0),
        recovered: Cell::new(0),
        progress: Notify::new(),
        errors: RefCell::new(Vec::new()),
        permits: tokio::sync::Semaphore::new(args.connect_parallel.max(1)),
        args: args.clone(),
    });
    let total = args.clients + args.channels;
    // The witnesses first, then everyone.
    let mut tasks = Vec::new();
    for i in (args.clients..total).chain(0..args.clients) {
        tasks.push(tokio::task::spawn_local(client(storm.clone(), i)));
    }
    let started = Instant::now();
    storm
        .wait_for("subscribing", |s| s.subscribed.get() == total)
        .await?;
    eprintln!(
        "recovery_storm: {total} connections ({} clients, {} witnesses) subscribed in {:.2} s",
        args.clients,
        args.channels,
        started.elapsed().as_secs_f64()
    );
    let publishing = open(
        &storm,
        &[Wire::Hello {
            name: &format!("{}-pub", storm.prefix),
        }],
    )
    .await?;
    tokio::task::spawn_local(publisher(storm.clone(), publishing));
    let pid = args.server_pid;
    let metrics_at = |admin: &Option<String>| -> Option<Vec<f64>> {
        let admin = admin.as_ref()?;
        match scrape(admin, &RECOVERY_METRICS) {
            Ok(values) => Some(values),
            Err(e) => {
                eprintln!("recovery_storm: {e}");
                None
            }
        }
    };
    let rss_start = pid.and_then(|p| status_kib(p, "VmRSS"));
    let mut results = Vec::new();
    let outcome: Result<(), String> = async {
        for cycle in 1..=args.cycles {
            // Steady publishing, then everyone at the head.
            storm.publishing.set(Publishing::Steady);
            tokio::time::sleep(Duration::from_secs_f64(args.live)).await;
            storm.publishing.set(Publishing::Paused);
            tokio::time::sleep(Duration::from_millis(5)).await;
            storm
                .wait_for("every client at the head before the blip", |s| {
                    s.all_at_head(false)
                })
                .await?;
            let metrics_before = metrics_at(&args.admin);
            // All away at once.
            storm.gone.set(0);
            storm.recovered.set(0);
            for c in storm.clients.borrow_mut().iter_mut() {
                c.replayed = 0;
                c.top = None;
                c.connected_at = None;
                c.recovered_at = None;
            }
            storm.phase.send_replace(Phase::Away(cycle));
            storm
                .wait_for("every client away", |s| s.gone.get() == args.clients)
                .await?;
            // Exactly `--gap` on each channel, numbered before anyone comes back.
            if args.gap > 0 {
                storm
                    .publishing
                    .set(Publishing::Exactly(args.gap * args.channels as u64));
                storm
                    .wait_for("the gap published and numbered", |s| {
                        s.publishing.get() == Publishing::Paused && s.all_at_head(true)
                    })
                    .await?;
            }
            // Everyone back at once, the publisher going on.
            let rss_before = pid.and_then(|p| status_kib(p, "VmRSS"));
            let sampler = pid.map(RssSampler::start);
            let cpu_before = pid.and_then(server_cpu_ns);
            let own_before = own_cpu_seconds();
            let t0 = Instant::now();
            storm.publishing.set(Publishing::Steady);
            storm.phase.send_replace(Phase::Back(cycle));
            let waited = storm
                .wait_for("every client recovered", |s| {
                    s.recovered.get() == args.clients
                })
                .await;
            let cpu_after = pid.and_then(server_cpu_ns);
            let own_after = own_cpu_seconds();
            let rss_peak = sampler.map(RssSampler::finish);
            waited?;
            let (mut recovery_ms, mut connect_ms, mut replayed) =
                (Vec::new(), Vec::new(), Vec::new());
            let mut last_recovered = t0;
            for c in storm.clients.borrow().iter().filter(|c| !c.witness) {
                let at = c.recovered_at.expect("recovered");
                last_recovered = last_recovered.max(at);
                recovery_ms.push(at.duration_since(t0).as_secs_f64() * 1e3);
                if let Some(connected) = c.connected_at {
                    connect_ms.push(connected.duration_since(t0).as_secs_f64() * 1e3);
                }
                replayed.push(c.replayed);
            }
            recovery_ms.sort_by(f64::total_cmp);
            connect_ms.sort_by(f64::total_cmp);
            replayed.sort_unstable();
            // Live again: a tail of steady publishing, then everyone at the head.
            tokio::time::sleep(Duration::from_secs_f64(args.tail)).await;
            storm.publishing.set(Publishing::Paused);
            tokio::time::sleep(Duration::from_millis(5)).await;
            storm
                .wait_for("every client at the head after recovering", |s| {
                    s.all_at_head(false)
                })
                .await?;
            let metrics = match (metrics_before, metrics_at(&args.admin)) {
                (Some(b), Some(a)) => Some(a.iter().zip(&b).map(|(a, b)| a - b).collect()),
                _ => None,
            };
            storm.phase.send_replace(Phase::Run);
            let result = CycleResult {
                cycle,
                seconds_to_all: last_recovered.duration_since(t0).as_secs_f64(),
                recovery_ms,
                connect_ms,
                replayed,
                server_cpu_seconds: cpu_before
                    .zip(cpu_after)
                    .map(|(b, a)| (a.saturating_sub(b)) as f64 / 1e9),
                loadgen_cpu_seconds: own_after - own_before,
                rss_before_kib: rss_before,
                rss_peak_kib: rss_peak,
                metrics,
            };
            eprintln!("{}", cycle_line(&result, args.gap));
            results.push(result);
        }
        Ok(())
    }
    .await;
    storm.publishing.set(Publishing::Stop);
    storm.phase.send_replace(Phase::Stop);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let hwm = pid.and_then(|p| status_kib(p, "VmHWM"));
    let rss_end = pid.and_then(|p| status_kib(p, "VmRSS"));
    let clients = storm.clients.borrow();
    let sum = |f: fn(&Client) -> u64| clients.iter().map(f).sum::<u64>();
    let (missing, duplicates, epoch_changes, not_recovered) = (
        sum(|c| c.missing),
        sum(|c| c.duplicates),
        sum(|c| c.epoch_changes),
        sum(|c| c.not_recovered),
    );
    let mut errors = storm.errors.borrow().clone();
    if let Err(e) = &outcome {
        errors.push(e.clone());
    }
    let ok = errors.is_empty()
        && missing == 0
        && duplicates == 0
        && epoch_changes == 0
        && not_recovered == 0
        && results.len() == args.cycles
        && results
            .iter()
            .all(|r| r.replayed.first().is_some_and(|&m| m >= args.gap));
    let summary = storm_summary(
        &args,
        &results,
        hwm,
        (missing, duplicates, epoch_changes, not_recovered),
    );
    print!("{summary}");
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "mode": "storm",
            "settings": {
                "url": args.url, "clients": args.clients, "channels": args.channels, "gap": args.gap,
                "rate": args.rate, "cycles": args.cycles, "live": args.live, "tail": args.tail,
                "message_size": args.message_size,
            },
            "cycles": results.iter().map(|r| serde_json::json!({
                "cycle": r.cycle,
                "seconds_to_all": r.seconds_to_all,
                "recovery_ms": percentiles(&r.recovery_ms),
                "connect_ms": percentiles(&r.connect_ms),
                "replayed": {
                    "min": r.replayed.first(), "median": r.replayed.get(r.replayed.len() / 2),
                    "max": r.replayed.last(),
                },
                "server_cpu_seconds": r.server_cpu_seconds,
                "server_cpu_cores": r.server_cpu_seconds.map(|s| s / r.seconds_to_all.max(1e-9)),
                "loadgen_cpu_seconds": r.loadgen_cpu_seconds,
                "rss_before_kib": r.rss_before_kib,
                "rss_peak_kib": r.rss_peak_kib,
                "metrics_delta": r.metrics.as_ref().map(|m| serde_json::json!({
                    "recoveries": m[0], "recoveries_failed": m[1], "replayed_messages": m[2],
                })),
            })).collect::<Vec<_>>(),
            "rss_start_kib": rss_start,
            "rss_end_kib": rss_end,
            "vm_hwm_kib": hwm,
            "missing": missing,
            "duplicates": duplicates,
            "epoch_changes": epoch_changes,
            "not_recovered": not_recovered,
            "errors": errors,
            "ok": ok,
        });
        std::fs::write(path, json.to_string() + "\n").map_err(|e| format!("{path}: {e}"))?;
    }
    if !ok {
        eprintln!(
            "recovery_storm: FAILED: missing {missing}, duplicates {duplicates}, epoch changes {epoch_changes}, \
             not recovered {not_recovered}, cycles done {} of {}, fewest replayed {:?} (gap {}); errors: {}",
            results.len(),
            args.cycles,
            results.iter().filter_map(|r| r.replayed.first()).min(),
            args.gap,
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join("; ")
            }
        );
    }
    Ok(ok)
}

fn percentiles(sorted: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "p50": quantile(sorted, 0.5),
        "p99": quantile(sorted, 0.99),
        "max": sorted.last().copied().unwrap_or(0.0),
    })
}

fn cycle_line(r: &CycleResult, gap: u64) -> String {
    let cpu = r.server_cpu_seconds.map_or("—".into(), |s| {
        format!("{:.3} s ({:.2} cores)", s, s / r.seconds_to_all.max(1e-9))
    });
    format!(
        "recovery_storm: cycle {}: gap {gap}: all recovered in {:.3} s (per client p50 {:.1} ms, p99 {:.1} ms; \
         reconnected p50 {:.1} ms, p99 {:.1} ms); replayed {}–{} each; nexus CPU {cpu}; RSS {} → peak {} KiB; \
         load generator CPU {:.3} s",
        r.cycle,
        r.seconds_to_all,
        quantile(&r.recovery_ms, 0.5),
        quantile(&r.recovery_ms, 0.99),
        quantile(&r.connect_ms, 0.5),
        quantile(&r.connect_ms, 0.99),
        r.replayed.first().unwrap_or(&0),
        r.replayed.last().unwrap_or(&0),
        r.rss_before_kib.map_or("—".into(), |k| k.to_string()),
        r.rss_peak_kib.map_or("—".into(), |k| k.to_string()),
        r.loadgen_cpu_seconds,
    )
}

fn storm_summary(
    args: &StormArgs,
    results: &[CycleResult],
    hwm: Option<u64>,
    (missing, duplicates, epoch_changes, not_recovered): (u64, u64, u64, u64),
) -> String {
    let mut times: Vec<f64> = results.iter().map(|r| r.seconds_to_all).collect();
    times.sort_by(f64::total_cmp);
    let mut cpus: Vec<f64> = results
        .iter()
        .filter_map(|r| r.server_cpu_seconds)
        .collect();
    cpus.sort_by(f64::total_cmp);
    format!(
        "storm: {} clients on {} channel(s), gap {} per channel, {} msg/s steady, {} cycles\n\
         time to all recovered: median {:.3} s (cycles: {})\n\
         nexus CPU over the window: median {} s; VmHWM {} KiB\n\
         missing {missing}, duplicates {duplicates}, epoch changes {epoch_changes}, not recovered {not_recovered}\n",
        args.clients,
        args.channels,
        args.gap,
        args.rate,
        results.len(),
        quantile(&times, 0.5),
        results
            .iter()
            .map(|r| format!("{:.3}", r.seconds_to_all))
            .collect::<Vec<_>>()
            .join(", "),
        if cpus.is_empty() {
            "—".into()
        } else {
            format!("{:.3}", quantile(&cpus, 0.5))
        },
        hwm.map_or("—".into(), |k| k.to_string()),
    )
}

// ---------------------------------------------------------------------------
// Memory per retained message.

type SyncWs = tokio_tungstenite::tungstenite::WebSocket<std::net::TcpStream>;

/// Publishes `n` texts of `size` bytes round-robin over `channels`.
fn publish(
    ws: &mut SyncWs,
    channels: &[String],
    size: usize,
    seq: &mut u64,
    n: u64,
) -> Result<(), String> {
    for _ in 0..n {
        let channel = &channels[(*seq % channels.len() as u64) as usize];
        let m = Wire::Transmit {
            channel,
            text: &text(*seq, size),
        };
        ws.write(WsMessage::text(m.encode()))
            .map_err(|e| e.to_string())?;
        *seq += 1;
        if seq.is_multiple_of(256) {
            ws.flush().map_err(|e| e.to_string())?;
        }
    }
    ws.flush().map_err(|e| e.to_string())
}

fn retain(args: RetainArgs) -> Result<bool, String> {
    if args.channels == 0 || args.steps == 0 || args.messages < args.steps {
        return Err("need --channels >= 1, --steps >= 1, --messages >= --steps".into());
    }
    let (host, path) = split_url(&args.url)?;
    let url = format!("ws://{host}{path}");
    let tcp = std::net::TcpStream::connect(&host).map_err(|e| format!("{host}: {e}"))?;
    tcp.set_nodelay(true).ok();
    let (mut ws, _) = tokio_tungstenite::tungstenite::client(url.as_str(), tcp)
        .map_err(|e| format!("upgrade: {e}"))?;
    let name = format!("retain-{}", std::process::id());
    ws.send(WsMessage::text(Wire::Hello { name: &name }.encode()))
        .map_err(|e| e.to_string())?;
    let channels: Vec<String> = (0..args.channels).map(|c| format!("retain/{c}")).collect();
    let mut seq = 0u64;
    let size = args.message_size;
    const NAMES: [&str; 3] = [
        "easechat_history_messages",
        "easechat_history_bytes",
        "easechat_history_evictions_total",
    ];
    let reading = |expected: u64| -> Result<(u64, u64, u64, u64), String> {
        let deadline = Instant::now() + Duration::from_secs_f64(args.timeout);
        loop {
            let m = scrape(&args.admin, &NAMES)?;
            let held = m[0] as u64;
            if held >= expected || Instant::now() > deadline {
                if held < expected {
                    eprintln!(
                        "recovery_storm: the nexus holds {held} messages, {expected} published \
                         (the history bounds evicted some: raise --history-size / --history-bytes / --history-total-bytes)"
                    );
                }
                let rss =
                    status_kib(args.server_pid, "VmRSS").ok_or("no VmRSS for --server-pid")?;
                return Ok((held, m[1] as u64, rss, m[2] as u64));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let (_, _, rss_idle, _) = reading(0)?;
    publish(&mut ws, &channels, size, &mut seq, args.warmup)?;
    let before = reading(args.warmup)?;
    let mut steps = vec![before];
    let per_step = args.messages / args.steps;
    for step in 1..=args.steps {
        let n = if step == args.steps {
            args.messages - per_step * (args.steps - 1)
        } else {
            per_step
        };
        publish(&mut ws, &channels, size, &mut seq, n)?;
        steps.push(reading(seq)?);
    }
    let _ = ws.close(None);
    let after = *steps.last().expect("steps");
    let held = after.0.saturating_sub(before.0).max(1);
    let rss_per = (after.2 as f64 - before.2 as f64) * 1024.0 / held as f64;
    let metric_per = (after.1 as f64 - before.1 as f64) / held as f64;
    // The marginal figure of the last step, less marked by the first
    // allocations of each structure.
    let prev = steps[steps.len() - 2];
    let last_held = after.0.saturating_sub(prev.0).max(1);
    let rss_last = (after.2 as f64 - prev.2 as f64) * 1024.0 / last_held as f64;
    let mut out = format!(
        "retain: {} messages of {} B over {} channels (after {} warm-up), nexus idle RSS {rss_idle} KiB\n",
        args.messages, args.message_size, args.channels, args.warmup
    );
    out += "| held | easechat_history_bytes | VmRSS KiB |\n|---|---|---|\n";
    for (held, bytes, rss, _) in &steps {
        out += &format!("| {held} | {bytes} | {rss} |\n");
    }
    out += &format!(
        "per retained message: RSS {rss_per:.0} B (last step {rss_last:.0} B), easechat_history_bytes {metric_per:.0} B; \
         evictions {}\n",
        after.3
    );
    print!("{out}");
    let ok = after.0 >= seq && after.3 == 0;
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "mode": "retain",
            "settings": {
                "url": args.url, "messages": args.messages, "warmup": args.warmup, "channels": args.channels,
                "message_size": args.message_size, "steps": args.steps,
            },
            "rss_idle_kib": rss_idle,
            "steps": steps.iter().map(|(held, bytes, rss, _)| serde_json::json!({
                "held": held, "history_bytes": bytes, "rss_kib": rss,
            })).collect::<Vec<_>>(),
            "retained": held,
            "rss_bytes_per_message": rss_per,
            "rss_bytes_per_message_last_step": rss_last,
            "metric_bytes_per_message": metric_per,
            "evictions": after.3,
            "ok": ok,
        });
        std::fs::write(path, json.to_string() + "\n").map_err(|e| format!("{path}: {e}"))?;
    }
    if !ok {
        eprintln!(
            "recovery_storm: FAILED: not every message was held (evictions {})",
            after.3
        );
    }
    Ok(ok)
}

//! `soak`: a long, bounded run of careless and hostile clients against a
//! nexus, checking that the well-behaved ones lose nothing.
//!
//! Actors, all on loopback:
//! - steady subscribers: subscribe with a short TTL and renew it, answer
//!   pings, read everything, and check each publisher's sequence on each
//!   channel (a gap is a loss, a step back is a reordering);
//! - publishers: publish without pause, round-robin over the channels;
//! - churners: connect, subscribe with 1–3 s TTLs (some renew, some
//!   unsubscribe with `0|0`, some let it expire), then leave by `1d`, by an
//!   abrupt TCP reset, or half-open (silent until keepalive reaps them);
//! - slow consumers: subscribe to the busy channel and never read.
//!
//! `scripts/soak.sh` starts the nexus, runs this, and samples the nexus's
//! RSS and open files. Exit code 1 if any steady subscriber lost or
//! reordered a message.

#[path = "../stress/payload.rs"]
mod payload;
#[path = "../stress/ws.rs"]
#[allow(dead_code)] // soak does not look at close codes
mod ws;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use argh::FromArgs;
use easechat_protocol::Message;
use payload::Stamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ws::Incoming;

/// Soak test driver (see the module docs).
#[derive(FromArgs, Debug)]
struct Args {
    /// nexus address (default 127.0.0.1:6500)
    #[argh(option, default = "String::from(\"127.0.0.1:6500\")")]
    addr: String,
    /// seconds to run (default 600)
    #[argh(option, default = "600")]
    duration: u64,
    /// steady subscribers (default 40)
    #[argh(option, default = "40")]
    steady: usize,
    /// publishers (default 4)
    #[argh(option, default = "4")]
    publishers: usize,
    /// messages per second per publisher (default 250)
    #[argh(option, default = "250")]
    rate: u64,
    /// churning clients alive at once (default 40)
    #[argh(option, default = "40")]
    churners: usize,
    /// slow consumers started per minute (default 6)
    #[argh(option, default = "6")]
    slow_per_minute: u64,
}

const CHANNELS: usize = 8;
/// Channel 0 is the busy one: bigger messages, where slow consumers sit.
const BUSY_TEXT: usize = 1024;
const TEXT: usize = 96;

#[derive(Default)]
struct Counts {
    delivered: Cell<u64>,
    lost: Cell<u64>,
    reordered: Cell<u64>,
    published: Cell<u64>,
    churned: Cell<u64>,
    resets: Cell<u64>,
    half_open: Cell<u64>,
    slow_closed: Cell<u64>,
    steady_closed: Cell<u64>,
}

fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get() + n);
}

fn main() {
    let args: Args = argh::from_env();
    let addr: SocketAddr = args.addr.parse().expect("--addr HOST:PORT");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let counts = Rc::new(Counts::default());
    let ok = local.block_on(&runtime, run(args, addr, counts.clone()));
    let c = &counts;
    println!(
        "soak: published {}, steady deliveries {}, lost {}, reordered {}, steady connections closed {}; \
         churned {} ({} reset, {} half-open), slow consumers closed by the nexus {}",
        c.published.get(),
        c.delivered.get(),
        c.lost.get(),
        c.reordered.get(),
        c.steady_closed.get(),
        c.churned.get(),
        c.resets.get(),
        c.half_open.get(),
        c.slow_closed.get()
    );
    if !ok {
        eprintln!("soak: FAILED");
        std::process::exit(1);
    }
}

async fn run(args: Args, addr: SocketAddr, counts: Rc<Counts>) -> bool {
    let end = Instant::now() + Duration::from_secs(args.duration);
    let stop = Rc::new(Cell::new(false));
    let steady = spawn_each(addr, "steady", args.steady, |i, conn| {
        steady_subscriber(conn, i % CHANNELS, counts.clone(), stop.clone())
    })
    .await;
    // Let the subscriptions reach every shard before publishing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let publishers = spawn_each(addr, "pub", args.publishers, |p, conn| {
        publisher(conn, p as u32, args.rate, end, counts.clone())
    })
    .await;
    for c in 0..args.churners {
        tokio::task::spawn_local(churner(addr, c, end, counts.clone()));
    }
    tokio::task::spawn_local(slow_consumers(
        addr,
        args.slow_per_minute,
        end,
        counts.clone(),
    ));
    for p in publishers {
        let _ = p.await;
    }
    // Give in-flight messages time to arrive, then stop the readers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.set(true);
    for s in steady {
        let _ = s.await;
    }
    counts.lost.get() == 0 && counts.reordered.get() == 0 && counts.steady_closed.get() == 0
}

/// Opens `count` connections named `<role>-<i>` and runs `task(i, conn)`
/// for each on this thread.
async fn spawn_each<Task>(
    addr: SocketAddr,
    role: &str,
    count: usize,
    task: impl Fn(usize, Conn) -> Task,
) -> Vec<tokio::task::JoinHandle<()>>
where
    Task: std::future::Future<Output = ()> + 'static,
{
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let conn = Conn::open(addr, &format!("{role}-{i}"))
            .await
            .unwrap_or_else(|e| panic!("{role} connect: {e}"));
        handles.push(tokio::task::spawn_local(task(i, conn)));
    }
    handles
}

/// A client connection with its own small read buffer.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr, name: &str) -> std::io::Result<Conn> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream
            .write_all(&ws::upgrade_request(&addr.to_string(), "/"))
            .await?;
        let mut response = Vec::new();
        let mut chunk = [0u8; 512];
        let used = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            response.extend_from_slice(&chunk[..n]);
            if let Some(used) = ws::parse_upgrade_response(&response)? {
                break used;
            }
        };
        let mut conn = Conn {
            stream,
            pending: response.split_off(used),
        };
        conn.send(Message::Hello { name }).await?;
        Ok(conn)
    }

    async fn send(&mut self, message: Message<'_>) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(message.encoded_len() + 14);
        ws::push_message(&mut frame, message);
        self.stream.write_all(&frame).await
    }

    async fn subscribe(&mut self, channel: usize, seconds: u64) -> std::io::Result<()> {
        let channel = format!("soak/{channel}");
        self.send(Message::Subscribe {
            channel: &channel,
            ttl: Duration::from_secs(seconds),
        })
        .await
    }

    /// Reads once (with a timeout) and hands every complete frame to `each`;
    /// answers pings. `Ok(false)` when the nexus closed the connection.
    async fn read_some(
        &mut self,
        wait: Duration,
        mut each: impl FnMut(&[u8]),
    ) -> std::io::Result<bool> {
        let mut chunk = vec![0u8; 16 * 1024];
        let n = match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
            Err(_) => return Ok(true),
            Ok(Ok(0)) => return Ok(false),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e),
        };
        self.pending.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        let mut pongs = Vec::new();
        let mut open = true;
        while let Some((frame, len)) = ws::next_frame(&self.pending[used..]) {
            used += len;
            match frame {
                Incoming::Text(payload) => each(payload),
                Incoming::Ping(payload) => ws::push_pong_frame(&mut pongs, payload),
                Incoming::Close(_) => open = false,
                Incoming::Other => {}
            }
        }
        self.pending.drain(..used);
        if !pongs.is_empty() {
            self.stream.write_all(&pongs).await?;
        }
        Ok(open)
    }
}

async fn steady_subscriber(
    mut conn: Conn,
    channel: usize,
    counts: Rc<Counts>,
    stop: Rc<Cell<bool>>,
) {
    // A short TTL renewed every 2 s: renewal must keep it alive.
    if conn.subscribe(channel, 6).await.is_err() {
        add(&counts.steady_closed, 1);
        return;
    }
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut renew_at = Instant::now() + Duration::from_secs(2);
    let counts2 = counts.clone();
    while !stop.get() {
        if Instant::now() >= renew_at {
            renew_at += Duration::from_secs(2);
            if conn.subscribe(channel, 6).await.is_err() {
                break;
            }
        }
        let open = conn
            .read_some(Duration::from_millis(200), |payload| {
                let Some(stamp) = payload::parse_receive(payload) else {
                    return;
                };
                add(&counts2.delivered, 1);
                let expected = last.get(&stamp.publisher).map_or(0, |s| s + 1);
                if stamp.seq < expected {
                    add(&counts2.reordered, 1);
                } else {
                    add(&counts2.lost, stamp.seq - expected);
                    last.insert(stamp.publisher, stamp.seq);
                }
            })
            .await;
        if !matches!(open, Ok(true)) {
            add(&counts.steady_closed, 1);
            return;
        }
    }
}

async fn publisher(mut conn: Conn, id: u32, rate: u64, end: Instant, counts: Rc<Counts>) {
    // One sequence per channel, so every subscriber sees 0, 1, 2… from
    // this publisher on its channel.
    let mut seqs = [0u64; CHANNELS];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut channel = 0;
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if due <= sent {
            tokio::time::sleep(Duration::from_millis(2)).await;
            // Publishers also drain what the nexus sends them (pings).
            let _ = conn.read_some(Duration::from_millis(1), |_| {}).await;
            continue;
        }
        let mut batch = Vec::new();
        let count = (due - sent).min(100);
        for _ in 0..count {
            let stamp = Stamp {
                publisher: id,
                channel: channel as u32,
                seq: seqs[channel],
                sent_ns: 0,
            };
            seqs[channel] += 1;
            let size = if channel == 0 { BUSY_TEXT } else { TEXT };
            let mut text = Vec::new();
            payload::write_transmit(&mut text, &format!("soak/{channel}"), stamp, size);
            ws::push_text_frame(&mut batch, &text);
            channel = (channel + 1) % CHANNELS;
            sent += 1;
        }
        if conn.stream.write_all(&batch).await.is_err() {
            return;
        }
        add(&counts.published, count);
    }
    let _ = conn.send(Message::Disconnect { reason: "done" }).await;
}

async fn churner(addr: SocketAddr, id: usize, end: Instant, counts: Rc<Counts>) {
    let mut round = 0u64;
    while Instant::now() < end {
        round += 1;
        let Ok(mut conn) = Conn::open(addr, &format!("churn-{id}-{round}")).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let channel = (id + round as usize) % CHANNELS;
        let _ = conn.subscribe(channel, 1 + round % 3).await;
        let life = Duration::from_millis(200 + (id as u64 * 37 + round * 91) % 1800);
        let until = Instant::now() + life;
        while Instant::now() < until {
            if !matches!(
                conn.read_some(Duration::from_millis(100), |_| {}).await,
                Ok(true)
            ) {
                break;
            }
            match round % 4 {
                0 => {
                    let _ = conn.subscribe(channel, 2).await; // renew
                }
                1 => {
                    let _ = conn.subscribe(channel, 0).await; // unsubscribe
                }
                _ => {} // let it expire
            }
        }
        add(&counts.churned, 1);
        match round % 3 {
            0 => {
                let _ = conn.send(Message::Disconnect { reason: "churn" }).await;
                let _ = conn.read_some(Duration::from_millis(500), |_| {}).await;
            }
            1 => {
                // Abrupt reset: SO_LINGER 0 makes close() send RST.
                add(&counts.resets, 1);
                let _ = socket2::SockRef::from(&conn.stream).set_linger(Some(Duration::ZERO));
            }
            _ => {
                // Half-open: go silent and keep the socket; keepalive reaps it.
                add(&counts.half_open, 1);
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    drop(conn);
                });
            }
        }
    }
}

async fn slow_consumers(addr: SocketAddr, per_minute: u64, end: Instant, counts: Rc<Counts>) {
    if per_minute == 0 {
        return;
    }
    let every = Duration::from_secs(60) / per_minute as u32;
    let open: Rc<RefCell<Vec<tokio::task::JoinHandle<()>>>> = Rc::default();
    let mut n = 0;
    while Instant::now() + every < end {
        n += 1;
        if let Ok(mut conn) = Conn::open(addr, &format!("slow-{n}")).await {
            let _ = conn.subscribe(0, 600).await;
            let counts = counts.clone();
            // Never read until the nexus must have given up, then collect
            // its verdict (1008 slow consumer) and leave.
            open.borrow_mut().push(tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let mut closed = false;
                for _ in 0..200 {
                    match conn.read_some(Duration::from_millis(100), |_| {}).await {
                        Ok(true) => continue,
                        _ => {
                            closed = true;
                            break;
                        }
                    }
                }
                if closed {
                    add(&counts.slow_closed, 1);
                }
            }));
        }
        tokio::time::sleep(every).await;
    }
}

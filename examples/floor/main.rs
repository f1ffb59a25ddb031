//! `floor`: this machine's physical cost of a fan-out, the yardstick
//! `scripts/bench.sh` holds the nexus and the baseline against.
//!
//! A sender thread pinned to `--sender-cpu` publishes to `--sockets`
//! loopback TCP sockets: one `--message-size` send to each socket per
//! publish, either with one plain `send()` per socket (`--mode send`) or
//! with one io_uring submission of N send SQEs (`--mode uring`). A reader
//! thread pinned to `--reader-cpu` drains the other ends with epoll and
//! timestamps every message. Nothing else runs: no WebSocket, no parsing, no
//! routing. On loopback the sender's CPU also runs the receiver's TCP stack,
//! which is exactly what a server on loopback pays too.
//!
//! Prints one `FLOOR key=value ...` line (for scripts) and optionally the
//! per-delivery latency distribution (`--hgrm`, the same format as
//! `examples/stress`) and JSON.
//!
//! ```sh
//! cargo run --release --example floor -- --mode uring --rate 400 --duration 10
//! ```

#[path = "../stress/exit.rs"]
mod exit;
#[path = "../stress/hgrm.rs"]
mod hgrm;
mod reader;
mod sender;
#[path = "../stress/window.rs"]
mod window;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;
use hdrhistogram::Histogram;
use hgrm::hgrm;
use window::Window;

/// Measures this machine's cost per loopback delivery (see the module docs).
#[derive(FromArgs, Debug, Clone)]
struct Args {
    /// send: one send() per socket; uring: one io_uring submission of N send
    /// SQEs per publish (default send)
    #[argh(option, default = "String::from(\"send\")")]
    mode: String,
    /// sockets per fan-out (default 349: 350 clients minus the publisher)
    #[argh(option, default = "349")]
    sockets: usize,
    /// publishes per second; 0 = closed loop (default 400)
    #[argh(option, default = "400.0")]
    rate: f64,
    /// publishes in flight in closed-loop mode (default 32)
    #[argh(option, default = "32")]
    in_flight: u64,
    /// bytes per send (default 100: a 64-byte text in a `1r` frame)
    #[argh(option, default = "100")]
    message_size: usize,
    /// measured seconds (default 10)
    #[argh(option, default = "10.0")]
    duration: f64,
    /// seconds of load before measuring (default 1)
    #[argh(option, default = "1.0")]
    warmup: f64,
    /// CPU the sender is pinned to (default 0)
    #[argh(option, default = "0")]
    sender_cpu: usize,
    /// CPU the reader is pinned to (default 1)
    #[argh(option, default = "1")]
    reader_cpu: usize,
    /// write the per-delivery latency distribution (.hgrm) here
    #[argh(option)]
    hgrm: Option<String>,
    /// write the fan-out (publish to last delivery) distribution here
    #[argh(option)]
    fanout_hgrm: Option<String>,
    /// write the results as JSON here
    #[argh(option)]
    json: Option<String>,
}

/// How a publish reaches the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One `send()` system call per socket.
    Send,
    /// One `io_uring_enter` carrying every socket's send SQE.
    Uring,
}

/// State both threads share; touched once per publish or per read.
#[derive(Debug)]
pub struct Shared {
    /// The clock both threads stamp with.
    pub origin: Instant,
    /// Publishing starts here (ns since origin).
    pub measure_from_ns: AtomicU64,
    /// Publishing stops here.
    pub end_ns: AtomicU64,
    /// Fan-outs the reader has fully received.
    pub fanouts_done: AtomicU64,
    /// Set when the reader should stop.
    pub stop: AtomicBool,
}

impl Shared {
    /// Nanoseconds since `origin`.
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

fn main() {
    let args: Args = argh::from_env();
    exit::exit_on_error("floor", run(args));
}

fn run(args: Args) -> Result<(), String> {
    let mode = match args.mode.as_str() {
        "send" => Mode::Send,
        "uring" => Mode::Uring,
        other => return Err(format!("--mode must be send or uring, not {other:?}")),
    };
    if args.sockets == 0
        || args.message_size < 16
        || args.rate.is_nan()
        || args.rate < 0.0
        || args.duration <= 0.0
    {
        return Err("need --sockets > 0, --message-size >= 16, --rate >= 0, --duration > 0".into());
    }
    let (senders, receivers) =
        reader::socket_pairs(args.sockets).map_err(|e| format!("sockets: {e}"))?;
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        measure_from_ns: AtomicU64::new(u64::MAX),
        end_ns: AtomicU64::new(u64::MAX),
        fanouts_done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });

    let Window {
        start,
        measure_from,
        end,
    } = Window::new(shared.now_ns(), 20_000_000, args.warmup, args.duration);
    shared
        .measure_from_ns
        .store(measure_from, Ordering::Release);
    shared.end_ns.store(end, Ordering::Release);
    // The reader reads the window when it starts: set it first.
    let reader = {
        let shared = shared.clone();
        let (cpu, size, n) = (args.reader_cpu, args.message_size, args.sockets);
        std::thread::Builder::new()
            .name("floor-reader".into())
            .spawn(move || {
                pin(cpu);
                reader::run(receivers, size, n, &shared)
            })
            .map_err(|e| e.to_string())?
    };

    let plan = sender::Plan {
        mode,
        rate: args.rate,
        in_flight: args.in_flight.max(1),
        message_size: args.message_size,
        start_ns: start,
        cpu: args.sender_cpu,
    };
    let sent = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("floor-sender".into())
            .spawn(move || sender::run(&senders, &plan, &shared))
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|_| "the sender panicked".to_string())??
    };
    // Let the last fan-outs arrive, then stop the reader.
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared.fanouts_done.load(Ordering::Acquire) < sent.publishes_total
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    shared.stop.store(true, Ordering::Release);
    let seen = reader
        .join()
        .map_err(|_| "the reader panicked".to_string())?;

    let window = args.duration;
    let sends = sent.publishes_measured * args.sockets as u64;
    let per_send_us = sent.cpu_seconds * 1e6 / sends.max(1) as f64;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e6;
    let expected = sent.publishes_measured * args.sockets as u64;
    let lost = expected.saturating_sub(seen.delivered);
    let fields = [
        ("mode", args.mode.clone()),
        ("sockets", args.sockets.to_string()),
        ("rate", format!("{}", args.rate)),
        ("window_s", format!("{window:.3}")),
        ("publishes", sent.publishes_measured.to_string()),
        (
            "publish_rate",
            format!("{:.1}", sent.publishes_measured as f64 / window),
        ),
        ("sends", sends.to_string()),
        ("sends_per_s", format!("{:.0}", sends as f64 / window)),
        ("per_send_us", format!("{per_send_us:.3}")),
        ("sender_cpu", format!("{:.3}", sent.cpu_seconds / window)),
        (
            "reader_cpu",
            format!("{:.3}", seen.cpu_seconds / seen.wall_seconds.max(1e-9)),
        ),
        ("lost", lost.to_string()),
        ("delivery_p50_ms", format!("{:.4}", ms(&seen.delivery, 0.5))),
        (
            "delivery_p99_ms",
            format!("{:.4}", ms(&seen.delivery, 0.99)),
        ),
        (
            "delivery_p99_9_ms",
            format!("{:.4}", ms(&seen.delivery, 0.999)),
        ),
        ("fanout_p50_ms", format!("{:.4}", ms(&seen.fanout, 0.5))),
        ("fanout_p99_ms", format!("{:.4}", ms(&seen.fanout, 0.99))),
        (
            "fanout_max_ms",
            format!("{:.4}", seen.fanout.max() as f64 / 1e6),
        ),
    ];
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("FLOOR {}", line.join(" "));
    if let Some(path) = &args.json {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| match v.parse::<f64>() {
                Ok(_) => format!("\"{k}\": {v}"),
                Err(_) => format!("\"{k}\": \"{v}\""),
            })
            .collect();
        std::fs::write(path, format!("{{{}}}\n", body.join(", ")))
            .map_err(|e| format!("{path}: {e}"))?;
    }
    if let Some(path) = &args.hgrm {
        std::fs::write(path, hgrm(&seen.delivery)).map_err(|e| format!("{path}: {e}"))?;
    }
    if let Some(path) = &args.fanout_hgrm {
        std::fs::write(path, hgrm(&seen.fanout)).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// Pins the calling thread to `cpu` (a warning if that CPU does not exist).
pub fn pin(cpu: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        eprintln!("floor: could not pin a thread to CPU {cpu}");
    }
}

/// CPU seconds (user + system) the calling thread has used.
pub fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

//! A bystander: one publisher and one subscriber on the same shard, on a
//! channel no other shard uses, publishing every 5 ms while the abuse runs.
//! It measures publish → receive latency and counts lost messages. It runs
//! on its own thread and runtime so the abusers cannot delay its clock.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{self, Fate};
use crate::nexus::Target;
use crate::payload::{self, Stamp};
use crate::ws::{self, Incoming};

/// Interval between a bystander's messages.
const PERIOD: Duration = Duration::from_millis(5);
/// How long the subscriber may still receive after the publisher stops.
const DRAIN: Duration = Duration::from_secs(15);
/// Stamp publisher id of warm-up messages (not measured).
const WARM: u32 = 1;
/// With `ABUSE_TRACE_SLOW` set, deliveries slower than this are printed.
const SLOW_US: u64 = 5_000;

/// Prints one slow delivery with the CLOCK_MONOTONIC time it arrived, the
/// clock `perf record --clockid=monotonic` stamps its samples with, so the
/// moment can be found in a profile or a `perf sched timehist` of the
/// nexus (that is how the descriptor-table and huge-page stalls were found).
fn trace_slow_delivery(shard: usize, latency_us: u64) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    eprintln!(
        "slow delivery: shard {shard}, {:.1} ms, arrived at monotonic {}.{:06} s",
        latency_us as f64 / 1e3,
        now.tv_sec,
        now.tv_nsec / 1000
    );
}

/// What one bystander saw.
#[derive(Debug, Clone, Default)]
pub struct ProbeResult {
    /// Shard both its connections were on.
    pub shard: usize,
    /// Measured messages sent.
    pub sent: u64,
    /// Measured messages received.
    pub received: u64,
    /// Latency percentiles in ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Something went wrong with the bystander itself (closed, error).
    pub trouble: Option<String>,
}

impl ProbeResult {
    /// Messages sent but never received.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

/// A running bystander.
pub struct Probe {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<ProbeResult>,
}

impl Probe {
    /// Connects both ends on `shard` and warms the channel up; returns once
    /// measuring has begun.
    pub fn start(target: Target, shard: usize, tag: &str) -> Result<Probe, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let tag = tag.to_string();
        let handle = {
            let stop = stop.clone();
            thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    match run(target, shard, &tag, stop, &ready_tx).await {
                        Ok(result) => result,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.clone()));
                            ProbeResult {
                                shard,
                                trouble: Some(e),
                                ..Default::default()
                            }
                        }
                    }
                })
            })
        };
        match ready_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(())) => Ok(Probe { stop, handle }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("bystander did not get ready".into()),
        }
    }

    /// Stops publishing, waits for the stragglers, returns the figures.
    pub fn finish(self) -> ProbeResult {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_else(|_| ProbeResult {
            trouble: Some("bystander thread panicked".into()),
            ..Default::default()
        })
    }
}

/// What the subscriber's reader shares with the publisher loop.
struct Seen {
    warm: bool,
    received: u64,
    latency_us: Histogram<u64>,
    fate: Option<Fate>,
}

async fn run(
    target: Target,
    shard: usize,
    tag: &str,
    stop: Arc<AtomicBool>,
    ready: &mpsc::Sender<Result<(), String>>,
) -> Result<ProbeResult, String> {
    let origin = Instant::now();
    let channel = format!("bystander-{tag}");
    let sub = client::on_shard(&target, &format!("bystander-sub-{tag}"), shard).await?;
    let mut publisher = client::on_shard(&target, &format!("bystander-pub-{tag}"), shard).await?;
    let mut sub_write = sub.write;
    sub_write
        .write_all(&client::frame(&client::subscribe(&channel, 3600)))
        .await
        .map_err(|e| e.to_string())?;
    let seen = Rc::new(RefCell::new(Seen {
        warm: false,
        received: 0,
        latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram"),
        fate: None,
    }));
    {
        let seen = seen.clone();
        let mut read = sub.read;
        let mut pending = sub.pending;
        let trace_slow = std::env::var_os("ABUSE_TRACE_SLOW").is_some();
        tokio::task::spawn_local(async move {
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                let mut used = 0;
                while let Some((frame, n)) = ws::next_frame(&pending[used..]) {
                    used += n;
                    match frame {
                        Incoming::Text(text) => {
                            if let Some(stamp) = payload::parse_receive(text) {
                                let mut seen = seen.borrow_mut();
                                if stamp.publisher == WARM {
                                    seen.warm = true;
                                } else {
                                    let now = origin.elapsed().as_nanos() as u64;
                                    let us = now.saturating_sub(stamp.sent_ns) / 1000;
                                    seen.latency_us.saturating_record(us.max(1));
                                    if us > SLOW_US && trace_slow {
                                        trace_slow_delivery(shard, us);
                                    }
                                    seen.received += 1;
                                }
                            }
                        }
                        Incoming::Close(code) => {
                            seen.borrow_mut().fate = Some(Fate::Closed(code.unwrap_or(1005)));
                            return;
                        }
                        _ => {}
                    }
                }
                pending.drain(..used);
                match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        seen.borrow_mut().fate = Some(Fate::Dropped);
                        return;
                    }
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
    let send = |publisher_id: u32, seq: u64| {
        let mut text = Vec::new();
        let stamp = Stamp {
            publisher: publisher_id,
            channel: 0,
            seq,
            sent_ns: origin.elapsed().as_nanos() as u64,
        };
        payload::write_transmit(&mut text, &channel, stamp, 48);
        let mut frame = Vec::new();
        ws::push_text_frame(&mut frame, &text);
        frame
    };
    // Warm up: the subscription is in place once a message comes back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 0;
    while !seen.borrow().warm {
        if Instant::now() > deadline {
            return Err("bystander's warm-up message never arrived".into());
        }
        publisher
            .write
            .write_all(&send(WARM, seq))
            .await
            .map_err(|e| e.to_string())?;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = ready.send(Ok(()));
    let mut sent = 0u64;
    let mut trouble = None;
    let mut ticks = tokio::time::interval(PERIOD);
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        if let Err(e) = publisher.write.write_all(&send(0, sent)).await {
            trouble = Some(format!("bystander publisher: {e}"));
            break;
        }
        sent += 1;
    }
    let deadline = Instant::now() + DRAIN;
    loop {
        let done = {
            let seen = seen.borrow();
            seen.received >= sent || seen.fate.is_some()
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = seen.borrow();
    if let Some(fate) = &seen.fate {
        trouble.get_or_insert(format!("bystander subscriber {fate:?}"));
    }
    let ms = |q: f64| seen.latency_us.value_at_quantile(q) as f64 / 1000.0;
    Ok(ProbeResult {
        shard,
        sent,
        received: seen.received,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        max_ms: seen.latency_us.max() as f64 / 1000.0,
        trouble,
    })
}

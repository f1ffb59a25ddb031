//! The sending half: one publish = one send to every socket, paced or
//! closed-loop, by plain `send()` or by one io_uring submission.

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

use crate::{pin, thread_cpu_seconds, Mode, Shared};

/// What the sender does, fixed for the run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How a publish reaches the kernel.
    pub mode: Mode,
    /// Publishes per second (0: closed loop).
    pub rate: f64,
    /// Closed loop: publishes not yet fully received before waiting.
    pub in_flight: u64,
    /// Bytes per send.
    pub message_size: usize,
    /// When the first publish goes out (ns since origin).
    pub start_ns: u64,
    /// CPU to pin to.
    pub cpu: usize,
}

/// What the sender did.
#[derive(Debug)]
pub struct Sent {
    /// Publishes started inside the measured window.
    pub publishes_measured: u64,
    /// Every publish, warm-up included.
    pub publishes_total: u64,
    /// Thread CPU seconds spent publishing inside the window.
    pub cpu_seconds: f64,
}

/// Publishes until the window ends; returns the counts and CPU time.
pub fn run(sockets: &[TcpStream], plan: &Plan, shared: &Shared) -> Result<Sent, String> {
    pin(plan.cpu);
    let mut ring = match plan.mode {
        Mode::Send => None,
        Mode::Uring => {
            let entries = sockets.len().next_power_of_two().clamp(8, 4096) as u32;
            Some(IoUring::new(entries).map_err(|e| format!("io_uring: {e}"))?)
        }
    };
    let measure_from = shared.measure_from_ns.load(Ordering::Acquire);
    let end = shared.end_ns.load(Ordering::Acquire);
    let mut buf = vec![0u8; plan.message_size];
    let mut seq = 0u64;
    let mut measured = 0u64;
    let mut cpu_from: Option<f64> = None;
    loop {
        let now = shared.now_ns();
        if plan.rate > 0.0 {
            let due = plan.start_ns + (seq as f64 * 1e9 / plan.rate) as u64;
            if due > now {
                std::thread::sleep(Duration::from_nanos(due - now));
            }
        } else {
            wait_for_room(shared, seq, plan.in_flight, end);
        }
        let stamp = shared.now_ns();
        if stamp >= end {
            break;
        }
        if stamp >= measure_from {
            if cpu_from.is_none() {
                cpu_from = Some(thread_cpu_seconds());
            }
            measured += 1;
        }
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        buf[8..16].copy_from_slice(&stamp.to_le_bytes());
        match ring.as_mut() {
            None => publish_send(sockets, &buf)?,
            Some(ring) => publish_uring(ring, sockets, &buf)?,
        }
        seq += 1;
    }
    let cpu_seconds = cpu_from.map_or(0.0, |from| thread_cpu_seconds() - from);
    Ok(Sent {
        publishes_measured: measured,
        publishes_total: seq,
        cpu_seconds,
    })
}

/// Closed loop: waits while `in_flight` publishes are not fully received.
fn wait_for_room(shared: &Shared, seq: u64, in_flight: u64, end: u64) {
    while seq.saturating_sub(shared.fanouts_done.load(Ordering::Acquire)) >= in_flight
        && shared.now_ns() < end
    {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// One `send()` per socket.
fn publish_send(sockets: &[TcpStream], buf: &[u8]) -> Result<(), String> {
    for mut socket in sockets {
        socket.write_all(buf).map_err(|e| format!("send: {e}"))?;
    }
    Ok(())
}

/// One io_uring submission carrying every socket's send (in chunks of the
/// ring's size if there are more sockets than entries), then waits for all
/// completions. A short send (rare on blocking sockets) is finished with a
/// plain `send()`.
fn publish_uring(ring: &mut IoUring, sockets: &[TcpStream], buf: &[u8]) -> Result<(), String> {
    let chunk = ring.params().sq_entries() as usize;
    for (base, group) in sockets.chunks(chunk).enumerate() {
        {
            let mut sq = ring.submission();
            for (i, socket) in group.iter().enumerate() {
                let entry = opcode::Send::new(
                    types::Fd(socket.as_raw_fd()),
                    buf.as_ptr(),
                    buf.len() as u32,
                )
                .build()
                .user_data((base * chunk + i) as u64);
                // SAFETY: `buf` outlives the operation: we wait for every
                // completion below before returning.
                unsafe { sq.push(&entry) }.map_err(|_| "submission queue full".to_string())?;
            }
        }
        let mut left = group.len();
        ring.submit_and_wait(left)
            .map_err(|e| format!("io_uring_enter: {e}"))?;
        while left > 0 {
            let mut reaped = 0;
            for cqe in ring.completion() {
                reaped += 1;
                let n = cqe.result();
                if n < 0 {
                    return Err(format!(
                        "send SQE: {}",
                        std::io::Error::from_raw_os_error(-n)
                    ));
                }
                if (n as usize) < buf.len() {
                    let mut socket = &sockets[cqe.user_data() as usize];
                    socket
                        .write_all(&buf[n as usize..])
                        .map_err(|e| format!("send: {e}"))?;
                }
            }
            left -= reaped;
            if left > 0 {
                ring.submit_and_wait(left)
                    .map_err(|e| format!("io_uring_enter: {e}"))?;
            }
        }
    }
    Ok(())
}

//! The receiving half: loopback socket pairs and an epoll reader that
//! timestamps every message and notices when a fan-out is complete.

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use hdrhistogram::Histogram;

use crate::{thread_cpu_seconds, Shared};

/// Fan-outs tracked at once (a ring indexed by sequence number).
const SLOTS: usize = 1 << 16;

/// `n` connected loopback pairs: (sending ends, non-blocking receiving ends).
pub fn socket_pairs(n: usize) -> io::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut senders = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let receiver = TcpStream::connect(addr)?;
        let (sender, _) = listener.accept()?;
        sender.set_nodelay(true)?;
        receiver.set_nonblocking(true)?;
        senders.push(sender);
        receivers.push(receiver);
    }
    Ok((senders, receivers))
}

/// What the reader saw.
#[derive(Debug)]
pub struct Seen {
    /// Publish to receive, per delivery in the window, ns.
    pub delivery: Histogram<u64>,
    /// Publish to the last of its deliveries, per publish in the window, ns.
    pub fanout: Histogram<u64>,
    /// Deliveries of publishes in the window.
    pub delivered: u64,
    /// The reader thread's CPU seconds over the whole run.
    pub cpu_seconds: f64,
    /// The reader's whole run, seconds (warm-up and drain included).
    pub wall_seconds: f64,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    seq: u64,
    count: usize,
    latest: u64,
}

/// Drains `sockets` until told to stop.
pub fn run(sockets: Vec<TcpStream>, size: usize, fanout: usize, shared: &Shared) -> Seen {
    let cpu_from = thread_cpu_seconds();
    let wall_from = std::time::Instant::now();
    let histogram = || Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("bounds");
    let mut seen = Seen {
        delivery: histogram(),
        fanout: histogram(),
        delivered: 0,
        cpu_seconds: 0.0,
        wall_seconds: 0.0,
    };
    // SAFETY: plain epoll calls on descriptors we own for the whole loop.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epoll >= 0, "epoll_create1: {}", io::Error::last_os_error());
    for (i, socket) in sockets.iter().enumerate() {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        let rc =
            unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut event) };
        assert!(rc == 0, "epoll_ctl: {}", io::Error::last_os_error());
    }
    let mut carry: Vec<Vec<u8>> = vec![Vec::with_capacity(size); sockets.len()];
    let mut slots = vec![Slot::default(); SLOTS];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 64 * 1024];
    let measure_from = shared.measure_from_ns.load(Ordering::Acquire);
    let end = shared.end_ns.load(Ordering::Acquire);
    while !shared.stop.load(Ordering::Acquire) {
        let ready =
            unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 50) };
        for event in &events[..ready.max(0) as usize] {
            let i = event.u64 as usize;
            let mut socket = &sockets[i];
            loop {
                let n = match socket.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let now = shared.now_ns();
                let mut data = &buf[..n];
                let pending = &mut carry[i];
                while !data.is_empty() {
                    let take = (size - pending.len()).min(data.len());
                    pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if pending.len() < size {
                        break;
                    }
                    let seq = u64::from_le_bytes(pending[..8].try_into().expect("8 bytes"));
                    let stamp = u64::from_le_bytes(pending[8..16].try_into().expect("8 bytes"));
                    pending.clear();
                    let latency = now.saturating_sub(stamp);
                    let counted = stamp >= measure_from && stamp < end;
                    if counted {
                        seen.delivery.saturating_record(latency);
                        seen.delivered += 1;
                    }
                    let slot = &mut slots[seq as usize % SLOTS];
                    if slot.seq != seq || slot.count == 0 {
                        *slot = Slot {
                            seq,
                            count: 0,
                            latest: 0,
                        };
                    }
                    slot.count += 1;
                    slot.latest = slot.latest.max(latency);
                    if slot.count == fanout {
                        if counted {
                            seen.fanout.saturating_record(slot.latest);
                        }
                        slot.count = 0;
                        shared.fanouts_done.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
        }
    }
    unsafe { libc::close(epoll) };
    seen.cpu_seconds = thread_cpu_seconds() - cpu_from;
    seen.wall_seconds = wall_from.elapsed().as_secs_f64();
    seen
}

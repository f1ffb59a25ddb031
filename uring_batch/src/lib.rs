//! # uring_batch
//!
//! Many non-blocking socket sends in one io_uring submission: the nexus's
//! per-shard flusher hands over every connection's batch of a round and
//! the kernel gets them with one `io_uring_enter` instead of one `send()`
//! system call each. A batch in several pieces of memory goes as one
//! `sendmsg` gathering them.
//!
//! Every send carries `MSG_DONTWAIT`, which io_uring honours by failing a
//! send that would block with `EAGAIN` instead of parking it on a poll, so
//! all of them complete inside the submitting call. [`BatchSender::send_all`]
//! nevertheless waits for every completion before it returns (with a
//! timeout-and-cancel safety net), so the borrowed buffers outlive the
//! kernel's use of them: that is what makes the safe API sound.
//!
//! This is the only crate of the workspace with `unsafe` code (pushing
//! SQEs that point at caller memory).

#![warn(missing_docs)]

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

/// How long one wait for completions lasts before the sender checks on
/// them; non-blocking sends complete at once, so this is only a safety net.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// One send to the connected socket `fd`: the bytes of `parts`, in order
/// (one part goes as a `send`, more as one `sendmsg` gathering them, so
/// bytes already in memory elsewhere need not be copied together first).
#[derive(Debug, Clone, Copy)]
pub struct Send<'a> {
    /// A connected stream socket.
    pub fd: RawFd,
    /// The bytes to send, in order.
    pub parts: &'a [IoSlice<'a>],
}

/// An io_uring of its own for batched sends; one per thread.
pub struct BatchSender {
    ring: IoUring,
    /// The message headers of a group's gathering sends, alive until the
    /// group's entries completed.
    headers: Vec<libc::msghdr>,
    /// Sends per submission (the submission queue's size).
    chunk: usize,
    ext_arg: bool,
}

impl std::fmt::Debug for BatchSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSender")
            .field("chunk", &self.chunk)
            .finish()
    }
}

impl BatchSender {
    /// A ring taking up to `entries` sends per submission (rounded up to a
    /// power of two by the kernel).
    pub fn new(entries: u32) -> io::Result<Self> {
        let ring = IoUring::new(entries.max(1))?;
        let chunk = ring.params().sq_entries() as usize;
        let ext_arg = ring.params().is_feature_ext_arg();
        Ok(BatchSender {
            ring,
            headers: Vec::new(),
            chunk,
            ext_arg,
        })
    }

    /// Sends each buffer on its socket without waiting for room: one
    /// submission per `entries` sends. `results[i]` is what `sends[i]` did:
    /// the bytes the kernel took (maybe fewer than asked), or the error
    /// (`WouldBlock` when the socket's buffer is full).
    pub fn send_all(&mut self, sends: &[Send<'_>], results: &mut Vec<io::Result<usize>>) {
        results.clear();
        results.resize_with(sends.len(), || Ok(0));
        for (index, group) in sends.chunks(self.chunk).enumerate() {
            let base = index * self.chunk;
            self.submit_group(base, group, results);
        }
    }

    fn submit_group(&mut self, base: usize, group: &[Send<'_>], results: &mut [io::Result<usize>]) {
        // Every header first: the vector must not move once entries point
        // into it.
        self.headers.clear();
        for send in group.iter().filter(|send| send.parts.len() > 1) {
            // SAFETY: msghdr is plain data; all zero is an empty header.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            // IoSlice is ABI-compatible with iovec (std guarantees it).
            header.msg_iov = send.parts.as_ptr() as *mut libc::iovec;
            header.msg_iovlen = send.parts.len() as _;
            self.headers.push(header);
        }
        {
            let mut sq = self.ring.submission();
            let mut headers = self.headers.iter();
            for (i, send) in group.iter().enumerate() {
                let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
                let entry = match send.parts {
                    [] => opcode::Send::new(types::Fd(send.fd), std::ptr::null(), 0)
                        .flags(flags)
                        .build(),
                    [one] => {
                        let len = one.len().min(u32::MAX as usize) as u32;
                        opcode::Send::new(types::Fd(send.fd), one.as_ptr(), len)
                            .flags(flags)
                            .build()
                    }
                    _ => {
                        let header = headers.next().expect("one header per gathering send");
                        opcode::SendMsg::new(types::Fd(send.fd), header)
                            .flags(flags as u32)
                            .build()
                    }
                }
                .user_data((base + i) as u64);
                // SAFETY: the entry points at `send.parts` (and its header in
                // `self.headers`, untouched until the next group), which the
                // caller lends us for this call, and this function does not
                // return before the kernel has completed (or cancelled) every
                // entry. The group is at most the queue's size and the queue
                // is empty here, so the push cannot fail.
                unsafe { sq.push(&entry) }.expect("a group fits the submission queue");
            }
        }
        let mut left = group.len();
        let mut cancelled = false;
        while left > 0 {
            let waited = if self.ext_arg {
                let ts = types::Timespec::from(WAIT_SLICE);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(left, &args)
            } else {
                self.ring.submit_and_wait(left)
            };
            let timed_out = matches!(&waited, Err(e) if e.raw_os_error() == Some(libc::ETIME));
            for cqe in self.ring.completion() {
                let i = cqe.user_data() as usize;
                if i == usize::MAX {
                    continue; // a cancel request's own completion
                }
                let result = cqe.result();
                results[i] = if result < 0 {
                    Err(io::Error::from_raw_os_error(-result))
                } else {
                    Ok(result as usize)
                };
                left -= 1;
            }
            if left > 0 && timed_out && !cancelled {
                // A send did not complete at once after all: cancel what is
                // outstanding, then keep reaping until every entry is back.
                cancelled = true;
                for i in base..base + group.len() {
                    let cancel = opcode::AsyncCancel::new(i as u64)
                        .build()
                        .user_data(u64::MAX);
                    // SAFETY: a cancel entry points at no memory.
                    let _ = unsafe { self.ring.submission().push(&cancel) };
                }
            }
        }
        // Cancels may complete after the sends they target: drain them.
        if cancelled {
            let _ = self.ring.submit();
            for _ in self.ring.completion() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    #[test]
    fn many_sockets_in_one_call_arrive_whole() {
        let pairs: Vec<_> = (0..40).map(|_| pair()).collect();
        let mut sender = BatchSender::new(16).unwrap();
        let payloads: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("message {i}").into_bytes())
            .collect();
        let parts: Vec<[IoSlice<'_>; 1]> = payloads.iter().map(|p| [IoSlice::new(p)]).collect();
        let sends: Vec<Send<'_>> = pairs
            .iter()
            .zip(&parts)
            .map(|((server, _), parts)| Send {
                fd: server.as_raw_fd(),
                parts,
            })
            .collect();
        let mut results = Vec::new();
        sender.send_all(&sends, &mut results);
        for (i, ((_, client), payload)) in pairs.iter().zip(&payloads).enumerate() {
            assert_eq!(results[i].as_ref().ok(), Some(&payload.len()), "send {i}");
            let mut got = vec![0; payload.len()];
            (&*client).read_exact(&mut got).unwrap();
            assert_eq!(&got, payload);
        }
    }

    #[test]
    fn gathered_parts_arrive_in_order_beside_single_sends() {
        let pairs: Vec<_> = (0..6).map(|_| pair()).collect();
        let mut sender = BatchSender::new(4).unwrap();
        let words: [&[u8]; 3] = [b"one ", b"two ", b"three"];
        let gathered: Vec<IoSlice<'_>> = words.iter().map(|w| IoSlice::new(w)).collect();
        let single = [IoSlice::new(b"alone")];
        let sends: Vec<Send<'_>> = pairs
            .iter()
            .enumerate()
            .map(|(i, (server, _))| Send {
                fd: server.as_raw_fd(),
                parts: if i % 2 == 0 { &gathered } else { &single },
            })
            .collect();
        let mut results = Vec::new();
        sender.send_all(&sends, &mut results);
        for (i, (_, client)) in pairs.iter().enumerate() {
            let want: &[u8] = if i % 2 == 0 {
                b"one two three"
            } else {
                b"alone"
            };
            assert_eq!(results[i].as_ref().ok(), Some(&want.len()), "send {i}");
            let mut got = vec![0; want.len()];
            (&*client).read_exact(&mut got).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_full_socket_says_would_block_at_once() {
        let (server, _client) = pair();
        let mut sender = BatchSender::new(4).unwrap();
        let chunk = vec![7u8; 1 << 20];
        let started = Instant::now();
        let mut results = Vec::new();
        // The peer never reads: after a few MB the socket is full.
        for _ in 0..256 {
            sender.send_all(
                &[Send {
                    fd: server.as_raw_fd(),
                    parts: &[IoSlice::new(&chunk)],
                }],
                &mut results,
            );
            if let Err(e) = &results[0] {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
                assert!(started.elapsed() < Duration::from_secs(5), "never waits");
                return;
            }
        }
        panic!("the socket never filled up");
    }

    #[test]
    fn a_closed_peer_is_an_error_not_a_signal() {
        let (server, client) = pair();
        drop(client);
        let mut sender = BatchSender::new(4).unwrap();
        let mut results = Vec::new();
        let mut failed = false;
        for _ in 0..10 {
            sender.send_all(
                &[Send {
                    fd: server.as_raw_fd(),
                    parts: &[IoSlice::new(b"hello")],
                }],
                &mut results,
            );
            if results[0].is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            failed,
            "writing to a closed peer fails (EPIPE/ECONNRESET), it does not kill us"
        );
    }
}

//! Listening sockets shared by all shards through `SO_REUSEPORT`, and their
//! retirement from the group without resetting queued connections.
//!
//! glommio's own `TcpListener::bind` fixes the backlog at 1024; a reconnect
//! storm of thousands of game servers needs more, so the sockets are built
//! here with socket2 and handed to glommio as raw file descriptors.
//!
//! **Why retiring needs care.** Dropping a glommio listener does not take
//! its socket out of the `SO_REUSEPORT` group: a pending io_uring accept (and
//! the ring until the process's io_uring teardown finishes) holds a reference
//! to the file, so the socket keeps listening. The kernel keeps hashing new
//! connections to it; nobody accepts them, and they are reset when the
//! last reference goes, up to the process's exit. [`Listener::accept_until`]
//! instead retires the socket while it is still open: it takes what is
//! already queued with non-blocking `accept`, then `shutdown(SHUT_RD)`,
//! which on a listening socket runs `tcp_disconnect` → `inet_csk_listen_stop`
//! and unhashes it from the group at once, whatever holds the file. From then
//! on new connections go to the group's other sockets (a successor process
//! bound to the same port), or are refused if there is none. What is left is
//! the instant between the last queued accept and the unhash, and handshakes
//! still in flight then: the kernel migrates those to another socket of the
//! group only with `net.ipv4.tcp_migrate_req=1`, and otherwise resets them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// How long a retired listener's pending accept may still deliver a
/// connection that raced the unhash.
const PENDING_ACCEPT_GRACE: Duration = Duration::from_millis(200);

/// Binds one listening socket per shard on `addr`, all with `SO_REUSEPORT`.
///
/// Port 0 is resolved once by the first socket; the others bind the port the
/// kernel chose, so every shard serves the same address. `TCP_NODELAY` is set
/// on the listeners and inherited by every accepted connection: the server
/// batches its own writes, so Nagle would only add latency.
pub fn bind_reuseport(addr: SocketAddr, count: usize, backlog: u32) -> io::Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nodelay(true)?;
        socket.bind(&bound.into())?;
        socket.listen(backlog.min(i32::MAX as u32) as i32)?;
        if bound.port() == 0 {
            bound = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("listener has no inet address"))?;
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Hands a bound, listening socket to the current glommio executor.
///
/// # Panics
/// If called outside a glommio executor.
pub fn adopt(socket: Socket) -> Listener {
    use std::os::fd::IntoRawFd;
    let fd = socket.into_raw_fd();
    // SAFETY: the descriptor comes from a listening socket we own and
    // give up here; glommio takes ownership of it.
    let inner = unsafe { TcpListener::from_raw_fd(fd) };
    Listener { inner, fd }
}

/// A glommio listener that remembers its descriptor (glommio does not
/// expose it), so it can be retired from its `SO_REUSEPORT` group.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    /// Owned by `inner`; valid as long as it lives.
    fd: RawFd,
}

/// What [`Listener::accept_until`] returns.
#[derive(Debug)]
pub enum Accepted {
    /// The next connection (or the accept error).
    Connection(io::Result<TcpStream>),
    /// `stop` resolved: the listener left its group; these connections were
    /// already queued (or raced the unhash) and are the caller's to serve.
    Retired(Vec<TcpStream>),
}

impl Deref for Listener {
    type Target = TcpListener;

    fn deref(&self) -> &TcpListener {
        &self.inner
    }
}

impl Listener {
    /// The glommio listener itself, for callers that never retire it.
    pub fn into_inner(self) -> TcpListener {
        self.inner
    }

    /// The next connection, or, once `stop` resolves, the listener retired
    /// from its group (see the module doc) with the connections it held.
    /// The pending accept stays armed while retiring, so a connection it
    /// takes in that instant is returned too, never lost.
    pub async fn accept_until(&self, stop: impl Future<Output = ()>) -> Accepted {
        let mut accept = pin!(self.inner.accept());
        let mut stop = pin!(stop);
        let first = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = accept.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        if let Some(result) = first {
            return Accepted::Connection(result.map_err(io::Error::from));
        }
        // The accept is still armed here: whatever it takes is kept.
        let mut streams = self.retire();
        // After the unhash the pending accept fails at once (the socket no
        // longer listens), unless it won a connection in the meantime.
        let raced = futures_lite::future::or(async { Some(accept.await) }, async {
            glommio::timer::sleep(PENDING_ACCEPT_GRACE).await;
            None
        })
        .await;
        if let Some(Ok(stream)) = raced {
            streams.push(stream);
        }
        Accepted::Retired(streams)
    }

    /// Accepts what is queued without waiting, then unhashes the socket
    /// from its `SO_REUSEPORT` group with `shutdown(SHUT_RD)`.
    fn retire(&self) -> Vec<TcpStream> {
        // SAFETY: `fd` belongs to `inner`, which outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let socket = SockRef::from(&fd);
        let mut streams = Vec::new();
        if let Err(e) = socket.set_nonblocking(true) {
            tracing::warn!(error = %e, "listener: cannot make non-blocking to retire");
        } else {
            loop {
                match socket.accept() {
                    Ok((conn, _)) => {
                        use std::os::fd::IntoRawFd;
                        // SAFETY: a fresh connected socket we own.
                        streams.push(unsafe { TcpStream::from_raw_fd(conn.into_raw_fd()) });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "listener: accept while retiring");
                        break;
                    }
                }
            }
        }
        if let Err(e) = socket.shutdown(std::net::Shutdown::Read) {
            tracing::warn!(error = %e, "listener: shutdown(SHUT_RD) failed; it stays in the group until closed");
        }
        streams
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_resolved_once_for_every_shard() {
        let sockets = bind_reuseport("127.0.0.1:0".parse().unwrap(), 3, 128).unwrap();
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().unwrap().as_socket().unwrap().port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
        assert!(sockets[0].reuse_port().unwrap());
        assert!(sockets[0].nodelay().unwrap());
    }
}

//! Listening sockets shared by all shards through `SO_REUSEPORT`.
//!
//! glommio's own `TcpListener::bind` fixes the backlog at 1024; a reconnect
//! storm of thousands of game servers needs more, so the sockets are built
//! here with socket2 and handed to glommio as raw file descriptors.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds one listening socket per shard on `addr`, all with `SO_REUSEPORT`.
///
/// Port 0 is resolved once by the first socket; the others bind the port the
/// kernel chose, so every shard serves the same address. `TCP_NODELAY` is set
/// on the listeners and inherited by every accepted connection: the nexus
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
pub fn adopt(socket: Socket) -> glommio::net::TcpListener {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor comes from a listening socket we own and
    // give up here; glommio takes ownership of it.
    unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) }
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

//! ws and wss for the load generator (and the plain TCP that Redis and NATS
//! run over): where a URL points, and the two kinds of connection behind
//! one pair of traits, so a client's task is generic over them (no dynamic
//! dispatch, and the plain path is the same tokio calls it always was).
//!
//! A wss connection drives rustls directly once its handshake (done by
//! `tokio_rustls::TlsConnector`) is over: ciphertext is read with one
//! `try_read` of up to 32 KiB into a thread-wide scratch buffer and fed to
//! rustls from there, rather than rustls reading the socket 4 KiB at a time
//! through an async adapter; the decrypted frames land in the same scratch
//! buffer a plain connection reads into. Writes are sealed into a buffer of
//! the connection's own and written with one `write_all`, under the same
//! lock that orders a plain connection's writes.

use std::cell::RefCell;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConnection;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::ws;

/// Ciphertext read at once from a wss socket. The plaintext it decrypts to,
/// with at most one partial record left from before, fits the 64 KiB
/// scratch buffer the reader hands over.
const CIPHER_READ: usize = 32 * 1024;

/// What a URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`: EaseChat v1 over WebSocket, plain TCP.
    Ws,
    /// `wss://`: the same over TLS.
    Wss,
    /// `redis://`: Redis pub/sub (RESP), plain TCP.
    Redis,
    /// `nats://`: the NATS client protocol, plain TCP.
    Nats,
}

impl Scheme {
    /// The protocol family: ws and wss are one.
    pub fn family(self) -> &'static str {
        match self {
            Scheme::Ws | Scheme::Wss => "ws",
            Scheme::Redis => "redis",
            Scheme::Nats => "nats",
        }
    }
}

/// Where a URL points.
#[derive(Debug, Clone)]
pub struct Target {
    /// ws or wss.
    pub scheme: Scheme,
    /// The address connected to.
    pub addr: SocketAddr,
    /// `host:port` as written, for the `Host` header.
    pub host_port: String,
    /// The host as written (brackets of an IPv6 literal removed), for SNI
    /// and the certificate check.
    pub host: String,
    /// The request path (`/` when none).
    pub path: String,
}

impl Target {
    /// Parses `ws://host[:port][/path]`, `wss://…`, `redis://host[:port]`
    /// or `nats://host[:port]` (ports default to 80, 443, 6379 and 4222).
    pub fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest, default_port) = if let Some(rest) = url.strip_prefix("ws://") {
            (Scheme::Ws, rest, 80)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (Scheme::Wss, rest, 443)
        } else if let Some(rest) = url.strip_prefix("redis://") {
            (Scheme::Redis, rest, 6379)
        } else if let Some(rest) = url.strip_prefix("nats://") {
            (Scheme::Nats, rest, 4222)
        } else {
            return Err(format!(
                "{url}: a URL must start with ws://, wss://, redis:// or nats://"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or(format!("{url}: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port: u16 = match port {
            Some(p) => p.parse().map_err(|_| format!("{url}: bad port {p:?}"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => (host, port)
                .to_socket_addrs()
                .map_err(|e| format!("{host}: {e}"))?
                .next()
                .ok_or(format!("{host}: no address"))?,
        };
        Ok(Target {
            scheme,
            addr,
            host_port: authority.to_string(),
            host: host.to_string(),
            path,
        })
    }

    /// The name the server's certificate must carry: a DNS name or an IP
    /// address (an IP literal is checked against the certificate's IP SANs).
    pub fn server_name(&self) -> Result<ServerName<'static>, String> {
        ServerName::try_from(self.host.clone())
            .map_err(|e| format!("{}: not a TLS server name: {e}", self.host))
    }
}

/// Client settings trusting exactly the CA certificates in `ca_file` (PEM),
/// offering ALPN `http/1.1`. Session resumption is off: every connection
/// makes a full handshake, as distinct real clients do (a connect storm
/// must cost the nexus what a fleet reconnecting after a restart costs it).
pub fn client_config(ca_file: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("{ca_file}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{ca_file}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{ca_file}: not a CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{ca_file}: no PEM certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The read half of a connection.
pub trait RecvHalf: 'static {
    /// Waits until [`RecvHalf::try_read`] may have something.
    async fn readable(&self) -> io::Result<()>;
    /// Reads what is there into `buf` (plaintext): `Ok(0)` is the end of
    /// the stream, `WouldBlock` means wait again.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

/// The write half of a connection.
pub trait SendHalf: 'static {
    /// Writes all of `bytes` (plaintext).
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Closes the sending side (a protocol without a goodbye message: the
    /// server closes when it reads the end of the stream).
    async fn shutdown(&mut self) -> io::Result<()>;
}

impl RecvHalf for OwnedReadHalf {
    async fn readable(&self) -> io::Result<()> {
        OwnedReadHalf::readable(self).await
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        OwnedReadHalf::try_read(self, buf)
    }
}

impl SendHalf for OwnedWriteHalf {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        AsyncWriteExt::shutdown(self).await
    }
}

/// How a connection is opened: plain, or with a TLS handshake first.
pub trait Transport: 'static {
    /// Its read half.
    type Recv: RecvHalf;
    /// Its write half.
    type Send: SendHalf;
    /// Connects to `target` (the TLS handshake included).
    async fn open(target: &Target, tls: &Tls) -> Result<(Self::Recv, Self::Send), String>;
}

/// ws.
pub struct Plain;

impl Transport for Plain {
    type Recv = OwnedReadHalf;
    type Send = OwnedWriteHalf;

    async fn open(target: &Target, _: &Tls) -> Result<(OwnedReadHalf, OwnedWriteHalf), String> {
        let tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(tcp.into_split())
    }
}

/// What a thread's wss connections share: the client settings and the
/// scratch buffer ciphertext is read into.
#[derive(Clone)]
pub struct Tls {
    /// `None` when no URL is wss.
    pub config: Option<Arc<rustls::ClientConfig>>,
    /// Ciphertext scratch ([`CIPHER_READ`] bytes), borrowed only inside
    /// one synchronous `try_read`.
    pub scratch: Rc<RefCell<Vec<u8>>>,
}

impl Tls {
    /// Settings for one thread.
    pub fn new(config: Option<Arc<rustls::ClientConfig>>) -> Tls {
        Tls {
            config,
            scratch: Rc::new(RefCell::new(vec![0u8; CIPHER_READ])),
        }
    }
}

/// wss.
pub struct Secure;

/// A wss connection's read half: the socket's and the shared TLS state.
pub struct TlsRecv {
    tcp: OwnedReadHalf,
    conn: Rc<RefCell<ClientConnection>>,
    scratch: Rc<RefCell<Vec<u8>>>,
    /// Decrypted bytes rustls still holds (the last `buf` was too small).
    buffered: bool,
}

/// A wss connection's write half.
pub struct TlsSend {
    tcp: OwnedWriteHalf,
    conn: Rc<RefCell<ClientConnection>>,
    /// Sealed records on their way out.
    records: Vec<u8>,
}

impl Transport for Secure {
    type Recv = TlsRecv;
    type Send = TlsSend;

    async fn open(target: &Target, tls: &Tls) -> Result<(TlsRecv, TlsSend), String> {
        let config = tls
            .config
            .clone()
            .ok_or("a wss URL needs --ca FILE (the CA to trust)")?;
        let name = target.server_name()?;
        let tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (tcp, mut conn) = stream.into_inner();
        // Sends are sealed whole and drained at once: no limit needed.
        conn.set_buffer_limit(None);
        let (read, write) = tcp.into_split();
        let conn = Rc::new(RefCell::new(conn));
        Ok((
            TlsRecv {
                tcp: read,
                conn: conn.clone(),
                scratch: tls.scratch.clone(),
                buffered: false,
            },
            TlsSend {
                tcp: write,
                conn,
                records: Vec::new(),
            },
        ))
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsRecv {
    /// Moves decrypted bytes into `buf[*filled..]`; false when `buf` filled
    /// up before rustls ran out.
    fn drain(conn: &mut ClientConnection, buf: &mut [u8], filled: &mut usize) -> io::Result<bool> {
        while *filled < buf.len() {
            match conn.reader().read(&mut buf[*filled..]) {
                Ok(0) => return Ok(true), // close_notify: nothing more
                Ok(n) => *filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

impl RecvHalf for TlsRecv {
    async fn readable(&self) -> io::Result<()> {
        if self.buffered {
            return Ok(());
        }
        self.tcp.readable().await
    }

    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut conn = self.conn.borrow_mut();
        let mut filled = 0;
        if self.buffered {
            self.buffered = !Self::drain(&mut conn, buf, &mut filled)?;
            if filled > 0 {
                return Ok(filled);
            }
            // Nothing was left after all: on to the socket.
        }
        let mut scratch = self.scratch.borrow_mut();
        let n = self.tcp.try_read(&mut scratch[..])?;
        if n == 0 {
            return Ok(0);
        }
        let mut input = &scratch[..n];
        while !input.is_empty() {
            // rustls takes at most a few KiB per call. (Nothing the nexus
            // sends asks a client for a TLS answer; one would leave with the
            // next write.)
            if conn.read_tls(&mut input)? == 0 {
                return Err(io::Error::other("rustls took no ciphertext"));
            }
            let state = conn.process_new_packets().map_err(tls_error)?;
            if !Self::drain(&mut conn, buf, &mut filled)? {
                // Only possible if `buf` is smaller than the scratch:
                // what is left waits in rustls for the next call.
                self.buffered = true;
                if !input.is_empty() {
                    return Err(io::Error::other("read buffer too small for a TLS read"));
                }
                break;
            }
            if state.peer_has_closed() && filled == 0 {
                return Ok(0);
            }
        }
        if filled == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(filled)
    }
}

impl SendHalf for TlsSend {
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.records.clear();
        {
            let mut conn = self.conn.borrow_mut();
            conn.writer().write_all(bytes)?;
            while conn.wants_write() {
                conn.write_tls(&mut self.records)?;
            }
        }
        self.tcp.write_all(&self.records).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.records.clear();
        {
            let mut conn = self.conn.borrow_mut();
            conn.send_close_notify();
            while conn.wants_write() {
                conn.write_tls(&mut self.records)?;
            }
        }
        self.tcp.write_all(&self.records).await?;
        AsyncWriteExt::shutdown(&mut self.tcp).await
    }
}

/// Opens a connection to `target` and upgrades it, reading through the
/// thread's `scratch` (64 KiB, borrowed only between a wake-up and the
/// copy out); returns its halves and any bytes that followed the upgrade
/// response.
pub async fn open_upgraded<T: Transport>(
    target: &Target,
    tls: &Tls,
    scratch: &RefCell<Vec<u8>>,
) -> Result<(T::Recv, T::Send, Vec<u8>), String> {
    let (mut read, mut write) = T::open(target, tls).await?;
    write
        .send(&ws::upgrade_request(&target.host_port, &target.path))
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let used = loop {
        read.readable().await.map_err(|e| e.to_string())?;
        let chunk = &mut *scratch.borrow_mut();
        let n = match read.try_read(chunk) {
            Ok(0) => return Err("closed during upgrade".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.to_string()),
        };
        response.extend_from_slice(&chunk[..n]);
        if let Some(used) = ws::parse_upgrade_response(&response).map_err(|e| e.to_string())? {
            break used;
        }
    };
    Ok((read, write, response.split_off(used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_targets() {
        let t = Target::parse("wss://127.0.0.1:6543").unwrap();
        assert_eq!(t.scheme, Scheme::Wss);
        assert_eq!(t.addr, "127.0.0.1:6543".parse().unwrap());
        assert_eq!(
            (t.host_port.as_str(), t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:6543", "127.0.0.1", "/")
        );
        assert!(matches!(t.server_name().unwrap(), ServerName::IpAddress(_)));

        let t = Target::parse("ws://[::1]:6500/?token=abc").unwrap();
        assert_eq!(t.scheme, Scheme::Ws);
        assert_eq!(t.addr, "[::1]:6500".parse().unwrap());
        assert_eq!((t.host.as_str(), t.path.as_str()), ("::1", "/?token=abc"));

        let t = Target::parse("wss://localhost").unwrap();
        assert_eq!(t.addr.port(), 443);
        assert!(matches!(t.server_name().unwrap(), ServerName::DnsName(_)));

        let t = Target::parse("redis://127.0.0.1:16500").unwrap();
        assert_eq!((t.scheme, t.addr.port()), (Scheme::Redis, 16500));
        let t = Target::parse("nats://127.0.0.1").unwrap();
        assert_eq!((t.scheme, t.addr.port()), (Scheme::Nats, 4222));

        assert!(Target::parse("http://127.0.0.1:80").is_err());
        assert!(Target::parse("ws://127.0.0.1:notaport").is_err());
        assert!(Target::parse("ws://:80").is_err());
    }
}

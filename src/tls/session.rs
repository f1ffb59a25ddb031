//! One wss connection's TLS state. (Its handshake is driven by
//! [`crate::session::stream::SharedStream::tls_handshake`], paced by the
//! shard's [`crate::session::gate::WorkGate`].)
//!
//! The socket stays the connection's plain glommio stream; this side holds
//! the rustls state between the two. Reads pull ciphertext from the socket
//! only when no decrypted byte is waiting. Writes are never made here once
//! the connection runs: the writer seals each round's frames into the
//! connection's send buffer ([`TlsSession::seal`]), so every byte leaves
//! through one path and records stay in order. What the read side makes
//! rustls want to send (a key update, an alert) wakes the writer through
//! [`TlsSession::set_output_hook`].

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

pub use crate::access::CertificateIdentity;

/// Most ciphertext bytes a client may send before its handshake completes:
/// a ClientHello with large key shares fits well inside; a client streaming
/// garbage or an endless handshake does not. Held bytes are also charged to
/// the shard's `--max-partial-bytes` while the handshake runs.
pub const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;
/// The same bound with mutual TLS, where the client's certificate chain
/// comes in the handshake too.
pub const MAX_HANDSHAKE_BYTES_MUTUAL: usize = 48 * 1024;

/// A connection's TLS state; shared by its reader and writer like the
/// socket, each borrow lasting one synchronous call.
pub struct TlsSession {
    conn: RefCell<ServerConnection>,
    /// Ciphertext bytes read from the socket after the handshake: a
    /// reader's fair share counts these, not only the plaintext they carried.
    ciphertext_in: Cell<u64>,
    /// Wakes the writer when the read side queued records to send.
    output_hook: RefCell<Option<Box<dyn Fn()>>>,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.borrow().is_handshaking())
            .finish_non_exhaustive()
    }
}

/// The socket seen through a poll context, as rustls's blocking-style
/// `read_tls`/`write_tls` expect it: `Pending` becomes `WouldBlock` (with
/// the waker registered).
struct Polled<'a, 'b> {
    tcp: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for Polled<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_read(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Polled<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsSession {
    /// A server-side session with the certificates in force now.
    pub fn new(config: Arc<ServerConfig>) -> io::Result<Self> {
        let mut conn = ServerConnection::new(config).map_err(invalid)?;
        // The writer drains rustls into the send buffer after every seal,
        // and the outbox bounds what one seal carries.
        conn.set_buffer_limit(None);
        Ok(TlsSession {
            conn: RefCell::new(conn),
            ciphertext_in: Cell::new(0),
            output_hook: RefCell::new(None),
        })
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.conn.borrow().is_handshaking()
    }

    /// Whether rustls holds records to send.
    pub fn wants_write(&self) -> bool {
        self.conn.borrow().wants_write()
    }

    /// Reads one chunk of ciphertext from the socket into rustls, without
    /// processing it: the handshake processes under the shard's start gate.
    /// `Ok(0)` is the end of the stream.
    pub fn poll_read_tls(
        &self,
        tcp: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match self.conn.borrow_mut().read_tls(&mut Polled { tcp, cx }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            other => Poll::Ready(other),
        }
    }

    /// Processes what [`TlsSession::poll_read_tls`] read: the handshake's
    /// crypto. On error rustls queues an alert for the peer.
    pub fn process(&self) -> io::Result<()> {
        self.conn
            .borrow_mut()
            .process_new_packets()
            .map(drop)
            .map_err(invalid)
    }

    /// Reads decrypted bytes into `buf`, pulling ciphertext from the socket
    /// only when none is waiting. `Ok(0)` is the end of the stream (with or
    /// without the peer's close_notify).
    pub fn poll_read(
        &self,
        tcp: &mut TcpStream,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut conn = self.conn.borrow_mut();
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e)),
            }
            match conn.read_tls(&mut Polled {
                tcp: &mut *tcp,
                cx: &mut *cx,
            }) {
                Ok(0) => return Poll::Ready(Ok(0)),
                Ok(n) => {
                    self.ciphertext_in.set(self.ciphertext_in.get() + n as u64);
                    let processed = conn.process_new_packets().map(drop).map_err(invalid);
                    if conn.wants_write() {
                        drop(conn);
                        self.wake_writer();
                        conn = self.conn.borrow_mut();
                    }
                    processed?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Ciphertext bytes the connection has read since its handshake.
    pub fn ciphertext_in(&self) -> u64 {
        self.ciphertext_in.get()
    }

    fn wake_writer(&self) {
        if let Some(hook) = self.output_hook.borrow().as_ref() {
            hook();
        }
    }

    /// Called whenever reading left records to send; the writer sets it
    /// when it takes over the connection's writes.
    pub fn set_output_hook(&self, hook: Box<dyn Fn()>) {
        *self.output_hook.borrow_mut() = Some(hook);
    }

    /// Encrypts `plaintext` and appends the records, with anything else
    /// rustls had queued, to `out`: the one copy of a frame a wss
    /// connection costs beyond a ws one, plus the encryption itself.
    pub fn seal(&self, plaintext: &[u8], out: &mut Vec<u8>) {
        let mut conn = self.conn.borrow_mut();
        if !plaintext.is_empty() {
            // With no buffer limit rustls takes everything.
            let _ = conn.writer().write_all(plaintext);
        }
        while conn.wants_write() {
            // Writing into a Vec cannot fail.
            if conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Queues a close_notify alert (sent by the next seal).
    pub fn close_notify(&self) {
        self.conn.borrow_mut().send_close_notify();
    }

    /// The identity the client's verified certificate stands for (mutual
    /// TLS), if it presented one, with the certificate's expiry.
    pub fn peer_identity(&self) -> Option<CertificateIdentity> {
        let conn = self.conn.borrow();
        let leaf = conn.peer_certificates()?.first()?;
        Some(CertificateIdentity {
            name: super::identity::of_client(leaf)?,
            not_after: super::identity::not_after(leaf).and_then(|t| u64::try_from(t).ok()),
        })
    }

    /// The negotiated protocol version and cipher suite, for the logs.
    pub fn negotiated(&self) -> String {
        let conn = self.conn.borrow();
        match (conn.protocol_version(), conn.negotiated_cipher_suite()) {
            (Some(version), Some(suite)) => format!("{version:?} {:?}", suite.suite()),
            _ => "none".into(),
        }
    }
}

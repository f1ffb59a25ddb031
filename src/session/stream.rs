//! One TCP stream shared by a connection's reader and writer tasks.
//!
//! glommio's `TcpStream` keeps separate read and write readiness sources, so
//! the two tasks of a connection can share it through an `Rc<RefCell<_>>`:
//! each borrow lasts only for one synchronous poll, never across an await.
//!
//! A wss connection also carries its [`TlsSession`]: reads and
//! [`SharedStream::write_all`] then speak plaintext through it, while the
//! writer's raw calls ([`SharedStream::poll_write_some`],
//! [`SharedStream::raw_fd`], [`SharedStream::write_all_raw`]) move bytes
//! the writer has already sealed.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::gate::WorkGate;
use crate::outbox::Outbox;
use crate::tls::TlsSession;

/// What a read produced.
#[derive(Debug)]
pub enum ReadOutcome {
    /// This many bytes are at the start of the scratch buffer.
    Data(usize),
    /// The peer closed its side.
    Eof,
    /// The connection's outbox closed (slow consumer, shutdown): stop reading.
    Closing,
    /// The socket failed (reset, timeout).
    Failed(io::Error),
}

/// A cloneable handle to one connection's socket.
#[derive(Clone)]
pub struct SharedStream(Rc<Inner>);

struct Inner {
    tcp: RefCell<TcpStream>,
    /// Boxed: a rustls session is over a kilobyte, and a ws connection
    /// should not carry its room.
    tls: Option<Box<TlsSession>>,
}

impl SharedStream {
    /// Wraps an accepted stream; `tls` for a wss connection.
    pub fn new(stream: TcpStream, tls: Option<TlsSession>) -> Self {
        SharedStream(Rc::new(Inner {
            tcp: RefCell::new(stream),
            tls: tls.map(Box::new),
        }))
    }

    /// The TLS state of a wss connection.
    pub fn tls(&self) -> Option<&TlsSession> {
        self.0.tls.as_deref()
    }

    /// One poll for plaintext: decrypted for wss.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut tcp = self.0.tcp.borrow_mut();
        match &self.0.tls {
            None => Pin::new(&mut *tcp).poll_read(cx, buf),
            Some(tls) => tls.poll_read(&mut tcp, cx, buf),
        }
    }

    /// Reads into `buf`.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Reads into a buffer shared by many connections of one thread. The
    /// buffer is borrowed only inside each poll, so every connection can
    /// wait on it at once; the caller must consume the bytes before its
    /// next await.
    pub async fn read_shared(&self, scratch: &RefCell<Vec<u8>>) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx, &mut scratch.borrow_mut()[..])).await
    }

    /// Like [`SharedStream::read_shared`], reading at most `limit` bytes,
    /// but stops as soon as `outbox` starts closing (slow consumer, shutdown).
    /// `waited` is set when the read had to wait for input (it did not
    /// complete on its first poll).
    pub async fn read_scratch(
        &self,
        scratch: &RefCell<Vec<u8>>,
        limit: usize,
        outbox: &Outbox,
        waited: &mut bool,
    ) -> ReadOutcome {
        *waited = false;
        let mut polls = 0u32;
        let outcome = poll_fn(|cx| {
            polls += 1;
            if outbox.poll_closing(cx).is_ready() {
                return Poll::Ready(ReadOutcome::Closing);
            }
            let mut buf = scratch.borrow_mut();
            let end = limit.min(buf.len());
            match self.poll_read(cx, &mut buf[..end]) {
                Poll::Ready(Ok(0)) => Poll::Ready(ReadOutcome::Eof),
                Poll::Ready(Ok(n)) => Poll::Ready(ReadOutcome::Data(n)),
                Poll::Ready(Err(e)) => Poll::Ready(ReadOutcome::Failed(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        *waited = polls > 1;
        outcome
    }

    /// Runs a wss connection's TLS handshake to its end (nothing for ws):
    /// at most `max_bytes` from the client, each held byte charged through
    /// `charge(old, new)` (the shard's partial-input budget; `false` refuses),
    /// each step paced by the shard's `gate`. The caller bounds it in time
    /// and gives the charge back. On a failure rustls's alert is sent first.
    pub async fn tls_handshake(
        &self,
        gate: &WorkGate,
        max_bytes: usize,
        charge: &dyn Fn(usize, usize) -> bool,
    ) -> io::Result<()> {
        let Some(tls) = &self.0.tls else {
            return Ok(());
        };
        let mut received = 0;
        loop {
            self.flush_tls().await?;
            if !tls.is_handshaking() {
                return Ok(());
            }
            let n = poll_fn(|cx| tls.poll_read_tls(&mut self.0.tcp.borrow_mut(), cx)).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if received + n > max_bytes || !charge(received, received + n) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS handshake larger than its bound, or the shard's input budget is spent",
                ));
            }
            received += n;
            match gate.step(|| tls.process()).await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    let _ = self.flush_tls().await;
                    return Err(e);
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "too many TLS handshakes waiting on this shard",
                    ))
                }
            }
        }
    }

    /// Writes whatever rustls has queued (handshake records, alerts).
    async fn flush_tls(&self) -> io::Result<()> {
        if let Some(tls) = &self.0.tls {
            if tls.wants_write() {
                let mut records = Vec::new();
                tls.seal(&[], &mut records);
                self.write_all_raw(&records).await?;
            }
        }
        Ok(())
    }

    /// One non-blocking attempt to write `buf` as it is (sealed already for
    /// wss): how much the kernel took, or `Pending` with `cx`'s waker
    /// registered for when the socket has room again. For the end-of-turn
    /// flusher, which writes many sockets in one go and must never wait on
    /// one of them.
    pub fn poll_write_some(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.tcp.borrow_mut()).poll_write(cx, buf)
    }

    /// The socket's descriptor, for the flusher's batched sends (which
    /// bypass glommio: only one writer uses a socket at a time).
    pub fn raw_fd(&self) -> RawFd {
        self.0.tcp.borrow().as_raw_fd()
    }

    /// Writes all of `buf` as plaintext: encrypted first for wss. For the
    /// handshake's answers, before the writer takes over.
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match &self.0.tls {
            None => self.write_all_raw(buf).await,
            Some(tls) => {
                let mut records = Vec::with_capacity(buf.len() + 64);
                tls.seal(buf, &mut records);
                self.write_all_raw(&records).await
            }
        }
    }

    /// Writes all of `buf` as it is (sealed already for wss).
    pub async fn write_all_raw(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = poll_fn(|cx| self.poll_write_some(cx, buf)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Sends FIN (after a close_notify for wss): the peer reads end of
    /// stream after what was written.
    pub async fn close_write(&self) {
        if let Some(tls) = &self.0.tls {
            tls.close_notify();
            let _ = self.flush_tls().await;
        }
        let _ = poll_fn(|cx| Pin::new(&mut *self.0.tcp.borrow_mut()).poll_close(cx)).await;
    }
}

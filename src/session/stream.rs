//! One TCP stream shared by a connection's reader and writer tasks.
//!
//! glommio's `TcpStream` keeps separate read and write readiness sources, so
//! the two tasks of a connection can share it through an `Rc<RefCell<_>>`:
//! each borrow lasts only for one synchronous poll, never across an await.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::outbox::Outbox;

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
pub struct SharedStream(Rc<RefCell<TcpStream>>);

impl SharedStream {
    /// Wraps an accepted stream.
    pub fn new(stream: TcpStream) -> Self {
        SharedStream(Rc::new(RefCell::new(stream)))
    }

    /// Reads into `buf`.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)).await
    }

    /// Reads into a buffer shared by many connections of one thread. The
    /// buffer is borrowed only inside each poll, so every connection can
    /// wait on it at once; the caller must consume the bytes before its
    /// next await.
    pub async fn read_shared(&self, scratch: &RefCell<Vec<u8>>) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut buf = scratch.borrow_mut();
            Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, &mut buf[..])
        })
        .await
    }

    /// Like [`SharedStream::read_shared`], reading at most `limit` bytes,
    /// but stops as soon as `outbox` starts closing (slow consumer, shutdown).
    pub async fn read_scratch(
        &self,
        scratch: &RefCell<Vec<u8>>,
        limit: usize,
        outbox: &Outbox,
    ) -> ReadOutcome {
        poll_fn(|cx| {
            if outbox.poll_closing(cx).is_ready() {
                return Poll::Ready(ReadOutcome::Closing);
            }
            let mut buf = scratch.borrow_mut();
            let end = limit.min(buf.len());
            match Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, &mut buf[..end]) {
                Poll::Ready(Ok(0)) => Poll::Ready(ReadOutcome::Eof),
                Poll::Ready(Ok(n)) => Poll::Ready(ReadOutcome::Data(n)),
                Poll::Ready(Err(e)) => Poll::Ready(ReadOutcome::Failed(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// One non-blocking attempt to write `buf`: how much the kernel took,
    /// or `Pending` with `cx`'s waker registered for when the socket has
    /// room again. For the end-of-turn flusher, which writes many sockets
    /// in one go and must never wait on one of them.
    pub fn poll_write_some(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    /// The socket's descriptor, for the flusher's batched sends (which
    /// bypass glommio: only one writer uses a socket at a time).
    pub fn raw_fd(&self) -> RawFd {
        self.0.borrow().as_raw_fd()
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Sends FIN: the peer reads end of stream after what was written.
    pub async fn close_write(&self) {
        let _ = poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)).await;
    }
}

//! A socket with an idle timeout (no byte moving either way) and a write
//! timeout (a write making no progress), so a stalled or silent admin
//! client cannot hold one of the listener's few connection slots forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant, Sleep};

/// A [`TcpStream`] that fails with `TimedOut` when idle or stuck writing.
pub struct TimedIo {
    inner: TcpStream,
    idle: Duration,
    write_timeout: Duration,
    idle_deadline: Pin<Box<Sleep>>,
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// Set once the client sent its first byte (it is no longer an idle
    /// socket the listener may evict for a newcomer).
    spoke: Arc<AtomicBool>,
}

impl TimedIo {
    /// Wraps `inner` with the two timeouts.
    pub fn new(inner: TcpStream, idle: Duration, write_timeout: Duration) -> Self {
        TimedIo {
            inner,
            idle,
            write_timeout,
            idle_deadline: Box::pin(sleep(idle)),
            write_deadline: None,
            spoke: Arc::default(),
        }
    }

    /// True once the client has sent a byte.
    pub fn spoke(&self) -> Arc<AtomicBool> {
        self.spoke.clone()
    }

    fn moved(&mut self) {
        let idle = self.idle;
        self.idle_deadline.as_mut().reset(Instant::now() + idle);
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("admin connection {what}"))
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.spoke.store(true, Ordering::Relaxed);
                }
                this.moved();
                Poll::Ready(result)
            }
            Poll::Pending => {
                if this.idle_deadline.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Err(timed_out("idle")))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                this.write_deadline = None;
                this.moved();
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = this.write_timeout;
                let deadline = this
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(sleep(timeout)));
                if deadline.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Err(timed_out("write stalled")))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

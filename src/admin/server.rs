//! The admin thread: a current-thread tokio runtime serving axum over
//! hyper's HTTP/1, with a cap on open connections (so idle sockets cannot
//! eat the file table the shards' clients need), a header read timeout, an
//! idle timeout and a write timeout. At the cap, a newcomer takes the place
//! of the oldest connection that has not sent a byte yet (a flood of idle
//! sockets cannot lock out `/healthz`); when every connection has spoken,
//! the newcomer is closed at once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{oneshot, Notify, Semaphore};
use tracing::{debug, warn};

use super::routes::{self, App};
use super::timed_io::TimedIo;
use super::{HEADER_READ_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT};
use crate::config::ACCEPT_BACKOFF;
use crate::tls::Certificates;

/// At most one accept-error log line per this period.
const ACCEPT_LOG_PERIOD: Duration = Duration::from_secs(10);
/// How long a newcomer waits for an evicted connection's slot.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// An open connection the listener may evict while it has not spoken.
struct Evictable {
    spoke: Arc<AtomicBool>,
    evict: Arc<Notify>,
    /// Gone once the connection's task ended.
    alive: Weak<()>,
}

impl Evictable {
    fn is_idle(&self) -> bool {
        self.alive.strong_count() > 0 && !self.spoke.load(Ordering::Relaxed)
    }
}

/// Evicts the oldest open connection that has not sent a byte and waits
/// for its slot; `None` when every open connection has spoken.
async fn evict_idle(
    open: &mut VecDeque<Evictable>,
    slots: &Arc<Semaphore>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    open.retain(Evictable::is_idle);
    let oldest = open.pop_front()?;
    oldest.evict.notify_one();
    tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// Binds the admin address (before the shards start, so a taken port
/// refuses to start the nexus).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The running admin thread; [`AdminThread::stop`] ends it.
pub struct AdminThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminThread {
    /// Stops serving and waits for the thread (open streams are dropped).
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the `admin` thread serving `app` on `listener`, with at most
/// `max_connections` open at once.
pub fn spawn(
    listener: std::net::TcpListener,
    app: App,
    max_connections: usize,
    tls: Option<Arc<Certificates>>,
) -> std::io::Result<AdminThread> {
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = thread::Builder::new().name("admin".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                warn!(error = %e, "admin console cannot start its runtime");
                return;
            }
        };
        runtime.block_on(async move {
            tokio::select! {
                _ = serve(listener, app, max_connections, tls) => {}
                _ = stop_rx => {}
            }
        });
    })?;
    Ok(AdminThread {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn serve(
    listener: std::net::TcpListener,
    app: App,
    max_connections: usize,
    tls: Option<Arc<Certificates>>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            warn!(error = %e, "admin console cannot listen");
            return;
        }
    };
    let router = routes::router(app);
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut open: VecDeque<Evictable> = VecDeque::new();
    let mut last_log: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if last_log.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_PERIOD) {
                    warn!(error = %e, "admin accept failed (further errors silent for 10 s)");
                    last_log = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match evict_idle(&mut open, &slots).await {
                Some(slot) => slot,
                None => {
                    debug!(%peer, max_connections, "admin connection refused: at the cap");
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let timed = TimedIo::new(stream, IDLE_TIMEOUT, WRITE_TIMEOUT);
        let alive = Arc::new(());
        let evict = Arc::new(Notify::new());
        open.retain(Evictable::is_idle);
        open.push_back(Evictable {
            spoke: timed.spoke(),
            evict: evict.clone(),
            alive: Arc::downgrade(&alive),
        });
        let service = TowerToHyperService::new(router.clone());
        // With --admin-tls, each connection starts with the certificate in
        // force now (a reload swaps it for the next ones).
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.current_admin()));
        tokio::spawn(async move {
            let builder = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .clone();
            let connection = async move {
                match acceptor {
                    None => builder.serve_connection(TokioIo::new(timed), service).await,
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(timed));
                        match handshake.await {
                            Ok(Ok(stream)) => {
                                builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await
                            }
                            Ok(Err(e)) => {
                                debug!(%peer, error = %e, "admin TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => {
                                debug!(%peer, "admin TLS handshake timed out");
                                Ok(())
                            }
                        }
                    }
                }
            };
            tokio::select! {
                ended = connection => {
                    if let Err(e) = ended {
                        debug!(%peer, error = %e, "admin connection ended");
                    }
                }
                _ = evict.notified() => {
                    debug!(%peer, "idle admin connection evicted for a newcomer");
                }
            }
            drop(alive);
            drop(slot);
        });
    }
}

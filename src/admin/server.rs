//! The admin thread: a current-thread tokio runtime serving axum over
//! hyper's HTTP/1, with a cap on open connections (excess ones are closed at
//! once, so idle sockets cannot eat the file table the shards' clients
//! need), a header read timeout, an idle timeout and a write timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, warn};

use super::routes::{self, App};
use super::timed_io::TimedIo;
use super::{HEADER_READ_TIMEOUT, IDLE_TIMEOUT, WRITE_TIMEOUT};

/// Pause after an accept error (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one accept-error log line per this period.
const ACCEPT_LOG_PERIOD: Duration = Duration::from_secs(10);

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
                _ = serve(listener, app, max_connections) => {}
                _ = stop_rx => {}
            }
        });
    })?;
    Ok(AdminThread {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn serve(listener: std::net::TcpListener, app: App, max_connections: usize) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            warn!(error = %e, "admin console cannot listen");
            return;
        }
    };
    let router = routes::router(app);
    let slots = Arc::new(Semaphore::new(max_connections));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, max_connections, "admin connection refused: at the cap");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(TimedIo::new(stream, IDLE_TIMEOUT, WRITE_TIMEOUT));
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(io, service);
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "admin connection ended");
            }
            drop(slot);
        });
    }
}

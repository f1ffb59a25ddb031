//! The admin surface, opt-in with `--metrics ADDR`: `GET /metrics`
//! (Prometheus text) and `GET /healthz`, served by shard 0 on its own
//! listener, apart from client traffic.
//!
//! A scrape asks every shard for a snapshot over the rings; nothing on the
//! message path is touched or locked. `/healthz` answers 200 only when every
//! shard answered within [`HEALTH_TIMEOUT`].

use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::session::stream::SharedStream;
use crate::session::with_timeout;
use crate::shard::ShardState;
use crate::stats::render_prometheus;

/// How long a scrape waits for the other shards.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/healthz` waits for every shard before answering 503.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Time a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Serves the admin endpoints until the nexus stops.
pub async fn serve(shard: Rc<ShardState>, listener: TcpListener) {
    loop {
        match shard.accept(&listener).await {
            None => return,
            Some(Ok(stream)) => {
                glommio::spawn_local(handle(shard.clone(), stream)).detach();
            }
            Some(Err(e)) => {
                warn!(error = %e, "metrics accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(shard: Rc<ShardState>, stream: TcpStream) {
    let stream = SharedStream::new(stream);
    let Some(Some(path)) = with_timeout(REQUEST_TIMEOUT, read_request_path(&stream)).await else {
        respond(&stream, "400 Bad Request", "text/plain", "bad request\n").await;
        return;
    };
    debug!(path, "admin request");
    match path.as_str() {
        "/metrics" => {
            let (snapshots, _) = shard.gather_stats(SCRAPE_TIMEOUT).await;
            let mut body = render_prometheus(&snapshots);
            if let Some(cluster) = &shard.cluster {
                body.push_str(&cluster.stats().render_prometheus());
            }
            respond(&stream, "200 OK", "text/plain; version=0.0.4", &body).await;
        }
        "/healthz" => {
            let (snapshots, complete) = shard.gather_stats(HEALTH_TIMEOUT).await;
            if complete && shard.shutdown.reason().is_none() {
                let body = format!("ok: {} shards\n", snapshots.len());
                respond(&stream, "200 OK", "text/plain", &body).await;
            } else {
                let body = format!(
                    "unhealthy: {} of {} shards answered{}\n",
                    snapshots.len(),
                    shard.router.nr_shards(),
                    if shard.shutdown.reason().is_some() {
                        ", stopping"
                    } else {
                        ""
                    }
                );
                respond(&stream, "503 Service Unavailable", "text/plain", &body).await;
            }
        }
        _ => {
            respond(
                &stream,
                "404 Not Found",
                "text/plain",
                "try /metrics or /healthz\n",
            )
            .await
        }
    }
}

/// Reads a request head; returns the path of a `GET`, `None` otherwise.
async fn read_request_path(stream: &SharedStream) -> Option<String> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        request.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&request) {
            Ok(httparse::Status::Complete(_)) => {
                if parsed.method != Some("GET") {
                    return None;
                }
                let path = parsed.path?;
                return Some(path.split('?').next().unwrap_or(path).to_string());
            }
            Ok(httparse::Status::Partial) if request.len() < MAX_REQUEST_BYTES => continue,
            _ => return None,
        }
    }
}

async fn respond(stream: &SharedStream, status: &str, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    stream.close_write().await;
}

//! Client side of the abuse: connecting (on a chosen shard), protocol
//! messages as frames, and watching a connection's fate.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::nexus::Target;
use crate::ws::{self, Incoming};

/// Time allowed for a connect plus upgrade.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnects tried to land on a wanted shard.
const SHARD_TRIES: usize = 64;

/// An upgraded connection.
pub struct Conn {
    /// Reading half.
    pub read: OwnedReadHalf,
    /// Writing half.
    pub write: OwnedWriteHalf,
    /// Our address, as the nexus logs the peer.
    pub local: SocketAddr,
    /// Bytes read after the upgrade response.
    pub pending: Vec<u8>,
}

/// The token every connection presents (`?token=`) when the scenario runs
/// the nexus with access control on; set once, before any connection.
static TOKEN: OnceLock<String> = OnceLock::new();

/// Makes every later [`connect`] present `token`.
pub fn use_token(token: String) {
    let _ = TOKEN.set(token);
}

/// Connects and upgrades, within [`CONNECT_TIMEOUT`].
pub async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let path = match TOKEN.get() {
        Some(token) => format!("/?token={token}"),
        None => "/".to_string(),
    };
    connect_path(addr, &path).await
}

/// Connects and upgrades requesting `path` (e.g. `/?token=…`), within
/// [`CONNECT_TIMEOUT`].
pub async fn connect_path(addr: SocketAddr, path: &str) -> Result<Conn, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(addr, path))
        .await
        .map_err(|_| "connect/upgrade timed out".to_string())?
}

/// Sends one upgrade request (`path`, extra header lines) and returns the
/// status code of the answer; the connection is then dropped.
pub async fn upgrade_status(addr: SocketAddr, path: &str, headers: &str) -> Result<u16, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut request = ws::upgrade_request(&addr.to_string(), path);
        request.truncate(request.len() - 2);
        request.extend_from_slice(headers.as_bytes());
        request.extend_from_slice(b"\r\n");
        stream
            .write_all(&request)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = stream
                .read(&mut buf[got..])
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before an answer".to_string());
            }
            got += n;
        }
        std::str::from_utf8(&buf[9..12])
            .ok()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| "no status code".to_string())
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

async fn connect_inner(addr: SocketAddr, path: &str) -> Result<Conn, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    stream
        .write_all(&ws::upgrade_request(&addr.to_string(), path))
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during upgrade".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(used) = ws::parse_upgrade_response(&buf).map_err(|e| e.to_string())? {
            let (read, write) = stream.into_split();
            return Ok(Conn {
                read,
                write,
                local,
                pending: buf[used..].to_vec(),
            });
        }
    }
}

/// A name of exactly `len` bytes starting with `prefix`.
pub fn padded(prefix: &str, len: usize) -> String {
    let mut s = prefix.to_string();
    while s.len() < len {
        s.push('x');
    }
    s.truncate(len.max(prefix.len()));
    s
}

/// The frame for one protocol text.
pub fn frame(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 14);
    ws::push_text_frame(&mut out, text.as_bytes());
    out
}

/// `1h` with `name`.
pub fn hello(name: &str) -> String {
    format!("1h|{}|{name}", name.len())
}

/// `1c` with a TTL (0 = unsubscribe).
pub fn subscribe(channel: &str, seconds: u64) -> String {
    format!("1c|{}|{channel}|{seconds}|0", channel.len())
}

/// `1t`.
pub fn publish(channel: &str, text: &str) -> String {
    format!("1t|{}|{channel}|{}|{text}", channel.len(), text.len())
}

/// Connects, says `1h` with `name`, and waits until the log shows the shard.
pub async fn identified(nexus: &Target, name: &str) -> Result<(Conn, usize), String> {
    let conn = connect(nexus.addr).await?;
    identify(nexus, conn, name).await
}

/// Says `1h` with `name` on `conn` and waits until the log shows the shard.
pub async fn identify(nexus: &Target, mut conn: Conn, name: &str) -> Result<(Conn, usize), String> {
    conn.write
        .write_all(&frame(&hello(name)))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        if let Some(shard) = nexus.shard_of(conn.local) {
            return Ok((conn, shard));
        }
        if Instant::now() > deadline {
            return Err("identification never logged".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Like [`identified`], reconnecting until the connection is on `shard`.
pub async fn on_shard(nexus: &Target, name: &str, shard: usize) -> Result<Conn, String> {
    for _ in 0..SHARD_TRIES {
        let (conn, got) = identified(nexus, name).await?;
        if got == shard {
            return Ok(conn);
        }
        drop(conn);
    }
    Err(format!("never landed on shard {shard}"))
}

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Still open when the scenario ended.
    Open,
    /// A close frame with this code.
    Closed(u16),
    /// End of stream or reset without a close frame.
    Dropped,
}

/// Reads and discards until the connection ends or `until` passes; counts
/// text frames. Pings are not answered (scenarios are shorter than the
/// keepalive).
pub async fn drain(mut read: OwnedReadHalf, mut pending: Vec<u8>, until: Instant) -> (Fate, u64) {
    let mut texts = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut used = 0;
        while let Some((frame, n)) = ws::next_frame(&pending[used..]) {
            used += n;
            match frame {
                Incoming::Text(_) => texts += 1,
                Incoming::Close(code) => return (Fate::Closed(code.unwrap_or(1005)), texts),
                _ => {}
            }
        }
        pending.drain(..used);
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (Fate::Open, texts);
        }
        match tokio::time::timeout(left, read.read(&mut chunk)).await {
            Err(_) => return (Fate::Open, texts),
            Ok(Ok(0)) | Ok(Err(_)) => return (Fate::Dropped, texts),
            Ok(Ok(n)) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

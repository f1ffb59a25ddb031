//! One client connection from accept to close.
//!
//! A session upgrades the socket to WebSocket ([`handshake`]), registers the
//! connection with its shard, starts its [`writer`] task and runs the read
//! loop: socket bytes go through tungstenite (framing, masking, UTF-8,
//! pings), each text frame through the protocol codec, and each message to
//! its handler in [`commands`]. Whatever ends the session — the client's
//! close or `1d`, a protocol error, a slow consumer, shutdown, a dead peer —
//! ends this connection only.

mod commands;
pub mod frames;
pub mod handshake;
pub mod stream;
mod writer;
mod ws_io;

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpStream;
use tracing::{debug, info, warn};
use tungstenite::Message as WsMessage;

use crate::outbox::Push;
use crate::protocol::{self, Message, ParseError};
use crate::shard::{Connection, ConnectionSlot, ShardState};
use crate::stats::{bump, ProtocolErrorKind};
use frames::{close_code_for, Decoded, FrameDecoder};
use stream::{ReadOutcome, SharedStream};

/// How long a closing connection's writer may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// After the nexus closed, how long it keeps reading (and discarding) so the
/// client reads the close frame before the socket goes away.
const LINGER: Duration = Duration::from_secs(2);

/// What a handler decided.
#[derive(Debug)]
pub enum Verdict {
    /// Keep reading.
    Continue,
    /// Close this connection with this code and reason, counted as `cause`.
    Close(u16, String, Cause),
}

/// Why the nexus closes a connection, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The client asked (`1d`).
    Requested,
    /// The client broke the protocol.
    Protocol(ProtocolErrorKind),
    /// The client passed a size or count limit.
    Limit,
}

/// How the read loop ended.
#[derive(Debug)]
enum End {
    /// The nexus queued a close frame with this code and reason.
    ClosedByNexus(u16, String),
    /// The client sent a close frame (already answered).
    ClosedByClient(Option<u16>),
    /// The peer vanished: end of stream or socket error.
    PeerGone(String),
}

/// Runs one connection to its end; never panics on client input. Without a
/// `slot` (the nexus is at `--max-connections`) the upgrade is refused with
/// HTTP 503.
pub async fn serve(
    shard: Rc<ShardState>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Option<ConnectionSlot>,
) {
    let stream = SharedStream::new(stream);
    if slot.is_none() {
        warn!(%peer, limit = shard.config.max_connections, "refusing connection: too many connections (503)");
        // Answer at once, without waiting for the request: a flood of
        // refused sockets must not hold descriptors for a handshake timeout.
        let _ = handshake::reject(&stream, "503 Service Unavailable", "too many connections").await;
        linger(&shard, &stream).await;
        return;
    }

    let upgrade = handshake::upgrade_boxed(&stream);
    let leftover = match with_timeout(shard.config.handshake_timeout, upgrade).await {
        Some(Ok(leftover)) => leftover,
        Some(Err(e)) => {
            debug!(%peer, error = %e, "handshake failed");
            return;
        }
        None => {
            info!(%peer, "handshake timed out");
            return;
        }
    };
    let conn = shard.register(peer);
    debug!(conn = %shard.label(conn.id), %peer, "websocket open");
    let writer = glommio::spawn_local(writer::run(stream.clone(), conn.clone(), shard.clone()));
    let end = read_loop(&shard, &conn, &stream, leftover).await;
    shard.unregister(&conn);
    if matches!(end, End::PeerGone(_)) {
        conn.outbox.abort();
    }
    log_end(&shard, &conn, &end);
    let flushed = with_timeout(CLOSE_GRACE, writer).await.is_some();
    if flushed && matches!(end, End::ClosedByNexus(..)) {
        linger(&shard, &stream).await;
    }
}

fn log_end(shard: &ShardState, conn: &Connection, end: &End) {
    let label = shard.label(conn.id);
    let name = conn.name();
    let name = name.as_deref().unwrap_or("");
    match end {
        End::ClosedByNexus(code, reason) => {
            info!(conn = %label, peer = %conn.peer, name, code, reason, "connection closed by nexus")
        }
        End::ClosedByClient(code) => {
            info!(conn = %label, peer = %conn.peer, name, code = code.unwrap_or(1005), "connection closed by client")
        }
        End::PeerGone(why) => {
            info!(conn = %label, peer = %conn.peer, name, why, "connection lost")
        }
    }
}

async fn read_loop(
    shard: &ShardState,
    conn: &Rc<Connection>,
    stream: &SharedStream,
    leftover: Vec<u8>,
) -> End {
    let mut decoder = FrameDecoder::new(shard.config.max_message_bytes, leftover);
    let mut inbox: Vec<WsMessage> = Vec::new();
    let mut replies: Vec<u8> = Vec::new();
    let mut input_len = 0;
    loop {
        // Parse everything this read brought (the first pass parses what
        // came with the handshake). No await until the scratch is consumed.
        let decoded = {
            let scratch = shard.scratch.borrow();
            frames::decode(
                &mut decoder,
                &scratch[..input_len],
                &mut replies,
                &mut inbox,
            )
        };
        let mut peer_close_code = None;
        let mut published = false;
        for message in inbox.drain(..) {
            let verdict = match message {
                WsMessage::Text(text) => {
                    published |= text.starts_with("1t");
                    on_text(shard, conn, &text)
                }
                WsMessage::Binary(_) => Verdict::Close(
                    1003,
                    "binary frames are not supported".into(),
                    Cause::Protocol(ProtocolErrorKind::Binary),
                ),
                WsMessage::Close(frame) => {
                    peer_close_code = Some(frame.map(|f| u16::from(f.code)));
                    Verdict::Continue
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => Verdict::Continue,
            };
            if let Some(end) = apply(shard, conn, verdict) {
                return end;
            }
        }
        match decoded {
            Decoded::NeedMore => {
                if !replies.is_empty()
                    && conn.outbox.push_control(std::mem::take(&mut replies)) == Push::Overflow
                {
                    // Pings sent faster than the pongs are read.
                    shard.close_slow_consumer(conn);
                }
            }
            Decoded::ClosedByClient => {
                conn.outbox.close_raw(std::mem::take(&mut replies));
                return End::ClosedByClient(peer_close_code.flatten());
            }
            Decoded::Failed(error) => {
                let (code, reason, cause) = close_code_for(&error);
                let verdict = Verdict::Close(code, reason, cause);
                return apply(shard, conn, verdict).expect("a close verdict ends the session");
            }
        }
        // A full ring pushes back on the publisher: a connection that just
        // published reads nothing more until the queued cross-shard
        // messages are in the rings (or it is being closed).
        if published && shard.router.is_backed_up() {
            future::or(
                shard.router.wait_for_room(),
                poll_fn(|cx| conn.outbox.poll_closing(cx)),
            )
            .await;
        }
        // A busy publisher's socket always has more to read and a read that
        // finds data never yields: give the writers (and everyone else) a
        // turn before reading again.
        future::yield_now().await;
        input_len = match stream.read_scratch(&shard.scratch, &conn.outbox).await {
            ReadOutcome::Data(n) => {
                conn.heard(Instant::now());
                bump(&shard.stats.bytes_in, n as u64);
                n
            }
            ReadOutcome::Eof => return End::PeerGone("end of stream".into()),
            ReadOutcome::Failed(e) => return End::PeerGone(e.to_string()),
            ReadOutcome::Closing => {
                // Closed from outside the read loop: slow consumer,
                // keepalive, shutdown, or the writer found the peer gone.
                return match conn.outbox.close_reason() {
                    Some((code, reason)) => End::ClosedByNexus(code, reason),
                    None => End::PeerGone("write failed".into()),
                };
            }
        };
    }
}

fn on_text(shard: &ShardState, conn: &Rc<Connection>, text: &str) -> Verdict {
    bump(&shard.stats.messages_in, 1);
    match protocol::parse(text) {
        Ok(Message::Hello { name }) => commands::hello(shard, conn, name),
        Ok(Message::Subscribe { channel, ttl }) => commands::subscribe(shard, conn, channel, ttl),
        Ok(Message::Transmit { channel, text }) => commands::transmit(shard, conn, channel, text),
        Ok(Message::Disconnect { reason }) => commands::disconnect(reason),
        Ok(Message::Receive { .. }) => Verdict::Continue,
        Err(e) => {
            let kind = match e {
                ParseError::UnsupportedVersion => ProtocolErrorKind::Version,
                ParseError::UnknownKind => ProtocolErrorKind::Kind,
                ParseError::Malformed(_) => ProtocolErrorKind::Malformed,
            };
            Verdict::Close(e.close_code(), e.to_string(), Cause::Protocol(kind))
        }
    }
}

/// Carries out a verdict; `Some` when it ends the session.
fn apply(shard: &ShardState, conn: &Connection, verdict: Verdict) -> Option<End> {
    let Verdict::Close(code, reason, cause) = verdict else {
        return None;
    };
    match cause {
        Cause::Requested => {}
        Cause::Protocol(kind) => shard.stats.protocol_error(kind),
        Cause::Limit => bump(&shard.stats.limit_closures, 1),
    }
    // The outbox keeps the reason as sent (cut to the close-frame limit);
    // if the connection was already closing, that earlier close stands.
    conn.outbox.close(code, &reason);
    let (code, reason) = conn.outbox.close_reason().unwrap_or((code, reason));
    Some(End::ClosedByNexus(code, reason))
}

/// Keeps reading (and discarding) until the client closes or `LINGER`
/// passes, so unread client data does not make the kernel reset the
/// connection before the client has read our close frame.
async fn linger(shard: &ShardState, stream: &SharedStream) {
    let drain = async {
        let mut budget = shard.config.max_message_bytes * 4;
        while budget > 0 {
            // Discarded bytes go to the shard's scratch buffer, so lingering
            // connections cost no buffer of their own.
            match stream.read_shared(&shard.scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    };
    with_timeout(LINGER, drain).await;
}

/// Runs `fut` for at most `limit`; `None` if time ran out (it is dropped).
pub async fn with_timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

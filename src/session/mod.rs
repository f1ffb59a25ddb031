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
mod fragments;
pub mod frames;
pub mod gate;
pub mod handshake;
pub mod stream;
mod writer;
mod ws_io;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpStream;
use shards::with_timeout;
use tracing::{debug, field, info, info_span, warn, Instrument};
use tungstenite::Message as WsMessage;

use crate::access::{unix_now, ConnectionAccess, Presented, Taken};
use crate::outbox::Push;
use crate::protocol::{self, Message, ParseError};
use crate::shard::{Connection, ConnectionSlot, ShardState};
use crate::stats::{Metric, ProtocolErrorKind};
use crate::tls::TlsSession;
use easechat_auth::Operation;
use frames::{close_code_for, Decoded, FrameDecoder};
use handshake::HandshakeError;
use stream::{ReadOutcome, SharedStream};

/// How long a closing connection's writer may take to flush its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// After the nexus closed, how long it keeps reading (and discarding) so the
/// client reads the close frame before the socket goes away.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes one connection reads per turn: a connection that always has
/// input gets this share, then every other runnable task gets a turn.
const READ_SHARE_BYTES: usize = 4 * 1024;
/// How long a connection may keep finding input ready, read after read,
/// before it waits [`FAIR_PAUSE`] like a connection that filled its share:
/// a flood of small reads (each under the share) must not keep the run
/// queue busy until glommio's 100 ms preemption timer, when no other
/// connection's completed read is seen.
const BUSY_SLICE: Duration = Duration::from_micros(500);
/// How long a connection whose read filled its whole share waits before
/// reading again. Any wait on a timer puts it behind the executor's next
/// I/O poll, so the completed reads of every other connection are seen
/// first; `yield_now` alone would not reap them (glommio polls I/O only
/// when no task is runnable or its preemption timer fires).
const FAIR_PAUSE: Duration = Duration::from_micros(50);

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
    /// Access control refused a name, a channel or a quota.
    Denied,
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
/// HTTP 503. `tls` (a wss connection): the server configuration and the
/// most handshake bytes the client may send.
pub async fn serve(
    shard: Rc<ShardState>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Result<ConnectionSlot, &'static str>,
    tls: Option<(Arc<rustls::ServerConfig>, usize)>,
) {
    if tls.is_some() && slot.is_err() {
        // An answer over wss would cost a TLS handshake: a refused wss
        // client sees its connection closed instead.
        warn!(%peer, why = slot.err(), "refusing wss connection: closing it");
        return;
    }
    let max_handshake_bytes = tls.as_ref().map_or(0, |(_, max)| *max);
    let tls = match tls.map(|(config, _)| TlsSession::new(config)).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            warn!(%peer, error = %e, "cannot start a TLS session");
            return;
        }
    };
    let stream = SharedStream::new(stream, tls);
    if let Err(why) = slot {
        warn!(%peer, "refusing connection: {why} (503)");
        // Answer at once, without waiting for the request: a flood of
        // refused sockets must not hold descriptors for a handshake timeout.
        let _ = handshake::reject::<()>(&stream, "503 Service Unavailable", why).await;
        linger(&shard, &stream).await;
        return;
    }

    let started = Instant::now();
    // Handshake bytes held count against the shard's partial-input budget.
    let charged = std::cell::Cell::new(0);
    let charge = |old: usize, new: usize| {
        let ok = shard.charge_partial(old, new);
        if ok {
            charged.set(new);
        }
        ok
    };
    let handshake = stream.tls_handshake(&shard.start_gate, max_handshake_bytes, &charge);
    let handshake = with_timeout(shard.config.handshake_timeout, handshake).await;
    shard.charge_partial(charged.get(), 0);
    let certificate = match handshake {
        Some(Ok(())) => {
            if stream.tls().is_some() {
                shard.stats.add(Metric::TlsHandshakes, 1);
            }
            stream.tls().and_then(TlsSession::peer_identity)
        }
        Some(Err(e)) => {
            shard.stats.add(Metric::TlsHandshakeFailed, 1);
            debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        None => {
            shard.stats.add(Metric::TlsHandshakeFailed, 1);
            debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    if let Some(tls) = stream.tls() {
        debug!(%peer, tls = %tls.negotiated(), identity = certificate.as_ref().map(|c| c.name.as_str()), "TLS handshake done");
    }
    let access = shard.config.access.clone();
    let authorize: handshake::Authorize<'_, Option<ConnectionAccess>> = Box::new(|presented| {
        let Some(access) = &access else {
            return Ok(None);
        };
        let mut presented = presented;
        presented.certificate = certificate;
        if presented
            .token
            .as_deref()
            .is_some_and(|t| access.is_console_bearer(t))
        {
            presented = Presented {
                token: None,
                console: true,
                certificate: None,
            };
        }
        access
            .admit(presented, unix_now())
            .map(Some)
            .map_err(|refusal| (refusal.status, refusal.reason))
    });
    let upgrade = handshake::upgrade_boxed(&stream, &shard.start_gate, authorize);
    // The TLS handshake and the upgrade share the one deadline.
    let left = shard
        .config
        .handshake_timeout
        .saturating_sub(started.elapsed());
    let (leftover, access, turn) = match with_timeout(left, upgrade).await {
        Some(Ok(upgraded)) => upgraded,
        Some(Err(HandshakeError::Refused(why))) => {
            shard.stats.add(Metric::AuthRefused, 1);
            shard.log_refusal(peer, &why);
            linger(&shard, &stream).await;
            return;
        }
        Some(Err(e)) => {
            debug!(%peer, error = %e, "handshake failed");
            return;
        }
        None => {
            info!(%peer, "handshake timed out");
            return;
        }
    };
    let identity = access.as_ref().map(|a| a.identity());
    let token_id = access.as_ref().and_then(|a| a.token_id());
    let conn = shard.register(peer, access);
    // Every log line of this connection carries its label, peer and name
    // (as `endpoint`: JSON logs already use `name` for the span's own; and identity and token id with access control on).
    let span = info_span!(
        "session",
        conn = %shard.label(conn.id),
        %peer,
        endpoint = field::Empty,
        identity = identity.as_deref(),
        token = token_id.as_deref(),
    );
    async {
        debug!("websocket open");
        let writer = glommio::spawn_local(writer::run(stream.clone(), conn.clone(), shard.clone()));
        let mut reader = Reader::new(&shard, &conn, leftover);
        // The session is set up: the next connection's start may run.
        turn.leave().await;
        let end = reader.run(&stream).await;
        drop(reader);
        shard.unregister(&conn);
        if matches!(end, End::PeerGone(_)) {
            conn.outbox.abort();
        }
        log_end(&end);
        let flushed = with_timeout(CLOSE_GRACE, writer).await.is_some();
        if flushed && matches!(end, End::ClosedByNexus(..)) {
            linger(&shard, &stream).await;
        }
    }
    .instrument(span)
    .await
}

fn log_end(end: &End) {
    match end {
        End::ClosedByNexus(code, reason) => info!(code, reason, "connection closed by nexus"),
        End::ClosedByClient(code) => {
            info!(code = code.unwrap_or(1005), "connection closed by client")
        }
        End::PeerGone(why) => info!(why, "connection lost"),
    }
}

/// Each message deadline is `--message-timeout` plus a random share of up to
/// this fraction of it, so connections that started stalling together (one
/// abuser's 1,800 sockets) are closed over a spread, not in one burst that
/// would hold up everyone else on the shard.
const MESSAGE_DEADLINE_SPREAD: f64 = 0.1;

/// One connection's read side: WebSocket decoding, the shard's budgets for
/// partial input, the message deadline, and waiting for room.
struct Reader<'a> {
    shard: &'a ShardState,
    conn: &'a Rc<Connection>,
    decoder: FrameDecoder,
    /// Bytes of unfinished messages charged to the shard's budget.
    charged: usize,
    /// When the message being received must be complete, while one is
    /// unfinished.
    message_deadline: Option<Instant>,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        self.shard.charge_partial(self.charged, 0);
    }
}

impl<'a> Reader<'a> {
    fn new(shard: &'a ShardState, conn: &'a Rc<Connection>, leftover: Vec<u8>) -> Self {
        Reader {
            shard,
            conn,
            decoder: FrameDecoder::new(shard.config.max_message_bytes, leftover),
            charged: 0,
            message_deadline: None,
        }
    }

    async fn run(&mut self, stream: &SharedStream) -> End {
        let (shard, conn) = (self.shard, self.conn);
        let mut inbox: Vec<WsMessage> = Vec::new();
        let mut replies: Vec<u8> = Vec::new();
        let mut input_len = 0;
        // Since when reads have found input ready without waiting.
        let mut busy_since: Option<Instant> = None;
        let mut waited = false;
        let mut ciphertext_mark = stream.tls().map_or(0, TlsSession::ciphertext_in);
        // A turn at the shard's bulk gate, held from a read to the end of
        // its decoding while this connection has more input than its share.
        let mut bulk_turn: Option<gate::Turn<'_>> = None;
        loop {
            // Parse everything this read brought (the first pass parses what
            // came with the handshake). No await until the scratch is consumed.
            let decoded = {
                let scratch = shard.scratch.borrow();
                frames::decode(
                    &mut self.decoder,
                    &scratch[..input_len],
                    &mut replies,
                    &mut inbox,
                )
            };
            if let Some(turn) = bulk_turn.take() {
                turn.leave().await;
            }
            let mut peer_close_code = None;
            for message in inbox.drain(..) {
                let verdict = match message {
                    WsMessage::Text(text) => on_text(shard, conn, &text).await,
                    WsMessage::Binary(_) => Verdict::Close(
                        1003,
                        "binary frames are not supported".into(),
                        Cause::Protocol(ProtocolErrorKind::Binary),
                    ),
                    WsMessage::Close(frame) => {
                        peer_close_code = Some(frame.map(|f| u16::from(f.code)));
                        Verdict::Continue
                    }
                    WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {
                        Verdict::Continue
                    }
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
            if let Some(verdict) = self.account_partial_input() {
                return apply(shard, conn, verdict).expect("a close verdict ends the session");
            }
            // A connection that always has input never waits on a read:
            // give every other task (readers, writers, rings) a turn first,
            // and after a full share, or after reading without waiting for
            // BUSY_SLICE, everyone's I/O too.
            let busy_too_long = busy_since.is_some_and(|t: Instant| t.elapsed() >= BUSY_SLICE);
            // wss: the share counts the ciphertext read (small records carry
            // less plaintext than the socket gave).
            let ciphertext = stream.tls().map_or(0, TlsSession::ciphertext_in);
            let full_share = input_len == READ_SHARE_BYTES
                || ciphertext - ciphertext_mark >= READ_SHARE_BYTES as u64;
            ciphertext_mark = ciphertext;
            if full_share || busy_too_long {
                glommio::timer::sleep(FAIR_PAUSE).await;
                busy_since = None;
                // Such reads and their decoding (copies into fresh memory
                // for large messages) go one connection at a time, so a
                // storm of them cannot fill the run queue ahead of others
                // (past the gate's waiting bound, without a turn).
                bulk_turn = shard.bulk_gate.enter().await;
            } else {
                future::yield_now().await;
            }
            let read = gate::held_while_running(
                &mut bulk_turn,
                stream.read_scratch(&shard.scratch, READ_SHARE_BYTES, &conn.outbox, &mut waited),
            );
            let outcome = match self.message_deadline() {
                None => read.await,
                Some(left) => match with_timeout(left, read).await {
                    Some(outcome) => outcome,
                    None => return self.message_timed_out(),
                },
            };
            if waited {
                busy_since = None;
            } else if busy_since.is_none() {
                busy_since = Some(Instant::now());
            }
            input_len = match outcome {
                ReadOutcome::Data(n) => {
                    conn.heard(Instant::now());
                    shard.stats.add(Metric::BytesIn, n as u64);
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

    /// Charges what the decoder holds of unfinished messages to the shard's
    /// budget and starts or stops the message deadline.
    fn account_partial_input(&mut self) -> Option<Verdict> {
        let held = self.decoder.buffered_bytes();
        if !self.shard.charge_partial(self.charged, held) {
            return Some(Verdict::Close(
                1008,
                "server busy: too much unfinished input, try again later".into(),
                Cause::Limit,
            ));
        }
        self.charged = held;
        match (self.decoder.mid_message(), self.message_deadline) {
            (true, None) => {
                let timeout = self.shard.config.live.message_timeout();
                let spread = timeout.mul_f64(MESSAGE_DEADLINE_SPREAD * fastrand::f64());
                self.message_deadline = Some(Instant::now() + timeout + spread);
            }
            (false, Some(_)) => self.message_deadline = None,
            _ => {}
        }
        None
    }

    /// Time left to finish the message being received, if one is unfinished.
    fn message_deadline(&self) -> Option<Duration> {
        Some(
            self.message_deadline?
                .saturating_duration_since(Instant::now()),
        )
    }

    fn message_timed_out(&self) -> End {
        let limit = self.shard.config.live.message_timeout().as_secs();
        let verdict = Verdict::Close(
            1008,
            format!("message not completed within {limit} s"),
            Cause::Limit,
        );
        apply(self.shard, self.conn, verdict).expect("a close verdict ends the session")
    }
}

async fn on_text(shard: &ShardState, conn: &Rc<Connection>, text: &str) -> Verdict {
    shard.stats.add(Metric::MessagesIn, 1);
    let message = match protocol::parse(text) {
        Ok(message) => message,
        Err(e) => {
            let kind = match e {
                ParseError::UnsupportedVersion => ProtocolErrorKind::Version,
                ParseError::UnknownKind => ProtocolErrorKind::Kind,
                ParseError::Malformed(_) => ProtocolErrorKind::Malformed,
            };
            return Verdict::Close(e.close_code(), e.to_string(), Cause::Protocol(kind));
        }
    };
    wait_for_publish_budget(shard, conn, &message).await;
    wait_for_room(shard, conn, &message).await;
    match message {
        Message::Hello { name } => commands::hello(shard, conn, name),
        Message::Subscribe { channel, ttl } => commands::subscribe(shard, conn, channel, ttl),
        Message::Transmit { channel, text } => commands::transmit(shard, conn, channel, text),
        Message::Disconnect { reason } => commands::disconnect(reason),
        Message::Receive { .. } => Verdict::Continue,
        Message::HelloWith { name, options } => commands::hello_with(shard, conn, name, options),
        Message::Recover {
            channel,
            ttl,
            offset,
            epoch,
        } if conn.positions() => commands::recover(shard, conn, channel, ttl, offset, epoch),
        // What a v1 nexus answers, byte for byte: the extension's fields are
        // bytes left after the last v1 field, `1p` is an unknown kind.
        Message::Recover { .. } | Message::ReceiveAt { .. } => {
            let e = ParseError::Malformed("bytes left after the last field");
            Verdict::Close(
                e.close_code(),
                e.to_string(),
                Cause::Protocol(ProtocolErrorKind::Malformed),
            )
        }
        Message::Position { .. } => Verdict::Close(
            ParseError::UnknownKind.close_code(),
            ParseError::UnknownKind.to_string(),
            Cause::Protocol(ProtocolErrorKind::Kind),
        ),
    }
}

/// Before a message that sends to other shards, waits until they can take
/// more from this shard: a publish waits for the shards it goes to, a `1c`
/// that changes this shard's interest for room in the interest updates.
/// Only this connection waits (its reading pauses, TCP pushes back on it);
/// it stops waiting if it is being closed.
async fn wait_for_room(shard: &ShardState, conn: &Connection, message: &Message<'_>) {
    let router = &shard.router;
    let closing = poll_fn(|cx| conn.outbox.poll_closing(cx));
    match *message {
        Message::Transmit { channel, .. } => {
            let targets = shard.publish_targets(channel);
            if !router.has_room(targets) {
                shard
                    .paused(future::or(router.room(targets), closing))
                    .await;
            }
        }
        Message::Subscribe { channel, ttl } | Message::Recover { channel, ttl, .. }
            if !router.has_interest_room()
                && shard.subscribe_changes_interest(conn, channel, ttl) =>
        {
            shard
                .paused(future::or(router.interest_room(), closing))
                .await;
        }
        _ => {}
    }
}

/// Before a publish of an identity with a publish rate quota, waits until
/// its budget has room: over it the connection pauses (its reading stops,
/// TCP pushes back), as it does for ring room; nothing is dropped.
async fn wait_for_publish_budget(shard: &ShardState, conn: &Connection, message: &Message<'_>) {
    let (Message::Transmit { channel, text }, Some(access)) = (message, &conn.access) else {
        return;
    };
    // A publish the token does not allow is refused by its handler; it
    // takes nothing from the budget.
    if !access.allows(Operation::Publish, channel).unwrap_or(false) {
        return;
    }
    let mut counted = false;
    loop {
        let (wait, done) = match access.publish_budget(text.len()) {
            Taken::Go(wait) => (wait, true),
            Taken::Retry(wait) => (wait, false),
        };
        if wait.is_zero() {
            return;
        }
        if !counted {
            shard.stats.add(Metric::RatePauses, 1);
            counted = true;
        }
        let closing = poll_fn(|cx| conn.outbox.poll_closing(cx));
        shard
            .paused(future::or(glommio::timer::sleep(wait), closing))
            .await;
        if done || conn.outbox.close_reason().is_some() {
            return;
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
        Cause::Limit => shard.stats.add(Metric::LimitClosures, 1),
        Cause::Denied => shard.stats.add(Metric::AccessDenied, 1),
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

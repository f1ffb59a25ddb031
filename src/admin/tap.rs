//! A live tap on one channel, streamed to a browser as server-sent events.
//!
//! The tap is an ordinary subscriber: it opens a real WebSocket connection
//! to the nexus's own listener, says `1h admin-tap-N`, subscribes with
//! renewal, and relays each `1r` into a bounded broadcast buffer. The
//! relay never waits for the viewer: a viewer that falls behind loses the
//! oldest messages and is told how many (`skipped`). A tap that cannot keep
//! up with the nexus is a slow consumer like any other and is closed by
//! the nexus; publishers never wait for it. Nobody watching costs nothing.
//!
//! Events: `ready` (data: the tap's endpoint name), default events with a
//! JSON message `{sender, channel, text, time_ms}`, `skipped` (data: count),
//! `closed` (data: why).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tracing::debug;

use super::routes::App;
use super::MAX_TAPS;
use crate::protocol::{self, Message};

/// Messages one viewer may fall behind before it skips (each at most
/// `--max-message-bytes`).
pub const TAP_BUFFER: usize = 128;
/// The tap's subscription TTL; it renews at half of it.
const TAP_TTL: Duration = Duration::from_secs(60);
/// Comment sent to an idle stream, well within the idle timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// One message seen by a tap.
#[derive(Debug, Clone, Serialize)]
pub struct TapMessage {
    /// Who published it.
    pub sender: String,
    /// On which channel.
    pub channel: String,
    /// The text.
    pub text: String,
    /// When the tap received it (milliseconds since the epoch).
    pub time_ms: u64,
}

#[derive(Debug, Clone)]
enum TapEvent {
    Ready(Arc<str>),
    Message(Arc<TapMessage>),
    Closed(Arc<str>),
}

/// `/api/tap` parameters.
#[derive(Debug, Deserialize)]
pub struct TapParams {
    channel: Option<String>,
}

/// Ends the relay and frees the tap slot when the viewer goes away.
struct TapGuard {
    relay: AbortHandle,
    _slot: OwnedSemaphorePermit,
}

impl Drop for TapGuard {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

struct Viewer {
    events: broadcast::Receiver<TapEvent>,
    _guard: TapGuard,
    done: bool,
}

/// `GET /api/tap?channel=C`: a server-sent event stream of C's messages.
pub async fn tap(State(app): State<App>, Query(params): Query<TapParams>) -> Response {
    let Some(channel) = params.channel.filter(|c| !c.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "tap needs ?channel=NAME\n").into_response();
    };
    let Ok(slot) = app.taps.clone().try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many taps open (at most {MAX_TAPS})\n"),
        )
            .into_response();
    };
    let name = format!(
        "admin-tap-{}",
        app.tap_ids.fetch_add(1, Ordering::Relaxed) + 1
    );
    let (sender, events) = broadcast::channel(TAP_BUFFER);
    let bearer = app.access.as_ref().map(|a| a.console_bearer());
    let relay = tokio::spawn(relay(app.nexus, bearer, name, channel, sender));
    let viewer = Viewer {
        events,
        _guard: TapGuard {
            relay: relay.abort_handle(),
            _slot: slot,
        },
        done: false,
    };
    let stream = futures_util::stream::unfold(viewer, |mut viewer| async move {
        if viewer.done {
            return None;
        }
        let event = match viewer.events.recv().await {
            Ok(TapEvent::Ready(name)) => Event::default().event("ready").data(&*name),
            Ok(TapEvent::Message(message)) => Event::default()
                .json_data(&*message)
                .unwrap_or_else(|_| Event::default().event("skipped").data("1")),
            Ok(TapEvent::Closed(reason)) => {
                viewer.done = true;
                Event::default().event("closed").data(&*reason)
            }
            Err(RecvError::Lagged(skipped)) => {
                Event::default().event("skipped").data(skipped.to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(event), viewer))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn relay(
    nexus: SocketAddr,
    bearer: Option<String>,
    name: String,
    channel: String,
    events: broadcast::Sender<TapEvent>,
) {
    let reason = match subscribe_and_relay(nexus, bearer, &name, &channel, &events).await {
        Ok(reason) => reason,
        Err(e) => format!("tap connection failed: {e}"),
    };
    debug!(name, channel, reason, "tap ended");
    let _ = events.send(TapEvent::Closed(reason.into()));
}

async fn subscribe_and_relay(
    nexus: SocketAddr,
    bearer: Option<String>,
    name: &str,
    channel: &str,
    events: &broadcast::Sender<TapEvent>,
) -> Result<String, tokio_tungstenite::tungstenite::Error> {
    let stream = TcpStream::connect(nexus).await?;
    let _ = stream.set_nodelay(true);
    // With access control on, the tap acts as the console identity, proved
    // by a secret that never leaves the process.
    let mut request = format!("ws://{nexus}/").into_client_request()?;
    if let Some(bearer) = bearer {
        let value = format!("Bearer {bearer}").parse().map_err(|_| {
            tokio_tungstenite::tungstenite::Error::Url(
                tokio_tungstenite::tungstenite::error::UrlError::EmptyHostName,
            )
        })?;
        request.headers_mut().insert("authorization", value);
    }
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await?;
    let hello = format!("1h|{}|{name}", name.len());
    let subscribe = format!("1c|{}|{channel}|{}|0", channel.len(), TAP_TTL.as_secs());
    ws.send(WsMessage::text(hello)).await?;
    ws.send(WsMessage::text(subscribe.clone())).await?;
    let _ = events.send(TapEvent::Ready(name.into()));
    let period = TAP_TTL / 2;
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                None => return Ok("the nexus closed the tap".into()),
                Some(Err(e)) => return Err(e),
                Some(Ok(WsMessage::Text(text))) => {
                    if let Ok(Message::Receive { sender, channel, text }) = protocol::parse(&text) {
                        let message = TapMessage {
                            sender: sender.into(),
                            channel: channel.into(),
                            text: text.into(),
                            time_ms: now_ms(),
                        };
                        // No viewer right now is fine: nothing waits.
                        let _ = events.send(TapEvent::Message(Arc::new(message)));
                    }
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    return Ok(match frame {
                        Some(f) => format!("closed by the nexus: {} {}", u16::from(f.code), f.reason),
                        None => "closed by the nexus".into(),
                    })
                }
                Some(Ok(_)) => {}
            },
            _ = renew.tick() => ws.send(WsMessage::text(subscribe.clone())).await?,
        }
    }
}

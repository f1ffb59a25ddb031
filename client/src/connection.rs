//! One WebSocket connection speaking EaseChat, without renewal or
//! reconnection: the building block of [`crate::Client`].

use std::net::TcpStream;
use std::time::Duration;

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as WsMessage, WebSocket};

use crate::{ClientError, Received};
use easechat_protocol::{self as protocol, Message};

/// How long [`Connection::disconnect`] waits for the nexus's close after `1d`.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A connection to a nexus.
#[derive(Debug)]
pub struct Connection {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

fn lost(e: impl std::fmt::Display) -> ClientError {
    ClientError::Lost(e.to_string())
}

impl Connection {
    /// Opens a TCP connection to `url` (`ws://host:port[/path]`) and upgrades
    /// it, presenting `token` (if any) as `Authorization: Bearer`.
    pub fn open(url: &str, token: Option<&str>) -> Result<Connection, ClientError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| ClientError::Url(url.to_string()))?;
        let host_port = rest.split('/').next().unwrap_or(rest);
        let connect_error = |reason: String| ClientError::Connect {
            url: url.to_string(),
            reason,
        };
        let stream = TcpStream::connect(host_port).map_err(|e| connect_error(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| connect_error(e.to_string()))?;
        let mut request = url
            .into_client_request()
            .map_err(|e| connect_error(e.to_string()))?;
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| connect_error("the token is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let (ws, _) = tungstenite::client(request, MaybeTlsStream::Plain(stream))
            .map_err(|e| connect_error(e.to_string()))?;
        Ok(Connection { ws })
    }

    fn send(&mut self, message: Message<'_>) -> Result<(), ClientError> {
        self.ws
            .send(WsMessage::text(message.encode()))
            .map_err(|e| self.closed_or(e))
    }

    /// Turns a write error into the nexus's close, if it closed.
    fn closed_or(&mut self, e: tungstenite::Error) -> ClientError {
        match e {
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                ClientError::Closed {
                    code: 1000,
                    reason: String::new(),
                }
            }
            other => lost(other),
        }
    }

    /// `1h`: names the connection.
    pub fn hello(&mut self, name: &str) -> Result<(), ClientError> {
        self.send(Message::Hello { name })
    }

    /// `1c`: subscribes for `ttl` (zero unsubscribes).
    pub fn subscribe(&mut self, channel: &str, ttl: Duration) -> Result<(), ClientError> {
        self.send(Message::Subscribe { channel, ttl })
    }

    /// `1t`: publishes `text` on `channel`.
    pub fn transmit(&mut self, channel: &str, text: &str) -> Result<(), ClientError> {
        self.send(Message::Transmit { channel, text })
    }

    /// Waits up to `wait` for a `1r`; `Ok(None)` on timeout.
    pub fn recv(&mut self, wait: Duration) -> Result<Option<Received>, ClientError> {
        if let MaybeTlsStream::Plain(s) = self.ws.get_mut() {
            s.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .map_err(lost)?;
        }
        loop {
            match self.ws.read() {
                Ok(WsMessage::Text(text)) => match protocol::parse(&text) {
                    Ok(Message::Receive {
                        sender,
                        channel,
                        text,
                    }) => {
                        return Ok(Some(Received {
                            sender: sender.to_string(),
                            channel: channel.to_string(),
                            text: text.to_string(),
                        }))
                    }
                    Ok(other) => {
                        return Err(ClientError::Protocol(format!("unexpected {other:?}")))
                    }
                    Err(e) => return Err(ClientError::Protocol(e.to_string())),
                },
                Ok(WsMessage::Close(frame)) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((u16::from(CloseCode::Status), String::new()));
                    return Err(ClientError::Closed { code, reason });
                }
                Ok(_) => continue, // pings are answered by tungstenite
                // A signal (Ctrl-C) interrupts the read like a timeout does:
                // the caller looks at its flags and calls again.
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    // Flush a pending pong, if reading queued one.
                    let _ = self.ws.flush();
                    return Ok(None);
                }
                Err(e) => return Err(self.closed_or(e)),
            }
        }
    }

    /// `1d`: asks the nexus to close with `reason`, and waits until it has
    /// (messages still in flight are read and dropped).
    pub fn disconnect(&mut self, reason: &str) -> Result<(), ClientError> {
        self.send(Message::Disconnect { reason })?;
        loop {
            match self.recv(CLOSE_WAIT) {
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(lost(format!(
                        "no close from the nexus within {} s",
                        CLOSE_WAIT.as_secs_f64()
                    )))
                }
                Err(ClientError::Closed { code: 1000, .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes from the client side with 1000 (without `1d`).
    pub fn close(&mut self) {
        let _ = self.ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        let _ = self.ws.flush();
    }
}

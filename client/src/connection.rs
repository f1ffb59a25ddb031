//! One WebSocket connection speaking EaseChat, without renewal or
//! reconnection: the building block of [`crate::Client`]. `ws://` is plain
//! TCP; `wss://` is TLS (rustls, `ring` provider) with the trust roots of a
//! [`tls_config`].

use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as WsMessage, WebSocket};

use crate::{ClientError, Event, Position, Received, RecoveryReport};
use easechat_protocol::{self as protocol, Message};

/// How long [`Connection::disconnect`] waits for the nexus's close after `1d`.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The TCP port of a `ws://` URL that names none.
pub const WS_DEFAULT_PORT: u16 = 80;

/// The TCP port of a `wss://` URL that names none.
pub const WSS_DEFAULT_PORT: u16 = 443;

/// A connection to a nexus.
#[derive(Debug)]
pub struct Connection {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

fn lost(e: impl std::fmt::Display) -> ClientError {
    ClientError::Lost(e.to_string())
}

/// Where a `ws://` or `wss://` URL points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target<'a> {
    /// `wss://`.
    tls: bool,
    /// The host as connected to and checked against the certificate:
    /// a DNS name or an IP address (an IPv6 one without its brackets).
    host: &'a str,
    port: u16,
}

impl<'a> Target<'a> {
    fn parse(url: &'a str) -> Result<Target<'a>, ClientError> {
        let invalid = || ClientError::Url(url.to_string());
        let (tls, rest) = if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err(invalid());
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        if authority.contains('@') {
            return Err(invalid()); // user:password@ is not supported
        }
        let (host, port) = match authority.strip_prefix('[') {
            // [IPv6]:port
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']').ok_or_else(invalid)?;
                match after {
                    "" => (host, None),
                    _ => (host, Some(after.strip_prefix(':').ok_or_else(invalid)?)),
                }
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(invalid());
        }
        let port = match port {
            None | Some("") if tls => WSS_DEFAULT_PORT,
            None | Some("") => WS_DEFAULT_PORT,
            Some(port) => port.parse().map_err(|_| invalid())?,
        };
        Ok(Target { tls, host, port })
    }
}

/// The TLS settings of `wss://` connections: the certificate authorities
/// in the PEM file `ca` (it may hold several certificates; exactly those are
/// trusted), or with `None` the system's trust roots. TLS 1.2 and 1.3 with
/// rustls's `ring` provider; ALPN `http/1.1`.
///
/// Build it once and share it: [`crate::Client`] does so for all its
/// reconnects.
///
/// # Errors
///
/// [`ClientError::Ca`] (naming the file) when `ca` cannot be read, is not
/// PEM, or holds no usable certificate; [`ClientError::Tls`] when the
/// system has no trust roots.
pub fn tls_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, ClientError> {
    let roots = match ca {
        Some(path) => ca_roots(path)?,
        None => system_roots()?,
    };
    // Explicitly `ring`: the process-wide default provider is ambiguous
    // when another crate of the build enables aws-lc-rs too.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in the PEM file `path`, as trust anchors.
fn ca_roots(path: &Path) -> Result<RootCertStore, ClientError> {
    let ca_error = |reason: String| ClientError::Ca {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| ca_error(format!("cannot read it: {e}")))?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| ca_error(format!("not valid PEM: {e}")))?;
        roots.add(cert).map_err(|e| {
            ca_error(match e {
                // Not "invalid peer certificate": it is ours.
                rustls::Error::InvalidCertificate(e) => {
                    format!("certificate {} is not usable: {e}", i + 1)
                }
                e => format!("certificate {}: {e}", i + 1),
            })
        })?;
    }
    if roots.is_empty() {
        return Err(ca_error(
            "holds no certificate (no PEM \"-----BEGIN CERTIFICATE-----\" section)".into(),
        ));
    }
    Ok(roots)
}

/// The operating system's trust roots.
///
/// `rustls-native-certs` rather than `webpki-roots`: a deployment's own CA
/// installed in the system store (update-ca-certificates, or
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`) is trusted without `--ca`, and the roots
/// follow the system's updates instead of being frozen into the binary at
/// build time.
fn system_roots() -> Result<RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(ClientError::Tls(format!(
            "no system root certificates found{}; name the CA to trust \
             (easechat --ca FILE, Options::ca)",
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join("; "))
            }
        )));
    }
    Ok(roots)
}

/// The TLS handshake on `tcp`, done before the WebSocket upgrade so that a
/// certificate problem is reported as such.
fn tls_handshake(
    config: Arc<ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    // An IP address is checked against the certificate's IP addresses (and
    // sent without SNI); a name is the SNI and checked against its names.
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not a valid TLS server name: {e}"))?;
    let mut tls = ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).map_err(|e| {
            let unknown_issuer = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|e| {
                    matches!(
                        e,
                        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
                    )
                });
            let hint = if unknown_issuer {
                " (the server's certificate is not signed by a trusted CA: \
                 for a private CA, trust it with --ca FILE / Options::ca)"
            } else {
                ""
            };
            format!("TLS handshake failed: {e}{hint}")
        })?;
    }
    Ok(StreamOwned::new(tls, tcp))
}

impl Connection {
    /// Opens a TCP connection to `url` (`ws://host[:port][/path]` or
    /// `wss://host[:port][/path]`; the port defaults to 80 and 443) and
    /// upgrades it, presenting `token` (if any) as `Authorization: Bearer`.
    /// A `wss://` URL trusts the system's roots: see [`Connection::open_with`]
    /// for another CA.
    pub fn open(url: &str, token: Option<&str>) -> Result<Connection, ClientError> {
        Connection::open_with(url, token, None)
    }

    /// [`Connection::open`] with the TLS settings of a `wss://` URL: `tls`
    /// (see [`tls_config`]), or when `None` the system's roots. A `ws://`
    /// URL ignores `tls`.
    pub fn open_with(
        url: &str,
        token: Option<&str>,
        tls: Option<&Arc<ClientConfig>>,
    ) -> Result<Connection, ClientError> {
        let target = Target::parse(url)?;
        let connect_error = |reason: String| ClientError::Connect {
            url: url.to_string(),
            reason,
        };
        let tls = match (target.tls, tls) {
            (false, _) => None,
            (true, Some(config)) => Some(config.clone()),
            (true, None) => Some(tls_config(None)?),
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| connect_error(e.to_string()))?;
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| connect_error("the token is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let tcp = TcpStream::connect((target.host, target.port))
            .map_err(|e| connect_error(e.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|e| connect_error(e.to_string()))?;
        let stream = match tls {
            None => MaybeTlsStream::Plain(tcp),
            Some(config) => MaybeTlsStream::Rustls(
                tls_handshake(config, target.host, tcp).map_err(connect_error)?,
            ),
        };
        let (ws, _) =
            tungstenite::client(request, stream).map_err(|e| connect_error(e.to_string()))?;
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

    /// `1h` with extension options (comma-separated, e.g. `positions`):
    /// names the connection and asks for the extensions. Only for a nexus
    /// that knows them; an older one closes with 1002.
    pub fn hello_with(&mut self, name: &str, options: &str) -> Result<(), ClientError> {
        self.send(Message::HelloWith { name, options })
    }

    /// `1c` from a position (positions extension, after
    /// [`Connection::hello_with`] `positions`): subscribes for `ttl` and
    /// first receives everything published on `channel` after `from`, or
    /// a report that it cannot be recovered.
    pub fn recover(
        &mut self,
        channel: &str,
        ttl: Duration,
        from: &Position,
    ) -> Result<(), ClientError> {
        self.send(Message::Recover {
            channel,
            ttl,
            offset: from.offset,
            epoch: &from.epoch,
        })
    }

    /// `1c`: subscribes for `ttl` (zero unsubscribes).
    pub fn subscribe(&mut self, channel: &str, ttl: Duration) -> Result<(), ClientError> {
        self.send(Message::Subscribe { channel, ttl })
    }

    /// `1t`: publishes `text` on `channel`.
    pub fn transmit(&mut self, channel: &str, text: &str) -> Result<(), ClientError> {
        self.send(Message::Transmit { channel, text })
    }

    /// Waits up to `wait` for a `1r`; `Ok(None)` on timeout. A message's
    /// position and the nexus's `1p` reports are left out: see
    /// [`Connection::recv_event`].
    pub fn recv(&mut self, wait: Duration) -> Result<Option<Received>, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_event(left)? {
                Some(Event::Message { message, .. }) => return Ok(Some(message)),
                Some(_) if Instant::now() < deadline => continue,
                _ => return Ok(None),
            }
        }
    }

    /// Waits up to `wait` for a `1r` (with its position, if it has one) or
    /// a `1p` report (whose [`RecoveryReport::from`] is `None`: only the
    /// sender of the recovery knows it); `Ok(None)` on timeout.
    pub fn recv_event(&mut self, wait: Duration) -> Result<Option<Event>, ClientError> {
        // On the TCP stream under TLS too: rustls keeps a partly read
        // record, so a timed-out read resumes where it stopped.
        let tcp = match self.ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => Some(tcp),
            MaybeTlsStream::Rustls(tls) => Some(tls.get_ref()),
            _ => None, // no other kind is ever opened
        };
        if let Some(tcp) = tcp {
            tcp.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .map_err(lost)?;
        }
        loop {
            match self.ws.read() {
                Ok(WsMessage::Text(text)) => {
                    return match protocol::parse(&text) {
                        Ok(message) => event(message).map(Some),
                        Err(e) => Err(ClientError::Protocol(e.to_string())),
                    }
                }
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

/// What a frame from the nexus means to a client: only `1r` and `1p` are
/// sent to clients.
fn event(message: Message<'_>) -> Result<Event, ClientError> {
    Ok(match message {
        Message::Receive {
            sender,
            channel,
            text,
        } => Event::Message {
            message: Received {
                sender: sender.to_string(),
                channel: channel.to_string(),
                text: text.to_string(),
            },
            position: None,
        },
        Message::ReceiveAt {
            sender,
            channel,
            text,
            offset,
            epoch,
        } => Event::Message {
            message: Received {
                sender: sender.to_string(),
                channel: channel.to_string(),
                text: text.to_string(),
            },
            position: Some(Position {
                offset,
                epoch: epoch.to_string(),
            }),
        },
        Message::Position {
            channel,
            status,
            offset,
            epoch,
        } => Event::Report(RecoveryReport {
            channel: channel.to_string(),
            status,
            offset,
            epoch: epoch.to_string(),
            from: None,
        }),
        other => return Err(ClientError::Protocol(format!("unexpected {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use easechat_protocol::PositionStatus;

    #[test]
    fn frames_become_events() {
        let parsed = |frame: &str| event(protocol::parse(frame).unwrap());
        let received = Received {
            sender: "a".into(),
            channel: "h/x".into(),
            text: "t|\n".into(),
        };
        assert_eq!(
            parsed("1r|1|a|3|h/x|3|t|\n").unwrap(),
            Event::Message {
                message: received.clone(),
                position: None
            }
        );
        assert_eq!(
            parsed("1r|1|a|3|h/x|3|t|\n|17|3|k|1").unwrap(),
            Event::Message {
                message: received,
                position: Some(Position {
                    offset: 17,
                    epoch: "k|1".into()
                })
            }
        );
        assert_eq!(
            parsed("1p|3|h/x|2|523|3|def").unwrap(),
            Event::Report(RecoveryReport {
                channel: "h/x".into(),
                status: PositionStatus::NotRecovered,
                offset: 523,
                epoch: "def".into(),
                from: None,
            })
        );
        // What only clients send is not expected from the nexus.
        assert!(matches!(
            parsed("1t|1|c|1|x"),
            Err(ClientError::Protocol(_))
        ));
    }

    fn target(url: &str) -> Option<(bool, &str, u16)> {
        Target::parse(url).ok().map(|t| (t.tls, t.host, t.port))
    }

    #[test]
    fn urls() {
        assert_eq!(
            target("ws://127.0.0.1:6500"),
            Some((false, "127.0.0.1", 6500))
        );
        assert_eq!(target("ws://h:1/p?q#f"), Some((false, "h", 1)));
        assert_eq!(
            target("wss://example.org:8443/"),
            Some((true, "example.org", 8443))
        );
        // Default ports.
        assert_eq!(target("ws://example.org"), Some((false, "example.org", 80)));
        assert_eq!(
            target("ws://example.org/x"),
            Some((false, "example.org", 80))
        );
        assert_eq!(
            target("wss://example.org"),
            Some((true, "example.org", 443))
        );
        assert_eq!(
            target("wss://example.org:/"),
            Some((true, "example.org", 443))
        );
        assert_eq!(target("wss://h?x=1"), Some((true, "h", 443)));
        // IPv6.
        assert_eq!(target("wss://[::1]:9/"), Some((true, "::1", 9)));
        assert_eq!(target("ws://[::1]/"), Some((false, "::1", 80)));
        // Not ws:// or wss://, or no host, or a bad port.
        for bad in [
            "http://h:1/",
            "127.0.0.1:6500",
            "WSS//h",
            "ws://",
            "wss:///x",
            "ws://:80/",
            "ws://h:x/",
            "ws://h:65536/",
            "ws://::1/",
            "ws://[::1/",
            "ws://[::1]x/",
            "ws://u:p@h:1/",
        ] {
            assert_eq!(target(bad), None, "{bad}");
        }
    }
}

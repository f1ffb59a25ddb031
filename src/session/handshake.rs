//! The WebSocket upgrade: read one HTTP request, answer 101 or an error.
//!
//! tungstenite validates the request and derives the accept key; this module
//! only moves bytes, bounds the request size, and returns whatever the client
//! sent after the request (its first frames) to the session.

use std::future::Future;
use std::pin::Pin;

use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{create_response, write_response, Request};

use super::gate::{Turn, WorkGate};
use super::stream::SharedStream;
use crate::access::Presented;
use easechat_auth::Status;

/// Largest HTTP upgrade request accepted.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client went away before finishing its request.
    #[error("connection closed during the handshake")]
    Closed,
    /// The socket failed.
    #[error("handshake I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Not a valid WebSocket upgrade request; the client got a 4xx answer.
    #[error("rejected upgrade request: {0}")]
    Rejected(String),
    /// Access control refused the credential; the client got 401 or 403.
    #[error("refused: {0}")]
    Refused(String),
}

/// The bytes the client sent after its request, what `authorize` gave, and
/// the connection's turn at the shard's start gate (the caller ends it
/// once the session is set up).
pub type Upgraded<'g, T> = Result<(Vec<u8>, T, Turn<'g>), HandshakeError>;

/// What [`upgrade`] decided about the credential before answering 101.
pub type Authorize<'a, T> = Box<dyn FnOnce(Presented) -> Result<T, (Status, String)> + 'a>;

/// [`upgrade`] on the heap: its buffers live only while it runs, instead of
/// sizing every connection's task for them.
pub fn upgrade_boxed<'a, T: 'a>(
    stream: &'a SharedStream,
    gate: &'a WorkGate,
    authorize: Authorize<'a, T>,
) -> Pin<Box<dyn Future<Output = Upgraded<'a, T>> + 'a>> {
    Box::pin(upgrade(stream, gate, authorize))
}

/// What to do with the bytes of an upgrade request received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The request is not complete yet: read more.
    Incomplete,
    /// Send `response` (101) and start WebSocket; the request used
    /// `consumed` bytes, the rest are the client's first frames.
    Upgrade {
        /// The 101 Switching Protocols response.
        response: Vec<u8>,
        /// Bytes of the request.
        consumed: usize,
        /// The credential the request carried.
        presented: Presented,
    },
    /// Answer with this HTTP status and reason, then close.
    Reject {
        /// Status line text, e.g. `400 Bad Request`.
        status: &'static str,
        /// Why, for the response body and the log.
        why: String,
    },
}

/// Decides on the request bytes received so far: pure, no I/O.
pub fn answer(request: &[u8]) -> Answer {
    match Request::try_parse(request) {
        Ok(None) if request.len() >= MAX_REQUEST_BYTES => Answer::Reject {
            status: "431 Request Header Fields Too Large",
            why: "request too large".into(),
        },
        Ok(None) => Answer::Incomplete,
        Ok(Some((consumed, parsed))) => match create_response(&parsed) {
            Ok(response) => {
                let mut out = Vec::with_capacity(256);
                match write_response(&mut out, &response) {
                    Ok(()) => Answer::Upgrade {
                        response: out,
                        consumed,
                        presented: presented(&parsed),
                    },
                    Err(e) => Answer::Reject {
                        status: "400 Bad Request",
                        why: e.to_string(),
                    },
                }
            }
            Err(e) => Answer::Reject {
                status: "400 Bad Request",
                why: e.to_string(),
            },
        },
        Err(e) => Answer::Reject {
            status: "400 Bad Request",
            why: e.to_string(),
        },
    }
}

/// The token a request carries: `?token=` in its URL (the only way the
/// deployed Java client has), else `Authorization: Bearer`. The admin
/// console's tap shows its process secret as a bearer; the caller tells it
/// apart from a token.
pub fn presented(request: &Request) -> Presented {
    let from_query = request.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned())
    });
    let from_header = || {
        let value = request.headers().get("authorization")?.to_str().ok()?;
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string())
    };
    Presented {
        token: from_query.or_else(from_header),
        console: false,
        certificate: None,
    }
}

/// Performs the upgrade: the request is read, `authorize` decides on its
/// credential before the 101 (a refusal answers 401 or 403 with no detail),
/// and the bytes the client sent after its request are returned with what
/// `authorize` gave.
///
/// Once the request is complete, the rest (the credential's check, the 101)
/// runs in a turn at the shard's `gate`, so a connect storm's upgrades,
/// made runnable together by one I/O poll, do not run back to back.
pub async fn upgrade<'a, 'g, T>(
    stream: &SharedStream,
    gate: &'g WorkGate,
    authorize: Authorize<'a, T>,
) -> Upgraded<'g, T> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        request.extend_from_slice(&chunk[..n]);
        match answer(&request) {
            Answer::Incomplete => continue,
            Answer::Upgrade {
                response,
                consumed,
                presented,
            } => {
                let Some(turn) = gate.enter().await else {
                    return reject(stream, "503 Service Unavailable", "server busy").await;
                };
                let granted = match authorize(presented) {
                    Ok(granted) => granted,
                    Err((status, why)) => {
                        turn.leave().await;
                        return refuse(stream, status, why).await;
                    }
                };
                stream.write_all(&response).await?;
                return Ok((request.split_off(consumed), granted, turn));
            }
            Answer::Reject { status, why } => return reject(stream, status, &why).await,
        }
    }
}

/// Answers a refused credential: 401 (no or bad token) or 403 (valid but
/// not allowed), with a body that tells a prober nothing more; the reason
/// goes to the log only.
async fn refuse<'g, T>(stream: &SharedStream, status: Status, why: String) -> Upgraded<'g, T> {
    let response: &[u8] = match status {
        Status::Unauthorized => b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\nConnection: close\r\n\r\nunauthorized\n",
        Status::Forbidden => b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\nConnection: close\r\n\r\nforbidden\n",
    };
    let _ = stream.write_all(response).await;
    stream.close_write().await;
    Err(HandshakeError::Refused(why))
}

/// Answers a failed upgrade with an HTTP error whose body says why.
pub async fn reject<T>(
    stream: &SharedStream,
    status: &str,
    why: &str,
) -> Result<T, HandshakeError> {
    let body = format!("{why}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    stream.close_write().await;
    Err(HandshakeError::Rejected(why.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] =
        b"GET /any/path HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn a_valid_request_on_any_path_is_upgraded_and_leftover_kept() {
        let mut bytes = REQUEST.to_vec();
        bytes.extend_from_slice(b"frames");
        match answer(&bytes) {
            Answer::Upgrade {
                response, consumed, ..
            } => {
                let text = String::from_utf8(response).unwrap();
                assert!(text.starts_with("HTTP/1.1 101"), "{text}");
                assert!(
                    text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                    "RFC 6455 example key"
                );
                assert_eq!(&bytes[consumed..], b"frames");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_token_comes_from_the_query_or_the_bearer_header() {
        let with = |line: &str, header: &str| {
            let text = format!(
                "GET {line} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{header}\r\n"
            );
            match answer(text.as_bytes()) {
                Answer::Upgrade { presented, .. } => presented.token,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(with("/?token=abc.def", ""), Some("abc.def".into()));
        assert_eq!(with("/x?a=1&token=t%2Bk", ""), Some("t+k".into()));
        assert_eq!(
            with("/", "Authorization: Bearer xyz\r\n"),
            Some("xyz".into())
        );
        assert_eq!(
            with("/", "authorization: bearer  xyz \r\n"),
            Some("xyz".into())
        );
        assert_eq!(with("/", "Authorization: Basic xyz\r\n"), None);
        assert_eq!(
            with("/?token=q", "Authorization: Bearer h\r\n"),
            Some("q".into())
        );
        assert_eq!(with("/", ""), None);
    }

    #[test]
    fn partial_bad_and_oversized_requests() {
        assert_eq!(answer(&REQUEST[..20]), Answer::Incomplete);
        assert!(matches!(
            answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Answer::Reject {
                status: "400 Bad Request",
                ..
            }
        ));
        let huge = [
            b"GET / HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; MAX_REQUEST_BYTES],
        ]
        .concat();
        assert!(matches!(
            answer(&huge),
            Answer::Reject {
                status: "431 Request Header Fields Too Large",
                ..
            }
        ));
    }
}

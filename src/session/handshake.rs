//! The WebSocket upgrade: read one HTTP request, answer 101 or an error.
//!
//! tungstenite validates the request and derives the accept key; this module
//! only moves bytes, bounds the request size, and returns whatever the client
//! sent after the request (its first frames) to the session.

use std::future::Future;
use std::pin::Pin;

use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{create_response, write_response, Request};

use super::stream::SharedStream;

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
}

/// [`upgrade`] on the heap: its buffers live only while it runs, instead of
/// sizing every connection's task for them.
pub fn upgrade_boxed(
    stream: &SharedStream,
) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, HandshakeError>> + '_>> {
    Box::pin(upgrade(stream))
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

/// Performs the upgrade; returns the bytes the client sent after its request.
pub async fn upgrade(stream: &SharedStream) -> Result<Vec<u8>, HandshakeError> {
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
            Answer::Upgrade { response, consumed } => {
                stream.write_all(&response).await?;
                return Ok(request.split_off(consumed));
            }
            Answer::Reject { status, why } => return reject(stream, status, &why).await,
        }
    }
}

/// Answers a failed upgrade with an HTTP error whose body says why.
pub async fn reject(
    stream: &SharedStream,
    status: &str,
    why: &str,
) -> Result<Vec<u8>, HandshakeError> {
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
            Answer::Upgrade { response, consumed } => {
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

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
        match Request::try_parse(&request) {
            Ok(None) if request.len() >= MAX_REQUEST_BYTES => {
                return reject(
                    stream,
                    "431 Request Header Fields Too Large",
                    "request too large",
                )
                .await;
            }
            Ok(None) => continue,
            Ok(Some((consumed, parsed))) => match create_response(&parsed) {
                Ok(response) => {
                    let mut out = Vec::with_capacity(256);
                    write_response(&mut out, &response)
                        .map_err(|e| HandshakeError::Rejected(e.to_string()))?;
                    stream.write_all(&out).await?;
                    return Ok(request.split_off(consumed));
                }
                Err(e) => return reject(stream, "400 Bad Request", &e.to_string()).await,
            },
            Err(e) => return reject(stream, "400 Bad Request", &e.to_string()).await,
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

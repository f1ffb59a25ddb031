//! Just enough client-side WebSocket for a load generator: the upgrade,
//! masked text frames out, and unmasked frames in, without allocating per
//! frame. (The nexus's own tests use tungstenite; this tool must not be the
//! bottleneck it measures.)

use std::io;

use easechat_protocol::Message;

/// Builds the HTTP upgrade request for `host_port` and `path`.
pub fn upgrade_request(host_port: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Checks a complete upgrade response (through the blank line); returns the
/// number of bytes it used.
pub fn parse_upgrade_response(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 8192 {
            return Err(io::Error::other("upgrade response too long"));
        }
        return Ok(None);
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(&buf[..buf.len().min(80)]).to_string();
        return Err(io::Error::other(format!("upgrade refused: {line}")));
    }
    Ok(Some(end + 4))
}

/// Appends a masked pong answering a ping with `payload`.
pub fn push_pong_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x8a);
    out.push(0x80 | payload.len().min(125) as u8);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&payload[..payload.len().min(125)]);
}

/// Appends `message`, encoded by the protocol codec, as one text frame.
pub fn push_message(out: &mut Vec<u8>, message: Message<'_>) {
    push_text_frame(out, message.encode().as_bytes());
}

/// Appends a masked, final text frame carrying `payload`. The mask is zero:
/// legal (RFC 6455 only asks clients to pick unpredictable keys, which a
/// server cannot check), and it spares the load generator the XOR while the
/// nexus still unmasks every byte.
pub fn push_text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// One frame from the nexus.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A text frame's payload.
    Text(&'a [u8]),
    /// A close frame: code (if any).
    Close(Option<u16>),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// Any other frame (ping, pong…), ignored.
    Other,
}

/// Parses the next complete unmasked frame at the start of `buf`; returns it
/// and its total length, or `None` if more bytes are needed.
pub fn next_frame(buf: &[u8]) -> Option<(Incoming<'_>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, header) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let total = header + len;
    if buf.len() < total {
        return None;
    }
    let payload = &buf[header..total];
    let frame = match opcode {
        1 => Incoming::Text(payload),
        8 => Incoming::Close(
            (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
        ),
        9 => Incoming::Ping(payload),
        _ => Incoming::Other,
    };
    Some((frame, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_the_parser_shape() {
        let mut out = Vec::new();
        push_text_frame(&mut out, &[b'a'; 300]);
        assert_eq!(out[1], 0x80 | 126);
        let server = [0x81, 3, b'a', b'b', b'c', 0x88, 2, 0x03, 0xe8];
        let (frame, used) = next_frame(&server).unwrap();
        assert!(matches!(frame, Incoming::Text(b"abc")));
        let (frame, _) = next_frame(&server[used..]).unwrap();
        assert!(matches!(frame, Incoming::Close(Some(1000))));
        assert!(next_frame(&server[..4]).is_none());
    }
}

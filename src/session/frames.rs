//! WebSocket frame decoding for one connection, without I/O: bytes in,
//! whole messages and protocol replies (pongs, close answers) out.
//!
//! tungstenite does the framing, unmasking, fragmentation, control frames and
//! UTF-8 checks; this module feeds it one read at a time through [`WsIo`] and
//! reports how the batch ended. Pure, so the fuzz target drives it directly.

use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message as WsMessage};

use super::ws_io::WsIo;
use super::Cause;
use crate::stats::ProtocolErrorKind;

/// tungstenite's own read buffer per connection; messages larger than this
/// grow it for as long as they are being read.
const READ_BUFFER_BYTES: usize = 1024;

/// A connection's WebSocket decoding state.
#[derive(Debug)]
pub struct FrameDecoder(WebSocketContext);

impl FrameDecoder {
    /// A decoder for a server connection that accepts messages and frames
    /// up to `max_message_bytes`; `leftover` is what came with the upgrade.
    pub fn new(max_message_bytes: usize, leftover: Vec<u8>) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes));
        FrameDecoder(WebSocketContext::from_partially_read(
            leftover,
            Role::Server,
            Some(config),
        ))
    }
}

/// How decoding one batch of input ended.
#[derive(Debug)]
pub enum Decoded {
    /// All input consumed; read the socket again.
    NeedMore,
    /// The client's close frame was received; its answer is in `replies`.
    ClosedByClient,
    /// A WebSocket-level error: the connection must be closed.
    Failed(WsError),
}

/// Decodes everything in `input`: complete messages go to `inbox`, bytes the
/// protocol requires the server to send (pongs, the close answer) to
/// `replies`.
pub fn decode(
    decoder: &mut FrameDecoder,
    input: &[u8],
    replies: &mut Vec<u8>,
    inbox: &mut Vec<WsMessage>,
) -> Decoded {
    let mut io = WsIo::new(input, replies);
    loop {
        match decoder.0.read(&mut io) {
            Ok(message) => inbox.push(message),
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Decoded::NeedMore
            }
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                return Decoded::ClosedByClient
            }
            Err(e) => return Decoded::Failed(e),
        }
    }
}

/// The close code, reason and counter for a WebSocket-level error.
pub fn close_code_for(error: &WsError) -> (u16, String, Cause) {
    match error {
        WsError::Utf8(_) => (
            1007,
            "invalid UTF-8 in text frame".into(),
            Cause::Protocol(ProtocolErrorKind::Utf8),
        ),
        WsError::Capacity(e) => (1009, format!("message too big: {e}"), Cause::Limit),
        other => (
            1002,
            other.to_string(),
            Cause::Protocol(ProtocolErrorKind::WebSocket),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked_text(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn messages_split_across_reads_come_out_whole() {
        let mut decoder = FrameDecoder::new(1024, Vec::new());
        let bytes = [masked_text(b"1h|1|a"), masked_text(b"1h|1|b")].concat();
        let (mut replies, mut inbox) = (Vec::new(), Vec::new());
        for piece in bytes.chunks(3) {
            assert!(matches!(
                decode(&mut decoder, piece, &mut replies, &mut inbox),
                Decoded::NeedMore
            ));
        }
        assert_eq!(
            inbox,
            vec![WsMessage::text("1h|1|a"), WsMessage::text("1h|1|b")]
        );
        assert!(replies.is_empty());
    }

    #[test]
    fn pings_are_answered_and_close_is_reported() {
        let mut decoder = FrameDecoder::new(1024, Vec::new());
        let (mut replies, mut inbox) = (Vec::new(), Vec::new());
        let ping = [0x89, 0x80, 0, 0, 0, 0];
        decode(&mut decoder, &ping, &mut replies, &mut inbox);
        assert_eq!(replies, [0x8a, 0x00], "an empty pong");
        replies.clear();
        let close = [0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8];
        assert!(matches!(
            decode(&mut decoder, &close, &mut replies, &mut inbox),
            Decoded::ClosedByClient
        ));
        assert_eq!(&replies[..2], &[0x88, 0x02], "the close is answered");
    }

    #[test]
    fn errors_map_to_close_codes() {
        let mut decoder = FrameDecoder::new(16, Vec::new());
        let (mut replies, mut inbox) = (Vec::new(), Vec::new());
        let big = masked_text(&[b'x'; 40]);
        match decode(&mut decoder, &big, &mut replies, &mut inbox) {
            Decoded::Failed(e) => assert_eq!(close_code_for(&e).0, 1009),
            other => panic!("{other:?}"),
        }
        let mut decoder = FrameDecoder::new(1024, Vec::new());
        match decode(
            &mut decoder,
            &masked_text(&[0xff, 0xfe]),
            &mut replies,
            &mut inbox,
        ) {
            Decoded::Failed(e) => assert_eq!(close_code_for(&e).0, 1007),
            other => panic!("{other:?}"),
        }
        let mut decoder = FrameDecoder::new(1024, Vec::new());
        let unmasked = [0x81, 0x01, b'x'];
        match decode(&mut decoder, &unmasked, &mut replies, &mut inbox) {
            Decoded::Failed(e) => assert_eq!(close_code_for(&e).0, 1002),
            other => panic!("{other:?}"),
        }
    }
}

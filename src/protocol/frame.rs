//! Encoding the one message the nexus sends: `1r`, as a complete WebSocket
//! frame ready to be written to any number of subscribers.
//!
//! Server-to-client frames are not masked, so the bytes built here are the
//! same for every receiver: they are built once per publish and shared.

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::Message;

/// Byte length of `1r|<len>|<sender>|<len>|<channel>|<len>|<text>`.
pub fn receive_payload_len(sender: &str, channel: &str, text: &str) -> usize {
    receive(sender, channel, text).encoded_len()
}

fn receive<'a>(sender: &'a str, channel: &'a str, text: &'a str) -> Message<'a> {
    Message::Receive {
        sender,
        channel,
        text,
    }
}

/// Builds the complete unmasked WebSocket text frame carrying a `1r`.
pub fn encode_receive_frame(sender: &str, channel: &str, text: &str) -> Vec<u8> {
    encode_text_frame(&receive(sender, channel, text))
}

/// Builds the complete unmasked WebSocket text frame carrying `message`
/// (the positions extension's `1r` and `1p` too).
pub fn encode_text_frame(message: &Message<'_>) -> Vec<u8> {
    let payload_len = message.encoded_len();
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let mut out = Vec::with_capacity(header.len(payload_len as u64) + payload_len);
    header
        .format(payload_len as u64, &mut out)
        .expect("writing a frame header into a Vec cannot fail");
    message.write_to(&mut out);
    debug_assert_eq!(out.len(), header.len(payload_len as u64) + payload_len);
    out
}

/// An unmasked ping frame with an empty payload (keepalive).
pub const PING_FRAME: [u8; 2] = [0x89, 0x00];

/// The longest close reason a close frame can carry (125 bytes minus the code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// Cuts `reason` to at most [`MAX_CLOSE_REASON_BYTES`], at a character boundary.
pub fn truncate_close_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Builds a complete unmasked close frame with `code` and `reason`
/// (truncated to fit).
pub fn encode_close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = truncate_close_reason(reason);
    let header = FrameHeader {
        opcode: OpCode::Control(Control::Close),
        ..FrameHeader::default()
    };
    let payload_len = 2 + reason.len();
    let mut out = Vec::with_capacity(header.len(payload_len as u64) + payload_len);
    header
        .format(payload_len as u64, &mut out)
        .expect("writing a frame header into a Vec cannot fail");
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_len_matches_the_spec_example() {
        assert_eq!(
            receive_payload_len("alice", "c/lobby", "helloworld"),
            "1r|5|alice|7|c/lobby|10|helloworld".len()
        );
    }

    #[test]
    fn frame_is_an_unmasked_final_text_frame() {
        let frame = encode_receive_frame("alice", "c/lobby", "helloworld");
        let payload = b"1r|5|alice|7|c/lobby|10|helloworld";
        assert_eq!(frame[0], 0x81, "FIN + text opcode");
        assert_eq!(
            frame[1] as usize,
            payload.len(),
            "no mask bit, short length"
        );
        assert_eq!(&frame[2..], payload);
    }

    #[test]
    fn long_payloads_use_extended_lengths() {
        let text = "x".repeat(70_000);
        let frame = encode_receive_frame("s", "c", &text);
        let len = receive_payload_len("s", "c", &text);
        assert_eq!(frame[1], 127, "64-bit length marker");
        assert_eq!(
            u64::from_be_bytes(frame[2..10].try_into().unwrap()),
            len as u64
        );
        assert_eq!(frame.len(), 10 + len);
    }

    #[test]
    fn multi_byte_lengths_are_byte_counts() {
        let frame = encode_receive_frame("名", "c", "你好");
        assert_eq!(&frame[2..], "1r|3|名|1|c|6|你好".as_bytes());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Whatever the strings, the frame's payload is the codec's `1r`,
        /// which parses back to the same three strings.
        #[test]
        fn frame_payload_is_the_codec_receive(sender in ".*", channel in ".*", text in ".*") {
            let frame = encode_receive_frame(&sender, &channel, &text);
            let message = receive(&sender, &channel, &text);
            let payload = message.encode();
            proptest::prop_assert!(frame.ends_with(payload.as_bytes()));
            proptest::prop_assert_eq!(crate::protocol::parse(&payload), Ok(message));
        }
    }

    #[test]
    fn close_frame_carries_code_and_reason() {
        let frame = encode_close_frame(1008, "slow consumer");
        assert_eq!(frame[0], 0x88, "FIN + close opcode");
        assert_eq!(frame[1] as usize, 2 + "slow consumer".len());
        assert_eq!(&frame[2..4], &1008u16.to_be_bytes());
        assert_eq!(&frame[4..], b"slow consumer");
    }

    #[test]
    fn close_reason_is_cut_at_a_character_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate_close_reason(&long);
        assert_eq!(cut.len(), 122, "61 two-byte characters fit in 123 bytes");
        assert!(encode_close_frame(1000, &long).len() <= 2 + 125);
        assert_eq!(truncate_close_reason("short"), "short");
    }
}

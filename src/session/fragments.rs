//! Fragmented messages, assembled by the decoder itself.
//!
//! tungstenite keeps a fragment twice until its message completes: in the
//! message it assembles and in its read buffer, which stays at the
//! fragment's size. 1,800 sockets each holding one 32 KiB fragment cost
//! 82 KiB apiece that way. Here a fragment's payload is unmasked into one
//! buffer as it arrives, and the finished message goes to tungstenite as a
//! single final frame (written in place in front of the payload, masked with
//! a zero key, so it is not copied again), which is where its UTF-8 is
//! checked. Control frames between fragments still go to tungstenite as
//! they come.

use tungstenite::error::{CapacityError, ProtocolError};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::Error as WsError;

/// Room kept in front of the payload for the final frame's header: 2 bytes,
/// an 8-byte length, a 4-byte (zero) mask key.
const HEADROOM: usize = 14;

/// A fragmented message being received.
#[derive(Debug)]
pub struct Assembly {
    /// Text or binary: the first fragment's kind.
    kind: Data,
    /// [`HEADROOM`] bytes, then the unmasked payload received so far.
    buffer: Vec<u8>,
}

impl Assembly {
    /// Starts a message with its first fragment (`opcode` 1 or 2, no FIN).
    pub fn start(opcode: u8, payload: &[u8], mask: [u8; 4], max_message_bytes: usize) -> Self {
        let mut assembly = Assembly {
            kind: data_kind(opcode),
            buffer: Vec::with_capacity(HEADROOM + payload.len()),
        };
        assembly.buffer.resize(HEADROOM, 0);
        assembly
            .extend(payload, mask, max_message_bytes)
            .expect("a first fragment within the frame limit fits the message limit");
        assembly
    }

    /// Appends a continuation's payload, refusing a message past
    /// `max_message_bytes` as tungstenite would (1009).
    pub fn extend(
        &mut self,
        payload: &[u8],
        mask: [u8; 4],
        max_message_bytes: usize,
    ) -> Result<(), WsError> {
        let size = self.payload_len() + payload.len();
        if size > max_message_bytes {
            return Err(WsError::Capacity(CapacityError::MessageTooLong {
                size,
                max_size: max_message_bytes,
            }));
        }
        let start = self.buffer.len();
        self.buffer.extend_from_slice(payload);
        for (i, byte) in self.buffer[start..].iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        Ok(())
    }

    /// The whole message as one final, zero-masked frame.
    pub fn finish(&mut self) -> &[u8] {
        let len = self.payload_len() as u64;
        let header = FrameHeader {
            is_final: true,
            opcode: OpCode::Data(self.kind),
            mask: Some([0; 4]),
            ..FrameHeader::default()
        };
        let start = HEADROOM - header.len(len);
        header
            .format(len, &mut &mut self.buffer[start..HEADROOM])
            .expect("a frame header fits its headroom");
        &self.buffer[start..]
    }

    /// Bytes this message holds.
    pub fn held_bytes(&self) -> usize {
        self.buffer.capacity()
    }

    fn payload_len(&self) -> usize {
        self.buffer.len() - HEADROOM
    }
}

/// The error for a new data frame while a fragmented message is unfinished,
/// as tungstenite words it (1002).
pub fn expected_continuation(opcode: u8) -> WsError {
    WsError::Protocol(ProtocolError::ExpectedFragment(data_kind(opcode)))
}

/// A data frame's kind from its opcode (1 text, 2 binary).
fn data_kind(opcode: u8) -> Data {
    if opcode == 2 {
        Data::Binary
    } else {
        Data::Text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_become_one_zero_masked_final_frame() {
        let mask = [1, 2, 3, 4];
        let masked = |text: &[u8]| -> Vec<u8> {
            text.iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect()
        };
        let mut a = Assembly::start(1, &masked(b"hello "), mask, 1024);
        a.extend(&masked(b"world"), mask, 1024).unwrap();
        assert_eq!(a.finish(), b"\x81\x8b\0\0\0\0hello world");
    }

    #[test]
    fn long_messages_get_the_longer_length_forms() {
        let mut a = Assembly::start(1, &[b'x'; 200], [0; 4], 1 << 20);
        let frame = a.finish();
        assert_eq!(&frame[..4], &[0x81, 0xfe, 0, 200]);
        assert_eq!(frame.len(), 4 + 4 + 200);
        let mut a = Assembly::start(2, &[b'x'; 70_000], [0; 4], 1 << 20);
        let frame = a.finish();
        assert_eq!(&frame[..2], &[0x82, 0xff]);
        assert_eq!(u64::from_be_bytes(frame[2..10].try_into().unwrap()), 70_000);
        assert_eq!(frame.len(), 14 + 70_000);
    }

    #[test]
    fn a_message_past_the_limit_is_refused() {
        let mut a = Assembly::start(1, b"12345", [0; 4], 8);
        match a.extend(b"6789", [0; 4], 8) {
            Err(WsError::Capacity(CapacityError::MessageTooLong {
                size: 9,
                max_size: 8,
            })) => {}
            other => panic!("{other:?}"),
        }
    }
}

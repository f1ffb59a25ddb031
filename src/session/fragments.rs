//! Fragmented messages, assembled by the decoder itself.
//!
//! tungstenite keeps a fragment twice until its message completes: in the
//! message it assembles and in its read buffer, which stays at the
//! fragment's size. 1,800 sockets each holding one 32 KiB fragment cost
//! 82 KiB apiece that way. Here a fragment's payload is unmasked into one
//! buffer as its bytes arrive (the frame is never buffered whole first,
//! which would touch twice the fresh memory), and the finished message goes
//! to tungstenite as a
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
    /// Starts a message whose first fragment has `opcode` 1 or 2 (no FIN);
    /// its payload comes through [`Assembly::push`].
    pub fn new(opcode: u8) -> Self {
        Assembly {
            kind: data_kind(opcode),
            buffer: vec![0; HEADROOM],
        }
    }

    /// Checks that a fragment declaring `payload_len` bytes keeps the message
    /// within `max_message_bytes`, refusing it as tungstenite would (1009)
    /// before any of its payload is taken.
    pub fn admit(&self, payload_len: u64, max_message_bytes: usize) -> Result<(), WsError> {
        let size = (self.payload_len() as u64).saturating_add(payload_len);
        if size > max_message_bytes as u64 {
            return Err(WsError::Capacity(CapacityError::MessageTooLong {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                max_size: max_message_bytes,
            }));
        }
        Ok(())
    }

    /// Appends payload bytes of the current fragment as they arrive,
    /// unmasked with the fragment's `mask` from payload position `offset`;
    /// `fragment_left` is how much of the fragment is still to come after
    /// these bytes. The buffer grows by doubling, but never past the
    /// fragment's end, so it holds what arrived, not what was declared.
    pub fn push(&mut self, payload: &[u8], mask: [u8; 4], offset: u64, fragment_left: u64) {
        let (len, capacity) = (self.buffer.len(), self.buffer.capacity());
        if len + payload.len() > capacity {
            let fragment_end = len as u64 + payload.len() as u64 + fragment_left;
            let target = ((capacity * 2) as u64).clamp((len + payload.len()) as u64, fragment_end);
            self.buffer.reserve_exact(target as usize - len);
        }
        let key: [u8; 4] = std::array::from_fn(|i| mask[(offset as usize + i) % 4]);
        self.buffer.extend_from_slice(payload);
        for (i, byte) in self.buffer[len..].iter_mut().enumerate() {
            *byte ^= key[i % 4];
        }
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

    /// An assembly of whole fragments, each pushed at once.
    fn assembled(opcode: u8, fragments: &[&[u8]], mask: [u8; 4]) -> Assembly {
        let mut a = Assembly::new(opcode);
        for fragment in fragments {
            a.admit(fragment.len() as u64, 1 << 20).unwrap();
            a.push(fragment, mask, 0, 0);
        }
        a
    }

    fn masked(text: &[u8], mask: [u8; 4]) -> Vec<u8> {
        text.iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect()
    }

    #[test]
    fn fragments_become_one_zero_masked_final_frame() {
        let mask = [1, 2, 3, 4];
        let mut a = assembled(
            1,
            &[&masked(b"hello ", mask), &masked(b"world", mask)],
            mask,
        );
        assert_eq!(a.finish(), b"\x81\x8b\0\0\0\0hello world");
    }

    #[test]
    fn a_fragment_pushed_piece_by_piece_is_unmasked_from_its_offset() {
        let mask = [9, 8, 7, 6];
        let text = b"the quick brown fox jumps over the lazy dog";
        let wire = masked(text, mask);
        let mut a = Assembly::new(1);
        a.admit(wire.len() as u64, 1024).unwrap();
        let mut offset = 0;
        for piece in wire.chunks(3) {
            let left = (wire.len() - offset - piece.len()) as u64;
            a.push(piece, mask, offset as u64, left);
            offset += piece.len();
        }
        assert_eq!(&a.finish()[6..], text);
        assert!(
            a.held_bytes() <= HEADROOM + text.len(),
            "grows to the fragment's end, not past it: {}",
            a.held_bytes()
        );
    }

    #[test]
    fn long_messages_get_the_longer_length_forms() {
        let mut a = assembled(1, &[&[b'x'; 200]], [0; 4]);
        let frame = a.finish();
        assert_eq!(&frame[..4], &[0x81, 0xfe, 0, 200]);
        assert_eq!(frame.len(), 4 + 4 + 200);
        let mut a = assembled(2, &[&[b'x'; 70_000]], [0; 4]);
        let frame = a.finish();
        assert_eq!(&frame[..2], &[0x82, 0xff]);
        assert_eq!(u64::from_be_bytes(frame[2..10].try_into().unwrap()), 70_000);
        assert_eq!(frame.len(), 14 + 70_000);
    }

    #[test]
    fn a_message_past_the_limit_is_refused_at_the_fragment_header() {
        let mut a = Assembly::new(1);
        a.admit(5, 8).unwrap();
        a.push(b"12345", [0; 4], 0, 0);
        match a.admit(4, 8) {
            Err(WsError::Capacity(CapacityError::MessageTooLong {
                size: 9,
                max_size: 8,
            })) => {}
            other => panic!("{other:?}"),
        }
    }
}

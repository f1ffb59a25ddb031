//! WebSocket frame decoding for one connection, without I/O: bytes in,
//! whole messages and protocol replies (pongs, close answers) out.
//!
//! tungstenite does the framing, unmasking, fragmentation, control frames and
//! UTF-8 checks; this module feeds it through [`WsIo`] and reports how the
//! batch ended. Pure, so the fuzz target drives it directly.
//!
//! tungstenite reserves a frame's whole declared length as soon as it has
//! read the header, so a 14-byte header declaring 64 KiB would cost 64 KiB at
//! once. The decoder therefore reads frame headers itself and hands
//! tungstenite only complete frames: a partial frame is kept here and grows
//! only as its bytes arrive ([`FrameDecoder::buffered_bytes`] is what the
//! connection holds, for the shard's budget and the message deadline).
//!
//! tungstenite would also hold a fragment twice until its message completes;
//! fragmented messages are assembled by [`super::fragments`] instead and
//! reach tungstenite as one final frame. And tungstenite keeps its read
//! buffer at the largest frame it was handed, for the life of the
//! connection; after a large frame the decoder gives it a fresh context (it
//! holds no other state we use), so a client that once sent 64 KiB does not
//! pin 64 KiB.

use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message as WsMessage};

use super::fragments::{expected_continuation, Assembly};
use super::ws_io::WsIo;
use super::Cause;
use crate::stats::ProtocolErrorKind;

/// tungstenite's own read buffer per connection; messages larger than this
/// grow it for as long as they are being read.
const READ_BUFFER_BYTES: usize = 1024;

/// A partial frame whose buffer grew past this is given a fresh one once it
/// completes, so one large message does not pin memory on an idle connection.
const KEEP_PARTIAL_BYTES: usize = 4 * 1024;

/// A connection's WebSocket decoding state.
#[derive(Debug)]
pub struct FrameDecoder {
    context: WebSocketContext,
    /// Largest frame payload accepted (larger ones are handed to tungstenite
    /// by their header alone, which it refuses with a capacity error).
    max_frame_bytes: u64,
    /// The start of a frame whose bytes have not all arrived.
    partial: Vec<u8>,
    /// The fragmented message being received, between its first fragment
    /// and its last.
    assembly: Option<Assembly>,
    /// The fragment whose payload is being unmasked into `assembly` as its
    /// bytes arrive.
    fragment: Option<Fragment>,
    /// A frame larger than [`KEEP_PARTIAL_BYTES`] went through tungstenite
    /// since its context was made: its read buffer grew to that size.
    context_grew: bool,
    /// The configuration, to make a fresh context.
    config: WebSocketConfig,
    /// What came with the upgrade, decoded with the first batch.
    leftover: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder for a server connection that accepts messages and frames
    /// up to `max_message_bytes`; `leftover` is what came with the upgrade.
    pub fn new(max_message_bytes: usize, leftover: Vec<u8>) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes));
        FrameDecoder {
            context: WebSocketContext::new(Role::Server, Some(config)),
            max_frame_bytes: max_message_bytes as u64,
            partial: Vec::new(),
            assembly: None,
            fragment: None,
            context_grew: false,
            config,
            leftover,
        }
    }

    /// Bytes of unfinished messages this connection holds: the partial
    /// frame's buffer (its length while it fits the buffer every connection
    /// keeps anyway, its capacity past that) and the buffer of a fragmented
    /// message being assembled.
    pub fn buffered_bytes(&self) -> usize {
        let partial = if self.partial.capacity() > KEEP_PARTIAL_BYTES {
            self.partial.capacity()
        } else {
            self.partial.len()
        };
        partial + self.assembly.as_ref().map_or(0, Assembly::held_bytes)
    }

    /// After a large message, between messages: a fresh tungstenite context
    /// with a small read buffer (see the module docs).
    fn shrink_after_large_message(&mut self) {
        // tungstenite holds no unfinished message (fragments are assembled
        // here), so this is safe even between fragments.
        if self.context_grew && self.context.can_read() && self.context.can_write() {
            self.context = WebSocketContext::new(Role::Server, Some(self.config));
            self.context_grew = false;
        }
    }

    /// True while a message has started and not yet completed.
    pub fn mid_message(&self) -> bool {
        !self.partial.is_empty() || self.assembly.is_some()
    }

    /// True for the frames assembled here rather than by tungstenite: a
    /// masked data frame without FIN, a continuation of the message being
    /// assembled, and a new data frame while one is (an error). Anything
    /// malformed (unmasked, reserved bits) goes to tungstenite, which
    /// refuses it.
    fn assembles(&self, header: &Header) -> bool {
        let fragmenting = self.assembly.is_some();
        header.mask.is_some()
            && !header.rsv
            && match header.opcode {
                0 => fragmenting,
                1 | 2 => fragmenting || !header.fin,
                _ => false,
            }
    }

    /// Starts taking in a fragment (see [`FrameDecoder::assembles`]) from
    /// its header: its payload then comes through
    /// [`FrameDecoder::take_fragment`]. A message that would pass the limit
    /// is refused here, before any of its payload is held.
    fn start_fragment(&mut self, header: Header) -> Result<(), WsError> {
        if header.opcode != 0 {
            if self.assembly.is_some() {
                return Err(expected_continuation(header.opcode));
            }
            self.assembly = Some(Assembly::new(header.opcode));
        }
        let assembly = self
            .assembly
            .as_ref()
            .expect("a continuation of an assembly");
        assembly.admit(header.payload_len, self.max_frame_bytes as usize)?;
        self.fragment = Some(Fragment {
            header,
            received: 0,
        });
        Ok(())
    }

    /// Unmasks as much of the current fragment's payload as `input` holds
    /// into the assembly; returns the bytes taken. The message's last
    /// fragment, once complete, hands the whole message to tungstenite.
    fn take_fragment(
        &mut self,
        input: &[u8],
        replies: &mut Vec<u8>,
        inbox: &mut Vec<WsMessage>,
    ) -> (usize, Decoded) {
        let fragment = self.fragment.as_mut().expect("a fragment being received");
        let left = fragment.header.payload_len - fragment.received;
        let take = left.min(input.len() as u64) as usize;
        let mask = fragment
            .header
            .mask
            .expect("only masked frames are assembled");
        let assembly = self
            .assembly
            .as_mut()
            .expect("a fragment belongs to an assembly");
        assembly.push(&input[..take], mask, fragment.received, left - take as u64);
        fragment.received += take as u64;
        if fragment.received < fragment.header.payload_len {
            return (take, Decoded::NeedMore);
        }
        let last = fragment.header.fin;
        self.fragment = None;
        if !last {
            return (take, Decoded::NeedMore);
        }
        let mut assembly = self.assembly.take().expect("checked above");
        let frame = assembly.finish();
        if frame.len() > KEEP_PARTIAL_BYTES {
            self.context_grew = true;
        }
        (take, feed(self, frame, replies, inbox))
    }

    /// Takes in a fragment whose header starts `bytes` (and as much of its
    /// payload as follows it there); returns the bytes taken.
    fn fragment_from(
        &mut self,
        header: Header,
        bytes: &[u8],
        replies: &mut Vec<u8>,
        inbox: &mut Vec<WsMessage>,
    ) -> (usize, Decoded) {
        if let Err(e) = self.start_fragment(header) {
            return (0, Decoded::Failed(e));
        }
        let (taken, decoded) = self.take_fragment(&bytes[header.header_len..], replies, inbox);
        (header.header_len + taken, decoded)
    }
}

/// A fragment being received: its header and how much of its payload came.
#[derive(Debug)]
struct Fragment {
    header: Header,
    received: u64,
}

/// What a frame header says.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    /// Any of the three reserved bits set.
    rsv: bool,
    opcode: u8,
    /// The masking key, if the frame is masked.
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: u64,
}

/// Reads the frame header at the start of `bytes`, if all of it is there.
fn parse_header(bytes: &[u8]) -> Option<Header> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let header_len = 2 + extended + mask;
    if bytes.len() < header_len {
        return None;
    }
    let payload_len = match extended {
        0 => u64::from(second & 0x7f),
        2 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
        _ => u64::from_be_bytes(bytes[2..10].try_into().expect("8 bytes")),
    };
    let key = &bytes[header_len - mask..header_len];
    Some(Header {
        fin: first & 0x80 != 0,
        rsv: first & 0x70 != 0,
        opcode: first & 0x0f,
        mask: (mask == 4).then(|| [key[0], key[1], key[2], key[3]]),
        header_len,
        payload_len,
    })
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
/// `replies`; an incomplete frame at the end is kept for the next call.
pub fn decode(
    decoder: &mut FrameDecoder,
    input: &[u8],
    replies: &mut Vec<u8>,
    inbox: &mut Vec<WsMessage>,
) -> Decoded {
    if !decoder.leftover.is_empty() {
        let leftover = std::mem::take(&mut decoder.leftover);
        match decode_input(decoder, &leftover, replies, inbox) {
            Decoded::NeedMore => {}
            ended => return ended,
        }
    }
    let decoded = decode_input(decoder, input, replies, inbox);
    if matches!(decoded, Decoded::NeedMore) {
        decoder.shrink_after_large_message();
    }
    decoded
}

fn decode_input(
    decoder: &mut FrameDecoder,
    mut input: &[u8],
    replies: &mut Vec<u8>,
    inbox: &mut Vec<WsMessage>,
) -> Decoded {
    // First the fragment whose payload is arriving, then the frame left over
    // from earlier reads, a piece at a time so nothing past its end is taken.
    loop {
        if input.is_empty() {
            return Decoded::NeedMore;
        }
        if decoder.fragment.is_some() {
            let (taken, decoded) = decoder.take_fragment(input, replies, inbox);
            input = &input[taken..];
            if !matches!(decoded, Decoded::NeedMore) {
                return decoded;
            }
            continue;
        }
        if decoder.partial.is_empty() {
            break;
        }
        let wanted = match parse_header(&decoder.partial) {
            None => {
                let have = decoder.partial.len();
                // Enough for the two fixed bytes, then for the whole header.
                let needed = if have < 2 {
                    2
                } else {
                    2 + match decoder.partial[1] & 0x7f {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    } + if decoder.partial[1] & 0x80 != 0 { 4 } else { 0 }
                };
                needed - have
            }
            Some(header) => {
                (header.header_len as u64 + header.payload_len - decoder.partial.len() as u64)
                    as usize
            }
        };
        let take = wanted.min(input.len());
        let (have, capacity) = (decoder.partial.len(), decoder.partial.capacity());
        if have + take > capacity {
            // Grow by doubling as bytes arrive, but never past the frame's
            // end: a 33 KiB frame holds 33 KiB, not 64.
            let target = (capacity * 2).max(have + take).min(have + wanted);
            decoder.partial.reserve_exact(target - have);
        }
        decoder.partial.extend_from_slice(&input[..take]);
        input = &input[take..];
        let Some(header) = parse_header(&decoder.partial) else {
            continue;
        };
        if header.payload_len > decoder.max_frame_bytes {
            // The header alone makes tungstenite refuse the frame.
            let partial = std::mem::take(&mut decoder.partial);
            return feed(decoder, &partial, replies, inbox);
        }
        if decoder.assembles(&header) {
            // Only the header is held: the fragment starts as one that
            // arrived whole would (an empty one completes at once), and its
            // payload goes to the assembly as it comes.
            let mut held = std::mem::take(&mut decoder.partial);
            let ended = decoder.fragment_from(header, &held, replies, inbox).1;
            held.clear();
            decoder.partial = held;
            match ended {
                Decoded::NeedMore => continue,
                ended => return ended,
            }
        }
        let total = header.header_len as u64 + header.payload_len;
        if decoder.partial.len() as u64 == total {
            let mut partial = std::mem::take(&mut decoder.partial);
            let ended = dispatch(decoder, &partial, replies, inbox);
            if partial.capacity() <= KEEP_PARTIAL_BYTES {
                partial.clear();
                decoder.partial = partial;
            }
            if !matches!(ended, Decoded::NeedMore) {
                return ended;
            }
        }
    }
    // Then every complete frame in the input, handed over without a copy.
    let mut complete = 0;
    while let Some(header) = parse_header(&input[complete..]) {
        if header.payload_len > decoder.max_frame_bytes {
            // The frames before it, then this header: tungstenite refuses it.
            return match dispatch(decoder, &input[..complete], replies, inbox) {
                Decoded::NeedMore => feed(
                    decoder,
                    &input[complete..complete + header.header_len],
                    replies,
                    inbox,
                ),
                ended => ended,
            };
        }
        let total = header.header_len + header.payload_len as usize;
        if input.len() - complete < total {
            break;
        }
        complete += total;
    }
    match dispatch(decoder, &input[..complete], replies, inbox) {
        Decoded::NeedMore => {}
        ended => return ended,
    }
    // A frame that did not all arrive: a fragment's payload goes to its
    // message as it comes, any other frame waits whole in `partial`.
    let rest = &input[complete..];
    match parse_header(rest) {
        Some(header) if decoder.assembles(&header) => {
            decoder.fragment_from(header, rest, replies, inbox).1
        }
        _ => {
            decoder.partial.extend_from_slice(rest);
            Decoded::NeedMore
        }
    }
}

/// Hands complete `frames` to tungstenite, in runs, except the fragments of
/// a fragmented message, which are assembled here.
fn dispatch(
    decoder: &mut FrameDecoder,
    frames: &[u8],
    replies: &mut Vec<u8>,
    inbox: &mut Vec<WsMessage>,
) -> Decoded {
    let (mut run, mut at) = (0, 0);
    while at < frames.len() {
        let header = parse_header(&frames[at..]).expect("only complete frames are dispatched");
        let end = at + header.header_len + header.payload_len as usize;
        if decoder.assembles(&header) {
            if run < at {
                match feed(decoder, &frames[run..at], replies, inbox) {
                    Decoded::NeedMore => {}
                    ended => return ended,
                }
            }
            match decoder
                .fragment_from(header, &frames[at..end], replies, inbox)
                .1
            {
                Decoded::NeedMore => {}
                ended => return ended,
            }
            run = end;
        } else if header.payload_len > KEEP_PARTIAL_BYTES as u64 {
            decoder.context_grew = true;
        }
        at = end;
    }
    if run < frames.len() {
        feed(decoder, &frames[run..], replies, inbox)
    } else {
        Decoded::NeedMore
    }
}

/// Hands complete frames to tungstenite.
fn feed(
    decoder: &mut FrameDecoder,
    frames: &[u8],
    replies: &mut Vec<u8>,
    inbox: &mut Vec<WsMessage>,
) -> Decoded {
    let mut io = WsIo::new(frames, replies);
    loop {
        match decoder.context.read(&mut io) {
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
    fn a_partial_frame_holds_what_arrived_not_what_it_declares() {
        let mut decoder = FrameDecoder::new(64 * 1024, Vec::new());
        let (mut replies, mut inbox) = (Vec::new(), Vec::new());
        // FIN + text, masked, 16-bit length 65,000, mask key.
        let header = [0x81, 0xfe, 0xfd, 0xe8, 0, 0, 0, 0];
        decode(&mut decoder, &header, &mut replies, &mut inbox);
        assert_eq!(decoder.buffered_bytes(), header.len());
        assert!(decoder.mid_message());
        decode(&mut decoder, b"1h|", &mut replies, &mut inbox);
        assert_eq!(decoder.buffered_bytes(), header.len() + 3);
        assert!(
            decoder.partial.capacity() < 1024,
            "no reservation of 64 KiB"
        );
        let text = format!("1h|64991|{}", "x".repeat(64_991));
        assert_eq!(text.len(), 65_000);
        decode(
            &mut decoder,
            &text.as_bytes()[3..],
            &mut replies,
            &mut inbox,
        );
        assert_eq!(inbox.len(), 1);
        assert_eq!(decoder.buffered_bytes(), 0);
        assert!(!decoder.mid_message());
        assert!(
            !decoder.context_grew,
            "tungstenite's buffer is let go after the large message"
        );
    }

    #[test]
    fn a_large_partial_frame_counts_its_buffer() {
        let mut decoder = FrameDecoder::new(64 * 1024, Vec::new());
        let (mut replies, mut inbox) = (Vec::new(), Vec::new());
        let header = [0x81, 0xfe, 0xfd, 0xe8, 0, 0, 0, 0];
        decode(&mut decoder, &header, &mut replies, &mut inbox);
        for _ in 0..5 {
            decode(&mut decoder, &[b'x'; 4000], &mut replies, &mut inbox);
        }
        assert!(decoder.partial.capacity() > KEEP_PARTIAL_BYTES);
        assert_eq!(decoder.buffered_bytes(), decoder.partial.capacity());
    }

    #[test]
    fn fragments_count_until_the_last_one() {
        let mut decoder = FrameDecoder::new(1024, Vec::new());
        let (mut replies, mut inbox) = (Vec::new(), Vec::new());
        let mut first = masked_text(b"1h|2|");
        first[0] = 0x01; // text, no FIN
        decode(&mut decoder, &first, &mut replies, &mut inbox);
        assert!(decoder.mid_message());
        assert!(decoder.buffered_bytes() >= 5, "the fragment is counted");
        let mut last = masked_text(b"ab");
        last[0] = 0x80; // continuation, FIN
        decode(&mut decoder, &last, &mut replies, &mut inbox);
        assert_eq!(inbox, vec![WsMessage::text("1h|2|ab")]);
        assert!(!decoder.mid_message());
        assert_eq!(decoder.buffered_bytes(), 0);
    }

    /// A masked frame with `first` as its first byte and this mask key.
    fn masked_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn a_fragment_split_anywhere_is_held_once_and_decodes_whole() {
        let text = format!("1h|6000|{}", "y".repeat(6000));
        let (head, tail) = text.as_bytes().split_at(5000);
        let wire = [
            masked_frame(0x01, head, [3, 1, 4, 1]),
            masked_frame(0x89, b"hi", [0, 0, 0, 9]),
            masked_frame(0x80, tail, [2, 7, 1, 8]),
        ]
        .concat();
        for piece_len in [1, 3, 7, 1000, 4096, wire.len()] {
            let mut decoder = FrameDecoder::new(64 * 1024, Vec::new());
            let (mut replies, mut inbox) = (Vec::new(), Vec::new());
            for piece in wire.chunks(piece_len) {
                let decoded = decode(&mut decoder, piece, &mut replies, &mut inbox);
                assert!(matches!(decoded, Decoded::NeedMore), "{decoded:?}");
                assert!(
                    decoder.partial.len() <= 14,
                    "a fragment's payload is not buffered as a frame ({piece_len})"
                );
                assert!(
                    decoder.buffered_bytes() <= 14 + text.len(),
                    "held once: {} ({piece_len})",
                    decoder.buffered_bytes()
                );
            }
            let texts: Vec<_> = inbox.iter().filter(|m| m.is_text()).collect();
            assert_eq!(texts.len(), 1, "{piece_len}");
            assert!(*texts[0] == WsMessage::text(text.clone()), "{piece_len}");
            assert_eq!(
                replies,
                [0x8a, 0x02, b'h', b'i'],
                "the ping between fragments"
            );
            assert_eq!(decoder.buffered_bytes(), 0);
            assert!(!decoder.mid_message());
        }
    }

    #[test]
    fn an_empty_last_fragment_whose_header_is_split_completes_the_message() {
        let mut decoder = FrameDecoder::new(1024, Vec::new());
        let (mut replies, mut inbox) = (Vec::new(), Vec::new());
        let first = masked_frame(0x01, b"1h|1|a", [1, 2, 3, 4]);
        let last = masked_frame(0x80, b"", [5, 6, 7, 8]);
        assert_eq!(last.len(), 6);
        decode(
            &mut decoder,
            &[&first[..], &last[..4]].concat(),
            &mut replies,
            &mut inbox,
        );
        assert!(inbox.is_empty());
        decode(&mut decoder, &last[4..], &mut replies, &mut inbox);
        assert_eq!(
            inbox,
            vec![WsMessage::text("1h|1|a")],
            "complete at its header"
        );
        assert!(!decoder.mid_message());
    }

    #[test]
    fn a_fragmented_message_past_the_limit_fails_at_the_fragment_header() {
        let mut decoder = FrameDecoder::new(1000, Vec::new());
        let (mut replies, mut inbox) = (Vec::new(), Vec::new());
        let first = masked_frame(0x01, &[b'a'; 600], [1, 2, 3, 4]);
        decode(&mut decoder, &first, &mut replies, &mut inbox);
        let second = masked_frame(0x80, &[b'b'; 600], [1, 2, 3, 4]);
        // Its header alone (2 bytes, a 16-bit length, the mask key).
        match decode(&mut decoder, &second[..8], &mut replies, &mut inbox) {
            Decoded::Failed(e) => {
                assert_eq!(close_code_for(&e).0, 1009);
                assert!(e.to_string().contains("1200"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_declared_length_over_the_limit_fails_at_its_header() {
        let mut decoder = FrameDecoder::new(1024, Vec::new());
        let (mut replies, mut inbox) = (Vec::new(), Vec::new());
        let header = [
            0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ];
        for piece in header.chunks(3) {
            if let Decoded::Failed(e) = decode(&mut decoder, piece, &mut replies, &mut inbox) {
                assert_eq!(close_code_for(&e).0, 1009);
                return;
            }
        }
        panic!("the header alone must fail");
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

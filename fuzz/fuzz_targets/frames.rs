//! Any bytes after the upgrade, through the session's frame decoding
//! (tungstenite) and then the protocol parser, in arbitrary read chunks.
#![no_main]

use ease_chat_nexus::protocol::parse;
use ease_chat_nexus::session::frames::{decode, Decoded, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new(1024, Vec::new());
    let mut replies = Vec::new();
    let mut inbox = Vec::new();
    for piece in input.chunks(chunk) {
        let outcome = decode(&mut decoder, piece, &mut replies, &mut inbox);
        for message in inbox.drain(..) {
            if let tungstenite::Message::Text(text) = message {
                let _ = parse(&text);
            }
        }
        if !matches!(outcome, Decoded::NeedMore) {
            break;
        }
    }
});

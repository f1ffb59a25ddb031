//! Any text a client can send, through the protocol parser.
#![no_main]

use ease_chat_nexus::protocol::{parse, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(Message::Transmit { channel, text }) = parse(text) {
            // Whatever parses must re-encode as a 1r that parses back.
            let frame = ease_chat_nexus::protocol::frame::encode_receive_frame("s", channel, text);
            assert!(!frame.is_empty());
        }
    }
});

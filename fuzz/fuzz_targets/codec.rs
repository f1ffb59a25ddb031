//! Any text a client can send, through the protocol codec: whatever parses
//! must encode to text that parses back to the same message.
#![no_main]

use easechat_protocol::{parse, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(message) = parse(text) else {
        return;
    };
    let encoded = message.encode();
    assert_eq!(message.encoded_len(), encoded.len(), "{message:?}");
    let again: Message<'_> = parse(&encoded).expect("an encoded message parses");
    assert_eq!(again, message, "{text:?} re-encoded as {encoded:?}");
});

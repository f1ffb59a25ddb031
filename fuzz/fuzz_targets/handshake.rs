//! Any bytes as an HTTP upgrade request, through the handshake's parsing
//! and response building.
#![no_main]

use ease_chat_nexus::session::handshake::answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = answer(data);
});

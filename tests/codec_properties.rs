//! Property tests of the codec: encode then parse gives back exactly what
//! went in, for any strings (any Unicode, `|`, newlines); and no input,
//! however broken, makes the parser panic.

use std::time::Duration;

use ease_chat_nexus::protocol::frame::{encode_receive_frame, write_receive_payload};
use ease_chat_nexus::protocol::{parse, Message};
use proptest::prelude::*;

fn field(s: &str) -> String {
    format!("|{}|{s}", s.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn transmit_round_trips(channel in ".*", text in ".*") {
        let wire = format!("1t{}{}", field(&channel), field(&text));
        prop_assert_eq!(parse(&wire), Ok(Message::Transmit { channel: &channel, text: &text }));
    }

    #[test]
    fn hello_and_disconnect_round_trip(s in ".*") {
        let hello = format!("1h{}", field(&s));
        let bye = format!("1d{}", field(&s));
        prop_assert_eq!(parse(&hello), Ok(Message::Hello { name: &s }));
        prop_assert_eq!(parse(&bye), Ok(Message::Disconnect { reason: &s }));
    }

    #[test]
    fn subscribe_round_trips(channel in ".*", seconds in any::<u32>(), nanos in 0u64..1_000_000_000) {
        let wire = format!("1c{}|{seconds}|{nanos}", field(&channel));
        let ttl = Duration::from_secs(u64::from(seconds)) + Duration::from_nanos(nanos);
        prop_assert_eq!(parse(&wire), Ok(Message::Subscribe { channel: &channel, ttl }));
    }

    #[test]
    fn receive_encoding_parses_back(sender in ".*", channel in ".*", text in ".*") {
        let mut payload = Vec::new();
        write_receive_payload(&mut payload, &sender, &channel, &text);
        let payload = String::from_utf8(payload).unwrap();
        prop_assert_eq!(
            parse(&payload),
            Ok(Message::Receive { sender: &sender, channel: &channel, text: &text })
        );
        let frame = encode_receive_frame(&sender, &channel, &text);
        prop_assert!(frame.ends_with(payload.as_bytes()));
    }

    #[test]
    fn arbitrary_text_never_panics(input in ".*") {
        let _ = parse(&input);
    }

    #[test]
    fn protocol_shaped_noise_never_panics(input in "1[hctdrx]?[|0-9a-z你]{0,40}") {
        let _ = parse(&input);
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic(channel in ".*", text in ".*", cut in any::<prop::sample::Index>()) {
        let wire = format!("1t{}{}", field(&channel), field(&text));
        let mut end = cut.index(wire.len());
        while !wire.is_char_boundary(end) {
            end -= 1;
        }
        if end < wire.len() {
            prop_assert!(parse(&wire[..end]).is_err());
        }
    }
}

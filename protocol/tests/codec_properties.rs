//! Property tests of the codec: for every kind, encode then parse gives back
//! exactly what went in, for any strings (any Unicode, `|`, newlines) and
//! any TTL; whatever parses re-encodes to text that parses the same; and
//! no input, however broken, makes the parser panic.

use std::time::Duration;

use easechat_protocol::{parse, Message};
use proptest::prelude::*;

/// Any TTL a `Duration` can hold, nanoseconds included.
fn ttl() -> impl Strategy<Value = Duration> {
    (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
}

/// Asserts `parse(encode(m)) == m` and that `encoded_len` is exact.
fn round_trips(message: Message<'_>) -> Result<(), TestCaseError> {
    let wire = message.encode();
    prop_assert_eq!(message.encoded_len(), wire.len());
    prop_assert_eq!(parse(&wire), Ok(message));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn hello_round_trips(name in ".*") {
        round_trips(Message::Hello { name: &name })?;
    }

    #[test]
    fn subscribe_round_trips(channel in ".*", ttl in ttl()) {
        round_trips(Message::Subscribe { channel: &channel, ttl })?;
    }

    #[test]
    fn transmit_round_trips(channel in ".*", text in ".*") {
        round_trips(Message::Transmit { channel: &channel, text: &text })?;
    }

    #[test]
    fn disconnect_round_trips(reason in ".*") {
        round_trips(Message::Disconnect { reason: &reason })?;
    }

    #[test]
    fn receive_round_trips(sender in ".*", channel in ".*", text in ".*") {
        round_trips(Message::Receive { sender: &sender, channel: &channel, text: &text })?;
    }

    /// The fuzz target's property where text can differ from its
    /// encoding: a TTL with nanoseconds past a second or numbers that
    /// saturate parses to a message that re-encodes (canonically) to text
    /// that parses to the same message.
    #[test]
    fn any_ttl_numbers_re_encode_to_the_same(seconds in any::<u64>(), nanos in any::<u64>()) {
        let wire = format!("1c|1|c|{seconds}|{nanos}");
        let message = parse(&wire).unwrap();
        let again = message.encode();
        prop_assert_eq!(parse(&again), Ok(message));
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
        let wire = Message::Transmit { channel: &channel, text: &text }.encode();
        let mut end = cut.index(wire.len());
        while !wire.is_char_boundary(end) {
            end -= 1;
        }
        if end < wire.len() {
            prop_assert!(parse(&wire[..end]).is_err());
        }
    }
}

#[test]
fn saturated_ttls_re_encode_to_the_same_message() {
    let huge = "1c|1|c|18446744073709551615|18446744073709551615";
    let message = parse(huge).unwrap();
    assert_eq!(
        message,
        Message::Subscribe {
            channel: "c",
            ttl: Duration::MAX
        }
    );
    let again = message.encode();
    assert_eq!(parse(&again), Ok(message));
    let over = parse("1c|1|c|1|2500000000").unwrap();
    assert_eq!(over.encode(), "1c|1|c|3|500000000");
}

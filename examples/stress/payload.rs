//! What the load generator publishes and how it reads it back.
//!
//! A text is `<publisher>:<channel>:<seq>:<sent ns>|` followed by filler
//! that contains `|` (as real chat does), up to the message size. Messages
//! are written and read with the protocol codec; Redis and NATS carry the
//! text alone.

use std::fmt::Write;

use easechat_protocol::{parse, Message};

/// The header fields of one published text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher index.
    pub publisher: u32,
    /// Channel index.
    pub channel: u32,
    /// Sequence number per (publisher, channel), from 0.
    pub seq: u64,
    /// Send time in nanoseconds since the run's clock origin.
    pub sent_ns: u64,
}

/// Writes the text for `stamp` with filler up to `size` bytes.
pub fn write_text(text: &mut String, stamp: Stamp, size: usize) {
    let _ = write!(
        text,
        "{}:{}:{}:{}|",
        stamp.publisher, stamp.channel, stamp.seq, stamp.sent_ns
    );
    while text.len() < size {
        text.push(if text.len().is_multiple_of(8) {
            '|'
        } else {
            'x'
        });
    }
}

/// Writes the `1t` message for `stamp` with filler up to `size` text bytes.
pub fn write_transmit(out: &mut Vec<u8>, channel_name: &str, stamp: Stamp, size: usize) {
    let mut text = String::with_capacity(size.max(48));
    write_text(&mut text, stamp, size);
    Message::Transmit {
        channel: channel_name,
        text: &text,
    }
    .write_to(out);
}

/// Extracts the stamp from a `1r` payload: v1's, or the positions
/// extension's (`1r` with the channel position appended, sent to clients
/// that asked for positions on a channel with history).
pub fn parse_receive(payload: &[u8]) -> Option<Stamp> {
    let text = match parse(std::str::from_utf8(payload).ok()?) {
        Ok(Message::Receive { text, .. } | Message::ReceiveAt { text, .. }) => text,
        _ => return None,
    };
    parse_text(text.as_bytes())
}

/// Extracts the stamp from a text written by [`write_text`] (what Redis and
/// NATS deliver as it was published).
pub fn parse_text(text: &[u8]) -> Option<Stamp> {
    let mut fields = text.split(|&b| b == b':' || b == b'|');
    let mut next = || {
        let digits = fields.next()?;
        if digits.is_empty() || digits.len() > 19 {
            return None;
        }
        digits.iter().try_fold(0u64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
        })
    };
    Some(Stamp {
        publisher: u32::try_from(next()?).ok()?,
        channel: u32::try_from(next()?).ok()?,
        seq: next()?,
        sent_ns: next()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_built_from_a_transmit_parses_back() {
        let stamp = Stamp {
            publisher: 3,
            channel: 7,
            seq: 12345,
            sent_ns: 987654321,
        };
        let mut transmit = Vec::new();
        write_transmit(&mut transmit, "bench/7", stamp, 64);
        let Ok(Message::Transmit { channel, text }) =
            parse(std::str::from_utf8(&transmit).unwrap())
        else {
            panic!("not a 1t: {transmit:?}");
        };
        assert_eq!((channel, text.len()), ("bench/7", 64));
        let receive = Message::Receive {
            sender: "alice",
            channel,
            text,
        }
        .encode();
        assert_eq!(parse_receive(receive.as_bytes()), Some(stamp));
        let positional = Message::ReceiveAt {
            sender: "alice",
            channel,
            text,
            offset: 41,
            epoch: "e1",
        }
        .encode();
        assert_eq!(parse_receive(positional.as_bytes()), Some(stamp));
    }
}

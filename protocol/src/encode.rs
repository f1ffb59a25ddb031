//! Writing a [`Message`] in its wire form: the inverse of [`crate::parse`].
//!
//! Strings are written as `|<UTF-8 byte length>|<bytes>`, so they may hold
//! any text (`|`, newlines, any script). A TTL is written as whole seconds
//! and the nanoseconds below them, which is what [`crate::parse`] adds back.
//! The same writer fills a `String` (clients) or a byte buffer that already
//! holds a WebSocket header (the nexus's shared `1r` frames).

use crate::Message;

/// Somewhere the wire text goes; lets one writer serve `String` and `Vec<u8>`.
trait Sink {
    fn put(&mut self, text: &str);
}

impl Sink for String {
    fn put(&mut self, text: &str) {
        self.push_str(text);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

/// Longest decimal form of a `u64` (18446744073709551615).
const MAX_DIGITS: usize = 20;

/// Writes `n` in decimal without allocating.
fn put_number(out: &mut impl Sink, mut n: u64) {
    let mut digits = [0u8; MAX_DIGITS];
    let mut start = MAX_DIGITS;
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put(std::str::from_utf8(&digits[start..]).expect("ASCII digits are UTF-8"));
}

/// How many decimal digits `n` takes: the `<len>` prefixes are sized with
/// it before anything is written, here and in the server's fan-out frames.
pub fn decimal_len(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Writes `|<len>|<s>`.
fn put_string(out: &mut impl Sink, s: &str) {
    out.put("|");
    put_number(out, s.len() as u64);
    out.put("|");
    out.put(s);
}

fn string_len(s: &str) -> usize {
    2 + decimal_len(s.len() as u64) + s.len()
}

impl Message<'_> {
    /// The two-byte head, `1` and the kind letter.
    fn head(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "1h",
            Message::Subscribe { .. } => "1c",
            Message::Transmit { .. } => "1t",
            Message::Disconnect { .. } => "1d",
            Message::Receive { .. } => "1r",
        }
    }

    /// The string fields in wire order.
    fn strings(&self) -> [Option<&str>; 3] {
        match *self {
            Message::Hello { name } => [Some(name), None, None],
            Message::Subscribe { channel, .. } => [Some(channel), None, None],
            Message::Transmit { channel, text } => [Some(channel), Some(text), None],
            Message::Disconnect { reason } => [Some(reason), None, None],
            Message::Receive {
                sender,
                channel,
                text,
            } => [Some(sender), Some(channel), Some(text)],
        }
    }

    fn write(&self, out: &mut impl Sink) {
        out.put(self.head());
        for s in self.strings().into_iter().flatten() {
            put_string(out, s);
        }
        if let Message::Subscribe { ttl, .. } = self {
            out.put("|");
            put_number(out, ttl.as_secs());
            out.put("|");
            put_number(out, u64::from(ttl.subsec_nanos()));
        }
    }

    /// Byte length of the wire form, without building it (to size a
    /// buffer or a WebSocket header first).
    pub fn encoded_len(&self) -> usize {
        let strings: usize = self.strings().into_iter().flatten().map(string_len).sum();
        let ttl = match self {
            Message::Subscribe { ttl, .. } => {
                2 + decimal_len(ttl.as_secs()) + decimal_len(u64::from(ttl.subsec_nanos()))
            }
            _ => 0,
        };
        self.head().len() + strings + ttl
    }

    /// Appends the wire form to `out` (which may already hold a header).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.write(out);
    }

    /// The wire form, ready to send as one WebSocket text frame.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.encoded_len());
        self.write(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::Message;

    #[test]
    fn every_kind_matches_the_spec_examples() {
        let cases = [
            (
                Message::Hello {
                    name: "abcdef123456",
                },
                "1h|12|abcdef123456",
            ),
            (
                Message::Subscribe {
                    channel: "c/lobby",
                    ttl: Duration::from_secs(300),
                },
                "1c|7|c/lobby|300|0",
            ),
            (
                Message::Transmit {
                    channel: "c/lobby",
                    text: "helloworld",
                },
                "1t|7|c/lobby|10|helloworld",
            ),
            (
                Message::Disconnect {
                    reason: "just logout",
                },
                "1d|11|just logout",
            ),
            (
                Message::Receive {
                    sender: "alice",
                    channel: "c/lobby",
                    text: "helloworld",
                },
                "1r|5|alice|7|c/lobby|10|helloworld",
            ),
        ];
        for (message, wire) in cases {
            assert_eq!(message.encode(), wire);
            assert_eq!(message.encoded_len(), wire.len(), "{wire}");
            let mut bytes = b"head".to_vec();
            message.write_to(&mut bytes);
            assert_eq!(bytes, [b"head", wire.as_bytes()].concat());
        }
    }

    #[test]
    fn lengths_are_utf8_byte_counts_and_ttls_keep_nanoseconds() {
        let m = Message::Transmit {
            channel: "名",
            text: "你好",
        };
        assert_eq!(m.encode(), "1t|3|名|6|你好");
        let m = Message::Subscribe {
            channel: "c",
            ttl: Duration::from_millis(1500),
        };
        assert_eq!(m.encode(), "1c|1|c|1|500000000");
        let m = Message::Subscribe {
            channel: "c",
            ttl: Duration::MAX,
        };
        assert_eq!(m.encode(), "1c|1|c|18446744073709551615|999999999");
        assert_eq!(m.encoded_len(), m.encode().len());
    }
}

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

/// One wire field, in order: what every message kind is made of.
enum Field<'a> {
    Number(u64),
    Str(&'a str),
}

impl Field<'_> {
    fn len(&self) -> usize {
        match *self {
            Field::Number(n) => 1 + decimal_len(n),
            Field::Str(s) => string_len(s),
        }
    }

    fn write(&self, out: &mut impl Sink) {
        match *self {
            Field::Number(n) => {
                out.put("|");
                put_number(out, n);
            }
            Field::Str(s) => put_string(out, s),
        }
    }
}

impl Message<'_> {
    /// The two-byte head, `1` and the kind letter.
    fn head(&self) -> &'static str {
        match self {
            Message::Hello { .. } | Message::HelloWith { .. } => "1h",
            Message::Subscribe { .. } | Message::Recover { .. } => "1c",
            Message::Transmit { .. } => "1t",
            Message::Disconnect { .. } => "1d",
            Message::Receive { .. } | Message::ReceiveAt { .. } => "1r",
            Message::Position { .. } => "1p",
        }
    }

    /// The fields in wire order (at most seven: an extended `1c`).
    fn fields(&self) -> [Option<Field<'_>>; 7] {
        use Field::{Number, Str};
        let ttl = |ttl: &std::time::Duration| {
            [
                Some(Number(ttl.as_secs())),
                Some(Number(u64::from(ttl.subsec_nanos()))),
            ]
        };
        match self {
            Message::Hello { name } => [Some(Str(name)), None, None, None, None, None, None],
            Message::HelloWith { name, options } => [
                Some(Str(name)),
                Some(Str(options)),
                None,
                None,
                None,
                None,
                None,
            ],
            Message::Subscribe { channel, ttl: t } => {
                let [s, n] = ttl(t);
                [Some(Str(channel)), s, n, None, None, None, None]
            }
            Message::Recover {
                channel,
                ttl: t,
                offset,
                epoch,
            } => {
                let [s, n] = ttl(t);
                let (o, e) = (Some(Number(*offset)), Some(Str(epoch)));
                [Some(Str(channel)), s, n, o, e, None, None]
            }
            Message::Transmit { channel, text } => [
                Some(Str(channel)),
                Some(Str(text)),
                None,
                None,
                None,
                None,
                None,
            ],
            Message::Disconnect { reason } => {
                [Some(Str(reason)), None, None, None, None, None, None]
            }
            Message::Receive {
                sender,
                channel,
                text,
            } => [
                Some(Str(sender)),
                Some(Str(channel)),
                Some(Str(text)),
                None,
                None,
                None,
                None,
            ],
            Message::ReceiveAt {
                sender,
                channel,
                text,
                offset,
                epoch,
            } => [
                Some(Str(sender)),
                Some(Str(channel)),
                Some(Str(text)),
                Some(Number(*offset)),
                Some(Str(epoch)),
                None,
                None,
            ],
            Message::Position {
                channel,
                status,
                offset,
                epoch,
            } => [
                Some(Str(channel)),
                Some(Number(status.code())),
                Some(Number(*offset)),
                Some(Str(epoch)),
                None,
                None,
                None,
            ],
        }
    }

    fn write(&self, out: &mut impl Sink) {
        out.put(self.head());
        for field in self.fields().iter().flatten() {
            field.write(out);
        }
    }

    /// Byte length of the wire form, without building it (to size a
    /// buffer or a WebSocket header first).
    pub fn encoded_len(&self) -> usize {
        let fields: usize = self.fields().iter().flatten().map(Field::len).sum();
        self.head().len() + fields
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
            (
                Message::HelloWith {
                    name: "alice",
                    options: "positions",
                },
                "1h|5|alice|9|positions",
            ),
            (
                Message::Recover {
                    channel: "c/lobby",
                    ttl: Duration::from_secs(300),
                    offset: 41,
                    epoch: "k7",
                },
                "1c|7|c/lobby|300|0|41|2|k7",
            ),
            (
                Message::ReceiveAt {
                    sender: "alice",
                    channel: "c/lobby",
                    text: "helloworld",
                    offset: 42,
                    epoch: "k7",
                },
                "1r|5|alice|7|c/lobby|10|helloworld|42|2|k7",
            ),
            (
                Message::Position {
                    channel: "c/lobby",
                    status: crate::PositionStatus::Recovered,
                    offset: 42,
                    epoch: "k7",
                },
                "1p|7|c/lobby|1|42|2|k7",
            ),
        ];
        for (message, wire) in cases {
            assert_eq!(crate::parse(wire), Ok(message), "{wire}");
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

//! The EaseChat wire protocol, version 1: pure functions, no I/O.
//!
//! A message is one WebSocket text frame shaped `<version><kind>|<fields…>`.
//! [`parse`] turns a frame into a [`Message`] borrowing from it, or a
//! [`ParseError`] that knows its WebSocket close code; [`Message::encode`]
//! (and [`Message::write_to`]) turn a [`Message`] back into its text, so the
//! nexus, the client library, the tests and the load generators share one
//! codec. `parse(&m.encode()) == Ok(m)` for every message.
//! `docs/protocol.md` describes the format in prose.
//!
//! Beside v1, the opt-in *positions* extension (`docs/protocol.md`,
//! "Positions and recovery"): a client that says `1h|<len>|<name>|<len>|positions`
//! receives `1r` frames with a channel position appended, may subscribe
//! from a position ([`Message::Recover`]) and is told how that went
//! ([`Message::Position`]). The extra fields only ever follow the v1 ones,
//! so a v1 message parses exactly as before.
//!
//! ```
//! use easechat_protocol::{parse, Message};
//!
//! let publish = Message::Transmit { channel: "c/lobby", text: "hello" };
//! assert_eq!(publish.encode(), "1t|7|c/lobby|5|hello");
//! assert_eq!(parse("1t|7|c/lobby|5|hello"), Ok(publish));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod encode;
mod fields;

pub use encode::decimal_len;

use std::time::Duration;

use fields::Fields;

/// One message from a client, borrowing its strings from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// `1h|<len>|<name>`: names (or renames) the connection.
    Hello {
        /// What receivers see as the sender.
        name: &'a str,
    },
    /// `1c|<len>|<channel>|<seconds>|<nanos>`: subscribe, renew or (TTL 0) end.
    Subscribe {
        /// The channel to listen to.
        channel: &'a str,
        /// Time to live from now; zero unsubscribes.
        ttl: Duration,
    },
    /// `1t|<len>|<channel>|<len>|<text>`: publish `text` on `channel`.
    Transmit {
        /// Where to publish.
        channel: &'a str,
        /// What to publish.
        text: &'a str,
    },
    /// `1d|<len>|<reason>`: asks the nexus to close with 1000 and `reason`.
    Disconnect {
        /// Becomes the close reason.
        reason: &'a str,
    },
    /// `1r|<len>|<sender>|<len>|<channel>|<len>|<text>`: only the nexus
    /// sends it (a client's is ignored); clients parse it with [`parse`].
    Receive {
        /// The publisher's name.
        sender: &'a str,
        /// The channel it was published on.
        channel: &'a str,
        /// The text.
        text: &'a str,
    },
    /// Extension: `1h|<len>|<name>|<len>|<options>`, a `1h` that also asks
    /// for extensions (a comma-separated list; `positions` is the one there
    /// is). Unknown options are ignored, so a newer client works with an
    /// older nexus of this extension.
    HelloWith {
        /// As in [`Message::Hello`].
        name: &'a str,
        /// What the client asks for, e.g. `positions`.
        options: &'a str,
    },
    /// Extension: `1c|<len>|<channel>|<seconds>|<nanos>|<offset>|<len>|<epoch>`,
    /// subscribe and first receive everything published on the channel
    /// after `offset` in `epoch`, all of it or nothing.
    Recover {
        /// The channel to listen to.
        channel: &'a str,
        /// Time to live from now (not zero).
        ttl: Duration,
        /// The last position the client received.
        offset: u64,
        /// The epoch that position belongs to.
        epoch: &'a str,
    },
    /// Extension: `1r|…|<text>|<offset>|<len>|<epoch>`, a `1r` on a channel
    /// with history, sent to clients that asked for positions.
    ReceiveAt {
        /// The publisher's name.
        sender: &'a str,
        /// The channel it was published on.
        channel: &'a str,
        /// The text.
        text: &'a str,
        /// Its position on the channel: contiguous within an epoch.
        offset: u64,
        /// The channel history's epoch.
        epoch: &'a str,
    },
    /// Extension: `1p|<len>|<channel>|<status>|<offset>|<len>|<epoch>`, the
    /// nexus's answer to a first subscription of a positions client on a
    /// channel with history (and to every [`Message::Recover`]): where the
    /// channel stands and whether the missed messages follow.
    Position {
        /// The channel.
        channel: &'a str,
        /// Subscribed, recovered or not recovered.
        status: PositionStatus,
        /// The channel's last position when the subscription started: live
        /// messages follow from `offset + 1`.
        offset: u64,
        /// The channel history's epoch (empty: the channel keeps none).
        epoch: &'a str,
    },
}

/// How a subscription of a positions client started (`1p`'s status field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionStatus {
    /// `0`: a plain subscription; no recovery was asked.
    Subscribed,
    /// `1`: everything after the client's position follows, then live ones.
    Recovered,
    /// `2`: the missed messages are not all held (or the position is from
    /// another epoch, the future, or past the recovery limit); none are
    /// replayed, live ones follow from the reported position.
    NotRecovered,
}

impl PositionStatus {
    /// The wire number.
    pub fn code(self) -> u64 {
        match self {
            PositionStatus::Subscribed => 0,
            PositionStatus::Recovered => 1,
            PositionStatus::NotRecovered => 2,
        }
    }

    fn from_code(code: u64) -> Result<Self, ParseError> {
        match code {
            0 => Ok(PositionStatus::Subscribed),
            1 => Ok(PositionStatus::Recovered),
            2 => Ok(PositionStatus::NotRecovered),
            _ => Err(ParseError::Malformed("unknown position status")),
        }
    }
}

impl Message<'_> {
    /// Whether this message uses the positions extension (a v1 nexus or
    /// client would refuse it as malformed or of an unknown kind).
    pub fn is_extension(&self) -> bool {
        matches!(
            self,
            Message::HelloWith { .. }
                | Message::Recover { .. }
                | Message::ReceiveAt { .. }
                | Message::Position { .. }
        )
    }
}

/// Why a frame is not a valid message; each maps to a close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first byte is not `1`.
    #[error("unsupported protocol version")]
    UnsupportedVersion,
    /// The kind after `1` is not one of h, c, t, d, r (or the extension's p).
    #[error("unknown message kind")]
    UnknownKind,
    /// A field is missing, not a number, too long, or bytes are left over.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

impl ParseError {
    /// The WebSocket close code that ends a connection sending this (1002).
    pub fn close_code(&self) -> u16 {
        1002
    }
}

/// Parses one text frame into a [`Message`].
pub fn parse(frame: &str) -> Result<Message<'_>, ParseError> {
    let bytes = frame.as_bytes();
    match bytes.first() {
        Some(b'1') => {}
        Some(_) => return Err(ParseError::UnsupportedVersion),
        None => return Err(ParseError::Malformed("empty message")),
    }
    let kind = *bytes.get(1).ok_or(ParseError::Malformed("missing kind"))?;
    let mut fields = Fields::new(frame, 2);
    // The extension's fields only ever follow complete v1 fields; whatever
    // does not parse as them is what v1 says of bytes after the last field
    // (and a `1p` that does not parse is, as in v1, an unknown kind).
    let leftover = || ParseError::Malformed("bytes left after the last field");
    let message = match kind {
        b'h' => {
            let name = fields.string()?;
            if fields.at_end() {
                Message::Hello { name }
            } else {
                let options = extension(&mut fields, |f| f.string()).ok_or_else(leftover)?;
                Message::HelloWith { name, options }
            }
        }
        b'c' => {
            let channel = fields.string()?;
            let seconds = fields.number()?;
            let nanos = fields.number()?;
            let ttl = Duration::from_secs(seconds).saturating_add(Duration::from_nanos(nanos));
            if fields.at_end() {
                Message::Subscribe { channel, ttl }
            } else {
                let (offset, epoch) = extension(&mut fields, |f| Ok((f.number()?, f.string()?)))
                    .ok_or_else(leftover)?;
                Message::Recover {
                    channel,
                    ttl,
                    offset,
                    epoch,
                }
            }
        }
        b't' => Message::Transmit {
            channel: fields.string()?,
            text: fields.string()?,
        },
        b'd' => Message::Disconnect {
            reason: fields.string()?,
        },
        b'r' => {
            let (sender, channel, text) = (fields.string()?, fields.string()?, fields.string()?);
            if fields.at_end() {
                Message::Receive {
                    sender,
                    channel,
                    text,
                }
            } else {
                let (offset, epoch) = extension(&mut fields, |f| Ok((f.number()?, f.string()?)))
                    .ok_or_else(leftover)?;
                Message::ReceiveAt {
                    sender,
                    channel,
                    text,
                    offset,
                    epoch,
                }
            }
        }
        b'p' => {
            let position = extension(&mut fields, |f| {
                Ok(Message::Position {
                    channel: f.string()?,
                    status: PositionStatus::from_code(f.number()?)?,
                    offset: f.number()?,
                    epoch: f.string()?,
                })
            });
            return position.ok_or(ParseError::UnknownKind);
        }
        _ => return Err(ParseError::UnknownKind),
    };
    fields.end()?;
    Ok(message)
}

/// Reads an extension's fields with `read`, all the way to the end of the
/// message; `None` (and the cursor untouched) when they do not parse.
fn extension<'a, T>(
    fields: &mut Fields<'a>,
    read: impl FnOnce(&mut Fields<'a>) -> Result<T, ParseError>,
) -> Option<T> {
    let mut attempt = fields.clone();
    let value = read(&mut attempt).ok().filter(|_| attempt.at_end())?;
    *fields = attempt;
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples_parse() {
        assert_eq!(
            parse("1h|12|abcdef123456"),
            Ok(Message::Hello {
                name: "abcdef123456"
            })
        );
        assert_eq!(
            parse("1c|7|c/lobby|300|0"),
            Ok(Message::Subscribe {
                channel: "c/lobby",
                ttl: Duration::from_secs(300)
            })
        );
        assert_eq!(
            parse("1t|7|c/lobby|10|helloworld"),
            Ok(Message::Transmit {
                channel: "c/lobby",
                text: "helloworld"
            })
        );
        assert_eq!(
            parse("1d|11|just logout"),
            Ok(Message::Disconnect {
                reason: "just logout"
            })
        );
        assert_eq!(
            parse("1r|5|alice|7|c/lobby|10|helloworld"),
            Ok(Message::Receive {
                sender: "alice",
                channel: "c/lobby",
                text: "helloworld"
            })
        );
    }

    #[test]
    fn empty_strings_are_legal() {
        assert_eq!(parse("1h|0|"), Ok(Message::Hello { name: "" }));
        assert_eq!(
            parse("1t|0||0|"),
            Ok(Message::Transmit {
                channel: "",
                text: ""
            })
        );
    }

    #[test]
    fn lengths_count_utf8_bytes() {
        assert_eq!(
            parse("1t|7|c/lobby|6|你好"),
            Ok(Message::Transmit {
                channel: "c/lobby",
                text: "你好"
            })
        );
    }

    #[test]
    fn strings_may_contain_bars_and_newlines() {
        assert_eq!(
            parse("1t|3|a|b|5|x|\n|y"),
            Ok(Message::Transmit {
                channel: "a|b",
                text: "x|\n|y"
            })
        );
        assert_eq!(parse("1h|1||"), Ok(Message::Hello { name: "|" }));
    }

    #[test]
    fn ttl_adds_seconds_and_nanos() {
        assert_eq!(
            parse("1c|1|c|1|500000000"),
            Ok(Message::Subscribe {
                channel: "c",
                ttl: Duration::from_millis(1500)
            })
        );
        assert_eq!(
            parse("1c|1|c|0|0"),
            Ok(Message::Subscribe {
                channel: "c",
                ttl: Duration::ZERO
            })
        );
        // Huge but valid numbers saturate rather than overflow.
        assert!(parse("1c|1|c|18446744073709551615|18446744073709551615").is_ok());
    }

    #[test]
    fn what_is_not_the_extension_keeps_its_v1_error() {
        let leftover = Err(ParseError::Malformed("bytes left after the last field"));
        assert_eq!(parse("1c|7|c/lobby|300|0|"), leftover);
        assert_eq!(parse("1c|7|c/lobby|300|0|5|2|ab|"), leftover);
        assert_eq!(parse("1h|5|alice|x"), leftover);
        assert_eq!(parse("1r|1|a|1|b|1|c|x"), leftover);
        assert_eq!(parse("1p|3|abc"), Err(ParseError::UnknownKind));
        assert_eq!(parse("1p|1|c|7|1|0|"), Err(ParseError::UnknownKind));
    }

    #[test]
    fn version_other_than_one_is_rejected() {
        assert_eq!(parse("2h|1|a"), Err(ParseError::UnsupportedVersion));
        assert_eq!(parse("xh|1|a"), Err(ParseError::UnsupportedVersion));
        assert_eq!(parse("2h|1|a").unwrap_err().close_code(), 1002);
    }

    #[test]
    fn unknown_kind_is_rejected() {
        assert_eq!(parse("1x|1|a"), Err(ParseError::UnknownKind));
        assert_eq!(parse("1H|1|a"), Err(ParseError::UnknownKind));
        assert_eq!(parse("1x").unwrap_err().close_code(), 1002);
    }

    #[test]
    fn every_malformed_row_of_the_spec_is_rejected() {
        let cases = [
            ("", "empty"),
            ("1", "missing kind"),
            ("1h", "missing field"),
            ("1h12|abcdef123456", "missing |"),
            ("1h|12abcdef123456", "missing | after length"),
            ("1h|1a|a", "non-digit"),
            ("1h|-1|a", "sign"),
            ("1h||", "empty number"),
            ("1h|99999999999999999999|a", "overflowing number"),
            ("1h|5|abc", "length past end"),
            ("1h|1|你", "length splits a character"),
            ("1h|2|abc", "bytes left over"),
            ("1h|1|a|", "trailing bar"),
            ("1c|1|c|300", "missing nanos"),
            ("1c|1|c|300|", "empty nanos"),
            ("1c|1|c|3x0|0", "non-digit seconds"),
            ("1c|1|c|99999999999999999999|0", "overflowing seconds"),
            ("1t|1|c", "missing text"),
            ("1t|1|c|3|ab", "text past end"),
            ("1t|1|c|1|ab", "text leftover"),
            ("1d", "missing reason"),
            ("1r|1|a|1|b", "missing receive text"),
        ];
        for (input, why) in cases {
            match parse(input) {
                Err(ParseError::Malformed(_)) => {}
                other => panic!("{why}: {input:?} gave {other:?}"),
            }
            assert_eq!(parse(input).unwrap_err().close_code(), 1002, "{why}");
        }
    }
}

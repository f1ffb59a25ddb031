//! The protocols the load generator speaks, chosen by the URL's scheme once
//! per connection: EaseChat v1 over ws/wss (the nexus and its baseline),
//! RESP pub/sub (`redis://`, Redis) and the NATS text protocol (`nats://`).
//! A client's task is generic over its protocol as over its transport, so
//! the ws path compiles to what it was and nothing is matched per frame.
//!
//! Each protocol turns the bytes it reads into [`Event`]s by their headers
//! alone: a ws frame header, a RESP array's lengths, a NATS `MSG` line. A
//! delivery's payload is only looked at (by [`Protocol::stamp`]) by the
//! receivers that check everything; the others count it and skip it.
//!
//! Every publish must reach the same receivers as on the nexus, which never
//! delivers to a connection named like the publisher. NATS does that with
//! `echo:false`. Redis cannot: a connection in subscribe mode cannot
//! publish, and a publish reaches every subscriber of its channel. So a
//! Redis publisher publishes over a connection of its own
//! ([`Protocol::SEPARATE_PUBLISHER`]), and on its own channel `bench/C`
//! under a name of its own, `bench/C/pN`, to which every other subscriber of
//! `bench/C` also subscribes ([`Protocol::ECHOES`]): the publisher's own
//! subscribing connection is then the only one left out, as on the nexus.
//! Redis answers every `PUBLISH` with the number of clients that got it,
//! which the publishing connection's reader checks against its own count.
//!
//! With `--positions` (ws/wss only) a client says `1h` with the options
//! `positions` (docs/protocol.md, "Positions and recovery"): on a channel
//! with history it is answered by one `1p` per subscription (not a
//! delivery) and receives every `1r` with the channel position appended,
//! which the sampled receivers parse ([`Protocol::stamp`]) and check.

use std::cell::RefCell;
use std::io::Write as _;

use easechat_protocol::{parse, Message};

use crate::payload::{self, Stamp};
use crate::transport::{self, Target, Tls, Transport};
use crate::ws::{self, Incoming};

/// One unit read from a server, known by its header.
#[derive(Debug)]
pub enum Event<'a> {
    /// One delivery; its body as [`Protocol::stamp`] reads it (ws: the
    /// `1r` text; RESP and NATS: the published payload).
    Delivery(&'a [u8]),
    /// A keepalive to answer with [`Protocol::push_pong`].
    Ping(&'a [u8]),
    /// The server confirms a subscription (RESP `subscribe` reply, NATS
    /// `PONG` to the `PING` after the `SUB`s).
    Ready,
    /// How many clients one `PUBLISH` reached (RESP's reply).
    Receivers(u64),
    /// The server ends the connection or reports an error: a ws close code,
    /// or the error text of RESP / NATS.
    Close(Option<u16>, &'a [u8]),
    /// Anything else (NATS `INFO`, `+OK`, ws pongs…), ignored.
    Other,
}

/// One wire protocol (see the module docs).
pub trait Protocol: 'static {
    /// Publishes go over a connection of their own that subscribes to
    /// nothing (Redis: a subscribed connection cannot publish).
    const SEPARATE_PUBLISHER: bool;
    /// The server delivers a publish to every subscriber of its channel,
    /// the publisher's own connections included, so a publisher uses a
    /// channel name of its own on its own channel (see the module docs).
    const ECHOES: bool;

    /// Opens the transport and does the protocol's handshake; returns the
    /// halves and any bytes read past it. By default there is no handshake
    /// beyond the transport's (RESP; NATS, whose INFO comes first and whose
    /// CONNECT may go before it is read).
    async fn open<T: Transport>(
        target: &Target,
        tls: &Tls,
        _scratch: &RefCell<Vec<u8>>,
    ) -> Result<(T::Recv, T::Send, Vec<u8>), String> {
        let (read, write) = T::open(target, tls).await?;
        Ok((read, write, Vec::new()))
    }

    /// Appends what names the connection `name` and subscribes it to
    /// `channels` (asking for positions when `positions`: ws only); returns
    /// how many [`Event::Ready`] confirm it (0: the protocol confirms
    /// nothing).
    fn subscribe(out: &mut Vec<u8>, name: &str, channels: &[String], positions: bool) -> usize;

    /// Appends one publish on `channel` of the text stamped with `stamp`,
    /// `size` bytes long.
    fn push_publish(out: &mut Vec<u8>, channel: &str, stamp: Stamp, size: usize);

    /// The next complete unit at the start of `buf` and its length, or
    /// `None` if more bytes are needed.
    fn next(buf: &[u8]) -> Option<(Event<'_>, usize)>;

    /// The stamp of a delivery's body and, for a positional `1r` (the
    /// client asked for `positions`), its channel position.
    fn stamp(body: &[u8], positions: bool) -> Option<(Stamp, Option<u64>)>;

    /// Appends the answer to a [`Event::Ping`].
    fn push_pong(out: &mut Vec<u8>, payload: &[u8]);

    /// What a client says at the end, after which the server closes the
    /// connection; `None`: it closes its sending side instead.
    fn goodbye() -> Option<Vec<u8>>;
}

/// EaseChat v1 over WebSocket.
pub struct Ws;

impl Protocol for Ws {
    const SEPARATE_PUBLISHER: bool = false;
    const ECHOES: bool = false;

    async fn open<T: Transport>(
        target: &Target,
        tls: &Tls,
        scratch: &RefCell<Vec<u8>>,
    ) -> Result<(T::Recv, T::Send, Vec<u8>), String> {
        transport::open_upgraded::<T>(target, tls, scratch).await
    }

    fn subscribe(out: &mut Vec<u8>, name: &str, channels: &[String], positions: bool) -> usize {
        if positions {
            ws::push_message(
                out,
                Message::HelloWith {
                    name,
                    options: "positions",
                },
            );
        } else {
            ws::push_message(out, Message::Hello { name });
        }
        for channel in channels {
            ws::push_message(
                out,
                Message::Subscribe {
                    channel,
                    ttl: crate::SUBSCRIPTION_TTL,
                },
            );
        }
        0
    }

    fn push_publish(out: &mut Vec<u8>, channel: &str, stamp: Stamp, size: usize) {
        let mut text = Vec::with_capacity(size + 64);
        payload::write_transmit(&mut text, channel, stamp, size);
        ws::push_text_frame(out, &text);
    }

    fn next(buf: &[u8]) -> Option<(Event<'_>, usize)> {
        let (frame, len) = ws::next_frame(buf)?;
        let event = match frame {
            // A positions client's `1p` (where the channel stood when it
            // subscribed) is not a delivery; every other text is a `1r`,
            // plain or positional.
            Incoming::Text(payload) if payload.starts_with(b"1p") => Event::Other,
            Incoming::Text(payload) => Event::Delivery(payload),
            Incoming::Close(code) => Event::Close(code, b""),
            Incoming::Ping(payload) => Event::Ping(payload),
            Incoming::Other => Event::Other,
        };
        Some((event, len))
    }

    fn stamp(body: &[u8], positions: bool) -> Option<(Stamp, Option<u64>)> {
        if !positions {
            return payload::parse_receive(body).map(|stamp| (stamp, None));
        }
        match parse(std::str::from_utf8(body).ok()?) {
            Ok(Message::Receive { text, .. }) => {
                Some((payload::parse_text(text.as_bytes())?, None))
            }
            Ok(Message::ReceiveAt { text, offset, .. }) => {
                Some((payload::parse_text(text.as_bytes())?, Some(offset)))
            }
            _ => None,
        }
    }

    fn push_pong(out: &mut Vec<u8>, payload: &[u8]) {
        ws::push_pong_frame(out, payload);
    }

    fn goodbye() -> Option<Vec<u8>> {
        let mut bye = Vec::new();
        ws::push_message(&mut bye, Message::Disconnect { reason: "done" });
        Some(bye)
    }
}

/// Redis pub/sub over RESP2.
pub struct Resp;

/// Appends one RESP bulk string.
fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    let _ = write!(out, "${}\r\n", bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// The line at the start of `buf` (without its `\r\n`) and the bytes it
/// takes, or `None` if it is not complete.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    let text = &buf[..end];
    Some((text.strip_suffix(b"\r").unwrap_or(text), end + 1))
}

/// ASCII decimal, no sign.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// One element of a RESP array: a bulk string's bytes or an integer's
/// digits (`-` for a nil), and the bytes it takes.
fn resp_element(buf: &[u8]) -> Option<Result<(&[u8], usize), ()>> {
    let (head, used) = line(buf)?;
    match head.first() {
        Some(b'$') => {
            let Some(n) = number(&head[1..]) else {
                return Some(Err(())); // nil or malformed
            };
            let n = n as usize;
            let total = used + n + 2;
            if buf.len() < total {
                return None;
            }
            Some(Ok((&buf[used..used + n], total)))
        }
        Some(b':' | b'+') => Some(Ok((&head[1..], used))),
        _ => Some(Err(())),
    }
}

impl Protocol for Resp {
    const SEPARATE_PUBLISHER: bool = true;
    const ECHOES: bool = true;

    fn subscribe(out: &mut Vec<u8>, _name: &str, channels: &[String], _: bool) -> usize {
        let _ = write!(out, "*{}\r\n", channels.len() + 1);
        push_bulk(out, b"SUBSCRIBE");
        for channel in channels {
            push_bulk(out, channel.as_bytes());
        }
        channels.len()
    }

    fn push_publish(out: &mut Vec<u8>, channel: &str, stamp: Stamp, size: usize) {
        let mut text = String::with_capacity(size.max(48));
        payload::write_text(&mut text, stamp, size);
        out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
        push_bulk(out, channel.as_bytes());
        push_bulk(out, text.as_bytes());
    }

    fn next(buf: &[u8]) -> Option<(Event<'_>, usize)> {
        let (head, mut used) = line(buf)?;
        let event = match head.first() {
            Some(b'*') => {
                let Some(n) = number(&head[1..]) else {
                    return Some((Event::Close(None, b"bad RESP array header"), used));
                };
                // A pub/sub reply: kind, channel, then the payload (or the
                // subscription count).
                let mut parts: [&[u8]; 3] = [b""; 3];
                let mut slots = parts.iter_mut();
                for _ in 0..n {
                    match resp_element(&buf[used..])? {
                        Ok((bytes, len)) => {
                            if let Some(slot) = slots.next() {
                                *slot = bytes;
                            }
                            used += len;
                        }
                        Err(()) => return Some((Event::Close(None, b"bad RESP element"), used)),
                    }
                }
                match (n, parts[0]) {
                    (3, b"message") => Event::Delivery(parts[2]),
                    (3, b"subscribe") => Event::Ready,
                    _ => Event::Other,
                }
            }
            Some(b':') => number(&head[1..]).map_or(Event::Other, Event::Receivers),
            Some(b'-') => Event::Close(None, head),
            Some(b'$') => match resp_element(buf)? {
                Ok((_, len)) => {
                    used = len;
                    Event::Other
                }
                Err(()) => Event::Other, // `$-1`: nil, one line
            },
            _ => Event::Other, // `+OK` (QUIT) and the like
        };
        Some((event, used))
    }

    fn stamp(body: &[u8], _: bool) -> Option<(Stamp, Option<u64>)> {
        payload::parse_text(body).map(|stamp| (stamp, None))
    }

    fn push_pong(_: &mut Vec<u8>, _: &[u8]) {}

    fn goodbye() -> Option<Vec<u8>> {
        Some(b"*1\r\n$4\r\nQUIT\r\n".to_vec())
    }
}

/// The NATS client protocol (text).
pub struct Nats;

impl Protocol for Nats {
    const SEPARATE_PUBLISHER: bool = false;
    const ECHOES: bool = false;

    fn subscribe(out: &mut Vec<u8>, _name: &str, channels: &[String], _: bool) -> usize {
        out.extend_from_slice(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\n");
        for (sid, channel) in channels.iter().enumerate() {
            let _ = write!(out, "SUB {channel} {}\r\n", sid + 1);
        }
        // Its PONG says every SUB before it is in force.
        out.extend_from_slice(b"PING\r\n");
        1
    }

    fn push_publish(out: &mut Vec<u8>, channel: &str, stamp: Stamp, size: usize) {
        let mut text = String::with_capacity(size.max(48));
        payload::write_text(&mut text, stamp, size);
        let _ = write!(out, "PUB {channel} {}\r\n", text.len());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    fn next(buf: &[u8]) -> Option<(Event<'_>, usize)> {
        let (head, used) = line(buf)?;
        let event = if let Some(args) = head.strip_prefix(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let size = args
                .rsplit(|&b| b == b' ')
                .next()
                .and_then(number)
                .map(|n| n as usize);
            let Some(size) = size else {
                return Some((Event::Close(None, b"bad NATS MSG line"), used));
            };
            let total = used + size + 2;
            if buf.len() < total {
                return None;
            }
            return Some((Event::Delivery(&buf[used..used + size]), total));
        } else if head == b"PING" {
            Event::Ping(b"")
        } else if head == b"PONG" {
            Event::Ready
        } else if head.starts_with(b"-ERR") {
            Event::Close(None, head)
        } else {
            Event::Other // INFO, +OK
        };
        Some((event, used))
    }

    fn stamp(body: &[u8], _: bool) -> Option<(Stamp, Option<u64>)> {
        payload::parse_text(body).map(|stamp| (stamp, None))
    }

    fn push_pong(out: &mut Vec<u8>, _: &[u8]) {
        out.extend_from_slice(b"PONG\r\n");
    }

    fn goodbye() -> Option<Vec<u8>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            publisher: 3,
            channel: 0,
            seq: 42,
            sent_ns: 123_456_789,
        }
    }

    #[test]
    fn resp_deliveries_and_replies_parse_by_their_headers() {
        let mut publish = Vec::new();
        Resp::push_publish(&mut publish, "bench/0", stamp(), 64);
        assert!(publish.starts_with(b"*3\r\n$7\r\nPUBLISH\r\n$7\r\nbench/0\r\n$64\r\n"));
        let text = &publish[publish.len() - 66..publish.len() - 2];
        let mut server = Vec::new();
        server.extend_from_slice(b"*3\r\n$9\r\nsubscribe\r\n$7\r\nbench/0\r\n:1\r\n");
        server.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n$7\r\nbench/0\r\n$64\r\n");
        server.extend_from_slice(text);
        server.extend_from_slice(b"\r\n:349\r\n+OK\r\n");
        let (e, used) = Resp::next(&server).unwrap();
        assert!(matches!(e, Event::Ready));
        let rest = &server[used..];
        // Incomplete until the whole payload is there.
        assert!(Resp::next(&rest[..rest.len() - 14]).is_none());
        let (e, n) = Resp::next(rest).unwrap();
        let Event::Delivery(body) = e else {
            panic!("{e:?}")
        };
        assert_eq!(Resp::stamp(body, false), Some((stamp(), None)));
        let (e, m) = Resp::next(&rest[n..]).unwrap();
        assert!(matches!(e, Event::Receivers(349)));
        let (e, _) = Resp::next(&rest[n + m..]).unwrap();
        assert!(matches!(e, Event::Other));
        let mut sub = Vec::new();
        assert_eq!(
            Resp::subscribe(&mut sub, "x", &["a".into(), "bc".into()], false),
            2
        );
        assert_eq!(sub, b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n");
    }

    #[test]
    fn ws_positional_frames_count_as_deliveries_and_1p_does_not() {
        let mut text = String::new();
        payload::write_text(&mut text, stamp(), 64);
        let mut server = Vec::new();
        let position = Message::Position {
            channel: "bench/0",
            status: easechat_protocol::PositionStatus::Subscribed,
            offset: 7,
            epoch: "ab12",
        };
        ws::push_text_frame(&mut server, position.encode().as_bytes());
        let plain = Message::Receive {
            sender: "p3",
            channel: "bench/0",
            text: &text,
        };
        let positional = Message::ReceiveAt {
            sender: "p3",
            channel: "bench/0",
            text: &text,
            offset: 8,
            epoch: "ab12",
        };
        ws::push_text_frame(&mut server, plain.encode().as_bytes());
        ws::push_text_frame(&mut server, positional.encode().as_bytes());
        // The server's frames are unmasked: drop the (zero) masks and the
        // mask bits the client-side writer added.
        let server = unmask(&server);
        let (e, a) = Ws::next(&server).unwrap();
        assert!(matches!(e, Event::Other), "{e:?}");
        let (e, b) = Ws::next(&server[a..]).unwrap();
        let Event::Delivery(body) = e else {
            panic!("{e:?}")
        };
        assert_eq!(Ws::stamp(body, true), Some((stamp(), None)));
        assert_eq!(Ws::stamp(body, false), Some((stamp(), None)));
        let (e, _) = Ws::next(&server[a + b..]).unwrap();
        let Event::Delivery(body) = e else {
            panic!("{e:?}")
        };
        assert_eq!(Ws::stamp(body, true), Some((stamp(), Some(8))));
        assert_eq!(Ws::stamp(body, false), Some((stamp(), None)));
        let mut hello = Vec::new();
        assert_eq!(Ws::subscribe(&mut hello, "n", &["bench/0".into()], true), 0);
        let hello = unmask(&hello);
        let (Incoming::Text(first), _) = ws::next_frame(&hello).unwrap() else {
            panic!("not a text frame")
        };
        assert_eq!(first, b"1h|1|n|9|positions");
    }

    /// Client frames as the server would send them: without the mask bit
    /// and the (zero) masking key of [`ws::push_text_frame`].
    fn unmask(frames: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < frames.len() {
            let (len, header) = match frames[at + 1] & 0x7f {
                126 => (
                    u16::from_be_bytes([frames[at + 2], frames[at + 3]]) as usize,
                    4,
                ),
                127 => (
                    u64::from_be_bytes(frames[at + 2..at + 10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            out.push(frames[at]);
            out.push(frames[at + 1] & 0x7f);
            out.extend_from_slice(&frames[at + 2..at + header]);
            out.extend_from_slice(&frames[at + header + 4..at + header + 4 + len]);
            at += header + 4 + len;
        }
        out
    }

    #[test]
    fn nats_deliveries_pings_and_pongs_parse_by_their_headers() {
        let mut publish = Vec::new();
        Nats::push_publish(&mut publish, "bench/0", stamp(), 64);
        assert!(publish.starts_with(b"PUB bench/0 64\r\n"));
        let text = &publish[16..16 + 64];
        let mut server = b"INFO {\"server_id\":\"x\"}\r\nPONG\r\nMSG bench/0 1 64\r\n".to_vec();
        server.extend_from_slice(text);
        server.extend_from_slice(b"\r\nPING\r\n");
        let (e, a) = Nats::next(&server).unwrap();
        assert!(matches!(e, Event::Other));
        let (e, b) = Nats::next(&server[a..]).unwrap();
        assert!(matches!(e, Event::Ready));
        let rest = &server[a + b..];
        assert!(Nats::next(&rest[..rest.len() - 9]).is_none());
        let (e, c) = Nats::next(rest).unwrap();
        let Event::Delivery(body) = e else {
            panic!("{e:?}")
        };
        assert_eq!(Nats::stamp(body, false), Some((stamp(), None)));
        let (e, _) = Nats::next(&rest[c..]).unwrap();
        assert!(matches!(e, Event::Ping(_)));
    }
}

//! What the load generator publishes and how it reads it back.
//!
//! A text is `<publisher>:<channel>:<seq>:<sent ns>|` followed by filler
//! that contains `|` (as real chat does), up to the message size. Receivers
//! find the text inside the `1r` by skipping its length-prefixed fields.

use std::io::Write;

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

/// Writes the `1t` message for `stamp` with filler up to `size` text bytes.
pub fn write_transmit(out: &mut Vec<u8>, channel_name: &str, stamp: Stamp, size: usize) {
    let mut text = Vec::with_capacity(size.max(48));
    let _ = write!(
        text,
        "{}:{}:{}:{}|",
        stamp.publisher, stamp.channel, stamp.seq, stamp.sent_ns
    );
    while text.len() < size {
        text.push(if text.len() % 8 == 0 { b'|' } else { b'x' });
    }
    out.extend_from_slice(b"1t|");
    let _ = write!(
        out,
        "{}|{}|{}|",
        channel_name.len(),
        channel_name,
        text.len()
    );
    out.extend_from_slice(&text);
}

/// Reads one decimal number ending at `|`; returns it and the rest after `|`.
fn number(buf: &[u8]) -> Option<(u64, &[u8])> {
    let end = buf.iter().position(|&b| b == b'|' || b == b':')?;
    let mut n: u64 = 0;
    for &b in &buf[..end] {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((n, &buf[end + 1..]))
}

/// Skips one `<len>|<bytes>` field after a leading `|`.
fn skip_string(buf: &[u8]) -> Option<&[u8]> {
    let (len, rest) = number(buf.strip_prefix(b"|")?)?;
    rest.get(len as usize..)
}

/// Extracts the stamp from a `1r` payload.
pub fn parse_receive(payload: &[u8]) -> Option<Stamp> {
    let rest = payload.strip_prefix(b"1r")?;
    let rest = skip_string(rest)?; // sender
    let rest = skip_string(rest)?; // channel
    let (_, text) = number(rest.strip_prefix(b"|")?)?;
    let (publisher, text) = number(text)?;
    let (channel, text) = number(text)?;
    let (seq, text) = number(text)?;
    let (sent_ns, _) = number(text)?;
    Some(Stamp {
        publisher: publisher as u32,
        channel: channel as u32,
        seq,
        sent_ns,
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
        let after = &transmit[b"1t|7|bench/7|".len()..];
        let receive = [b"1r|5|alice|7|bench/7|".as_slice(), after].concat();
        assert_eq!(parse_receive(&receive), Some(stamp));
        let text_len: usize = std::str::from_utf8(&after[..2]).unwrap().parse().unwrap();
        assert_eq!(text_len, 64);
    }
}

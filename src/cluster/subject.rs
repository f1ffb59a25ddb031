//! Channel names to NATS subjects, so other tools can tap them.
//!
//! A channel name is arbitrary UTF-8 (`.`, `*`, `>`, spaces and `|`
//! included), none of which may appear raw in a subject token. A non-empty
//! name becomes `easechat.v1.ch.<token>`, where the token is the base64url
//! encoding (RFC 4648 §5, no padding) of its UTF-8 bytes: the alphabet is
//! `A–Z a–z 0–9 - _`, so a token is never empty, never a wildcard and never
//! contains a `.`. Base64 is a bijection, so two names never share a
//! subject. The empty name, whose encoding would be an empty token, gets
//! [`EMPTY_CHANNEL_SUBJECT`], which has one token fewer and so cannot equal
//! any `easechat.v1.ch.<token>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The prefix of every non-empty channel's subject.
pub const CHANNEL_PREFIX: &str = "easechat.v1.ch.";
/// The subject of the channel with the empty name.
pub const EMPTY_CHANNEL_SUBJECT: &str = "easechat.v1.empty";
/// Longest subject the bridge sends: NATS servers refuse protocol lines
/// past 4 KiB (`max_control_line`), and a publish line carries the subject
/// plus sizes. A channel whose subject is longer stays local (counted as
/// dropped); the default `--max-name-bytes` (1024) gives 1,382 bytes.
pub const MAX_SUBJECT_BYTES: usize = 3072;

/// The subject that carries `channel`.
pub fn subject_for(channel: &str) -> String {
    if channel.is_empty() {
        return EMPTY_CHANNEL_SUBJECT.to_string();
    }
    let mut subject = String::with_capacity(CHANNEL_PREFIX.len() + channel.len() * 4 / 3 + 4);
    subject.push_str(CHANNEL_PREFIX);
    URL_SAFE_NO_PAD.encode_string(channel.as_bytes(), &mut subject);
    subject
}

/// The channel a subject carries, or `None` if it is not one of ours.
pub fn channel_of(subject: &str) -> Option<String> {
    if subject == EMPTY_CHANNEL_SUBJECT {
        return Some(String::new());
    }
    let token = subject.strip_prefix(CHANNEL_PREFIX)?;
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok().filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awkward_names_become_single_safe_tokens_and_back() {
        let long = "é".repeat(512);
        for channel in ["a.b", "*", ">", "a b", "x|y", "c/lobby", "你好", &long, ""] {
            let subject = subject_for(channel);
            let tail = subject.strip_prefix("easechat.v1.").unwrap();
            assert!(
                !tail.contains(['*', '>', ' ', '|']) && tail.split('.').count() <= 2,
                "{subject}"
            );
            assert_eq!(channel_of(&subject).as_deref(), Some(channel));
        }
        assert_eq!(subject_for("a.b"), "easechat.v1.ch.YS5i");
        assert_eq!(subject_for(""), EMPTY_CHANNEL_SUBJECT);
    }

    #[test]
    fn the_empty_subject_cannot_be_a_channel_token() {
        // Every non-empty name, even one whose token reads "empty", lives
        // one token deeper, under `.ch.`.
        let reads_empty = URL_SAFE_NO_PAD.decode("emptyA").unwrap();
        let name = String::from_utf8_lossy(&reads_empty);
        assert!(subject_for(&name).starts_with(CHANNEL_PREFIX));
        assert_ne!(subject_for(&name), EMPTY_CHANNEL_SUBJECT);
        assert_eq!(channel_of("easechat.v1.ch."), None);
        assert_eq!(channel_of("other.subject"), None);
    }
}

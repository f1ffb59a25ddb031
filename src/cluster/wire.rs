//! The format of a cross-node message on NATS, so other tools can tap it.
//!
//! - Subject: the channel's subject ([`super::subject`]).
//! - Payload: the message text, as published (UTF-8, unchanged).
//! - Header `EaseChat-Origin`: the publishing node's id (`--node-id`). A
//!   node drops messages carrying its own id: a message from NATS is
//!   delivered locally and never republished, and no node hears itself.
//! - Header `EaseChat-Sender`: the publisher's name, base64url without
//!   padding (names are arbitrary UTF-8 and may hold a newline, which a
//!   NATS header cannot; the empty name is the empty value).
//!
//! A message without these headers, or whose text or sender is not UTF-8,
//! is not ours and is ignored.

use std::sync::Arc;

use async_nats::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Header naming the node that published the message.
pub const ORIGIN_HEADER: &str = "EaseChat-Origin";
/// Header carrying the publisher's name, base64url without padding.
pub const SENDER_HEADER: &str = "EaseChat-Sender";

/// A message from another node, for this node's subscribers.
#[derive(Debug)]
pub struct Remote {
    /// The publisher's name, for sender exclusion and the `1r`.
    pub sender: Box<str>,
    /// The channel.
    pub channel: Arc<str>,
    /// The text.
    pub text: Box<str>,
}

impl Remote {
    /// What this message holds, for the inboxes' byte budget.
    pub fn weight(&self) -> usize {
        publish_weight(&self.sender, &self.channel, &self.text)
    }
}

/// What a cross-node message of these parts holds while queued (its
/// strings plus bookkeeping), for the bridge's byte budgets.
pub fn publish_weight(sender: &str, channel: &str, text: &str) -> usize {
    sender.len() + channel.len() + text.len() + 64
}

/// The headers of a message published by node `origin` for `sender`.
pub fn headers(origin: &str, sender: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN_HEADER, origin);
    headers.insert(SENDER_HEADER, URL_SAFE_NO_PAD.encode(sender.as_bytes()));
    headers
}

/// Why an inbound message was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Published by this node (a loop, or an echo).
    OwnEcho,
    /// Not in our format.
    Foreign,
}

/// The publisher's name a message's headers carry (see [`headers`]).
pub fn sender_of(headers: &HeaderMap) -> Option<String> {
    let sender = headers.get(SENDER_HEADER)?.as_str().trim();
    String::from_utf8(URL_SAFE_NO_PAD.decode(sender).ok()?).ok()
}

/// Decodes a message received on `channel`'s subject by node `own_node`.
pub fn decode(
    own_node: &str,
    channel: &Arc<str>,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Remote, Ignored> {
    let headers = headers.ok_or(Ignored::Foreign)?;
    let origin = headers.get(ORIGIN_HEADER).ok_or(Ignored::Foreign)?;
    if origin.as_str() == own_node {
        return Err(Ignored::OwnEcho);
    }
    let sender = sender_of(headers).ok_or(Ignored::Foreign)?;
    let text = std::str::from_utf8(payload).map_err(|_| Ignored::Foreign)?;
    Ok(Remote {
        sender: sender.into(),
        channel: channel.clone(),
        text: text.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_any_sender_name() {
        let channel: Arc<str> = Arc::from("c");
        for sender in ["alice", "", "line\nbreak", "a: b", "你好"] {
            let h = headers("node-a", sender);
            let remote = decode("node-b", &channel, Some(&h), b"hi").unwrap();
            assert_eq!(&*remote.sender, sender);
            assert_eq!(&*remote.text, "hi");
        }
    }

    #[test]
    fn own_and_foreign_messages_are_ignored() {
        let channel: Arc<str> = Arc::from("c");
        let h = headers("node-a", "alice");
        assert_eq!(
            decode("node-a", &channel, Some(&h), b"hi").unwrap_err(),
            Ignored::OwnEcho
        );
        assert_eq!(
            decode("node-b", &channel, None, b"hi").unwrap_err(),
            Ignored::Foreign
        );
        assert_eq!(
            decode("node-b", &channel, Some(&h), b"\xff").unwrap_err(),
            Ignored::Foreign
        );
    }
}

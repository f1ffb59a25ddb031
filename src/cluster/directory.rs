//! Which other nodes listen to which channels, for the admin console's
//! channel list.
//!
//! Every bridge answers requests on [`DIRECTORY_SUBJECT`] with the channels
//! its node has subscribers on (those it is subscribed to on NATS), as a
//! JSON array of names, filtered by the substring the request carries. A
//! bridge asked by its admin console publishes one request with a reply
//! inbox, gathers the answers for [`GATHER`], and counts per channel the
//! nodes that listen. Its own node never answers it (the connection is
//! `no_echo`). Nothing here touches the message path.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::Client;
use futures_lite::StreamExt;
use tokio::sync::{mpsc, oneshot};

/// The subject every bridge answers directory requests on.
pub const DIRECTORY_SUBJECT: &str = "easechat.v1.admin.channels";
/// How long an asking bridge collects answers.
pub const GATHER: Duration = Duration::from_millis(300);
/// Most channel names one node puts in an answer.
pub const MAX_NAMES: usize = 1000;
/// Directory questions the bridge may have waiting.
const QUEUE: usize = 16;

/// Per channel, how many other nodes have subscribers on it.
pub type NodeCounts = HashMap<String, u32>;

/// A question from the admin thread to the bridge.
#[derive(Debug)]
pub struct DirectoryQuery {
    /// Only channels whose name contains this.
    pub filter: String,
    /// Where the counts go.
    pub reply: oneshot::Sender<NodeCounts>,
}

/// The admin thread's handle on the directory.
#[derive(Debug, Clone)]
pub struct Directory(mpsc::Sender<DirectoryQuery>);

/// A new directory handle and the bridge's end of it.
pub fn channel() -> (Directory, mpsc::Receiver<DirectoryQuery>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Directory(tx), rx)
}

impl Directory {
    /// How many other nodes listen to each channel containing `filter`;
    /// `None` when the bridge did not answer in time (or is busy).
    pub async fn other_nodes(&self, filter: &str) -> Option<NodeCounts> {
        let (reply, answer) = oneshot::channel();
        let query = DirectoryQuery {
            filter: filter.to_string(),
            reply,
        };
        self.0.try_send(query).ok()?;
        tokio::time::timeout(GATHER * 3, answer).await.ok()?.ok()
    }
}

/// This node's answer: the names among `channels` that contain `filter`,
/// at most [`MAX_NAMES`], as a JSON array.
pub fn answer<'a>(channels: impl Iterator<Item = &'a str>, filter: &str) -> Vec<u8> {
    let names: Vec<&str> = channels
        .filter(|name| name.contains(filter))
        .take(MAX_NAMES)
        .collect();
    serde_json::to_vec(&names).unwrap_or_else(|_| b"[]".to_vec())
}

/// Asks every other node and counts, per channel, the nodes that listen.
pub async fn gather(client: Client, filter: String) -> NodeCounts {
    let mut counts = NodeCounts::new();
    let inbox = client.new_inbox();
    let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
        return counts;
    };
    if client
        .publish_with_reply(DIRECTORY_SUBJECT, inbox, filter.into_bytes().into())
        .await
        .is_err()
    {
        return counts;
    }
    let collect = async {
        while let Some(msg) = answers.next().await {
            let Ok(names) = serde_json::from_slice::<Vec<String>>(&msg.payload) else {
                continue;
            };
            for name in names.into_iter().take(MAX_NAMES) {
                *counts.entry(name).or_default() += 1;
            }
        }
    };
    let _ = tokio::time::timeout(GATHER, collect).await;
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_lists_matching_names_as_json() {
        let body = answer(["a.b", "x|y", "other"].into_iter(), "");
        assert_eq!(body, br#"["a.b","x|y","other"]"#);
        let body = answer(["a.b", "x|y", "other"].into_iter(), "|");
        assert_eq!(body, br#"["x|y"]"#);
    }
}

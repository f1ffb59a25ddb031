//! Asking every shard one question and gathering the answers that arrive in
//! time, over the same links as everything else.
//!
//! The asking shard numbers each question; answers come back as ordinary
//! ring messages, which the application hands to [`Asks::answered`]. A shard
//! that answers late costs only its own answer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::local_channel::{self, LocalSender};

use crate::links::{Links, Weighed};

/// Runs `fut` for at most `limit`; `None` if time ran out (it is dropped).
pub async fn with_timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// Questions this shard asked and is still collecting answers for.
pub struct Asks<A> {
    pending: RefCell<HashMap<u64, LocalSender<A>>>,
    last_id: Cell<u64>,
}

impl<A> Default for Asks<A> {
    fn default() -> Self {
        Asks {
            pending: RefCell::new(HashMap::new()),
            last_id: Cell::new(0),
        }
    }
}

impl<A> std::fmt::Debug for Asks<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Asks")
            .field("pending", &self.pending.borrow().len())
            .finish()
    }
}

impl<A: 'static> Asks<A> {
    /// Sends `question(id)` to every other shard, and returns `local` (this
    /// shard's own answer) with the answers that arrive within `timeout`.
    /// The flag is false when some shard did not answer in time.
    pub async fn ask_all<M: Send + Weighed + 'static>(
        &self,
        links: &Links<M>,
        local: A,
        question: impl Fn(u64) -> M,
        timeout: Duration,
    ) -> (Vec<A>, bool) {
        let id = self.last_id.get() + 1;
        self.last_id.set(id);
        let peers: Vec<usize> = links.peers().collect();
        let (sender, receiver) = local_channel::new_bounded(peers.len().max(1));
        self.pending.borrow_mut().insert(id, sender);
        for &peer in &peers {
            links.send(peer, question(id));
        }
        // Answers are kept as they arrive, so a late shard costs only its own.
        let got = RefCell::new(vec![local]);
        let collect = async {
            while got.borrow().len() <= peers.len() {
                match receiver.recv().await {
                    Some(answer) => got.borrow_mut().push(answer),
                    None => break,
                }
            }
        };
        let complete = with_timeout(timeout, collect).await.is_some();
        self.pending.borrow_mut().remove(&id);
        (got.into_inner(), complete)
    }

    /// Hands over an answer that arrived for question `id` (late answers are
    /// dropped).
    pub fn answered(&self, id: u64, answer: A) {
        if let Some(waiting) = self.pending.borrow().get(&id) {
            let _ = waiting.try_send(answer);
        }
    }
}

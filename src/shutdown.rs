//! A one-shot, shard-local signal that the nexus is stopping.

use std::cell::RefCell;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// Set once with a reason; every task awaiting [`ShutdownSignal::wait`] wakes.
#[derive(Debug, Default)]
pub struct ShutdownSignal {
    reason: RefCell<Option<Arc<str>>>,
    waiters: RefCell<Vec<Waker>>,
}

impl ShutdownSignal {
    /// Fires the signal; returns false if it had already fired.
    pub fn trigger(&self, reason: Arc<str>) -> bool {
        if self.reason.borrow().is_some() {
            return false;
        }
        *self.reason.borrow_mut() = Some(reason);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
        true
    }

    /// The reason, once fired.
    pub fn reason(&self) -> Option<Arc<str>> {
        self.reason.borrow().clone()
    }

    /// Resolves once the signal fires.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.reason.borrow().is_some() {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

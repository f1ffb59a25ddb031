//! A connection's bounded outbound queue.
//!
//! Publishers push shared, reference-counted frames here (a clone of an
//! `Rc`, no copy); everything queued leaves in one batch with one `send`.
//! Who drains it is the writer's choice: a [ready hook](Outbox::set_ready_hook)
//! hands the connection to the shard's end-of-turn flusher
//! (`session::writer`) the moment the queue stops being empty, and
//! [`Outbox::poll_batch`] serves a writer task that drains on its own. The
//! queue is bounded in bytes: a
//! push that would pass the bound is refused, and the caller closes the
//! connection as a slow consumer instead of letting memory grow or stalling
//! the shard.
//!
//! Closing is a state of the outbox: a close frame goes last in the queue,
//! later pushes are dropped, and both the reader and the writer of the
//! connection are woken so the session can wind down.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::protocol::frame::{encode_close_frame, truncate_close_reason};

/// An encoded WebSocket frame, shared by every subscriber it goes to.
pub type Frame = Rc<[u8]>;

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued for the writer.
    Queued,
    /// Refused: the queue would pass its byte bound (a slow consumer).
    Overflow,
    /// Dropped: the connection is closing.
    Closed,
}

/// What the writer should do next.
#[derive(Debug)]
pub enum Batch {
    /// Write this one frame as it is (no copy).
    One(Frame),
    /// The frames were copied into the caller's buffer; write it.
    Many,
    /// Nothing left and the outbox is closed: shut the socket down.
    Finished,
}

/// A connection's outbound queue; see the module docs.
pub struct Outbox {
    queue: RefCell<VecDeque<Frame>>,
    /// Bytes currently queued; compared with `limit` on every push.
    queued_bytes: Cell<usize>,
    /// The slow-consumer bound, in bytes.
    limit: usize,
    /// Set once a close frame (or an abort) ended the queue.
    closing: Cell<bool>,
    /// The close code and reason the nexus chose, for the session's log.
    close_reason: RefCell<Option<(u16, String)>>,
    writer: Cell<Option<Waker>>,
    reader: Cell<Option<Waker>>,
    /// Called when the queue stops being empty or starts closing, instead
    /// of waking a writer blocked in [`Outbox::poll_batch`].
    ready_hook: RefCell<Option<Box<dyn Fn()>>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("frames", &self.queue.borrow().len())
            .field("queued_bytes", &self.queued_bytes.get())
            .field("limit", &self.limit)
            .field("closing", &self.closing.get())
            .field("ready_hook", &self.ready_hook.borrow().is_some())
            .finish()
    }
}

impl Outbox {
    /// An empty outbox that refuses pushes past `limit` queued bytes.
    pub fn new(limit: usize) -> Self {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            limit,
            closing: Cell::new(false),
            close_reason: RefCell::new(None),
            writer: Cell::new(None),
            reader: Cell::new(None),
            ready_hook: RefCell::new(None),
        }
    }

    /// From now on, a push onto an empty queue and a close call `hook`
    /// (once per transition, not per frame) so the caller can schedule the
    /// write itself; the writer waker is still woken on close so it can
    /// finish. The hook must not push to this outbox.
    pub fn set_ready_hook(&self, hook: Box<dyn Fn()>) {
        *self.ready_hook.borrow_mut() = Some(hook);
    }

    fn ready(&self) {
        if let Some(hook) = self.ready_hook.borrow().as_ref() {
            hook();
        }
    }

    /// Queues a shared frame unless that passes the bound or we are closing.
    pub fn push(&self, frame: &Frame) -> Push {
        self.push_with(frame.len(), || frame.clone())
    }

    /// Queues a control frame (pong, ping). It counts against the same
    /// bound: a client that floods pings and never reads the pongs is a
    /// slow consumer like any other.
    pub fn push_control(&self, frame: Vec<u8>) -> Push {
        self.push_with(frame.len(), || frame.into())
    }

    /// The bound and closing checks shared by every push; `frame` is only
    /// made (an `Rc` clone or a conversion) when it is queued.
    fn push_with(&self, len: usize, frame: impl FnOnce() -> Frame) -> Push {
        if self.closing.get() {
            return Push::Closed;
        }
        let bytes = self.queued_bytes.get() + len;
        if bytes > self.limit {
            return Push::Overflow;
        }
        self.enqueue(frame(), bytes);
        Push::Queued
    }

    fn enqueue(&self, frame: Frame, bytes: usize) {
        self.queued_bytes.set(bytes);
        let first = {
            let mut queue = self.queue.borrow_mut();
            queue.push_back(frame);
            queue.len() == 1
        };
        if first {
            if self.ready_hook.borrow().is_some() {
                self.ready();
            } else {
                wake(&self.writer);
            }
        }
    }

    /// Ends the queue with a close frame (`code`, `reason`) after what is
    /// already queued. Returns false if it was already closing.
    pub fn close(&self, code: u16, reason: &str) -> bool {
        if self.closing.get() {
            return false;
        }
        *self.close_reason.borrow_mut() = Some((code, truncate_close_reason(reason).to_string()));
        self.close_raw(encode_close_frame(code, reason))
    }

    /// Discards what is queued, then closes with `code` and `reason`: for a
    /// slow consumer or a dead peer, whose backlog is the problem.
    pub fn close_discarding(&self, code: u16, reason: &str) -> bool {
        if self.closing.get() {
            return false;
        }
        self.queue.borrow_mut().clear();
        self.queued_bytes.set(0);
        self.close(code, reason)
    }

    /// Ends the queue with an already encoded close frame (the answer to
    /// the client's own close). Returns false if it was already closing.
    pub fn close_raw(&self, close_frame: Vec<u8>) -> bool {
        if self.closing.replace(true) {
            return false;
        }
        self.queued_bytes
            .set(self.queued_bytes.get() + close_frame.len());
        self.queue.borrow_mut().push_back(close_frame.into());
        self.ready();
        wake(&self.writer);
        wake(&self.reader);
        true
    }

    /// The code and reason of the nexus's close, if it closed.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.close_reason.borrow().clone()
    }

    /// Ends the queue without a close frame (the peer is gone).
    pub fn abort(&self) {
        if !self.closing.replace(true) {
            self.ready();
            wake(&self.writer);
            wake(&self.reader);
        }
    }

    /// True once the connection is winding down.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    /// For the reader: ready once the outbox closes; otherwise remembers
    /// the waker so a close (slow consumer, shutdown) interrupts a read.
    pub fn poll_closing(&self, cx: &Context<'_>) -> Poll<()> {
        if self.closing.get() {
            Poll::Ready(())
        } else {
            self.reader.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }

    /// For a flusher: appends every queued frame to `buf`, in order, and
    /// returns how many there were.
    pub fn take_all(&self, buf: &mut Vec<u8>) -> usize {
        let mut queue = self.queue.borrow_mut();
        buf.reserve(self.queued_bytes.get());
        let frames = queue.len();
        for frame in queue.drain(..) {
            buf.extend_from_slice(&frame);
        }
        self.queued_bytes.set(0);
        frames
    }

    /// True if frames are waiting.
    pub fn has_frames(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// For a writer whose frames a flusher sends: ready once the outbox is
    /// closed and empty (time to send FIN); otherwise remembers the waker,
    /// which a close wakes.
    pub fn poll_finished(&self, cx: &Context<'_>) -> Poll<()> {
        if self.closing.get() && self.queue.borrow().is_empty() {
            Poll::Ready(())
        } else {
            self.writer.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }

    /// For the writer: takes the next batch, or waits for one.
    ///
    /// Several queued frames are copied into `buf` so one `send` writes them
    /// all; a lone frame is handed back as it is.
    pub fn poll_batch(&self, cx: &Context<'_>, buf: &mut Vec<u8>) -> Poll<Batch> {
        let mut queue = self.queue.borrow_mut();
        match queue.len() {
            0 if self.closing.get() => Poll::Ready(Batch::Finished),
            0 => {
                self.writer.set(Some(cx.waker().clone()));
                Poll::Pending
            }
            1 => {
                let frame = queue.pop_front().expect("one frame");
                self.queued_bytes.set(0);
                Poll::Ready(Batch::One(frame))
            }
            _ => {
                buf.reserve(self.queued_bytes.get());
                for frame in queue.drain(..) {
                    buf.extend_from_slice(&frame);
                }
                self.queued_bytes.set(0);
                Poll::Ready(Batch::Many)
            }
        }
    }
}

fn wake(slot: &Cell<Option<Waker>>) {
    if let Some(waker) = slot.take() {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn frame(bytes: &[u8]) -> Frame {
        Rc::from(bytes)
    }

    #[test]
    fn bound_refuses_then_close_discards() {
        let outbox = Outbox::new(10);
        let f = frame(b"abcd");
        assert_eq!(outbox.push(&f), Push::Queued);
        assert_eq!(outbox.push(&f), Push::Queued);
        assert_eq!(outbox.push(&f), Push::Overflow, "12 bytes > 10");
        assert_eq!(
            Rc::strong_count(&f),
            3,
            "queued frames are shared, not copied"
        );
        assert!(outbox.close_discarding(1008, "slow consumer"));
        assert_eq!(Rc::strong_count(&f), 1, "backlog released at once");
        assert_eq!(outbox.push(&f), Push::Closed);
        assert_eq!(outbox.close_reason(), Some((1008, "slow consumer".into())));
        let cx = Context::from_waker(Waker::noop());
        let mut buf = Vec::new();
        match outbox.poll_batch(&cx, &mut buf) {
            Poll::Ready(Batch::One(f)) => {
                assert_eq!(&*f, &encode_close_frame(1008, "slow consumer")[..])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outbox.poll_batch(&cx, &mut buf),
            Poll::Ready(Batch::Finished)
        ));
    }

    #[test]
    fn control_frames_count_against_the_bound() {
        let outbox = Outbox::new(8);
        assert_eq!(outbox.push_control(vec![0x8a, 0x00, 1, 2]), Push::Queued);
        assert_eq!(outbox.push_control(vec![0x8a, 0x00, 1, 2]), Push::Queued);
        assert_eq!(outbox.push_control(vec![0x8a, 0x00]), Push::Overflow);
    }

    #[test]
    fn ready_hook_fires_once_per_empty_to_queued_and_on_close() {
        let fired = Rc::new(Cell::new(0));
        let outbox = Outbox::new(100);
        let seen = fired.clone();
        outbox.set_ready_hook(Box::new(move || seen.set(seen.get() + 1)));
        outbox.push(&frame(b"a"));
        outbox.push(&frame(b"b"));
        assert_eq!(
            fired.get(),
            1,
            "only the first frame of a batch schedules a flush"
        );
        let mut buf = Vec::new();
        assert_eq!(outbox.take_all(&mut buf), 2);
        assert_eq!(buf, b"ab");
        assert!(!outbox.has_frames());
        outbox.push(&frame(b"c"));
        assert_eq!(fired.get(), 2, "an emptied queue schedules again");
        let cx = Context::from_waker(Waker::noop());
        assert!(outbox.poll_finished(&cx).is_pending());
        assert!(outbox.close(1000, "bye"));
        assert_eq!(fired.get(), 3, "a close schedules its frame");
        assert!(
            outbox.poll_finished(&cx).is_pending(),
            "frames still queued"
        );
        buf.clear();
        assert_eq!(outbox.take_all(&mut buf), 2);
        assert!(outbox.poll_finished(&cx).is_ready());
    }

    #[test]
    fn many_frames_are_batched_in_order() {
        let outbox = Outbox::new(100);
        outbox.push(&frame(b"one,"));
        assert_eq!(outbox.push_control(b"two,".to_vec()), Push::Queued);
        outbox.push(&frame(b"three"));
        let cx = Context::from_waker(Waker::noop());
        let mut buf = Vec::new();
        assert!(matches!(
            outbox.poll_batch(&cx, &mut buf),
            Poll::Ready(Batch::Many)
        ));
        assert_eq!(buf, b"one,two,three");
        assert_eq!(outbox.queued_bytes(), 0);
        assert!(outbox.poll_batch(&cx, &mut buf).is_pending());
    }
}

//! A connection's bounded outbound queue.
//!
//! Publishers push shared frames here (ranges of the shard's
//! [`FrameLog`], no copy; a frame that continues the last queued range
//! extends it, see [`shared`]); everything queued leaves in one batch with
//! one `send`. A [ready hook](Outbox::set_ready_hook) hands the connection
//! to the shard's end-of-turn flusher (`session::writer`) the moment the
//! queue stops being empty; the flusher drains it with
//! [`Outbox::take_all`]. The queue is bounded in bytes: a push that would
//! pass the bound is refused, and the caller closes the connection as a
//! slow consumer instead of letting memory grow or stalling the shard.
//!
//! Closing is a state of the outbox: a close frame goes last in the queue,
//! later pushes are dropped, and both the reader and the writer of the
//! connection are woken so the session can wind down.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use crate::protocol::frame::{encode_close_frame, truncate_close_reason};

pub mod shared;

pub use shared::{Frame, FrameLog};

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

/// A connection's outbound queue; see the module docs.
///
/// `repr(C)` keeps what every push reads and writes (the bound, the
/// counters, the newest range) in the struct's first cache line: a publish
/// touches hundreds of outboxes, and the older ranges only at write time.
#[repr(C)]
pub struct Outbox {
    /// Set once a close frame (or an abort) ended the queue.
    closing: Cell<bool>,
    /// Bytes currently queued; compared with `limit` on every push.
    queued_bytes: Cell<usize>,
    /// The slow-consumer bound, in bytes.
    limit: usize,
    /// Frames currently queued (a range may hold many).
    queued_frames: Cell<usize>,
    /// The newest queued range, the one a push extends; `None` when the
    /// outbox is empty.
    tail: RefCell<Option<Frame>>,
    /// The ranges queued before `tail`, oldest first.
    queue: RefCell<VecDeque<Frame>>,
    /// The close code and reason the nexus chose, for the session's log.
    close_reason: RefCell<Option<(u16, String)>>,
    writer: Cell<Option<Waker>>,
    reader: Cell<Option<Waker>>,
    /// Called when the queue stops being empty or starts closing, instead
    /// of waking the writer.
    ready_hook: RefCell<Option<Box<dyn Fn()>>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("frames", &self.queued_frames.get())
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
            tail: RefCell::new(None),
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            queued_frames: Cell::new(0),
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
        if self.closing.get() {
            return Push::Closed;
        }
        if self.queued_bytes.get() + frame.len() > self.limit {
            return Push::Overflow;
        }
        if self.append(frame) {
            if self.ready_hook.borrow().is_some() {
                self.ready();
            } else {
                wake(&self.writer);
            }
        }
        Push::Queued
    }

    /// Queues a control frame (pong, ping). It counts against the same
    /// bound: a client that floods pings and never reads the pongs is a
    /// slow consumer like any other.
    pub fn push_control(&self, frame: Vec<u8>) -> Push {
        self.push(&Frame::from(frame))
    }

    /// Adds `frame` after what is queued and counts it: it extends the
    /// newest range when it continues it (the next frame of the same
    /// chunk), else it becomes the newest range. True if the outbox was
    /// empty.
    fn append(&self, frame: &Frame) -> bool {
        self.queued_bytes.set(self.queued_bytes.get() + frame.len());
        self.queued_frames.set(self.queued_frames.get() + 1);
        let mut tail = self.tail.borrow_mut();
        match tail.as_mut() {
            Some(last) => {
                if !last.absorb(frame) {
                    let older = std::mem::replace(last, frame.clone());
                    self.queue.borrow_mut().push_back(older);
                }
                false
            }
            None => {
                *tail = Some(frame.clone());
                true
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
        self.tail.borrow_mut().take();
        self.queued_bytes.set(0);
        self.queued_frames.set(0);
        self.close(code, reason)
    }

    /// Ends the queue with an already encoded close frame (the answer to
    /// the client's own close). Returns false if it was already closing.
    pub fn close_raw(&self, close_frame: Vec<u8>) -> bool {
        if self.closing.replace(true) {
            return false;
        }
        self.append(&Frame::from(close_frame));
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

    /// For a flusher: appends every queued frame to `buf`, in order (one
    /// copy per queued range), and returns how many frames there were.
    pub fn take_all(&self, buf: &mut Vec<u8>) -> usize {
        buf.reserve(self.queued_bytes.get());
        for range in self.queue.borrow_mut().drain(..) {
            buf.extend_from_slice(&range.bytes());
        }
        if let Some(newest) = self.tail.take() {
            buf.extend_from_slice(&newest.bytes());
        }
        self.queued_bytes.set(0);
        self.queued_frames.replace(0)
    }

    /// For a flusher that sends straight from shared memory: moves every
    /// queued range into `ranges` (no copy) and returns how many frames
    /// they hold; `None`, moving nothing, when more than `max` are queued.
    pub fn take_ranges(&self, ranges: &mut Vec<Frame>, max: usize) -> Option<usize> {
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= max {
            return None;
        }
        ranges.extend(queue.drain(..));
        ranges.extend(self.tail.take());
        self.queued_bytes.set(0);
        Some(self.queued_frames.replace(0))
    }

    /// True if frames are waiting.
    pub fn has_frames(&self) -> bool {
        self.tail.borrow().is_some()
    }

    /// For a writer whose frames a flusher sends: ready once the outbox is
    /// closed and empty (time to send FIN); otherwise remembers the waker,
    /// which a close wakes.
    pub fn poll_finished(&self, cx: &Context<'_>) -> Poll<()> {
        if self.closing.get() && !self.has_frames() {
            Poll::Ready(())
        } else {
            self.writer.set(Some(cx.waker().clone()));
            Poll::Pending
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
    use std::rc::Rc;
    use std::task::Waker;

    fn frame(bytes: &[u8]) -> Frame {
        Frame::from(bytes)
    }

    fn taken(outbox: &Outbox) -> Vec<u8> {
        let mut buf = Vec::new();
        outbox.take_all(&mut buf);
        buf
    }

    #[test]
    fn bound_refuses_then_close_discards() {
        let outbox = Outbox::new(10);
        let f = frame(b"abcd");
        assert_eq!(outbox.push(&f), Push::Queued);
        assert_eq!(outbox.push(&f), Push::Queued);
        assert_eq!(outbox.push(&f), Push::Overflow, "12 bytes > 10");
        assert_eq!(f.holders(), 3, "queued frames are shared, not copied");
        assert!(outbox.close_discarding(1008, "slow consumer"));
        assert_eq!(f.holders(), 1, "backlog released at once");
        assert_eq!(outbox.push(&f), Push::Closed);
        assert_eq!(outbox.close_reason(), Some((1008, "slow consumer".into())));
        assert_eq!(taken(&outbox), encode_close_frame(1008, "slow consumer"));
        let cx = Context::from_waker(Waker::noop());
        assert!(outbox.poll_finished(&cx).is_ready());
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
        assert_eq!(taken(&outbox), b"one,two,three");
        assert_eq!(outbox.queued_bytes(), 0);
        assert!(!outbox.has_frames());
    }

    #[test]
    fn a_run_of_log_frames_is_queued_as_one_range() {
        let log = FrameLog::default();
        let (subscriber, other) = (Outbox::new(1000), Outbox::new(1000));
        let frames: Vec<Frame> = (0..50)
            .map(|i| log.frame(format!("<{i}>").as_bytes()))
            .collect();
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(subscriber.push(f), Push::Queued);
            if i % 2 == 0 {
                assert_eq!(other.push(f), Push::Queued);
            }
        }
        assert!(
            subscriber.queue.borrow().is_empty(),
            "one range for 50 frames"
        );
        assert_eq!(subscriber.queued_frames.get(), 50);
        assert_eq!(
            other.queue.borrow().len(),
            24,
            "every other frame: no run (+ the tail)"
        );
        assert_eq!(
            subscriber.queued_bytes(),
            frames.iter().map(Frame::len).sum::<usize>()
        );
        let control = subscriber.push_control(b"|ping|".to_vec());
        assert_eq!(control, Push::Queued);
        subscriber.push(&log.frame(b"<after>"));
        let expected: String = (0..50).map(|i| format!("<{i}>")).collect();
        assert_eq!(
            taken(&subscriber),
            format!("{expected}|ping|<after>").as_bytes()
        );
        let odd: String = (0..50).step_by(2).map(|i| format!("<{i}>")).collect();
        let mut ranges = Vec::new();
        assert_eq!(
            other.take_ranges(&mut ranges, 24),
            None,
            "25 ranges are more than 24"
        );
        assert!(ranges.is_empty());
        assert_eq!(taken(&other), odd.as_bytes());
        for f in &frames[..3] {
            subscriber.push(f);
        }
        subscriber.push_control(b"|pong|".to_vec());
        assert_eq!(subscriber.take_ranges(&mut ranges, 25), Some(4));
        let bytes: Vec<u8> = ranges.iter().flat_map(|r| r.bytes().to_vec()).collect();
        assert_eq!(bytes, b"<0><1><2>|pong|");
        assert_eq!(
            (subscriber.queued_bytes(), subscriber.has_frames()),
            (0, false)
        );
    }
}

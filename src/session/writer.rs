//! Writing, coalesced on purpose: the frames queued for a connection during
//! one executor round leave in one `send` at the end of that round, and a
//! busy shard waits a bounded, adaptive moment longer so each `send`
//! carries more.
//!
//! Each shard (thread) has one [`Flusher`] task. A connection's outbox calls
//! its ready hook when it stops being empty; the hook puts the connection on
//! the flusher's dirty list (once per round, whatever the number of frames)
//! and wakes the flusher. The flusher first yields once, so every task that
//! is already runnable — readers parsing publishes, ring drains — runs
//! before it and adds its frames; then it writes every dirty connection's
//! whole outbox with one non-blocking send each, all of them in one
//! io_uring submission (`uring_batch`, the shard's own ring; groups of
//! 1,024 connections) — or one `send()` system call each with
//! `--plain-sends` or where io_uring cannot be set up. An outbox holds
//! ranges of the shard's shared chunks (`outbox::shared`); up to
//! [`MAX_PARTS`] of them are sent as they are, gathered by one `sendmsg`,
//! and only what the kernel does not take is copied into the connection's
//! own buffer. This is the pattern of
//! uWebSockets' per-loop-iteration pub/sub drain and of Redis writing
//! pending replies in `beforeSleep`: deliveries are queued while input is
//! processed, and written once, just before the loop would wait again.
//! Because the flusher sits in the same FIFO run queue as everyone else, a
//! connection that floods input cannot starve the writes: the flusher runs
//! after at most one round of the runnable tasks.
//!
//! The adaptive delay ([`coalesce`]): when frames pile up (sends carry
//! more than about 1.5 frames on average) while the flusher is busy most of
//! the time, the next round waits one and a half times as long as the last
//! one's writing took, capped at `--coalesce-max-us`: the shard then spends
//! about 40% of its time in `send`, each carrying more frames. Such a busy
//! round is paced: the wait is cut into up to three pauses, one before each
//! slice of the dirty connections, and each slice takes its frames just
//! before it is written, so a frame waits for its own connection's next
//! turn, not for the whole round. The wait a frame sees never exceeds the
//! cap plus one round. At low load, or once sends carry about one frame
//! again, rounds are written at once, in one submission. The cap applies to
//! every connection alike, so no subscriber waits longer than the bound
//! because of another connection.
//!
//! A write the kernel cannot take whole (a full socket buffer) is handed to
//! the connection's own writer task, which waits for room without holding
//! up the flusher; the connection rejoins the flusher's rounds once its
//! backlog is written. The writer task also sends FIN when the outbox is
//! finished and stops everything on a write error.

use std::cell::{Cell, Ref, RefCell};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::outbox::Frame;
use crate::shard::{Connection, ShardState};
use tracing::warn;
use uring_batch::{BatchSender, Send};

use crate::stats::Metric;

use super::stream::SharedStream;
use crate::tls::TlsSession;

mod coalesce;

use coalesce::Coalescer;

/// A send buffer larger than this is released after use, so a burst does
/// not pin memory on a connection that goes idle.
const KEEP_BUFFER_BYTES: usize = 16 * 1024;
/// Sends per io_uring submission; in a round over more connections than
/// this, the flusher also offers the executor a chance to preempt it
/// between groups.
const SENDS_PER_GROUP: usize = 1024;
/// Most ranges sent straight from the shard's chunks in one `sendmsg`;
/// an outbox holding more is copied into one buffer instead.
const MAX_PARTS: usize = 64;
/// A busy round is written in at most this many slices, with a share of
/// the coalescing delay before each.
const PACED_PIECES: usize = 3;
/// Connections per slice of a busy round, at least (fewer slices when
/// fewer connections are dirty).
const PACED_SLICE: usize = 32;

/// Where a connection's writing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing to write, or frames whose ready hook has not fired yet.
    Idle,
    /// On the flusher's dirty list.
    Queued,
    /// The kernel did not take a whole batch; the writer task finishes it.
    Blocked,
    /// A write failed: the peer is gone.
    Failed,
}

/// One connection's side of the writing: shared by its writer task, the
/// flusher's dirty list and (weakly) its outbox's ready hook.
struct Link {
    conn: Rc<Connection>,
    stream: SharedStream,
    shard: Rc<ShardState>,
    /// This shard's flusher.
    flusher: Rc<Flusher>,
    state: Cell<State>,
    /// Bytes taken from the outbox and not yet written.
    pending: RefCell<Vec<u8>>,
    /// A round's frames as the outbox's ranges, sent from the shard's
    /// chunks without being copied into `pending` first.
    direct: RefCell<Vec<Frame>>,
    /// The writer task, woken when it has to act (blocked, failed, done).
    writer: Cell<Option<Waker>>,
}

impl Link {
    /// Puts this connection on the flusher's list unless it is there or
    /// its writer task owns the writing right now.
    fn mark_dirty(self: &Rc<Self>) {
        if self.state.get() == State::Idle {
            self.state.set(State::Queued);
            self.flusher.enqueue(self.clone());
        }
    }

    /// Moves everything queued into the pending buffer; returns the number
    /// of frames. For wss the frames are sealed on the way: copied into the
    /// shard's plaintext scratch, then encrypted into the pending buffer
    /// (with any record the read side queued, such as a key update).
    fn take(&self) -> usize {
        let mut pending = self.pending.borrow_mut();
        let Some(tls) = self.stream.tls() else {
            if pending.is_empty() && self.flusher.gathers() {
                let mut direct = self.direct.borrow_mut();
                if let Some(frames) = self.conn.outbox.take_ranges(&mut direct, MAX_PARTS) {
                    return frames;
                }
            }
            return self.conn.outbox.take_all(&mut pending);
        };
        let mut plaintext = self.shard.tls_plaintext.borrow_mut();
        let frames = self.conn.outbox.take_all(&mut plaintext);
        tls.seal(&plaintext, &mut pending);
        release(&mut plaintext);
        frames
    }

    /// Writes the pending buffer from byte `written` on (the bytes before
    /// it are already sent) without waiting, and settles the state: done,
    /// blocked (the writer task finishes) or failed.
    fn write_from(&self, mut written: usize) {
        let mut buf = self.pending.borrow_mut();
        let waker = self.writer.take();
        // A `Pending` registers this waker: the writer task then finishes.
        let mut cx = Context::from_waker(waker.as_ref().unwrap_or(Waker::noop()));
        let state = loop {
            if written >= buf.len() {
                break State::Idle;
            }
            match self.stream.poll_write_some(&mut cx, &buf[written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break State::Failed,
                Poll::Ready(Ok(n)) => written += n,
                Poll::Pending => break State::Blocked,
            }
        };
        self.shard
            .stats
            .add(Metric::BytesOut, written.min(buf.len()) as u64);
        self.state.set(state);
        match state {
            State::Idle => {
                release(&mut buf);
                if self.conn.outbox.is_closing() {
                    wake(waker);
                } else {
                    self.writer.set(waker);
                }
            }
            State::Blocked => {
                buf.drain(..written);
                self.writer.set(waker);
            }
            State::Failed | State::Queued => wake(waker),
        }
    }

    /// Settles a direct send of `ranges`: what the kernel did not take is
    /// copied into the pending buffer and goes through [`Link::write_from`].
    fn settle_direct(&self, ranges: &[Frame], result: &io::Result<usize>) {
        let Some(sent) = sent_bytes(result) else {
            return self.fail();
        };
        self.shard.stats.add(Metric::BytesOut, sent as u64);
        let mut skip = sent;
        {
            let mut pending = self.pending.borrow_mut();
            for range in ranges {
                let bytes = range.bytes();
                if skip < bytes.len() {
                    pending.extend_from_slice(&bytes[skip..]);
                }
                skip = skip.saturating_sub(bytes.len());
            }
        }
        self.write_from(0);
    }

    /// Settles a batched send's result: the kernel took `result` bytes, or
    /// refused; what is left goes through [`Link::write_from`].
    fn settle(&self, result: &io::Result<usize>) {
        match sent_bytes(result) {
            Some(sent) => self.write_from(sent),
            None => self.fail(),
        }
    }

    /// A write failed: the peer is gone; the writer task ends the session.
    fn fail(&self) {
        self.state.set(State::Failed);
        wake(self.writer.take());
    }
}

/// What a batched send wrote: the bytes the kernel took (none when the
/// socket was full), or `None` when it failed.
fn sent_bytes(result: &io::Result<usize>) -> Option<usize> {
    match result {
        Ok(n) => Some(*n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(0),
        Err(_) => None,
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}

fn release(buf: &mut Vec<u8>) {
    buf.clear();
    if buf.capacity() > KEEP_BUFFER_BYTES {
        *buf = Vec::new();
    }
}

/// What the writer task has to do.
enum Next {
    /// Write the rest of a batch the kernel did not take at once.
    Blocked,
    /// A write failed.
    Failed,
    /// The outbox is closed and written: send FIN.
    Finished,
}

/// Hands `conn`'s writes to the shard's flusher, finishes the writes the
/// kernel could not take at once, and sends FIN when the outbox is
/// finished. A write error aborts the outbox, which also stops the reader.
pub async fn run(stream: SharedStream, conn: Rc<Connection>, shard: Rc<ShardState>) {
    let link = Rc::new(Link {
        conn: conn.clone(),
        stream,
        flusher: Flusher::current(&shard),
        shard,
        state: Cell::new(State::Idle),
        pending: RefCell::new(Vec::new()),
        direct: RefCell::new(Vec::new()),
        writer: Cell::new(None),
    });
    let weak: Weak<Link> = Rc::downgrade(&link);
    conn.outbox.set_ready_hook(Box::new(move || {
        if let Some(link) = weak.upgrade() {
            link.mark_dirty();
        }
    }));
    if let Some(tls) = link.stream.tls() {
        // Records the read side makes rustls queue go out with the next round.
        let weak = Rc::downgrade(&link);
        tls.set_output_hook(Box::new(move || {
            if let Some(link) = weak.upgrade() {
                link.mark_dirty();
            }
        }));
    }
    // Frames queued before the hook was set.
    if conn.outbox.has_frames() || conn.outbox.is_closing() {
        link.mark_dirty();
    }
    loop {
        let next = poll_fn(|cx| {
            link.writer.set(Some(cx.waker().clone()));
            match link.state.get() {
                State::Blocked => Poll::Ready(Next::Blocked),
                State::Failed => Poll::Ready(Next::Failed),
                State::Queued => Poll::Pending,
                State::Idle => {
                    // Records the read side queued while this task held
                    // the writes (or before the hook was set) go out too.
                    let tls_output = link.stream.tls().is_some_and(TlsSession::wants_write);
                    if link.conn.outbox.has_frames() || tls_output {
                        link.mark_dirty();
                        Poll::Pending
                    } else {
                        link.conn.outbox.poll_finished(cx).map(|()| Next::Finished)
                    }
                }
            }
        })
        .await;
        match next {
            Next::Blocked => {
                let rest = std::mem::take(&mut *link.pending.borrow_mut());
                let written = link.stream.write_all_raw(&rest).await;
                if written.is_ok() {
                    link.shard.stats.add(Metric::BytesOut, rest.len() as u64);
                }
                let mut rest = rest;
                release(&mut rest);
                *link.pending.borrow_mut() = rest;
                if written.is_err() {
                    link.state.set(State::Failed);
                    conn.outbox.abort();
                    return;
                }
                link.state.set(State::Idle);
            }
            Next::Failed => {
                conn.outbox.abort();
                return;
            }
            Next::Finished => {
                link.stream.close_write().await;
                return;
            }
        }
    }
}

/// One shard's end-of-round writer; see the module docs.
struct Flusher {
    /// The executor this flusher belongs to (a thread may run several
    /// executors one after the other, e.g. in tests).
    executor: usize,
    dirty: RefCell<Vec<Rc<Link>>>,
    waker: Cell<Option<Waker>>,
    /// Picks the wait before each round.
    coalescer: RefCell<Coalescer>,
    /// When the previous round ended.
    last_round_end: Cell<Instant>,
    /// The shard's own io_uring for one submission per group of sends;
    /// `None` with `--plain-sends` or if it could not be set up.
    sender: RefCell<Option<BatchSender>>,
    /// Scratch for the batch results.
    results: RefCell<Vec<io::Result<usize>>>,
}

thread_local! {
    static FLUSHER: RefCell<Option<Rc<Flusher>>> = const { RefCell::new(None) };
}

impl Flusher {
    /// This executor's flusher, started on first use.
    fn current(shard: &ShardState) -> Rc<Flusher> {
        let executor = glommio::executor().id();
        FLUSHER.with(|slot| {
            let mut slot = slot.borrow_mut();
            if let Some(flusher) = slot.as_ref().filter(|f| f.executor == executor) {
                return flusher.clone();
            }
            let flusher = Rc::new(Flusher {
                executor,
                dirty: RefCell::new(Vec::new()),
                waker: Cell::new(None),
                coalescer: RefCell::new(Coalescer::new(shard.config.coalesce_max)),
                last_round_end: Cell::new(Instant::now()),
                sender: RefCell::new(batch_sender(&shard.config)),
                results: RefCell::new(Vec::new()),
            });
            glommio::spawn_local(flusher.clone().run()).detach();
            *slot = Some(flusher.clone());
            flusher
        })
    }

    fn enqueue(&self, link: Rc<Link>) {
        let mut dirty = self.dirty.borrow_mut();
        dirty.push(link);
        if dirty.len() == 1 {
            wake(self.waker.take());
        }
    }

    async fn run(self: Rc<Self>) {
        // When the executor drops this task (shutdown), forget the flusher
        // and whatever it still holds while the executor is still there.
        let _forget = Forget(self.executor);
        let mut round: Vec<Rc<Link>> = Vec::new();
        loop {
            poll_fn(|cx| {
                if self.dirty.borrow().is_empty() {
                    self.waker.set(Some(cx.waker().clone()));
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            // Let every task that is runnable now add its frames first.
            futures_lite::future::yield_now().await;
            let delay = self.coalescer.borrow().delay();
            let written = if delay.is_zero() {
                self.write_round(&mut round).await
            } else {
                self.write_paced_round(&mut round, delay).await
            };
            self.coalescer.borrow_mut().observe(
                written.frames,
                written.sends,
                written.busy,
                written.idle,
            );
        }
    }
}

/// What one round wrote, for the coalescer.
struct Written {
    frames: usize,
    /// Connections that had frames (one `send` each).
    sends: usize,
    /// Time spent writing.
    busy: Duration,
    /// Time since the previous round ended, less `busy`.
    idle: Duration,
}

impl Flusher {
    /// Writes every dirty connection at once, one io_uring submission per
    /// group of [`SENDS_PER_GROUP`].
    async fn write_round(&self, round: &mut Vec<Rc<Link>>) -> Written {
        let started = Instant::now();
        let idle = started.saturating_duration_since(self.last_round_end.get());
        std::mem::swap(round, &mut *self.dirty.borrow_mut());
        let (mut frames, mut sends) = (0, 0);
        for group in round.chunks(SENDS_PER_GROUP) {
            let (f, n) = self.write_group(group);
            frames += f;
            sends += n;
            glommio::yield_if_needed().await;
        }
        round.clear();
        let ended = Instant::now();
        self.last_round_end.set(ended);
        Written {
            frames,
            sends,
            busy: ended - started,
            idle,
        }
    }

    /// A round while the shard is busy: the coalescing `delay` is spread
    /// over the round in [`PACED_PIECES`] pauses, one before each slice of
    /// the dirty connections, so each slice takes its frames just before it
    /// is written and the shard reads new publishes between slices. Each
    /// connection still gets one `send` per round, but a frame waits for its
    /// connection's next turn rather than for the whole round to end and the
    /// next one to start: the same sends as one pause before the round, and
    /// a wait shorter by most of the round's length.
    async fn write_paced_round(&self, round: &mut Vec<Rc<Link>>, delay: Duration) -> Written {
        let cycle_started = self.last_round_end.get();
        // Sliced by the connections dirty now; the ones that turn dirty
        // during the first pause join the last slice.
        let pieces = self
            .dirty
            .borrow()
            .len()
            .div_ceil(PACED_SLICE)
            .clamp(1, PACED_PIECES);
        let pause = delay / pieces as u32;
        glommio::timer::sleep(pause).await;
        std::mem::swap(round, &mut *self.dirty.borrow_mut());
        if let Some(link) = round.first() {
            // Every link of this flusher is on its shard.
            link.shard.stats.add(Metric::CoalescedRounds, 1);
        }
        let slice = round.len().div_ceil(pieces).min(SENDS_PER_GROUP);
        let (mut frames, mut sends, mut busy) = (0, 0, Duration::ZERO);
        for (i, group) in round.chunks(slice).enumerate() {
            if i > 0 && i < pieces {
                glommio::timer::sleep(pause).await;
            } else if i > 0 {
                glommio::yield_if_needed().await;
            }
            let started = Instant::now();
            let (f, n) = self.write_group(group);
            busy += started.elapsed();
            frames += f;
            sends += n;
        }
        round.clear();
        let ended = Instant::now();
        self.last_round_end.set(ended);
        let idle = ended
            .saturating_duration_since(cycle_started)
            .saturating_sub(busy);
        Written {
            frames,
            sends,
            busy,
            idle,
        }
    }

    /// True when this flusher sends in io_uring batches, which gather an
    /// outbox's ranges straight from the shard's chunks (a link then takes
    /// ranges instead of copying them).
    fn gathers(&self) -> bool {
        self.sender.borrow().is_some()
    }

    /// Writes one group of dirty connections: every batch in one io_uring
    /// submission when the shard has its ring, else one `send` each.
    /// Returns the frames written and the connections that had any.
    fn write_group(&self, group: &[Rc<Link>]) -> (usize, usize) {
        let mut frames = 0;
        let mut sends = 0;
        for link in group {
            let taken = link.take();
            frames += taken;
            sends += usize::from(taken > 0);
        }
        let mut sender = self.sender.borrow_mut();
        let Some(sender) = sender.as_mut() else {
            for link in group {
                link.write_from(0);
            }
            return (frames, sends);
        };
        let mut results = self.results.borrow_mut();
        let directs: Vec<Vec<Frame>> = group
            .iter()
            .map(|l| std::mem::take(&mut *l.direct.borrow_mut()))
            .collect();
        {
            // Every buffer's borrow, then the parts pointing into them, then
            // one send per connection over its parts.
            let mut buffers: Vec<Outgoing<'_>> = Vec::with_capacity(group.len());
            for (link, direct) in group.iter().zip(&directs) {
                if direct.is_empty() {
                    buffers.push(Outgoing::Pending(link.pending.borrow()));
                } else {
                    buffers.extend(direct.iter().map(|range| Outgoing::Shared(range.bytes())));
                }
            }
            let parts: Vec<IoSlice<'_>> = buffers.iter().map(|b| IoSlice::new(b)).collect();
            let mut at = 0;
            let batch: Vec<Send<'_>> = group
                .iter()
                .zip(&directs)
                .map(|(link, direct)| {
                    let count = direct.len().max(1);
                    at += count;
                    Send {
                        fd: link.stream.raw_fd(),
                        parts: &parts[at - count..at],
                    }
                })
                .collect();
            sender.send_all(&batch, &mut results);
        }
        for ((link, result), mut direct) in group.iter().zip(results.iter()).zip(directs) {
            if direct.is_empty() {
                link.settle(result);
            } else {
                link.settle_direct(&direct, result);
                direct.clear();
            }
            // Keep the vector's room for the next round.
            *link.direct.borrow_mut() = direct;
        }
        (frames, sends)
    }
}

/// The bytes of one send in a batch: a connection's pending buffer, or a
/// range of the shard's shared chunks sent as it is.
enum Outgoing<'a> {
    Pending(Ref<'a, Vec<u8>>),
    Shared(Ref<'a, [u8]>),
}

impl std::ops::Deref for Outgoing<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Outgoing::Pending(buf) => buf,
            Outgoing::Shared(bytes) => bytes,
        }
    }
}

/// The shard's batch sender, unless `--plain-sends` or io_uring refuses.
fn batch_sender(config: &crate::Config) -> Option<BatchSender> {
    if config.plain_sends {
        return None;
    }
    match BatchSender::new(SENDS_PER_GROUP as u32) {
        Ok(sender) => Some(sender),
        Err(e) => {
            warn!(error = %e, "no io_uring for batched sends; writing with one send() per connection");
            None
        }
    }
}

/// Clears this thread's flusher slot when the flusher task is dropped.
struct Forget(usize);

impl Drop for Forget {
    fn drop(&mut self) {
        let _ = FLUSHER.try_with(|slot| {
            let mut slot = slot.borrow_mut();
            if slot.as_ref().is_some_and(|f| f.executor == self.0) {
                if let Some(flusher) = slot.take() {
                    flusher.dirty.borrow_mut().clear();
                    flusher.waker.take();
                }
            }
        });
    }
}

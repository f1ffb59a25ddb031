//! Frames shared by many outboxes, written one after another into a
//! shard's chunks so that an outbox can hold a run of them as one range.
//!
//! A publish is encoded once and queued to every subscriber. With one
//! reference-counted allocation per frame, every subscriber's queue grew by
//! one entry per frame (a reference-count increment, a queue slot that is
//! a cache miss once thousands are queued, another miss and decrement when
//! it is written): most of the nexus's own CPU time in the closed loop. A
//! shard instead appends its frames to a [`FrameLog`] chunk, and a
//! [`Frame`] is a range of it: an outbox whose last queued range ends where
//! the next frame starts just extends that range (`Outbox::push`), so a
//! subscriber that receives every frame of a busy channel holds one range
//! per chunk, whatever the number of frames.
//!
//! A chunk lives while any range of it is queued, so one held frame keeps
//! its whole chunk: the bytes so held are counted per shard, and past
//! [`PINNED_BUDGET`] new frames get an allocation of their own (as every
//! frame did before) until queues drain.

use std::cell::{Cell, Ref, RefCell};
use std::rc::Rc;

/// Size of a shard's shared chunks: ~900 frames of a 64-byte publish.
const CHUNK_BYTES: usize = 64 * 1024;
/// A frame larger than this gets an allocation of its own.
const LARGEST_SHARED: usize = CHUNK_BYTES / 4;
/// Bytes of shared chunks a shard keeps alive at most (see the module docs).
const PINNED_BUDGET: usize = 32 * 1024 * 1024;

/// Bytes written once and read by many: a chunk's written bytes never
/// change again; appends go after them, within the capacity it was made
/// with (so its memory never moves).
struct Chunk {
    /// Borrowed only for one append or one copy out, never across either.
    bytes: RefCell<Vec<u8>>,
    /// The shard's count of pinned chunk bytes, for its shared chunks.
    pinned: Option<Rc<Cell<usize>>>,
}

impl Chunk {
    fn new(bytes: Vec<u8>, pinned: Option<Rc<Cell<usize>>>) -> Rc<Chunk> {
        Rc::new(Chunk {
            bytes: RefCell::new(bytes),
            pinned,
        })
    }

    /// Bytes that still fit without the chunk growing.
    fn room(&self) -> usize {
        let bytes = self.bytes.borrow();
        bytes.capacity() - bytes.len()
    }

    /// Appends `bytes` after what is written; returns where they start.
    /// The caller checked they fit.
    fn append(&self, bytes: &[u8]) -> usize {
        let mut written = self.bytes.borrow_mut();
        debug_assert!(bytes.len() <= written.capacity() - written.len());
        let start = written.len();
        written.extend_from_slice(bytes);
        start
    }

    /// The written bytes `start..end`.
    fn range(&self, start: usize, end: usize) -> Ref<'_, [u8]> {
        Ref::map(self.bytes.borrow(), |bytes| &bytes[start..end])
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(pinned) = &self.pinned {
            pinned.set(pinned.get() - self.bytes.get_mut().capacity());
        }
    }
}

/// An encoded WebSocket frame, shared by every outbox it is queued to: a
/// range of a chunk (clone is a reference-count increment, no copy).
#[derive(Clone)]
pub struct Frame {
    chunk: Rc<Chunk>,
    start: u32,
    end: u32,
}

impl Frame {
    /// The frame's bytes (borrowed from its chunk: copy them out, do not
    /// hold the borrow while frames are made).
    pub fn bytes(&self) -> Ref<'_, [u8]> {
        self.chunk.range(self.start as usize, self.end as usize)
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// True for an empty frame (never queued in practice).
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Extends this range by `next` if `next` starts where it ends in the
    /// same chunk (the next frame of the same log): then both are one range.
    pub fn absorb(&mut self, next: &Frame) -> bool {
        if self.end == next.start && Rc::ptr_eq(&self.chunk, &next.chunk) {
            self.end = next.end;
            true
        } else {
            false
        }
    }

    /// How many frames and ranges share this one's memory (tests).
    #[cfg(test)]
    pub fn holders(&self) -> usize {
        Rc::strong_count(&self.chunk)
    }
}

impl From<Vec<u8>> for Frame {
    /// A frame in an allocation of its own (control frames, one-offs).
    fn from(bytes: Vec<u8>) -> Frame {
        let end = len_u32(bytes.len());
        Frame {
            chunk: Chunk::new(bytes, None),
            start: 0,
            end,
        }
    }
}

impl From<&[u8]> for Frame {
    fn from(bytes: &[u8]) -> Frame {
        Frame::from(bytes.to_vec())
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("start", &self.start)
            .field("len", &self.len())
            .finish()
    }
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("frames are far below 4 GiB (--max-message-bytes)")
}

/// A shard's frames, appended to shared chunks (see the module docs).
#[derive(Default)]
pub struct FrameLog {
    current: RefCell<Option<Rc<Chunk>>>,
    /// Bytes of this log's chunks still alive.
    pinned: Rc<Cell<usize>>,
}

impl FrameLog {
    /// Copies `bytes` into the log and returns them as a shareable frame.
    pub fn frame(&self, bytes: &[u8]) -> Frame {
        if bytes.len() > LARGEST_SHARED {
            return Frame::from(bytes);
        }
        let mut current = self.current.borrow_mut();
        let fits = current
            .as_ref()
            .is_some_and(|chunk| chunk.room() >= bytes.len());
        if !fits {
            // A full chunk is let go by the log; it lives on while queued.
            *current = None;
            if self.pinned.get() + CHUNK_BYTES > PINNED_BUDGET {
                return Frame::from(bytes);
            }
            let memory = Vec::with_capacity(CHUNK_BYTES);
            self.pinned.set(self.pinned.get() + memory.capacity());
            *current = Some(Chunk::new(memory, Some(self.pinned.clone())));
        }
        let chunk = current.as_ref().expect("made above");
        let start = chunk.append(bytes);
        Frame {
            chunk: chunk.clone(),
            start: len_u32(start),
            end: len_u32(start + bytes.len()),
        }
    }

    /// Bytes of shared chunks this shard keeps alive (queued frames pin
    /// their chunk).
    pub fn pinned_bytes(&self) -> usize {
        self.pinned.get()
    }
}

impl std::fmt::Debug for FrameLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameLog")
            .field("pinned_bytes", &self.pinned_bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_frames_of_a_log_merge_into_one_range() {
        let log = FrameLog::default();
        let (a, b, c) = (log.frame(b"one,"), log.frame(b"two,"), log.frame(b"three"));
        assert_eq!(&*a.bytes(), b"one,");
        assert_eq!(&*b.bytes(), b"two,");
        assert_eq!(&*c.bytes(), b"three");
        let mut run = a.clone();
        assert!(run.absorb(&b));
        assert!(run.absorb(&c));
        assert_eq!(&*run.bytes(), b"one,two,three");
        assert!(!run.absorb(&a), "not contiguous");
        let own = Frame::from(b"x".to_vec());
        assert!(!run.absorb(&own), "another allocation never merges");
        assert_eq!(
            &*a.bytes(),
            b"one,",
            "merging a copy leaves the frame alone"
        );
    }

    #[test]
    fn chunks_are_freed_with_their_last_range_and_counted_until_then() {
        let log = FrameLog::default();
        let first = log.frame(&[1; 100]);
        assert_eq!(log.pinned_bytes(), CHUNK_BYTES);
        // Fill the chunk so the next frame starts another.
        let mut kept = Vec::new();
        while log.pinned_bytes() == CHUNK_BYTES {
            kept.push(log.frame(&[2; 1000]));
        }
        assert_eq!(log.pinned_bytes(), 2 * CHUNK_BYTES);
        let in_second = kept.pop().expect("the frame that opened the second chunk");
        drop(kept);
        assert_eq!(
            log.pinned_bytes(),
            2 * CHUNK_BYTES,
            "`first` still holds the first chunk"
        );
        drop(first);
        assert_eq!(log.pinned_bytes(), CHUNK_BYTES);
        assert_eq!(&*in_second.bytes(), &[2; 1000][..]);
    }

    /// Appends throw-away frames until the log's current chunk is full.
    fn fill_current_chunk(log: &FrameLog) {
        loop {
            let room = log.current.borrow().as_ref().map_or(0, |c| c.room());
            if room == 0 {
                return;
            }
            drop(log.frame(&vec![0; room.min(LARGEST_SHARED)]));
        }
    }

    #[test]
    fn large_frames_and_a_full_budget_get_their_own_allocation() {
        let log = FrameLog::default();
        let large = log.frame(&vec![7; LARGEST_SHARED + 1]);
        assert_eq!(log.pinned_bytes(), 0);
        assert_eq!(large.holders(), 1, "its own allocation");
        // One held frame per chunk, as a slow subscriber of a rare channel
        // would hold them: every chunk stays alive.
        let mut held = Vec::new();
        while log.pinned_bytes() < PINNED_BUDGET {
            held.push(log.frame(&[1; 10]));
            fill_current_chunk(&log);
        }
        assert_eq!(log.pinned_bytes(), PINNED_BUDGET);
        let past_budget = log.frame(&[3; 10]);
        assert_eq!(
            past_budget.holders(),
            1,
            "its own allocation, nothing pinned"
        );
        assert_eq!(log.pinned_bytes(), PINNED_BUDGET);
        drop(held);
        assert_eq!(
            log.pinned_bytes(),
            0,
            "every chunk freed with its last frame"
        );
        let shared_again = log.frame(&[4; 10]);
        assert_eq!(log.pinned_bytes(), CHUNK_BYTES);
        assert_eq!(&*shared_again.bytes(), &[4; 10]);
    }
}

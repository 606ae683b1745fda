//! A connection's queue of output, written with one vectored write per flush.
//!
//! A broadcast is rendered once into an `Rc<[u8]>`; every recipient's queue holds a clone of the
//! `Rc` (a pointer and a count bump), never a copy of the bytes. A flush hands up to
//! [`IOV_MAX`] chunks to a single `writev`, and a partial write only moves an offset into the
//! first chunk, so nothing is lost or resent.
//!
//! The chunk type is a parameter: the event loop keeps `Rc<[u8]>` (the default), the threaded
//! driver's writer threads `Arc<[u8]>`, shared across threads.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::ops::Deref;
use std::rc::Rc;

use crate::core::Cursor;

/// Chunks passed to one `writev`; Linux's `IOV_MAX`.
pub const IOV_MAX: usize = 1024;
/// A small flush: up to this many chunks use a small slice array.
const FEW: usize = 8;

/// Queue capacity (in chunks) kept after the queue drains. A connection that receives messages
/// keeps a small ring instead of reallocating it for every message; a burst's larger ring is
/// given back.
const KEEP_CHUNKS: usize = 4;

/// Bytes waiting to be written to one socket, as shared chunks of type `C`.
#[derive(Debug)]
pub struct OutQueue<C = Rc<[u8]>> {
    chunks: VecDeque<C>,
    /// Bytes of the first chunk already written.
    offset: usize,
    /// Unwritten bytes in the queue, checked against the send-queue limit.
    bytes: usize,
}

/// What one flush did.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    All,
    /// The kernel took less than it was offered: its buffer is full, wait for WRITABLE.
    Short,
    /// All that was offered went out but more is queued (the flush was capped at `IOV_MAX`
    /// chunks): flush again next turn.
    More,
}

impl<C> Default for OutQueue<C> {
    fn default() -> Self {
        OutQueue {
            chunks: VecDeque::new(),
            offset: 0,
            bytes: 0,
        }
    }
}

impl<C: Deref<Target = [u8]>> OutQueue<C> {
    pub fn push(&mut self, chunk: C) {
        if chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Unwritten bytes.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// The chunks queued.
    pub fn chunks(&self) -> impl Iterator<Item = &C> {
        self.chunks.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// One `writev` of the queue's head. `WouldBlock` and other errors are returned as they are.
    pub fn flush_to<W: Write>(&mut self, sink: &mut W) -> io::Result<Flushed> {
        if self.is_empty() {
            return Ok(Flushed::All);
        }
        // Most flushes carry a handful of chunks: filling a 1,024-slot array (16 KiB) for them
        // would cost more than the chunks themselves.
        if self.chunks.len() <= FEW {
            self.flush_with::<FEW, W>(sink)
        } else {
            self.flush_with::<IOV_MAX, W>(sink)
        }
    }

    fn flush_with<const N: usize, W: Write>(&mut self, sink: &mut W) -> io::Result<Flushed> {
        let mut slices = [IoSlice::new(&[]); N];
        let mut count = 0;
        let mut offered = 0;
        for (i, chunk) in self.chunks.iter().take(N).enumerate() {
            let bytes = if i == 0 {
                &chunk[self.offset..]
            } else {
                &chunk[..]
            };
            slices[i] = IoSlice::new(bytes);
            offered += bytes.len();
            count += 1;
        }
        let written = sink.write_vectored(&slices[..count])?;
        self.consume(written);
        Ok(if self.is_empty() {
            Flushed::All
        } else if written < offered {
            Flushed::Short
        } else {
            Flushed::More
        })
    }

    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let head = self.chunks[0].len() - self.offset;
            if n < head {
                self.offset += n;
                return;
            }
            n -= head;
            self.offset = 0;
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() && self.chunks.capacity() > KEEP_CHUNKS {
            self.chunks = VecDeque::new();
        }
    }
}

/// What waits behind a paged answer ([`Cursor`]): the answer's remaining pages and everything
/// queued for the connection after it, in order. While a connection has one, new output goes
/// here, not into its [`OutQueue`], so that nothing overtakes the answer (a NAMES list is not
/// interrupted by a message, a history replay comes before what is said after the join).
#[derive(Debug)]
pub struct Later<C = Rc<[u8]>> {
    items: VecDeque<Pending<C>>,
    /// Bytes of the `Bytes` items, counted against the send queue limit like queued ones.
    bytes: usize,
    /// Answers in progress (`Page` items).
    pages: usize,
}

/// What an answer in progress counts against the send queue limit: more than its cursor's own
/// memory (about a hundred bytes), so that within its limit a client cannot make the server hold
/// answers without end by asking and never reading.
pub const PAGE_COST: usize = 1024;

/// One item of a [`Later`].
#[derive(Debug)]
pub enum Pending<C> {
    Bytes(C),
    /// The rest of a paged answer, rendered a page at a time.
    Page(Cursor),
}

impl<C> Default for Later<C> {
    fn default() -> Self {
        Later {
            items: VecDeque::new(),
            bytes: 0,
            pages: 0,
        }
    }
}

impl<C: Deref<Target = [u8]>> Later<C> {
    pub fn push(&mut self, item: Pending<C>) {
        match &item {
            Pending::Bytes(b) => self.bytes += b.len(),
            Pending::Page(_) => self.pages += 1,
        }
        self.items.push_back(item);
    }

    /// The first item, taken out.
    pub fn pop(&mut self) -> Option<Pending<C>> {
        let item = self.items.pop_front()?;
        match &item {
            Pending::Bytes(b) => self.bytes -= b.len(),
            Pending::Page(_) => self.pages -= 1,
        }
        Some(item)
    }

    /// Puts back an answer that has pages left, ahead of everything else.
    pub fn resume(&mut self, cursor: Cursor) {
        self.pages += 1;
        self.items.push_front(Pending::Page(cursor));
    }

    /// Answers in progress.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The first item, if it is bytes.
    pub fn peek_bytes(&self) -> Option<&Pending<C>> {
        self.items
            .front()
            .filter(|item| matches!(item, Pending::Bytes(_)))
    }

    /// The first item, if it is a page to render.
    pub fn next_page(&self) -> Option<&Cursor> {
        match self.items.front() {
            Some(Pending::Page(cursor)) => Some(cursor),
            _ => None,
        }
    }

    /// What waits, as the send queue limit counts it: the bytes, and [`PAGE_COST`] for each
    /// answer in progress after the first (which, like one reply into an empty queue, always
    /// goes in).
    pub fn len(&self) -> usize {
        self.bytes + self.pages.saturating_sub(1) * PAGE_COST
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The chunks waiting.
    pub fn chunks(&self) -> impl Iterator<Item = &C> {
        self.items.iter().filter_map(|item| match item {
            Pending::Bytes(b) => Some(b),
            Pending::Page(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that accepts at most `limit` bytes per call, or refuses with WouldBlock at 0.
    struct Trickle {
        got: Vec<u8>,
        limit: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.limit == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.limit - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut q = OutQueue::default();
        let shared: Rc<[u8]> = Rc::from(&b"hello "[..]);
        q.push(shared.clone());
        q.push(Rc::from(&b"world\n"[..]));
        q.push(shared);
        assert_eq!(q.len(), 18);
        let mut sink = Trickle {
            got: Vec::new(),
            limit: 4,
            calls: 0,
        };
        assert_eq!(q.flush_to(&mut sink).unwrap(), Flushed::Short);
        assert_eq!(q.len(), 14);
        sink.limit = 100;
        assert_eq!(q.flush_to(&mut sink).unwrap(), Flushed::All);
        assert_eq!(sink.got, b"hello world\nhello ");
        assert_eq!(sink.calls, 2, "one write per flush");
        assert!(q.is_empty());
    }

    #[test]
    fn would_block_keeps_everything() {
        let mut q = OutQueue::default();
        q.push(Rc::from(&b"x"[..]));
        let mut sink = Trickle {
            got: Vec::new(),
            limit: 0,
            calls: 0,
        };
        let err = q.flush_to(&mut sink).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_flush_is_capped_at_iov_max_chunks() {
        let mut q = OutQueue::default();
        let chunk: Rc<[u8]> = Rc::from(&b"ab"[..]);
        for _ in 0..IOV_MAX + 5 {
            q.push(chunk.clone());
        }
        let mut sink = Trickle {
            got: Vec::new(),
            limit: usize::MAX / 2,
            calls: 0,
        };
        assert_eq!(q.flush_to(&mut sink).unwrap(), Flushed::More);
        assert_eq!(q.len(), 10);
        assert_eq!(q.flush_to(&mut sink).unwrap(), Flushed::All);
        assert_eq!(sink.got.len(), 2 * (IOV_MAX + 5));
        assert_eq!(
            q.chunks.capacity(),
            0,
            "a big drained queue gives its memory back"
        );
    }
}

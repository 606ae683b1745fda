//! The bounded channel between the fan-out and one connection's writer thread (`--io threads`).
//!
//! Whoever holds the chat core's lock pushes shared `Arc<[u8]>` chunks; the connection's writer
//! thread takes everything queued at once and writes it with one `writev` per call. The bound is
//! in **bytes**, not messages: a push that would take the unwritten bytes (queued here *and*
//! still held by the writer) past `--max-sendq` is refused, which is exactly the limit the event
//! loop applies to its [`OutQueue`], so `--max-sendq` means the same under every I/O model. A
//! channel bounded in messages (`std::sync::mpsc::sync_channel`) could not say that, and it
//! allocates its whole capacity up front.
//!
//! A channel ends in one of two ways: [`SendChannel::finish`] queues a last chunk (the `BYE`
//! line) that the writer delivers after everything else, within a deadline; [`SendChannel::abort`]
//! drops what is queued (a slow consumer, a broken socket).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::outq::{Later, OutQueue, PAGE_COST, Pending};
use crate::core::Cursor;

/// A chunk of output shared by every recipient of a broadcast.
pub type Chunk = Arc<[u8]>;

/// The push was refused: it would take the unwritten bytes past the limit.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// What the writer is to do next, from [`SendChannel::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// Write what was moved into the queue (and ask [`SendChannel::deadline`] while doing so).
    Write,
    /// Render the next page of this answer (under the core's lock) and hand it to
    /// [`SendChannel::paged`].
    Page(Cursor),
    /// Everything was written (after a finish) or the channel was aborted: stop.
    Stop,
}

/// Where the channel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    /// No more pushes; the writer delivers what is queued, by this deadline.
    Finishing(Instant),
    Aborted,
}

#[derive(Debug)]
struct Inner {
    /// Chunks pushed and not yet taken by the writer.
    queue: OutQueue<Chunk>,
    /// What waits behind a paged answer, in order (see `core::page`).
    later: Later<Chunk>,
    /// Bytes pushed and not yet written, including those the writer has taken: the send queue
    /// as the limit sees it.
    unwritten: usize,
    end: End,
    /// The writer is asleep on the condition variable. A wake-up is a system call even with no
    /// one waiting, and a busy writer needs none: it takes the queue when it is done.
    writer_waiting: bool,
}

/// One connection's output channel.
#[derive(Debug)]
pub struct SendChannel {
    inner: Mutex<Inner>,
    /// Wakes the writer when there is something to do.
    ready: Condvar,
    /// Wakes a reader waiting for answers in progress to get under way
    /// ([`SendChannel::wait_for_answers`]).
    answered: Condvar,
    /// `--max-sendq`.
    limit: usize,
}

impl SendChannel {
    pub fn new(limit: usize) -> SendChannel {
        SendChannel {
            inner: Mutex::new(Inner {
                queue: OutQueue::default(),
                later: Later::default(),
                unwritten: 0,
                end: End::Open,
                writer_waiting: false,
            }),
            ready: Condvar::new(),
            answered: Condvar::new(),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a chunk for the writer. Refused when it would take the unwritten bytes past the
    /// limit; ignored once the channel is finishing or aborted.
    pub fn push(&self, chunk: &Chunk) -> Result<(), Full> {
        let mut inner = self.lock();
        if inner.end != End::Open {
            return Ok(());
        }
        // As in the loop, a chunk into an empty queue always goes in: one reply bigger than the
        // limit says nothing about how the client reads. Empty means nothing waits for the
        // writer: bytes it has taken and is writing are the loop's "what the socket took" (the
        // writer may not have counted them as written yet when the client, having read them,
        // sends its next command: judging by them would cut a client that reads). They still
        // count as soon as anything else is queued, so a client that stops reading holds at
        // most one chunk past the limit.
        let held = inner.unwritten + inner.later.len();
        let waiting = !inner.queue.is_empty() || !inner.later.is_empty();
        if waiting && held + chunk.len() > self.limit {
            return Err(Full);
        }
        if inner.later.is_empty() {
            inner.unwritten += chunk.len();
            inner.queue.push(chunk.clone());
        } else {
            inner.later.push(Pending::Bytes(chunk.clone()));
        }
        let wake = inner.writer_waiting;
        drop(inner);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues a paged answer: the writer renders it a page at a time as the socket takes it,
    /// and what is pushed meanwhile waits behind it.
    /// Refused like a push when it would take what the connection holds past the limit (an
    /// answer in progress counts [`PAGE_COST`]).
    pub fn push_page(&self, cursor: Cursor) -> Result<(), Full> {
        let mut inner = self.lock();
        if inner.end != End::Open {
            return Ok(());
        }
        let held = inner.unwritten + inner.later.len();
        if inner.later.pages() > 0 && held + PAGE_COST > self.limit {
            return Err(Full);
        }
        inner.later.push(Pending::Page(cursor));
        let wake = inner.writer_waiting;
        drop(inner);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// For the writer: the page it was given by [`Take::Page`] is `bytes`; `rest`: the answer
    /// goes on.
    pub fn paged(&self, bytes: Chunk, rest: Option<Cursor>) {
        let mut inner = self.lock();
        if inner.later.next_page().is_none() {
            // Closed meanwhile: the answer was given up.
            return;
        }
        inner.later.pop();
        inner.unwritten += bytes.len();
        inner.queue.push(bytes);
        if let Some(cursor) = rest {
            inner.later.resume(cursor);
        }
        drop(inner);
        self.answered.notify_all();
    }

    /// For the reader: waits while the connection has `max` or more answers in progress (as the
    /// loop stops reading such a client), or until the channel ends.
    pub fn wait_for_answers(&self, max: usize) {
        let mut inner = self.lock();
        while inner.end == End::Open && inner.later.pages() >= max {
            inner = self
                .answered
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Answers in progress.
    pub fn answers(&self) -> usize {
        self.lock().later.pages()
    }

    /// Queues a last chunk, whatever the limit, and closes the channel: the writer delivers
    /// everything queued (paged answers included), then stops. What is not written by `deadline` is given up.
    pub fn finish(&self, last: Chunk, deadline: Instant) {
        let mut inner = self.lock();
        if inner.end != End::Open {
            return;
        }
        // After the rest of a paged answer too, which the writer goes on rendering.
        if inner.later.is_empty() {
            inner.unwritten += last.len();
            inner.queue.push(last);
        } else {
            inner.later.push(Pending::Bytes(last));
        }
        inner.end = End::Finishing(deadline);
        drop(inner);
        self.ready.notify_one();
        self.answered.notify_all();
    }

    /// Drops everything queued and tells the writer to stop.
    pub fn abort(&self) {
        let mut inner = self.lock();
        inner.end = End::Aborted;
        inner.queue = OutQueue::default();
        inner.later = Later::default();
        drop(inner);
        self.ready.notify_one();
        self.answered.notify_all();
    }

    /// For the writer, whose `out` is empty: waits until there is something to write (or to do)
    /// and moves every queued chunk into `out`.
    pub fn take(&self, out: &mut OutQueue<Chunk>) -> Take {
        let mut inner = self.lock();
        loop {
            match inner.end {
                End::Aborted => return Take::Stop,
                _ if !inner.queue.is_empty() => {
                    // The writer's queue is empty: swapping hands it every chunk, and gives the
                    // channel back an empty ring with the writer's capacity.
                    std::mem::swap(&mut inner.queue, out);
                    return Take::Write;
                }
                _ if !inner.later.is_empty() => {
                    // Everything before the paged answer is written: its next page is due.
                    if let Some(cursor) = inner.later.next_page() {
                        return Take::Page(cursor.clone());
                    }
                    while let Some(Pending::Bytes(_)) = inner.later.peek_bytes() {
                        let Some(Pending::Bytes(bytes)) = inner.later.pop() else {
                            break;
                        };
                        inner.unwritten += bytes.len();
                        inner.queue.push(bytes);
                    }
                }
                End::Finishing(_) => return Take::Stop,
                End::Open => {
                    inner.writer_waiting = true;
                    inner = self
                        .ready
                        .wait(inner)
                        .unwrap_or_else(PoisonError::into_inner);
                    inner.writer_waiting = false;
                }
            }
        }
    }

    /// Once the channel is finishing, the time after which the writer gives up on what is not
    /// written; `Instant::now()` when aborted (give up at once).
    pub fn deadline(&self) -> Option<Instant> {
        match self.lock().end {
            End::Open => None,
            End::Finishing(deadline) => Some(deadline),
            End::Aborted => Some(Instant::now()),
        }
    }

    /// For the writer: `n` bytes it took went out.
    pub fn written(&self, n: usize) {
        let mut inner = self.lock();
        inner.unwritten = inner.unwritten.saturating_sub(n);
    }

    /// Bytes held for the connection: not yet written, and waiting behind a paged answer.
    pub fn held(&self) -> usize {
        let inner = self.lock();
        inner.unwritten + inner.later.len()
    }

    /// Bytes pushed and not yet written.
    pub fn unwritten(&self) -> usize {
        self.lock().unwritten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(s: &str) -> Chunk {
        Arc::from(s.as_bytes())
    }

    #[test]
    fn the_limit_counts_bytes_the_writer_holds_too() {
        let ch = SendChannel::new(10);
        ch.push(&chunk("12345")).unwrap();
        let mut out = OutQueue::default();
        assert_eq!(ch.take(&mut out), Take::Write);
        assert_eq!(ch.deadline(), None);
        assert_eq!(out.len(), 5);
        // The writer has not written them yet: they still count.
        ch.push(&chunk("1234")).unwrap();
        assert_eq!(ch.push(&chunk("12")), Err(Full));
        ch.written(5);
        ch.push(&chunk("12")).unwrap();
        assert_eq!(ch.unwritten(), 6);
    }

    #[test]
    fn bytes_in_flight_alone_do_not_refuse_the_next_chunk() {
        // The writer took 8 bytes and the client, having read them, asks again before the
        // writer counted them written: its reply goes in, as into an empty queue…
        let ch = SendChannel::new(10);
        ch.push(&chunk("12345678")).unwrap();
        let mut out = OutQueue::default();
        assert_eq!(ch.take(&mut out), Take::Write);
        ch.push(&chunk("abcde")).unwrap();
        // …but once something waits for the writer, everything held counts.
        assert_eq!(ch.push(&chunk("x")), Err(Full));
        assert_eq!(ch.unwritten(), 13);
    }

    #[test]
    fn finish_delivers_the_rest_then_stops() {
        let ch = SendChannel::new(4);
        ch.push(&chunk("ab")).unwrap();
        let deadline = Instant::now();
        // The last chunk goes in whatever the limit.
        ch.finish(chunk("BYE!!"), deadline);
        assert_eq!(ch.push(&chunk("late")), Ok(()), "ignored, not refused");
        let mut out = OutQueue::default();
        assert_eq!(ch.take(&mut out), Take::Write);
        assert_eq!(ch.deadline(), Some(deadline));
        assert_eq!(out.len(), 7);
        let mut out = OutQueue::default();
        assert_eq!(ch.take(&mut out), Take::Stop);
    }

    #[test]
    fn abort_wakes_a_waiting_writer() {
        let ch = Arc::new(SendChannel::new(100));
        let writer = {
            let ch = ch.clone();
            std::thread::spawn(move || ch.take(&mut OutQueue::default()))
        };
        ch.abort();
        assert_eq!(writer.join().unwrap(), Take::Stop);
    }
}

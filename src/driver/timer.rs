//! The event loop's timers: one binary heap of deadlines, like the time events of Redis's `ae.c`,
//! and the memory trim that runs on one of them.
//!
//! The loop's poll timeout is the time to the nearest deadline, so there is no timer thread and
//! no periodic scan of every client. Entries are not removed when they stop mattering: each
//! names a connection by slab key *and* serial, and one whose connection has gone (or changed) is
//! ignored when it comes due, or dropped by [`Timers::compact`] once the heap has grown well past
//! the number of connections. A session entry (its connection's next deadline) that comes due
//! early, because the client was active, finds nothing to do and re-arms for the new deadline,
//! so the heap holds about one entry per connection however chatty the clients are.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// A throttled connection has a flood token again: resume reading it.
    FloodResume,
    /// A connection's session asked to be woken (idle and ping timeouts, the registration
    /// deadline, an unfinished line to complete): see `Session::next_deadline`.
    Session,
    /// A draining connection's grace time is over: close it even if output is left.
    DrainDeadline,
    /// A TLS connection's `--tls-handshake-timeout`: close it if it is still handshaking.
    Handshake,
    /// Hand free heap memory back to the kernel (not tied to a connection).
    Trim,
}

/// A due timer: when it was set for, its kind, and the connection (key, serial) it belongs to.
pub type Due = (Instant, TimerKind, usize, u64);

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerKind, usize, u64)>>,
    /// The heap's size after its last compaction.
    compacted_len: usize,
}

impl Timers {
    pub fn push(&mut self, at: Instant, kind: TimerKind, key: usize, serial: u64) {
        self.heap.push(Reverse((at, kind, key, serial)));
    }

    /// The nearest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, ..))| *at)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops the entries `keep` says no to. Stale entries (of closed connections) otherwise wait
    /// for their deadline, which with long timeouts and many short connections adds up; the loop
    /// calls this when the heap is much larger than the number of connections, so the cost is
    /// amortised over the pushes that made it grow.
    pub fn retain(&mut self, mut keep: impl FnMut(Instant, TimerKind, usize, u64) -> bool) {
        self.heap
            .retain(|Reverse((at, kind, key, serial))| keep(*at, *kind, *key, *serial));
    }

    /// Keeps the heap proportional to the number of connections (`live`): once it is much
    /// larger, drops the entries `keep` says no to. Live connections can have a few timers each,
    /// so after a compaction the next one waits until the heap has doubled again: never a scan
    /// per turn that removes nothing.
    pub fn compact(
        &mut self,
        live: usize,
        keep: impl FnMut(Instant, TimerKind, usize, u64) -> bool,
    ) {
        let threshold = (2 * live + 1024).max(self.compacted_len * 2);
        if self.len() > threshold {
            self.retain(keep);
            self.compacted_len = self.len();
        }
    }

    /// Gives back the memory of a heap that was bigger than it is now.
    pub fn shrink_to_fit(&mut self) {
        self.heap.shrink_to_fit();
        self.compacted_len = self.len();
    }

    /// Removes and returns one timer that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Due> {
        match self.heap.peek() {
            Some(Reverse((at, ..))) if *at <= now => self.heap.pop().map(|Reverse(due)| due),
            _ => None,
        }
    }
}

/// How long after clients come and go, and after the last socket event, free heap memory is
/// handed back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Handing free heap memory back to the kernel, on a timer of its own ([`TimerKind::Trim`]).
///
/// Bursts (a flood of joins, a big fan-out) leave free memory scattered through the heap, which
/// glibc's allocator keeps mapped; on a small host the resident size should come back down once
/// the burst is over. `malloc_trim` walks the heap (milliseconds for tens of MiB), so it runs
/// once the loop has been quiet for `TRIM_EVERY`, never per event and never while clients
/// chat (it would show as a latency spike). An idle server is never woken for it.
#[derive(Debug)]
pub struct Trim {
    /// A Trim timer is pending.
    armed: bool,
    /// The last turn that had socket events.
    last_busy: Instant,
}

impl Trim {
    pub fn new(now: Instant) -> Trim {
        Trim {
            armed: false,
            last_busy: now,
        }
    }

    /// A turn had socket events.
    pub fn busy(&mut self, now: Instant) {
        self.last_busy = now;
    }

    /// Clients came or went: trim a little later, once.
    pub fn arm(&mut self, now: Instant, timers: &mut Timers) {
        if !self.armed {
            self.armed = true;
            timers.push(now + TRIM_EVERY, TimerKind::Trim, 0, 0);
        }
    }

    /// The Trim timer is due: whether the loop has been quiet long enough to trim now (the
    /// caller shrinks its tables, then calls [`release_free_memory`]); if not, it waits until
    /// then.
    pub fn fire(&mut self, now: Instant, timers: &mut Timers) -> bool {
        if now.saturating_duration_since(self.last_busy) < TRIM_EVERY {
            timers.push(self.last_busy + TRIM_EVERY, TimerKind::Trim, 0, 0);
            false
        } else {
            self.armed = false;
            true
        }
    }
}

/// Hands the heap's free memory back to the kernel.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_in_deadline_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let (t1, t2) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        t.push(t2, TimerKind::Session, 1, 1);
        t.push(t1, TimerKind::FloodResume, 2, 7);
        assert_eq!(t.next(), Some(t1));
        assert_eq!(t.pop_due(t0), None);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(t.pop_due(later), Some((t1, TimerKind::FloodResume, 2, 7)));
        assert_eq!(t.pop_due(later), Some((t2, TimerKind::Session, 1, 1)));
        assert_eq!(t.pop_due(later), None);
    }

    #[test]
    fn retain_drops_stale_entries() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for key in 0..10 {
            t.push(t0, TimerKind::Session, key, key as u64);
        }
        t.retain(|_, _, key, _| key % 2 == 0);
        assert_eq!(t.len(), 5);
        assert!(std::iter::from_fn(|| t.pop_due(t0)).all(|(_, _, key, _)| key % 2 == 0));
    }
}

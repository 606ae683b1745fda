//! The event loop's timers: one binary heap of deadlines, like the time events of Redis's `ae.c`.
//!
//! The loop's poll timeout is the time to the nearest deadline, so there is no timer thread and
//! no periodic scan of every client. Entries are never removed early: each names a connection by
//! slab key *and* serial, and one whose connection has gone (or changed) is simply ignored when it
//! comes due. An idle-timeout entry that finds its client active again re-arms itself for the new
//! deadline, so the heap holds about one entry per connection however chatty the clients are.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

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
    /// Hand free heap memory back to the kernel (not tied to a connection).
    Trim,
}

/// A due timer: when it was set for, its kind, and the connection (key, serial) it belongs to.
pub type Due = (Instant, TimerKind, usize, u64);

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerKind, usize, u64)>>,
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

    /// Removes and returns one timer that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Due> {
        match self.heap.peek() {
            Some(Reverse((at, ..))) if *at <= now => self.heap.pop().map(|Reverse(due)| due),
            _ => None,
        }
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

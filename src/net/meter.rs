//! The event loop's count of all output it holds: `--max-output-total`.
//!
//! A per-client limit (`--max-sendq`) does not bound the server: 2,000 clients that each hold
//! just under it hold gigabytes. So the loop also counts everything all its queues hold
//! together, as Redis 7 counts client buffers for `maxmemory-clients`, and past the budget
//! disconnects the clients holding the most.
//!
//! A broadcast is one allocation shared by every recipient's queue, so counting each queue's
//! bytes would count it once per recipient. Instead each [`Counted`] chunk counts itself: its
//! bytes once, when it is made, and given back when its last holder drops it; and each holder
//! (a slot in a queue's ring) its own size, since a ring of 10,000 references to shared
//! messages is memory too. The count is per thread (the loop is one thread, and each loop of a
//! test process runs on its own), kept in a `Cell`: no atomics on the hot path.

use std::cell::Cell;
use std::ops::Deref;
use std::rc::Rc;

thread_local! {
    /// Bytes held by this thread's [`Counted`] chunks and their holders.
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// What one holder of a chunk costs besides the bytes: the reference in a queue's ring.
const HOLDER: usize = size_of::<Counted>();

/// Bytes of output this thread holds: each chunk's bytes once, plus each holder's reference.
pub fn held() -> usize {
    HELD.with(Cell::get)
}

fn add(n: usize) {
    HELD.with(|h| h.set(h.get() + n));
}

fn sub(n: usize) {
    HELD.with(|h| h.set(h.get().saturating_sub(n)));
}

/// A chunk of output shared by the queues of all its recipients, counted in [`held`].
#[derive(Debug)]
pub struct Counted(Rc<[u8]>);

impl From<Vec<u8>> for Counted {
    fn from(bytes: Vec<u8>) -> Counted {
        add(bytes.len() + HOLDER);
        Counted(bytes.into())
    }
}

impl Clone for Counted {
    fn clone(&self) -> Counted {
        add(HOLDER);
        Counted(self.0.clone())
    }
}

impl Counted {
    /// What dropping this holder gives back: its reference, and the bytes if nobody else
    /// holds them.
    pub fn frees(&self) -> usize {
        HOLDER
            + if Rc::strong_count(&self.0) == 1 {
                self.0.len()
            } else {
                0
            }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let last = Rc::strong_count(&self.0) == 1;
        sub(HOLDER + if last { self.0.len() } else { 0 });
    }
}

impl Deref for Counted {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bytes_count_once_and_every_holder_counts_its_reference() {
        let before = held();
        let a = Counted::from(vec![0u8; 1000]);
        assert_eq!(held() - before, 1000 + HOLDER);
        let copies: Vec<Counted> = (0..10).map(|_| a.clone()).collect();
        assert_eq!(held() - before, 1000 + 11 * HOLDER);
        drop(a);
        assert_eq!(held() - before, 1000 + 10 * HOLDER);
        drop(copies);
        assert_eq!(held(), before);
    }
}

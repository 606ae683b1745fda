//! Nick delay: a nick that just left a big room stays unclaimable for a moment.
//!
//! Big rooms (more than `--big-room` members) do not announce quits and nick changes, so
//! without this, when alice quits or renames herself, a stranger could take `alice` at once and
//! talk on in the same room, and nobody there would have been told that the person changed.
//! Like charybdis/solanum's nick delay (`nd_entry`), the nick is held for `--nick-delay`
//! (30 s): long enough that the room's regulars are not fooled by a quick swap, short enough
//! that a user who lost their connection gets their nick back after a reconnect. A user who
//! changed nick may take its old one back within the delay (it is the same person); nobody
//! else may, and neither may whoever reconnects (the core cannot tell a reconnect from a
//! stranger, so the delay applies to everyone after a quit).
//!
//! Memory is bounded: at most [`MAX_HELD`] holds, the oldest dropped first, and expired ones
//! are removed a few at a time as new holds are made, never by a scan of the table.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::event::Millis;

/// Holds kept at most. A hold costs about 100 bytes (the folded nick twice by pointer, one
/// allocation, a map slot and a queue slot), so 10,000 are about a megabyte; a mass departure
/// from a big room larger than that (or a client changing nick over and over, which flood
/// control already slows to a few a second) drops the oldest holds first, which are the
/// nearest to expiring anyway.
pub const MAX_HELD: usize = 10_000;

/// One held nick: until when, and who may still take it (`None`: nobody, its user is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    pub until: Millis,
    /// The `User::serial` of the user who left the nick by changing it.
    pub owner: Option<u32>,
}

/// The held nicks, by folded nick, and the order their holds were made in.
#[derive(Debug, Default)]
pub struct NickDelay {
    held: HashMap<Arc<str>, Hold>,
    /// Every hold made, oldest first: as the delay is the same for all, also the order they
    /// expire in. An entry whose nick was held again later, or taken back by its owner, no
    /// longer matches `held` and is skipped when it reaches the front.
    order: VecDeque<(Millis, Arc<str>)>,
}

impl NickDelay {
    /// Holds `folded` until `until` for `owner` (replacing an earlier hold of it), after
    /// dropping the holds expired at `now` and, if the table is full, the oldest.
    pub fn hold(&mut self, folded: &str, owner: Option<u32>, until: Millis, now: Millis) {
        self.prune(now);
        while self.order.len() >= MAX_HELD {
            self.pop_front();
        }
        let key: Arc<str> = folded.into();
        self.held.insert(key.clone(), Hold { until, owner });
        self.order.push_back((until, key));
    }

    /// The hold on `folded` at `now`, if there is one that has not expired.
    pub fn get(&self, folded: &str, now: Millis) -> Option<Hold> {
        self.held.get(folded).copied().filter(|h| h.until > now)
    }

    /// Forgets the hold on `folded` (its owner took the nick back).
    pub fn release(&mut self, folded: &str) {
        self.held.remove(folded);
    }

    /// Drops the holds expired at `now` and gives back the memory of a table that was bigger;
    /// whether holds are left (they expire later).
    pub fn shrink(&mut self, now: Millis) -> bool {
        self.prune(now);
        self.held.shrink_to_fit();
        self.order.shrink_to_fit();
        !self.order.is_empty()
    }

    /// Nicks held (expired holds not yet pruned included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }

    /// Drops the holds expired at `now`, from the front: amortised O(1) per hold made.
    fn prune(&mut self, now: Millis) {
        while self.order.front().is_some_and(|(until, _)| *until <= now) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((until, key)) = self.order.pop_front()
            && self.held.get(&key).is_some_and(|h| h.until == until)
        {
            self.held.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_expire_and_are_pruned_as_new_ones_come() {
        let mut d = NickDelay::default();
        d.hold("alice", None, 100, 0);
        assert_eq!(
            d.get("alice", 99),
            Some(Hold {
                until: 100,
                owner: None
            })
        );
        assert_eq!(d.get("alice", 100), None);
        assert_eq!(d.get("bob", 0), None);
        d.hold("bob", Some(7), 250, 150);
        assert_eq!(d.len(), 1, "alice's expired hold is gone");
        // Held again: the newer hold counts, the older one's queue entry is skipped.
        d.hold("bob", None, 300, 200);
        d.hold("carol", None, 260, 255);
        assert_eq!(d.get("bob", 280).map(|h| h.owner), Some(None));
        d.release("carol");
        assert_eq!(d.get("carol", 256), None);
    }

    #[test]
    fn the_table_never_holds_more_than_its_cap() {
        let mut d = NickDelay::default();
        for i in 0..MAX_HELD + 10 {
            d.hold(&format!("n{i}"), None, 1_000_000, 0);
        }
        assert_eq!(d.len(), MAX_HELD);
        assert!(d.order.len() <= MAX_HELD);
        assert_eq!(d.get("n0", 0), None, "the oldest went first");
        assert!(d.get(&format!("n{}", MAX_HELD + 9), 0).is_some());
    }
}

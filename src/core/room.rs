//! A room: its members, its topic and the ring of its recent messages.

use std::collections::VecDeque;
use std::sync::Arc;

use super::event::{ClientId, Millis, MsgKind, Source, Topic};

/// One remembered message, replayed to clients that join later.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    /// The core's running count of remembered messages: orders entries across rooms, so the
    /// server-wide history budget drops the oldest first.
    pub serial: u64,
    pub at: Millis,
    pub from: Arc<Source>,
    pub text: Arc<str>,
    pub kind: MsgKind,
}

#[derive(Debug)]
pub struct Room {
    /// The name as first written by its creator (`#Rust` stays `#Rust`; lookups fold case).
    pub name: Arc<str>,
    /// Members in join order. A `Vec`: fan-out iterates it on every message, while joins and
    /// parts, which pay the linear removal, are rare by comparison.
    pub members: Vec<ClientId>,
    pub topic: Option<Topic>,
    pub created_at: Millis,
    /// The last `capacity` messages, oldest first; allocated on the first message only.
    history: VecDeque<HistoryEntry>,
    capacity: usize,
    /// What `history` holds, counted by [`HistoryEntry::cost`], at most `max_bytes`.
    history_bytes: usize,
    max_bytes: usize,
}

impl HistoryEntry {
    /// What keeping the entry costs, as the history budgets count it: its text and a fixed
    /// share for the entry itself (the `Arc`s, the time, the ring slot).
    pub fn cost(&self) -> usize {
        self.text.len() + 64
    }
}

impl Room {
    /// A room keeping its last `capacity` messages, within `max_bytes`.
    pub fn new(name: &str, capacity: usize, max_bytes: usize, now: Millis) -> Room {
        Room {
            name: name.into(),
            members: Vec::new(),
            topic: None,
            created_at: now,
            history: VecDeque::new(),
            capacity,
            history_bytes: 0,
            max_bytes,
        }
    }

    /// Keeps `entry`, dropping the oldest entries past the room's count and byte limits (an
    /// entry bigger than the whole byte budget is not kept at all).
    pub fn remember(&mut self, entry: HistoryEntry) {
        if self.capacity == 0 || entry.cost() > self.max_bytes {
            return;
        }
        self.history_bytes += entry.cost();
        self.history.push_back(entry);
        while self.history.len() > self.capacity || self.history_bytes > self.max_bytes {
            self.forget_oldest();
        }
    }

    /// Drops the oldest entry; returns what it cost.
    pub fn forget_oldest(&mut self) -> Option<usize> {
        let entry = self.history.pop_front()?;
        self.history_bytes -= entry.cost();
        if self.history.is_empty() {
            // Give the ring back: a quiet room keeps no history memory.
            self.history = VecDeque::new();
        }
        Some(entry.cost())
    }

    /// The serial of the oldest entry kept.
    pub fn oldest(&self) -> Option<u64> {
        self.history.front().map(|e| e.serial)
    }

    /// What the history holds, in [`HistoryEntry::cost`] bytes.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    pub fn history(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.history.iter()
    }

    pub fn remove_member(&mut self, id: ClientId) {
        self.members.retain(|&m| m != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> HistoryEntry {
        HistoryEntry {
            serial: i,
            at: i,
            from: Arc::new(Source {
                nick: "a".into(),
                user: "u".into(),
                host: "h".into(),
                realname: "r".into(),
            }),
            text: i.to_string().into(),
            kind: MsgKind::Normal,
        }
    }

    #[test]
    fn history_keeps_the_last_n() {
        let mut r = Room::new("#r", 3, usize::MAX, 0);
        (0..5).for_each(|i| r.remember(entry(i)));
        let kept: Vec<u64> = r.history().map(|e| e.at).collect();
        assert_eq!(kept, [2, 3, 4]);
        let mut off = Room::new("#r", 0, usize::MAX, 0);
        off.remember(entry(1));
        assert_eq!(off.history().count(), 0);
    }

    #[test]
    fn history_stays_within_its_byte_budget() {
        // Each entry costs its text (1 byte here) and 64.
        let mut r = Room::new("#r", 100, 3 * 65, 0);
        (0..10).for_each(|i| r.remember(entry(i)));
        let kept: Vec<u64> = r.history().map(|e| e.at).collect();
        assert_eq!(kept, [7, 8, 9]);
        assert_eq!(r.history_bytes(), 3 * 65);
        let mut huge = entry(10);
        huge.text = "x".repeat(4 * 65).into();
        r.remember(huge);
        assert_eq!(
            r.history().count(),
            3,
            "an entry over the whole budget is not kept"
        );
        assert_eq!(r.forget_oldest(), Some(65));
        assert_eq!(r.oldest(), Some(8));
    }
}

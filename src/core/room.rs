//! A room: its members, its topic and the ring of its recent messages.

use std::collections::VecDeque;
use std::sync::Arc;

use super::event::{ClientId, Millis, MsgKind, Source, Topic};

/// One remembered message, replayed to clients that join later.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
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
}

impl Room {
    pub fn new(name: &str, capacity: usize, now: Millis) -> Room {
        Room {
            name: name.into(),
            members: Vec::new(),
            topic: None,
            created_at: now,
            history: VecDeque::new(),
            capacity,
        }
    }

    pub fn remember(&mut self, entry: HistoryEntry) {
        if self.capacity == 0 {
            return;
        }
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(entry);
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
        let mut r = Room::new("#r", 3, 0);
        (0..5).for_each(|i| r.remember(entry(i)));
        let kept: Vec<u64> = r.history().map(|e| e.at).collect();
        assert_eq!(kept, [2, 3, 4]);
        let mut off = Room::new("#r", 0, 0);
        off.remember(entry(1));
        assert_eq!(off.history().count(), 0);
    }
}

//! A room: its members, its topic and the ring of its recent messages.

use std::cmp::Ordering;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::modes::RoomModes;
use super::page::folded_cmp;
use super::remote::RemoteMembers;

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
    /// Members in join order, with O(1) removal: what a fan-out iterates.
    pub members: Members,
    /// The same members in case-folded nick order: where a paged listing resumes, in
    /// O(log members) instead of a scan of the room per page (see `core::page`).
    pub by_nick: BTreeSet<ByNick>,
    pub topic: Option<Topic>,
    pub created_at: Millis,
    /// Its modes and operators (`core::modes`).
    pub modes: RoomModes,
    /// In a cluster: its members on other nodes (`core::remote`), known while it has local
    /// members.
    pub remote: RemoteMembers,
    /// In a cluster: joins of local users to it that wait for the cluster's answer.
    pub pending: u32,
    /// The last `capacity` messages, oldest first; allocated on the first message only.
    history: VecDeque<HistoryEntry>,
    capacity: usize,
    /// What `history` holds, counted by [`HistoryEntry::cost`], at most `max_bytes`.
    history_bytes: usize,
    max_bytes: usize,
    /// In a cluster: the number of the history asked of the cluster for this room when it got
    /// its first local member, until the answer comes (joiners meanwhile are replayed the
    /// answer, not the local history).
    pub history_ask: Option<u64>,
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
            members: Members::default(),
            by_nick: BTreeSet::new(),
            topic: None,
            created_at: now,
            modes: RoomModes::new(),
            remote: RemoteMembers::default(),
            pending: 0,
            history: VecDeque::new(),
            capacity,
            history_bytes: 0,
            max_bytes,
            history_ask: None,
        }
    }

    /// Its members on every node (as far as this node knows).
    pub fn size(&self) -> usize {
        self.members.len() + self.remote.len()
    }

    /// Whether a local user is in it, or waits to be (in a cluster, it is kept and its
    /// messages received while so).
    pub fn in_use(&self) -> bool {
        !self.members.is_empty() || self.pending > 0
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

    /// Takes every entry out, oldest first.
    pub fn take_history(&mut self) -> Vec<HistoryEntry> {
        self.history_bytes = 0;
        std::mem::take(&mut self.history).into()
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

    /// The entries remembered after serial `after` (all of them for 0), oldest first: where a
    /// paged replay resumes, found by binary search.
    pub fn history_after(&self, after: u64) -> impl Iterator<Item = &HistoryEntry> {
        let from = self.history.partition_point(|e| e.serial <= after);
        self.history.range(from..)
    }
}

/// A member in a room's nick index: its nick (shared with its `Source`, no copy) and id,
/// ordered by case-folded nick (the id only breaks ties, which unique nicks never make).
#[derive(Clone, Debug)]
pub struct ByNick(pub Arc<str>, pub ClientId);

impl Ord for ByNick {
    fn cmp(&self, other: &Self) -> Ordering {
        folded_cmp(&self.0, &other.0).then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for ByNick {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ByNick {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for ByNick {}

/// A room's members in join order. Fan-out iterates them on every message; joining and leaving
/// are O(1) (amortised): each member's user remembers the member's slot ([`Membership`]), a
/// departure leaves a hole there, and once holes outnumber members they are squeezed out,
/// moving the members behind them to new slots, which are reported so that their users'
/// memberships follow. (Removing by scanning the list made a mass departure of N members cost
/// O(N²).)
#[derive(Debug, Default)]
pub struct Members {
    slots: Vec<ClientId>,
    /// Members present (slots that are not holes).
    live: usize,
}

/// What marks a slot whose member left. No client id reaches it.
const HOLE: ClientId = ClientId(usize::MAX);

impl Members {
    /// Gives back the memory of a list that was longer than it is now (only what trails the
    /// last member: slots are where users' memberships point).
    pub fn shrink_to_fit(&mut self) {
        while self.slots.last() == Some(&HOLE) {
            self.slots.pop();
        }
        self.slots.shrink_to_fit();
    }

    /// Adds a member at the end; returns its slot.
    pub fn push(&mut self, id: ClientId) -> u32 {
        self.slots.push(id);
        self.live += 1;
        (self.slots.len() - 1) as u32
    }

    /// Removes `id`, which is at `slot`. If holes now outnumber members, squeezes them out and
    /// returns the members that moved with their new slots (empty otherwise).
    pub fn remove(&mut self, id: ClientId, slot: u32) -> Vec<(ClientId, u32)> {
        let slot = slot as usize;
        debug_assert_eq!(self.slots.get(slot), Some(&id), "a membership's slot");
        if self.slots.get(slot) != Some(&id) {
            return Vec::new();
        }
        self.slots[slot] = HOLE;
        self.live -= 1;
        if self.live == 0 {
            // Give the memory back: an empty room keeps no slots.
            self.slots = Vec::new();
            return Vec::new();
        }
        if self.slots.len() - self.live <= self.live {
            return Vec::new();
        }
        let mut moved = Vec::new();
        let mut to = 0;
        for from in 0..self.slots.len() {
            let m = self.slots[from];
            if m == HOLE {
                continue;
            }
            if from != to {
                self.slots[to] = m;
                moved.push((m, to as u32));
            }
            to += 1;
        }
        self.slots.truncate(to);
        moved
    }

    /// Who is at `slot`, if anyone.
    pub fn at(&self, slot: u32) -> Option<ClientId> {
        self.slots
            .get(slot as usize)
            .copied()
            .filter(|&m| m != HOLE)
    }

    /// The members, in join order.
    pub fn iter(&self) -> impl Iterator<Item = &ClientId> {
        self.slots.iter().filter(|&&m| m != HOLE)
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

/// A user's place in a room: the room's key in `Core::rooms` and the user's slot in its
/// [`Members`]. Both `u32`, 8 bytes in all (`--max-total-rooms` keeps keys far below 2³²).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Membership {
    key: u32,
    pub slot: u32,
}

impl Membership {
    pub fn new(key: usize, slot: u32) -> Membership {
        Membership {
            key: key as u32,
            slot,
        }
    }

    pub fn key(self) -> usize {
        self.key as usize
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
                bot: false,
            }),
            text: i.to_string().into(),
            kind: MsgKind::Normal,
        }
    }

    #[test]
    fn members_keep_join_order_and_leave_in_o1_with_moves_reported() {
        let mut m = Members::default();
        let slots: Vec<u32> = (0..6).map(|i| m.push(ClientId(i))).collect();
        assert_eq!(slots, [0, 1, 2, 3, 4, 5]);
        assert!(m.remove(ClientId(1), 1).is_empty());
        assert!(m.remove(ClientId(2), 2).is_empty());
        assert!(m.remove(ClientId(4), 4).is_empty());
        let ids: Vec<usize> = m.iter().map(|c| c.0).collect();
        assert_eq!(ids, [0, 3, 5]);
        assert_eq!(m.len(), 3);
        // A fourth hole outnumbers the members: squeezed out, the members behind move.
        let moved = m.remove(ClientId(0), 0);
        assert_eq!(moved, [(ClientId(3), 0), (ClientId(5), 1)]);
        let ids: Vec<usize> = m.iter().map(|c| c.0).collect();
        assert_eq!(ids, [3, 5]);
        assert_eq!(m.push(ClientId(9)), 2);
        // The moved slots are where the members are now.
        assert!(m.remove(ClientId(5), 1).is_empty());
        assert_eq!(m.iter().map(|c| c.0).collect::<Vec<_>>(), [3, 9]);
        assert_eq!(m.remove(ClientId(3), 0), [(ClientId(9), 0)]);
        assert!(m.remove(ClientId(9), 0).is_empty());
        assert!(m.is_empty());
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

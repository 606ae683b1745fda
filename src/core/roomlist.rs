//! A clustered node's room list (LIST, `/rooms`): its own rooms and the rooms only other
//! nodes have.
//!
//! A node knows the rooms it has members in (with every node's members, `core::remote`). The
//! others are in Redis's index of rooms (`backplane::rooms`): a LIST on a clustered node whose
//! link is up asks for it ([`Note::Rooms`]; the core does not wait, the asker's next lines
//! are held as for a join), and the answer ([`Answer::Rooms`](super::cluster::Answer::Rooms))
//! is merged with the node's own rooms, whose knowledge wins for the rooms it has members
//! in, and paged as always ([`Cursor::cluster_rooms`]). Secret rooms (`+s`) of the answer are
//! not listed (the asker is in none of them: it would be a local member), except to server
//! operators, as locally. With the link down, or no answer from Redis, the node lists its own
//! rooms.
//!
//! NAMES and WHO of a room with no member on the node ask Redis for its members
//! ([`Note::Names`]), listed as the members of a room (paged: [`Cursor::listed`]) when the
//! answer comes; a room nobody has is an empty list (IRC's 366 or 315 alone).

use std::sync::Arc;

use super::cluster::{Note, SharedMembers, SharedRoom};
use super::event::{ClientId, Event, Listing, Member};
use super::names::{check_room, fold};
use super::page::{Cursor, folded_cmp};
use super::{Core, Outbox};

impl Core {
    /// LIST (`/rooms`) by `id`: the node's rooms at once, or, in a cluster with the link
    /// up, the cluster's once Redis answers.
    pub(super) fn list_rooms(&mut self, id: ClientId, out: &mut Outbox) {
        if !(self.cluster && self.link_up) || self.listing.contains_key(&id) {
            out.send(id, Event::Page(Cursor::rooms(id)));
            return;
        }
        let by = self.asking(id);
        out.note(Note::Rooms { by });
    }

    /// Whether `name` may be a room only other nodes have (asked of Redis): one the node
    /// does not hold, or holds with nobody here in it or joining it (the lobby, which is
    /// always held, knows other nodes' members only while it has local ones).
    pub fn room_elsewhere(&self, name: &str) -> bool {
        self.cluster
            && self.link_up
            && check_room(name).is_ok()
            && self
                .room_keys
                .get(&*fold(name))
                .is_none_or(|&k| !self.rooms[k].in_use())
    }

    /// One more answer `id` waits for: its lines are held until it comes.
    fn asking(&mut self, id: ClientId) -> (ClientId, u32) {
        let serial = self.users[&id].serial;
        let entry = self.listing.entry(id).or_insert((serial, 0));
        entry.1 += 1;
        (id, serial)
    }

    /// Whether an answer is for `by` (its user still here, waiting); counts it answered.
    fn answered_to(&mut self, by: (ClientId, u32)) -> bool {
        let (id, serial) = by;
        match self.listing.get_mut(&id) {
            Some((s, n)) if *s == serial => {
                *n -= 1;
                if *n == 0 {
                    self.listing.remove(&id);
                }
                true
            }
            _ => false,
        }
    }

    /// NAMES or WHO by `id` of a room with no member here: asked of Redis.
    pub(super) fn ask_names(
        &mut self,
        id: ClientId,
        room: Arc<str>,
        listing: Listing,
        out: &mut Outbox,
    ) {
        let by = self.asking(id);
        out.note(Note::Names { by, room, listing });
    }

    /// The members of a room only other nodes have, for a NAMES or WHO by `by`: listed
    /// (paged) as a room's members are; nothing but the list's end if there is no such
    /// room (or Redis could not say), and an empty list marked secret for a secret room
    /// (but to a server operator), as locally.
    pub(super) fn names_answered(
        &mut self,
        by: (ClientId, u32),
        room: Arc<str>,
        listing: Listing,
        members: Option<SharedMembers>,
        out: &mut Outbox,
    ) {
        if !self.answered_to(by) {
            return;
        }
        let id = by.0;
        if let Some(&key) = self.room_keys.get(&*fold(&room))
            && !self.rooms[key].members.is_empty()
        {
            // It has members here now: as the node knows it (secret now, and the asker not
            // in it: nobody, whatever Redis said before).
            let room = self.rooms[key].name.clone();
            let cursor = match self.hidden_from(id, key) {
                false => Cursor::members(room, listing),
                true => Cursor::listed(room, listing, Vec::new().into(), true),
            };
            out.send(id, Event::Page(cursor));
            return;
        }
        let shared = members.unwrap_or(SharedMembers {
            name: None,
            members: Vec::new(),
            secret: false,
        });
        let oper = self.users.get(&id).is_some_and(|u| u.oper);
        let name = shared.name.unwrap_or(room);
        let hidden = shared.secret && !oper;
        let mut members: Vec<Member> = if hidden {
            Vec::new()
        } else {
            shared
                .members
                .into_iter()
                .map(|m| Member {
                    source: m.source,
                    away: false,
                    status: m.status,
                    oper: false,
                })
                .collect()
        };
        members.sort_by(|a, b| folded_cmp(&a.source.nick, &b.source.nick));
        members.dedup_by(|a, b| folded_cmp(&a.source.nick, &b.source.nick).is_eq());
        let cursor = Cursor::listed(name, listing, members.into(), shared.secret);
        out.send(id, Event::Page(cursor));
    }

    /// The cluster's rooms for a LIST by `by`, in folded order, listed with the node's own
    /// (those the node has, and secret ones but to server operators, are left out page by
    /// page: `Core::page`).
    pub(super) fn rooms_answered(
        &mut self,
        by: (ClientId, u32),
        rooms: Option<Vec<SharedRoom>>,
        out: &mut Outbox,
    ) {
        if !self.answered_to(by) {
            return;
        }
        let id = by.0;
        let Some(mut rooms) = rooms else {
            out.send(id, Event::Page(Cursor::rooms(id)));
            return;
        };
        rooms.sort_by(|a, b| folded_cmp(&a.name, &b.name));
        rooms.dedup_by(|a, b| folded_cmp(&a.name, &b.name).is_eq());
        // Many askers of one unchanged list share one copy of it (a cursor holds it until its
        // asker has read every page); who may see which room is decided page by page.
        let rooms = match &self.last_rooms {
            Some(last) if **last == *rooms => last.clone(),
            _ => {
                let rooms: Arc<[SharedRoom]> = rooms.into();
                self.last_rooms = Some(rooms.clone());
                rooms
            }
        };
        out.send(id, Event::Page(Cursor::cluster_rooms(id, rooms)));
    }
}

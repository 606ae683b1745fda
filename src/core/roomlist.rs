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

use std::sync::Arc;

use super::cluster::{Note, SharedRoom};
use super::event::{ClientId, Event};
use super::names::fold;
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
        let serial = self.users[&id].serial;
        self.listing.insert(id, serial);
        out.note(Note::Rooms { by: (id, serial) });
    }

    /// The cluster's rooms for a LIST by `by`: those this node has no member in (nor a room
    /// of that name) and the asker may see, in folded order, listed with the node's own.
    pub(super) fn rooms_answered(
        &mut self,
        by: (ClientId, u32),
        rooms: Option<Vec<SharedRoom>>,
        out: &mut Outbox,
    ) {
        let (id, serial) = by;
        if self.listing.get(&id) != Some(&serial) {
            return;
        }
        self.listing.remove(&id);
        let Some(mut rooms) = rooms else {
            out.send(id, Event::Page(Cursor::rooms(id)));
            return;
        };
        let oper = self.users.get(&id).is_some_and(|u| u.oper);
        rooms.retain(|r| (oper || !r.secret) && !self.room_keys.contains_key(&*fold(&r.name)));
        rooms.sort_by(|a, b| folded_cmp(&a.name, &b.name));
        rooms.dedup_by(|a, b| folded_cmp(&a.name, &b.name).is_eq());
        let rooms: Arc<[SharedRoom]> = rooms.into();
        out.send(id, Event::Page(Cursor::cluster_rooms(id, rooms)));
    }
}

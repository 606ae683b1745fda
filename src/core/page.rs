//! Long answers, a page at a time.
//!
//! A room list, a member list or a history replay can be a megabyte of output: 10,000 rooms,
//! a lobby of 10,000 members, a history of long lines. Rendered whole, one such answer sits in
//! the asker's output queue until the asker reads it, and a few hundred sockets that ask and
//! never read make the server hold gigabytes. So the core answers them with a [`Cursor`]
//! ([`Event::Page`](super::Event::Page)) instead, and the driver asks [`Core::page`] for the next
//! page only when the asker's queue has drained: a client holds at most a page or so of any
//! answer, and one that reads still gets every entry.
//!
//! The list may change between pages (rooms created, members leaving or renamed). A cursor
//! remembers the last entry it sent, in case-folded order, and the next page starts after it:
//! no name is sent twice, entries added behind the cursor are not sent, ones added ahead of it
//! are, and the end (IRC's 366/315/323, the line protocol's count) always comes. (A member
//! renamed between pages is listed under the name it has when its page comes: under both, or
//! neither, if the rename crossed the cursor; a list of that moment was never promised. The
//! joiner of a big room is always in its own list.) A history replay stops at
//! the last message said before the join: what was said later arrives live.
//!
//! A page starts where the last one stopped in O(log entries): rooms are kept in a map ordered
//! by folded name, and each room keeps its members in a set ordered by folded nick (beside the
//! join-order list a fan-out iterates). Scanning a 10,000-member room for every page of 64 made
//! 200 clients asking for its WHO cost the loop seconds. Every page after the first costs its
//! asker a flood token.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use super::Core;
use super::cluster::SharedRoom;
use super::event::{ClientId, Event, Listing, Member, RoomSummary};
use super::names::fold;
use super::remote::Remote;
use super::room::ByNick;

/// Members listed by NAMES (or on joining) per page: about 20 bytes each rendered.
const NAMES_PAGE: usize = 256;
/// Members listed by WHO per page: about 100 bytes each rendered.
const WHO_PAGE: usize = 64;
/// Rooms per page: 30 to 350 bytes each rendered.
const ROOMS_PAGE: usize = 64;
/// History replayed per page, in [`HistoryEntry::cost`](super::room::HistoryEntry::cost) bytes
/// (at least one entry, however long).
const HISTORY_PAGE_BYTES: usize = 8 * 1024;

/// Where a page sits in its answer, so that a protocol writes the answer's head (IRC's 321) on
/// the first page only and its end (366, 315, 323, the line protocol's count) on the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub first: bool,
    pub last: bool,
    /// Entries sent by earlier pages.
    pub before: usize,
}

impl Part {
    /// An answer that is all one page.
    pub const WHOLE: Part = Part {
        first: true,
        last: true,
        before: 0,
    };
}

/// What a paged answer lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Paged {
    /// Every room (the line protocol's `/rooms`, IRC's `LIST`); in a cluster, with the rooms
    /// of the cluster as Redis listed them (sorted by folded name: `core::roomlist`), but
    /// those the node has (listed as it knows them) and secret ones (but to server operators).
    Rooms(Option<Arc<[SharedRoom]>>),
    /// A room's members (`/who`, NAMES, WHO, and the names sent on joining).
    Members { room: Arc<str>, listing: Listing },
    /// A room's history, replayed on joining, up to the message with serial `until`.
    History { room: Arc<str>, until: u64 },
    /// The members of a room only other nodes have, as Redis listed them (sorted by folded
    /// nick, at most [`JOIN_MEMBERS_MAX`](super::cluster::JOIN_MEMBERS_MAX)).
    Listed {
        room: Arc<str>,
        listing: Listing,
        members: Arc<[Member]>,
        secret: bool,
    },
}

/// The last entry a cursor sent.
#[derive(Clone, Debug, PartialEq, Eq)]
enum After {
    Start,
    /// A folded room name or nick.
    Name(Box<str>),
    /// A history serial.
    Serial(u64),
}

/// A paged answer in progress. Small (a few words): a client that asks and never reads holds
/// one of these, not the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    of: Paged,
    after: After,
    /// Entries sent so far.
    sent: usize,
    /// Entries to send at most (a joiner of a big room is sent `big_room` names)…
    limit: usize,
    /// …and always itself, in its place, beyond the limit.
    asker: Option<ClientId>,
}

impl Cursor {
    /// Every room `asker` may see (secret rooms only if it is in them).
    pub fn rooms(asker: ClientId) -> Cursor {
        let mut cursor = Cursor::new(Paged::Rooms(None), usize::MAX);
        cursor.asker = Some(asker);
        cursor
    }

    /// Every room `asker` may see, with `elsewhere`: the rooms only other nodes have (sorted
    /// by folded name).
    pub fn cluster_rooms(asker: ClientId, elsewhere: Arc<[SharedRoom]>) -> Cursor {
        let mut cursor = Cursor::new(Paged::Rooms(Some(elsewhere)), usize::MAX);
        cursor.asker = Some(asker);
        cursor
    }

    pub fn members(room: Arc<str>, listing: Listing) -> Cursor {
        Cursor::new(Paged::Members { room, listing }, usize::MAX)
    }

    /// The names sent to `asker` on joining `room`: at most `limit` others, and the joiner.
    pub fn joined(room: Arc<str>, asker: ClientId, limit: usize) -> Cursor {
        let listing = Listing::Join;
        let mut cursor = Cursor::new(Paged::Members { room, listing }, limit);
        cursor.asker = (limit != usize::MAX).then_some(asker);
        cursor
    }

    /// `members` of `room`, a room only other nodes have (`core::roomlist`).
    pub fn listed(
        room: Arc<str>,
        listing: Listing,
        members: Arc<[Member]>,
        secret: bool,
    ) -> Cursor {
        let of = Paged::Listed {
            room,
            listing,
            members,
            secret,
        };
        Cursor::new(of, usize::MAX)
    }

    pub fn history(room: Arc<str>, until: u64) -> Cursor {
        Cursor::new(Paged::History { room, until }, usize::MAX)
    }

    fn new(of: Paged, limit: usize) -> Cursor {
        Cursor {
            of,
            after: After::Start,
            sent: 0,
            limit,
            asker: None,
        }
    }

    pub fn of(&self) -> &Paged {
        &self.of
    }

    /// Whether a page was sent already.
    pub fn started(&self) -> bool {
        self.after != After::Start
    }

    fn part(&self, last: bool) -> Part {
        Part {
            first: self.after == After::Start,
            last,
            before: self.sent,
        }
    }

    fn after_name(&self) -> Option<&str> {
        match &self.after {
            After::Name(name) => Some(name),
            _ => None,
        }
    }
}

/// A member in a listing: a local user, or one on another node.
#[derive(Clone, Copy)]
enum Who<'a> {
    Local(ClientId),
    Remote(&'a Remote),
}

/// Two iterators of (nick, member), each in case-folded nick order, as one.
struct Merge<'a, A: Iterator<Item = (&'a str, Who<'a>)>, B: Iterator<Item = (&'a str, Who<'a>)>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'a, A, B> Iterator for Merge<'a, A, B>
where
    A: Iterator<Item = (&'a str, Who<'a>)>,
    B: Iterator<Item = (&'a str, Who<'a>)>,
{
    type Item = (&'a str, Who<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if folded_cmp(x.0, y.0) == Ordering::Greater => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

/// Two lists of rooms, each in case-folded name order, as one (a name in both: the first's,
/// unless it counts no member).
struct MergeRooms<A: Iterator<Item = RoomSummary>, B: Iterator<Item = RoomSummary>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> Iterator for MergeRooms<A, B>
where
    A: Iterator<Item = RoomSummary>,
    B: Iterator<Item = RoomSummary>,
{
    type Item = RoomSummary;

    fn next(&mut self) -> Option<RoomSummary> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) => match folded_cmp(&x.name, &y.name) {
                Ordering::Greater => self.b.next(),
                // The node's own, but for one nobody here is in (it knows none of its members).
                Ordering::Equal if x.members == 0 => {
                    self.a.next();
                    self.b.next()
                }
                Ordering::Equal => {
                    self.b.next();
                    self.a.next()
                }
                Ordering::Less => self.a.next(),
            },
            (Some(_), None) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

/// Case-folded order (ASCII, as nicks and room names are compared), without folded copies.
pub fn folded_cmp(a: &str, b: &str) -> Ordering {
    let lower = |c: u8| c.to_ascii_lowercase();
    a.bytes().map(lower).cmp(b.bytes().map(lower))
}

impl Core {
    /// Emits the next page of `cursor`'s answer as events; returns whether the answer is
    /// complete (the last page carries its end). A room that is gone ends its listing.
    pub fn page(&self, cursor: &mut Cursor, emit: &mut dyn FnMut(Event)) -> bool {
        match cursor.of.clone() {
            Paged::Rooms(elsewhere) => self.rooms_page(cursor, elsewhere.as_deref(), emit),
            Paged::Members { room, listing } => self.members_page(cursor, room, listing, emit),
            Paged::History { room, until } => self.history_page(cursor, &room, until, emit),
            Paged::Listed {
                room,
                listing,
                members,
                secret,
            } => {
                let size = if listing == Listing::Who {
                    WHO_PAGE
                } else {
                    NAMES_PAGE
                };
                let start = cursor.sent.min(members.len());
                let page: Vec<Member> = members[start..].iter().take(size).cloned().collect();
                let last = start + page.len() >= members.len();
                let part = cursor.part(last);
                if let Some(m) = page.last() {
                    cursor.after = After::Name(fold(&m.source.nick).into());
                }
                cursor.sent += page.len();
                emit(Event::Names {
                    room,
                    members: page,
                    listing,
                    total: members.len(),
                    part,
                    secret,
                });
                last
            }
        }
    }

    /// Every page of `cursor`'s answer at once (tests, and a driver that writes straight into
    /// sockets).
    pub fn all_pages(&self, mut cursor: Cursor) -> Vec<Event> {
        let mut events = Vec::new();
        while !self.page(&mut cursor, &mut |e| events.push(e)) {}
        events
    }

    fn rooms_page(
        &self,
        cursor: &mut Cursor,
        elsewhere: Option<&[SharedRoom]>,
        emit: &mut dyn FnMut(Event),
    ) -> bool {
        let after = match cursor.after_name() {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let next = self.room_keys.range::<str, _>((after, Bound::Unbounded));
        let asker = cursor.asker.and_then(|a| self.users.get(&a));
        let visible =
            |k: usize| !self.rooms[k].modes.secret || asker.is_some_and(|u| u.oper || u.is_in(k));
        let local = next.filter(|(_, k)| visible(**k)).map(|(_, &k)| {
            let r = &self.rooms[k];
            RoomSummary {
                name: r.name.clone(),
                members: r.size(),
                topic: r.topic.as_ref().map(|t| t.text.clone()),
            }
        });
        // The cluster's rooms only other nodes have (none of the node's own at the answer;
        // one the node has since is listed as the node knows it).
        let elsewhere = elsewhere.unwrap_or(&[]);
        let start = cursor.after_name().map_or(0, |a| {
            elsewhere.partition_point(|r| folded_cmp(&r.name, a) != Ordering::Greater)
        });
        let oper = asker.is_some_and(|u| u.oper);
        let remote = elsewhere[start..]
            .iter()
            .filter(|r| {
                // (One the node holds with nobody here in it, such as the lobby: the cluster's.)
                (oper || !r.secret)
                    && self
                        .room_keys
                        .get(&*fold(&r.name))
                        .is_none_or(|&k| !self.rooms[k].in_use())
            })
            .map(|r| RoomSummary {
                name: r.name.clone(),
                members: r.members,
                topic: r.topic.clone(),
            });
        let mut next = MergeRooms {
            a: local.peekable(),
            b: remote.peekable(),
        };
        let rooms: Vec<RoomSummary> = next.by_ref().take(ROOMS_PAGE).collect();
        let more = next.next().is_some();
        let part = cursor.part(!more);
        if let Some(last) = rooms.last() {
            cursor.after = After::Name(fold(&last.name).into());
        }
        cursor.sent += rooms.len();
        emit(Event::RoomList { rooms, part });
        !more
    }

    fn members_page(
        &self,
        cursor: &mut Cursor,
        room: Arc<str>,
        listing: Listing,
        emit: &mut dyn FnMut(Event),
    ) -> bool {
        let Some(&key) = self.room_keys.get(&fold(&room)) else {
            let part = cursor.part(true);
            let (members, total) = (Vec::new(), cursor.sent);
            emit(Event::Names {
                room,
                members,
                listing,
                total,
                part,
                secret: false,
            });
            return true;
        };
        let r = &self.rooms[key];
        let size = if listing == Listing::Who {
            WHO_PAGE
        } else {
            NAMES_PAGE
        };
        let k = size.min(cursor.limit - cursor.sent);
        let nick = |id: ClientId| &*self.users[&id].source.nick;
        let after = cursor
            .after_name()
            .map(|a| ByNick(a.into(), ClientId(usize::MAX)));
        let after = match &after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let asker = cursor.asker;
        let local = r
            .by_nick
            .range((after, Bound::Unbounded))
            .filter(|m| Some(m.1) != asker)
            .map(|m| (&*m.0, Who::Local(m.1)));
        // In a cluster, the members on other nodes, merged in the same (folded) order.
        let after_name = cursor.after_name().map(str::to_string);
        let remote = r
            .remote
            .after(after_name.as_deref())
            .map(|(_, m)| (&*m.source.nick, Who::Remote(m)));
        let mut next = Merge {
            a: local.peekable(),
            b: remote.peekable(),
        };
        let mut ids: Vec<(&str, Who)> = next.by_ref().take(k).collect();
        let more = next.next().is_some();
        let last = !more || cursor.sent + ids.len() >= cursor.limit;
        let part = cursor.part(last);
        cursor.sent += ids.len();
        // The asker of a cut list is listed where it sorts: on this page if it sorts between
        // the cursor and the page's last name; in any case on the last page (where it sorts
        // there, even if a rename put it behind the cursor: it is always in its list).
        let asker = cursor
            .asker
            .filter(|a| self.users.get(a).is_some_and(|u| u.is_in(key)));
        if let Some(asker) = asker {
            let me = nick(asker);
            let past = |bound: &str| folded_cmp(me, bound) == Ordering::Greater;
            let here =
                cursor.after_name().is_none_or(past) && ids.last().is_some_and(|(l, _)| !past(l));
            if here || last {
                ids.push((me, Who::Local(asker)));
                ids.sort_unstable_by(|a, b| folded_cmp(a.0, b.0));
                cursor.asker = None;
            }
        }
        if let Some((nick, _)) = ids.last() {
            cursor.after = After::Name(fold(nick).into());
        }
        let members: Vec<Member> = ids
            .into_iter()
            .map(|(_, who)| match who {
                Who::Local(id) => Member {
                    status: r.modes.status(id),
                    ..self.member(id)
                },
                Who::Remote(m) => Member {
                    source: m.source.clone(),
                    away: false,
                    status: m.status,
                    oper: false,
                },
            })
            .collect();
        emit(Event::Names {
            room: r.name.clone(),
            members,
            listing,
            total: r.size(),
            part,
            secret: r.modes.secret,
        });
        last
    }

    fn history_page(
        &self,
        cursor: &mut Cursor,
        room: &str,
        until: u64,
        emit: &mut dyn FnMut(Event),
    ) -> bool {
        let Some(r) = self.room_keys.get(&fold(room)).map(|&k| &self.rooms[k]) else {
            return true;
        };
        let after = match cursor.after {
            After::Serial(s) => s,
            _ => 0,
        };
        let mut bytes = 0;
        let mut entries = r.history_after(after).take_while(|h| h.serial <= until);
        for h in entries.by_ref() {
            emit(Event::History {
                room: r.name.clone(),
                from: h.from.clone(),
                text: h.text.clone(),
                kind: h.kind,
                at: h.at,
            });
            cursor.after = After::Serial(h.serial);
            cursor.sent += 1;
            bytes += h.cost();
            if bytes >= HISTORY_PAGE_BYTES {
                break;
            }
        }
        entries.next().is_none()
    }
}

//! The chat core: users, rooms, private messages, presence and history, with no I/O at all.
//!
//! A driver tells the core "client X connected", "client X sent command Y at time T" and "client
//! X is gone", and the core appends to an [`Outbox`] what to deliver to whom. It reads no clock
//! and touches no socket, so it is unit-tested without either and shared by every driver (the
//! event loop and the threaded models) and both protocols' sessions.
//!
//! Layout: [`event`] is the vocabulary (commands, events, errors, the outbox), [`names`] the
//! validation rules, [`room`] and [`user`] the two tables' rows, [`cloak`] the hosts others
//! see instead of an address, [`nick_delay`] the nicks held after leaving a big room,
//! [`cluster`] what a core tells and takes from the other nodes of a cluster, and [`remote`]
//! the rooms shared across those nodes (created once, one member list).

pub mod cloak;
pub mod cluster;
pub mod event;
pub mod kline;
pub mod mask;
pub mod modes;
pub mod names;
pub mod nick_delay;
pub mod oper;
pub mod page;
pub mod remote;
pub mod room;
mod roomlist;
pub mod user;
mod usermode;
pub mod watch;
pub mod whowas;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use slab::Slab;

pub use cloak::Cloak;
pub use event::{
    Applied, Ban, ClientId, ClientTags, Command, Cursor, Error, Event, Listing, Member, Millis,
    Mode, ModeChange, MsgId, MsgKind, Outbox, Part, RoomSummary, Source, Stats, Status, Target,
    WhoisInfo,
};
use names::{check_nick, check_room, check_text, fold, label};
use nick_delay::NickDelay;
use room::{ByNick, HistoryEntry, Membership, Room};
use user::User;

/// Operator password checks the whole server makes per second at most (about 10 ms each).
pub const PASSWORD_CHECKS_PER_SECOND: u32 = 5;

/// The room every line-protocol client starts in; it exists even when empty.
pub const LOBBY: &str = "#lobby";

/// Limits the core enforces itself.
#[derive(Clone, Copy, Debug)]
pub struct CoreLimits {
    /// Messages remembered per room.
    pub history: usize,
    /// Bytes of history one room keeps at most (oldest dropped first).
    pub room_history_bytes: usize,
    /// Bytes of history all rooms together keep at most: past it the oldest message of the
    /// whole server is dropped first, whatever its room.
    pub history_bytes: usize,
    /// Rooms the server holds at most (the lobby included); creating one more is refused.
    pub max_total_rooms: usize,
    /// Rooms one user may be in at once; bounds what one client can make the server keep.
    pub max_rooms: usize,
    /// Rooms with more members than this are "big": joins, parts, quits and nick changes in
    /// them are not announced to every member, and a joiner is sent at most this many names.
    /// Announcing each arrival to N members costs O(N) per join, O(N²) for a room filling up
    /// (and a reconnecting bot could make a big room pay it over and over).
    pub big_room: usize,
    /// How long the nick of a user who quit or changed nick while in a big room stays
    /// unclaimable by anyone else (0 = not at all): those rooms were not told it left, so a
    /// newcomer taking it at once would pass for its owner (see [`nick_delay`]).
    pub nick_delay: Millis,
}

impl CoreLimits {
    /// `history` messages a room, `max_rooms` rooms a user, big rooms over `big_room`, and no
    /// byte or room-count budget: what the unit tests start from.
    pub fn counts(history: usize, max_rooms: usize, big_room: usize) -> CoreLimits {
        CoreLimits {
            history,
            max_rooms,
            big_room,
            room_history_bytes: usize::MAX,
            history_bytes: usize::MAX,
            max_total_rooms: usize::MAX,
            nick_delay: 0,
        }
    }
}

/// The user name of every line-protocol user (what server bans match them by).
pub const LINE_USER: &str = "line";

/// All chat state of one server.
#[derive(Debug)]
pub struct Core {
    limits: CoreLimits,
    users: HashMap<ClientId, User>,
    /// Folded nick → its owner: nicks are unique case-insensitively.
    nicks: HashMap<String, ClientId>,
    /// Folded nicks nobody may take (services', the server's, `--reserved-nick`'s), so no user
    /// can pose as what the server is not or as the server itself.
    reserved: HashSet<String>,
    rooms: Slab<Room>,
    /// Folded room name → key in `rooms`, in order: a paged room list resumes where it
    /// stopped in O(log rooms).
    room_keys: BTreeMap<String, usize>,
    /// Number for the next guest nick.
    next_guest: u64,
    /// User name and real name of every line-protocol user, shared rather than allocated for
    /// each (memory per idle client matters on small hosts).
    line_user: Arc<str>,
    line_realname: Arc<str>,
    /// History held by all rooms together, in `HistoryEntry::cost` bytes.
    history_bytes: usize,
    /// Each room's oldest remembered message as (serial, room key): the first is the oldest of
    /// the server, dropped when `history_bytes` passes its budget. O(log rooms) per message.
    oldest: BTreeSet<(u64, usize)>,
    /// Who left lately (`WHOWAS`).
    gone: whowas::Gone,
    /// Serial of the last remembered message (0: none yet); the next gets one more.
    next_serial: u64,
    /// [`MsgId`] of the last message, private and tag-only ones included (0: none yet).
    last_msgid: MsgId,
    /// Turns a peer's address into the host every other user sees.
    cloak: Cloak,
    /// Nicks recently left in big rooms, unclaimable until their delay ends.
    delayed: NickDelay,
    /// `User::serial` of the next user: tells the owner of a held nick from a later user that
    /// got the same (reused) `ClientId`.
    next_user: u32,
    /// The most users there have been at once (IRC's LUSERS 265/266 "max").
    peak_users: usize,
    /// Operator password checks in the current second, and which second (see
    /// [`Core::may_check_password`]).
    password_checks: (u32, Millis),
    /// Server operators' names and password hashes (replaced on SIGHUP).
    operators: Vec<oper::Oper>,
    /// Folded nick → the users watching it (`core::watch`).
    watchers: HashMap<String, Vec<ClientId>>,
    /// Server bans (K-lines).
    server_bans: kline::ServerBans,
    /// How many users are invisible (`+i`) and how many are server operators (LUSERS).
    invisible: usize,
    opers: usize,
    /// Part of a cluster: tell the backplane about rooms and messages ([`cluster::Note`]).
    cluster: bool,
    /// In a cluster: this node's number (unique in the cluster, from Redis at start), which
    /// makes its guest nicks (`guest{number}-{n}`) its own without asking Redis for each.
    node_number: Option<u64>,
    /// In a cluster: the nick each local user asked for and the cluster has not answered yet
    /// (with the user's serial); at most one per user.
    claims: HashMap<ClientId, (u32, Arc<str>)>,
    /// In a cluster: whether Redis is reachable (nick changes are refused while it is not).
    link_up: bool,
    /// In a cluster: IRC clients whose registration waits for the claim of their nick.
    registering: HashMap<ClientId, Registering>,
    /// In a cluster: the number of the last history asked of the cluster
    /// ([`cluster::Note::History`]).
    next_ask: u64,
    /// In a cluster: joins asked of the cluster and not answered yet, per user (at most
    /// `max_rooms` each: see `core::remote`).
    joining: HashMap<ClientId, Vec<remote::Joining>>,
    /// In a cluster: invitations of local users into invitation-only rooms by operators of
    /// other nodes, with the user's serial and the folded room (at most
    /// [`remote::INVITES_MAX`] a user, the oldest forgotten first).
    invites: HashMap<ClientId, Vec<(u32, Arc<str>)>>,
    /// In a cluster: room lists and member lists asked of the cluster and not answered yet
    /// (the user's serial, and how many): see `core::roomlist`.
    listing: HashMap<ClientId, (u32, usize)>,
    /// In a cluster: the last room list Redis answered, shared by the cursors of the askers
    /// that got the same one.
    last_rooms: Option<Arc<[cluster::SharedRoom]>>,
    /// The members of other nodes its rooms know, counted across them (at most
    /// [`remote::REMOTE_MEMBERS_TOTAL`]).
    remote_tally: Arc<remote::RemoteTally>,
}

/// An IRC registration waiting for the cluster's answer to the claim of its nick: what
/// registering takes once it is won.
#[derive(Debug)]
struct Registering {
    claim: cluster::NickClaim,
    user: Arc<str>,
    realname: Arc<str>,
    ip: IpAddr,
}

/// What [`Core::register`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The client is registered.
    Done,
    /// In a cluster: the nick is being claimed; an [`Event::Registration`] tells the client
    /// how it ended.
    Pending,
}

impl Core {
    /// A core with only the (permanent, empty) lobby, created at `now`, refusing the
    /// [`names::SERVICE_NICKS`] as nicks, cloaking hosts with a random key (see
    /// [`Core::set_cloak`]).
    pub fn new(limits: CoreLimits, now: Millis) -> Core {
        let mut rooms = Slab::new();
        let remote_tally = remote::RemoteTally::new(remote::REMOTE_MEMBERS_TOTAL);
        let mut lobby = Room::new(LOBBY, limits.history, limits.room_history_bytes, now);
        lobby.remote = remote::RemoteMembers::new(remote_tally.clone());
        // Nobody operates the lobby (see `modes`), so its topic stays open to everyone.
        lobby.modes.topic_ops = false;
        let lobby = rooms.insert(lobby);
        Core {
            limits,
            users: HashMap::new(),
            nicks: HashMap::new(),
            reserved: names::SERVICE_NICKS.iter().map(|n| fold(n)).collect(),
            rooms,
            room_keys: BTreeMap::from([(LOBBY.to_string(), lobby)]),
            next_guest: 1,
            line_user: LINE_USER.into(),
            line_realname: "line protocol user".into(),
            history_bytes: 0,
            oldest: BTreeSet::new(),
            next_serial: 0,
            last_msgid: 0,
            gone: whowas::Gone::default(),
            cloak: Cloak::random(64),
            delayed: NickDelay::default(),
            next_user: 0,
            peak_users: 0,
            password_checks: (0, 0),
            server_bans: kline::ServerBans::default(),
            watchers: HashMap::new(),
            operators: Vec::new(),
            invisible: 0,
            opers: 0,
            cluster: false,
            node_number: None,
            claims: HashMap::new(),
            link_up: true,
            registering: HashMap::new(),
            next_ask: 0,
            joining: HashMap::new(),
            invites: HashMap::new(),
            listing: HashMap::new(),
            last_rooms: None,
            remote_tally,
        }
    }

    /// Makes this core a node of a cluster: from now on it adds [`cluster::Note`]s to the
    /// outbox (the drivers set it before anyone connects).
    pub fn set_cluster(&mut self, on: bool) {
        self.cluster = on;
    }

    /// Gives this node its cluster-wide number: from now on guests are named
    /// `guest{number}-{n}`, which no other node hands out and nobody may take by hand, so guest
    /// nicks need no claim in Redis.
    ///
    /// Its message ids start at `number << 40` too, so a room message keeps the id its
    /// sender's node gave it on every node (IRC's `msgid`), unique in the cluster.
    pub fn set_node_number(&mut self, number: u64) {
        self.node_number = Some(number);
        self.last_msgid = self.last_msgid.max(number << 40);
    }

    /// What the backplane answers, later: a claim decided, or a private message nobody
    /// received.
    pub fn answer(&mut self, answer: cluster::Answer, now: Millis, out: &mut Outbox) {
        match answer {
            cluster::Answer::Claim(claim) => self.claimed(claim, now, out),
            cluster::Answer::Undelivered { by, to } => self.undelivered(by, &to, out),
            cluster::Answer::History { room, ask, entries } => {
                self.shared_history(&room, ask, entries, out)
            }
            cluster::Answer::NickLost(claim) => self.nick_lost(claim, now, out),
            cluster::Answer::Join { request, answer } => self.joined(request, answer, now, out),
            cluster::Answer::Whois { by, nick, node } => self.whois_answered(by, &nick, node, out),
            cluster::Answer::Rooms { by, rooms } => self.rooms_answered(by, rooms, out),
            cluster::Answer::Names {
                by,
                room,
                listing,
                members,
            } => self.names_answered(by, room, listing, members, out),
            cluster::Answer::Synced { room, members } => self.resynced(&room, members, out),
            cluster::Answer::Resync => self.sync_rooms(out),
        }
    }

    /// The cluster's answer to the history asked when room `folded` got its first local member:
    /// it becomes the room's history, before what was said here since (its members saw that
    /// live), within the history budgets, and is replayed to every local member through the
    /// paged replay. An answer for an ask that is not the room's current one is dropped.
    pub fn shared_history(
        &mut self,
        folded: &str,
        ask: u64,
        entries: Vec<cluster::HistoryItem>,
        out: &mut Outbox,
    ) {
        let Some(&key) = self.room_keys.get(folded) else {
            return;
        };
        if self.rooms[key].history_ask != Some(ask) {
            return;
        }
        self.rooms[key].history_ask = None;
        let mut since = Vec::new();
        self.with_history(key, |room| since = room.take_history());
        let mut until = 0;
        for item in entries {
            self.next_serial += 1;
            until = self.next_serial;
            let entry = HistoryEntry {
                serial: self.next_serial,
                at: item.at,
                from: item.from,
                text: item.text,
                kind: item.kind,
            };
            self.with_history(key, |room| room.remember(entry));
        }
        for mut entry in since {
            self.next_serial += 1;
            entry.serial = self.next_serial;
            self.with_history(key, |room| room.remember(entry));
        }
        self.trim_history();
        let room = &self.rooms[key];
        if room.oldest().is_some_and(|oldest| oldest <= until) {
            let cursor = Cursor::history(room.name.clone(), until);
            out.send_many(room.members.iter().copied(), Event::Page(cursor));
        }
    }

    /// After Redis came back, the cluster holds `claim.nick` for someone else (taken on another
    /// node while this one could not defend it, or freed by a node that took this one for
    /// dead, then taken): its user becomes a guest of this node, which its rooms see as a nick
    /// change, and is told why. Nothing happens if the user left or changed nick since.
    pub fn nick_lost(&mut self, claim: cluster::NickClaim, now: Millis, out: &mut Outbox) {
        let id = claim.client;
        let holds = self
            .users
            .get(&id)
            .is_some_and(|u| u.serial == claim.serial && fold(&u.source.nick) == fold(&claim.nick));
        if !holds {
            return;
        }
        let guest = self.next_guest_nick(now);
        self.rename(id, &guest, now, out);
        out.send(
            id,
            Event::NickLost {
                nick: claim.nick,
                guest: guest.into(),
            },
        );
    }

    /// In a cluster: tells the backplane `id`'s whole state ([`cluster::Note::Present`]) after
    /// it registered, changed nick or rooms.
    fn note_present(&self, id: ClientId, out: &mut Outbox) {
        let Some(user) = self.users.get(&id).filter(|_| self.cluster) else {
            return;
        };
        out.note(cluster::Note::Present(cluster::LocalUser {
            client: id,
            serial: user.serial,
            source: user.source.clone(),
            rooms: user
                .room_keys()
                .map(|k| fold(&self.rooms[k].name).into())
                .collect(),
        }));
    }

    /// A private message of local user `by` (client, serial) to `to`, a nick no local user
    /// holds, reached no node: nobody holds it. Told as a local message to nobody is.
    pub fn undelivered(&mut self, by: (ClientId, u32), to: &str, out: &mut Outbox) {
        if self.users.get(&by.0).is_some_and(|u| u.serial == by.1) {
            let e = Error::NoSuchNick(names::clip(to, names::NICK_MAX + 8));
            out.send(by.0, Event::Error(e));
        }
    }

    /// The cluster's answer to a nick claim ([`cluster::Note::Claim`]): the change is made and
    /// told (and the old nick released), or refused with the error a local refusal gives.
    /// An answer for a user who left or asked for something else since is not told; a won
    /// claim nobody wants any more is released.
    pub fn claimed(&mut self, answer: cluster::ClaimAnswer, now: Millis, out: &mut Outbox) {
        use cluster::{Note, Outcome};
        let claim = answer.claim;
        if self
            .registering
            .get(&claim.client)
            .is_some_and(|r| r.claim == claim)
        {
            return self.registration_claimed(claim.client, answer.outcome, now, out);
        }
        let current = self
            .claims
            .get(&claim.client)
            .is_some_and(|(serial, nick)| *serial == claim.serial && *nick == claim.nick);
        if !current {
            if answer.outcome == Outcome::Won {
                out.note(Note::Release(claim));
            }
            return;
        }
        self.claims.remove(&claim.client);
        let id = claim.client;
        let result = match answer.outcome {
            Outcome::Won => self
                .check_new_nick(Some(id), &claim.nick, now)
                .map(|()| self.rename(id, &claim.nick, now, out))
                .inspect_err(|_| out.note(Note::Release(claim.clone()))),
            Outcome::Taken => Err(Error::NickInUse(claim.nick.to_string())),
            Outcome::Failed => Err(Error::ClusterDown(claim.nick.to_string())),
        };
        if let Err(e) = result {
            out.send(id, Event::Error(e));
        }
    }

    /// The answer to a registration's claim (see [`Core::claimed`]).
    fn registration_claimed(
        &mut self,
        id: ClientId,
        outcome: cluster::Outcome,
        now: Millis,
        out: &mut Outbox,
    ) {
        use cluster::{Note, Outcome};
        let Some(r) = self.registering.remove(&id) else {
            return;
        };
        let nick = &r.claim.nick;
        let result = match outcome {
            // (Checked again: the nick may have been reserved, or held by the nick delay,
            // meanwhile.)
            Outcome::Won => self.check_new_nick(None, nick, now).map(|()| {
                let serial = r.claim.serial;
                self.insert_user(id, nick, r.user, r.ip, r.realname, serial, now, out);
            }),
            Outcome::Taken => Err(Error::NickInUse(nick.to_string())),
            Outcome::Failed => Err(Error::ClusterDown(nick.to_string())),
        };
        if result.is_err() && outcome == Outcome::Won {
            out.note(Note::Release(r.claim));
        }
        out.send(id, Event::Registration(result.err()));
    }

    /// The claim of `id`'s current nick, to release (`None` for a guest nick: never claimed).
    fn own_claim(&self, id: ClientId) -> Option<cluster::NickClaim> {
        let user = self.users.get(&id)?;
        (!cluster::is_cluster_guest(&fold(&user.source.nick))).then(|| cluster::NickClaim {
            client: id,
            serial: user.serial,
            nick: user.source.nick.clone(),
        })
    }

    /// What another node published: its local members are told as they are of what happens
    /// here. Joins, parts, quits and nick changes are not told in big rooms (more than
    /// `big_room` local members), as local ones are not. A quit or a nick change is told once to
    /// each local user sharing one of its rooms.
    pub fn remote(&mut self, shared: cluster::Shared, now: Millis, out: &mut Outbox) {
        use cluster::Shared;
        // The rooms' lists of members on other nodes follow first (see `core::remote`).
        self.follow_remote(&shared, now, out);
        match shared {
            Shared::Message(msg) => self.remote_message(msg, now, out),
            Shared::TagMsg {
                room,
                from,
                tags,
                msgid,
            } => {
                let Some(&key) = self.room_keys.get(&fold(&room)) else {
                    return;
                };
                let id = match msgid {
                    0 => self.next_msgid(),
                    id => id,
                };
                let room = &self.rooms[key];
                let event = Event::TagMsg {
                    from,
                    to: room.name.clone(),
                    tags,
                    id,
                };
                out.send_many(room.members.iter().copied(), event);
            }
            Shared::Joined { room, who } => {
                if let Some(key) = self.announced_room(&room) {
                    let room = self.rooms[key].name.clone();
                    let members = self.rooms[key].members.iter().copied();
                    out.send_many(members, Event::Joined { room, who });
                }
            }
            Shared::Parted { room, who, reason } => {
                if let Some(key) = self.announced_room(&room) {
                    let room = self.rooms[key].name.clone();
                    let members = self.rooms[key].members.iter().copied();
                    out.send_many(members, Event::Parted { room, who, reason });
                }
            }
            Shared::Quit { rooms, who, reason } => {
                // A nick is one user's in the cluster: a quit of a nick a local user holds is
                // of that user, whose node was taken for dead while it stalled ("node lost",
                // from the node that cleaned up after it). It is still here.
                if self.nicks.contains_key(&fold(&who.nick)) {
                    return;
                }
                let to = self.announced_members(&rooms);
                out.send_many(to, Event::Quit { who, reason });
            }
            Shared::NickChanged { rooms, old, new } => {
                let to = self.announced_members(&rooms);
                out.send_many(to, Event::NickChanged { old, new });
            }
            Shared::Private(msg) => {
                // (No "is away" answer goes back across nodes yet.)
                let Some(&target) = self.nicks.get(&fold(&msg.to)) else {
                    return;
                };
                let user = &self.users[&target];
                if user.ignores(&msg.from) {
                    return;
                }
                let event = Event::Private {
                    to: user.source.nick.clone(),
                    from: msg.from,
                    text: msg.text,
                    kind: msg.kind,
                    tags: msg.tags,
                    id: match msg.msgid {
                        0 => self.next_msgid(),
                        id => id,
                    },
                };
                out.send(target, event);
            }
            // Told by `follow_remote`.
            Shared::Topic { .. } | Shared::Modes { .. } | Shared::Kicked { .. } => {}
            Shared::Kill { .. } | Shared::Invite { .. } => {}
        }
    }

    /// The local members of the rooms named who are told presence in them, each once.
    fn announced_members(&self, rooms: &[Arc<str>]) -> Vec<ClientId> {
        let mut to: Vec<ClientId> = rooms
            .iter()
            .filter_map(|r| self.announced_room(r))
            .flat_map(|key| self.rooms[key].members.iter().copied())
            .collect();
        to.sort_unstable();
        to.dedup();
        to
    }

    /// Tells every user that the link to the other nodes went down (`up: false`) or came back.
    pub fn tell_cluster_link(&mut self, up: bool, out: &mut Outbox) {
        self.link_up = up;
        out.send_many(self.users.keys().copied(), Event::ClusterLink { up });
        if up && self.cluster {
            // What changed meanwhile (or all of it, if Redis restarted empty).
            self.sync_rooms(out);
        }
    }

    /// The key of local room `name` if it has local members and is not big (presence is told
    /// in it).
    fn announced_room(&self, name: &str) -> Option<usize> {
        let &key = self.room_keys.get(&fold(name))?;
        let room = &self.rooms[key];
        (!room.members.is_empty() && room.size() <= self.limits.big_room).then_some(key)
    }

    /// A room message said on another node: its local members get it like a local one (and
    /// it is remembered in the room's history, as a local one is). Nothing happens if no local
    /// user is in that room (the node unsubscribed; the message crossed that on its way).
    pub fn remote_message(&mut self, msg: cluster::RoomMessage, now: Millis, out: &mut Outbox) {
        let Some(&key) = self.room_keys.get(&fold(&msg.room)) else {
            return;
        };
        if self.rooms[key].members.is_empty() {
            return;
        }
        if msg.kind != MsgKind::Notice {
            self.next_serial += 1;
            let entry = HistoryEntry {
                serial: self.next_serial,
                at: now,
                from: msg.from.clone(),
                text: msg.text.clone(),
                kind: msg.kind,
            };
            self.with_history(key, |room| room.remember(entry));
            self.trim_history();
        }
        // The sender's node's id, the same on every node (one a node that sent none).
        let id = match msg.msgid {
            0 => self.next_msgid(),
            id => id,
        };
        let room = &self.rooms[key];
        let event = Event::Message {
            room: room.name.clone(),
            from: msg.from,
            text: msg.text,
            kind: msg.kind,
            tags: msg.tags,
            id,
        };
        out.send_many(room.members.iter().copied(), event);
    }

    /// Cloaks the hosts of users who connect from now on with `cloak` (the drivers set the
    /// server's before anyone connects).
    pub fn set_cloak(&mut self, cloak: Cloak) {
        self.cloak = cloak;
    }

    /// Refuses `nick` to every user from now on (compared case-insensitively), as it refuses
    /// the service names: the server's own name and the operator's `--reserved-nick` names. A
    /// user already holding it keeps it (the drivers reserve before anyone connects).
    pub fn reserve_nick(&mut self, nick: &str) {
        self.reserved.insert(fold(nick));
    }

    /// Whether `nick` may be taken by `id` (`None`: someone not yet registered) at `now`: well
    /// formed, not reserved, free or already `id`'s, and not held for someone else by the nick
    /// delay.
    pub fn check_new_nick(
        &self,
        id: Option<ClientId>,
        nick: &str,
        now: Millis,
    ) -> Result<(), Error> {
        check_nick(nick)?;
        let key = fold(nick);
        if self.reserved.contains(&key) || (self.cluster && cluster::is_cluster_guest(&key)) {
            return Err(Error::ReservedNick(nick.to_string()));
        }
        match self.nicks.get(&key) {
            Some(&owner) if Some(owner) != id => Err(Error::NickInUse(nick.to_string())),
            Some(_) => Ok(()),
            None => match self.delayed.get(&key, now) {
                Some(hold)
                    if hold.owner.is_none()
                        || hold.owner
                            != id.and_then(|id| self.users.get(&id)).map(|u| u.serial) =>
                {
                    Err(Error::NickDelayed {
                        nick: nick.to_string(),
                        secs: (hold.until - now).div_ceil(1000),
                    })
                }
                _ => Ok(()),
            },
        }
    }

    /// Registers a new client under the next free guest nick (`guest1`, `guest2`, …), in no
    /// room yet, and returns the nick. `ip` is the peer's address: others are shown its cloak.
    pub fn connect(&mut self, id: ClientId, ip: IpAddr, now: Millis, out: &mut Outbox) -> Arc<str> {
        let nick = self.next_guest_nick(now);
        let (user, realname) = (self.line_user.clone(), self.line_realname.clone());
        let serial = self.take_serial();
        self.insert_user(id, &nick, user, ip, realname, serial, now, out);
        nick.into()
    }

    /// The next free guest nick (`guest{n}`, or `guest{node number}-{n}` in a cluster).
    fn next_guest_nick(&mut self, now: Millis) -> String {
        loop {
            let candidate = match self.node_number {
                Some(node) => format!("guest{node}-{}", self.next_guest),
                None => format!("guest{}", self.next_guest),
            };
            self.next_guest += 1;
            // (A guest nick is reserved only if the operator asked for it, and held only if
            // someone took it by hand before it came up.)
            if !self.nicks.contains_key(&candidate)
                && !self.reserved.contains(&candidate)
                && self.delayed.get(&candidate, now).is_none()
            {
                break candidate;
            }
        }
    }

    /// Registers a client that chose its own nick (IRC's NICK + USER). Fails, changing nothing,
    /// if the nick is invalid, reserved or taken. In a cluster, a nick that passes here is
    /// claimed first ([`Registration::Pending`]): the client is told the outcome later by an
    /// [`Event::Registration`] (and is registered then if the claim was won).
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        id: ClientId,
        nick: &str,
        user: &str,
        realname: &str,
        ip: IpAddr,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<Registration, Error> {
        self.check_new_nick(None, nick, now)?;
        let (user, realname): (Arc<str>, Arc<str>) = (user.into(), label(realname).into());
        if self.cluster {
            if self.registering.contains_key(&id) {
                return Err(Error::NickPending(nick.to_string()));
            }
            if !self.link_up {
                return Err(Error::ClusterDown(nick.to_string()));
            }
            let claim = cluster::NickClaim {
                client: id,
                serial: self.take_serial(),
                nick: nick.into(),
            };
            let asked = Registering {
                claim: claim.clone(),
                user,
                realname,
                ip,
            };
            self.registering.insert(id, asked);
            out.note(cluster::Note::Claim(claim));
            return Ok(Registration::Pending);
        }
        let serial = self.take_serial();
        self.insert_user(id, nick, user, ip, realname, serial, now, out);
        Ok(Registration::Done)
    }

    /// The `User::serial` of the next user.
    fn take_serial(&mut self) -> u32 {
        let serial = self.next_user;
        self.next_user = self.next_user.wrapping_add(1);
        serial
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_user(
        &mut self,
        id: ClientId,
        nick: &str,
        user: Arc<str>,
        ip: IpAddr,
        realname: Arc<str>,
        serial: u32,
        now: Millis,
        out: &mut Outbox,
    ) {
        self.nicks.insert(fold(nick), id);
        let source = Arc::new(Source {
            nick: nick.into(),
            user,
            host: self.cloak.host(ip).into(),
            realname,
            bot: false,
        });
        let user = User {
            source,
            rooms: Vec::new(),
            current: None,
            away: None,
            connected_at: now,
            last_active: now,
            ip,
            serial,
            oper: false,
            secure: false,
            invisible: false,
            wallops: false,
            lists: None,
        };
        self.announce_online(&user.source, out);
        if self.cluster {
            out.note(cluster::Note::SubscribeUser(fold(nick).into()));
        }
        self.users.insert(id, user);
        self.note_present(id, out);
        self.peak_users = self.peak_users.max(self.users.len());
    }

    /// Marks a registered client as connected over TLS: WHOIS tells others so. The session
    /// calls it right after registering, when its connection is secure.
    pub fn set_secure(&mut self, id: ClientId) {
        if let Some(user) = self.users.get_mut(&id) {
            user.secure = true;
        }
    }

    /// Removes a client at `now`, telling everyone who shared a room with it why it left. If
    /// it was in a big room, its nick is held for nobody for `nick_delay`.
    pub fn disconnect(&mut self, id: ClientId, reason: &str, now: Millis, out: &mut Outbox) {
        let neighbours = self.neighbours(id);
        self.delay_nick(id, None, now);
        if self.cluster {
            let claims = self.own_claim(id).into_iter();
            let pending = self
                .claims
                .remove(&id)
                .map(|(serial, nick)| cluster::NickClaim {
                    client: id,
                    serial,
                    nick,
                });
            let registering = self.registering.remove(&id).map(|r| r.claim);
            claims
                .chain(pending)
                .chain(registering)
                .for_each(|c| out.note(cluster::Note::Release(c)));
            self.forget_joins(id, out);
            self.listing.remove(&id);
            self.invites.remove(&id);
        }
        let Some(user) = self.users.remove(&id) else {
            return;
        };
        self.nicks.remove(&fold(&user.source.nick));
        self.invisible -= usize::from(user.invisible);
        self.opers -= usize::from(user.oper);
        self.announce_offline(&user.source.nick, out);
        if self.cluster {
            let folded = fold(&user.source.nick).into();
            out.note(cluster::Note::UnsubscribeUser(folded));
            out.note(cluster::Note::Absent(id));
        }
        if self.cluster && !user.rooms.is_empty() {
            let rooms = user.room_keys().map(|k| self.rooms[k].name.clone());
            out.note(cluster::Note::Publish(cluster::Shared::Quit {
                rooms: rooms.collect(),
                who: user.source.clone(),
                reason: label(reason).into(),
            }));
        }
        self.forget_watches(id, user.lists.map(|l| l.watching));
        self.gone.push(user.source.clone(), now);
        for &membership in &user.rooms {
            self.leave(id, &user.source.nick, membership, out);
        }
        let event = Event::Quit {
            who: user.source,
            reason: label(reason).into(),
        };
        out.send_many(neighbours.into_iter().filter(|&n| n != id), event);
    }

    /// Carries out one command. Errors go to the asker as [`Event::Error`] and change nothing.
    pub fn handle(&mut self, id: ClientId, command: Command, now: Millis, out: &mut Outbox) {
        if !self.users.contains_key(&id) {
            return;
        }
        if let Err(e) = self.apply(id, command, now, out) {
            out.send(id, Event::Error(e));
        }
    }

    /// Gives back the memory of tables that were bigger than they are now (the loop calls it
    /// when quiet: a crowd that came and went leaves them at their largest otherwise), and
    /// forgets the nick holds expired at `now`; whether holds are left, to be forgotten later.
    pub fn shrink_to_fit(&mut self, now: Millis) -> bool {
        self.users.shrink_to_fit();
        self.nicks.shrink_to_fit();
        self.rooms.shrink_to_fit();
        for (_, room) in &mut self.rooms {
            room.members.shrink_to_fit();
        }
        self.gone.shrink_to_fit();
        self.delayed.shrink(now)
    }

    /// Replaces the server operators (at start, and when SIGHUP re-reads `--oper-file`).
    /// Those already operators stay so.
    pub fn set_opers(&mut self, opers: Vec<oper::Oper>) {
        self.operators = opers;
    }

    /// Whether `name` and `password` are a server operator's, if the server-wide rate of
    /// password checks allows one now (see [`Core::may_check_password`]); `false` otherwise.
    pub fn check_oper(&mut self, name: &str, password: &str, now: Millis) -> bool {
        self.may_check_password(now) && oper::check(&self.operators, name, password)
    }

    /// Whether an operator password may be checked at `now`: at most
    /// [`PASSWORD_CHECKS_PER_SECOND`] a second for the whole server. A check costs milliseconds
    /// of the loop's time on purpose, so without a server-wide cap a few hundred clients taking
    /// turns at OPER would keep a core busy; past it, OPER is refused at once (a hostile client
    /// can then make a real operator wait a second, not stall everyone).
    pub fn may_check_password(&mut self, now: Millis) -> bool {
        let second = now / 1000;
        if self.password_checks.1 != second {
            self.password_checks = (0, second);
        }
        if self.password_checks.0 >= PASSWORD_CHECKS_PER_SECOND {
            return false;
        }
        self.password_checks.0 += 1;
        true
    }

    pub fn nick(&self, id: ClientId) -> Option<&Arc<str>> {
        self.users.get(&id).map(|u| &u.source.nick)
    }

    /// Who a user is as others see it (its cloaked host included).
    pub fn source(&self, id: ClientId) -> Option<&Arc<Source>> {
        self.users.get(&id).map(|u| &u.source)
    }

    /// Whether a room of that name (compared case-insensitively) exists.
    pub fn room_exists(&self, name: &str) -> bool {
        self.room_keys.contains_key(&fold(name))
    }

    /// Whether a nick (compared case-insensitively) belongs to someone.
    pub fn nick_in_use(&self, nick: &str) -> bool {
        self.nicks.contains_key(&fold(nick))
    }

    /// How many rooms a user is in (0 for one the core does not know).
    pub fn rooms_of(&self, id: ClientId) -> usize {
        self.users.get(&id).map_or(0, |u| u.rooms.len())
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The most users there have been at once since the server started.
    pub fn peak_users(&self) -> usize {
        self.peak_users
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    fn apply(
        &mut self,
        id: ClientId,
        command: Command,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        match command {
            Command::Say {
                room,
                text,
                kind,
                echo,
                tags,
            } => self.say(id, room, text, kind, (echo, tags), now, out),
            Command::Private {
                to,
                text,
                kind,
                echo,
                tags,
            } => self.private(id, &to, text, kind, (echo, tags), now, out),
            Command::TagMsg { to, tags, echo } => self.tag_msg(id, to, tags, echo, out),
            Command::Nick(nick) => self.change_nick(id, &nick, now, out),
            Command::Join(room) => self.join(id, &room, None, now, out),
            Command::JoinWithKey { room, key } => self.join(id, &room, Some(&key), now, out),
            Command::Mode { room, changes } => {
                self.change_modes(id, room.as_deref(), changes, now, out)
            }
            Command::Bans(room) => self.ban_list(id, room.as_deref(), out),
            Command::Kick { room, nick, reason } => {
                self.kick(id, room.as_deref(), &nick, reason, out)
            }
            Command::Invite { nick, room } => self.invite(id, &nick, room.as_deref(), out),
            Command::Whowas { nick, count } => {
                self.whowas(id, &nick, count, out);
                Ok(())
            }
            Command::MakeOper => {
                let user = self.users.get_mut(&id).expect("asker is a user");
                if !user.oper {
                    self.opers += 1;
                }
                user.oper = true;
                let nick = user.source.nick.clone();
                // Who holds authority, and what they do with it, is the operator's audit trail
                // (the log facade only: the core does no I/O of its own).
                log::info!("{nick} ({}) is now a server operator", user.ip);
                out.send(id, Event::YouAreOper { nick });
                Ok(())
            }
            Command::Kill { nick, reason } => {
                if !self.users[&id].oper {
                    return Err(Error::NotServerOperator);
                }
                let by = self.users[&id].source.clone();
                let reason = label(reason.as_deref().unwrap_or("no reason given"));
                let target = match self.find_nick(&nick) {
                    // In a cluster, a nick no local user holds may be another node's: the kill
                    // goes to its channel (nobody received it: "no such nick", later).
                    Err(Error::NoSuchNick(_))
                        if self.cluster && self.link_up && check_nick(&nick).is_ok() =>
                    {
                        log::info!("{} killed {nick} (on another node): {reason}", by.nick);
                        out.note(cluster::Note::Kill {
                            by: (id, self.users[&id].serial),
                            nick: nick.as_str().into(),
                            from: by,
                            reason: reason.into(),
                        });
                        return Ok(());
                    }
                    found => found?,
                };
                log::info!(
                    "{} killed {}: {reason}",
                    by.nick,
                    self.users[&target].source.nick
                );
                out.send(
                    target,
                    Event::Killed {
                        by,
                        reason: reason.into(),
                    },
                );
                Ok(())
            }
            Command::UserMode(changes) => self.user_mode(id, changes, out),
            Command::Wallops(text) => {
                let from = self.users[&id].source.clone();
                if !self.users[&id].oper {
                    return Err(Error::NotServerOperator);
                }
                check_text(&text)?;
                // Operators only, and rare: one fan-out to the users who asked for them.
                let to: Vec<ClientId> = self
                    .users
                    .iter()
                    .filter(|&(&c, u)| u.wallops || c == id)
                    .map(|(&c, _)| c)
                    .collect();
                let text = label(&text).into();
                out.send_many(to, Event::Wallops { from, text });
                Ok(())
            }
            Command::Silence(change) => self.silence(id, change, out),
            Command::ServerBan {
                mask,
                minutes,
                reason,
            } => self.server_ban(id, &mask, minutes, reason, now, out),
            Command::ServerUnban(mask) => {
                self.need_oper(id)?;
                let folded = kline::server_mask(&mask).unwrap_or_else(|| fold(&mask));
                if !self.server_bans.remove(&folded, now) {
                    return Err(Error::NoSuchServerBan(label(&mask)));
                }
                log::info!(
                    "{} lifted the server ban on {folded}",
                    self.users[&id].source.nick
                );
                out.send(
                    id,
                    Event::ServerBanLifted {
                        mask: folded.into(),
                    },
                );
                Ok(())
            }
            Command::Watch(watch) => self.watch(id, watch, out),
            Command::ServerBans => {
                self.need_oper(id)?;
                let bans = self.server_bans.list(now).to_vec();
                out.send(id, Event::ServerBanList { bans });
                Ok(())
            }
            Command::Part { room, reason } => {
                let key = self.target_room(id, room.as_deref(), true)?;
                self.part(id, key, reason, out);
                Ok(())
            }
            Command::PartAll => {
                let keys: Vec<usize> = self.users[&id].room_keys().collect();
                for key in keys {
                    self.part(id, key, None, out);
                }
                Ok(())
            }
            Command::Rooms => {
                self.list_rooms(id, out);
                Ok(())
            }
            Command::Who {
                target: Some(nick),
                listing,
            } if !nick.starts_with('#') => {
                let (name, members) = match self.find_nick(&nick) {
                    Ok(target) => (
                        self.users[&target].source.nick.clone(),
                        vec![self.member(target)],
                    ),
                    Err(e) => {
                        // A user of another node this node shares a room with.
                        let info = self.remote_whois(id, &nick).ok_or(e)?;
                        let member = Member {
                            source: info.source.clone(),
                            away: false,
                            status: Status::default(),
                            oper: false,
                        };
                        (info.source.nick.clone(), vec![member])
                    }
                };
                out.send(
                    id,
                    Event::Names {
                        room: name,
                        members,
                        listing,
                        total: 1,
                        part: Part::WHOLE,
                        secret: false,
                    },
                );
                Ok(())
            }
            Command::Who { target, listing } => {
                // A room only other nodes have (or the lobby with nobody here): asked of Redis.
                if let Some(room) = target.as_deref().filter(|t| self.room_elsewhere(t)) {
                    self.ask_names(id, room.into(), listing, out);
                    return Ok(());
                }
                let key = self.target_room(id, target.as_deref(), false)?;
                let room = self.rooms[key].name.clone();
                if self.hidden_from(id, key) {
                    // A secret room's members are its own business: an empty list.
                    let (members, total, part) = (Vec::new(), 0, Part::WHOLE);
                    let names = Event::Names {
                        room,
                        members,
                        listing,
                        total,
                        part,
                        secret: true,
                    };
                    out.send(id, names);
                    return Ok(());
                }
                out.send(id, Event::Page(Cursor::members(room, listing)));
                Ok(())
            }
            Command::Lookup { nicks, listing } => {
                let members = nicks
                    .iter()
                    .filter_map(|n| self.nicks.get(&fold(n)))
                    .map(|&c| self.member(c))
                    .collect();
                out.send(id, Event::Found { members, listing });
                Ok(())
            }
            Command::Topic { room, text } => self.topic(id, room, text, now, out),
            Command::Away(message) => {
                let user = self.user_mut(id);
                user.away = message.map(|m| label(&m).into());
                let away = user.away.is_some();
                out.send(id, Event::AwayIs { away });
                Ok(())
            }
            Command::Whois(nick) => {
                let target = match self.find_nick(&nick) {
                    Ok(target) => target,
                    Err(e) => {
                        if let Some(info) = self.remote_whois(id, &nick) {
                            out.send(id, Event::Whois(info));
                        } else if self.may_be_elsewhere(&nick) {
                            // Whether anyone holds it, and on which node: asked of Redis.
                            let by = (id, self.users[&id].serial);
                            let nick = nick.as_str().into();
                            out.note(cluster::Note::Whois { by, nick });
                        } else {
                            return Err(e);
                        }
                        return Ok(());
                    }
                };
                let user = &self.users[&target];
                let info = WhoisInfo {
                    source: user.source.clone(),
                    // A secret room (+s) is shown only to those in it (and server operators).
                    rooms: user
                        .room_keys()
                        .filter(|&k| !self.hidden_from(id, k))
                        // With the user's standing there, as IRC's 319 shows it (`@#den`).
                        .map(|k| {
                            let room = &self.rooms[k];
                            match room.modes.status(target).prefixes().get(..1) {
                                Some(p) if !p.is_empty() => format!("{p}{}", room.name).into(),
                                _ => room.name.clone(),
                            }
                        })
                        .collect(),
                    away: user.away.clone(),
                    idle_secs: now.saturating_sub(user.last_active) / 1000,
                    connected_at: user.connected_at,
                    // Only the user itself and server operators are shown where it connects
                    // from.
                    address: (target == id || self.users[&id].oper).then_some(user.ip),
                    oper: user.oper,
                    secure: user.secure,
                    node: None,
                };
                out.send(id, Event::Whois(info));
                Ok(())
            }
            Command::RoomInfo(name) => {
                let key = self.target_room(id, name.as_deref(), false)?;
                if self.hidden_from(id, key) {
                    return Err(Error::NotInRoom(self.rooms[key].name.to_string()));
                }
                let room = &self.rooms[key];
                // The key is for members' eyes.
                let member = self.users[&id].is_in(key);
                out.send(
                    id,
                    Event::RoomInfo {
                        room: room.name.clone(),
                        created_at: room.created_at,
                        modes: room.modes.describe(member).into(),
                    },
                );
                Ok(())
            }
            Command::Stats => {
                out.send(id, Event::Stats(self.stats()));
                Ok(())
            }
        }
    }

    /// The next [`MsgId`].
    fn next_msgid(&mut self) -> MsgId {
        self.last_msgid += 1;
        self.last_msgid
    }

    /// A room message. `(echo, tags)`: whether the sender gets a copy, and its client tags.
    #[allow(clippy::too_many_arguments)]
    fn say(
        &mut self,
        id: ClientId,
        room: Option<String>,
        text: String,
        kind: MsgKind,
        (echo, tags): (bool, ClientTags),
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        check_text(&text)?;
        let key = self.target_room(id, room.as_deref(), false)?;
        self.may_speak(id, key)?;
        let user = self.user_mut(id);
        user.last_active = now;
        let from = user.source.clone();
        let text: Arc<str> = text.into();
        // The history keeps the text, never the tags: up to 4 KiB of them per message would
        // multiply what a room holds and replays, and a replay is not the live message.
        if kind != MsgKind::Notice {
            self.next_serial += 1;
            let entry = HistoryEntry {
                serial: self.next_serial,
                at: now,
                from: from.clone(),
                text: text.clone(),
                kind,
            };
            self.with_history(key, |room| room.remember(entry));
            self.trim_history();
        }
        let msgid = self.next_msgid();
        let room = &self.rooms[key];
        if self.cluster {
            out.note(cluster::Note::Publish(cluster::Shared::Message(
                cluster::RoomMessage {
                    room: room.name.clone(),
                    from: from.clone(),
                    text: text.clone(),
                    kind,
                    tags: tags.clone(),
                    msgid,
                },
            )));
        }
        let event = Event::Message {
            room: room.name.clone(),
            from,
            text,
            kind,
            tags,
            id: msgid,
        };
        out.send_many(
            room.members.iter().copied().filter(|&m| echo || m != id),
            event,
        );
        Ok(())
    }

    /// A private message; `(echo, tags)` as for [`Core::say`].
    #[allow(clippy::too_many_arguments)]
    fn private(
        &mut self,
        id: ClientId,
        to: &str,
        text: String,
        kind: MsgKind,
        (echo, tags): (bool, ClientTags),
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        check_text(&text)?;
        let target = match self.find_nick(to) {
            // In a cluster, a nick held on no local user may be another node's: published to
            // its channel (if no node receives it, the sender is told later).
            Err(Error::NoSuchNick(_)) if self.cluster && self.link_up && check_nick(to).is_ok() => {
                self.tell(id, to, text, kind, (echo, tags), now, out);
                return Ok(());
            }
            found => found?,
        };
        let user = self.user_mut(id);
        user.last_active = now;
        let from = user.source.clone();
        let target_user = &self.users[&target];
        // A notice never triggers an automatic reply, not even "is away".
        if let Some(message) = target_user
            .away
            .as_ref()
            .filter(|_| kind != MsgKind::Notice)
        {
            let nick = target_user.source.nick.clone();
            out.send(
                id,
                Event::TargetAway {
                    nick,
                    message: message.clone(),
                },
            );
        }
        let ignored = target_user.ignores(&from);
        let event = Event::Private {
            from,
            to: target_user.source.nick.clone(),
            text: text.into(),
            kind,
            tags,
            id: self.next_msgid(),
        };
        // An ignored sender is not told: its message seems delivered (echo included).
        let to = (!ignored).then_some(target);
        let also_sender = (echo && target != id).then_some(id);
        out.send_many(to.into_iter().chain(also_sender), event);
        Ok(())
    }

    /// A private message to a nick no local user holds, in a cluster: echoed to the sender if
    /// it asked, and left for the backplane to publish to that nick's channel.
    #[allow(clippy::too_many_arguments)]
    fn tell(
        &mut self,
        id: ClientId,
        to: &str,
        text: String,
        kind: MsgKind,
        (echo, tags): (bool, ClientTags),
        now: Millis,
        out: &mut Outbox,
    ) {
        let user = self.user_mut(id);
        user.last_active = now;
        let (from, serial) = (user.source.clone(), user.serial);
        let msg = cluster::PrivateMessage {
            to: to.into(),
            from: from.clone(),
            text: text.into(),
            kind,
            tags: tags.clone(),
            msgid: self.next_msgid(),
        };
        if echo {
            let event = Event::Private {
                from,
                to: msg.to.clone(),
                text: msg.text.clone(),
                kind,
                tags,
                id: msg.msgid,
            };
            out.send(id, event);
        }
        out.note(cluster::Note::Tell {
            by: (id, serial),
            msg,
        });
    }

    /// A message of tags only, to whom a message to `to` would go, under the same rules (a
    /// room's `+n`, `+m` and bans, a target's ignore list). Not remembered, not an activity (WHOIS idle time: a typing
    /// notification is not a message), and no "is away" reply (that answers messages).
    fn tag_msg(
        &mut self,
        id: ClientId,
        to: Target,
        tags: ClientTags,
        echo: bool,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        let from = self.users[&id].source.clone();
        match to {
            Target::Room(room) => {
                let key = self.target_room(id, Some(&room), false)?;
                self.may_speak(id, key)?;
                let msgid = self.next_msgid();
                let room = &self.rooms[key];
                if self.cluster {
                    out.note(cluster::Note::Publish(cluster::Shared::TagMsg {
                        room: room.name.clone(),
                        from: from.clone(),
                        tags: tags.clone(),
                        msgid,
                    }));
                }
                let event = Event::TagMsg {
                    from,
                    to: room.name.clone(),
                    tags,
                    id: msgid,
                };
                let members = room.members.iter().copied();
                out.send_many(members.filter(|&m| echo || m != id), event);
            }
            Target::Nick(nick) => {
                let target = self.find_nick(&nick)?;
                let ignored = self.users[&target].ignores(&from);
                let event = Event::TagMsg {
                    from,
                    to: self.users[&target].source.nick.clone(),
                    tags,
                    id: self.next_msgid(),
                };
                // As for a private message: an ignoring target gets nothing, unbeknown to the
                // sender.
                let to = (!ignored).then_some(target);
                let also_sender = (echo && target != id).then_some(id);
                out.send_many(to.into_iter().chain(also_sender), event);
            }
        }
        Ok(())
    }

    fn change_nick(
        &mut self,
        id: ClientId,
        nick: &str,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        self.check_new_nick(Some(id), nick, now)?;
        let old = self.users[&id].source.clone();
        if *old.nick == *nick {
            return Ok(());
        }
        // In a cluster, a new nick (not a change of case) is the cluster's to give: asked for
        // here, made in `claimed` once Redis has answered.
        if self.cluster && fold(&old.nick) != fold(nick) {
            if !self.link_up {
                return Err(Error::ClusterDown(nick.to_string()));
            }
            if self.claims.contains_key(&id) {
                return Err(Error::NickPending(nick.to_string()));
            }
            let serial = self.users[&id].serial;
            self.claims.insert(id, (serial, nick.into()));
            out.note(cluster::Note::Claim(cluster::NickClaim {
                client: id,
                serial,
                nick: nick.into(),
            }));
            return Ok(());
        }
        self.rename(id, nick, now, out);
        Ok(())
    }

    /// Makes `nick` (checked, and in a cluster claimed) `id`'s and tells who must know; in a
    /// cluster, releases the old nick.
    fn rename(&mut self, id: ClientId, nick: &str, now: Millis, out: &mut Outbox) {
        let key = fold(nick);
        let old = self.users[&id].source.clone();
        if self.cluster
            && fold(&old.nick) != key
            && let Some(claim) = self.own_claim(id)
        {
            out.note(cluster::Note::Release(claim));
        }
        let serial = self.users[&id].serial;
        self.delay_nick(id, Some(serial), now);
        // Its own held nick taken back: nobody else is waiting for it.
        self.delayed.release(&key);
        self.nicks.remove(&fold(&old.nick));
        if self.cluster && fold(&old.nick) != key {
            out.note(cluster::Note::UnsubscribeUser(fold(&old.nick).into()));
            out.note(cluster::Note::SubscribeUser(key.as_str().into()));
        }
        self.nicks.insert(key, id);
        let new: Arc<str> = nick.into();
        self.gone.push(old.clone(), now);
        self.user_mut(id).source = Arc::new(Source {
            nick: new.clone(),
            ..(*old).clone()
        });
        for key in self.users[&id].room_keys() {
            let index = &mut self.rooms[key].by_nick;
            index.remove(&ByNick(old.nick.clone(), id));
            index.insert(ByNick(new.clone(), id));
        }
        if self.cluster && fold(&old.nick) != fold(nick) {
            let source = self.users[&id].source.clone();
            for key in self.users[&id].room_keys() {
                out.note(cluster::Note::Member {
                    room: fold(&self.rooms[key].name).into(),
                    drop: Some(fold(&old.nick).into()),
                    set: Some((source.clone(), self.status_in(key, id))),
                });
            }
        }
        let mut to = self.neighbours(id);
        if !to.contains(&id) {
            to.push(id);
        }
        // A change of case is the same nick to its watchers.
        if fold(&old.nick) != fold(nick) {
            self.announce_offline(&old.nick, out);
            let source = self.users[&id].source.clone();
            self.announce_online(&source, out);
        }
        if self.cluster && !self.users[&id].rooms.is_empty() {
            let rooms = self.users[&id]
                .room_keys()
                .map(|k| self.rooms[k].name.clone());
            out.note(cluster::Note::Publish(cluster::Shared::NickChanged {
                rooms: rooms.collect(),
                old: old.clone(),
                new: new.clone(),
            }));
        }
        self.note_present(id, out);
        out.send_many(to, Event::NickChanged { old, new });
    }

    fn join(
        &mut self,
        id: ClientId,
        name: &str,
        given_key: Option<&str>,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        check_room(name)?;
        let folded = fold(name);
        if let Some(&key) = self.room_keys.get(&folded)
            && self.users[&id].is_in(key)
        {
            self.user_mut(id).current = Some(key as u32);
            let room = Some(self.rooms[key].name.clone());
            out.send(id, Event::CurrentRoom { room });
            return Ok(());
        }
        if self.cluster && self.is_joining(id, &folded) {
            return Ok(()); // asked already: the answer will tell
        }
        if self.users[&id].rooms.len() + self.joins_pending(id) >= self.limits.max_rooms {
            return Err(Error::TooManyRooms {
                room: name.to_string(),
                max: self.limits.max_rooms,
            });
        }
        let existing = self.room_keys.get(&folded).copied();
        let lobby = folded == LOBBY;
        // In a cluster, a room with no local member is the cluster's to create (or not): the
        // join is asked of it (`core::remote`). The lobby's too while the link is up (it has
        // no operator, but its joiner is told its members once Redis has said who they are);
        // with the link down, it is joined at once: it is always joinable.
        if self.cluster
            && (!lobby || self.link_up)
            && existing.is_none_or(|k| self.rooms[k].members.is_empty())
        {
            return self.ask_join(id, name, existing, given_key, now, out);
        }
        let key = match existing {
            Some(key) => {
                self.may_join(id, key, given_key)?;
                key
            }
            None => {
                let key = self.new_room(name, now)?;
                self.crown(key, id);
                key
            }
        };
        let first = self.rooms[key].members.is_empty();
        if self.cluster && !(lobby && first) {
            self.share_member(id, key, out);
        }
        self.finish_join(id, key, now, out);
        if self.cluster && lobby && first {
            // (The link is down.) Who else is in it is learned from the answer, if the link
            // comes back before the note leaves (asked once subscribed).
            out.note(cluster::Note::Join(cluster::JoinRequest {
                client: id,
                serial: self.users[&id].serial,
                room: self.rooms[key].name.clone(),
                who: self.users[&id].source.clone(),
                at: now,
                wait: false,
            }));
        }
        Ok(())
    }

    /// A new room called `name`, with no member yet (its key), if the server may hold one more.
    fn new_room(&mut self, name: &str, now: Millis) -> Result<usize, Error> {
        if self.rooms.len() >= self.limits.max_total_rooms {
            return Err(Error::ServerRoomsFull {
                room: name.to_string(),
                max: self.limits.max_total_rooms,
            });
        }
        let limits = &self.limits;
        let mut room = Room::new(name, limits.history, limits.room_history_bytes, now);
        room.remote = remote::RemoteMembers::new(self.remote_tally.clone());
        let key = self.rooms.insert(room);
        self.room_keys.insert(fold(name), key);
        Ok(key)
    }

    /// Room `key` comes into use on this node (its first local member, or the first join of it
    /// asked of the cluster): receive what other nodes say in it, and ask for its shared
    /// history. What this node kept of it, if anything, missed what was said while it had no
    /// member here: the cluster's is replayed when it comes (to the members by then, or to a
    /// joiner whose join completes after it, with the room's history as usual).
    pub(super) fn subscribe_room(&mut self, key: usize, out: &mut Outbox) {
        let folded: Arc<str> = fold(&self.rooms[key].name).into();
        out.note(cluster::Note::Subscribe(folded.clone()));
        if self.link_up && self.limits.history > 0 {
            self.with_history(key, |room| drop(room.take_history()));
            self.next_ask += 1;
            self.rooms[key].history_ask = Some(self.next_ask);
            let ask = self.next_ask;
            out.note(cluster::Note::History { room: folded, ask });
        }
    }

    /// Makes `id` a member of room `key` (its modes allowed it, and in a cluster the cluster
    /// answered) and tells who must know: the members, the joiner (topic, names, history) and
    /// the other nodes. Every join ends here, at once or when the cluster answers (`_now`:
    /// for what a completed join may have to ask, such as a room's shared history).
    fn finish_join(&mut self, id: ClientId, key: usize, _now: Millis, out: &mut Outbox) {
        let slot = self.rooms[key].members.push(id);
        if self.cluster && self.rooms[key].members.len() == 1 && self.rooms[key].pending == 0 {
            self.subscribe_room(key, out);
        }
        let nick = self.users[&id].source.nick.clone();
        self.rooms[key].by_nick.insert(ByNick(nick, id));
        let user = self
            .users
            .get_mut(&id)
            .expect("caller checked the user exists");
        user.rooms.push(Membership::new(key, slot));
        user.current = Some(key as u32);
        let who = user.source.clone();
        self.note_present(id, out);
        let room = &mut self.rooms[key];
        let name = room.name.clone();
        let joined = Event::Joined {
            room: name.clone(),
            who,
        };
        if self.cluster {
            let (room, who) = (name.clone(), self.users[&id].source.clone());
            out.note(cluster::Note::Publish(cluster::Shared::Joined {
                room,
                who,
            }));
        }
        if room.size() > self.limits.big_room {
            out.send(id, joined);
        } else {
            out.send_many(room.members.iter().copied(), joined);
        }
        if let Some(topic) = &room.topic {
            out.send(
                id,
                Event::TopicIs {
                    room: name.clone(),
                    topic: Some(topic.clone()),
                },
            );
        }
        // A joiner of a big room is sent `big_room` names (itself and others): a page or so,
        // not the whole room.
        let shown = if room.size() > self.limits.big_room {
            self.limits.big_room.saturating_sub(1)
        } else {
            usize::MAX
        };
        out.send(id, Event::Page(Cursor::joined(name.clone(), id, shown)));
        if room.oldest().is_some() && room.history_ask.is_none() {
            // Up to the last message said before the join: later ones arrive live.
            out.send(id, Event::Page(Cursor::history(name, self.next_serial)));
        }
    }

    fn part(&mut self, id: ClientId, key: usize, reason: Option<String>, out: &mut Outbox) {
        let room = &mut self.rooms[key];
        let event = Event::Parted {
            room: room.name.clone(),
            who: self.users[&id].source.clone(),
            reason: reason.map(|r| label(&r).into()),
        };
        if self.cluster
            && let Event::Parted { room, who, reason } = &event
        {
            out.note(cluster::Note::Publish(cluster::Shared::Parted {
                room: room.clone(),
                who: who.clone(),
                reason: reason.clone(),
            }));
        }
        if room.size() > self.limits.big_room {
            out.send(id, event);
        } else {
            out.send_many(room.members.iter().copied(), event);
        }
        self.remove_from(id, key, out);
    }

    /// Takes `id` out of the room `key` (a part or a kick, already announced) and moves its
    /// current room if that was it.
    fn remove_from(&mut self, id: ClientId, key: usize, out: &mut Outbox) {
        let user = self.user_mut(id);
        let Some(at) = user.rooms.iter().position(|m| m.key() == key) else {
            return;
        };
        let membership = user.rooms.remove(at);
        let nick = user.source.nick.clone();
        self.leave(id, &nick, membership, out);
        self.note_present(id, out);
        let user = self.user_mut(id);
        if user.current == Some(key as u32) {
            user.current = user.rooms.last().map(|m| m.key() as u32);
            let room = user.current.map(|k| self.rooms[k as usize].name.clone());
            out.send(id, Event::CurrentRoom { room });
        }
    }

    fn topic(
        &mut self,
        id: ClientId,
        room: Option<String>,
        text: Option<String>,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        let Some(text) = text else {
            let key = self.target_room(id, room.as_deref(), false)?;
            if self.hidden_from(id, key) {
                return Err(Error::NotInRoom(self.rooms[key].name.to_string()));
            }
            let room = &self.rooms[key];
            let event = Event::TopicIs {
                room: room.name.clone(),
                topic: room.topic.clone(),
            };
            out.send(id, event);
            return Ok(());
        };
        let key = self.target_room(id, room.as_deref(), true)?;
        let oper = self.users[&id].oper;
        if self.rooms[key].modes.topic_ops && !self.status_in(key, id).op && !oper {
            return Err(Error::NotOperator(self.rooms[key].name.to_string()));
        }
        let by = self.users[&id].source.clone();
        let room = &mut self.rooms[key];
        let text: Option<Arc<str>> = Some(label(&text).into()).filter(|t: &Arc<str>| !t.is_empty());
        room.topic = text.clone().map(|text| event::Topic {
            text,
            by: by.nick.clone(),
            at: now,
        });
        let event = Event::TopicChanged {
            room: room.name.clone(),
            by: by.clone(),
            topic: text,
        };
        out.send_many(room.members.iter().copied(), event);
        if self.cluster {
            self.share_topic(key, &by, now, out);
        }
        Ok(())
    }

    /// The room a command is about: the named one, or the current one. `member`: the asker must
    /// be in it.
    fn target_room(&self, id: ClientId, name: Option<&str>, member: bool) -> Result<usize, Error> {
        let user = &self.users[&id];
        let key = match name {
            None => user.current.ok_or(Error::NoCurrentRoom)? as usize,
            Some(name) => {
                check_room(name)?;
                *self
                    .room_keys
                    .get(&fold(name))
                    .ok_or_else(|| Error::NoSuchRoom(name.to_string()))?
            }
        };
        if member && !user.is_in(key) {
            return Err(Error::NotInRoom(self.rooms[key].name.to_string()));
        }
        Ok(key)
    }

    fn find_nick(&self, nick: &str) -> Result<ClientId, Error> {
        self.nicks
            .get(&fold(nick))
            .copied()
            .ok_or_else(|| Error::NoSuchNick(names::clip(nick, names::NICK_MAX + 8)))
    }

    fn member(&self, id: ClientId) -> Member {
        let u = &self.users[&id];
        Member {
            source: u.source.clone(),
            away: u.away.is_some(),
            status: Status::default(),
            oper: u.oper,
        }
    }

    /// Holds `id`'s current nick for `owner` (`None`: nobody) until `nick_delay` after `now`, if
    /// it is in a big room: those rooms are not told it leaves the nick, so nobody else may
    /// take it at once and pass for it there.
    fn delay_nick(&mut self, id: ClientId, owner: Option<u32>, now: Millis) {
        let Some(user) = self.users.get(&id) else {
            return;
        };
        let big = self.limits.big_room;
        if self.limits.nick_delay == 0
            || !user.room_keys().any(|k| self.rooms[k].members.len() > big)
        {
            return;
        }
        let until = now.saturating_add(self.limits.nick_delay);
        self.delayed
            .hold(&fold(&user.source.nick), owner, until, now);
    }

    /// Everyone who shares at least one room with `id` (possibly `id` itself), each once; big
    /// rooms do not count (their members are not told of presence changes).
    fn neighbours(&self, id: ClientId) -> Vec<ClientId> {
        let Some(user) = self.users.get(&id) else {
            return Vec::new();
        };
        let mut all: Vec<ClientId> = user
            .room_keys()
            .filter(|&k| self.rooms[k].size() <= self.limits.big_room)
            .flat_map(|k| self.rooms[k].members.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Takes `id` out of a room's members (its user has already let go of `membership`, or is
    /// gone), moves the memberships of members whose slots changed, and drops the room if it
    /// is now empty.
    fn leave(&mut self, id: ClientId, nick: &Arc<str>, membership: Membership, out: &mut Outbox) {
        let key = membership.key();
        self.rooms[key].by_nick.remove(&ByNick(nick.clone(), id));
        self.rooms[key].modes.forget(id);
        for (moved, slot) in self.rooms[key].members.remove(id, membership.slot) {
            if let Some(m) = self
                .users
                .get_mut(&moved)
                .and_then(|u| u.rooms.iter_mut().find(|m| m.key() == key))
            {
                m.slot = slot;
            }
        }
        if self.cluster {
            // This node's entry in the shared member list (the last one out deletes the
            // room's shared state).
            out.note(cluster::Note::Member {
                room: fold(&self.rooms[key].name).into(),
                drop: Some(fold(nick).into()),
                set: None,
            });
        }
        if self.rooms[key].members.is_empty() {
            self.let_go(key, out);
        }
    }

    fn drop_if_empty(&mut self, key: usize) {
        let room = &self.rooms[key];
        if !room.in_use() && !room.name.eq_ignore_ascii_case(LOBBY) {
            self.room_keys.remove(&fold(&room.name));
            if let Some(serial) = room.oldest() {
                self.oldest.remove(&(serial, key));
            }
            self.history_bytes -= room.history_bytes();
            self.rooms.remove(key);
        }
    }

    /// Changes room `key`'s history with `change`, keeping the server-wide count and the
    /// oldest-first index in step.
    fn with_history(&mut self, key: usize, change: impl FnOnce(&mut Room)) {
        let room = &mut self.rooms[key];
        let (before, bytes) = (room.oldest(), room.history_bytes());
        change(room);
        let after = room.oldest();
        self.history_bytes = self.history_bytes - bytes + room.history_bytes();
        if before != after {
            if let Some(serial) = before {
                self.oldest.remove(&(serial, key));
            }
            if let Some(serial) = after {
                self.oldest.insert((serial, key));
            }
        }
    }

    /// Drops the server's oldest messages, whatever their rooms, while all history together is
    /// over `--history-bytes`.
    fn trim_history(&mut self) {
        while self.history_bytes > self.limits.history_bytes {
            let Some(&(_, key)) = self.oldest.first() else {
                break;
            };
            self.with_history(key, |room| {
                room.forget_oldest();
            });
        }
    }

    /// History held by all rooms together, in bytes as the budgets count them.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    fn user_mut(&mut self, id: ClientId) -> &mut User {
        self.users
            .get_mut(&id)
            .expect("caller checked the user exists")
    }
}

#[cfg(test)]
mod tests;

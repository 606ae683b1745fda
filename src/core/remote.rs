//! Rooms that are one room across the nodes of a cluster: created once, with one member list.
//!
//! On a clustered core, a join to a room with no local member is asked of the cluster
//! ([`Note::Join`]): Redis adds the joiner to the room's shared member list and creates the
//! room if nobody anywhere is in it, atomically, so of two first joiners on two nodes exactly
//! one is its operator. The core does not wait: it keeps the join as asked (the driver holds
//! the client's next lines meanwhile: [`Core::holds_input`]) and completes it when the answer
//! comes ([`Core::joined`]), learning the room's topic, modes, bans and the members of the
//! other nodes. Joins to a room that has local members proceed at once. The lobby's first
//! join on a node waits too, so that its NAMES lists the whole cluster, but crowns nobody (it
//! has no operator); while the link is down it is joined at once (it is always joinable).
//!
//! For each room with local members a node keeps its members on other nodes
//! ([`RemoteMembers`]), from the join answer and then from the joins, parts, kicks, quits and
//! nick changes other nodes publish, so listings (NAMES, WHO, LIST, `/who`, `/rooms`) show
//! the whole cluster's members. Topics, modes (operator and voice of members of any node),
//! kicks of members of other nodes, invitations and KILLs cross nodes as [`Shared`] messages;
//! the topic, modes and bans are kept in Redis too, for later joiners ([`Note::RoomState`]).
//!
//! Memory: a remote member costs its room one map entry (its folded nick, a `Source` pointer
//! and a status: about 80 bytes with the map's own share and the folded nick's allocation),
//! plus its `Source` (nick, user, host and real name: about 250 bytes for usual lengths, at
//! most about 600; shared by the rooms that learned of it from one message, such as a join,
//! and one per room when learned from join answers). A room keeps at most
//! [`JOIN_MEMBERS_MAX`] of them, and a node at most [`REMOTE_MEMBERS_TOTAL`] across its rooms
//! (counted exactly by [`RemoteTally`], shared by its rooms' [`RemoteMembers`]).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::cluster::{JOIN_MEMBERS_MAX, JoinAnswer, JoinRequest, Note, RoomState, Shared};
use super::event::{Applied, Ban, ClientId, Error, Event, Millis, Source, Topic, WhoisInfo};
use super::modes::Status;
use super::names::{fold, label};
use super::{Core, Outbox};

/// A member of a room on another node, as its room keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    pub source: Arc<Source>,
    pub status: Status,
}

/// Members of other nodes a node keeps at most across all its rooms (each room at most
/// [`JOIN_MEMBERS_MAX`] besides): about 170 MB at their usual 330 bytes. Past it, more are not
/// listed (logged once, and again after the count fell back below three quarters of it).
pub const REMOTE_MEMBERS_TOTAL: usize = 512 * 1024;

/// The count of a node's members of other nodes across its rooms, shared by their
/// [`RemoteMembers`], which keep it exact on every insert and removal (and when a room goes).
#[derive(Debug)]
pub struct RemoteTally {
    count: AtomicUsize,
    max: usize,
    /// The bound was met and logged (until the count falls below three quarters of it).
    warned: AtomicBool,
}

impl RemoteTally {
    /// A tally allowing `max` members in all.
    pub fn new(max: usize) -> Arc<RemoteTally> {
        Arc::new(RemoteTally {
            count: AtomicUsize::new(0),
            max,
            warned: AtomicBool::new(false),
        })
    }

    /// Members of other nodes counted now, across the rooms sharing this tally.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// One more, if the bound allows it (logged the first time it does not).
    fn take(&self) -> bool {
        if self.count() >= self.max {
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "this node knows {} members of other nodes across its rooms, the most it \
                     keeps: more are not listed",
                    self.max
                );
            }
            return false;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn give_back(&self, n: usize) {
        let now = self.count.fetch_sub(n, Ordering::Relaxed) - n;
        if now < self.max / 4 * 3 {
            self.warned.store(false, Ordering::Relaxed);
        }
    }
}

/// A room's members on other nodes, by folded nick (the order listings page in, so that they
/// merge with the local members' index).
#[derive(Debug)]
pub struct RemoteMembers {
    by_nick: BTreeMap<Box<str>, Remote>,
    /// Shared by the node's rooms ([`REMOTE_MEMBERS_TOTAL`]).
    tally: Arc<RemoteTally>,
    /// Folded nicks of members who left while a local join waited for its answer: that
    /// answer may list them still (Redis took its snapshot before they left), and must not
    /// bring them back. Emptied when no join waits any more; at most [`JOIN_MEMBERS_MAX`].
    departed: Vec<Box<str>>,
}

impl Default for RemoteMembers {
    /// Members counted on their own (a room of a core counts with the core's other rooms:
    /// [`RemoteMembers::new`]).
    fn default() -> RemoteMembers {
        RemoteMembers::new(RemoteTally::new(REMOTE_MEMBERS_TOTAL))
    }
}

impl Drop for RemoteMembers {
    fn drop(&mut self) {
        self.tally.give_back(self.by_nick.len());
    }
}

impl RemoteMembers {
    /// No member yet, counted in `tally` with those of the rooms that share it.
    pub fn new(tally: Arc<RemoteTally>) -> RemoteMembers {
        RemoteMembers {
            by_nick: BTreeMap::new(),
            tally,
            departed: Vec::new(),
        }
    }

    /// Adds (or updates) a member; `false` if the room knows [`JOIN_MEMBERS_MAX`] already, or
    /// the node [`REMOTE_MEMBERS_TOTAL`] across its rooms.
    pub fn insert(&mut self, source: Arc<Source>, status: Status) -> bool {
        let key: Box<str> = fold(&source.nick).into();
        if let Some(known) = self.by_nick.get_mut(&key) {
            *known = Remote { source, status };
            return true;
        }
        if self.by_nick.len() >= JOIN_MEMBERS_MAX || !self.tally.take() {
            return false;
        }
        self.by_nick.insert(key, Remote { source, status });
        true
    }

    pub fn remove(&mut self, nick: &str) -> Option<Remote> {
        let gone = self.by_nick.remove(fold(nick).as_str());
        if gone.is_some() {
            self.tally.give_back(1);
        }
        gone
    }

    /// `nick` left (a part, a kick, a quit, a nick change) while a join's answer is awaited
    /// (`pending`): remembered, so that the answer does not list it again.
    pub fn left(&mut self, nick: &str, pending: bool) {
        self.remove(nick);
        if pending && self.departed.len() < JOIN_MEMBERS_MAX {
            self.departed.push(fold(nick).into());
        }
    }

    /// Adds a member a join answer lists, unless it left since (see `departed`); `false` if
    /// it was not added for want of room.
    pub fn learn(&mut self, source: Arc<Source>, status: Status) -> bool {
        let key = fold(&source.nick);
        if self.departed.iter().any(|d| **d == *key) && !self.by_nick.contains_key(key.as_str()) {
            return true;
        }
        self.insert(source, status)
    }

    /// No join waits for its answer any more: what left meanwhile is forgotten.
    pub fn settled(&mut self) {
        self.departed = Vec::new();
    }

    pub fn get(&self, nick: &str) -> Option<&Remote> {
        self.by_nick.get(fold(nick).as_str())
    }

    pub fn get_mut(&mut self, nick: &str) -> Option<&mut Remote> {
        self.by_nick.get_mut(fold(nick).as_str())
    }

    /// `old` is called `new` now (same user, same standing). While a join's answer is
    /// awaited (`pending`), a member not known yet is added under its new nick (the answer
    /// may list it under the old one, which is not taken then).
    pub fn rename(&mut self, old: &Source, new: &Arc<str>, pending: bool) {
        if pending && self.departed.len() < JOIN_MEMBERS_MAX {
            self.departed.push(fold(&old.nick).into());
        }
        let status = match self.remove(&old.nick) {
            Some(r) => r.status,
            None if pending => Status::default(),
            None => return,
        };
        let source = Arc::new(Source {
            nick: new.clone(),
            ..old.clone()
        });
        self.insert(source, status);
    }

    pub fn len(&self) -> usize {
        self.by_nick.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_nick.is_empty()
    }

    pub fn clear(&mut self) {
        self.tally.give_back(self.by_nick.len());
        self.by_nick = BTreeMap::new();
        self.departed = Vec::new();
    }

    /// The members after folded nick `after` (from the start for `None`), in folded order.
    pub fn after<'a>(
        &'a self,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, &'a Remote)> + 'a {
        let from = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.by_nick
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(k, v)| (&**k, v))
    }
}

/// Longest user name or host taken from another node (a member entry, an envelope): a
/// node's own are at most 10 bytes (IRC's `USER`, cleaned) and a cloak of about 20, so what
/// is longer was not written by a node, and would cost every room that hears of it, and
/// every listing, that much.
pub const SOURCE_WORD_MAX: usize = 64;

/// Whether `s` may be the user name or host of a `Source` from another node: not empty, at
/// most [`SOURCE_WORD_MAX`] bytes, and nothing that would split a `nick!user@host` mask or a
/// line.
pub fn source_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= SOURCE_WORD_MAX && !s.contains([' ', '!', '@', '\r', '\n', '\0'])
}

/// Invitations from other nodes a user keeps at most (as a room keeps at most 64 of its own).
pub const INVITES_MAX: usize = 16;

/// A join asked of the cluster and not answered yet.
#[derive(Debug)]
pub(super) struct Joining {
    serial: u32,
    /// The room, folded.
    room: Arc<str>,
    /// The key given with the join (checked once the room's modes are known).
    key: Option<Box<str>>,
}

/// A member's status as the shared member list writes it: `@`, `+` or `-`.
pub fn status_letter(status: Status) -> char {
    if status.op {
        '@'
    } else if status.voice {
        '+'
    } else {
        '-'
    }
}

/// The status a shared member list's letter stands for (`None`: not one of [`status_letter`]'s,
/// such as the `?` of a join its node has not completed: not a member yet).
pub fn letter_status(letter: &str) -> Option<Status> {
    let (op, voice) = match letter {
        "@" => (true, false),
        "+" => (false, true),
        "-" => (false, false),
        _ => return None,
    };
    Some(Status { op, voice })
}

/// A room's bans as the cluster keeps them: one `mask by at` a line.
pub fn bans_field(bans: &[Ban]) -> String {
    let lines: Vec<String> = bans
        .iter()
        .map(|b| format!("{} {} {}", b.mask, b.by, b.at))
        .collect();
    lines.join("\n")
}

impl RoomState {
    /// The state from a room's hash in Redis (`field`, `value` pairs: `founded` (`{incarnation}
    /// {nick} {at}`), `topic`, `topic_by`, `topic_at`, `modes`, `bans`; others ignored). What
    /// does not read well is left out.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> RoomState {
        let mut state = RoomState::default();
        let (mut text, mut by, mut at) = (None, None, None);
        for (field, value) in fields {
            match field {
                "topic" if !value.is_empty() => text = Some(label(value)),
                "topic_by" => by = Some(value),
                "topic_at" => at = value.parse().ok(),
                "founded" => {
                    state.founded = value.rsplit(' ').next().and_then(|at| at.parse().ok())
                }
                "modes" => state.modes = Some(value.to_string()),
                "bans" => {
                    state.bans = value
                        .lines()
                        .filter_map(|l| {
                            let mut w = l.split(' ');
                            let (mask, by, at) = (w.next()?, w.next()?, w.next()?.parse().ok()?);
                            super::modes::valid_mask(mask).then(|| Ban {
                                mask: mask.into(),
                                by: label(by).into(),
                                at,
                            })
                        })
                        .take(super::modes::MAX_BANS)
                        .collect()
                }
                _ => {}
            }
        }
        state.topic = text.map(|text| Topic {
            text: text.into(),
            by: label(by.unwrap_or("")).into(),
            at: at.unwrap_or(0),
        });
        state
    }
}

impl Core {
    /// Whether the driver must hold `id`'s next lines: a join of it waits for the cluster's
    /// answer (so that a `PRIVMSG #room` sent right after `JOIN #room` finds it joined).
    pub fn holds_input(&self, id: ClientId) -> bool {
        (!self.joining.is_empty() && self.joining.contains_key(&id))
            || (!self.listing.is_empty() && self.listing.contains_key(&id))
    }

    /// Whether `id` asked to join the (folded) room and waits for the answer.
    pub(super) fn is_joining(&self, id: ClientId, folded: &str) -> bool {
        self.joining
            .get(&id)
            .is_some_and(|j| j.iter().any(|j| &*j.room == folded))
    }

    /// Joins asked of the cluster by `id` and not answered yet.
    pub(super) fn joins_pending(&self, id: ClientId) -> usize {
        self.joining.get(&id).map_or(0, Vec::len)
    }

    /// A join of `id` to a room with no local member (`existing`: the room's key if another
    /// local user's join to it is under way): asked of the cluster ([`Note::Join`]).
    pub(super) fn ask_join(
        &mut self,
        id: ClientId,
        name: &str,
        existing: Option<usize>,
        given_key: Option<&str>,
        now: Millis,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        if !self.link_up {
            return Err(Error::RoomClusterDown(name.to_string()));
        }
        let folded: Arc<str> = fold(name).into();
        let key = match existing {
            Some(key) => key,
            None => self.new_room(name, now)?,
        };
        if !self.rooms[key].in_use() {
            self.subscribe_room(key, out);
        }
        self.rooms[key].pending += 1;
        let user = &self.users[&id];
        self.joining.entry(id).or_default().push(Joining {
            serial: user.serial,
            room: folded,
            key: given_key.map(Into::into),
        });
        out.note(Note::Join(JoinRequest {
            client: id,
            serial: user.serial,
            room: name.into(),
            who: user.source.clone(),
            at: now,
            wait: true,
        }));
        Ok(())
    }

    /// The cluster's answer to a [`Note::Join`]: the join is completed (the joiner is the
    /// room's operator if it created it), or refused as a local one would be (the room's
    /// modes are known now), or refused because Redis could not be asked.
    pub fn joined(
        &mut self,
        request: JoinRequest,
        answer: Option<JoinAnswer>,
        now: Millis,
        out: &mut Outbox,
    ) {
        let folded = fold(&request.room);
        let key = self.room_keys.get(&folded).copied();
        if !request.wait {
            // The lobby: joined already; learn who else is there (if anyone here still is).
            if let (Some(mut answer), Some(key)) = (answer, key)
                && !self.rooms[key].members.is_empty()
            {
                // Its local members may have changed its topic meanwhile: the cluster's only
                // fills a gap.
                let topic = answer.state.topic.take();
                self.learn(key, answer, false);
                let room = &mut self.rooms[key];
                if room.topic.is_none() {
                    room.topic = topic;
                }
            }
            return;
        }
        let id = request.client;
        let mut asked = None;
        if let Some(list) = self.joining.get_mut(&id)
            && let Some(at) = list
                .iter()
                .position(|j| j.serial == request.serial && *j.room == *folded)
        {
            asked = Some(list.remove(at));
            if list.is_empty() {
                self.joining.remove(&id);
            }
        }
        let undo = |out: &mut Outbox| {
            out.note(Note::Member {
                room: folded.as_str().into(),
                drop: Some(fold(&request.who.nick).into()),
                set: None,
            })
        };
        // The lobby has no operator: its first joiner does not create it, and is not listed
        // to others before its join completes (`backplane::rooms`).
        let lobby = *folded == *super::LOBBY;
        let (Some(asked), Some(key)) = (asked, key) else {
            // Its user left (or the room was let go) meanwhile: take the join back. A joiner
            // that created the room was listed to others at once (`backplane::rooms`): they
            // are told it left.
            if let Some(answer) = answer {
                undo(out);
                if answer.created && !lobby {
                    out.note(Note::Publish(Shared::Parted {
                        room: request.room.clone(),
                        who: request.who.clone(),
                        reason: None,
                    }));
                }
            }
            return;
        };
        let mut created = false;
        let result = match answer {
            // The lobby is always joinable: joined here, its members learned when the link
            // is back (`sync_rooms`).
            None if lobby => Ok(()),
            None => Err(Error::RoomClusterDown(request.room.to_string())),
            Some(answer) => {
                created = answer.created && !lobby;
                let first = self.rooms[key].members.is_empty();
                self.learn(key, answer, first);
                if created {
                    self.crown(key, id);
                    Ok(())
                } else {
                    self.may_join(id, key, asked.key.as_deref())
                        .inspect_err(|_| undo(out))
                }
            }
        };
        match result {
            Ok(()) => {
                // Its entry, asked as `?` (not a member yet: `backplane::rooms`), is a
                // member's now, written before its join is published (a creator's is its
                // operator's already); under its new nick if it was renamed meanwhile.
                let source = self.users[&id].source.clone();
                let renamed = fold(&source.nick) != fold(&request.who.nick);
                if renamed || !created {
                    out.note(Note::Member {
                        room: folded.as_str().into(),
                        drop: renamed.then(|| fold(&request.who.nick).into()),
                        set: Some((source, self.status_in(key, id))),
                    });
                }
                self.finish_join(id, key, now, out);
                self.answered(key);
            }
            Err(e) => {
                self.answered(key);
                self.let_go(key, out);
                out.send(id, Event::Error(e));
            }
        }
    }

    /// Takes what a join answer says about room `key`: the members of other nodes, and (if
    /// `state`: the room has no local member, so the cluster knows better) its topic, modes
    /// and bans.
    fn learn(&mut self, key: usize, answer: JoinAnswer, state: bool) {
        let mine = self.node_number;
        let room = &mut self.rooms[key];
        for m in answer.members {
            if Some(m.node) != mine
                && !self.nicks.contains_key(&fold(&m.source.nick))
                && !room.remote.learn(m.source, m.status)
            {
                log::debug!(
                    "{}: knows {JOIN_MEMBERS_MAX} members of other nodes already, the most it \
                     keeps: more are not listed",
                    room.name
                );
                break;
            }
        }
        if !state {
            return;
        }
        let s = answer.state;
        if let Some(at) = s.founded {
            room.created_at = at;
        }
        room.topic = s.topic;
        if let Some(modes) = &s.modes {
            room.modes.load(modes);
        }
        room.modes.bans = s.bans;
    }

    /// One join to room `key` waits no more.
    fn answered(&mut self, key: usize) {
        let room = &mut self.rooms[key];
        room.pending -= 1;
        if room.pending == 0 {
            room.remote.settled();
        }
    }

    /// Drops room `key` if nobody here is in it or joining it any more (and stops receiving
    /// it).
    pub(super) fn let_go(&mut self, key: usize, out: &mut Outbox) {
        let room = &mut self.rooms[key];
        if room.in_use() {
            return;
        }
        room.remote.clear();
        if self.cluster {
            out.note(Note::Unsubscribe(fold(&room.name).into()));
        }
        self.drop_if_empty(key);
    }

    /// A departing user's joins that wait for an answer are forgotten (the answers will find
    /// nobody, and take the joins back in Redis).
    pub(super) fn forget_joins(&mut self, id: ClientId, out: &mut Outbox) {
        for j in self.joining.remove(&id).unwrap_or_default() {
            if let Some(&key) = self.room_keys.get(&*j.room) {
                self.answered(key);
                self.let_go(key, out);
            }
        }
    }

    /// The entry of local member `id` in room `key`'s shared member list, as it is now.
    pub(super) fn share_member(&self, id: ClientId, key: usize, out: &mut Outbox) {
        if self.cluster {
            let source = self.users[&id].source.clone();
            out.note(Note::Member {
                room: fold(&self.rooms[key].name).into(),
                drop: None,
                set: Some((source, self.status_in(key, id))),
            });
        }
    }

    /// A topic set here, for the other nodes and later joiners.
    pub(super) fn share_topic(&self, key: usize, by: &Arc<Source>, now: Millis, out: &mut Outbox) {
        let room = &self.rooms[key];
        let topic = room.topic.as_ref().map(|t| t.text.clone());
        out.note(Note::Publish(Shared::Topic {
            room: room.name.clone(),
            by: by.clone(),
            topic: topic.clone(),
            at: now,
        }));
        out.note(Note::RoomState {
            room: fold(&room.name).into(),
            fields: vec![
                ("topic", topic.as_deref().unwrap_or("").to_string()),
                ("topic_by", by.nick.to_string()),
                ("topic_at", now.to_string()),
            ],
        });
    }

    /// Mode changes made here, for the other nodes and later joiners (and the shared member
    /// list's entries of local members whose status changed).
    pub(super) fn share_modes(
        &self,
        key: usize,
        by: &Arc<Source>,
        changes: &[Applied],
        out: &mut Outbox,
    ) {
        let room = &self.rooms[key];
        out.note(Note::Publish(Shared::Modes {
            room: room.name.clone(),
            by: by.clone(),
            changes: changes.to_vec(),
        }));
        out.note(Note::RoomState {
            room: fold(&room.name).into(),
            fields: vec![
                ("modes", room.modes.describe(true)),
                ("bans", bans_field(&room.modes.bans)),
            ],
        });
        for c in changes {
            if let ('o' | 'v', Some(nick)) = (c.letter, &c.arg)
                && let Some(&id) = self.nicks.get(&fold(nick))
                && self.users[&id].is_in(key)
            {
                self.share_member(id, key, out);
            }
        }
    }

    /// What another node said about a room's members, topic and modes: the room's list and
    /// state follow (the caller tells the local members). Whether it was about a room with
    /// local members.
    pub(super) fn follow_remote(&mut self, shared: &Shared, now: Millis, out: &mut Outbox) {
        let key_of = |core: &Core, room: &str| {
            core.room_keys
                .get(&fold(room))
                .copied()
                .filter(|&k| core.rooms[k].in_use())
        };
        match shared {
            Shared::Joined { room, who } => {
                // (Its status may be known already, from a join answer that crossed this.)
                if let Some(key) = key_of(self, room) {
                    let remote = &mut self.rooms[key].remote;
                    let status = remote.get(&who.nick).map(|r| r.status).unwrap_or_default();
                    remote.insert(who.clone(), status);
                }
            }
            Shared::Parted { room, who, .. } => {
                if let Some(key) = key_of(self, room) {
                    let r = &mut self.rooms[key];
                    r.remote.left(&who.nick, r.pending > 0);
                }
            }
            Shared::Quit { rooms, who, .. } => {
                for room in rooms {
                    if let Some(key) = key_of(self, room) {
                        let r = &mut self.rooms[key];
                        r.remote.left(&who.nick, r.pending > 0);
                    }
                }
            }
            Shared::NickChanged { rooms, old, new } => {
                for room in rooms {
                    if let Some(key) = key_of(self, room) {
                        let r = &mut self.rooms[key];
                        r.remote.rename(old, new, r.pending > 0);
                    }
                }
            }
            Shared::Topic {
                room,
                by,
                topic,
                at,
            } => {
                let Some(key) = key_of(self, room) else {
                    return;
                };
                let r = &mut self.rooms[key];
                r.topic = topic.clone().map(|text| Topic {
                    text,
                    by: by.nick.clone(),
                    at: *at,
                });
                let event = Event::TopicChanged {
                    room: r.name.clone(),
                    by: by.clone(),
                    topic: topic.clone(),
                };
                out.send_many(r.members.iter().copied(), event);
            }
            Shared::Modes { room, by, changes } => {
                let Some(key) = key_of(self, room) else {
                    return;
                };
                for c in changes {
                    self.apply_remote_mode(key, c, &by.nick, now, out);
                }
                let r = &self.rooms[key];
                let event = Event::ModeChanged {
                    room: r.name.clone(),
                    by: by.clone(),
                    changes: changes.clone(),
                };
                out.send_many(r.members.iter().copied(), event);
            }
            Shared::Kicked {
                room,
                by,
                nick,
                reason,
            } => {
                let Some(key) = key_of(self, room) else {
                    return;
                };
                let target = self.nicks.get(&fold(nick)).copied();
                let r = &mut self.rooms[key];
                r.remote.left(nick, r.pending > 0);
                let event = Event::Kicked {
                    room: r.name.clone(),
                    by: by.clone(),
                    nick: nick.clone(),
                    reason: reason.clone(),
                };
                if r.size() > self.limits.big_room {
                    out.send_many(target, event);
                } else {
                    out.send_many(r.members.iter().copied(), event);
                }
                if let Some(target) = target
                    && self.users[&target].is_in(key)
                {
                    self.remove_from(target, key, out);
                }
            }
            Shared::Invite {
                room,
                by,
                nick,
                keeps,
            } => {
                let Some(&target) = self.nicks.get(&fold(nick)) else {
                    return;
                };
                let user = &self.users[&target];
                let (serial, to) = (user.serial, user.source.nick.clone());
                let ignored = user.ignores(by);
                if *keeps {
                    let list = self.invites.entry(target).or_default();
                    let entry = (serial, Arc::from(fold(room)));
                    if !list.contains(&entry) {
                        if list.len() >= INVITES_MAX {
                            list.remove(0);
                        }
                        list.push(entry);
                    }
                }
                if !ignored {
                    let (room, by) = (room.clone(), by.clone());
                    out.send(target, Event::Invited { room, by, nick: to });
                }
            }
            Shared::Kill { nick, by, reason } => {
                if let Some(&target) = self.nicks.get(&fold(nick)) {
                    log::info!(
                        "{} (on another node) killed {}: {reason}",
                        by.nick,
                        self.users[&target].source.nick
                    );
                    let (by, reason) = (by.clone(), reason.clone());
                    out.send(target, Event::Killed { by, reason });
                }
            }
            _ => {}
        }
    }

    /// One mode change another node made in room `key`.
    fn apply_remote_mode(
        &mut self,
        key: usize,
        change: &Applied,
        by: &Arc<str>,
        now: Millis,
        out: &mut Outbox,
    ) {
        let (letter, Some(nick)) = (change.letter, &change.arg) else {
            return self.rooms[key].modes.apply_remote(change, by, now);
        };
        if !matches!(letter, 'o' | 'v') {
            return self.rooms[key].modes.apply_remote(change, by, now);
        }
        let set = |mut s: Status| {
            if letter == 'o' {
                s.op = change.set;
            } else {
                s.voice = change.set;
            }
            s
        };
        match self.nicks.get(&fold(nick)).copied() {
            Some(id) if self.users[&id].is_in(key) => {
                let status = set(self.status_in(key, id));
                self.rooms[key].modes.set_remote_status(id, status);
                // Its entry in the shared list is this node's to write.
                self.share_member(id, key, out);
            }
            _ => {
                if let Some(r) = self.rooms[key].remote.get_mut(nick) {
                    r.status = set(r.status);
                }
            }
        }
    }

    /// Whether `nick`, held by no local user, may be held on another node: asked of the
    /// cluster (a clustered node, its link up).
    pub fn may_be_elsewhere(&self, nick: &str) -> bool {
        self.cluster && self.link_up && super::names::check_nick(nick).is_ok()
    }

    /// The cluster's answer to a WHOIS of a nick held by nobody this node knows: the node
    /// holding it (what little is known: the nick, and where), or "no such nick".
    pub(super) fn whois_answered(
        &mut self,
        by: (ClientId, u32),
        nick: &str,
        node: Option<Arc<str>>,
        out: &mut Outbox,
    ) {
        if self.users.get(&by.0).is_none_or(|u| u.serial != by.1) {
            return;
        }
        let event = match node {
            Some(node) => Event::Whois(WhoisInfo {
                source: Source::new(nick, "*", "*", ""),
                rooms: Vec::new(),
                away: None,
                idle_secs: 0,
                connected_at: 0,
                address: None,
                oper: false,
                secure: false,
                node: Some(node),
            }),
            None => Event::Error(Error::NoSuchNick(super::names::clip(
                nick,
                super::names::NICK_MAX + 8,
            ))),
        };
        out.send(by.0, event);
    }

    /// Whether `id` was invited into the (folded) room by an operator of another node.
    pub(super) fn has_remote_invite(&self, id: ClientId, folded: &str) -> bool {
        let serial = self.users[&id].serial;
        self.invites
            .get(&id)
            .is_some_and(|l| l.iter().any(|(s, r)| *s == serial && **r == *folded))
    }

    /// Uses up `id`'s invitation from another node into the (folded) room, if it has one.
    pub(super) fn take_remote_invite(&mut self, id: ClientId, folded: &str) -> bool {
        let Some(list) = self.invites.get_mut(&id) else {
            return false;
        };
        let serial = self.users[&id].serial;
        let Some(at) = list
            .iter()
            .position(|(s, r)| *s == serial && **r == *folded)
        else {
            return false;
        };
        list.remove(at);
        if list.is_empty() {
            self.invites.remove(&id);
        }
        true
    }

    /// An invitation into room `key` of a nick no local user holds, by `id` (allowed to give
    /// it): sent to the nick's node.
    pub(super) fn invite_remote(
        &mut self,
        id: ClientId,
        key: usize,
        nick: &str,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        let room = &self.rooms[key];
        if let Some(r) = room.remote.get(nick) {
            return Err(Error::AlreadyInRoom {
                nick: r.source.nick.to_string(),
                room: room.name.to_string(),
            });
        }
        let invite = Shared::Invite {
            room: room.name.clone(),
            by: self.users[&id].source.clone(),
            nick: nick.into(),
            keeps: room.modes.invite_only,
        };
        let by = (id, self.users[&id].serial);
        out.note(Note::Invite { by, invite });
        let (room, nick) = (room.name.clone(), nick.into());
        out.send(id, Event::Inviting { room, nick });
        Ok(())
    }

    /// Whether a room of this node has a member called `nick` on another node.
    pub fn remote_nick_known(&self, nick: &str) -> bool {
        self.rooms.iter().any(|(_, r)| r.remote.get(nick).is_some())
    }

    /// After Redis was lost: each room with local members tells the cluster who of this node
    /// is in it now, and what it is (for a Redis that restarted empty), and learns its members
    /// on other nodes again ([`Core::resynced`]): who joined or left while this node was not
    /// listening. Until the answer, the room lists those it hears of, as a room whose join
    /// waits for its answer.
    pub(super) fn sync_rooms(&mut self, out: &mut Outbox) {
        for (_, room) in &mut self.rooms {
            let Some(&first) = room.members.iter().next() else {
                continue;
            };
            room.remote.clear();
            room.pending += 1;
            let room = &*room;
            let members = room
                .members
                .iter()
                .map(|&id| (self.users[&id].source.clone(), room.modes.status(id)))
                .collect();
            let topic = room.topic.as_ref();
            let fields = vec![
                ("topic", topic.map_or("", |t| &*t.text).to_string()),
                ("topic_by", topic.map_or("", |t| &*t.by).to_string()),
                ("topic_at", topic.map_or(0, |t| t.at).to_string()),
                ("modes", room.modes.describe(true)),
                ("bans", bans_field(&room.modes.bans)),
            ];
            out.note(Note::SyncRoom {
                room: fold(&room.name).into(),
                members,
                state: Some(super::cluster::SyncState {
                    name: room.name.clone(),
                    founder: self.users[&first].source.nick.clone(),
                    created_at: room.created_at,
                    fields,
                }),
            });
        }
    }

    /// The cluster's answer to a room's [`Note::SyncRoom`]: its members on other nodes, as
    /// Redis had them once this node received the room again (`None`: Redis could not be
    /// asked; the next reconnect asks again). Those who left since are not brought back.
    pub fn resynced(
        &mut self,
        folded: &str,
        members: Option<Vec<super::cluster::RemoteMember>>,
        out: &mut Outbox,
    ) {
        let Some(&key) = self.room_keys.get(folded) else {
            return;
        };
        if self.rooms[key].pending == 0 {
            return;
        }
        if let Some(members) = members {
            let answer = JoinAnswer {
                created: false,
                members,
                state: RoomState::default(),
            };
            self.learn(key, answer, false);
        }
        self.answered(key);
        self.let_go(key, out);
    }

    /// Room `key`'s member called `nick` on another node, if it knows one.
    pub(super) fn remote_member(&self, key: usize, nick: &str) -> Option<&Remote> {
        self.rooms[key].remote.get(nick)
    }

    /// WHOIS of a nick no local user holds: what the rooms shared with this node know of it
    /// (its `nick!user@host`, real name and the rooms it is seen in with its standing there).
    pub(super) fn remote_whois(&self, asker: ClientId, nick: &str) -> Option<WhoisInfo> {
        let mut found = None;
        let mut rooms = Vec::new();
        for (key, room) in &self.rooms {
            let Some(r) = room.remote.get(nick) else {
                continue;
            };
            found.get_or_insert_with(|| r.source.clone());
            if !self.hidden_from(asker, key) {
                let p = r.status.prefixes().get(..1).unwrap_or("");
                rooms.push(format!("{p}{}", room.name).into());
            }
        }
        Some(WhoisInfo {
            source: found?,
            rooms,
            away: None,
            idle_secs: 0,
            // Not known here: the renderers leave it out.
            connected_at: 0,
            address: None,
            oper: false,
            secure: false,
            node: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(nick: &str) -> Arc<Source> {
        Source::new(nick, "u", "h", "R")
    }

    #[test]
    fn remote_members_keep_folded_order_rename_and_stay_bounded() {
        let mut m = RemoteMembers::default();
        for n in ["bob", "Alice", "carol"] {
            assert!(m.insert(who(n), Status::default()));
        }
        let order: Vec<&str> = m.after(None).map(|(k, _)| k).collect();
        assert_eq!(order, ["alice", "bob", "carol"]);
        let after: Vec<&str> = m.after(Some("alice")).map(|(k, _)| k).collect();
        assert_eq!(after, ["bob", "carol"]);
        m.rename(&who("BOB"), &"Zed".into(), false);
        m.rename(&who("nobody"), &"Zed2".into(), false);
        assert!(m.get("zed2").is_none(), "not a member");
        assert_eq!(&*m.get("zed").unwrap().source.nick, "Zed");
        assert!(m.get("bob").is_none());
        assert_eq!(m.len(), 3);
        let op = Status {
            op: true,
            voice: false,
        };
        assert!(m.insert(who("alice"), op), "an update");
        assert_eq!(m.len(), 3);
        assert!(m.get("ALICE").unwrap().status.op);
        for i in 0..JOIN_MEMBERS_MAX {
            m.insert(who(&format!("n{i}")), Status::default());
        }
        assert_eq!(m.len(), JOIN_MEMBERS_MAX);
        assert!(!m.insert(who("late"), Status::default()), "bounded");
        assert!(m.remove("Zed").is_some());
        m.clear();
        assert!(m.is_empty());
    }

    #[test]
    fn remote_members_are_counted_exactly_across_rooms_and_bounded_in_all() {
        let tally = RemoteTally::new(4);
        let (mut a, mut b) = (
            RemoteMembers::new(tally.clone()),
            RemoteMembers::new(tally.clone()),
        );
        assert!(a.insert(who("x"), Status::default()));
        assert!(a.insert(who("y"), Status::default()));
        assert!(a.insert(who("X"), Status::default()), "an update");
        assert!(b.learn(who("x"), Status::default()));
        assert_eq!(tally.count(), 3);
        // A rename is a removal and an insert; renaming someone unknown adds nobody.
        b.rename(&who("x"), &"z".into(), false);
        b.rename(&who("nobody"), &"w".into(), false);
        assert_eq!(tally.count(), 3);
        assert!(b.insert(who("v"), Status::default()));
        assert_eq!(tally.count(), 4);
        assert!(
            !a.insert(who("late"), Status::default()),
            "the total is met"
        );
        assert!(!b.learn(who("late"), Status::default()));
        assert!(a.get("late").is_none() && b.get("late").is_none());
        assert!(a.insert(who("y"), Status::default()), "an update still is");
        // Removals, clears and a room that goes give their share back.
        assert!(a.remove("Y").is_some());
        assert!(a.remove("y").is_none());
        assert_eq!(tally.count(), 3);
        assert!(a.insert(who("late"), Status::default()));
        a.left("late", false);
        assert_eq!(tally.count(), 3);
        a.clear();
        assert_eq!(tally.count(), 2);
        drop(b);
        assert_eq!(tally.count(), 0);
        for n in ["p", "q", "r", "s"] {
            assert!(a.insert(who(n), Status::default()));
        }
        assert!(!a.insert(who("t"), Status::default()));
    }

    #[test]
    fn members_who_left_while_a_join_was_answered_are_not_brought_back_by_the_answer() {
        let mut m = RemoteMembers::default();
        m.insert(who("gone"), Status::default());
        m.left("GONE", true);
        m.rename(&who("old"), &"new".into(), true);
        // The answer's snapshot was taken before they left.
        for n in ["gone", "old", "stays"] {
            assert!(m.learn(who(n), Status::default()));
        }
        let names: Vec<&str> = m.after(None).map(|(k, _)| k).collect();
        assert_eq!(
            names,
            ["new", "stays"],
            "the renamed one under its new nick"
        );
        // Left and came back before the answer: listed.
        m.left("back", true);
        m.insert(who("back"), Status::default());
        m.learn(who("back"), Status::default());
        assert!(m.get("back").is_some());
        // Once no join waits, the departed are forgotten.
        m.settled();
        m.learn(who("gone"), Status::default());
        assert!(m.get("gone").is_some());
    }

    #[test]
    fn status_letters_read_back() {
        for (op, voice) in [(false, false), (true, false), (false, true)] {
            let s = Status { op, voice };
            assert_eq!(letter_status(&status_letter(s).to_string()), Some(s));
        }
        assert_eq!(
            status_letter(Status {
                op: true,
                voice: true
            }),
            '@'
        );
        assert_eq!(letter_status("x"), None);
    }

    #[test]
    fn room_state_reads_back_what_the_core_writes() {
        let bans = vec![
            Ban {
                mask: "bad!*@*".into(),
                by: "op".into(),
                at: 5,
            },
            Ban {
                mask: "*!*@evil.ip".into(),
                by: "op2".into(),
                at: 7,
            },
        ];
        let field = bans_field(&bans);
        let state = RoomState::from_fields([
            ("founded", "1 alice 3"),
            ("topic", "hello there"),
            ("topic_by", "alice"),
            ("topic_at", "42"),
            ("modes", "+mntk sesame"),
            ("bans", field.as_str()),
        ]);
        assert_eq!(
            state.topic,
            Some(Topic {
                text: "hello there".into(),
                by: "alice".into(),
                at: 42
            })
        );
        assert_eq!(state.modes.as_deref(), Some("+mntk sesame"));
        assert_eq!(state.bans, bans);
        assert_eq!(state.founded, Some(3));
        assert_eq!(RoomState::from_fields([("founded", "1 a x")]).founded, None);
        // A cleared topic, a bad ban line.
        let state = RoomState::from_fields([("topic", ""), ("bans", "a b\nx y 1\nok!*@* o 2")]);
        assert_eq!(state.topic, None);
        assert_eq!(state.bans.len(), 2);
    }
}

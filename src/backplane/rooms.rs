//! Rooms shared by the nodes, in Redis: each room's member list and state, and the atomic
//! join that creates a room once.
//!
//! ```text
//! HASH {prefix}members:{folded room}    folded nick -> "{incarnation} {nick}!{user}@{host} {status} {real name}"
//! HASH {prefix}roomstate:{folded room}  founded, topic, topic_by, topic_at, modes, bans
//! HASH {prefix}rooms                    folded room -> its name (the index of rooms)
//! ```
//!
//! - A join to a room with no local member ([`Note::Join`]) is one script ([`JOIN_SCRIPT`]):
//!   `HSETNX roomstate founded` (1: this join creates the room, its joiner is the operator,
//!   status `@`), `HSET members` (any other joiner as `?`, not listed to others until its node
//!   completes the join and writes the entry: [`Note::Member`]), and the answer: whether it created the room, the members
//!   (at most [`JOIN_MEMBERS_MAX`], by `HSCAN`, so a huge room costs Redis one bounded step)
//!   and the room's state (its `founded`, `{incarnation} {nick} {at}`, gives every node the
//!   room's creation time). Redis runs a script alone: of two first joiners on two nodes,
//!   exactly one finds `founded` unset. It is sent only once Redis has confirmed the node's
//!   SUBSCRIBE to the room's channel (the two connections are not ordered with each other):
//!   every member who joins after the answer's snapshot is then received.
//! - A local member's entry changes ([`Note::Member`]: a join to a room with local members, a
//!   part, a kick, a quit, a nick change, a status change) by [`MEMBER_SCRIPT`]: `HDEL` the old
//!   field, `HSET` the new, and `DEL roomstate` when the member list is empty (the last member
//!   anywhere left: the next joiner creates the room anew). Each node writes its own members'
//!   entries only (the reaper of a dead node's users aside).
//! - A topic or mode change ([`Note::RoomState`]) is `HSET roomstate` by [`STATE_SCRIPT`], only
//!   if the room is founded (a state write racing the last member's departure must not leave a
//!   room without `founded`, whose next joiner would be a second first operator).
//!
//! - The index of rooms is written by [`JOIN_SCRIPT`] when it creates a room and by
//!   [`SYNC_SCRIPT`] when it founds one again; [`MEMBER_SCRIPT`] and [`SYNC_SCRIPT`] remove a
//!   room's entry when they delete its state. A LIST ([`Note::Rooms`]) reads it by
//!   [`ROOMS_SCRIPT`] (bounded by [`ROOMS_MAX`] rooms and [`ROOMS_BYTES`]), which also removes
//!   the entries of rooms with no member left (the reaper's script, in `nodes`, does not
//!   compute the index's key). NAMES or WHO of a room with no local member ([`Note::Names`])
//!   reads its members by [`NAMES_SCRIPT`] (at most [`JOIN_MEMBERS_MAX`]). What comes back
//!   is checked as a join's answer is (names, entries, counts; a malformed one is skipped).
//!
//! None of these is dropped past `--backplane-max-queue` (a lost entry would show a member
//! who left, for ever): they are bounded by what local users do (a join, a part, a nick
//! change: a few commands each). While Redis is lost, a join that needs the cluster is
//! refused (the core says "cluster link down"), and changes to the member lists and states are
//! not made (counted with what was not sent); a join whose answer was lost with the link is
//! taken back once Redis is back, as it may have been recorded.

use std::sync::Arc;

use redis_protocol::resp2::types::OwnedFrame;

use super::{Backplane, Expect};
use crate::core::Source;
use crate::core::cluster::{
    Answer, JOIN_MEMBERS_MAX, JoinAnswer, JoinRequest, Note, ROOMS_BYTES, ROOMS_MAX, RemoteMember,
    RoomState, SharedMembers, SharedRoom,
};
use crate::core::modes::Status;
use crate::core::names::{check_nick, check_room, fold, label};
use crate::core::remote::{letter_status, source_word, status_letter};

/// KEYS: members, roomstate, the index of rooms. ARGV: folded nick, `{incarnation}
/// {nick}!{user}@{host}`, real name, founded value, most members to answer, `1` if the join
/// waits for its answer, `2` if it waits but crowns nobody (the lobby's), `0` if it does not
/// wait (the lobby's while the core thinks the link down), the folded room, its name. A join
/// that creates the room enters it in the index. Answers `{created, {field, value, …} of
/// members, {field, value, …} of state}`.
///
/// A join that waits and does not create the room is entered with status `?`: not a member
/// yet (its node may still refuse it, for a key, a ban, a limit, or because its user left
/// meanwhile, and then only takes the entry back), so other joiners' answers do not list it
/// ([`parse_member`] skips it); its node writes the member's entry once it completes the
/// join, before publishing the join, so a joiner whose answer came before that entry
/// receives the join. The creator is the operator at once (`@`: its join cannot be refused,
/// and the join published later does not carry a status); if its user left meanwhile, its
/// node publishes its part. The lobby has no operator: its waiting joiners are all `?`.
pub const JOIN_SCRIPT: &[u8] = b"\
local created = redis.call('HSETNX', KEYS[2], 'founded', ARGV[4])
if created == 1 and KEYS[3] then redis.call('HSET', KEYS[3], ARGV[7], ARGV[8]) end
local status = '-'
if ARGV[6] == '1' then
  if created == 1 then status = '@' else status = '?' end
elseif ARGV[6] == '2' then
  status = '?'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. status .. ' ' .. ARGV[3])
local members = redis.call('HSCAN', KEYS[1], '0', 'COUNT', ARGV[5])[2]
local most = 2 * tonumber(ARGV[5])
if #members > most then
  local cut = {}
  for i = 1, most do cut[i] = members[i] end
  members = cut
end
return {created, members, redis.call('HGETALL', KEYS[2])}";

/// KEYS: members, roomstate, the index of rooms. ARGV: field to delete (or empty), field to
/// set (or empty), its value, the folded room. The room's state (and its index entry) goes
/// with its last member.
pub const MEMBER_SCRIPT: &[u8] = b"\
if ARGV[1] ~= '' then redis.call('HDEL', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  if KEYS[3] then redis.call('HDEL', KEYS[3], ARGV[4]) end
end
return 0";

/// KEYS: roomstate. ARGV: field, value, … Set only if the room is founded.
pub const STATE_SCRIPT: &[u8] = b"\
if redis.call('HEXISTS', KEYS[1], 'founded') == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 0";

/// KEYS: members, roomstate, the index of rooms. ARGV: this node's entries' start
/// (`{incarnation} `), founded value (or empty: do not found), the number N of state
/// field/value pairs, the folded room, its name, those 2N, then this node's member
/// field/value pairs. This node's entries become exactly those given; the room goes if empty
/// (and its index entry), and is founded again with the state (and entered in the index) if
/// Redis lost it. Answers the
/// room's members then (`{field, value, …}`, at most [`JOIN_MEMBERS_MAX`], as
/// [`JOIN_SCRIPT`]), for a node that was not listening meanwhile.
pub const SYNC_SCRIPT: &[u8] = b"\
local mine = ARGV[1]
local n = tonumber(ARGV[3])
local keep = {}
for i = 6 + 2 * n, #ARGV, 2 do keep[ARGV[i]] = ARGV[i + 1] end
local cursor = '0'
repeat
  local r = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 1000)
  cursor = r[1]
  local kv = r[2]
  for i = 1, #kv, 2 do
    if string.sub(kv[i + 1], 1, #mine) == mine and keep[kv[i]] == nil then
      redis.call('HDEL', KEYS[1], kv[i])
    end
  end
until cursor == '0'
for f, v in pairs(keep) do redis.call('HSET', KEYS[1], f, v) end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('HDEL', KEYS[3], ARGV[4])
elseif ARGV[2] ~= '' and redis.call('HSETNX', KEYS[2], 'founded', ARGV[2]) == 1 then
  if n > 0 then
    local state = {}
    for i = 6, 5 + 2 * n do state[#state + 1] = ARGV[i] end
    redis.call('HSET', KEYS[2], unpack(state))
  end
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
end
local members = redis.call('HSCAN', KEYS[1], '0', 'COUNT', 2048)[2]
if #members > 4096 then
  local cut = {}
  for i = 1, 4096 do cut[i] = members[i] end
  members = cut
end
return members";

/// KEYS: the index of rooms. ARGV: the prefix, most rooms to answer, most bytes of names,
/// topics and modes to answer. Answers `{name, members, topic, modes, …}` of the rooms of
/// the index (a room's members counted by `HLEN`, its topic and modes from its state; `''`
/// when unset), by `HSCAN`, stopping at either bound (and after reading 4 times the most
/// rooms' entries); a room whose entry is over 4 KiB (which no node writes) is left out. An entry whose room has no member any more (a dead node's users reaped)
/// is taken out of the index.
pub const ROOMS_SCRIPT: &[u8] = b"\
local most, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local out, n, bytes, seen = {}, 0, 0, 0
local cursor = '0'
repeat
  local r = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 256)
  cursor = r[1]
  local kv = r[2]
  for i = 1, #kv, 2 do
    seen = seen + 1
    local count = redis.call('HLEN', ARGV[1] .. 'members:' .. kv[i])
    if count == 0 then
      redis.call('HDEL', KEYS[1], kv[i])
    elseif n < most and bytes < budget then
      local st = redis.call('HMGET', ARGV[1] .. 'roomstate:' .. kv[i], 'topic', 'modes')
      local topic, modes = st[1] or '', st[2] or ''
      local size = #kv[i + 1] + #topic + #modes + 16
      if size > 4096 then
        size = 0
      elseif bytes + size <= budget then
        n = n + 1
        bytes = bytes + size
        out[#out + 1] = kv[i + 1]
        out[#out + 1] = tostring(count)
        out[#out + 1] = topic
        out[#out + 1] = modes
      else
        bytes = budget
      end
    end
  end
until cursor == '0' or n >= most or bytes >= budget or seen >= 4 * most
return out";

/// KEYS: members, roomstate, the index of rooms. ARGV: most members to answer, the folded
/// room. Answers `{{field, value, …} of members (as [`JOIN_SCRIPT`]), modes or '', name or
/// ''}`.
pub const NAMES_SCRIPT: &[u8] = b"\
local members = redis.call('HSCAN', KEYS[1], '0', 'COUNT', ARGV[1])[2]
local most = 2 * tonumber(ARGV[1])
if #members > most then
  local cut = {}
  for i = 1, most do cut[i] = members[i] end
  members = cut
end
local modes = redis.call('HGET', KEYS[2], 'modes') or ''
local name = redis.call('HGET', KEYS[3], ARGV[2]) or ''
return {members, modes, name}";

/// [`NAMES_SCRIPT`]'s answer read (`None`: not such an answer, an error): the members (those
/// not completed, `?`, left out, as in a join's answer), whether the room is secret, and its
/// name if it reads as one.
pub fn names_answer(frame: &OwnedFrame) -> Option<SharedMembers> {
    let OwnedFrame::Array(parts) = frame else {
        return None;
    };
    let [members, modes, name] = &parts[..] else {
        return None;
    };
    let members = members_answer(members)?;
    let text = |f: &OwnedFrame| match f {
        OwnedFrame::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_string),
        _ => None,
    };
    let (modes, name) = (text(modes)?, text(name)?);
    Some(SharedMembers {
        name: check_room(&name).is_ok().then(|| name.into()),
        members,
        secret: is_secret(&modes),
    })
}

/// Whether a room's stored modes (`+nst key`) say secret.
fn is_secret(modes: &str) -> bool {
    modes
        .split(' ')
        .next()
        .is_some_and(|letters| letters.starts_with('+') && letters.contains('s'))
}

/// `{prefix}rooms`: the index of rooms, folded name -> name (as its founder spelled it),
/// entered by the join that creates a room, left with its last member.
pub fn index_key(prefix: &str) -> Vec<u8> {
    format!("{prefix}rooms").into_bytes()
}

/// [`ROOMS_SCRIPT`]'s answer read: the rooms it lists (`None`: not such an answer, an
/// error). What is not a room of the cluster (a bad name, a count that is not one) is
/// skipped; at most [`ROOMS_MAX`], topics read as a join's answer reads them.
pub fn rooms_answer(frame: &OwnedFrame) -> Option<Vec<SharedRoom>> {
    let parts = strings(frame)?;
    Some(
        parts
            .chunks_exact(4)
            .filter_map(|p| {
                check_room(p[0]).ok()?;
                let members = p[1].parse::<usize>().ok().filter(|&n| n > 0)?;
                let topic = (!p[2].is_empty()).then(|| label(p[2]).into());
                let secret = is_secret(p[3]);
                Some(SharedRoom {
                    name: p[0].into(),
                    members,
                    topic,
                    secret,
                })
            })
            .take(ROOMS_MAX)
            .collect(),
    )
}

/// `{prefix}members:{folded room}`.
pub fn members_key(prefix: &str, folded: &str) -> Vec<u8> {
    format!("{prefix}members:{folded}").into_bytes()
}

/// `{prefix}roomstate:{folded room}`.
pub fn state_key(prefix: &str, folded: &str) -> Vec<u8> {
    format!("{prefix}roomstate:{folded}").into_bytes()
}

/// The start of a member's entry: `{incarnation} {nick}!{user}@{host}` (the status and the
/// real name follow).
fn member_head(incarnation: u64, who: &Source) -> String {
    format!("{incarnation} {}!{}@{}", who.nick, who.user, who.host)
}

/// A member's whole entry.
pub fn member_value(incarnation: u64, who: &Source, status: Status) -> String {
    format!(
        "{} {} {}",
        member_head(incarnation, who),
        status_letter(status),
        who.realname
    )
}

/// An entry read back (`None` if it is not one: it is skipped).
pub fn parse_member(value: &str) -> Option<RemoteMember> {
    let mut words = value.splitn(4, ' ');
    let node = words.next()?.parse().ok()?;
    let mask = words.next()?;
    let status = letter_status(words.next()?)?;
    let realname = label(words.next().unwrap_or(""));
    let (nick, rest) = mask.split_once('!')?;
    let (user, host) = rest.split_once('@')?;
    check_nick(nick).ok()?;
    (source_word(user) && source_word(host)).then(|| RemoteMember {
        node,
        source: Source::new(nick, user, host, &realname),
        status,
    })
}

/// The node named by a nick key's value (`{node}:{incarnation}:{client}:{serial}`), the
/// answer to its `GET` (`None`: no such key, or not such a value).
pub fn holder_node(frame: &OwnedFrame) -> Option<Arc<str>> {
    let OwnedFrame::BulkString(value) = frame else {
        return None;
    };
    let value = std::str::from_utf8(value).ok()?;
    let node = value.rsplitn(4, ':').nth(3)?;
    // A node's name is what `--node` accepts (a key's value written by anything else is not
    // shown, nor a megabyte of it).
    super::check_word("", node).is_ok().then(|| node.into())
}

/// The strings of a flat array of bulk strings (`None` for anything else).
fn strings(frame: &OwnedFrame) -> Option<Vec<&str>> {
    let OwnedFrame::Array(parts) = frame else {
        return None;
    };
    parts
        .iter()
        .map(|p| match p {
            OwnedFrame::BulkString(b) => std::str::from_utf8(b).ok(),
            _ => None,
        })
        .collect()
}

/// [`SYNC_SCRIPT`]'s answer read: the members it lists (`None`: not such an answer, an
/// error).
pub fn members_answer(frame: &OwnedFrame) -> Option<Vec<RemoteMember>> {
    let members = strings(frame)?;
    Some(
        members
            .chunks_exact(2)
            .filter_map(|pair| parse_member(pair[1]))
            .take(JOIN_MEMBERS_MAX)
            .collect(),
    )
}

/// [`JOIN_SCRIPT`]'s answer read (`None`: not such an answer, an error).
pub fn join_answer(frame: &OwnedFrame) -> Option<JoinAnswer> {
    let OwnedFrame::Array(parts) = frame else {
        return None;
    };
    let [OwnedFrame::Integer(created), members, state] = &parts[..] else {
        return None;
    };
    let members = members_answer(members)?;
    let state = strings(state)?;
    let state = RoomState::from_fields(state.chunks_exact(2).map(|p| (p[0], p[1])));
    Some(JoinAnswer {
        created: *created == 1,
        members,
        state,
    })
}

impl Backplane {
    /// Queues one of the shared rooms' notes (Redis is up).
    pub(super) fn room_note(&mut self, note: Note) {
        let prefix = self.config.prefix.clone();
        match note {
            Note::Join(request) => {
                let folded = fold(&request.room);
                let channel = super::envelope::room_channel(&prefix, &folded);
                if self.unconfirmed.contains(&channel) {
                    // Asked once the subscription is in place (`subscribed_to`).
                    let since = std::time::Instant::now();
                    self.parked.push((channel, Note::Join(request), since));
                    return;
                }
                let (members, state) = (members_key(&prefix, &folded), state_key(&prefix, &folded));
                let who = &request.who;
                let nick = fold(&who.nick);
                let head = member_head(self.incarnation, who);
                let founded = format!("{} {} {}", self.incarnation, who.nick, request.at);
                let most = JOIN_MEMBERS_MAX.to_string();
                // The lobby's first join here waits too, but crowns nobody.
                let crowns = match (request.wait, folded == crate::core::LOBBY) {
                    (false, _) => "0",
                    (true, false) => "1",
                    (true, true) => "2",
                };
                self.commands.push(&[
                    b"EVAL",
                    JOIN_SCRIPT,
                    b"3",
                    &members,
                    &state,
                    &index_key(&prefix),
                    nick.as_bytes(),
                    head.as_bytes(),
                    who.realname.as_bytes(),
                    founded.as_bytes(),
                    most.as_bytes(),
                    crowns.as_bytes(),
                    folded.as_bytes(),
                    request.room.as_bytes(),
                ]);
                self.expect.push_back(Expect::Join(request));
            }
            Note::Member { room, drop, set } => {
                let value = set
                    .as_ref()
                    .map(|(who, status)| member_value(self.incarnation, who, *status));
                let field = set.as_ref().map(|(who, _)| fold(&who.nick));
                self.commands.push(&[
                    b"EVAL",
                    MEMBER_SCRIPT,
                    b"3",
                    &members_key(&prefix, &room),
                    &state_key(&prefix, &room),
                    &index_key(&prefix),
                    drop.as_deref().unwrap_or("").as_bytes(),
                    field.as_deref().unwrap_or("").as_bytes(),
                    value.as_deref().unwrap_or("").as_bytes(),
                    room.as_bytes(),
                ]);
                self.expect.push_back(Expect::Other);
            }
            Note::RoomState { room, fields } => {
                let key = state_key(&prefix, &room);
                let mut parts: Vec<&[u8]> = vec![b"EVAL", STATE_SCRIPT, b"1", &key];
                for (field, value) in &fields {
                    parts.extend([field.as_bytes(), value.as_bytes()]);
                }
                self.commands.push(&parts);
                self.expect.push_back(Expect::Other);
            }
            Note::SyncRoom {
                room,
                members,
                state,
            } => {
                let channel = super::envelope::room_channel(&prefix, &room);
                let answered = state.is_some();
                if answered && self.unconfirmed.contains(&channel) {
                    // Its answer must not miss who joins next: asked once subscribed again.
                    self.parked.push((
                        channel,
                        Note::SyncRoom {
                            room,
                            members,
                            state,
                        },
                        std::time::Instant::now(),
                    ));
                    return;
                }
                let mine = format!("{} ", self.incarnation);
                let founded = state.as_ref().map_or(String::new(), |s| {
                    format!("{} {} {}", self.incarnation, s.founder, s.created_at)
                });
                let name = state.as_ref().map_or(room.clone(), |s| s.name.clone());
                let fields = state.map(|s| s.fields).unwrap_or_default();
                let entries: Vec<(String, String)> = members
                    .iter()
                    .map(|(who, status)| {
                        let value = member_value(self.incarnation, who, *status);
                        (fold(&who.nick), value)
                    })
                    .collect();
                let (members, state) = (members_key(&prefix, &room), state_key(&prefix, &room));
                let n = fields.len().to_string();
                let index = index_key(&prefix);
                let mut parts: Vec<&[u8]> = vec![
                    b"EVAL",
                    SYNC_SCRIPT,
                    b"3",
                    &members,
                    &state,
                    &index,
                    mine.as_bytes(),
                    founded.as_bytes(),
                    n.as_bytes(),
                    room.as_bytes(),
                    name.as_bytes(),
                ];
                for (field, value) in &fields {
                    parts.extend([field.as_bytes(), value.as_bytes()]);
                }
                for (field, value) in &entries {
                    parts.extend([field.as_bytes(), value.as_bytes()]);
                }
                self.commands.push(&parts);
                self.expect.push_back(match answered {
                    true => Expect::Sync(room),
                    false => Expect::Other,
                });
            }
            Note::Invite { by, invite } => {
                if let crate::core::cluster::Shared::Invite { nick, .. } = &invite {
                    let nick = nick.clone();
                    self.publish(&invite, Some((by, nick)));
                }
            }
            Note::Rooms { by } => {
                let (most, bytes) = (ROOMS_MAX.to_string(), ROOMS_BYTES.to_string());
                self.commands.push(&[
                    b"EVAL",
                    ROOMS_SCRIPT,
                    b"1",
                    &index_key(&prefix),
                    prefix.as_bytes(),
                    most.as_bytes(),
                    bytes.as_bytes(),
                ]);
                self.expect.push_back(Expect::Rooms { by });
            }
            Note::Names { by, room, listing } => {
                let folded = fold(&room);
                let most = JOIN_MEMBERS_MAX.to_string();
                self.commands.push(&[
                    b"EVAL",
                    NAMES_SCRIPT,
                    b"3",
                    &members_key(&prefix, &folded),
                    &state_key(&prefix, &folded),
                    &index_key(&prefix),
                    most.as_bytes(),
                    folded.as_bytes(),
                ]);
                self.expect.push_back(Expect::Names { by, room, listing });
            }
            Note::Whois { by, nick } => {
                let key = self.nick_key(&nick);
                self.commands.push(&[b"GET", &key]);
                self.expect.push_back(Expect::Whois { by, nick });
            }
            Note::Kill {
                by,
                nick,
                from,
                reason,
            } => {
                let kill = crate::core::cluster::Shared::Kill {
                    nick: nick.clone(),
                    by: from,
                    reason,
                };
                self.publish(&kill, Some((by, nick)));
            }
            _ => unreachable!("not a room note"),
        }
    }

    /// Redis confirmed the subscription to a room's `channel`: from now on this node receives
    /// what its members do, so the joins waiting for that are asked now. (Asked earlier, a join
    /// answered by Redis before the SUBSCRIBE took effect could miss a member who joined in
    /// between: not in the answer, its arrival not received.)
    pub(super) fn subscribed_to(&mut self, channel: &[u8]) {
        self.unconfirmed.remove(channel);
        let (ready, parked): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|(c, ..)| c == channel);
        self.parked = parked;
        for (_, note, _) in ready {
            self.room_note(note);
        }
    }

    /// A parked join (or read of a room's members) that will not be asked: answered as if
    /// Redis were lost (the joiner is told the room cannot be joined now).
    pub(super) fn unpark(&mut self, note: Note) {
        self.answers.push(match note {
            Note::Join(request) => Answer::Join {
                request,
                answer: None,
            },
            Note::SyncRoom { room, .. } => Answer::Synced {
                room,
                members: None,
            },
            _ => unreachable!("only joins and reads of members are parked"),
        });
    }

    /// Answers the parked notes whose subscription Redis has not confirmed within
    /// [`STALL`](super::STALL) (it refused the SUBSCRIBE: an ACL without the room's channel,
    /// say): their joiners' input must not be held for ever.
    pub(super) fn expire_parked(&mut self, now: std::time::Instant) {
        let stall = super::STALL;
        if !self.parked.iter().any(|p| now >= p.2 + stall) {
            return;
        }
        let (late, parked): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| now >= p.2 + stall);
        self.parked = parked;
        log::warn!(
            "backplane: Redis did not confirm the subscription to {} rooms within {stall:?} \
             (did it refuse the SUBSCRIBE? an ACL must allow the rooms' channels): their \
             joins are refused",
            late.len()
        );
        for (channel, note, _) in late {
            self.unconfirmed.remove(&channel);
            self.unpark(note);
        }
    }

    /// A join's answer came (or, `None`, was lost with the link: then it is taken back once
    /// Redis is back, if it waited; the lobby's member stays).
    pub(super) fn join_answered(&mut self, request: JoinRequest, frame: Option<&OwnedFrame>) {
        let answer = frame.and_then(join_answer);
        // (The lobby's joiner is joined anyway: its entry is written again when Redis is
        // back, with the room's.)
        if frame.is_none() && request.wait && fold(&request.room) != crate::core::LOBBY {
            let (room, nick) = (fold(&request.room), fold(&request.who.nick));
            self.to_leave.push((room.into(), nick.into()));
        }
        self.answers.push(Answer::Join { request, answer });
    }

    /// Sends what [`Backplane::join_answered`] kept to take back, and clears this node's
    /// entries in the rooms its members left while Redis was lost (after a reconnect; the
    /// core syncs the rooms it still has members in: [`Note::SyncRoom`]).
    pub(super) fn take_back_joins(&mut self) {
        for room in std::mem::take(&mut self.left_while_down) {
            self.room_note(Note::SyncRoom {
                room,
                members: Vec::new(),
                state: None,
            });
        }
        for (room, nick) in std::mem::take(&mut self.to_leave) {
            self.room_note(Note::Member {
                room,
                drop: Some(nick),
                set: None,
            });
        }
    }
}

/// What a note kept for a reconnect looks like, for `to_leave`.
pub(super) type Leave = (Arc<str>, Arc<str>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_entries_read_back() {
        let who = Source::new("Alice", "line", "f1.ip", "Alice A. Smith");
        let op = Status {
            op: true,
            voice: false,
        };
        let value = member_value(7, &who, op);
        assert_eq!(value, "7 Alice!line@f1.ip @ Alice A. Smith");
        let m = parse_member(&value).unwrap();
        assert_eq!((m.node, m.status, &m.source), (7, op, &who));
        let plain = parse_member("3 bob!u@h -").unwrap();
        assert_eq!(&*plain.source.realname, "");
        for bad in [
            "x bob!u@h -",
            "3 bob@h -",
            "3 bob!u -",
            "3 bo b!u@h -",
            "3 bob!u@h *",
            "3 bob!!u@h -",
            "",
        ]
        .into_iter()
        .map(String::from)
        .chain([
            format!("3 bob!u@{} -", "h".repeat(100_000)),
            format!("3 bob!{}@h -", "u".repeat(100_000)),
        ]) {
            assert!(
                parse_member(&bad).is_none(),
                "{}",
                &bad[..bad.len().min(40)]
            );
        }
    }

    #[test]
    fn a_room_list_reads_rooms_and_skips_what_is_not_one() {
        let bulk = |s: &str| OwnedFrame::BulkString(s.as_bytes().to_vec());
        let long = format!("#{}", "x".repeat(5000));
        let huge_topic = "t".repeat(100_000);
        let mut parts = Vec::new();
        for room in [
            ["#Den", "3", "hello there", "+nt"],
            ["#hush", "1", "", "+nst key"],
            ["nohash", "2", "", "+nt"],
            [&long, "2", "", ""],
            ["#zero", "0", "", ""],
            ["#neg", "-1", "", ""],
            ["#big", "99999999999999999999999", "", ""],
            ["#long", "1", &huge_topic, "+"],
            ["#plain", "7", "", ""],
        ] {
            parts.extend(room.iter().map(|s| bulk(s)));
        }
        // A trailing part of an entry is ignored.
        parts.push(bulk("#half"));
        let rooms = rooms_answer(&OwnedFrame::Array(parts)).unwrap();
        let names: Vec<&str> = rooms.iter().map(|r| &*r.name).collect();
        assert_eq!(names, ["#Den", "#hush", "#long", "#plain"]);
        assert_eq!(rooms[0].members, 3);
        assert_eq!(rooms[0].topic.as_deref(), Some("hello there"));
        assert!(!rooms[0].secret);
        assert!(rooms[1].secret);
        assert_eq!(rooms[1].topic, None);
        assert!(rooms[2].topic.as_ref().unwrap().len() <= crate::core::names::LABEL_MAX);
        assert_eq!((rooms[3].members, rooms[3].secret), (7, false));
        assert!(rooms_answer(&OwnedFrame::Error("ERR".into())).is_none());
        assert!(rooms_answer(&OwnedFrame::Array(vec![OwnedFrame::Integer(1)])).is_none());
        assert_eq!(rooms_answer(&OwnedFrame::Array(vec![])), Some(vec![]));
        let script = String::from_utf8_lossy(ROOMS_SCRIPT);
        assert!(script.contains("HLEN") && script.contains("'topic', 'modes'"));
    }

    #[test]
    fn names_of_a_room_elsewhere_read_its_members_secrecy_and_name() {
        let bulk = |s: &str| OwnedFrame::BulkString(s.as_bytes().to_vec());
        let members = OwnedFrame::Array(vec![
            bulk("alice"),
            bulk("1 alice!u@h @ A"),
            bulk("bob"),
            bulk("2 bob!u@h ? B"),
            bulk("junk"),
            bulk("not an entry"),
        ]);
        let answer = |modes: &str, name: &str| {
            names_answer(&OwnedFrame::Array(vec![
                members.clone(),
                bulk(modes),
                bulk(name),
            ]))
        };
        let got = answer("+nt", "#Den").unwrap();
        assert_eq!(got.name.as_deref(), Some("#Den"));
        let nicks: Vec<&str> = got.members.iter().map(|m| &*m.source.nick).collect();
        assert_eq!(nicks, ["alice"], "not a join not completed, nor junk");
        assert!(!got.secret);
        assert!(answer("+s", "").unwrap().secret);
        assert!(!answer("", "").unwrap().secret);
        assert!(!answer("-s", "").unwrap().secret);
        let long = format!("#{}", "x".repeat(100_000));
        assert_eq!(answer("", &long).unwrap().name, None, "not a room's name");
        assert!(names_answer(&OwnedFrame::Array(vec![members.clone()])).is_none());
        assert!(names_answer(&OwnedFrame::Error("ERR".into())).is_none());
        let script = String::from_utf8_lossy(NAMES_SCRIPT);
        assert!(script.contains("'COUNT', ARGV[1]") && script.contains("2 * tonumber(ARGV[1])"));
    }

    #[test]
    fn a_sync_answers_the_rooms_members_within_the_join_bound() {
        let script = String::from_utf8_lossy(SYNC_SCRIPT);
        assert!(script.contains(&format!("'COUNT', {JOIN_MEMBERS_MAX}")));
        assert!(script.contains(&format!("for i = 1, {}", 2 * JOIN_MEMBERS_MAX)));
        let bulk = |s: &str| OwnedFrame::BulkString(s.as_bytes().to_vec());
        let frame = OwnedFrame::Array(vec![
            bulk("alice"),
            bulk("1 alice!u@h @ A"),
            bulk("bob"),
            bulk("2 bob!u@h ? B"),
        ]);
        let members = members_answer(&frame).unwrap();
        assert_eq!(members.len(), 1, "a join not completed is not a member");
        assert!(members_answer(&OwnedFrame::Error("ERR".into())).is_none());
    }

    #[test]
    fn a_nick_key_names_the_node_holding_it() {
        let bulk = |s: &str| OwnedFrame::BulkString(s.as_bytes().to_vec());
        assert_eq!(holder_node(&bulk("b:3:17:2")).as_deref(), Some("b"));
        assert_eq!(
            holder_node(&bulk("host:a-1:3:17:2")).as_deref(),
            Some("host:a-1")
        );
        assert_eq!(holder_node(&bulk("3:17:2")), None);
        let long = format!("{}:3:17:2", "n".repeat(100_000));
        assert_eq!(holder_node(&bulk(&long)), None, "not a node's name");
        assert_eq!(
            holder_node(&bulk("a\x07b:3:17:2")),
            None,
            "a control character"
        );
        assert_eq!(holder_node(&OwnedFrame::Null), None);
    }

    #[test]
    fn join_answers_read_back_and_skip_bad_entries() {
        let bulk = |s: &str| OwnedFrame::BulkString(s.as_bytes().to_vec());
        let frame = OwnedFrame::Array(vec![
            OwnedFrame::Integer(0),
            OwnedFrame::Array(vec![
                bulk("alice"),
                bulk("1 alice!u@h @ A"),
                bulk("junk"),
                bulk("not an entry"),
            ]),
            OwnedFrame::Array(vec![
                bulk("founded"),
                bulk("1 alice 5"),
                bulk("topic"),
                bulk("hi"),
            ]),
        ]);
        let answer = join_answer(&frame).unwrap();
        assert!(!answer.created);
        assert_eq!(answer.members.len(), 1);
        assert!(answer.members[0].status.op);
        assert_eq!(&*answer.state.topic.unwrap().text, "hi");
        assert!(join_answer(&OwnedFrame::Error("ERR".into())).is_none());
        assert!(join_answer(&OwnedFrame::Array(vec![OwnedFrame::Integer(1)])).is_none());
    }
}

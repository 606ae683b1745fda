//! Nodes alive and dead: heartbeats, the registry of live nodes and their users, the clean-up
//! after a node that died, and resynchronising after Redis comes back.
//!
//! Keys (every one starts with the prefix `P`):
//! - `P node:{incarnation}` = the node's name, set with a time to live of [`TTL`] and set again
//!   every [`HEARTBEAT`] ([`HEARTBEAT_SCRIPT`]): the node's heartbeat. A node that stops (killed,
//!   frozen, cut off) lets it expire. After the node was found dead it holds a tombstone
//!   instead ([`TOMBSTONE`], for [`TOMBSTONE_TTL`]), so that the node, if it was only stalled
//!   or cut off, learns that the others were told its users quit.
//! - hash `P nodes`: incarnation → node name, the live registry.
//! - hash `P users:{incarnation}`: folded nick → [`record`] of each local user (its nick key's
//!   value, `nick!user@host`, its rooms), written as users register, change nick, join, part
//!   and leave (batched: one HDEL and one HSET per turn at most, per [`HSET_BATCH`] users).
//!
//! Every [`HEARTBEAT`], each node also runs [`DEAD_SCRIPT`]: the incarnations in the registry
//! whose heartbeat key is gone are taken out of it atomically, so exactly one node (the one
//! whose script took them out) cleans up after each: it takes that node's users out of its
//! users hash [`REAP_BATCH`] at a time ([`POP_SCRIPT`], at most one batch under way, and only
//! while the queue towards Redis is less than half full), and for each user runs
//! [`REAP_USER_SCRIPT`]: its quit ("node lost") is PUBLISHed on its rooms' channels, its nick
//! key deleted if it still holds that user's value, and its entry in each of its rooms'
//! member lists (`P members:{room}`) removed if that entry is still the dead incarnation's
//! (the room's `P roomstate:{room}` goes when that empties the list).
//!
//! The quit is an envelope like any other, published under the origin `{reaper} reaper`
//! (a space: no node is called that), so every node, the reaper included, hands it to its core
//! once (by origin and number) and tells its local members as it tells them of a remote quit.
//!
//! A node started with the same `--node` name as an earlier one cleans up after its earlier
//! incarnations at once (the start's [`DEAD_SCRIPT`] takes every other incarnation of its name,
//! heartbeat or not; one still beating is logged: two running processes must not share a
//! name).
//!
//! After Redis comes back (a reconnect), and when the heartbeat finds this node no longer in
//! the registry (it was taken for dead while stalled or cut off), the node resynchronises:
//! it registers again ([`REGISTER_SCRIPT`], which says whether it had been taken for dead),
//! writes its users hash again, and claims every local user's nick again ([`RECLAIM_SCRIPT`]:
//! free, or already this user's, is fine). A user whose nick someone else holds by then
//! becomes a guest of this node ([`Answer::NickLost`]). If the node had been taken for dead,
//! once every claim is answered it publishes its users' joins again, so the other nodes see
//! them back. For [`GRACE`] after a reconnect a node finds nobody dead: the others may still be
//! on their way back after the same outage. Nor does it while its own heartbeat is older than
//! [`FRESH`]: Redis (or this node) stalled, and the others' heartbeats may have expired for
//! the same reason.
//!
//! A node stopped gracefully takes itself out of the registry ([`LEAVE_SCRIPT`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use redis_protocol::resp2::types::OwnedFrame;

use super::{Backplane, Expect, RETRY_MAX, envelope};
use crate::core::cluster::{Answer, LocalUser, NickClaim, Shared, is_cluster_guest};
use crate::core::names::{check_nick, check_room, fold};
use crate::core::{ClientId, Source};

/// How often a node sets its heartbeat again and looks for dead nodes.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a heartbeat lives: a node is taken for dead at most this long (plus a
/// [`HEARTBEAT`]) after its last beat. Five beats: a loop busy for a few seconds is not taken
/// for dead, and a dead node is noticed within about six seconds.
pub const TTL: Duration = Duration::from_secs(5);
/// After a reconnect, how long a node takes nobody for dead: the others reconnect after the
/// same outage within their backoff (at most 5 s apart) and beat again within a [`TTL`].
pub const GRACE: Duration = Duration::from_secs(RETRY_MAX.as_secs() + TTL.as_secs());
/// What a dead node's heartbeat key holds once it was found dead (with a space: no node name).
pub const TOMBSTONE: &str = "taken for dead";
/// How long the tombstone stays: a node cut off for longer than this does not learn, when it
/// comes back, that its users were announced as quitting (and does not announce them again).
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How recent this node's own heartbeat must be for it to take others for dead (see
/// [`DEAD_SCRIPT`]): two beats, so one late turn is not a stall.
pub const FRESH: Duration = Duration::from_secs(2 * HEARTBEAT.as_secs());
/// Users of a dead node cleaned up per batch (one batch under way at a time).
pub const REAP_BATCH: usize = 100;
/// Bytes of a dead node's users hash taken per batch at most (but one record).
pub const POP_BYTES: usize = 1 << 20;
/// The most a users hash record read back may weigh (more than any node writes: a user in
/// `--max-rooms` rooms of long names), and little enough for a reply.
pub const RECORD_MAX: usize = POP_BYTES + POP_BYTES / 2;
const _: () = assert!(RECORD_MAX + (64 << 10) < super::redis::MAX_REPLY);
/// Users per HSET (and nicks per HDEL) of the users hash.
pub const HSET_BATCH: usize = 512;
/// The most rooms a [`record`] read back may name (`--max-rooms` is at most this).
pub const MAX_RECORD_ROOMS: usize = u16::MAX as usize;
/// The quit reason of a dead node's users.
pub const NODE_LOST: &str = "node lost";

/// Sets the heartbeat if (and only if) this node is still in the registry; 1 if so, 0 if it
/// was taken out (found dead while stalled or cut off, or Redis lost its data).
/// KEYS: nodes, node:{inc}. ARGV: incarnation, name, TTL in ms.
pub const HEARTBEAT_SCRIPT: &[u8] = b"\
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end \
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) return 1";

/// Registers this node and sets its heartbeat: 0 if it was registered already, 1 if Redis did
/// not know it (a new node, or a Redis that lost its data), 2 if it was found dead meanwhile
/// (its heartbeat key holds a tombstone). The incarnation counter is set to this node's
/// incarnation if it is lower (a Redis that lost it would give a new node a number in use), or
/// not a number (written by something else: the comparison failed the script, and the node,
/// unregistered, resynchronised every second).
/// KEYS: nodes, node:{inc}, incarnation. ARGV: incarnation, name, TTL in ms.
pub const REGISTER_SCRIPT: &[u8] = b"\
local counter = tonumber(redis.call('GET', KEYS[3]) or '0') \
if not counter or counter < tonumber(ARGV[1]) then \
  redis.call('SET', KEYS[3], ARGV[1]) end \
local was = redis.call('HGET', KEYS[1], ARGV[1]) \
local beat = redis.call('GET', KEYS[2]) \
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) \
if was then return 0 end \
if beat and beat ~= ARGV[2] then return 2 end \
return 1";

/// Takes out of the registry every other incarnation whose heartbeat is gone (or, at start,
/// that has this node's name), leaving a tombstone; returns them as (incarnation, name,
/// whether it still had a heartbeat) triples. Atomic: of several nodes running it, each dead
/// incarnation goes to exactly one.
///
/// Nobody is taken for dead while this node's own heartbeat is older than [`FRESH`] (it runs
/// before this node's heartbeat of the same turn): then either this node or Redis itself
/// (blocked by a slow command, say) stalled, and the others' heartbeats may have expired
/// for the same reason; they get a turn to beat again first. Nor while this node is not in
/// the registry itself.
/// KEYS: nodes. ARGV: prefix, own incarnation, own name ('' after the start), tombstone, its
/// TTL in ms, [`FRESH`]'s bound on this node's heartbeat's remaining TTL in ms.
pub const DEAD_SCRIPT: &[u8] = b"\
local lost = {} \
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return lost end \
if redis.call('PTTL', ARGV[1] .. 'node:' .. ARGV[2]) < tonumber(ARGV[6]) then return lost end \
local all = redis.call('HGETALL', KEYS[1]) \
for i = 1, #all, 2 do \
  local inc, name = all[i], all[i + 1] \
  if inc ~= ARGV[2] then \
    local beat = ARGV[1] .. 'node:' .. inc \
    local alive = redis.call('EXISTS', beat) \
    if alive == 0 or name == ARGV[3] then \
      redis.call('HDEL', KEYS[1], inc) \
      redis.call('SET', beat, ARGV[4], 'PX', ARGV[5]) \
      lost[#lost + 1] = inc \
      lost[#lost + 1] = name \
      lost[#lost + 1] = alive \
    end \
  end \
end \
return lost";

/// Takes up to `ARGV[2]` users out of a dead incarnation's users hash and returns them (field,
/// value, field, value…; none: done, the hash is gone), no more than `ARGV[3]` bytes of them
/// (at least one: a batch of users in many rooms stays under a reply's
/// [`MAX_REPLY`](super::redis::MAX_REPLY)); nil if the incarnation is in the registry again
/// (it came back: the clean-up stops). A record over `ARGV[4]` bytes, which no node writes,
/// is deleted without being returned. (`replicate_commands`: Redis before 5 refuses writes
/// after HSCAN in a script without it; a no-op since.)
/// KEYS: users:{inc}, nodes. ARGV: incarnation, count, [`POP_BYTES`], [`RECORD_MAX`].
pub const POP_SCRIPT: &[u8] = b"\
if redis.replicate_commands then redis.replicate_commands() end \
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return false end \
local out, cursor, bytes, full = {}, '0', 0, false \
local budget, most = tonumber(ARGV[3]), tonumber(ARGV[4]) \
repeat \
  local r = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', ARGV[2]) \
  cursor = r[1] \
  for i = 1, #r[2], 2 do \
    local n = #r[2][i] + #r[2][i + 1] + 32 \
    if n > most then \
      redis.call('HDEL', KEYS[1], r[2][i]) \
    elseif not full and (#out == 0 or bytes + n <= budget) then \
      out[#out + 1] = r[2][i] \
      out[#out + 1] = r[2][i + 1] \
      bytes = bytes + n \
    else \
      full = true \
    end \
  end \
until cursor == '0' or #out >= 2 * tonumber(ARGV[2]) or full \
for i = 1, #out, 2 do redis.call('HDEL', KEYS[1], out[i]) end \
return out";

/// Cleans up after one user of a dead incarnation (unless it came back): publishes its quit,
/// deletes its nick key if it still holds its value, takes it out of its rooms' member lists
/// if the entry there is still the dead incarnation's (and drops a room's state when that
/// empties the list). 1 if done, 0 if the incarnation is registered again.
/// KEYS: nodes, nick key, then members:{room}, roomstate:{room} per room. ARGV: incarnation,
/// nick key value ('' for a guest), folded nick, envelope, channels….
pub const REAP_USER_SCRIPT: &[u8] = b"\
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end \
for i = 5, #ARGV do redis.call('PUBLISH', ARGV[i], ARGV[4]) end \
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end \
local mine = ARGV[1] .. ' ' \
for i = 3, #KEYS, 2 do \
  local m = redis.call('HGET', KEYS[i], ARGV[3]) \
  if m and string.sub(m, 1, #mine) == mine then \
    redis.call('HDEL', KEYS[i], ARGV[3]) \
    if redis.call('HLEN', KEYS[i]) == 0 then redis.call('DEL', KEYS[i + 1]) end \
  end \
end \
return 1";

/// Claims a nick again for the user that held it: 1 if it is free (now set) or this user's
/// already, 0 if someone else holds it.
/// KEYS: nick key. ARGV: value.
pub const RECLAIM_SCRIPT: &[u8] = b"\
local v = redis.call('GET', KEYS[1]) \
if v == ARGV[1] then return 1 end \
if v then return 0 end \
redis.call('SET', KEYS[1], ARGV[1]) return 1";

/// Takes this node out of the registry when it stops gracefully (its users have quit by
/// then): nobody has to find it dead.
/// KEYS: nodes, node:{inc}, users:{inc}. ARGV: incarnation.
pub const LEAVE_SCRIPT: &[u8] = b"\
redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('DEL', KEYS[2], KEYS[3]) return 1";

/// What a reply on the commands connection answers, for this module.
#[derive(Debug)]
pub enum Reply {
    /// [`REGISTER_SCRIPT`] (`start`: the node's first, whose answer means nothing).
    Register { start: bool },
    /// [`HEARTBEAT_SCRIPT`].
    Heartbeat,
    /// [`DEAD_SCRIPT`].
    Dead,
    /// [`POP_SCRIPT`] for this incarnation.
    Pop(u64),
    /// [`REAP_USER_SCRIPT`].
    Reaped,
    /// [`RECLAIM_SCRIPT`] for this claim.
    Reclaim(NickClaim),
    /// `CONFIG GET maxmemory-policy`.
    Policy,
}

/// This node's part in the registry, kept by the [`Backplane`].
#[derive(Debug, Default)]
pub struct Nodes {
    /// The local users (kept while Redis is lost too: written again on return).
    users: HashMap<ClientId, LocalUser>,
    /// Users whose record changed since the last flush.
    dirty: HashSet<ClientId>,
    /// Folded nicks no local user holds any more, to take out of the users hash.
    gone: Vec<Arc<str>>,
    /// When to beat next (`None`: not connected yet).
    next_beat: Option<Instant>,
    /// No dead node is looked for before this (see [`GRACE`]).
    detect_after: Option<Instant>,
    /// A heartbeat, a search for dead nodes, a batch of a dead node's users is under way.
    beating: bool,
    detecting: bool,
    popping: bool,
    /// Dead incarnations (and their names) to clean up after, first under way.
    reaping: VecDeque<(u64, String)>,
    /// Users of the first of them cleaned up so far.
    reaped: usize,
    /// Nick claims made again after a resync and not answered yet.
    reclaiming: usize,
    /// Local users whose joins are to be published again (this node was taken for dead).
    rejoin: VecDeque<ClientId>,
    /// Their folded nicks (and those they took since): until their joins are published
    /// again, the other nodes take them for gone, so their nick changes, parts, joins and
    /// quits are not published (the joins published again show where they are then).
    rejoin_nicks: HashSet<String>,
}

/// A user's entry in its node's users hash: `{nick key value or -} {nick}!{user}@{host}
/// {folded room}…` (spaces separate: none of these hold one).
pub fn record(value: Option<&str>, user: &LocalUser) -> String {
    let s = &user.source;
    let mut out = format!("{} {}!{}@{}", value.unwrap_or("-"), s.nick, s.user, s.host);
    for room in &user.rooms {
        out.push(' ');
        out.push_str(room);
    }
    out
}

/// A users hash entry read back ([`record`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    /// Its nick key's value (`None`: a guest, whose nick has no key).
    pub value: Option<String>,
    pub who: Arc<Source>,
    /// Folded room names.
    pub rooms: Vec<Arc<str>>,
}

/// Reads a [`record`]; `None` if it is not one (a nick or a room that is not one, a missing
/// part).
pub fn parse_record(s: &str) -> Option<Record> {
    let mut words = s.split(' ');
    let value = words.next().filter(|v| !v.is_empty())?;
    let mask = words.next()?;
    let (nick, rest) = mask.split_once('!')?;
    let (user, host) = rest.rsplit_once('@')?;
    check_nick(nick).ok()?;
    if user.is_empty() || host.is_empty() {
        return None;
    }
    let mut rooms: Vec<Arc<str>> = Vec::new();
    let mut seen = HashSet::new();
    for room in words {
        check_room(room).ok()?;
        // Once each (the quit is published on each room's channel, and carries them all), and
        // no more than `--max-rooms` allows any user: a record written by something else
        // must not make the reaper publish a huge quit on thousands of channels.
        if seen.insert(fold(room)) {
            rooms.push(Arc::from(fold(room)));
        }
        if rooms.len() > MAX_RECORD_ROOMS {
            return None;
        }
    }
    Some(Record {
        value: (value != "-").then(|| value.to_string()),
        who: Source::new(nick, user, host, ""),
        rooms,
    })
}

/// Whether `shared` is a nick change, part, join or quit of a user whose folded nick is in
/// `nicks` (users the other nodes take for gone until their joins are published again).
/// Messages are not hidden: they reach the other nodes' members as any message does.
pub fn hidden(nicks: &HashSet<String>, shared: &Shared) -> bool {
    !nicks.is_empty()
        && match shared {
            Shared::NickChanged { old: who, .. }
            | Shared::Quit { who, .. }
            | Shared::Parted { who, .. }
            | Shared::Joined { who, .. } => nicks.contains(&fold(&who.nick)),
            _ => false,
        }
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

impl Backplane {
    fn nodes_key(&self) -> String {
        format!("{}nodes", self.config.prefix)
    }

    fn beat_key(&self, incarnation: u64) -> String {
        format!("{}node:{incarnation}", self.config.prefix)
    }

    fn users_key(&self, incarnation: u64) -> String {
        format!("{}users:{incarnation}", self.config.prefix)
    }

    fn push_node(&mut self, parts: &[&[u8]], reply: Reply) {
        self.commands.push(parts);
        self.expect.push_back(Expect::Node(reply));
    }

    /// The value of `user`'s nick key (`None` for a guest).
    fn user_value(&self, user: &LocalUser) -> Option<String> {
        (!is_cluster_guest(&fold(&user.source.nick))).then(|| {
            let claim = NickClaim {
                client: user.client,
                serial: user.serial,
                nick: user.source.nick.clone(),
            };
            String::from_utf8(self.nick_value(&claim)).expect("names are UTF-8")
        })
    }

    /// At start, right after connecting: registers, cleans up after this node's earlier
    /// incarnations (and whatever else is dead), and checks Redis's eviction policy.
    pub(super) fn nodes_start(&mut self, now: Instant) {
        self.push_register(true);
        self.push_dead(true);
        self.push_node(&[b"CONFIG", b"GET", b"maxmemory-policy"], Reply::Policy);
        self.nodes.next_beat = Some(now + HEARTBEAT);
        self.nodes.detect_after = Some(now);
    }

    fn push_register(&mut self, start: bool) {
        let (nodes, beat) = (self.nodes_key(), self.beat_key(self.incarnation));
        let (inc, node) = (self.incarnation.to_string(), self.config.node.clone());
        let (ttl, counter) = (ms(TTL), format!("{}incarnation", self.config.prefix));
        self.push_node(
            &[
                b"EVAL",
                REGISTER_SCRIPT,
                b"3",
                nodes.as_bytes(),
                beat.as_bytes(),
                counter.as_bytes(),
                inc.as_bytes(),
                node.as_bytes(),
                ttl.as_bytes(),
            ],
            Reply::Register { start },
        );
    }

    fn push_dead(&mut self, start: bool) {
        let nodes = self.nodes_key();
        let inc = self.incarnation.to_string();
        let name = if start {
            self.config.node.clone()
        } else {
            String::new()
        };
        let (prefix, ttl) = (self.config.prefix.clone(), ms(TOMBSTONE_TTL));
        let fresh = ms(TTL - FRESH);
        self.push_node(
            &[
                b"EVAL",
                DEAD_SCRIPT,
                b"1",
                nodes.as_bytes(),
                prefix.as_bytes(),
                inc.as_bytes(),
                name.as_bytes(),
                TOMBSTONE.as_bytes(),
                ttl.as_bytes(),
                fresh.as_bytes(),
            ],
            Reply::Dead,
        );
        self.nodes.detecting = true;
    }

    /// A local user's state ([`Note::Present`](crate::core::cluster::Note::Present)).
    pub(super) fn user_present(&mut self, user: LocalUser) {
        let nodes = &mut self.nodes;
        if let Some(old) = nodes.users.get(&user.client) {
            let (was, is) = (fold(&old.source.nick), fold(&user.source.nick));
            if was != is {
                if nodes.rejoin_nicks.contains(&was) {
                    nodes.rejoin_nicks.insert(is.clone());
                }
                nodes.gone.push(was.into());
            }
        }
        nodes.dirty.insert(user.client);
        nodes.users.insert(user.client, user);
    }

    /// A local user left ([`Note::Absent`](crate::core::cluster::Note::Absent)).
    pub(super) fn user_absent(&mut self, client: ClientId) {
        let nodes = &mut self.nodes;
        if let Some(old) = nodes.users.remove(&client) {
            nodes.gone.push(fold(&old.source.nick).into());
        }
        nodes.dirty.remove(&client);
    }

    /// Before the turn's write (Redis up): the users hash's changes, and joins to publish
    /// again.
    pub(super) fn nodes_flush(&mut self) {
        let key = self.users_key(self.incarnation);
        let gone = std::mem::take(&mut self.nodes.gone);
        for batch in gone.chunks(HSET_BATCH) {
            let mut parts: Vec<&[u8]> = vec![b"HDEL", key.as_bytes()];
            parts.extend(batch.iter().map(|n| n.as_bytes()));
            self.commands.push(&parts);
            self.expect.push_back(Expect::Other);
        }
        let dirty: Vec<ClientId> = self.nodes.dirty.drain().collect();
        self.push_records(&key, dirty.into_iter());
        // Joins published again once every nick is settled (a user who lost its nick is
        // seen back under its guest nick), and only while the queue has room.
        while self.nodes.reclaiming == 0 && self.commands.queued() < self.config.max_queue / 2 {
            let Some(client) = self.nodes.rejoin.pop_front() else {
                break;
            };
            let Some(user) = self.nodes.users.get(&client) else {
                continue;
            };
            let (who, rooms) = (user.source.clone(), user.rooms.clone());
            // Back for the others from here on: what it does next is published again.
            self.nodes.rejoin_nicks.remove(&fold(&who.nick));
            for room in rooms {
                let who = who.clone();
                self.publish(&Shared::Joined { room, who }, None);
            }
        }
        if self.nodes.rejoin.is_empty() {
            self.nodes.rejoin_nicks.clear();
        }
    }

    /// Whether `shared` concerns a local user the other nodes take for gone until its joins
    /// are published again (see `rejoin_nicks`): not published.
    pub(super) fn hides(&self, shared: &Shared) -> bool {
        hidden(&self.nodes.rejoin_nicks, shared)
    }

    /// HSETs the records of `clients` (those still here) into the users hash `key`.
    fn push_records(&mut self, key: &str, clients: impl Iterator<Item = ClientId>) {
        let records: Vec<(String, String)> = clients
            .filter_map(|c| self.nodes.users.get(&c))
            .map(|u| {
                let value = self.user_value(u);
                (fold(&u.source.nick), record(value.as_deref(), u))
            })
            .collect();
        for batch in records.chunks(HSET_BATCH) {
            let mut parts: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
            for (field, value) in batch {
                parts.extend([field.as_bytes(), value.as_bytes()]);
            }
            self.commands.push(&parts);
            self.expect.push_back(Expect::Other);
        }
    }

    /// Each turn while Redis is up: the heartbeat and the search for dead nodes when due, the
    /// next batch of a dead node's users if there is room.
    pub(super) fn nodes_tick(&mut self, now: Instant) {
        if self.nodes.next_beat.is_some_and(|at| now >= at) {
            self.nodes.next_beat = Some(now + HEARTBEAT);
            // Before the heartbeat: the search looks at how old this node's own is.
            if !self.nodes.detecting && self.nodes.detect_after.is_some_and(|at| now >= at) {
                self.push_dead(false);
            }
            if !self.nodes.beating {
                let (nodes, beat) = (self.nodes_key(), self.beat_key(self.incarnation));
                let (inc, node) = (self.incarnation.to_string(), self.config.node.clone());
                let ttl = ms(TTL);
                self.push_node(
                    &[
                        b"EVAL",
                        HEARTBEAT_SCRIPT,
                        b"2",
                        nodes.as_bytes(),
                        beat.as_bytes(),
                        inc.as_bytes(),
                        node.as_bytes(),
                        ttl.as_bytes(),
                    ],
                    Reply::Heartbeat,
                );
                self.nodes.beating = true;
            }
        }
        self.pop_next();
    }

    /// When the heartbeat is due.
    pub(super) fn next_beat(&self) -> Option<Instant> {
        self.nodes.next_beat
    }

    /// Asks for the next batch of the first dead incarnation's users, unless one is under way
    /// or the queue towards Redis is half full.
    fn pop_next(&mut self) {
        if self.down || self.nodes.popping || self.commands.queued() >= self.config.max_queue / 2 {
            return;
        }
        let Some(&(inc, _)) = self.nodes.reaping.front() else {
            return;
        };
        let (users, nodes) = (self.users_key(inc), self.nodes_key());
        let (inc_s, count) = (inc.to_string(), REAP_BATCH.to_string());
        let (budget, most) = (POP_BYTES.to_string(), RECORD_MAX.to_string());
        self.push_node(
            &[
                b"EVAL",
                POP_SCRIPT,
                b"2",
                users.as_bytes(),
                nodes.as_bytes(),
                inc_s.as_bytes(),
                count.as_bytes(),
                budget.as_bytes(),
                most.as_bytes(),
            ],
            Reply::Pop(inc),
        );
        self.nodes.popping = true;
    }

    /// After a reconnect (`reconnect`), or when the heartbeat found this node out of the
    /// registry: registers again, writes the users hash again, claims every local user's
    /// nick again.
    pub(super) fn nodes_resync(&mut self, now: Instant, reconnect: bool) {
        self.push_register(false);
        let key = self.users_key(self.incarnation);
        self.commands.push(&[b"DEL", key.as_bytes()]);
        self.expect.push_back(Expect::Other);
        self.nodes.dirty.clear();
        self.nodes.gone.clear();
        let clients: Vec<ClientId> = self.nodes.users.keys().copied().collect();
        self.push_records(&key, clients.iter().copied());
        for client in clients {
            let user = &self.nodes.users[&client];
            let Some(value) = self.user_value(user) else {
                continue;
            };
            let claim = NickClaim {
                client,
                serial: user.serial,
                nick: user.source.nick.clone(),
            };
            let nick_key = self.nick_key(&claim.nick);
            self.push_node(
                &[b"EVAL", RECLAIM_SCRIPT, b"1", &nick_key, value.as_bytes()],
                Reply::Reclaim(claim),
            );
            self.nodes.reclaiming += 1;
        }
        self.nodes.next_beat = Some(now + HEARTBEAT);
        if reconnect {
            self.nodes.detect_after = Some(now + GRACE);
        }
    }

    /// Redis was lost: nothing under way any more (a reconnect resynchronises; dead nodes
    /// not cleaned up yet are found again, as their incarnations stay in the registry until
    /// their users are taken, or were taken out with their users hash left for the rest).
    pub(super) fn nodes_lost(&mut self) {
        let n = &mut self.nodes;
        n.beating = false;
        n.detecting = false;
        n.popping = false;
        n.reclaiming = 0;
    }

    /// What Redis answered to one of this module's commands.
    pub(super) fn nodes_reply(&mut self, reply: Reply, frame: OwnedFrame) {
        if let OwnedFrame::Error(e) = &frame
            && !matches!(reply, Reply::Policy)
        {
            self.redis_error("commands", e);
        }
        match reply {
            Reply::Register { start: true } => {}
            Reply::Register { start: false } => match frame {
                OwnedFrame::Integer(1) => info!(
                    "backplane: Redis did not know this node any more (restarted empty?): \
                     registered again, its {} users' nicks claimed again",
                    self.nodes.users.len()
                ),
                OwnedFrame::Integer(2) => {
                    warn!(
                        "backplane: this node was taken for dead by another (no heartbeat for \
                         {TTL:?}, or a process started with the same --node name) and its users \
                         announced as quitting: registered again, its {} users' nicks claimed \
                         again and their joins published again",
                        self.nodes.users.len()
                    );
                    self.nodes.rejoin = self.nodes.users.keys().copied().collect();
                    // Its members' entries went too (and a room's state with its last
                    // member): the core writes its rooms again.
                    self.answers.push(Answer::Resync);
                    self.nodes.rejoin_nicks = (self.nodes.users.values())
                        .map(|u| fold(&u.source.nick))
                        .collect();
                }
                _ => {}
            },
            Reply::Heartbeat => {
                self.nodes.beating = false;
                if frame == OwnedFrame::Integer(0) {
                    warn!(
                        "backplane: this node is no longer in the registry of live nodes: \
                         registering again"
                    );
                    self.nodes_resync(Instant::now(), false);
                }
            }
            Reply::Dead => {
                self.nodes.detecting = false;
                let OwnedFrame::Array(parts) = frame else {
                    return;
                };
                for triple in parts.chunks(3) {
                    let [
                        OwnedFrame::BulkString(inc),
                        OwnedFrame::BulkString(name),
                        OwnedFrame::Integer(alive),
                    ] = triple
                    else {
                        continue;
                    };
                    let name = String::from_utf8_lossy(name).into_owned();
                    let Some(inc) = std::str::from_utf8(inc).ok().and_then(|s| s.parse().ok())
                    else {
                        continue;
                    };
                    if name == self.config.node {
                        info!(
                            "backplane: cleaning up after incarnation {inc} of this node \
                             ({name}): its users quit, their nicks are freed"
                        );
                        if *alive == 1 {
                            warn!(
                                "backplane: incarnation {inc} of node {name} still had a \
                                 heartbeat: either it stopped less than {TTL:?} ago (a restart \
                                 after a crash or kill -9: nothing to do), or another process \
                                 runs with --node {name}: the two do not hear each other, give \
                                 each node its own name"
                            );
                        }
                    } else {
                        warn!(
                            "backplane: node {name} (incarnation {inc}) is lost (no heartbeat \
                             for {TTL:?}): this node announces its users' quits and frees \
                             their nicks"
                        );
                    }
                    self.nodes.reaping.push_back((inc, name));
                }
                self.pop_next();
            }
            Reply::Pop(inc) => {
                self.nodes.popping = false;
                match frame {
                    OwnedFrame::Array(parts) if !parts.is_empty() => {
                        for pair in parts.chunks(2) {
                            if let [OwnedFrame::BulkString(f), OwnedFrame::BulkString(v)] = pair {
                                self.reap_user(inc, f, v);
                            }
                        }
                    }
                    OwnedFrame::Array(_) | OwnedFrame::Null => {
                        let (_, name) = self.nodes.reaping.pop_front().unwrap_or_default();
                        let reaped = std::mem::take(&mut self.nodes.reaped);
                        if frame == OwnedFrame::Null {
                            info!(
                                "backplane: node {name} (incarnation {inc}) is back: cleaning \
                                 up after it stopped ({reaped} users done)"
                            );
                        } else {
                            info!(
                                "backplane: cleaned up after node {name} (incarnation {inc}): \
                                 {reaped} users"
                            );
                        }
                    }
                    // An error (the key is not a hash?): given up, or it would be asked again
                    // every turn.
                    other => {
                        let (_, name) = self.nodes.reaping.pop_front().unwrap_or_default();
                        self.nodes.reaped = 0;
                        warn!(
                            "backplane: gave up cleaning up after node {name} (incarnation \
                             {inc}): Redis answered {other:?}"
                        );
                    }
                }
                self.pop_next();
            }
            Reply::Reaped => {}
            Reply::Reclaim(claim) => {
                self.nodes.reclaiming = self.nodes.reclaiming.saturating_sub(1);
                if frame == OwnedFrame::Integer(0) {
                    info!(
                        "backplane: the nick {} of a local user was taken meanwhile: the user \
                         becomes a guest",
                        claim.nick
                    );
                    self.answers.push(Answer::NickLost(claim));
                }
            }
            Reply::Policy => match frame {
                OwnedFrame::Array(parts) => match parts.get(1) {
                    Some(OwnedFrame::BulkString(p)) if p == b"noeviction" => {
                        debug!("backplane: Redis's maxmemory-policy is noeviction")
                    }
                    Some(OwnedFrame::BulkString(p)) => warn!(
                        "backplane: Redis's maxmemory-policy is {}, not noeviction: a Redis \
                         short of memory may evict nick claims (two users could then hold one \
                         nick) and heartbeats (a live node taken for dead); set \
                         maxmemory-policy noeviction",
                        String::from_utf8_lossy(p)
                    ),
                    _ => warn!(
                        "backplane: could not check Redis's maxmemory-policy (CONFIG GET \
                         answered nothing): it must be noeviction"
                    ),
                },
                other => warn!(
                    "backplane: could not check Redis's maxmemory-policy ({}): it must be \
                     noeviction, or nick claims may be evicted",
                    match other {
                        OwnedFrame::Error(e) => format!("CONFIG GET answered: {e}"),
                        _ => "CONFIG GET answered something else".into(),
                    }
                ),
            },
        }
    }

    /// One user of dead incarnation `inc` (its users hash field and value).
    fn reap_user(&mut self, inc: u64, field: &[u8], value: &[u8]) {
        let Some(rec) = std::str::from_utf8(value).ok().and_then(parse_record) else {
            debug!(
                "backplane: dropped a users hash entry that is not one: {}",
                String::from_utf8_lossy(field)
            );
            return;
        };
        self.nodes.reaped += 1;
        let folded = fold(&rec.who.nick);
        let prefix = self.config.prefix.clone();
        let (channels, body) = if rec.rooms.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let quit = Shared::Quit {
                rooms: rec.rooms.clone(),
                who: rec.who.clone(),
                reason: NODE_LOST.into(),
            };
            let origin = format!("{} reaper", self.config.node);
            let body = envelope::encode(&origin, self.next_id, &quit);
            self.next_id += 1;
            (envelope::channels(&prefix, &quit), body)
        };
        let mut keys = vec![self.nodes_key().into_bytes(), self.nick_key(&rec.who.nick)];
        for room in &rec.rooms {
            keys.push(format!("{prefix}members:{room}").into_bytes());
            keys.push(format!("{prefix}roomstate:{room}").into_bytes());
        }
        let (numkeys, inc) = (keys.len().to_string(), inc.to_string());
        let value = rec.value.unwrap_or_default();
        let mut parts: Vec<&[u8]> = vec![b"EVAL", REAP_USER_SCRIPT, numkeys.as_bytes()];
        parts.extend(keys.iter().map(Vec::as_slice));
        parts.extend([
            inc.as_bytes(),
            value.as_bytes(),
            folded.as_bytes(),
            body.as_slice(),
        ]);
        parts.extend(channels.iter().map(Vec::as_slice));
        self.push_node(&parts, Reply::Reaped);
    }

    /// When the server stops gracefully (its users have quit): takes this node out of the
    /// registry, so nobody has to find it dead. Queued only; the loop's last write sends it
    /// if it can.
    pub fn leave_cluster(&mut self) {
        if self.down {
            return;
        }
        let (nodes, beat) = (self.nodes_key(), self.beat_key(self.incarnation));
        let (users, inc) = (
            self.users_key(self.incarnation),
            self.incarnation.to_string(),
        );
        self.commands.push(&[
            b"EVAL",
            LEAVE_SCRIPT,
            b"3",
            nodes.as_bytes(),
            beat.as_bytes(),
            users.as_bytes(),
            inc.as_bytes(),
        ]);
        self.expect.push_back(Expect::Other);
        self.nodes = Nodes::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(nick: &str, rooms: &[&str]) -> LocalUser {
        LocalUser {
            client: ClientId(3),
            serial: 9,
            source: Source::new(nick, "u", "h.ip", "Real Name"),
            rooms: rooms.iter().map(|r| Arc::from(*r)).collect(),
        }
    }

    #[test]
    fn records_read_back_as_written() {
        let u = user("Alice", &["#a", "#b.c"]);
        let r = record(Some("n:4:3:9"), &u);
        assert_eq!(r, "n:4:3:9 Alice!u@h.ip #a #b.c");
        let back = parse_record(&r).unwrap();
        assert_eq!(back.value.as_deref(), Some("n:4:3:9"));
        assert_eq!(&*back.who.nick, "Alice");
        assert_eq!((&*back.who.user, &*back.who.host), ("u", "h.ip"));
        assert_eq!(back.rooms, vec![Arc::from("#a"), Arc::from("#b.c")]);
        // A guest: no nick key; no rooms.
        let g = record(None, &user("guest4-1", &[]));
        assert_eq!(g, "- guest4-1!u@h.ip");
        let back = parse_record(&g).unwrap();
        assert_eq!((back.value, back.rooms.len()), (None, 0));
    }

    #[test]
    fn what_is_not_a_record_is_refused() {
        for bad in [
            "",
            "v",
            "v nick",
            "v nick!u",
            "v nick!@h",
            "v nick!u@",
            "v bad,nick!u@h",
            "v nick!u@h notaroom",
            " nick!u@h",
        ] {
            assert_eq!(parse_record(bad), None, "{bad:?}");
        }
        // Written by something else: a room named again is one room, and no more rooms than
        // any user may be in.
        let again = parse_record("v nick!u@h #a #A #b #a").unwrap();
        assert_eq!(again.rooms, vec![Arc::from("#a"), Arc::from("#b")]);
        let many: Vec<String> = (0..=MAX_RECORD_ROOMS).map(|i| format!("#{i}")).collect();
        assert_eq!(parse_record(&format!("v n!u@h {}", many.join(" "))), None);
        let most = &many[..MAX_RECORD_ROOMS];
        assert!(parse_record(&format!("v n!u@h {}", most.join(" "))).is_some());
    }

    #[test]
    fn only_presence_of_users_not_yet_back_is_hidden() {
        use crate::core::MsgKind;
        use crate::core::cluster::RoomMessage;
        let who = Source::new("Sleeper", "u", "h", "");
        let other = Source::new("awake", "u", "h", "");
        let room: Arc<str> = "#r".into();
        let quit = |who: &Arc<Source>| Shared::Quit {
            rooms: vec![room.clone()],
            who: who.clone(),
            reason: "bye".into(),
        };
        let nicks: HashSet<String> = ["sleeper".to_string()].into();
        assert!(!hidden(&HashSet::new(), &quit(&who)), "none pending");
        assert!(hidden(&nicks, &quit(&who)), "found case-insensitively");
        assert!(!hidden(&nicks, &quit(&other)));
        let joined = Shared::Joined {
            room: room.clone(),
            who: who.clone(),
        };
        let renamed = Shared::NickChanged {
            rooms: vec![room.clone()],
            old: who.clone(),
            new: "guest1-1".into(),
        };
        assert!(hidden(&nicks, &joined) && hidden(&nicks, &renamed));
        let said = Shared::Message(RoomMessage {
            room,
            from: who,
            text: "hi".into(),
            kind: MsgKind::Normal,
            tags: None,
            msgid: 0,
        });
        assert!(!hidden(&nicks, &said), "messages still go out");
    }

    #[test]
    fn the_grace_outlasts_a_reconnect_and_a_heartbeat() {
        assert!(GRACE >= RETRY_MAX + TTL);
        assert!(TTL >= 3 * HEARTBEAT, "a beat or two may be late");
        assert!(FRESH > HEARTBEAT && FRESH < TTL);
        assert!(TOMBSTONE.contains(' '), "no node name holds a space");
    }
}

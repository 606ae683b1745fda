//! Room history in Redis streams, and delivery without loss or doubles across reconnects.
//!
//! Each room message a local member says is one `EVAL` of [`PUBLISH_SCRIPT`]: `XADD
//! {prefix}history:{folded room} MAXLEN ~ N * e <envelope>`, `PEXPIRE` of the stream
//! ([`HISTORY_TTL_MS`]: the history of a room nobody speaks in expires), and `PUBLISH
//! {prefix}room:{folded room} "<stream id> <envelope>"`, atomically (a script runs alone in
//! Redis): a message's place in the stream and in the channel is the same, and every message
//! heard on the channel is in the stream. `N` is the node's `--history`; with `--history 0`
//! a node keeps no stream (a plain PUBLISH, no replay, no catch-up).
//!
//! What a node does with the ids is pure bookkeeping, here, without sockets ([`Streams`]):
//! per subscribed room it remembers the last stream id it saw on the channel (`last`: its own
//! messages' included) and drops what comes with an id at or below it. A room is read from its
//! stream ([`READ_SCRIPT`]: the newest `N` entries, at most [`READ_BYTES`]) once every
//! SUBSCRIBE of it is confirmed on the subscriptions connection, and never before, so that
//! every message is in the read, or heard live after it, or both (then dropped by its id):
//! - when the room gets its first local member and the core asks for its history (`ask`): the
//!   entries said before the subscription began (before the first one heard on the channel)
//!   are the room's shared history ([`Read::history`]), less the messages this node published
//!   since the ask (its members saw them live: their ids come from the script's replies); the
//!   later ones are live messages (a member may not be shown history: IRC without
//!   `server-time`);
//! - after any reconnect (both connections are made again, and a subscription cut by Redis
//!   takes the whole link down): the entries after `last` are delivered as live messages, in
//!   stream order, less this node's own (its members saw them when they were said). A stream
//!   whose newest entry is older than `last`, or that is gone, was made again (a Redis
//!   restarted empty, or an expired stream): its entries are new to this node; or rolled back
//!   (a Redis restarted from a snapshot older than its last writes): its entries were seen.
//!   Each node numbers what it publishes, in order, so the newest number seen of each origin
//!   tells which: an entry numbered above it is new;
//! - otherwise (a room subscribed while Redis was lost, so with no history asked): the read
//!   only tells where the stream stands.
//!
//! From the first SUBSCRIBE until the read's answer, what arrives on the room's channel with an
//! id is held (at most [`HOLD_MAX`] messages per room and [`HOLD_BYTES`] in all: past that it
//! is dropped and counted, as lost), then merged with the read's live entries by id (each
//! once, in stream order) and delivered. Reads in flight are at most [`READS_IN_FLIGHT`] (a
//! reconnect with ten thousand rooms reads them a few at a time; the others keep holding), and
//! one read answers at most [`READ_BYTES`], so a catch-up is bounded by the history length and
//! by bytes. One read serves both purposes: `XREVRANGE … + - COUNT N` rather than `XRANGE
//! (last +`, because only the newest entry tells a stream made again from one with nothing
//! new, and because a member away too long is better caught up with the newest messages than
//! with the oldest it missed.
//!
//! Live delivery is in the order each node hears things: a local message is delivered at once,
//! before Redis gives it an id, so two nodes may interleave one room's messages differently;
//! history replays and catch-ups are in stream order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use crate::core::MsgKind;
use crate::core::cluster::{HistoryItem, Shared};
use crate::core::names::fold;

use super::envelope::Received;

/// How long the stream of a room nobody speaks in is kept (refreshed by every message):
/// a week. Its history is shared by every node and survives restarts of all of them, but a room
/// left quiet that long starts afresh, so Redis does not keep dead rooms' streams for ever.
pub const HISTORY_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Messages held per room while its read is under way.
pub const HOLD_MAX: usize = 1024;
/// Bytes held in all rooms together (each message counted by its envelope's size): a
/// reconnect of a busy node holds seconds of traffic, not more.
pub const HOLD_BYTES: usize = 8 << 20;
/// Origins (node names) whose newest envelope number is remembered per room (see
/// `RoomStream::numbers`): a cluster has a few nodes; names past this many (published by
/// something else) are not remembered.
pub const ORIGINS_MAX: usize = 64;
/// How far ahead of this node's clock a stream id may be and still move a room's `last`: an id
/// further ahead was published by something else (a stream gives ids from Redis's clock), and
/// would make every message after it look seen, until a reconnect. Such a message is delivered
/// (as anything published on the channel is), but `last` stays.
pub const AHEAD_MAX_MS: u64 = 3600 * 1000;
/// Reads of streams in flight at once.
pub const READS_IN_FLIGHT: usize = 8;
/// The most one read answers, in bytes of envelopes (and 64 per entry): a reply stays well
/// under [`MAX_REPLY`](super::redis::MAX_REPLY) (one entry over it, up to [`ENTRY_MAX`], is
/// still sent alone).
pub const READ_BYTES: usize = 1 << 20;

/// `KEYS[1]`: the stream; `ARGV`: N, the envelope, the TTL in ms, the channel. Returns the id.
pub const PUBLISH_SCRIPT: &[u8] = b"\
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], id .. ' ' .. ARGV[2])
return id";

/// The most one entry may weigh to be read (as [`READ_BYTES`] counts it): more than any
/// envelope a node writes (`--max-line` is at most 1 MiB), and little enough that a read's
/// reply stays under [`MAX_REPLY`](super::redis::MAX_REPLY). A bigger entry was written by
/// something else, and is left out of reads: sent, its reply would break the connection, and
/// the reconnect would read it again, for ever.
pub const ENTRY_MAX: usize = READ_BYTES + READ_BYTES / 2;
// An envelope of a 1 MiB text (with its names and tags) is read; a read fits in a reply.
const _: () = assert!(ENTRY_MAX >= (1 << 20) + (64 << 10));
const _: () = assert!(ENTRY_MAX + (64 << 10) < super::redis::MAX_REPLY);

/// `KEYS[1]`: the stream; `ARGV`: N, a byte budget, the most an entry may weigh
/// ([`ENTRY_MAX`]). The newest N entries, newest first, but for those over the most, cut once
/// they pass the budget (at least one).
pub const READ_SCRIPT: &[u8] = b"\
local r = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1])
local budget = tonumber(ARGV[2])
local most = tonumber(ARGV[3])
local out = {}
for i = 1, #r do
  local n = 64
  for _, f in ipairs(r[i][2]) do n = n + #f + 16 end
  if n <= most then
    budget = budget - n
    if budget < 0 and #out > 0 then break end
    out[#out + 1] = r[i]
  end
end
return out";

/// The stream of a room: `{prefix}history:{folded name}`.
pub fn stream_key(prefix: &str, folded: &str) -> Vec<u8> {
    format!("{prefix}history:{folded}").into_bytes()
}

/// A Redis stream id, `ms-seq`: ordered by time, then sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// `ms-seq` in decimal, nothing else.
    pub fn parse(bytes: &[u8]) -> Option<StreamId> {
        let s = std::str::from_utf8(bytes).ok()?;
        let (ms, seq) = s.split_once('-')?;
        let num = |d: &str| {
            (!d.is_empty() && d.len() <= 20 && d.bytes().all(|b| b.is_ascii_digit()))
                .then(|| d.parse().ok())
                .flatten()
        };
        Some(StreamId {
            ms: num(ms)?,
            seq: num(seq)?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A pub/sub payload: `"<stream id> <envelope>"` for a room message kept in its stream, the
/// bare envelope (which starts with `*`) for anything else.
pub fn split_payload(payload: &[u8]) -> (Option<StreamId>, &[u8]) {
    if payload.first().is_some_and(u8::is_ascii_digit)
        && let Some(space) = payload.iter().position(|&b| b == b' ')
        && let Some(id) = StreamId::parse(&payload[..space])
    {
        return (Some(id), &payload[space + 1..]);
    }
    (None, payload)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Subscribing (or subscribed, its read queued): messages are held.
    Waiting,
    /// Its read is in flight: messages are held.
    Reading,
    /// Read: messages are delivered if newer than `last`.
    Live,
}

#[derive(Debug)]
struct RoomStream {
    phase: Phase,
    /// Tells a read of this subscription from one of an earlier subscription of the same room.
    generation: u64,
    /// The newest id seen on the channel or in a read (`None`: none yet).
    last: Option<StreamId>,
    /// The core's history ask, answered with the next read.
    ask: Option<u64>,
    /// While `ask` is pending: ids of what this node published since (its members saw it).
    own_since: Vec<StreamId>,
    /// Messages heard while waiting or reading, with their cost in bytes.
    held: VecDeque<(StreamId, Shared, usize)>,
    /// The newest envelope number seen of each origin in this room (each node numbers what it
    /// publishes in order, and a stream keeps that order): a stream whose newest entry is
    /// older than `last` was made again, whose entries are new, or rolled back (a Redis
    /// restarted from a snapshot older than its last writes), whose entries were seen. The
    /// numbers tell which.
    numbers: HashMap<String, u64>,
    /// In the read queue.
    queued: bool,
}

/// What a read's answer gives.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// The answer to the core's history ask (its number and the entries, oldest first).
    pub history: Option<(u64, Vec<HistoryItem>)>,
    /// Messages to deliver as live, in stream order (caught up, then held).
    pub live: Vec<Shared>,
    /// Entries there may have been between `last` and the oldest entry read (the read was
    /// cut by its count or bytes before reaching `last`).
    pub gap: bool,
}

/// The streams of the rooms a node is subscribed to (see the module doc).
#[derive(Debug)]
pub struct Streams {
    node: String,
    rooms: HashMap<Arc<str>, RoomStream>,
    /// SUBSCRIBEs sent and not confirmed yet, per room: a room is read only at 0.
    unconfirmed: HashMap<Arc<str>, u32>,
    /// Rooms whose every SUBSCRIBE is confirmed, to read (oldest first).
    queue: VecDeque<Arc<str>>,
    reading: usize,
    next_generation: u64,
    /// Bytes held in all rooms.
    held_bytes: usize,
    /// Messages dropped because the hold was full, since the last [`Streams::take_lost`].
    lost: u64,
}

impl Streams {
    /// The streams of node `node` (its own messages are told by their origin).
    pub fn new(node: &str) -> Streams {
        Streams {
            node: node.into(),
            rooms: HashMap::new(),
            unconfirmed: HashMap::new(),
            queue: VecDeque::new(),
            reading: 0,
            next_generation: 0,
            held_bytes: 0,
            lost: 0,
        }
    }

    /// A room (folded) is subscribed to: a SUBSCRIBE of it was sent.
    pub fn subscribe(&mut self, room: Arc<str>) {
        *self.unconfirmed.entry(room.clone()).or_default() += 1;
        self.next_generation += 1;
        let stream = RoomStream {
            phase: Phase::Waiting,
            generation: self.next_generation,
            last: None,
            ask: None,
            own_since: Vec::new(),
            held: VecDeque::new(),
            queued: false,
            numbers: HashMap::new(),
        };
        if let Some(old) = self.rooms.insert(room, stream) {
            self.held_bytes -= old.held.iter().map(|h| h.2).sum::<usize>();
        }
    }

    /// No local member is left in the room: it is no longer read (an UNSUBSCRIBE was sent).
    pub fn unsubscribe(&mut self, room: &str) {
        if let Some(old) = self.rooms.remove(room) {
            self.held_bytes -= old.held.iter().map(|h| h.2).sum::<usize>();
        }
    }

    /// The core asks for the room's history: answered with its next read.
    pub fn ask(&mut self, room: &str, ask: u64) {
        if let Some(s) = self.rooms.get_mut(room) {
            s.ask = Some(ask);
            s.own_since.clear();
        }
    }

    /// A SUBSCRIBE of `room` was confirmed.
    pub fn confirmed(&mut self, room: &str) {
        if let Some(n) = self.unconfirmed.get_mut(room) {
            *n -= 1;
            if *n == 0 {
                self.unconfirmed.remove(room);
            }
        }
        if self.unconfirmed.contains_key(room) {
            return;
        }
        if let Some((name, s)) = self.rooms.get_key_value(room)
            && s.phase == Phase::Waiting
            && !s.queued
        {
            let name = name.clone();
            self.rooms.get_mut(room).expect("found").queued = true;
            self.queue.push_back(name);
        }
    }

    /// The link was made again: every room waits for its SUBSCRIBE (sent again, counted by
    /// [`Streams::subscribe_again`]) and is read again; what it holds stays held.
    pub fn reset(&mut self) {
        self.unconfirmed.clear();
        self.queue.clear();
        self.reading = 0;
        for s in self.rooms.values_mut() {
            s.phase = Phase::Waiting;
            s.queued = false;
            self.next_generation += 1;
            s.generation = self.next_generation;
        }
    }

    /// A SUBSCRIBE of a room already known was sent again (after a reconnect).
    pub fn subscribe_again(&mut self, room: &Arc<str>) {
        *self.unconfirmed.entry(room.clone()).or_default() += 1;
    }

    /// The rooms to read now (with the generation their answer must name): as many as
    /// [`READS_IN_FLIGHT`] allows.
    pub fn next_reads(&mut self) -> Vec<(Arc<str>, u64)> {
        let mut reads = Vec::new();
        while self.reading < READS_IN_FLIGHT {
            let Some(room) = self.queue.pop_front() else {
                break;
            };
            // (Gone, or not queued: an entry of a subscription that ended since, whose room
            // may be subscribed again and waiting for its new SUBSCRIBE's confirmation.)
            let Some(s) = self.rooms.get_mut(&room).filter(|s| s.queued) else {
                continue;
            };
            s.queued = false;
            if s.phase != Phase::Waiting {
                continue;
            }
            s.phase = Phase::Reading;
            self.reading += 1;
            reads.push((room, s.generation));
        }
        reads
    }

    /// This node published a message in `room` and Redis gave it `id` (the script's reply).
    pub fn published(&mut self, room: &str, id: StreamId) {
        if let Some(s) = self.rooms.get_mut(room)
            && s.ask.is_some()
            && s.own_since.len() < HOLD_MAX
        {
            s.own_since.push(id);
        }
    }

    /// A message with a stream id heard on `room`'s channel (`size`: its payload's bytes):
    /// what to deliver now, if anything.
    pub fn heard(
        &mut self,
        room: &str,
        id: StreamId,
        got: Received,
        size: usize,
    ) -> Option<Shared> {
        let mine = got.origin == self.node;
        let s = self.rooms.get_mut(room)?;
        if s.phase == Phase::Live {
            if s.last.is_some_and(|last| id <= last) {
                return None;
            }
            if plausible(id) {
                s.last = Some(id);
            }
            seen(&mut s.numbers, &got);
            return (!mine).then_some(got.shared);
        }
        if mine {
            // Its members saw it; the read (or what follows it) moves `last` past it.
            return None;
        }
        let cost = size + 64;
        if s.held.len() >= HOLD_MAX || self.held_bytes + cost > HOLD_BYTES {
            self.lost += 1;
            return None;
        }
        self.held_bytes += cost;
        seen(&mut s.numbers, &got);
        s.held.push_back((id, got.shared, cost));
        None
    }

    /// Messages dropped because the hold was full since the last call.
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// The answer to the read of `room` (generation `generation`): its entries newest first as
    /// Redis gives them (`None`: the read failed: what is held is delivered after `last`).
    pub fn read_done(
        &mut self,
        room: &str,
        generation: u64,
        entries: Option<Vec<(StreamId, Received)>>,
    ) -> Read {
        let mut read = Read::default();
        // (Every answer is of a read sent on the link in use: a lost link's are never read.)
        self.reading = self.reading.saturating_sub(1);
        let Some(s) = self
            .rooms
            .get_mut(room)
            .filter(|s| s.phase == Phase::Reading && s.generation == generation)
        else {
            // An answer for a subscription that ended (and maybe began again) since.
            return read;
        };
        s.phase = Phase::Live;
        let failed = entries.is_none();
        let mut entries = entries.unwrap_or_default();
        entries.reverse();
        let newest = entries.last().map(|e| e.0);
        let newest_plausible = entries.iter().rev().map(|e| e.0).find(|id| plausible(*id));
        let node = &self.node;
        // Entries of this room only (a read answers what its key holds, whoever wrote it).
        entries.retain(|e| matches!(&e.1.shared, Shared::Message(m) if *fold(&m.room) == *room));
        let held: Vec<(StreamId, Shared)> = std::mem::take(&mut s.held)
            .into_iter()
            .map(|(id, shared, cost)| {
                self.held_bytes -= cost;
                (id, shared)
            })
            .collect();
        // What was heard on the channel was said after the subscription began: live.
        let first_held = held.first().map(|h| h.0);
        let mut live = BTreeMap::new();
        let mut after = s.last;
        if let Some(ask) = s.ask.take() {
            // Said before the subscription began: the history; after it: live (heard, or
            // dropped from a full hold), but for what this node said (seen when said).
            let own = std::mem::take(&mut s.own_since);
            let mut items = Vec::new();
            for (id, got) in entries {
                seen(&mut s.numbers, &got);
                if own.contains(&id) {
                    continue;
                }
                if first_held.is_some_and(|first| id >= first) {
                    if got.origin != *node {
                        live.insert(id, got.shared);
                    }
                    continue;
                }
                if let Shared::Message(m) = got.shared
                    && m.kind != MsgKind::Notice
                {
                    items.push(HistoryItem {
                        from: m.from,
                        text: m.text,
                        kind: m.kind,
                        at: id.ms,
                    });
                }
            }
            read.history = Some((ask, items));
        } else if let Some(last) = s.last
            && !failed
        {
            // A stream whose newest entry is older than `last`, or gone, was made again.
            let again = newest.is_none_or(|n| n < last);
            if again {
                after = None;
                s.last = None;
            }
            read.gap = !again && entries.first().is_some_and(|e| e.0 > last);
            for (id, got) in entries {
                // Made again, its entries are new; rolled back, they were seen.
                let new = !again || s.numbers.get(&got.origin).is_none_or(|&n| got.id > n);
                seen(&mut s.numbers, &got);
                if got.origin != *node && new {
                    live.insert(id, got.shared);
                }
            }
        }
        // (Otherwise, a room with no history asked and nothing seen yet, or a failed read:
        // only what was heard is delivered.)
        live.extend(held);
        let newest_live = live.keys().rev().copied().find(|id| plausible(*id));
        s.last = s.last.max(newest_plausible).max(newest_live);
        read.live = live
            .into_iter()
            .filter(|(id, _)| after.is_none_or(|a| *id > a))
            .map(|(_, shared)| shared)
            .collect();
        read
    }
}

/// Whether `id` is not further ahead of this node's clock than [`AHEAD_MAX_MS`].
fn plausible(id: StreamId) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    id.ms <= now.saturating_add(AHEAD_MAX_MS)
}

/// `got`'s origin has published up to its number (see `RoomStream::numbers`).
fn seen(numbers: &mut HashMap<String, u64>, got: &Received) {
    if let Some(n) = numbers.get_mut(&got.origin) {
        *n = (*n).max(got.id);
    } else if numbers.len() < ORIGINS_MAX {
        numbers.insert(got.origin.clone(), got.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Source;
    use crate::core::cluster::RoomMessage;

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    fn msg(origin: &str, text: &str) -> Received {
        msg_in(origin, "#Room", text)
    }

    fn msg_in(origin: &str, room: &str, text: &str) -> Received {
        // Each envelope its own number, increasing (as a node numbers what it publishes).
        static NUMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Received {
            origin: origin.into(),
            id: NUMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            shared: Shared::Message(RoomMessage {
                room: room.into(),
                from: Source::new("bob", "u", "h", "Bob"),
                text: text.into(),
                kind: MsgKind::Normal,
                tags: None,
                msgid: 0,
            }),
        }
    }

    fn text(s: &Shared) -> &str {
        match s {
            Shared::Message(m) => &m.text,
            other => panic!("{other:?}"),
        }
    }

    fn texts(v: &[Shared]) -> Vec<&str> {
        v.iter().map(text).collect()
    }

    #[test]
    fn stream_ids_parse_and_order_by_time_then_sequence() {
        assert_eq!(
            StreamId::parse(b"1700000000000-3"),
            Some(id(1700000000000, 3))
        );
        assert_eq!(id(5, 2).to_string(), "5-2");
        for bad in [
            &b""[..],
            b"5",
            b"5-",
            b"-5",
            b"a-1",
            b"1-1-1",
            b"1 -1",
            b"+1-1",
        ] {
            assert_eq!(StreamId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(StreamId::parse(b"99999999999999999999999-0"), None);
        assert!(id(1, 9) < id(2, 0));
        assert!(id(2, 1) > id(2, 0));
        // Numbers, not strings: 10 is after 9.
        assert!(StreamId::parse(b"10-0") > StreamId::parse(b"9-0"));
    }

    #[test]
    fn payloads_carry_an_id_or_are_bare_envelopes() {
        assert_eq!(
            split_payload(b"12-3 *1\r\n$1\r\nx\r\n"),
            (Some(id(12, 3)), &b"*1\r\n$1\r\nx\r\n"[..])
        );
        assert_eq!(
            split_payload(b"*1\r\n$1\r\nx\r\n"),
            (None, &b"*1\r\n$1\r\nx\r\n"[..])
        );
        assert_eq!(split_payload(b"12 x"), (None, &b"12 x"[..]));
        assert_eq!(stream_key("p:", "#a"), b"p:history:#a");
    }

    /// A room subscribed, confirmed and read with `entries` (newest first).
    fn live_room(s: &mut Streams, entries: Vec<(StreamId, Received)>) -> Read {
        s.subscribe("#room".into());
        s.confirmed("#room");
        let reads = s.next_reads();
        assert_eq!(reads.len(), 1);
        s.read_done("#room", reads[0].1, Some(entries))
    }

    #[test]
    fn live_messages_at_or_below_the_last_id_are_dropped() {
        let mut s = Streams::new("me");
        let read = live_room(&mut s, vec![(id(5, 0), msg("b", "old"))]);
        assert!(
            read.live.is_empty() && read.history.is_none(),
            "nothing asked"
        );
        assert!(s.heard("#room", id(5, 0), msg("b", "old"), 10).is_none());
        assert!(s.heard("#room", id(6, 0), msg("b", "new"), 10).is_some());
        assert!(
            s.heard("#room", id(6, 0), msg("b", "new"), 10).is_none(),
            "twice"
        );
        // Our own: not delivered, but it moves `last`.
        assert!(s.heard("#room", id(7, 0), msg("me", "mine"), 10).is_none());
        assert!(s.heard("#room", id(7, 0), msg("b", "x"), 10).is_none());
        assert!(
            s.heard("#other", id(9, 0), msg("b", "x"), 10).is_none(),
            "not subscribed"
        );
    }

    #[test]
    fn a_history_ask_gets_what_came_before_the_subscription_and_the_rest_is_live() {
        let mut s = Streams::new("me");
        s.subscribe("#room".into());
        s.ask("#room", 7);
        // Our member spoke right after joining: the script's reply gives the id.
        s.published("#room", id(4, 0));
        // Heard before the read is sent and while it is under way: held.
        assert!(s.heard("#room", id(3, 0), msg("b", "raced"), 10).is_none());
        s.confirmed("#room");
        let reads = s.next_reads();
        assert!(s.heard("#room", id(6, 0), msg("b", "after"), 10).is_none());
        let entries = vec![
            (id(5, 0), msg("b", "just before the read")),
            (id(4, 0), msg("me", "mine since")),
            (id(3, 0), msg("b", "raced")),
            (id(2, 0), msg("me", "mine long ago")),
            (id(1, 0), msg_in("b", "#elsewhere", "forged")),
        ];
        let read = s.read_done("#room", reads[0].1, Some(entries));
        let (ask, items) = read.history.expect("the answer");
        assert_eq!(ask, 7);
        let got: Vec<&str> = items.iter().map(|i| &*i.text).collect();
        // What was heard on the channel, and what followed it in the stream, came after the
        // subscription: live, once, in stream order (the members may not be shown history).
        assert_eq!(got, ["mine long ago"]);
        assert_eq!(items[0].at, 2);
        assert_eq!(
            texts(&read.live),
            ["raced", "just before the read", "after"]
        );
        assert!(s.heard("#room", id(6, 0), msg("b", "after"), 10).is_none());
    }

    #[test]
    fn after_a_reconnect_what_was_missed_is_caught_up_in_order_once() {
        let mut s = Streams::new("me");
        live_room(&mut s, vec![]);
        assert!(s.heard("#room", id(10, 0), msg("b", "m1"), 10).is_some());
        // The link is lost and made again: m2..m3 were said meanwhile, m4 and m5 arrive live
        // on the new subscription before the read's answer.
        s.reset();
        s.subscribe_again(&"#room".into());
        assert!(
            s.next_reads().is_empty(),
            "not before the SUBSCRIBE is confirmed"
        );
        assert!(s.heard("#room", id(13, 0), msg("b", "m4"), 10).is_none());
        s.confirmed("#room");
        let reads = s.next_reads();
        assert!(s.heard("#room", id(14, 0), msg("b", "m5"), 10).is_none());
        let entries = vec![
            (id(13, 0), msg("b", "m4")),
            (id(12, 1), msg("me", "ours meanwhile")),
            (id(12, 0), msg("b", "m3")),
            (id(11, 0), msg("b", "m2")),
            (id(10, 0), msg("b", "m1")),
        ];
        let read = s.read_done("#room", reads[0].1, Some(entries));
        assert_eq!(texts(&read.live), ["m2", "m3", "m4", "m5"]);
        assert!(!read.gap);
        assert!(s.heard("#room", id(14, 0), msg("b", "m5"), 10).is_none());
        assert!(s.heard("#room", id(15, 0), msg("b", "m6"), 10).is_some());
    }

    #[test]
    fn a_stream_made_again_is_all_new_and_a_cut_read_says_so() {
        let mut s = Streams::new("me");
        live_room(&mut s, vec![(id(100, 0), msg("b", "old"))]);
        // A Redis restarted empty on a host whose clock is behind: ids below `last`.
        s.reset();
        s.subscribe_again(&"#room".into());
        s.confirmed("#room");
        let g = s.next_reads()[0].1;
        let read = s.read_done("#room", g, Some(vec![(id(50, 0), msg("b", "fresh"))]));
        assert_eq!(texts(&read.live), ["fresh"]);
        assert!(s.heard("#room", id(51, 0), msg("b", "next"), 10).is_some());
        // Gone altogether (no entry): what comes next is new, whatever its id.
        s.reset();
        s.subscribe_again(&"#room".into());
        s.confirmed("#room");
        let g = s.next_reads()[0].1;
        assert!(s.heard("#room", id(1, 0), msg("b", "first"), 10).is_none());
        let read = s.read_done("#room", g, Some(vec![]));
        assert_eq!(texts(&read.live), ["first"]);
        // A read that does not reach back to `last`: a gap is reported.
        s.reset();
        s.subscribe_again(&"#room".into());
        s.confirmed("#room");
        let g = s.next_reads()[0].1;
        let read = s.read_done("#room", g, Some(vec![(id(9, 0), msg("b", "x"))]));
        assert!(read.gap);
    }

    #[test]
    fn a_stream_rolled_back_is_not_delivered_again() {
        // A Redis restarted from a snapshot older than its last writes (or entries deleted
        // by hand): the stream's newest entry is older than `last`, but its entries were seen.
        let mut s = Streams::new("me");
        live_room(&mut s, vec![]);
        let said = [msg("b", "r1"), msg("b", "r2"), msg("b", "r3")];
        for (i, m) in said.iter().enumerate() {
            let m = Received {
                origin: m.origin.clone(),
                id: m.id,
                shared: m.shared.clone(),
            };
            assert!(s.heard("#room", id(10 + i as u64, 0), m, 10).is_some());
        }
        s.reset();
        s.subscribe_again(&"#room".into());
        s.confirmed("#room");
        let g = s.next_reads()[0].1;
        let [r1, r2, _] = said;
        let read = s.read_done("#room", g, Some(vec![(id(11, 0), r2), (id(10, 0), r1)]));
        assert!(read.live.is_empty(), "{:?}", texts(&read.live));
        // What is said next is delivered.
        assert!(s.heard("#room", id(12, 5), msg("b", "r4"), 10).is_some());
    }

    #[test]
    fn an_id_from_far_in_the_future_does_not_silence_the_room() {
        // Published by something else, under an id no stream gives yet: it would move `last`
        // past every id to come, and every message after it would be dropped as seen.
        let mut s = Streams::new("me");
        live_room(&mut s, vec![]);
        let forged = id(u64::MAX / 2, 0);
        assert!(s.heard("#room", forged, msg("x", "forged"), 10).is_some());
        assert!(s.heard("#room", id(10, 0), msg("b", "next"), 10).is_some());
        // Nor held and merged with a read.
        s.reset();
        s.subscribe_again(&"#room".into());
        s.confirmed("#room");
        let g = s.next_reads()[0].1;
        assert!(s.heard("#room", forged, msg("x", "forged"), 10).is_none());
        s.read_done("#room", g, Some(vec![(forged, msg("x", "forged too"))]));
        assert!(s.heard("#room", id(11, 0), msg("b", "after"), 10).is_some());
    }

    #[test]
    fn reads_wait_for_every_subscribe_and_stale_answers_are_ignored() {
        let mut s = Streams::new("me");
        // Subscribed, unsubscribed and subscribed again before any confirmation.
        s.subscribe("#room".into());
        s.unsubscribe("#room");
        s.subscribe("#room".into());
        s.confirmed("#room");
        assert!(
            s.next_reads().is_empty(),
            "the second SUBSCRIBE is not confirmed"
        );
        s.confirmed("#room");
        let reads = s.next_reads();
        assert_eq!(reads.len(), 1);
        // The link is lost before the answer: the read is made again after the reconnect.
        s.reset();
        s.subscribe_again(&"#room".into());
        s.confirmed("#room");
        let again = s.next_reads();
        assert_ne!(reads[0].1, again[0].1);
        // The room is left and joined again while that read is under way: its answer is of
        // the old subscription (dropped), and the new one is read anew.
        s.unsubscribe("#room");
        s.subscribe("#room".into());
        assert!(s.heard("#room", id(3, 0), msg("b", "new"), 10).is_none());
        s.confirmed("#room");
        let answer = vec![(id(2, 0), msg("b", "old"))];
        assert_eq!(
            s.read_done("#room", again[0].1, Some(answer)),
            Read::default()
        );
        assert_eq!(s.reading, 0, "the read in flight is over");
        let third = s.next_reads();
        assert_eq!(third.len(), 1);
        let read = s.read_done("#room", third[0].1, Some(vec![]));
        assert_eq!(texts(&read.live), ["new"]);
        assert_eq!(s.reading, 0);
        // Reads in flight are bounded.
        for i in 0..20 {
            let room: Arc<str> = format!("#r{i}").into();
            s.subscribe(room.clone());
            s.confirmed(&room);
        }
        assert_eq!(s.next_reads().len(), READS_IN_FLIGHT);
        assert!(s.next_reads().is_empty());
    }

    #[test]
    fn a_room_left_and_joined_again_while_queued_is_not_read_before_its_new_subscribe() {
        let mut s = Streams::new("me");
        for i in 0..READS_IN_FLIGHT {
            let room: Arc<str> = format!("#r{i}").into();
            s.subscribe(room.clone());
            s.confirmed(&room);
        }
        let reads = s.next_reads();
        assert_eq!(reads.len(), READS_IN_FLIGHT);
        // Confirmed, queued behind the reads in flight…
        s.subscribe("#room".into());
        s.confirmed("#room");
        assert!(s.next_reads().is_empty());
        // …then left and joined again: a new SUBSCRIBE, not confirmed yet.
        s.unsubscribe("#room");
        s.subscribe("#room".into());
        let (room, generation) = &reads[0];
        s.read_done(room, *generation, Some(vec![]));
        assert!(
            s.next_reads().is_empty(),
            "not before the new SUBSCRIBE is confirmed"
        );
        s.confirmed("#room");
        let again = s.next_reads();
        assert_eq!(again.len(), 1);
        assert_eq!(&*again[0].0, "#room");
        assert!(s.next_reads().is_empty(), "read once");
    }

    #[test]
    fn the_hold_is_bounded() {
        let mut s = Streams::new("me");
        s.subscribe("#room".into());
        for i in 0..HOLD_MAX as u64 + 10 {
            s.heard("#room", id(i + 1, 0), msg("b", "x"), 10);
        }
        assert_eq!(s.take_lost(), 10);
        s.subscribe("#big".into());
        s.heard("#big", id(1, 0), msg("b", "x"), HOLD_BYTES);
        assert_eq!(s.take_lost(), 1, "over the bytes of all rooms");
        s.unsubscribe("#room");
        assert_eq!(s.held_bytes, 0);
    }
}

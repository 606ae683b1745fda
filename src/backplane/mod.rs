//! The cluster backplane: pollchat nodes joined through Redis pub/sub: room messages, joins,
//! parts, quits and nick changes cross nodes, nicks are unique, rooms are one room across nodes
//! (created once, one member list, topics and modes: [`rooms`]), room history lives in Redis
//! streams ([`history`]) and dead nodes are cleaned up after ([`nodes`]).
//!
//! ```text
//!   clients ──► node A (one mio loop)                      node B (one mio loop) ◄── clients
//!               core ──notes──► Backplane                  Backplane ───Shared───► core
//!                               │ commands conn ─PUBLISH─►  Redis  ─message─► subscriptions conn
//!                               │ subscriptions conn ◄─── (pub/sub) ◄─PUBLISH── commands conn
//! ```
//!
//! After centrifuge's Redis broker: a node SUBSCRIBEs to a room's channel
//! (`{prefix}room:{folded name}`, one channel per room, no pattern) only while the room has
//! local members, so it receives nothing for rooms it does not host; each room message a local
//! member says is PUBLISHed once, whatever the number of recipients, in an envelope naming its
//! node ([`envelope`]), and kept in the room's Redis stream in the same script, the PUBLISH
//! carrying its stream id ([`history`]: by that id a node delivers each room message once, and
//! catches up what it missed after a reconnect); a node hands what other nodes said to its core
//! ([`Core::remote`](crate::core::Core::remote)), which delivers it to the local members
//! (rendered once per render class, as a local message), and ignores its own.
//! Joins, parts (a kick is a part for other nodes), quits and nick changes travel the same way;
//! a quit or a nick change is published on each of its rooms' channels, and a node that hosts
//! several of them hands it to its core once (by its origin and number), which tells each local
//! user once.
//!
//! Two connections ([`redis::RedisConn`]) in the loop's own `mio::Poll`, because a connection
//! that has SUBSCRIBEd accepts no other command: one for commands (PUBLISH), one for
//! subscriptions. Both are non-blocking, pipelined, written once per loop turn and read within a
//! budget; no thread, no runtime. The core stays sans-IO: it only leaves
//! [`Note`](crate::core::cluster::Note)s in the outbox.
//!
//! Bounds and what happens past them:
//! - The queue towards Redis on the commands connection holds at most `--backplane-max-queue`
//!   bytes. Past it, a message is **not published** (its local members still get it): pub/sub
//!   is at-most-once anyway, and dropping is better than a node whose memory grows while Redis
//!   is slow. The drop is logged when it starts and when it ends, with the count.
//! - SUBSCRIBE and UNSUBSCRIBE are never dropped: at most two per room with local members and
//!   two per local user's nick, so their queue is bounded by `--max-total-rooms` and
//!   `--max-clients`. Nick claims and releases are never dropped either (at most one claim
//!   under way and two releases per local user). A private message past the limit is not
//!   published, as a room message.
//!
//! Private messages to a nick no local user holds are published on that nick's channel
//! (`{prefix}user:{folded nick}`), which only the node of its holder subscribes to (each node
//! subscribes to its users' nicks, guests included); PUBLISH answers how many received it, and
//! 0 tells the sender there is no such nick.
//! - Input is read at most [`redis::READS_PER_TURN`] chunks per turn, and one reply may be at
//!   most [`redis::MAX_REPLY`] bytes (a read of a stream answers at most
//!   [`history::READ_BYTES`]).
//! - Messages held while a room's stream is read, and reads in flight, are bounded
//!   ([`history::HOLD_MAX`], [`history::HOLD_BYTES`], [`history::READS_IN_FLIGHT`]).
//!
//! Redis lost: the node logs it once and goes on serving its local users alone (what they say
//! reaches local members only, and is not sent later), and reconnects without blocking after
//! [`RETRY_FIRST`], doubling the wait up to [`RETRY_MAX`]; once back, it subscribes again to
//! every room with local members (an empty, restarted Redis is the same case), reads each
//! room's stream from the last id it saw once that SUBSCRIBE is confirmed (what the other
//! nodes said meanwhile is delivered, in stream order, once: [`history`]), and logs what
//! was not sent meanwhile. Every local user is told when the link goes down and when it is
//! back (a server NOTICE).
//!
//! Nicks are unique cluster-wide: the core asks ([`Note::Claim`]) and this module sets
//! `{prefix}nick:{folded nick}` to `{node}:{incarnation}:{client}:{serial}` with `SET … NX` on
//! the commands connection (atomic in Redis: of two claims at once, exactly one wins), and
//! hands the answer back ([`Backplane::take_answers`]); a release ([`Note::Release`]) is a
//! compare-and-delete ([`RELEASE_SCRIPT`]), so a node never deletes a claim another made. The
//! incarnation is `INCR {prefix}incarnation` at start, unique in the cluster: it is also the
//! number of this node's guest nicks (`guest{incarnation}-{n}`), which no other node hands out
//! and nobody may take by hand, so a guest needs no claim (and no round trip to connect).
//! Replies on the commands connection are matched to what they answer in order
//! ([`Expect`]). When Redis is lost, claims not yet answered are answered failed (the user is
//! told "cluster link down") and released once it is back, as are releases not yet answered:
//! such a claim may or may not have been made, and releasing it by its value is harmless.
//!
//! Nodes alive and dead ([`nodes`]): each node keeps a heartbeat key with a time to live and
//! its entry in a registry of live nodes with its users; one survivor (chosen atomically)
//! announces a dead node's users' quits ("node lost") and frees their nicks; a node restarted
//! under the same name does so at once for its earlier incarnation; after Redis comes back
//! (empty or not), or when a node finds it was taken for dead, it registers again and claims
//! its users' nicks again (a user whose nick was taken meanwhile becomes a guest, and is told:
//! [`Answer::NickLost`]). `CONFIG GET maxmemory-policy` is checked at start (a warning if it is
//! not `noeviction`, or cannot be checked).
//!
//! Rooms ([`rooms`]): a join to a room with no local member is one script on the commands
//! connection (`HSETNX {prefix}roomstate:{room} founded`, `HSET {prefix}members:{room}`, the
//! members and state back), answered in order like a claim (`Expect::Join`); each node
//! writes its own members' entries, and after a reconnect makes them exactly what it has
//! ([`Note::SyncRoom`]). The index of rooms (`{prefix}rooms`, entered by the join that creates
//! a room, left with its last member) answers a LIST ([`Note::Rooms`], one script: the rooms
//! with their member counts, topics and modes, bounded), and a room's members answer a NAMES
//! or WHO of a room with no local member ([`Note::Names`]), both in order like a claim.
//!
//! Not yet: see README, "Cluster", "Not yet shared across nodes".

pub mod envelope;
pub mod history;
pub mod nodes;
pub mod redis;
pub mod rooms;

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::{Registry, Token};
use redis_protocol::resp2::types::OwnedFrame;

use crate::core::ClientId;
use crate::core::cluster::{Answer, ClaimAnswer, NickClaim, Note, Outcome, Shared};
use crate::core::names::fold;
use history::{StreamId, Streams};
use redis::{ReadEnd, RedisConn};

/// The token of the commands connection in the loop's poll (clear of the listeners' range and
/// of the front's two tokens).
pub const COMMANDS: Token = Token(usize::MAX - 3);
/// The token of the subscriptions connection.
pub const SUBSCRIPTIONS: Token = Token(usize::MAX - 4);

/// Quits and nick changes (origin, number) remembered to hand each to the core once. Their
/// copies are
/// published back to back in one pipeline, so they arrive within a few messages of each other:
/// thousands is far more than enough, and bounds the memory.
const SEEN_QUITS: usize = 4096;

/// After Redis is lost, the first reconnect is tried this soon (a Redis restarted by its
/// supervisor is back within a second or so)…
const RETRY_FIRST: Duration = Duration::from_millis(200);
/// …and each failed try doubles the wait, up to this: a node never hammers a Redis that is
/// down, and notices its return within seconds.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Channels per SUBSCRIBE when subscribing again after a reconnect (one command for ten
/// thousand rooms would be a reply Redis builds in one piece; centrifuge batches by 512 too).
const SUBSCRIBE_BATCH: usize = 512;
/// A Redis that answers nothing on the commands connection for this long while commands wait
/// for their answer (stopped, or cut off without a reset) is taken as lost: its claims are
/// answered failed instead of waiting for ever, and the node reconnects.
const STALL: Duration = Duration::from_secs(15);

/// Deletes a nick key only if it still holds the value given: a node releases only its own
/// claims, never one another node made since (compare-and-delete, atomic in Redis).
const RELEASE_SCRIPT: &[u8] = b"if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) else return 0 end";

/// What a reply on the commands connection answers, in the order the commands were sent.
#[derive(Debug)]
enum Expect {
    /// Nothing to do with it (the hello, a PUBLISH): an error is logged.
    Other,
    /// A nick claim (`SET … NX`): its answer goes to the core.
    Claim(NickClaim),
    /// A nick release (compare-and-delete): sent again after a reconnect if the link is lost
    /// before it is answered.
    Release(NickClaim),
    /// A private message to another node's user (PUBLISH on its channel): if no node
    /// received it (0), the sender is told nobody holds the nick.
    Tell { by: (ClientId, u32), to: Arc<str> },
    /// A room message (folded room) kept in the room's stream and published
    /// ([`history::PUBLISH_SCRIPT`]): the reply is its stream id.
    Published(Arc<str>),
    /// A read of a room's stream ([`history::READ_SCRIPT`]) for its subscription's
    /// `generation`.
    Read { room: Arc<str>, generation: u64 },
    /// Heartbeats, dead nodes, resynchronisation ([`nodes`]).
    Node(nodes::Reply),
    /// A join asked of the cluster ([`rooms::JOIN_SCRIPT`]): its answer goes to the core.
    Join(crate::core::cluster::JoinRequest),
    /// A WHOIS of a nick held elsewhere (`GET` of its key): the node holding it goes to the
    /// core.
    Whois { by: (ClientId, u32), nick: Arc<str> },
    /// A room list ([`rooms::ROOMS_SCRIPT`]): the cluster's rooms go to the core.
    Rooms { by: (ClientId, u32) },
    /// A room's members for a NAMES or WHO ([`rooms::NAMES_SCRIPT`]): they go to the core.
    Names {
        by: (ClientId, u32),
        room: Arc<str>,
        listing: crate::core::Listing,
    },
    /// A room's members written again after a reconnect ([`rooms::SYNC_SCRIPT`]): the room's
    /// members as Redis has them go to the core.
    Sync(Arc<str>),
}

/// Where the cluster meets and who this node is in it (`--backplane`, `--node`,
/// `--backplane-prefix`, `--backplane-max-queue`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackplaneConfig {
    /// Redis's `host:port`, from a `redis://HOST[:PORT]` URL ([`parse_url`]).
    pub addr: String,
    /// This node's name: envelopes carry it, so a node knows its own messages when Redis sends
    /// them back. Unique per process ([`default_node`]) unless given.
    pub node: String,
    /// Starts every channel (and, later, key), so several clusters can share one Redis (pub/sub
    /// ignores database numbers, so a database cannot separate them).
    pub prefix: String,
    /// Bytes the queue towards Redis holds at most (see the module doc).
    pub max_queue: usize,
    /// Redis's password (`--backplane-password-file`), sent with AUTH first on every
    /// connection; `None`: no AUTH.
    pub password: Option<Secret>,
}

/// A password that `{:?}` does not print (a `Config` may be logged whole).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Reads a password file: its first line, without the line end. An empty password is refused
/// (a file left empty by mistake should not look like a configured password).
pub fn read_password_file(path: &std::path::Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--backplane-password-file {}: {e}", path.display()))?;
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        return Err(format!(
            "--backplane-password-file {}: the first line is empty",
            path.display()
        ));
    }
    Ok(Secret(first.to_string()))
}

impl BackplaneConfig {
    /// The default prefix.
    pub const PREFIX: &str = "pollchat:";
    /// The default `max_queue`: 8 MiB is thousands of messages, seconds of a busy node's
    /// traffic, so only a Redis that stopped reading fills it.
    pub const MAX_QUEUE: usize = 8 << 20;
}

/// `redis://HOST[:PORT]` (port 6379 by default; `[::1]` for IPv6) → `HOST:PORT`. Credentials,
/// a database number, TLS (`rediss://`) and other schemes are refused with a line that says
/// why.
pub fn parse_url(url: &str) -> Result<String, String> {
    let rest = match url.split_once("://") {
        Some(("redis", rest)) => rest,
        Some(("rediss", _)) => return Err("TLS to Redis (rediss://) is not supported yet".into()),
        _ => return Err(format!("{url:?} is not a redis://HOST:PORT URL")),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        // (The URL is not repeated: it holds a password, which would reach the log.)
        return Err(
            "takes no credentials in the URL (the command line is readable by every user of \
             the host): put Redis's password in a file and give --backplane-password-file FILE"
                .into(),
        );
    }
    if !path.is_empty() {
        return Err(format!(
            "{url:?}: no database number or path: pub/sub ignores databases (use --backplane-prefix to separate clusters)"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
        (format!("[{host}]"), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" || host.contains(|c: char| c.is_whitespace()) {
        return Err(format!("{url:?}: no host"));
    }
    let port: u16 = match port {
        None => 6379,
        Some(p) => p
            .parse()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{url:?}: {p:?} is not a port"))?,
    };
    Ok(format!("{host}:{port}"))
}

/// A name unique per process: the host's name and the process id (`HOST-PID`).
pub fn default_node() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "node".into()
    };
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(48)
        .collect();
    format!("{host}-{}", std::process::id())
}

/// A node name or a prefix: 1 to 64 printable bytes without spaces (`what` names the flag in
/// the error).
pub fn check_word(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 || s.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} must be 1-64 bytes without spaces or control characters"
        ));
    }
    Ok(())
}

/// The loop's side of the cluster: the two Redis connections and what is subscribed.
pub struct Backplane {
    config: BackplaneConfig,
    commands: RedisConn,
    subscriptions: RedisConn,
    /// Folded names of the rooms subscribed to (those with local members), so that a
    /// reconnect subscribes again to them (kept up to date while Redis is lost, too).
    subscribed: HashSet<Arc<str>>,
    /// Which connections (commands, subscriptions) stopped at their read budget: read them
    /// again next turn (no new readiness edge would come for what they left unread).
    read_again: [bool; 2],
    /// Messages not published since the queue went over `max_queue` (0: not dropping).
    dropped: u64,
    /// Error replies Redis gave (logged at powers of two, so a flood of them is not).
    errors: u64,
    /// Redis was lost: the node serves its local users only until a reconnect.
    down: bool,
    /// Where Redis was found at start: reconnects go there (no name is resolved in the loop).
    redis_addr: SocketAddr,
    /// While down: when to try to reconnect.
    retry_at: Option<Instant>,
    /// The wait before the next try after this one fails ([`RETRY_FIRST`] to [`RETRY_MAX`]).
    backoff: Duration,
    /// The connections in use have answered since they were opened (a reconnect that gets no
    /// answer is not a link that was up).
    answered: bool,
    /// Messages, joins, parts and quits not published while Redis was lost.
    lost: u64,
    /// The link went down (`false`) or came back (`true`) and the users have not been told.
    link_change: Option<bool>,
    /// The number of the next envelope this node publishes.
    next_id: u64,
    /// Quits already handed to the core, and the order to forget them in ([`SEEN_QUITS`]).
    seen: HashSet<(String, u64)>,
    seen_order: VecDeque<(String, u64)>,
    /// This node's incarnation: a number unique in the cluster (`INCR {prefix}incarnation` at
    /// start), in the value of every nick key it sets, and the number of its guest nicks.
    incarnation: u64,
    /// What each reply on the commands connection answers, oldest first.
    expect: VecDeque<Expect>,
    /// Claims decided, and private messages nobody received, since the driver last took them.
    answers: Vec<Answer>,
    /// Folded nicks of the local users, whose channels are subscribed to (for private
    /// messages), kept up to date while Redis is lost too, for the reconnect.
    users: HashSet<Arc<str>>,
    /// Releases to send once Redis is back: asked for while it was lost, or sent (or claims
    /// made) without an answer before it was lost. At most one or two per local user.
    to_release: Vec<NickClaim>,
    /// Since when commands have waited for an answer with none coming (`None`: nothing
    /// awaited, or an answer came since the last write): past [`STALL`], Redis is lost.
    waiting_since: Option<Instant>,
    /// The rooms' streams: the last id seen of each, what is held while it is read
    /// ([`history`]).
    streams: Streams,
    /// Messages each room's stream keeps (`--history`; 0: no stream is written).
    history: usize,
    /// Heartbeats, the registry of live nodes and their users, dead nodes ([`nodes`]).
    nodes: nodes::Nodes,
    /// Joins to take back once Redis is back (their answers were lost with the link): at most
    /// one per room a local user tried to join meanwhile.
    to_leave: Vec<rooms::Leave>,
    /// Rooms this node's last member left while Redis was lost: its entries in their shared
    /// member lists go once Redis is back (bounded by `--max-total-rooms`).
    left_while_down: HashSet<Arc<str>>,
    /// Room channels SUBSCRIBEd to and not yet confirmed by Redis, and the joins (and, after
    /// a reconnect, the reads of rooms' members) waiting for that confirmation, since when
    /// (see [`rooms`]): a join is asked only once its node receives what the room's other
    /// members do next. At most one per room a local user is joining. One that waits past
    /// [`STALL`] (Redis refused the SUBSCRIBE, an ACL without the channel say) is answered
    /// as if Redis were lost: its joiner's input is held meanwhile.
    unconfirmed: HashSet<Vec<u8>>,
    parked: Vec<(Vec<u8>, Note, Instant)>,
}

impl Backplane {
    /// Connects both connections (blocking, within [`redis::CONNECT_TIMEOUT`]: at start only).
    /// The error says which Redis could not be reached and why.
    pub fn connect(config: BackplaneConfig, registry: &Registry) -> io::Result<Backplane> {
        let open = |role, token, first| {
            let name = format!("pollchat-{}-{role}", config.node);
            let password = config.password.as_ref().map(|p| p.0.as_str());
            RedisConn::open(&config.addr, &name, password, role, registry, token, first).map_err(
                |e| {
                    io::Error::new(
                        e.kind(),
                        format!("--backplane: cannot use Redis at {}: {e}", config.addr),
                    )
                },
            )
        };
        let counter = format!("{}incarnation", config.prefix);
        let incr: &[&[u8]] = &[b"INCR", counter.as_bytes()];
        let (commands, number) = open("commands", COMMANDS, Some(incr))?;
        let Some(OwnedFrame::Integer(incarnation @ 1..)) = number else {
            return Err(io::Error::other(format!(
                "--backplane: Redis at {} did not answer INCR {counter} with a number",
                config.addr
            )));
        };
        let incarnation = incarnation as u64;
        let (subscriptions, _) = open("subscriptions", SUBSCRIPTIONS, None)?;
        let redis_addr = commands.peer()?;
        let config_node = config.node.clone();
        info!(
            "backplane: node {} (incarnation {incarnation}) joined the cluster through Redis at {} \
             (prefix {:?})",
            config.node, config.addr, config.prefix
        );
        let mut backplane = Backplane {
            config,
            commands,
            subscriptions,
            subscribed: HashSet::new(),
            read_again: [false; 2],
            dropped: 0,
            errors: 0,
            down: false,
            redis_addr,
            retry_at: None,
            backoff: RETRY_FIRST,
            answered: true,
            lost: 0,
            link_change: None,
            // Numbered from the incarnation up: a node restarted under the same name does not
            // reuse the numbers of its earlier incarnation, which other nodes may remember.
            next_id: incarnation << 32,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            incarnation,
            expect: VecDeque::new(),
            answers: Vec::new(),
            users: HashSet::new(),
            to_release: Vec::new(),
            waiting_since: None,
            streams: Streams::new(&config_node),
            history: 0,
            nodes: nodes::Nodes::default(),
            to_leave: Vec::new(),
            left_while_down: HashSet::new(),
            unconfirmed: HashSet::new(),
            parked: Vec::new(),
        };
        backplane.nodes_start(Instant::now());
        Ok(backplane)
    }

    /// Keeps `history` messages in each room's stream (`--history`; 0: none, and room messages
    /// are published plainly).
    pub fn set_history(&mut self, history: usize) {
        self.history = history;
    }

    /// This node's incarnation (see the field).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The claims decided and the private messages nobody received since the last call, for
    /// the core ([`Core::answer`]).
    ///
    /// [`Core::answer`]: crate::core::Core::answer
    pub fn take_answers(&mut self) -> Vec<Answer> {
        std::mem::take(&mut self.answers)
    }

    /// The key of a nick: `{prefix}nick:{folded nick}`.
    fn nick_key(&self, nick: &str) -> Vec<u8> {
        format!("{}nick:{}", self.config.prefix, fold(nick)).into_bytes()
    }

    /// The value of a user's nick key: `{node}:{incarnation}:{client}:{serial}`, so a release
    /// deletes only this user's claim, and a restarted node can tell its old keys (another
    /// incarnation).
    fn nick_value(&self, claim: &NickClaim) -> Vec<u8> {
        format!(
            "{}:{}:{}:{}",
            self.config.node, self.incarnation, claim.client.0, claim.serial
        )
        .into_bytes()
    }

    fn push_release(&mut self, claim: NickClaim) {
        let (key, value) = (self.nick_key(&claim.nick), self.nick_value(&claim));
        self.commands
            .push(&[b"EVAL", RELEASE_SCRIPT, b"1", &key, &value]);
        self.expect.push_back(Expect::Release(claim));
    }

    /// Whether `token` is one of the backplane's.
    pub fn owns(token: Token) -> bool {
        token == COMMANDS || token == SUBSCRIPTIONS
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.config.node
    }

    /// Rooms subscribed to.
    pub fn subscribed(&self) -> usize {
        self.subscribed.len()
    }

    /// Queues what the core asked for (written before the turn's client output).
    pub fn note(&mut self, note: Note) {
        if self.down {
            // Kept for the reconnect: what to subscribe to then. What happens meanwhile
            // reaches local members only.
            match note {
                Note::Subscribe(room) => {
                    self.streams.subscribe(room.clone());
                    self.left_while_down.remove(&room);
                    self.subscribed.insert(room);
                }
                Note::Unsubscribe(room) => {
                    self.streams.unsubscribe(&room);
                    self.subscribed.remove(&room);
                    self.left_while_down.insert(room);
                }
                Note::History { room, ask } => self.streams.ask(&room, ask),
                Note::Publish(_) | Note::Tell { .. } => self.lost += 1,
                Note::Claim(claim) => self.answers.push(Answer::Claim(ClaimAnswer {
                    claim,
                    outcome: Outcome::Failed,
                })),
                Note::Release(claim) => self.to_release.push(claim),
                Note::SubscribeUser(nick) => drop(self.users.insert(nick)),
                Note::UnsubscribeUser(nick) => drop(self.users.remove(&nick)),
                Note::Present(user) => self.user_present(user),
                Note::Absent(client) => self.user_absent(client),
                // Refused: the core tells the joiner the link is down.
                Note::Join(request) => self.answers.push(Answer::Join {
                    request,
                    answer: None,
                }),
                // A room with local members learns its members once Redis is back.
                Note::SyncRoom {
                    room,
                    state: Some(_),
                    ..
                } => self.answers.push(Answer::Synced {
                    room,
                    members: None,
                }),
                Note::Member { .. }
                | Note::RoomState { .. }
                | Note::Kill { .. }
                | Note::Invite { .. }
                | Note::SyncRoom { .. } => self.lost += 1,
                Note::Whois { by, nick } => self.answers.push(Answer::Whois {
                    by,
                    nick,
                    node: None,
                }),
                Note::Rooms { by } => self.answers.push(Answer::Rooms { by, rooms: None }),
                Note::Names { by, room, listing } => self.answers.push(Answer::Names {
                    by,
                    room,
                    listing,
                    members: None,
                }),
            }
            return;
        }
        match note {
            Note::Subscribe(room) => {
                let channel = envelope::room_channel(&self.config.prefix, &room);
                self.subscriptions.push(&[b"SUBSCRIBE", &channel]);
                self.streams.subscribe(room.clone());
                self.unconfirmed.insert(channel);
                self.subscribed.insert(room);
            }
            Note::Unsubscribe(room) => {
                let channel = envelope::room_channel(&self.config.prefix, &room);
                self.subscriptions.push(&[b"UNSUBSCRIBE", &channel]);
                self.streams.unsubscribe(&room);
                self.subscribed.remove(&room);
            }
            Note::History { room, ask } => self.streams.ask(&room, ask),
            Note::Publish(shared) => {
                if !self.hides(&shared) {
                    self.publish(&shared, None)
                }
            }
            Note::Tell { by, msg } => {
                let to = msg.to.clone();
                self.publish(&Shared::Private(msg), Some((by, to)));
            }
            Note::SubscribeUser(nick) => {
                let channel = envelope::user_channel(&self.config.prefix, &nick);
                self.subscriptions.push(&[b"SUBSCRIBE", &channel]);
                self.users.insert(nick);
            }
            Note::UnsubscribeUser(nick) => {
                let channel = envelope::user_channel(&self.config.prefix, &nick);
                self.subscriptions.push(&[b"UNSUBSCRIBE", &channel]);
                self.users.remove(&nick);
            }
            // Claims and releases are never dropped (at most a few per local user).
            Note::Claim(claim) => {
                let (key, value) = (self.nick_key(&claim.nick), self.nick_value(&claim));
                self.commands.push(&[b"SET", &key, &value, b"NX"]);
                self.expect.push_back(Expect::Claim(claim));
            }
            Note::Release(claim) => self.push_release(claim),
            Note::Present(user) => self.user_present(user),
            Note::Absent(client) => self.user_absent(client),
            note @ (Note::Join(_)
            | Note::Member { .. }
            | Note::RoomState { .. }
            | Note::Kill { .. }
            | Note::Invite { .. }
            | Note::SyncRoom { .. }
            | Note::Whois { .. }
            | Note::Rooms { .. }
            | Note::Names { .. }) => self.room_note(note),
        }
    }

    /// Publishes `shared` on its channels; `tell`: a private message from a local user, whose
    /// PUBLISH's answer says whether anyone received it.
    fn publish(&mut self, shared: &Shared, tell: Option<((ClientId, u32), Arc<str>)>) {
        let channels = envelope::channels(&self.config.prefix, shared);
        let body = envelope::encode(&self.config.node, self.next_id, shared);
        self.next_id += 1;
        // A room message is kept in its room's stream too, in the same script.
        let stream = match shared {
            Shared::Message(msg) if self.history > 0 => Some(fold(&msg.room)),
            _ => None,
        };
        let script = if stream.is_some() {
            history::PUBLISH_SCRIPT.len() + 64
        } else {
            0
        };
        // A command's framing is a few dozen bytes on top of its arguments.
        let cost: usize = channels
            .iter()
            .map(|c| c.len() + body.len() + 64 + script)
            .sum();
        if self.commands.queued() + cost > self.config.max_queue {
            if self.dropped == 0 {
                warn!(
                    "backplane: the queue towards Redis is over --backplane-max-queue {} bytes: \
                     room messages, joins, parts and quits are not sent to other nodes until it \
                     drains (local members still get them)",
                    self.config.max_queue
                );
            }
            self.dropped += 1;
            return;
        }
        if self.dropped > 0 {
            warn!(
                "backplane: the queue towards Redis drained; {} messages, joins, parts or quits \
                 were not sent to other nodes",
                self.dropped
            );
            self.dropped = 0;
        }
        if let Some(room) = stream {
            let key = history::stream_key(&self.config.prefix, &room);
            let (count, ttl) = (
                self.history.to_string(),
                history::HISTORY_TTL_MS.to_string(),
            );
            let script = history::PUBLISH_SCRIPT;
            for channel in channels {
                let args: [&[u8]; 7] = [
                    b"EVAL",
                    script,
                    b"1",
                    &key,
                    count.as_bytes(),
                    &body,
                    ttl.as_bytes(),
                ];
                let mut parts = args.to_vec();
                parts.push(&channel);
                self.commands.push(&parts);
                self.expect
                    .push_back(Expect::Published(room.as_str().into()));
            }
            return;
        }
        for channel in channels {
            self.commands.push(&[b"PUBLISH", &channel, &body]);
            self.expect.push_back(match &tell {
                Some((by, to)) => Expect::Tell {
                    by: *by,
                    to: to.clone(),
                },
                None => Expect::Other,
            });
        }
    }

    /// Readiness of one of the backplane's connections: what other nodes said is appended to
    /// `received`, for the core.
    pub fn ready(
        &mut self,
        token: Token,
        readable: bool,
        registry: &Registry,
        received: &mut Vec<Shared>,
    ) {
        if self.down || !readable {
            // (Writable: the end-of-turn flush writes.)
            return;
        }
        if token == SUBSCRIPTIONS {
            self.read_subscriptions(registry, received);
        } else {
            self.read_commands(registry, received);
        }
    }

    /// Whether reading stopped at the budget and must go on next turn.
    pub fn read_again(&self) -> bool {
        (self.read_again.contains(&true) && !self.down) || !self.answers.is_empty()
    }

    /// Goes on reading where the budget stopped an earlier turn.
    pub fn resume(&mut self, registry: &Registry, received: &mut Vec<Shared>) {
        if self.read_again[0] {
            self.read_commands(registry, received);
        }
        if self.read_again[1] && !self.down {
            self.read_subscriptions(registry, received);
        }
    }

    /// The folded room of a room channel of ours (`{prefix}room:{folded}`).
    fn channel_room<'c>(prefix: &str, channel: &'c [u8]) -> Option<&'c str> {
        let rest = channel.strip_prefix(prefix.as_bytes())?;
        std::str::from_utf8(rest.strip_prefix(b"room:")?).ok()
    }

    fn read_subscriptions(&mut self, registry: &Registry, received: &mut Vec<Shared>) {
        let (node, prefix) = (&self.config.node, &self.config.prefix);
        let (seen, seen_order) = (&mut self.seen, &mut self.seen_order);
        let streams = &mut self.streams;
        let mut errors = Vec::new();
        let (unconfirmed, mut confirmed) = (&self.unconfirmed, Vec::new());
        let result = self.subscriptions.read(|frame| match frame {
            OwnedFrame::Array(mut parts) if parts.len() == 3 => {
                let kind = match &parts[0] {
                    OwnedFrame::BulkString(k) => k.clone(),
                    _ => return,
                };
                if kind == b"subscribe" {
                    if let OwnedFrame::BulkString(channel) = &parts[1] {
                        // Confirmed: the room's stream may be read now (see `history`), and
                        // the joins waiting for it asked (see `rooms`).
                        if let Some(room) = Self::channel_room(prefix, channel) {
                            streams.confirmed(room);
                        }
                        if unconfirmed.contains(channel) {
                            confirmed.push(channel.clone());
                        }
                    }
                    return;
                }
                let payload = parts.pop();
                let channel = parts.pop();
                let (Some(OwnedFrame::BulkString(channel)), Some(OwnedFrame::BulkString(payload))) =
                    (channel, payload)
                else {
                    return;
                };
                if kind != b"message" {
                    return; // an unsubscribe confirmation
                }
                let (stream_id, body) = history::split_payload(&payload);
                match envelope::decode_envelope(body) {
                    Some(got) if envelope::channels(prefix, &got.shared).contains(&channel) => {
                        if let (Some(id), Shared::Message(msg)) = (stream_id, &got.shared) {
                            // Kept in its stream: delivered once, in stream order.
                            let room = fold(&msg.room);
                            if let Some(shared) = streams.heard(&room, id, got, payload.len()) {
                                received.push(shared);
                            }
                            return;
                        }
                        if got.origin == *node {
                            return;
                        }
                        if let Shared::Quit { .. } | Shared::NickChanged { .. } = got.shared {
                            let key = (got.origin, got.id);
                            if !seen.insert(key.clone()) {
                                return; // a copy from another of its rooms
                            }
                            seen_order.push_back(key);
                            if seen_order.len() > SEEN_QUITS
                                && let Some(old) = seen_order.pop_front()
                            {
                                seen.remove(&old);
                            }
                        }
                        received.push(got.shared)
                    }
                    _ => debug!(
                        "backplane: dropped what is not a pollchat message on {}",
                        String::from_utf8_lossy(&channel)
                    ),
                }
            }
            OwnedFrame::Error(e) => errors.push(e),
            _ => {}
        });
        for e in errors {
            self.redis_error("subscriptions", &e);
        }
        for channel in confirmed {
            self.subscribed_to(&channel);
        }
        match result {
            Ok(end) => {
                self.read_again[1] = end == ReadEnd::Budget;
                self.read_streams();
            }
            Err(e) => self.fail(registry, "subscriptions", &e),
        }
    }

    /// Sends the reads of the rooms' streams that are due (see [`history`]).
    fn read_streams(&mut self) {
        if self.down {
            return;
        }
        let lost = self.streams.take_lost();
        if lost > 0 {
            warn!(
                "backplane: {lost} room messages from other nodes were dropped while their \
                 rooms' history was read (over {} held per room or {} bytes in all)",
                history::HOLD_MAX,
                history::HOLD_BYTES
            );
        }
        let count = self.history.max(1).to_string();
        let budget = history::READ_BYTES.to_string();
        let most = history::ENTRY_MAX.to_string();
        for (room, generation) in self.streams.next_reads() {
            let key = history::stream_key(&self.config.prefix, &room);
            self.commands.push(&[
                b"EVAL",
                history::READ_SCRIPT,
                b"1",
                &key,
                count.as_bytes(),
                budget.as_bytes(),
                most.as_bytes(),
            ]);
            self.expect.push_back(Expect::Read { room, generation });
        }
    }

    /// The entries of a read's reply, newest first (`None`: not a read's reply).
    fn stream_entries(frame: OwnedFrame) -> Option<Vec<(StreamId, envelope::Received)>> {
        let OwnedFrame::Array(entries) = frame else {
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let OwnedFrame::Array(mut parts) = entry else {
                continue;
            };
            let (Some(OwnedFrame::Array(fields)), Some(OwnedFrame::BulkString(id))) =
                (parts.pop(), parts.pop())
            else {
                continue;
            };
            let Some(id) = StreamId::parse(&id) else {
                continue;
            };
            let envelope = fields.chunks(2).find_map(|f| match f {
                [OwnedFrame::BulkString(k), OwnedFrame::BulkString(v)] if k == b"e" => Some(v),
                _ => None,
            });
            if let Some(got) = envelope.and_then(|e| envelope::decode_envelope(e)) {
                out.push((id, got));
            }
        }
        Some(out)
    }

    fn read_commands(&mut self, registry: &Registry, received: &mut Vec<Shared>) {
        let mut errors = Vec::new();
        let mut answered = false;
        let mut reads = Vec::new();
        let mut for_nodes = Vec::new();
        let mut joins = Vec::new();
        let (expect, answers, streams) = (&mut self.expect, &mut self.answers, &mut self.streams);
        let result = self.commands.read(|frame| {
            answered = true;
            if let Some(Expect::Join(_)) = expect.front() {
                if let Some(Expect::Join(request)) = expect.pop_front() {
                    joins.push((request, frame));
                }
                return;
            }
            if let Some(Expect::Sync(_)) = expect.front() {
                if let Some(Expect::Sync(room)) = expect.pop_front() {
                    if let OwnedFrame::Error(e) = &frame {
                        errors.push(e.clone());
                    }
                    let members = rooms::members_answer(&frame);
                    answers.push(Answer::Synced { room, members });
                }
                return;
            }
            if matches!(expect.front(), Some(Expect::Node(_))) {
                if let Some(Expect::Node(reply)) = expect.pop_front() {
                    for_nodes.push((reply, frame));
                }
                return;
            }
            let outcome = match &frame {
                OwnedFrame::SimpleString(ok) if ok == b"OK" => Outcome::Won,
                OwnedFrame::Null => Outcome::Taken,
                _ => Outcome::Failed,
            };
            match expect.pop_front() {
                Some(Expect::Claim(claim)) => {
                    answers.push(Answer::Claim(ClaimAnswer { claim, outcome }))
                }
                Some(Expect::Tell { by, to }) if frame == OwnedFrame::Integer(0) => {
                    answers.push(Answer::Undelivered { by, to })
                }
                Some(Expect::Published(room)) => {
                    if let OwnedFrame::BulkString(id) = &frame
                        && let Some(id) = StreamId::parse(id)
                    {
                        streams.published(&room, id);
                    }
                }
                Some(Expect::Read { room, generation }) => {
                    if let OwnedFrame::Error(e) = &frame {
                        errors.push(e.clone());
                    }
                    let entries = Self::stream_entries(frame);
                    let read = streams.read_done(&room, generation, entries);
                    reads.push((room, read));
                    return;
                }
                Some(Expect::Whois { by, nick }) => {
                    let node = rooms::holder_node(&frame);
                    answers.push(Answer::Whois { by, nick, node })
                }
                Some(Expect::Rooms { by }) => {
                    if let OwnedFrame::Error(e) = &frame {
                        errors.push(e.clone());
                    }
                    let rooms = rooms::rooms_answer(&frame);
                    answers.push(Answer::Rooms { by, rooms })
                }
                Some(Expect::Names { by, room, listing }) => {
                    if let OwnedFrame::Error(e) = &frame {
                        errors.push(e.clone());
                    }
                    let members = rooms::names_answer(&frame);
                    answers.push(Answer::Names {
                        by,
                        room,
                        listing,
                        members,
                    })
                }
                // PUBLISH answers how many nodes received it, a release whether it deleted:
                // nothing to do with that.
                Some(
                    Expect::Other
                    | Expect::Release(_)
                    | Expect::Tell { .. }
                    | Expect::Node(_)
                    | Expect::Join(_)
                    | Expect::Sync(_),
                )
                | None => {}
            }
            if let OwnedFrame::Error(e) = frame {
                errors.push(e);
            }
        });
        for (room, read) in reads {
            if read.gap {
                info!(
                    "backplane: more was said in {room} while this node was not listening than \
                     its stream keeps or one read takes: the oldest of it is not caught up"
                );
            }
            if let Some((ask, entries)) = read.history {
                self.answers.push(Answer::History { room, ask, entries });
            }
            received.extend(read.live);
        }
        for (request, frame) in joins {
            if let OwnedFrame::Error(e) = &frame {
                self.redis_error("commands", e);
            }
            self.join_answered(request, Some(&frame));
        }
        if answered {
            self.waiting_since = None;
        }
        if answered && !self.answered {
            self.answered = true;
            self.link_change = Some(true);
            self.backoff = RETRY_FIRST;
            info!(
                "backplane: reconnected to Redis at {}: {} rooms subscribed again; {} messages, \
                 joins, parts or quits of this node were not sent to other nodes meanwhile",
                self.redis_addr,
                self.subscribed.len(),
                std::mem::take(&mut self.lost)
            );
        }
        for e in errors {
            self.redis_error("commands", &e);
        }
        for (reply, frame) in for_nodes {
            self.nodes_reply(reply, frame);
        }
        match result {
            Ok(end) => {
                self.read_again[0] = end == ReadEnd::Budget;
                self.read_streams();
            }
            Err(e) => self.fail(registry, "commands", &e),
        }
    }

    fn redis_error(&mut self, role: &str, e: &str) {
        self.errors += 1;
        if self.errors.is_power_of_two() {
            warn!(
                "backplane: Redis answered an error on the {role} connection ({} so far): {e}",
                self.errors
            );
        }
    }

    /// Whether commands are queued that no `write` was tried for yet (the loop must turn again
    /// at once rather than sleep on them).
    pub fn unwritten(&self) -> bool {
        !self.down && (self.commands.unwritten() || self.subscriptions.unwritten())
    }

    /// Writes what this turn queued, one `write` per connection.
    pub fn flush(&mut self, registry: &Registry) {
        if self.down {
            return;
        }
        self.nodes_flush();
        // SUBSCRIBEs are never dropped, but a Redis that stopped reading them while users join
        // and part over and over would let them pile up: past the limit it is taken as lost,
        // and the reconnect subscribes again to what is current.
        if self.subscriptions.queued() > self.config.max_queue {
            let e = io::Error::other("the subscriptions queue is over --backplane-max-queue");
            return self.fail(registry, "subscriptions", &e);
        }
        if let Err(e) = self.subscriptions.flush(registry) {
            return self.fail(registry, "subscriptions", &e);
        }
        if let Err(e) = self.commands.flush(registry) {
            return self.fail(registry, "commands", &e);
        }
        if !self.expect.is_empty() && self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
    }

    /// Whether the link went down (`Some(false)`) or came back (`Some(true)`) since the last
    /// call: the loop tells the users.
    pub fn take_link_change(&mut self) -> Option<bool> {
        self.link_change.take()
    }

    /// When to wake up: to reconnect while Redis is lost; otherwise for the heartbeat, or to
    /// give up on a Redis that answers nothing.
    pub fn retry_at(&self) -> Option<Instant> {
        if self.down {
            return self.retry_at;
        }
        [
            self.waiting_since.map(|since| since + STALL),
            self.next_beat(),
            self.parked.iter().map(|p| p.2 + STALL).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Redis is lost (or a reconnect failed): said once per outage; the node goes on alone and
    /// tries again after the backoff.
    fn fail(&mut self, registry: &Registry, role: &str, e: &io::Error) {
        if self.down {
            return;
        }
        self.down = true;
        self.waiting_since = None;
        // What was sent and not answered may or may not have been done: a claim is answered
        // as failed and released once Redis is back, a release is sent again.
        for expect in std::mem::take(&mut self.expect) {
            match expect {
                Expect::Other
                | Expect::Tell { .. }
                | Expect::Published(_)
                | Expect::Read { .. }
                | Expect::Node(_) => {}
                Expect::Claim(claim) => {
                    self.answers.push(Answer::Claim(ClaimAnswer {
                        claim: claim.clone(),
                        outcome: Outcome::Failed,
                    }));
                    self.to_release.push(claim);
                }
                Expect::Release(claim) => self.to_release.push(claim),
                Expect::Join(request) => self.join_answered(request, None),
                Expect::Whois { by, nick } => self.answers.push(Answer::Whois {
                    by,
                    nick,
                    node: None,
                }),
                Expect::Rooms { by } => self.answers.push(Answer::Rooms { by, rooms: None }),
                Expect::Names { by, room, listing } => self.answers.push(Answer::Names {
                    by,
                    room,
                    listing,
                    members: None,
                }),
                Expect::Sync(room) => self.answers.push(Answer::Synced {
                    room,
                    members: None,
                }),
            }
        }
        self.nodes_lost();
        // Never asked: refused as a join asked while Redis is lost (a room's members are
        // asked again at the next reconnect).
        self.unconfirmed.clear();
        for (_, note, _) in std::mem::take(&mut self.parked) {
            self.unpark(note);
        }
        self.commands.deregister(registry);
        self.subscriptions.deregister(registry);
        self.read_again = [false; 2];
        let wait = self.backoff;
        self.retry_at = Some(Instant::now() + wait);
        self.backoff = (wait * 2).min(RETRY_MAX);
        if self.answered {
            self.link_change = Some(false);
            error!(
                "backplane: lost Redis at {} ({role} connection: {e}); this node serves its \
                 local users only until it reconnects (tried after {wait:?}, then at most every \
                 {RETRY_MAX:?}): messages do not cross nodes meanwhile, and are not sent later",
                self.redis_addr
            );
        } else {
            debug!("backplane: reconnect failed ({role} connection: {e}); next try in {wait:?}");
        }
        self.answered = false;
    }

    /// While Redis is lost, once the backoff is over: opens both connections again (without
    /// blocking) and subscribes again to every room with local members.
    pub fn tick(&mut self, now: Instant, registry: &Registry) {
        if !self.down
            && self
                .waiting_since
                .is_some_and(|since| now.saturating_duration_since(since) >= STALL)
        {
            let e = io::Error::new(io::ErrorKind::TimedOut, format!("no answer for {STALL:?}"));
            return self.fail(registry, "commands", &e);
        }
        if !self.down {
            self.expire_parked(now);
            return self.nodes_tick(now);
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return;
        }
        self.retry_at = None;
        let node = &self.config.node;
        let open = |role, token| {
            let name = format!("pollchat-{node}-{role}");
            let password = self.config.password.as_ref().map(|p| p.0.as_str());
            RedisConn::reconnect(self.redis_addr, &name, password, role, registry, token)
        };
        let (commands, subscriptions) = match (
            open("commands", COMMANDS),
            open("subscriptions", SUBSCRIPTIONS),
        ) {
            (Ok(c), Ok(s)) => (c, s),
            (Err(e), _) | (_, Err(e)) => {
                // (A connection that did open is dropped, which deregisters and closes it.)
                self.down = false;
                return self.fail(registry, "new", &e);
            }
        };
        self.commands = commands;
        self.subscriptions = subscriptions;
        self.down = false;
        let hello = 2 + usize::from(self.config.password.is_some());
        self.expect.extend((0..hello).map(|_| Expect::Other));
        for claim in std::mem::take(&mut self.to_release) {
            self.push_release(claim);
        }
        // Every room's stream is read again once its new SUBSCRIBE is confirmed: what was said
        // while the link was lost is caught up then.
        self.streams.reset();
        for room in &self.subscribed {
            self.streams.subscribe_again(room);
        }
        self.take_back_joins();
        let prefix = &self.config.prefix;
        let rooms = self
            .subscribed
            .iter()
            .map(|room| envelope::room_channel(prefix, room));
        let users = self
            .users
            .iter()
            .map(|nick| envelope::user_channel(prefix, nick));
        let channels: Vec<Vec<u8>> = rooms.chain(users).collect();
        // A room's members are read again once this node receives the room again (see
        // `rooms`): who joined or left meanwhile is then in the answer or received.
        let rooms = self.subscribed.len();
        self.unconfirmed.extend(channels[..rooms].iter().cloned());
        for batch in channels.chunks(SUBSCRIBE_BATCH) {
            let mut parts: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            parts.extend(batch.iter().map(|c| c.as_slice()));
            self.subscriptions.push(&parts);
        }
        self.nodes_resync(now, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backplane_urls() {
        assert_eq!(
            parse_url("redis://127.0.0.1:6380").unwrap(),
            "127.0.0.1:6380"
        );
        assert_eq!(parse_url("redis://cache").unwrap(), "cache:6379");
        assert_eq!(parse_url("redis://[::1]:7000").unwrap(), "[::1]:7000");
        assert_eq!(parse_url("redis://[::1]").unwrap(), "[::1]:6379");
        // A URL with a password: the error names the flag to use and does not repeat it.
        for url in ["redis://u:secret@h:1", "redis://u:secret@h:1/2"] {
            let e = parse_url(url).unwrap_err();
            assert!(e.contains("--backplane-password-file"), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
        for bad in [
            "http://h:1",
            "h:6379",
            "redis://",
            "redis://h:0",
            "redis://h:99999",
            "redis://h:x",
            "redis://h:1/2",
            "redis://u:p@h:1",
            "rediss://h:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_reads_reply_gives_its_entries_and_channels_their_rooms() {
        use crate::core::cluster::RoomMessage;
        use crate::core::{MsgKind, Source};
        let shared = Shared::Message(RoomMessage {
            room: "#a".into(),
            from: Source::new("bob", "u", "h", "Bob"),
            text: "hi".into(),
            kind: MsgKind::Normal,
            tags: None,
            msgid: 9,
        });
        let bulk = |b: &[u8]| OwnedFrame::BulkString(b.to_vec());
        let entry = |id: &[u8], field: &[u8], value: Vec<u8>| {
            OwnedFrame::Array(vec![
                bulk(id),
                OwnedFrame::Array(vec![bulk(field), OwnedFrame::BulkString(value)]),
            ])
        };
        let reply = OwnedFrame::Array(vec![
            entry(b"5-1", b"e", envelope::encode("n", 1, &shared)),
            entry(b"5-0", b"x", envelope::encode("n", 0, &shared)),
            entry(b"bad", b"e", envelope::encode("n", 0, &shared)),
            entry(b"4-0", b"e", b"not an envelope".to_vec()),
            OwnedFrame::Integer(3),
        ]);
        let got = Backplane::stream_entries(reply).expect("entries");
        assert_eq!(got.len(), 1, "only well-formed entries");
        assert_eq!(got[0].0, StreamId { ms: 5, seq: 1 });
        assert_eq!(got[0].1.shared, shared);
        assert!(Backplane::stream_entries(OwnedFrame::Error("ERR".into())).is_none());
        assert_eq!(Backplane::channel_room("p:", b"p:room:#a"), Some("#a"));
        assert_eq!(Backplane::channel_room("p:", b"p:user:bob"), None);
        assert_eq!(Backplane::channel_room("p:", b"q:room:#a"), None);
    }

    #[test]
    fn node_names() {
        let n = default_node();
        assert!(check_word("--node", &n).is_ok(), "{n}");
        assert!(n.ends_with(&format!("-{}", std::process::id())));
        assert!(check_word("--node", "").is_err());
        assert!(check_word("--node", "a b").is_err());
        assert!(check_word("--node", &"x".repeat(65)).is_err());
    }
}

/// The queue limit, against a "Redis" that answers the start and then never reads again.
#[cfg(test)]
mod queue_tests {
    use super::*;
    use crate::core::cluster::RoomMessage;
    use crate::core::{MsgKind, Source};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A listener that accepts two connections, answers each one's CLIENT SETNAME and PING
    /// (and the first one's INCR of the incarnation), then holds them open without reading until the returned sender is dropped; returns its
    /// address.
    fn stalled_redis() -> (String, std::sync::mpsc::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (hold, until) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for (end, answer) in [
                (&b"incarnation\r\n"[..], &b"+OK\r\n+PONG\r\n:1\r\n"[..]),
                (b"PING\r\n", b"+OK\r\n+PONG\r\n"),
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let mut got = Vec::new();
                // The hello is two commands, the second of which is PING (then the INCR).
                while !got.ends_with(end) {
                    let n = s.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(answer).unwrap();
                held.push(s);
            }
            let _ = until.recv();
            drop(held);
        });
        (addr, hold)
    }

    #[test]
    fn past_the_queue_limit_messages_are_not_published_and_the_queue_stays_bounded() {
        let (addr, _redis) = stalled_redis();
        let poll = mio::Poll::new().unwrap();
        let max_queue = 64 * 1024;
        let config = BackplaneConfig {
            addr,
            node: "n".into(),
            prefix: "p:".into(),
            max_queue,
            password: None,
        };
        let mut bp = Backplane::connect(config, poll.registry()).unwrap();
        let msg = Shared::Message(RoomMessage {
            room: "#r".into(),
            from: Source::new("a", "u", "h", "r"),
            text: "x".repeat(4000).into(),
            kind: MsgKind::Normal,
            tags: None,
            msgid: 0,
        });
        // Far more than the kernel's buffers on both sides and the queue can hold.
        for _ in 0..10_000 {
            bp.note(Note::Publish(msg.clone()));
            bp.flush(poll.registry());
            assert!(bp.commands.queued() <= max_queue);
        }
        assert!(bp.dropped > 0, "the stalled Redis made the queue fill");
        assert!(!bp.down, "a full queue is not a lost Redis");
        // Subscriptions are never dropped.
        bp.note(Note::Subscribe("#r".into()));
        assert_eq!(bp.subscribed(), 1);
        assert!(bp.subscriptions.queued() > 0);
    }

    fn claim(nick: &str) -> NickClaim {
        NickClaim {
            client: ClientId(7),
            serial: 1,
            nick: nick.into(),
        }
    }

    /// A backplane connected to a Redis that stops answering after the start (and the fake
    /// Redis, kept alive by the caller).
    fn stalled_backplane() -> (Backplane, mio::Poll, impl Sized) {
        let (addr, redis) = stalled_redis();
        let poll = mio::Poll::new().unwrap();
        let config = BackplaneConfig {
            addr,
            node: "n".into(),
            prefix: "p:".into(),
            max_queue: 64 * 1024,
            password: None,
        };
        let bp = Backplane::connect(config, poll.registry()).unwrap();
        (bp, poll, redis)
    }

    #[test]
    fn a_redis_that_answers_nothing_is_lost_after_the_stall_and_its_claims_fail() {
        let (mut bp, poll, _redis) = stalled_backplane();
        bp.note(Note::Claim(claim("alice")));
        bp.flush(poll.registry());
        let wake = bp.waiting_since.expect("a wake-up for the stall") + STALL;
        bp.tick(wake - Duration::from_secs(1), poll.registry());
        assert!(!bp.down && bp.take_answers().is_empty(), "not yet");
        bp.tick(wake, poll.registry());
        assert!(bp.down, "a Redis silent for {STALL:?} is lost");
        let answers = bp.take_answers();
        assert!(
            matches!(
                &answers[..],
                [Answer::Claim(ClaimAnswer {
                    outcome: Outcome::Failed,
                    ..
                })]
            ),
            "{answers:?}"
        );
        assert_eq!(bp.to_release.len(), 1, "released once Redis is back");
    }

    #[test]
    fn a_join_is_asked_once_its_room_subscription_is_confirmed_and_failed_if_redis_is_lost() {
        use crate::core::cluster::JoinRequest;
        let (mut bp, poll, _redis) = stalled_backplane();
        let request = |room: &str| JoinRequest {
            client: ClientId(3),
            serial: 1,
            room: room.into(),
            who: crate::core::Source::new("alice", "u", "h", "A"),
            at: 5,
            wait: true,
        };
        bp.note(Note::Subscribe("#a".into()));
        let before = bp.commands.queued();
        bp.note(Note::Join(request("#A")));
        assert_eq!(bp.commands.queued(), before, "parked until subscribed");
        assert_eq!(bp.parked.len(), 1);
        // A room subscribed to already (confirmed) is asked at once.
        bp.note(Note::Join(request("#b")));
        assert!(bp.commands.queued() > before);
        let asked = bp.commands.queued();
        bp.subscribed_to(b"p:room:#a");
        assert!(bp.parked.is_empty() && bp.commands.queued() > asked);
        assert!(bp.unconfirmed.is_empty());
        // Lost before the confirmation: the parked join is refused, and not taken back later
        // (it was never asked); the asked ones are, once Redis is back.
        bp.note(Note::Subscribe("#c".into()));
        bp.note(Note::Join(request("#c")));
        bp.flush(poll.registry());
        let wake = bp.waiting_since.expect("a wake-up for the stall") + STALL;
        bp.tick(wake, poll.registry());
        assert!(bp.down);
        let refused = bp
            .take_answers()
            .into_iter()
            .filter(|a| matches!(a, Answer::Join { answer: None, .. }))
            .count();
        assert_eq!(refused, 3);
        assert_eq!(bp.to_leave.len(), 2, "#a and #b were asked");
    }

    #[test]
    fn subscriptions_piling_up_towards_a_redis_that_reads_nothing_make_it_lost() {
        let (mut bp, poll, _redis) = stalled_backplane();
        // A user joining and parting over and over: far more than the kernel's buffers.
        for _ in 0..200_000 {
            bp.note(Note::Subscribe("#r".into()));
            bp.note(Note::Unsubscribe("#r".into()));
            bp.flush(poll.registry());
            if bp.down {
                break;
            }
            assert!(bp.subscriptions.queued() <= 64 * 1024 + 100);
        }
        assert!(
            bp.down,
            "the queue stays bounded: the link is dropped and made again"
        );
    }
}

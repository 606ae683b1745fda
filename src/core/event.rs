//! The core's vocabulary: what a client asks for ([`Command`]), what the core answers
//! ([`Event`], [`Error`]), and the [`Outbox`] that carries events to their recipients.
//!
//! Everything here is protocol-neutral: who did what, to whom. Turning an event into bytes is the
//! job of a protocol in `crate::protocol`, done once per event however many recipients it has.
//! Names and texts are `Arc<str>` so that an event, the room history and the user table share one
//! allocation instead of copying strings around; `Arc` rather than `Rc` so that the core is `Send`
//! and a threaded driver can keep it behind a lock.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

pub use super::modes::{Applied, Ban, Mode, ModeChange, Status};
pub use super::page::{Cursor, Part};

/// Identifies a client to the core. The driver chooses it (the event loop uses its slab key) and
/// must not reuse it before calling `Core::disconnect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub usize);

/// Wall-clock time in milliseconds since the UNIX epoch. The core never reads a clock: drivers
/// pass the time in, so tests can use any time they like.
pub type Millis = u64;

/// Who a user is, as shown to others: nick, user name, host (the cloak of the peer's IP
/// address, see `core::cloak`; never a reverse-DNS lookup) and real name. Shared by `Arc`: an event carries one pointer, and a nick
/// change makes a new `Source` rather than editing one that queued events still hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub nick: Arc<str>,
    pub user: Arc<str>,
    pub host: Arc<str>,
    pub realname: Arc<str>,
    /// The user marked itself a bot (user mode `+B`, IRCv3 bot-mode): its messages carry the
    /// `bot` tag to message-tags clients, WHO and WHOIS say so. Kept here rather than in the
    /// user's record because every render of a message has its source at hand (and the
    /// allocation stays in the same malloc size class).
    pub bot: bool,
}

impl Source {
    pub fn new(nick: &str, user: &str, host: &str, realname: &str) -> Arc<Source> {
        Arc::new(Source {
            nick: nick.into(),
            user: user.into(),
            host: host.into(),
            realname: realname.into(),
            bot: false,
        })
    }
}

/// Tags a client attached to a message for the other clients (IRC's client-only `+` tags),
/// already in their wire form (`+typing=active;+draft/reply=x`). Opaque to the core, which only
/// carries them from the command to its events: shared by `Arc` among every target and
/// recipient, and never kept in a room's history (a replay has no tags), so they cost nothing
/// once the message is delivered.
pub type ClientTags = Option<Arc<str>>;

/// A message's number, unique for the server's lifetime: one per message (each target of a
/// comma list is one), the same in every recipient's copy and the sender's echo. IRC shows it
/// as the `msgid` tag.
pub type MsgId = u64;

/// Where a [`Command::TagMsg`] goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Room(String),
    Nick(String),
}

/// How a message is meant: said, acted (`/me`), or a notice (never answered automatically).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgKind {
    Normal,
    Action,
    Notice,
}

/// What a list of users was asked for, so a protocol can answer in its own terms (IRC answers
/// NAMES, WHO, ISON and USERHOST with different numerics; the line protocol with `NAMES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// The member list sent as part of joining a room.
    Join,
    Names,
    Who,
    Ison,
    Userhost,
}

/// A request from a client, already parsed by its protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A message to a room: `None` means the client's current room. `echo`: the sender gets a
    /// copy too (IRC's echo-message). `tags`: see [`ClientTags`].
    Say {
        room: Option<String>,
        text: String,
        kind: MsgKind,
        echo: bool,
        tags: ClientTags,
    },
    /// A private message to one user.
    Private {
        to: String,
        text: String,
        kind: MsgKind,
        echo: bool,
        tags: ClientTags,
    },
    /// A message of tags only (IRC's TAGMSG: typing notifications, reactions…) to a room or a
    /// user. Delivered like a message (membership, `+m`, bans, echo), never remembered.
    TagMsg {
        to: Target,
        tags: ClientTags,
        echo: bool,
    },
    Nick(String),
    /// Join a room (creating it if needed) and make it the current room.
    Join(String),
    /// Join a room that may have a key (`+k`).
    JoinWithKey {
        room: String,
        key: String,
    },
    /// An operator changes a room's modes (and its members' standing); `None`: the current
    /// room.
    Mode {
        room: Option<String>,
        changes: Vec<ModeChange>,
    },
    /// A room's ban list.
    Bans(Option<String>),
    /// An operator removes a member from a room.
    Kick {
        room: Option<String>,
        nick: String,
        reason: Option<String>,
    },
    /// Invite a user to a room (needed to join a `+i` room).
    Invite {
        nick: String,
        room: Option<String>,
    },
    /// Who had a nick matching `nick` lately, at most `count` (0: the most an answer lists).
    Whowas {
        nick: String,
        count: usize,
    },
    /// The session checked the client's operator credentials: it is a server operator now.
    MakeOper,
    /// A server operator disconnects a user.
    Kill {
        nick: String,
        reason: Option<String>,
    },
    Part {
        room: Option<String>,
        reason: Option<String>,
    },
    /// Leave every room (IRC's `JOIN 0`).
    PartAll,
    /// List every room.
    Rooms,
    /// Users in a room (`None`: the current room), or the user with that nick.
    Who {
        target: Option<String>,
        listing: Listing,
    },
    /// Which of these nicks are connected (IRC's ISON and USERHOST).
    Lookup {
        nicks: Vec<String>,
        listing: Listing,
    },
    /// Show a room's topic (`text: None`) or set it (an empty text clears it).
    Topic {
        room: Option<String>,
        text: Option<String>,
    },
    /// Set an away message, or come back with `None`.
    Away(Option<String>),
    Whois(String),
    /// A room's settings (IRC's MODE query); `None`: the current room.
    RoomInfo(Option<String>),
    /// User and room counts.
    Stats,
    /// Show (no changes) or change the asker's own user modes: `i` invisible (left out of the
    /// mask searches of users who share no room with it), `w` wallops (receives operators'
    /// WALLOPS); `-o` stops being a server operator (`+o` only comes with OPER).
    UserMode(Vec<(bool, char)>),
    /// A server operator's message to every user with `+w`.
    Wallops(String),
    /// The asker's ignore list (IRC's SILENCE, the line protocol's /ignore): `None` shows it;
    /// `Some((true, mask))` adds a `nick!user@host` mask (a bare nick means `nick!*@*`),
    /// `Some((false, mask))` removes it. Private messages, notices and invitations from a
    /// matching sender are dropped without telling the sender.
    Silence(Option<(bool, String)>),
    /// A server operator bans a `user@host` mask from the whole server for `minutes` (0: for
    /// good): users it matches are disconnected, and nobody it matches may register.
    ServerBan {
        mask: String,
        minutes: u64,
        reason: Option<String>,
    },
    /// A server operator lifts a server ban.
    ServerUnban(String),
    /// A server operator lists the server bans.
    ServerBans,
    /// Presence: watch nicks, stop, list them (IRC's MONITOR, the line protocol's /watch).
    Watch(super::watch::Watch),
}

/// A room's topic and who set it when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub text: Arc<str>,
    pub by: Arc<str>,
    pub at: Millis,
}

/// One line of a `Rooms` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSummary {
    pub name: Arc<str>,
    pub members: usize,
    pub topic: Option<Arc<str>>,
}

/// The server's figures (IRC's LUSERS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub users: usize,
    /// Users with `+i`.
    pub invisible: usize,
    /// Server operators.
    pub opers: usize,
    pub rooms: usize,
    /// The most users there have been at once since the server started.
    pub peak: usize,
}

/// A user as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub source: Arc<Source>,
    pub away: bool,
    /// Its standing in the room listed (none outside room listings).
    pub status: Status,
    /// A server operator.
    pub oper: bool,
}

/// The answer to `Whois`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoisInfo {
    pub source: Arc<Source>,
    pub rooms: Vec<Arc<str>>,
    pub away: Option<Arc<str>>,
    /// Seconds since the user last sent a message.
    pub idle_secs: u64,
    pub connected_at: Millis,
    /// The user's real address, only when the asker may see it: the user asking about itself,
    /// or a server operator.
    pub address: Option<IpAddr>,
    /// A server operator.
    pub oper: bool,
    /// Connected over TLS.
    pub secure: bool,
    /// In a cluster: the node it is on, when another one's and known (`None`: this server).
    pub node: Option<Arc<str>>,
}

/// Something a client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A live room message.
    Message {
        room: Arc<str>,
        from: Arc<Source>,
        text: Arc<str>,
        kind: MsgKind,
        tags: ClientTags,
        id: MsgId,
    },
    /// A message replayed from a room's history on join, with the time it was first sent.
    History {
        room: Arc<str>,
        from: Arc<Source>,
        text: Arc<str>,
        kind: MsgKind,
        at: Millis,
    },
    /// A private message to `to` (sent to `to`, and to the sender when it asked for an echo).
    Private {
        from: Arc<Source>,
        to: Arc<str>,
        text: Arc<str>,
        kind: MsgKind,
        tags: ClientTags,
        id: MsgId,
    },
    /// A message of tags only to `to`, a room or a nick ([`Command::TagMsg`]). A protocol that
    /// cannot show tags shows nothing of it.
    TagMsg {
        from: Arc<Source>,
        to: Arc<str>,
        tags: ClientTags,
        id: MsgId,
    },
    /// `who` joined `room` (sent to the joiner too, as confirmation).
    Joined {
        room: Arc<str>,
        who: Arc<Source>,
    },
    Parted {
        room: Arc<str>,
        who: Arc<Source>,
        reason: Option<Arc<str>>,
    },
    /// `who` left the server; sent once to each user who shared a room with it.
    Quit {
        who: Arc<Source>,
        reason: Arc<str>,
    },
    /// `old` is now called `new`; sent to the user and once to everyone sharing a room.
    NickChanged {
        old: Arc<Source>,
        new: Arc<str>,
    },
    /// A topic was set (`topic: None`: cleared) by `by`.
    TopicChanged {
        room: Arc<str>,
        by: Arc<Source>,
        topic: Option<Arc<str>>,
    },
    /// The asker's current room changed without a join (switching to a room it is already in,
    /// or parting the current one). `None`: in no room at all.
    CurrentRoom {
        room: Option<Arc<str>>,
    },
    /// Reply to a topic query, and part of a join.
    TopicIs {
        room: Arc<str>,
        topic: Option<Topic>,
    },
    /// Members of a room (or the one user a `Who` named), sorted by nick: one page of the
    /// answer (`part`). On joining a big room only some are listed: `total` says how many
    /// there are.
    Names {
        room: Arc<str>,
        members: Vec<Member>,
        listing: Listing,
        total: usize,
        part: Part,
        /// A secret room (`+s`): IRC's 353 marks it `@`.
        secret: bool,
    },
    /// Reply to `Lookup`: the nicks that are connected, in the order asked.
    Found {
        members: Vec<Member>,
        listing: Listing,
    },
    /// Reply to `Rooms`, sorted by name: one page of it (`part`).
    RoomList {
        rooms: Vec<RoomSummary>,
        part: Part,
    },
    /// A long answer (a listing, a history replay) follows: the driver asks
    /// [`Core::page`](super::Core::page) for it a page at a time, as the client reads.
    /// Never rendered itself.
    Page(Cursor),
    Whois(WhoisInfo),
    /// Reply to `RoomInfo`: the modes as IRC letters and their arguments (`+ntk key`).
    RoomInfo {
        room: Arc<str>,
        created_at: Millis,
        modes: Arc<str>,
    },
    /// An operator changed a room's modes; sent to every member.
    ModeChanged {
        room: Arc<str>,
        by: Arc<Source>,
        changes: Vec<Applied>,
    },
    /// `nick` was kicked out of `room` by `by`; sent to the members (the kicked one too).
    Kicked {
        room: Arc<str>,
        by: Arc<Source>,
        nick: Arc<str>,
        reason: Arc<str>,
    },
    /// To the invited user.
    Invited {
        room: Arc<str>,
        by: Arc<Source>,
        nick: Arc<str>,
    },
    /// To the inviter: the invitation went out.
    Inviting {
        room: Arc<str>,
        nick: Arc<str>,
    },
    /// Reply to `Bans`.
    BanList {
        room: Arc<str>,
        bans: Vec<Ban>,
    },
    /// Reply to `Whowas`: who had a matching nick, newest first, and when they left it.
    WasHere {
        mask: Arc<str>,
        found: Vec<(Arc<Source>, Millis)>,
    },
    /// You are a server operator now.
    YouAreOper {
        nick: Arc<str>,
    },
    /// In a cluster: how the claim of a registering IRC client's nick ended (`None`: won, the
    /// client is registered). The driver hands it to the client's session, which sends the
    /// welcome or the error. Never rendered itself.
    Registration(Option<Error>),
    /// A server operator disconnected you: the driver closes the connection with this reason.
    /// Never rendered itself.
    Killed {
        by: Arc<Source>,
        reason: Arc<str>,
    },
    /// Reply to `UserMode`: the user's modes now (`+iw`…), and what changed if anything did.
    UserModes {
        nick: Arc<str>,
        changed: Option<Box<str>>,
        modes: Box<str>,
    },
    /// A server operator's message to the users with `+w`.
    Wallops {
        from: Arc<Source>,
        text: Arc<str>,
    },
    /// Reply to `Silence(None)`: the asker's ignore masks.
    SilenceList {
        masks: Vec<Box<str>>,
    },
    /// Reply to a change of the ignore list; `changed` is false when the mask was already
    /// there (or, to remove, was not).
    Silenced {
        nick: Arc<str>,
        set: bool,
        mask: Box<str>,
        changed: bool,
    },
    /// Reply to `ServerBan`: the ban in force, and how many users it disconnected.
    ServerBanSet {
        mask: Box<str>,
        until: Option<Millis>,
        reason: Box<str>,
        disconnected: usize,
    },
    /// Reply to `ServerUnban`.
    ServerBanLifted {
        mask: Box<str>,
    },
    /// Reply to `ServerBans`.
    ServerBanList {
        bans: Vec<super::kline::ServerBan>,
    },
    /// Watched users are online (told to their watchers when they arrive or take the nick,
    /// and in reply to `Watch`).
    Online {
        who: Vec<Arc<Source>>,
    },
    /// Watched nicks are offline.
    Offline {
        nicks: Vec<Box<str>>,
    },
    /// Reply to `Watch(List)`.
    WatchList {
        nicks: Vec<Box<str>>,
    },
    /// Reply to `Stats`.
    Stats(Stats),
    /// Reply to `Away`: whether the asker is now marked away.
    AwayIs {
        away: bool,
    },
    /// The server's link to the other nodes of its cluster went down (`up: false`: messages
    /// reach this server's users only) or came back. Told to every user.
    ClusterLink {
        up: bool,
    },
    /// In a cluster, after Redis came back: the user's nick `nick` was someone else's by then,
    /// so the user is now called `guest` (told after the nick change itself).
    NickLost {
        nick: Arc<str>,
        guest: Arc<str>,
    },
    /// The target of a private message is away.
    TargetAway {
        nick: Arc<str>,
        message: Arc<str>,
    },
    Error(Error),
}

/// Why a command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    NickInUse(String),
    InvalidNick(String),
    /// A well-formed nick nobody may take: a service's or the server's name, or one the
    /// operator reserved (`--reserved-nick`).
    ReservedNick(String),
    /// A nick whose user left it moments ago while in a big room, held for `secs` more
    /// seconds (`--nick-delay`) so nobody can pass for that user where its leaving went
    /// unannounced.
    NickDelayed {
        nick: String,
        secs: u64,
    },
    InvalidRoom(String),
    NoSuchNick(String),
    NoSuchRoom(String),
    NotInRoom(String),
    /// A message to a room the sender is not in.
    CannotSend(String),
    /// A message without a room while the client is in none.
    NoCurrentRoom,
    /// Joining `room` would pass the per-user room limit `max`.
    TooManyRooms {
        room: String,
        max: usize,
    },
    /// Creating `room` would pass the server's room limit `max` (`--max-total-rooms`).
    ServerRoomsFull {
        room: String,
        max: usize,
    },
    NoText,
    /// Text with CR, LF or NUL in it.
    BadText,
    /// The command needs the room's operator.
    NotOperator(String),
    /// `nick` is not in `room`.
    UserNotInRoom {
        nick: String,
        room: String,
    },
    /// `nick` is in `room` already (an invitation).
    AlreadyInRoom {
        nick: String,
        room: String,
    },
    /// The room is invite-only (`+i`).
    InviteOnly(String),
    /// The room has a key (`+k`) and it was not given.
    BadKey(String),
    /// The room is full (`+l`).
    RoomFull(String),
    /// A ban (`+b`) matches the joiner.
    Banned(String),
    /// A member without voice in a moderated room (`+m`), or a banned one, may not speak.
    Muted(String),
    /// The room's ban list is full.
    BanListFull(String),
    UnknownMode(char),
    /// A key for the room that is empty, too long or has spaces or commas.
    InvalidKey(String),
    /// A member limit for the room that is not a positive number.
    InvalidLimit(String),
    /// A ban mask for the room with spaces, commas, control or invisible characters.
    InvalidMask(String),
    /// The command needs a server operator.
    NotServerOperator,
    /// Wrong operator name or password.
    BadOperLogin,
    /// A user mode letter that does not exist.
    UnknownUserMode(char),
    /// The ignore list already holds the most masks it may: this one was not added.
    SilenceFull(String),
    /// An ignore mask with a space, a comma or a control character.
    InvalidIgnoreMask,
    /// A server ban mask that is not `user@host`, or would ban everyone.
    InvalidServerMask(String),
    /// No server ban has that mask.
    NoSuchServerBan(String),
    /// The server keeps the most server bans it may.
    ServerBansFull,
    /// The watch list is full: these nicks (comma-separated) were not added.
    WatchListFull(String),
    /// A clustered node cannot reach Redis, so it cannot claim this nick for the cluster.
    ClusterDown(String),
    /// A nick change of this user is already waiting for the cluster's answer.
    NickPending(String),
    /// A clustered node cannot reach Redis, so it cannot ask the cluster whether this room
    /// exists (and who operates it): a room with no member on this node cannot be joined now.
    RoomClusterDown(String),
}

impl Error {
    /// A short stable name, for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NickInUse(_) => "nick-in-use",
            Error::InvalidNick(_) => "invalid-nick",
            Error::ReservedNick(_) => "reserved-nick",
            Error::NickDelayed { .. } => "nick-unavailable",
            Error::InvalidRoom(_) => "invalid-room",
            Error::NoSuchNick(_) => "no-such-nick",
            Error::NoSuchRoom(_) => "no-such-room",
            Error::NotInRoom(_) | Error::CannotSend(_) => "not-in-room",
            Error::NoCurrentRoom => "no-current-room",
            Error::TooManyRooms { .. } => "too-many-rooms",
            Error::ServerRoomsFull { .. } => "server-rooms-full",
            Error::NoText => "no-text",
            Error::BadText => "bad-text",
            Error::NotOperator(_) => "not-operator",
            Error::UserNotInRoom { .. } => "user-not-in-room",
            Error::AlreadyInRoom { .. } => "already-in-room",
            Error::InviteOnly(_) => "invite-only",
            Error::BadKey(_) => "bad-key",
            Error::RoomFull(_) => "room-full",
            Error::Banned(_) => "banned",
            Error::Muted(_) => "muted",
            Error::BanListFull(_) => "ban-list-full",
            Error::UnknownMode(_) => "unknown-mode",
            Error::InvalidKey(_) => "invalid-key",
            Error::InvalidLimit(_) => "invalid-limit",
            Error::InvalidMask(_) => "invalid-mask",
            Error::NotServerOperator => "not-server-operator",
            Error::BadOperLogin => "bad-oper-login",
            Error::UnknownUserMode(_) => "unknown-user-mode",
            Error::SilenceFull(_) => "ignore-list-full",
            Error::InvalidIgnoreMask => "invalid-mask",
            Error::InvalidServerMask(_) => "invalid-server-mask",
            Error::NoSuchServerBan(_) => "no-such-server-ban",
            Error::ServerBansFull => "server-bans-full",
            Error::WatchListFull(_) => "watch-list-full",
            Error::ClusterDown(_) => "cluster-down",
            Error::NickPending(_) => "nick-pending",
            Error::RoomClusterDown(_) => "cluster-down",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NickInUse(n) => write!(f, "the nick {n} is already taken"),
            Error::InvalidNick(n) => write!(
                f,
                "invalid nick {n:?}: 1-32 letters, digits or _-[]\\^{{}}|, not starting with a digit or -"
            ),
            Error::ReservedNick(n) => write!(
                f,
                "the nick {n} is reserved: it names a service or this server"
            ),
            Error::NickDelayed { nick, secs } => write!(
                f,
                "the nick {nick} was left moments ago and is held for {secs} s more, so nobody can pass for its owner"
            ),
            Error::InvalidRoom(r) => write!(
                f,
                "invalid room {r:?}: # and 1-49 characters without spaces, commas, control or invisible characters"
            ),
            Error::NoSuchNick(n) => write!(f, "no user is called {n}"),
            Error::NoSuchRoom(r) => write!(f, "there is no room {r}"),
            Error::NotInRoom(r) | Error::CannotSend(r) => write!(f, "you are not in {r}"),
            Error::NoCurrentRoom => write!(f, "you are in no room: /join #room first"),
            Error::TooManyRooms { room, max } => {
                write!(
                    f,
                    "cannot join {room}: you are already in {max} rooms, the most allowed"
                )
            }
            Error::ServerRoomsFull { room, max } => write!(
                f,
                "cannot create {room}: the server already has {max} rooms, the most it keeps; join an existing one"
            ),
            Error::NoText => write!(f, "there is no text to send"),
            Error::BadText => write!(f, "text may not contain CR, LF or NUL"),
            Error::NotOperator(r) => write!(f, "you are not an operator of {r}"),
            Error::UserNotInRoom { nick, room } => write!(f, "{nick} is not in {room}"),
            Error::AlreadyInRoom { nick, room } => write!(f, "{nick} is already in {room}"),
            Error::InviteOnly(r) => write!(f, "cannot join {r}: it is invite-only (+i)"),
            Error::BadKey(r) => write!(
                f,
                "cannot join {r}: it needs the right key (+k): /join {r} KEY"
            ),
            Error::RoomFull(r) => write!(f, "cannot join {r}: it is full (+l)"),
            Error::Banned(r) => write!(f, "cannot join {r}: you are banned (+b)"),
            Error::Muted(r) => write!(
                f,
                "you may not speak in {r}: it is moderated (+m) or you are banned (+b)"
            ),
            Error::BanListFull(r) => write!(
                f,
                "the ban list of {r} is full ({} masks)",
                super::modes::MAX_BANS
            ),
            Error::UnknownMode(c) => write!(
                f,
                "unknown mode {c:?}: modes are b, i, k, l, m, n, o, s, t, v"
            ),
            Error::InvalidKey(_) => write!(
                f,
                "a key is 1-{} printable characters without spaces or commas",
                super::modes::KEY_MAX
            ),
            Error::InvalidLimit(_) => write!(f, "a member limit is a positive number"),
            Error::InvalidMask(_) => write!(
                f,
                "a ban mask is one word like nick!user@host, with * and ?, without commas"
            ),
            Error::NotServerOperator => write!(f, "only a server operator may do that"),
            Error::BadOperLogin => write!(f, "wrong operator name or password"),
            Error::UnknownUserMode(c) => write!(
                f,
                "unknown user mode {c:?}: user modes are i (invisible) and w (wallops); -o gives up operator status"
            ),
            Error::InvalidIgnoreMask => write!(
                f,
                "an ignore mask is a nick or one word like nick!user@host, with * and ?"
            ),
            Error::InvalidServerMask(m) => write!(
                f,
                "{m:?} is not a server ban mask: user@host (or a host), with * and ?, naming some host"
            ),
            Error::NoSuchServerBan(m) => write!(f, "no server ban has the mask {m}"),
            Error::ServerBansFull => write!(
                f,
                "the server already keeps {} bans, the most it may",
                super::kline::MAX_SERVER_BANS
            ),
            Error::ClusterDown(n) => write!(
                f,
                "cluster link down: the nick {n} cannot be claimed now, try again later"
            ),
            Error::NickPending(n) => write!(
                f,
                "a nick change is already under way: wait for its answer before asking for {n}"
            ),
            Error::RoomClusterDown(r) => write!(
                f,
                "cluster link down: the room {r} has no member on this server and cannot be \
                 joined now, try again later"
            ),
            Error::WatchListFull(n) => write!(
                f,
                "you already watch {} nicks, the most allowed: {} not added",
                super::watch::WATCH_MAX,
                n.replace(',', " ")
            ),
            Error::SilenceFull(_) => write!(
                f,
                "your ignore list is full ({} masks): remove one first",
                super::user::SILENCE_MAX
            ),
        }
    }
}

/// Events waiting to be delivered, each with its list of recipients.
///
/// The core appends; the driver renders each event once and queues the same bytes for every
/// recipient, then calls [`Outbox::clear`]. Both vectors keep their capacity, so a steady stream
/// of messages allocates no recipient lists.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Each event with the range of `to` that holds its recipients.
    events: Vec<(Event, usize, usize)>,
    /// The recipients of all events, back to back.
    to: Vec<ClientId>,
    /// What the cluster backplane must do (only with `Core::set_cluster`), in order.
    cluster: Vec<super::cluster::Note>,
}

impl Outbox {
    pub fn send(&mut self, to: ClientId, event: Event) {
        self.send_many([to], event);
    }

    pub fn send_many(&mut self, to: impl IntoIterator<Item = ClientId>, event: Event) {
        let start = self.to.len();
        self.to.extend(to);
        if self.to.len() > start {
            self.events.push((event, start, self.to.len()));
        }
    }

    /// Each event with its recipients, in the order they were sent.
    pub fn iter(&self) -> impl Iterator<Item = (&Event, &[ClientId])> {
        self.events.iter().map(|(e, s, t)| (e, &self.to[*s..*t]))
    }

    /// Whether no event waits (cluster notes are not events: see [`Outbox::has_notes`]).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// A note for the cluster backplane.
    pub fn note(&mut self, note: super::cluster::Note) {
        self.cluster.push(note);
    }

    /// Whether notes for the cluster backplane wait.
    pub fn has_notes(&self) -> bool {
        !self.cluster.is_empty()
    }

    /// Takes the notes for the cluster backplane, in the order they were made.
    pub fn drain_notes(&mut self) -> std::vec::Drain<'_, super::cluster::Note> {
        self.cluster.drain(..)
    }

    /// How many events are queued: a mark for [`Outbox::drop_errors_since`].
    pub fn mark(&self) -> usize {
        self.events.len()
    }

    /// Removes the error events queued after `mark` (for commands that must never be answered
    /// with an error, like IRC's NOTICE).
    pub fn drop_errors_since(&mut self, mark: usize) {
        let mut i = mark;
        while i < self.events.len() {
            if matches!(self.events[i].0, Event::Error(_)) {
                self.events.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Forgets the events (the cluster notes stay: a subscription must still be dropped
    /// when nobody is told who left, at shutdown).
    pub fn clear(&mut self) {
        self.events.clear();
        self.to.clear();
    }
}

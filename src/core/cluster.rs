//! What the core tells a cluster backplane, and what it takes from one: still no I/O.
//!
//! With [`Core::set_cluster`](super::Core::set_cluster) on, the core adds [`Note`]s to the
//! [`Outbox`](super::Outbox) beside its events: a room gained its first local member
//! (subscribe to it), lost its last (unsubscribe), and what other nodes must be told
//! ([`Shared`]: a local member said something in a room (or sent it tags only), joined it, left it, changed its nick
//! or left the server), published once whatever the number of recipients on any node. The driver hands
//! the notes to its backplane (`crate::backplane`). What other nodes published comes back as a
//! [`Shared`] given to [`Core::remote`](super::Core::remote), which tells the local members as
//! it tells them what happens locally. The core never waits for the cluster.
//!
//! A room's history is the cluster's too: when a room gets its first local member, the core asks
//! for it ([`Note::History`]) and replays it to the room's members when the
//! [`Answer::History`] comes (the join itself is told at once).
//!
//! Nicks are the cluster's to give: a nick change (or an IRC registration) of a clustered core
//! is a [`Note::Claim`], made only when the [`ClaimAnswer`] comes back through
//! [`Core::claimed`](super::Core::claimed); the old nick (or that of a user who leaves) is a
//! [`Note::Release`]. Guests need no claim: their nicks are in their node's own space
//! ([`is_cluster_guest`]).
//!
//! Rooms are the cluster's too (`core::remote`): a join to a room with no local member is a
//! [`Note::Join`], completed when the [`JoinAnswer`] comes back ([`Answer::Join`]); a local
//! member's entry in the room's shared member list follows its joins, parts and renames
//! ([`Note::Member`]); topics, modes, kicks and kills cross as [`Shared`] messages, and the
//! room's state is kept for later joiners ([`Note::RoomState`]).

use std::sync::Arc;

use super::ClientId;
use super::event::{Applied, Ban, ClientTags, Millis, MsgId, MsgKind, Source, Topic};
use super::modes::Status;

/// A room message as it crosses nodes: who said what where, with its client tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMessage {
    /// The room's name as the sender's node spells it (every node shows its own spelling).
    pub room: Arc<str>,
    pub from: Arc<Source>,
    pub text: Arc<str>,
    pub kind: MsgKind,
    pub tags: ClientTags,
    /// Its `msgid` on the sender's node, which every node gives it (unique in the cluster:
    /// [`Core::set_node_number`](super::Core::set_node_number)); 0: none, a node makes its own.
    pub msgid: MsgId,
}

/// A private message as it crosses nodes: to a nick held on another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateMessage {
    /// The nick as the sender typed it (its owner's node finds it case-insensitively).
    pub to: Arc<str>,
    pub from: Arc<Source>,
    pub text: Arc<str>,
    pub kind: MsgKind,
    pub tags: ClientTags,
    /// Its `msgid` on the sender's node (0: none), as for a [`RoomMessage`].
    pub msgid: MsgId,
}

/// What crosses nodes: the same vocabulary out ([`Note::Publish`]) and in
/// ([`Core::remote`](super::Core::remote)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shared {
    /// A room message.
    Message(RoomMessage),
    /// A message of client tags only (IRC's TAGMSG: typing notifications, reactions) to a
    /// room; never remembered, as a local one.
    TagMsg {
        room: Arc<str>,
        from: Arc<Source>,
        tags: ClientTags,
        /// Its `msgid` on the sender's node (0: none), as for a [`RoomMessage`].
        msgid: MsgId,
    },
    /// `who` joined `room` (its node's spelling).
    Joined { room: Arc<str>, who: Arc<Source> },
    /// `who` left `room` (parted, or was kicked: then the reason says by whom).
    Parted {
        room: Arc<str>,
        who: Arc<Source>,
        reason: Option<Arc<str>>,
    },
    /// `old` is now called `new`; it is in `rooms`. Published and delivered like a quit.
    NickChanged {
        rooms: Vec<Arc<str>>,
        old: Arc<Source>,
        new: Arc<str>,
    },
    /// `who` left the server while in `rooms`. Published on each of those rooms' channels, so
    /// a node may receive it several times: the backplane hands it to the core once.
    Quit {
        rooms: Vec<Arc<str>>,
        who: Arc<Source>,
        reason: Arc<str>,
    },
    /// A private message, published on its target's channel (`{prefix}user:{folded nick}`),
    /// which only the node of the user holding that nick subscribes to.
    Private(PrivateMessage),
    /// `by` set (or, `None`, cleared) the topic of `room` at `at`.
    Topic {
        room: Arc<str>,
        by: Arc<Source>,
        topic: Option<Arc<str>>,
        at: Millis,
    },
    /// `by` changed the modes of `room` (an operator's status of a member by its nick too).
    Modes {
        room: Arc<str>,
        by: Arc<Source>,
        changes: Vec<Applied>,
    },
    /// `by` kicked `nick` out of `room`: the node of `nick` takes it out, every node tells
    /// its members.
    Kicked {
        room: Arc<str>,
        by: Arc<Source>,
        nick: Arc<str>,
        reason: Arc<str>,
    },
    /// `by` invited `nick` into `room` (`keeps`: an invitation-only room, whose operator
    /// `by` is: the invitation lets `nick` in). Published on the nick's channel.
    Invite {
        room: Arc<str>,
        by: Arc<Source>,
        nick: Arc<str>,
        keeps: bool,
    },
    /// A server operator killed `nick`: published on the nick's channel, so only the node of
    /// its holder receives it, and disconnects it.
    Kill {
        nick: Arc<str>,
        by: Arc<Source>,
        reason: Arc<str>,
    },
}

/// Something the backplane must do for the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A room (its folded name) has local members now: receive what other nodes say in it.
    Subscribe(Arc<str>),
    /// A room (its folded name) has no local member any more: stop receiving it.
    Unsubscribe(Arc<str>),
    /// Something happened here that the other nodes' members must be told.
    Publish(Shared),
    /// Claim `claim.nick` for its user, atomically for the whole cluster; the answer comes
    /// back as a [`ClaimAnswer`] given to [`Core::claimed`](super::Core::claimed). Never
    /// dropped (at most one is under way per user).
    Claim(NickClaim),
    /// Let go of `claim.nick`, if (and only if) the cluster still holds it for this user
    /// (compare-and-delete: a claim another node made since is left alone).
    Release(NickClaim),
    /// A local user holds this nick (folded) now: receive private messages to it.
    SubscribeUser(Arc<str>),
    /// No local user holds this nick (folded) any more.
    UnsubscribeUser(Arc<str>),
    /// A private message to a nick no local user holds, from local user `by` (its client and
    /// serial): published to the nick's channel; if no node receives it, the sender is told
    /// there is no such nick ([`Answer::Undelivered`]).
    Tell {
        by: (ClientId, u32),
        msg: PrivateMessage,
    },
    /// A local user joins a room that has no local member: one atomic step in Redis adds it
    /// to the room's members, creates the room if nobody anywhere is in it (then the joiner is
    /// its operator) and answers who else is there and the room's state
    /// ([`Answer::Join`]). Never dropped (at most one per room a user joins).
    Join(JoinRequest),
    /// The entry of a local member in a room's shared member list (`room` folded): `drop`
    /// the entry of a (folded) nick, then `set` this member's entry. Dropping the last entry
    /// deletes the room's shared state. Never dropped.
    Member {
        room: Arc<str>,
        drop: Option<Arc<str>>,
        set: Option<(Arc<Source>, Status)>,
    },
    /// A room's shared state changed (`room` folded): these fields, for later joiners.
    RoomState {
        room: Arc<str>,
        fields: Vec<(&'static str, String)>,
    },
    /// After Redis was lost: this node's entries in the shared member list of `room` (folded)
    /// are exactly `members` now (those of users who left meanwhile go), and the room is
    /// founded again with `state` if Redis lost it (it restarted empty). Never dropped (one
    /// per room with local members, once per reconnect). With a `state` (a room with local
    /// members), answered with the room's members as Redis has them then, once this node
    /// receives the room again ([`Answer::Synced`]): who joined or left while it was not
    /// listening.
    SyncRoom {
        room: Arc<str>,
        members: Vec<(Arc<Source>, Status)>,
        state: Option<SyncState>,
    },
    /// An invitation by local user `by` of a nick no local user holds ([`Shared::Invite`]):
    /// published on the nick's channel; if no node receives it, `by` is told there is no such
    /// nick.
    Invite { by: (ClientId, u32), invite: Shared },
    /// A WHOIS by local user `by` of a nick no local user holds and no room of this node
    /// lists: whether (and on which node) someone holds it is asked of Redis
    /// ([`Answer::Whois`]).
    Whois { by: (ClientId, u32), nick: Arc<str> },
    /// A room list (LIST, `/rooms`) by local user `by`: the cluster's rooms are read from
    /// Redis's index of rooms ([`Answer::Rooms`]); the user's next lines wait for it.
    Rooms { by: (ClientId, u32) },
    /// NAMES or WHO (`listing`) by local user `by` of a room (as typed) with no member on
    /// this node: its members are read from Redis ([`Answer::Names`]); the user's next lines
    /// wait for it.
    Names {
        by: (ClientId, u32),
        room: Arc<str>,
        listing: super::event::Listing,
    },
    /// A server operator's KILL of a nick no local user holds: published on the nick's
    /// channel; if no node receives it, the killer is told there is no such nick.
    Kill {
        by: (ClientId, u32),
        nick: Arc<str>,
        from: Arc<Source>,
        reason: Arc<str>,
    },
    /// Room `room` (folded) got its first local member: read its shared history (the newest
    /// `--history` messages of its Redis stream) once its subscription is confirmed, and
    /// answer [`Answer::History`] with the same `ask`. Sent right after its
    /// [`Note::Subscribe`]; never answered if the link is lost for good.
    History { room: Arc<str>, ask: u64 },
    /// A local user registered, changed its nick or its rooms: its whole state now, for this
    /// node's entry in the cluster's registry (`{prefix}users:{incarnation}`), which a node
    /// that finds this one dead reads to announce its users' quits and free their nicks.
    Present(LocalUser),
    /// A local user left the server (its entry in the registry goes).
    Absent(ClientId),
}

/// A local user as the cluster's registry of live nodes knows it ([`Note::Present`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalUser {
    pub client: ClientId,
    /// Tells this user from a later one with the same client id; with the client, it is in
    /// the value of the user's nick key.
    pub serial: u32,
    pub source: Arc<Source>,
    /// Folded names of its rooms.
    pub rooms: Vec<Arc<str>>,
}

/// What founds a room again in Redis ([`Note::SyncRoom`]): its name, its founder (a local member),
/// when it was created, and its topic, modes and bans as fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncState {
    /// The room's name as this node spells it (for the index of rooms).
    pub name: Arc<str>,
    pub founder: Arc<str>,
    pub created_at: Millis,
    pub fields: Vec<(&'static str, String)>,
}

/// A join asked of the cluster ([`Note::Join`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    pub client: ClientId,
    /// The user's serial: an answer for a later user of the same client id is not its.
    pub serial: u32,
    /// The room as the joiner wrote it.
    pub room: Arc<str>,
    pub who: Arc<Source>,
    /// When it was asked (the room's founding time if it creates it).
    pub at: Millis,
    /// Whether the join waits for the answer. The lobby's waits too (not to crown anyone:
    /// it has no operator; to tell its joiner who is in it), except while the link is down:
    /// then it is joined at once, and its answer, if any, only tells who else is there.
    pub wait: bool,
}

/// A member of a room on another node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteMember {
    /// Its node's incarnation.
    pub node: u64,
    pub source: Arc<Source>,
    pub status: Status,
}

/// What the cluster keeps of a room besides its members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomState {
    pub topic: Option<Topic>,
    /// The modes as [`RoomModes::describe`](super::modes::RoomModes::describe) writes them
    /// (key shown).
    pub modes: Option<String>,
    pub bans: Vec<Ban>,
    /// When the room was created (by its first joiner anywhere): its creation time on every
    /// node (IRC 329).
    pub founded: Option<Millis>,
}

/// The cluster's answer to a [`Note::Join`] that Redis carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinAnswer {
    /// This join created the room: the joiner is its first operator.
    pub created: bool,
    /// The room's members (this node's included: the core skips them), at most
    /// [`JOIN_MEMBERS_MAX`].
    pub members: Vec<RemoteMember>,
    pub state: RoomState,
}

/// Members of a room a join answer lists at most (and a node knows at most per room, from
/// other nodes): an entry is at most about 450 bytes (a 300-byte real name), so an answer
/// stays well under the backplane's largest reply (2 MiB), and it is twice the default
/// `--big-room`, past which a joiner is not sent every name anyway.
pub const JOIN_MEMBERS_MAX: usize = 2048;

/// A room of the cluster as Redis's index of rooms lists it ([`Answer::Rooms`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedRoom {
    /// Its name as its founder spelled it.
    pub name: Arc<str>,
    /// Its members on every node.
    pub members: usize,
    pub topic: Option<Arc<str>>,
    /// `+s`: listed only to its members (and server operators).
    pub secret: bool,
}

/// Rooms a cluster's room list reads from Redis at most (a room costs the answer at most
/// about 600 bytes, a topic of 390 and a name of 64: the answer stays under a megabyte).
pub const ROOMS_MAX: usize = 10_000;

/// Bytes of names, topics and modes a cluster's room list reads from Redis at most (the
/// backplane's largest reply is 2 MiB).
pub const ROOMS_BYTES: usize = 1024 * 1024;

/// What the backplane answers the core, later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A nick claim was decided ([`Core::claimed`](super::Core::claimed)).
    Claim(ClaimAnswer),
    /// A [`Note::Tell`] reached no node: nobody holds that nick
    /// ([`Core::undelivered`](super::Core::undelivered)).
    Undelivered { by: (ClientId, u32), to: Arc<str> },
    /// After Redis came back (empty, or after this node was declared dead), a local user's
    /// nick turned out to be held for someone else ([`Core::nick_lost`](super::Core::nick_lost)):
    /// the user becomes a guest of this node, and is told why.
    NickLost(NickClaim),
    /// The shared history of `room` (folded) asked for by [`Note::History`] `ask`, oldest
    /// first, less what this node's members said since the ask (they saw it live)
    /// ([`Core::shared_history`](super::Core::shared_history)).
    History {
        room: Arc<str>,
        ask: u64,
        entries: Vec<HistoryItem>,
    },
    /// The answer to a [`Note::Join`] (`None`: Redis could not be asked, or answered an
    /// error; the join may have been recorded, and the backplane takes it back once Redis is
    /// back).
    Join {
        request: JoinRequest,
        answer: Option<JoinAnswer>,
    },
    /// This node was taken for dead (stalled, or cut off from Redis while Redis stayed up) and
    /// is back: a survivor took its members out of the rooms' shared lists (and a room's state
    /// with its last member), so each room with local members is written again, as after a
    /// reconnect ([`Note::SyncRoom`]).
    Resync,
    /// The answer to a [`Note::SyncRoom`] with a state: the members of `room` (folded) as
    /// Redis has them, this node's included (`None`: Redis could not be asked; at most
    /// [`JOIN_MEMBERS_MAX`]) ([`Core::resynced`](super::Core::resynced)).
    Synced {
        room: Arc<str>,
        members: Option<Vec<RemoteMember>>,
    },
    /// The answer to a [`Note::Whois`]: the node holding the nick (`None`: nobody, or Redis
    /// could not say).
    Whois {
        by: (ClientId, u32),
        nick: Arc<str>,
        node: Option<Arc<str>>,
    },
    /// The answer to a [`Note::Rooms`]: the cluster's rooms (`None`: Redis could not be
    /// asked; the node lists its own rooms).
    Rooms {
        by: (ClientId, u32),
        rooms: Option<Vec<SharedRoom>>,
    },
    /// The answer to a [`Note::Names`] (`None`: Redis could not be asked).
    Names {
        by: (ClientId, u32),
        room: Arc<str>,
        listing: super::event::Listing,
        members: Option<SharedMembers>,
    },
}

/// A room's members as Redis has them ([`Answer::Names`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedMembers {
    /// Its name as its founder spelled it (from the index of rooms), if known.
    pub name: Option<Arc<str>>,
    /// At most [`JOIN_MEMBERS_MAX`] (none: no such room).
    pub members: Vec<RemoteMember>,
    /// `+s`: listed only to server operators (the asker is in none of its rooms' members).
    pub secret: bool,
}

/// A message of a room's shared history (its Redis stream), as the core remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryItem {
    pub from: Arc<Source>,
    pub text: Arc<str>,
    pub kind: MsgKind,
    /// When Redis kept it (its stream id's time).
    pub at: super::Millis,
}

impl Answer {
    /// The local client an answer is for (the driver reads its held input again once the
    /// core has it); `None`: a room's (its shared history).
    pub fn client(&self) -> Option<ClientId> {
        match self {
            Answer::Claim(c) => Some(c.claim.client),
            Answer::Undelivered { by, .. } => Some(by.0),
            Answer::Join { request, .. } => Some(request.client),
            Answer::Whois { by, .. } | Answer::Rooms { by, .. } | Answer::Names { by, .. } => {
                Some(by.0)
            }
            Answer::NickLost(claim) => Some(claim.client),
            Answer::History { .. } | Answer::Synced { .. } | Answer::Resync => None,
        }
    }
}

/// A nick as claimed by one local user: who (its client and the serial that tells it from a
/// later user of the same client id) and which nick (as typed; the backplane folds it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NickClaim {
    pub client: ClientId,
    pub serial: u32,
    pub nick: Arc<str>,
}

/// How a claim was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The nick is this user's across the cluster now.
    Won,
    /// Someone (on this node or another) holds it.
    Taken,
    /// Redis could not decide (the link is down, or it answered an error): the claim may or
    /// may not have been made; the backplane releases it once Redis is back.
    Failed,
}

/// The answer to a [`Note::Claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimAnswer {
    pub claim: NickClaim,
    pub outcome: Outcome,
}

/// Whether `folded` is a guest nick of a clustered node (`guest{node number}-{n}`): those are
/// handed out by nodes from their own number space, never claimed in Redis, so nobody may take
/// one by hand.
pub fn is_cluster_guest(folded: &str) -> bool {
    let Some(rest) = folded.strip_prefix("guest") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    rest.split_once('-')
        .is_some_and(|(node, n)| digits(node) && digits(n))
}

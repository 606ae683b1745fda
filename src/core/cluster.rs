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

use std::sync::Arc;

use super::ClientId;
use super::event::{ClientTags, MsgId, MsgKind, Source};

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

//! What the core tells a cluster backplane, and what it takes from one: still no I/O.
//!
//! With [`Core::set_cluster`](super::Core::set_cluster) on, the core adds [`Note`]s to the
//! [`Outbox`](super::Outbox) beside its events: a room gained its first local member
//! (subscribe to it), lost its last (unsubscribe), a local member said something in it
//! (publish it, once, whatever the number of recipients on any node). The driver hands them to
//! its backplane (`crate::backplane`). What other nodes said comes back as a [`RoomMessage`]
//! given to [`Core::remote_message`](super::Core::remote_message), which delivers it to the
//! local members like a local message. The core never waits for the cluster.

use std::sync::Arc;

use super::event::{ClientTags, MsgKind, Source};

/// A room message as it crosses nodes: who said what where, with its client tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMessage {
    /// The room's name as the sender's node spells it (every node shows its own spelling).
    pub room: Arc<str>,
    pub from: Arc<Source>,
    pub text: Arc<str>,
    pub kind: MsgKind,
    pub tags: ClientTags,
}

/// Something the backplane must do for the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// A room (its folded name) has local members now: receive what other nodes say in it.
    Subscribe(Arc<str>),
    /// A room (its folded name) has no local member any more: stop receiving it.
    Unsubscribe(Arc<str>),
    /// A local member said this: tell the other nodes.
    Publish(RoomMessage),
}

//! The core's vocabulary: what a client asks for ([`Command`]), what the core answers
//! ([`Event`], [`Error`]), and the [`Outbox`] that carries events to their recipients.
//!
//! Everything here is protocol-neutral: who did what, to whom. Turning an event into bytes is the
//! job of a protocol in `crate::protocol`, done once per event however many recipients it has.
//! Names and texts are `Arc<str>` so that an event, the room history and the user table share one
//! allocation instead of copying strings around; `Arc` rather than `Rc` so that the core is `Send`
//! and a threaded driver can keep it behind a lock.

use std::fmt;
use std::sync::Arc;

/// Identifies a client to the core. The driver chooses it (the event loop uses its slab key) and
/// must not reuse it before calling `Core::disconnect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub usize);

/// Wall-clock time in milliseconds since the UNIX epoch. The core never reads a clock: drivers
/// pass the time in, so tests can use any time they like.
pub type Millis = u64;

/// A request from a client, already parsed by its protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A message to a room: `None` means the client's current room.
    Say {
        room: Option<String>,
        text: String,
        action: bool,
    },
    /// A private message to one user.
    Private {
        to: String,
        text: String,
        action: bool,
    },
    Nick(String),
    /// Join a room (creating it if needed) and make it the current room.
    Join(String),
    Part {
        room: Option<String>,
        reason: Option<String>,
    },
    /// List every room.
    Rooms,
    /// Members of a room (`None`: the current room).
    Who(Option<String>),
    /// Show a room's topic (`text: None`) or set it (an empty text clears it).
    Topic {
        room: Option<String>,
        text: Option<String>,
    },
    /// Set an away message, or come back with `None`.
    Away(Option<String>),
    Whois(String),
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

/// A room member as `Who` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub nick: Arc<str>,
    pub away: bool,
}

/// The answer to `Whois`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoisInfo {
    pub nick: Arc<str>,
    pub rooms: Vec<Arc<str>>,
    pub away: Option<Arc<str>>,
    /// Seconds since the user last sent a message.
    pub idle_secs: u64,
    pub connected_at: Millis,
}

/// Something a client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A live room message (`action`: a `/me`).
    Message {
        room: Arc<str>,
        from: Arc<str>,
        text: Arc<str>,
        action: bool,
    },
    /// A message replayed from a room's history on join, with the time it was first sent.
    History {
        room: Arc<str>,
        from: Arc<str>,
        text: Arc<str>,
        action: bool,
        at: Millis,
    },
    Private {
        from: Arc<str>,
        text: Arc<str>,
        action: bool,
    },
    /// `nick` joined `room` (sent to the joiner too, as confirmation).
    Joined {
        room: Arc<str>,
        nick: Arc<str>,
    },
    Parted {
        room: Arc<str>,
        nick: Arc<str>,
        reason: Option<Arc<str>>,
    },
    /// `nick` left the server; sent once to each user who shared a room with it.
    Quit {
        nick: Arc<str>,
        reason: Arc<str>,
    },
    NickChanged {
        old: Arc<str>,
        new: Arc<str>,
    },
    /// A topic was set (`topic: None`: cleared) by `by`.
    TopicChanged {
        room: Arc<str>,
        by: Arc<str>,
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
    /// Reply to `Who`, and part of a join. Sorted by nick.
    Names {
        room: Arc<str>,
        members: Vec<Member>,
    },
    /// Reply to `Rooms`, sorted by name.
    RoomList(Vec<RoomSummary>),
    Whois(WhoisInfo),
    /// Reply to `Away`: whether the asker is now marked away.
    AwayIs {
        away: bool,
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
    InvalidRoom(String),
    NoSuchNick(String),
    NoSuchRoom(String),
    NotInRoom(String),
    /// A message without a room while the client is in none.
    NoCurrentRoom,
    /// Joining one more room would pass the per-user room limit (the number).
    TooManyRooms(usize),
    NoText,
    /// Text with CR, LF or NUL in it.
    BadText,
}

impl Error {
    /// A short stable name, for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NickInUse(_) => "nick-in-use",
            Error::InvalidNick(_) => "invalid-nick",
            Error::InvalidRoom(_) => "invalid-room",
            Error::NoSuchNick(_) => "no-such-nick",
            Error::NoSuchRoom(_) => "no-such-room",
            Error::NotInRoom(_) => "not-in-room",
            Error::NoCurrentRoom => "no-current-room",
            Error::TooManyRooms(_) => "too-many-rooms",
            Error::NoText => "no-text",
            Error::BadText => "bad-text",
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
            Error::InvalidRoom(r) => write!(
                f,
                "invalid room {r:?}: # and 1-49 characters without spaces, commas or control characters"
            ),
            Error::NoSuchNick(n) => write!(f, "no user is called {n}"),
            Error::NoSuchRoom(r) => write!(f, "there is no room {r}"),
            Error::NotInRoom(r) => write!(f, "you are not in {r}"),
            Error::NoCurrentRoom => write!(f, "you are in no room: /join #room first"),
            Error::TooManyRooms(n) => write!(f, "you are already in {n} rooms, the most allowed"),
            Error::NoText => write!(f, "there is no text to send"),
            Error::BadText => write!(f, "text may not contain CR, LF or NUL"),
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

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn clear(&mut self) {
        self.events.clear();
        self.to.clear();
    }
}

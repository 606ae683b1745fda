//! A client's session, independent of the I/O model: what each framed line means.
//!
//! Every driver (the mio loop, and any other I/O model) frames lines, then calls [`welcome`] once
//! and [`on_frame`] per line, and does what the returned [`Step`] says. The chat core's events go
//! to the [`Outbox`] as usual; what only the sender should see (help, a refused line) comes back as
//! bytes. So the protocol rules live here once, not in each driver.

pub mod irc;

use log::{info, trace};

use crate::core::{ClientId, Command, Core, LOBBY, Millis, Outbox};
use crate::framer::Frame;
use crate::protocol::line::{self, LineError, Request};

/// Why a connection ends. The text goes to the rooms it was in ("QUIT alice send queue
/// exceeded") and, where the client can still read it, in a last `BYE` line to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The client asked to leave, with an optional reason.
    Quit(Option<String>),
    /// The peer closed its side (EOF).
    Closed,
    /// A read or write failed (reset, broken pipe).
    Lost,
    /// Its output queue passed `--max-sendq`: a slow consumer.
    SendQueue,
    /// Silent for longer than `--idle-timeout`.
    Idle,
    /// The server is stopping.
    Shutdown,
    /// An IRC client did not answer the server's PING.
    PingTimeout,
    /// An IRC client did not finish registering in time.
    RegistrationTimeout,
    /// An IRC client gave no or the wrong server password.
    BadPassword,
}

impl Reason {
    /// How the departure is shown to others.
    pub fn text(&self) -> String {
        match self {
            // Cleaned and cut like every label: it goes into other users' lines, our ERROR/BYE
            // line and the log.
            Reason::Quit(Some(r)) => format!("quit: {}", crate::core::names::label(r)),
            Reason::Quit(None) => "quit".into(),
            Reason::Closed => "connection closed".into(),
            Reason::Lost => "connection lost".into(),
            Reason::SendQueue => "send queue exceeded".into(),
            Reason::Idle => "idle timeout".into(),
            Reason::Shutdown => "server shutting down".into(),
            Reason::PingTimeout => "ping timeout".into(),
            Reason::RegistrationTimeout => "registration timeout".into(),
            Reason::BadPassword => "bad password".into(),
        }
    }

    /// Whether the connection first gets its queued output and a `BYE` line. Not for a slow
    /// consumer (that is the very queue it did not read) nor a broken socket.
    pub fn drains(&self) -> bool {
        !matches!(self, Reason::SendQueue | Reason::Lost)
    }
}

/// Which protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Line,
    Irc,
}

/// How a peer's address is shown to other users (never a reverse-DNS name: a lookup would block
/// the loop). An IPv6 address starting with `:` gets a leading `0`, as IRC servers do, so that it
/// cannot be mistaken for a trailing parameter.
pub fn host_of(ip: std::net::IpAddr) -> String {
    let s = ip.to_string();
    if s.starts_with(':') {
        format!("0{s}")
    } else {
        s
    }
}

/// The protocol state of one connection.
#[derive(Debug)]
pub enum Proto {
    /// The line protocol; stateless, so it costs nothing per connection.
    Line,
    /// IRC, with its registration and capability state (boxed: most of a server's
    /// connections may be line ones, which should not pay for it).
    Irc(Box<irc::IrcSession>),
}

impl Proto {
    pub fn new(protocol: Protocol) -> Proto {
        match protocol {
            Protocol::Line => Proto::Line,
            Protocol::Irc => Proto::Irc(Box::default()),
        }
    }
}

/// What a driver does after one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing more than what went to the outbox.
    Done,
    /// Send these bytes to the sender only.
    Reply(Vec<u8>),
    /// The client asked to leave.
    Leave(Reason),
}

/// Registers a new client with the core and joins it to the lobby (events into `out`); returns
/// its greeting, which must be sent before those events, and its nick. `host` is the peer's IP
/// address as others will see it.
pub fn welcome(
    core: &mut Core,
    id: ClientId,
    host: &str,
    now: Millis,
    out: &mut Outbox,
) -> (Vec<u8>, std::sync::Arc<str>) {
    let nick = core.connect(id, host, now);
    let greeting = line::render_welcome(&nick, LOBBY);
    core.handle(id, Command::Join(LOBBY.into()), now, out);
    (greeting, nick)
}

/// Handles one framed line from client `id`.
pub fn on_frame(
    core: &mut Core,
    id: ClientId,
    frame: Frame<'_>,
    max_line: usize,
    now: Millis,
    out: &mut Outbox,
) -> Step {
    let request = match frame {
        Frame::Line(bytes) => line::parse(bytes),
        Frame::TooLong => {
            info!(
                "client #{}: line over --max-line {max_line}, discarded",
                id.0
            );
            Err(LineError::TooLong(max_line))
        }
    };
    trace!("client #{}: {request:?}", id.0);
    match request {
        Ok(Request::Chat(command)) => {
            core.handle(id, command, now, out);
            Step::Done
        }
        Ok(Request::Quit(reason)) => Step::Leave(Reason::Quit(reason)),
        Ok(Request::Help) => Step::Reply(line::render_help()),
        Ok(Request::Nothing) => Step::Done,
        Err(error) => Step::Reply(line::render_error(&error)),
    }
}

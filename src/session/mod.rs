//! Sessions: one sans-IO state machine per connection that owns everything protocol-specific.
//!
//! A driver (the event loop, or a threaded model) only moves bytes and time. For each connection
//! it keeps a [`Session`] and:
//!
//! - calls [`Session::welcome`] once when the connection is admitted;
//! - frames what it reads (with the limit [`Session::max_line`]) and calls [`Session::on_frame`]
//!   per line, then [`Session::note_partial`] to say whether an unfinished line is left;
//! - asks [`Session::next_deadline`] when to wake it, and calls [`Session::on_deadline`] then
//!   (a PING to send, a connection to close, an unterminated line to take as complete);
//! - renders each core event for a recipient with [`render`] in that recipient's
//!   [`Session::render_class`] (so a broadcast is rendered once per class, not per recipient);
//! - sends [`Session::farewell`] as the last line when it closes the connection.
//!
//! Like quinn-proto's `Connection`, a session does no I/O and reads no clock: the time comes in
//! as a [`Now`], and what to send comes back in a [`Step`]. So the protocol rules (registration,
//! CAP, PING, idle and registration deadlines, the line protocol's welcome and errors) are
//! unit-tested here without sockets, and every driver behaves the same.
//!
//! - [`line`]: the telnet/`nc` line protocol's session.
//! - [`irc`]: an IRC connection's registration, capabilities and commands.

pub mod irc;
pub mod line;
/// Server operators' credentials live with the chat authority, in the core.
pub use crate::core::oper;

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::core::{ClientId, Core, Cursor, Event, Millis, Outbox};
use crate::framer::Frame;
use crate::net::transform::Transform;
use crate::protocol;

/// Why a connection ends. The text goes to the rooms it was in ("QUIT alice send queue
/// exceeded") and, where the client can still read it, in a last line to the client (the line
/// protocol's `BYE`, IRC's `ERROR`).
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
    /// All clients' output together passed `--max-output-total`, and it held the most.
    OutputTotal,
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
    /// A server ban (K-line) matches the client, with its reason.
    Banned(Box<str>),
    /// A server operator removed it (`KILL`): who, and why. (Boxed: `Reason` sits in every
    /// connection's record, which must stay small.)
    Killed(Box<str>),
    /// TLS failed (garbage instead of a handshake, a bad record): rustls's reason. An alert
    /// has told the peer; nothing more can be said to it.
    Tls(Box<str>),
    /// A TLS connection did not finish its handshake within `--tls-handshake-timeout`.
    HandshakeTimeout,
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
            Reason::OutputTotal => "server output buffers full".into(),
            Reason::Idle => "idle timeout".into(),
            Reason::Shutdown => "server shutting down".into(),
            Reason::PingTimeout => "ping timeout".into(),
            Reason::RegistrationTimeout => "registration timeout".into(),
            Reason::BadPassword => "bad password".into(),
            Reason::Banned(why) => format!("banned from this server: {why}"),
            Reason::Killed(how) => how.to_string(),
            Reason::Tls(why) => format!("TLS error: {why}"),
            Reason::HandshakeTimeout => "TLS handshake timeout".into(),
        }
    }

    /// Whether the connection first gets its queued output and a farewell line. Not for a slow
    /// consumer (that is the very queue it did not read), a broken socket, nor a TLS
    /// connection that has no session to speak in (failed, or never finished its handshake).
    pub fn drains(&self) -> bool {
        !matches!(
            self,
            Reason::SendQueue
                | Reason::OutputTotal
                | Reason::Lost
                | Reason::Tls(_)
                | Reason::HandshakeTimeout
        )
    }
}

/// Which protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Line,
    Irc,
}

impl Protocol {
    /// The one line that turns away a client that is not admitted (server full...).
    pub fn refusal(self, why: &str) -> Vec<u8> {
        match self {
            Protocol::Line => protocol::line::render_bye(why),
            Protocol::Irc => protocol::irc::render_close(why),
        }
    }

    /// The byte transform between this protocol's sockets and its framer: telnet's option
    /// negotiation is stripped and refused for the line protocol (people type into `telnet`);
    /// IRC clients never send it.
    pub fn transform(self) -> Transform {
        match self {
            Protocol::Line => Transform::Telnet,
            Protocol::Irc => Transform::Plain,
        }
    }
}

/// The time, as a session sees it: monotonic for its deadlines, wall-clock for the chat core
/// (history times, WHOIS signon) which reads no clock itself.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub at: Instant,
    pub wall: Millis,
}

/// A point in time as a line session keeps it: milliseconds since the server's
/// [`Context::epoch`], plus one (so that `Option<Tick>` is free). 8 bytes where an `Instant`
/// takes 16: a line session is kept for every connection, and most connections are idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(NonZeroU64);

impl Tick {
    /// `ms` milliseconds later.
    pub fn after(self, ms: u64) -> Tick {
        Tick(self.0.saturating_add(ms))
    }
}

/// Server-wide settings every session reads, built once when the server binds.
#[derive(Clone, Debug)]
pub struct Context {
    /// When the server started, on the monotonic clock: the origin of [`Tick`]s.
    pub epoch: Instant,
    /// The server's name, the source of IRC numerics.
    pub server: String,
    /// What LINKS says the server is.
    pub description: String,
    /// Required IRC `PASS`, if any.
    pub password: Option<String>,
    /// IRC message of the day, one entry per line.
    pub motd: Option<Vec<String>>,
    /// When the server started (IRC's 003).
    pub started: Millis,
    /// Rooms a user may be in (IRC's CHANLIMIT).
    pub max_rooms: usize,
    /// The line protocol's longest line (`--max-line`).
    pub max_line: usize,
    /// Line protocol: close a client silent this long.
    pub idle_timeout: Option<Duration>,
    /// Line protocol: an unfinished line idle this long is taken as complete.
    pub line_complete_after: Option<Duration>,
    /// IRC: PING a client silent this long…
    pub ping_after: Duration,
    /// …and close one silent this long.
    pub ping_timeout: Duration,
    /// IRC: close a client not registered by then.
    pub register_timeout: Duration,
    /// IRC: the start of every `msgid` ([`protocol::irc::msgid_prefix`]).
    pub msgid_prefix: String,
    /// With TLS configured, its doors' ports: credentials sent in clear from another host are
    /// refused, pointing at them ([`credentials_refused`]). `None`: no TLS.
    pub tls: Option<TlsPorts>,
    /// IRCv3 `sts` policy duration in seconds, advertised with TLS (`--sts-duration`).
    pub sts_duration: Option<u64>,
}

/// The TLS doors' ports, for the line protocol and IRC (`None`: no such door).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsPorts {
    pub line: Option<u16>,
    pub irc: Option<u16>,
}

/// Whether a password (IRC's `PASS`, an operator's `OPER` or `/oper`) sent on a connection must
/// be refused, and if so the hint for the client: TLS is configured, the connection is not on
/// it, and the peer is another host. (From loopback the password crosses no network: a local
/// client, or a TLS proxy on the same host, may still send it.) Once a password has been sent
/// in clear it is no longer secret; refusing it teaches the client to use the TLS door.
pub fn credentials_refused(
    ctx: &Context,
    secure: bool,
    peer: std::net::IpAddr,
    protocol: Protocol,
) -> Option<String> {
    let ports = ctx.tls?;
    if secure || peer.to_canonical().is_loopback() {
        return None;
    }
    let port = match protocol {
        Protocol::Line => ports.line,
        Protocol::Irc => ports.irc,
    };
    Some(match port {
        Some(port) => format!("passwords are not accepted in clear: use TLS, port {port}"),
        None => "passwords are not accepted in clear: use TLS".into(),
    })
}

impl Context {
    pub fn new(config: &Config, started: Millis) -> Context {
        Context {
            epoch: Instant::now(),
            server: config.server_name.clone(),
            description: config.server_description.clone(),
            password: config.irc_password.clone(),
            motd: config.motd.clone(),
            started,
            max_rooms: config.max_rooms,
            max_line: config.max_line,
            idle_timeout: config.idle_timeout,
            line_complete_after: config.line_complete_after,
            ping_after: config.irc_ping_after,
            ping_timeout: config.irc_ping_timeout,
            register_timeout: config.irc_register_timeout,
            msgid_prefix: protocol::irc::msgid_prefix(started),
            tls: config.tls.as_ref().map(|_| TlsPorts {
                line: config.tls_listen.first().map(|a| a.port()),
                irc: config.irc_tls_listen.first().map(|a| a.port()),
            }),
            sts_duration: config.sts_duration.map(|d| d.as_secs()),
        }
    }
}

impl Context {
    /// `at` as a [`Tick`] (times before the epoch count as the epoch).
    pub fn tick(&self, at: Instant) -> Tick {
        let ms = at.saturating_duration_since(self.epoch).as_millis();
        Tick(NonZeroU64::new(1 + ms as u64).unwrap_or(NonZeroU64::MIN))
    }

    /// `at` as a [`Tick`], rounded up: the first tick not before `at`.
    pub fn tick_after(&self, at: Instant) -> Tick {
        let tick = self.tick(at);
        if self.instant(tick) < at {
            tick.after(1)
        } else {
            tick
        }
    }

    /// The instant a [`Tick`] stands for.
    pub fn instant(&self, tick: Tick) -> Instant {
        self.epoch + Duration::from_millis(tick.0.get() - 1)
    }
}

/// What a driver does after the session handled something: send `reply` to this client only
/// (before the core's events, which went to the outbox), then close it if `leave` says so.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub reply: Vec<u8>,
    pub leave: Option<Reason>,
    /// Flood-control tokens the line costs beyond the one every line costs: commands are
    /// charged by the work they cause (a message to four targets is four fan-outs), so no cheap
    /// line buys expensive work. The driver charges them to the connection's bucket.
    pub extra_cost: u32,
}

impl Step {
    pub fn reply(reply: Vec<u8>) -> Step {
        Step {
            reply,
            ..Step::default()
        }
    }

    pub fn leave(reason: Reason) -> Step {
        Step {
            leave: Some(reason),
            ..Step::default()
        }
    }
}

/// What a session's deadline asks of the driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// Nothing is due yet (the deadline moved): just wake again at the next deadline.
    Rearm,
    /// Send these bytes (an IRC PING).
    Send(Vec<u8>),
    /// Close the connection.
    Close(Reason),
    /// The unfinished line the framer holds has sat idle long enough: take it as complete
    /// (flood control and every limit still apply).
    CompleteLine,
}

/// How a recipient wants core events rendered. Events are rendered once per class present among
/// their recipients, and the same bytes are shared by all recipients of that class. A class is
/// the line protocol, or IRC with a set of the capabilities that change how lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderClass(u8);

impl RenderClass {
    /// The line protocol.
    pub const LINE: RenderClass = RenderClass(0);
    /// IRC without capabilities that change rendering.
    pub const IRC: RenderClass = RenderClass(Self::IRC_BIT);
    /// IRC with `server-time`: live messages carry `@time=`.
    pub const IRC_TIMED: RenderClass = RenderClass(Self::IRC_BIT | Self::TIME);
    /// IRC with `message-tags`: messages carry `msgid` and their sender's client tags.
    pub const IRC_TAGS: RenderClass = RenderClass(Self::IRC_BIT | Self::TAGS);
    /// How many classes there are (the size of [`Rendered`]'s table).
    pub const COUNT: usize = 32;
    const IRC_BIT: u8 = 1;
    const TIME: u8 = 2;
    /// `multi-prefix`: NAMES shows every prefix of a member.
    const MULTI: u8 = 4;
    /// `userhost-in-names`: NAMES shows `nick!user@host`.
    const UHNAMES: u8 = 8;
    /// `message-tags`: messages carry `msgid` and client tags, and TAGMSG is shown.
    const TAGS: u8 = 16;

    /// IRC with these capabilities.
    pub fn irc(caps: irc::Caps) -> RenderClass {
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        RenderClass(
            Self::IRC_BIT
                | bit(caps.server_time, Self::TIME)
                | bit(caps.multi_prefix, Self::MULTI)
                | bit(caps.userhost_in_names, Self::UHNAMES)
                | bit(caps.tags, Self::TAGS),
        )
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// Renders one core event in `class`. `me` is the recipient's nick; only single-recipient events
/// depend on it, so the bytes of a broadcast are the same for every recipient of a class.
pub fn render(class: RenderClass, event: &Event, ctx: &Context, me: &str, now: Millis) -> Vec<u8> {
    if class == RenderClass::LINE {
        return protocol::line::render(event);
    }
    let names = protocol::irc::NamesStyle {
        multi: class.has(RenderClass::MULTI),
        userhost: class.has(RenderClass::UHNAMES),
    };
    let time = class.has(RenderClass::TIME);
    let msgids = class
        .has(RenderClass::TAGS)
        .then_some(ctx.msgid_prefix.as_str());
    protocol::irc::render_with(event, &ctx.server, me, time, names, msgids, now)
}

/// What a driver does with a core event for its recipients. Most events are rendered and
/// queued; two ask the driver to act instead, and the decision is made here, once for every
/// driver.
pub enum Directive<'e> {
    /// Render it in each recipient's class and queue the bytes.
    Render,
    /// Close each recipient's connection for this reason (a server operator's KILL).
    Close(Reason),
    /// A long answer: page it to each recipient as its queue drains ([`render_page`]).
    Page(&'e Cursor),
    /// In a cluster: a registration's nick claim was decided; hand it to the recipient's
    /// session ([`Session::registration`]), `None` meaning won.
    Registration(Option<&'e crate::core::Error>),
}

/// The [`Directive`] for `event`.
pub fn directive(event: &Event) -> Directive<'_> {
    match event {
        Event::Killed { by, reason } => Directive::Close(Reason::Killed(
            format!("killed by {}: {reason}", by.nick).into(),
        )),
        Event::Page(cursor) => Directive::Page(cursor),
        Event::Registration(result) => Directive::Registration(result.as_ref()),
        _ => Directive::Render,
    }
}

/// Renders the next page of a paged answer ([`Event::Page`]) in `class`; returns the bytes and
/// whether the answer is complete. The driver calls it when the asker's output queue has
/// drained, so an answer of any length holds about a page of memory at a time.
pub fn render_page(
    class: RenderClass,
    core: &Core,
    cursor: &mut Cursor,
    ctx: &Context,
    me: &str,
    now: Millis,
) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let done = core.page(cursor, &mut |event| {
        bytes.extend_from_slice(&render(class, &event, ctx, me, now))
    });
    (bytes, done)
}

/// One event's bytes per render class, rendered on first use: a driver's fan-out keeps one of
/// these per event, so each class is rendered at most once whatever the number of recipients.
/// `C` is the driver's shared chunk type (`Rc<[u8]>` in the loop, `Arc<[u8]>` under threads).
pub struct Rendered<C> {
    bytes: [Option<C>; RenderClass::COUNT],
}

impl<C: Clone + From<Vec<u8>>> Rendered<C> {
    pub fn new() -> Self {
        Rendered {
            bytes: std::array::from_fn(|_| None),
        }
    }

    /// The event's bytes for `class`; `render` is called only the first time.
    pub fn get(&mut self, class: RenderClass, render: impl FnOnce() -> Vec<u8>) -> C {
        self.bytes[class.0 as usize]
            .get_or_insert_with(|| render().into())
            .clone()
    }
}

impl<C: Clone + From<Vec<u8>>> Default for Rendered<C> {
    fn default() -> Self {
        Self::new()
    }
}

/// The protocol state of one connection.
#[derive(Debug)]
pub enum Session {
    /// The line protocol: a few words of state.
    Line(line::LineSession),
    /// IRC, with its registration and capability state (boxed: most of a server's
    /// connections may be line ones, which should not pay for it).
    Irc(Box<irc::IrcSession>),
}

impl Session {
    /// A session for a connection from `peer` admitted at `now`, known to the core as `id`.
    pub fn new(
        ctx: &Context,
        protocol: Protocol,
        id: ClientId,
        peer: SocketAddr,
        now: Instant,
    ) -> Session {
        match protocol {
            Protocol::Line => Session::Line(line::LineSession::new(ctx, id, peer, now)),
            Protocol::Irc => Session::Irc(Box::new(irc::IrcSession::new(id, peer, now))),
        }
    }

    /// The connection's TLS handshake is complete: it is secure. Called by the driver before
    /// [`Session::welcome`], which a TLS connection gets only then. This is all a session
    /// learns about TLS.
    pub fn secured(&mut self) {
        match self {
            Session::Line(s) => s.secure = true,
            Session::Irc(s) => s.secure = true,
        }
    }

    /// Whether the connection is encrypted (it came through a TLS door).
    pub fn is_secure(&self) -> bool {
        match self {
            Session::Line(s) => s.secure,
            Session::Irc(s) => s.secure,
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        match self {
            Session::Line(s) => s.peer(),
            Session::Irc(s) => s.peer,
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self {
            Session::Line(_) => Protocol::Line,
            Session::Irc(_) => Protocol::Irc,
        }
    }

    /// Greets a newly admitted connection (the line protocol registers it with the core and
    /// joins it to the lobby, its events going to `out`; IRC waits for NICK/USER).
    pub fn welcome(&mut self, core: &mut Core, now: Now, out: &mut Outbox) -> Step {
        match self {
            Session::Line(s) => s.welcome(core, now, out),
            Session::Irc(s) => s.welcome(),
        }
    }

    /// Handles one framed line.
    /// In a cluster: the claim of the nick this client registers with was decided (`None`:
    /// won, the core registered it): the welcome, or the error. (Only IRC clients choose
    /// their nick at registration.)
    pub fn registration(
        &mut self,
        ctx: &Context,
        core: &mut Core,
        refused: Option<&crate::core::Error>,
    ) -> Step {
        match self {
            Session::Line(_) => Step::default(),
            Session::Irc(s) => s.registration(ctx, core, refused),
        }
    }

    /// Whether the driver must hold this client's next lines (framed or not) until the session
    /// is ready for them: an IRC registration waiting for its nick's claim in a cluster. The
    /// driver reads the client again once [`Session::registration`] has run.
    pub fn input_paused(&self) -> bool {
        match self {
            Session::Line(_) => false,
            Session::Irc(s) => s.input_paused(),
        }
    }

    pub fn on_frame(
        &mut self,
        ctx: &Context,
        core: &mut Core,
        frame: Frame<'_>,
        now: Now,
        out: &mut Outbox,
    ) -> Step {
        match self {
            Session::Line(s) => s.on_frame(ctx, core, frame, now, out),
            Session::Irc(s) => s.on_frame(ctx, core, frame, now, out),
        }
    }

    /// After input: whether the framer is left holding an unfinished line (bytes without a
    /// newline yet), and whether bytes reached the framer (`fed`) at `now`. Only new bytes
    /// restart an unfinished line's clock: resuming a throttled connection, or input that a
    /// byte transform swallowed whole (telnet negotiation), do not.
    pub fn note_partial(&mut self, ctx: &Context, partial: bool, fed: bool, now: Instant) {
        if let Session::Line(s) = self {
            s.note_partial(ctx, partial, fed, now);
        }
    }

    /// The client took a page of a long answer: proof of life for IRC's ping timeout, which
    /// could otherwise fire while the driver holds the client's own lines (its PONG too)
    /// unread until its answers are under way.
    pub fn note_alive(&mut self, now: Instant) {
        if let Session::Irc(s) = self {
            s.note_alive(now);
        }
    }

    /// When the driver must call [`Session::on_deadline`] next (`None`: never).
    pub fn next_deadline(&self, ctx: &Context) -> Option<Instant> {
        match self {
            Session::Line(s) => s.next_deadline(ctx),
            Session::Irc(s) => Some(s.next_deadline(ctx)),
        }
    }

    /// The deadline came (or passed): what is due.
    pub fn on_deadline(&mut self, ctx: &Context, now: Instant) -> Wake {
        match self {
            Session::Line(s) => s.on_deadline(ctx, now),
            Session::Irc(s) => s.on_deadline(ctx, now),
        }
    }

    /// The last line this connection gets when the server closes it.
    pub fn farewell(&self, text: &str) -> Vec<u8> {
        self.protocol().refusal(text)
    }

    pub fn render_class(&self) -> RenderClass {
        match self {
            Session::Line(_) => RenderClass::LINE,
            Session::Irc(s) => RenderClass::irc(s.caps),
        }
    }

    /// The framer's limit for this connection's lines.
    pub fn max_line(&self, ctx: &Context) -> usize {
        match self {
            Session::Line(_) => ctx.max_line,
            Session::Irc(s) => s.max_line(),
        }
    }

    /// The byte transform between socket and framer.
    pub fn transform(&self) -> Transform {
        self.protocol().transform()
    }
}

#[cfg(test)]
mod tests;

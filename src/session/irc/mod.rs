//! An IRC client's session: registration, capabilities, and what each command means for the
//! chat core.
//!
//! The state machine follows modern.ircdocs.horse: `CAP LS`/`CAP REQ` before registration pause
//! it until `CAP END`; `NICK` and `USER` register (with `PASS` first when the server has a
//! password); everything else before that gets 451. After registration, commands become core
//! [`Command`](crate::core::Command)s whose events the driver renders with
//! [`crate::protocol::irc::render`], and replies that only concern this client (CAP, PONG, the
//! welcome burst, usage errors) are returned as bytes. No I/O and no clock here either: the
//! driver passes time in, and the session owns its deadlines (registration, PING).
//!
//! This file owns the session's state, its deadlines and [`IrcSession::on_frame`], which checks
//! a line and hands it to the command table. The commands themselves are grouped by concern, as in ngircd:
//!
//! - `commands`: the command table (name, fewest parameters, when allowed, flood cost,
//!   handler) and the one place that answers 421, 451, 462 and 461; [`cost`].
//! - `registration`: CAP, PASS, NICK, USER, PING, PONG, QUIT and the welcome burst.
//! - `channel`: JOIN, PART, TOPIC, NAMES, LIST, MODE.
//! - `messages`: PRIVMSG, NOTICE, TAGMSG, AWAY.
//! - `query`: WHO, WHOIS, MOTD, LUSERS, ISON, USERHOST, TIME, VERSION, ADMIN, INFO.

mod channel;
mod commands;
mod messages;
mod operator;
mod query;
mod registration;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Instant;

use log::info;

use super::{Context, Now, Reason, Step, Wake};
use crate::core::{ClientId, Core};
use crate::framer::Frame;
use crate::protocol::irc::numeric::*;
use crate::protocol::irc::{self, MAX_LINE, MAX_TAGS, Out};
use crate::protocol::text::{self, TextError};

/// Capabilities this server offers (CAP LS).
pub const CAPS: &str = "echo-message message-tags multi-prefix server-time userhost-in-names";

/// Capabilities a client enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// Live messages carry `@time=`, and joining replays history with the original times.
    pub server_time: bool,
    /// The sender of a message gets it back, as sent.
    pub echo: bool,
    /// `message-tags`: lines may carry up to 4096 bytes of tags, whose client-only ones are
    /// relayed; messages come with `msgid` and their senders' client tags, and TAGMSG arrives.
    pub tags: bool,
    /// NAMES shows every prefix of a member (`@+alice`).
    pub multi_prefix: bool,
    /// NAMES shows `nick!user@host`.
    pub userhost_in_names: bool,
}

impl Caps {
    fn set(&mut self, name: &str, on: bool) -> bool {
        let flag = match name {
            "server-time" => &mut self.server_time,
            "echo-message" => &mut self.echo,
            "message-tags" => &mut self.tags,
            "multi-prefix" => &mut self.multi_prefix,
            "userhost-in-names" => &mut self.userhost_in_names,
            _ => return false,
        };
        *flag = on;
        true
    }

    fn list(&self) -> String {
        let on = [
            (self.echo, "echo-message"),
            (self.tags, "message-tags"),
            (self.multi_prefix, "multi-prefix"),
            (self.server_time, "server-time"),
            (self.userhost_in_names, "userhost-in-names"),
        ];
        on.iter()
            .filter(|(o, _)| *o)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Per-connection IRC state.
#[derive(Debug)]
pub struct IrcSession {
    /// The chat core's name for this client.
    id: ClientId,
    /// The peer, for the core (which shows others its cloak) and for log lines.
    pub(in crate::session) peer: SocketAddr,
    /// The nick asked for before registration completed.
    nick: Option<String>,
    /// USER's user name and real name.
    user: Option<(String, String)>,
    pass: Option<String>,
    /// CAP negotiation in progress: registration waits for CAP END.
    cap_pause: bool,
    /// In a cluster: registration waits for the claim of `nick` (see `registration`).
    claiming: bool,
    pub registered: bool,
    pub caps: Caps,
    /// When the connection was admitted: registration must be complete by
    /// `--irc-register-timeout` after it.
    admitted: Instant,
    /// Last time a line arrived: a PING goes out after `ping_after` of silence, and the
    /// connection is closed after `ping_timeout`.
    last_heard: Instant,
    /// A PING went out and nothing has come back since.
    pinged: bool,
    /// The connection is encrypted (TLS): see `Session::secured`.
    pub(in crate::session) secure: bool,
}

impl IrcSession {
    pub fn new(id: ClientId, peer: SocketAddr, now: Instant) -> IrcSession {
        IrcSession {
            id,
            peer,
            nick: None,
            user: None,
            pass: None,
            cap_pause: false,
            claiming: false,
            registered: false,
            caps: Caps::default(),
            admitted: now,
            last_heard: now,
            pinged: false,
            secure: false,
        }
    }

    /// In a cluster, while the nick asked for at registration is being claimed: the client's
    /// next lines (a JOIN pipelined after NICK/USER, as bots send) must wait for the answer
    /// rather than be refused as unregistered (451).
    pub fn input_paused(&self) -> bool {
        self.claiming
    }

    /// In a cluster: the claim of the nick asked for at registration was decided (`None`: won,
    /// and the core registered the client): the welcome burst, or the error (433 for a nick
    /// held on another node) and the client may send another NICK.
    pub fn registration(
        &mut self,
        ctx: &Context,
        core: &mut Core,
        refused: Option<&crate::core::Error>,
    ) -> Step {
        if !self.claiming {
            return Step::default();
        }
        self.claiming = false;
        match refused {
            None => Step::reply(registration::welcome(self, ctx, core).into_bytes()),
            Some(e) => {
                let mut o = Out::new(&ctx.server, "*");
                irc::error(&mut o, e);
                self.nick = None;
                Step::reply(o.into_bytes())
            }
        }
    }

    /// A new connection: nothing is sent until the client speaks (NICK/USER, or CAP first).
    pub fn welcome(&self) -> Step {
        info!("{} connected (IRC)", self.peer);
        Step::default()
    }

    /// The earliest of: the registration deadline (until registered), the next PING, the ping
    /// timeout.
    /// The client took a page of a long answer: it is alive, though its own lines (a PONG
    /// among them) wait unread while it has answers in progress (the drivers' read pause).
    pub fn note_alive(&mut self, now: Instant) {
        self.last_heard = now;
        self.pinged = false;
    }

    pub fn next_deadline(&self, ctx: &Context) -> Instant {
        let silence = if self.pinged {
            self.last_heard + ctx.ping_timeout
        } else {
            self.last_heard + ctx.ping_after
        };
        if self.registered {
            silence
        } else {
            silence.min(self.admitted + ctx.register_timeout)
        }
    }

    /// Closes a client that did not register in time or did not answer a PING; PINGs one that
    /// has been silent.
    pub fn on_deadline(&mut self, ctx: &Context, now: Instant) -> Wake {
        if !self.registered && self.admitted + ctx.register_timeout <= now {
            info!("{}: did not register in time", self.peer);
            return Wake::Close(Reason::RegistrationTimeout);
        }
        if self.last_heard + ctx.ping_timeout <= now {
            info!("{}: no answer to PING", self.peer);
            return Wake::Close(Reason::PingTimeout);
        }
        if !self.pinged && self.last_heard + ctx.ping_after <= now {
            self.pinged = true;
            return Wake::Send(format!("PING :{}\r\n", ctx.server).into_bytes());
        }
        Wake::Rearm
    }

    /// The framer's limit for this client's lines.
    pub fn max_line(&self) -> usize {
        if self.caps.tags {
            MAX_LINE + MAX_TAGS
        } else {
            MAX_LINE
        }
    }

    /// Handles one framed line.
    pub fn on_frame(
        &mut self,
        ctx: &Context,
        core: &mut Core,
        frame: Frame<'_>,
        now: Now,
        out: &mut crate::core::Outbox,
    ) -> Step {
        self.pinged = false;
        self.last_heard = now.at;
        let (id, host) = (self.id, self.peer.ip());
        let now = now.wall;
        let me = match core.nick(id) {
            Some(nick) => nick.to_string(),
            None => "*".to_string(),
        };
        let mut o = Out::new(&ctx.server, &me);
        let mut step = Step::default();
        let bytes = match frame {
            Frame::TooLong => {
                o.numeric(ERR_INPUTTOOLONG, &[]);
                step.reply = o.into_bytes();
                return step;
            }
            Frame::Line(bytes) => bytes,
        };
        let command_word = || {
            let start = irc::tags_len(bytes);
            let word: String = bytes[start..]
                .iter()
                .take_while(|&&b| b != b' ')
                .filter(|b| b.is_ascii_alphanumeric())
                .take(32)
                .map(|&b| b.to_ascii_uppercase() as char)
                .collect();
            if word.is_empty() {
                "*".to_string()
            } else {
                word
            }
        };
        // Tags have their own budget, MAX_TAGS (the framer's limit is the sum of both, so a
        // line may be short enough for it with too many tags): MAX_LINE is for the rest.
        let tags = irc::tags_len(bytes);
        // USER before registration is taken with its invalid bytes replaced (by U+FFFD): a
        // client set to Latin-1 sends its real name so, and refusing it would leave that
        // client waiting for a welcome that never comes. Everything else must be UTF-8.
        let lossy;
        let checked = match text::check(bytes, tags + MAX_LINE) {
            Err(TextError::BadUtf8) if !self.registered && command_word() == "USER" => {
                lossy = String::from_utf8_lossy(bytes);
                text::check(lossy.as_bytes(), tags + MAX_LINE)
            }
            checked => checked,
        };
        match checked {
            _ if tags > MAX_TAGS => o.numeric(ERR_INPUTTOOLONG, &[]),
            Err(TextError::Nul) => o.fail(FAIL_NUL, &command_word(), &[]),
            Err(TextError::TooLong(_)) => o.numeric(ERR_INPUTTOOLONG, &[]),
            Err(TextError::BadUtf8) => o.fail(FAIL_UTF8, &command_word(), &[]),
            Ok(line) => {
                if let Some(msg) = irc::parse(line) {
                    let mut call = commands::Call {
                        p: &msg.params,
                        tags: msg.tags,
                        o: &mut o,
                        core,
                        id,
                        host,
                        ctx,
                        now,
                        out,
                        extra_cost: 0,
                    };
                    step.leave = commands::dispatch(self, &msg.command, &mut call);
                    step.extra_cost = call.extra_cost;
                }
            }
        }
        step.reply = o.into_bytes();
        step
    }
}

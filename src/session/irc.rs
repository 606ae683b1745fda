//! An IRC client's session: registration, capabilities, and what each command means for the
//! chat core.
//!
//! The state machine follows modern.ircdocs.horse: `CAP LS`/`CAP REQ` before registration pause
//! it until `CAP END`; `NICK` and `USER` register (with `PASS` first when the server has a
//! password); everything else before that gets 451. After registration, commands become core
//! [`Command`](crate::core::Command)s whose events the driver renders with
//! [`crate::protocol::irc::render`], and replies that only concern this client (CAP, PONG, the
//! welcome burst, usage errors) are returned as bytes. No I/O and no clock here either: the
//! driver passes time and host in.
//!
//! This file owns the session's state and [`IrcSession::on_frame`], which checks a line and
//! hands it to the command table. The commands themselves are grouped by concern, as in ngircd:
//!
//! - `commands`: the command table (name, fewest parameters, when allowed, flood cost,
//!   handler) and the one place that answers 421, 451, 462 and 461; [`cost`].
//! - `registration`: CAP, PASS, NICK, USER, PING, PONG, QUIT and the welcome burst.
//! - `channel`: JOIN, PART, TOPIC, NAMES, LIST, MODE.
//! - `messages`: PRIVMSG, NOTICE, TAGMSG, AWAY.
//! - `query`: WHO, WHOIS, MOTD, LUSERS, ISON, USERHOST.

mod channel;
mod commands;
mod messages;
mod query;
mod registration;
#[cfg(test)]
mod tests;

pub use commands::cost;

use crate::core::{ClientId, Core, Millis};
use crate::framer::Frame;
use crate::protocol::irc::numeric::*;
use crate::protocol::irc::{self, MAX_LINE, MAX_TAGS, Out};
use crate::protocol::text::{self, TextError};
use crate::session::Reason;

/// Capabilities this server offers (CAP LS).
pub const CAPS: &str = "echo-message message-tags multi-prefix server-time";

/// Capabilities a client enabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// Live messages carry `@time=`, and joining replays history with the original times.
    pub server_time: bool,
    /// The sender of a message gets it back, as sent.
    pub echo: bool,
    /// Lines may carry up to 4096 bytes of tags.
    pub tags: bool,
    /// Accepted for clients that ask; pollchat has no channel prefixes to show.
    pub multi_prefix: bool,
}

impl Caps {
    fn set(&mut self, name: &str, on: bool) -> bool {
        let flag = match name {
            "server-time" => &mut self.server_time,
            "echo-message" => &mut self.echo,
            "message-tags" => &mut self.tags,
            "multi-prefix" => &mut self.multi_prefix,
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
        ];
        on.iter()
            .filter(|(o, _)| *o)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Server-wide settings the session needs.
pub struct Context<'a> {
    /// The server's name, the source of numerics.
    pub server: &'a str,
    /// Required `PASS`, if any.
    pub password: Option<&'a str>,
    /// Message of the day, one entry per line.
    pub motd: Option<&'a [String]>,
    /// When the server started, for 003.
    pub started: Millis,
    /// Rooms a user may be in (CHANLIMIT).
    pub max_rooms: usize,
}

/// What the driver does after one line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Lines for this client only, sent before the core's events.
    pub reply: Vec<u8>,
    /// The connection ends (after `reply`).
    pub leave: Option<Reason>,
}

/// Per-connection IRC state.
#[derive(Debug, Default)]
pub struct IrcSession {
    /// The nick asked for before registration completed.
    nick: Option<String>,
    /// USER's user name and real name.
    user: Option<(String, String)>,
    pass: Option<String>,
    /// CAP negotiation in progress: registration waits for CAP END.
    cap_pause: bool,
    pub registered: bool,
    pub caps: Caps,
    /// A PING went out and nothing has come back since.
    pub pinged: bool,
}

impl IrcSession {
    /// The framer's limit for this client's lines.
    pub fn max_line(&self) -> usize {
        if self.caps.tags {
            MAX_LINE + MAX_TAGS
        } else {
            MAX_LINE
        }
    }

    /// Handles one framed line from client `id`, whose address is `host`.
    #[allow(clippy::too_many_arguments)]
    pub fn on_frame(
        &mut self,
        core: &mut Core,
        id: ClientId,
        frame: Frame<'_>,
        host: std::net::IpAddr,
        ctx: &Context<'_>,
        now: Millis,
        out: &mut crate::core::Outbox,
    ) -> Step {
        self.pinged = false;
        let me = match core.nick(id) {
            Some(nick) => nick.to_string(),
            None => "*".to_string(),
        };
        let mut o = Out::new(ctx.server, &me);
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
                .map(|&b| b.to_ascii_uppercase() as char)
                .collect();
            if word.is_empty() {
                "*".to_string()
            } else {
                word
            }
        };
        // Tags have their own budget (the framer's): MAX_LINE is for the rest.
        match text::check(bytes, irc::tags_len(bytes) + MAX_LINE) {
            Err(TextError::Nul) => o.fail(FAIL_NUL, &command_word(), &[]),
            Err(TextError::TooLong(_)) => o.numeric(ERR_INPUTTOOLONG, &[]),
            Err(TextError::BadUtf8) => o.fail(FAIL_UTF8, &command_word(), &[]),
            Ok(line) => {
                if let Some(msg) = irc::parse(line) {
                    let mut call = commands::Call {
                        p: &msg.params,
                        o: &mut o,
                        core,
                        id,
                        host,
                        ctx,
                        now,
                        out,
                    };
                    step.leave = commands::dispatch(self, &msg.command, &mut call);
                }
            }
        }
        step.reply = o.into_bytes();
        step
    }
}

//! An IRC client's session: registration, capabilities, and what each command means for the
//! chat core.
//!
//! The state machine follows modern.ircdocs.horse: `CAP LS`/`CAP REQ` before registration pause
//! it until `CAP END`; `NICK` and `USER` register (with `PASS` first when the server has a
//! password); everything else before that gets 451. After registration, commands become core
//! [`Command`]s whose events the driver renders with [`crate::protocol::irc::render`], and
//! replies that only concern this client (CAP, PONG, the welcome burst, usage errors) are
//! returned as bytes. No I/O and no clock here either: the driver passes time and host in.

use crate::core::{ClientId, Command, Core, Listing, Millis, MsgKind, names};
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
                    step.leave = self.dispatch(&mut o, msg, core, id, host, ctx, now, out);
                }
            }
        }
        step.reply = o.into_bytes();
        step
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        o: &mut Out<'_>,
        msg: irc::Message<'_>,
        core: &mut Core,
        id: ClientId,
        host: std::net::IpAddr,
        ctx: &Context<'_>,
        now: Millis,
        out: &mut crate::core::Outbox,
    ) -> Option<Reason> {
        let p = &msg.params;
        let cmd = msg.command.as_str();
        let need = |o: &mut Out<'_>, n: usize| {
            if p.len() < n {
                o.numeric(ERR_NEEDMOREPARAMS, &[&irc::safe(cmd)]);
                false
            } else {
                true
            }
        };
        macro_rules! run {
            ($c:expr) => {
                core.handle(id, $c, now, out)
            };
        }
        match cmd {
            "CAP" => {
                if self.cap(o, p) {
                    return self.try_register(o, core, id, host, ctx, now);
                }
            }
            "PASS" if self.registered => o.numeric(ERR_ALREADYREGISTERED, &[]),
            "PASS" => {
                if need(o, 1) {
                    self.pass = Some(p[0].to_string());
                }
            }
            "NICK" => {
                let Some(nick) = p.first().filter(|n| !n.is_empty()) else {
                    o.numeric(ERR_NONICKNAMEGIVEN, &[]);
                    return None;
                };
                if self.registered {
                    run!(Command::Nick(nick.to_string()));
                } else if names::check_nick(nick).is_err() {
                    o.numeric(ERR_ERRONEUSNICKNAME, &[&irc::safe(nick)]);
                } else if core.nick_in_use(nick) {
                    o.numeric(ERR_NICKNAMEINUSE, &[nick]);
                } else {
                    self.nick = Some(nick.to_string());
                    return self.try_register(o, core, id, host, ctx, now);
                }
            }
            "USER" if self.registered => o.numeric(ERR_ALREADYREGISTERED, &[]),
            "USER" => {
                if need(o, 4) {
                    self.user = Some((user_name(p[0]), p[3].to_string()));
                    return self.try_register(o, core, id, host, ctx, now);
                }
            }
            "PING" => match p.first() {
                Some(token) => {
                    let token: String = token.chars().filter(|c| !c.is_control()).collect();
                    o.raw(format_args!(":{0} PONG {0} :{token}", ctx.server))
                }
                None => o.numeric(ERR_NOORIGIN, &[]),
            },
            "PONG" => {}
            "QUIT" => {
                return Some(Reason::Quit(
                    p.first().filter(|r| !r.is_empty()).map(|r| r.to_string()),
                ));
            }
            _ if !self.registered => o.numeric(ERR_NOTREGISTERED, &[]),
            "JOIN" => {
                if need(o, 1) {
                    if p[0] == "0" {
                        run!(Command::PartAll);
                    } else {
                        for room in p[0].split(',').filter(|r| !r.is_empty()) {
                            run!(Command::Join(room.to_string()));
                        }
                    }
                }
            }
            "PART" => {
                if need(o, 1) {
                    let reason = p.get(1).filter(|r| !r.is_empty()).map(|r| r.to_string());
                    for room in p[0].split(',').filter(|r| !r.is_empty()) {
                        run!(Command::Part {
                            room: Some(room.to_string()),
                            reason: reason.clone()
                        });
                    }
                }
            }
            "PRIVMSG" | "NOTICE" => {
                let notice = cmd == "NOTICE";
                let Some(targets) = p.first().filter(|t| !t.is_empty()) else {
                    if !notice {
                        o.numeric_with(ERR_NORECIPIENT, &[], &[&cmd]);
                    }
                    return None;
                };
                let Some(text) = p.get(1).filter(|t| !t.is_empty()) else {
                    if !notice {
                        o.numeric(ERR_NOTEXTTOSEND, &[]);
                    }
                    return None;
                };
                let (text, kind) = irc::split_action(text);
                let kind = if notice { MsgKind::Notice } else { kind };
                let echo = self.caps.echo;
                // A NOTICE is never answered with an error (RFC 2812 3.3.2).
                let mark = out.mark();
                for target in targets.split(',').filter(|t| !t.is_empty()) {
                    let text = text.to_string();
                    run!(if target.starts_with('#') {
                        Command::Say {
                            room: Some(target.to_string()),
                            text,
                            kind,
                            echo,
                        }
                    } else {
                        Command::Private {
                            to: target.to_string(),
                            text,
                            kind,
                            echo,
                        }
                    });
                }
                if notice {
                    out.drop_errors_since(mark);
                }
            }
            // Tag-only messages (typing notifications…): accepted, and, as no client tag is
            // relayed, delivered to nobody.
            "TAGMSG" => {}
            "TOPIC" => {
                if need(o, 1) {
                    let text = p.get(1).map(|t| t.to_string());
                    run!(Command::Topic {
                        room: Some(p[0].to_string()),
                        text
                    });
                }
            }
            "NAMES" => match p.first() {
                None => o.numeric(RPL_ENDOFNAMES, &[&"*"]),
                Some(rooms) => {
                    for room in rooms.split(',').filter(|r| !r.is_empty()) {
                        if core.room_exists(room) {
                            run!(Command::Who {
                                target: Some(room.to_string()),
                                listing: Listing::Names
                            });
                        } else {
                            let room = irc::safe(room);
                            o.numeric(RPL_ENDOFNAMES, &[&room]);
                        }
                    }
                }
            },
            "LIST" => run!(Command::Rooms),
            "WHO" => match p.first().filter(|m| !matches!(**m, "" | "*" | "0")) {
                None => o.numeric(RPL_ENDOFWHO, &[&"*"]),
                // A mask that matches nothing gets just the end of the list.
                Some(mask) if !core.room_exists(mask) && !core.nick_in_use(mask) => {
                    o.numeric(RPL_ENDOFWHO, &[&irc::safe(mask)])
                }
                Some(mask) => run!(Command::Who {
                    target: Some(mask.to_string()),
                    listing: Listing::Who
                }),
            },
            "WHOIS" => match p.last() {
                None => o.numeric(ERR_NONICKNAMEGIVEN, &[]),
                Some(nicks) => {
                    let nick = nicks.split(',').next().unwrap_or("");
                    if core.nick_in_use(nick) {
                        run!(Command::Whois(nick.to_string()));
                    } else {
                        let nick = irc::safe(nick);
                        o.numeric(ERR_NOSUCHNICK, &[&nick]);
                        o.numeric(RPL_ENDOFWHOIS, &[&nick]);
                    }
                }
            },
            "AWAY" => run!(Command::Away(
                p.first().filter(|m| !m.is_empty()).map(|m| m.to_string())
            )),
            "MODE" => {
                if need(o, 1) {
                    self.mode(o, p, core, id, now, out);
                }
            }
            "MOTD" => motd(o, ctx),
            "LUSERS" => irc::lusers(o, core.user_count(), core.room_count()),
            "ISON" | "USERHOST" => {
                if need(o, 1) {
                    let nicks = p
                        .iter()
                        .flat_map(|w| w.split(' '))
                        .filter(|n| !n.is_empty());
                    let (nicks, listing) = if cmd == "ISON" {
                        (nicks.map(String::from).collect(), Listing::Ison)
                    } else {
                        (nicks.take(5).map(String::from).collect(), Listing::Userhost)
                    };
                    run!(Command::Lookup { nicks, listing });
                }
            }
            other => o.numeric(ERR_UNKNOWNCOMMAND, &[&irc::safe(other)]),
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn mode(
        &self,
        o: &mut Out<'_>,
        p: &[&str],
        core: &mut Core,
        id: ClientId,
        now: Millis,
        out: &mut crate::core::Outbox,
    ) {
        let target = p[0];
        if target.starts_with('#') {
            match p.get(1).copied() {
                None => core.handle(id, Command::RoomInfo(target.to_string()), now, out),
                // The ban list (and its cousins) is asked for while a client syncs a channel.
                Some("b" | "+b" | "e" | "+e" | "I" | "+I") if p.len() == 2 => {
                    o.numeric(RPL_ENDOFBANLIST, &[&target])
                }
                Some(_) => o.numeric(ERR_CHANOPRIVSNEEDED, &[&target]),
            }
        } else if core
            .nick(id)
            .is_some_and(|me| me.eq_ignore_ascii_case(target))
        {
            // No user modes exist; a client setting +i is told its (empty) modes.
            o.numeric(RPL_UMODEIS, &[]);
        } else if core.nick_in_use(target) {
            o.numeric(ERR_USERSDONTMATCH, &[]);
        } else {
            o.numeric(ERR_NOSUCHNICK, &[&irc::safe(target)]);
        }
    }

    /// Handles a CAP subcommand; true when it ended negotiation (CAP END).
    fn cap(&mut self, o: &mut Out<'_>, p: &[&str]) -> bool {
        let sub = p
            .first()
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default();
        let (server, me) = (o.server, o.me);
        match sub.as_str() {
            "LS" => {
                self.cap_pause |= !self.registered;
                o.raw(format_args!(":{server} CAP {me} LS :{CAPS}"));
            }
            "LIST" => o.raw(format_args!(
                ":{server} CAP {me} LIST :{}",
                self.caps.list()
            )),
            "REQ" => {
                self.cap_pause |= !self.registered;
                let asked = p.get(1).copied().unwrap_or("");
                let mut caps = self.caps;
                let ok =
                    asked
                        .split(' ')
                        .filter(|c| !c.is_empty())
                        .all(|c| match c.strip_prefix('-') {
                            Some(off) => caps.set(off, false),
                            None => caps.set(c, true),
                        });
                let verdict = if ok { "ACK" } else { "NAK" };
                if ok {
                    self.caps = caps;
                }
                o.raw(format_args!(":{server} CAP {me} {verdict} :{asked}"));
            }
            "END" => {
                self.cap_pause = false;
                return true;
            }
            _ => o.numeric(ERR_INVALIDCAPCMD, &[&irc::safe(&sub)]),
        }
        false
    }

    /// Completes registration once NICK and USER are in and CAP negotiation is over.
    fn try_register(
        &mut self,
        o: &mut Out<'_>,
        core: &mut Core,
        id: ClientId,
        host: std::net::IpAddr,
        ctx: &Context<'_>,
        now: Millis,
    ) -> Option<Reason> {
        let (Some(nick), Some((user, realname))) = (&self.nick, &self.user) else {
            return None;
        };
        if self.registered || self.cap_pause {
            return None;
        }
        if let Some(password) = ctx.password
            && self.pass.as_deref() != Some(password)
        {
            o.numeric(ERR_PASSWDMISMATCH, &[]);
            return Some(Reason::BadPassword);
        }
        let host = crate::session::host_of(host);
        if let Err(e) = core.register(id, nick, user, realname, &host, now) {
            irc::error(o, &e);
            self.nick = None;
            return None;
        }
        self.registered = true;
        let nick = nick.clone();
        let mut w = Out::new(ctx.server, &nick);
        let version = concat!("pollchat-", env!("CARGO_PKG_VERSION"));
        w.numeric_with(RPL_WELCOME, &[], &[&format_args!("{nick}!{user}@{host}")]);
        w.numeric_with(RPL_YOURHOST, &[], &[&ctx.server, &version]);
        w.numeric_with(RPL_CREATED, &[], &[&crate::protocol::iso8601(ctx.started)]);
        w.numeric(RPL_MYINFO, &[&ctx.server, &version]);
        w.numeric(RPL_ISUPPORT, &[&irc::isupport(ctx.max_rooms)]);
        irc::lusers(&mut w, core.user_count(), core.room_count());
        motd(&mut w, ctx);
        o.buf.push_str(&w.buf);
        None
    }
}

fn motd(o: &mut Out<'_>, ctx: &Context<'_>) {
    match ctx.motd {
        Some(lines) => {
            o.numeric_with(RPL_MOTDSTART, &[], &[&ctx.server]);
            for line in lines {
                o.numeric_with(RPL_MOTD, &[], &[line]);
            }
            o.numeric(RPL_ENDOFMOTD, &[]);
        }
        None => o.numeric(ERR_NOMOTD, &[]),
    }
}

/// USER's user name as shown in `nick!user@host`: letters, digits, `-_.`, at most 10.
fn user_name(raw: &str) -> String {
    let clean: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(10)
        .collect();
    if clean.is_empty() {
        "user".into()
    } else {
        clean
    }
}

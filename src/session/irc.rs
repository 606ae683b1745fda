//! An IRC client's session: registration, capabilities, and what each command means for the
//! chat core.
//!
//! The state machine follows modern.ircdocs.horse: `CAP LS`/`CAP REQ` before registration pause
//! it until `CAP END`; `NICK` and `USER` register (with `PASS` first when the server has a
//! password); everything else before that gets 451. After registration, commands become core
//! [`Command`]s whose events the driver renders with [`crate::protocol::irc::render`], and
//! replies that only concern this client (CAP, PONG, the welcome burst, usage errors) are
//! returned as bytes. No I/O and no clock here either: the driver passes time and host in.

use std::net::SocketAddr;
use std::time::Instant;

use log::info;

use super::{Context, Now, Reason, Step, Wake};
use crate::core::{ClientId, Command, Core, Listing, Millis, MsgKind, names};
use crate::framer::Frame;
use crate::protocol::irc::{self, MAX_LINE, MAX_TAGS, Out};

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

/// Per-connection IRC state.
#[derive(Debug)]
pub struct IrcSession {
    /// The chat core's name for this client.
    id: ClientId,
    /// The peer, for the host others see and for log lines.
    peer: SocketAddr,
    /// The nick asked for before registration completed.
    nick: Option<String>,
    /// USER's user name and real name.
    user: Option<(String, String)>,
    pass: Option<String>,
    /// CAP negotiation in progress: registration waits for CAP END.
    cap_pause: bool,
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
            registered: false,
            caps: Caps::default(),
            admitted: now,
            last_heard: now,
            pinged: false,
        }
    }

    /// The earliest of: the registration deadline (until registered), the next PING, the ping
    /// timeout.
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
                o.numeric("417", format_args!(":Input line was too long"));
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
        if bytes.contains(&0) {
            o.raw(format_args!(
                "FAIL {} INVALID_TEXT :Message rejected: it contains a NUL byte",
                command_word()
            ));
        } else if bytes.len() - irc::tags_len(bytes) > MAX_LINE {
            o.numeric("417", format_args!(":Input line was too long"));
        } else {
            match std::str::from_utf8(bytes) {
                Err(_) => o.raw(format_args!(
                    "FAIL {} INVALID_UTF8 :Message rejected: this server only accepts UTF-8",
                    command_word()
                )),
                Ok(line) => {
                    if let Some(msg) = irc::parse(line) {
                        step.leave = self.dispatch(&mut o, msg, core, id, host, ctx, now, out);
                    }
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
        ctx: &Context,
        now: Millis,
        out: &mut crate::core::Outbox,
    ) -> Option<Reason> {
        let p = &msg.params;
        let cmd = msg.command.as_str();
        let need = |o: &mut Out<'_>, n: usize| {
            if p.len() < n {
                o.numeric(
                    "461",
                    format_args!("{} :Not enough parameters", irc::safe(cmd)),
                );
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
            "PASS" if self.registered => o.numeric("462", format_args!(":You may not reregister")),
            "PASS" => {
                if need(o, 1) {
                    self.pass = Some(p[0].to_string());
                }
            }
            "NICK" => {
                let Some(nick) = p.first().filter(|n| !n.is_empty()) else {
                    o.numeric("431", format_args!(":No nickname given"));
                    return None;
                };
                if self.registered {
                    run!(Command::Nick(nick.to_string()));
                } else if names::check_nick(nick).is_err() {
                    o.numeric(
                        "432",
                        format_args!("{} :Erroneous nickname", irc::safe(nick)),
                    );
                } else if core.nick_in_use(nick) {
                    o.numeric("433", format_args!("{nick} :Nickname is already in use"));
                } else {
                    self.nick = Some(nick.to_string());
                    return self.try_register(o, core, id, host, ctx, now);
                }
            }
            "USER" if self.registered => o.numeric("462", format_args!(":You may not reregister")),
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
                None => o.numeric("409", format_args!(":No origin specified")),
            },
            "PONG" => {}
            "QUIT" => {
                return Some(Reason::Quit(
                    p.first().filter(|r| !r.is_empty()).map(|r| r.to_string()),
                ));
            }
            _ if !self.registered => o.numeric("451", format_args!(":You have not registered")),
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
                        o.numeric("411", format_args!(":No recipient given ({cmd})"));
                    }
                    return None;
                };
                let Some(text) = p.get(1).filter(|t| !t.is_empty()) else {
                    if !notice {
                        o.numeric("412", format_args!(":No text to send"));
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
                None => o.numeric("366", format_args!("* :End of /NAMES list")),
                Some(rooms) => {
                    for room in rooms.split(',').filter(|r| !r.is_empty()) {
                        if core.room_exists(room) {
                            run!(Command::Who {
                                target: Some(room.to_string()),
                                listing: Listing::Names
                            });
                        } else {
                            let room = irc::safe(room);
                            o.numeric("366", format_args!("{room} :End of /NAMES list"));
                        }
                    }
                }
            },
            "LIST" => run!(Command::Rooms),
            "WHO" => match p.first().filter(|m| !matches!(**m, "" | "*" | "0")) {
                None => o.numeric("315", format_args!("* :End of /WHO list")),
                // A mask that matches nothing gets just the end of the list.
                Some(mask) if !core.room_exists(mask) && !core.nick_in_use(mask) => {
                    o.numeric("315", format_args!("{} :End of /WHO list", irc::safe(mask)))
                }
                Some(mask) => run!(Command::Who {
                    target: Some(mask.to_string()),
                    listing: Listing::Who
                }),
            },
            "WHOIS" => match p.last() {
                None => o.numeric("431", format_args!(":No nickname given")),
                Some(nicks) => {
                    let nick = nicks.split(',').next().unwrap_or("");
                    if core.nick_in_use(nick) {
                        run!(Command::Whois(nick.to_string()));
                    } else {
                        let nick = irc::safe(nick);
                        o.numeric("401", format_args!("{nick} :No such nick/channel"));
                        o.numeric("318", format_args!("{nick} :End of /WHOIS list"));
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
            other => o.numeric("421", format_args!("{} :Unknown command", irc::safe(other))),
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
                    o.numeric("368", format_args!("{target} :End of channel ban list"))
                }
                Some(_) => o.numeric("482", format_args!("{target} :You're not channel operator")),
            }
        } else if core
            .nick(id)
            .is_some_and(|me| me.eq_ignore_ascii_case(target))
        {
            // No user modes exist; a client setting +i is told its (empty) modes.
            o.numeric("221", format_args!("+"));
        } else if core.nick_in_use(target) {
            o.numeric("502", format_args!(":Can't change mode for other users"));
        } else {
            o.numeric(
                "401",
                format_args!("{} :No such nick/channel", irc::safe(target)),
            );
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
            _ => o.numeric(
                "410",
                format_args!("{} :Invalid CAP command", irc::safe(&sub)),
            ),
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
        ctx: &Context,
        now: Millis,
    ) -> Option<Reason> {
        let (Some(nick), Some((user, realname))) = (&self.nick, &self.user) else {
            return None;
        };
        if self.registered || self.cap_pause {
            return None;
        }
        if let Some(password) = ctx.password.as_deref()
            && self.pass.as_deref() != Some(password)
        {
            o.numeric("464", format_args!(":Password incorrect"));
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
        let mut w = Out::new(&ctx.server, &nick);
        let version = concat!("pollchat-", env!("CARGO_PKG_VERSION"));
        w.numeric(
            "001",
            format_args!(":Welcome to the pollchat IRC network, {nick}!{user}@{host}"),
        );
        w.numeric(
            "002",
            format_args!(":Your host is {}, running version {version}", ctx.server),
        );
        w.numeric(
            "003",
            format_args!(
                ":This server was created {}",
                crate::protocol::iso8601(ctx.started)
            ),
        );
        w.numeric("004", format_args!("{} {version} i n", ctx.server));
        w.numeric(
            "005",
            format_args!(
                "{} :are supported by this server",
                irc::isupport(ctx.max_rooms)
            ),
        );
        irc::lusers(&mut w, core.user_count(), core.room_count());
        motd(&mut w, ctx);
        o.buf.push_str(&w.buf);
        None
    }
}

fn motd(o: &mut Out<'_>, ctx: &Context) {
    match ctx.motd.as_deref() {
        Some(lines) => {
            o.numeric(
                "375",
                format_args!(":- {} Message of the day -", ctx.server),
            );
            for line in lines {
                o.numeric("372", format_args!(":- {line}"));
            }
            o.numeric("376", format_args!(":End of /MOTD command"));
        }
        None => o.numeric("422", format_args!(":MOTD File is missing")),
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

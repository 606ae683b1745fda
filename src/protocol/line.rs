//! The line protocol: what `nc` and `telnet` users type, and what they read back.
//!
//! Client → server: a plain line is a message to the current room; a line starting with `/` is a
//! command (`//text` sends `/text` literally). Server → client: one line per item, ending in
//! `\r\n` (telnet's line end; `nc` shows it just the same), whose first token says what it is:
//!
//! | first token | meaning | example |
//! |---|---|---|
//! | `WELCOME` | greeting: your nick and room | `WELCOME guest1 #lobby welcome to pollchat…` |
//! | `MSG` | live room message / action | `MSG #lobby <alice> hi` / `MSG #lobby * alice waves` |
//! | `HISTORY` | replayed room message | `HISTORY #lobby 2026-11-27T18:56:52Z <alice> hi` |
//! | `PRIV` | private message / action | `PRIV <alice> psst` / `PRIV * alice winks` |
//! | `JOIN` `PART` `QUIT` `NICK` `TOPIC` | presence and room changes | `QUIT alice quit: bye` |
//! | `NAMES` `ROOM` | members of a room, one room of a list | `NAMES #lobby alice bob(away)` |
//! | `NOTICE` | information for you | `NOTICE now talking in #rust` |
//! | `ERROR` | your last line did nothing; code, then why | `ERROR nick-in-use …` |
//! | `BYE` | the server is closing your connection, and why | `BYE server shutting down` |
//!
//! Every user-supplied piece of a server line has passed the core's checks (no CR, LF or NUL) and
//! this parser's (no other control characters), so no one can forge or split another's line.
//!
//! This module only parses and renders; it keeps no state and does no I/O.

use std::fmt::Write as _;

use super::iso8601;
use super::text::{self, TextError};
use crate::core::cloak::real_host;
use crate::core::modes::mode_string;
use crate::core::watch::Watch;
use crate::core::{Command, Event, Listing, Mode, ModeChange, MsgKind, Source};

/// What one client line asks for.
#[derive(PartialEq, Eq)]
pub enum Request {
    /// Something for the chat core.
    Chat(Command),
    /// `/quit [reason]`.
    Quit(Option<String>),
    /// `/help`.
    Help,
    /// `/oper NAME PASSWORD`: checked by the session, never by the core.
    Oper { name: String, password: String },
    /// An empty line: nothing to do.
    Nothing,
}

/// Written for the trace log: never with an operator's password.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Chat(c) => f.debug_tuple("Chat").field(c).finish(),
            Request::Quit(r) => f.debug_tuple("Quit").field(r).finish(),
            Request::Help => f.write_str("Help"),
            Request::Oper { name, .. } => {
                write!(f, "Oper {{ name: {name:?}, password: <hidden> }}")
            }
            Request::Nothing => f.write_str("Nothing"),
        }
    }
}

/// Why a line was refused before reaching the core. The line is dropped; the connection stays.
#[derive(Debug, PartialEq, Eq)]
pub enum LineError {
    TooLong(usize),
    BadUtf8,
    Nul,
    /// A control character other than tab (a bare CR, an escape sequence…).
    ControlChar,
    UnknownCommand(String),
    /// A known command with the wrong arguments: its usage.
    Usage(&'static str),
}

/// Commands with their usage, as `/help` shows them.
const COMMANDS: &[(&str, &str)] = &[
    ("nick", "/nick NAME                    change your nick"),
    (
        "join",
        "/join #room                   join (or create) a room and talk there",
    ),
    (
        "part",
        "/part [#room] [reason]        leave a room (default: the current one)",
    ),
    (
        "rooms",
        "/rooms                        list rooms with member counts and topics",
    ),
    (
        "who",
        "/who [#room]                  list the members of a room",
    ),
    (
        "msg",
        "/msg NICK text                send a private message",
    ),
    (
        "me",
        "/me action                    act in the current room",
    ),
    (
        "topic",
        "/topic [text | -]             show, set or (with -) clear the room's topic",
    ),
    (
        "away",
        "/away [message]               mark yourself away; no message: back",
    ),
    (
        "whois",
        "/whois NICK                   rooms, away, idle time of a user (/whowas: who left lately)",
    ),
    (
        "op",
        "/op NICK [#room]              make a member an operator (/deop: no longer)",
    ),
    (
        "voice",
        "/voice NICK [#room]           let a member speak in a +m room (/devoice)",
    ),
    (
        "kick",
        "/kick [#room] NICK [why]      put a member out of a room (operators)",
    ),
    (
        "ban",
        "/ban MASK [#room]             keep nick!user@host out (/unban, /bans lists)",
    ),
    (
        "invite",
        "/invite NICK [#room]          let a user into an invite-only (+i) room",
    ),
    (
        "mode",
        "/mode [#room] [+imnst, +k KEY, +l N, +b MASK, +o/+v NICK]  show or change modes",
    ),
    (
        "ignore",
        "/ignore [NICK|MASK]           drop someone's private messages (/unignore; alone: the list)",
    ),
    (
        "watch",
        "/watch [NICK...]              be told when they come and go (ONLINE/OFFLINE; /unwatch)",
    ),
    (
        "umode",
        "/umode [+i|-i|+w|-w|+B|-B]    your modes: i hidden from searches, w operators' notices, B a bot",
    ),
    (
        "oper",
        "/oper NAME PASSWORD           become a server operator (/kill NICK [why], /wallops text)",
    ),
    (
        "kline",
        "/kline [MIN] USER@HOST [why]  ban from the server (/unkline, /klines; operators)",
    ),
    ("quit", "/quit [reason]                leave the server"),
    (
        "help",
        "/help                         this list; //text sends /text literally",
    ),
];

/// The usage of commands `/help` mentions inside another command's line (or not at all).
const MORE_USAGE: &[(&str, &str)] = &[
    ("deop", "/deop NICK [#room]"),
    ("devoice", "/devoice NICK [#room]"),
    ("unban", "/unban MASK [#room]"),
    ("bans", "/bans [#room]"),
    ("kill", "/kill NICK [why]"),
    ("wallops", "/wallops text"),
    ("unkline", "/unkline USER@HOST"),
    ("klines", "/klines"),
    ("unwatch", "/unwatch NICK..."),
    ("unignore", "/unignore NICK|MASK"),
    ("whowas", "/whowas NICK"),
    ("names", "/names [#room]"),
    ("list", "/list"),
];

fn usage(name: &str) -> &'static str {
    COMMANDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, u)| u.split("  ").next().unwrap_or(u))
        .or_else(|| MORE_USAGE.iter().find(|(n, _)| *n == name).map(|(_, u)| *u))
        .unwrap_or("/help")
}

/// Parses one framed line (without its line end).
pub fn parse(line: &[u8]) -> Result<Request, LineError> {
    // No length limit here: the framer already cut lines at --max-line.
    let line = text::check(line, usize::MAX).map_err(|e| match e {
        TextError::Nul => LineError::Nul,
        TextError::TooLong(max) => LineError::TooLong(max),
        TextError::BadUtf8 => LineError::BadUtf8,
    })?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(LineError::ControlChar);
    }
    if line.trim().is_empty() {
        return Ok(Request::Nothing);
    }
    let say = |text: &str| {
        Request::Chat(Command::Say {
            room: None,
            text: text.to_string(),
            kind: MsgKind::Normal,
            echo: false,
            tags: None,
        })
    };
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(say(line));
    };
    if rest.starts_with('/') {
        return Ok(say(rest));
    }
    let (name, args) = match rest.split_once([' ', '\t']) {
        Some((name, args)) => (name, args.trim()),
        None => (rest, ""),
    };
    let name = name.to_ascii_lowercase();
    let words: Vec<&str> = args.split_whitespace().collect();
    // The text after the first word, as typed.
    let after_first = || {
        args.split_once([' ', '\t'])
            .map(|(_, t)| t.trim_start())
            .unwrap_or("")
    };
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let bad = || Err(LineError::Usage(usage(&name)));
    let command = match (name.as_str(), words.len()) {
        ("nick", 1) => Command::Nick(args.to_string()),
        ("join", 1) => Command::Join(args.to_string()),
        ("join", 2) => Command::JoinWithKey {
            room: words[0].to_string(),
            key: words[1].to_string(),
        },
        ("op" | "deop" | "voice" | "devoice", 1 | 2) => {
            let nick = words[0].to_string();
            let mode = if name.ends_with("op") {
                Mode::Op(nick)
            } else {
                Mode::Voice(nick)
            };
            let set = !name.starts_with("de");
            Command::Mode {
                room: words.get(1).map(|r| r.to_string()),
                changes: vec![ModeChange { set, mode }],
            }
        }
        ("kick", n) if n >= 1 => match words[0].starts_with('#') {
            true if n >= 2 => Command::Kick {
                room: Some(words[0].to_string()),
                nick: words[1].to_string(),
                reason: opt(after(args, 2)),
            },
            true => return bad(),
            false => Command::Kick {
                room: None,
                nick: words[0].to_string(),
                reason: opt(after_first()),
            },
        },
        ("ban" | "unban", 1 | 2) => Command::Mode {
            room: words.get(1).map(|r| r.to_string()),
            changes: vec![ModeChange {
                set: name == "ban",
                mode: Mode::Ban(words[0].to_string()),
            }],
        },
        ("bans", 0 | 1) => Command::Bans(words.first().map(|r| r.to_string())),
        ("invite", 1 | 2) => Command::Invite {
            nick: words[0].to_string(),
            room: words.get(1).map(|r| r.to_string()),
        },
        // `/mode`, `/mode #room`: the modes; `/mode [#room] +b`: the ban list; else changes.
        ("mode", _) => {
            let (room, rest) = match words.first() {
                Some(w) if w.starts_with('#') => (Some(w.to_string()), &words[1..]),
                _ => (None, &words[..]),
            };
            match rest {
                [] => Command::RoomInfo(room),
                ["+b" | "b"] => Command::Bans(room),
                [modes, args @ ..] => {
                    let changes = super::irc::parse_modes(modes, args);
                    // Every letter needs what it changes: `+k` without a key is a mistake to
                    // point out, not a line to drop in silence.
                    let wanted = modes.chars().filter(|c| !matches!(c, '+' | '-')).count();
                    if changes.is_empty() || changes.len() < wanted {
                        return bad();
                    }
                    Command::Mode { room, changes }
                }
            }
        }
        ("part", _) => match words.first() {
            Some(w) if w.starts_with('#') => Command::Part {
                room: Some(w.to_string()),
                reason: opt(after_first()),
            },
            _ => Command::Part {
                room: None,
                reason: opt(args),
            },
        },
        ("rooms" | "list", 0) => Command::Rooms,
        ("who" | "names", 0) => Command::Who {
            target: None,
            listing: Listing::Names,
        },
        ("who" | "names", 1) if args.starts_with('#') => Command::Who {
            target: Some(args.to_string()),
            listing: Listing::Names,
        },
        ("msg", n) if n >= 2 => Command::Private {
            to: words[0].to_string(),
            text: after_first().to_string(),
            kind: MsgKind::Normal,
            echo: false,
            tags: None,
        },
        ("me", n) if n >= 1 => Command::Say {
            room: None,
            text: args.to_string(),
            kind: MsgKind::Action,
            echo: false,
            tags: None,
        },
        // `/topic -` clears the topic (an empty text, for the core).
        ("topic", 1) if args == "-" => Command::Topic {
            room: None,
            text: Some(String::new()),
        },
        ("topic", _) => Command::Topic {
            room: None,
            text: opt(args),
        },
        ("away", _) => Command::Away(opt(args)),
        ("whois", 1) => Command::Whois(args.to_string()),
        ("whowas", 1) => Command::Whowas {
            nick: args.to_string(),
            count: 0,
        },
        // The password is the rest of the line: it may hold spaces.
        ("oper", n) if n >= 2 => {
            return Ok(Request::Oper {
                name: words[0].to_string(),
                password: after_first().to_string(),
            });
        }
        ("kill", n) if n >= 1 => Command::Kill {
            nick: words[0].to_string(),
            reason: opt(after_first()),
        },
        ("ignore", 0) => Command::Silence(None),
        ("ignore" | "unignore", 1) => Command::Silence(Some((name == "ignore", args.to_string()))),
        ("watch", 0) => Command::Watch(Watch::List),
        ("watch", _) => Command::Watch(Watch::Add(words.iter().map(|w| w.to_string()).collect())),
        ("unwatch", n) if n >= 1 => {
            Command::Watch(Watch::Remove(words.iter().map(|w| w.to_string()).collect()))
        }
        ("umode", 0) => Command::UserMode(Vec::new()),
        ("umode", 1) => Command::UserMode(super::irc::parse_user_modes(args)),
        ("wallops", n) if n >= 1 => Command::Wallops(args.to_string()),
        ("kline", n) if n >= 1 => {
            let (minutes, rest) = match words[0].parse::<u64>() {
                Ok(m) if n >= 2 => (m, 1),
                _ => (0, 0),
            };
            Command::ServerBan {
                mask: words[rest].to_string(),
                minutes,
                reason: opt(after(args, rest + 1)),
            }
        }
        ("unkline", 1) => Command::ServerUnban(args.to_string()),
        ("klines", 0) => Command::ServerBans,
        ("quit", _) => return Ok(Request::Quit(opt(args))),
        ("help", _) => return Ok(Request::Help),
        (known, _)
            if COMMANDS.iter().any(|(n, _)| *n == known)
                || MORE_USAGE.iter().any(|(n, _)| *n == known) =>
        {
            return bad();
        }
        _ => return Err(LineError::UnknownCommand(name)),
    };
    Ok(Request::Chat(command))
}

/// The text after the first `n` words of `args`, as typed.
fn after(args: &str, n: usize) -> &str {
    let mut rest = args;
    for _ in 0..n {
        rest = rest.trim_start();
        rest = rest.split_once([' ', '\t']).map_or("", |(_, r)| r);
    }
    rest.trim_start()
}

/// Longest `NAMES` line before the member list continues on another one.
const NAMES_LINE_MAX: usize = 400;

/// `<nick>` for a message, `* nick` for an action, `-nick-` for a notice.
/// (Written straight into the line: no string of its own on the fan-out path.)
fn speaker(from: &Source, kind: MsgKind) -> Speaker<'_> {
    Speaker(&from.nick, kind)
}

struct Speaker<'a>(&'a str, MsgKind);

impl std::fmt::Display for Speaker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            MsgKind::Normal => write!(f, "<{}>", self.0),
            MsgKind::Action => write!(f, "* {}", self.0),
            MsgKind::Notice => write!(f, "-{}-", self.0),
        }
    }
}

/// Renders one core event as one or more complete lines. Events that only another protocol
/// needs (room settings, server statistics, nick look-ups) render as nothing.
pub fn render(event: &Event) -> Vec<u8> {
    let mut s = String::with_capacity(64);
    match event {
        Event::Message {
            room,
            from,
            text,
            kind,
            ..
        } => line(
            &mut s,
            format_args!("MSG {room} {} {text}", speaker(from, *kind)),
        ),
        Event::History {
            room,
            from,
            text,
            kind,
            at,
        } => line(
            &mut s,
            format_args!(
                "HISTORY {room} {} {} {text}",
                iso8601(*at),
                speaker(from, *kind)
            ),
        ),
        Event::Private {
            from, text, kind, ..
        } => line(&mut s, format_args!("PRIV {} {text}", speaker(from, *kind))),
        Event::Joined { room, who } => line(&mut s, format_args!("JOIN {room} {}", who.nick)),
        Event::Parted { room, who, reason } => line(
            &mut s,
            format_args!("PART {room} {}{}", who.nick, spaced(reason.as_deref())),
        ),
        Event::Quit { who, reason } => line(&mut s, format_args!("QUIT {} {reason}", who.nick)),
        Event::NickChanged { old, new } => line(&mut s, format_args!("NICK {} {new}", old.nick)),
        Event::TopicChanged { room, by, topic } => line(
            &mut s,
            format_args!("TOPIC {room} {}{}", by.nick, spaced(topic.as_deref())),
        ),
        Event::CurrentRoom { room: Some(room) } => {
            line(&mut s, format_args!("NOTICE now talking in {room}"))
        }
        Event::CurrentRoom { room: None } => line(
            &mut s,
            format_args!("NOTICE you are in no room now: /join #room"),
        ),
        Event::TopicIs {
            room,
            topic: Some(t),
        } => line(
            &mut s,
            format_args!(
                "NOTICE topic of {room}: {} (set by {} at {})",
                t.text,
                t.by,
                iso8601(t.at)
            ),
        ),
        Event::TopicIs { room, topic: None } => {
            line(&mut s, format_args!("NOTICE {room} has no topic"))
        }
        Event::Names {
            room,
            members,
            total,
            part,
            ..
        } => {
            let head = format!("NAMES {room}");
            let mut current = head.clone();
            for m in members {
                let nick = &m.source.nick;
                let prefix = m.status.prefixes();
                let entry_len = 1 + prefix.len() + nick.len() + if m.away { 6 } else { 0 };
                if current.len() + entry_len > NAMES_LINE_MAX {
                    line(&mut s, format_args!("{current}"));
                    current.clone_from(&head);
                }
                current.push(' ');
                current.push_str(prefix);
                current.push_str(nick);
                if m.away {
                    current.push_str("(away)");
                }
            }
            // An empty page after the first adds no bare `NAMES #room` line.
            if current.len() > head.len() || part.first {
                line(&mut s, format_args!("{current}"));
            }
            if part.last && *total > part.before + members.len() {
                line(
                    &mut s,
                    format_args!("NOTICE {room} has {total} members; /who {room} lists them all"),
                );
            }
        }
        Event::RoomList { rooms, part } => {
            for r in rooms {
                line(
                    &mut s,
                    format_args!(
                        "ROOM {} {}{}",
                        r.name,
                        r.members,
                        spaced(r.topic.as_deref())
                    ),
                );
            }
            if part.last {
                let n = part.before + rooms.len();
                line(
                    &mut s,
                    format_args!("NOTICE {n} room{}", if n == 1 { "" } else { "s" }),
                );
            }
        }
        Event::Whois(w) => {
            let rooms: Vec<&str> = w.rooms.iter().map(|r| &**r).collect();
            let nick = &w.source.nick;
            if let Some(node) = &w.node {
                // A user of another node, found through Redis: it is in no room with a member
                // here, so its rooms are not known ("no room" would be wrong).
                line(
                    &mut s,
                    format_args!("NOTICE {nick} is on server {node}; its rooms are not known here"),
                );
            } else {
                let rooms = if rooms.is_empty() {
                    "no room".to_string()
                } else {
                    rooms.join(" ")
                };
                line(&mut s, format_args!("NOTICE {nick} is in: {rooms}"));
            }
            // (0: a user of another node of a cluster, whose times this node does not know.)
            if w.connected_at != 0 {
                line(
                    &mut s,
                    format_args!(
                        "NOTICE {nick} connected since {}, idle {}s",
                        iso8601(w.connected_at),
                        w.idle_secs
                    ),
                );
            }
            if let Some(away) = &w.away {
                line(&mut s, format_args!("NOTICE {nick} is away: {away}"));
            }
            if w.oper {
                line(&mut s, format_args!("NOTICE {nick} is a server operator"));
            }
            if w.secure {
                line(
                    &mut s,
                    format_args!("NOTICE {nick} is using a secure connection"),
                );
            }
            if w.source.bot {
                line(&mut s, format_args!("NOTICE {nick} is a bot"));
            }
            if let Some(ip) = w.address {
                line(
                    &mut s,
                    format_args!(
                        "NOTICE {nick} connects from {} (only you see this; others see {})",
                        real_host(ip),
                        w.source.host
                    ),
                );
            }
        }
        Event::ClusterLink { up: false } => line(
            &mut s,
            format_args!(
                "NOTICE the link to the other servers of the cluster is down: messages reach this server's users only until it is back"
            ),
        ),
        Event::ClusterLink { up: true } => line(
            &mut s,
            format_args!(
                "NOTICE the link to the other servers of the cluster is back: messages reach them again (what was said here meanwhile did not)"
            ),
        ),
        Event::NickLost { nick, guest } => line(
            &mut s,
            format_args!(
                "NOTICE your nick {nick} was taken on another server of the cluster while the link to it was down: you are {guest} now"
            ),
        ),
        Event::AwayIs { away: true } => line(&mut s, format_args!("NOTICE you are marked as away")),
        Event::AwayIs { away: false } => line(
            &mut s,
            format_args!("NOTICE you are no longer marked as away"),
        ),
        Event::TargetAway { nick, message } => {
            line(&mut s, format_args!("NOTICE {nick} is away: {message}"))
        }
        Event::Error(e) => line(&mut s, format_args!("ERROR {} {e}", e.code())),
        Event::RoomInfo { room, modes, .. } => {
            line(&mut s, format_args!("NOTICE modes of {room}: {modes}"))
        }
        Event::ModeChanged { room, by, changes } => line(
            &mut s,
            format_args!("MODE {room} {} {}", by.nick, mode_string(changes)),
        ),
        Event::Kicked {
            room,
            by,
            nick,
            reason,
        } => line(
            &mut s,
            format_args!("KICK {room} {nick} {} {reason}", by.nick),
        ),
        Event::Invited { room, by, .. } => line(&mut s, format_args!("INVITE {room} {}", by.nick)),
        Event::Inviting { room, nick } => {
            line(&mut s, format_args!("NOTICE invited {nick} to {room}"))
        }
        Event::BanList { room, bans } => {
            for b in bans {
                line(
                    &mut s,
                    format_args!("BAN {room} {} {} {}", b.mask, b.by, iso8601(b.at)),
                );
            }
            let n = bans.len();
            line(
                &mut s,
                format_args!("NOTICE {n} ban{} on {room}", if n == 1 { "" } else { "s" }),
            );
        }
        Event::WasHere { mask, found } => {
            for (who, at) in found {
                line(
                    &mut s,
                    format_args!(
                        "NOTICE {} was {}@{} ({}) until {}",
                        who.nick,
                        who.user,
                        who.host,
                        who.realname,
                        iso8601(*at)
                    ),
                );
            }
            if found.is_empty() {
                line(
                    &mut s,
                    format_args!("NOTICE nobody called {mask} was here lately"),
                );
            }
        }
        Event::UserModes {
            nick,
            changed: Some(changed),
            ..
        } => line(&mut s, format_args!("MODE {nick} {changed}")),
        Event::UserModes {
            changed: None,
            modes,
            ..
        } => line(&mut s, format_args!("NOTICE your user modes: {modes}")),
        Event::Wallops { from, text } => line(&mut s, format_args!("WALLOPS {} {text}", from.nick)),
        Event::SilenceList { masks } if masks.is_empty() => {
            line(&mut s, format_args!("NOTICE you ignore nobody"))
        }
        Event::SilenceList { masks } => line(
            &mut s,
            format_args!("NOTICE you ignore: {}", masks.join(" ")),
        ),
        Event::Silenced {
            set: true,
            mask,
            changed: true,
            ..
        } => line(
            &mut s,
            format_args!("NOTICE ignoring {mask}: their private messages and invitations"),
        ),
        Event::Silenced {
            set: true, mask, ..
        } => line(&mut s, format_args!("NOTICE already ignoring {mask}")),
        Event::Silenced {
            set: false,
            mask,
            changed: true,
            ..
        } => line(&mut s, format_args!("NOTICE no longer ignoring {mask}")),
        Event::Silenced {
            set: false, mask, ..
        } => line(&mut s, format_args!("NOTICE you were not ignoring {mask}")),
        Event::Online { who } => {
            let nicks: Vec<&str> = who.iter().map(|s| &*s.nick).collect();
            for chunk in nicks.chunks(20) {
                line(&mut s, format_args!("ONLINE {}", chunk.join(" ")));
            }
        }
        Event::Offline { nicks } => {
            for chunk in nicks.chunks(20) {
                line(&mut s, format_args!("OFFLINE {}", chunk.join(" ")));
            }
        }
        Event::WatchList { nicks } if nicks.is_empty() => {
            line(&mut s, format_args!("NOTICE you watch nobody"))
        }
        Event::WatchList { nicks } => line(
            &mut s,
            format_args!("NOTICE you watch: {}", nicks.join(" ")),
        ),
        Event::ServerBanSet {
            mask,
            until,
            reason,
            disconnected,
        } => {
            let how_long = super::ban_end(*until);
            line(
                &mut s,
                format_args!(
                    "NOTICE {mask} is banned from the server {how_long}: {reason} ({disconnected} disconnected)"
                ),
            )
        }
        Event::ServerBanLifted { mask } => {
            line(&mut s, format_args!("NOTICE {mask} is no longer banned"))
        }
        Event::ServerBanList { bans } => {
            for b in bans {
                let until = b.until.map_or("never".into(), iso8601);
                line(
                    &mut s,
                    format_args!("SERVERBAN {} {until} {} {}", b.mask, b.by, b.reason),
                );
            }
            line(&mut s, format_args!("NOTICE {} server bans", bans.len()));
        }
        Event::YouAreOper { .. } => line(
            &mut s,
            format_args!(
                "NOTICE you are now a server operator: you operate every room, and may /kill, /wallops and /kline"
            ),
        ),
        // A line user sees messages, not their tags: a message of tags only is nothing to it.
        Event::Found { .. }
        | Event::Stats(_)
        | Event::Page(_)
        | Event::Killed { .. }
        | Event::Registration(_)
        | Event::TagMsg { .. } => {}
    }
    s.into_bytes()
}

/// The reply to a refused line.
pub fn render_error(error: &LineError) -> Vec<u8> {
    let mut s = String::new();
    match error {
        LineError::TooLong(max) => line(
            &mut s,
            format_args!("ERROR too-long line longer than {max} bytes, discarded"),
        ),
        LineError::BadUtf8 => line(
            &mut s,
            format_args!("ERROR bad-utf8 line is not valid UTF-8, discarded"),
        ),
        LineError::Nul => line(
            &mut s,
            format_args!("ERROR bad-char line contains a NUL byte, discarded"),
        ),
        LineError::ControlChar => line(
            &mut s,
            format_args!("ERROR bad-char line contains a control character, discarded"),
        ),
        LineError::UnknownCommand(name) => line(
            &mut s,
            format_args!("ERROR unknown-command /{name}: /help lists the commands"),
        ),
        LineError::Usage(usage) => line(&mut s, format_args!("ERROR usage {usage}")),
    }
    s.into_bytes()
}

/// The greeting: assigned nick and starting room first, so a script can read them.
pub fn render_welcome(nick: &str, room: &str) -> Vec<u8> {
    let mut s = String::new();
    line(
        &mut s,
        format_args!(
            "WELCOME {nick} {room} welcome to pollchat, {nick}! You are in {room}; /help lists the commands"
        ),
    );
    s.into_bytes()
}

/// The last line a connection gets before the server closes it.
/// A password refused because it came in clear (`session::credentials_refused`).
pub fn render_tls_required(hint: &str) -> Vec<u8> {
    let mut s = String::new();
    line(&mut s, format_args!("ERROR tls-required {hint}"));
    s.into_bytes()
}

pub fn render_bye(reason: &str) -> Vec<u8> {
    let mut s = String::new();
    line(&mut s, format_args!("BYE {reason}"));
    s.into_bytes()
}

pub fn render_help() -> Vec<u8> {
    let mut s = String::new();
    line(
        &mut s,
        format_args!("NOTICE commands (a line without / talks in the current room):"),
    );
    for (_, help) in COMMANDS {
        line(&mut s, format_args!("NOTICE   {help}"));
    }
    s.into_bytes()
}

/// Appends one line. Every control character but tab is removed from it on the way: text from
/// another protocol (IRC allows formatting codes, CTCP markers, even a bare CR inside a message)
/// can then never reach a terminal as a control sequence or split a line. One check here covers
/// every field of every line.
fn line(s: &mut String, args: std::fmt::Arguments<'_>) {
    let start = s.len();
    let _ = s.write_fmt(args);
    if s[start..].contains(|c: char| c.is_control() && c != '\t') {
        let cleaned: String = s[start..]
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        s.truncate(start);
        s.push_str(&cleaned);
    }
    s.push_str("\r\n");
}

fn spaced(text: Option<&str>) -> String {
    text.map(|t| format!(" {t}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Part;
    use crate::core::{Error, Member};

    fn chat(line: &str) -> Command {
        match parse(line.as_bytes()) {
            Ok(Request::Chat(c)) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn plain_lines_and_escaped_slash_are_messages() {
        assert_eq!(
            chat("hello  there"),
            Command::Say {
                room: None,
                text: "hello  there".into(),
                kind: MsgKind::Normal,
                echo: false,
                tags: None
            }
        );
        assert_eq!(
            chat("//etc/passwd"),
            Command::Say {
                room: None,
                text: "/etc/passwd".into(),
                kind: MsgKind::Normal,
                echo: false,
                tags: None
            }
        );
        assert_eq!(parse(b""), Ok(Request::Nothing));
        assert_eq!(parse(b"  \t "), Ok(Request::Nothing));
    }

    #[test]
    fn commands() {
        assert_eq!(chat("/nick alice"), Command::Nick("alice".into()));
        assert_eq!(chat("/JOIN #rust"), Command::Join("#rust".into()));
        assert_eq!(
            chat("/part"),
            Command::Part {
                room: None,
                reason: None
            }
        );
        assert_eq!(
            chat("/part #rust bye all"),
            Command::Part {
                room: Some("#rust".into()),
                reason: Some("bye all".into())
            }
        );
        assert_eq!(
            chat("/part gone fishing"),
            Command::Part {
                room: None,
                reason: Some("gone fishing".into())
            }
        );
        assert_eq!(
            chat("/msg bob  hi  there"),
            Command::Private {
                to: "bob".into(),
                text: "hi  there".into(),
                kind: MsgKind::Normal,
                echo: false,
                tags: None
            }
        );
        assert_eq!(
            chat("/me waves"),
            Command::Say {
                room: None,
                text: "waves".into(),
                kind: MsgKind::Action,
                echo: false,
                tags: None
            }
        );
        assert_eq!(
            chat("/topic"),
            Command::Topic {
                room: None,
                text: None
            }
        );
        assert_eq!(
            chat("/topic new topic"),
            Command::Topic {
                room: None,
                text: Some("new topic".into())
            }
        );
        assert_eq!(chat("/away"), Command::Away(None));
        assert_eq!(
            chat("/away at lunch"),
            Command::Away(Some("at lunch".into()))
        );
        assert_eq!(
            chat("/who #rust"),
            Command::Who {
                target: Some("#rust".into()),
                listing: Listing::Names,
            }
        );
        assert_eq!(chat("/rooms"), Command::Rooms);
        assert_eq!(chat("/whois bob"), Command::Whois("bob".into()));
        assert_eq!(parse(b"/quit"), Ok(Request::Quit(None)));
        assert_eq!(
            parse(b"/quit see you"),
            Ok(Request::Quit(Some("see you".into())))
        );
        assert_eq!(parse(b"/help"), Ok(Request::Help));
    }

    #[test]
    fn bad_lines() {
        assert_eq!(
            parse(b"/frobnicate"),
            Err(LineError::UnknownCommand("frobnicate".into()))
        );
        assert_eq!(parse(b"/msg bob"), Err(LineError::Usage("/msg NICK text")));
        assert_eq!(parse(b"/nick a b"), Err(LineError::Usage("/nick NAME")));
        assert_eq!(parse(b"hi\xff"), Err(LineError::BadUtf8));
        assert_eq!(parse(b"hi\0"), Err(LineError::Nul));
        assert_eq!(
            parse(b"evil\rMSG #lobby <bob> forged"),
            Err(LineError::ControlChar)
        );
        assert_eq!(parse(b"\x1b[2Jclear"), Err(LineError::ControlChar));
        assert!(
            text(render_error(&LineError::UnknownCommand("x".into())))
                .starts_with("ERROR unknown-command /x: /help")
        );
    }

    fn src(nick: &str) -> std::sync::Arc<Source> {
        Source::new(nick, "u", "h", "r")
    }

    #[test]
    fn rendering() {
        let m = Event::Message {
            room: "#l".into(),
            from: src("a"),
            text: "hi".into(),
            kind: MsgKind::Normal,
            tags: None,
            id: 1,
        };
        assert_eq!(text(render(&m)), "MSG #l <a> hi\r\n");
        let n = Event::Message {
            room: "#l".into(),
            from: src("a"),
            text: "hi".into(),
            kind: MsgKind::Notice,
            tags: None,
            id: 1,
        };
        assert_eq!(text(render(&n)), "MSG #l -a- hi\r\n");
        let h = Event::History {
            room: "#l".into(),
            from: src("a"),
            text: "x".into(),
            kind: MsgKind::Action,
            at: 0,
        };
        assert_eq!(
            text(render(&h)),
            "HISTORY #l 1970-01-01T00:00:00Z * a x\r\n"
        );
        let p = Event::Private {
            from: src("a"),
            to: "b".into(),
            text: "psst".into(),
            kind: MsgKind::Normal,
            tags: None,
            id: 1,
        };
        assert_eq!(text(render(&p)), "PRIV <a> psst\r\n");
        // Control characters from IRC users never reach a line user's terminal.
        let ctcp = Event::Private {
            from: src("a"),
            to: "b".into(),
            text: "\u{1}VERSION\u{1}\x1b[2J\rx".into(),
            kind: MsgKind::Normal,
            tags: None,
            id: 1,
        };
        assert_eq!(text(render(&ctcp)), "PRIV <a> VERSION[2Jx\r\n");
        let e = Event::Error(Error::NoSuchNick("zed".into()));
        assert_eq!(
            text(render(&e)),
            "ERROR no-such-nick no user is called zed\r\n"
        );
        let members = vec![
            Member {
                source: src("a"),
                away: false,
                status: Default::default(),
                oper: false,
            },
            Member {
                source: src("b"),
                away: true,
                status: Default::default(),
                oper: false,
            },
        ];
        let names = Event::Names {
            room: "#l".into(),
            members,
            listing: Listing::Names,
            total: 2,
            part: Part::WHOLE,
            secret: false,
        };
        assert_eq!(text(render(&names)), "NAMES #l a b(away)\r\n");
    }

    #[test]
    fn long_member_lists_are_split_into_whole_lines() {
        let members: Vec<Member> = (0..200)
            .map(|i| Member {
                source: src(&format!("user{i}")),
                away: false,
                status: Default::default(),
                oper: false,
            })
            .collect();
        let out = text(render(&Event::Names {
            room: "#big".into(),
            members,
            listing: Listing::Names,
            total: 200,
            part: Part::WHOLE,
            secret: false,
        }));
        let lines: Vec<&str> = out.split_terminator("\r\n").collect();
        assert!(lines.len() > 1);
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("NAMES #big ") && l.len() <= NAMES_LINE_MAX)
        );
        let listed: usize = lines.iter().map(|l| l.split(' ').count() - 2).sum();
        assert_eq!(listed, 200);
    }

    proptest::proptest! {
        /// Whatever bytes a client sends, parsing never panics, and a line accepted as a message
        /// is rendered for the others as exactly one line with no control character but the
        /// final CRLF (tabs aside): nobody can forge or split another user's line.
        #[test]
        fn any_bytes_parse_without_panic_and_render_as_one_clean_line(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        ) {
            if let Ok(Request::Chat(Command::Say { text, kind, .. })) = parse(&bytes) {
                let from = Source::new("alice", "line", "127.0.0.1", "r");
                let event = Event::Message { room: "#a".into(), from, text: text.into(), kind, tags: None, id: 1 };
                let out = String::from_utf8(render(&event)).unwrap();
                let body = out.strip_suffix("\r\n").unwrap();
                proptest::prop_assert!(
                    !body.contains(|c: char| c.is_control() && c != '\t'),
                    "{:?}", body
                );
            }
        }
    }
}
